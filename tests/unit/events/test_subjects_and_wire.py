"""Subjects and the wire format of event messages (pure)."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from agentflow.engine.journal import Journal, verify
from agentflow.engine.values import Event, EventType
from agentflow.events.subjects import SubjectError, filter_subject, parse_subject, subject, workflow_name
from agentflow.events.wire import WireError, decode, journal_message, local_body, phase_message, valid_traceparent

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_subjects_are_namespace_workflow_type_with_dots_escaped() -> None:
    assert subject("team-a", "report", "StepSucceeded") == "agentflow.team-a.report.StepSucceeded"
    assert subject("team-a", "report.daily.v2", "RunFinished") == "agentflow.team-a.report_daily_v2.RunFinished"
    assert parse_subject("agentflow.team-a.report_daily_v2.RunFinished") == ("team-a", "report.daily.v2",
                                                                             "RunFinished")
    assert workflow_name("a_b") == "a.b"
    assert filter_subject() == "agentflow.*.*.*"
    assert filter_subject("team-a") == "agentflow.team-a.*.*"
    assert filter_subject("team-a", "x.y") == "agentflow.team-a.x_y.*"
    assert filter_subject(None, "x") == "agentflow.*.x.*"


@pytest.mark.parametrize(("namespace", "workflow", "event_type", "field"), [
    ("team.a", "wf", "RunStarted", "namespace"),          # a dot would add a token
    ("team-a.>", "wf", "RunStarted", "namespace"),
    ("*", "wf", "RunStarted", "namespace"),
    ("Team-A", "wf", "RunStarted", "namespace"),
    ("a" * 64, "wf", "RunStarted", "namespace"),
    ("", "wf", "RunStarted", "namespace"),
    ("team-a", "wf>", "RunStarted", "workflow"),
    ("team-a", "w f", "RunStarted", "workflow"),
    ("team-a", "my_wf", "RunStarted", "workflow"),        # '_' is the escape of '.', never in a name
    ("team-a", "a..b", "RunStarted", "workflow"),
    ("team-a", "wf", "Run.Started", "event type"),
    ("team-a", "wf", "*", "event type"),
    ("team-a", "wf", "", "event type"),
])
def test_anything_that_could_change_the_subject_is_refused_naming_the_field(
        namespace: str, workflow: str, event_type: str, field: str) -> None:
    with pytest.raises(SubjectError, match=f"^{field} "):
        subject(namespace, workflow, event_type)


def test_a_foreign_subject_is_not_parsed() -> None:
    for bad in ("agentflow.a.b", "other.a.b.C", "agentflow.a.b.C.d", "agentflow.A.b.C"):
        with pytest.raises(SubjectError):
            parse_subject(bad)


def test_a_journal_message_carries_the_record_byte_for_byte() -> None:
    records = Journal().extend([Event(EventType.run_started, None, {"x": 1.5, "é": [1, None]}, 10.0),
                                Event(EventType.step_succeeded, "fan[0]", {"output": {"b": 1, "a": 2}}, 11.0)])
    stored = records[1].to_json()
    message = journal_message("uid-1", "team-a", "wf.one", 1, "StepSucceeded", stored, TRACE)
    assert message.subject == "agentflow.team-a.wf_one.StepSucceeded"
    assert message.msg_id == "uid-1:1" and message.headers == {"Nats-Msg-Id": "uid-1:1", "traceparent": TRACE}
    assert stored in message.body  # spliced, not re-encoded
    event = decode(message.body)
    assert (event.kind, event.run, event.namespace, event.workflow, event.seq, event.type, event.node) == (
        "journal", "uid-1", "team-a", "wf.one", 1, "StepSucceeded", "fan[0]")
    assert event.record == records[1]
    # the consumer can check the chain: the record's hash is the SHA-256 of its canonical JSON without hash
    body = orjson.loads(message.body)["record"]
    assert verify([records[0].to_dict(), body]).ok
    assert hashlib.sha256(orjson.dumps({k: v for k, v in body.items() if k != "hash"},
                                       option=orjson.OPT_SORT_KEYS)).hexdigest() == body["hash"]


def test_a_phase_message() -> None:
    message = phase_message("uid-1", "team-a", "wf", 7, "Running", "Waiting", 12.5)
    assert message.subject == "agentflow.team-a.wf.PhaseChanged"
    assert message.headers == {"Nats-Msg-Id": "uid-1:7:phase"}
    event = decode(message.body)
    assert (event.kind, event.seq, event.phase_from, event.phase_to, event.at) == ("phase", 7, "Running", "Waiting",
                                                                                  12.5)
    first = decode(phase_message("uid-1", "team-a", "wf", 0, None, "Running", 1.0).body)
    assert first.phase_from is None


@pytest.mark.parametrize("value", [
    None, "", "garbage", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",          # version ff is invalid
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",          # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",          # all-zero span id
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",          # uppercase
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX-Evil: 1",
])
def test_only_a_valid_traceparent_becomes_a_header(value: str | None) -> None:
    assert valid_traceparent(value) is None
    message = phase_message("u", "ns", "wf", 0, None, "Running", 0.0, value)
    assert "traceparent" not in message.headers


@pytest.mark.parametrize(("body", "problem"), [
    (b"not json", "not JSON"),
    (b"[1]", "expected a JSON object"),
    (b'{"v": 2, "kind": "journal"}', "unknown wire version 2"),
    (b'{"v": 1, "kind": "other", "run": "r"}', "field 'kind'"),
    (b'{"v": 1, "kind": "journal", "run": 5}', "field 'run'"),
    (b'{"v": 1, "kind": "journal", "run": "r", "record": {"seq": 0}}', "field 'record': bad journal record"),
    (b'{"v": 1, "kind": "phase", "run": "r", "seq": true, "to": "Running", "at": 1}', "field 'seq'"),
    (b'{"v": 1, "kind": "phase", "run": "r", "seq": 1, "at": 1}', "field 'to'"),
])
def test_a_body_that_is_not_an_event_says_what_is_wrong(body: bytes, problem: str) -> None:
    with pytest.raises(WireError, match=problem):
        decode(body)


def test_local_runs_have_the_same_shape_without_a_namespace() -> None:
    [record] = Journal().extend([Event(EventType.run_started, None, {}, 1.0)])
    event = decode(local_body("quickstart-1", "quickstart", record))
    assert (event.namespace, event.workflow, event.run, event.record) == (None, "quickstart", "quickstart-1", record)

"""The wire format of an AgentFlow event message (pure: no I/O, no clock).

One NATS message per journal record and one per status transition, JSON (UTF-8) in the body::

    journal   {"v": 1, "kind": "journal", "run": UID, "namespace": NS, "workflow": NAME,
               "record": {"seq", "type", "node", "at", "data", "prev", "hash"}}
    phase     {"v": 1, "kind": "phase", "run": UID, "namespace": NS, "workflow": NAME,
               "seq": N, "from": "Running" | null, "to": "Waiting", "at": SECONDS}

``record`` is the journal record byte for byte as PostgreSQL keeps it (canonical JSON: its ``hash`` verifies,
and ``prev`` chains it to the record before, so a consumer can check it saw every record of a run in order).
A phase message says the Workflow's ``status.phase`` became ``to`` with record ``seq`` (``from`` null: the
first phase recorded). Local runs (``agentflow events`` without NATS) print the same shape with ``namespace``
null and ``run`` the local run id.

Headers::

    Nats-Msg-Id   "<run uid>:<seq>" (journal) or "<run uid>:<seq>:phase": JetStream drops a second message
                  with the same id within the stream's duplicate window
    traceparent   the W3C trace context of the run, when it has one (anything not a valid traceparent is left
                  out rather than passed on)

Errors::

    WireError (ValueError)   a message body that is not an AgentFlow event; the message says what is wrong
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import orjson

from ..engine.journal import JournalError, Record
from .subjects import PHASE_TYPE, subject

__all__ = [
    "MSG_ID",
    "TRACEPARENT",
    "VERSION",
    "EventMessage",
    "ReceivedEvent",
    "WireError",
    "decode",
    "journal_message",
    "local_body",
    "msg_id",
    "phase_message",
    "valid_traceparent",
]

VERSION = 1
MSG_ID = "Nats-Msg-Id"
TRACEPARENT = "traceparent"
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class WireError(ValueError):
    """A message body is not an AgentFlow event."""


@dataclasses.dataclass(frozen=True, slots=True)
class EventMessage:
    """One message to publish: where, its id, headers and body."""

    subject: str
    msg_id: str
    headers: Mapping[str, str]
    body: bytes
    run_uid: str
    seq: int
    kind: str  # "journal" | "phase"


def msg_id(run_uid: str, seq: int, kind: str = "journal") -> str:
    """The Nats-Msg-Id of a message: run and sequence (and ``:phase`` for a status transition)."""
    return f"{run_uid}:{seq}" if kind == "journal" else f"{run_uid}:{seq}:{kind}"


def valid_traceparent(value: str | None) -> str | None:
    """``value`` when it is a W3C traceparent (version not ff, ids not all zero), else None."""
    if not value:
        return None
    m = _TRACEPARENT.match(value)
    if m is None or m.group(1) == "ff" or set(m.group(2)) == {"0"} or set(m.group(3)) == {"0"}:
        return None
    return value


def _headers(run_uid: str, seq: int, kind: str, traceparent: str | None) -> dict[str, str]:
    headers = {MSG_ID: msg_id(run_uid, seq, kind)}
    trace = valid_traceparent(traceparent)
    if trace is not None:
        headers[TRACEPARENT] = trace
    return headers


def journal_message(run_uid: str, namespace: str, workflow: str, seq: int, event_type: str, record_json: bytes,
                    traceparent: str | None = None) -> EventMessage:
    """The message of one journal record, given as its stored canonical JSON (spliced in, not re-encoded).
    SubjectError when the namespace, workflow or type cannot make a subject."""
    topic = subject(namespace, workflow, event_type)
    head = orjson.dumps({"v": VERSION, "kind": "journal", "run": run_uid, "namespace": namespace,
                         "workflow": workflow})
    body = head[:-1] + b',"record":' + record_json + b"}"
    return EventMessage(topic, msg_id(run_uid, seq), _headers(run_uid, seq, "journal", traceparent), body, run_uid,
                        seq, "journal")


def phase_message(run_uid: str, namespace: str, workflow: str, seq: int, phase_from: str | None, phase_to: str,
                  at: float, traceparent: str | None = None) -> EventMessage:
    """The message of a status transition: the Workflow's phase became ``phase_to`` with record ``seq``."""
    topic = subject(namespace, workflow, PHASE_TYPE)
    body = orjson.dumps({"v": VERSION, "kind": "phase", "run": run_uid, "namespace": namespace, "workflow": workflow,
                         "seq": seq, "from": phase_from, "to": phase_to, "at": at})
    return EventMessage(topic, msg_id(run_uid, seq, "phase"), _headers(run_uid, seq, "phase", traceparent), body,
                        run_uid, seq, "phase")


def local_body(run_id: str, workflow: str | None, record: Record) -> dict[str, Any]:
    """The body of a local run's journal record, in the wire shape (namespace null)."""
    return {"v": VERSION, "kind": "journal", "run": run_id, "namespace": None, "workflow": workflow,
            "record": record.to_dict()}


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """A decoded message: the body as JSON (``body``) and its fields."""

    kind: str
    run: str
    namespace: str | None
    workflow: str | None
    seq: int
    type: str
    node: str | None
    at: float
    record: Record | None  # kind journal
    phase_from: str | None  # kind phase
    phase_to: str | None
    body: dict[str, Any]


def _field(body: Mapping[str, Any], name: str, kinds: tuple[type, ...], optional: bool = False) -> Any:
    value = body.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise WireError(f"field {name!r} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    return value


def decode(data: bytes | Mapping[str, Any]) -> ReceivedEvent:
    """Parse a message body (or an already parsed one); WireError saying what is wrong."""
    if isinstance(data, Mapping):
        body = dict(data)
    else:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise WireError(f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise WireError(f"expected a JSON object, got {type(body).__name__}")
    if body.get("v") != VERSION:
        raise WireError(f"unknown wire version {body.get('v')!r} (this AgentFlow reads version {VERSION}): "
                        "was it written by a newer AgentFlow?")
    kind = body.get("kind")
    run = _field(body, "run", (str,))
    namespace = _field(body, "namespace", (str,), optional=True)
    workflow = _field(body, "workflow", (str,), optional=True)
    if kind == "journal":
        try:
            record = Record.from_dict(_field(body, "record", (dict,)))
        except JournalError as exc:
            raise WireError(f"field 'record': {exc}") from None
        e = record.event
        return ReceivedEvent("journal", run, namespace, workflow, record.seq, e.type.value, e.node, float(e.at),
                             record, None, None, body)
    if kind == "phase":
        seq = _field(body, "seq", (int,))
        at = _field(body, "at", (int, float))
        return ReceivedEvent("phase", run, namespace, workflow, seq, PHASE_TYPE, None, float(at), None,
                             _field(body, "from", (str,), optional=True), _field(body, "to", (str,)), body)
    raise WireError(f"field 'kind' must be 'journal' or 'phase', got {kind!r}")

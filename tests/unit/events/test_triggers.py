"""Event triggers against the shipped FakeKube: an AgentFlow event of the trigger's namespace and type starts one
run of its template with inputs mapped by CEL; a second delivery of the event starts none; nothing of another
namespace, a forged body, a trigger's own runs or a chain of event-started runs past its bound starts anything;
the API server away has the event delivered again; bad inputs are said on the trigger's status."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from agentflow.engine.journal import Journal
from agentflow.engine.values import Event, EventType
from agentflow.events.triggers import EventTriggers
from agentflow.events.wire import journal_message, phase_message
from agentflow.k8s.kube import KubeError
from agentflow.k8s.trigger import workflow_name
from agentflow.models import WorkflowTrigger, parse_resource
from agentflow.models.trigger import EVENT_DEPTH_LABEL, MAX_EVENT_CHAIN, TRIGGER_LABEL
from agentflow.testing import FakeKube
from agentflow.triggers.runs import REFUSAL_STATUS_SECONDS

NOW = 1_800_000_000.0
TEMPLATE: dict[str, Any] = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTemplate",
    "metadata": {"name": "postmortem", "namespace": "team"},
    "spec": {"inputs": {"run": ""},
             "inputSchema": {"type": "object", "properties": {"run": {"type": "string", "maxLength": 20}},
                             "additionalProperties": False},
             "steps": [{"name": "s", "kind": "tool", "tool": "echo"}]},
}


def trigger_body(name: str = "on-failure", namespace: str = "team", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTrigger",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
            "spec": {"workflowTemplateRef": {"name": "postmortem"}, "events": {"types": ["PhaseChanged"]},
                     "inputs": {"run": "body.workflow"}, "when": "body.to == 'Failed'", **spec}}


def workflow(name: str, namespace: str = "team", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": labels or {}},
            "spec": {"steps": [{"name": "s", "kind": "tool", "tool": "echo"}]}}


@dataclasses.dataclass(frozen=True)
class Incoming:
    subject: str
    data: bytes
    msg_id: str | None


def phase(workflow_: str = "deploy", to: str = "Failed", namespace: str = "team", seq: int = 7) -> Incoming:
    m = phase_message(f"uid-{workflow_}", namespace, workflow_, seq, "Running", to, NOW)
    return Incoming(m.subject, m.body, m.msg_id)


def started(kube: FakeKube) -> list[dict[str, Any]]:
    return [o for (plural, _, _), o in sorted(kube.resources.items()) if plural == "workflows"
            and TRIGGER_LABEL in (o["metadata"].get("labels") or {})]


def cluster(*extra: dict[str, Any]) -> FakeKube:
    return FakeKube(TEMPLATE, trigger_body(), workflow("deploy"), *extra)


async def test_a_matching_event_starts_one_run_and_a_second_delivery_none() -> None:
    kube = cluster()
    triggers = EventTriggers(kube, "c", clock=lambda: NOW, cache_seconds=0)
    event = phase()
    assert await triggers.handle(event) is True
    [run] = started(kube)
    assert run["metadata"]["name"] == workflow_name("on-failure", "uid-deploy:7:phase")
    assert run["metadata"]["labels"][TRIGGER_LABEL] == "on-failure"
    assert run["metadata"]["labels"][EVENT_DEPTH_LABEL] == "1"
    assert run["metadata"]["annotations"]["agentflow.dev/delivery-id"] == "uid-deploy:7:phase"
    assert run["spec"] == {"workflowTemplateRef": {"name": "postmortem"}, "inputs": {"run": "deploy"}}
    status = kube.resources[("workflowtriggers", "team", "on-failure")]["status"]
    assert status["lastDelivery"]["outcome"] == "Started" and status["path"] is None
    assert await triggers.handle(event) is True  # delivered again (a redelivery, another replica): no new run
    assert len(started(kube)) == 1
    assert kube.resources[("workflowtriggers", "team", "on-failure")]["status"]["lastDelivery"]["outcome"] == \
        "Duplicate"


async def test_when_and_the_type_choose_the_events() -> None:
    kube = cluster()
    triggers = EventTriggers(kube, "c", cache_seconds=0)
    assert await triggers.handle(phase(to="Succeeded")) is True  # when is false
    record = Journal().append(Event(EventType.run_finished, None, {"phase": "Failed"}, NOW))
    m = journal_message("uid-deploy", "team", "deploy", record.seq, "RunFinished", record.to_json())
    assert await triggers.handle(Incoming(m.subject, m.body, m.msg_id)) is True  # a type it does not hear
    assert started(kube) == []
    assert "status" not in kube.resources[("workflowtriggers", "team", "on-failure")]  # filtered: nothing written


async def test_a_journal_event_maps_its_record() -> None:
    kube = FakeKube(TEMPLATE, workflow("deploy"), trigger_body(
        events={"types": ["RunFinished"]}, when="body.record.data.phase == 'Failed'",
        inputs={"run": "body.workflow + '/' + string(body.record.seq)"}))
    record = Journal().append(Event(EventType.run_finished, None, {"phase": "Failed"}, NOW))
    m = journal_message("uid-deploy", "team", "deploy", record.seq, "RunFinished", record.to_json())
    assert await EventTriggers(kube, "c", cache_seconds=0).handle(Incoming(m.subject, m.body, m.msg_id)) is True
    [run] = started(kube)
    assert run["spec"]["inputs"] == {"run": f"deploy/{record.seq}"}


async def test_another_namespaces_events_and_forged_bodies_start_nothing() -> None:
    kube = cluster(workflow("deploy", namespace="other"))
    triggers = EventTriggers(kube, "c", cache_seconds=0)
    assert await triggers.handle(phase(namespace="other")) is True  # its triggers: none there
    forged = phase(namespace="other")
    assert await triggers.handle(Incoming("agentflow.team.deploy.PhaseChanged", forged.data, forged.msg_id)) is True
    assert await triggers.handle(Incoming("agentflow.team.deploy", b"{}", "x")) is True  # not an event subject
    assert await triggers.handle(Incoming("agentflow.team.deploy.PhaseChanged", b"not json", "x")) is True
    assert await triggers.handle(Incoming("agentflow.team.deploy.PhaseChanged", b'{"v": 9}', "x")) is True
    assert started(kube) == []
    served = EventTriggers(kube, "c", namespaces=["prod-*"], cache_seconds=0)
    assert await served.handle(phase()) is True  # a namespace this operator does not serve
    assert started(kube) == []


async def test_suspended_http_and_invalid_triggers_hear_nothing() -> None:
    http = trigger_body("hook", events=None, auth={"bearer": {"secretRef": {"name": "k"}}})
    broken = trigger_body("broken", events={"types": ["NoSuchType"]})
    kube = FakeKube(TEMPLATE, workflow("deploy"), trigger_body(suspend=True), http, broken)
    assert await EventTriggers(kube, "c", cache_seconds=0).handle(phase()) is True
    assert started(kube) == []


async def test_a_trigger_never_hears_its_own_runs_and_a_chain_stops_at_its_bound() -> None:
    own = workflow("own", labels={TRIGGER_LABEL: "on-failure", EVENT_DEPTH_LABEL: "1"})
    deep = workflow("deep", labels={TRIGGER_LABEL: "other", EVENT_DEPTH_LABEL: str(MAX_EVENT_CHAIN)})
    below = workflow("below", labels={TRIGGER_LABEL: "other", EVENT_DEPTH_LABEL: str(MAX_EVENT_CHAIN - 1)})
    kube = cluster(own, deep, below)
    triggers = EventTriggers(kube, "c", cache_seconds=0)
    assert await triggers.handle(phase("own")) is True
    names = {o["metadata"]["name"] for o in started(kube)}
    assert names == {"own", "deep", "below"}  # nothing new
    assert await triggers.handle(phase("deep")) is True
    status = kube.resources[("workflowtriggers", "team", "on-failure")]["status"]["lastDelivery"]
    assert status["outcome"] == "Refused" and f"at most {MAX_EVENT_CHAIN}" in status["message"]
    assert {o["metadata"]["name"] for o in started(kube)} == names
    assert await triggers.handle(phase("below")) is True
    [new] = [o for o in started(kube) if o["metadata"]["name"] not in names]
    assert new["metadata"]["labels"][EVENT_DEPTH_LABEL] == str(MAX_EVENT_CHAIN)


async def test_a_gone_source_still_starts_the_run() -> None:
    kube = FakeKube(TEMPLATE, trigger_body())  # the Workflow deleted (its TTL) before the event is read
    assert await EventTriggers(kube, "c", cache_seconds=0).handle(phase()) is True
    assert len(started(kube)) == 1


async def test_the_api_server_away_has_the_event_delivered_again() -> None:
    kube = cluster()
    triggers = EventTriggers(kube, "c", cache_seconds=0)
    kube.list_error = KubeError("connection refused")
    assert await triggers.handle(phase()) is False
    kube.list_error = None
    assert await triggers.handle(phase()) is True
    assert len(started(kube)) == 1


async def test_inputs_the_template_refuses_are_said_on_the_status() -> None:
    kube = FakeKube(TEMPLATE, trigger_body(inputs={"run": "body.workflow + '-' + body.workflow + '-long-name'"}),
                    workflow("deploy"))
    assert await EventTriggers(kube, "c", cache_seconds=0).handle(phase()) is True
    assert started(kube) == []
    last = kube.resources[("workflowtriggers", "team", "on-failure")]["status"]["lastDelivery"]
    assert last["outcome"] == "Refused" and "inputs.run" in last["message"]


def test_a_trigger_has_exactly_one_source_and_known_types() -> None:
    assert isinstance(parse_resource(trigger_body()), WorkflowTrigger)
    for spec, error in [({"events": None}, "exactly one of auth"),
                        ({"auth": {"bearer": {"secretRef": {"name": "k"}}}}, "exactly one of auth"),
                        ({"events": {"types": ["RunFinshed"]}}, "'RunFinshed' is not an event type"),
                        ({"events": {"types": []}}, "types"),
                        ({"events": {"types": ["RunFinished", "RunFinished"]}}, "at most once")]:
        with pytest.raises((ValidationError, ValueError), match=error):
            WorkflowTrigger.model_validate(trigger_body(**spec))


def test_the_consumer_is_named_from_the_key_and_only_from_it() -> None:
    from agentflow.events.triggers import consumer_name

    a, b = consumer_name(b"a" * 32), consumer_name(b"b" * 32)
    assert a == consumer_name(b"a" * 32) and a != b  # replicas with one key share it; another key, another one
    assert a.startswith("agentflow-triggers-") and len(a) == len("agentflow-triggers-") + 24


async def test_a_trigger_is_compiled_once_per_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import agentflow.events.triggers as module

    compiled: list[str] = []
    real = module.compile_trigger

    def counting(spec: Any) -> Any:
        compiled.append(spec.when)
        return real(spec)

    monkeypatch.setattr(module, "compile_trigger", counting)
    kube = cluster()
    triggers = EventTriggers(kube, "c", cache_seconds=0)
    for seq in range(3):
        assert await triggers.handle(phase(seq=seq)) is True
    assert compiled == ["body.to == 'Failed'"] and len(started(kube)) == 3
    body = kube.resources[("workflowtriggers", "team", "on-failure")]
    body["spec"]["when"], body["metadata"]["generation"] = "body.to == 'Cancelled'", 2  # edited: compiled again
    assert await triggers.handle(phase(to="Cancelled", seq=9)) is True
    assert compiled[-1] == "body.to == 'Cancelled'" and len(started(kube)) == 4


async def test_the_consumer_comes_back_after_any_failure_and_stops_when_told() -> None:
    import asyncio

    from agentflow.events.errors import EventsUnavailable, PermissionDenied

    calls: list[str] = []
    stopped = asyncio.Event()

    class FakeStream:
        def __init__(self, n: int) -> None:
            self.n = n

        async def consume(self, stream: str, durable: str, subject_filter: str, handle: Any, *,
                          inactive: float) -> None:
            calls.append(f"consume {self.n} {durable} {subject_filter} {inactive:g}")
            if self.n == 1:
                raise RuntimeError("a bug")
            if self.n == 2:
                raise PermissionDenied("not allowed")
            await asyncio.Event().wait()  # consumes until cancelled

        async def close(self) -> None:
            calls.append(f"close {self.n}")

    attempts = iter(range(10))

    async def connect() -> FakeStream:
        n = next(attempts)
        if n == 0:
            raise EventsUnavailable("NATS is away")
        return FakeStream(n)

    task = asyncio.ensure_future(EventTriggers(FakeKube(), "c").run(connect, "AGENTFLOW", stopped, retry=0.01))
    for _ in range(500):
        if "consume 3 c agentflow.> 86400" in calls:
            break
        await asyncio.sleep(0.01)
    stopped.set()
    await asyncio.wait_for(task, 5)
    assert calls == ["consume 1 c agentflow.> 86400", "close 1", "consume 2 c agentflow.> 86400", "close 2",
                     "consume 3 c agentflow.> 86400", "close 3"]


async def test_a_storm_of_one_refusal_writes_the_status_once_per_interval() -> None:
    kube = FakeKube(TEMPLATE, trigger_body(inputs={"run": "body.workflow + '-' + body.workflow + '-long-name'"}),
                    workflow("deploy"))
    now = [NOW]
    triggers = EventTriggers(kube, "c", clock=lambda: now[0], cache_seconds=0)

    def refusals() -> list[dict[str, Any]]:
        return [s["lastDelivery"] for s in kube.statuses if (s.get("lastDelivery") or {}).get("outcome") == "Refused"]

    for seq in range(1, 201):  # 200 distinct events, each refused for the same reason
        assert await triggers.handle(phase(seq=seq)) is True
        now[0] += 0.01
    assert started(kube) == []
    assert len(refusals()) == 1 and refusals()[0]["id"] == "uid-deploy:1:phase"
    now[0] += REFUSAL_STATUS_SECONDS
    assert await triggers.handle(phase(seq=500)) is True  # the interval passed: written again, the latest id
    assert [r["id"] for r in refusals()][1:] == ["uid-deploy:500:phase"]

    kube.resources[("workflowtemplates", "team", "postmortem")]["spec"]["inputSchema"]["properties"]["run"][
        "maxLength"] = 2  # another reason: said at once
    kube.resources[("workflowtriggers", "team", "on-failure")]["spec"]["inputs"] = {"run": "body.workflow"}
    kube.resources[("workflowtriggers", "team", "on-failure")]["metadata"]["generation"] = 2
    assert await triggers.handle(phase(seq=501)) is True
    assert len(refusals()) == 3 and "inputs.run" in refusals()[-1]["message"]
    assert refusals()[-1]["message"] != refusals()[-2]["message"]

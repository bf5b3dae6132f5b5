"""Retention in virtual time: a finished Workflow deleted when its TTL passes (status.expiresAt, a TTLExpired Event,
the uid precondition), an edited TTL, a run kept, what a deleted run leaves collected, the sweep's view."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentflow.controller.main import build_parser
from agentflow.engine.journal import Journal
from agentflow.engine.values import Event, EventType
from agentflow.k8s.kube import KubeError
from agentflow.models import RunTtl
from agentflow.services import retention as retention_module
from agentflow.services.retention import RunRetention, SweepAborted
from agentflow.storage.errors import StorageUnavailable
from agentflow.storage.outbox import EventSource
from agentflow.testing import FakeKube, MemoryStore

FINISHED = 1_796_119_200.0  # 2026-12-01T10:00:00Z


class Stop:
    """kopf's ``stopped`` flag."""

    def __init__(self) -> None:
        self.set = False

    def __bool__(self) -> bool:
        return self.set


def workflow(uid: str = "u-1", ttl: dict[str, Any] | None = None, phase: str = "Succeeded") -> dict[str, Any]:
    spec: dict[str, Any] = {"steps": [{"name": "a", "kind": "approval"}]}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "wf", "namespace": "team", "uid": uid}, "spec": spec,
            "status": {"phase": phase, "finishedAt": "2026-12-01T10:00:00Z"}}


class Harness:
    """A RunRetention over a FakeKube; its naps jump a virtual clock (and run ``on_nap`` first)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any], *, default: RunTtl | None = None,
                 now: float = FINISHED) -> None:
        self.kube = FakeKube(body)
        self.body = body
        self.now = now
        self.stop = Stop()
        self.naps: list[float] = []
        self.on_nap: Any = None
        self.store = MemoryStore()
        self.retention = RunRetention(self.kube, self.store, default=default, clock=lambda: self.now)

        async def nap(wakeup: asyncio.Event, stopped: Any, seconds: float) -> None:
            self.naps.append(seconds)
            if self.on_nap is not None:
                self.on_nap(self)
            self.now += seconds
            if len(self.naps) > 5:
                self.stop.set = True

        monkeypatch.setattr(retention_module, "nap", nap)

    def expire(self) -> bool:
        return asyncio.run(self.retention.expire(self.body, asyncio.Event(), self.stop))

    @property
    def deleted(self) -> bool:
        return ("workflows", "team", "wf") not in self.kube.resources


def test_a_finished_workflow_is_deleted_when_its_ttl_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, workflow(ttl={"succeeded": 60}), now=FINISHED + 15)
    assert h.expire() is True
    assert h.naps == [45.0]  # from the finish time on the status, not from when the operator looked
    assert h.kube.statuses == [{"expiresAt": "2026-12-01T10:01:00Z"}]
    assert h.deleted
    [event] = h.kube.events
    assert (event["type"], event["reason"]) == ("Normal", "TTLExpired")
    assert "spec.ttlSecondsAfterFinished keeps a Succeeded run 60s" in event["message"]


def test_a_restarted_operator_deletes_an_expired_workflow_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    body = workflow()
    body["status"]["expiresAt"] = "2026-12-01T11:00:00Z"
    h = Harness(monkeypatch, body, default=RunTtl(succeeded=3600), now=FINISHED + 86400)
    assert h.expire() is True
    assert h.naps == [] and h.kube.statuses == []  # expiresAt was shown before the restart
    assert h.deleted


def test_a_run_without_a_ttl_for_its_phase_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, workflow(ttl={}, phase="Failed"), default=RunTtl(failed=0))
    assert h.expire() is False
    assert not h.deleted and h.kube.statuses == [] and h.kube.events == []


def test_an_edited_ttl_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, workflow(ttl={"succeeded": 3600}))

    def edit(h: Harness) -> None:  # kopf's live body: the user shortens the TTL while the daemon waits
        h.body["spec"]["ttlSecondsAfterFinished"] = {"succeeded": 10}
        h.on_nap = None

    h.on_nap = edit
    assert h.expire() is True
    assert [s["expiresAt"] for s in h.kube.statuses] == ["2026-12-01T11:00:00Z", "2026-12-01T10:00:10Z"]
    assert h.deleted


def test_another_workflow_of_the_same_name_is_not_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, workflow(uid="old", ttl={"succeeded": 0}))
    h.kube.add_resource(workflow(uid="new"))  # deleted and created again under the name meanwhile
    assert h.expire() is True
    assert h.kube.resources[("workflows", "team", "wf")]["metadata"]["uid"] == "new"


def test_a_deleted_runs_rows_are_collected_and_its_memory_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, workflow())
    forgotten: list[str] = []
    h.retention.forget = forgotten.append
    records = Journal().extend([Event(EventType.run_started, None, {}, 1.0)])
    asyncio.run(h.store.append("u-1", records, EventSource("team", "wf")))
    asyncio.run(h.store.put_result("u-1", "a", 1, {"output": 1}))
    collected = asyncio.run(h.retention.collect("u-1"))
    assert collected is not None and collected.total == 2
    assert forgotten == ["u-1"] and h.store.journals == {} and h.store.results == {}
    h.store.fail = StorageUnavailable("PostgreSQL at x is unavailable")
    assert asyncio.run(h.retention.collect("u-1")) is None  # logged; the sweep collects it later


def test_the_sweep_never_judges_on_a_partial_view(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, workflow())
    for uid in ("u-1", "gone"):
        asyncio.run(h.store.append(uid, Journal().extend([Event(EventType.run_started, None, {}, 1.0)]),
                                   EventSource("team", "wf")))
    assert asyncio.run(h.retention.orphans()) == ["gone"]
    h.kube.list_error = KubeError("list workflows in all namespaces: 403 Forbidden")
    with pytest.raises(SweepAborted):
        asyncio.run(h.retention.sweep())
    assert set(h.store.journals) == {"u-1", "gone"}


def test_the_operators_default_flag() -> None:
    parser = build_parser()
    args = parser.parse_args(["--ttl-seconds-after-finished", "succeeded=60,failed=3600"])
    assert args.ttl_seconds_after_finished == RunTtl(succeeded=60, failed=3600)
    assert parser.parse_args([]).ttl_seconds_after_finished == RunTtl()


def test_a_bad_default_flag_names_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--ttl-seconds-after-finished", "done=5"])
    assert "--ttl-seconds-after-finished: 'done=5': expected PHASE=SECONDS" in capsys.readouterr().err

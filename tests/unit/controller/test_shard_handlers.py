"""The kopf handlers under --shards auto: a replica that does not own a Workflow (schedule, rollout) leaves it to
its owner, and still forgets it when it is deleted; pods of another replica's runs are not counted here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import kopf

from agentflow.controller import handlers
from agentflow.controller.runtime import new_memo


class Switch:
    def __init__(self, owned: bool) -> None:
        self.owned = owned

    def owns(self, key: str) -> bool:
        return self.owned


def registered() -> dict[str, Callable[..., Any]]:
    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    found = [*registry._watching.get_all_handlers(), *registry._spawning.get_all_handlers()]
    return {h.fn.__name__: h.fn for h in found}


def body(uid: str = "uid-1", labels: dict[str, str] | None = None) -> kopf.Body:
    return kopf.Body({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
                      "metadata": {"name": "wf", "namespace": "team", "uid": uid, "labels": labels or {}}})


async def test_timers_act_only_on_what_this_replica_owns() -> None:
    fns = registered()
    memo = new_memo()
    memo.shards = Switch(False)  # memo.driver and memo.rollouts are not even set: nothing may touch them
    await fns["schedule"](body=body(), memo=memo, logger=None)
    memo.rollouts = None
    await fns["rollout"](body=body(), memo=memo, logger=None)


async def test_a_deleted_workflow_is_collected_by_its_owner_and_forgotten_by_the_others() -> None:
    fns = registered()
    calls: list[tuple[str, str]] = []

    class Retention:
        def forget(self, uid: str) -> None:
            calls.append(("forget", uid))

        async def collect(self, uid: str) -> None:
            calls.append(("collect", uid))

    memo = new_memo()
    memo.retention = Retention()  # type: ignore[assignment]
    memo.shards = Switch(False)
    await fns["workflow_changed"](body=body(), memo=memo, type="DELETED")
    memo.shards = Switch(True)
    await fns["workflow_changed"](body=body(), memo=memo, type="DELETED")
    assert calls == [("forget", "uid-1"), ("collect", "uid-1")]


def test_a_pod_of_another_replicas_run_pokes_but_is_not_counted_here() -> None:
    fns = registered()
    counted: list[str] = []

    class Metrics:
        def observe_pod(self, pod: Any) -> None:
            counted.append(pod["metadata"]["uid"])

    class Reconciler:
        pods = None  # no pod cache: nothing to observe

    class Driver:
        metrics = Metrics()
        reconciler = Reconciler()

    memo = new_memo()
    memo.driver = Driver()  # type: ignore[assignment]
    wakeup = memo.wakeups.setdefault("run-1", asyncio.Event())
    pod = kopf.Body({**body("pod-1", {"agentflow.dev/run": "run-1"}), "status": {"phase": "Succeeded"}})
    memo.shards = Switch(False)
    fns["pod_changed"](body=pod, memo=memo, type="MODIFIED")
    assert wakeup.is_set() and counted == []
    memo.shards = Switch(True)
    fns["pod_changed"](body=pod, memo=memo, type="MODIFIED")
    assert counted == ["pod-1"]


async def test_the_daemon_of_a_workflow_owned_elsewhere_waits_and_ends_with_kopfs_stop() -> None:
    fns = registered()
    memo = new_memo()
    memo.shards = Switch(False)  # memo.driver is not set: driving would fail the test

    class Stop:
        set = False

        def __bool__(self) -> bool:
            return self.set

    stopped = Stop()
    kwargs = {plural: {} for plural in handlers.INDEXED}
    task = asyncio.create_task(fns["drive"](body=body(), memo=memo, stopped=stopped, logger=None, **kwargs))
    await asyncio.sleep(0.05)
    assert not task.done() and "uid-1" in memo.wakeups
    stopped.set = True
    memo.poke("uid-1")
    await asyncio.wait_for(task, 2.0)
    assert "uid-1" not in memo.wakeups

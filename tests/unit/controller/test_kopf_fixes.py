"""The namespace created while the operator starts (agentflow.controller.kopf_fixes), through kopf's own
namespace observer: its first list misses the namespace, its watch-stream's list has it, no watch event follows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import references
from kopf._core.reactor import observation

from agentflow.controller import kopf_fixes


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


async def observe(monkeypatch: pytest.MonkeyPatch, first: list[str], second: list[str]) -> set[Any]:
    """kopf's namespace_observer where the first list holds ``first`` and the watch-stream lists ``second``."""

    async def fetch_objs(**_: Any) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        yield [namespace(n) for n in first], "1"

    async def watcher(*, processor: Any, **_: Any) -> None:
        for name in second:  # the watch-stream's own initial list: events of type None
            await processor(raw_event={"type": None, "object": namespace(name)})
        await asyncio.Event().wait()  # no watch event: the namespace was created before the watch began

    monkeypatch.setattr(observation.fetching, "fetch_objs", fetch_objs)
    monkeypatch.setattr(observation.queueing, "watcher", watcher)
    insights = references.Insights()
    await insights.backbone.fill(resources=[references.Resource("", "v1", "namespaces", namespaced=False)])
    task = asyncio.create_task(observation.namespace_observer(
        clusterwide=False, namespaces=["team-*"], insights=insights, settings=kopf.OperatorSettings()))
    try:
        await asyncio.wait_for(insights.ready_namespaces.wait(), 5)
        for _ in range(20):
            await asyncio.sleep(0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return set(insights.namespaces)


async def test_without_the_fix_kopf_never_serves_a_namespace_created_between_its_two_lists(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observation, "process_discovered_namespace_event", kopf_fixes._original)
    assert await observe(monkeypatch, ["team-a"], ["team-a", "team-b"]) == {"team-a"}


async def test_with_the_fix_it_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observation, "process_discovered_namespace_event", kopf_fixes._original)
    kopf_fixes.apply()
    kopf_fixes.apply()  # idempotent
    assert observation.process_discovered_namespace_event is kopf_fixes.process_discovered_namespace_event
    assert await observe(monkeypatch, ["team-a"], ["team-a", "team-b", "other"]) == {"team-a", "team-b"}


async def test_watch_events_still_go_through_kopf(monkeypatch: pytest.MonkeyPatch) -> None:
    kopf_fixes.apply()
    insights = references.Insights()
    gone = {**namespace("team-a"), "metadata": {"name": "team-a", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "X", "status": "False"}]}}
    await observation.process_discovered_namespace_event(raw_event={"type": "ADDED", "object": namespace("team-a")},
                                                         namespaces=["team-*"], insights=insights)
    assert insights.namespaces == {"team-a"}
    await observation.process_discovered_namespace_event(raw_event={"type": "MODIFIED", "object": gone},
                                                         namespaces=["team-*"], insights=insights)
    assert insights.namespaces == set()

"""The namespace created while the operator starts (agentflow.controller.kopf_fixes), through kopf's own
namespace observer: its first list misses the namespace, its watch-stream's list has it, no watch event follows."""

from __future__ import annotations

import asyncio
import copy
import json
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


def managed(n: int) -> list[dict[str, Any]]:
    return [{"manager": f"m{i}", "operation": "Update", "fieldsV1": {"f:status": {"f:nodes": {f"f:s{i}": {}}}}}
            for i in range(n)]


BODIES: list[dict[str, Any]] = [
    {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
     "metadata": {"name": "w", "namespace": "team-a", "uid": "u", "resourceVersion": "7", "generation": 2,
                  "labels": {"app": "x"}, "finalizers": ["agentflow.dev/finalizer"], "managedFields": managed(5),
                  "annotations": {"agentflow.dev/approve": "step", "kubectl.kubernetes.io/last-applied-configuration":
                                  "{}", "kopf.zalando.org/last-handled-configuration": "{}",
                                  "agentflow.dev/last-handled-configuration": "{\"spec\": {}}"}},
     "spec": {"steps": [{"name": "a", "kind": "tool", "tool": "t", "inputs": {"x": [1, {"y": 2}]}}]},
     "status": {"phase": "Running", "nodes": {"a": {"phase": "Running"}}}},
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "p", "namespace": "team-a", "managedFields": managed(3),
                  "ownerReferences": [{"kind": "Workflow", "name": "w", "uid": "u"}], "labels": {}},
     "spec": {"containers": [{"name": "step", "image": "i", "env": [{"name": "A", "value": "1"}]}]},
     "status": {"phase": "Succeeded", "containerStatuses": [{"name": "step", "ready": False}]}},
    {"apiVersion": "apps/v1", "kind": "ReplicaSet",  # kopf names its key from ownerReferences and kind here
     "metadata": {"name": "r", "ownerReferences": [{"kind": "Deployment", "name": "d"}],
                  "annotations": {"a": "b"}}, "spec": {"replicas": 2}, "data": {"k": "v"}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}, "status": {"phase": "Active"}},
]
EXTRA_FIELDS: list[list[Any]] = [[], ["status.phase"], ["metadata.finalizers", "status.nodes"], [("metadata", "uid")],
                                 ["spec.steps"]]


@pytest.mark.parametrize("raw", BODIES, ids=lambda b: b["kind"])
@pytest.mark.parametrize("extra", EXTRA_FIELDS, ids=str)
def test_the_lean_diff_base_is_the_essence_kopf_builds(raw: dict[str, Any], extra: list[Any]) -> None:
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="agentflow.dev")
    lean = kopf_fixes.LeanDiffBaseStorage(prefix="agentflow.dev")
    body = kopf.Body(raw)
    expected = kopfs.build(body=body, extra_fields=extra)
    got = lean.build(body=body, extra_fields=extra)
    assert got == expected
    assert lean.fetch(body=body) == kopfs.fetch(body=body)
    # a copy: changing the object afterwards changes no essence built before
    if "spec" in got:
        raw["spec"]["mutated"] = True
        assert "mutated" not in got["spec"]
        del raw["spec"]["mutated"]


def test_the_lean_diff_base_copies_neither_the_status_nor_managed_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    copied: list[Any] = []
    real = copy.deepcopy

    def spy(value: Any, memo: Any = None) -> Any:
        copied.append(value)
        return real(value, memo)

    monkeypatch.setattr(copy, "deepcopy", spy)
    kopf_fixes.LeanDiffBaseStorage(prefix="agentflow.dev").build(body=kopf.Body(BODIES[0]))
    top = [v for v in copied if isinstance(v, dict) and ("status" in v or "managedFields" in v)]
    assert top == [], "the status and managedFields are not copied"


WATCH_LINES = [
    b'{"type": "ADDED", "object": {"metadata": {"name": "w", "labels": {"caf\\u00e9": "\xc3\xa9"}}, "n": 1.5e3}}',
    b'{"type": "MODIFIED", "object": {"max": 9223372036854775807, "neg": -9223372036854775808, "f": 0.1}}',
    b'{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}',
    b'{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}, "x": [null, true, false, ""]}',
]


@pytest.mark.parametrize("line", WATCH_LINES)
def test_watch_lines_decode_as_the_standard_module_decodes_them(line: bytes) -> None:
    text = line.decode("utf-8")  # as kopf hands it over
    assert kopf_fixes.WatchJson.loads(text) == json.loads(text)


def test_a_watched_objects_managed_fields_are_dropped_and_nothing_else() -> None:
    body = {"metadata": {"name": "w", "uid": "u", "resourceVersion": "7", "labels": {"a": "b"},
                         "managedFields": [{"manager": "agentflow", "operation": "Update", "fieldsType": "FieldsV1",
                                            "fieldsV1": {"f:status": {"f:phase": {}}}}]},
            "spec": {"steps": [{"name": "s"}]}, "status": {"phase": "Running"}}
    event = kopf_fixes.WatchJson.loads(json.dumps({"type": "MODIFIED", "object": body}))
    expected = copy.deepcopy(body)
    del expected["metadata"]["managedFields"]
    assert event == {"type": "MODIFIED", "object": expected}
    # anything not shaped like a watched object is decoded as it is
    for text in ('[1, 2]', '"x"', '{"type": "ADDED", "object": 5}', '{"object": {"metadata": [1]}}',
                 '{"object": {"spec": {"metadata": {"managedFields": 1}}}}'):
        assert kopf_fixes.WatchJson.loads(text) == json.loads(text)


def test_an_integer_past_64_bits_is_the_float_the_api_server_would_have_stored() -> None:
    # The API server decodes a custom object's numbers to int64 or float64 (encoding/json with UseNumber), so a
    # watch line never holds a wider integer; were one to come, orjson gives the float the server would store.
    assert kopf_fixes.WatchJson.loads('{"big": 12345678901234567890123}') == {"big": 1.2345678901234568e+22}


def test_kopfs_watch_streams_use_it_and_bad_lines_still_fail() -> None:
    from kopf._cogs.clients import api

    kopf_fixes.apply()
    assert isinstance(api.json, kopf_fixes.WatchJson)  # type: ignore[attr-defined]
    assert api.json.dumps({"a": 1}) == json.dumps({"a": 1})  # type: ignore[attr-defined]
    with pytest.raises(json.JSONDecodeError):
        kopf_fixes.WatchJson.loads('{"type": "ADDED", "object": {')

"""Determinism and resumption: the same journal gives the same decisions, and a
run resumed from any prefix of its journal never re-runs a finished step."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.engine.values import EventType, StepRequest

from .harness import Harness, fail, ok, plan

WORKFLOW = plan("""
spec:
  inputs: {docs: [a, b, c, d]}
  parallelism: 3
  retry: {limit: 2, backoff: {initialSeconds: 2, jitter: 0.5}}
  steps:
  - {name: fetch, kind: tool, tool: t}
  - {name: map, kind: tool, tool: t, dependsOn: [fetch], forEach: "inputs.docs", parallelism: 2,
     inputs: {doc: "${{ item }}"}}
  - {name: check, kind: tool, tool: t, dependsOn: [fetch], when: "size(inputs.docs) > 2"}
  - {name: reduce, kind: tool, tool: t, dependsOn: [map, check], inputs: {all: "${{ steps.map.output }}"}}
  - {name: cleanup, kind: tool, tool: t, runOn: always}
""")


def behaviour(req: StepRequest):  # type: ignore[no-untyped-def]
    # Deterministic: item c fails on its first attempt, everything takes node-dependent time.
    if req.node == "map[2]" and req.attempt == 1:
        return fail("Flaky", "first try", duration=1.5)
    return ok({"node": req.node, "inputs": dict(req.inputs)}, duration=1.0 + len(req.node) % 3)


def signature(events: list[Any]) -> list[tuple[Any, ...]]:
    return [(e.type, e.node, repr(sorted(e.data.items())), e.at) for e in events]


def full_run() -> Harness:
    h = Harness(WORKFLOW, behaviour, start=0.0)
    h.run_until_blocked()
    assert h.run.phase == "Succeeded"
    return h


def test_same_inputs_give_the_same_journal() -> None:
    assert signature(full_run().events) == signature(full_run().events)


def test_decide_is_idempotent_without_new_events() -> None:
    h = Harness(WORKFLOW, behaviour, start=0.0)
    for _ in range(6):
        h.step()
        h.decide()
        again = h.run.decide(h.now)
        assert again.events == () and again.start == () and again.cancel == ()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_resume_from_any_prefix_finishes_the_same_and_never_reruns_finished_steps(data: st.DataObject) -> None:
    reference = full_run()
    k = data.draw(st.integers(min_value=0, max_value=len(reference.events)))
    prefix = reference.events[:k]
    finished = {(e.node, e.data["attempt"]) for e in prefix if e.type is EventType.step_succeeded}
    start = prefix[-1].at if prefix else 0.0
    resumed = Harness(WORKFLOW, behaviour, start=start, events=prefix)
    run = resumed.run_until_blocked()
    assert run.phase == "Succeeded"
    assert run.outputs == reference.run.outputs
    assert not finished & set(resumed.executed), "a finished attempt ran again"
    succeeded = [e.node for e in resumed.events if e.type is EventType.step_succeeded]
    assert len(succeeded) == len(set(succeeded)), "a node succeeded twice"


def test_in_flight_attempts_restart_with_the_same_idempotency_key() -> None:
    reference = full_run()
    k = next(i for i, e in enumerate(reference.events) if e.type is EventType.step_scheduled) + 1
    resumed = Harness(WORKFLOW, behaviour, start=0.0, events=reference.events[:k])
    first = reference.requests[0]
    assert resumed.requests[0].idempotency_key == first.idempotency_key == "run-1/fetch/1"

"""Quality signals of an Agent × PromptVersion from a run's journal events: one observation per signal when an
llm step's attempt ends, repairs from its model calls, cost per success across attempts and runs."""

from __future__ import annotations

from typing import Any

from agentflow.engine.plan import compile_plan
from agentflow.engine.values import Event, EventType
from agentflow.models import Workflow
from agentflow.quality import Observation, SignalTracker, Subject, llm_subjects

E = EventType
SUBJECT = Subject("team", "writer", "summarize-v2")


def plan_of(spec: dict[str, Any]) -> Any:
    return compile_plan(Workflow.model_validate({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
                                                 "metadata": {"name": "wf", "namespace": "team"}, "spec": spec}))


DAG = {"steps": [
    {"name": "draft", "kind": "llm", "agentRef": {"name": "writer"}, "promptRef": {"name": "summarize-v2"}},
    {"name": "fetch", "kind": "tool", "tool": "echo"},
]}


def call(cost: float) -> dict[str, Any]:
    return {"call": {"kind": "llm", "name": "openai/gpt-4o-mini", "cost_usd": cost}}


def values(observations: list[Observation]) -> dict[str, float]:
    return {o.signal: o.value for o in observations}


def test_llm_steps_name_their_agent_and_prompt_version() -> None:
    assert llm_subjects(plan_of(DAG)) == {"draft": ("writer", "summarize-v2")}
    fsm = {"stateMachine": {"initial": "ask", "states": [
        {"name": "ask", "step": {"name": "q", "kind": "llm", "agentRef": {"name": "writer"},
                                 "promptRef": {"name": "p1"}}, "transitions": [{"target": "done"}]},
        {"name": "done", "final": "Succeeded"}]}}
    assert llm_subjects(plan_of(fsm)) == {"ask": ("writer", "p1")}
    tree = {"behaviorTree": {"type": "retry", "limit": 1, "child": {"type": "step", "step": {
        "name": "q", "kind": "llm", "agentRef": {"name": "writer"}, "promptRef": {"name": "p1"}}}}}
    assert llm_subjects(plan_of(tree)) == {"q": ("writer", "p1")}


def test_an_attempt_says_failure_schema_repairs_latency_and_cost_per_success() -> None:
    tracker = SignalTracker()
    subjects = llm_subjects(plan_of(DAG))
    failed = tracker.observe("r1", "team", subjects, [
        Event(E.run_started, None, {}, 0.0),
        Event(E.step_scheduled, "draft", {"step": "draft", "kind": "llm", "attempt": 1}, 10.0),
        Event(E.cost_recorded, "draft", call(0.01), 11.0),
        Event(E.cost_recorded, "draft", call(0.02), 12.0),  # a repair request
        Event(E.step_failed, "draft", {"attempt": 1, "error": {"type": "InvalidModelOutput"}}, 13.0),
        Event(E.step_scheduled, "fetch", {"step": "fetch", "kind": "tool", "attempt": 1}, 13.0),
        Event(E.step_succeeded, "fetch", {"attempt": 1}, 14.0),
    ])
    assert {o.subject for o in failed} == {SUBJECT}
    assert values(failed) == {"failure": 1.0, "schema_failure": 1.0, "repaired": 1.0, "latency_seconds": 3.0}
    ok = tracker.observe("r1", "team", subjects, [
        Event(E.step_scheduled, "draft", {"step": "draft", "kind": "llm", "attempt": 2}, 20.0),
        Event(E.cost_recorded, "draft", call(0.01), 21.0),
        Event(E.step_succeeded, "draft", {"attempt": 2, "score": 0.75}, 22.0),
    ])
    assert values(ok) == {"failure": 0.0, "schema_failure": 0.0, "repaired": 0.0, "latency_seconds": 2.0,
                          "cost_per_success_usd": 0.04, "score": 0.75}  # the failed attempt's dollars too


def test_cancelled_attempts_agent_loop_turns_and_unknown_steps_say_nothing() -> None:
    tracker = SignalTracker()
    subjects = llm_subjects(plan_of(DAG))
    assert tracker.observe("r1", "team", subjects, [
        Event(E.step_scheduled, "draft", {"step": "draft", "kind": "llm", "attempt": 1}, 1.0),
        Event(E.step_cancelled, "draft", {"reason": "cancel"}, 2.0),
        Event(E.step_scheduled, "draft/t1", {"step": "draft", "kind": "llm", "attempt": 1}, 2.0),
        Event(E.step_succeeded, "draft/t1", {"attempt": 1}, 3.0),
        Event(E.step_scheduled, "other", {"step": "other", "kind": "llm", "attempt": 1}, 2.0),
        Event(E.step_succeeded, "other", {"attempt": 1}, 3.0),
        Event(E.step_succeeded, "draft", {"attempt": 1}, 4.0),  # not open any more
    ]) == []


def test_a_finished_run_is_forgotten() -> None:
    tracker = SignalTracker()
    tracker.observe("r1", "team", llm_subjects(plan_of(DAG)), [
        Event(E.step_scheduled, "draft", {"step": "draft", "kind": "llm", "attempt": 1}, 1.0),
        Event(E.run_finished, None, {"phase": "Failed"}, 2.0)])
    assert tracker._runs == {}

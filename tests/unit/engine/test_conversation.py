"""An Agent's conversation within a run (memory.kind conversation): carried across its steps, compacted by a summary
node when over its budget, derived from the journal so resume and replay carry the same messages."""

from __future__ import annotations

import json
from typing import Any

from agentflow.engine import conversation
from agentflow.engine.plan import AgentLoop, LoopTool, compile_plan
from agentflow.engine.run import Run
from agentflow.engine.values import StepRequest, StepResult
from agentflow.runner.replay import replay_exact

from .harness import Harness, ok, workflow

FLOW = """
spec:
  steps:
  - {name: first, kind: llm, agentRef: {name: helper}, promptRef: {name: p}, inputs: {q: "where is order 1?"}}
  - {name: second, kind: llm, agentRef: {name: helper}, promptRef: {name: p}, inputs: {q: "and order 2?"},
     dependsOn: [first]}
  - {name: third, kind: llm, agentRef: {name: other}, promptRef: {name: p}, inputs: {q: "hello"},
     dependsOn: [second]}
"""


def fn(name: str) -> dict[str, Any]:
    return {"name": name, "description": name, "parameters": {"type": "object"}}


def loops(tokens: int | None = 4000) -> dict[str, AgentLoop]:
    return {"helper": AgentLoop("helper", {"lookup": LoopTool("lookup", fn("lookup"), policy="p")},
                                conversation_tokens=tokens),
            "other": AgentLoop("other", {}, conversation_tokens=tokens)}


def final(value: Any) -> dict[str, Any]:
    return {"final": True, "value": value, "message": {"role": "assistant", "content": json.dumps(value)}}


def lookup(i: int) -> dict[str, Any]:
    return {"final": False, "message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": "lookup", "arguments": json.dumps({"i": i})}}]}}


def behaviour(turns: dict[str, Any], tool_output: str = "found") -> Any:
    summaries: list[StepRequest] = []

    def run(request: StepRequest) -> tuple[float, StepResult]:
        context = request.context or {}
        if "summary" in context:
            summaries.append(request)
            told = context["summary"]
            return ok({"summary": f"S{len(summaries)}({len(told['messages'])} messages, previous "
                                  f"{told['previous']!r})"})
        if "turn" in context:
            return ok(turns.get(request.node, final(f"answer of {request.node}")))
        return ok(tool_output)
    run.summaries = summaries  # type: ignore[attr-defined]
    return run


def harness(script: Any, tokens: int | None = 4000, events: Any = None) -> Harness:
    plan = compile_plan(workflow(FLOW), loops=loops(tokens))
    return Harness(plan, script, start=0.0, events=events)


def turn(h: Harness, node: str) -> StepRequest:
    return next(r for r in h.requests if r.node == node)


def test_a_later_step_sees_the_agents_earlier_exchange_and_another_agent_does_not() -> None:
    h = harness(behaviour({}))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [n for n, _ in h.executed] == ["first/t1", "second/t1", "third/t1"]
    assert turn(h, "first/t1").context["history"] == []  # type: ignore[index]
    assert turn(h, "second/t1").context["history"] == [  # type: ignore[index]
        {"role": "user", "content": '(step first) inputs: {"q": "where is order 1?"}'},
        {"role": "assistant", "content": "answer of first/t1"}]
    assert turn(h, "third/t1").context["history"] == []  # type: ignore[index]  # Agent other's own conversation
    assert [seq for seq, _ in run.conversations["helper"].units] == [0, 1]


def test_without_conversation_memory_nothing_is_carried() -> None:
    h = harness(behaviour({}), tokens=None)
    h.run_until_blocked()
    assert "history" not in turn(h, "second/t1").context  # type: ignore[operator]


def test_over_budget_the_earlier_exchange_is_compacted_by_a_summary_node_before_the_turn() -> None:
    long = "x" * 1200  # ~300 tokens: first's exchange alone passes a 256-token budget
    script = behaviour({"first/t1": final(long)})
    h = harness(script, tokens=256)
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [n for n, _ in h.executed] == ["first/t1", "second/s1", "second/t1", "third/t1"]
    summary = turn(h, "second/s1")
    assert summary.kind == "llm" and summary.agent == "helper" and summary.step == "second"
    assert summary.context["summary"]["messages"][1] == {"role": "assistant", "content": long}  # type: ignore[index]
    assert summary.context["summary"]["maxTokens"] == 64  # type: ignore[index]
    history = turn(h, "second/t1").context["history"]  # type: ignore[index]
    assert history == [{"role": "user", "content": f"{conversation.SUMMARY_HEADER}\nS1(2 messages, previous None)"}]
    memory = run.conversations["helper"]
    assert memory.summary == "S1(2 messages, previous None)" and [s for s, _ in memory.units] == [1]
    assert run.nodes["second/s1"].phase == "Succeeded"


def test_within_a_loop_older_turns_are_compacted_and_the_latest_turn_is_kept() -> None:
    result = "r" * 600  # each turn adds ~160 tokens
    turns = {"first/t1": lookup(1), "first/t2": lookup(2), "first/t3": lookup(3), "first/t4": final("done")}
    h = harness(behaviour(turns, result), tokens=400)
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    order = [n for n, _ in h.executed if n.startswith("first/") and "/call" not in n]
    assert order == ["first/t1", "first/t2", "first/t3", "first/s1", "first/t4"]
    compacted = turn(h, "first/s1").context["summary"]["messages"]  # type: ignore[index]
    # ~490 tokens over a budget of 400: the oldest turns go until at most half is left, the latest stays
    assert [m["role"] for m in compacted] == ["assistant", "tool", "assistant", "tool"]
    assert [compacted[0]["tool_calls"][0]["id"], compacted[3]["tool_call_id"]] == ["c1", "c2"]
    t4 = turn(h, "first/t4").context  # type: ignore[union-attr]
    assert t4 is not None
    assert [m.get("tool_call_id") or m["tool_calls"][0]["id"] for m in t4["messages"]] == ["c3", "c3"]
    assert t4["history"][0]["content"].endswith("S1(4 messages, previous None)")


def test_a_second_summary_is_given_the_first() -> None:
    long = "y" * 1200
    three = FLOW.replace("agentRef: {name: other}", "agentRef: {name: helper}")
    script = behaviour({"first/t1": final(long), "second/t1": final(long)})
    h = Harness(compile_plan(workflow(three), loops=loops(256)), script, start=0.0)
    run = h.run_until_blocked()
    assert [n for n, _ in h.executed] == ["first/t1", "second/s1", "second/t1", "third/s1", "third/t1"]
    assert turn(h, "third/s1").context["summary"]["previous"] == "S1(2 messages, previous None)"  # type: ignore[index]
    assert run.conversations["helper"].summary == "S2(2 messages, previous 'S1(2 messages, previous None)')"
    assert [seq for seq, _ in run.conversations["helper"].units] == [2]


def test_resume_mid_way_continues_with_the_same_summary_and_messages() -> None:
    long = "z" * 1200
    whole = harness(behaviour({"first/t1": final(long)}), tokens=256)
    whole.run_until_blocked()
    cut = next(i for i, e in enumerate(whole.events) if e.node == "second/s1" and e.type.value == "StepScheduled")
    resumed = harness(behaviour({"first/t1": final(long)}), tokens=256, events=whole.events[:cut + 1])
    assert resumed.executed == [("second/s1", 1)]  # the summary in flight runs again, nothing before it
    run = resumed.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [(e.type, e.node, dict(e.data)) for e in resumed.events] == [
        (e.type, e.node, dict(e.data)) for e in whole.events]
    assert turn(resumed, "second/t1").context == turn(whole, "second/t1").context


def test_replay_reads_the_recorded_summary_and_calls_nothing() -> None:
    long = "w" * 1200
    h = harness(behaviour({"first/t1": final(long)}), tokens=256)
    h.run_until_blocked()
    plan = compile_plan(workflow(FLOW), loops=loops(256))
    replayed, events, diff = replay_exact(plan, "run-1", h.events)  # no executor: nothing can be called
    assert diff.same_path_and_outputs
    assert replayed.nodes["second/s1"].output == {"summary": "S1(2 messages, previous None)"}
    scheduled = [e.node for e in events if e.type.value == "StepScheduled"]
    assert scheduled == ["first/t1", "second/s1", "second/t1", "third/t1"]
    assert replayed.conversations["helper"].summary == "S1(2 messages, previous None)"


def test_a_failed_summary_fails_the_loop_naming_it() -> None:
    long = "v" * 1200

    def script(request: StepRequest) -> tuple[float, StepResult]:
        if "summary" in (request.context or {}):
            from .harness import fail
            return fail("BudgetExceeded", "no money left", retryable=False)
        return ok(final(long))
    h = harness(script, tokens=256)
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert run.nodes["second"].message == "BudgetExceeded: summary s1: no money left"


def test_the_budget_is_recorded_in_run_started_so_resume_uses_it() -> None:
    h = harness(behaviour({}), tokens=512)
    h.run_until_blocked()
    started = h.events[0].data["loops"]["helper"]
    assert started["conversationTokens"] == 512
    again = Run.resume(compile_plan(workflow(FLOW), loops=loops(None)), "run-1", h.events)
    assert again.loops["helper"].conversation_tokens == 512

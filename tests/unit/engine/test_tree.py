"""Behavior-tree runs: each composite's and decorator's semantics, leaves as nodes NAME#n, resume and replay."""

from __future__ import annotations

from collections import Counter

from agentflow.engine.run import Run
from agentflow.engine.values import EventType, StepRequest, StepResult

from .harness import Harness, fail, ok, plan

E = EventType


def by_step(**outcomes):  # type: ignore[no-untyped-def]
    """A behaviour per step name: a tuple (duration, StepResult), or a list of them taken in turn."""
    seen: Counter[str] = Counter()

    def behaviour(req: StepRequest) -> tuple[float, StepResult]:
        out = outcomes.get(req.step, ok({"step": req.step}))
        if isinstance(out, list):
            out = out[min(seen[req.step], len(out) - 1)]
        seen[req.step] += 1
        return out  # type: ignore[no-any-return]

    return behaviour


def tool(name: str) -> str:
    return f"{{type: step, step: {{name: {name}, kind: tool, tool: t}}}}"


def tree(body: str) -> str:
    return "spec:\n  inputs: {flag: true}\n  behaviorTree:\n" + "\n".join(
        "    " + line for line in body.strip("\n").splitlines())


SEQ = tree(f"""
type: sequence
children:
- {tool("a")}
- {tool("b")}
- {tool("c")}
""")


def test_a_sequence_runs_its_children_in_order_and_stops_at_the_first_failure() -> None:
    h = Harness(plan(SEQ))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [r.node for r in h.requests] == ["a#1", "b#1", "c#1"]
    assert [r.step for r in h.requests] == ["a", "b", "c"]
    assert run.outputs == {"a": {"node": "a#1", "inputs": {}}, "b": {"node": "b#1", "inputs": {}},
                           "c": {"node": "c#1", "inputs": {}}}

    h = Harness(plan(SEQ), by_step(b=fail(retryable=False)))
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert [r.node for r in h.requests] == ["a#1", "b#1"]
    assert run.reason == "the behavior tree failed: step b#1 failed: Boom: it broke"
    assert run.tree is not None and run.tree.phase_of("bt") == "Failed"


def test_a_selector_falls_back_until_a_child_succeeds() -> None:
    text = tree(f"""
type: selector
children:
- {tool("fast")}
- {tool("slow")}
- {tool("never")}
""")
    h = Harness(plan(text), by_step(fast=fail(retryable=False)))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [r.node for r in h.requests] == ["fast#1", "slow#1"]
    h = Harness(plan(text), by_step(fast=fail(retryable=False), slow=fail(retryable=False),
                                    never=fail(retryable=False)))
    assert h.run_until_blocked().phase == "Failed"


def test_a_parallel_decides_on_its_thresholds_and_cancels_the_rest() -> None:
    text = tree(f"""
type: parallel
successThreshold: 2
children:
- {tool("a")}
- {tool("b")}
- {tool("c")}
""")
    h = Harness(plan(text), by_step(a=ok(1, duration=1), b=ok(2, duration=2), c=ok(3, duration=10)))
    h.decide()
    assert h.running() == 3
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert run.nodes["c#1"].phase == "Cancelled"
    assert h.cancelled == ["c#1"]
    # Two of three must succeed: the second failure makes that impossible.
    h = Harness(plan(text), by_step(a=fail(retryable=False, duration=1), b=fail(retryable=False, duration=2),
                                    c=ok(3, duration=10)))
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert "2 of 3 failed" in str(run.reason)
    assert run.nodes["c#1"].phase == "Cancelled"


def test_retry_runs_the_subtree_again_and_repeat_runs_it_a_bounded_number_of_times() -> None:
    text = tree(f"""
type: sequence
children:
- type: retry
  limit: 2
  child:
    type: sequence
    children:
    - {tool("fetch")}
    - {tool("check")}
- type: repeat
  count: 3
  child: {tool("ping")}
""")
    h = Harness(plan(text), by_step(check=[fail(retryable=False), fail(retryable=False), ok("fine")]))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [r.node for r in h.requests] == ["fetch#1", "check#1", "fetch#2", "check#2", "fetch#3", "check#3",
                                            "ping#1", "ping#2", "ping#3"]
    # Past its limit the retry fails.
    h = Harness(plan(text), by_step(check=fail(retryable=False)))
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert "(after 3 tries)" in str(run.reason)


def test_invert_and_condition_guards() -> None:
    text = tree(f"""
type: sequence
children:
- type: invert
  child: {tool("is-spam")}
- type: selector
  children:
  - type: condition
    when: "inputs.flag && steps['is-spam'].phase == 'Failed'"
    child: {tool("publish")}
  - {tool("hold")}
- type: condition
  when: "steps.publish.phase == 'Succeeded'"
""")
    h = Harness(plan(text), by_step(**{"is-spam": fail(retryable=False)}))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded", run.reason
    assert [r.node for r in h.requests] == ["is-spam#1", "publish#1"]
    # is-spam succeeding fails the invert, so the sequence fails before the guard.
    h = Harness(plan(text))
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert [r.node for r in h.requests] == ["is-spam#1"]


def test_a_false_guard_fails_without_running_its_child() -> None:
    text = tree(f"""
type: selector
children:
- type: condition
  when: "!inputs.flag"
  child: {tool("skipped")}
- {tool("fallback")}
""")
    h = Harness(plan(text))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [r.node for r in h.requests] == ["fallback#1"]


def test_a_timeout_decorator_cancels_its_subtree() -> None:
    text = tree(f"""
type: selector
children:
- type: timeout
  timeoutSeconds: 30
  child: {tool("slow")}
- {tool("quick")}
""")
    h = Harness(plan(text), by_step(slow=ok(duration=100)))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert run.nodes["slow#1"].phase == "Cancelled"
    assert h.cancelled == ["slow#1"]
    timed_out = [e for e in h.events if e.type is E.step_timed_out]
    assert [(e.node, e.at) for e in timed_out] == [("bt.0", 1030.0)]
    assert [r.node for r in h.requests] == ["slow#1", "quick#1"]


def test_leaves_keep_their_step_retries_and_approvals() -> None:
    text = """
spec:
  behaviorTree:
    type: sequence
    children:
    - type: step
      step: {name: flaky, kind: tool, tool: t, retry: {limit: 2, backoff: {initialSeconds: 1, jitter: 0}}}
    - type: step
      step: {name: ok, kind: approval, approval: {message: "go?"}}
    - type: step
      step: {name: after, kind: tool, tool: t}
"""
    h = Harness(plan(text), by_step(flaky=[fail(), ok("done")]))
    h.run_until_blocked()
    assert h.executed[:2] == [("flaky#1", 1), ("flaky#1", 2)]
    assert h.run.nodes["ok#1"].phase == "Waiting"
    h.post(E.approval_decided, "ok#1", approved=True, by="alice")
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert h.executed[-1] == ("after#1", 1)


def test_cancelling_a_tree_run_cancels_its_running_leaves() -> None:
    text = tree(f"""
type: parallel
children:
- {tool("a")}
- {tool("b")}
""")
    h = Harness(plan(text), by_step(a=ok(duration=50), b=ok(duration=50)))
    h.decide()
    h.post(E.cancel_requested, by="bob")
    run = h.run_until_blocked()
    assert run.phase == "Cancelled"
    assert sorted(h.cancelled) == ["a#1", "b#1"]


MODERATION = tree(f"""
type: sequence
children:
- {tool("classify")}
- type: selector
  children:
  - type: condition
    when: "steps.classify.output.label == 'ok'"
    child: {tool("publish")}
  - type: retry
    limit: 1
    child:
      type: parallel
      children:
      - {tool("review-a")}
      - {tool("review-b")}
- {tool("notify")}
""")


def test_a_tree_run_resumed_after_a_crash_does_not_run_finished_leaves_again() -> None:
    behaviour = by_step(classify=ok({"label": "hold"}), **{"review-b": [fail(retryable=False), ok()]})
    full = Harness(plan(MODERATION), behaviour)
    full_run = full.run_until_blocked()
    assert full_run.phase == "Succeeded"
    expected = [r.node for r in full.requests]
    assert expected == ["classify#1", "review-a#1", "review-b#1", "review-a#2", "review-b#2", "notify#1"]

    # Crash right after review-b#1 failed (review-a#1 succeeded, the retry about to start): resume the journal.
    cut = next(i for i, e in enumerate(full.events) if e.type is E.step_failed and e.node == "review-b#1") + 1
    journal = full.events[:cut]
    resumed = Harness(plan(MODERATION), by_step(**{"review-b": ok()}), events=journal)
    assert resumed.executed == []  # nothing was in flight
    run = resumed.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [r.node for r in resumed.requests] == ["review-a#2", "review-b#2", "notify#1"]

    # Crash with review-a#2 and review-b#2 in flight: only they start again, with the same attempt.
    cut = next(i for i, e in enumerate(full.events) if e.type is E.step_scheduled and e.node == "review-b#2") + 1
    resumed = Harness(plan(MODERATION), by_step(**{"review-b": ok()}), events=full.events[:cut])
    assert sorted(resumed.executed) == [("review-a#2", 1), ("review-b#2", 1)]
    assert resumed.run_until_blocked().phase == "Succeeded"
    assert resumed.executed[-1] == ("notify#1", 1)


def test_replaying_a_tree_journal_rebuilds_the_same_run_without_calls() -> None:
    h = Harness(plan(MODERATION), by_step(classify=ok({"label": "hold"}),
                                          **{"review-b": [fail(retryable=False), ok()]}))
    original = h.run_until_blocked()
    replayed = Run.resume(plan(MODERATION), "run-1", h.events)
    assert replayed.finished and replayed.phase == original.phase == "Succeeded"
    assert {k: n.phase for k, n in replayed.nodes.items()} == {k: n.phase for k, n in original.nodes.items()}
    assert replayed.outputs == original.outputs
    assert replayed.tree is not None and original.tree is not None
    assert replayed.tree.execs.keys() == original.tree.execs.keys()
    assert {k: e.phase for k, e in replayed.tree.execs.items()} == {k: e.phase for k, e in original.tree.execs.items()}
    assert replayed.decide(h.now).start == ()


def test_a_gated_tool_leaf_waits_for_a_human_before_it_runs() -> None:
    from agentflow.engine.plan import ToolGate, compile_plan

    from .harness import workflow

    text = tree(f"""
type: sequence
children:
- {tool("a")}
- {tool("b")}
""")
    gated = compile_plan(workflow(text), gates={"b": ToolGate("t", "pol")})
    h = Harness(gated)
    h.run_until_blocked()
    assert h.run.nodes["b#1"].phase == "Waiting" and [r.node for r in h.requests] == ["a#1"]
    requested = [e for e in h.events if e.type is E.approval_requested]
    assert requested[0].node == "b#1" and requested[0].data["gate"]["tool"] == "t"
    h.post(E.approval_decided, "b#1", approved=True, by="alice")
    assert h.run_until_blocked().phase == "Succeeded"
    assert [r.node for r in h.requests] == ["a#1", "b#1"]


def test_the_workflow_timeout_stops_the_tree() -> None:
    text = "spec:\n  timeoutSeconds: 10\n  behaviorTree:\n" + "\n".join("    " + line for line in f"""
type: selector
children:
- {tool("slow")}
- {tool("never")}
""".strip().splitlines())
    h = Harness(plan(text), by_step(slow=ok(duration=100)))
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert "timeout" in str(run.reason)
    assert run.nodes["slow#1"].phase == "Cancelled" and "never#1" not in run.nodes
    assert h.cancelled == ["slow#1"]


def test_a_guard_that_cannot_be_evaluated_fails_its_node_with_the_reason() -> None:
    text = tree(f"""
type: selector
children:
- type: condition
  when: "steps.a.output.x > 1"
  child: {tool("a")}
- {tool("b")}
""")
    h = Harness(plan(text))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [r.node for r in h.requests] == ["b#1"]
    assert run.tree is not None and run.tree.phase_of("bt.0") == "Failed"
    assert "condition bt.0" in str(run.tree.execs["bt.0"].why)


def test_a_parallel_succeeds_with_the_first_success_when_its_threshold_is_one() -> None:
    text = tree(f"""
type: parallel
successThreshold: 1
children:
- {tool("a")}
- {tool("b")}
- {tool("c")}
""")
    h = Harness(plan(text), by_step(a=fail(retryable=False, duration=1), b=ok(duration=2), c=ok(duration=5)))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert {k: n.phase for k, n in run.nodes.items()} == {"a#1": "Failed", "b#1": "Succeeded", "c#1": "Cancelled"}
    assert run.outputs == {"b": None}


def test_five_hundred_guards_that_pass_at_once_do_not_nest_calls() -> None:
    guards = "\n".join("- {type: condition, when: 'inputs.flag'}" for _ in range(499))
    text = tree(f"""
type: sequence
children:
{guards}
- {tool("end")}
""")
    h = Harness(plan(text))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [r.node for r in h.requests] == ["end#1"]

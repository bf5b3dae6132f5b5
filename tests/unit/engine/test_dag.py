"""DAG runs: dependencies, conditions, fan-out/fan-in, parallelism, exit handlers."""

from __future__ import annotations

from agentflow.engine.values import StepRequest

from .harness import Harness, echo, fail, ok, plan

CHAIN = """
spec:
  inputs: {topic: cats}
  steps:
  - {name: a, kind: tool, tool: t, inputs: {q: "${{ inputs.topic }}"}}
  - {name: b, kind: tool, tool: t, dependsOn: [a], inputs: {prev: "${{ steps.a.output.inputs.q }}"}}
  - {name: c, kind: tool, tool: t, dependsOn: [b]}
"""


def test_chain_runs_in_order_and_passes_outputs() -> None:
    h = Harness(plan(CHAIN))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert [n for n, _ in h.executed] == ["a", "b", "c"]
    assert h.requests[1].inputs == {"prev": "cats"}
    # Default outputs: the sinks of the DAG.
    assert run.outputs == {"c": {"node": "c", "inputs": {}}}
    assert run.progress == (3, 3)


def test_diamond_starts_independent_steps_together() -> None:
    h = Harness(plan("""
spec:
  steps:
  - {name: a, kind: tool, tool: t}
  - {name: b, kind: tool, tool: t, dependsOn: [a]}
  - {name: c, kind: tool, tool: t, dependsOn: [a]}
  - {name: d, kind: tool, tool: t, dependsOn: [b, c]}
"""))
    h.step()  # a starts and finishes
    decision = h.run.decide(h.now)
    assert [r.node for r in decision.start] == ["b", "c"]


def test_when_false_skips_and_dependents_still_run() -> None:
    h = Harness(plan("""
spec:
  inputs: {score: 0.2}
  steps:
  - {name: check, kind: tool, tool: t}
  - {name: respond, kind: tool, tool: t, dependsOn: [check], when: "inputs.score >= 0.7"}
  - {name: escalate, kind: tool, tool: t, dependsOn: [check], when: "inputs.score < 0.7"}
  - {name: act, kind: tool, tool: t, dependsOn: [respond, escalate]}
"""))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert run.step_phase("respond") == "Skipped"
    assert run.nodes["respond"].message == "when was false: inputs.score >= 0.7"
    assert [n for n, _ in h.executed] == ["check", "escalate", "act"]


def test_failure_skips_downstream_and_runs_failure_handlers() -> None:
    def behaviour(req: StepRequest):  # type: ignore[no-untyped-def]
        return fail("Boom", "no luck", retryable=False) if req.node == "b" else echo(req)

    h = Harness(plan("""
spec:
  steps:
  - {name: a, kind: tool, tool: t}
  - {name: b, kind: tool, tool: t, dependsOn: [a]}
  - {name: c, kind: tool, tool: t, dependsOn: [b]}
  - {name: d, kind: tool, tool: t, dependsOn: [c]}
  - {name: notify, kind: tool, tool: t, runOn: failure}
  - {name: cleanup, kind: tool, tool: t, runOn: always}
  - {name: celebrate, kind: tool, tool: t, dependsOn: [a], runOn: failure}
"""), behaviour)
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert run.reason == "step b: Boom: no luck"
    assert run.step_phase("c") == "Skipped" and run.step_phase("d") == "Skipped"
    assert run.nodes["c"].message == "upstream step b did not succeed"
    executed = [n for n, _ in h.executed]
    # exit handlers run after every other step is finished
    assert executed[-2:] == ["notify", "cleanup"] or executed[-2:] == ["cleanup", "notify"]
    # runOn: failure with dependencies looks at the run when they finish: it had not failed yet
    assert run.step_phase("celebrate") == "Skipped"


def test_failure_handlers_skip_on_success() -> None:
    h = Harness(plan("""
spec:
  steps:
  - {name: a, kind: tool, tool: t}
  - {name: notify, kind: tool, tool: t, runOn: failure}
  - {name: cleanup, kind: tool, tool: t, runOn: always}
"""))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert run.step_phase("notify") == "Skipped"
    assert [n for n, _ in h.executed] == ["a", "cleanup"]


def test_continue_on_failure_does_not_fail_the_run() -> None:
    h = Harness(plan("""
spec:
  steps:
  - {name: a, kind: tool, tool: t, continueOnFailure: true}
  - {name: b, kind: tool, tool: t}
"""), lambda r: fail(retryable=False) if r.node == "a" else echo(r))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert run.step_phase("a") == "Failed"


def test_fan_out_respects_step_parallelism_and_fan_in_gets_ordered_results() -> None:
    durations = {0: 5.0, 1: 1.0, 2: 3.0, 3: 1.0, 4: 2.0}
    peak = [0]

    def behaviour(req: StepRequest):  # type: ignore[no-untyped-def]
        peak[0] = max(peak[0], h.running())
        if req.step == "map":
            return ok(req.inputs["doc"].upper(), durations[int(req.node[4:-1])])
        return echo(req)

    p = plan("""
spec:
  inputs: {docs: [a, b, c, d, e]}
  steps:
  - {name: map, kind: tool, tool: t, forEach: "inputs.docs", parallelism: 2,
     inputs: {doc: "${{ item }}", position: "${{ index }}"}}
  - {name: reduce, kind: tool, tool: t, dependsOn: [map], inputs: {all: "${{ steps.map.output }}"}}
""")
    h = Harness(p, behaviour)
    h.run_until_blocked()
    assert h.run.phase == "Succeeded"
    assert peak[0] == 2
    reduce_req = next(r for r in h.requests if r.node == "reduce")
    assert reduce_req.inputs == {"all": ["A", "B", "C", "D", "E"]}
    assert h.requests[0].inputs == {"doc": "a", "position": 0}


def test_empty_fan_out_succeeds_with_empty_list() -> None:
    h = Harness(plan("""
spec:
  inputs: {docs: []}
  steps:
  - {name: map, kind: tool, tool: t, forEach: "inputs.docs"}
  - {name: reduce, kind: tool, tool: t, dependsOn: [map], inputs: {all: "${{ steps.map.output }}"}}
"""))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert h.requests[0].inputs == {"all": []}


def test_fan_out_item_failure_fails_the_step_and_cancels_the_rest() -> None:
    def behaviour(req: StepRequest):  # type: ignore[no-untyped-def]
        if req.node == "map[1]":
            return fail(retryable=False, duration=1.0)
        return ok(req.node, duration=10.0)

    h = Harness(plan("""
spec:
  inputs: {docs: [1, 2, 3, 4]}
  steps:
  - {name: map, kind: tool, tool: t, forEach: "inputs.docs", parallelism: 2}
  - {name: reduce, kind: tool, tool: t, dependsOn: [map]}
"""), behaviour)
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert run.step_phase("map") == "Failed"
    assert run.nodes["map[0]"].phase == "Cancelled"
    assert run.nodes["map[3]"].phase == "Cancelled"
    assert "map[0]" in h.cancelled
    assert run.step_phase("reduce") == "Skipped"


def test_forEach_that_is_not_a_list_fails_the_step_with_a_clear_error() -> None:
    h = Harness(plan("""
spec:
  inputs: {docs: "oops"}
  steps:
  - {name: map, kind: tool, tool: t, forEach: "inputs.docs"}
"""))
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert "forEach must give a list, got str" in (run.reason or "")


def test_workflow_parallelism_is_backpressure() -> None:
    p = plan("""
spec:
  parallelism: 3
  steps:
""" + "\n".join(f"  - {{name: s{i}, kind: tool, tool: t}}" for i in range(10)))
    peak = [0]

    def behaviour(req: StepRequest):  # type: ignore[no-untyped-def]
        peak[0] = max(peak[0], h.running())
        return ok(duration=1.0 + int(req.node[1:]) % 4)

    h = Harness(p, behaviour)
    h.run_until_blocked()
    assert h.run.phase == "Succeeded"
    assert peak[0] == 3
    assert len(h.executed) == 10


def test_explicit_outputs_are_evaluated_at_the_end() -> None:
    h = Harness(plan("""
spec:
  inputs: {n: 2}
  outputs: {total: "inputs.n * 10", first: "steps.a.output.node"}
  steps:
  - {name: a, kind: tool, tool: t}
"""))
    assert h.run_until_blocked().outputs == {"total": 20, "first": "a"}


def test_bad_output_expression_fails_the_run_with_its_name() -> None:
    h = Harness(plan("""
spec:
  outputs: {x: "steps.a.output.missing"}
  steps:
  - {name: a, kind: tool, tool: t}
"""))
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    assert (run.reason or "").startswith("outputs:")

"""State-machine runs: transitions on outputs and errors, loops bounded by visits, final states."""

from __future__ import annotations

from agentflow.engine.values import StepRequest

from .harness import Harness, fail, ok, plan

FRAUD = """
spec:
  inputs: {amount: 900}
  stateMachine:
    initial: score
    states:
    - name: score
      step: {name: score, kind: tool, tool: risk, inputs: {amount: "${{ inputs.amount }}"}}
      transitions:
      - {target: block, when: "output.risk > 0.8"}
      - {target: recheck, when: "output.risk > 0.4"}
      - {target: approve}
      - {target: manual, result: error}
    - name: recheck
      step: {name: recheck, kind: tool, tool: risk}
      maxVisits: 2
      transitions:
      - {target: score}
    - {name: approve, final: Succeeded}
    - {name: block, final: Failed}
    - {name: manual, final: Failed}
"""


def scores(*values: float):  # type: ignore[no-untyped-def]
    seq = iter(values)

    def behaviour(req: StepRequest):  # type: ignore[no-untyped-def]
        if req.step == "score":
            return ok({"risk": next(seq)})
        return ok({"checked": True})

    return behaviour


def test_transitions_follow_outputs_to_a_final_state() -> None:
    h = Harness(plan(FRAUD), scores(0.1))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert run.path == ["score", "approve"]
    assert h.requests[0].inputs == {"amount": 900}
    assert h.requests[0].node == "score#1"
    assert run.outputs == {"score": {"risk": 0.1}}


def test_a_failing_final_state_fails_the_run() -> None:
    run = Harness(plan(FRAUD), scores(0.95)).run_until_blocked()
    assert run.phase == "Failed"
    assert run.path == ["score", "block"]
    assert run.reason == "reached final state block, which fails the run"


def test_loops_revisit_states_with_new_node_ids() -> None:
    h = Harness(plan(FRAUD), scores(0.5, 0.5, 0.1))
    run = h.run_until_blocked()
    assert run.phase == "Succeeded"
    assert run.path == ["score", "recheck", "score", "recheck", "score", "approve"]
    assert [n for n, _ in h.executed] == ["score#1", "recheck#1", "score#2", "recheck#2", "score#3"]


def test_visit_limit_bounds_loops() -> None:
    run = Harness(plan(FRAUD), scores(0.5, 0.5, 0.5, 0.5)).run_until_blocked()
    assert run.phase == "Failed"
    assert run.reason == "state recheck would be entered 3 times, more than its maxVisits 2"


def test_error_transitions_catch_failures() -> None:
    h = Harness(plan(FRAUD), lambda r: fail("ModelDown", "503", retryable=False))
    run = h.run_until_blocked()
    assert run.path == ["score", "manual"]
    assert run.phase == "Failed"


def test_a_failure_without_error_transition_fails_the_run() -> None:
    p = plan("""
spec:
  stateMachine:
    initial: a
    states:
    - name: a
      step: {name: a, kind: tool, tool: t}
      transitions: [{target: done}]
    - {name: done, final: Succeeded}
""")
    run = Harness(p, lambda r: fail("Boom", "x", retryable=False)).run_until_blocked()
    assert run.phase == "Failed"
    assert run.reason == "state a failed (Boom: x) and has no error transition"


def test_choice_states_without_a_step() -> None:
    p = plan("""
spec:
  inputs: {lang: fr}
  stateMachine:
    initial: route
    states:
    - name: route
      transitions: [{target: french, when: "inputs.lang == 'fr'"}, {target: english}]
    - name: french
      step: {name: french, kind: tool, tool: t}
      transitions: [{target: done}]
    - name: english
      step: {name: english, kind: tool, tool: t}
      transitions: [{target: done}]
    - {name: done, final: Succeeded}
""")
    run = Harness(p).run_until_blocked()
    assert run.path == ["route", "french", "done"]
    assert run.phase == "Succeeded"


def test_an_approval_message_that_cannot_be_rendered_fails_the_step_not_the_run() -> None:
    """A failed score has no output: the manual review's message naming its risk is an error of that step, which
    its error transition catches (examples/manifests/fraud-detection.yaml crashed the runner with a traceback)."""
    spec = FRAUD.replace(
        "    - {name: manual, final: Failed}",
        "    - name: manual\n"
        "      step: {name: manual, kind: approval, approval: {message: \"risk ${{ steps.score.output.risk }}\"}}\n"
        "      transitions:\n"
        "      - {target: approve}\n"
        "      - {target: block, result: error}")
    h = Harness(plan(spec), lambda req: fail("Boom", retryable=False))
    run = h.run_until_blocked()
    assert run.phase == "Failed"
    manual = next(n for n in run.nodes.values() if n.state == "manual")
    assert manual.phase == "Failed" and manual.error is not None and manual.error.type == "ExpressionError"
    assert "approval.message" in manual.error.message and "risk" in manual.error.message
    assert run.path == ["score", "manual", "block"]

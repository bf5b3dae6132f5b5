"""The cost preflight: exact where the workflow says, assumptions listed where it does not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import yaml

from agentflow.cost.estimate import (
    ASSUMED_FAN_OUT,
    DEFAULT_FAILURE_RATE,
    DEFAULT_OUTPUT_TOKENS,
    EstimateError,
    Range,
    StepHistory,
    estimate_workflow,
)
from agentflow.models import Catalog, Workflow, parse_resource

PRICES = {"openai/small": (1e-6, 2e-6)}


def words(model: str, messages: Sequence[Mapping[str, str]]) -> int:
    """A token counter that counts words: predictable numbers for the assertions."""
    return sum(len(m["content"].split()) for m in messages)


def prices(model: str) -> tuple[float, float] | None:
    return PRICES.get(model)


AGENT = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "a"},
         "spec": {"role": "r", "model": {"name": "openai/small", "maxTokens": 100}}}
PROMPT = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "PromptVersion", "metadata": {"name": "p1"},
          "spec": {"prompt": "p", "version": "1", "messages": [{"role": "user", "content": "say ${{ inputs.x }}"}]}}


def build(steps: list[dict[str, Any]], inputs: dict[str, Any] | None = None, agent: dict[str, Any] = AGENT,
          retry: int = 0, **spec: Any) -> tuple[Workflow, Catalog]:
    body: dict[str, Any] = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "wf"},
            "spec": {"inputs": inputs or {}, "retry": {"limit": retry}, **spec}}
    if steps:
        body["spec"]["steps"] = steps
    workflow = parse_resource(body)
    assert isinstance(workflow, Workflow)
    catalog = Catalog()
    for doc in (agent, PROMPT):
        catalog.add(parse_resource(doc))  # type: ignore[arg-type]
    return workflow, catalog


def llm(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "llm", "agentRef": {"name": "a"}, "promptRef": {"name": "p1"}, **extra}


def test_one_step_is_counted_on_the_rendered_prompt_and_priced_at_max_tokens() -> None:
    wf, cat = build([llm("s", inputs={"x": "one two three"})])
    est = estimate_workflow(wf, cat, None, prices, count_tokens=words)
    [step] = est.steps
    # system "Your role: r" (3 words) + user "say one two three" (4 words)
    assert step.input_tokens == Range.exact(7)
    assert step.output_tokens == Range(25, 100, 100)  # max_tokens: a cap, low a quarter
    assert step.usd is not None
    assert step.usd.to_dict(9) == Range(7e-6 + 50e-6, 7e-6 + 200e-6, 7e-6 + 200e-6).to_dict(9)
    assert step.multiplicity_basis == "exact" and not step.calibrated
    assert any("max_tokens 100" in a for a in step.assumptions)
    assert est.usd == step.usd


def test_a_carried_conversation_adds_up_to_its_budget_per_call() -> None:
    remembering = {**AGENT, "spec": {**AGENT["spec"], "memory": {"kind": "conversation", "maxTokens": 1000}}}
    wf, cat = build([llm("s", inputs={"x": "one two three"})], agent=remembering)
    [step] = estimate_workflow(wf, cat, None, prices, count_tokens=words).steps
    assert step.input_tokens == Range(7, 507, 1007)
    assert any("memory.kind conversation" in a and "maxTokens 1000" in a for a in step.assumptions)


def test_inputs_given_override_the_workflows_own() -> None:
    wf, cat = build([llm("s", inputs={"x": "${{ inputs.text }}"})], inputs={"text": "a"})
    short = estimate_workflow(wf, cat, None, prices, count_tokens=words).steps[0].input_tokens.expected
    longer = estimate_workflow(wf, cat, {"text": "a b c d e"}, prices, count_tokens=words).steps[0]
    assert longer.input_tokens.expected == short + 4


def test_for_each_over_an_input_list_is_exact_and_renders_each_item() -> None:
    wf, cat = build([llm("s", forEach="inputs.items", inputs={"x": "${{ item }}"})],
                    inputs={"items": ["a", "b c", "d e f"]})
    [step] = estimate_workflow(wf, cat, None, prices, count_tokens=words).steps
    assert step.multiplicity == Range.exact(3) and step.multiplicity_basis == "exact"
    # per call: 3 + "say" + item words (1, 2, 3): mean 6, three calls
    assert step.input_tokens == Range.exact(18)


def test_for_each_over_an_empty_input_list_costs_nothing() -> None:
    wf, cat = build([llm("s", forEach="inputs.items", inputs={"x": "${{ item }}"})], inputs={"items": []})
    [step] = estimate_workflow(wf, cat, None, prices, count_tokens=words).steps  # was a ZeroDivisionError
    assert step.multiplicity == Range.exact(0) and step.input_tokens == Range.exact(0)


def test_for_each_over_an_upstream_output_is_assumed_and_says_so() -> None:
    wf, cat = build([llm("a1", inputs={"x": "y"}),
                     llm("s", dependsOn=["a1"], forEach="steps.a1.output.items", inputs={"x": "${{ item }}"})])
    step = estimate_workflow(wf, cat, None, prices, count_tokens=words).steps[1]
    assert step.multiplicity_basis == "assumed"
    assert step.multiplicity == Range(*ASSUMED_FAN_OUT)
    assert any("known only at run time" in a for a in step.assumptions)


def test_an_upstream_output_in_a_prompt_counts_as_the_upstreams_output_tokens() -> None:
    wf, cat = build([llm("a1", inputs={"x": "y"}), llm("b", dependsOn=["a1"], inputs={"x": "${{ steps.a1.output }}"})])
    b = estimate_workflow(wf, cat, None, prices, count_tokens=words).steps[1]
    # 4 fixed words + the upstream's 100 expected tokens (low 25, high 100)
    assert b.input_tokens == Range(4 + 25, 4 + 100, 4 + 100)
    assert any("embeds the output of a1" in a for a in b.assumptions)


def test_retries_expected_and_worst_case() -> None:
    wf, cat = build([llm("s", inputs={"x": "y"})], retry=2)
    step = estimate_workflow(wf, cat, None, prices, count_tokens=words).steps[0]
    p = DEFAULT_FAILURE_RATE
    assert step.attempts == Range(1, 1 + p + p * p, 3)
    assert step.calls.high == 3


def test_a_when_false_for_these_inputs_skips_the_step() -> None:
    wf, cat = build([llm("s", when="inputs.go", inputs={"x": "y"})], inputs={"go": False})
    step = estimate_workflow(wf, cat, None, prices, count_tokens=words).steps[0]
    assert step.calls == Range.exact(0) and step.usd == Range.exact(0)
    assert any("skipped" in a for a in step.assumptions)


def test_state_machine_high_is_bounded_by_max_visits() -> None:
    sm = {"initial": "loop", "maxVisits": 4, "states": [
        {"name": "loop", "step": llm("ask", inputs={"x": "y"}),
         "transitions": [{"target": "loop", "when": "output != 'done'"}, {"target": "end"}]},
        {"name": "end", "final": "Succeeded"}]}
    wf, cat = build([], stateMachine=sm)
    [step] = estimate_workflow(wf, cat, None, prices, count_tokens=words).steps
    assert step.step == "loop"
    assert step.multiplicity == Range(1, 1, 4)
    assert step.calls.high == 4


def test_fallbacks_are_named_and_an_unknown_price_is_not_counted_in_usd() -> None:
    agent = {**AGENT, "spec": {"role": "r", "model": {"name": "local/llama", "fallbacks": ["openai/small"]}}}
    wf, cat = build([llm("s", inputs={"x": "y"})], agent=agent)
    est = estimate_workflow(wf, cat, None, prices, count_tokens=words)
    step = est.steps[0]
    assert step.usd is None and est.unpriced == ("local/llama",)
    assert step.output_tokens.expected == DEFAULT_OUTPUT_TOKENS
    assert any("fallbacks openai/small" in a for a in step.assumptions)
    assert est.tokens.expected > 0


def test_calibration_replaces_the_defaults() -> None:
    class History:
        def step(self, model: str, prompt: str, step: str) -> StepHistory | None:
            assert (model, prompt) == ("openai/small", "p1")
            return StepHistory(samples=10, output_tokens=Range(10, 20, 40), input_ratio=2.0, failure_rate=0.5,
                               calls_per_attempt=None)

        def fan_out(self, workflow: str, step: str) -> Range | None:
            return None

        def visits(self, workflow: str, state: str) -> Range | None:
            return None

    wf, cat = build([llm("s", inputs={"x": "y"})], retry=1)
    step = estimate_workflow(wf, cat, None, prices, History(), count_tokens=words).steps[0]
    assert step.calibrated
    assert step.output_tokens.expected == pytest.approx(1.5 * 20)  # 1.5 attempts expected
    assert step.input_tokens.expected == pytest.approx(1.5 * 5 * 2.0)  # 5 counted, ratio 2
    assert step.output_tokens.high == 2 * 100  # max_tokens caps the high, two attempts


def test_an_unknown_agent_names_the_field() -> None:
    wf, cat = build([llm("s", inputs={"x": "y"})])
    cat.agents.clear()
    with pytest.raises(EstimateError, match=r"spec.steps\[0\].agentRef.name: unknown Agent 'a'"):
        estimate_workflow(wf, cat, None, prices, count_tokens=words)


def test_tool_and_approval_steps_cost_nothing_in_models() -> None:
    wf, cat = build([{"name": "gate", "kind": "approval"}, {"name": "t", "kind": "tool", "tool": "x"}])
    est = estimate_workflow(wf, cat, None, prices, count_tokens=words)
    assert [s.usd for s in est.steps] == [Range.exact(0), Range.exact(0)]
    assert est.to_dict()["steps"][1]["assumptions"] == ["tool not declared by any ToolPolicy: not priced"]
    yaml.safe_dump(est.to_dict())  # plain data


def test_tool_steps_cost_their_price_per_call_times_items_and_attempts() -> None:
    wf, cat = build([{"name": "t", "kind": "tool", "tool": "lookup", "forEach": "inputs.items"}],
                    inputs={"items": [1, 2, 3, 4]}, retry=2)
    cat.add(parse_resource({  # type: ignore[arg-type]
        "apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy", "metadata": {"name": "tp"},
        "spec": {"tools": [{"name": "lookup", "builtin": {"name": "echo"}, "costPerCallUsd": 0.01}]}}))
    [step] = estimate_workflow(wf, cat, None, prices, count_tokens=words).steps
    assert step.usd is not None
    assert step.usd.low == pytest.approx(0.04)  # 4 items, 1 attempt each
    assert step.usd.high == pytest.approx(0.12)  # 4 items, all 3 attempts
    assert 0.04 < step.usd.expected < 0.12
    assert any("$0.01 per call" in a for a in step.assumptions)


def test_a_behavior_trees_leaves_are_estimated_with_their_repeats_and_retries() -> None:
    tree = {"type": "sequence", "children": [
        {"type": "step", "step": llm("first")},
        {"type": "repeat", "count": 3, "child": {"type": "retry", "limit": 1, "child": {
            "type": "step", "step": llm("again")}}}]}
    wf, cat = build([], inputs={"x": "one two"}, behaviorTree=tree)
    est = estimate_workflow(wf, cat, None, prices, count_tokens=words)
    steps = {s.step: s for s in est.steps}
    assert set(steps) == {"first", "again"}
    assert steps["first"].multiplicity == Range(0, 1, 1)
    assert steps["again"].multiplicity == Range(0, 3, 6)
    assert "behavior tree: expected 3 run(s)" in steps["again"].assumptions[0]
    assert any("behavior tree" in n for n in est.assumptions)

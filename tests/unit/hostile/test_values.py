"""Free-form values the journal could not hold are refused at validation, with their path (JSON bodies too)."""

from __future__ import annotations

import json
from typing import Any

from agentflow.models.limits import MAX_INPUTS_BYTES
from agentflow.validation import validate_body
from agentflow.validation.values import json_value_findings


def body(inputs: Any, step_inputs: Any = None) -> dict[str, Any]:
    step: dict[str, Any] = {"name": "a", "kind": "tool", "tool": "echo"}
    if step_inputs is not None:
        step["inputs"] = step_inputs
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
            "spec": {"inputs": inputs, "steps": [step]}}


def problems(b: dict[str, Any]) -> dict[str, str]:
    return {p.path: p.message for p in validate_body(b)}


def test_what_json_decoding_lets_through_is_refused_with_its_path() -> None:
    decoded = json.loads('{"text": "\\ud800", "n": 1e999, "big": 100000000000000000000000, "ok": [1, 2.5]}')
    found = problems(body(decoded))
    assert "lone surrogate" in found["spec.inputs.text"]
    assert "NaN and infinity" in found["spec.inputs.n"]
    assert "64-bit range" in found["spec.inputs.big"]
    assert "spec.inputs.ok" not in found


def test_step_inputs_are_checked_the_same_way_and_sizes_are_bounded() -> None:
    found = problems(body({}, {"deep": {"x": float("nan")}}))
    assert "NaN" in found["spec.steps[0].inputs.deep.x"]
    big = problems(body({"blob": "x" * MAX_INPUTS_BYTES}))
    assert f"more than the {MAX_INPUTS_BYTES:,} allowed" in big["spec.inputs"]
    assert problems(body({"blob": "x" * (MAX_INPUTS_BYTES - 100)})) == {}


def test_a_value_from_a_model_nested_past_the_manifest_bound_is_a_finding_not_an_error() -> None:
    """A plan's step inputs come from a model, not from a parsed manifest: 300 levels (past orjson's 254) were a
    ValueError out of the planning attempt; they are a finding naming the place, which the planner is told."""
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    [(path, message)] = json_value_findings({"x": deep}, ["plan", "steps", 0, "inputs"])
    assert path == ["plan", "steps", 0, "inputs", "x", *["a"] * 99] and message.startswith("nested deeper than 100")
    assert json_value_findings({"x": [[[1]]]}, ["inputs"]) == []

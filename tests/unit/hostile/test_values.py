"""Free-form values the journal could not hold are refused at validation, with their path (JSON bodies too)."""

from __future__ import annotations

import json
from typing import Any

from agentflow.models.limits import MAX_INPUTS_BYTES
from agentflow.validation import validate_body


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

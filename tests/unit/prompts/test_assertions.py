"""Each assertion kind over an output: pass, fail, and the reason; nothing raises."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import Assertion
from agentflow.prompts.assertions import check, describe, json_equal

OUTPUT = {"category": "billing", "confidence": 0.85, "summary": "Refund one of two charges", "tags": ["a", "b"]}


def a(**fields: Any) -> Assertion:
    return Assertion.model_validate(fields)


@pytest.mark.parametrize(("fields", "passed"), [
    ({"cel": "output.category == 'billing'"}, True),
    ({"cel": "output.confidence > inputs.min"}, True),
    ({"cel": "output.category == 'shipping'"}, False),
    ({"equals": "billing", "path": "output.category"}, True),
    ({"equals": ["a", "b"], "path": "output.tags"}, True),
    ({"equals": 1, "path": "output.confidence"}, False),
    ({"contains": "Refund", "path": "output.summary"}, True),
    ({"contains": "\"billing\""}, True),  # a non-string value is read as its JSON text
    ({"contains": "parcel", "path": "output.summary"}, False),
    ({"regex": "^(billing|account)$", "path": "output.category"}, True),
    ({"regex": "^ship", "path": "output.category"}, False),
    ({"range": {"min": 0.8, "max": 1}, "path": "output.confidence"}, True),
    ({"range": {"min": 0.9}, "path": "output.confidence"}, False),
    ({"range": {"max": 1}, "path": "output.category"}, False),
    ({"jsonSchema": {"type": "object", "required": ["category"]}}, True),
    ({"jsonSchema": {"type": "string", "minLength": 100}, "path": "output.summary"}, False),
])
def test_kinds(fields: dict[str, Any], passed: bool) -> None:
    verdict = check(a(**fields), OUTPUT, {"min": 0.5})
    assert verdict.passed is passed
    assert verdict.score == (1.0 if passed else 0.0)
    assert verdict.kind == next(iter(k for k in fields if k != "path")).replace("jsonSchema", "json_schema")


def test_errors_fail_with_the_reason() -> None:
    verdict = check(a(cel="output.missing == 1"), OUTPUT, {})
    assert not verdict.passed and "missing" in verdict.detail
    verdict = check(a(equals=1, path="output.nope"), OUTPUT, {})
    assert not verdict.passed and verdict.detail.startswith("path:")
    verdict = check(a(cel="output.category"), OUTPUT, {})  # not a bool
    assert not verdict.passed


def test_judge_is_not_decided_here() -> None:
    with pytest.raises(ValueError, match="judge"):
        check(a(judge={"rubric": "good"}), OUTPUT, {})


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "exactly one of"),
    ({"cel": "true", "regex": "x"}, "got cel, regex"),
    ({"cel": "true", "path": "output"}, "path is not used"),
    ({"range": {}}, "min or max"),
    ({"range": {"min": 2, "max": 1}}, "above max"),
])
def test_the_model_refuses(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        a(**fields)


def test_json_equality() -> None:
    assert json_equal(1, 1.0) and not json_equal(True, 1) and not json_equal(1, True)
    assert json_equal({"a": [1, {"b": True}]}, {"a": [1.0, {"b": True}]})
    assert not json_equal({"a": 1}, {"a": 1, "b": 2}) and not json_equal([1], [1, 2])


def test_describe() -> None:
    assert describe(a(range={"min": 0}, path="output.x")) == "range [0.0, None] at output.x"
    assert describe(a(judge={"rubric": "r", "minScore": 0.7})) == "judge >= 0.7"

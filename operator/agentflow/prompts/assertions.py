"""One assertion of an evaluation case over the case's output: a :class:`Verdict`.

Every kind but ``judge`` is decided here (a judge needs a model call: :mod:`agentflow.prompts.suite` reads
the judge's answer). ``path`` (CEL over ``output`` and ``inputs``, default ``output``) picks the value
equals/contains/regex/range/jsonSchema check. An assertion that cannot be evaluated (a CEL error, a path
that does not exist) fails with the reason; it never raises.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from agentflow.engine.expressions import ExpressionError, compile_expression
from agentflow.engine.schemas import schema_errors
from agentflow.models import Assertion

__all__ = ["Verdict", "check", "describe", "json_equal"]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What one assertion concluded: ``score`` is 1.0 or 0.0, or a judge's score (0 to 1)."""

    kind: str
    passed: bool
    score: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "passed": self.passed, "score": round(self.score, 4), "detail": self.detail}


def describe(assertion: Assertion) -> str:
    """A short label of the assertion (for tables)."""
    where = f" at {assertion.path}" if assertion.path else ""
    if assertion.cel is not None:
        return f"cel {assertion.cel}"
    if assertion.json_schema is not None:
        return f"jsonSchema{where}"
    if assertion.equals is not None:
        return f"equals {json.dumps(assertion.equals)[:40]}{where}"
    if assertion.contains is not None:
        return f"contains {assertion.contains!r}{where}"
    if assertion.regex is not None:
        return f"regex {assertion.regex!r}{where}"
    if assertion.range is not None:
        return f"range [{assertion.range.min}, {assertion.range.max}]{where}"
    assert assertion.judge is not None
    return f"judge >= {assertion.judge.min_score}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _verdict(kind: str, passed: bool, detail: str) -> Verdict:
    return Verdict(kind, passed, 1.0 if passed else 0.0, detail)


def check(assertion: Assertion, output: Any, inputs: Mapping[str, Any]) -> Verdict:
    """The verdict of a non-judge assertion over ``output`` (ValueError for a judge assertion)."""
    kind = assertion.kind
    if kind == "judge":
        raise ValueError("a judge assertion is decided from the judge's answer (agentflow.prompts.suite)")
    context = {"output": output, "inputs": dict(inputs)}
    if assertion.cel is not None:
        try:
            ok = compile_expression(assertion.cel).truthy(context)
        except ExpressionError as exc:
            return _verdict(kind, False, str(exc))
        return _verdict(kind, ok, "true" if ok else "false")
    value = output
    if assertion.path is not None:
        try:
            value = compile_expression(assertion.path).evaluate(context)
        except ExpressionError as exc:
            return _verdict(kind, False, f"path: {exc}")
    if assertion.json_schema is not None:
        try:
            errors = schema_errors(assertion.json_schema, value)
        except jsonschema.SchemaError as exc:
            return _verdict(kind, False, f"not a valid JSON Schema: {exc.message}")
        if errors:
            return _verdict(kind, False, best_match(errors).message)
        return _verdict(kind, True, "valid")
    if assertion.equals is not None:
        ok = json_equal(value, assertion.equals)
        return _verdict(kind, ok, "equal" if ok else f"got {_text(value)[:80]}")
    if assertion.contains is not None:
        ok = assertion.contains in _text(value)
        return _verdict(kind, ok, "found" if ok else f"{assertion.contains!r} not in {_text(value)[:80]!r}")
    if assertion.regex is not None:
        try:
            ok = re.search(assertion.regex, _text(value)) is not None
        except re.error as exc:
            return _verdict(kind, False, f"not a regular expression: {exc}")
        return _verdict(kind, ok, "matched" if ok else f"no match in {_text(value)[:80]!r}")
    bounds = assertion.range
    assert bounds is not None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _verdict(kind, False, f"not a number: {_text(value)[:80]}")
    ok = (bounds.min is None or value >= bounds.min) and (bounds.max is None or value <= bounds.max)
    return _verdict(kind, ok, f"{value}")

"""CEL matches() cannot stall the engine: patterns run on RE2, linear in the input (agentflow.engine.cel)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agentflow.engine.expressions import ExpressionError, compile_expression
from agentflow.engine.templates import compile_template

# Each of these takes exponential (or high polynomial) time on a backtracking engine such as Python's re.
CATASTROPHIC = [r"^(a+)+$", r"^(a|a)*$", r"^(a|aa)+$", r"(x+x+)+y", r"^(\w+\s?)*$", r"a*a*a*a*a*a*a*b"]


def within(seconds: float, work: Any) -> Any:
    """Run work() in a daemon thread; fail (instead of hanging the suite) if it takes longer than seconds."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds}s: catastrophic backtracking?"
    return result[0]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_literal_pattern_on_hostile_input_is_linear(pattern: str) -> None:
    expr = compile_expression(f"inputs.s.matches({pattern!r})")
    hostile = {"inputs": {"s": "a" * 20_000 + "!"}}
    assert within(30, lambda: expr.evaluate(hostile)) is False


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_pattern_from_data_is_linear_too(pattern: str) -> None:
    expr = compile_expression("matches(inputs.s, inputs.p)")
    hostile = {"inputs": {"s": "x" * 20_000 + "!", "p": pattern}}
    assert within(30, lambda: expr.evaluate(hostile)) is False


@pytest.mark.parametrize(
    ("text", "context", "expected"),
    [
        ("'order 1234'.matches('[0-9]{4}')", {}, True),  # a search, not a full match
        ("'order 1234'.matches('^[0-9]{4}$')", {}, False),
        ("matches('Refund please', '(?i)^refund')", {}, True),
        ("inputs.s.matches('^a+$')", {"inputs": {"s": "aaa"}}, True),
        ("inputs.s.matches(inputs.p)", {"inputs": {"s": "héllo wörld", "p": "w.rld$"}}, True),
        ("['ab', 'cd'].exists(x, x.matches('^c'))", {}, True),
    ],
)
def test_matches_still_matches(text: str, context: dict[str, Any], expected: bool) -> None:
    assert compile_expression(text).evaluate(context) is expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (r"inputs.s.matches('(a)\\1')", "invalid escape sequence"),  # backreference
        ("inputs.s.matches('a(?=b)')", "invalid perl operator"),  # lookahead
        ("matches(inputs.s, 'a++')", "bad repetition operator"),  # possessive quantifier
        ("inputs.s.matches('[a-')", "missing ]"),
        ("inputs.s.matches('((a{100}){100}){100}')", "invalid repetition size"),
        ("inputs.x > 1 && inputs.s.matches('(?<=a)b')", "invalid perl operator"),
    ],
)
def test_literal_pattern_that_re2_rejects_fails_at_compile_time(text: str, why: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert why in info.value.reason
    assert "RE2 syntax" in info.value.reason
    assert info.value.expression == text


def test_template_reports_bad_literal_pattern_when_compiled() -> None:
    with pytest.raises(ExpressionError, match="RE2 syntax"):
        compile_template({"ok": "${{ inputs.s.matches('(a)\\\\1') }}"})


def test_pattern_from_data_that_re2_rejects_fails_at_evaluation() -> None:
    expr = compile_expression("inputs.s.matches(inputs.p)")
    with pytest.raises(ExpressionError) as info:
        expr.evaluate({"inputs": {"s": "aa", "p": "(a)\\1"}})
    assert "invalid regular expression '(a)\\\\1'" in info.value.reason
    assert "RE2 syntax" in info.value.reason


def test_matches_of_a_non_string_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError):
        compile_expression("inputs.n.matches('1')").evaluate({"inputs": {"n": 1}})

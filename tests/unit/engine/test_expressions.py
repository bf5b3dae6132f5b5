"""CEL expressions and ${{ }} templates (agentflow.engine.expressions)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.engine.expressions import Expression, ExpressionError, compile_expression
from agentflow.engine.templates import compile_template, render_text

CONTEXT: dict[str, Any] = {
    "inputs": {"x": 1, "name": "bob", "items": [1, 2, 3], "nothing": None, "ratio": 0.5, "flag": True},
    "steps": {
        "search": {"phase": "Succeeded", "output": ["doc-1", "doc-2"]},
        "classify": {"phase": "Succeeded", "output": {"label": "refund", "confidence": 0.9}},
        "empty": {"phase": "Succeeded", "output": []},
    },
    "workflow": {"name": "support", "namespace": "default"},
}


def value(text: str, context: dict[str, Any] | None = None) -> Any:
    return compile_expression(text).evaluate(CONTEXT if context is None else context)


def error_of(text: str, context: dict[str, Any] | None = None) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text).evaluate(CONTEXT if context is None else context)
    return info.value


# --- evaluation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("7 % 4", 3),
        ("2.5 * 2.0", 5.0),
        ("'a' + 'b'", "ab"),
        ("1 < 2 && 2 <= 2 && 3 > 2 && 3 >= 3", True),
        ("1 == 2 || 'a' != 'b'", True),
        ("!(inputs.x == 1)", False),
        ("inputs.x == 1 ? 'one' : 'other'", "one"),
        ("inputs.name.startsWith('b') && inputs.name.endsWith('ob')", True),
        ("'o' in ['o', 'p']", True),
    ],
)
def test_arithmetic_comparison_logic(text: str, expected: Any) -> None:
    result = value(text)
    assert result == expected
    assert type(result) is type(expected)


def test_results_are_plain_python() -> None:
    result = value("[1, 'a', null, true, 1.5, {'k': [2]}]")
    assert result == [1, "a", None, True, 1.5, {"k": [2]}]
    assert [type(v) for v in result] == [int, str, type(None), bool, float, dict]
    assert type(result[5]["k"][0]) is int
    assert type(next(iter(result[5]))) is str


def test_map_keys_that_are_not_strings_become_json_keys() -> None:
    assert value("{1: 'a', 2: 'b'}") == {"1": "a", "2": "b"}
    assert value("{true: 'b'}") == {"true": "b"}


def test_lists_and_maps_of_the_context() -> None:
    assert value("inputs.items[1]") == 2
    assert value("inputs['name']") == "bob"
    assert value("size(inputs.items)") == 3
    assert value("steps.classify.output.label") == "refund"
    assert value("steps['classify'].output['confidence'] > 0.5") is True
    assert value("inputs.nothing == null") is True


def test_size_of_a_step_output() -> None:
    assert value("size(steps.search.output) > 0") is True
    assert value("size(steps.empty.output) > 0") is False


def test_has_checks_presence_without_failing() -> None:
    assert value("has(inputs.x)") is True
    assert value("has(inputs.y)") is False
    assert value("has(steps.unknown.output)") is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("inputs.items.map(i, i * 10)", [10, 20, 30]),
        ("inputs.items.filter(i, i > 1)", [2, 3]),
        ("inputs.items.all(i, i > 0)", True),
        ("inputs.items.exists(i, i == 3)", True),
        ("inputs.items.exists_one(i, i > 2)", True),
        ("steps.search.output.map(d, d + '!')", ["doc-1!", "doc-2!"]),
    ],
)
def test_standard_macros(text: str, expected: Any) -> None:
    assert value(text) == expected


def test_context_may_hold_any_mapping_and_tuples() -> None:
    context = {"inputs": MappingProxyType({"pair": (1, 2)})}
    assert value("inputs.pair[0] + inputs.pair[1]", context) == 3
    assert value("size(inputs.pair) == 2", context) is True


def test_context_values_that_are_not_json_are_rejected() -> None:
    err = error_of("size(inputs.s) > 0", {"inputs": {"s": {1, 2}}})
    assert "'inputs' cannot be used in CEL" in err.reason
    assert "set is not a JSON value" in err.reason


def test_path_expressions_return_the_context_value_as_is() -> None:
    output = CONTEXT["steps"]["classify"]["output"]
    assert value("steps.classify.output") is output
    assert value("steps['classify'].output") is output


def test_only_used_roots_and_referenced_steps_are_needed() -> None:
    # `steps.missing` is not read, so its absence (and `inputs` being absent) does not matter.
    context = {"steps": {"a": {"output": 2}}}
    assert value("steps.a.output * 2 == 4", context) is True


# --- runtime errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("inputs.missing", "no such key: 'missing'"),
        ("inputs.missing == 1", "no such key: 'missing'"),
        ("steps.nope.output", "no such key: 'nope'"),
        ("size(steps.nope.output) > 0", "no such key: 'nope'"),
        ("1 / 0", "division by zero"),
        ("inputs.x / 0", "division by zero"),
        ("'a' + 1", "no operator '+' for (string, int)"),
        ("inputs.x.y", "int does not support field selection ('y')"),
        ("inputs.items[7]", "list index 7 out of range (size 3)"),
        ("unknown_name", "unknown name 'unknown_name'"),
        ("unknown_name + 1", "unknown name 'unknown_name'"),
        ("{'a': 1 / 0}", "division by zero"),
        ("9223372036854775807 + 1", "integer overflow (CEL integers are 64-bit)"),
    ],
)
def test_runtime_errors_name_the_expression_and_reason(text: str, reason: str) -> None:
    err = error_of(text)
    assert err.expression == text
    assert err.reason == reason
    assert str(err) == f"invalid expression {text!r}: {reason}"
    assert isinstance(err, ValueError)


def test_truthy_requires_a_bool() -> None:
    assert compile_expression("inputs.x == 1").truthy(CONTEXT) is True
    assert compile_expression("inputs.flag").truthy(CONTEXT) is True
    for text, kind in [("inputs.x", "int"), ("inputs.name", "string"), ("inputs.items", "list"),
                       ("inputs.nothing", "null"), ("steps.classify.output", "map")]:
        with pytest.raises(ExpressionError) as info:
            compile_expression(text).truthy(CONTEXT)
        assert info.value.reason == f"a condition must give true or false, got {kind}"


# --- compiling ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "the expression is empty"),
        ("   ", "the expression is empty"),
        ("1 +", "syntax error: the expression ends too early"),
        ("inputs.x steps.y", "syntax error at column 10: unexpected 'steps'"),
        ("inputs.x == #", "syntax error at column 13: unexpected character '#'"),
        ("(1 + 2", "syntax error: the expression ends too early"),
    ],
)
def test_syntax_errors_say_where(text: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert info.value.reason == reason
    assert info.value.expression == text


def test_non_string_expression_is_rejected() -> None:
    with pytest.raises(ExpressionError, match="an expression must be a string, got int"):
        compile_expression(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "eval('1')",
        "open('/etc/passwd')",
        "inputs.name.__class__()",
        "inputs.name.upper()",
        ".exec('x')",
    ],
)
def test_python_is_never_reachable(text: str) -> None:
    with pytest.raises(ExpressionError, match=r"unknown (function|method)"):
        compile_expression(text)


def test_python_dunder_attributes_are_plain_missing_keys() -> None:
    err = error_of("inputs.__class__")
    assert err.reason == "no such key: '__class__'"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("has(inputs)", "has() takes one field selection, for example has(inputs.x)"),
        ("has(inputs.x, inputs.y)", "has() takes one field selection, for example has(inputs.x)"),
        ("inputs.items.map(i)", "the map macro is written list.map(x, expr)"),
        ("inputs.items.all(1, true)", "the all macro is written list.all(x, expr)"),
    ],
)
def test_macros_are_checked_when_compiled(text: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("text", "refs", "roots"),
    [
        ("inputs.x + 1", set(), {"inputs"}),
        ("size(steps.search.output) > 0", {"search"}, {"steps"}),
        ("steps['classify'].output.label == 'x'", {"classify"}, {"steps"}),
        ("steps.a.output + steps.b.output[0]", {"a", "b"}, {"steps"}),
        ("has(steps.a.output) ? steps.b.output : inputs.c", {"a", "b"}, {"steps", "inputs"}),
        ("steps.a.output.map(x, x + steps.b.output)", {"a", "b"}, {"steps"}),
        ("inputs.items.filter(i, i > steps.limit.output).size() > 0", {"limit"}, {"inputs", "steps"}),
        ("item.name + string(index)", set(), {"item", "index"}),
        ("output.ok && error == null && workflow.name != ''", set(), {"output", "error", "workflow"}),
        # A macro variable named `steps` shadows the root: nothing is referenced.
        ("inputs.items.all(steps, steps > 0)", set(), {"inputs"}),
        # The words `steps.x` inside a string literal are not a reference.
        ("'steps.x' == inputs.name", set(), {"inputs"}),
        ("[1, 2].map(i, i) == [1, 2]", set(), set()),
    ],
)
def test_step_refs_and_roots_come_from_the_parse_tree(text: str, refs: set[str], roots: set[str]) -> None:
    expr = compile_expression(text)
    assert expr.step_refs == frozenset(refs)
    assert expr.roots == frozenset(roots)


def test_dynamic_step_access_still_evaluates() -> None:
    expr = compile_expression("steps[inputs.which].output")
    assert expr.step_refs == frozenset()
    assert expr.evaluate({**CONTEXT, "inputs": {"which": "search"}}) == ["doc-1", "doc-2"]


def test_expressions_are_immutable_values() -> None:
    expr = compile_expression("inputs.x")
    with pytest.raises(AttributeError):
        expr.text = "other"  # type: ignore[misc]
    assert expr == compile_expression("inputs.x")
    assert isinstance(expr, Expression)
    assert "inputs.x" in repr(expr)


# --- templates ---------------------------------------------------------------------------------------------


def test_a_single_expression_keeps_its_type() -> None:
    assert compile_template("${{ inputs.items }}").render(CONTEXT) == [1, 2, 3]
    assert compile_template("  ${{inputs.x}}\n").render(CONTEXT) == 1
    assert compile_template("${{ inputs.nothing }}").render(CONTEXT) is None
    assert compile_template("${{ steps.classify.output }}").render(CONTEXT) == {
        "label": "refund",
        "confidence": 0.9,
    }


def test_interpolation_stringifies_each_value() -> None:
    template = compile_template(
        "n=${{ inputs.x }} f=${{ inputs.ratio }} s=${{ inputs.name }} b=${{ inputs.flag }} "
        "z=${{ inputs.nothing }} l=${{ inputs.items }} m=${{ {'k': 'v'} }}"
    )
    assert template.render(CONTEXT) == 'n=1 f=0.5 s=bob b=true z=null l=[1,2,3] m={"k":"v"}'


def test_two_expressions_side_by_side_are_text() -> None:
    assert compile_template("${{ inputs.x }}${{ inputs.x }}").render(CONTEXT) == "11"


def test_escaped_open_is_literal() -> None:
    template = compile_template("use $${{ inputs.x }} to write ${{ inputs.name }}")
    assert template.render(CONTEXT) == "use ${{ inputs.x }} to write bob"
    literal = compile_template("$${{ not an expression")
    assert literal.is_constant
    assert literal.render({}) == "${{ not an expression"


def test_closing_braces_inside_strings_and_maps_do_not_end_the_expression() -> None:
    assert compile_template("${{ {'a': {'b': 1}} }}").render({}) == {"a": {"b": 1}}
    assert compile_template("<${{ '}}' }}>").render({}) == "<}}>"
    assert compile_template("<${{ \"a\\\"}}\" }}>").render({}) == '<a"}}>'


def test_nested_dicts_and_lists() -> None:
    template = compile_template(
        {"query": "${{ inputs.name }}", "opts": {"k": ["${{ inputs.x }}", "fixed", 3]}, "n": None}
    )
    assert not template.is_constant
    assert template.render(CONTEXT) == {"query": "bob", "opts": {"k": [1, "fixed", 3]}, "n": None}
    assert [e.text for e in template.expressions] == ["inputs.name", "inputs.x"]


def test_step_refs_of_a_template() -> None:
    template = compile_template(
        {"a": "${{ steps.search.output }}", "b": ["x ${{ steps.classify.output.label }}"]}
    )
    assert template.step_refs == frozenset({"search", "classify"})


def test_constant_templates_return_the_stored_value() -> None:
    source = {"a": [1, {"b": "text"}], "c": True}
    template = compile_template(source)
    assert template.is_constant
    assert template.expressions == ()
    assert template.step_refs == frozenset()
    first = template.render(CONTEXT)
    assert first == source
    assert template.render({}) is first


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("${{ inputs.x", "'${{' at offset 0 has no closing '}}'"),
        ("ok ${{ inputs.x } and more", "'${{' at offset 3 has no closing '}}'"),
        ("${{ }}", "the expression is empty"),
        ("${{ 1 + }}", "syntax error: the expression ends too early"),
    ],
)
def test_template_syntax_errors(source: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_template({"deep": [source]})
    assert info.value.reason == reason


def test_template_runtime_errors_are_expression_errors() -> None:
    with pytest.raises(ExpressionError, match="no such key: 'missing'"):
        compile_template({"a": "x ${{ inputs.missing }}"}).render(CONTEXT)


def test_render_text_always_gives_text() -> None:
    assert render_text("Hello ${{ inputs.name }}", CONTEXT) == "Hello bob"
    assert render_text("${{ inputs.items }}", CONTEXT) == "[1,2,3]"
    assert render_text("${{ inputs.flag }}", CONTEXT) == "true"
    assert render_text("plain", {}) == "plain"
    with pytest.raises(TypeError, match="text must be a string"):
        render_text(3, {})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "inputs.x",
        "inputs['name']",
        'steps["classify"].output.label',
        "steps.search.output[1]",
        "inputs . items [ 0 ]",
        "workflow.name",
        "inputs.missing",
        "inputs.items[9]",
        "inputs.x.y",
        "steps.nope.output",
        "nothing_here",
    ],
)
def test_plain_paths_agree_with_the_cel_interpreter(text: str) -> None:
    # Plain paths are recognised without the CEL parser and walked directly;
    # in parentheses the same path goes through cel-python.
    quick, full = compile_expression(text), compile_expression(f"({text})")
    assert (quick.roots, quick.step_refs) == (full.roots, full.step_refs)
    try:
        expected = full.evaluate(CONTEXT)
    except ExpressionError:
        with pytest.raises(ExpressionError):
            quick.evaluate(CONTEXT)
    else:
        assert quick.evaluate(CONTEXT) == expected


@pytest.mark.parametrize(
    "text", ["true", "null", "inputs.in", "inputs[-1]", "inputs['a\\'b']", "if.x", "a[0x1]"]
)
def test_words_and_literals_are_not_taken_for_paths(text: str) -> None:
    def outcome(source: str) -> object:
        try:
            expr = compile_expression(source)
        except ExpressionError:
            return "rejected"
        return expr.roots, expr.step_refs

    assert outcome(text) == outcome(f"({text})")
    assert compile_expression("true").evaluate({}) is True
    assert compile_expression("null").evaluate({}) is None


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_any_text_escaped_renders_back_to_itself(text: str) -> None:
    escaped = text.replace("${{", "$${{")
    if "$$${{" in escaped:
        return  # "$" right before an escaped opener is ambiguous by design
    template = compile_template(escaped)
    assert template.is_constant
    assert template.render({}) == text


@settings(max_examples=50, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
        max_leaves=20,
    )
)
def test_values_without_expressions_render_unchanged(value: Any) -> None:
    if "${{" in repr(value):
        return
    assert compile_template(value).render({}) == value


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=-(2**61), max_value=2**61), st.integers(min_value=-(2**61), max_value=2**61))
def test_int_arithmetic_matches_python(a: int, b: int) -> None:
    context = {"inputs": {"a": a, "b": b}}
    assert compile_expression("inputs.a + inputs.b").evaluate(context) == a + b
    assert compile_expression("inputs.a < inputs.b").evaluate(context) is (a < b)


def test_absurdly_nested_expressions_are_errors_not_crashes() -> None:
    with pytest.raises(ExpressionError, match="nested too deeply"):
        compile_expression("(" * 400 + "inputs.x" + ")" * 400)
    assert compile_expression("(" * 10 + "inputs.x" + ")" * 10).evaluate(CONTEXT) == 1


def test_maps_read_the_same_in_text_whatever_their_key_order() -> None:
    """A tool's output live (its own key order) and read back from the journal (canonical, keys sorted) render the
    same prompt: a resumed run or a what-if replay does not differ from the run it continues."""
    template = compile_template("Articles: ${{ steps.search.output }}")
    live = {"steps": {"search": {"output": [{"id": "a", "title": "T", "score": 1.5}]}}}
    journal = {"steps": {"search": {"output": [{"score": 1.5, "id": "a", "title": "T"}]}}}
    assert template.render(live) == template.render(journal) == 'Articles: [{"id":"a","score":1.5,"title":"T"}]'

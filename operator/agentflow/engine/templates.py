"""``${{ }}`` templates: JSON values whose strings embed CEL expressions, compiled once.

Step inputs, approval messages, prompt messages and Agent instructions are
templates. A string that is exactly one ``${{ expr }}`` renders to the
expression's value with its type; any other string renders to text, each
value written by :func:`stringify`. ``$${{`` stands for a literal ``${{``.

Errors: an unclosed ``${{`` or a bad embedded expression is an
:class:`~agentflow.engine.expressions.ExpressionError` when the template is
compiled; a failed evaluation is one when it is rendered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from .expressions import Expression, ExpressionError, compile_expression

__all__ = ["Template", "compile_template", "render_text", "stringify"]


def stringify(value: Any) -> str:
    """How a value reads inside text: strings as is, JSON for lists and maps (keys sorted: a value read back from the
    journal, as resume and replay read it, renders as it did live), true/false/null as in CEL."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SORT_KEYS).decode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


# --- templates ---------------------------------------------------------------------------------------------

_OPEN = "${{"


@dataclasses.dataclass(frozen=True, slots=True)
class _Const:
    value: Any

    def render(self, context: Mapping[str, Any]) -> Any:
        return self.value


@dataclasses.dataclass(frozen=True, slots=True)
class _Typed:
    expression: Expression

    def render(self, context: Mapping[str, Any]) -> Any:
        return self.expression.evaluate(context)


@dataclasses.dataclass(frozen=True, slots=True)
class _Text:
    parts: tuple[str | Expression, ...]

    def render(self, context: Mapping[str, Any]) -> str:
        return "".join(p if isinstance(p, str) else stringify(p.evaluate(context)) for p in self.parts)


@dataclasses.dataclass(frozen=True, slots=True)
class _Map:
    items: tuple[tuple[Any, _Node], ...]

    def render(self, context: Mapping[str, Any]) -> dict[Any, Any]:
        return {key: node.render(context) for key, node in self.items}


@dataclasses.dataclass(frozen=True, slots=True)
class _List:
    items: tuple[_Node, ...]

    def render(self, context: Mapping[str, Any]) -> list[Any]:
        return [node.render(context) for node in self.items]


_Node = _Const | _Typed | _Text | _Map | _List


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Template:
    """A JSON value whose strings may embed ``${{ expr }}``, compiled once."""

    expressions: tuple[Expression, ...]
    """Every embedded expression, in document order."""
    step_refs: frozenset[str]
    """Every X of steps.X read by any embedded expression."""
    _root: _Node = dataclasses.field(repr=False)

    @property
    def is_constant(self) -> bool:
        """True when nothing is embedded: render returns the same stored value every time."""
        return not self.expressions

    def render(self, context: Mapping[str, Any]) -> Any:
        """The value with every embedded expression evaluated over the context."""
        return self._root.render(context)


def compile_template(value: Any) -> Template:
    """Compile a JSON value (dicts, lists and strings at any depth) whose strings may embed ``${{ expr }}``.

    A string that is exactly one ``${{ expr }}`` (whitespace around allowed)
    renders to the expression's value with its type; any other string renders
    to text with each value stringified (see :func:`stringify`). ``$${{``
    stands for a literal ``${{``. Mapping keys are taken as they are.
    Raises ExpressionError for an unclosed ``${{`` or a bad expression.
    """
    expressions: list[Expression] = []
    root = _compile_node(value, expressions)
    refs: frozenset[str] = frozenset().union(*(e.step_refs for e in expressions))
    return Template(tuple(expressions), refs, root)


def render_text(text: str, context: Mapping[str, Any]) -> str:
    """Render one string template to text (compile it once with compile_template to render it often)."""
    if not isinstance(text, str):
        raise TypeError(f"render_text: text must be a string, got {type(text).__name__}")
    return stringify(compile_template(text).render(context))


def _compile_node(value: Any, expressions: list[Expression]) -> _Node:
    if isinstance(value, str):
        return _compile_string(value, expressions)
    if isinstance(value, Mapping):
        items = tuple((key, _compile_node(child, expressions)) for key, child in value.items())
        if all(isinstance(node, _Const) for _, node in items):
            return _Const({key: node.value for key, node in items})  # type: ignore[union-attr]
        return _Map(items)
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        nodes = tuple(_compile_node(child, expressions) for child in value)
        if all(isinstance(node, _Const) for node in nodes):
            return _Const([node.value for node in nodes])  # type: ignore[union-attr]
        return _List(nodes)
    return _Const(value)


def _compile_string(text: str, expressions: list[Expression]) -> _Node:
    if _OPEN not in text:
        return _Const(text)
    parts = _split(text)
    found = [p for p in parts if isinstance(p, Expression)]
    if not found:
        return _Const("".join(p for p in parts if isinstance(p, str)))
    expressions.extend(found)
    if len(found) == 1 and all(isinstance(p, Expression) or not p.strip() for p in parts):
        return _Typed(found[0])
    return _Text(tuple(parts))


def _split(text: str) -> list[str | Expression]:
    """Literal text and compiled expressions of a template string, in order."""
    parts: list[str | Expression] = []
    literal: list[str] = []
    i = 0
    while True:
        j = text.find(_OPEN, i)
        if j < 0:
            literal.append(text[i:])
            break
        if j > 0 and text[j - 1] == "$":  # $${{ is a literal ${{
            literal.append(text[i : j - 1] + _OPEN)
            i = j + len(_OPEN)
            continue
        literal.append(text[i:j])
        end = _closing(text, j + len(_OPEN))
        if end < 0:
            raise ExpressionError(text, f"'${{{{' at offset {j} has no closing '}}}}'")
        if any(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(compile_expression(text[j + len(_OPEN) : end].strip()))
        i = end + 2
    if any(literal):
        parts.append("".join(literal))
    return parts


def _closing(text: str, start: int) -> int:
    """Offset of the '}}' that closes an embedded expression, skipping string literals and CEL maps."""
    depth = 0
    quote = ""
    i, n = start, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            if depth == 0 and text.startswith("}}", i):
                return i
            depth = max(0, depth - 1)
        i += 1
    return -1

"""CEL expressions: compiled once, evaluated many times.

The engine evaluates ``when`` conditions, ``forEach`` lists, transition
conditions and output mappings as CEL (https://cel.dev) through cel-python,
and renders step inputs and prompt messages as templates whose strings embed
``${{ expr }}``. Nothing here runs Python code from a manifest: CEL has no
access to Python names, and a call of a function CEL does not define is
rejected when the expression is compiled. ``matches()`` runs on RE2, in time
linear in its input, so no pattern can stall the engine (see
:mod:`agentflow.engine.cel`).

Modules::

    expressions.py   ExpressionError, compile_expression, Expression (this module)
    templates.py     ${{ }} templates: compile_template, Template, render_text, stringify
                     (templates import expressions, never the other way round)
    cel.py           the cel-python adapter: parsing, checking, value conversion, error translation

Errors::

    ValueError
      ExpressionError      bad syntax (at compile time) or a failed evaluation
                           (missing key, type mismatch, division by zero,
                           a condition that is not a bool, a regular
                           expression RE2 rejects); names the expression
                           and the reason

Values cross the boundary as plain JSON-like Python (dict, list, str, int,
float, bool, None) in both directions; the CEL types stay inside cel.py.
Rendered values may share structure with the context and with the template:
treat them as immutable.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from . import cel

__all__ = [
    "Expression",
    "ExpressionError",
    "compile_expression",
]


class ExpressionError(ValueError):
    """An expression that does not compile or does not evaluate."""

    def __init__(self, expression: str, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"invalid expression {expression!r}: {reason}")


# --- compiling ---------------------------------------------------------------------------------------------

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_QUICK_PATH_RE = re.compile(
    rf"\s*({_IDENT})((?:\s*\.\s*{_IDENT}|\s*\[\s*(?:\d+|'[^'\\\n]*'|\"[^\"\\\n]*\")\s*\])*)\s*"
)
_QUICK_KEY_RE = re.compile(rf"\.\s*({_IDENT})|\[\s*(?:(\d+)|'([^'\\\n]*)'|\"([^\"\\\n]*)\")\s*\]")
# Words the CEL grammar does not read as identifiers: literals, `in` and reserved words.
_NOT_IDENTS = frozenset(
    {
        "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if",
        "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
    }
)


def _quick_path(text: str) -> tuple[str, tuple[str | int, ...]] | None:
    """(root, keys) of a plain path such as steps.a.output[0], recognised without the CEL parser.

    Plain paths are most template expressions; parsing them with a regular
    expression makes compiling them about a hundred times faster. Anything
    else (or anything doubtful) returns None and goes through the CEL parser.
    """
    match = _QUICK_PATH_RE.fullmatch(text)
    if match is None or match.group(1) in _NOT_IDENTS:
        return None
    keys: list[str | int] = []
    for key in _QUICK_KEY_RE.finditer(match.group(2)):
        field, index, single, double = key.groups()
        if field is not None:
            if field in _NOT_IDENTS:
                return None
            keys.append(field)
        elif index is not None:
            keys.append(int(index))
        else:
            keys.append(single if single is not None else double)
    return match.group(1), tuple(keys)


def compile_expression(text: str) -> Expression:
    """Parse and check a CEL expression once; raise ExpressionError for bad syntax or unknown functions."""
    if not isinstance(text, str):
        raise ExpressionError(repr(text), f"an expression must be a string, got {type(text).__name__}")
    quick = _quick_path(text)
    if quick is not None:
        root, keys = quick
        first = keys[0] if root == "steps" and keys else None
        return Expression(
            text=text,
            roots=frozenset({root}),
            step_refs=frozenset({first}) if isinstance(first, str) else frozenset(),
            _tree=None,
            _path=quick,
            _steps_dynamic=root == "steps" and not isinstance(first, str),
        )
    try:
        program = cel.parse(text)
        analysis = cel.analyse(program)
    except cel.CelError as exc:
        raise ExpressionError(text, exc.reason) from None
    return Expression(
        text=text,
        roots=analysis.roots,
        step_refs=analysis.step_refs,
        _tree=program,
        _path=analysis.path,
        _steps_dynamic=analysis.steps_dynamic,
    )


# --- evaluating --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Expression:
    """A compiled CEL expression. Immutable; evaluate it as often as needed."""

    text: str
    roots: frozenset[str]
    """Top-level names the expression reads (inputs, steps, item, index, output, error, workflow)."""
    step_refs: frozenset[str]
    """Every X of steps.X / steps["X"] the expression reads."""
    _tree: cel.Program | None = dataclasses.field(repr=False, compare=False)  # None: a plain path
    _path: tuple[str, tuple[str | int, ...]] | None = dataclasses.field(repr=False, compare=False)
    _steps_dynamic: bool = dataclasses.field(repr=False, compare=False)

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The value of the expression over a context of plain JSON-like values."""
        if self._path is not None:
            return self._walk(context, *self._path)
        variables: dict[str, Any] = {}
        for root in self.roots:
            if root not in context:
                continue  # CEL reports the unknown name (or resolves a type name such as int)
            value = context[root]
            if root == "steps" and not self._steps_dynamic and isinstance(value, Mapping):
                value = {k: value[k] for k in self.step_refs if k in value}
            variables[root] = value
        program = self._tree
        assert program is not None  # only plain paths have no tree, and they return above
        try:
            return cel.evaluate(program, variables)
        except cel.CelError as exc:
            raise ExpressionError(self.text, exc.reason) from None

    def truthy(self, context: Mapping[str, Any]) -> bool:
        """Evaluate a condition: the result must be true or false."""
        value = self.evaluate(context)
        if value is True or value is False:
            return value
        raise ExpressionError(self.text, f"a condition must give true or false, got {_type_name(value)}")

    def _walk(self, context: Mapping[str, Any], root: str, keys: tuple[str | int, ...]) -> Any:
        if root not in context:
            raise ExpressionError(self.text, f"unknown name {root!r}")
        value = context[root]
        for key in keys:
            if isinstance(value, Mapping):
                if key not in value:
                    raise ExpressionError(self.text, f"no such key: {key!r}")
                value = value[key]
            elif isinstance(value, (list, tuple)) and type(key) is int:
                if not 0 <= key < len(value):
                    raise ExpressionError(self.text, f"list index {key} out of range (size {len(value)})")
                value = value[key]
            else:
                what = "field selection" if isinstance(key, str) else "indexing"
                raise ExpressionError(self.text, f"{_type_name(value)} does not support {what} ({key!r})")
        return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__

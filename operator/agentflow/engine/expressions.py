"""CEL expressions and ``${{ }}`` templates: compiled once, evaluated many times.

The engine evaluates ``when`` conditions, ``forEach`` lists, transition
conditions and output mappings as CEL (https://cel.dev) through cel-python,
and renders step inputs and prompt messages as templates whose strings embed
``${{ expr }}``. Nothing here runs Python code from a manifest: CEL has no
access to Python names, and a call of a function CEL does not define is
rejected when the expression is compiled.

Errors::

    ValueError
      ExpressionError      bad syntax (at compile time) or a failed evaluation
                           (missing key, type mismatch, division by zero,
                           a condition that is not a bool); names the
                           expression and the reason

Values cross the boundary as plain JSON-like Python (dict, list, str, int,
float, bool, None) in both directions; the CEL types stay inside this module.
Rendered values may share structure with the context and with the template:
treat them as immutable.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import lark
import orjson
from celpy import celtypes
from celpy.celparser import CELParseError, CELParser
from celpy.evaluation import (
    Activation,
    CELEvalError,
    CELSyntaxError,
    CELUnsupportedError,
    Evaluator,
    base_functions,
    celstr,
)

__all__ = [
    "Expression",
    "ExpressionError",
    "Template",
    "compile_expression",
    "compile_template",
    "render_text",
    "stringify",
]


class ExpressionError(ValueError):
    """An expression that does not compile or does not evaluate."""

    def __init__(self, expression: str, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"invalid expression {expression!r}: {reason}")


# --- compiling ---------------------------------------------------------------------------------------------

_MACROS_ONE_VAR = frozenset({"map", "filter", "all", "exists", "exists_one"})
_MACROS_TWO_VARS = frozenset({"reduce"})
# Functions and methods CEL defines (operators are spelled like "_+_" and excluded).
_FUNCTIONS = frozenset(
    name for name in base_functions if name[0] not in "_!-"
) | {"has", "dyn", "min"} | _MACROS_ONE_VAR | _MACROS_TWO_VARS
# Rules that wrap a single child when no operator is present.
_WRAPPERS = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary", "member"}
)


@dataclasses.dataclass
class _Analysis:
    roots: set[str] = dataclasses.field(default_factory=set)
    step_refs: set[str] = dataclasses.field(default_factory=set)
    steps_dynamic: bool = False  # `steps` used other than as steps.X / steps["X"]


def _string_literal(tree: lark.Tree[Any]) -> str | None:
    """The value of a tree that is one string literal, else None."""
    node = _unwrap(tree)
    if node.data == "primary" and isinstance(node.children[0], lark.Tree):
        lit = node.children[0]
        if lit.data == "literal":
            token = lit.children[0]
            if isinstance(token, lark.Token) and token.type in ("STRING_LIT", "MLSTRING_LIT"):
                return str(celstr(token))
    return None


def _unwrap(tree: lark.Tree[Any]) -> lark.Tree[Any]:
    node = tree
    while node.data in _WRAPPERS and len(node.children) == 1 and isinstance(node.children[0], lark.Tree):
        node = node.children[0]
    return node


def _plain_ident(tree: lark.Tree[Any]) -> str | None:
    node = _unwrap(tree)
    child = node.children[0] if node.data == "primary" else None
    if isinstance(child, lark.Tree) and child.data == "ident":
        return str(child.children[0])
    return None


def _args(tree: lark.Tree[Any]) -> list[lark.Tree[Any]]:
    """The argument trees of an ident_arg / member_dot_arg node."""
    last = tree.children[-1]
    if isinstance(last, lark.Tree) and last.data == "exprlist":
        return [c for c in last.children if isinstance(c, lark.Tree)]
    return []


def _analyse(tree: lark.Tree[Any], bound: frozenset[str], out: _Analysis, text: str) -> None:
    """Collect roots and step references; reject calls of functions CEL does not define."""
    data = tree.data
    if data in ("ident", "dot_ident"):
        name = str(tree.children[0])
        if name not in bound:
            out.roots.add(name)
            if name == "steps":
                out.steps_dynamic = True
        return
    if data in ("member_dot", "member_index"):
        base = tree.children[0]
        assert isinstance(base, lark.Tree)
        if _plain_ident(base) == "steps" and "steps" not in bound:
            key = str(tree.children[1]) if data == "member_dot" else None
            if data == "member_index":
                index = tree.children[1]
                assert isinstance(index, lark.Tree)
                key = _string_literal(index)
                if key is None:
                    out.steps_dynamic = True
                _analyse(index, bound, out, text)
            out.roots.add("steps")
            if key is not None:
                out.step_refs.add(key)
            return
    if data == "ident_arg":
        name = str(tree.children[0])
        args = _args(tree)
        if name not in _FUNCTIONS:
            raise ExpressionError(text, f"unknown function {name!r} at column {_column(tree)}")
        if name == "has" and (len(args) != 1 or _unwrap(args[0]).data != "member_dot"):
            raise ExpressionError(text, "has() takes one field selection, for example has(inputs.x)")
        for arg in args:
            _analyse(arg, bound, out, text)
        return
    if data == "dot_ident_arg":
        raise ExpressionError(text, f"unknown function '.{tree.children[0]}' at column {_column(tree)}")
    if data == "member_dot_arg":
        base, method = tree.children[0], str(tree.children[1])
        assert isinstance(base, lark.Tree)
        args = _args(tree)
        if method not in _FUNCTIONS:
            raise ExpressionError(text, f"unknown method {method!r} at column {_column(tree)}")
        _analyse(base, bound, out, text)
        nvars = 1 if method in _MACROS_ONE_VAR else 2 if method in _MACROS_TWO_VARS else 0
        if nvars:
            names = [_plain_ident(a) for a in args[:nvars]]
            if len(args) != nvars + (1 if nvars == 1 else 2) or any(n is None for n in names):
                usage = f"{method}(x, expr)" if nvars == 1 else "reduce(acc, x, init, expr)"
                raise ExpressionError(text, f"the {method} macro is written list.{usage}")
            inner = bound | {n for n in names if n is not None}
            for arg in args[nvars:]:
                _analyse(arg, inner, out, text)
            return
        for arg in args:
            _analyse(arg, bound, out, text)
        return
    for child in tree.children:
        if isinstance(child, lark.Tree):
            _analyse(child, bound, out, text)


def _column(tree: lark.Tree[Any]) -> int | str:
    return getattr(tree.meta, "column", "?")


def _literal_path(tree: lark.Tree[Any]) -> tuple[str, tuple[str | int, ...]] | None:
    """(root, keys) when the expression is a plain path like steps.a.output[0], else None."""
    node = _unwrap(tree)
    keys: list[str | int] = []
    while True:
        if node.data == "member":
            child = node.children[0]
            assert isinstance(child, lark.Tree)
            node = child
        elif node.data == "member_dot":
            keys.append(str(node.children[1]))
            node = node.children[0]
        elif node.data == "member_index":
            index = node.children[1]
            assert isinstance(index, lark.Tree)
            key: str | int | None = _string_literal(index)
            if key is None:
                lit = _unwrap(index)
                if not (lit.data == "primary" and isinstance(lit.children[0], lark.Tree)):
                    return None
                token = lit.children[0].children[0]
                if lit.children[0].data != "literal" or getattr(token, "type", "") != "INT_LIT":
                    return None
                key = int(str(token), 0)
            keys.append(key)
            node = node.children[0]
        elif node.data == "primary" and isinstance(node.children[0], lark.Tree):
            if node.children[0].data != "ident":
                return None
            return str(node.children[0].children[0]), tuple(reversed(keys))
        else:
            return None


def _parse(text: str) -> lark.Tree[Any]:
    if not text.strip():
        raise ExpressionError(text, "the expression is empty")
    try:
        return CELParser().parse(text)
    except CELParseError as exc:
        cause = exc.__context__
        where = f"column {exc.column}" if exc.line in (None, 1) else f"line {exc.line} column {exc.column}"
        token = getattr(cause, "token", None)
        if token is not None and getattr(token, "type", "") == "$END":
            raise ExpressionError(text, "syntax error: the expression ends too early") from None
        if token is not None:
            found = f"unexpected {str(token)!r}"
        elif getattr(cause, "char", None) is not None:
            found = f"unexpected character {cause.char!r}"  # type: ignore[union-attr]
        else:
            found = str(exc.args[0]).splitlines()[0] if exc.args else "cannot parse"
        raise ExpressionError(text, f"syntax error at {where}: {found}") from None
    except RecursionError:
        raise ExpressionError(text, "the expression is nested too deeply") from None


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
    tree = _parse(text)
    analysis = _Analysis()
    try:
        _analyse(tree, frozenset(), analysis, text)
        path = _literal_path(tree)
    except RecursionError:
        raise ExpressionError(text, "the expression is nested too deeply") from None
    return Expression(
        text=text,
        roots=frozenset(analysis.roots),
        step_refs=frozenset(analysis.step_refs),
        _tree=tree,
        _path=path,
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
    _tree: lark.Tree[Any] | None = dataclasses.field(repr=False, compare=False)  # None: a plain path
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
            try:
                variables[root] = _to_cel(value)
            except (TypeError, ValueError) as exc:
                reason = f"the value of {root!r} cannot be used in CEL: {exc}"
                raise ExpressionError(self.text, reason) from None
        tree = self._tree
        assert tree is not None  # only plain paths have no tree, and they return above
        try:
            result = Evaluator(tree, Activation(vars=variables)).visit(tree)
            if isinstance(result, CELEvalError):
                raise result
            return _from_cel(result)
        except CELEvalError as exc:
            raise ExpressionError(self.text, _eval_reason(exc)) from None
        except (CELUnsupportedError, CELSyntaxError) as exc:
            raise ExpressionError(self.text, f"not supported: {_clean(str(exc.args[0]))}") from None
        except RecursionError:
            raise ExpressionError(self.text, "evaluation is nested too deeply") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as exc:
            # cel-python lets some errors of its builtins escape unwrapped.
            raise ExpressionError(self.text, _clean(f"{type(exc).__name__}: {exc}")) from None

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


def _to_cel(value: Any) -> Any:
    """Plain Python to CEL values (like celpy.json_to_cel, but accepting any Mapping and faster)."""
    t = type(value)
    if t is str:
        return celtypes.StringType(value)
    if t is bool:
        return celtypes.BoolType(value)
    if t is int:
        return celtypes.IntType(value)
    if t is float:
        return celtypes.DoubleType(value)
    if value is None:
        return None
    if isinstance(value, Mapping):
        return celtypes.MapType({_to_cel(k): _to_cel(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return celtypes.ListType([_to_cel(v) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, str):  # str subclasses such as str enums
        return celtypes.StringType(str(value))
    if isinstance(value, int):
        return celtypes.IntType(int(value))
    if isinstance(value, float):
        return celtypes.DoubleType(float(value))
    raise TypeError(f"{t.__name__} is not a JSON value")


def _from_cel(value: Any) -> Any:
    """CEL values back to plain Python: the JSON mapping of protobuf for bytes, timestamps and durations."""
    if value is None:
        return None
    if isinstance(value, CELEvalError):
        raise value
    if isinstance(value, (celtypes.BoolType, bool)):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return [_from_cel(v) for v in value]
    if isinstance(value, dict):
        return {_map_key(_from_cel(k)): _from_cel(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (celtypes.TimestampType, celtypes.DurationType)):
        return str(value)
    if isinstance(value, type):
        return _TYPE_NAMES.get(value.__name__, value.__name__)
    raise TypeError(f"the result type {type(value).__name__} has no JSON form")


def _map_key(key: Any) -> str:
    return key if isinstance(key, str) else stringify(key)


# --- error messages ----------------------------------------------------------------------------------------

_TYPE_NAMES = {
    "BoolType": "bool", "IntType": "int", "UintType": "uint", "DoubleType": "double",
    "StringType": "string", "BytesType": "bytes", "ListType": "list", "MapType": "map",
    "NoneType": "null", "TimestampType": "timestamp", "DurationType": "duration", "TypeType": "type",
}
_OPERATORS = {
    "relation_lt": "<", "relation_le": "<=", "relation_gt": ">", "relation_ge": ">=",
    "relation_eq": "==", "relation_ne": "!=", "relation_in": "in", "addition_add": "+",
    "addition_sub": "-", "multiplication_mul": "*", "multiplication_div": "/",
    "multiplication_mod": "%", "unary_not": "!", "unary_neg": "-",
}
_CLASS_RE = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")
_RULE_RE = re.compile(r"Token\('RULE', '(\w+)'\)")
_UNDECLARED_RE = re.compile(r"undeclared reference to '([^']*)'")
_NO_MEMBER_RE = re.compile(r"no such member in mapping: (.*)$")
_OVERLOAD_RE = re.compile(r"found no matching overload for (.*) applied to '(.*)'$")


def _clean(message: str) -> str:
    message = _CLASS_RE.sub(lambda m: _TYPE_NAMES.get(m.group(1), m.group(1)), message)
    message = _RULE_RE.sub(lambda m: repr(_OPERATORS.get(m.group(1), m.group(1))), message)
    return message


def _eval_reason(exc: CELEvalError) -> str:
    message = str(exc.args[0]) if exc.args else "evaluation failed"
    detail = exc.args[2] if len(exc.args) > 2 and exc.args[2] else None
    undeclared = _UNDECLARED_RE.match(message)
    if undeclared:
        return f"unknown name {undeclared.group(1)!r}"
    if message == "return error for overflow" and detail == ("overflow",):
        return "integer overflow (CEL integers are 64-bit)"
    if message == "modulus or divide by zero":
        return "division by zero"
    no_member = _NO_MEMBER_RE.match(message)
    if no_member:
        return f"no such key: {no_member.group(1)}"
    overload = _OVERLOAD_RE.match(message)
    if overload:
        return _clean(f"no operator {overload.group(1)} for {overload.group(2)}")
    if detail and message == "no such key":
        return f"no such key: {', '.join(repr(d) for d in detail)}"
    if detail and message in ("no such overload", "return error for overflow", "invalid_argument"):
        return _clean(f"{message}: {'; '.join(str(d) for d in detail)}")
    return _clean(message)


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


def stringify(value: Any) -> str:
    """How a value reads inside text: strings as is, JSON for lists and maps, true/false/null as in CEL."""
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
    return orjson.dumps(value, default=_json_default).decode("utf-8")


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

"""The cel-python adapter: parsing, checking, evaluating, and translating its values and errors.

This is the only module that knows cel-python (its lark parse trees, its
value types, its exceptions) and the RE2 library behind ``matches()``.
:mod:`agentflow.engine.expressions` calls it with plain JSON-like Python and
gets plain JSON-like Python back::

    parse(text) -> Program           a parse tree; CelError on bad syntax
    analyse(program) -> Analysis     names read, steps.X referenced; CelError on unknown functions
    evaluate(program, vars) -> Any   the value; CelError for every failed evaluation

Errors::

    Exception
      CelError     .reason says what is wrong, without the expression text
                   (expressions.py wraps it into an ExpressionError)

Regular expressions. ``matches()`` is CEL's only way to run a pattern that a
manifest, a model or a tool chose. It runs on RE2 (google-re2), as the CEL
specification says: RE2 matches in time linear in the input and bounded
memory, so no pattern can backtrack catastrophically (``^(a+)+$`` against a
long string is as fast as ``^a+$``). The price is RE2's syntax: backreferences,
lookaround and possessive quantifiers are rejected. A pattern that is a string
literal is checked when the expression is compiled, so ``agentflow validate``
reports it; a pattern computed at run time is checked when it is used. Because
matching is linear, no cap on pattern or input length is needed for safety;
RE2's own limits (repetition counts up to 1000, an 8 MiB program) bound a
pattern's size.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import lark
import re2  # type: ignore[import-untyped]
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

__all__ = ["Analysis", "CelError", "Program", "analyse", "evaluate", "parse"]

Program = lark.Tree[Any]
"""A parsed CEL expression; treat it as opaque outside this module."""


class CelError(Exception):
    """An expression that does not parse, check or evaluate; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# --- parsing -----------------------------------------------------------------------------------------------


def parse(text: str) -> Program:
    """The parse tree of a CEL expression; CelError for bad syntax."""
    if not text.strip():
        raise CelError("the expression is empty")
    try:
        return CELParser().parse(text)
    except CELParseError as exc:
        cause = exc.__context__
        where = f"column {exc.column}" if exc.line in (None, 1) else f"line {exc.line} column {exc.column}"
        token = getattr(cause, "token", None)
        if token is not None and getattr(token, "type", "") == "$END":
            raise CelError("syntax error: the expression ends too early") from None
        if token is not None:
            found = f"unexpected {str(token)!r}"
        elif getattr(cause, "char", None) is not None:
            found = f"unexpected character {cause.char!r}"  # type: ignore[union-attr]
        else:
            found = str(exc.args[0]).splitlines()[0] if exc.args else "cannot parse"
        raise CelError(f"syntax error at {where}: {found}") from None
    except RecursionError:
        raise CelError("the expression is nested too deeply") from None


# --- checking ----------------------------------------------------------------------------------------------

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


@dataclasses.dataclass(frozen=True, slots=True)
class Analysis:
    """What a compiled expression reads."""

    roots: frozenset[str]
    """Top-level names read."""
    step_refs: frozenset[str]
    """Every X of steps.X / steps["X"]."""
    steps_dynamic: bool
    """``steps`` is used other than as steps.X / steps["X"] (for example steps[inputs.which])."""
    path: tuple[str, tuple[str | int, ...]] | None
    """(root, keys) when the expression is a plain path such as steps.a.output[0], else None."""


@dataclasses.dataclass
class _Collected:
    roots: set[str] = dataclasses.field(default_factory=set)
    step_refs: set[str] = dataclasses.field(default_factory=set)
    steps_dynamic: bool = False


def analyse(program: Program) -> Analysis:
    """Collect the names a program reads; CelError for a call of a function CEL does not define,
    a misused macro or ``has()``, or a literal ``matches()`` pattern RE2 does not accept."""
    out = _Collected()
    try:
        _analyse(program, frozenset(), out)
        path = _literal_path(program)
    except RecursionError:
        raise CelError("the expression is nested too deeply") from None
    return Analysis(frozenset(out.roots), frozenset(out.step_refs), out.steps_dynamic, path)


def _string_literal(tree: Program) -> str | None:
    """The value of a tree that is one string literal, else None."""
    node = _unwrap(tree)
    if node.data == "primary" and isinstance(node.children[0], lark.Tree):
        lit = node.children[0]
        if lit.data == "literal":
            token = lit.children[0]
            if isinstance(token, lark.Token) and token.type in ("STRING_LIT", "MLSTRING_LIT"):
                return str(celstr(token))
    return None


def _unwrap(tree: Program) -> Program:
    node = tree
    while node.data in _WRAPPERS and len(node.children) == 1 and isinstance(node.children[0], lark.Tree):
        node = node.children[0]
    return node


def _plain_ident(tree: Program) -> str | None:
    node = _unwrap(tree)
    child = node.children[0] if node.data == "primary" else None
    if isinstance(child, lark.Tree) and child.data == "ident":
        return str(child.children[0])
    return None


def _args(tree: Program) -> list[Program]:
    """The argument trees of an ident_arg / member_dot_arg node."""
    last = tree.children[-1]
    if isinstance(last, lark.Tree) and last.data == "exprlist":
        return [c for c in last.children if isinstance(c, lark.Tree)]
    return []


def _column(tree: Program) -> int | str:
    return getattr(tree.meta, "column", "?")


def _check_pattern(tree: Program) -> None:
    """A matches() pattern that is a string literal must be one RE2 accepts."""
    pattern = _string_literal(tree)
    if pattern is not None:
        problem = _pattern_problem(pattern)
        if problem is not None:
            raise CelError(problem)


def _analyse(tree: Program, bound: frozenset[str], out: _Collected) -> None:
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
                _analyse(index, bound, out)
            out.roots.add("steps")
            if key is not None:
                out.step_refs.add(key)
            return
    if data == "ident_arg":
        name = str(tree.children[0])
        args = _args(tree)
        if name not in _FUNCTIONS:
            raise CelError(f"unknown function {name!r} at column {_column(tree)}")
        if name == "has" and (len(args) != 1 or _unwrap(args[0]).data != "member_dot"):
            raise CelError("has() takes one field selection, for example has(inputs.x)")
        if name == "matches" and len(args) == 2:
            _check_pattern(args[1])
        for arg in args:
            _analyse(arg, bound, out)
        return
    if data == "dot_ident_arg":
        raise CelError(f"unknown function '.{tree.children[0]}' at column {_column(tree)}")
    if data == "member_dot_arg":
        base, method = tree.children[0], str(tree.children[1])
        assert isinstance(base, lark.Tree)
        args = _args(tree)
        if method not in _FUNCTIONS:
            raise CelError(f"unknown method {method!r} at column {_column(tree)}")
        if method == "matches" and len(args) == 1:
            _check_pattern(args[0])
        _analyse(base, bound, out)
        nvars = 1 if method in _MACROS_ONE_VAR else 2 if method in _MACROS_TWO_VARS else 0
        if nvars:
            names = [_plain_ident(a) for a in args[:nvars]]
            if len(args) != nvars + (1 if nvars == 1 else 2) or any(n is None for n in names):
                usage = f"{method}(x, expr)" if nvars == 1 else "reduce(acc, x, init, expr)"
                raise CelError(f"the {method} macro is written list.{usage}")
            inner = bound | {n for n in names if n is not None}
            for arg in args[nvars:]:
                _analyse(arg, inner, out)
            return
        for arg in args:
            _analyse(arg, bound, out)
        return
    for child in tree.children:
        if isinstance(child, lark.Tree):
            _analyse(child, bound, out)


def _literal_path(tree: Program) -> tuple[str, tuple[str | int, ...]] | None:
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


# --- regular expressions -----------------------------------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is reported to the user, not logged to stderr by RE2


def _pattern_problem(pattern: str) -> str | None:
    """Why RE2 rejects a pattern, or None. Compiled patterns are cached by re2."""
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else "rejected"
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return (
            f"matches(): invalid regular expression {pattern!r}: {detail} (patterns use RE2 syntax: "
            "no backreferences, lookaround or possessive quantifiers)"
        )
    return None


def _matches(text: Any, pattern: Any) -> Any:
    """CEL's ``string.matches(pattern)``: an unanchored RE2 search, linear in the length of ``text``."""
    if not isinstance(text, str) or not isinstance(pattern, str):
        return CELEvalError("no such overload", TypeError, (type(text), type(pattern)))
    pattern = str(pattern)  # a celtypes.StringType reads as StringType('...') in messages
    problem = _pattern_problem(pattern)
    if problem is not None:
        return CELEvalError(problem)
    return celtypes.BoolType(re2.compile(pattern, _RE2_OPTIONS).search(text) is not None)


# Bound explicitly, so matching stays on RE2 whatever the cel-python default is.
_OVERRIDES: dict[str, Any] = {"matches": _matches}


# --- evaluating --------------------------------------------------------------------------------------------


def evaluate(program: Program, variables: Mapping[str, Any]) -> Any:
    """The value of a program over plain JSON-like variables, as plain JSON-like Python."""
    activation: dict[str, Any] = {}
    for name, value in variables.items():
        try:
            activation[name] = _to_cel(value)
        except (TypeError, ValueError) as exc:
            raise CelError(f"the value of {name!r} cannot be used in CEL: {exc}") from None
    try:
        result = Evaluator(program, Activation(vars=activation, functions=_OVERRIDES)).visit(program)
        if isinstance(result, CELEvalError):
            raise result
        return _from_cel(result)
    except CELEvalError as exc:
        raise CelError(_eval_reason(exc)) from None
    except (CELUnsupportedError, CELSyntaxError) as exc:
        raise CelError(f"not supported: {_clean(str(exc.args[0]))}") from None
    except RecursionError:
        raise CelError("evaluation is nested too deeply") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as exc:
        # cel-python lets some errors of its builtins escape unwrapped.
        raise CelError(_clean(f"{type(exc).__name__}: {exc}")) from None


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
    """A CEL map key (int, uint, bool or string) as a JSON object key, written as in templates."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    return repr(key)


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

"""A PromQL parser for the tests of the chart's dashboard and alerts (lark, LALR): what ``promtool check rules``
would refuse as syntax fails here too, and the metric names an expression selects come from its parse tree.

It covers the PromQL the chart writes and more: numbers, strings, durations, vector selectors with matchers,
range selectors and subqueries, ``offset`` and ``@``, every binary operator with its precedence and ``bool``,
``on``/``ignoring``, ``group_left``/``group_right``, aggregations with ``by``/``without`` before or after their
arguments, and calls of PromQL's functions (an unknown function name is an error, as in Prometheus). Grafana's
variables are replaced first (``$__rate_interval`` by a duration, ``$name`` inside label values stays text).
"""

from __future__ import annotations

import re

from lark import Lark, Token, Tree

_FUNCTIONS = """
abs absent absent_over_time avg_over_time ceil changes clamp clamp_max clamp_min count_over_time days_in_month
day_of_month day_of_week day_of_year delta deriv exp floor histogram_avg histogram_count histogram_fraction
histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase irate
label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month
predict_linear present_over_time quantile_over_time rate resets round scalar sgn sort sort_desc sort_by_label
sort_by_label_desc sqrt stddev_over_time stdvar_over_time sum_over_time time timestamp vector year acos acosh
asin asinh atan atanh cos cosh deg pi rad sin sinh tan tanh
"""
FUNCTIONS = frozenset(_FUNCTIONS.split())

GRAMMAR = r"""
?start: expr
?expr: or_expr
?or_expr: and_expr | or_expr OR modifiers and_expr -> binary
?and_expr: cmp_expr | and_expr (AND | UNLESS) modifiers cmp_expr -> binary
?cmp_expr: add_expr | cmp_expr CMP_OP bool_mod modifiers add_expr -> binary
?add_expr: mul_expr | add_expr ADD_OP modifiers mul_expr -> binary
?mul_expr: unary | mul_expr (MUL_OP | ATAN2) modifiers unary -> binary
?unary: pow_expr | ADD_OP unary -> unary
?pow_expr: postfix | postfix "^" modifiers unary -> power
?postfix: primary
    | postfix "[" DURATION "]" -> range
    | postfix "[" DURATION ":" DURATION? "]" -> subquery
    | postfix OFFSET ADD_OP? DURATION -> offset
    | postfix "@" (NUMBER | "start" "(" ")" | "end" "(" ")") -> at
?primary: NUMBER -> number
    | STRING -> string
    | "(" expr ")"
    | aggregation
    | call
    | selector
aggregation: AGG_OP grouping "(" args ")"
    | AGG_OP "(" args ")" grouping?
call: NAME "(" args? ")"
args: expr ("," expr)*
selector: NAME matchers? | matchers
matchers: "{" (matcher ("," matcher)* ","?)? "}"
matcher: NAME MATCH_OP STRING | STRING
grouping: (BY | WITHOUT) labels
labels: "(" (NAME ("," NAME)* ","?)? ")"
bool_mod: BOOL?
modifiers: ((ON | IGNORING) labels ((GROUP_LEFT | GROUP_RIGHT) labels?)?)?

AGG_OP.2: /(AGGREGATIONS)(?=\s*(\(|by\b|without\b))/
OR.2: "or"
AND.2: "and"
UNLESS.2: "unless"
BY.2: "by"
WITHOUT.2: "without"
ON.2: "on"
IGNORING.2: "ignoring"
GROUP_LEFT.2: "group_left"
GROUP_RIGHT.2: "group_right"
BOOL.2: "bool"
OFFSET.2: "offset"
ATAN2.2: "atan2"
NAME: /[a-zA-Z_:][a-zA-Z0-9_:]*/
DURATION.3: /([0-9]+(ms|s|m|h|d|w|y))+/
NUMBER: /[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?/ | /0x[0-9a-fA-F]+/ | "Inf" | "NaN"
STRING: /"([^"\\]|\\.)*"/ | /'([^'\\]|\\.)*'/ | /`[^`]*`/
CMP_OP: "==" | "!=" | ">=" | "<=" | ">" | "<"
ADD_OP: "+" | "-"
MUL_OP: "*" | "/" | "%"
MATCH_OP: "=~" | "!~" | "!=" | "="
%ignore /\s+/
%ignore /#[^\n]*/
"""

AGGREGATIONS = "sum avg min max count stddev stdvar group topk bottomk quantile count_values limitk limit_ratio"
_PARSER = Lark(GRAMMAR.replace("AGGREGATIONS", "|".join(AGGREGATIONS.split())), parser="lalr", maybe_placeholders=False)
GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


class PromQLError(ValueError):
    pass


def parse(expr: str) -> Tree[Token]:
    """The parse tree of ``expr`` (Grafana's range variables replaced); PromQLError naming what is wrong."""
    text = expr
    for variable, value in GRAFANA_RANGES.items():
        text = text.replace(variable, value)
    if "$" in re.sub(r'"[^"]*"', '""', text):
        raise PromQLError(f"a Grafana variable outside a label value: {expr}")
    try:
        tree = _PARSER.parse(text)
    except Exception as exc:  # lark's errors: UnexpectedInput and its kinds
        raise PromQLError(f"{expr}: {exc}") from None
    for call in tree.find_data("call"):
        name = str(call.children[0])
        if name not in FUNCTIONS:
            raise PromQLError(f"{expr}: unknown function {name}()")
    return tree


def selectors(expr: str) -> list[tuple[str | None, set[str]]]:
    """Each vector selector of ``expr``: its metric name (None: only matchers) and the labels its matchers name."""
    out: list[tuple[str | None, set[str]]] = []
    for selector in parse(expr).find_data("selector"):
        first = selector.children[0]
        name = str(first) if isinstance(first, Token) and first.type == "NAME" else None
        labels = {str(m.children[0]) for m in selector.find_data("matcher") if len(m.children) == 3}
        out.append((name, labels - {"__name__"}))
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (``name{...}`` or ``{__name__="name"}``)."""
    names: set[str] = set()
    for selector in parse(expr).find_data("selector"):
        first = selector.children[0]
        if isinstance(first, Token) and first.type == "NAME":
            names.add(str(first))
        for matcher in selector.find_data("matcher"):
            label, _, value = matcher.children
            if str(label) == "__name__":
                names.add(str(value)[1:-1])
    return names

"""JSON Schema checking that never fetches anything.

jsonschema resolves a ``$ref`` to an http(s) URL by fetching it unless it is given a registry. Schemas here come
from tenants' manifests, PromptVersions, MCP servers and models' plans: a fetch would be a request to wherever they
point (another tenant's service, a cloud metadata address) from wherever the check runs. Every check goes through
this module, whose validators carry an empty :class:`referencing.Registry`: references inside the schema
(``#/$defs/x``) resolve, any other is a :class:`jsonschema.SchemaError` naming it.

::

    local_validator(schema)        the validator of the schema's draft; SchemaError when the schema is invalid
    schema_errors(schema, value)   every ValidationError of value; SchemaError for an invalid schema or a $ref
                                   that is not inside it
    is_valid(schema, value)        the same as a bool (False for an invalid schema too)
    expansion_problem(schema)      why checking a value against the schema could take exponential time, or None

A schema whose subschemas apply to the same value through references (``allOf: [{$ref: a}, {$ref: a}]`` with ``a``
doing the same, 30 levels down) is small and valid, and checking one value against it takes 2^30 steps, on the
event loop of whoever checks (the admission webhook). :func:`expansion_problem` counts, in time linear in the
schema, how many subschemas one value meets, and refuses past MAX_EXPANSION (a cycle of references on the same
value never ends at all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from jsonschema.validators import validator_for

__all__ = ["MAX_EXPANSION", "expansion_problem", "is_valid", "local_validator", "schema_errors"]

MAX_EXPANSION = 10_000
"""The most subschemas one value may meet through in-place applicators and references (real schemas: tens)."""
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_ONE = ("not", "if", "then", "else")


def local_validator(schema: Mapping[str, Any]) -> Any:
    """The validator of ``schema``'s draft, resolving no reference outside it; SchemaError when it is invalid."""
    cls = validator_for(schema)
    cls.check_schema(dict(schema))
    return cls(schema, registry=referencing.Registry())


def schema_errors(schema: Mapping[str, Any], value: Any) -> list[jsonschema.ValidationError]:
    """Every way ``value`` breaks ``schema``; SchemaError when the schema is invalid or needs a $ref from outside."""
    validator = local_validator(schema)
    try:
        return list(validator.iter_errors(value))
    except referencing.exceptions.Unresolvable as exc:
        ref = getattr(exc, "ref", None) or str(exc)
        raise jsonschema.SchemaError(f"$ref {str(ref)[:200]!r} cannot be resolved: only references inside the "
                                     "schema are (a remote one is never fetched)") from None


def is_valid(schema: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` satisfies ``schema`` (an invalid schema satisfies nothing)."""
    try:
        return not schema_errors(schema, value)
    except jsonschema.SchemaError:
        return False


class _Unbounded(Exception):
    """A cycle of references on the same value, or a chain too long to follow."""


def expansion_problem(schema: Mapping[str, Any]) -> str | None:
    """Why one value could meet more than MAX_EXPANSION subschemas of ``schema`` (its references applied in place,
    counted once per use, memoized by subschema), starting at any of its subschemas, or None. References outside
    the schema are not followed."""
    memo: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, Mapping):
            return 1
        key = id(node)
        if key in memo:
            return memo[key]
        if key in visiting:
            raise _Unbounded("a $ref cycle applies a subschema to the same value again")
        visiting.add(key)
        total = 1
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            target = _pointer(schema, ref)
            if target is not None:
                total += size(target)
        for name in _IN_PLACE_LISTS:
            subs = node.get(name)
            if isinstance(subs, list):
                total += sum(size(sub) for sub in subs)
        for name in _IN_PLACE_ONE:
            if name in node:
                total += size(node[name])
        visiting.discard(key)
        memo[key] = min(total, MAX_EXPANSION + 1)
        return memo[key]

    try:  # every subschema is where some value starts (properties, items...): the largest count is the bound
        met = 0
        stack: list[Any] = [schema]
        while stack and met <= MAX_EXPANSION:
            node = stack.pop()
            if isinstance(node, Mapping):
                met = max(met, size(node))
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    except _Unbounded as exc:
        return str(exc)
    except RecursionError:
        return "its references chain deeper than can be followed"
    if met > MAX_EXPANSION:
        return (f"one value would be checked against more than {MAX_EXPANSION:,} subschemas (references applied in "
                "place through allOf, anyOf, oneOf, not or if/then/else multiply): simplify it")
    return None


def _pointer(schema: Mapping[str, Any], ref: str) -> Any:
    """The subschema a local JSON pointer reference (#, #/$defs/a) names, or None (anchors are not followed)."""
    if ref == "#":
        return schema
    if not ref.startswith("#/"):
        return None
    node: Any = schema
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node

"""JSON Schemas in manifests: is the schema itself valid, and do the given instances satisfy it.

Remote $refs are never fetched: a schema that needs one is reported, not resolved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import referencing
import referencing.exceptions
from jsonschema.validators import validator_for
from referencing.jsonschema import DRAFT202012

from ..engine.schemas import expansion_problem
from .findings import Finding, PathParts

__all__ = ["schema_and_instances"]


def schema_and_instances(
    schema: Mapping[str, Any] | None, schema_path: PathParts, instances: Sequence[tuple[Any, PathParts]]
) -> list[Finding]:
    """Problems of a schema (None: no schema, no problems); if it has none, where the instances fail it."""
    if schema is None:
        return []
    findings = _schema_findings(schema, schema_path)
    if not findings:
        for instance, path in instances:
            findings.extend(_instance_findings(schema, instance, path))
    return findings


def _registry() -> referencing.Registry[Any]:
    """An empty registry: jsonschema adds the meta-schemas, and remote $refs are never fetched."""
    return referencing.Registry()


def _schema_findings(schema: Mapping[str, Any], path: PathParts) -> list[Finding]:
    """Problems of a JSON Schema itself, checked against its meta-schema, and every $ref that points outside it."""
    cls = validator_for(schema)
    # With the format checker, a bad regular expression in "pattern" is a problem here, not a crash later.
    meta = cls(cls.META_SCHEMA, registry=_registry(), format_checker=cls.FORMAT_CHECKER)
    findings: list[Finding] = [
        ([*path, *err.absolute_path], f"not a valid JSON Schema: {err.message}")
        for err in sorted(meta.iter_errors(schema), key=lambda e: [str(p) for p in e.absolute_path])
    ]
    if findings:
        return findings
    expansion = expansion_problem(schema)
    return _outside_refs(schema, path) + ([(list(path), expansion)] if expansion is not None else [])


def _outside_refs(schema: Mapping[str, Any], path: PathParts) -> list[Finding]:
    """Each $ref that is not a reference inside the schema (#...): it would be fetched, and never is; and each
    reference inside it that names nothing there."""
    findings: list[Finding] = []
    resolver = referencing.Registry().with_resource(
        "", referencing.Resource.from_contents(dict(schema), default_specification=DRAFT202012)).resolver()
    stack: list[tuple[Any, PathParts]] = [(schema, list(path))]
    while stack:
        node, where = stack.pop()
        if isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                findings.append(([*where, "$ref"], f"{ref[:200]!r} is not inside the schema; remote references are "
                                                   "never fetched: put the schema under $defs and refer to "
                                                   "#/$defs/NAME"))
            elif isinstance(ref, str):
                try:
                    resolver.lookup(ref)
                except referencing.exceptions.Unresolvable:
                    findings.append(([*where, "$ref"], f"{ref[:200]!r} names nothing in the schema"))
            stack.extend((child, [*where, key]) for key, child in node.items() if isinstance(child, Mapping | list))
        elif isinstance(node, list):
            stack.extend((child, [*where, i]) for i, child in enumerate(node) if isinstance(child, Mapping | list))
    return sorted(findings, key=lambda f: [str(p) for p in f[0]])


def _instance_findings(schema: Mapping[str, Any], instance: Any, path: PathParts) -> list[Finding]:
    """Where an instance does not satisfy a (valid) schema. Remote $refs are never fetched."""
    validator = validator_for(schema)(schema, registry=_registry())
    try:
        errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    except referencing.exceptions.Unresolvable as exc:
        why = f"the schema has a $ref that cannot be resolved ({exc}); remote references are not fetched"
        return [(path, why)]
    return [([*path, *err.absolute_path], err.message) for err in errors]

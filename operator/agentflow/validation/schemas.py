"""JSON Schemas in manifests: is the schema itself valid, and do the given instances satisfy it.

Remote $refs are never fetched: a schema that needs one is reported, not resolved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import referencing
import referencing.exceptions
from jsonschema.validators import validator_for

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
    """Problems of a JSON Schema itself, checked against its meta-schema."""
    cls = validator_for(schema)
    # With the format checker, a bad regular expression in "pattern" is a problem here, not a crash later.
    meta = cls(cls.META_SCHEMA, registry=_registry(), format_checker=cls.FORMAT_CHECKER)
    return [
        ([*path, *err.absolute_path], f"not a valid JSON Schema: {err.message}")
        for err in sorted(meta.iter_errors(schema), key=lambda e: [str(p) for p in e.absolute_path])
    ]


def _instance_findings(schema: Mapping[str, Any], instance: Any, path: PathParts) -> list[Finding]:
    """Where an instance does not satisfy a (valid) schema. Remote $refs are never fetched."""
    validator = validator_for(schema)(schema, registry=_registry())
    try:
        errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    except referencing.exceptions.Unresolvable as exc:
        why = f"the schema has a $ref that cannot be resolved ({exc}); remote references are not fetched"
        return [(path, why)]
    return [([*path, *err.absolute_path], err.message) for err in errors]

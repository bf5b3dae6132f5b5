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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from jsonschema.validators import validator_for

__all__ = ["is_valid", "local_validator", "schema_errors"]


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

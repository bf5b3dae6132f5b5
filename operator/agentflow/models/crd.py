"""CustomResourceDefinitions generated from the pydantic models.

The models are the single source of truth: this module turns each resource
model's JSON Schema into a Kubernetes *structural* schema and wraps it in an
``apiextensions.k8s.io/v1`` CustomResourceDefinition. Everything here is pure
(dicts in, dicts and text out) except :func:`write` and :func:`main`.

The schema is taken in pydantic's ``validation`` mode: it describes what a
manifest may contain, which is what the API server checks. The translation::

    $ref / $defs                 inlined (a recursive model is a CRDError)
    anyOf [X, null]              X; ``nullable: true`` only for a required field, where
                                 null is a meaningful value (optional fields are left out
                                 on the wire, never sent as null)
    const                        enum with that one value
    exclusiveMinimum: N          minimum: N, exclusiveMinimum: true (OpenAPI v3.0 form)
    Any, dict[str, Any]          x-kubernetes-preserve-unknown-fields (type object for dicts)
    extra="allow" models         their properties plus x-kubernetes-preserve-unknown-fields
    additionalProperties: false  dropped: pruning (strict field validation) does that job
    title                        dropped
    default                      kept (the API server applies it, so ``kubectl get -o yaml`` shows
                                 the value the models use), default_factory values included;
                                 None defaults dropped (optional fields are left out), and none
                                 under status, metadata or a node that preserves unknown fields
                                 (the API server neither prunes nor checks them there); a scalar
                                 default is also named in the description for ``kubectl explain``

Field docstrings become descriptions, so ``kubectl explain`` is useful. CEL
rules (``x-kubernetes-validations``) and list types are declared on the models
themselves through ``json_schema_extra``, next to the validators they mirror.

Written to files by ``python -m agentflow.commands.crds [--check] [--out crds/]`` (``make crds``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from .agent import Agent
from .base import GROUP, VERSION, Model
from .budget import Budget
from .prompt import PromptVersion
from .rollout import PromptRollout
from .template import ClusterWorkflowTemplate, WorkflowSchedule, WorkflowTemplate
from .toolpolicy import ToolPolicy
from .trigger import WorkflowTrigger
from .workflow import Workflow

CATEGORY = "agentflow"
READY = '.status.conditions[?(@.type=="Ready")].status'
HEADER = (
    "# Generated from the pydantic models in operator/agentflow/models by\n"
    "# `python -m agentflow.commands.crds` (make crds). Do not edit by hand.\n"
)
DRIFT_HINT = "run `make crds` (python -m agentflow.commands.crds --out crds/) and commit the result"

# Keys a CRD schema node may carry (apiextensions.k8s.io/v1 JSONSchemaProps, minus
# the combinators and references a structural schema may not use in our generator).
ALLOWED_KEYS = frozenset(
    {
        "type", "format", "description", "enum", "nullable", "example", "externalDocs",
        "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "multipleOf",
        "maxLength", "minLength", "pattern", "maxItems", "minItems",
        "maxProperties", "minProperties", "required", "items", "properties", "additionalProperties",
        "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
        "x-kubernetes-map-type", "x-kubernetes-validations", "default",
    }
)
_DROPPED_KEYS = frozenset({"title", "default", "$defs", "$ref", "anyOf", "const", "additionalProperties"})
# Top-level fields that never get defaults: the API server's own, and status (written by the operator; a
# default there would show values the operator never wrote).
_NO_DEFAULTS = frozenset({"apiVersion", "kind", "metadata", "status"})
_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_TYPES = ("object", "array", "string", "integer", "number", "boolean")
_SAYS_DEFAULT = re.compile(r"\(default\b|\bdefaults? (to|is)\b|\bdefault:", re.IGNORECASE)


class CRDError(ValueError):
    """A model cannot be expressed as a structural schema; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Column:
    """One additionalPrinterColumn of `kubectl get`."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "jsonPath": self.json_path, "type": self.type}
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


AGE = Column("Age", ".metadata.creationTimestamp", "date")
READY_COLUMN = Column("Ready", READY, description="Status of the Ready condition.")


@dataclasses.dataclass(frozen=True)
class Kind:
    """How one resource model is published as a CRD."""

    model: type[Model]
    plural: str
    short_names: tuple[str, ...]
    columns: tuple[Column, ...]
    scope: Literal["Namespaced", "Cluster"] = "Namespaced"

    @property
    def kind(self) -> str:
        return self.model.__name__

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def filename(self) -> str:
        return f"{self.crd_name}.yaml"


KINDS: tuple[Kind, ...] = (
    Kind(
        Workflow,
        "workflows",
        ("afw",),
        (
            Column("Phase", ".status.phase", description="Phase of the run."),
            Column("Progress", ".status.progress", description="Finished/total steps."),
            Column("Cost", ".status.costUsd", "number", "Cost of the run in US dollars."),
            Column("Message", ".status.message", priority=1),
            AGE,
        ),
    ),
    Kind(
        Agent,
        "agents",
        ("afa",),
        (Column("Model", ".spec.model.name", description="Primary model."), READY_COLUMN, AGE),
    ),
    Kind(
        PromptVersion,
        "promptversions",
        ("afp",),
        (
            Column("Prompt", ".spec.prompt", description="Prompt family."),
            Column("Version", ".spec.version", description="Version label."),
            Column("Role", ".status.rollout.role", description="stable, candidate or inactive in its family."),
            Column("Weight", ".status.rollout.weight", "integer", "Percent of the family's runs it gets."),
            Column("Eval", ".status.evaluation.phase", description="Its evaluation suite on the cluster: Pending, "
                   "Running, Passed, Failed or Error."),
            Column("Pass Rate", ".status.evaluation.passRate", "number", "Share of the suite's cases that passed."),
            Column("Score", ".status.evaluation.meanScore", "number", "Mean score of the suite's cases (0 to 1)."),
            READY_COLUMN,
            AGE,
        ),
    ),
    Kind(
        Budget,
        "budgets",
        ("afb",),
        (
            Column("Period", ".spec.period"),
            Column("Spent", ".status.spentUsd", "number", "Spent in the current window, US dollars."),
            Column("Limit", ".spec.limits.usd", "number", "Limit per window, US dollars."),
            Column("Remaining", ".status.remainingUsd", "number", "Left in the current window, US dollars."),
            Column("Window End", ".status.windowEnd", description="End of the current window (none: total)."),
            READY_COLUMN,
            Column("Exhausted", '.status.conditions[?(@.type=="Exhausted")].status',
                   description="Whether the limit is reached in the current window."),
            Column("Tokens", ".status.spentTokens", "integer", "Tokens spent in the current window.", priority=1),
            AGE,
        ),
    ),
    Kind(
        ToolPolicy,
        "toolpolicies",
        ("aftp",),
        (READY_COLUMN, AGE),
    ),
    Kind(
        WorkflowTemplate,
        "workflowtemplates",
        ("afwt",),
        (AGE,),
    ),
    Kind(
        ClusterWorkflowTemplate,
        "clusterworkflowtemplates",
        ("afcwt",),
        (AGE,),
        scope="Cluster",
    ),
    Kind(
        WorkflowSchedule,
        "workflowschedules",
        ("afws",),
        (
            Column("Schedule", ".spec.schedule", description="Cron expression."),
            Column("Time Zone", ".spec.timeZone"),
            Column("Suspend", ".spec.suspend", "boolean"),
            Column("Last", ".status.lastScheduleTime", description="Last slot a run was started for."),
            Column("Next", ".status.nextScheduleTime", description="Next slot."),
            AGE,
        ),
    ),
    Kind(
        WorkflowTrigger,
        "workflowtriggers",
        ("afwtr",),
        (
            Column("Template", ".spec.workflowTemplateRef.name", description="The WorkflowTemplate it starts."),
            Column("Suspend", ".spec.suspend", "boolean"),
            Column("Last", ".status.lastDelivery.outcome", description="What the last delivery did."),
            Column("Workflow", ".status.lastDelivery.workflow", description="The run of the last delivery."),
            AGE,
        ),
    ),
    Kind(
        PromptRollout,
        "promptrollouts",
        ("afpr",),
        (
            Column("Prompt", ".spec.prompt", description="Prompt family."),
            Column("Stable", ".spec.stable", description="The family's stable PromptVersion."),
            Column("Candidate", ".spec.candidate", description="The PromptVersion rolled out."),
            Column("Weight", ".status.weight", "integer", "Percent of the family's runs the candidate gets."),
            Column("Phase", ".status.phase", description="Where the rollout stands."),
            Column("Message", ".status.lastDecision.message", priority=1),
            AGE,
        ),
    ),
)


# --- JSON Schema -> structural schema ------------------------------------------------------


class _WithFactoryDefaults(GenerateJsonSchema):
    """pydantic's JSON Schema, with the value of a ``default_factory`` as the default (pydantic leaves it out)."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return schema.get("default", NoDefault)


def _wire(value: Any) -> Any:
    """A default as it goes on the wire: None (an unset optional field) left out at any depth."""
    if isinstance(value, Mapping):
        return {k: _wire(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def _describe_default(node: dict[str, Any]) -> None:
    default = node.get("default")
    if isinstance(default, bool | int | float) or (isinstance(default, str) and default):
        text = node.get("description", "")
        if not _SAYS_DEFAULT.search(text):
            sep = " " if text else ""
            node["description"] = f"{text}{sep}Defaults to {json.dumps(default)}."


def _resolve(
    node: Mapping[str, Any], defs: Mapping[str, Any], path: str, stack: tuple[str, ...]
) -> tuple[dict[str, Any], tuple[str, ...], bool]:
    """Inline $ref and strip null from anyOf: the node, the $ref stack, whether null was allowed."""
    out = dict(node)
    allows_null = False
    if "anyOf" in out:
        options = [o for o in out.pop("anyOf") if o != {"type": "null"}]
        allows_null = len(options) < len(node["anyOf"])
        if len(options) != 1:
            raise CRDError(
                f"{path or '<root>'}: a union of {len(options)} types cannot be expressed in a structural "
                "schema; give the field one type (or JSONValue for free-form JSON)"
            )
        option = options[0]
        # Field-level keys (description, default, ...) override what the option says.
        out = {**option, **out}
    while "$ref" in out:
        ref = out.pop("$ref")
        name = str(ref).rsplit("/", 1)[-1]
        if name in stack:
            chain = " -> ".join((*stack, name))
            raise CRDError(f"{path or '<root>'}: {chain} is recursive; a CRD schema cannot be recursive")
        if name not in defs:
            raise CRDError(f"{path or '<root>'}: $ref {ref!r} names no definition")
        stack = (*stack, name)
        target = dict(defs[name])
        rules = [*target.get("x-kubernetes-validations", []), *out.get("x-kubernetes-validations", [])]
        out = {**target, **out}
        if rules:
            out["x-kubernetes-validations"] = rules
    return out, stack, allows_null


def _convert(
    node: Mapping[str, Any], defs: Mapping[str, Any], path: str, stack: tuple[str, ...], required: bool,
    defaults: bool = True,
) -> dict[str, Any]:
    node, stack, allows_null = _resolve(node, defs, path, stack)
    for key in ("prefixItems", "oneOf", "allOf", "not", "discriminator", "patternProperties"):
        if key in node:
            raise CRDError(f"{path or '<root>'}: JSON Schema {key!r} has no structural-schema form")
    _describe_default(node)
    out = {k: v for k, v in node.items() if k not in _DROPPED_KEYS}
    if "const" in node:
        out["enum"] = [node["const"]]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[flag] = value
            out[bound] = True
    if allows_null and required:
        out["nullable"] = True
    if "properties" in node:
        needed = set(node.get("required", []))
        # Not below a node that keeps unknown fields (extra="allow" models).
        inner = defaults and node.get("additionalProperties") not in (True, {})
        out["properties"] = {
            name: _convert(sub, defs, f"{path}.{name}" if path else name, stack, name in needed,
                           inner and not (not path and name in _NO_DEFAULTS))
            for name, sub in node["properties"].items()
        }
    if "items" in node:
        if not isinstance(node["items"], Mapping):
            raise CRDError(f"{path}: tuple-typed arrays cannot be expressed in a structural schema")
        out["items"] = _convert(node["items"], defs, f"{path}[]", stack, True, defaults)
    extra = node.get("additionalProperties")
    if extra is True or extra == {}:
        out[_PRESERVE] = True
    elif isinstance(extra, Mapping):
        if "properties" in node:
            raise CRDError(f"{path}: an object cannot have both fixed properties and typed extra keys")
        out["additionalProperties"] = _convert(extra, defs, f"{path}.*", stack, True, defaults)
    if "type" not in out and not out.get(_PRESERVE) and not out.get("x-kubernetes-int-or-string"):
        if "properties" in out or "additionalProperties" in out:
            out["type"] = "object"
        elif "enum" not in out:
            out[_PRESERVE] = True  # Any: free-form JSON of any type.
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out[_PRESERVE] = True
    if defaults and node.get("default") is not None and not out.get(_PRESERVE):
        out["default"] = _wire(node["default"])
    return out


def openapi_schema(model: type[Model]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model (its $defs inlined)."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults)
    return _convert(raw, raw.get("$defs", {}), "", (), True)


def resource_schema(model: type[Model]) -> dict[str, Any]:
    """The openAPIV3Schema of a resource: apiVersion/kind/metadata as Kubernetes wants them."""
    schema = openapi_schema(model)
    props = schema.get("properties", {})
    if "spec" not in props:
        raise CRDError(f"{model.__name__}: a resource model needs a spec field")
    props["apiVersion"] = {
        "type": "string",
        "description": "Versioned schema of this representation of an object (group/version).",
    }
    props["kind"] = {"type": "string", "description": "REST resource this object represents (CamelCase)."}
    props["metadata"] = {"type": "object"}
    required = [r for r in schema.get("required", []) if r not in ("apiVersion", "kind", "metadata")]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    return schema


def build_crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind; CRDError if its schema is not structural."""
    schema = resource_schema(kind.model)
    problems = structural_problems(schema)
    if problems:
        raise CRDError(f"{kind.kind}: the generated schema is not structural:\n  " + "\n  ".join(problems))
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "subresources": {"status": {}},
        "additionalPrinterColumns": [c.to_dict() for c in kind.columns],
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": {"app.kubernetes.io/part-of": "agentflow"}},
        "spec": {
            "group": GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "versions": [version],
        },
    }
    # A plain JSON tree that shares no node with another CRD or with a model's schema.
    copied: dict[str, Any] = json.loads(json.dumps(crd))
    return copied


class _Dumper(yaml.SafeDumper):
    """Plain YAML: a value that occurs twice is written twice, never as an &anchor / *alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(crd: Mapping[str, Any]) -> str:
    """Deterministic YAML text of a CRD: sorted keys, no line folding, the generated-file header."""
    body = yaml.dump(
        dict(crd), Dumper=_Dumper, sort_keys=True, default_flow_style=False, allow_unicode=True, width=1000
    )
    return HEADER + body


def generate() -> dict[str, str]:
    """File name -> YAML text of every CRD, in a stable order."""
    return {kind.filename: render(build_crd(kind)) for kind in KINDS}


# --- structural check ----------------------------------------------------------------------


def structural_problems(schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Everything that keeps a schema from being a structural schema the API server accepts.

    Checks: only JSONSchemaProps keys (no $ref, anyOf, allOf, oneOf, const, ...), a type on every
    node unless it preserves unknown fields, items on arrays, additionalProperties only as a
    schema and never next to properties, required names that exist, list-map keys that are
    required scalar properties, and CEL rules that carry a rule and a message.
    """
    where = path or "<root>"
    problems = [
        f"{where}: {key!r} is not allowed in a structural schema" for key in schema if key not in ALLOWED_KEYS
    ]
    typ = schema.get("type")
    if typ is None and not schema.get(_PRESERVE) and not schema.get("x-kubernetes-int-or-string"):
        problems.append(f"{where}: has no type and does not preserve unknown fields")
    if typ is not None and typ not in _TYPES:
        problems.append(f"{where}: type {typ!r} is not one of {', '.join(_TYPES)}")
    if "nullable" in schema and not isinstance(schema["nullable"], bool):
        problems.append(f"{where}: nullable must be true or false")
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in schema and not isinstance(schema[bound], bool):
            problems.append(f"{where}: {bound} must be a boolean (OpenAPI v3.0)")
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    if extra is not None:
        if not isinstance(extra, Mapping):
            problems.append(f"{where}: additionalProperties must be a schema, not {extra!r}")
        elif props:
            problems.append(f"{where}: additionalProperties and properties are mutually exclusive")
        else:
            problems += structural_problems(extra, f"{path}.*")
    if (props or extra is not None) and typ != "object":
        problems.append(f"{where}: has properties but type {typ!r}")
    for name in schema.get("required", []):
        if name not in props:
            problems.append(f"{where}: required field {name!r} is not a property")
    for name, sub in props.items():
        problems += structural_problems(sub, f"{path}.{name}" if path else name)
    if typ == "array":
        items = schema.get("items")
        if not isinstance(items, Mapping):
            problems.append(f"{where}: an array needs items (one schema)")
        else:
            problems += structural_problems(items, f"{path}[]")
            problems += _list_type_problems(schema, items, where)
    for i, rule in enumerate(schema.get("x-kubernetes-validations", [])):
        if not isinstance(rule, Mapping) or not rule.get("rule") or not rule.get("message"):
            problems.append(f"{where}: x-kubernetes-validations[{i}] needs a rule and a message")
    return problems


def _list_type_problems(schema: Mapping[str, Any], items: Mapping[str, Any], where: str) -> list[str]:
    list_type = schema.get("x-kubernetes-list-type")
    keys = schema.get("x-kubernetes-list-map-keys", [])
    if list_type is None:
        return [f"{where}: x-kubernetes-list-map-keys needs x-kubernetes-list-type: map"] if keys else []
    if list_type not in ("atomic", "set", "map"):
        return [f"{where}: x-kubernetes-list-type {list_type!r} is not atomic, set or map"]
    if list_type != "map":
        return []
    if items.get("type") != "object" or not keys:
        return [f"{where}: a list of type map needs object items and x-kubernetes-list-map-keys"]
    props, needed = items.get("properties", {}), set(items.get("required", []))
    return [
        f"{where}: list-map key {key!r} must be a required scalar property of the items"
        for key in keys
        if key not in needed or props.get(key, {}).get("type") not in ("string", "integer", "boolean")
    ]

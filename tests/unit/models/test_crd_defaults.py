"""Defaults in the CRDs: every default of the models is in the schema, valid there, and changes nothing.

The API server applies a schema's ``default`` when it reads an object (create, update, and every read
from etcd), so ``kubectl get -o yaml`` and ``kubectl explain`` show the value the models would use anyway.
That is only harmless if the defaulted object means exactly what the object without the fields meant:
the same model after parsing, the same spec hash (``engine.plan.spec_hash``: replay and the operator
compare it), the same answer from the API server's checks and from ``agentflow validate``.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, WithJsonSchema
from pydantic_core import to_jsonable_python

from agentflow.engine.plan import spec_hash
from agentflow.models import Workflow, crd
from agentflow.models.manifests import parse_resource
from agentflow.validation.documents import validate_body

from .test_crds import PRESERVE, VALID, api_server_errors, cel_errors, schema_of, to_jsonschema, walk

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "examples" / "manifests").glob("*.yaml"))

# Defaults the CRD cannot carry: the field's node keeps unknown fields (free-form JSON, extra="allow"), where
# the API server neither prunes nor checks a default. All are empty free-form maps; the models still apply them.
NOT_IN_CRD = {"Workflow:spec.inputs", "Workflow:spec.steps[].inputs", "Workflow:spec.stateMachine.states[].step.inputs",
              "Workflow:spec.behaviorTree.step.inputs",
              "WorkflowTemplate:spec.inputs", "WorkflowTemplate:spec.steps[].inputs",
              "WorkflowTemplate:spec.stateMachine.states[].step.inputs",
              "WorkflowTemplate:spec.behaviorTree.step.inputs",
              "Workflow:spec.fallbackMachines.*.states[].step.inputs",
              "WorkflowTemplate:spec.fallbackMachines.*.states[].step.inputs",
              "WorkflowSchedule:spec.inputs",
              *(f"ClusterWorkflowTemplate:spec.{p}" for p in (
                  "inputs", "steps[].inputs", "stateMachine.states[].step.inputs", "behaviorTree.step.inputs",
                  "fallbackMachines.*.states[].step.inputs")),
              "PromptVersion:spec.evaluations.cases[].inputs", "ToolPolicy:spec.tools[].builtin.config"}


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server's structural defaulting does to ``value`` (in place): a missing property with a
    ``default`` gets a copy of it, then every present property, item and map value is defaulted in turn."""
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                apply_defaults(extra, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)
    return value


def _wire(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    plain = to_jsonable_python(value)

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if x is not None}
        return [strip(x) for x in v] if isinstance(v, list) else v

    return strip(plain)


def _nested(annotation: Any, suffix: str = "") -> Iterator[tuple[type[BaseModel], str]]:
    """The models inside a field's type, with the path suffix that reaches them ([] items, .* map values)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, suffix
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _nested(arg, suffix)
    elif origin is list and args:
        yield from _nested(args[0], suffix + "[]")
    elif origin is dict and len(args) == 2:
        yield from _nested(args[1], suffix + ".*")
    elif origin is typing.Annotated:
        yield from _nested(args[0], suffix)


def model_defaults(model: type[BaseModel], path: str) -> Iterator[tuple[str, Any]]:
    """(CRD field path, wire value) of every field with a non-None default, at any depth."""
    for name, field in model.model_fields.items():
        here = f"{path}.{field.alias or name}"
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            if default is not None:
                yield here, _wire(default)
        if any(isinstance(m, WithJsonSchema) for m in field.metadata):
            continue  # a schema given by hand (a behavior tree's subtrees: kept as they are, no defaults)
        for sub, suffix in _nested(field.annotation):
            yield from model_defaults(sub, here + suffix)


def nodes_along(schema: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """The schema nodes from the root to ``path`` (dotted; ``[]`` for items, ``*`` for map values)."""
    nodes = [schema]
    for part in path.split("."):
        name, items = part.removesuffix("[]"), part.count("[]")
        node = nodes[-1]
        node = node["additionalProperties"] if name == "*" else node["properties"][name]
        nodes.append(node)
        for _ in range(items):
            nodes.append(nodes[-1]["items"])
    return nodes


SPEC_DEFAULTS = [
    (kind.kind, path, value)
    for kind in crd.KINDS
    for spec_model, _ in _nested(kind.model.model_fields["spec"].annotation)
    for path, value in model_defaults(spec_model, "spec")
]


def test_the_models_have_the_defaults_this_file_is_about() -> None:
    paths = {f"{kind}:{path}" for kind, path, _ in SPEC_DEFAULTS}
    # Scalars, default_factory values and nested models, at the top, in list items and deeper.
    assert {"Workflow:spec.podCleanup", "Workflow:spec.steps[].runOn", "Workflow:spec.retry",
            "Workflow:spec.steps[].retry.backoff.factor", "Agent:spec.pii", "Agent:spec.pii.entities",
            "Budget:spec.alertThresholds", "ToolPolicy:spec.tools[].wasm.fuel"} <= paths
    assert len(SPEC_DEFAULTS) >= 60


@pytest.mark.parametrize(("kind", "path", "value"), SPEC_DEFAULTS, ids=[f"{k}:{p}" for k, p, _ in SPEC_DEFAULTS])
def test_every_model_default_is_in_the_crd(kind: str, path: str, value: Any) -> None:
    nodes = nodes_along(schema_of(kind), path)
    if any(n.get(PRESERVE) for n in nodes):
        assert f"{kind}:{path}" in NOT_IN_CRD, f"{path} is under a node that keeps unknown fields"
        assert "default" not in nodes[-1]
        return
    assert "default" in nodes[-1], f"{kind} {path}: the model defaults to {value!r}, the CRD has no default"
    assert nodes[-1]["default"] == value


def test_no_default_where_the_api_server_would_refuse_or_ignore_it() -> None:
    count = 0
    for kind in crd.KINDS:
        schema = schema_of(kind.kind)
        for name in ("status", "metadata", "apiVersion", "kind"):
            if name in schema["properties"]:
                assert not [p for p, n in walk(schema["properties"][name]) if "default" in n], name
        for path, node in walk(schema):
            if PRESERVE in node:
                assert not [p for p, n in walk(node) if "default" in n], f"{kind.kind} {path}: default below {PRESERVE}"
            if "default" in node:
                count += 1
                assert node["default"] is not None, path
    assert count == len(SPEC_DEFAULTS) - len(NOT_IN_CRD)


def test_defaults_validate_against_their_own_schema() -> None:
    """The API server refuses a CRD whose default fails its schema (type, enum, bounds, CEL rules)."""
    for kind in crd.KINDS:
        for path, node in walk(schema_of(kind.kind)):
            if "default" not in node:
                continue
            errors = [e.message for e in jsonschema.Draft4Validator(to_jsonschema(node)).iter_errors(node["default"])]
            errors += cel_errors(node, node["default"], None, path)
            assert not errors, f"{kind.kind} {path}: default {node['default']!r}: {errors}"


def _bodies() -> list[tuple[str, dict[str, Any]]]:
    out = [(f"test_crds:{name}", copy.deepcopy(body)) for name, body in VALID.items()]
    for path in EXAMPLES:
        out += [(f"{path.name}:{d['kind']}/{d['metadata']['name']}", d) for d in yaml.safe_load_all(path.read_text())
                if d and d.get("apiVersion", "").startswith("agentflow.dev/")]
    return out


BODIES = _bodies()


@pytest.mark.parametrize(("name", "body"), BODIES, ids=[n for n, _ in BODIES])
def test_a_defaulted_object_means_what_the_bare_one_meant(name: str, body: dict[str, Any]) -> None:
    defaulted = apply_defaults(schema_of(body["kind"]), copy.deepcopy(body))
    assert api_server_errors(defaulted) == api_server_errors(body) == []
    bare, full = parse_resource(body), parse_resource(defaulted)
    assert full.spec.dump() == bare.spec.dump()
    if isinstance(bare, Workflow):
        assert isinstance(full, Workflow) and spec_hash(full.spec) == spec_hash(bare.spec)
    assert [str(p) for p in validate_body(defaulted)] == [str(p) for p in validate_body(body)]


def test_the_defaulted_cases_do_change() -> None:
    unchanged = [n for n, b in BODIES if apply_defaults(schema_of(b["kind"]), copy.deepcopy(b)) == b]
    # PromptVersions that already set every defaulted field; everything else gains fields.
    assert all(":PromptVersion/" in n or n == "test_crds:prompt" for n in unchanged), unchanged
    assert len(unchanged) < len(BODIES) // 3


def test_a_workflow_spec_dump_already_holds_the_defaults() -> None:
    """spec_hash hashes spec.dump(): the defaults are in it whether or not the API server wrote them."""
    bare = next(b for n, b in BODIES if n == "quickstart.yaml:Workflow/quickstart")
    dumped = parse_resource(bare).spec.dump()
    assert "podCleanup" not in bare["spec"] and dumped["podCleanup"] == "onSuccess"
    assert "retry" not in bare["spec"] and dumped["retry"]["backoff"]["factor"] == 2.0

"""The CRDs in crds/: generated from the models, structural, and as strict as the models.

Example resources are checked against each CRD's openAPIV3Schema the way the API
server would: the schema translated to JSON Schema (draft 4, the OpenAPI v3.0
dialect) for jsonschema, the x-kubernetes-validations CEL rules evaluated with
cel-python, and list-type map keys checked for duplicates.
"""

from __future__ import annotations

import copy
import functools
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from agentflow.commands import crds
from agentflow.models import GROUP, VERSION, BudgetSpec, MemorySpec, StepSpec, ToolSpec, crd
from agentflow.models.base import JSONValue, Model
from agentflow.models.manifests import ManifestError, parse_resource

REPO = Path(__file__).resolve().parents[3]
CRDS = {kind.kind: crd.build_crd(kind) for kind in crd.KINDS}
PRESERVE = "x-kubernetes-preserve-unknown-fields"

# Short names taken by core Kubernetes and by Argo (Workflows, Events, CD, Rollouts).
CORE_SHORT_NAMES = {
    "cj", "cm", "cs", "csr", "crd", "crds", "ds", "deploy", "ep", "eps", "ev", "hpa", "ing",
    "ingclass", "limits", "netpol", "no", "ns", "pc", "pdb", "po", "psp", "pv", "pvc", "quota",
    "rc", "rs", "sa", "sc", "sts", "svc", "vac",
}
ARGO_SHORT_NAMES = {
    "wf", "cwf", "cronwf", "wftmpl", "cwftmpl", "clusterwftmpl", "wfeb", "wfts", "wftaskset",
    "wfat", "eb", "es", "sn", "app", "apps", "appproj", "appprojs", "appset", "appsets",
    "ro", "at", "cat", "ar", "exp",
}


def schema_of(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its field path."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")


def at(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = schema
    for part in dotted.split("."):
        node = node["properties"][part[:-2]]["items"] if part.endswith("[]") else node["properties"][part]
    return node


# --- the API server's checks, emulated --------------------------------------------------------


def to_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = to_jsonschema(value)
        elif not key.startswith("x-kubernetes-") and key != "nullable":
            out[key] = value
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if "properties" in node and not node.get(PRESERVE):
        out["additionalProperties"] = False  # strict field validation: unknown fields are errors
    return out


_CEL = celpy.Environment()


@functools.cache
def cel_program(rule: str) -> celpy.Runner:
    return _CEL.program(_CEL.compile(rule))


def cel_errors(schema: dict[str, Any], value: Any, old: Any, path: str) -> list[str]:
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if transition:
            activation["oldSelf"] = celpy.json_to_cel(old)
        try:
            ok = bool(cel_program(rule["rule"]).evaluate(activation))
        except celpy.CELEvalError as exc:
            ok, rule = False, {**rule, "message": f"{rule['message']} (evaluation error: {exc})"}
        if not ok:
            errors.append(f"{path or '<root>'}: {rule['message']}")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                old_sub = old.get(name) if isinstance(old, dict) else None
                errors += cel_errors(sub, value[name], old_sub, f"{path}.{name}" if path else name)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, sub_value in value.items():
                errors += cel_errors(extra, sub_value, None, f"{path}.{name}")
    if isinstance(value, list) and "items" in schema:
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = set()
        for i, item in enumerate(value):
            key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else ()
            if keys and key in seen:
                errors.append(f"{path}[{i}]: duplicate entry for key {key}")
            seen.add(key)
            errors += cel_errors(schema["items"], item, None, f"{path}[{i}]")
    return errors


def api_server_errors(body: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    schema = schema_of(body["kind"])
    validator = jsonschema.Draft4Validator(to_jsonschema(schema))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
    return errors + cel_errors(schema, body, old, "")


def model_errors(body: dict[str, Any]) -> list[str]:
    try:
        parse_resource(body)
    except ManifestError as exc:
        return [str(p) for p in exc.problems]
    return []


# --- examples ---------------------------------------------------------------------------------


def manifest(kind: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    meta = {"name": "x"}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": meta, "spec": spec, **extra}


DAG = manifest(
    "Workflow",
    {
        "inputs": {"ticket": "my card was charged twice", "nested": {"any": [1, "shape", None]}},
        "steps": [
            {
                "name": "classify",
                "kind": "llm",
                "agentRef": {"name": "triage"},
                "promptRef": {"name": "classify-v1"},
                "inputs": {"text": "${{ inputs.ticket }}"},
                "retry": {"limit": 2, "backoff": {"initialSeconds": 0.5}},
                "modelParams": {"temperature": 0},
            },
            {"name": "search", "kind": "tool", "tool": "kb-search", "dependsOn": ["classify"]},
            {
                "name": "review",
                "kind": "approval",
                "dependsOn": ["search"],
                "when": "steps.classify.output.confidence < 0.7",
                "approval": {"message": "refund?", "timeoutSeconds": 3600},
            },
            {"name": "notify", "kind": "tool", "tool": "echo", "runOn": "always", "forEach": "[1, 2]"},
        ],
        "parallelism": 4,
        "budgetRef": {"name": "team"},
    },
    status={
        "phase": "Running",
        "progress": "1/4",
        "costUsd": 0.0042,
        "nodes": {"classify": {"phase": "Succeeded", "attempts": 1}},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Running"}],
        "outputs": {"anything": ["goes"]},
        "someFutureField": {"kept": True},
    },
)
FSM = manifest(
    "Workflow",
    {
        "stateMachine": {
            "initial": "score",
            "states": [
                {
                    "name": "score",
                    "step": {"name": "score", "kind": "tool", "tool": "scorer"},
                    "transitions": [{"target": "block", "when": "output.score > 0.9"}, {"target": "allow"}],
                },
                {"name": "block", "final": "Failed"},
                {"name": "allow", "final": "Succeeded"},
            ],
        }
    },
)
AGENT = manifest(
    "Agent",
    {
        "role": "support triage",
        "model": {"name": "openai/gpt-4o-mini", "fallbacks": ["ollama/llama3"], "maxTokens": 512},
        "tools": ["kb-search"],
        "memory": {"longTerm": {"searchK": 3}, "episodic": True},
        "dataResidency": {"allowedRegions": ["eu"]},
    },
)
PROMPT = manifest(
    "PromptVersion",
    {
        "prompt": "classify",
        "version": "1",
        "messages": [{"role": "system", "content": "Classify ${{ inputs.text }}"}],
        "outputSchema": {"type": "object", "properties": {"label": {"type": "string"}}},
        "evaluations": {"agentRef": {"name": "triage"}, "minPassRate": 0.5, "cases": [
            {"name": "refund", "inputs": {"text": "hi"}, "assertions": [
                {"cel": "output.label != ''"}, {"regex": "^[a-z]+$", "path": "output.label"},
                {"range": {"min": 0, "max": 1}, "path": "size(output.label)"}, {"equals": "x", "path": "output.label"},
                {"judge": {"rubric": "a label", "minScore": 0.6}}]}],
            "judge": {"agentRef": {"name": "judge"}}},
        "canary": {"baseline": {"name": "classify-v0"}, "weight": 10},
    },
)
BUDGET = manifest("Budget", {"limits": {"usd": 25}, "period": "daily", "alertThresholds": [0.5, 1]})
TOOLS = manifest(
    "ToolPolicy",
    {
        "agentSelector": {"matchLabels": {"team": "support"}},
        "tools": [
            {"name": "kb-search", "builtin": {"name": "text-search", "config": {"documents": ["a", "b"]}}},
            {"name": "refund", "http": {"url": "https://pay.example/refund"}, "rateLimit": {"perMinute": 5}},
            {"name": "scorer", "container": {"image": "scorer:1", "command": ["score"]}},
        ],
    },
)
VALID = {"dag": DAG, "fsm": FSM, "agent": AGENT, "prompt": PROMPT, "budget": BUDGET, "tools": TOOLS}


def changed(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of body with the value at a dotted path (list indexes as numbers) replaced or deleted."""
    out = copy.deepcopy(body)
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = out
    for part in parts[:-1]:
        node = node[part]
    if value is DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return out


DELETE = object()

INVALID = {
    "both steps and stateMachine": (changed(DAG, "spec.stateMachine", FSM["spec"]["stateMachine"]), "one of"),
    "neither steps nor stateMachine": (changed(DAG, "spec.steps", []), "exactly one"),
    "llm step without promptRef": (changed(DAG, "spec.steps.0.promptRef", DELETE), "agentRef and promptRef"),
    "tool step without tool": (changed(DAG, "spec.steps.1.tool", DELETE), "needs tool"),
    "tool step with empty tool": (changed(DAG, "spec.steps.1.tool", ""), "needs tool"),
    "promptRef on a tool step": (changed(DAG, "spec.steps.1.promptRef", {"name": "p"}), "promptRef"),
    "agentRef on an approval step": (changed(DAG, "spec.steps.2.agentRef", {"name": "a"}), "agentRef"),
    "tool on an llm step": (changed(DAG, "spec.steps.0.tool", "echo"), "tool is only allowed"),
    "approval on a tool step": (changed(DAG, "spec.steps.1.approval", {}), "approval is only allowed"),
    "unknown step kind": (changed(DAG, "spec.steps.0.kind", "python"), "kind"),
    "step name not a DNS label": (changed(DAG, "spec.steps.3.name", "Notify_All"), "name"),
    "unknown field": (changed(DAG, "spec.steps.0.agentRefs", {"name": "a"}), "agentRefs"),
    "wrong type": (changed(DAG, "spec.steps.0.retry.limit", "three"), "limit"),
    "retry limit above maximum": (changed(DAG, "spec.steps.0.retry.limit", 101), "limit"),
    "timeout of zero": (changed(DAG, "spec.steps.2.approval.timeoutSeconds", 0), "timeoutSeconds"),
    "parallelism of zero": (changed(DAG, "spec.parallelism", 0), "parallelism"),
    "missing spec": (changed(AGENT, "spec", DELETE), "spec"),
    "bad condition status": (changed(DAG, "status.conditions.0.status", "Maybe"), "status"),
    "final state with transitions": (
        changed(FSM, "spec.stateMachine.states.1.transitions", [{"target": "allow"}]),
        "final state has no transitions",
    ),
    "empty state list": (changed(FSM, "spec.stateMachine.states", []), "states"),
    "agent without model": (changed(AGENT, "spec.model", DELETE), "model"),
    "temperature above 2": (changed(AGENT, "spec.model.temperature", 2.5), "temperature"),
    "no messages": (changed(PROMPT, "spec.messages", []), "messages"),
    "canary weight above 100": (changed(PROMPT, "spec.canary.weight", 101), "weight"),
    "assertion with two checks": (changed(PROMPT, "spec.evaluations.cases.0.assertions.0.contains", "x"),
                                  "exactly one of"),
    "range without bounds": (changed(PROMPT, "spec.evaluations.cases.0.assertions.2.range", {}), "min or max"),
    "budget without limit": (changed(BUDGET, "spec.limits", {}), "limits needs usd or tokens"),
    "threshold of zero": (changed(BUDGET, "spec.alertThresholds", [0]), "alertThresholds"),
    "threshold above one": (changed(BUDGET, "spec.alertThresholds", [0.5, 1.5]), "alertThresholds"),
    "tool with two kinds": (changed(TOOLS, "spec.tools.0.http", {"url": "http://x"}), "exactly one of"),
    "tool with no kind": (changed(TOOLS, "spec.tools.2.container", DELETE), "exactly one of"),
    "unknown builtin": (changed(TOOLS, "spec.tools.0.builtin.name", "shell"), "name"),
}


# --- drift and files --------------------------------------------------------------------------


def test_crds_folder_matches_the_models() -> None:
    problems = crds.drift(REPO / "crds")
    assert not problems, "crds/ has drifted from the models:\n" + "\n".join(problems)


def test_each_file_holds_the_crd_it_is_named_for() -> None:
    for kind in crd.KINDS:
        text = (REPO / "crds" / kind.filename).read_text(encoding="utf-8")
        assert text.startswith("# Generated"), f"{kind.filename} lost its generated-file header"
        assert yaml.safe_load(text) == CRDS[kind.kind]
        assert "&id" not in text and "*id" not in text, "YAML anchors/aliases make the CRD hard to read"
    assert sorted(p.name for p in (REPO / "crds").glob("*.yaml")) == sorted(k.filename for k in crd.KINDS)


def test_rendering_does_not_depend_on_dict_order() -> None:
    def reverse(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reverse(v) for v in value]
        return value

    body = CRDS["Workflow"]
    assert crd.render(reverse(body)) == crd.render(body)
    assert crd.build_crd(crd.KINDS[0]) == body


def test_cli_writes_then_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = {kind.filename: crd.render(CRDS[kind.kind]) for kind in crd.KINDS}
    monkeypatch.setattr(crd, "generate", lambda: generated)  # rendering is tested above; keep this fast
    out = tmp_path / "crds"
    assert crds.main(["--check", "--out", str(out)]) == 1
    assert "is missing" in capsys.readouterr().err
    assert crds.main(["--out", str(out)]) == 0
    assert len(list(out.glob("*.agentflow.dev.yaml"))) == len(crd.KINDS) == 10
    assert crds.main(["--check", "--out", str(out)]) == 0
    assert crds.write(out) == [], "rewriting identical files must change nothing"

    target = out / "workflows.agentflow.dev.yaml"
    target.write_text(target.read_text().replace("Phase", "Stage"), encoding="utf-8")
    (out / "stale.agentflow.dev.yaml").write_text("{}\n", encoding="utf-8")
    assert crds.main(["--check", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "workflows.agentflow.dev.yaml differs from the models" in err and "make crds" in err
    assert "stale.agentflow.dev.yaml belongs to no model" in err


# --- CRD shape --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", crd.KINDS, ids=lambda k: k.kind)
def test_crd_identity_and_versions(kind: crd.Kind) -> None:
    body = CRDS[kind.kind]
    assert body["apiVersion"] == "apiextensions.k8s.io/v1"
    assert body["metadata"]["name"] == f"{kind.plural}.{GROUP}"
    spec = body["spec"]
    cluster_scoped = {"ClusterWorkflowTemplate"}  # read by Workflows of every namespace
    assert spec["group"] == GROUP and spec["scope"] == ("Cluster" if kind.kind in cluster_scoped else "Namespaced")
    assert spec["names"]["kind"] == kind.kind
    assert spec["names"]["singular"] == kind.kind.lower()
    assert spec["names"]["categories"] == ["agentflow"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_short_names_are_unique_and_collide_with_nothing_known() -> None:
    names = [n for kind in crd.KINDS for n in kind.short_names]
    assert len(names) == len(set(names)), "two kinds share a short name"
    for name in names:
        assert re.fullmatch(r"[a-z]+", name), name
        assert name not in CORE_SHORT_NAMES, f"{name} is a core Kubernetes short name"
        assert name not in ARGO_SHORT_NAMES, f"{name} is an Argo short name"
    plurals = {k.plural for k in crd.KINDS} | {k.kind.lower() for k in crd.KINDS}
    assert not plurals & set(names)


def test_printer_columns() -> None:
    def columns(kind: str) -> dict[str, str]:
        cols = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
        return {c["name"]: c["jsonPath"] for c in cols}

    assert columns("Workflow") == {
        "Phase": ".status.phase",
        "Progress": ".status.progress",
        "Cost": ".status.costUsd",
        "Message": ".status.message",
        "Age": ".metadata.creationTimestamp",
    }
    assert {"Spent", "Remaining"} <= columns("Budget").keys()
    prompt = columns("PromptVersion")
    assert (prompt["Prompt"], prompt["Version"]) == (".spec.prompt", ".spec.version")
    for kind in ("Agent", "PromptVersion", "Budget", "ToolPolicy"):
        assert columns(kind)["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
        assert columns(kind)["Age"] == ".metadata.creationTimestamp"


@pytest.mark.parametrize("kind", crd.KINDS, ids=lambda k: k.kind)
def test_printer_columns_point_at_fields_of_the_schema(kind: crd.Kind) -> None:
    schema = schema_of(kind.kind)
    for column in CRDS[kind.kind]["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = re.sub(r"\[\?.*?\]", "[]", column["jsonPath"]).lstrip(".")
        if path.startswith("metadata."):
            continue
        node = at(schema, path)
        assert node["type"] == column["type"] or (column["type"], node["type"]) == ("number", "integer"), path


# --- structural schema ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", crd.KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: crd.Kind) -> None:
    schema = schema_of(kind.kind)
    assert crd.structural_problems(schema) == []
    assert schema["properties"]["metadata"] == {"type": "object"}
    for path, node in walk(schema):
        forbidden = {"$ref", "$defs", "allOf", "anyOf", "oneOf", "not", "const", "title"}
        forbidden &= node.keys()
        assert not forbidden, f"{path}: {forbidden}"
        assert "type" in node or node.get(PRESERVE), f"{path} has no type"
        assert not isinstance(node.get("additionalProperties"), bool), path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{path} is an array without items"
        assert not node.get("nullable"), f"{path}: no field of these models has a meaningful null"


@pytest.mark.parametrize("kind", crd.KINDS, ids=lambda k: k.kind)
def test_every_field_has_a_description(kind: crd.Kind) -> None:
    schema = schema_of(kind.kind)
    assert schema.get("description")
    missing = [path for path, node in walk(schema) if path and not path.startswith("metadata")
               and not path.endswith(("[]", ".*")) and not node.get("description")]
    assert not missing, f"fields without a description (add a docstring to the field): {missing}"


def test_free_form_fields_preserve_unknown_fields() -> None:
    wf = schema_of("Workflow")
    for path in ("spec.inputs", "spec.inputSchema", "spec.steps[].inputs", "status.outputs"):
        node = {k: v for k, v in at(wf, path).items() if k != "description"}
        assert node == {"type": "object", PRESERVE: True}, path
    assert at(wf, "status")[PRESERVE] is True, "status is extra=allow: unknown status fields are kept"
    assert "properties" in at(wf, "status.nodes")["additionalProperties"]
    assert at(schema_of("ToolPolicy"), "spec.tools[].builtin.config")[PRESERVE] is True
    assert PRESERVE not in at(wf, "spec"), "spec is strict: typos are errors"


def test_enums_defaults_and_bounds() -> None:
    wf = schema_of("Workflow")
    assert at(wf, "spec.steps[].kind")["enum"] == ["llm", "tool", "approval", "plan", "workflow"]
    assert at(wf, "status.phase")["enum"][0] == "Pending"
    assert at(wf, "spec.podCleanup")["enum"] == ["onSuccess", "always", "never"]
    assert "Defaults to 2.0." in at(wf, "spec.retry.backoff.factor")["description"]
    assert at(wf, "spec.stateMachine.maxVisits")["description"].endswith("Defaults to 10.")
    assert "Defaults to" not in at(wf, "spec.steps[].runOn")["description"], "it already says (default)"
    timeout = at(wf, "spec.timeoutSeconds")
    assert (timeout["minimum"], timeout["exclusiveMinimum"]) == (0, True)
    assert at(wf, "spec.steps")["x-kubernetes-list-map-keys"] == ["name"]
    assert at(wf, "status.conditions")["x-kubernetes-list-type"] == "map"


def test_cel_rules_compile_and_do_not_iterate() -> None:
    iterating = re.compile(r"\.(all|exists|exists_one|map|filter)\(")
    count = 0
    for kind in crd.KINDS:
        for path, node in walk(schema_of(kind.kind)):
            for rule in node.get("x-kubernetes-validations", []):
                count += 1
                _CEL.compile(rule["rule"])
                # The API server estimates a rule's cost over the largest possible lists; a rule that
                # iterates a list needs maxItems (and maxLength on strings it compares) to fit.
                assert not iterating.search(rule["rule"]), f"{path}: add maxItems before iterating a list"
                # The API server's CEL knows a field only through its schema: has(self.x) of a field with no
                # type (any JSON value) does not compile there ("undefined field").
                for name in re.findall(r"has\(self\.(\w+)\)", rule["rule"]):
                    field = (node.get("properties") or {}).get(name)
                    assert field is not None, f"{path}: {rule['rule']} names {name}, which the schema lacks"
                    assert "type" in field or "x-kubernetes-int-or-string" in field, \
                        f"{path}: {rule['rule']} names {name}, a field of any type the API server cannot check"
    assert count >= 10


# --- the schema accepts and rejects what the models do ----------------------------------------


@pytest.mark.parametrize("name", VALID)
def test_valid_examples_pass_both(name: str) -> None:
    body = VALID[name]
    assert model_errors(body) == []
    assert api_server_errors(body) == []


@pytest.mark.parametrize("name", INVALID)
def test_invalid_examples_fail_both(name: str) -> None:
    body, needle = INVALID[name]
    from_models, from_crd = model_errors(body), api_server_errors(body)
    assert from_models, f"the models accept {name}"
    assert from_crd, f"the CRD accepts {name}"
    assert any(needle in e for e in from_models), from_models
    assert any(needle in e for e in from_crd), from_crd


def step_cases() -> Iterator[dict[str, Any]]:
    """Every combination of kind and the kind-specific fields of a step."""
    optional = {
        "agentRef": {"name": "a"},
        "promptRef": {"name": "p"},
        "tool": ["echo", ""],
        "approval": {"message": "ok?"},
    }
    choices = [[None, *(v if isinstance(v, list) else [v])] for v in optional.values()]
    for kind in ("llm", "tool", "approval"):
        for values in itertools.product(*choices):
            step = {"name": "s", "kind": kind}
            step.update({k: v for k, v in zip(optional, values, strict=True) if v is not None})
            yield step


@pytest.mark.parametrize(
    ("model", "path", "cases"),
    [
        (StepSpec, "spec.steps[]", list(step_cases())),
        (
            ToolSpec,
            "spec.tools[]",
            [
                {"name": "t", **{k: v for k, v in kinds if v is not None}}
                for kinds in itertools.product(
                    [("builtin", None), ("builtin", {"name": "echo"})],
                    [("http", None), ("http", {"url": "http://x"})],
                    [("wasm", None), ("wasm", {"module": "m.wasm"})],
                    [("container", None), ("container", {"image": "i", "command": ["c"]})],
                )
            ],
        ),
        # The rule sits on limits; the model checks it one level up, in BudgetSpec.
        (BudgetSpec, "spec.limits", [{}, {"usd": 1}, {"tokens": 10}, {"usd": 0, "tokens": 0}]),
        (MemorySpec, "spec.memory", [{}, {"kind": "conversation"}, {"kind": "conversation", "maxTokens": 500},
                                     {"maxTokens": 500}, {"kind": "none", "maxTokens": 500}, {"kind": "none"}]),
    ],
    ids=["StepSpec", "ToolSpec", "BudgetLimits", "MemorySpec"],
)
def test_cel_rules_accept_exactly_what_the_model_validators_accept(
    model: type[Model], path: str, cases: list[dict[str, Any]]
) -> None:
    kind = {StepSpec: "Workflow", ToolSpec: "ToolPolicy", BudgetSpec: "Budget", MemorySpec: "Agent"}[model]
    schema = at(schema_of(kind), path)
    assert schema.get("x-kubernetes-validations"), f"{path} has no CEL rules"
    for case in cases:
        try:
            model.model_validate({"limits": case} if model is BudgetSpec else case)
            model_ok = True
        except ValueError:
            model_ok = False
        cel = cel_errors(schema, case, None, path)
        verdict = "accepts" if model_ok else "rejects"
        assert model_ok == (not cel), f"{case}: the model {verdict} it, CEL says {cel}"


def test_an_assertion_with_no_check_is_refused_by_the_models() -> None:
    """equals holds any JSON value, which the API server's CEL cannot name: the CRD counts the other checks (at
    most one), the models (webhook, validate, the reconciler) refuse an assertion with none."""
    body = changed(PROMPT, "spec.evaluations.cases.0.assertions.0.cel", DELETE)
    assert any("exactly one of" in e for e in model_errors(body))
    assert api_server_errors(body) == []


def test_duplicate_names_are_rejected_by_the_api_server() -> None:
    body = changed(DAG, "spec.steps.1.name", "classify")
    assert any("duplicate entry" in e for e in api_server_errors(body))
    tools = changed(TOOLS, "spec.tools.1.name", "kb-search")
    assert any("duplicate entry" in e for e in api_server_errors(tools))


def test_prompt_version_spec_is_immutable() -> None:
    edited = changed(PROMPT, "spec.messages.0.content", "something else")
    assert api_server_errors(edited, old=PROMPT) == [
        "spec: spec is immutable: create a new PromptVersion for a new version"
    ]
    assert api_server_errors(PROMPT, old=PROMPT) == []
    assert api_server_errors(changed(PROMPT, "metadata.labels", {"a": "b"}), old=PROMPT) == []


# --- the converter on its own -----------------------------------------------------------------


RULE = {"rule": "true", "message": "m"}


class Inner(Model):
    """Inner doc."""

    n: int = Field(default=3, gt=0)
    """A bounded number."""


class Sample(Model):
    """Sample doc."""

    required_or_null: str | None
    """Required, and null means something."""
    optional: Inner | None = None
    anything: JSONValue = None
    """Any JSON."""
    mapping: dict[str, JSONValue] = Field(default_factory=dict)
    fixed: str = Field(default="v", json_schema_extra={"x-kubernetes-validations": [RULE]})


def test_converter_translates_pydantic_idioms() -> None:
    schema = crd.openapi_schema(Sample)
    props = schema["properties"]
    assert props["requiredOrNull"] == {
        "type": "string", "nullable": True, "description": "Required, and null means something."
    }
    assert props["optional"]["description"] == "Inner doc." and "nullable" not in props["optional"]
    assert props["optional"]["properties"]["n"] == {
        "type": "integer",
        "minimum": 0,
        "exclusiveMinimum": True,
        "description": "A bounded number. Defaults to 3.",
        "default": 3,
    }
    assert props["anything"] == {PRESERVE: True, "description": "Any JSON."}
    assert props["mapping"] == {"type": "object", PRESERVE: True}
    assert props["fixed"]["x-kubernetes-validations"] == [RULE]
    assert crd.structural_problems(schema) == []


class Node(Model):
    children: list[Node] = Field(default_factory=list)


class Either(Model):
    value: int | str


def test_converter_refuses_what_a_structural_schema_cannot_say() -> None:
    with pytest.raises(crd.CRDError, match=r"children\[\]: Node -> Node is recursive"):
        crd.openapi_schema(Node)
    with pytest.raises(crd.CRDError, match="value: a union of 2 types"):
        crd.openapi_schema(Either)


def test_structural_check_catches_what_the_api_server_rejects() -> None:
    bad = {
        "type": "object",
        "required": ["gone"],
        "properties": {
            "ref": {"$ref": "#/$defs/X"},
            "union": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "closed": {"type": "object", "additionalProperties": False},
            "both": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {}},
            "untyped": {"description": "no type"},
            "list": {"type": "array"},
            "keyed": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
            "rule": {"type": "string", "x-kubernetes-validations": [{"rule": "self != ''"}]},
            "bound": {"type": "number", "exclusiveMinimum": 0},
        },
    }
    text = "\n".join(crd.structural_problems(bad))
    for expected in (
        "<root>: required field 'gone'", "ref: '$ref' is not allowed", "union: 'anyOf' is not allowed",
        "closed: additionalProperties must be a schema", "both: additionalProperties and properties",
        "untyped: has no type", "list: an array needs items", "keyed: list-map key 'name' must be a required",
        "rule: x-kubernetes-validations[0] needs a rule and a message",
        "bound: exclusiveMinimum must be a boolean",
    ):
        assert expected in text


def test_build_refuses_a_model_without_spec() -> None:
    class NoSpec(BaseModel):
        model_config = ConfigDict(extra="forbid")
        apiVersion: str

    with pytest.raises(crd.CRDError, match="needs a spec field"):
        crd.resource_schema(NoSpec)  # type: ignore[arg-type]

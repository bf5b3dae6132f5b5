"""What the workflow designer asks of the server: parse, validate, export, and the CRDs' schemas (pure).

::

    parse(text)             YAML text -> the manifests as JSON objects, or the problems of the text
    findings(text)          every problem `agentflow validate` reports for the text (the same function:
                            agentflow.validation.validate_documents), each mapped to the designer's node
                            (the step or state the field path is under) and the field below it
    export(documents)       the manifests as one multi-document YAML text (import -> export -> import gives
                            the same objects)
    schemas()               {kind: openAPIV3Schema} of the CRDs (agentflow.models.crd), for the forms

The source of the text is ``DESIGNER_SOURCE``, so messages read like `agentflow validate designer.yaml`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from ..models import limits
from ..models.crd import KINDS, build_crd
from ..models.manifests import Document, ManifestError, Problem, parse_yaml
from ..validation import validate_documents

__all__ = ["DESIGNER_SOURCE", "MAX_MANIFEST_BYTES", "export", "findings", "parse", "schemas"]

DESIGNER_SOURCE = "designer.yaml"
MAX_MANIFEST_BYTES = 2 * 1024 * 1024
_STEP = re.compile(r"^spec\.steps\[(\d+)\](?:\.(.*))?$")
_STATE = re.compile(r"^spec\.stateMachine\.states\[(\d+)\](?:\.(.*))?$")
_TREE = re.compile(r"^spec\.behaviorTree((?:\.children\[\d+\]|\.child)*)(?:\.(.*))?$")
_TREE_STEP = re.compile(r"\.children\[(\d+)\]|\.child")


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors or aliases, whatever the objects share."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _check_size(text: str) -> None:
    if len(text.encode("utf-8")) > MAX_MANIFEST_BYTES:
        raise ManifestError([Problem(DESIGNER_SOURCE, "", f"the manifests are larger than {MAX_MANIFEST_BYTES} "
                                                          "bytes; split them into several files")])


def parse(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The manifests of a YAML text as JSON objects, and the problems that kept some from being read.

    Only malformed YAML and documents that are not mappings are problems here; what a manifest means is
    :func:`findings`' business.
    """
    try:
        _check_size(text)
        docs = parse_yaml(text, DESIGNER_SOURCE)
    except ManifestError as exc:
        return [], [_located(p, []) for p in exc.problems]
    bodies, problems = [], []
    for doc in docs:
        if isinstance(doc.body, dict):
            bodies.append(doc.body)
        else:
            problems.append(_located(Problem(DESIGNER_SOURCE, "", "a manifest must be a mapping",
                                             doc.line_of(())), []))
    return bodies, problems


def _doc_of(problem: Problem, docs: Sequence[Document]) -> int | None:
    """Which document a problem's line falls in."""
    if problem.line is None:
        return None
    found = None
    for i, doc in enumerate(docs):
        if doc.lines and min(doc.lines.values()) <= problem.line:
            found = i
    return found


def _located(problem: Problem, docs: Sequence[Document]) -> dict[str, Any]:
    out: dict[str, Any] = {**problem.to_dict(), "text": str(problem), "document": None, "kind": None,
                           "name": None, "node": None, "field": problem.path or None}
    index = _doc_of(problem, docs)
    if index is None:
        return out
    body = docs[index].body
    out["document"] = index
    if isinstance(body, Mapping):
        out["kind"] = body.get("kind")
        metadata = body.get("metadata")
        out["name"] = metadata.get("name") if isinstance(metadata, Mapping) else None
        raw_spec = body.get("spec")
        spec: Mapping[str, Any] = raw_spec if isinstance(raw_spec, Mapping) else {}
        machine = spec.get("stateMachine")
        states = machine.get("states") if isinstance(machine, Mapping) else None
        for pattern, items in ((_STEP, spec.get("steps")), (_STATE, states)):
            m = pattern.match(problem.path)
            if m and isinstance(items, list) and int(m.group(1)) < len(items):
                item = items[int(m.group(1))]
                if isinstance(item, Mapping) and isinstance(item.get("name"), str):
                    out["node"] = item["name"]
                    out["field"] = m.group(2)
        tree = _TREE.match(problem.path)
        if tree and isinstance(spec.get("behaviorTree"), Mapping):
            out["node"], out["field"] = _tree_node(spec["behaviorTree"], tree.group(1), tree.group(2))
    return out


def _tree_node(root: Mapping[str, Any], steps: str, field: str | None) -> tuple[str | None, str | None]:
    """The engine's id of the behavior-tree node a path names (agentflow.engine.tree: a leaf's step name, a
    node's name, else its path id), and the field within it."""
    node: Any = root
    node_id = str(root.get("name") or "bt")
    for m in _TREE_STEP.finditer(steps):
        if m.group(1) is not None:
            children = node.get("children") if isinstance(node, Mapping) else None
            index = int(m.group(1))
            if not isinstance(children, list) or index >= len(children):
                return None, field
            node, default = children[index], f"{node_id}.{index}"
        else:
            node, default = node.get("child") if isinstance(node, Mapping) else None, f"{node_id}.0"
        if not isinstance(node, Mapping):
            return None, field
        node_id = str(node.get("name") or default)
    step = node.get("step") if isinstance(node, Mapping) else None
    if isinstance(step, Mapping) and isinstance(step.get("name"), str):  # a leaf is its step
        if field is not None and (field == "step" or field.startswith("step.")):
            field = field.partition(".")[2] or None
        return step["name"], field
    return node_id, field


def findings(text: str) -> dict[str, Any]:
    """Every problem `agentflow validate` finds in the text, located on the designer's nodes and fields."""
    try:
        _check_size(text)
        docs = parse_yaml(text, DESIGNER_SOURCE)
    except ManifestError as exc:
        return {"ok": False, "resources": [], "problems": [_located(p, []) for p in exc.problems]}
    loaded, problems = validate_documents(docs)
    return {"ok": not problems,
            "resources": [f"{r.resource.kind}/{r.resource.metadata.name}" for r in loaded],
            "problems": [_located(p, docs) for p in problems]}


def export(documents: Sequence[Any]) -> str:
    """One multi-document YAML text of the manifests, keys in the order given (what `kubectl apply` takes);
    ValueError naming the place (``documents[0].spec...``) of a value nested deeper than manifests may be."""
    where = _too_deep(documents)
    if where is not None:
        raise ValueError(f"{where}: nested deeper than {limits.MAX_DEPTH} levels; flatten it")
    return yaml.dump_all(list(documents), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                         default_flow_style=False, width=1000)


def _too_deep(documents: Sequence[Any]) -> str | None:
    """The path of the first value deeper than a manifest may nest (limits.MAX_DEPTH levels), or None."""
    stack: list[tuple[Any, str, int]] = [(doc, f"documents[{i}]", 1) for i, doc in reversed(list(enumerate(documents)))]
    while stack:
        value, path, depth = stack.pop()
        if not isinstance(value, dict | list):
            continue
        if depth > limits.MAX_DEPTH:
            return path
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            stack.append((child, f"{path}.{key}" if isinstance(value, dict) else f"{path}[{key}]", depth + 1))
    return None


def schemas() -> dict[str, Any]:
    """The openAPIV3Schema of each kind, from the CRDs the models generate."""
    return {k.kind: build_crd(k)["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for k in KINDS}

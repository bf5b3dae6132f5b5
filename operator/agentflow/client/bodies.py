"""The Workflow of one run of a template, built and checked (pure): what both clients start.

A run made by the client names the template and gives the inputs, nothing else: the template gives the rest,
wherever it is resolved (the admission webhook, the reconciler, the local runner).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from ..models import API_VERSION, ManifestError, TemplateRef, parse_resource
from .errors import from_findings

__all__ = ["NAME_PREFIX_MAX", "check_body", "run_name", "template_ref", "workflow_body"]

NAME_PREFIX_MAX = 40
"""A generated run name is at most this much of the template's name, a dash and 6 hex digits."""
KINDS = ("WorkflowTemplate", "ClusterWorkflowTemplate")


def template_ref(name: str, kind: str) -> TemplateRef:
    """The reference ``start`` was asked for; ValueError naming the argument."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected WorkflowTemplate or ClusterWorkflowTemplate, got {kind!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"template: a template's name is required, got {name!r}")
    return TemplateRef.model_validate({"name": name, "kind": kind})


def run_name(template: str) -> str:
    """A new run's name: the template's, a dash and 6 random hex digits."""
    return f"{template[:NAME_PREFIX_MAX].rstrip('-.')}-{secrets.token_hex(3)}"


def workflow_body(ref: TemplateRef, inputs: Mapping[str, Any], name: str, namespace: str | None = None,
                  labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Workflow of one run of a template: the reference and the inputs, nothing else."""
    reference: dict[str, Any] = {"name": ref.name}
    if ref.kind != "WorkflowTemplate":  # the default is left out, as a person writes it
        reference["kind"] = ref.kind
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": API_VERSION, "kind": "Workflow", "metadata": metadata,
            "spec": {"workflowTemplateRef": reference, "inputs": dict(inputs)}}


def check_body(body: Mapping[str, Any]) -> None:
    """The Workflow parses: ValueError naming the argument for its name or labels, InputError for its inputs
    (their size, values that are not JSON)."""
    try:
        parse_resource(body)
    except ManifestError as exc:
        for problem in exc.problems:
            if problem.path == "metadata.name":
                raise ValueError(f"name: {body['metadata']['name']!r} is not a Workflow name: "
                                 f"{problem.message}") from None
            if problem.path.startswith("metadata.labels"):
                raise ValueError(f"labels: {problem.path}: {problem.message}") from None
        ref = body["spec"]["workflowTemplateRef"]
        raise from_findings([(p.path.split("."), p.message) for p in exc.problems], template=str(ref["name"]),
                            kind=str(ref.get("kind", "WorkflowTemplate"))) from None

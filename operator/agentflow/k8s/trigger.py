"""WorkflowTriggers: the objects a delivery writes (pure builders; agentflow.triggers.server sends them).

::

    workflow_name(trigger, delivery_id) -> NAME-HASH          the same delivery always gets the same name
    workflow_body(trigger, delivery_id, inputs, ns) -> body    its Workflow: the template, the inputs, owned by the
                                                               trigger, labelled with it, the delivery id annotated
    delivery_status(...) -> status                             the trigger's status after a delivery
    secret_problem(secret, namespace, name) -> str | None      why a Secret may not serve as a trigger's key

A Workflow's name is a hash of the delivery id (SHA-256, 16 hex digits: 64 bits; a collision between two
deliveries of one trigger is told apart by the annotation and refused rather than mistaken for a replay).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from ..models import WorkflowTrigger
from ..models.trigger import DELIVERY_ANNOTATION, TRIGGER_LABEL

__all__ = ["delivery_status", "secret_problem", "trigger_path", "workflow_body", "workflow_name"]


def workflow_name(trigger: str, delivery_id: str) -> str:
    """TRIGGER-HASH: 16 hex digits of the SHA-256 of the delivery id."""
    return f"{trigger}-{hashlib.sha256(delivery_id.encode('utf-8')).hexdigest()[:16]}"


def trigger_path(namespace: str, name: str) -> str:
    """Where deliveries of a trigger are posted."""
    return f"/v1/triggers/{namespace}/{name}"


def workflow_body(trigger: WorkflowTrigger, delivery_id: str, inputs: Mapping[str, Any],
                  namespace: str) -> dict[str, Any]:
    """The Workflow a delivery starts: made from the trigger's template with the mapped inputs."""
    meta = trigger.metadata
    metadata: dict[str, Any] = {
        "name": workflow_name(meta.name, delivery_id),
        "namespace": namespace,
        "labels": {TRIGGER_LABEL: meta.name, "app.kubernetes.io/managed-by": "agentflow"},
        "annotations": {DELIVERY_ANNOTATION: delivery_id},
    }
    if meta.uid:
        metadata["ownerReferences"] = [{"apiVersion": trigger.api_version, "kind": trigger.kind, "name": meta.name,
                                        "uid": meta.uid, "controller": True, "blockOwnerDeletion": True}]
    spec: dict[str, Any] = {"workflowTemplateRef": trigger.spec.workflow_template_ref.model_dump(by_alias=True,
                                                                                              exclude_defaults=True)}
    if inputs:
        spec["inputs"] = dict(inputs)
    return {"apiVersion": trigger.api_version, "kind": "Workflow", "metadata": metadata, "spec": spec}


def delivery_of(body: Mapping[str, Any], trigger: str) -> str | None:
    """The delivery id a Workflow read from the cluster was started for by ``trigger`` (None: not one of its)."""
    metadata = body.get("metadata") or {}
    if (metadata.get("labels") or {}).get(TRIGGER_LABEL) != trigger:
        return None
    value = (metadata.get("annotations") or {}).get(DELIVERY_ANNOTATION)
    return value if isinstance(value, str) else None


def rfc3339(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def delivery_status(namespace: str, trigger: WorkflowTrigger, delivery_id: str, outcome: str, at: float,
                    workflow: str | None = None, message: str = "") -> dict[str, Any]:
    """The trigger's status after an authenticated delivery (any earlier configuration problem cleared)."""
    last: dict[str, Any] = {"id": delivery_id, "time": rfc3339(at), "outcome": outcome, "workflow": workflow,
                            "message": message[:1000]}
    path = trigger_path(namespace, trigger.metadata.name) if trigger.spec.auth is not None else None
    return {"path": path, "lastDelivery": last, "message": None, "observedGeneration": trigger.metadata.generation}


def secret_problem(secret: Mapping[str, Any], namespace: str, name: str, key: str) -> str | None:
    """Why Secret ``namespace/name`` may not serve as a trigger's key (None: it may)."""
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(TRIGGER_LABEL) != "true":
        return (f"Secret {namespace}/{name} is not a trigger key: it lacks the label {TRIGGER_LABEL}: \"true\" "
                "(label it if it holds this trigger's key)")
    data = secret.get("data") or {}
    if not str(data.get(key, "")).strip():
        keys = ", ".join(sorted(data)) or "none"
        return f"Secret {namespace}/{name} has no key {key!r} or it is empty (its keys: {keys})"
    return None

"""Steering a Workflow in the cluster from a terminal: approve or reject a waiting step, cancel a run.

::

    decide(kube, namespace, workflow, node, approved, by, reason)   -> the annotation set on the Workflow
      decision_patch(node, approved, by, reason)                      agentflow.dev/approve|reject   (pure)
    cancel(kube, namespace, workflow)                                 spec.cancel = true
      cancel_patch()                                                                                  (pure)

What ``agentflow approve WORKFLOW STEP --namespace NS`` and ``agentflow cancel
WORKFLOW --namespace NS`` do. The operator does the rest: the reconciler reads
the annotation (``agentflow.k8s.names.parse_decision``), journals who decided
and why (the approval node's output, and an ``Approved``/``Rejected`` Event),
and removes the annotation; ``spec.cancel`` cancels the run.

Errors::

    ApprovalError          the Workflow is missing, finished, or the step does not wait for approval;
                           the message says which steps do wait
      (from KubeError)     the API server refused or could not be reached: the message says why
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..k8s import names
from ..k8s.kube import Kube, KubeError, NotFound

__all__ = ["ApprovalError", "KubeError", "cancel", "cancel_patch", "check_decidable", "decide", "decision_patch"]

PLURAL = "workflows"
FINISHED = ("Succeeded", "Failed", "Cancelled")


class ApprovalError(Exception):
    """The decision cannot be taken: the message says why and what to do instead."""


def decision_patch(node: str, approved: bool, by: str, reason: str) -> dict[str, Any]:
    """The merge patch that sets ``agentflow.dev/approve`` (or ``/reject``) to ``{node, by, reason}``."""
    key = names.APPROVE_ANNOTATION if approved else names.REJECT_ANNOTATION
    value = json.dumps({"node": node, "by": by, "reason": reason}, ensure_ascii=False, separators=(",", ":"))
    names.parse_decision(key, value)  # the form the reconciler reads, by construction
    return {"metadata": {"annotations": {key: value}}}


def cancel_patch() -> dict[str, Any]:
    return {"spec": {"cancel": True}}


def _waiting(status: Mapping[str, Any]) -> list[str]:
    nodes = status.get("nodes") or {}
    return [nid for nid, n in nodes.items() if isinstance(n, Mapping) and n.get("phase") == "Waiting"]


def check_decidable(workflow: Mapping[str, Any], node: str) -> None:
    """ApprovalError unless ``node`` may be decided on this Workflow, judged from its status.

    A node must be Waiting. One missing from the status is refused too, unless the status is a
    sample (``nodeSummary``: a large run lists some nodes only); then the reconciler decides.
    """
    name = workflow.get("metadata", {}).get("name", "?")
    status = workflow.get("status") or {}
    phase = status.get("phase")
    if phase in FINISHED:
        raise ApprovalError(f"workflow {name} has finished ({phase}): nothing to approve")
    waiting = _waiting(status)
    hint = f"waiting: {', '.join(waiting)}" if waiting else "no step waits for approval"
    entry = (status.get("nodes") or {}).get(node)
    if isinstance(entry, Mapping):
        if entry.get("phase") != "Waiting":
            raise ApprovalError(f"step {node} of workflow {name} is {entry.get('phase')}, not Waiting ({hint})")
    elif not status.get("nodeSummary"):
        raise ApprovalError(f"step {node} of workflow {name} does not wait for approval ({hint})")


async def _get(kube: Kube, namespace: str, workflow: str) -> dict[str, Any]:
    try:
        return await kube.get_resource(PLURAL, namespace, workflow)
    except NotFound:
        raise ApprovalError(f"no workflow {workflow} in namespace {namespace}") from None


async def decide(kube: Kube, namespace: str, workflow: str, node: str, *, approved: bool, by: str,
                 reason: str = "") -> dict[str, Any]:
    """Approve (or reject) ``node`` of ``workflow``; the patch sent. Raises ApprovalError or KubeError."""
    check_decidable(await _get(kube, namespace, workflow), node)
    patch = decision_patch(node, approved, by, reason)
    await kube.patch_resource(PLURAL, namespace, workflow, patch)
    return patch


async def cancel(kube: Kube, namespace: str, workflow: str) -> dict[str, Any]:
    """Set ``spec.cancel`` on ``workflow`` (its exit handlers still run); the patch sent."""
    wf = await _get(kube, namespace, workflow)
    phase = (wf.get("status") or {}).get("phase")
    if phase in FINISHED:
        raise ApprovalError(f"workflow {workflow} has finished ({phase}): nothing to cancel")
    patch = cancel_patch()
    await kube.patch_resource(PLURAL, namespace, workflow, patch)
    return patch


"""A workflow step's child Workflow: its body, whose it is, and what its end means for the step. Pure.

One child per attempt, like one pod per attempt: its name is derived from (parent, node, attempt)
(:func:`child_name`), so creating it again after a restart is AlreadyExists, never a second run. It lives in the
parent's namespace (never another: the parent's namespace is the only one it is created in), is owned by the
parent (``ownerReferences``, controller: deleting the parent deletes it) and labelled::

    agentflow.dev/parent          the parent Workflow's name
    agentflow.dev/parent-run      the parent's uid (the operator wakes the parent when a child changes)
    agentflow.dev/step            the parent's step
    agentflow.dev/attempt         the attempt
    agentflow.dev/depth           1 + the parent's depth (a Workflow without the label is at depth 0)
    app.kubernetes.io/managed-by  agentflow

besides the parent's own labels but agentflow.dev/ ones (a Budget's workflowSelector picks the parent's runs
and its children alike; a schedule's or a trigger's label is not copied: the child is not their run), and
annotated with the exact node id (``agentflow.dev/node``) and the attempt's idempotency key. Its spec is the
template reference, the attempt's rendered inputs and the parent's budgetRef and podCleanup: the child's model
calls are charged like any call of that namespace (the gateway picks Budgets by the namespace, the Workflow's
labels, the Agent and the budgetRef: agentflow.cost.scope), the same Budgets as the parent's.

Suspension follows the parent (:func:`suspension_patch`): while the parent is suspended (``spec.suspend``) its
running children are too, so no part of the run starts new steps; resuming the parent resumes the children it
suspended. Cancellation is passed on as ``spec.cancel``.

The end of a child (:func:`child_events`): Succeeded -> StepSucceeded with its status.outputs; Failed ->
StepFailed SubWorkflowFailed (retryable: the step's retry policy makes a new child for the next attempt);
Cancelled -> StepFailed SubWorkflowCancelled (not retried: someone cancelled it). Its status.costUsd and
status.tokens are journaled first as one CostRecorded call of kind ``workflow`` named after the child (the tokens
as a total, ``tokens``: the child's journal has their split by call), so the parent's cost and tokens (and the
step's) include the child's. Metrics count model calls only (the gateway's and kind ``llm``), so nothing is
counted twice there.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any, Final

from ..engine.values import Event, EventType, StepError, StepRequest
from ..models import TemplateRef
from . import names
from .podspec import Owner

PARENT_LABEL: Final = "agentflow.dev/parent"
PARENT_RUN_LABEL: Final = "agentflow.dev/parent-run"
DEPTH_LABEL: Final = "agentflow.dev/depth"
SUSPENDED_BY_PARENT: Final = "agentflow.dev/suspended-by-parent"
"""On a child the operator suspended because its parent was (value: the parent's name): only such a child is
resumed with its parent (one suspended by someone else stays suspended)."""
FINISHED: Final = ("Succeeded", "Failed", "Cancelled")


def child_name(parent: str, node: str, attempt: int) -> str:
    """The one name of an attempt's child Workflow (the attempt's name, as a pod's: a DNS label, hashed)."""
    return names.pod_name(parent, node, attempt)


def depth_of(body: Mapping[str, Any]) -> int:
    """A Workflow's nesting depth from its label (0 without one); ValueError when the label is not a whole number
    from 0."""
    raw = ((body.get("metadata") or {}).get("labels") or {}).get(DEPTH_LABEL)
    if raw is None:
        return 0
    try:
        depth = int(str(raw))
    except ValueError:
        raise ValueError(f"label {DEPTH_LABEL}={raw!r} is not a whole number") from None
    if depth < 0:
        raise ValueError(f"label {DEPTH_LABEL}={raw!r} is negative")
    return depth


def child_body(parent: Mapping[str, Any], request: StepRequest, ref: TemplateRef, depth: int) -> dict[str, Any]:
    """The child Workflow of ``request`` (a workflow step's attempt) of the Workflow ``parent``, at ``depth``."""
    meta = parent["metadata"]
    owner = Owner(str(parent.get("apiVersion", "agentflow.dev/v1alpha1")), "Workflow", meta["name"], meta["uid"])
    spec: dict[str, Any] = {"workflowTemplateRef": ref.dump(), "inputs": copy.deepcopy(dict(request.inputs))}
    parent_spec = parent.get("spec") or {}
    for field in ("budgetRef", "podCleanup"):
        if parent_spec.get(field) is not None:
            spec[field] = copy.deepcopy(parent_spec[field])
    return {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": child_name(meta["name"], request.node, request.attempt),
            "namespace": meta["namespace"],
            "labels": {
                **{k: v for k, v in (meta.get("labels") or {}).items() if not k.startswith("agentflow.dev/")},
                PARENT_LABEL: names.label_value(meta["name"]),
                PARENT_RUN_LABEL: names.label_value(str(meta["uid"])),
                names.STEP_LABEL: names.label_value(request.step),
                names.ATTEMPT_LABEL: str(request.attempt),
                DEPTH_LABEL: str(depth),
                names.MANAGED_BY_LABEL: names.MANAGED_BY,
            },
            "annotations": {names.NODE_ANNOTATION: request.node,
                            names.IDEMPOTENCY_ANNOTATION: request.idempotency_key},
            "ownerReferences": [{"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name,
                                 "uid": owner.uid, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": spec,
    }


def is_child_of(child: Mapping[str, Any], parent_uid: str, node: str, attempt: int) -> bool:
    """Whether ``child`` is the child this attempt made: owned by the parent (uid), for this node and attempt.
    Anything else under its name (a Workflow someone else made) is never taken for it."""
    meta = child.get("metadata") or {}
    owned = any(o.get("uid") == parent_uid and o.get("controller") for o in meta.get("ownerReferences") or [])
    return (owned and (meta.get("annotations") or {}).get(names.NODE_ANNOTATION) == node
            and (meta.get("labels") or {}).get(names.ATTEMPT_LABEL) == str(attempt))


def child_phase(child: Mapping[str, Any]) -> str:
    """The child's phase as its status says (Pending before its first status)."""
    return str((child.get("status") or {}).get("phase") or "Pending")


def child_events(node: str, attempt: int, child: Mapping[str, Any], now: float) -> list[Event]:
    """The journal events of a finished child (its cost, then the attempt's end); none while it runs."""
    status = child.get("status") or {}
    phase = child_phase(child)
    if phase not in FINISHED:
        return []
    name = str((child.get("metadata") or {}).get("name"))
    tokens = status.get("tokens")
    call = {"kind": "workflow", "name": name, "request_hash": hashlib.sha256(name.encode()).hexdigest(),
            "response": {"workflow": name, "phase": phase}, "input_tokens": 0, "output_tokens": 0,
            "tokens": tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else 0,
            "cost_usd": float(status.get("costUsd") or 0.0), "latency_ms": 0.0, "cached": False}
    events = [Event(EventType.cost_recorded, node, {"attempt": attempt, "call": call}, now)]
    if phase == "Succeeded":
        outputs = status.get("outputs")
        events.append(Event(EventType.step_succeeded, node, {
            "attempt": attempt, "output": dict(outputs) if isinstance(outputs, Mapping) else {},
            "costUsd": call["cost_usd"], "tokens": call["tokens"]}, now))
        return events
    why = status.get("message") or "no reason given"
    if phase == "Cancelled":
        error = StepError("SubWorkflowCancelled", f"child Workflow {name} was cancelled: {why}", retryable=False)
    else:
        error = StepError("SubWorkflowFailed", f"child Workflow {name} failed: {why}", retryable=True)
    events.append(Event(EventType.step_failed, node, {"attempt": attempt, "error": error.to_dict()}, now))
    return events


def suspension_patch(child: Mapping[str, Any], parent_suspended: bool) -> dict[str, Any] | None:
    """The patch that makes a running child follow its parent's suspension, None when it needs none: a parent
    suspended suspends its children that are not (marking them :data:`SUSPENDED_BY_PARENT`); a parent resumed
    resumes the children it suspended, and only those. A finished child needs nothing."""
    if child_phase(child) in FINISHED:
        return None
    meta = child.get("metadata") or {}
    marked = SUSPENDED_BY_PARENT in (meta.get("annotations") or {})
    suspended = bool((child.get("spec") or {}).get("suspend"))
    if parent_suspended and not suspended:
        parent = next((o.get("name") for o in meta.get("ownerReferences") or [] if o.get("controller")), "")
        return {"metadata": {"annotations": {SUSPENDED_BY_PARENT: str(parent)}}, "spec": {"suspend": True}}
    if not parent_suspended and marked:
        return {"metadata": {"annotations": {SUSPENDED_BY_PARENT: None}}, "spec": {"suspend": False}}
    return None


def child_statuses(nodes: Mapping[str, tuple[int, str | None, str | None]], parent: str,
                   observed: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``status.nodes[NODE].workflow`` of the workflow steps' nodes: ``nodes`` maps each to (its attempts, its
    phase, its error type); ``observed`` the phase of the children seen this pass. A node that finished shows
    what its child ended in (SubWorkflowCancelled: Cancelled; a node cancelled by the parent: Cancelled); one
    that failed before its child was made shows none."""
    out: dict[str, dict[str, str]] = {}
    for node, (attempt, phase, error) in nodes.items():
        if attempt < 1:
            continue
        seen = observed.get(node)
        if seen is None:
            if phase == "Succeeded":
                seen = "Succeeded"
            elif phase == "Cancelled" or error == "SubWorkflowCancelled":
                seen = "Cancelled"
            elif error == "SubWorkflowFailed":
                seen = "Failed"
            elif phase == "Running":
                seen = "Pending"  # made this pass, not seen yet
            else:
                continue  # failed before a child was made (its depth, its inputs): the message says why
        out[node] = {"name": child_name(parent, node, attempt), "phase": seen}
    return out

"""Steering a Workflow in the cluster: approve or reject a waiting step, cancel a run; and who may.

::

    decide(kube, namespace, workflow, node, approved, reason)   -> the annotation set on the Workflow
      decision_patch(node, approved, reason)                      agentflow.dev/approve|reject   (pure)
    cancel(kube, namespace, workflow)                             spec.cancel = true
      cancel_patch()                                                                              (pure)
    requested(body, old)                                          the decisions a request sets        (pure)
    authorize(kube, namespace, workflow, userinfo)                the admission webhook: may this user approve at all
      access_review(namespace, workflow, userinfo)                  the SubjectAccessReview it asks   (pure)
      refusal(username, namespace, workflow, decision)              the refusal's message             (pure)
    stamp(key, body, old, username, groups)                       the admission webhook: who decided  (pure)
    verified(key, uid, decision)                                  the reconciler: was it stamped      (pure)

What ``agentflow approve WORKFLOW STEP --namespace NS`` and ``agentflow cancel WORKFLOW --namespace NS`` do
(``kubectl annotate`` works the same). Who decided is the authenticated Kubernetes user of the request that
set the annotation, never a name in it: the operator's mutating admission webhook (:func:`stamp`) checks
the user against the step's ``approvers`` (Kubernetes user names or group names; empty: anyone allowed to
patch the Workflow), refuses the request otherwise, and writes ``by``, ``groups`` and an HMAC signature
into the annotation; the reconciler journals only decisions whose signature verifies (:func:`verified`),
so a decision set while the webhook was away is refused with an Event instead of trusted.

Errors::

    ApprovalError          the Workflow is missing, finished, or the step does not wait for approval;
                           the message says which steps do wait
      (from KubeError)     the API server refused or could not be reached: the message says why
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..k8s import names
from ..k8s.kube import GROUP, AccessDecision, Kube, KubeError, NotFound
from .errors import ApprovalError

__all__ = ["APPROVAL_SUBRESOURCE", "APPROVE_VERB", "AccessDecision", "ApprovalError", "KubeError", "access_review",
           "approvers_of", "authorize", "cancel", "cancel_patch", "check_decidable", "decide", "decision_patch",
           "may_decide", "refusal", "requested", "signature", "stamp", "verified"]

PLURAL = "workflows"
APPROVE_VERB = "approve"
APPROVAL_SUBRESOURCE = "approval"
"""``approve`` on ``workflows/approval``: what RBAC must grant whoever decides (there is no such endpoint)."""
_STEP_OF = re.compile(r"(\[\d+\]|#\d+)$")
FINISHED = ("Succeeded", "Failed", "Cancelled")


def decision_patch(node: str, approved: bool, reason: str) -> dict[str, Any]:
    """The merge patch that sets ``agentflow.dev/approve`` (or ``/reject``) to ``{node, reason}``; the webhook
    adds who decided."""
    key = names.APPROVE_ANNOTATION if approved else names.REJECT_ANNOTATION
    value = json.dumps({"node": node, "reason": reason}, ensure_ascii=False, separators=(",", ":"))
    names.parse_decision(key, value)  # the form the reconciler reads, by construction
    return {"metadata": {"annotations": {key: value}}}


def _signed_text(uid: str, d: names.ApprovalAnnotation) -> bytes:
    return json.dumps([uid, d.node, d.approved, d.by, sorted(d.groups), d.reason], ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def signature(secret: bytes, uid: str, d: names.ApprovalAnnotation) -> str:
    return hmac.new(secret, _signed_text(uid, d), hashlib.sha256).hexdigest()


def verified(secret: bytes, uid: str, d: names.ApprovalAnnotation) -> bool:
    """Whether ``d`` was stamped by this operator's webhook for the Workflow of ``uid``."""
    return d.sig is not None and d.by is not None and hmac.compare_digest(d.sig, signature(secret, uid, d))


def approvers_of(spec: Mapping[str, Any], node: str) -> list[str]:
    """The ``approvers`` of the approval step (or state) a node id belongs to; [] for anyone."""
    step_name = _STEP_OF.sub("", node)
    candidates = list(spec.get("steps") or [])
    machine = spec.get("stateMachine") or {}
    candidates += [{"name": st.get("name"), **(st.get("step") or {})} for st in machine.get("states") or []
                   if isinstance(st, Mapping)]
    for step in candidates:
        if isinstance(step, Mapping) and step.get("name") == step_name:
            approval = step.get("approval") or {}
            return [str(a) for a in approval.get("approvers") or []]
    return []


def may_decide(approvers: Sequence[str], username: str, groups: Sequence[str]) -> bool:
    """An approver entry matches the user's name or one of the user's groups; no entries: anyone."""
    return not approvers or any(a == username or a in groups for a in approvers)


def requested(body: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[tuple[str, names.ApprovalAnnotation]]:
    """The approve/reject annotations this request sets or changes, parsed; ApprovalError when one is malformed.

    Annotations the request left as they were are not decisions of this request.
    """
    new = (body.get("metadata") or {}).get("annotations") or {}
    before = ((old or {}).get("metadata") or {}).get("annotations") or {}
    out = []
    for annotation in (names.APPROVE_ANNOTATION, names.REJECT_ANNOTATION):
        value = new.get(annotation)
        if not value or value == before.get(annotation):
            continue
        try:
            out.append((annotation, names.parse_decision(annotation, value)))
        except ValueError as exc:
            raise ApprovalError(str(exc)) from None
    return out


def access_review(namespace: str, workflow: str, userinfo: Mapping[str, Any]) -> dict[str, Any]:
    """The SubjectAccessReview asking whether the admission request's user (``userInfo``: username, uid, groups,
    extra) may ``approve`` ``workflows/approval`` of ``workflow`` in ``namespace``."""
    attributes = {"namespace": namespace, "verb": APPROVE_VERB, "group": GROUP, "resource": PLURAL,
                  "subresource": APPROVAL_SUBRESOURCE}
    if workflow:
        attributes["name"] = workflow
    spec: dict[str, Any] = {"user": str(userinfo.get("username") or ""),
                            "groups": [str(g) for g in userinfo.get("groups") or []],
                            "resourceAttributes": attributes}
    if userinfo.get("uid"):
        spec["uid"] = str(userinfo["uid"])
    extra = userinfo.get("extra") or {}
    if extra:
        spec["extra"] = {str(k): [str(v) for v in (vs if isinstance(vs, list) else [vs])] for k, vs in extra.items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def refusal(username: str, namespace: str, workflow: str, decision: AccessDecision) -> str | None:
    """Why ``username`` may not decide steps of ``workflow`` (None: they may), and what grants it."""
    if decision.allowed:
        return None
    said = "; ".join(w for w in (decision.reason, decision.error) if w)
    return (f"{username or 'an anonymous user'} may not approve or reject steps of workflow {namespace}/{workflow}: "
            f"RBAC does not grant the verb {APPROVE_VERB!r} on {PLURAL}/{APPROVAL_SUBRESOURCE} ({GROUP}) in "
            f"namespace {namespace}{f' ({said})' if said else ''}. A cluster admin grants it with "
            f"`kubectl create rolebinding NAME --clusterrole=agentflow-approver --user={username or 'USER'} "
            f"-n {namespace}` (the chart's approver ClusterRole)")


async def authorize(kube: Kube, namespace: str, workflow: str, userinfo: Mapping[str, Any]) -> None:
    """ApprovalError unless RBAC lets the request's user approve steps of ``workflow``; an authorizer that
    cannot answer refuses too (fail closed), saying so."""
    try:
        decision = await kube.review_access(access_review(namespace, workflow, userinfo))
    except KubeError as exc:
        raise ApprovalError(f"cannot check whether {userinfo.get('username')} may approve steps of workflow "
                            f"{namespace}/{workflow}, so the decision is refused: {exc}") from None
    message = refusal(str(userinfo.get("username") or ""), namespace, workflow, decision)
    if message is not None:
        raise ApprovalError(message)


def stamp(secret: bytes, body: Mapping[str, Any], old: Mapping[str, Any] | None, username: str,
          groups: Sequence[str]) -> dict[str, str]:
    """The approve/reject annotations this request sets, rewritten to name ``username`` and signed.

    Raises ApprovalError (the webhook refuses the request with its message) when the user is not among the
    step's approvers or the value is malformed. Annotations the request did not change are left alone.
    Whether RBAC lets the user decide at all is :func:`authorize`'s question, asked before.
    """
    meta = body.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    out: dict[str, str] = {}
    for annotation, decision in requested(body, old):
        # The approvers before this request: a request may not add its own user to them and decide at once.
        approvers = approvers_of((old or body).get("spec") or {}, decision.node)
        if not may_decide(approvers, username, groups):
            raise ApprovalError(f"{username} may not decide step {decision.node} of workflow {meta.get('name')}: "
                                f"its approvers are {', '.join(approvers)} (Kubernetes users or groups)")
        stamped = dataclasses.replace(decision, by=username, groups=tuple(sorted(groups)), sig=None)
        out[annotation] = dataclasses.replace(stamped, sig=signature(secret, uid, stamped)).value()
    return out


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


async def decide(kube: Kube, namespace: str, workflow: str, node: str, *, approved: bool,
                 reason: str = "") -> dict[str, Any]:
    """Approve (or reject) ``node`` of ``workflow`` as the user ``kube`` authenticates as; the patch sent.
    Raises ApprovalError or KubeError (Forbidden: RBAC or the webhook refused it, the message says which)."""
    check_decidable(await _get(kube, namespace, workflow), node)
    patch = decision_patch(node, approved, reason)
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


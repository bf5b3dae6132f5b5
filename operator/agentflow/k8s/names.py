"""Names, labels and annotations of the objects the operator makes. Pure: no I/O.

Step pods carry these labels (all values valid label values, see :func:`label_value`)::

    agentflow.dev/workflow        the Workflow's name
    agentflow.dev/run             the Workflow's uid: one run, even if a Workflow of the same name comes back
    agentflow.dev/step            the step (or state) the node belongs to
    agentflow.dev/node            the node id, sanitized (map[3] -> a valid value); the exact id is an annotation
    agentflow.dev/attempt         the attempt number
    agentflow.dev/pod             the pod's own name, so a NetworkPolicy can select exactly that pod
    agentflow.dev/isolated        "true" on pods whose egress is restricted: the namespace's baseline
                                  NetworkPolicy (``agentflow-step-baseline``) selects them
    app.kubernetes.io/managed-by  agentflow
    app.kubernetes.io/component   step

and these annotations::

    agentflow.dev/node              the exact node id (classify, map[3], score#2)
    agentflow.dev/idempotency-key   RUN_ID/NODE/ATTEMPT, what tools use to act at most once
    agentflow.dev/network-policy    the pod's own NetworkPolicy (named like the pod), when it is granted egress:
                                    deleted with the pod

Approval by annotation, set on the Workflow by a human (or by ``agentflow approve`` against the cluster)::

    kubectl annotate workflow W agentflow.dev/approve=NODE
    kubectl annotate workflow W agentflow.dev/reject='{"node": "NODE", "reason": "too risky"}'

The value is either the node id alone or a JSON object ``{node, reason}``; :func:`parse_decision` reads it.
Who decided is never taken from the value: the operator's mutating admission webhook writes the requesting
user's Kubernetes identity into it (``by``, ``groups``) with a signature (``sig``), after checking the step's
``approvers`` (agentflow.services.approvals.stamp); the reconciler journals only signed decisions and
removes the annotation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Final

WORKFLOW_LABEL: Final = "agentflow.dev/workflow"
RUN_LABEL: Final = "agentflow.dev/run"
STEP_LABEL: Final = "agentflow.dev/step"
NODE_LABEL: Final = "agentflow.dev/node"
ATTEMPT_LABEL: Final = "agentflow.dev/attempt"
POD_LABEL: Final = "agentflow.dev/pod"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "agentflow"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
COMPONENT_STEP: Final = "step"
COMPONENT_STEP_BASELINE: Final = "step-baseline"
ISOLATED_LABEL: Final = "agentflow.dev/isolated"
"""On step pods whose egress is restricted (value ``true``): what the namespace's baseline NetworkPolicy selects."""
BASELINE_POLICY: Final = "agentflow-step-baseline"
"""The name of the per-namespace baseline NetworkPolicy of step pods (agentflow.k8s.netpol.build_baseline_policy)."""

NODE_ANNOTATION: Final = "agentflow.dev/node"
IDEMPOTENCY_ANNOTATION: Final = "agentflow.dev/idempotency-key"
APPROVE_ANNOTATION: Final = "agentflow.dev/approve"
REJECT_ANNOTATION: Final = "agentflow.dev/reject"
EGRESS_HOSTS_ANNOTATION: Final = "agentflow.dev/egress-hosts"
NETWORK_POLICY_ANNOTATION: Final = "agentflow.dev/network-policy"

MAX_NAME: Final = 63
_HASH_LEN: Final = 8
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ITEM = re.compile(r"\[(\d+)\]")
_VISIT = re.compile(r"#(\d+)")
_TAIL = re.compile(r"(\[\d+\]|#\d+)$")
_NOT_DNS = re.compile(r"[^a-z0-9]+")
_NOT_LABEL = re.compile(r"[^-A-Za-z0-9_.]+")


def short_hash(*parts: str, length: int = _HASH_LEN) -> str:
    """A few hex digits of the SHA-256 of the parts (NUL-separated, so ("a", "bc") != ("ab", "c"))."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def is_dns_label(s: str) -> bool:
    """True for a valid DNS-1123 label: what pod and NetworkPolicy names must be."""
    return len(s) <= MAX_NAME and bool(_DNS_LABEL.match(s))


def is_label_value(s: str) -> bool:
    """True for a valid label value: at most 63 of [-A-Za-z0-9_.], alphanumeric at both ends, or empty."""
    return len(s) <= MAX_NAME and bool(_LABEL_VALUE.match(s))


def sanitize_node(node: str) -> str:
    """A readable DNS-label form of a node id: ``map[3]`` -> ``map-3``, ``score#2`` -> ``score-v2``.

    Not injective on its own (a step named ``map-3`` gives the same); callers add a hash.
    """
    s = _VISIT.sub(r"-v\1", _ITEM.sub(r"-\1", node.lower()))
    return _NOT_DNS.sub("-", s).strip("-")


def pod_name(workflow: str, node: str, attempt: int) -> str:
    """The one name of the pod of an attempt: ``WORKFLOW-NODE-aATTEMPT-HASH``, a DNS label of at most 63.

    Deterministic, so creating it again after a restart is AlreadyExists, never a second run. The hash of
    (workflow, node, attempt) keeps names apart that sanitizing or truncating would make equal.
    """
    suffix = f"-a{attempt}-{short_hash(workflow, node, str(attempt))}"
    budget = MAX_NAME - len(suffix)
    wf = _NOT_DNS.sub("-", workflow.lower()).strip("-")
    step = sanitize_node(node)
    if len(wf) + 1 + len(step) > budget:
        # Both stay readable: the node keeps at least half of the room, the workflow what is left.
        room = max(budget - 1 - len(wf), budget // 2)
        tail = _TAIL.search(node)  # keep the item index / visit number readable: ...-12, ...-v2
        end = sanitize_node(tail.group(0)) if tail else ""
        base = sanitize_node(node[: tail.start()]) if tail else step
        step = "-".join(p for p in (base[: room - len(end) - 1].strip("-"), end) if p) if end else step[:room]
        step = step.strip("-")
        wf = wf[: budget - 1 - len(step)].strip("-")
    prefix = "-".join(p for p in (wf, step) if p) or "step"
    return prefix + suffix


def label_value(s: str) -> str:
    """``s`` itself when it is a valid label value; else a readable valid form plus a hash of ``s``.

    Distinct inputs give distinct values (``map[3]`` and ``map-3`` do not collide), so labels can select.
    """
    if is_label_value(s):
        return s
    tag = short_hash(s)
    readable = _NOT_LABEL.sub("-", s).strip("-_.")
    readable = readable[: MAX_NAME - len(tag) - 1].rstrip("-_.")
    return f"{readable}-{tag}" if readable else tag


def node_label(node: str) -> str:
    """The ``agentflow.dev/node`` value: the node id when valid, else its readable form (map-3, score-v2) + hash."""
    if is_label_value(node):
        return node
    tag = short_hash(node)
    readable = sanitize_node(node)[: MAX_NAME - len(tag) - 1].strip("-")
    return f"{readable}-{tag}" if readable else tag


@dataclasses.dataclass(frozen=True, slots=True)
class ApprovalAnnotation:
    """A decision read from an ``agentflow.dev/approve`` or ``agentflow.dev/reject`` annotation."""

    node: str
    approved: bool
    by: str | None = None
    reason: str = ""
    groups: tuple[str, ...] = ()
    sig: str | None = None
    """The operator's signature over (run, node, decision, by, groups, reason): set by its webhook."""

    def value(self) -> str:
        """The annotation value for this decision (JSON)."""
        body: dict[str, object] = {"node": self.node, "reason": self.reason}
        if self.by is not None:
            body["by"] = self.by
        if self.groups:
            body["groups"] = list(self.groups)
        if self.sig is not None:
            body["sig"] = self.sig
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def parse_decision(key: str, value: str) -> ApprovalAnnotation:
    """Read an approve/reject annotation. ValueError (saying the expected form) when it is malformed."""
    if key not in (APPROVE_ANNOTATION, REJECT_ANNOTATION):
        raise ValueError(f"{key} is not {APPROVE_ANNOTATION} or {REJECT_ANNOTATION}")
    approved = key == APPROVE_ANNOTATION
    text = value.strip()
    form = f'expected {key}=NODE or {key}=\'{{"node": "NODE", "reason": "WHY"}}\''
    if not text.startswith("{"):
        if not text:
            raise ValueError(f"{key} is empty; {form}")
        return ApprovalAnnotation(text, approved)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{key} is not valid JSON ({exc.msg}); {form}") from None
    node = body.get("node") if isinstance(body, dict) else None
    if not isinstance(node, str) or not node:
        raise ValueError(f"{key} names no node; {form}")
    by, reason = body.get("by"), body.get("reason", "")
    if (by is not None and not isinstance(by, str)) or not isinstance(reason, str):
        raise ValueError(f"{key}: by and reason must be strings; {form}")
    groups, sig = body.get("groups", []), body.get("sig")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups) or (
            sig is not None and not isinstance(sig, str)):
        raise ValueError(f"{key}: groups must be a list of strings and sig a string; {form}")
    unknown = sorted(set(body) - {"node", "by", "reason", "groups", "sig"})
    if unknown:
        raise ValueError(f"{key}: unknown field {unknown[0]!r}; {form}")
    return ApprovalAnnotation(node, approved, by, reason, tuple(groups), sig)

"""The status of a Workflow, built from the engine's Run. Pure: no I/O, no clock (``now`` is given).

:func:`workflow_status` returns the camelCase dict of :class:`agentflow.models.WorkflowStatus`, ready to
patch onto ``/status``. It stays small whatever the size of the run: at most ``max_nodes`` node entries
within ``max_node_bytes`` (the ones not succeeded first, then the most recent), a ``nodeSummary`` of counts
by phase when entries were left out, output previews of 120 characters with personal-data patterns masked
(agentflow.k8s.previews), and the run's outputs inline only below 16 KiB (else ``outputsRef``). With
``previews=False`` (``agentflow operator --status-previews none``) status holds no run data beyond masked
error messages: no previews, no approval question, no inline outputs. Full outputs live in PostgreSQL,
behind ``outputRef``.

Conditions, one per type, each with ``observedGeneration`` and a ``lastTransitionTime`` that changes only
when its status does::

    phase       Ready            Succeeded      Failed      Reconciling              Stalled          Waiting
    Pending     False Pending    Unknown        False       True  Pending            False            False
    Running     False Running    Unknown        False       True  Running            False            False
    Waiting     False Waiting*   Unknown        False       True  WaitingForApproval False            True Awaiting*
    Suspended   False Suspended  Unknown        False       True  Suspended          False            False
    Succeeded   True  Succeeded  True           False       False Succeeded          False            False
    Failed      False <why>      False <why>    True <why>  False Failed             True  <why>      False
    Cancelled   False Cancelled  False          False       False Cancelled          True  Cancelled  False

(* WaitingForApproval, AwaitingApproval; <why>: StepFailed, TimedOut or Failed.)

A run that can no longer move (every step left waits on something that cannot happen) finishes Failed with
the reason ``Stuck``. Before a run exists, or when the operator cannot get past an error, the driver
(agentflow.services.driver) writes one of the statuses built here instead of :func:`workflow_status`::

    invalid_spec_status          Failed; Ready False, Failed True, Stalled True: InvalidSpec (the run never starts)
    missing_references_status    Pending; Ready False, Reconciling True: MissingReference (until they appear)
    stalled_status               the current status with Stalled True and Reconciling False: <reason> (the
                                 operator keeps retrying; the next status written by a reconcile that gets
                                 through clears it)

``Ready`` means what users wait for: the run finished and succeeded. So ``kubectl wait --for=condition=Ready``
returns when the run succeeded (and keeps waiting on a failed one, like
``--for=jsonpath='{.status.phase}'=Succeeded``); ``kubectl wait --for=condition=Reconciling=False`` returns
when the run finished either way, and ``--for=condition=Waiting`` when it pauses for an approval.

kstatus (Flux health checks, kpt, cli-utils; tests/unit/k8s/test_gitops_health.py runs its own code over these
statuses) reads ``observedGeneration`` (behind ``metadata.generation``: InProgress), then the abnormal-true
``Reconciling`` (InProgress) and ``Stalled`` (Failed), then ``Ready`` (True: Current, else InProgress):

    Pending, Running, Waiting, Suspended   InProgress   the run is not finished
    Succeeded                              Current
    Failed, Cancelled                      Failed       terminal: Stalled with the reason, so a Flux health
                                                        check ends at once instead of at its timeout

A run waiting for an approval stays InProgress on purpose: kstatus has no "suspended", and Current would
tell Flux a run that has not finished is done. Flux users who do not want a Kustomization to wait on a human
leave Workflows out of its health checks (``wait: false``, or ``healthChecks`` naming other objects).

Argo CD has no health check for a CRD it does not know (such a resource gets no health), so it needs
``charts/agentflow/health/workflow.lua`` installed in ``argocd-cm`` as
``resource.customizations.health.agentflow.dev_Workflow`` (the chart's README says how): Succeeded ->
Healthy, Failed/Cancelled -> Degraded, Waiting (for an approval)/Suspended -> Suspended, else (and while the
spec is not yet observed) Progressing. That file is the one copy; the test above runs it in gopher-lua over
the statuses built here.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import orjson

from ..engine.run import FAILED, SUCCEEDED, WAITING, Node, Run
from .previews import STATUS_PREVIEW_CHARS, bounded

__all__ = [
    "MAX_INLINE_OUTPUTS", "PREVIEW_CHARS", "invalid_spec_status", "missing_references_status", "node_status",
    "preview", "rfc3339", "stalled_status", "workflow_phase", "workflow_status",
]

PREVIEW_CHARS: Final = STATUS_PREVIEW_CHARS
MAX_MESSAGE_CHARS: Final = 512
MAX_INLINE_OUTPUTS: Final = 16 * 1024
MAX_NODE_BYTES: Final = 64 * 1024

def rfc3339(ts: float) -> str:
    """Seconds since the epoch as RFC 3339 UTC, to the second (what Kubernetes writes)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_bytes(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)


def _json(value: Any) -> str:
    return _json_bytes(value).decode()


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A preview of ``value``: its compact JSON with personal-data patterns masked, cut to ``limit`` characters
    (agentflow.k8s.previews: status is no place for customer data)."""
    return bounded(value if isinstance(value, str) else _json(value), limit)


def _clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A message for status: scrubbed (an error may quote what a step saw) and cut."""
    return bounded(text, limit)


def workflow_phase(run: Run) -> str:
    """Pending, Running, Waiting (a node waits for approval), Suspended, Succeeded, Failed or Cancelled."""
    return run.shown_phase


def node_status(node: Node, now_iso: Callable[[float], str],
                output_ref: Callable[[str | None], str] | None = None, phase: str | None = None,
                previews: bool = True) -> dict[str, Any]:
    """The NodeStatus dict of one node (fields without a value left out); ``phase`` overrides the node's."""
    out: dict[str, Any] = {"phase": phase or node.phase, "attempts": node.attempt}
    if node.started_at is not None:
        out["startedAt"] = now_iso(node.started_at)
    if node.finished_at is not None:
        out["finishedAt"] = now_iso(node.finished_at)
    if node.phase == WAITING and isinstance(node.inputs, Mapping) and node.inputs.get("message"):
        out["message"] = _clip(f"waits for approval: {node.inputs['message']}", STATUS_PREVIEW_CHARS)
    elif node.message:
        out["message"] = _clip(node.message)
    if node.cost_usd:
        out["costUsd"] = round(node.cost_usd, 6)
    if node.output is not None:
        if previews:
            out["outputPreview"] = preview(node.output)
        if output_ref is not None:
            out["outputRef"] = output_ref(node.id)
    return out


def _recency(node: Node) -> float:
    return max(t for t in (node.finished_at, node.started_at, float("-inf")) if t is not None)


def _phase(run: Run, node: Node) -> str:
    """A fan-out step's own node only carries the failure message; the step holds its phase."""
    step = run.steps.get(node.id)
    return step.phase if step is not None and step.items is not None else node.phase


def _nodes(run: Run, now_iso: Callable[[float], str], output_ref: Callable[[str | None], str] | None,
           max_nodes: int, max_bytes: int, previews: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    nodes = run.nodes
    if len(nodes) <= max_nodes:
        entries = {nid: node_status(n, now_iso, output_ref, _phase(run, n), previews) for nid, n in nodes.items()}
        if len(_json_bytes(entries)) <= max_bytes:
            return entries, None
    # Order: not succeeded first, then the most recent; ties keep the run's order.
    order = {nid: i for i, nid in enumerate(nodes)}
    ranked = heapq.nsmallest(
        max_nodes, nodes.values(), key=lambda n: (_phase(run, n) == SUCCEEDED, -_recency(n), order[n.id]),
    )
    kept: dict[str, dict[str, Any]] = {}
    size = 2
    for node in ranked:
        entry = node_status(node, now_iso, output_ref, _phase(run, node), previews)
        cost = len(_json_bytes({node.id: entry}))
        if size + cost > max_bytes:
            break
        kept[node.id] = entry
        size += cost
    selected = {nid: kept[nid] for nid in sorted(kept, key=order.__getitem__)}
    summary = {
        "total": len(nodes),
        "shown": len(selected),
        "byPhase": dict(sorted(Counter(_phase(run, n) for n in nodes.values()).items())),
    }
    return selected, summary


def _latest(run: Run) -> float | None:
    times = [t for t in (run.started_at, run.finished_at) if t is not None]
    times.extend(t for n in run.nodes.values() for t in (n.started_at, n.finished_at) if t is not None)
    return max(times, default=None)


def _failure_reason(run: Run) -> str:
    if run.stop_reason == "WorkflowTimeout":
        return "TimedOut"
    if run.stuck:
        return "Stuck"
    if any(n.phase == FAILED for n in run.nodes.values()):
        return "StepFailed"
    return "Failed"


def _conditions(run: Run, phase: str, message: str) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of every condition (the table in the module docstring)."""
    waiting = ("Waiting", "False", phase, "")
    if phase == "Failed":
        why = _failure_reason(run)
        return [
            ("Ready", "False", why, message), ("Succeeded", "False", why, message), ("Failed", "True", why, message),
            ("Reconciling", "False", "Failed", ""), ("Stalled", "True", why, message), waiting,
        ]
    if phase == "Cancelled":
        return [
            ("Ready", "False", "Cancelled", message), ("Succeeded", "False", "Cancelled", message),
            ("Failed", "False", "Cancelled", ""), ("Reconciling", "False", "Cancelled", ""),
            ("Stalled", "True", "Cancelled", message), waiting,
        ]
    if phase == "Succeeded":
        return [
            ("Ready", "True", phase, message), ("Succeeded", "True", phase, message), ("Failed", "False", phase, ""),
            ("Reconciling", "False", phase, ""), ("Stalled", "False", phase, ""), waiting,
        ]
    # Not finished: Pending, Running, Waiting (for an approval), Suspended.
    reason = "WaitingForApproval" if phase == "Waiting" else phase
    return [
        ("Ready", "False", reason, message), ("Succeeded", "Unknown", reason, message),
        ("Failed", "False", reason, ""), ("Reconciling", "True", reason, message), ("Stalled", "False", reason, ""),
        ("Waiting", "True", "AwaitingApproval", message) if phase == "Waiting" else waiting,
    ]


def _message(run: Run, phase: str) -> str:
    done, total = run.progress
    if phase in ("Failed", "Cancelled"):
        return _clip(run.reason or phase.lower())
    if phase == "Waiting":
        waiting = [nid for nid, n in run.nodes.items() if n.phase == WAITING and not n.review]
        reviews = [nid for nid, n in run.nodes.items() if n.phase == WAITING and n.review]
        parts = [f"approval of {', '.join(waiting)}"] if waiting else []
        parts += [f"a review of the quarantined {', '.join(reviews)}"] if reviews else []
        return _clip(f"waiting for {' and '.join(parts)}")
    if phase == "Suspended":
        return f"suspended at {done}/{total} steps; set spec.suspend to false to resume"
    if phase == "Succeeded":
        return f"{total} steps finished"
    if phase == "Pending":
        return "not started yet"
    return f"{done}/{total} steps finished"


def trace_url(template: str | None, trace_id: str | None) -> str | None:
    """The link to a run's trace: ``template`` (``--trace-url-template``) with ``{trace_id}`` filled in."""
    if not template or not trace_id:
        return None
    return template.replace("{trace_id}", trace_id)


def workflow_status(
    run: Run,
    *,
    now: float | None = None,
    generation: int | None = None,
    now_iso: Callable[[float], str] = rfc3339,
    max_nodes: int = 200,
    max_node_bytes: int = MAX_NODE_BYTES,
    trace_id: str | None = None,
    trace_url: str | None = None,
    output_ref: Callable[[str | None], str] | None = None,
    previous: Sequence[Mapping[str, Any]] = (),
    previews: bool = True,
) -> dict[str, Any]:
    """The status of the Workflow whose run is ``run``.

    ``now`` is the lastTransitionTime of a condition whose status changed; None takes the time of the run's
    latest recorded change (it started, finished, or a node started or finished), and a run that has none
    yet gets no lastTransitionTime.

    ``output_ref(node)`` says where a node's full output is kept, ``output_ref(None)`` the run's outputs;
    ``previous`` is the current ``status.conditions``, whose lastTransitionTime is kept where the status
    did not change.
    """
    phase = workflow_phase(run)
    message = _message(run, phase)
    done, total = run.progress
    status: dict[str, Any] = {"phase": phase, "progress": f"{done}/{total}"}
    if run.started_at is not None:
        status["startedAt"] = now_iso(run.started_at)
    if run.finished_at is not None:
        status["finishedAt"] = now_iso(run.finished_at)
    nodes, summary = _nodes(run, now_iso, output_ref, max_nodes, max_node_bytes, previews)
    status["nodes"] = nodes
    if summary is not None:
        status["nodeSummary"] = summary
    status["costUsd"] = round(run.cost_usd, 6)
    status["tokens"] = run.tokens
    if run.prompts:  # the version each prompt-family step got (recorded in RunStarted)
        status["prompts"] = {step: {k: choice[k] for k in ("family", "name", "version", "reason") if k in choice}
                             for step, choice in sorted(run.prompts.items())}
    if run.finished and run.outputs is not None:
        if previews and len(_json_bytes(run.outputs)) < MAX_INLINE_OUTPUTS:
            status["outputs"] = run.outputs
        elif output_ref is not None:
            status["outputsRef"] = output_ref(None)
    if trace_id is not None:
        status["traceId"] = trace_id
    if trace_url is not None:
        status["traceUrl"] = trace_url
    status["message"] = message
    if generation is not None:
        status["observedGeneration"] = generation
    changed_at = now if now is not None else _latest(run)
    before = {str(c.get("type")): c for c in previous}
    conditions = []
    for type_, cond_status, reason, cond_message in _conditions(run, phase, message):
        old = before.get(type_)
        since = old.get("lastTransitionTime") if old is not None and old.get("status") == cond_status else None
        condition: dict[str, Any] = {"type": type_, "status": cond_status, "reason": reason, "message": cond_message}
        if since is None and changed_at is not None:
            since = now_iso(changed_at)
        if since is not None:
            condition["lastTransitionTime"] = since
        if generation is not None:
            condition["observedGeneration"] = generation
        conditions.append(condition)
    status["conditions"] = conditions
    return status


def _condition(type_: str, status: str, reason: str, message: str, since: str | None,
               generation: int | None) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message}
    if since is not None:
        condition["lastTransitionTime"] = since
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def _with_conditions(previous: Sequence[Mapping[str, Any]], new: Sequence[tuple[str, str, str, str]], now: str,
                     generation: int | None) -> list[dict[str, Any]]:
    """``previous`` with the conditions of ``new`` (type, status, reason, message) set; a condition keeps its
    lastTransitionTime while its status stays the same; conditions not in ``new`` are kept as they were."""
    before = {str(c.get("type")): c for c in previous}
    out = {t: dict(c) for t, c in before.items()}
    for type_, status, reason, message in new:
        old = before.get(type_)
        kept = old.get("lastTransitionTime") if old is not None and old.get("status") == status else None
        out[type_] = _condition(type_, status, reason, _clip(message), kept or now, generation)
    return list(out.values())


def invalid_spec_status(message: str, *, now: str, generation: int | None,
                        previous: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The status of a Workflow that cannot run as written (every problem in ``message``): Failed for good.

    ``now`` is RFC 3339 (the lastTransitionTime of a condition whose status changes)."""
    message = _clip(message)
    conditions = [("Ready", "False", "InvalidSpec", message), ("Failed", "True", "InvalidSpec", message),
                  ("Stalled", "True", "InvalidSpec", message), ("Reconciling", "False", "InvalidSpec", "")]
    return {"phase": "Failed", "message": message, "observedGeneration": generation,
            "conditions": _with_conditions(previous, conditions, now, generation)}


def missing_references_status(missing: str, *, now: str, generation: int | None,
                              previous: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The status of a Workflow waiting for the Agents, prompts, tools or Budgets it names (``missing``)."""
    message = _clip(f"waiting for what the workflow refers to: {missing}")
    conditions = [("Ready", "False", "MissingReference", message),
                  ("Reconciling", "True", "MissingReference", message)]
    return {"phase": "Pending", "message": message, "observedGeneration": generation,
            "conditions": _with_conditions(previous, conditions, now, generation)}


def stalled_status(current: Mapping[str, Any], reason: str, message: str, *, now: str,
                   generation: int | None) -> dict[str, Any]:
    """``current`` (the Workflow's status, possibly empty) saying the operator cannot get past an error.

    Stalled True and Reconciling False with ``reason`` (one CamelCase word) and ``message`` (what failed and what
    to do), Ready False; the phase stays (Pending when there was none yet); ``message`` becomes the status
    message. kstatus reads it as Failed, ``kubectl get`` shows the message. The patch is the whole of
    ``conditions`` (a merge patch replaces a list), the other fields as they are.
    """
    message = _clip(message)
    conditions = [("Ready", "False", reason, message), ("Reconciling", "False", reason, message),
                  ("Stalled", "True", reason, message)]
    return {"phase": current.get("phase") or "Pending", "message": message, "observedGeneration": generation,
            "conditions": _with_conditions(current.get("conditions") or (), conditions, now, generation)}

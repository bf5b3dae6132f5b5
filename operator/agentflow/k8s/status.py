"""The status of a Workflow, built from the engine's Run. Pure: no I/O, no clock (``now`` is given).

:func:`workflow_status` returns the camelCase dict of :class:`agentflow.models.WorkflowStatus`, ready to
patch onto ``/status``. It stays small whatever the size of the run: at most ``max_nodes`` node entries
within ``max_node_bytes`` (the ones not succeeded first, then the most recent), a ``nodeSummary`` of counts
by phase when entries were left out, output previews of 200 characters, and the run's outputs inline only
below 16 KiB (else ``outputsRef``). Full outputs live in PostgreSQL, behind ``outputRef``.

Conditions, one per type, each with ``observedGeneration`` and a ``lastTransitionTime`` that changes only
when its status does::

    phase       Ready             Succeeded         Failed   Reconciling  Stalled
    Pending     True  Pending     Unknown           False    True         False
    Running     True  Running     Unknown           False    True         False
    Waiting     True  Waiting     Unknown           False    True         False
    Suspended   True  Suspended   Unknown           False    True         False
    Succeeded   True  Succeeded   True              False    False        False
    Failed      False <why>       False <why>       True     False        True <why>
    Cancelled   False Cancelled   False Cancelled   False    False        False

kstatus (``kubectl wait``, Flux, kpt, cli-utils) reads the abnormal-true ``Reconciling`` and ``Stalled``:
InProgress while Reconciling is True, Failed when Stalled is True, Current otherwise; it also compares
``observedGeneration`` with ``metadata.generation``. Argo CD has no health check for a CRD it does not know
(such a resource gets no health), so it needs :data:`ARGOCD_HEALTH_LUA` installed in ``argocd-cm`` as
``resource.customizations.health.agentflow.dev_Workflow``; that script reads ``status.phase`` and
``observedGeneration``.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import orjson

from ..engine.run import FAILED, SUCCEEDED, WAITING, Node, Run

__all__ = [
    "ARGOCD_HEALTH_LUA", "MAX_INLINE_OUTPUTS", "PREVIEW_CHARS", "node_status", "preview", "rfc3339",
    "workflow_phase", "workflow_status",
]

PREVIEW_CHARS: Final = 200
MAX_MESSAGE_CHARS: Final = 512
MAX_INLINE_OUTPUTS: Final = 16 * 1024
MAX_NODE_BYTES: Final = 64 * 1024

ARGOCD_HEALTH_LUA: Final = """\
hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the AgentFlow operator"
  return hs
end
local gen = obj.metadata.generation
local seen = obj.status.observedGeneration
if gen ~= nil and seen ~= nil and seen < gen then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. gen
  return hs
end
local phase = obj.status.phase
local message = obj.status.message or ("Workflow " .. phase .. " (" .. (obj.status.progress or "") .. ")")
hs.message = message
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
elseif phase == "Waiting" or phase == "Suspended" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
return hs
"""
"""Argo CD health check of Workflows: Succeeded -> Healthy, Failed/Cancelled -> Degraded,
Waiting (for an approval)/Suspended -> Suspended, else (and while the spec is not yet observed) Progressing."""


def rfc3339(ts: float) -> str:
    """Seconds since the epoch as RFC 3339 UTC, to the second (what Kubernetes writes)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_bytes(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)


def _json(value: Any) -> str:
    return _json_bytes(value).decode()


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """The first ``limit`` characters of the compact JSON of ``value`` (… marks a cut)."""
    text = _json(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def workflow_phase(run: Run) -> str:
    """Pending, Running, Waiting (a node waits for approval), Suspended, Succeeded, Failed or Cancelled."""
    if run.finished:
        return run.phase
    if run.started_at is None:
        return "Pending"
    if run.suspended:
        return "Suspended"
    if any(n.phase == WAITING for n in run.nodes.values()):
        return "Waiting"
    return "Running"


def node_status(node: Node, now_iso: Callable[[float], str],
                output_ref: Callable[[str | None], str] | None = None, phase: str | None = None) -> dict[str, Any]:
    """The NodeStatus dict of one node (fields without a value left out); ``phase`` overrides the node's."""
    out: dict[str, Any] = {"phase": phase or node.phase, "attempts": node.attempt}
    if node.started_at is not None:
        out["startedAt"] = now_iso(node.started_at)
    if node.finished_at is not None:
        out["finishedAt"] = now_iso(node.finished_at)
    if node.message:
        out["message"] = _clip(node.message)
    if node.cost_usd:
        out["costUsd"] = round(node.cost_usd, 6)
    if node.output is not None:
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
           max_nodes: int, max_bytes: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    nodes = run.nodes
    if len(nodes) <= max_nodes:
        entries = {nid: node_status(n, now_iso, output_ref, _phase(run, n)) for nid, n in nodes.items()}
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
        entry = node_status(node, now_iso, output_ref, _phase(run, node))
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
    if any(n.phase == FAILED for n in run.nodes.values()):
        return "StepFailed"
    return "Failed"


def _conditions(run: Run, phase: str, message: str) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of every condition."""
    finished = phase in ("Succeeded", "Failed", "Cancelled")
    if phase == "Failed":
        why = _failure_reason(run)
        return [
            ("Ready", "False", why, message), ("Succeeded", "False", why, message), ("Failed", "True", why, message),
            ("Reconciling", "False", "Failed", ""), ("Stalled", "True", why, message),
        ]
    if phase == "Cancelled":
        return [
            ("Ready", "False", "Cancelled", message), ("Succeeded", "False", "Cancelled", message),
            ("Failed", "False", "Cancelled", ""), ("Reconciling", "False", "Cancelled", ""),
            ("Stalled", "False", "Cancelled", ""),
        ]
    return [
        ("Ready", "True", phase, message),
        ("Succeeded", "True" if finished else "Unknown", phase, message),
        ("Failed", "False", phase, ""),
        ("Reconciling", "False" if finished else "True", phase, "" if finished else message),
        ("Stalled", "False", phase, ""),
    ]


def _message(run: Run, phase: str) -> str:
    done, total = run.progress
    if phase in ("Failed", "Cancelled"):
        return _clip(run.reason or phase.lower())
    if phase == "Waiting":
        waiting = [nid for nid, n in run.nodes.items() if n.phase == WAITING]
        return _clip(f"waiting for approval of {', '.join(waiting)}")
    if phase == "Suspended":
        return f"suspended at {done}/{total} steps; set spec.suspend to false to resume"
    if phase == "Succeeded":
        return f"{total} steps finished"
    if phase == "Pending":
        return "not started yet"
    return f"{done}/{total} steps finished"


def workflow_status(
    run: Run,
    *,
    now: float | None = None,
    generation: int | None = None,
    now_iso: Callable[[float], str] = rfc3339,
    max_nodes: int = 200,
    max_node_bytes: int = MAX_NODE_BYTES,
    trace_id: str | None = None,
    output_ref: Callable[[str | None], str] | None = None,
    previous: Sequence[Mapping[str, Any]] = (),
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
    nodes, summary = _nodes(run, now_iso, output_ref, max_nodes, max_node_bytes)
    status["nodes"] = nodes
    if summary is not None:
        status["nodeSummary"] = summary
    status["costUsd"] = round(run.cost_usd, 6)
    status["tokens"] = run.tokens
    if run.finished and run.outputs is not None:
        if len(_json_bytes(run.outputs)) < MAX_INLINE_OUTPUTS:
            status["outputs"] = run.outputs
        elif output_ref is not None:
            status["outputsRef"] = output_ref(None)
    if trace_id is not None:
        status["traceId"] = trace_id
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

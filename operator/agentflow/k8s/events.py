"""Kubernetes Events telling a run's story in ``kubectl describe workflow``. Pure: no I/O.

:func:`kubernetes_events` maps journal events to (type, reason, message)::

    RunStarted        Normal   Started             workflow W started
    StepScheduled     Normal   StepStarted         step X attempt N started
    StepSucceeded     Normal   StepSucceeded       step X attempt N succeeded
    StepFailed        Warning  StepFailed          step X attempt N failed: Type: message
    RetryScheduled    Warning  StepRetrying        step X: retry N of L in Ss (after Type: message)
    StepSkipped       Normal   StepSkipped         step X skipped: why
    StepTimedOut      Warning  StepTimedOut        step X attempt N timed out
    StepCancelled     Normal   StepCancelled       step X cancelled: why
    FanOut            Normal   FanOut              step X fans out to N items
    ApprovalRequested Normal   WaitingForApproval  step X waits for approval: ... (how to approve and reject)
                      Warning  QuarantinedForReview  (a quarantined attempt's review) step X waits for a review: ...
    ApprovalDecided   Normal   Approved / Warning Rejected
    CancelRequested   Normal   CancelRequested     cancel requested by who: why
    RunTimedOut       Warning  TimedOut            the workflow ran past its Ns timeout
    Suspended/Resumed Normal   Suspended / Resumed
    RunFinished       Normal   Succeeded / Warning Failed (Stuck: steps left that can never start) / Normal Cancelled

StepStarted (the driver's note that a pod exists), CostRecorded and StateEntered make no Event: the pod's
own events and the status cover them. :func:`event_body` builds the core/v1 Event to create.

Coalescing (issue 17: an Event per journal event was 2-4 API writes per step). :func:`coalesce` holds the Normal
Events that only say the run moves on (:data:`PROGRESS_REASONS`: started, step started or succeeded, fan-out,
agent loop and plan progress) while a step of the run is running, for at most ``window`` seconds, and posts
what it held as **one** Event: its reason the last one's, its message theirs joined by ``; `` in order, its
firstTimestamp the first one's. Anything else flushes what is held first and is posted with it: a Normal
Event that the run waits or ended (WaitingForApproval, Suspended, Succeeded, Cancelled ...) closes the held
batch (one Event, with its reason), a Warning is posted by itself right after it. So ``kubectl describe
workflow`` tells the same story in order, in fewer Events, progress at most ``window`` seconds late (the
status says it at once); a batch never grows past :data:`MAX_MESSAGE` (it is posted before that). What is held
lives in the operator's memory: a restart loses at most ``window`` seconds of progress Events (the journal and
the status keep everything).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from ..engine.plan import Plan
from ..engine.values import Event, EventType
from . import names
from .podspec import Owner
from .previews import EVENT_PREVIEW_CHARS, bounded

__all__ = ["MAX_MESSAGE", "PROGRESS_REASONS", "REPORTING_COMPONENT", "HeldEvents", "KubeEvent", "coalesce",
           "event_body", "event_name", "kubernetes_events"]

MAX_MESSAGE: Final = 1024
REPORTING_COMPONENT: Final = "agentflow-operator"

E = EventType


class KubeEvent(NamedTuple):
    type: str  # Normal | Warning
    reason: str
    message: str


def _step_of(node: str) -> str:
    return node.split("[", 1)[0].split("#", 1)[0]


def _retry_limit(plan: Plan | None, node: str) -> int | None:
    if plan is None:
        return None
    name = _step_of(node)
    step = plan.step_plan(name)
    return step.retry.limit if step is not None else None


def _error(data: Mapping[str, Any]) -> str:
    error = data.get("error") or {}
    if not isinstance(error, Mapping):
        return str(error)
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value >= 10 or value == int(value) else f"{value:.1f}s"


def approval_hint(workflow: str, node: str) -> str:
    """How a human approves or rejects ``node`` of ``workflow`` (kubectl, or the CLI)."""
    w, n = shlex.quote(workflow), shlex.quote(node)
    return (f"Approve with `kubectl annotate workflow {w} {names.APPROVE_ANNOTATION}={n}` or "
            f"`agentflow approve {w} {n}`; reject with `kubectl annotate workflow {w} "
            f"{names.REJECT_ANNOTATION}={n}` or `agentflow approve {w} {n} --reject`")


def _one(ev: Event, workflow: str, plan: Plan | None) -> KubeEvent | None:
    d, node = ev.data, str(ev.node)
    match ev.type:
        case E.run_started:
            return KubeEvent("Normal", "Started", f"workflow {workflow} started")
        case E.step_scheduled:
            return KubeEvent("Normal", "StepStarted", f"step {node} attempt {d.get('attempt')} started")
        case E.step_succeeded:
            return KubeEvent("Normal", "StepSucceeded", f"step {node} attempt {d.get('attempt')} succeeded")
        case E.step_failed:
            attempt = d.get("attempt")
            which = f"step {node}" if not attempt else f"step {node} attempt {attempt}"
            return KubeEvent("Warning", "StepFailed", f"{which} failed: {bounded(_error(d), EVENT_PREVIEW_CHARS)}")
        case E.retry_scheduled:
            retry = int(d.get("attempt", 2)) - 1
            limit = _retry_limit(plan, node)
            of = f" of {limit}" if limit is not None else ""
            delay = max(0.0, float(d.get("notBefore", ev.at)) - ev.at)
            after = f" (after {bounded(_error(d), EVENT_PREVIEW_CHARS)})" if d.get("error") else ""
            return KubeEvent("Warning", "StepRetrying", f"step {node}: retry {retry}{of} in {_seconds(delay)}{after}")
        case E.step_skipped:
            return KubeEvent("Normal", "StepSkipped",
                             f"step {node} skipped: {bounded(str(d.get('reason', '')), EVENT_PREVIEW_CHARS)}")
        case E.step_timed_out:
            tree = plan.tree if plan is not None else None
            if tree is not None and node in tree.nodes:  # a behavior tree's timeout decorator
                return KubeEvent("Warning", "StepTimedOut", f"behavior-tree node {node} ran past its "
                                 f"{tree.nodes[node].timeout:g}s timeout: its steps were cancelled")
            return KubeEvent("Warning", "StepTimedOut", f"step {node} attempt {d.get('attempt')} timed out")
        case E.step_cancelled:
            return KubeEvent("Normal", "StepCancelled", f"step {node} cancelled: {d.get('reason', '')}")
        case E.loop_started:
            depth = int(d.get("depth") or 0)
            via = f" (a delegate, {depth} call(s) down)" if depth else ""
            return KubeEvent("Normal", "AgentLoopStarted",
                             f"step {node} runs the agent loop of Agent {d.get('agent')}{via}")
        case E.loop_finished:
            counts = f"after {d.get('turns', 0)} turn(s) and {d.get('toolCalls', 0)} tool call(s)"
            if d.get("phase") == "Succeeded":
                return KubeEvent("Normal", "AgentLoopFinished", f"step {node}: the agent answered {counts}")
            why = f": {bounded(_error(d), EVENT_PREVIEW_CHARS)}" if d.get("error") else ""
            return KubeEvent("Warning" if d.get("phase") == "Failed" else "Normal", "AgentLoopEnded",
                             f"step {node}: the agent loop ended {str(d.get('phase', '')).lower()} {counts}{why}")
        case E.plan_started:
            return KubeEvent("Normal", "PlanStarted", f"step {node}: Agent {d.get('agent')} plans its steps")
        case E.plan_accepted:
            count = len(d.get("steps") or ())
            return KubeEvent("Normal", "PlanAccepted", f"step {node}: plan revision {d.get('revision')} accepted "
                             f"({count} step(s))")
        case E.plan_refused:
            errors = "; ".join(str(e) for e in d.get("errors") or ())
            then = "the plan goes on unrevised" if d.get("replan") else "the fallback applies"
            return KubeEvent("Warning", "PlanRefused",
                             f"step {node}: plan refused ({then}): {bounded(errors, EVENT_PREVIEW_CHARS)}")
        case E.plan_finished:
            if d.get("phase") == "Succeeded":
                return KubeEvent("Normal", "PlanFinished", f"step {node}: the plan succeeded")
            why = f": {bounded(_error(d), EVENT_PREVIEW_CHARS)}" if d.get("error") else ""
            return KubeEvent("Warning" if d.get("phase") == "Failed" else "Normal", "PlanEnded",
                             f"step {node}: the plan ended {str(d.get('phase', '')).lower()}{why}")
        case E.fan_out:
            return KubeEvent("Normal", "FanOut", f"step {node} fans out to {d.get('count', 0)} items")
        case E.approval_requested if d.get("review") is not None:
            text = str(d.get("message") or "").strip()
            return KubeEvent("Warning", "QuarantinedForReview",
                             f"step {node} waits for a review: {text} {approval_hint(workflow, node)}")
        case E.approval_requested:
            # The question is rendered from the run's inputs: it is in the node's status (scrubbed), never in an
            # Event, which every viewer of the namespace's Events reads.
            approvers = d.get("approvers") or []
            who = f" (approvers: {', '.join(map(str, approvers))})" if approvers else ""
            return KubeEvent("Normal", "WaitingForApproval",
                             f"step {node} waits for approval{who}; the question is in status.nodes. "
                             f"{approval_hint(workflow, node)}")
        case E.approval_decided:
            by = d.get("by") or "unknown"
            why = f": {d['reason']}" if d.get("reason") else ""
            if d.get("approved"):
                return KubeEvent("Normal", "Approved", f"step {node} approved by {by}{why}")
            return KubeEvent("Warning", "Rejected", f"step {node} rejected by {by}{why}")
        case E.cancel_requested:
            why = f": {d['reason']}" if d.get("reason") else ""
            return KubeEvent("Normal", "CancelRequested", f"cancel requested by {d.get('by') or 'unknown'}{why}")
        case E.run_timed_out:
            return KubeEvent("Warning", "TimedOut", f"the workflow ran past its {d.get('timeoutSeconds')}s timeout")
        case E.suspended:
            return KubeEvent("Normal", "Suspended", f"suspended by {d.get('by') or 'unknown'}")
        case E.resumed:
            return KubeEvent("Normal", "Resumed", f"resumed by {d.get('by') or 'unknown'}")
        case E.run_finished:
            phase = str(d.get("phase"))
            reason = f": {bounded(str(d['reason']), EVENT_PREVIEW_CHARS)}" if d.get("reason") else ""
            if phase == "Succeeded":
                return KubeEvent("Normal", "Succeeded", f"workflow {workflow} succeeded")
            if phase == "Cancelled":
                return KubeEvent("Normal", "Cancelled", f"workflow {workflow} cancelled{reason}")
            return KubeEvent("Warning", "Stuck" if d.get("stuck") else "Failed", f"workflow {workflow} failed{reason}")
    return None


def kubernetes_events(events: Sequence[Event], *, workflow: str | None = None,
                      plan: Plan | None = None) -> list[KubeEvent]:
    """The Events of ``events``, in order. ``workflow`` defaults to the plan's name, then to RunStarted's.

    ``plan`` (optional) lets retry messages say the retry limit.
    """
    name = workflow or (plan.name if plan is not None else None)
    if name is None:
        started = next((e for e in events if e.type is E.run_started), None)
        name = str(started.data.get("workflow", "")) if started is not None else ""
    out: list[KubeEvent] = []
    for ev in events:
        mapped = _one(ev, name or "WORKFLOW", plan)
        if mapped is not None:
            message = mapped.message if len(mapped.message) <= MAX_MESSAGE else mapped.message[: MAX_MESSAGE - 1] + "…"
            out.append(mapped._replace(message=message))
    return out


PROGRESS_REASONS: Final = frozenset({
    "Started", "StepStarted", "StepSucceeded", "StepSkipped", "FanOut", "AgentLoopStarted", "AgentLoopFinished",
    "PlanStarted", "PlanAccepted", "PlanFinished",
})
"""Normal Events that only say the run moves on: held and posted together (:func:`coalesce`)."""
_JOIN: Final = "; "


@dataclasses.dataclass(frozen=True)
class HeldEvents:
    """Progress Events not posted yet, and when the first of them happened."""

    events: tuple[KubeEvent, ...] = ()
    since: float | None = None

    def due(self, window: float) -> float | None:
        """When they must be posted at the latest (None: nothing held)."""
        return None if self.since is None else self.since + window


def _merged(events: Sequence[KubeEvent]) -> KubeEvent:
    if len(events) == 1:
        return events[0]
    return KubeEvent("Normal", events[-1].reason, _JOIN.join(e.message for e in events))


def coalesce(held: HeldEvents, new: Sequence[KubeEvent], now: float, *, window: float,
             hold: bool) -> tuple[list[tuple[KubeEvent, float]], HeldEvents]:
    """The Events to post now, each with when its first part happened, and what stays held.

    ``held``: what earlier passes held; ``new``: this pass's Events in order (:func:`kubernetes_events`);
    ``hold``: whether the run moves on by itself (a step is running), so progress may wait; False posts
    everything. ``window``: seconds the first held Event may wait.
    """
    out: list[tuple[KubeEvent, float]] = []
    batch, since = list(held.events), held.since

    def flush(closing: KubeEvent | None = None) -> None:
        nonlocal batch, since
        if closing is not None and closing.type == "Normal":
            batch.append(closing)
            closing = None
        if batch:
            out.append((_merged(batch), since if since is not None else now))
        if closing is not None:
            out.append((closing, now))
        batch, since = [], None

    for event in new:
        if event.type == "Normal" and event.reason in PROGRESS_REASONS:
            if batch and len(_JOIN.join(e.message for e in (*batch, event))) > MAX_MESSAGE:
                flush()
            if not batch:
                since = now
            batch.append(event)
        else:
            if batch and event.type == "Normal" and (
                    len(_JOIN.join(e.message for e in (*batch, event))) > MAX_MESSAGE):
                flush()
            flush(event)
    if batch and (not hold or window <= 0 or (since is not None and now - since >= window)):
        flush()
    return out, HeldEvents(tuple(batch), since if batch else None)


def event_name(involved: Owner, reason: str, message: str, time: str) -> str:
    """``OWNER.HASH``: the same Event posted twice (after a restart) is AlreadyExists, not a duplicate."""
    return f"{involved.name[:200].rstrip('.-')}.{names.short_hash(involved.uid, reason, message, time, length=16)}"


def event_body(involved: Owner, namespace: str, type: str, reason: str, message: str, now_iso: str,
               count: int = 1, *, reporting_instance: str = "", first_iso: str | None = None) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` at ``now_iso`` (an RFC 3339 time); ``first_iso``: when what it says
    began (coalesced Events), else ``now_iso``."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(involved, reason, message, now_iso), "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.api_version,
            "kind": involved.kind,
            "name": involved.name,
            "namespace": namespace,
            "uid": involved.uid,
        },
        "type": type,
        "reason": reason,
        "message": message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…",
        "firstTimestamp": first_iso or now_iso,
        "lastTimestamp": now_iso,
        "count": count,
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
    }
    if reporting_instance:
        body["reportingInstance"] = reporting_instance
    return body

"""What the run page shows for one node, read from the run's journal (pure).

::

    node_detail(plan, run, events, node_id)  -> inputs, output, error, attempts (timing, outcome), the model
                                                and tool calls of each attempt (the agent's calls, drawn as
                                                the node's children), cost, tokens, the node's journal events
                                                (its log); a fan-out step lists its items, a state its visits;
                                                a workflow step its latest attempt's child run (``childRun``,
                                                the run page's id of it: ``child_run(node, attempt)``)
    clip(value)                              -> the value, or a preview when its JSON is too big to send

Large values are clipped (``{"truncated": true, "bytes": N, "preview": "..."}``) so one huge output
cannot stall the page; the full value stays in the journal (``agentflow show RUN --json``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from ..engine.canonical import to_builtin
from ..engine.plan import Plan
from ..engine.run import Run
from ..engine.values import Event, EventType, step_of_node
from ..models.workflow import StepKind, StepSpec

__all__ = ["MAX_VALUE_BYTES", "NodeNotFound", "clip", "node_detail"]

MAX_VALUE_BYTES = 64 * 1024
MAX_EVENTS = 500
E = EventType


class NodeNotFound(KeyError):
    """No graph node or engine node of that id in this run."""


def clip(value: Any, limit: int = MAX_VALUE_BYTES) -> Any:
    """``value`` when its JSON fits in ``limit`` bytes, else a preview saying how big it was."""
    data = orjson.dumps(value, default=to_builtin)
    if len(data) <= limit:
        return value
    return {"truncated": True, "bytes": len(data), "preview": data[: min(limit, 4096)].decode("utf-8", "replace")}


def _event_row(ev: Event) -> dict[str, Any]:
    return {"type": ev.type.value, "node": ev.node, "at": ev.at, "data": clip(dict(ev.data), 4096)}


def _attempts(events: Sequence[Event]) -> list[dict[str, Any]]:
    """One entry per attempt of one engine node, with its model and tool calls."""
    attempts: dict[int, dict[str, Any]] = {}

    def entry(n: int) -> dict[str, Any]:
        return attempts.setdefault(n, {"attempt": n, "scheduledAt": None, "startedAt": None, "finishedAt": None,
                                       "outcome": None, "error": None, "calls": [], "executor": None})

    for ev in events:
        raw = ev.data.get("attempt")
        if ev.type is E.step_scheduled and raw is not None:
            entry(int(raw))["scheduledAt"] = ev.at
        elif ev.type is E.step_started and raw is not None:
            a = entry(int(raw))
            a["startedAt"] = ev.at
            a["executor"] = ev.data.get("executor")
            if ev.data.get("pod"):
                a["pod"] = ev.data.get("pod")
        elif ev.type is E.cost_recorded and raw is not None:
            call = dict(ev.data.get("call") or {})
            call["response"] = clip(call.get("response"), 8192)
            entry(int(raw))["calls"].append(call)
        elif ev.type in (E.step_succeeded, E.step_failed) and raw is not None:
            a = entry(int(raw))
            a["finishedAt"] = ev.at
            a["outcome"] = "Succeeded" if ev.type is E.step_succeeded else "Failed"
            if ev.type is E.step_failed:
                a["error"] = ev.data.get("error")
        elif ev.type is E.step_timed_out and raw is not None:
            a = entry(int(raw))
            a["finishedAt"], a["outcome"] = ev.at, "TimedOut"
    return [attempts[k] for k in sorted(attempts)]


def _engine_node(run: Run, node_id: str, events: Sequence[Event]) -> dict[str, Any]:
    node = run.nodes.get(node_id)
    own = [ev for ev in events if ev.node == node_id]
    approval = next((ev for ev in reversed(own) if ev.type is E.approval_requested), None)
    decision = next((ev for ev in reversed(own) if ev.type is E.approval_decided), None)
    out: dict[str, Any] = {
        "id": node_id,
        "phase": node.phase if node is not None else "Pending",
        "attempts": _attempts(own),
        "inputs": clip(node.inputs) if node is not None else None,
        "output": clip(node.output) if node is not None else None,
        "error": node.error.to_dict() if node is not None and node.error is not None else None,
        "message": node.message if node is not None else None,
        "costUsd": round(node.cost_usd, 6) if node is not None else 0.0,
        "tokens": node.tokens if node is not None else 0,
        "startedAt": node.started_at if node is not None else None,
        "finishedAt": node.finished_at if node is not None else None,
        "approval": None,
        "events": [_event_row(ev) for ev in own[-MAX_EVENTS:]],
        "eventsOmitted": max(0, len(own) - MAX_EVENTS),
    }
    if approval is not None:
        out["approval"] = {"message": approval.data.get("message"), "approvers": approval.data.get("approvers", []),
                           "deadline": approval.data.get("deadline"), "gate": approval.data.get("gate"),
                           "decision": dict(decision.data) if decision is not None else None}
    return out


ChildRun = Callable[[str, int], str]
"""The run id the console shows a workflow step's child under, from (node, attempt)."""


def node_detail(plan: Plan, run: Run, events: Iterable[Event], node_id: str,
                child_run: ChildRun | None = None) -> dict[str, Any]:
    """Everything about one node: a graph node (step, state) or an engine node (``step[i]``, ``state#n``)."""
    events = list(events)
    step = step_of_node(node_id)
    if plan.mode == "dag":
        if step not in plan.steps or (node_id != step and node_id not in run.nodes):
            raise NodeNotFound(node_id)
        spec: StepSpec | None = plan.steps[step].spec
        detail = _engine_node(run, node_id, events)
        state = run.steps[step]
        if node_id == step and state.items is not None:
            detail["items"] = [{"id": n.id, "index": n.index, "phase": n.phase, "attempts": n.attempt,
                                "costUsd": round(n.cost_usd, 6), "tokens": n.tokens, "message": n.message,
                                "startedAt": n.started_at, "finishedAt": n.finished_at} for n in state.items]
            detail["phase"] = state.phase
    elif plan.tree is not None and node_id in plan.tree.nodes and plan.tree.nodes[node_id].step is None:
        tree_node = plan.tree.nodes[node_id]  # a composite or decorator of a behavior tree
        return {"id": node_id, "step": None, "spec": None, "type": tree_node.type.value, "path": tree_node.path,
                "phase": (run.tree.phase_of(node_id) if run.tree is not None else None) or "Pending",
                "entries": run.tree.entries.get(node_id, 0) if run.tree is not None else 0,
                "children": list(tree_node.children), "attempts": [], "inputs": None, "output": None, "error": None,
                "message": None, "costUsd": 0.0, "tokens": 0, "startedAt": None, "finishedAt": None,
                "approval": None, "events": [_event_row(ev) for ev in events if ev.node == node_id][-MAX_EVENTS:],
                "eventsOmitted": 0}
    else:
        units = plan.states if plan.tree is None else plan.leaves
        if step not in units or (node_id != step and node_id not in run.nodes):
            raise NodeNotFound(node_id)
        if plan.tree is None:
            state_plan = plan.states[step]
            spec = state_plan.step.spec if state_plan.step is not None else None
        else:
            spec = plan.leaves[step].spec
        if node_id == step:
            visits = [n for n in run.nodes.values() if n.state == step]
            detail = (_engine_node(run, visits[-1].id, events) if visits else
                      {"id": step, "phase": "Succeeded" if run.visits.get(step) and plan.tree is None else "Pending",
                       "attempts": [],
                       "inputs": None, "output": None, "error": None, "message": None, "costUsd": 0.0,
                       "tokens": 0, "startedAt": None, "finishedAt": None, "approval": None, "events": [],
                       "eventsOmitted": 0})
            detail["id"] = step
            detail["visits"] = [{"id": n.id, "phase": n.phase, "attempts": n.attempt, "message": n.message,
                                 "costUsd": round(n.cost_usd, 6), "startedAt": n.started_at,
                                 "finishedAt": n.finished_at} for n in visits]
        else:
            detail = _engine_node(run, node_id, events)
    detail["step"] = step
    detail["spec"] = spec.dump() if spec is not None else None
    if child_run is not None and spec is not None and spec.kind is StepKind.workflow:
        node = run.nodes.get(str(detail["id"]))
        if node is not None and node.attempt >= 1:
            detail["childRun"] = child_run(node.id, node.attempt)
        for item in detail.get("items") or []:
            if item["attempts"] >= 1:
                item["childRun"] = child_run(item["id"], item["attempts"])
    return detail

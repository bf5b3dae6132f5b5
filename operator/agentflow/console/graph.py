"""The run graph the console draws: the whole compiled plan, laid out, merged with live node states (pure).

::

    layout(plan)               -> Layout: one graph node per DAG step (or state), its rank/row, the edges
    node_views(plan, run)      -> {graph node id: NodeView dict}: phase, attempts, timing, cost, tokens,
                                  fan-out items collapsed into counts, state-machine visits
    run_summary(run, meta)     -> the run's phase, progress, cost, tokens, waiting nodes
    graph(plan, run, meta)     -> everything the run page needs at load: {run, nodes, edges}
    changed(before, after)     -> the node views that differ (what a live update sends)

The graph is drawn from the plan, not from what has happened so far, so pending steps (and steps a
``when`` will skip) are on the page from the first moment (argo-workflows #15351). A fan-out step is one
graph node with the count of its items per phase (its items are listed in the node's detail); a state of
a state machine is one graph node with its visits. Node ids are the engine's: a DAG step is its name, a
fan-out item ``name[i]``, a state visit ``state#n``. A behavior tree is drawn as the tree: every composite,
decorator and leaf is a graph node (ranked by depth, edges from parent to child), a leaf with its runs
``name#n`` like a state's visits, a composite with its phase in the run (agentflow.engine.tree).
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from ..engine.plan import Plan
from ..engine.run import Node, Run

__all__ = ["Layout", "changed", "graph", "layout", "node_views", "run_summary"]

PENDING = "Pending"
# What a collapsed fan-out step shows, most telling first.
_PHASE_ORDER = ("Failed", "Running", "Waiting", "Retrying", "Pending", "Cancelled", "Skipped", "Succeeded")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Graph nodes and edges of a plan, each node with a rank (column) and a row."""

    nodes: tuple[dict[str, Any], ...]
    edges: tuple[dict[str, Any], ...]


def _ranks(names: list[str], parents: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """Longest-path rank of each node of a DAG (Kahn's order; nodes on a cycle, if any, go last)."""
    children: dict[str, list[str]] = {n: [] for n in names}
    indegree = {n: 0 for n in names}
    for n in names:
        for p in parents.get(n, ()):
            if p in children:
                children[p].append(n)
                indegree[n] += 1
    rank = dict.fromkeys(names, 0)
    queue = deque(n for n in names if indegree[n] == 0)
    seen = 0
    while queue:
        n = queue.popleft()
        seen += 1
        for c in children[n]:
            rank[c] = max(rank[c], rank[n] + 1)
            indegree[c] -= 1
            if indegree[c] == 0:
                queue.append(c)
    if seen < len(names):
        top = max(rank.values(), default=0) + 1
        for n in names:
            if indegree[n] > 0:
                rank[n] = top
    return rank


def layout(plan: Plan) -> Layout:
    """Where each step (or state) goes: columns by longest path from the roots, rows in spec order."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    if plan.mode == "dag":
        names = list(plan.steps)
        ranks = _ranks(names, {n: p.deps for n, p in plan.steps.items()})
        last = max((r for n, r in ranks.items() if not plan.steps[n].deferred), default=-1)
        for name, step_plan in plan.steps.items():
            if step_plan.deferred:  # exit handlers wait for every other step: draw them after the rest
                ranks[name] = last + 1
            nodes.append({"id": name, "kind": step_plan.kind.value, "label": name, "rank": ranks[name],
                          "fanOut": step_plan.for_each is not None,
                          "when": step_plan.when.text if step_plan.when else None,
                          "runOn": step_plan.run_on.value, "gate": name in plan.gates})
            edges.extend({"id": f"{dep}->{name}", "source": dep, "target": name, "kind": "dependsOn",
                          "label": None} for dep in step_plan.deps)
    elif plan.tree is not None:
        tree = plan.tree
        depth: dict[str, int] = {}
        for node_id, tree_node in tree.nodes.items():  # parents come before their children
            parent = tree.parents.get(node_id)
            depth[node_id] = depth[parent] + 1 if parent is not None else 0
            step = plan.leaves.get(tree_node.step) if tree_node.step is not None else None
            nodes.append({"id": node_id, "kind": tree_node.type.value, "label": tree_node.label,
                          "rank": depth[node_id], "stepKind": step.kind.value if step is not None else None,
                          "fanOut": False, "gate": node_id in plan.gates, "path": tree_node.path,
                          "when": tree_node.when.text if tree_node.when is not None else None,
                          "limit": tree_node.limit or None, "timeoutSeconds": tree_node.timeout,
                          "successThreshold": tree_node.success_threshold if tree_node.children else None})
            edges.extend({"id": f"{node_id}->{child}", "source": node_id, "target": child, "kind": "child",
                          "label": str(i)} for i, child in enumerate(tree_node.children))
    else:
        names = list(plan.states)
        order: dict[str, int] = {}
        if plan.initial is not None:  # breadth-first from the initial state: the usual reading order
            order[plan.initial] = 0
            queue = deque([plan.initial])
            while queue:
                s = queue.popleft()
                for t in plan.states[s].transitions:
                    if t.target in plan.states and t.target not in order:
                        order[t.target] = order[s] + 1
                        queue.append(t.target)
        unreached = max(order.values(), default=-1) + 1
        for name, state in plan.states.items():
            step = state.step
            nodes.append({"id": name, "kind": "state", "stepKind": step.kind.value if step else None,
                          "label": name, "rank": order.get(name, unreached), "final": state.final,
                          "initial": name == plan.initial, "maxVisits": state.max_visits, "fanOut": False,
                          "gate": name in plan.gates})
            for i, t in enumerate(state.transitions):
                label = t.on if t.when is None else f"{t.on}: {t.when.text}"
                edges.append({"id": f"{name}->{t.target}#{i}", "source": name, "target": t.target,
                              "kind": "transition", "label": label})
    rows: Counter[int] = Counter()
    for n in nodes:
        n["row"] = rows[n["rank"]]
        rows[n["rank"]] += 1
    return Layout(tuple(nodes), tuple(edges))


def _timing(node: Node) -> tuple[float | None, float | None]:
    return node.started_at, node.finished_at


def _single(node: Node) -> dict[str, Any]:
    return {"phase": node.phase, "attempts": node.attempt, "startedAt": node.started_at,
            "finishedAt": node.finished_at, "costUsd": round(node.cost_usd, 6), "tokens": node.tokens,
            "message": node.message}


def _collapse(nodes: list[Node]) -> dict[str, Any]:
    """Many nodes as one: the most telling phase, counts per phase, sums, the first start and last end."""
    counts = Counter(n.phase for n in nodes)
    phase = next((p for p in _PHASE_ORDER if counts.get(p)), PENDING)
    started = [n.started_at for n in nodes if n.started_at is not None]
    finished = [n.finished_at for n in nodes if n.finished_at is not None]
    message = next((n.message for n in nodes if n.phase == "Failed" and n.message), None)
    return {"phase": phase, "attempts": sum(n.attempt for n in nodes),
            "startedAt": min(started) if started else None,
            "finishedAt": max(finished) if finished and len(finished) == len(nodes) else None,
            "costUsd": round(sum(n.cost_usd for n in nodes), 6), "tokens": sum(n.tokens for n in nodes),
            "message": message, "counts": dict(sorted(counts.items())), "items": len(nodes)}


def node_views(plan: Plan, run: Run) -> dict[str, dict[str, Any]]:
    """The live state of every graph node (a DAG step or a state), keyed by its id."""
    views: dict[str, dict[str, Any]] = {}
    if plan.mode == "dag":
        for name, step in run.steps.items():
            if step.items is not None:
                view = _collapse(step.items)
                if step.phase in ("Succeeded", "Failed", "Cancelled", "Skipped"):
                    view["phase"] = step.phase
                own = run.nodes.get(name)
                if own is not None and own.message and view["message"] is None:
                    view["message"] = own.message
            elif name in run.nodes:
                view = _single(run.nodes[name])
            else:
                view = {"phase": step.phase, "attempts": 0, "startedAt": None, "finishedAt": None,
                        "costUsd": 0.0, "tokens": 0, "message": None}
            views[name] = view
        return views
    units = plan.states if plan.tree is None else plan.leaves
    visits: dict[str, list[Node]] = {name: [] for name in units}
    for node in run.nodes.values():
        if node.state is not None and node.parent is None:
            visits[node.state].append(node)
    if plan.tree is not None and run.tree is not None:
        for node_id, tree_node in plan.tree.nodes.items():
            if tree_node.step is None:
                views[node_id] = {"phase": run.tree.phase_of(node_id) or PENDING,
                                  "entries": run.tree.entries.get(node_id, 0), "attempts": 0, "startedAt": None,
                                  "finishedAt": None, "costUsd": 0.0, "tokens": 0, "message": None}
    for name in units:
        entered = run.visits.get(name, 0) if plan.tree is None else run.leaf_runs.get(name, 0)
        mine = visits[name]
        if mine:
            view = _single(mine[-1])
            view["attempts"] = sum(n.attempt for n in mine)
            view["costUsd"] = round(sum(n.cost_usd for n in mine), 6)
            view["tokens"] = sum(n.tokens for n in mine)
        else:
            phase = "Succeeded" if entered else PENDING  # a choice or final state has no step to run
            view = {"phase": phase, "attempts": 0, "startedAt": None, "finishedAt": None, "costUsd": 0.0,
                    "tokens": 0, "message": None}
        view["visits"] = entered
        view["visitIds"] = [n.id for n in mine]
        views[name] = view
    return views


LISTED = 50
"""Waiting and failed nodes named in a run summary (every live update carries one); the counts say how many."""


def run_summary(run: Run, meta: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the run list, and the header of the run page."""
    done, total = run.progress
    waiting = sorted(n.id for n in run.nodes.values() if n.phase == "Waiting")
    failed = sorted(n.id for n in run.nodes.values() if n.phase == "Failed")
    return {
        **dict(meta),
        "runId": run.run_id,
        "workflow": run.plan.name,
        "mode": run.plan.mode,
        "phase": run.shown_phase,
        "finished": run.finished,
        "reason": run.reason,
        "progress": {"done": done, "total": total},
        "costUsd": round(run.cost_usd, 6),
        "tokens": run.tokens,
        "startedAt": run.started_at,
        "finishedAt": run.finished_at,
        "waiting": waiting[:LISTED],
        "waitingCount": len(waiting),
        "failed": failed[:LISTED],
        "failedCount": len(failed),
        "outputs": run.outputs,
        "path": list(run.path),
    }


def graph(plan: Plan, run: Run, meta: Mapping[str, Any], shape: Layout | None = None) -> dict[str, Any]:
    """The run page's first load: the run, every graph node (layout and state) and every edge."""
    shape = shape or layout(plan)
    views = node_views(plan, run)
    return {
        "run": run_summary(run, meta),
        "nodes": [{**n, "state": views.get(n["id"], {})} for n in shape.nodes],
        "edges": list(shape.edges),
    }


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``after`` that are new or differ from ``before``."""
    return {k: v for k, v in after.items() if before.get(k) != v}

"""Behavior trees in the engine: a compiled tree (:class:`TreePlan`) and its state in one run (:class:`TreeRun`).

A Workflow's ``spec.behaviorTree`` compiles into a TreePlan whose leaves are ordinary StepPlans. The Run
(:mod:`agentflow.engine.run`) runs a leaf as a node of the run like a state visit: ``NAME#n``, the n-th run of
the leaf called NAME (a retry or repeat decorator above it runs it again), with the leaf's name as the
StepRequest's ``step``. Everything else is the tree's own state, kept here and changed only as the run applies
journal events, so resume and replay rebuild it from the journal alone:

    RunStarted                  the root is entered: composites go down to the leaves that run first
    a leaf's outcome            StepSucceeded, StepFailed (no retry left), ApprovalDecided, StepCancelled:
                                its parent decides (sequence, selector, parallel thresholds, decorators), which
                                may enter further leaves or finish the parent, and so on up to the root
    StepTimedOut of a tree node a timeout decorator's timer (``Run.decide`` emits it when due): its subtree stops

Composites and decorators have ids by path: ``bt`` for the root, ``bt.1`` for its second child, ``bt.1.0``
for that one's first child (a decorator's child is ``.0``); a node with a ``name`` uses the name instead.
A subtree that is no longer needed (a decided parallel's other children, a timed-out child) is halted: its
running leaves are handed to the Run to cancel, and their outcomes are ignored by the tree.

Semantics of each type (``S`` success, ``F`` failure)::

    sequence   children in order; the first F is F; all S is S
    selector   children in order; the first S is S; all F is F
    parallel   every child at once; S once successThreshold (default all) are S; F once failureThreshold are
               F, or once successThreshold can no longer be reached
    retry      the child again after an F, up to limit more times
    repeat     the child count times while it is S; the first F is F
    invert     S <-> F
    timeout    the child's outcome, or F when it has not finished timeoutSeconds after it was entered
    condition  the CEL guard over the run's context: false or an error is F (the child does not run); true runs
               the child, or is S for a condition without a child
    step       the leaf's node: Succeeded is S; Failed, Cancelled or a rejected approval is F
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..models.limits import MAX_RUN_NODES
from ..models.workflow import BehaviorNode, TreeNodeType
from .expressions import Expression, ExpressionError

__all__ = ["ROOT_ID", "TreeHost", "TreeNodePlan", "TreePlan", "TreeRun", "compile_tree"]

ROOT_ID = "bt"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
CANCELLED = "Cancelled"


@dataclasses.dataclass(frozen=True, slots=True)
class TreeNodePlan:
    """One node of a compiled tree. ``step`` is the leaf's step name (a key of ``Plan.leaves``)."""

    id: str
    type: TreeNodeType
    path: str  # where it is in the manifest: spec.behaviorTree.children[1]
    children: tuple[str, ...] = ()  # ids
    step: str | None = None
    success_threshold: int = 0
    failure_threshold: int = 0
    limit: int = 0  # retry: more runs after an F; repeat: runs in all
    timeout: float | None = None
    when: Expression | None = None

    @property
    def label(self) -> str:
        return self.step if self.step is not None else f"{self.type.value} {self.id}"


@dataclasses.dataclass(frozen=True, slots=True)
class TreePlan:
    root: str
    nodes: Mapping[str, TreeNodePlan]  # every node by id, depth first in order
    parents: Mapping[str, str]

    def leaf_ids(self) -> dict[str, str]:
        """The tree node id of every leaf, by step name."""
        return {n.step: n.id for n in self.nodes.values() if n.step is not None}


def compile_tree(root: BehaviorNode, expr: Callable[[str | None, str], Expression | None]) -> TreePlan:
    """The TreePlan of a validated tree; ``expr`` compiles a CEL text (raising the plan's error on a bad one)."""
    nodes: dict[str, TreeNodePlan] = {}
    parents: dict[str, str] = {}
    # Iterative depth first: (node, id, path, parent id); children are added after their parent.
    todo: list[tuple[BehaviorNode, str, str, str | None]] = [(root, root.name or ROOT_ID,
                                                               "spec.behaviorTree", None)]
    order: list[tuple[BehaviorNode, str, str]] = []
    kids: dict[str, list[str]] = {}
    while todo:
        node, node_id, path, parent = todo.pop()
        order.append((node, node_id, path))
        kids[node_id] = []
        if parent is not None:
            parents[node_id] = parent
            kids[parent].append(node_id)
        below = [(c, f"{path}.children[{i}]", f"{node_id}.{i}") for i, c in enumerate(node.children)]
        if node.child is not None:
            below.append((node.child, f"{path}.child", f"{node_id}.0"))
        for child, where, default_id in reversed(below):
            child_id = child.step.name if child.step is not None else (child.name or default_id)
            todo.append((child, child_id, where, node_id))
    for node, node_id, path in order:
        children = tuple(kids[node_id])
        success = node.success_threshold or len(children)
        nodes[node_id] = TreeNodePlan(
            id=node_id, type=node.type, path=path, children=children,
            step=node.step.name if node.step is not None else None,
            success_threshold=success,
            failure_threshold=node.failure_threshold or max(1, len(children) - success + 1),
            limit=node.limit or node.count or 0, timeout=node.timeout_seconds,
            when=expr(node.when, f"{path}.when"),
        )
    return TreePlan(order[0][1], nodes, parents)


class TreeHost(Protocol):
    """What the tree asks of the Run it is part of."""

    def run_leaf(self, step: str, at: float) -> str | None:
        """Create and queue the leaf's next node; its id, or None when the run holds too many nodes."""

    def cancel_leaf(self, node_id: str, reason: str) -> None: ...

    def tree_timer(self, at: float, tree_node: str, entry: int) -> None: ...

    def context(self) -> dict[str, Any]: ...


class _Exec:
    """The current execution of one tree node."""

    __slots__ = ("done", "failures", "index", "leaf", "phase", "runs", "successes", "why")

    def __init__(self) -> None:
        self.phase = RUNNING
        self.index = 0  # sequence/selector: the child running
        self.successes = 0
        self.failures = 0
        self.done: set[str] = set()  # parallel: children finished
        self.runs = 1  # retry/repeat: runs of the child so far
        self.leaf: str | None = None  # a leaf: its node id
        self.why: str | None = None


class TreeRun:
    """The tree's state in one run. Only the Run calls it, from its apply handlers."""

    def __init__(self, plan: TreePlan, host: TreeHost) -> None:
        self.plan = plan
        self.host = host
        self.execs: dict[str, _Exec] = {}
        self.entries: dict[str, int] = {}  # times each tree node was entered
        self.by_leaf_node: dict[str, str] = {}  # a leaf's node id -> its tree node id
        self.phase: str | None = None  # the root's outcome
        self.why: str | None = None  # why the root failed
        self._agenda: list[tuple[str, str, str, str, str | None]] = []

    # --------------------------------------------------------------- views

    def phase_of(self, tree_node: str) -> str | None:
        """Running, Succeeded, Failed or Cancelled for a node entered at least once, else None."""
        ex = self.execs.get(tree_node)
        return ex.phase if ex is not None else None

    def is_timer_live(self, tree_node: str, entry: int) -> bool:
        ex = self.execs.get(tree_node)
        return ex is not None and ex.phase == RUNNING and self.entries.get(tree_node) == entry

    # ------------------------------------------------------------- driving

    def start(self, at: float) -> None:
        self._enter(self.plan.root)
        self._work(at)

    def leaf_done(self, node_id: str, phase: str, at: float, message: str | None) -> None:
        """A leaf's node reached a terminal phase (ignored when its subtree no longer waits for it)."""
        tree_node = self.by_leaf_node.get(node_id)
        ex = self.execs.get(tree_node) if tree_node is not None else None
        if tree_node is None or ex is None or ex.phase != RUNNING or ex.leaf != node_id:
            return
        if phase == SUCCEEDED:
            self._finish(tree_node, SUCCEEDED)
        else:
            self._finish(tree_node, FAILED, f"step {node_id} {phase.lower()}" + (f": {message}" if message else ""))
        self._work(at)

    def timed_out(self, tree_node: str, entry: int, at: float) -> None:
        if not self.is_timer_live(tree_node, entry):
            return
        plan = self.plan.nodes[tree_node]
        for child in plan.children:
            self._halt(child, f"{plan.label} ran past {plan.timeout:g}s")
        self._finish(tree_node, FAILED, f"{plan.label} ran past its {plan.timeout:g}s timeout")
        self._work(at)

    def halt(self, reason: str) -> None:
        """Stop the whole tree (the run is cancelled or timed out): nothing more is entered."""
        self._halt(self.plan.root, reason)
        self._agenda.clear()

    # ------------------------------------------------------------ internals

    # Work is a stack rather than recursion (a sequence of 500 guards that pass at once would otherwise nest
    # thousands of calls): ("enter", node) or ("done", parent, child, phase, why). Children are pushed in
    # reverse and outcomes on top, so the order is a depth-first recursion's.

    def _enter(self, tree_node: str) -> None:
        self._agenda.append(("enter", tree_node, "", "", None))

    def _work(self, at: float) -> None:
        agenda = self._agenda
        while agenda:
            what, tree_node, child, phase, why = agenda.pop()
            if what == "done":
                self._child_done(tree_node, child, phase, why)
            else:
                parent = self.plan.parents.get(tree_node)
                if parent is None or self.execs[parent].phase == RUNNING:  # a decided parent enters no more
                    self._start(tree_node, at)

    def _start(self, tree_node: str, at: float) -> None:
        plan = self.plan.nodes[tree_node]
        self.entries[tree_node] = self.entries.get(tree_node, 0) + 1
        ex = self.execs[tree_node] = _Exec()
        kind = plan.type
        if kind is TreeNodeType.step:
            assert plan.step is not None
            node_id = self.host.run_leaf(plan.step, at)
            if node_id is None:
                self._finish(tree_node, FAILED, f"step {plan.step} would take the run past the "
                             f"{MAX_RUN_NODES:,} nodes a run may hold")
                return
            ex.leaf = node_id
            self.by_leaf_node[node_id] = tree_node
        elif kind is TreeNodeType.condition:
            go, why = self._guard(plan)
            if not go:
                self._finish(tree_node, FAILED, why)
            elif plan.children:
                self._enter(plan.children[0])
            else:
                self._finish(tree_node, SUCCEEDED)
        elif kind is TreeNodeType.parallel:
            for child in reversed(plan.children):
                self._enter(child)
        else:
            if kind is TreeNodeType.timeout and plan.timeout is not None:
                self.host.tree_timer(at + plan.timeout, tree_node, self.entries[tree_node])
            self._enter(plan.children[0])

    def _guard(self, plan: TreeNodePlan) -> tuple[bool, str]:
        assert plan.when is not None
        try:
            go = plan.when.truthy(self.host.context())
        except ExpressionError as exc:
            return False, f"condition {plan.id}: {exc}"
        return go, f"condition {plan.id} was false: {plan.when.text}"

    def _finish(self, tree_node: str, phase: str, why: str | None = None) -> None:
        ex = self.execs[tree_node]
        ex.phase = phase
        ex.why = why
        parent = self.plan.parents.get(tree_node)
        if parent is None:
            self.phase = phase
            self.why = why
            return
        self._agenda.append(("done", parent, tree_node, phase, why))

    def _child_done(self, tree_node: str, child: str, phase: str, why: str | None) -> None:
        ex = self.execs[tree_node]
        if ex.phase != RUNNING:
            return
        plan = self.plan.nodes[tree_node]
        ok = phase == SUCCEEDED
        kind = plan.type
        if kind in (TreeNodeType.sequence, TreeNodeType.selector):
            if ok == (kind is TreeNodeType.selector):  # the sequence's F, the selector's S
                self._finish(tree_node, phase, why)
            elif ex.index + 1 < len(plan.children):
                ex.index += 1
                self._enter(plan.children[ex.index])
            else:
                self._finish(tree_node, phase, why if not ok else None)
        elif kind is TreeNodeType.parallel:
            ex.done.add(child)
            if ok:
                ex.successes += 1
            else:
                ex.failures += 1
            total = len(plan.children)
            if ex.successes >= plan.success_threshold:
                outcome: tuple[str, str | None] | None = (SUCCEEDED, None)
            elif ex.failures >= plan.failure_threshold or ex.failures > total - plan.success_threshold:
                outcome = (FAILED, f"{plan.label}: {ex.failures} of {total} failed (last: {why})")
            else:
                outcome = None
            if outcome is not None:
                for other in plan.children:
                    if other not in ex.done:
                        self._halt(other, f"{plan.label} was decided")
                self._finish(tree_node, outcome[0], outcome[1])
        elif kind is TreeNodeType.retry:
            if not ok and ex.runs <= plan.limit:
                ex.runs += 1
                self._enter(child)
            else:
                self._finish(tree_node, phase, why if ok else f"{why} (after {ex.runs} tries)")
        elif kind is TreeNodeType.repeat:
            if ok and ex.runs < plan.limit:
                ex.runs += 1
                self._enter(child)
            else:
                self._finish(tree_node, phase, why if ok else f"{why} (run {ex.runs} of {plan.limit})")
        elif kind is TreeNodeType.invert:
            self._finish(tree_node, FAILED if ok else SUCCEEDED,
                         f"{plan.label}: {child} succeeded" if ok else None)
        else:  # timeout, condition: the child's outcome
            self._finish(tree_node, phase, why)

    def _halt(self, tree_node: str, reason: str) -> None:
        """Cancel ``tree_node``'s execution and everything running below it (depth first, iteratively)."""
        todo = [tree_node]
        while todo:
            current = todo.pop()
            ex = self.execs.get(current)
            if ex is None or ex.phase != RUNNING:
                continue
            ex.phase = CANCELLED
            ex.why = reason
            if ex.leaf is not None:
                self.host.cancel_leaf(ex.leaf, reason)
            todo.extend(self.plan.nodes[current].children)

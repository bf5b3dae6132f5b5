"""The engine: the state of one run, and what to do next.

:class:`Run` is a deterministic state machine in the manner of graphlib's
TopologicalSorter. ``apply(event)`` folds one journal event into the state;
``decide(now)`` returns a :class:`~agentflow.engine.values.Decision`. The
events of a decision are already applied when it is returned; the driver
journals them before acting on ``start`` and ``cancel``. Resuming a run is
applying its journal to a fresh Run, then calling ``in_flight()`` for the
attempts that were started and never finished, and ``decide`` again.

The engine reads no clock (``now`` is given), draws no random numbers (retry
jitter is derived from the run's seed) and does no I/O, so the same journal
and the same ``now`` always give the same decision.

Phases of a node: Pending -> Running | Waiting (approval) -> Succeeded |
Failed | Skipped | Cancelled, with Retrying between a failed attempt and the
next one.

Quarantine review: an attempt that fails with ``InjectionQuarantined`` (the Agent's injection action
``quarantine``) does not fail its node: the node waits like an approval step (ApprovalRequested with a
``review`` naming the attempt and the evidence, Waiting, no timeout). Approved, the node runs again and
that attempt's StepScheduled carries ``screening: flag`` (StepRequest.screening: the executor records
findings but does not stop for them); rejected, it fails with ``Rejected``.

Stuck runs: when nothing runs, nothing is ready or pending, no timer is due and no node waits for a
human, yet the run has not finished (a step waiting for something that can no longer happen), the run
finishes Failed at once with the stuck steps named in its reason (RunFinished ``stuck``).

Bounds: a forEach list longer than MAX_FANOUT_ITEMS, or one that would take the run past MAX_RUN_NODES
nodes, fails its step (agentflow.models.limits). ``parallelism`` is the plan's (the lower of the spec's and
the driver's cap), recorded in RunStarted and read back from there like the gates.

Behavior trees (``Plan.tree``, agentflow.engine.tree): the Run is the tree's host. A leaf's run is a node
``NAME#n`` queued like a state visit (``Node.state`` is the leaf's step name); its terminal phase goes to
the tree, which may queue further leaves or halt a subtree (its leaves are cancelled by decide(), like a
failed fan-out's other items). A timeout decorator's timer is ``(at, tree node, entry, "tree")``; when due,
decide() records StepTimedOut of the tree node. A cancel or the workflow's timeout halts the whole tree.

Approval gates (tool steps whose tool has requiresApproval, ``Plan.gates``):
such a node first waits like an approval step (ApprovalRequested with a
``gate``, Waiting, the same timeout and decisions); approved, it goes back
to Pending and runs; rejected or timed out, it fails without running. The
gates are recorded in RunStarted (``gates``) and read back from there, so a
resumed run gates what it gated when it started.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..models.limits import MAX_FANOUT_ITEMS, MAX_RUN_NODES
from ..models.workflow import RunOn, StepKind
from . import conversation
from .backoff import retry_delay
from .canonical import check_json
from .expressions import ExpressionError
from .nodes import (
    CANCELLED,
    FAILED,
    PENDING,
    QUARANTINED,
    RETRYING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    TERMINAL,
    WAITING,
    LoopState,
    Node,
    PlanningState,
    StepState,
)
from .plan import AgentLoop, Plan, PlanError, StatePlan, ToolGate, planned_step_plan
from .planner import check_plan, gate_key, planned_spec
from .tree import TreeRun
from .values import Decision, Event, EventType, StepError, StepRequest, call_tokens

__all__ = [  # the phases and nodes are re-exported: drivers and views read them from here
    "CANCELLED", "FAILED", "PENDING", "QUARANTINED", "RETRYING", "RUNNING", "SKIPPED", "SUCCEEDED", "TERMINAL",
    "WAITING", "Node", "Run", "StepState", "outputs_of",
]

E = EventType


class Run:
    """State of one run of a Plan. Build with ``Run(plan, run_id, seed)``."""

    def __init__(self, plan: Plan, run_id: str, seed: int = 0) -> None:
        self.plan = plan
        self.run_id = run_id
        self.seed = seed
        self.phase = PENDING
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.deadline: float | None = None
        self.finished = False
        self.outputs: dict[str, Any] | None = None
        self.reason: str | None = None
        self.stop_reason: str | None = None
        self.suspended = False
        self.failed = False
        self.failure: str | None = None
        self.cost_usd = 0.0
        self.tokens = 0
        self.nodes: dict[str, Node] = {}
        self.gates: dict[str, ToolGate] = {}  # from RunStarted
        self.loops: dict[str, AgentLoop] = dict(plan.loops)  # by Agent; from RunStarted when it says
        self._active_loops: dict[str, Node] = {}  # loop nodes running (their turns and calls run on their own)
        self._loops_ended: dict[str, Node] = {}  # loops that ended, for decide() to record (LoopFinished)
        self._active_plans: dict[str, Node] = {}  # plan steps running (agentflow.engine.planner)
        self._plans_due: dict[str, Node] = {}  # plan steps whose planning attempt ended: decide() accepts or refuses
        self._plans_ended: dict[str, Node] = {}  # plan steps that ended, for decide() to record (PlanFinished)
        self.conversations: dict[str, conversation.AgentConversation] = {}  # by Agent (memory.kind conversation)
        self.parallelism = plan.parallelism  # from RunStarted when it says
        self.prompts: dict[str, Mapping[str, Any]] = dict(plan.prompts)  # family steps' versions; from RunStarted
        self.stuck: tuple[str, ...] = ()  # from RunFinished: the steps a stuck run waited on
        self.steps = {name: StepState(p) for name, p in plan.steps.items()}
        self.step_context: dict[str, dict[str, Any]] = {}
        self._ready: deque[str] = deque()
        self._queue: deque[Node] = deque()
        self._timers: list[tuple[float, int, str, int, str]] = []
        self._timer_seq = 0
        self._running: dict[str, Node] = {}
        self._retry: dict[str, Node] = {}
        self._review: dict[str, Node] = {}  # quarantined attempts whose ApprovalRequested is due
        self._to_cancel: dict[str, str | None] = {}  # node -> why (None: the default reason of its kind)
        self._main_pending = sum(1 for p in plan.steps.values() if not p.deferred)
        self._pending = len(plan.steps)
        self._stopping_done = False
        # State machine
        self.visits: dict[str, int] = {}
        self.path: list[str] = []
        self._enter: str | None = None
        # (state, phase, output, error) of the state whose transitions are due.
        self._transition_from: tuple[str, str, Any, StepError | None] | None = None
        self._fsm_final: str | None = None
        # Behavior tree (agentflow.engine.tree): its state, and the runs of each leaf so far (node NAME#n).
        self.tree = TreeRun(plan.tree, self) if plan.tree is not None else None
        self.leaf_runs: dict[str, int] = {}
        self._apply: dict[EventType, Callable[[Event], None]] = {
            E.run_started: self._on_run_started,
            E.step_scheduled: self._on_scheduled,
            E.step_started: self._on_started,
            E.step_succeeded: self._on_succeeded,
            E.step_failed: self._on_failed,
            E.step_timed_out: self._on_timed_out,
            E.step_cancelled: self._on_cancelled,
            E.step_skipped: self._on_skipped,
            E.retry_scheduled: self._on_retry_scheduled,
            E.approval_requested: self._on_approval_requested,
            E.approval_decided: self._on_approval_decided,
            E.fan_out: self._on_fan_out,
            E.loop_started: self._on_loop_started,
            E.loop_finished: self._on_loop_finished,
            E.plan_started: self._on_plan_started,
            E.plan_accepted: self._on_plan_accepted,
            E.plan_refused: self._on_plan_refused,
            E.plan_finished: self._on_plan_finished,
            E.state_entered: self._on_state_entered,
            E.cost_recorded: self._on_cost,
            E.cancel_requested: self._on_cancel_requested,
            E.run_timed_out: self._on_run_timed_out,
            E.suspended: self._on_suspended,
            E.resumed: self._on_resumed,
            E.run_finished: self._on_run_finished,
        }

    # ------------------------------------------------------------------ resume

    @classmethod
    def resume(cls, plan: Plan, run_id: str, events: Iterable[Event]) -> Run:
        """Rebuild a run from its journal. The seed comes from RunStarted."""
        run = cls(plan, run_id)
        for event in events:
            run.apply(event)
        return run

    def in_flight(self) -> list[StepRequest]:
        """Attempts that were scheduled and have no result yet (to restart after a crash)."""
        return [n.request for n in self._running.values() if n.request is not None]

    # ------------------------------------------------------------------ apply

    def apply(self, event: Event) -> None:
        """Fold one journal event into the state."""
        self._apply[event.type](event)

    def _node(self, node_id: str) -> Node:
        node = self.nodes.get(node_id)
        if node is None:
            # A plain DAG step gets its node on first mention.
            node = Node(node_id, self.plan.steps[node_id])
            self.nodes[node_id] = node
        return node

    def _on_run_started(self, ev: Event) -> None:
        self.started_at = ev.at
        self.seed = int(ev.data.get("seed", self.seed))
        self.gates = {k: ToolGate.from_dict(v) for k, v in (ev.data.get("gates") or {}).items()}
        if "loops" in ev.data:
            self.loops = {k: AgentLoop.from_dict(v) for k, v in (ev.data.get("loops") or {}).items()}
        if "prompts" in ev.data:
            self.prompts = dict(ev.data.get("prompts") or {})
        if "parallelism" in ev.data:
            parallelism = ev.data["parallelism"]
            self.parallelism = int(parallelism) if parallelism is not None else None
        self.phase = "Running"
        if self.plan.timeout is not None:
            self.deadline = ev.at + self.plan.timeout
        if self.plan.mode == "dag":
            self._ready.extend(self.plan.roots)
        elif self.tree is not None:
            self.tree.start(ev.at)
        else:
            self._enter = self.plan.initial

    def _on_scheduled(self, ev: Event) -> None:
        node = self._node(str(ev.node))
        data = ev.data
        node.attempt = int(data["attempt"])
        node.phase = RUNNING
        node.inputs = data.get("inputs")
        node.deadline = data.get("deadline")
        screening = data.get("screening")
        node.request = StepRequest(
            self.run_id, node.id, str(data["step"]), str(data["kind"]), node.attempt, node.inputs or {},
            node.deadline, str(screening) if screening is not None else None, self._request_context(node),
        )
        node.screening = None  # a review's override is for this one attempt
        self._running[node.id] = node
        self._admit(node)
        if node.deadline is not None:
            self._push_timer(node.deadline, node.id, node.attempt, "timeout")

    def _admit(self, node: Node) -> None:
        if node.state is None:
            step = self.steps[node.plan.name]
            step.admitted = True
            if step.phase == PENDING:
                step.phase = RUNNING

    def _on_started(self, ev: Event) -> None:
        node = self.nodes.get(str(ev.node))
        if node is not None and node.started_at is None:
            node.started_at = ev.at

    def _current(self, ev: Event) -> Node | None:
        """The node an outcome is for, or None when it is stale (old attempt, already finished)."""
        node = self.nodes.get(str(ev.node))
        if node is None or node.phase in TERMINAL or node.phase == RETRYING:
            return None
        attempt = ev.data.get("attempt")
        if attempt is not None and int(attempt) != node.attempt:
            return None
        return node

    def _on_succeeded(self, ev: Event) -> None:
        node = self._current(ev)
        if node is None:
            return
        node.output = ev.data.get("output")
        self._finish_node(node, SUCCEEDED, ev.at)

    def _on_failed(self, ev: Event) -> None:
        node = self.nodes.get(str(ev.node))
        if node is None and ev.node in self.plan.steps:
            node = self._node(str(ev.node))  # a step that failed before any attempt
        elif node is not None and self._current(ev) is None:
            return
        if node is None:
            return
        error = StepError.from_dict(ev.data.get("error", {}))
        if "output" in ev.data:
            node.output = ev.data["output"]
        self._fail(node, error, ev.at)

    def _fail(self, node: Node, error: StepError, at: float) -> None:
        if node.planning is not None:
            self._end_plan(node, FAILED, at, StepError(error.type, error.message, retryable=False))
            return
        if node.loop is not None:  # a loop is not retried as a whole: its turns and calls retry on their own
            self._end_loop(node, FAILED, at, StepError(error.type, error.message, retryable=False))
            return
        node.error = error
        node.message = f"{error.type}: {error.message}"
        self._running.pop(node.id, None)
        if error.type == QUARANTINED and node.attempt >= 1 and self.stop_reason is None:
            node.phase = WAITING  # for a review; decide() asks for it (ApprovalRequested with a review)
            self._review[node.id] = node
            return
        policy = node.plan.retry
        can_retry = (
            error.retryable
            and node.attempt >= 1
            and node.attempt <= policy.limit
            and (not policy.retry_on or error.type in policy.retry_on)
            and self.stop_reason is None
        )
        if can_retry:
            node.phase = RETRYING
            self._retry[node.id] = node
        else:
            self._finish_node(node, FAILED, at)

    def _on_timed_out(self, ev: Event) -> None:
        if self.tree is not None and ev.node in self.tree.plan.nodes:  # a timeout decorator's
            self.tree.timed_out(str(ev.node), int(ev.data.get("attempt", 0)), ev.at)
            return
        node = self._current(ev)
        if node is None:
            return
        if node.phase == WAITING:
            self._fail(node, StepError("ApprovalTimeout", "nobody decided in time", retryable=False), ev.at)
        else:
            limit = node.plan.timeout
            self._fail(node, StepError("Timeout", f"attempt {node.attempt} ran past {limit}s"), ev.at)

    def _on_cancelled(self, ev: Event) -> None:
        target = str(ev.node)
        reason = str(ev.data.get("reason", "cancelled"))
        step = self.steps.get(target) if self.plan.mode == "dag" else None
        if step is not None and step.items is not None:
            for item in step.items:
                if item.phase not in TERMINAL:
                    self._terminal(item, CANCELLED, ev.at, reason)
            self._step_done(step, CANCELLED, None, ev.at)
            return
        node = self._node(target) if step is not None else self.nodes.get(target)
        if node is not None and node.phase not in TERMINAL:
            node.message = reason
            if node.loop is not None:
                self._end_loop(node, CANCELLED, ev.at)
                return
            if node.planning is not None:
                self._end_plan(node, CANCELLED, ev.at)
                return
            self._finish_node(node, CANCELLED, ev.at)

    def _on_skipped(self, ev: Event) -> None:
        step = self.steps[str(ev.node)]
        step.blocked = bool(ev.data.get("blocked", False))
        node = self._node(str(ev.node))
        node.message = str(ev.data.get("reason", ""))
        self._finish_node(node, SKIPPED, ev.at)

    def _on_retry_scheduled(self, ev: Event) -> None:
        node = self.nodes[str(ev.node)]
        self._retry.pop(node.id, None)
        self._push_timer(float(ev.data["notBefore"]), node.id, node.attempt, "retry")

    def _on_approval_requested(self, ev: Event) -> None:
        node = self._node(str(ev.node))
        node.phase = WAITING
        if ev.data.get("review") is not None:  # a quarantined attempt waiting for its review: keep the attempt
            self._review.pop(node.id, None)
            node.review = True
        elif ev.data.get("gate") is not None:  # a tool call waiting for its approval: no attempt yet
            node.inputs = ev.data.get("inputs")
        else:
            node.attempt = 1
            node.inputs = {"message": ev.data.get("message", "")}
        node.deadline = ev.data.get("deadline")
        self._admit(node)
        if node.deadline is not None:
            self._push_timer(node.deadline, node.id, node.attempt, "timeout")

    def _on_approval_decided(self, ev: Event) -> None:
        node = self.nodes.get(str(ev.node))
        if node is None or node.phase != WAITING:
            return
        decision = {
            "approved": bool(ev.data.get("approved")),
            "by": ev.data.get("by"),
            "reason": ev.data.get("reason", ""),
        }
        if node.review:  # a quarantined attempt: approved, the node runs again with its screening flagged
            node.review = False
            if decision["approved"]:
                node.phase = PENDING
                node.screening = "flag"
                node.message = f"quarantine reviewed and approved by {decision['by']}" + (
                    f": {decision['reason']}" if decision["reason"] else "")
                self._queue.append(node)
            else:
                why = f"quarantined input rejected by {decision['by']}" + (
                    f": {decision['reason']}" if decision["reason"] else "")
                self._fail(node, StepError("Rejected", why, retryable=False), ev.at)
            return
        if node.plan.kind is not StepKind.approval:  # an approval gate of a tool step
            if decision["approved"]:
                node.approved = True
                node.phase = PENDING
                node.message = f"approved by {decision['by']}" + (
                    f": {decision['reason']}" if decision["reason"] else "")
                self._queue.append(node)
            else:
                why = f"rejected by {decision['by']}" + (f": {decision['reason']}" if decision["reason"] else "")
                self._fail(node, StepError("Rejected", why, retryable=False), ev.at)
            return
        node.output = decision
        if decision["approved"]:
            self._finish_node(node, SUCCEEDED, ev.at)
        else:
            why = f"rejected by {decision['by']}" + (f": {decision['reason']}" if decision["reason"] else "")
            self._fail(node, StepError("Rejected", why, retryable=False), ev.at)

    def _on_fan_out(self, ev: Event) -> None:
        step = self.steps[str(ev.node)]
        step.admitted = True
        step.phase = RUNNING
        items = list(ev.data.get("items", []))
        step.count = len(items)
        step.items = []
        for i, item in enumerate(items):
            node = Node(f"{step.plan.name}[{i}]", step.plan, index=i, item=item)
            self.nodes[node.id] = node
            step.items.append(node)
        if not items:
            self._step_done(step, SUCCEEDED, [], ev.at)
            return
        limit = step.plan.parallelism or step.count
        while step.next_item < min(limit, step.count):
            self._queue.append(step.items[step.next_item])
            step.next_item += 1

    def _on_state_entered(self, ev: Event) -> None:
        state = self.plan.states[str(ev.data["state"])]
        visit = int(ev.data["visit"])
        self.visits[state.name] = visit
        self.path.append(state.name)
        self._enter = None
        if state.step is None:
            if state.final is not None:
                self._fsm_final = state.final
            else:
                self._transition_from = (state.name, SUCCEEDED, None, None)
            return
        node = Node(str(ev.node), state.step, state=state.name)
        self.nodes[node.id] = node
        self._queue.append(node)

    def _on_cost(self, ev: Event) -> None:
        call = ev.data.get("call", {})
        cost = float(call.get("cost_usd", 0.0))
        tokens = call_tokens(call)
        self.cost_usd += cost
        self.tokens += tokens
        node = self.nodes.get(str(ev.node))
        while node is not None:  # an agent loop's turns and calls count for the loop's node too
            node.cost_usd += cost
            node.tokens += tokens
            node = self.nodes.get(node.parent) if node.parent is not None else None

    def _on_cancel_requested(self, ev: Event) -> None:
        if self.stop_reason is None:
            self.stop_reason = CANCELLED
            self.reason = f"cancelled by {ev.data.get('by', 'unknown')}" + (
                f": {ev.data['reason']}" if ev.data.get("reason") else ""
            )
            if self.tree is not None:  # it enters nothing more; decide() cancels what runs (_stop)
                self.tree.halt(self.reason)

    def _on_run_timed_out(self, ev: Event) -> None:
        if self.stop_reason is None:
            self.stop_reason = "WorkflowTimeout"
            self.reason = f"the workflow ran past its {self.plan.timeout}s timeout"
            self.failed = True
            if self.tree is not None:
                self.tree.halt(self.reason)

    def _on_suspended(self, ev: Event) -> None:
        self.suspended = True

    def _on_resumed(self, ev: Event) -> None:
        self.suspended = False

    def _on_run_finished(self, ev: Event) -> None:
        self.stuck = tuple(ev.data.get("stuck") or ())
        self.finished = True
        self.phase = str(ev.data["phase"])
        self.outputs = ev.data.get("outputs")
        self.reason = ev.data.get("reason") or self.reason
        self.finished_at = ev.at

    # ------------------------------------------------------------ agent loops
    #
    # An llm step whose Agent has a loop (Plan.loops, recorded in RunStarted) is the loop's node: LoopStarted
    # makes it Running and queues its first model turn, ``NODE/t1``, an llm attempt like any other. The turn's
    # output says what the model did: ``{"final": true, "value": V, "message": M}`` ends the loop with V as
    # the node's output; ``{"final": false, "message": M}`` with M's tool_calls makes one node per call,
    # ``NODE/t1/call-K``, decided here: an unknown or denied tool, arguments that are not a JSON object, or a
    # delegation past maxDepth end that call at once with the error (the model is told, the step goes on); a
    # tool with requiresApproval waits for a human like a gated tool step; a delegate (kind "agent") runs a
    # loop of its own. Once every call of the turn has ended, their results (or errors) are added to the
    # conversation in the model's order and the next turn starts. Bounds: maxTurns, maxToolCalls, the step's
    # timeout over the whole loop, and whatever the gateway refuses (BudgetExceeded fails the turn).
    # An Agent with memory.kind conversation (AgentLoop.conversation_tokens) carries its earlier exchanges of the
    # run into its turns, and before a turn whose carried conversation is over budget runs a summary node
    # ``NODE/sN`` first (agentflow.engine.conversation); a failed summary fails the loop.

    def _loop_of(self, node: Node) -> AgentLoop | None:
        """The loop ``node`` runs when scheduled: a delegate call's callee, or the loop of an llm step's Agent."""
        if node.turn is not None or node.loop is not None or node.summary is not None \
                or node.plan.kind is StepKind.plan:
            return None
        if node.call is not None:
            return self.loops.get(str(node.call.get("agent"))) if node.call.get("kind") == "agent" else None
        ref = node.plan.spec.agent_ref
        if node.plan.kind is StepKind.llm and ref is not None and self.loops:
            return self.loops.get(ref.name)
        return None

    def _start_loop(self, node: Node, loop: AgentLoop, now: float, emit: Callable[..., None]) -> None:
        depth = 0
        task = None
        if node.call is not None:  # a delegate: one deeper than the loop that called it, asked for its task
            parent = self.nodes[str(node.parent)]
            depth = (parent.loop.depth if parent.loop is not None else 0) + 1
            inputs = node.inputs if isinstance(node.inputs, dict) else {}
            task = str(inputs.get("task", ""))
        else:
            ctx = self._plan_context(node) if node.planned is not None else self.context(node)
            try:
                inputs = node.plan.inputs.render(ctx)
            except ExpressionError as exc:
                emit(E.step_failed, node.id, attempt=node.attempt,
                     error=StepError("ExpressionError", f"inputs: {exc}", False).to_dict())
                return
        timeout = node.plan.timeout
        emit(E.loop_started, node.id, step=node.key, attempt=node.attempt + 1, agent=loop.agent, inputs=inputs,
             deadline=now + timeout if timeout else None, depth=depth, **({"task": task} if task is not None else {}))

    def _on_loop_finished(self, ev: Event) -> None:
        self._loops_ended.pop(str(ev.node), None)  # a record of what the loop's events already decided

    def _record_ended_loops(self, emit: Callable[..., None]) -> None:
        for node in list(self._loops_ended.values()):
            loop = node.loop
            emit(E.loop_finished, node.id, attempt=node.attempt, phase=node.phase, output=node.output,
                 turns=loop.turns if loop is not None else 0, toolCalls=loop.calls if loop is not None else 0,
                 **({"error": node.error.to_dict()} if node.phase == FAILED and node.error is not None else {}))

    def _on_loop_started(self, ev: Event) -> None:
        node_id = str(ev.node)
        node = self._node(node_id) if node_id in self.plan.steps else self.nodes[node_id]
        data = ev.data
        node.phase = RUNNING
        node.attempt = int(data.get("attempt", 1))
        node.inputs = data.get("inputs")
        node.deadline = data.get("deadline")
        task = data.get("task")
        caller = self.nodes[node.parent].loop if node.parent is not None else None
        node.loop = LoopState(self.loops[str(data["agent"])], int(data.get("depth", 0)),
                              str(task) if task is not None else None,
                              caller.max_depth if caller is not None else None)
        if node.started_at is None:
            node.started_at = ev.at
        if self._carries(node.loop):  # the Agent's conversation as it is now
            memory = self.conversations.setdefault(node.loop.plan.agent, conversation.AgentConversation())
            node.loop.summary = memory.summary
            node.loop.history = list(memory.units)
            node.loop.seen = memory.next_seq
        self._active_loops[node.id] = node
        self._loops_ended.pop(node.id, None)
        self._admit(node)
        if node.deadline is not None:
            self._push_timer(node.deadline, node.id, node.attempt, "timeout")
        self._new_turn(node)

    @staticmethod
    def _carries(loop: LoopState | None) -> bool:
        """Whether ``loop`` carries its Agent's conversation (memory.kind conversation; not a delegate's loop)."""
        return loop is not None and loop.depth == 0 and loop.plan.conversation_tokens is not None

    def _new_turn(self, node: Node) -> None:
        loop = node.loop
        assert loop is not None
        if self._carries(loop) and self._compact(node, loop):
            return  # the summary node runs first; the turn starts when it has succeeded
        loop.turns += 1
        turn = Node(f"{node.id}/t{loop.turns}", node.plan, state=node.state)
        turn.parent = node.id
        turn.turn = loop.turns
        turn.inputs = node.inputs
        self.nodes[turn.id] = turn
        self._queue.append(turn)

    def _compact(self, node: Node, loop: LoopState) -> bool:
        """Schedule a summary node when the carried conversation is over its budget; False: the turn may start."""
        assert loop.plan.conversation_tokens is not None
        history = [unit for _, unit in loop.history]
        k = conversation.compaction(loop.plan.conversation_tokens, loop.summary, history,
                                    conversation.prompt_message(node.key, node.inputs),
                                    conversation.turn_units(loop.messages))
        if k == 0:
            return False
        loop.summaries += 1
        summary = Node(f"{node.id}/s{loop.summaries}", node.plan, state=node.state)
        summary.parent = node.id
        summary.summary = k
        summary.inputs = {}
        self.nodes[summary.id] = summary
        self._queue.append(summary)
        return True

    def _summary_done(self, parent: Node, loop: LoopState, node: Node, at: float) -> None:
        """A summary node ended: on success its summary replaces the units it compacted and the turn starts."""
        if node.phase != SUCCEEDED:
            error = node.error or StepError("Failed", f"the summary {node.phase.lower()}")
            self._end_loop(parent, FAILED, at, StepError(
                error.type, f"summary {node.id.rsplit('/', 1)[-1]}: {error.message}", retryable=False))
            return
        out = node.output if isinstance(node.output, dict) else {}
        loop.summary = str(out.get("summary", ""))
        k = node.summary or 0
        dropped = min(k, len(loop.history))
        del loop.history[:dropped]
        turns = conversation.turn_units(loop.messages)[:k - dropped]
        del loop.messages[:sum(len(unit) for unit in turns)]
        self._new_turn(parent)

    def _remember(self, node: Node, loop: LoopState) -> None:
        """A carrying loop succeeded: its exchange joins its Agent's conversation (agentflow.engine.conversation)."""
        memory = self.conversations.setdefault(loop.plan.agent, conversation.AgentConversation())
        if loop.summaries:  # its summary covers what its history lost; keep what steps beside it added meanwhile
            memory.summary = loop.summary
            memory.units = loop.history + [u for u in memory.units if u[0] >= loop.seen]
        memory.add(conversation.exchange(node.key, node.inputs, node.output))

    def _request_context(self, node: Node) -> dict[str, Any] | None:
        """What an executor needs of the loop for a turn or a call (from the state, so never journaled)."""
        if node.parent is None:
            return None
        parent = self.nodes[node.parent]
        if parent.planning is not None:
            return self._plan_request_context(parent, parent.planning, node)
        loop = parent.loop
        assert loop is not None
        if node.turn is not None:
            context: dict[str, Any] = {
                "agent": loop.plan.agent, "turn": node.turn, "maxTurns": loop.plan.max_turns,
                "messages": list(loop.messages), "tools": loop.plan.functions(), "mcp": loop.plan.mcp_servers(),
                "parallelToolCalls": loop.plan.parallel, "finalTool": loop.plan.final_tool, "task": loop.task,
                "depth": loop.depth}
            if self._carries(loop):
                context["history"] = conversation.history_messages(loop.summary, [u for _, u in loop.history])
            return self._with_planned(node, context)
        if node.summary is not None:
            k = node.summary
            units = [u for _, u in loop.history][:k]
            units += conversation.turn_units(loop.messages)[:k - len(units)]
            budget = loop.plan.conversation_tokens or 0
            return self._with_planned(node, {"agent": loop.plan.agent, "depth": loop.depth, "summary": {
                "previous": loop.summary, "messages": [dict(m) for unit in units for m in unit],
                "maxTokens": max(budget // 4, 64)}})
        return self._with_planned(node, {"agent": loop.plan.agent, "call": dict(node.call or {})})

    def _with_planned(self, node: Node, context: dict[str, Any]) -> dict[str, Any]:
        """A loop's part under a step of a plan carries that step's spec (the executor runs it, not the plan
        step's): found up the parents, below the plan step."""
        while node.parent is not None:
            parent = self.nodes[node.parent]
            if parent.planning is not None:
                if node.planned is not None:
                    context["planned"] = dict(node.planned)
                break
            node = parent
        return context

    def _descendants(self, node: Node) -> list[Node]:
        prefix = node.id + "/"
        return [n for n in self.nodes.values() if n.id.startswith(prefix)]

    def _child_done(self, node: Node, at: float) -> None:
        parent = self.nodes[str(node.parent)]
        if parent.planning is not None:
            if parent.phase not in TERMINAL and self.stop_reason is None:
                self._plan_child_done(parent, parent.planning, node, at)
            return
        loop = parent.loop
        if loop is None or parent.phase in TERMINAL or self.stop_reason is not None:
            return
        if node.summary is not None:
            if node.phase in TERMINAL:
                self._summary_done(parent, loop, node, at)
            return
        if node.turn is not None:
            if node.phase == SUCCEEDED:
                self._turn_done(parent, loop, node, at)
            elif node.phase == FAILED:
                error = node.error or StepError("Failed", "the model turn failed")
                self._end_loop(parent, FAILED, at, StepError(
                    error.type, f"turn {node.turn}: {error.message}", retryable=False))
            return
        if loop.waiting and node.phase in TERMINAL:
            self._queue.append(loop.waiting.pop(0))  # one call at a time
        self._maybe_next_turn(parent, loop, at)

    def _maybe_next_turn(self, parent: Node, loop: LoopState, at: float) -> None:
        if any(c.phase not in TERMINAL for c in loop.open):
            return
        for call in loop.open:
            loop.messages.append({"role": "tool", "tool_call_id": str((call.call or {}).get("id", call.id)),
                                  "content": _tool_content(call)})
        loop.open = []
        if loop.turns >= loop.plan.max_turns:
            self._end_loop(parent, FAILED, at, StepError(
                "MaxTurns", f"the agent made {loop.turns} model turns, its loop.maxTurns, without a final answer "
                f"(Agent {loop.plan.agent!r})", retryable=False))
            return
        self._new_turn(parent)

    def _turn_done(self, parent: Node, loop: LoopState, turn: Node, at: float) -> None:
        out: dict[str, Any] = turn.output if isinstance(turn.output, dict) else {}
        said = out.get("message")
        message: dict[str, Any] = dict(said) if isinstance(said, dict) else {"role": "assistant", "content": ""}
        if out.get("final"):
            parent.output = out.get("value")
            self._end_loop(parent, SUCCEEDED, at)
            return
        calls = message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else []
        if not calls:
            self._end_loop(parent, FAILED, at, StepError(
                "InvalidModelOutput", f"turn {turn.turn}: neither an answer nor a tool call", retryable=False))
            return
        if loop.calls + len(calls) > loop.plan.max_tool_calls:
            self._end_loop(parent, FAILED, at, StepError(
                "MaxToolCalls", f"turn {turn.turn} asked for {len(calls)} tool call(s) after {loop.calls}: more than "
                f"loop.maxToolCalls {loop.plan.max_tool_calls} (Agent {loop.plan.agent!r})", retryable=False))
            return
        loop.messages.append(message)
        runnable: list[Node] = []
        for i, raw in enumerate(calls):
            call = Node(f"{turn.id}/call-{i + 1}", parent.plan, state=parent.state)
            call.parent = parent.id
            given = raw.get("function") if isinstance(raw, dict) else None
            function: dict[str, Any] = given if isinstance(given, dict) else {}
            name = str(function.get("name") or "")
            call.call = {"id": str(raw.get("id") or f"call-{i + 1}") if isinstance(raw, dict) else f"call-{i + 1}",
                         "name": name, "arguments": function.get("arguments")}
            self.nodes[call.id] = call
            loop.open.append(call)
            loop.calls += 1
            error = self._check_call(loop, call, name, function.get("arguments"))
            if error is not None:
                call.error = error
                call.message = f"{error.type}: {error.message}"
                self._terminal(call, FAILED, at)
            else:
                runnable.append(call)
        if runnable:
            first, rest = (runnable, []) if loop.plan.parallel else (runnable[:1], runnable[1:])
            self._queue.extend(first)
            loop.waiting.extend(rest)
        else:
            self._maybe_next_turn(parent, loop, at)

    def _check_call(self, loop: LoopState, call: Node, name: str, arguments: Any) -> StepError | None:
        """Why the model's call cannot run (it is told, and may do better); None: it runs."""
        tool, member = loop.plan.resolve(name)
        if tool is None:
            server = name.partition("__")[0]
            if name in loop.plan.denied or server in loop.plan.denied:
                return StepError("ToolNotAllowed", loop.plan.denied.get(name) or loop.plan.denied[server], False)
            if member is not None and server in loop.plan.tools:
                granted = ", ".join(loop.plan.tools[server].function.get("mcpTools") or [])
                return StepError("ToolNotAllowed", f"tool {member!r} of MCP server {server!r} is not granted "
                                 f"(granted: {granted})", False)
            offered = ", ".join(t.name + ("__*" if t.kind == "mcp" else "") for t in loop.plan.tools.values())
            return StepError("UnknownTool", f"there is no tool {name!r} (the tools offered: {offered or 'none'})",
                             False)
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else arguments
        except (ValueError, RecursionError) as exc:
            return StepError("InvalidArguments", f"the arguments of {name} are not JSON: {exc}"[:2000], False)
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return StepError("InvalidArguments", f"the arguments of {name} must be a JSON object, got "
                             f"{type(args).__name__}", False)
        try:  # what json.loads takes that JSON has not: NaN, Infinity, integers past 64 bits, lone surrogates, depth
            check_json(args, "arguments")
        except (TypeError, ValueError) as exc:
            return StepError("InvalidArguments", f"the arguments of {name} cannot be used: {exc}"[:2000], False)
        if tool.kind == "agent" and loop.depth + 1 > loop.max_depth:
            return StepError("DelegationTooDeep", f"{name} would run an agent {loop.depth + 1} delegations down, "
                             f"deeper than the step's Agent allows (loop.maxDepth {loop.max_depth})", False)
        call.inputs = args
        assert call.call is not None
        call.call.update(kind=tool.kind, agent=tool.agent, tool=tool.name, member=member)
        call.gate = tool.gate()
        return None

    def _end_loop(self, node: Node, phase: str, at: float, error: StepError | None = None) -> None:
        """End ``node``'s loop: its unfinished turns and calls stop (running ones are cancelled), then the node.

        decide() then records the end as LoopFinished: what readers of the journal alone (history, episodes,
        diff) see of the loop's node, which the engine itself derives from its turns."""
        self._active_loops.pop(node.id, None)
        self._loops_ended[node.id] = node
        for child in self._descendants(node):
            if child.phase in TERMINAL:
                continue
            if child.phase in (RUNNING, WAITING) and self.stop_reason is None:
                self._to_cancel[child.id] = None  # decide() cancels it (its pod or task)
            else:  # not started yet, or the run is stopping (its _stop cancels what runs)
                self._terminal(child, CANCELLED, at, "its agent loop ended")
                self._active_loops.pop(child.id, None)
        if node.loop is not None:
            node.loop.waiting.clear()
            if phase == SUCCEEDED and self._carries(node.loop):
                self._remember(node, node.loop)
        if phase == FAILED:
            error = error or StepError("Failed", "the agent loop failed", retryable=False)
            node.error = error
            node.message = f"{error.type}: {error.message}"
        self._finish_node(node, phase, at)

    # ------------------------------------------------------------ plan steps
    #
    # A plan step (kind plan, agentflow.engine.planner) runs nothing itself: PlanStarted makes it Running and
    # queues its planning attempt ``NODE/plan1`` (kind plan: the executor asks the step's Agent for a plan, checks
    # it like a manifest and asks for repairs). When that attempt has ended, decide() checks the plan again
    # (check_plan) and records PlanAccepted (its steps become nodes ``NODE/p1/NAME``, run in dependsOn order) or
    # PlanRefused (the fallback runs: a state machine of spec.fallbackMachines, ``NODE/fallback/STATE#n``, or an
    # approval ``NODE/approval``; without one the step fails with the reasons). With planner.replan, after every
    # ``every`` finished steps no further step starts; once none runs, a planning attempt ``NODE/planN`` gets the
    # results so far and the steps not started, and its plan (PlanAccepted, revision N) replaces those steps; a
    # refused revision (PlanRefused replan) leaves the plan as it was. At most ``max`` revisions.

    def _start_plan(self, node: Node, emit: Callable[..., None]) -> None:
        assert node.plan.planner is not None
        try:
            inputs = node.plan.inputs.render(self.context(node))
        except ExpressionError as exc:
            emit(E.step_failed, node.id, attempt=node.attempt,
                 error=StepError("ExpressionError", f"inputs: {exc}", False).to_dict())
            return
        ref = node.plan.spec.agent_ref
        emit(E.plan_started, node.id, step=node.key, attempt=node.attempt + 1, agent=ref.name if ref else None,
             inputs=inputs)

    def _on_plan_started(self, ev: Event) -> None:
        node_id = str(ev.node)
        node = self._node(node_id) if node_id in self.plan.steps else self.nodes[node_id]
        assert node.plan.planner is not None
        node.phase = RUNNING
        node.attempt = int(ev.data.get("attempt", 1))
        node.inputs = ev.data.get("inputs")
        if node.started_at is None:
            node.started_at = ev.at
        node.planning = PlanningState(node.plan.planner, node.inputs)
        self._active_plans[node.id] = node
        self._admit(node)
        self._ask(node, node.planning)

    def _ask(self, node: Node, planning: PlanningState) -> None:
        """Queue a planning attempt ``NODE/planN``."""
        planning.asks += 1
        ask = Node(f"{node.id}/plan{planning.asks}", node.plan, state=node.state)
        ask.parent = node.id
        ask.inputs = node.inputs if isinstance(node.inputs, dict) else {"goal": node.inputs}
        planning.asking = ask
        self.nodes[ask.id] = ask
        self._queue.append(ask)

    def _plan_request_context(self, parent: Node, planning: PlanningState, node: Node) -> dict[str, Any]:
        if node.planned is None:  # a planning attempt
            context: dict[str, Any] = {"ask": planning.asks, "revision": planning.revision,
                                       "policy": planning.policy.brief()}
            if planning.revision:
                context["results"] = {name: {"phase": n.phase, "output": n.output} for name, n in planning.steps.items()
                                      if n.phase in TERMINAL}
                context["remaining"] = [n.planned for n in planning.steps.values() if n.phase == PENDING]
            return {"planning": context}
        ref = node.planned.get("agentRef")
        return {"planned": dict(node.planned), **({"agent": ref["name"]} if isinstance(ref, dict) else {})}

    def _plan_context(self, node: Node) -> dict[str, Any]:
        """What a step of a plan (or of its fallback) sees: the run's inputs, and its plan's steps by name."""
        ctx = self.context()
        parent = self.nodes[str(node.parent)]
        if parent.planning is not None:
            steps = dict(self.step_context)
            steps.update({name: {"phase": n.phase, "output": n.output} for name, n in parent.planning.steps.items()
                          if n.phase in TERMINAL})
            ctx["steps"] = steps
        return ctx

    def _record_plans(self, emit: Callable[..., None]) -> None:
        for node_id, node in list(self._plans_due.items()):
            self._plans_due.pop(node_id, None)
            planning = node.planning
            if planning is None or node.phase in TERMINAL or planning.due is None:
                continue
            ask, planning.due = planning.due, None
            replan = planning.revision > 0
            number = int(ask.id.rsplit("/plan", 1)[1])
            if ask.phase != SUCCEEDED:
                error = ask.error or StepError("Failed", f"the planning attempt {ask.phase.lower()}")
                emit(E.plan_refused, node_id, ask=number, replan=replan,
                     errors=[f"the planning attempt failed: {error.type}: {error.message}"])
                continue
            out = ask.output if isinstance(ask.output, dict) else {}
            if out.get("accepted") is False:
                errors = [str(e) for e in out.get("errors") or ()][:50] or ["the planner gave no valid plan"]
                emit(E.plan_refused, node_id, ask=number, replan=replan, errors=errors)
                continue
            plan = out.get("plan") if "plan" in out else ask.output
            started = [name for name, n in planning.steps.items() if n.phase != PENDING]
            estimate = out.get("estimateUsd")
            steps, errors = check_plan(plan, planning.policy, done=started,
                                       estimate_usd=float(estimate) if isinstance(estimate, (int, float)) else None)
            bodies = [planned_spec(step) for step in steps] if not errors else []
            for i, body in enumerate(bodies):
                try:
                    planned_step_plan(body, node.plan)
                except (ValueError, PlanError) as exc:
                    errors.append(f"plan.steps[{i}]: {' '.join(str(exc).split())[:300]}")
            if errors:
                emit(E.plan_refused, node_id, ask=number, replan=replan, errors=errors[:50])
                continue
            emit(E.plan_accepted, node_id, ask=number, revision=planning.revision + 1, steps=bodies,
                 estimateUsd=estimate, replaced=[n for n, s in planning.steps.items() if s.phase == PENDING])

    def _on_plan_finished(self, ev: Event) -> None:
        self._plans_ended.pop(str(ev.node), None)  # a record of what the plan's events already decided

    def _on_plan_accepted(self, ev: Event) -> None:
        node = self.nodes[str(ev.node)]
        planning = node.planning
        if planning is None or node.phase in TERMINAL:
            return
        planning.revision = int(ev.data["revision"])
        planning.holding = False
        if planning.revision > 1:
            planning.replans += 1
        for name in list(ev.data.get("replaced") or ()):  # a revision replaces the steps not started
            old = planning.steps.pop(name, None)
            planning.waiting.pop(name, None)
            if old is not None and old.phase == PENDING:
                self._terminal(old, SKIPPED, ev.at, f"replaced by plan revision {planning.revision}")
        for body in ev.data.get("steps") or ():
            name = str(body["name"])
            child = Node(f"{node.id}/p{planning.revision}/{name}", planned_step_plan(body, node.plan),
                         state=node.state)
            child.parent = node.id
            child.planned = dict(body)
            self.nodes[child.id] = child
            planning.steps[name] = child
            planning.waiting[name] = {str(d) for d in body.get("dependsOn") or ()}
        self._release(node, planning, ev.at)

    def _on_plan_refused(self, ev: Event) -> None:
        node = self.nodes[str(ev.node)]
        planning = node.planning
        if planning is None or node.phase in TERMINAL:
            return
        errors = [str(e) for e in ev.data.get("errors") or ()]
        if ev.data.get("replan"):  # a checkpoint's revision was refused: the plan goes on as it was
            planning.replans += 1
            planning.holding = False
            self._release(node, planning, ev.at)
            return
        policy = planning.policy
        machine = self.plan.machines.get(policy.fallback_machine or "")
        if policy.fallback == "stateMachine" and machine is not None:
            planning.machine = machine.name
            self._enter_fallback(node, planning, machine.initial, None, ev.at)
        elif policy.fallback == "approval" and node.plan.fallback_approval is not None:
            approval = Node(f"{node.id}/approval", node.plan.fallback_approval, state=node.state)
            approval.parent = node.id
            approval.planned = {"name": node.plan.name, "kind": "approval"}
            self.nodes[approval.id] = approval
            planning.fallback = approval
            self._queue.append(approval)
        else:
            self._end_plan(node, FAILED, ev.at, StepError(
                "PlanRefused", f"no valid plan after {policy.repairs} repair(s) and no fallback: "
                + "; ".join(errors[:10]), retryable=False))

    def _release(self, node: Node, planning: PlanningState, at: float) -> None:
        """Queue the steps of the plan whose dependencies have all succeeded; end the plan when all have ended."""
        if planning.holding:
            return
        for name, deps in list(planning.waiting.items()):
            if any(planning.steps[d].phase != SUCCEEDED for d in deps if d in planning.steps):
                continue
            del planning.waiting[name]
            self._queue.append(planning.steps[name])
        if not planning.waiting and all(n.phase in TERMINAL for n in planning.steps.values()):
            needed = {d for n in planning.steps.values() for d in (n.planned or {}).get("dependsOn") or ()}
            node.output = {name: n.output for name, n in planning.steps.items()
                           if name not in needed and n.phase == SUCCEEDED}
            self._end_plan(node, SUCCEEDED, at)

    def _plan_child_done(self, node: Node, planning: PlanningState, child: Node, at: float) -> None:
        if child is planning.asking:
            if child.phase in TERMINAL:
                planning.asking = None
                planning.due = child
                self._plans_due[node.id] = node
            return
        if child is planning.fallback:
            self._fallback_done(node, planning, child, at)
            return
        if child.phase != SUCCEEDED:
            name = child.id.rsplit("/", 1)[-1]
            why = child.message or child.phase.lower()
            self._end_plan(node, FAILED, at, StepError(
                child.error.type if child.error is not None else "PlanStepFailed",
                f"step {name} of plan revision {planning.revision} ({child.id}): {why}", retryable=False))
            return
        planning.since += 1
        policy = planning.policy
        if (policy.replan_every is not None and planning.since >= policy.replan_every
                and planning.replans < policy.replan_max and planning.waiting):
            planning.since = 0
            planning.holding = True  # a checkpoint: the planner answers once nothing of the plan runs
        if planning.holding:
            if planning.asking is None and all(n.phase in TERMINAL for name, n in planning.steps.items()
                                               if name not in planning.waiting):
                self._ask(node, planning)
            return
        self._release(node, planning, at)

    def _enter_fallback(self, node: Node, planning: PlanningState, target: str, last: Node | None,
                        at: float) -> None:
        machine = self.plan.machines[str(planning.machine)]
        state = machine.states[target]
        visit = planning.visits.get(target, 0) + 1
        if visit > state.max_visits:
            self._end_plan(node, FAILED, at, StepError("PlanFallbackFailed", f"fallback {machine.name}: state "
                           f"{target} would be entered {visit} times, more than its maxVisits {state.max_visits}",
                           False))
            return
        planning.visits[target] = visit
        planning.path.append(target)
        if state.step is None:
            if state.final is not None:
                self._fallback_final(node, state, last, at)
            else:
                self._fallback_transition(node, planning, state, SUCCEEDED, last, at)
            return
        visit_node = Node(f"{node.id}/fallback/{target}#{visit}", dataclasses.replace(state.step, name=node.plan.name),
                          state=node.state)
        visit_node.parent = node.id
        visit_node.planned = state.step.spec.dump()
        self.nodes[visit_node.id] = visit_node
        planning.fallback = visit_node
        self._queue.append(visit_node)

    def _fallback_final(self, node: Node, state: StatePlan, last: Node | None, at: float) -> None:
        output = last.output if last is not None else None
        if state.final == FAILED:
            self._end_plan(node, FAILED, at, StepError("PlanFallbackFailed", f"the fallback reached final state "
                                                       f"{state.name}, which fails", False))
            return
        machine = node.planning.machine if node.planning is not None else None
        node.output = {"fallback": machine, "state": state.name, "output": output}
        self._end_plan(node, SUCCEEDED, at)

    def _fallback_done(self, node: Node, planning: PlanningState, child: Node, at: float) -> None:
        planning.fallback = None
        if planning.machine is None:  # the approval
            if child.phase == SUCCEEDED:
                node.output = {"fallback": "approval", "decision": child.output}
                self._end_plan(node, SUCCEEDED, at)
            else:
                self._end_plan(node, FAILED, at, StepError(
                    child.error.type if child.error else "Rejected",
                    f"no valid plan, and the fallback approval: {child.message or child.phase.lower()}", False))
            return
        state = self.plan.machines[planning.machine].states[planning.path[-1]]
        if state.final is not None:
            if child.phase != SUCCEEDED:
                self._end_plan(node, FAILED, at, StepError("PlanFallbackFailed", f"fallback state {state.name}: "
                                                           f"{child.message or child.phase.lower()}", False))
            else:
                self._fallback_final(node, state, child, at)
            return
        self._fallback_transition(node, planning, state, child.phase, child, at)

    def _fallback_transition(self, node: Node, planning: PlanningState, state: StatePlan, phase: str,
                             last: Node | None, at: float) -> None:
        on = "error" if phase != SUCCEEDED else "success"
        ctx = self.context()
        ctx["output"] = last.output if last is not None else None
        error = last.error if last is not None else None
        ctx["error"] = error.to_dict() if error is not None else None
        for t in state.transitions:
            if t.on != on:
                continue
            try:
                if t.when is None or t.when.truthy(ctx):
                    self._enter_fallback(node, planning, t.target, last, at)
                    return
            except ExpressionError as exc:
                self._end_plan(node, FAILED, at, StepError("ExpressionError", f"fallback state {state.name}: "
                                                           f"transition to {t.target}: {exc}", False))
                return
        why = f"state {state.name} {'failed' if on == 'error' else 'succeeded'} and no transition matched"
        self._end_plan(node, FAILED, at, StepError("PlanFallbackFailed", f"fallback {planning.machine}: {why}", False))

    def _end_plan(self, node: Node, phase: str, at: float, error: StepError | None = None) -> None:
        """End ``node``'s plan: what of it has not ended stops (running attempts are cancelled), then the node."""
        self._active_plans.pop(node.id, None)
        self._plans_due.pop(node.id, None)
        self._plans_ended[node.id] = node
        for child in self._descendants(node):
            if child.phase in TERMINAL:
                continue
            if child.phase in (RUNNING, WAITING) and self.stop_reason is None:
                self._to_cancel[child.id] = "its plan step ended"
            else:
                self._terminal(child, CANCELLED, at, "its plan step ended")
        if phase == FAILED:
            error = error or StepError("Failed", "the plan failed", retryable=False)
            node.error = error
            node.message = f"{error.type}: {error.message}"
        self._finish_node(node, phase, at)

    # ------------------------------------------------------------ behavior trees (TreeHost)

    def run_leaf(self, step: str, at: float) -> str | None:
        """A tree leaf runs (again): its node ``NAME#n`` is queued like a state visit's."""
        if len(self.nodes) >= MAX_RUN_NODES:
            return None
        visit = self.leaf_runs.get(step, 0) + 1
        self.leaf_runs[step] = visit
        node = Node(f"{step}#{visit}", self.plan.leaves[step], state=step)
        self.nodes[node.id] = node
        self._queue.append(node)
        return node.id

    def cancel_leaf(self, node_id: str, reason: str) -> None:
        self._to_cancel[node_id] = reason

    def tree_timer(self, at: float, tree_node: str, entry: int) -> None:
        self._push_timer(at, tree_node, entry, "tree")

    # ------------------------------------------------------------ bookkeeping

    def _push_timer(self, at: float, node_id: str, attempt: int, kind: str) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, node_id, attempt, kind))

    def _terminal(self, node: Node, phase: str, at: float, message: str | None = None) -> None:
        node.phase = phase
        node.finished_at = at
        if message is not None:
            node.message = message
        self._running.pop(node.id, None)

    def _finish_node(self, node: Node, phase: str, at: float) -> None:
        self._terminal(node, phase, at)
        if node.parent is not None:
            self._child_done(node, at)
            return
        if node.state is not None:
            self.step_context[node.state] = {"phase": phase, "output": node.output}
            if self.tree is not None:
                if self.stop_reason is None:
                    self.tree.leaf_done(node.id, phase, at, node.message)
                return
            self._transition_from = (node.state, phase, node.output, node.error)
            return
        step = self.steps[node.plan.name]
        if node.index is None:
            self._step_done(step, phase, node.output, at)
            return
        step.done += 1
        if phase == FAILED:
            step.failing = True
            for other in step.items or ():
                if other is not node and other.phase not in TERMINAL:
                    self._to_cancel[other.id] = None
            self._maybe_fail_fan_out(step, at)
            return
        if step.failing:
            self._maybe_fail_fan_out(step, at)
            return
        if step.done == step.count:
            outputs = [n.output for n in step.items or ()]
            self._step_done(step, SUCCEEDED, outputs, at)
        elif step.next_item < step.count and step.items is not None:
            self._queue.append(step.items[step.next_item])
            step.next_item += 1

    def _maybe_fail_fan_out(self, step: StepState, at: float) -> None:
        if all(n.phase in TERMINAL for n in step.items or ()):
            failed = next(n for n in step.items or () if n.phase == FAILED)
            step_node = self.nodes.get(step.plan.name)
            if step_node is None:
                step_node = Node(step.plan.name, step.plan)
                self.nodes[step_node.id] = step_node
            step_node.message = failed.message
            self._step_done(step, FAILED, [n.output for n in step.items or ()], at)

    def _step_done(self, step: StepState, phase: str, output: Any, at: float) -> None:
        if step.phase in TERMINAL:
            return
        step.phase = phase
        step.output = output
        if phase in (FAILED, CANCELLED):
            step.blocked = True
        plan = step.plan
        self.step_context[plan.name] = {"phase": phase, "output": output}
        if phase == FAILED and not plan.continue_on_failure:
            self.failed = True
            if self.failure is None:
                node = self.nodes.get(plan.name)
                self.failure = f"step {plan.name}: {node.message if node else 'failed'}"
        for dependent in plan.dependents:
            st = self.steps[dependent]
            st.remaining -= 1
            if st.remaining == 0:
                self._ready.append(dependent)
        self._pending -= 1
        if not plan.deferred:
            self._main_pending -= 1
            if self._main_pending == 0:
                self._ready.extend(n for n, p in self.plan.steps.items() if p.deferred)

    # ------------------------------------------------------------------ decide

    def context(self, node: Node | None = None) -> dict[str, Any]:
        """What expressions see (see agentflow.models.workflow)."""
        ctx: dict[str, Any] = {
            "inputs": self.plan.inputs,
            "steps": self.step_context,
            "workflow": {"name": self.plan.name, "namespace": self.plan.namespace or "", "runId": self.run_id},
        }
        if node is not None and node.index is not None:
            ctx["item"] = node.item
            ctx["index"] = node.index
        return ctx

    def decide(self, now: float, capacity: int | None = None) -> Decision:
        """What to do now. The returned events are already applied.

        ``capacity``: at most this many new attempts may start now (a namespace quota); the others stay
        Pending, in order, for a later decision. None: no limit beyond the plan's parallelism.
        """
        events: list[Event] = []
        start: list[StepRequest] = []
        cancel: list[str] = []
        apply = self._apply

        def emit(type_: EventType, node: str | None = None, **data: Any) -> None:
            event = Event(type_, node, data, now)
            apply[type_](event)
            events.append(event)

        if self.finished:
            return Decision(finished=True)
        if self.started_at is None:
            gates: dict[str, Any] = {"gates": {k: g.to_dict() for k, g in self.plan.gates.items()}} \
                if self.plan.gates else {}
            if self.plan.parallelism is not None:
                gates["parallelism"] = self.plan.parallelism
            if self.plan.loops:
                gates["loops"] = {k: loop.to_dict() for k, loop in self.plan.loops.items()}
            if self.plan.prompts:
                gates["prompts"] = {k: dict(v) for k, v in self.plan.prompts.items()}
            emit(E.run_started, workflow=self.plan.name, inputs=dict(self.plan.inputs), seed=self.seed,
                 specHash=self.plan.spec_hash, **gates)
        if self.deadline is not None and now >= self.deadline and self.stop_reason is None:
            emit(E.run_timed_out, timeoutSeconds=self.plan.timeout)
        if self._timers and self._timers[0][0] <= now:
            self._fire_timers(now, emit, cancel)
        if self.stop_reason is not None and not self._stopping_done:
            self._stop(emit, cancel)
        for node in list(self._retry.values()) if self._retry else ():
            delay = retry_delay(node.plan.retry.backoff, node.attempt, self.seed, node.id)
            emit(E.retry_scheduled, node.id, attempt=node.attempt + 1, notBefore=now + delay, error=(
                node.error.to_dict() if node.error else None))
        for node in list(self._review.values()) if self._review else ():
            if node.phase == WAITING:
                error = node.error or StepError(QUARANTINED, "quarantined")
                emit(E.approval_requested, node.id, step=node.key, review={"attempt": node.attempt,
                                                                          "error": error.to_dict()},
                     message=f"attempt {node.attempt} of step {node.key} was quarantined for review: "
                             f"{error.message}; approve to run it again with the screening flagging instead of "
                             "stopping, or reject to fail it", approvers=[], deadline=None)
            self._review.pop(node.id, None)
        for node_id in list(self._to_cancel) if self._to_cancel else ():
            why = self._to_cancel.pop(node_id)
            node = self.nodes[node_id]
            if node.phase not in TERMINAL:
                if node.phase in (RUNNING, WAITING):
                    cancel.append(node_id)
                emit(E.step_cancelled, node_id, reason=why or ("its agent loop ended" if node.parent is not None
                                                               else "another item of the step failed"))
        while True:
            if self.plan.mode == "dag":
                if self._ready:
                    self._admit_ready(emit)
            elif self.plan.mode == "fsm":
                self._advance_fsm(emit)
            if self._plans_due:
                self._record_plans(emit)
            if not self.suspended and self._queue:
                self._schedule(now, emit, start, capacity)
            # A step that failed while being scheduled (inputs or an approval message that cannot be rendered)
            # made steps ready or a transition due: take them now, not at a later decision nothing would ask for.
            # (A behavior tree reacts to a leaf's end as the event is applied: one pass.)
            if self.suspended or self.plan.mode == "tree" or not (
                    self._ready if self.plan.mode == "dag" else self._transition_from):
                break
        if self._loops_ended:
            self._record_ended_loops(emit)
        if self._plans_ended:
            for node in list(self._plans_ended.values()):
                emit(E.plan_finished, node.id, attempt=node.attempt, phase=node.phase, output=node.output,
                     revisions=node.planning.revision if node.planning is not None else 0,
                     **({"error": node.error.to_dict()} if node.phase == FAILED and node.error is not None else {}))
        self._maybe_finish(emit)
        wake_at = self._wake_at() if self._timers or self.deadline is not None else None
        if not self.finished and not start and not self._running:
            stuck = self._stuck()
            if stuck:
                emit(E.run_finished, phase=FAILED, outputs=None, stuck=stuck, reason=(
                    f"stuck: {', '.join(stuck)} can never finish: nothing runs, is ready, or waits for a timer or "
                    "a human (`agentflow validate` names the cause)"))
                wake_at = None
        return Decision(tuple(events), tuple(start), tuple(cancel), wake_at, self.finished)

    def _stuck(self) -> list[str]:
        """The steps (or states) a run that can no longer move waits on; empty while anything can still happen.

        Called when nothing runs; cheap checks first, the scan of every node last (it finds a waiting one
        at once when the run waits for a human)."""
        if (self.started_at is None or self.suspended or self._retry or self._review or self._ready or self._to_cancel
                or self._loops_ended or self._plans_due or self._plans_ended):
            return []
        if self._enter is not None or self._transition_from is not None:
            return []
        if self._timers:  # _wake_at dropped the stale ones: a live retry or timeout is due
            return []
        if any(n.phase == PENDING for n in self._queue):  # held back by parallelism or a quota
            return []
        if any(n.phase == WAITING for n in self.nodes.values()):
            return []
        if self.plan.mode == "dag":
            return [name for name, st in self.steps.items() if st.phase not in TERMINAL]
        waiting = [n.id for n in self.nodes.values() if n.phase not in TERMINAL]
        if self.tree is not None:
            return waiting or ["the behavior tree"]
        return waiting or [f"state machine at {self.path[-1] if self.path else self.plan.initial}"]

    def _fire_timers(self, now: float, emit: Callable[..., None], cancel: list[str]) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, node_id, attempt, kind = heapq.heappop(self._timers)
            if kind == "tree":  # a timeout decorator: StepTimedOut of the tree node (its subtree stops)
                if self.tree is not None and self.tree.is_timer_live(node_id, attempt) and self.stop_reason is None:
                    emit(E.step_timed_out, node_id, attempt=attempt)
                continue
            node = self.nodes.get(node_id)
            if node is None or node.attempt != attempt:
                continue
            if kind == "retry" and node.phase == RETRYING:
                node.phase = PENDING
                self._queue.append(node)
            elif kind == "timeout" and node.phase in (RUNNING, WAITING) and not self._in_review(node):
                if node.phase == RUNNING:
                    cancel.append(node_id)
                emit(E.step_timed_out, node_id, attempt=attempt)

    def _wake_at(self) -> float | None:
        while self._timers:
            _, _, node_id, attempt, kind = self._timers[0]
            node = self.nodes.get(node_id)
            if kind == "tree":
                if self.tree is not None and self.tree.is_timer_live(node_id, attempt):
                    break
                heapq.heappop(self._timers)
                continue
            live = node is not None and node.attempt == attempt and (
                (kind == "retry" and node.phase == RETRYING)
                or (kind == "timeout" and node.phase in (RUNNING, WAITING) and not self._in_review(node))
            )
            if live:
                break
            heapq.heappop(self._timers)
        deadline = self.deadline if self.stop_reason is None else None
        candidates = [t for t in (self._timers[0][0] if self._timers else None, deadline) if t is not None]
        return min(candidates) if candidates and not self.finished else None

    def _in_review(self, node: Node) -> bool:
        """Whether ``node`` waits for the review of a quarantined attempt (its attempt's timeout no longer applies)."""
        return node.review or node.id in self._review

    def _stop(self, emit: Callable[..., None], cancel: list[str]) -> None:
        """Cancel everything but exit handlers (run on failure/always), which still run."""
        self._stopping_done = True
        reason = self.reason or "cancelled"
        for loop_node in list(self._active_loops.values()) + list(self._active_plans.values()):  # their parts too
            cancel.extend(n.id for n in self._descendants(loop_node) if n.phase in (RUNNING, WAITING))
        if self.tree is not None:  # every leaf not finished: running, waiting for a human, retrying or queued
            for node in list(self.nodes.values()):
                if node.parent is None and node.phase not in TERMINAL:
                    if node.phase in (RUNNING, WAITING) and node.loop is None and node.planning is None:
                        cancel.append(node.id)
                    emit(E.step_cancelled, node.id, reason=reason)
            self._queue.clear()
            return
        if self.plan.mode == "fsm":
            for node in list(self._running.values()):
                if node.parent is None:
                    cancel.append(node.id)
                    emit(E.step_cancelled, node.id, reason=reason)
            for node in [n for n in (*self._active_loops.values(), *self._active_plans.values()) if n.parent is None]:
                emit(E.step_cancelled, node.id, reason=reason)
            self._queue.clear()
            self._enter = None
            return
        for name, step in self.steps.items():
            if step.phase in TERMINAL or step.plan.run_on is not RunOn.success:
                continue
            single = self.nodes.get(name)
            for node in step.items or ([single] if single is not None else []):
                if node.phase in (RUNNING, WAITING):
                    cancel.append(node.id)
            emit(E.step_cancelled, name, reason=reason)

    def _admit_ready(self, emit: Callable[..., None]) -> None:
        while self._ready:
            name = self._ready.popleft()
            step = self.steps[name]
            if step.admitted or step.phase in TERMINAL:
                continue
            plan = step.plan
            if self.stop_reason is not None and plan.run_on is RunOn.success:
                emit(E.step_cancelled, name, reason=self.reason or "cancelled")
                continue
            if plan.run_on is RunOn.success:
                blocker = None
                for dep in plan.deps:
                    if self.steps[dep].blocked:
                        blocker = dep
                        break
                if blocker is not None:
                    emit(E.step_skipped, name, blocked=True,
                         reason=f"upstream step {blocker} did not succeed")
                    continue
            elif plan.run_on is RunOn.failure and not self.failed and self.stop_reason is None:
                emit(E.step_skipped, name, reason="runs only when the run has failed")
                continue
            ctx = self.context() if plan.when is not None or plan.for_each is not None else {}
            if plan.when is not None:
                try:
                    go = plan.when.truthy(ctx)
                except ExpressionError as exc:
                    emit(E.step_failed, name, attempt=0, error=StepError("ExpressionError", f"when: {exc}",
                                                                          False).to_dict())
                    continue
                if not go:
                    emit(E.step_skipped, name, reason=f"when was false: {plan.when.text}")
                    continue
            if plan.for_each is not None:
                try:
                    items = plan.for_each.evaluate(ctx)
                except ExpressionError as exc:
                    items = exc
                if not isinstance(items, list):
                    why = f"forEach: {items}" if isinstance(items, ExpressionError) else (
                        f"forEach must give a list, got {type(items).__name__}")
                    emit(E.step_failed, name, attempt=0, error=StepError("ExpressionError", why, False).to_dict())
                    continue
                too_many = self._too_many_items(len(items))
                if too_many is not None:
                    emit(E.step_failed, name, attempt=0, error=StepError("TooManyItems", too_many, False).to_dict())
                    continue
                emit(E.fan_out, name, items=items, count=len(items))
                continue
            step.admitted = True
            self._queue.append(self._node(name))

    def _too_many_items(self, count: int) -> str | None:
        if count > MAX_FANOUT_ITEMS:
            return (f"forEach gave {count:,} items; a step fans out to at most {MAX_FANOUT_ITEMS:,}: split the list "
                    "over several steps, or batch the items")
        if len(self.nodes) + count > MAX_RUN_NODES:
            return (f"forEach gave {count:,} items, which would take the run past the {MAX_RUN_NODES:,} nodes (steps, "
                    f"items, state visits) a run may hold ({len(self.nodes):,} so far); batch the items")
        return None

    def _advance_fsm(self, emit: Callable[..., None]) -> None:
        """Take due transitions and enter states until a state's step must run (or the run ends)."""
        while not self.finished and self.stop_reason is None and not self.failed:
            if self._transition_from is not None:
                self._take_transition(*self._transition_from)
                self._transition_from = None
            if self._enter is None:
                return
            target = self._enter
            visit = self.visits.get(target, 0) + 1
            limit = self.plan.states[target].max_visits
            if visit > limit:
                self._fsm_fail(f"state {target} would be entered {visit} times, more than its maxVisits {limit}")
                return
            emit(E.state_entered, f"{target}#{visit}", state=target, visit=visit)
            if self._transition_from is None:
                return

    def _fsm_fail(self, why: str) -> None:
        self.failed = True
        self.failure = why
        self._enter = None

    def _take_transition(self, name: str, phase: str, output: Any, error: StepError | None) -> None:
        state = self.plan.states[name]
        if state.final is not None:
            self._fsm_final = state.final if phase == SUCCEEDED else FAILED
            if phase != SUCCEEDED:
                self.failure = f"final state {name}: {error.type}: {error.message}" if error else name
            return
        on = "error" if phase == FAILED else "success"
        ctx = self.context()
        ctx["output"] = output
        ctx["error"] = error.to_dict() if error else None
        for t in state.transitions:
            if t.on != on:
                continue
            try:
                if t.when is None or t.when.truthy(ctx):
                    self._enter = t.target
                    return
            except ExpressionError as exc:
                self._fsm_fail(f"state {name}: transition to {t.target}: {exc}")
                return
        if on == "error" and error is not None:
            self._fsm_fail(f"state {name} failed ({error.type}: {error.message}) and has no error transition")
        else:
            self._fsm_fail(f"no transition of state {name} matched")

    def _schedule(self, now: float, emit: Callable[..., None], start: list[StepRequest],
                  capacity: int | None = None) -> None:
        limit = self.parallelism
        queue = self._queue
        while queue:
            node = queue[0]
            if node.phase != PENDING:
                queue.popleft()
                continue
            if node.plan.kind is StepKind.plan and node.parent is None:  # it runs its planning attempt and plan
                queue.popleft()
                self._start_plan(node, emit)
                continue
            loop = self._loop_of(node)
            if loop is not None:  # the loop's node runs nothing itself: its turns and calls are nodes of their own
                queue.popleft()
                self._start_loop(node, loop, now, emit)
                continue
            is_approval = node.plan.kind is StepKind.approval
            if node.parent is not None:
                gate = node.gate if not node.approved else None
                if node.planned is not None and self.gates and not node.approved and node.plan.kind is StepKind.tool:
                    ref = node.planned.get("agentRef")
                    agent = str(ref["name"]) if isinstance(ref, dict) else None
                    gate = self.gates.get(gate_key(node.key, agent, str(node.planned.get("tool"))))
            else:
                gate = self.gates.get(node.key) if self.gates and not node.approved else None
            if not is_approval and gate is None and (
                    (limit is not None and len(self._running) >= limit)
                    or (capacity is not None and len(start) >= capacity)):
                return
            queue.popleft()
            ctx = self._plan_context(node) if node.planned is not None else self.context(node) if (
                node.parent is None and not (node.plan.inputs.is_constant and node.plan.approval_message is None)
            ) else None
            if is_approval:
                try:
                    message = node.plan.approval_message.render(ctx) if node.plan.approval_message and ctx else ""
                except ExpressionError as exc:  # e.g. a field of an output that is null: fails the step, not the run
                    emit(E.step_failed, node.id, attempt=node.attempt,
                         error=StepError("ExpressionError", f"approval.message: {exc}", False).to_dict())
                    continue
                approval = node.plan.spec.approval
                timeout = approval.timeout_seconds if approval else None
                emit(E.approval_requested, node.id, step=node.plan.name, message=message,
                     approvers=list(approval.approvers) if approval else [],
                     deadline=now + timeout if timeout else None)
                continue
            try:
                if node.parent is not None and node.planned is None:  # a loop's turn or call, a planning attempt
                    inputs = node.inputs if isinstance(node.inputs, dict) else {}
                else:
                    inputs = node.plan.inputs.render(ctx) if ctx is not None else node.plan.inputs.render({})
            except ExpressionError as exc:
                emit(E.step_failed, node.id, attempt=node.attempt,
                     error=StepError("ExpressionError", f"inputs: {exc}", False).to_dict())
                continue
            if gate is not None:
                emit(E.approval_requested, node.id, step=node.key, gate=gate.to_dict(), inputs=inputs,
                     message=f"step {node.key} calls tool {gate.tool} (requiresApproval in ToolPolicy "
                             f"{gate.policy})", approvers=[],
                     deadline=now + gate.timeout_seconds if gate.timeout_seconds else None)
                continue
            timeout = node.plan.timeout
            override = {"screening": node.screening} if node.screening is not None else {}
            if node.call is not None:
                override["tool"] = node.call["name"]
            emit(E.step_scheduled, node.id, step=node.state or node.plan.name,
                 kind="tool" if node.call is not None else node.plan.kind.value,
                 attempt=node.attempt + 1, inputs=inputs, deadline=now + timeout if timeout else None, **override)
            if node.request is not None:
                start.append(node.request)

    def _maybe_finish(self, emit: Callable[..., None]) -> None:
        if self.finished:
            return
        if self.plan.mode == "dag":
            if self._pending > 0:
                return
        elif self.tree is not None:
            if any(n.phase not in TERMINAL for n in self.nodes.values()):
                return
            if self.tree.phase is None and not self.failed and self.stop_reason is None:
                return
            if self.tree.phase == FAILED and not self.failed:
                self.failed = True
                self.failure = f"the behavior tree failed: {self.tree.why}"
        else:
            if any(n.phase not in TERMINAL for n in self.nodes.values()):
                return
            if self._fsm_final is None and not self.failed and self.stop_reason is None:
                return
            if self._fsm_final == FAILED:
                self.failed = True
                self.failure = self.failure or f"reached final state {self.path[-1]}, which fails the run"
        if self.stop_reason == CANCELLED:
            emit(E.run_finished, phase=CANCELLED, outputs=None, reason=self.reason)
            return
        if self.failed:
            emit(E.run_finished, phase=FAILED, outputs=None, reason=self.failure or self.reason)
            return
        try:
            outputs = self._outputs()
        except ExpressionError as exc:
            emit(E.run_finished, phase=FAILED, outputs=None, reason=f"outputs: {exc}")
            return
        emit(E.run_finished, phase=SUCCEEDED, outputs=outputs, reason=None)

    def _outputs(self) -> dict[str, Any]:
        if self.plan.outputs:
            ctx = self.context()
            return {k: e.evaluate(ctx) for k, e in self.plan.outputs.items()}
        if self.tree is not None:  # every leaf whose last run succeeded, by step name
            return {name: ctx["output"] for name, ctx in self.step_context.items() if ctx["phase"] == SUCCEEDED}
        if self.plan.mode == "fsm":
            last = next((n for n in reversed(self.nodes.values()) if n.phase == SUCCEEDED and n.parent is None), None)
            return {str(last.state): last.output} if last is not None else {}
        return {
            name: st.output
            for name, st in self.steps.items()
            if not st.plan.dependents and not st.plan.deferred and st.phase == SUCCEEDED
        }

    # ------------------------------------------------------------------ views

    @property
    def shown_phase(self) -> str:
        """The phase people and applications are shown, the same locally and on a cluster (a Workflow's
        status.phase): Pending, Running, Waiting (a node waits for a human's approval), Suspended, Succeeded, Failed
        or Cancelled. ``phase`` itself stays Running while a node waits or the run is suspended."""
        if self.finished:
            return self.phase
        if self.started_at is None:
            return PENDING
        if self.suspended:
            return "Suspended"
        if any(n.phase == WAITING for n in self.nodes.values()):
            return WAITING
        return RUNNING

    @property
    def progress(self) -> tuple[int, int]:
        """(finished, total) steps; a state machine counts state visits."""
        if self.plan.mode == "dag":
            return len(self.steps) - self._pending, len(self.steps)
        done = sum(1 for n in self.nodes.values() if n.phase in TERMINAL)
        return done, max(done, len(self.nodes))

    def step_phase(self, name: str) -> str:
        return self.steps[name].phase


def _tool_content(call: Node) -> str:
    """What the model is told a call gave: its output as JSON, or the error."""
    if call.phase == SUCCEEDED:
        output = call.output
        return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, sort_keys=True)
    error = call.error
    if call.phase == CANCELLED:
        return f"error: the call was cancelled ({call.message or 'cancelled'})"
    if error is not None and error.type in SCREENED_OUT:  # its message quotes the evidence: not for the model
        return (f"error: {error.type}: the call's output was withheld: it was screened as a prompt injection "
                "(the run's events name the evidence for people)")
    return f"error: {error.type}: {error.message}" if error is not None else f"error: the call {call.phase.lower()}"


SCREENED_OUT = frozenset({"InjectionDetected", "InjectionQuarantined"})
"""Errors of a call whose output was screened out: the model is told that, not the quoted evidence."""


def outputs_of(run: Run) -> Mapping[str, Any]:
    return run.outputs or {}

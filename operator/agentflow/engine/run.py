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

Approval gates (tool steps whose tool has requiresApproval, ``Plan.gates``):
such a node first waits like an approval step (ApprovalRequested with a
``gate``, Waiting, the same timeout and decisions); approved, it goes back
to Pending and runs; rejected or timed out, it fails without running. The
gates are recorded in RunStarted (``gates``) and read back from there, so a
resumed run gates what it gated when it started.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..models.workflow import RunOn, StepKind
from .backoff import retry_delay
from .expressions import ExpressionError
from .plan import Plan, StepPlan, ToolGate
from .values import Decision, Event, EventType, StepError, StepRequest

PENDING = "Pending"
RUNNING = "Running"
WAITING = "Waiting"
RETRYING = "Retrying"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SKIPPED = "Skipped"
CANCELLED = "Cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELLED})

E = EventType


class Node:
    """One schedulable unit: a DAG step, a fan-out item or a state visit."""

    __slots__ = (
        "approved", "attempt", "cost_usd", "deadline", "error", "finished_at", "id", "index", "inputs",
        "item", "message", "output", "phase", "plan", "request", "started_at", "state", "tokens",
    )

    def __init__(self, node_id: str, plan: StepPlan, index: int | None = None, item: Any = None,
                 state: str | None = None) -> None:
        self.id = node_id
        self.plan = plan
        self.index = index
        self.item = item
        self.state = state
        self.phase = PENDING
        self.attempt = 0
        self.deadline: float | None = None
        self.inputs: Any = None
        self.output: Any = None
        self.error: StepError | None = None
        self.message: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.cost_usd = 0.0
        self.tokens = 0
        self.request: StepRequest | None = None
        self.approved = False  # an approval gate of its tool was passed

    @property
    def key(self) -> str:
        """What StepRequest.step says: the state's name for a state visit, else the DAG step's."""
        return self.state or self.plan.name


class StepState:
    """Aggregate state of one DAG step (one node, or many fan-out items)."""

    __slots__ = ("admitted", "blocked", "count", "done", "failing", "items", "next_item", "output",
                 "phase", "plan", "remaining")

    def __init__(self, plan: StepPlan) -> None:
        self.plan = plan
        self.phase = PENDING
        self.remaining = len(plan.deps)
        self.admitted = False
        self.blocked = False
        self.items: list[Node] | None = None
        self.count = 0
        self.next_item = 0
        self.done = 0
        self.failing = False
        self.output: Any = None


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
        self.steps = {name: StepState(p) for name, p in plan.steps.items()}
        self.step_context: dict[str, dict[str, Any]] = {}
        self._ready: deque[str] = deque()
        self._queue: deque[Node] = deque()
        self._timers: list[tuple[float, int, str, int, str]] = []
        self._timer_seq = 0
        self._running: dict[str, Node] = {}
        self._retry: dict[str, Node] = {}
        self._to_cancel: dict[str, None] = {}
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
        self.phase = "Running"
        if self.plan.timeout is not None:
            self.deadline = ev.at + self.plan.timeout
        if self.plan.mode == "dag":
            self._ready.extend(self.plan.roots)
        else:
            self._enter = self.plan.initial

    def _on_scheduled(self, ev: Event) -> None:
        node = self._node(str(ev.node))
        data = ev.data
        node.attempt = int(data["attempt"])
        node.phase = RUNNING
        node.inputs = data.get("inputs")
        node.deadline = data.get("deadline")
        node.request = StepRequest(
            self.run_id, node.id, str(data["step"]), str(data["kind"]), node.attempt, node.inputs or {},
            node.deadline,
        )
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
        node.error = error
        node.message = f"{error.type}: {error.message}"
        self._running.pop(node.id, None)
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
        if ev.data.get("gate") is not None:  # a tool call waiting for its approval: no attempt yet
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
        tokens = int(call.get("input_tokens", 0)) + int(call.get("output_tokens", 0))
        self.cost_usd += cost
        self.tokens += tokens
        node = self.nodes.get(str(ev.node))
        if node is not None:
            node.cost_usd += cost
            node.tokens += tokens

    def _on_cancel_requested(self, ev: Event) -> None:
        if self.stop_reason is None:
            self.stop_reason = CANCELLED
            self.reason = f"cancelled by {ev.data.get('by', 'unknown')}" + (
                f": {ev.data['reason']}" if ev.data.get("reason") else ""
            )

    def _on_run_timed_out(self, ev: Event) -> None:
        if self.stop_reason is None:
            self.stop_reason = "WorkflowTimeout"
            self.reason = f"the workflow ran past its {self.plan.timeout}s timeout"
            self.failed = True

    def _on_suspended(self, ev: Event) -> None:
        self.suspended = True

    def _on_resumed(self, ev: Event) -> None:
        self.suspended = False

    def _on_run_finished(self, ev: Event) -> None:
        self.finished = True
        self.phase = str(ev.data["phase"])
        self.outputs = ev.data.get("outputs")
        self.reason = ev.data.get("reason") or self.reason
        self.finished_at = ev.at

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
        if node.state is not None:
            self.step_context[node.state] = {"phase": phase, "output": node.output}
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
        for node_id in list(self._to_cancel) if self._to_cancel else ():
            del self._to_cancel[node_id]
            node = self.nodes[node_id]
            if node.phase not in TERMINAL:
                if node.phase in (RUNNING, WAITING):
                    cancel.append(node_id)
                emit(E.step_cancelled, node_id, reason="another item of the step failed")
        if self.plan.mode == "dag":
            if self._ready:
                self._admit_ready(emit)
        else:
            self._advance_fsm(emit)
        if not self.suspended and self._queue:
            self._schedule(now, emit, start, capacity)
        self._maybe_finish(emit)
        wake_at = self._wake_at() if self._timers or self.deadline is not None else None
        return Decision(tuple(events), tuple(start), tuple(cancel), wake_at, self.finished)

    def _fire_timers(self, now: float, emit: Callable[..., None], cancel: list[str]) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, node_id, attempt, kind = heapq.heappop(self._timers)
            node = self.nodes.get(node_id)
            if node is None or node.attempt != attempt:
                continue
            if kind == "retry" and node.phase == RETRYING:
                node.phase = PENDING
                self._queue.append(node)
            elif kind == "timeout" and node.phase in (RUNNING, WAITING):
                if node.phase == RUNNING:
                    cancel.append(node_id)
                emit(E.step_timed_out, node_id, attempt=attempt)

    def _wake_at(self) -> float | None:
        while self._timers:
            _, _, node_id, attempt, kind = self._timers[0]
            node = self.nodes.get(node_id)
            live = node is not None and node.attempt == attempt and (
                (kind == "retry" and node.phase == RETRYING)
                or (kind == "timeout" and node.phase in (RUNNING, WAITING))
            )
            if live:
                break
            heapq.heappop(self._timers)
        deadline = self.deadline if self.stop_reason is None else None
        candidates = [t for t in (self._timers[0][0] if self._timers else None, deadline) if t is not None]
        return min(candidates) if candidates and not self.finished else None

    def _stop(self, emit: Callable[..., None], cancel: list[str]) -> None:
        """Cancel everything but exit handlers (run on failure/always), which still run."""
        self._stopping_done = True
        reason = self.reason or "cancelled"
        if self.plan.mode == "fsm":
            for node in list(self._running.values()):
                cancel.append(node.id)
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
                emit(E.fan_out, name, items=items, count=len(items))
                continue
            step.admitted = True
            self._queue.append(self._node(name))

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
        limit = self.plan.parallelism
        queue = self._queue
        while queue:
            node = queue[0]
            if node.phase != PENDING:
                queue.popleft()
                continue
            is_approval = node.plan.kind is StepKind.approval
            gate = self.gates.get(node.key) if self.gates and not node.approved else None
            if not is_approval and gate is None and (
                    (limit is not None and len(self._running) >= limit)
                    or (capacity is not None and len(start) >= capacity)):
                return
            queue.popleft()
            ctx = self.context(node) if not (node.plan.inputs.is_constant and node.plan.approval_message is None) \
                else None
            if is_approval:
                message = node.plan.approval_message.render(ctx) if node.plan.approval_message and ctx else ""
                approval = node.plan.spec.approval
                timeout = approval.timeout_seconds if approval else None
                emit(E.approval_requested, node.id, step=node.plan.name, message=message,
                     approvers=list(approval.approvers) if approval else [],
                     deadline=now + timeout if timeout else None)
                continue
            try:
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
            emit(E.step_scheduled, node.id, step=node.state or node.plan.name, kind=node.plan.kind.value,
                 attempt=node.attempt + 1, inputs=inputs, deadline=now + timeout if timeout else None)
            if node.request is not None:
                start.append(node.request)

    def _maybe_finish(self, emit: Callable[..., None]) -> None:
        if self.finished:
            return
        if self.plan.mode == "dag":
            if self._pending > 0:
                return
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
        if self.plan.mode == "fsm":
            last = next((n for n in reversed(self.nodes.values()) if n.phase == SUCCEEDED), None)
            return {str(last.state): last.output} if last is not None else {}
        return {
            name: st.output
            for name, st in self.steps.items()
            if not st.plan.dependents and not st.plan.deferred and st.phase == SUCCEEDED
        }

    # ------------------------------------------------------------------ views

    @property
    def progress(self) -> tuple[int, int]:
        """(finished, total) steps; a state machine counts state visits."""
        if self.plan.mode == "dag":
            return len(self.steps) - self._pending, len(self.steps)
        done = sum(1 for n in self.nodes.values() if n.phase in TERMINAL)
        return done, max(done, len(self.nodes))

    def step_phase(self, name: str) -> str:
        return self.steps[name].phase


def outputs_of(run: Run) -> Mapping[str, Any]:
    return run.outputs or {}

"""A run's spans from its journal: the run, each attempt, each agent loop, each approval. Pure.

The driver (the local runner, the reconciler) feeds every journal event it appends to :meth:`RunTrace.observe`
and gets back the spans that event ended, with ids from :mod:`agentflow.telemetry.ids`. Times are the
journal's own ``at``, so the spans say what the journal says; nothing here reads a clock. After a restart the
driver replays the journal with ``emit=False`` (start times are learned, nothing is sent twice) and goes on::

    RunStarted .. RunFinished                        invoke_workflow WORKFLOW        parent: none (the root)
    LoopStarted .. LoopFinished (node N, attempt a)  invoke_agent AGENT              parent: the enclosing loop, or
                                                                                     the run
    StepStarted .. StepSucceeded/StepFailed/         invoke_agent AGENT (llm step),  parent: the loop of the turn
      StepTimedOut/StepCancelled                     step N (a loop's turn),         or call (N = L/tK, L/tK/call-J),
                                                     execute_tool TOOL (tool step    or the run
                                                     or a loop's tool call)
    ApprovalRequested .. ApprovalDecided/StepTimedOut/
      StepCancelled/RunFinished                      approval N                      parent: the run

Telemetry observes: nothing here changes what the engine decides, and a span that cannot be built is skipped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..engine.plan import Plan
from ..engine.values import Event, EventType
from . import genai
from .ids import attempt_ids, run_ids, span_id, trace_id

__all__ = ["RunTrace", "SpanRecord", "StepInfo", "steps_of"]

Attributes = Mapping[str, str | bool | int | float]

_TURN_OR_CALL = re.compile(r"^(.*)/t\d+(?:/call-\d+)?$")
_DATASTORE_TOOLS = frozenset({"memory_search", "memory_save", "past_runs"})


@dataclasses.dataclass(frozen=True, slots=True)
class SpanRecord:
    """One finished span, before any SDK sees it."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    start: float  # unix seconds
    end: float
    attributes: Attributes
    error: str | None = None  # error.type; the span's status is ERROR when set
    message: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class StepInfo:
    """What a span says about a step: its kind, Agent and tool (from the Plan)."""

    kind: str
    agent: str | None = None
    tool: str | None = None


def steps_of(plan: Plan) -> dict[str, StepInfo]:
    """Every DAG step and state step of ``plan`` by name."""
    specs = [s.spec for s in plan.steps.values()] + [s.step.spec for s in plan.states.values() if s.step is not None]
    out: dict[str, StepInfo] = {}
    for spec in specs:
        kind = getattr(spec.kind, "value", str(spec.kind))
        out[spec.name] = StepInfo(kind, spec.agent_ref.name if spec.agent_ref is not None else None, spec.tool)
    return out


@dataclasses.dataclass(slots=True)
class _Open:
    at: float
    data: Mapping[str, Any]
    started: float | None = None
    executor: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    models: list[str] = dataclasses.field(default_factory=list)


class RunTrace:
    """The spans of one run, from its journal events (see the module docstring)."""

    def __init__(self, run_id: str, workflow: str, *, namespace: str = "",
                 steps: Mapping[str, StepInfo] | None = None) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.namespace = namespace
        self.steps = dict(steps or {})
        self.trace_id = trace_id(run_id)
        self.run_span = run_ids(run_id).span_id
        self.started: float | None = None
        self._attempts: dict[tuple[str, int], _Open] = {}
        self._loops: dict[tuple[str, int], _Open] = {}
        self._loop_attempt: dict[str, int] = {}
        self._approvals: dict[str, tuple[float, int]] = {}
        self._approval_count: dict[str, int] = {}

    @property
    def trace_hex(self) -> str:
        return f"{self.trace_id:032x}"

    def observe(self, events: Iterable[Event], *, emit: bool = True) -> list[SpanRecord]:
        """Fold ``events`` in; the spans they ended (none when ``emit`` is False: a journal replayed)."""
        out: list[SpanRecord] = []
        for event in events:
            try:
                spans = self._fold(event)
            except (KeyError, TypeError, ValueError):  # a record of an unexpected shape: no span, never an error
                continue
            if emit:
                out.extend(spans)
        return out

    # ------------------------------------------------------------------ folding

    def _fold(self, event: Event) -> list[SpanRecord]:
        kind, node, data, at = event.type, event.node, event.data, event.at
        if kind is EventType.run_started:
            self.started = at
        elif kind is EventType.step_scheduled and node is not None:
            self._attempts[(node, int(data["attempt"]))] = _Open(at, data)
        elif kind is EventType.step_started and node is not None:
            opened = self._attempts.get((node, int(data["attempt"])))
            if opened is not None:
                opened.started = at
                opened.executor = str(data.get("executor") or "")
        elif kind is EventType.cost_recorded and node is not None:
            opened = self._attempts.get((node, int(data["attempt"])))
            call = data.get("call") or {}
            if opened is not None and isinstance(call, Mapping):
                opened.input_tokens += int(call.get("input_tokens") or 0)
                opened.output_tokens += int(call.get("output_tokens") or 0)
                opened.cost_usd += float(call.get("cost_usd") or 0.0)
                if call.get("kind") == "llm" and call.get("name"):
                    opened.models.append(str(call["name"]))
        elif kind in (EventType.step_succeeded, EventType.step_failed, EventType.step_timed_out) and node is not None:
            return self._end_attempt(node, int(data["attempt"]), at, kind, data)
        elif kind is EventType.step_cancelled and node is not None:
            return [s for (n, a) in list(self._attempts) if n == node
                    for s in self._end_attempt(n, a, at, kind, data)] + self._end_approval(node, at, None, data)
        elif kind is EventType.loop_started and node is not None:
            attempt = int(data["attempt"])
            self._loops[(node, attempt)] = _Open(at, data)
            self._loop_attempt[node] = attempt
        elif kind is EventType.loop_finished and node is not None:
            return self._end_loop(node, int(data["attempt"]), at, data)
        elif kind is EventType.approval_requested and node is not None:
            n = self._approval_count.get(node, 0) + 1
            self._approval_count[node] = n
            self._approvals[node] = (at, n)
        elif kind is EventType.approval_decided and node is not None:
            return self._end_approval(node, at, bool(data.get("approved")), data)
        elif kind is EventType.run_finished:
            out = [s for n in list(self._approvals) for s in self._end_approval(n, at, None, data)]
            return [*out, self._run_span(at, data)]
        return []

    def _parent(self, node: str) -> int:
        m = _TURN_OR_CALL.match(node)
        if m is not None:
            loop = m.group(1)
            attempt = self._loop_attempt.get(loop)
            if attempt is not None:
                return span_id(self.run_id, "loop", loop, attempt)
        return self.run_span

    def _base(self, node: str, attempt: int) -> dict[str, str | bool | int | float]:
        return {genai.RUN_ID: self.run_id, genai.WORKFLOW: self.workflow, genai.NODE: node, genai.ATTEMPT: attempt,
                **({genai.NAMESPACE: self.namespace} if self.namespace else {})}

    def _end_attempt(self, node: str, attempt: int, at: float, kind: EventType,
                     data: Mapping[str, Any]) -> list[SpanRecord]:
        opened = self._attempts.pop((node, attempt), None)
        if opened is None:
            return []
        step = str(opened.data.get("step") or node)
        info = self.steps.get(step, StepInfo(str(opened.data.get("kind") or "")))
        attrs = self._base(node, attempt)
        attrs[genai.STEP] = step
        if opened.executor:
            attrs[genai.EXECUTOR] = opened.executor
        in_loop = _TURN_OR_CALL.match(node) is not None
        tool = opened.data.get("tool")
        if not tool and not in_loop and (info.kind == "tool" or opened.data.get("kind") == "tool"):
            tool = info.tool or step
        is_turn = in_loop and not tool
        if tool:
            name = f"{genai.EXECUTE_TOOL} {tool}"
            attrs[genai.OPERATION_NAME] = genai.EXECUTE_TOOL
            attrs[genai.TOOL_NAME] = str(tool)
            attrs[genai.TOOL_TYPE] = "datastore" if tool in _DATASTORE_TOOLS else "function"
            if "/call-" in node:
                attrs[genai.TOOL_CALL_ID] = node
        elif is_turn:
            name = f"step {node}"
        elif info.kind == "llm":
            name = f"{genai.INVOKE_AGENT} {info.agent or step}"
            attrs[genai.OPERATION_NAME] = genai.INVOKE_AGENT
            if info.agent:
                attrs[genai.AGENT_NAME] = info.agent
        else:
            name = f"step {node}"
        if opened.input_tokens or opened.output_tokens:
            attrs[genai.USAGE_INPUT_TOKENS] = opened.input_tokens
            attrs[genai.USAGE_OUTPUT_TOKENS] = opened.output_tokens
        if opened.models and not tool:
            attrs[genai.REQUEST_MODEL] = opened.models[0]
        if opened.cost_usd:
            attrs[genai.COST_USD] = round(opened.cost_usd, 6)
        error, message = None, ""
        if kind is EventType.step_failed:
            err = data.get("error") or {}
            error, message = str(err.get("type") or "Error"), str(err.get("message") or "")
        elif kind is EventType.step_timed_out:
            error, message = "StepTimedOut", "the attempt did not finish before its deadline"
        elif kind is EventType.step_cancelled:
            error, message = "StepCancelled", str(data.get("reason") or "")
        if error:
            attrs[genai.ERROR_TYPE] = error
        start = opened.started if opened.started is not None else opened.at
        return [SpanRecord(name, self.trace_id, attempt_ids(self.run_id, node, attempt).span_id, self._parent(node),
                           start, max(at, start), attrs, error, message)]

    def _end_loop(self, node: str, attempt: int, at: float, data: Mapping[str, Any]) -> list[SpanRecord]:
        opened = self._loops.pop((node, attempt), None)
        if opened is None:
            return []
        agent = str(opened.data.get("agent") or "")
        attrs = self._base(node, attempt)
        attrs.update({genai.OPERATION_NAME: genai.INVOKE_AGENT, genai.STEP: str(opened.data.get("step") or node),
                      genai.LOOP_TURNS: int(data.get("turns") or 0),
                      genai.LOOP_TOOL_CALLS: int(data.get("toolCalls") or 0),
                      genai.LOOP_DEPTH: int(opened.data.get("depth") or 0), genai.PHASE: str(data.get("phase") or "")})
        if agent:
            attrs[genai.AGENT_NAME] = agent
        error, message = None, ""
        if data.get("phase") not in (None, "Succeeded"):
            err = data.get("error") or {}
            error = str(err.get("type") or data.get("phase")) if isinstance(err, Mapping) else str(data.get("phase"))
            message = str(err.get("message") or "") if isinstance(err, Mapping) else str(err)
            attrs[genai.ERROR_TYPE] = error
        parent = self._parent(node) if _TURN_OR_CALL.match(node) else self.run_span
        if parent == span_id(self.run_id, "loop", node, attempt):
            parent = self.run_span
        return [SpanRecord(f"{genai.INVOKE_AGENT} {agent or node}", self.trace_id,
                           span_id(self.run_id, "loop", node, attempt), parent, opened.at, max(at, opened.at), attrs,
                           error, message)]

    def _end_approval(self, node: str, at: float, approved: bool | None, data: Mapping[str, Any]) -> list[SpanRecord]:
        opened = self._approvals.pop(node, None)
        if opened is None:
            return []
        start, n = opened
        attrs = self._base(node, n)
        if approved is not None:
            attrs[genai.APPROVED] = approved
            if data.get("by"):
                attrs[genai.APPROVED_BY] = str(data["by"])
        error = None if approved is not None else "NotDecided"
        return [SpanRecord(f"approval {node}", self.trace_id, span_id(self.run_id, "approval", node, n),
                           self.run_span, start, max(at, start), attrs, error)]

    def _run_span(self, at: float, data: Mapping[str, Any]) -> SpanRecord:
        start = self.started if self.started is not None else at
        phase = str(data.get("phase") or "")
        attrs: dict[str, str | bool | int | float] = {
            genai.OPERATION_NAME: genai.INVOKE_WORKFLOW, genai.RUN_ID: self.run_id, genai.WORKFLOW: self.workflow,
            genai.PHASE: phase}
        if self.namespace:
            attrs[genai.NAMESPACE] = self.namespace
        error = None
        if phase and phase != "Succeeded":
            error = phase
            attrs[genai.ERROR_TYPE] = phase
        return SpanRecord(f"{genai.INVOKE_WORKFLOW} {self.workflow}", self.trace_id, self.run_span, None, start,
                          max(at, start), attrs, error, str(data.get("reason") or ""))

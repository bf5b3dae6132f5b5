"""Values the engine exchanges with whoever drives it.

The driver (local runner, operator) and the engine talk only through these
frozen values::

    driver                         engine (pure)
    ------                         -------------
    run.apply(event)        --->   folds a journal event into its state
    run.decide(now)         --->   returns a Decision:
                            <---     events   facts to append to the journal first
                            <---     start    StepRequests to hand to an executor
                            <---     cancel   nodes whose running attempt must stop
                            <---     wake_at  call decide again by then (timers)
    executor.execute(req)   --->   StepResult, which the driver journals as
                                   StepSucceeded / StepFailed (+ CostRecorded)

Node ids: a DAG step is its name (``classify``); a fan-out item is
``name[i]``; a state-machine visit is ``state#n`` (n counts from 1), and so is
the n-th run of a behavior tree's leaf ``name#n``; an agent
loop's model turn is ``NODE/tN`` and a tool call of that turn ``NODE/tN/call-K``
(a delegate's loop nests: ``respond/t1/call-2/t1``); a summary that compacts the
Agent's carried conversation (memory.kind conversation) is ``NODE/sN``. A plan step's
planning attempt is ``NODE/planN``, a step of its plan revision N ``NODE/pN/NAME``, its
fallback's state visits ``NODE/fallback/STATE#n`` and its fallback approval ``NODE/approval``
(agentflow.engine.planner).

Wire format: :class:`StepRequest` and :class:`StepResult` travel between processes (the local
runner's step subprocesses, the operator's step pods) as the JSON objects of their ``to_dict()``;
``from_dict()`` reads them back. The callback server checks a posted result's shape field by field
before ``StepResult.from_dict`` (agentflow.callback.server.parse_step_result).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol


class EventType(StrEnum):
    # Recorded by the engine (returned in Decision.events).
    run_started = "RunStarted"  # data: workflow, inputs, seed, specHash; gates, loops, parallelism, prompts (optional)
    step_scheduled = "StepScheduled"  # node, data: step, attempt, key, inputs, deadline, screening (optional)
    step_skipped = "StepSkipped"  # node, data: reason
    retry_scheduled = "RetryScheduled"  # node, data: attempt (next), at (when it may start), error
    step_timed_out = "StepTimedOut"  # node, data: attempt
    step_cancelled = "StepCancelled"  # node, data: reason
    approval_requested = "ApprovalRequested"  # node, data: message, approvers, deadline; gate or review (optional)
    state_entered = "StateEntered"  # node (state#visit), data: state, visit
    fan_out = "FanOut"  # node (step), data: count
    loop_started = "LoopStarted"  # node, data: step, attempt, agent, inputs, deadline, depth
    loop_finished = "LoopFinished"  # node, data: phase, output, error (optional), turns, toolCalls (a record)
    plan_started = "PlanStarted"  # node (a plan step's), data: step, attempt, agent, inputs
    plan_accepted = "PlanAccepted"  # node, data: revision, ask, steps (the plan), estimateUsd, replaced
    plan_refused = "PlanRefused"  # node, data: ask, errors, replan (a checkpoint's revision: the plan goes on)
    plan_finished = "PlanFinished"  # node, data: attempt, phase, output, error (optional), revisions (a record)
    run_timed_out = "RunTimedOut"  # data: timeoutSeconds
    run_finished = "RunFinished"  # data: phase, outputs, reason, stuck (optional: the steps a stuck run waited on)
    # Recorded by the driver.
    step_started = "StepStarted"  # node, data: attempt, executor, pod (optional)
    step_succeeded = "StepSucceeded"  # node, data: attempt, output, costUsd, tokens
    step_failed = "StepFailed"  # node, data: attempt, error {type, message, retryable}
    cost_recorded = "CostRecorded"  # node, data: call (CallRecord as dict)
    approval_decided = "ApprovalDecided"  # node, data: approved, by, reason
    cancel_requested = "CancelRequested"  # data: by, reason
    suspended = "Suspended"  # data: by
    resumed = "Resumed"  # data: by


_NO_DATA: Mapping[str, Any] = MappingProxyType({})


class Event(NamedTuple):
    """One journal entry, before the journal gives it a sequence number and hash.

    A NamedTuple rather than a frozen dataclass: the engine makes several per step
    and this is the cheapest immutable record Python has.
    """

    type: EventType
    node: str | None = None
    data: Mapping[str, Any] = _NO_DATA
    at: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class StepError:
    """Why an attempt failed. ``retryable`` False stops retries at once."""

    type: str
    message: str
    retryable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "retryable": self.retryable}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepError:
        return cls(str(d.get("type", "Error")), str(d.get("message", "")), bool(d.get("retryable", True)))


@dataclasses.dataclass(frozen=True, slots=True)
class CallRecord:
    """One model or tool call made by an attempt: what replay and cost reports read."""

    kind: str  # "llm" or "tool"
    name: str  # model or tool name
    request_hash: str  # sha256 of the canonical request
    response: Any  # the text / JSON received
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: bool = False
    tokens: int | None = None
    """A total without its split by input and output (a child Workflow's: its calls are in its own journal);
    None: the call's tokens are ``input_tokens + output_tokens``."""

    @property
    def total_tokens(self) -> int:
        return self.tokens if self.tokens is not None else self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.tokens is None:  # most calls: the journal's records keep their shape
            del out["tokens"]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CallRecord:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


class StepRequest(NamedTuple):
    """Everything an executor needs to run one attempt of one node."""

    run_id: str
    node: str
    step: str
    kind: str  # "llm" | "tool"
    attempt: int
    inputs: Mapping[str, Any]
    deadline: float | None = None
    screening: str | None = None
    """None: the Agent's injection policy applies as written. ``"flag"``: this attempt re-runs one a human
    reviewed after its input was quarantined; findings are recorded but do not stop it."""
    context: Mapping[str, Any] | None = None
    """An agent loop's part (agentflow.engine.run): a model turn's ``{agent, turn, messages, tools,
    parallelToolCalls, finalTool, task}`` (and ``history``, the Agent's carried conversation, with memory.kind
    conversation), a tool call's ``{agent, call: {id, name, arguments, kind}}`` or a summary's ``{agent, summary:
    {previous, messages, maxTokens}}`` (agentflow.engine.conversation); a plan step's planning attempt's
    ``{planning: {ask, revision, results, remaining}}``, a step of its plan's ``{planned: StepSpec body, agent}``
    (agentflow.engine.planner). Derived from the journal, never journaled itself."""

    @property
    def agent(self) -> str | None:
        """The Agent an agent loop's turn or call acts for (a delegate's, not the step's); None otherwise."""
        return str(self.context["agent"]) if self.context and self.context.get("agent") else None

    @property
    def idempotency_key(self) -> str:
        """Stable across restarts and replays: tools use it to act at most once."""
        return f"{self.run_id}/{self.node}/{self.attempt}"

    def to_dict(self) -> dict[str, Any]:
        """The wire form (camelCase keys)."""
        return {
            "runId": self.run_id,
            "node": self.node,
            "step": self.step,
            "kind": self.kind,
            "attempt": self.attempt,
            "inputs": dict(self.inputs),
            "deadline": self.deadline,
            "screening": self.screening,
            **({"context": dict(self.context)} if self.context is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepRequest:
        """Read the wire form back; KeyError, TypeError or ValueError when a field is missing or malformed."""
        deadline = d.get("deadline")
        screening = d.get("screening")
        if screening not in (None, "flag"):
            raise ValueError(f"screening must be null or 'flag', got {screening!r}")
        return cls(
            run_id=str(d["runId"]),
            node=str(d["node"]),
            step=str(d["step"]),
            kind=str(d["kind"]),
            attempt=int(d["attempt"]),
            inputs=dict(d.get("inputs") or {}),
            deadline=float(deadline) if deadline is not None else None,
            screening=screening,
            context=_context(d.get("context")),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class StepResult:
    """What an executor hands back: an output or an error, and the calls it made."""

    output: Any = None
    error: StepError | None = None
    calls: tuple[CallRecord, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)

    @property
    def tokens(self) -> int:
        return sum(c.total_tokens for c in self.calls)

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``{output, error, calls}``."""
        return {
            "output": self.output,
            "error": self.error.to_dict() if self.error is not None else None,
            "calls": [c.to_dict() for c in self.calls],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepResult:
        error = d.get("error")
        return cls(
            output=d.get("output"),
            error=StepError.from_dict(error) if error is not None else None,
            calls=tuple(CallRecord.from_dict(c) for c in d.get("calls") or ()),
        )


def _context(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"context must be an object, got {type(value).__name__}")
    return dict(value)


_NODE_SUFFIX = re.compile(r"(\[\d+\]|#\d+)$")


def call_tokens(call: Mapping[str, Any]) -> int:
    """The tokens a journaled call counts for: its input and output tokens, or its ``tokens`` when it carries only
    a total (a child Workflow's, whose own calls are recorded in its journal: agentflow.k8s.subworkflow)."""
    if call.get("tokens") is not None:
        return int(call["tokens"])
    return int(call.get("input_tokens", 0)) + int(call.get("output_tokens", 0))


def step_of_node(node: str) -> str:
    """The step (or state) name of a node id: ``classify[3]``, ``review#2`` and an agent loop's
    ``respond/t2/call-1`` -> ``classify``, ``review``, ``respond``."""
    return _NODE_SUFFIX.sub("", node.split("/", 1)[0])


class Executor(Protocol):
    """Runs one attempt. In-process, subprocess and pod executors implement this.

    An executor never raises for a failing step: it returns a StepResult with
    an error. It may be asked to run the same idempotency key twice after a
    crash, and should then return the first result if it still has it.
    """

    async def execute(self, request: StepRequest) -> StepResult: ...


class Decision(NamedTuple):
    """What the engine wants done now."""

    events: tuple[Event, ...] = ()
    start: tuple[StepRequest, ...] = ()
    cancel: tuple[str, ...] = ()
    wake_at: float | None = None
    finished: bool = False

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
``name[i]``; a state-machine visit is ``state#n`` (n counts from 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol


class EventType(StrEnum):
    # Recorded by the engine (returned in Decision.events).
    run_started = "RunStarted"  # data: workflow, inputs, seed, specHash
    step_scheduled = "StepScheduled"  # node, data: step, attempt, key, inputs, deadline
    step_skipped = "StepSkipped"  # node, data: reason
    retry_scheduled = "RetryScheduled"  # node, data: attempt (next), at (when it may start), error
    step_timed_out = "StepTimedOut"  # node, data: attempt
    step_cancelled = "StepCancelled"  # node, data: reason
    approval_requested = "ApprovalRequested"  # node, data: message, approvers, deadline
    state_entered = "StateEntered"  # node (state#visit), data: state, visit
    fan_out = "FanOut"  # node (step), data: count
    run_timed_out = "RunTimedOut"  # data: timeoutSeconds
    run_finished = "RunFinished"  # data: phase, outputs, reason
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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

    @property
    def idempotency_key(self) -> str:
        """Stable across restarts and replays: tools use it to act at most once."""
        return f"{self.run_id}/{self.node}/{self.attempt}"


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
        return sum(c.input_tokens + c.output_tokens for c in self.calls)


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

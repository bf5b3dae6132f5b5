"""What every attempt shares: how it fails, who its audit events name, and the services it is given.

    StepFailure      ends an attempt with a StepError (raised inside an executor, never out of it)
    Who              the actor, namespace and subject of an attempt's audit events
    ModelAccess      the ChatClient of an attempt (a step pod's gateway client with its token; the local
                     runner's in-process gateway bound to the attempt)
    StepServices     what an executor is built with: manifests, model access, tools, security, audit, clock
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from typing import Protocol

import pydantic

from agentflow.audit.records import AuditEvent, AuditSink
from agentflow.engine.values import StepError, StepRequest
from agentflow.llm.chat import ChatClient
from agentflow.llm.pricing import PriceLookup
from agentflow.models import Agent, Catalog, StepSpec, WorkflowSpec
from agentflow.security import SecurityContext
from agentflow.tools import ToolRunner

Clock = Callable[[], float]


class StepFailure(Exception):
    """Ends an attempt with ``error``; the executor turns it into a failed StepResult."""

    def __init__(self, error: StepError) -> None:
        super().__init__(error.message)
        self.error = error


def fail(type: str, message: str, retryable: bool = False) -> StepFailure:
    return StepFailure(StepError(type, message, retryable))


class ModelAccess(Protocol):
    """The ChatClient an attempt calls models with: every call goes through the gateway, charged to it."""

    def client(self, request: StepRequest) -> ChatClient: ...


@dataclasses.dataclass(frozen=True)
class OneClient:
    """ModelAccess of a process that runs one attempt (a step pod): the same client for it."""

    chat: ChatClient

    def client(self, request: StepRequest) -> ChatClient:
        return self.chat


@dataclasses.dataclass(frozen=True)
class StepServices:
    """What an executor runs attempts with (built once by whoever builds the executor)."""

    catalog: Catalog
    workflow: WorkflowSpec
    models: ModelAccess
    tools: ToolRunner
    security: SecurityContext = dataclasses.field(default_factory=SecurityContext)
    audit: AuditSink | None = None
    clock: Clock = time.time
    prices: PriceLookup | None = None
    """What a plan step's cost preflight prices models at (the provider's); None: unpriced (counted as free)."""
    _steps: dict[str, StepSpec | None] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_steps", self.workflow.step_index())  # looked up per attempt: once, not O(steps)

    def step(self, name: str) -> StepSpec:
        step = self._steps.get(name)
        if step is None:
            raise fail("UnknownStep", f"the workflow has no step or state named {name!r}")
        return step

    def step_for(self, request: StepRequest) -> StepSpec:
        """The step an attempt runs: a step of a plan (its spec is in the request: agentflow.engine.planner), else
        the workflow's step the request names."""
        planned = request.context.get("planned") if request.context else None
        if planned is None:
            return self.step(request.step)
        try:
            return StepSpec.model_validate(planned)
        except pydantic.ValidationError as exc:
            raise fail("InvalidPlannedStep", f"{request.node}: the planned step is not a valid step: "
                       f"{' '.join(str(exc).split())[:400]}") from exc

    def agent(self, step: StepSpec) -> Agent:
        assert step.agent_ref is not None
        agent = self.catalog.agents.get(step.agent_ref.name)
        if agent is None:
            raise fail("UnknownReference", f"step {step.name!r}: agentRef {step.agent_ref.name!r} is not loaded")
        return agent

    async def record(self, events: list[AuditEvent]) -> None:
        """Append the attempt's audit events; an attempt whose decisions cannot be recorded fails."""
        if self.audit is None or not events:
            return
        try:
            await self.audit.append(events)
        except Exception as exc:  # the audit must be durable
            raise fail("AuditUnavailable", f"cannot record {len(events)} audit event(s): {exc}", True) from exc


@dataclasses.dataclass(frozen=True, slots=True)
class Who:
    """Who the audit events of an attempt name."""

    actor: str
    namespace: str
    subject: str
    run_id: str

    @classmethod
    def of(cls, request: StepRequest, agent: Agent | None) -> Who:
        namespace = (agent.metadata.namespace if agent is not None else None) or "default"
        actor = f"agent:{namespace}/{agent.metadata.name}" if agent is not None else "executor"
        subject = f"{namespace}/{request.run_id}/{request.node}#{request.attempt}"
        return cls(actor, namespace, subject, request.run_id)

    def fields(self, clock: Clock) -> dict[str, str]:
        at = datetime.datetime.fromtimestamp(clock(), datetime.UTC).isoformat().replace("+00:00", "Z")
        return {"actor": self.actor, "namespace": self.namespace, "subject": self.subject, "at": at}

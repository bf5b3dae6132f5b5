"""Whom a model call is charged to: the :class:`Attribution` of one step attempt, and how it is made.

Every gateway entry point (HTTP with an attempt token, the local runner in process) turns its caller into an
Attribution before anything else; the gateway charges, caches, routes and audits by it. Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..models import Agent, StepSpec, Workflow

__all__ = ["Attribution", "attribution_for"]


@dataclasses.dataclass(frozen=True, slots=True)
class Attribution:
    """Whom a call is charged to: one attempt of one step, its Agent, and what the budgets select on."""

    namespace: str
    workflow: str
    run_uid: str
    node: str
    attempt: int
    step: str
    agent: Agent | None
    prompt: str = ""
    workflow_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cache: bool = True  # False: the step set modelParams.cache false
    budget_ref: str | None = None  # the Workflow's spec.budgetRef (always charged)
    expires: float | None = None  # unix seconds after which the credential that proved it is void

    @property
    def agent_name(self) -> str:
        return self.agent.metadata.name if self.agent is not None else ""

    @property
    def agent_labels(self) -> Mapping[str, str]:
        return self.agent.metadata.labels if self.agent is not None else {}

    @property
    def subject(self) -> str:
        return f"{self.namespace}/{self.workflow}/{self.node}#{self.attempt}"

    @property
    def reference(self) -> str:
        return f"{self.run_uid}/{self.node}/{self.attempt}"


def attribution_for(
    *,
    namespace: str,
    run_uid: str,
    node: str,
    attempt: int,
    workflow: Workflow,
    step: StepSpec | None,
    agents: Mapping[str, Agent],
    expires: float | None = None,
    agent_name: str | None = None,
) -> Attribution:
    """The Attribution of an attempt of ``step`` (found by the caller with WorkflowSpec.find_step).

    ``agent_name``: the Agent an agent loop's turn acts for (``StepRequest.agent``: a delegate's, decided by
    the engine from the run's recorded loops, read here from the stored attempt, never from the caller)."""
    agent = None
    if agent_name is not None:
        agent = agents.get(agent_name)
    elif step is not None and step.agent_ref is not None:
        agent = agents.get(step.agent_ref.name)
    return Attribution(
        namespace=namespace,
        workflow=workflow.metadata.name,
        run_uid=run_uid,
        node=node,
        attempt=attempt,
        step=step.name if step is not None else "",
        agent=agent,
        prompt=(step.prompt_ref.name or "") if step is not None and step.prompt_ref is not None else "",
        workflow_labels=dict(workflow.metadata.labels),
        cache=step.model_params.cache if step is not None and step.model_params is not None else True,
        budget_ref=workflow.spec.budget_ref.name if workflow.spec.budget_ref is not None else None,
        expires=expires,
    )

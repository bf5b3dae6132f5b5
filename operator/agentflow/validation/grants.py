"""Which tool a step may call: the one decision, deny by default. Pure: no I/O.

The executor (before calling a tool), the reconciler (before creating a pod and its NetworkPolicy) and the
drivers (which steps pause for a human) all ask :func:`decide_tool`; nothing else decides grants.

Rules::

    step with agentRef     the Agent lists the tool in spec.tools AND a ToolPolicy whose agentSelector
                           matches the Agent's labels declares it (the first such policy by name wins)
    step without agentRef  some ToolPolicy declares the tool (the first by name)

Outcomes::

    ToolGrant                       allowed: the tool's spec, the policy that grants it, the policies considered
    ToolDenied(type="ToolNotAllowed")    denied; the message names the step, the Agent, the tool and every
                                         policy considered (matching or not, and why)
    ToolDenied(type="UnknownTool")       no ToolPolicy declares the tool
    ToolDenied(type="UnknownReference")  the step's Agent is not in the catalog

:func:`approval_gates` lists the steps whose granted tool has ``requiresApproval``: drivers hand it to
:func:`agentflow.engine.plan.compile_plan`, and the engine pauses those steps for a human before each call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

from agentflow.engine.plan import ToolGate
from agentflow.models import Agent, Catalog, StepKind, StepSpec, ToolPolicy, ToolSpec, WorkflowSpec

__all__ = ["ToolDenied", "ToolGrant", "approval_gates", "decide_tool", "tool_steps"]


@dataclasses.dataclass(frozen=True)
class ToolGrant:
    """A tool a step is allowed to call, and why."""

    step: str
    tool: ToolSpec
    policy: ToolPolicy
    agent: Agent | None
    considered: tuple[str, ...]
    """Names of the ToolPolicies that were considered (every one in the namespace)."""

    @property
    def policy_name(self) -> str:
        return self.policy.metadata.name


class ToolDenied(Exception):
    """A step may not call its tool. ``type`` is the StepError type; the message says what to change."""

    retryable = False

    def __init__(self, type: str, message: str, *, step: str, tool: str, agent: str | None,
                 considered: tuple[str, ...]) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.step = step
        self.tool = tool
        self.agent = agent
        self.considered = considered


def _selector(policy: ToolPolicy) -> str:
    return _labels(policy.spec.agent_selector.match_labels)


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def decide_tool(step: StepSpec, catalog: Catalog) -> ToolGrant:
    """The grant of ``step``'s tool, or :class:`ToolDenied` naming the Agent, the tool and the policies."""
    if step.tool is None:
        raise ValueError(f"step {step.name!r} is not a tool step")
    name = step.tool
    declaring = [p for _, p in sorted(catalog.policies.items()) if any(t.name == name for t in p.spec.tools)]
    considered = tuple(sorted(catalog.policies))

    def tool_of(policy: ToolPolicy) -> ToolSpec:
        return next(t for t in policy.spec.tools if t.name == name)

    if step.agent_ref is None:
        if not declaring:
            known = ", ".join(sorted(catalog.policies)) or "none"
            raise ToolDenied("UnknownTool", f"step {step.name!r}: no ToolPolicy declares tool {name!r} "
                             f"(ToolPolicies: {known}); declare it in one", step=step.name, tool=name,
                             agent=None, considered=considered)
        return ToolGrant(step.name, tool_of(declaring[0]), declaring[0], None, considered)
    agent = catalog.agents.get(step.agent_ref.name)
    if agent is None:
        raise ToolDenied("UnknownReference", f"step {step.name!r}: agentRef {step.agent_ref.name!r} is not "
                         "in this namespace", step=step.name, tool=name, agent=step.agent_ref.name,
                         considered=considered)
    who = f"Agent {agent.metadata.name!r}"
    if not declaring:
        known = ", ".join(sorted(catalog.policies)) or "none"
        raise ToolDenied("ToolNotAllowed", f"step {step.name!r}: tool {name!r} is denied for {who}: no "
                         f"ToolPolicy declares it (policies considered: {known}); declare it in a ToolPolicy "
                         "whose agentSelector matches the Agent", step=step.name, tool=name,
                         agent=agent.metadata.name, considered=considered)
    if name not in agent.spec.tools:
        listed = ", ".join(agent.spec.tools) or "none"
        raise ToolDenied("ToolNotAllowed", f"step {step.name!r}: tool {name!r} is denied for {who}: the Agent "
                         f"does not list it in spec.tools (it lists: {listed}; policies considered: "
                         f"{', '.join(considered) or 'none'}); add it to the Agent's spec.tools", step=step.name,
                         tool=name, agent=agent.metadata.name, considered=considered)
    labels = agent.metadata.labels
    for policy in declaring:
        if policy.spec.agent_selector.matches(labels):
            return ToolGrant(step.name, tool_of(policy), policy, agent, considered)
    matching = [n for n, p in sorted(catalog.policies.items()) if p.spec.agent_selector.matches(labels)]
    why = "; ".join(f"{p.metadata.name} declares it but its agentSelector {_selector(p)} does not match"
                    for p in declaring)
    raise ToolDenied("ToolNotAllowed", f"step {step.name!r}: tool {name!r} is denied for {who} (labels "
                     f"{_labels(labels)}): no ToolPolicy whose agentSelector matches the Agent declares it; "
                     f"policies considered: {why}; matching the Agent without the tool: "
                     f"{', '.join(matching) or 'none'} (all ToolPolicies: {', '.join(sorted(catalog.policies))})",
                     step=step.name, tool=name, agent=agent.metadata.name,
                     considered=tuple(sorted(catalog.policies)))


def tool_steps(spec: WorkflowSpec) -> Iterator[tuple[str, StepSpec]]:
    """(key, step) of every tool step; key is what StepRequest.step says: the DAG step's or the state's name."""
    for step in spec.steps:
        if step.kind is StepKind.tool:
            yield step.name, step
    if spec.state_machine is not None:
        for state in spec.state_machine.states:
            if state.step is not None and state.step.kind is StepKind.tool:
                yield state.name, state.step


def approval_gates(spec: WorkflowSpec, catalog: Catalog) -> dict[str, ToolGate]:
    """The tool steps that pause for a human before each call: their granted tool has requiresApproval.

    Keys are StepRequest.step values (DAG step or state name). A denied step is not listed: it fails at
    start, before any gate, with the denial.
    """
    gates: dict[str, ToolGate] = {}
    for key, step in tool_steps(spec):
        try:
            grant = decide_tool(step, catalog)
        except ToolDenied:
            continue
        if grant.tool.requires_approval:
            gates[key] = ToolGate(grant.tool.name, grant.policy_name, grant.tool.approval_timeout_seconds)
    return gates

"""Which tool a step may call: the one decision, deny by default. Pure: no I/O.

The executor (before calling a tool), the reconciler (before creating a pod and its NetworkPolicy) and the
drivers (which steps pause for a human) all ask :func:`decide_tool`; nothing else decides grants.

Rules::

    step with agentRef     the Agent lists the tool in spec.tools AND a ToolPolicy whose agentSelector
                           matches the Agent's labels declares it (the first such policy by name wins)
    step without agentRef  some ToolPolicy declares the tool (the first by name)
    NAME/TOOL              an MCP server's tool: the rules above for NAME (an ``mcp`` tool), and its
                           ``mcp.tools`` must list TOOL (or be exactly ``["*"]``)

Outcomes::

    ToolGrant                       allowed: the tool's spec, the policy that grants it, the policies considered
    ToolDenied(type="ToolNotAllowed")    denied; the message names the step, the Agent, the tool and every
                                         policy considered (matching or not, and why)
    ToolDenied(type="UnknownTool")       no ToolPolicy declares the tool
    ToolDenied(type="UnknownReference")  the step's Agent is not in the catalog
    ToolDenied(type="InvalidToolReference")  NAME/TOOL of a tool that is not an MCP server, or an MCP server
                                         named without one of its tools

:func:`agent_grants` decides every tool an Agent lists (what an agent loop may offer its model);
:func:`decide_agent_server` the grant of one MCP server whole, which a loop's turn lists the tools of (its
``mcp.tools`` say which count; a call of one of them is decided by :func:`decide_agent_tool` as ``NAME/TOOL``).

:func:`approval_gates` lists the steps whose granted tool has ``requiresApproval``: drivers hand it to
:func:`agentflow.engine.plan.compile_plan`, and the engine pauses those steps for a human before each call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

from agentflow.engine.plan import AgentLoop, LoopTool, ToolGate
from agentflow.engine.planner import gate_key
from agentflow.models import (
    Agent,
    Catalog,
    LocalRef,
    StepKind,
    StepSpec,
    ToolPolicy,
    ToolSpec,
    WorkflowSpec,
    split_tool_ref,
)

from .memory import memory_function_schemas

__all__ = ["DELEGATE_PREFIX", "FINAL_ANSWER", "ToolDenied", "ToolGrant", "agent_grants", "agent_loop", "agent_loops",
           "approval_gates", "decide_agent_server", "decide_agent_tool", "decide_tool", "loop_call_ref", "runs_loop",
           "tool_steps"]


@dataclasses.dataclass(frozen=True)
class ToolGrant:
    """A tool a step is allowed to call, and why."""

    step: str
    tool: ToolSpec
    policy: ToolPolicy
    agent: Agent | None
    considered: tuple[str, ...]
    """Names of the ToolPolicies that were considered (every one in the namespace)."""
    member: str | None = None
    """The MCP server's tool a step calls (``tool: NAME/TOOL``); None otherwise."""

    @property
    def policy_name(self) -> str:
        return self.policy.metadata.name

    @property
    def ref(self) -> str:
        """What the step names: ``NAME`` or ``NAME/TOOL``."""
        return self.tool.name if self.member is None else f"{self.tool.name}/{self.member}"


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
    name, member = split_tool_ref(step.tool)
    agent_name = step.agent_ref.name if step.agent_ref is not None else None
    return _member(_decide(step.name, name, agent_name, catalog), member)


def decide_agent_tool(agent: Agent, name: str, catalog: Catalog, step: str = "") -> ToolGrant:
    """The grant of ``name`` (a tool, or an MCP server's ``NAME/TOOL``) to ``agent`` in its agent loop: the same
    decision as a tool step with that agentRef."""
    tool, member = split_tool_ref(name)
    return _member(_decide(step or f"agent:{agent.metadata.name}", tool, agent.metadata.name, catalog), member)


def decide_agent_server(agent: Agent, name: str, catalog: Catalog, step: str = "") -> ToolGrant:
    """The grant of the MCP server ``name`` to ``agent``'s loop, with no ``member``: what a turn lists the granted
    tools of (the same decision as :func:`agent_grants`); ToolDenied as for a tool, InvalidToolReference when
    ``name`` is not an MCP server."""
    grant = _decide(step or f"agent:{agent.metadata.name}", name, agent.metadata.name, catalog)
    if grant.tool.mcp is None:
        raise ToolDenied("InvalidToolReference", f"step {grant.step!r}: tool {name!r} is a {grant.tool.kind} tool, "
                         "not an MCP server", step=grant.step, tool=name, agent=agent.metadata.name,
                         considered=grant.considered)
    return grant


def loop_call_ref(call: Mapping[str, object]) -> str:
    """What a loop's tool call (``StepRequest.context["call"]``) names, as a step would: ``NAME`` or
    ``NAME/TOOL`` (the engine resolved the model's ``NAME__TOOL``)."""
    name = str(call.get("tool") or call.get("name") or "")
    return f"{name}/{call['member']}" if call.get("member") else name


def _member(grant: ToolGrant, member: str | None) -> ToolGrant:
    """``grant`` narrowed to the MCP server's tool ``member``, or ToolDenied."""
    tool, agent = grant.tool, grant.agent.metadata.name if grant.agent is not None else None
    mcp = tool.mcp
    if mcp is None and member is None:
        return grant
    if mcp is None:
        raise ToolDenied("InvalidToolReference", f"step {grant.step!r}: tool {tool.name!r} is a {tool.kind} tool, "
                         f"not an MCP server, so {tool.name}/{member} names nothing; use tool: {tool.name}",
                         step=grant.step, tool=f"{tool.name}/{member}", agent=agent, considered=grant.considered)
    granted = ", ".join(mcp.tools)
    if member is None:
        example = mcp.tools[0].replace("*", "TOOL")
        raise ToolDenied("InvalidToolReference", f"step {grant.step!r}: tool {tool.name!r} is the MCP server "
                         f"{mcp.server}; name one of its tools, e.g. tool: {tool.name}/{example} (ToolPolicy "
                         f"{grant.policy_name!r} grants: {granted})", step=grant.step, tool=tool.name, agent=agent,
                         considered=grant.considered)
    if not mcp.grants(member):
        who = f"Agent {agent!r}" if agent is not None else "the step"
        raise ToolDenied("ToolNotAllowed", f"step {grant.step!r}: tool {member!r} of MCP server {tool.name!r} "
                         f"({mcp.server}) is denied for {who}: ToolPolicy {grant.policy_name!r} grants only "
                         f"{granted} of it; add {member!r} to its mcp.tools", step=grant.step,
                         tool=f"{tool.name}/{member}", agent=agent, considered=grant.considered)
    return dataclasses.replace(grant, member=member)


def _decide(step: str, name: str, agent_ref: str | None, catalog: Catalog) -> ToolGrant:
    declaring = [p for _, p in sorted(catalog.policies.items()) if any(t.name == name for t in p.spec.tools)]
    considered = tuple(sorted(catalog.policies))

    def tool_of(policy: ToolPolicy) -> ToolSpec:
        return next(t for t in policy.spec.tools if t.name == name)

    if agent_ref is None:
        if not declaring:
            known = ", ".join(sorted(catalog.policies)) or "none"
            raise ToolDenied("UnknownTool", f"step {step!r}: no ToolPolicy declares tool {name!r} "
                             f"(ToolPolicies: {known}); declare it in one", step=step, tool=name,
                             agent=None, considered=considered)
        return ToolGrant(step, tool_of(declaring[0]), declaring[0], None, considered)
    agent = catalog.agents.get(agent_ref)
    if agent is None:
        raise ToolDenied("UnknownReference", f"step {step!r}: agentRef {agent_ref!r} is not "
                         "in this namespace", step=step, tool=name, agent=agent_ref,
                         considered=considered)
    who = f"Agent {agent.metadata.name!r}"
    if not declaring:
        known = ", ".join(sorted(catalog.policies)) or "none"
        raise ToolDenied("ToolNotAllowed", f"step {step!r}: tool {name!r} is denied for {who}: no "
                         f"ToolPolicy declares it (policies considered: {known}); declare it in a ToolPolicy "
                         "whose agentSelector matches the Agent", step=step, tool=name,
                         agent=agent.metadata.name, considered=considered)
    if name not in agent.spec.tools:
        listed = ", ".join(agent.spec.tools) or "none"
        raise ToolDenied("ToolNotAllowed", f"step {step!r}: tool {name!r} is denied for {who}: the Agent "
                         f"does not list it in spec.tools (it lists: {listed}; policies considered: "
                         f"{', '.join(considered) or 'none'}); add it to the Agent's spec.tools", step=step,
                         tool=name, agent=agent.metadata.name, considered=considered)
    labels = agent.metadata.labels
    for policy in declaring:
        if policy.spec.agent_selector.matches(labels):
            return ToolGrant(step, tool_of(policy), policy, agent, considered)
    matching = [n for n, p in sorted(catalog.policies.items()) if p.spec.agent_selector.matches(labels)]
    why = "; ".join(f"{p.metadata.name} declares it but its agentSelector {_selector(p)} does not match"
                    for p in declaring)
    raise ToolDenied("ToolNotAllowed", f"step {step!r}: tool {name!r} is denied for {who} (labels "
                     f"{_labels(labels)}): no ToolPolicy whose agentSelector matches the Agent declares it; "
                     f"policies considered: {why}; matching the Agent without the tool: "
                     f"{', '.join(matching) or 'none'} (all ToolPolicies: {', '.join(sorted(catalog.policies))})",
                     step=step, tool=name, agent=agent.metadata.name,
                     considered=tuple(sorted(catalog.policies)))


def agent_grants(agent: Agent, catalog: Catalog) -> tuple[list[ToolGrant], list[ToolDenied]]:
    """Every tool ``agent`` lists in spec.tools, decided as for a step run by it: (grants, denials), in the
    Agent's order. An MCP server's grant has no ``member``: its ``mcp.tools`` says which of its tools count."""
    grants: list[ToolGrant] = []
    denied: list[ToolDenied] = []
    for name in agent.spec.tools:
        try:
            grants.append(_decide(f"agent:{agent.metadata.name}", name, agent.metadata.name, catalog))
        except ToolDenied as exc:
            denied.append(exc)
    return grants, denied


def tool_steps(spec: WorkflowSpec) -> Iterator[tuple[str, StepSpec]]:
    """(key, step) of every tool step; key is what StepRequest.step says: the DAG step's, the state's or the
    tree leaf's name."""
    return ((key, step) for key, step in spec.keyed_steps() if step.kind is StepKind.tool)


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
    gates.update(_plan_gates(spec, catalog))
    return gates


def _plan_gates(spec: WorkflowSpec, catalog: Catalog) -> dict[str, ToolGate]:
    """Gates of the tools a plan step's plans may call (planner.tools, for each of planner.agents or none) and of
    its fallback state machine's tool steps, keyed by agentflow.engine.planner.gate_key."""
    gates: dict[str, ToolGate] = {}
    for key, step in spec.keyed_steps():
        if step.kind is not StepKind.plan or step.planner is None:
            continue
        uses: set[tuple[str | None, str]] = {(agent, tool) for tool in step.planner.tools
                                             for agent in (None, *step.planner.agents)}
        fallback = step.planner.fallback
        machine = spec.fallback_machines.get(fallback.state_machine or "") if fallback is not None else None
        for state in machine.states if machine is not None else ():
            if state.step is not None and state.step.kind is StepKind.tool and state.step.tool:
                uses.add((state.step.agent_ref.name if state.step.agent_ref else None, state.step.tool))
        for agent, tool in sorted(uses, key=lambda u: (u[0] or "", u[1])):
            probe = StepSpec(name=step.name, kind=StepKind.tool, tool=tool,
                             agent_ref=LocalRef(name=agent) if agent is not None else None)
            try:
                grant = decide_tool(probe, catalog)
            except ToolDenied:
                continue
            if grant.tool.requires_approval:
                gates[gate_key(key, agent, tool)] = ToolGate(grant.tool.name, grant.policy_name,
                                                             grant.tool.approval_timeout_seconds)
    return gates


DELEGATE_PREFIX = "delegate_"
"""Functions that call another Agent are named ``delegate_<agent>`` (tool names cannot hold ``_``)."""
FINAL_ANSWER = "final_answer"
"""The function an Agent with ``loop.finalTool`` answers through (its parameters: the outputSchema)."""
_TASK = {"type": "object", "properties": {"task": {"type": "string", "description": "what to do, in full"}},
         "required": ["task"], "additionalProperties": False}


def loop_tool(grant: ToolGrant) -> LoopTool:
    tool = grant.tool
    function = {"name": tool.name, "description": tool.description or f"the tool {tool.name}",
                "parameters": dict(tool.input_schema) if tool.input_schema else {"type": "object"}}
    return LoopTool(tool.name, function, "tool", None, grant.policy_name, tool.requires_approval,
                    tool.approval_timeout_seconds)


def agent_loop(agent: Agent, catalog: Catalog) -> AgentLoop:
    """The loop of ``agent``: each tool it lists granted (or denied, with why), each MCP server with the tools
    it grants (their schemas are listed by the server when a turn runs), and each delegate."""
    tools: dict[str, LoopTool] = {}
    denied: dict[str, str] = {}
    grants, denials = agent_grants(agent, catalog)
    for grant in grants:
        tool = grant.tool
        if tool.mcp is None:
            tools[tool.name] = loop_tool(grant)
        else:
            tools[tool.name] = LoopTool(tool.name, {"name": tool.name, "mcpTools": list(tool.mcp.tools)}, "mcp",
                                        None, grant.policy_name, tool.requires_approval,
                                        tool.approval_timeout_seconds)
    for refusal in denials:
        denied[refusal.tool] = refusal.message
    for delegate in agent.spec.delegates:
        name = DELEGATE_PREFIX + delegate.name.replace("-", "_").replace(".", "_")
        callee = catalog.agents.get(delegate.name)
        if callee is None or callee.metadata.name == agent.metadata.name:
            denied[name] = (f"Agent {agent.metadata.name!r} delegates to {delegate.name!r}, which is not an Agent "
                            "of this namespace" if callee is None else "an Agent cannot delegate to itself")
            continue
        description = delegate.description or f"ask the agent {delegate.name} ({callee.spec.role})"
        tools[name] = LoopTool(name, {"name": name, "description": description, "parameters": _TASK}, "agent",
                               delegate.name)
    for schema in memory_function_schemas(agent.spec.memory):  # run by the gateway, scoped to this Agent
        function = schema["function"]
        tools[function["name"]] = LoopTool(function["name"], function, "memory")
    loop = agent.spec.loop
    return AgentLoop(agent.metadata.name, tools, denied, loop.max_turns, loop.max_tool_calls,
                     loop.parallel_tool_calls, loop.max_depth, loop.final_tool, agent.spec.memory.conversation_tokens)


def runs_loop(agent: Agent) -> bool:
    """Whether an llm step of ``agent`` runs an agent loop: it has tools, delegates or memory tools, answers by
    tool, or carries a conversation (memory.kind conversation)."""
    return bool(agent.spec.tools or agent.spec.delegates or agent.spec.loop.final_tool
                or memory_function_schemas(agent.spec.memory) or agent.spec.memory.kind == "conversation")


def agent_loops(spec: WorkflowSpec, catalog: Catalog) -> dict[str, AgentLoop]:
    """The loops of the Agents of ``spec``'s llm steps that run one, and of every Agent they delegate to."""
    todo = [s.agent_ref.name for _, s in _llm_steps(spec) if s.agent_ref is not None]
    loops: dict[str, AgentLoop] = {}
    while todo:
        name = todo.pop()
        agent = catalog.agents.get(name)
        if name in loops or agent is None or not (runs_loop(agent) or any(
                name == t.agent for loop in loops.values() for t in loop.tools.values())):
            continue
        loops[name] = agent_loop(agent, catalog)
        todo.extend(t.agent for t in loops[name].tools.values() if t.agent is not None)
    return loops


def _llm_steps(spec: WorkflowSpec) -> Iterator[tuple[str, StepSpec]]:
    return ((key, step) for key, step in spec.keyed_steps() if step.kind is StepKind.llm)

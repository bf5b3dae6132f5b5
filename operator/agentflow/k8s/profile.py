"""The execution profile of a step: what its sandbox is granted, compiled from its effective policy. Pure.

The effective policy of a tool step is the tool's spec in the ToolPolicy that grants it to the step's Agent
(:func:`agentflow.validation.grants.decide_tool`, the one place grants are decided). :func:`compile_profile`
turns it into an :class:`ExecutionProfile`::

    runtime class   the granting ToolPolicy's runtimeClassName, else the Agent's, else None (the operator's
                    default, PodConfig.default_runtime_class: gvisor)
    resources       the tool's resources (requests/limits over the operator's defaults), else None
    env             the tool's permissions.env, nothing else
    egress          (host, port) of the HTTP tool's url, its allowedHosts, an MCP server's url, and
                    permissions.egressHosts (what a stdio MCP server reaches);
                    hosts are names, IPs or CIDRs; a port of None means any port. HTTP methods are enforced
                    by the tool runner, not here.

:func:`agentflow.k8s.podspec.build_step_pod` puts the profile on the pod and
:func:`agentflow.k8s.netpol.build_network_policy` turns its egress into the pod's NetworkPolicy.
A step that is not allowed its tool gets no profile: the caller fails it before building anything.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from ..models.agent import Agent
from ..models.catalog import Catalog
from ..models.toolpolicy import ToolPolicy, ToolSpec
from ..models.workflow import StepSpec
from ..validation.grants import ToolDenied, ToolGrant, decide_tool

__all__ = ["Egress", "ExecutionProfile", "compile_profile", "is_ip_or_cidr", "parse_host", "profile_for"]

Egress = tuple[str, int | None]
"""(host, port): a hostname, IP or CIDR, and a TCP port (None = any port)."""


@dataclasses.dataclass(frozen=True)
class ExecutionProfile:
    """What a step's sandbox is granted, from its ToolPolicy and Agent."""

    runtime_class: str | None = None
    """None: PodConfig.default_runtime_class."""
    resources: Mapping[str, Mapping[str, str]] | None = None
    """{requests: {...}, limits: {...}} over PodConfig's; None: PodConfig's."""
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    egress: tuple[Egress, ...] = ()


def parse_host(entry: str, default_port: int | None = None) -> Egress:
    """``host``, ``host:port``, ``[v6]:port``, an IP, a CIDR or a URL -> (host, port)."""
    entry = entry.strip()
    if "://" in entry:
        parts = urlsplit(entry)
        scheme_port = {"https": 443, "http": 80}.get(parts.scheme, default_port)
        return (parts.hostname or "", parts.port if parts.port is not None else scheme_port)
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return (host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port)
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return (host, int(port))
    return (entry, default_port)


def is_ip_or_cidr(host: str) -> bool:
    try:
        ipaddress.ip_network(host, strict=False)
    except ValueError:
        return False
    return True


def _egress(tool: ToolSpec) -> tuple[Egress, ...]:
    egress: list[Egress] = []
    if tool.http is not None:
        egress.append(parse_host(tool.http.url))
        egress.extend(parse_host(h) for h in tool.http.allowed_hosts)
    if tool.mcp is not None and tool.mcp.url is not None:
        egress.append(parse_host(tool.mcp.url))
    egress.extend(parse_host(h) for h in tool.permissions.egress_hosts)
    return tuple(dict.fromkeys(e for e in egress if e[0]))


def compile_profile(agent: Agent | None, grant: ToolGrant | None = None) -> ExecutionProfile:
    """The profile of a step run by ``agent`` (None: no Agent) with ``grant`` (None: an llm step, no tool)."""
    agent_class = agent.spec.runtime_class_name if agent is not None else None
    if grant is None:
        return ExecutionProfile(runtime_class=agent_class)
    tool = grant.tool
    resources = None
    if tool.resources is not None:
        resources = {kind: values for kind, values in (("requests", tool.resources.requests.to_k8s()),
                                                       ("limits", tool.resources.limits.to_k8s())) if values}
    return ExecutionProfile(
        runtime_class=grant.policy.spec.runtime_class_name or agent_class,
        resources=resources or None,
        env=dict(tool.permissions.env),
        egress=_egress(tool),
    )


def profile_for(step: StepSpec, agent: Agent | None, policies: Sequence[ToolPolicy],
                tool: ToolSpec | None = None) -> ExecutionProfile:
    """The profile of ``step`` given the namespace's ToolPolicies (through :func:`decide_tool`).

    A tool the step is not allowed gets only the Agent's runtime class and no grants. ``tool`` replaces the
    granted tool's spec (the policy still gives the runtime class).
    """
    if step.tool is None:
        return compile_profile(agent, None)
    catalog = Catalog(policies={p.metadata.name: p for p in policies})
    if agent is not None:
        catalog.agents[agent.metadata.name] = agent
    try:
        grant = decide_tool(step, catalog)
    except ToolDenied:
        return compile_profile(agent, None)
    if tool is not None:
        grant = dataclasses.replace(grant, tool=tool)
    return compile_profile(agent, grant)

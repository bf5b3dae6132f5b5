"""The granted tools as function schemas, OpenAI's ``tools`` format: what an agent loop offers its model.

::

    grants, denied = agentflow.validation.grants.agent_grants(agent, catalog)
    schemas = await function_schemas(grants, runner.mcp)      # [{"type": "function", "function": {...}}]
    grant = resolve_function(call.name, grants)               # the model's choice back to a ToolGrant
    outcome = await runner.call(grant.tool, arguments, idempotency_key=..., deadline=..., member=grant.member)

Names: a tool is offered as its ToolPolicy name (``lookup``); each granted tool of an MCP server as
``NAME__TOOL`` (``docs__search``: ToolPolicy names hold no ``_``, so the split is unambiguous). OpenAI allows
``[A-Za-z0-9_-]{1,64}``: an MCP tool whose name does not fit (a ``.`` in it, too long) is left out, and
:func:`discover_functions` says so. Parameters are the tool's ``inputSchema`` (a permissive object when a
ToolPolicy gives none); an MCP tool's is the schema the server lists, checked to be a JSON Schema with an
object at its root (the arguments of a function call are an object), or the tool is left out with why.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agentflow.validation.grants import ToolGrant

from .errors import ToolError

if TYPE_CHECKING:
    from .mcp import McpClient, McpToolInfo

__all__ = ["Functions", "discover_functions", "function_name", "function_schemas", "resolve_function"]

SEPARATOR = "__"
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_DESCRIPTION = 1024
ANY_OBJECT: Mapping[str, Any] = {"type": "object", "additionalProperties": True}


@dataclasses.dataclass(frozen=True, slots=True)
class Functions:
    """The function schemas of some grants, and the tools left out (``(name, why)``)."""

    schemas: tuple[dict[str, Any], ...]
    left_out: tuple[tuple[str, str], ...] = ()


def function_name(tool: str, member: str | None = None) -> str:
    """``tool``, or ``tool__member`` for an MCP server's tool."""
    return tool if member is None else f"{tool}{SEPARATOR}{member}"


def _schema(name: str, description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description[:MAX_DESCRIPTION],
                                             "parameters": dict(parameters)}}


def _object_schema(schema: Mapping[str, Any]) -> str | None:
    root = schema.get("type")
    if root != "object" and not (isinstance(root, list) and "object" in root):
        return f"its inputSchema's root is {root!r}, not an object (function arguments are an object)"
    return None


async def discover_functions(grants: Sequence[ToolGrant], mcp: McpClient, *,
                             timeout: float | None = None) -> Functions:
    """The function schemas of ``grants`` (each MCP server listed once); ToolError when a server cannot be
    listed. ``timeout`` bounds each server's listing (default: its mcp.connectTimeoutSeconds)."""
    schemas: list[dict[str, Any]] = []
    left_out: list[tuple[str, str]] = []
    for grant in grants:
        tool = grant.tool
        if tool.mcp is None:
            described = tool.description or f"The {tool.kind} tool {tool.name}."
            schemas.append(_schema(tool.name, described, tool.input_schema or ANY_OBJECT))
            continue
        listing = await mcp.list_tools(tool, timeout=timeout)
        left_out.extend((function_name(tool.name, n), f"MCP server {listing.server}: {why}")
                        for n, why in listing.refused)
        left_out.extend((function_name(tool.name, n), f"MCP server {listing.server} does not list it")
                        for n in listing.missing)
        for info in listing.tools:
            if grant.member is not None and info.name != grant.member:
                continue
            name = function_name(tool.name, info.name)
            why = _mcp_problem(name, info)
            if why is not None:
                left_out.append((name, f"MCP server {listing.server}: {why}"))
                continue
            schemas.append(_schema(name, info.description or f"{info.name} of the MCP server {tool.name}.",
                                   info.input_schema))
    return Functions(tuple(schemas), tuple(left_out))


def _mcp_problem(name: str, info: McpToolInfo) -> str | None:
    if not FUNCTION_NAME.fullmatch(name):
        return f"{name!r} cannot be a function name ([A-Za-z0-9_-], at most 64 characters)"
    return _object_schema(info.input_schema)


async def function_schemas(grants: Sequence[ToolGrant], mcp: McpClient) -> list[dict[str, Any]]:
    """The function schemas to offer a model for ``grants`` (see :func:`discover_functions`)."""
    return list((await discover_functions(grants, mcp)).schemas)


def resolve_function(name: str, grants: Sequence[ToolGrant]) -> ToolGrant:
    """The grant a model's function call ``name`` stands for (an MCP server's with its ``member`` set), or a
    ToolError (``UnknownTool``: no granted tool has that name; ``ToolNotAllowed``: the MCP server does not
    grant that tool) whose message lists what is offered."""
    tool, sep, member = name.partition(SEPARATOR)
    offered = ", ".join(g.tool.name + (f"{SEPARATOR}*" if g.tool.mcp is not None else "") for g in grants)
    grant = next((g for g in grants if g.tool.name == tool), None)
    if grant is None or bool(sep) != (grant.tool.mcp is not None):
        raise ToolError("UnknownTool", f"no granted tool is called {name!r} (granted: {offered or 'none'})",
                        retryable=False, tool=name)
    if grant.tool.mcp is None:
        return grant
    if not grant.tool.mcp.grants(member) or (grant.member is not None and grant.member != member):
        raise ToolError("ToolNotAllowed", f"tool {member!r} of MCP server {tool!r} ({grant.tool.mcp.server}) is "
                        f"not granted (mcp.tools: {', '.join(grant.tool.mcp.tools)})", retryable=False, tool=name)
    return dataclasses.replace(grant, member=member)

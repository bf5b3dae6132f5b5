"""MCP tool servers through the official SDK (``mcp``): the only module that imports it.

An ``mcp`` tool of a ToolPolicy names a server (a streamable HTTP ``url``, or a stdio ``command``) and which
of its tools are granted (``tools: [search, fetch]``, or every one with an explicit ``["*"]``)::

    McpClient.list_tools(spec)                        -> McpListing: the granted tools the server lists,
                                                         each input schema checked; the ones left out and why
    McpClient.call(spec, name, arguments, ...)         -> the tool's result as plain JSON values

Each operation opens its own connection and closes it (a stdio server is started for it and stopped after),
so nothing outlives a call and concurrent calls share no state; listings are cached for ``listing_ttl``
seconds. Every operation is bounded: connecting and listing by the tool's ``mcp.connectTimeoutSeconds``, the
whole operation by the ``timeout`` it is given (the ToolRunner gives the tool's ``timeoutSeconds`` or what is
left of the step's deadline). HTTP goes to the url only: no environment proxies, no redirect off its origin
(the SDK's rule), header ``Idempotency-Key``. A stdio server gets only ``permissions.env`` (plus the SDK's
PATH, HOME, USER, SHELL, TERM, LOGNAME) and ``AGENTFLOW_IDEMPOTENCY_KEY``; its stderr is kept and its tail
quoted when it fails. THE LOCAL RUNNER DOES NOT SANDBOX STDIO SERVERS (like container tools); in a step pod
the server runs inside the pod's sandbox.

A stdio command is looked up on its PATH (``permissions.env``'s, else the caller's), in the caller's working
directory, except for one word: a command starting with ``python`` runs on the Python that runs AgentFlow
(:class:`Interpreter`: ``sys.executable``; for an agentflow run from a source folder rather than installed, that
folder as PYTHONPATH unless ``permissions.env`` sets one), so ``command: [python, -m, some.module]`` imports what
AgentFlow imports: locally its virtualenv, activated or not, from any folder; in a step pod the runtime image's
``/opt/agentflow/bin/python``, which is also the pod's PATH's ``python``. ``python3`` or a path are looked up as
they are.

Results: ``structuredContent`` when the server gives it; else the content blocks: one text block is parsed
as JSON when it is JSON and kept as text otherwise, several become a list; images, audio and blobs become
``{"type", "mimeType", "bytes"}`` (their data is not passed on), resource links ``{"type", "uri", "name"}``.

Errors are :class:`agentflow.tools.errors.ToolError`, naming the tool and the server::

    McpUnavailable       the server cannot be reached, refused the connection or went away (retryable)
    McpCommandNotFound   the stdio command cannot be started
    ToolTimeout          no answer within the deadline (retryable)
    McpProtocolError     the server answered with something that is not MCP, or an HTTP error status
    McpInvalidSchema     a granted tool's inputSchema is not a JSON Schema (calling it is refused)
    McpToolNotFound      the server lists no tool of that name
    ToolNotAllowed       the ToolPolicy does not grant that tool of the server
    InvalidToolInput     the arguments break the tool's inputSchema
    McpToolError         the tool answered with an error (isError, or a JSON-RPC error)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import site
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, TextIO, cast

import anyio
import httpx2
import jsonschema
import mcp_types
from jsonschema.exceptions import best_match
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from agentflow.engine.schemas import expansion_problem, schema_errors
from agentflow.models import McpTool, ToolSpec

from .errors import ToolError

__all__ = ["PYTHON", "Interpreter", "McpClient", "McpListing", "McpToolInfo", "stdio_parameters"]

IDEMPOTENCY_ENV = "AGENTFLOW_IDEMPOTENCY_KEY"
MAX_PAGES = 20
"""tools/list pages read at most: a server that pages forever cannot hang discovery."""
MAX_TEXT = 10 * 1024 * 1024
MAX_RESULT_CHARS = 10 * 1024 * 1024
"""The largest result a call may return, all its blocks together (as any tool's output: tools.runner)."""
MAX_MESSAGE = 1000
"""The most of a server's error message kept."""
TAIL_BYTES = 4096
"""The end of a stdio server's stderr kept for error messages."""
SDK_HTTP_ERROR = "Server returned an error response"
"""The message of the SDK's own MCPError for an HTTP error status (streamable HTTP)."""
"""Characters of text content kept (the ToolRunner's output limit)."""
PYTHON = "python"
"""A stdio command's first word that stands for the Python running AgentFlow (:class:`Interpreter`)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Interpreter:
    """The Python that runs AgentFlow, which a stdio command starting with ``python`` runs on."""

    executable: str
    """Its absolute path (``sys.executable``)."""
    pythonpath: str | None = None
    """Given to the server as PYTHONPATH (unless permissions.env sets one): the folder this agentflow is imported
    from when that is not one of the interpreter's site-packages (a source checkout), so the server imports the
    same agentflow; None for an installed agentflow, which the interpreter finds by itself."""

    @classmethod
    def current(cls) -> Interpreter:
        """This process's interpreter, and the folder of its agentflow when it is not installed."""
        folder = str(Path(__file__).resolve().parents[2])  # .../agentflow/tools/mcp.py -> the folder of agentflow
        installed = {str(Path(p).resolve()) for p in (*site.getsitepackages(), site.getusersitepackages())}
        return cls(sys.executable, None if folder in installed else folder)


def stdio_parameters(mcp: McpTool, env: Mapping[str, str], interpreter: Interpreter) -> StdioServerParameters:
    """How the SDK starts ``mcp``'s stdio server with ``env`` (permissions.env and the idempotency key)."""
    assert mcp.command is not None
    command, *args = mcp.command
    if command == PYTHON:
        command = interpreter.executable
        if interpreter.pythonpath and "PYTHONPATH" not in env:
            env = {"PYTHONPATH": interpreter.pythonpath, **env}
    return StdioServerParameters(command=command, args=args, env=dict(env))


@dataclasses.dataclass(frozen=True, slots=True)
class McpToolInfo:
    """One tool an MCP server lists, its input schema checked."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    output_schema: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class McpListing:
    """What a server offers of what is granted."""

    server: str
    tools: tuple[McpToolInfo, ...]
    """Granted tools the server lists, with a usable input schema (in the server's order)."""
    refused: tuple[tuple[str, str], ...] = ()
    """(name, why) of granted tools the server lists whose schema is unusable."""
    missing: tuple[str, ...] = ()
    """Tools granted by name that the server does not list."""

    def find(self, name: str) -> McpToolInfo | None:
        return next((t for t in self.tools if t.name == name), None)


def _error(type: str, message: str, ref: str, *, retryable: bool = False) -> ToolError:
    return ToolError(type, message, retryable=retryable, tool=ref)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _check_schema(schema: Any) -> str | None:
    """Why ``schema`` cannot be a tool's input schema; None when it can."""
    if not isinstance(schema, Mapping):
        return f"inputSchema is a {type(schema).__name__}, not a JSON Schema object"
    try:
        jsonschema.validators.validator_for(schema).check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        return f"inputSchema is not a valid JSON Schema: {exc.message}"
    expansion = expansion_problem(schema)
    return f"inputSchema: {expansion}" if expansion is not None else None


def _json_path(parts: Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class McpClient:
    """Lists and calls the tools of MCP servers. Built once per driver (the ToolRunner holds one).

    ``listing_ttl``: seconds a server's listing is reused for (by list_tools and call); ``clock``: monotonic
    seconds for that cache; ``interpreter``: what a stdio command's ``python`` runs (default: this process's).
    """

    def __init__(self, *, listing_ttl: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 interpreter: Interpreter | None = None) -> None:
        self._ttl = listing_ttl
        self._clock = clock
        self._interpreter = interpreter if interpreter is not None else Interpreter.current()
        self._listings: dict[tuple[str, ...], tuple[float, list[mcp_types.Tool]]] = {}

    # ---- the two operations -------------------------------------------------------------------------------

    async def list_tools(self, spec: ToolSpec, *, timeout: float | None = None) -> McpListing:
        """The granted tools ``spec``'s server lists (ToolError when the server cannot be listed)."""
        mcp = _mcp(spec)
        limit = mcp.connect_timeout_seconds if timeout is None else min(timeout, mcp.connect_timeout_seconds)
        cached = self._cached(mcp)
        if cached is None:
            async with (self._guard(spec, spec.name, limit, "listing its tools") as errlog,
                        self._connect(spec, "", limit, errlog) as client):
                cached = await self._list(client, spec)
        return _listing(mcp, cached)

    async def call(self, spec: ToolSpec, name: str, arguments: Mapping[str, Any], *, idempotency_key: str,
                   timeout: float) -> Any:
        """Call the server's tool ``name`` with ``arguments``; its result as plain JSON values, or ToolError."""
        mcp = _mcp(spec)
        ref = f"{spec.name}/{name}"
        if not mcp.grants(name):
            raise _error("ToolNotAllowed", f"tool {ref!r}: {name!r} is not granted by the ToolPolicy "
                         f"(mcp.tools: {', '.join(mcp.tools)}) of MCP server {mcp.server}", ref)
        connect_timeout = min(timeout, mcp.connect_timeout_seconds)
        async with (self._guard(spec, ref, timeout, f"calling {name!r}") as errlog,
                    self._connect(spec, idempotency_key, connect_timeout, errlog) as client):
            cached = self._cached(mcp)
            if cached is None:
                cached = await self._list(client, spec)
            info = _granted_tool(mcp, cached, name, ref)
            _check_arguments(info, arguments, ref)
            meta = cast(mcp_types.RequestParamsMeta, {"agentflow.dev/idempotencyKey": idempotency_key})
            try:
                result = await client.call_tool(name, dict(arguments), read_timeout_seconds=timeout, meta=meta)
            except MCPError as exc:
                raise _call_error(exc, mcp, ref, f"calling {name!r}") from exc
        return _output(result, mcp, ref)

    # ---- connections --------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _guard(self, spec: ToolSpec, ref: str, timeout: float, doing: str) -> AsyncIterator[TextIO]:
        """Bound the body by ``timeout`` and translate whatever the SDK raises into a ToolError; gives the file
        a stdio server's stderr goes to."""
        mcp = _mcp(spec)
        errlog = StderrTail()
        try:
            with anyio.fail_after(timeout):
                yield errlog.file
        except ToolError:
            raise
        except TimeoutError as exc:
            raise _error("ToolTimeout", f"tool {ref!r}: MCP server {mcp.server} did not finish {doing} within "
                         f"{timeout:.3g}s (mcp.connectTimeoutSeconds / timeoutSeconds / the step's deadline)"
                         f"{_tail(errlog)}", ref, retryable=True) from exc
        except (Exception, BaseExceptionGroup) as exc:  # every SDK failure becomes a ToolError
            raise _translate(exc, mcp, ref, doing, _tail(errlog)) from exc
        finally:
            errlog.close()

    @contextlib.asynccontextmanager
    async def _connect(self, spec: ToolSpec, key: str, connect_timeout: float,
                       errlog: TextIO) -> AsyncIterator[Client]:
        mcp = _mcp(spec)
        if mcp.url is not None:
            headers = {"Idempotency-Key": key} if key else {}
            timeout = httpx2.Timeout(connect_timeout, read=None)
            async with (httpx2.AsyncClient(headers=headers, timeout=timeout, trust_env=False) as http,
                        self._session(streamable_http_client(mcp.url, http_client=http), connect_timeout) as client):
                yield client
            return
        env = {**spec.permissions.env, **({IDEMPOTENCY_ENV: key} if key else {})}
        params = stdio_parameters(mcp, env, self._interpreter)
        async with self._session(stdio_client(params, errlog=errlog), connect_timeout) as client:
            yield client

    @contextlib.asynccontextmanager
    async def _session(self, transport: Any, connect_timeout: float) -> AsyncIterator[Client]:
        # anyio's cancel scopes, not asyncio.timeout: the SDK's task groups must be cancelled through their own.
        with anyio.fail_after(connect_timeout) as scope:
            async with Client(transport, cache=None, read_timeout_seconds=connect_timeout) as client:
                scope.deadline = math.inf  # connected: the calls are bounded by the operation's timeout
                yield client

    async def _list(self, client: Client, spec: ToolSpec) -> list[mcp_types.Tool]:
        mcp = _mcp(spec)
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        else:
            raise _error("McpProtocolError", f"tool {spec.name!r}: MCP server {mcp.server} listed more than "
                         f"{MAX_PAGES} pages of tools", spec.name)
        self._listings[_key(mcp)] = (self._clock(), tools)
        return tools

    def _cached(self, mcp: McpTool) -> list[mcp_types.Tool] | None:
        hit = self._listings.get(_key(mcp))
        if hit is None or self._clock() - hit[0] > self._ttl:
            return None
        return hit[1]


def _mcp(spec: ToolSpec) -> McpTool:
    if spec.mcp is None:
        raise ValueError(f"tool {spec.name!r} is a {spec.kind} tool, not an MCP server")
    return spec.mcp


def _key(mcp: McpTool) -> tuple[str, ...]:
    return ("url", mcp.url) if mcp.url is not None else ("command", *(mcp.command or ()))


def _listing(mcp: McpTool, tools: list[mcp_types.Tool]) -> McpListing:
    usable: list[McpToolInfo] = []
    refused: list[tuple[str, str]] = []
    for tool in tools:
        if not mcp.grants(tool.name):
            continue
        why = _check_schema(tool.input_schema)
        if why is not None:
            refused.append((tool.name, why))
            continue
        usable.append(McpToolInfo(tool.name, tool.description or "", tool.input_schema, tool.output_schema))
    listed = {t.name for t in tools}
    missing = tuple(t for t in mcp.tools if t != "*" and t not in listed)
    return McpListing(mcp.server, tuple(usable), tuple(refused), missing)


def _granted_tool(mcp: McpTool, tools: list[mcp_types.Tool], name: str, ref: str) -> McpToolInfo:
    listing = _listing(mcp, tools)
    info = listing.find(name)
    if info is not None:
        return info
    why = dict(listing.refused).get(name)
    if why is not None:
        raise _error("McpInvalidSchema", f"tool {ref!r}: MCP server {mcp.server} lists {name!r} with an unusable "
                     f"schema: {why}", ref)
    names = [t.name[:80] for t in tools]
    listed = (", ".join(names[:50]) + (f" and {len(names) - 50} more" if len(names) > 50 else "")) or "none"
    raise _error("McpToolNotFound", f"tool {ref!r}: MCP server {mcp.server} has no tool {name[:80]!r} (it lists: "
                 f"{listed})", ref)


def _check_arguments(info: McpToolInfo, arguments: Mapping[str, Any], ref: str) -> None:
    try:
        errors = schema_errors(info.input_schema, dict(arguments))
    except jsonschema.SchemaError as exc:
        raise _error("McpProtocolError", f"tool {ref!r}: the MCP tool's inputSchema cannot be used: {exc.message}",
                     ref) from None
    if errors:
        error = best_match(errors)
        raise _error("InvalidToolInput", f"tool {ref!r}: arguments at {_json_path(error.absolute_path)} break "
                     f"rule {error.validator!r} of the MCP tool's inputSchema: {error.message}", ref)


class StderrTail:
    """Where a stdio server's stderr goes: a pipe whose reader thread keeps only its last TAIL_BYTES, so a server
    that floods stderr costs neither disk nor memory (a temporary file grew by GBs in seconds)."""

    def __init__(self) -> None:
        read, write = os.pipe()
        self.file: TextIO = os.fdopen(write, "w", encoding="utf-8", errors="replace")
        self._kept = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, args=(read,), name="mcp-stderr", daemon=True)
        self._reader.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as source:
            while chunk := source.read(65536):
                with self._lock:
                    self._kept += chunk
                    del self._kept[:-TAIL_BYTES]

    def text(self) -> str:
        with self._lock:
            return bytes(self._kept).decode("utf-8", "replace")

    def close(self) -> None:
        """Close this end (the thread ends at EOF: when the server and anything it started closed theirs)."""
        with contextlib.suppress(OSError):
            self.file.close()


def _tail(errlog: StderrTail) -> str:
    text = errlog.text()[-600:].strip()
    return f"; the server's stderr ends: {text!r}" if text else ""


def _translate(exc: BaseException, mcp: McpTool, ref: str, doing: str, tail: str) -> ToolError:
    """The ToolError for what the SDK raised while ``doing`` (exception groups searched for the cause)."""
    leaves = _leaves(exc)
    where = f"tool {ref!r}: MCP server {mcp.server}"
    for leaf in leaves:
        if isinstance(leaf, ToolError):
            return leaf
        if isinstance(leaf, TimeoutError):
            return _error("ToolTimeout", f"{where} did not answer while {doing}{tail}", ref, retryable=True)
    for leaf in leaves:
        if isinstance(leaf, httpx2.HTTPStatusError):
            status = leaf.response.status_code
            return _error("McpProtocolError", f"{where} answered HTTP {status} while {doing}; check the url "
                          "(the streamable HTTP endpoint, often /mcp)", ref,
                          retryable=status in (408, 425, 429) or status >= 500)
        if isinstance(leaf, httpx2.TransportError):
            return _error("McpUnavailable", f"{where} cannot be reached while {doing}: "
                          f"{type(leaf).__name__}: {leaf}", ref, retryable=True)
        if isinstance(leaf, FileNotFoundError | PermissionError):
            return _error("McpCommandNotFound", f"{where}: cannot start {(mcp.command or ['?'])[0]!r}: "
                          f"{leaf.strerror or leaf} (give an absolute path, PATH in permissions.env, or python "
                          "for the Python that runs AgentFlow)", ref)
        if isinstance(leaf, MCPError) and leaf.code == mcp_types.CONNECTION_CLOSED:
            return _error("McpUnavailable", f"{where} went away while {doing}: {leaf.message}{tail}", ref,
                          retryable=True)
        if isinstance(leaf, MCPError):
            return _error("McpProtocolError", f"{where} failed while {doing}: {leaf.message} (code {leaf.code})"
                          f"{tail}", ref, retryable=mcp.command is not None)
        if isinstance(leaf, ValidationError | json.JSONDecodeError):
            return _error("McpProtocolError", f"{where} answered something that is not MCP while {doing}: "
                          f"{str(leaf).splitlines()[0][:300]}", ref)
    first = leaves[0]
    return _error("McpUnavailable", f"{where} failed while {doing}: {type(first).__name__}: {first}{tail}", ref,
                  retryable=True)


def _call_error(exc: MCPError, mcp: McpTool, ref: str, doing: str) -> ToolError:
    """What a call's MCPError is: the SDK's own word for a transport that failed (the server went away, an HTTP
    error status, a request that timed out, an answer it could not read), or the server's answer to the call."""
    where = f"tool {ref!r}: MCP server {mcp.server}"
    message = exc.message[:MAX_MESSAGE]
    if exc.code == mcp_types.CONNECTION_CLOSED:
        return _error("McpUnavailable", f"{where} went away while {doing}: {message}", ref, retryable=True)
    if exc.code == mcp_types.REQUEST_TIMEOUT:
        return _error("ToolTimeout", f"{where} did not answer while {doing}: {message}", ref, retryable=True)
    if exc.code == mcp_types.INTERNAL_ERROR and message == SDK_HTTP_ERROR:
        return _error("McpUnavailable", f"{where} answered {doing} with an HTTP error status", ref, retryable=True)
    if exc.code in (mcp_types.PARSE_ERROR, mcp_types.INVALID_REQUEST):
        return _error("McpProtocolError", f"{where} answered {doing} with something that is not MCP: {message} "
                      f"(code {exc.code})", ref)
    return _error("McpToolError", f"{where} refused the call: {message} (code {exc.code})", ref)


def _output(result: mcp_types.CallToolResult, mcp: McpTool, ref: str) -> Any:
    blocks = [_block(b) for b in result.content]
    if result.is_error:
        text = " ".join(b for b in blocks if isinstance(b, str)) or json.dumps(result.structured_content)
        raise _error("McpToolError", f"tool {ref!r}: MCP server {mcp.server} answered with an error: {text[:1000]}",
                     ref)
    size = (len(json.dumps(result.structured_content)) if result.structured_content is not None
            else sum(len(b) if isinstance(b, str) else len(json.dumps(b)) for b in blocks))
    if size > MAX_RESULT_CHARS:
        raise _error("InvalidToolOutput", f"tool {ref!r}: MCP server {mcp.server} answered {size:,} characters, "
                     f"more than a tool's output may be ({MAX_RESULT_CHARS:,})", ref)
    if result.structured_content is not None:
        return result.structured_content
    if len(blocks) == 1 and isinstance(blocks[0], str):
        try:
            return json.loads(blocks[0])
        except ValueError:
            return blocks[0]
    return blocks or None


def _block(block: mcp_types.ContentBlock) -> Any:
    if isinstance(block, mcp_types.TextContent):
        return block.text[:MAX_TEXT]
    if isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
        return {"type": block.type, "mimeType": block.mime_type, "bytes": len(block.data) * 3 // 4}
    if isinstance(block, mcp_types.ResourceLink):
        return {"type": "resource_link", "uri": str(block.uri), "name": block.name}
    resource = block.resource
    if isinstance(resource, mcp_types.TextResourceContents):
        return {"type": "resource", "uri": str(resource.uri), "text": resource.text[:MAX_TEXT]}
    return {"type": "resource", "uri": str(resource.uri), "mimeType": resource.mime_type,
            "bytes": len(resource.blob) * 3 // 4}

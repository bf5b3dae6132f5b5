"""The ToolPolicy resource: the tool registry and who may use which tool.

Deny by default: a tool runs for an Agent only when some ToolPolicy whose
agentSelector matches the Agent declares it, and the Agent lists it.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from . import limits
from .base import API_VERSION, JSONValue, LabelSelector, Model, ObjectMeta, ResourceStatus

_HTTP_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]+([/?#]\S*)?$"
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
RUNTIME_CLASS = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class HttpTool(Model):
    """An HTTP endpoint called with the step's inputs as the JSON body."""

    url: str = Field(max_length=2048, json_schema_extra={"pattern": _HTTP_URL})
    """URL called: http:// or https:// with a host (no file://, ftp:// or other schemes)."""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    """HTTP method."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Hosts the tool may reach (egress allow-list); the url's host is always included."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError(f"{url!r} is not an http:// or https:// URL (scheme {parts.scheme or 'missing'!r}); "
                             "an http tool calls an HTTP endpoint")
        try:
            host = parts.hostname
            parts.port  # noqa: B018  (raises ValueError on a port that is not a number or out of range)
        except ValueError as exc:
            raise ValueError(f"{url!r}: {exc}") from None
        if not host or re.fullmatch(_HTTP_URL, url) is None:
            raise ValueError(f"{url!r} is not of the form http(s)://HOST[:PORT]/PATH (a host, no spaces)")
        return url


class WasmTool(Model):
    """A WebAssembly module run as a WASI command in wasmtime, with nothing granted by default.

    Exactly one source: ``module`` (a file), ``wat`` (inline WebAssembly text) or ``base64``
    (an inline binary module). Inline sources travel with the ToolPolicy, so they run on a
    cluster as they run locally. The tool's inputs arrive as JSON on stdin; it prints one JSON
    value on stdout. Grants come only from the tool's ``permissions`` (env, readPaths).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.module) ? 1 : 0) + (has(self.wat) ? 1 : 0) + (has(self.base64) ? 1 : 0) == 1",
                    "message": "a wasm tool needs exactly one of module, wat, base64",
                }
            ]
        }
    )

    module: str | None = Field(default=None, min_length=1, max_length=4096)
    """A .wasm/.wat file: absolute (in the step image), or relative to the manifest's folder (inlined at load)."""
    wat: str | None = Field(default=None, min_length=1, max_length=1_048_576)
    """The module as inline WebAssembly text (at most 1 MiB)."""
    base64: str | None = Field(default=None, min_length=1, max_length=1_048_576, pattern=r"^[A-Za-z0-9+/\s]+=*\s*$")
    """The binary module, base64-encoded inline (at most 1 MiB of text)."""
    function: str = Field(default="_start", min_length=1)
    """Exported function called, taking and returning nothing (_start: a WASI command)."""
    fuel: int = Field(default=100_000_000, gt=0, le=limits.MAX_WASM_FUEL)
    """CPU limit in wasmtime fuel units (about one unit per WebAssembly instruction; at most 10^12)."""
    memory_mb: int = Field(default=64, gt=0, le=4096)
    """Linear memory limit in MiB; memory.grow past it fails."""

    @model_validator(mode="after")
    def _one_source(self) -> WasmTool:
        sources = [k for k in ("module", "wat", "base64") if getattr(self, k) is not None]
        if len(sources) != 1:
            got = ", ".join(sources) or "none"
            raise ValueError(f"a wasm tool needs exactly one of module, wat, base64 (got {got})")
        return self


class ContainerTool(Model):
    """A command run in its own sandboxed container (as a subprocess in the local runner)."""

    image: str
    """Container image."""
    command: list[str] = Field(min_length=1)
    """Command; the step inputs arrive as JSON on stdin, the output is read as JSON from stdout."""


MCP_TOOL_NAME = r"^[A-Za-z0-9_.\-]{1,128}$"
"""What an MCP tool may be called (the MCP specification's SHOULD for tool names)."""


class McpTool(Model):
    """An MCP server (Model Context Protocol) whose tools are discovered at run time.

    Exactly one server: ``url`` (streamable HTTP) or ``command`` (a stdio server started for each call,
    inside the step's sandbox on a cluster). ``tools`` lists the server's tools that are granted: names, or
    ``["*"]`` for every tool the server lists. A tool step calls one of them as ``tool: NAME/TOOL`` with the
    step's inputs as its arguments; an agent is offered each granted tool as a function ``NAME__TOOL``.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.url) ? 1 : 0) + (has(self.command) ? 1 : 0) == 1",
                    "message": "an mcp tool needs exactly one of url, command",
                }
            ]
        }
    )

    url: str | None = Field(default=None, pattern=r"^https?://[^/?#\s]+(/[^\s]*)?$", max_length=2048)
    """The server's streamable HTTP endpoint, e.g. http://10.0.0.5:8000/mcp (granted as egress like an http url)."""
    command: list[str] | None = Field(default=None, min_length=1)
    """A stdio server: the command and its arguments, run with only permissions.env (plus PATH and HOME). A first
    word python is the Python that runs AgentFlow (the runtime image's in a step pod), e.g. [python, -m, a.module]."""
    tools: list[str] = Field(min_length=1, max_length=256)
    """The server's tools that are granted: their names, or exactly ["*"] for all of them (explicit, never implied)."""
    connect_timeout_seconds: float = Field(default=10, gt=0, le=300)
    """Deadline of connecting and listing the server's tools (each call also stays within timeoutSeconds)."""

    @model_validator(mode="after")
    def _check(self) -> McpTool:
        if (self.url is None) == (self.command is None):
            got = "both" if self.url is not None else "none"
            raise ValueError(f"an mcp tool needs exactly one of url, command (got {got})")
        if "*" in self.tools and self.tools != ["*"]:
            raise ValueError('mcp.tools grants every tool with exactly ["*"]; do not mix "*" with names')
        bad = [t for t in self.tools if t != "*" and not re.fullmatch(MCP_TOOL_NAME, t)]
        if bad:
            raise ValueError(f"mcp.tools: {', '.join(map(repr, bad))} is not an MCP tool name "
                             "(1-128 of A-Z a-z 0-9 _ - .)")
        return self

    def grants(self, name: str) -> bool:
        """Whether the server's tool ``name`` is granted."""
        return self.tools == ["*"] or name in self.tools

    @property
    def server(self) -> str:
        """The server as messages name it: its URL, or its command line."""
        if self.url is not None:
            return self.url
        assert self.command is not None
        return " ".join(self.command)


def split_tool_ref(ref: str) -> tuple[str, str | None]:
    """A step's ``tool``: ``NAME`` or, for an MCP server, ``NAME/TOOL`` -> (NAME, TOOL or None)."""
    name, sep, member = ref.partition("/")
    return (name, member) if sep else (ref, None)


class BuiltinTool(Model):
    """A tool implemented inside AgentFlow."""

    name: Literal["text-search", "echo", "json-extract"]
    """Which builtin."""
    config: dict[str, JSONValue] = Field(default_factory=dict)
    """Builtin-specific settings (e.g. the documents text-search searches)."""


class RateLimit(Model):
    """Calls allowed per minute."""

    per_minute: int = Field(gt=0, le=limits.MAX_RATE_PER_MINUTE)
    """Calls per minute (1 to 1,000,000)."""


class Permissions(Model):
    """What the tool's sandbox is granted."""

    egress_hosts: list[str] = Field(default_factory=list)
    """Hosts the sandbox may open connections to."""
    env: dict[str, str] = Field(default_factory=dict, max_length=100)
    """Environment variables passed in (names as Kubernetes takes them everywhere: letters, digits, '_', '-',
    '.', not starting with a digit; at most 100)."""
    read_paths: list[str] = Field(default_factory=list, max_length=100)
    """Paths mounted read-only (wasm: preopened directories)."""

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        bad = [name for name in env if not _ENV_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"environment variable names {', '.join(map(repr, bad))} are not valid: use letters, "
                             "digits, '_', '-' and '.', not starting with a digit")
        if any("\x00" in value for value in env.values()):
            raise ValueError("environment variable values cannot hold NUL characters")
        return env


_QUANTITY = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


class ResourceList(Model):
    """Kubernetes quantities (250m, 1, 256Mi); unset ones keep the operator's default."""

    cpu: str | None = Field(default=None, pattern=_QUANTITY)
    """CPU (cores or millicores: 500m)."""
    memory: str | None = Field(default=None, pattern=_QUANTITY)
    """Memory (bytes with a suffix: 256Mi)."""
    ephemeral_storage: str | None = Field(default=None, pattern=_QUANTITY)
    """Local ephemeral storage."""

    def to_k8s(self) -> dict[str, str]:
        """As a Kubernetes ResourceList (``ephemeral-storage`` spelled the Kubernetes way)."""
        out = {"cpu": self.cpu, "memory": self.memory, "ephemeral-storage": self.ephemeral_storage}
        return {k: v for k, v in out.items() if v is not None}


class Resources(Model):
    """Requests and limits of the sandbox of a tool's step pod (over the operator's defaults)."""

    requests: ResourceList = Field(default_factory=ResourceList)
    """Requested resources."""
    limits: ResourceList = Field(default_factory=ResourceList)
    """Resource limits."""


TOOL_KINDS = ("builtin", "http", "wasm", "container", "mcp")


class ToolSpec(Model):
    """One tool in the registry: exactly one of builtin, http, wasm, container, mcp."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.builtin) ? 1 : 0) + (has(self.http) ? 1 : 0)"
                    " + (has(self.wasm) ? 1 : 0) + (has(self.container) ? 1 : 0) + (has(self.mcp) ? 1 : 0) == 1",
                    "message": "a tool needs exactly one of builtin, http, wasm, container, mcp",
                }
            ]
        }
    )

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Tool name steps refer to."""
    description: str = ""
    """What the tool does (shown to models)."""
    input_schema: dict[str, JSONValue] | None = None
    """JSON Schema of the inputs."""
    output_schema: dict[str, JSONValue] | None = None
    """JSON Schema of the output."""
    builtin: BuiltinTool | None = None
    """A tool implemented inside AgentFlow."""
    http: HttpTool | None = None
    """An HTTP endpoint."""
    wasm: WasmTool | None = None
    """A WebAssembly (WASI) module."""
    container: ContainerTool | None = None
    """A command in its own sandboxed container."""
    mcp: McpTool | None = None
    """An MCP server and which of its tools are granted."""
    permissions: Permissions = Field(default_factory=Permissions)
    """Grants of the sandbox."""
    timeout_seconds: float = Field(default=30, gt=0, le=limits.MAX_TOOL_TIMEOUT_SECONDS)
    """Deadline of one call (seconds, at most 86400)."""
    rate_limit: RateLimit | None = None
    """Calls allowed per minute."""
    cost_per_call_usd: float = Field(default=0.0, ge=0, le=limits.MAX_COST_PER_CALL_USD)
    """Cost booked per call (US dollars, at most 10,000)."""
    requires_approval: bool = False
    """A human must approve each call: the step pauses before it runs, like an approval step."""
    approval_timeout_seconds: float | None = Field(default=None, gt=0, le=limits.MAX_RUN_TIMEOUT_SECONDS)
    """With requiresApproval: the call is rejected when nobody decides within this time (seconds, at most
    90 days)."""
    resources: Resources | None = None
    """Requests/limits of the step pod running this tool (default: the operator's)."""

    @model_validator(mode="after")
    def _one_kind(self) -> ToolSpec:
        kinds = [k for k in TOOL_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = ", ".join(kinds) or "none"
            raise ValueError(f"a tool needs exactly one of builtin, http, wasm, container, mcp (got {got})")
        return self

    @property
    def kind(self) -> str:
        for k in TOOL_KINDS:
            if getattr(self, k) is not None:
                return k
        raise AssertionError("validated")


class ToolPolicySpec(Model):
    """Desired state of a ToolPolicy."""

    agent_selector: LabelSelector = Field(default_factory=LabelSelector)
    """Agents this policy applies to (empty = every Agent in the namespace)."""
    tools: list[ToolSpec] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Tools declared and allowed (unique names)."""
    runtime_class_name: str | None = Field(default=None, max_length=253, pattern=RUNTIME_CLASS)
    """RuntimeClass of step pods running these tools (default: the Agent's, else the operator's, gvisor)."""


class ToolPolicy(Model):
    """A ToolPolicy: tools (builtin, HTTP, WebAssembly, container, MCP servers) and the Agents allowed to use them."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["ToolPolicy"] = "ToolPolicy"
    metadata: ObjectMeta
    spec: ToolPolicySpec
    status: ResourceStatus | None = None

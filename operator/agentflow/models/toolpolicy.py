"""The ToolPolicy resource: the tool registry and who may use which tool.

Deny by default: a tool runs for an Agent only when some ToolPolicy whose
agentSelector matches the Agent declares it, and the Agent lists it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .base import API_VERSION, JSONValue, LabelSelector, Model, ObjectMeta, ResourceStatus


class HttpTool(Model):
    """An HTTP endpoint called with the step's inputs as the JSON body."""

    url: str
    """URL called."""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    """HTTP method."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Hosts the tool may reach (egress allow-list); the url's host is always included."""


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
    fuel: int = Field(default=100_000_000, gt=0)
    """CPU limit in wasmtime fuel units (about one unit per WebAssembly instruction)."""
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


class BuiltinTool(Model):
    """A tool implemented inside AgentFlow."""

    name: Literal["text-search", "echo", "json-extract"]
    """Which builtin."""
    config: dict[str, JSONValue] = Field(default_factory=dict)
    """Builtin-specific settings (e.g. the documents text-search searches)."""


class RateLimit(Model):
    """Calls allowed per minute."""

    per_minute: int = Field(gt=0)
    """Calls per minute."""


class Permissions(Model):
    """What the tool's sandbox is granted."""

    egress_hosts: list[str] = Field(default_factory=list)
    """Hosts the sandbox may open connections to."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables passed in."""
    read_paths: list[str] = Field(default_factory=list)
    """Paths mounted read-only (wasm: preopened directories)."""


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


class ToolSpec(Model):
    """One tool in the registry: exactly one of builtin, http, wasm, container."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.builtin) ? 1 : 0) + (has(self.http) ? 1 : 0)"
                    " + (has(self.wasm) ? 1 : 0) + (has(self.container) ? 1 : 0) == 1",
                    "message": "a tool needs exactly one of builtin, http, wasm, container",
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
    permissions: Permissions = Field(default_factory=Permissions)
    """Grants of the sandbox."""
    timeout_seconds: float = Field(default=30, gt=0)
    """Deadline of one call."""
    rate_limit: RateLimit | None = None
    """Calls allowed per minute."""
    cost_per_call_usd: float = Field(default=0.0, ge=0)
    """Cost booked per call."""
    requires_approval: bool = False
    """A human must approve each call: the step pauses before it runs, like an approval step."""
    approval_timeout_seconds: float | None = Field(default=None, gt=0)
    """With requiresApproval: the call is rejected when nobody decides within this time."""
    resources: Resources | None = None
    """Requests/limits of the step pod running this tool (default: the operator's)."""

    @model_validator(mode="after")
    def _one_kind(self) -> ToolSpec:
        kinds = [k for k in ("builtin", "http", "wasm", "container") if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = ", ".join(kinds) or "none"
            raise ValueError(f"a tool needs exactly one of builtin, http, wasm, container (got {got})")
        return self

    @property
    def kind(self) -> str:
        for k in ("builtin", "http", "wasm", "container"):
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
    runtime_class_name: str | None = None
    """RuntimeClass of step pods running these tools (default: the Agent's, else the operator's, gvisor)."""


class ToolPolicy(Model):
    """A ToolPolicy: tools (builtin, HTTP, WebAssembly, container) and the Agents allowed to use them."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["ToolPolicy"] = "ToolPolicy"
    metadata: ObjectMeta
    spec: ToolPolicySpec
    status: ResourceStatus | None = None

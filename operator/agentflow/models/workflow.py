"""The Workflow resource: one run of a DAG or a state machine of steps.

Expressions: ``when`` conditions, ``forEach`` lists, transition conditions and
output mappings are CEL (https://cel.dev) expressions, evaluated by the pure
engine over this context::

    inputs          the workflow's inputs (spec.inputs)
    steps.NAME      {"phase": ..., "output": ...} of every finished step
    item, index     the current element inside a forEach step
    output, error   the step's own result (state-machine transitions)
    workflow        {"name": ..., "namespace": ...}

String values in ``inputs`` and prompt templates may embed expressions as
``${{ expr }}``; a string that is exactly one ``${{ expr }}`` takes the
expression's value with its type (a list stays a list).
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import ConfigDict, Field, JsonValue, model_validator

from .base import (
    API_VERSION,
    JSONValue,
    LocalRef,
    Model,
    ObjectMeta,
    ResourceStatus,
)

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# CRD metadata of lists of named items: the API server rejects duplicate names and
# server-side apply merges the items by name.
_NAMED_LIST: dict[str, JsonValue] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}


class StepKind(str, Enum):
    """What a step does."""

    llm = "llm"
    tool = "tool"
    approval = "approval"


class RunOn(str, Enum):
    """When a step runs relative to the outcome of what came before it."""

    success = "success"
    failure = "failure"
    always = "always"


class Backoff(Model):
    """Exponential backoff between attempts: min(max, initial * factor^(n-1)) +/- jitter."""

    initial_seconds: float = Field(default=1.0, ge=0)
    """Delay before the second attempt."""
    factor: float = Field(default=2.0, ge=1)
    """Multiplier applied for each further attempt."""
    max_seconds: float = Field(default=300.0, ge=0)
    """Cap on the delay."""
    jitter: float = Field(default=0.1, ge=0, le=1)
    """Fraction of the delay drawn (deterministically per run, step and attempt) as +/- jitter."""


class RetryPolicy(Model):
    """How often a failed attempt is retried."""

    limit: int = Field(default=0, ge=0, le=100)
    """Number of retries after the first attempt (0 = no retry)."""
    backoff: Backoff = Field(default_factory=Backoff)
    """Delay between attempts."""
    retry_on: list[str] = Field(default_factory=list)
    """Error types that are retried (empty = every retryable error)."""


class ApprovalSpec(Model):
    """A human decision the step waits for."""

    message: str = ""
    """What the approver is asked; may embed ${{ expr }}."""
    approvers: list[str] = Field(default_factory=list)
    """Who may decide (user or group names); empty = anyone allowed to approve."""
    timeout_seconds: float | None = Field(default=None, gt=0)
    """Reject automatically when nobody decides within this time."""


class ModelParams(Model):
    """Per-step overrides of the Agent's model parameters."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature."""
    max_tokens: int | None = Field(default=None, gt=0)
    """Upper bound on output tokens."""
    cache: bool = True
    """Whether the gateway may answer from its response cache."""


class StepSpec(Model):
    """One step of a DAG, or the action of a state."""

    # Mirrors _kind_fields for the API server. Only O(1) operations (kind is an enum, size() of a
    # string is constant), so the CEL cost stays small however many steps a list holds.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.kind != 'llm' || (has(self.agentRef) && has(self.promptRef))",
                    "message": "an llm step needs agentRef and promptRef",
                },
                {
                    "rule": "self.kind != 'tool' || (has(self.tool) && size(self.tool) > 0)",
                    "message": "a tool step needs tool",
                },
                {
                    "rule": "self.kind == 'llm' || !has(self.promptRef)",
                    "message": "promptRef is only allowed on llm steps",
                },
                {
                    "rule": "self.kind != 'approval' || !has(self.agentRef)",
                    "message": "agentRef is not allowed on approval steps",
                },
                {
                    "rule": "self.kind == 'tool' || !has(self.tool) || size(self.tool) == 0",
                    "message": "tool is only allowed on tool steps",
                },
                {
                    "rule": "self.kind == 'approval' || !has(self.approval)",
                    "message": "approval is only allowed on approval steps",
                },
            ]
        }
    )

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Unique step name (DNS label)."""
    kind: StepKind
    """llm (an Agent and a prompt), tool, or approval."""
    depends_on: list[str] = Field(default_factory=list)
    """Steps that must finish first (DAG mode only)."""
    when: str | None = None
    """CEL condition; the step is Skipped when it is false."""
    run_on: RunOn = RunOn.success
    """success (default): all dependencies succeeded or were skipped; failure: the run has failed;
    always: exit handler."""
    agent_ref: LocalRef | None = None
    """The Agent that runs an llm step, or on whose behalf a tool step calls its tool."""
    prompt_ref: LocalRef | None = None
    """The PromptVersion an llm step renders."""
    tool: str | None = None
    """Name of the tool a tool step calls (declared in a ToolPolicy)."""
    inputs: dict[str, JSONValue] = Field(default_factory=dict)
    """Inputs of the step; strings may embed ${{ expr }}."""
    for_each: str | None = None
    """CEL expression giving a list: the step runs once per element (fan-out)."""
    parallelism: int | None = Field(default=None, ge=1)
    """Most fan-out items running at once for this step."""
    retry: RetryPolicy | None = None
    """Retry policy (defaults to the workflow's)."""
    timeout_seconds: float | None = Field(default=None, gt=0)
    """Deadline of one attempt."""
    approval: ApprovalSpec | None = None
    """Settings of an approval step."""
    model_params: ModelParams | None = None
    """Overrides of the Agent's model parameters for an llm step."""
    continue_on_failure: bool = False
    """A failure of this step does not fail the workflow."""

    @model_validator(mode="after")
    def _kind_fields(self) -> StepSpec:
        if self.kind is StepKind.llm and (self.agent_ref is None or self.prompt_ref is None):
            raise ValueError("an llm step needs agentRef and promptRef")
        if self.kind is StepKind.tool and not self.tool:
            raise ValueError("a tool step needs tool")
        if self.kind is not StepKind.llm and self.prompt_ref is not None:
            raise ValueError(f"promptRef is only allowed on llm steps, not {self.kind.value} steps")
        if self.kind is StepKind.approval and self.agent_ref is not None:
            raise ValueError("agentRef is not allowed on approval steps")
        if self.kind is not StepKind.tool and self.tool:
            raise ValueError(f"tool is only allowed on tool steps, not {self.kind.value} steps")
        if self.kind is not StepKind.approval and self.approval is not None:
            raise ValueError(f"approval is only allowed on approval steps, not {self.kind.value} steps")
        return self


class Transition(Model):
    """A move from one state to another."""

    target: str
    """Name of the next state."""
    when: str | None = None
    """CEL condition over output, error, inputs and steps; absent = always taken."""
    result: Literal["success", "error"] = "success"
    """Whether this transition applies after the state's step succeeded or failed (error)."""


class FinalOutcome(str, Enum):
    """How a final state ends the run."""

    succeeded = "Succeeded"
    failed = "Failed"


class StateSpec(Model):
    """A named state of a state-machine workflow."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.final) || !has(self.transitions) || size(self.transitions) == 0",
                    "message": "a final state has no transitions",
                }
            ]
        }
    )

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Unique state name."""
    step: StepSpec | None = None
    """The action run on entering the state (none for a pure choice state)."""
    transitions: list[Transition] = Field(default_factory=list)
    """Tried in order; the first whose `on` and `when` match is taken."""
    final: FinalOutcome | None = None
    """Makes this a final state that ends the run with this outcome."""
    max_visits: int | None = Field(default=None, ge=1)
    """How often the run may enter this state (bounds loops)."""

    @model_validator(mode="after")
    def _final_has_no_transitions(self) -> StateSpec:
        if self.final is not None and self.transitions:
            raise ValueError("a final state has no transitions")
        return self


class StateMachineSpec(Model):
    """A deterministic finite-state machine of steps."""

    initial: str
    """Name of the first state."""
    states: list[StateSpec] = Field(min_length=1, json_schema_extra=_NAMED_LIST)
    """The states (unique names)."""
    max_visits: int = Field(default=10, ge=1)
    """Default bound on entries into any one state."""


class WorkflowSpec(Model):
    """Desired state of a Workflow run."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.steps) && size(self.steps) > 0) != has(self.stateMachine)",
                    "message": "exactly one of steps or stateMachine must be given",
                }
            ]
        }
    )

    inputs: dict[str, JSONValue] = Field(default_factory=dict)
    """Inputs of the run."""
    input_schema: dict[str, JSONValue] | None = None
    """JSON Schema the inputs must satisfy."""
    steps: list[StepSpec] = Field(default_factory=list, json_schema_extra=_NAMED_LIST)
    """DAG steps with unique names (exclusive with stateMachine)."""
    state_machine: StateMachineSpec | None = None
    """State-machine definition (exclusive with steps)."""
    outputs: dict[str, str] = Field(default_factory=dict)
    """Named CEL expressions computed when the run ends (default: outputs of the last steps)."""
    parallelism: int | None = Field(default=None, ge=1)
    """Most steps running at once across the run."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    """Default retry policy of every step."""
    timeout_seconds: float | None = Field(default=None, gt=0)
    """Deadline of the whole run."""
    budget_ref: LocalRef | None = None
    """Budget the run's costs count against."""
    cancel: bool = False
    """Set to true to cancel the run."""
    suspend: bool = False
    """Set to true to stop scheduling new steps until set back to false."""
    pod_cleanup: Literal["onSuccess", "always", "never"] = "onSuccess"
    """When finished step pods are deleted (keep on failure by default)."""

    @model_validator(mode="after")
    def _one_shape(self) -> WorkflowSpec:
        if bool(self.steps) == bool(self.state_machine):
            raise ValueError("exactly one of steps or stateMachine must be given")
        return self


class Phase(str, Enum):
    """Phase of a Workflow run."""

    pending = "Pending"
    running = "Running"
    waiting = "Waiting"
    suspended = "Suspended"
    succeeded = "Succeeded"
    failed = "Failed"
    cancelled = "Cancelled"


class NodeStatus(Model):
    """Status of one step (or fan-out item, or state visit)."""

    phase: str
    """Pending, Running, Waiting, Retrying, Succeeded, Failed, Skipped or Cancelled."""
    attempts: int = 0
    """Attempts made."""
    started_at: str | None = None
    """RFC 3339 time the first attempt started."""
    finished_at: str | None = None
    """RFC 3339 time the node finished."""
    message: str | None = None
    """Error or skip reason."""
    cost_usd: float | None = None
    """Cost of the step's model and tool calls."""
    output_preview: str | None = None
    """The first characters of the output."""
    output_ref: str | None = None
    """Where the full output is kept."""


class WorkflowStatus(ResourceStatus):
    """Observed state of a Workflow run."""

    phase: Phase | None = None
    """Pending, Running, Waiting, Suspended, Succeeded, Failed or Cancelled."""
    progress: str | None = None
    """Finished/total steps, for example 3/5."""
    started_at: str | None = None
    """RFC 3339 time the run started."""
    finished_at: str | None = None
    """RFC 3339 time the run finished."""
    nodes: dict[str, NodeStatus] = Field(default_factory=dict)
    """Per-step status (large runs keep only a summary here)."""
    outputs: dict[str, JSONValue] | None = None
    """Final outputs."""
    cost_usd: float | None = None
    """Total cost of the run in US dollars."""
    tokens: int | None = None
    """Total tokens of the run."""
    trace_id: str | None = None
    """OpenTelemetry trace id of the run."""
    message: str | None = None
    """Why the run is in its phase (for example the error that failed it)."""


class Workflow(Model):
    """A Workflow: one run of a DAG or a state machine of steps (llm, tool, approval)."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["Workflow"] = "Workflow"
    metadata: ObjectMeta
    spec: WorkflowSpec
    status: WorkflowStatus | None = None

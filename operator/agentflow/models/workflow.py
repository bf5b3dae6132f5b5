"""The Workflow resource: one run of a DAG, a state machine or a behavior tree of steps.

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

from collections.abc import Iterator
from enum import Enum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, JsonValue, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

from . import limits
from .base import (
    API_VERSION,
    JSONValue,
    LocalRef,
    Model,
    ObjectMeta,
    ResourceStatus,
)
from .notify import ApprovalNotify, is_email

TEMPLATE_FIELDS = ("steps", "state_machine", "behavior_tree", "fallback_machines", "outputs", "input_schema", "retry")
"""What a WorkflowTemplate gives and a Workflow made from it may not (as their defaults: the API server
fills those in)."""

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# CRD metadata of lists of named items: the API server rejects duplicate names and
# server-side apply merges the items by name.
_NAMED_LIST: dict[str, JsonValue] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}


class StepKind(str, Enum):
    """What a step does."""

    llm = "llm"
    tool = "tool"
    approval = "approval"
    plan = "plan"
    workflow = "workflow"


class RunOn(str, Enum):
    """When a step runs relative to the outcome of what came before it."""

    success = "success"
    failure = "failure"
    always = "always"


class Backoff(Model):
    """Exponential backoff between attempts: min(max, initial * factor^(n-1)) +/- jitter."""

    initial_seconds: float = Field(default=1.0, ge=0, le=limits.MAX_BACKOFF_SECONDS)
    """Delay before the second attempt (0 to 86400 seconds)."""
    factor: float = Field(default=2.0, ge=1, le=limits.MAX_BACKOFF_FACTOR)
    """Multiplier applied for each further attempt (1 to 10)."""
    max_seconds: float = Field(default=300.0, ge=0, le=limits.MAX_BACKOFF_SECONDS)
    """Cap on the delay (0 to 86400 seconds)."""
    jitter: float = Field(default=0.1, ge=0, le=1)
    """Fraction of the delay drawn (deterministically per run, step and attempt) as +/- jitter."""


class RetryPolicy(Model):
    """How often a failed attempt is retried."""

    limit: int = Field(default=0, ge=0, le=limits.MAX_RETRIES)
    """Number of retries after the first attempt (0 = no retry; at most 100)."""
    backoff: Backoff = Field(default_factory=Backoff)
    """Delay between attempts."""
    retry_on: list[str] = Field(default_factory=list, max_length=100)
    """Error types that are retried (empty = every retryable error)."""


class ApprovalSpec(Model):
    """A human decision the step waits for."""

    message: str = ""
    """What the approver is asked; may embed ${{ expr }}."""
    approvers: list[str] = Field(default_factory=list, max_length=1000)
    """Who may decide (user or group names); empty = anyone allowed to approve."""
    timeout_seconds: float | None = Field(default=None, gt=0, le=limits.MAX_RUN_TIMEOUT_SECONDS)
    """Reject automatically when nobody decides within this time (seconds, at most 90 days)."""
    notify: ApprovalNotify | None = None
    """Notify the approvers (e-mail, a Slack-compatible webhook) when the step starts waiting, remind them and
    escalate to a second group (agentflow.models.notify). On a cluster only: the local runner asks in the terminal."""

    @model_validator(mode="after")
    def _notify(self) -> ApprovalSpec:
        notify = self.notify
        if notify is None:
            return self
        if notify.empty and not any(is_email(a) for a in self.approvers):
            raise ValueError("notify names no recipient: give notify.emails or notify.webhookSecretRef (or approvers "
                             "that are e-mail addresses)")
        after = notify.escalate_after_seconds
        if after is not None and self.timeout_seconds is not None and after >= self.timeout_seconds:
            raise ValueError(f"notify.escalateAfter ({notify.escalate_after}) is not before timeoutSeconds "
                             f"({self.timeout_seconds:g}): the step is rejected before anyone would be escalated to")
        return self


class ModelParams(Model):
    """Per-step overrides of the Agent's model parameters."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature."""
    max_tokens: int | None = Field(default=None, gt=0, le=limits.MAX_OUTPUT_TOKENS)
    """Upper bound on output tokens (at most 1,000,000)."""
    cache: bool = True
    """Whether the gateway may answer from its response cache."""


class PromptRef(Model):
    """The prompt of an llm step: one PromptVersion by name, or a prompt family (spec.prompt of its
    PromptVersions), optionally pinned to a version. A family's version is chosen per run from its rollout
    (agentflow.prompts.rollout: the canary's weight of runs get the candidate, the others the stable version),
    recorded when the run starts and kept by resume and replay."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.name) != has(self.family)", "message": "a promptRef needs exactly one of name, family"},
        {"rule": "!has(self.version) || has(self.family)", "message": "promptRef.version needs promptRef.family"},
    ]})

    name: str | None = Field(default=None, min_length=1)
    """A PromptVersion's name."""
    family: str | None = Field(default=None, min_length=1)
    """A prompt family: the PromptVersions whose spec.prompt is this."""
    version: str | None = Field(default=None, min_length=1)
    """With family: pin this spec.version instead of following the rollout."""

    @model_validator(mode="after")
    def _one(self) -> PromptRef:
        if (self.name is None) == (self.family is None):
            raise ValueError("a promptRef needs exactly one of name, family")
        if self.version is not None and self.family is None:
            raise ValueError("promptRef.version needs promptRef.family (a name is one version already)")
        return self


class PlanLimits(Model):
    """Bounds a planner's plan is held to; a plan past any of them is refused before any of its steps runs."""

    max_steps: int = Field(default=10, ge=1, le=limits.MAX_PLAN_STEPS)
    """Most steps in one plan (1 to 50)."""
    max_depth: int = Field(default=5, ge=1, le=limits.MAX_PLAN_STEPS)
    """Most steps on one dependsOn chain of the plan (1 to 50)."""
    max_cost_usd: float | None = Field(default=None, ge=0)
    """Refuse a plan whose preflight cost estimate (agentflow.cost.estimate, its high end) is above this (USD);
    absent: no cost limit of its own (budgets still apply to every call)."""


class ReplanSpec(Model):
    """Checkpoints of a plan: the planner sees the results so far and may revise the steps not started yet."""

    every: int = Field(ge=1, le=limits.MAX_PLAN_STEPS)
    """A checkpoint after every this many finished steps of the plan (1 to 50)."""
    max: int = Field(default=1, ge=1, le=limits.MAX_REPLANS)
    """Most revisions of one plan (1 to 10)."""


class PlanFallback(Model):
    """What runs when no valid plan came within the repairs: a state machine of spec.fallbackMachines, or a
    human decision."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.stateMachine) != has(self.approval)",
         "message": "a fallback needs exactly one of stateMachine, approval"},
    ]})

    state_machine: str | None = Field(default=None, min_length=1)
    """The name of a state machine in spec.fallbackMachines: it runs instead of the plan (nodes STEP/fallback/...)."""
    approval: ApprovalSpec | None = None
    """A human decides instead (node STEP/approval); approved, the step succeeds with the decision."""

    @model_validator(mode="after")
    def _one(self) -> PlanFallback:
        if (self.state_machine is None) == (self.approval is None):
            raise ValueError("a fallback needs exactly one of stateMachine, approval")
        return self


PlannedKind = Literal["llm", "tool", "approval"]
PLANNED_KINDS: tuple[PlannedKind, ...] = ("llm", "tool", "approval")


class PlannerSpec(Model):
    """A plan step's planner: what its Agent (the step's agentRef) may put in a plan, and what happens when it
    cannot give a valid one. The step's inputs are the goal the planner is given."""

    kinds: list[PlannedKind] = Field(default_factory=lambda: list(PLANNED_KINDS), min_length=1, max_length=3)
    """The step kinds a plan may hold."""
    agents: list[str] = Field(default_factory=list, max_length=100)
    """Agents the plan's llm and tool steps may name (agentRef)."""
    prompts: list[str] = Field(default_factory=list, max_length=100)
    """PromptVersions the plan's llm steps may name (promptRef)."""
    tools: list[str] = Field(default_factory=list, max_length=100)
    """Tools the plan's tool steps may call; each must also be granted to the step's Agent by a ToolPolicy."""
    repairs: int = Field(default=1, ge=0, le=limits.MAX_PLAN_REPAIRS)
    """How often an invalid plan is sent back to the planner with its validation errors (0 to 5)."""
    replan: ReplanSpec | None = None
    """Checkpoints where the planner may revise the steps not started yet; absent: the plan runs as accepted."""
    fallback: PlanFallback | None = None
    """What runs when no valid plan came; absent: the step fails naming the validation errors."""
    # last: the field's name shadows the limits module in the class body
    limits: PlanLimits = Field(default_factory=PlanLimits)
    """Bounds of a plan: steps, depth, cost."""


TemplateKind = Literal["WorkflowTemplate", "ClusterWorkflowTemplate"]


class TemplateRef(Model):
    """A reference to a WorkflowTemplate (same namespace) or a ClusterWorkflowTemplate (cluster-wide).

    Either way the namespaced objects the template names (Agents, PromptVersions, ToolPolicies, Budgets) are
    those of the referring Workflow's namespace."""

    name: str = Field(min_length=1)
    """Name of the template."""
    kind: TemplateKind = "WorkflowTemplate"
    """WorkflowTemplate (the default: one of this namespace) or ClusterWorkflowTemplate (written by the platform's
    admins, usable from every namespace)."""


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
                {
                    "rule": "self.kind != 'plan' || (has(self.agentRef) && has(self.planner))",
                    "message": "a plan step needs agentRef and planner",
                },
                {
                    "rule": "self.kind == 'plan' || !has(self.planner)",
                    "message": "planner is only allowed on plan steps",
                },
                {
                    "rule": "self.kind != 'workflow' || (has(self.workflowTemplateRef) && !has(self.agentRef))",
                    "message": "a workflow step needs workflowTemplateRef and has no agentRef",
                },
                {
                    "rule": "self.kind == 'workflow' || !has(self.workflowTemplateRef)",
                    "message": "workflowTemplateRef is only allowed on workflow steps",
                },
            ]
        }
    )

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Unique step name (DNS label)."""
    kind: StepKind
    """llm (an Agent and a prompt), tool, approval, plan (an Agent plans steps that then run: planner), or
    workflow (a child Workflow made from workflowTemplateRef with this step's inputs; its outputs are the step's
    output)."""
    depends_on: list[str] = Field(default_factory=list, max_length=limits.MAX_DEPENDS_ON)
    """Steps that must finish first (DAG mode only). Not an exit handler (runOn failure or always, no
    dependsOn): those run after every other step, so nothing can wait for them."""
    when: str | None = None
    """CEL condition; the step is Skipped when it is false."""
    run_on: RunOn = RunOn.success
    """success (default): all dependencies succeeded or were skipped; failure: the run has failed;
    always: exit handler."""
    agent_ref: LocalRef | None = None
    """The Agent that runs an llm step, or on whose behalf a tool step calls its tool."""
    prompt_ref: PromptRef | None = None
    """The PromptVersion an llm step renders: by name, or a family's (chosen per run, or pinned)."""
    tool: str | None = None
    """Name of the tool a tool step calls (declared in a ToolPolicy)."""
    inputs: dict[str, JSONValue] = Field(default_factory=dict)
    """Inputs of the step; strings may embed ${{ expr }} (at most 256 KiB as JSON)."""
    for_each: str | None = None
    """CEL expression giving a list: the step runs once per element (fan-out)."""
    parallelism: int | None = Field(default=None, ge=1, le=limits.MAX_FANOUT_ITEMS)
    """Most fan-out items running at once for this step (1 to 10,000). A forEach list may hold at most
    10,000 items; a longer one fails the step."""
    retry: RetryPolicy | None = None
    """Retry policy (defaults to the workflow's)."""
    timeout_seconds: float | None = Field(default=None, gt=0, le=limits.MAX_ATTEMPT_TIMEOUT_SECONDS)
    """Deadline of one attempt (seconds, at most 604800: a week)."""
    approval: ApprovalSpec | None = None
    """Settings of an approval step."""
    model_params: ModelParams | None = None
    """Overrides of the Agent's model parameters for an llm step."""
    continue_on_failure: bool = False
    """A failure of this step does not fail the workflow."""
    planner: PlannerSpec | None = None
    """Settings of a plan step: what its plan may hold, its repairs, checkpoints and fallback."""
    workflow_template_ref: TemplateRef | None = None
    """The template a workflow step runs as a child Workflow (the same reference as spec.workflowTemplateRef:
    a WorkflowTemplate of this namespace or a ClusterWorkflowTemplate), one child per attempt, in this
    namespace. The step's inputs are the child's inputs (checked against the template's inputSchema); the
    child's outputs are the step's output, its cost is added to this run's; cancelling this run cancels it."""

    @model_validator(mode="after")
    def _kind_fields(self) -> StepSpec:
        if self.kind is StepKind.workflow and (self.workflow_template_ref is None or self.agent_ref is not None):
            raise ValueError("a workflow step needs workflowTemplateRef and has no agentRef (the child's steps name "
                             "their own Agents)")
        if self.kind is not StepKind.workflow and self.workflow_template_ref is not None:
            raise ValueError(f"workflowTemplateRef is only allowed on workflow steps, not {self.kind.value} steps")
        if self.kind is StepKind.plan and (self.agent_ref is None or self.planner is None):
            raise ValueError("a plan step needs agentRef and planner")
        if self.kind is not StepKind.plan and self.planner is not None:
            raise ValueError(f"planner is only allowed on plan steps, not {self.kind.value} steps")
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
    transitions: list[Transition] = Field(default_factory=list, max_length=limits.MAX_TRANSITIONS)
    """Tried in order; the first whose `on` and `when` match is taken."""
    final: FinalOutcome | None = None
    """Makes this a final state that ends the run with this outcome."""
    max_visits: int | None = Field(default=None, ge=1, le=limits.MAX_VISITS)
    """How often the run may enter this state (bounds loops; 1 to 10,000)."""

    @model_validator(mode="after")
    def _final_has_no_transitions(self) -> StateSpec:
        if self.final is not None and self.transitions:
            raise ValueError("a final state has no transitions")
        return self


class StateMachineSpec(Model):
    """A deterministic finite-state machine of steps."""

    initial: str
    """Name of the first state."""
    states: list[StateSpec] = Field(min_length=1, max_length=limits.MAX_STATES, json_schema_extra=_NAMED_LIST)
    """The states (unique names; at most 500). maxVisits summed over them may not pass 100,000."""
    max_visits: int = Field(default=10, ge=1, le=limits.MAX_VISITS)
    """Default bound on entries into any one state (1 to 10,000)."""


class TreeNodeType(str, Enum):
    """What a node of a behavior tree is: a composite, a decorator or a leaf."""

    sequence = "sequence"
    selector = "selector"
    parallel = "parallel"
    retry = "retry"
    timeout = "timeout"
    invert = "invert"
    repeat = "repeat"
    condition = "condition"
    step = "step"


COMPOSITES = frozenset({TreeNodeType.sequence, TreeNodeType.selector, TreeNodeType.parallel})
DECORATORS = frozenset({TreeNodeType.retry, TreeNodeType.timeout, TreeNodeType.invert, TreeNodeType.repeat,
                        TreeNodeType.condition})

# The API server cannot hold a recursive schema: below spec.behaviorTree, children are objects it keeps as they
# are; the webhook, `agentflow validate` and the reconciler check them with the full model.
_SUBTREE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_CHILDREN_SCHEMA = WithJsonSchema({"type": "array", "items": _SUBTREE, "maxItems": limits.MAX_TREE_CHILDREN,
                                   "description": "Children, run in order (sequence, selector) or at once "
                                                  "(parallel); at most 500."})
_CHILD_SCHEMA = WithJsonSchema({**_SUBTREE, "description": "The node a decorator wraps."})


class BehaviorNode(Model):
    """One node of a behavior tree. Composites: sequence (every child in order, the first failure fails it),
    selector (children in order until one succeeds), parallel (every child at once; succeeds once
    successThreshold children succeeded, fails once failureThreshold failed). Decorators of one child: retry
    (runs it again after a failure, up to limit more times), timeout (fails it past timeoutSeconds), invert,
    repeat (runs it count times while it succeeds), condition (a CEL guard: false fails the node without running
    the child; without a child it is a check). Leaves: step, an llm, tool or approval step (an llm step whose
    Agent has tools runs its agent loop)."""

    type: TreeNodeType
    """sequence, selector, parallel, retry, timeout, invert, repeat, condition or step."""
    name: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=63)
    """A name for a composite or decorator (shown in status and the console; default: its path)."""
    children: Annotated[list[BehaviorNode], _CHILDREN_SCHEMA] = Field(
        default_factory=list, max_length=limits.MAX_TREE_CHILDREN)
    """The children of a sequence, selector or parallel node (at least one)."""
    child: Annotated[BehaviorNode | None, _CHILD_SCHEMA] = None
    """The node a decorator wraps."""
    step: StepSpec | None = None
    """The step of a leaf; its name is unique in the tree and is what steps.NAME reads."""
    success_threshold: int | None = Field(default=None, ge=1, le=limits.MAX_TREE_CHILDREN)
    """parallel: children that must succeed (default: all of them)."""
    failure_threshold: int | None = Field(default=None, ge=1, le=limits.MAX_TREE_CHILDREN)
    """parallel: children whose failure fails the node (default: as many as make successThreshold impossible)."""
    limit: int | None = Field(default=None, ge=1, le=limits.MAX_RETRIES)
    """retry: how many more times the child runs after a failure (1 to 100)."""
    count: int | None = Field(default=None, ge=1, le=limits.MAX_TREE_REPEAT)
    """repeat: how many times the child runs (1 to 10,000); the first failure fails the node."""
    timeout_seconds: float | None = Field(default=None, gt=0, le=limits.MAX_RUN_TIMEOUT_SECONDS)
    """timeout: the child fails (its running steps cancelled) when it has not finished by then (seconds)."""
    when: str | None = None
    """condition: CEL over inputs, steps and workflow; false (or an error) fails the node."""

    @model_validator(mode="after")
    def _fields_of_type(self) -> BehaviorNode:
        kind = self.type
        wants = {
            "children": kind in COMPOSITES,
            "child": kind in DECORATORS,
            "step": kind is TreeNodeType.step,
            "successThreshold": kind is TreeNodeType.parallel,
            "failureThreshold": kind is TreeNodeType.parallel,
            "limit": kind is TreeNodeType.retry,
            "count": kind is TreeNodeType.repeat,
            "timeoutSeconds": kind is TreeNodeType.timeout,
            "when": kind is TreeNodeType.condition,
        }
        given = {"children": bool(self.children), "child": self.child is not None, "step": self.step is not None,
                 "successThreshold": self.success_threshold is not None,
                 "failureThreshold": self.failure_threshold is not None, "limit": self.limit is not None,
                 "count": self.count is not None, "timeoutSeconds": self.timeout_seconds is not None,
                 "when": self.when is not None}
        article = "an" if kind.value[0] in "aeiou" else "a"
        extra = [f for f, there in given.items() if there and not wants[f]]
        if extra:
            raise ValueError(f"{article} {kind.value} node has no {' or '.join(extra)}")
        optional = {"child"} if kind is TreeNodeType.condition else set()
        optional |= {"successThreshold", "failureThreshold"}
        missing = [f for f, wanted in wants.items() if wanted and not given[f] and f not in optional]
        if missing:
            raise ValueError(f"{article} {kind.value} node needs {' and '.join(missing)}")
        return self


class RunTtl(Model):
    """How long a finished Workflow is kept, per phase it finished in, before the operator deletes it (and
    collects its journal, results and call log; the audit chain stays). Like a Job's ttlSecondsAfterFinished,
    per phase as Argo's ttlStrategy (secondsAfterSuccess/Failure): a failed run is often kept longer to look
    into. Per phase rather than one number with Argo's secondsAfterCompletion beside it: a phase that is not
    named is kept, so ``{succeeded: 3600}`` deletes only the runs that succeeded.

    Given on the Workflow (or its WorkflowTemplate), it replaces the operator's default as a whole
    (agentflow operator --ttl-seconds-after-finished, the chart's retention.ttlSecondsAfterFinished), as Argo's
    ttlStrategy replaces the controller's: ``{}`` keeps this run whatever the default says."""

    succeeded: int | None = Field(default=None, ge=0, le=limits.MAX_TTL_SECONDS)
    """Seconds a Succeeded run is kept after it finished (0: deleted at once; absent: kept)."""
    failed: int | None = Field(default=None, ge=0, le=limits.MAX_TTL_SECONDS)
    """Seconds a Failed run is kept after it finished (an invalid spec's too)."""
    cancelled: int | None = Field(default=None, ge=0, le=limits.MAX_TTL_SECONDS)
    """Seconds a Cancelled run is kept after it finished."""

    def seconds(self, phase: str) -> int | None:
        """The TTL of a run that finished in ``phase`` (Succeeded, Failed, Cancelled); None: kept."""
        return {"Succeeded": self.succeeded, "Failed": self.failed, "Cancelled": self.cancelled}.get(phase)


class WorkflowSpec(Model):
    """Desired state of a Workflow run."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "((has(self.steps) && size(self.steps) > 0) ? 1 : 0) + (has(self.stateMachine) ? 1 : 0)"
                            " + (has(self.behaviorTree) ? 1 : 0) == (has(self.workflowTemplateRef) ? 0 : 1)",
                    "message": "exactly one of steps, stateMachine or behaviorTree must be given (none with "
                               "workflowTemplateRef)",
                }
            ]
        }
    )

    workflow_template_ref: TemplateRef | None = None
    """The WorkflowTemplate (same namespace) or ClusterWorkflowTemplate (kind) this run is made from: give only
    inputs (and run controls such as cancel, suspend, budgetRef, parallelism, timeoutSeconds, podCleanup,
    ttlSecondsAfterFinished); the template gives the rest."""
    inputs: dict[str, JSONValue] = Field(default_factory=dict)
    """Inputs of the run (at most 256 KiB as JSON). `agentflow run --input KEY=VALUE` overrides one; KEY must
    be one of these or a property of inputSchema when the Workflow declares any."""
    input_schema: dict[str, JSONValue] | None = None
    """JSON Schema the inputs must satisfy."""
    steps: list[StepSpec] = Field(default_factory=list, max_length=limits.MAX_STEPS, json_schema_extra=_NAMED_LIST)
    """DAG steps with unique names (exclusive with stateMachine and behaviorTree; at most 2,000)."""
    state_machine: StateMachineSpec | None = None
    """State-machine definition (exclusive with steps and behaviorTree)."""
    behavior_tree: BehaviorNode | None = None
    """The root of a behavior tree (exclusive with steps and stateMachine; at most 2,000 nodes, 32 deep)."""
    fallback_machines: dict[str, StateMachineSpec] = Field(default_factory=dict, max_length=limits.MAX_PLAN_FALLBACKS)
    """State machines a plan step may fall back to (planner.fallback.stateMachine), by name (at most 20)."""
    outputs: dict[str, str] = Field(default_factory=dict)
    """Named CEL expressions computed when the run ends (default: outputs of the last steps)."""
    parallelism: int | None = Field(default=None, ge=1, le=limits.MAX_FANOUT_ITEMS)
    """Most step attempts running at once across the run (1 to 10,000). The runner and the operator also
    apply a default cap of their own (agentflow run --max-parallel, agentflow operator --max-parallel);
    the lower of the two applies."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    """Default retry policy of every step."""
    timeout_seconds: float | None = Field(default=None, gt=0, le=limits.MAX_RUN_TIMEOUT_SECONDS)
    """Deadline of the whole run (seconds, at most 7776000: 90 days)."""
    budget_ref: LocalRef | None = None
    """Budget the run's costs count against."""
    cancel: bool = False
    """Set to true to cancel the run."""
    suspend: bool = False
    """Set to true to stop scheduling new steps until set back to false; running child Workflows (workflow steps)
    are suspended with it and resumed when it is set back."""
    pod_cleanup: Literal["onSuccess", "always", "never"] = "onSuccess"
    """When finished step pods are deleted (keep on failure by default)."""
    ttl_seconds_after_finished: RunTtl | None = None
    """How long the finished Workflow is kept, per phase, before the operator deletes it and collects its rows
    (absent: the operator's default, --ttl-seconds-after-finished; without one, kept until deleted)."""

    @model_validator(mode="after")
    def _one_shape(self) -> WorkflowSpec:
        shapes = bool(self.steps) + (self.state_machine is not None) + (self.behavior_tree is not None)
        if self.workflow_template_ref is not None:
            default = WorkflowSpec.model_fields
            given = sorted(to_camel(f) for f in TEMPLATE_FIELDS
                           if getattr(self, f) != default[f].get_default(call_default_factory=True))
            if given:
                raise ValueError(f"workflowTemplateRef: the template gives {', '.join(given)}; a Workflow made "
                                 "from a template gives only inputs and run controls")
        elif shapes != 1:
            raise ValueError("exactly one of steps, stateMachine or behaviorTree must be given")
        return self

    def find_step(self, name: str) -> StepSpec | None:
        """The DAG step called ``name``, or the step of the state called ``name`` (a StepRequest's ``step``).

        One lookup; whoever looks up a step per attempt keeps :meth:`step_index` instead."""
        return self.step_index().get(name)

    def keyed_steps(self) -> Iterator[tuple[str, StepSpec]]:
        """(key, step) of every step, key being what StepRequest.step says: a DAG step's name, a state's name
        (for its step), a behavior tree leaf's step name. In spec order."""
        for step in self.steps:
            yield step.name, step
        if self.state_machine is not None:
            for state in self.state_machine.states:
                if state.step is not None:
                    yield state.name, state.step
        for _, leaf in tree_leaves(self.behavior_tree):
            yield leaf.name, leaf

    def step_index(self) -> dict[str, StepSpec | None]:
        """Every DAG step by name, and every state's step by the state's name (the first of a name)."""
        index: dict[str, StepSpec | None] = {}
        for step in self.steps:
            index.setdefault(step.name, step)
        if self.state_machine is not None:
            for state in self.state_machine.states:
                index.setdefault(state.name, state.step)
        for _, leaf in tree_leaves(self.behavior_tree):
            index.setdefault(leaf.name, leaf)
        return index


def tree_nodes(root: BehaviorNode | None, path: tuple[str | int, ...] = ("spec", "behaviorTree")
               ) -> Iterator[tuple[tuple[str | int, ...], BehaviorNode]]:
    """Every node of a behavior tree with its path, depth first in order (iterative: no recursion limit)."""
    todo = [(path, root)] if root is not None else []
    while todo:
        where, node = todo.pop()
        yield where, node
        below: list[tuple[tuple[str | int, ...], BehaviorNode]] = [
            ((*where, "children", i), c) for i, c in enumerate(node.children)]
        if node.child is not None:
            below.append(((*where, "child"), node.child))
        todo.extend(reversed(below))


def tree_leaves(root: BehaviorNode | None) -> Iterator[tuple[tuple[str | int, ...], StepSpec]]:
    """The step of every leaf of a behavior tree with the leaf's path, in order."""
    for where, node in tree_nodes(root):
        if node.step is not None:
            yield where, node.step


class Phase(str, Enum):
    """Phase of a Workflow run."""

    pending = "Pending"
    running = "Running"
    waiting = "Waiting"
    suspended = "Suspended"
    succeeded = "Succeeded"
    failed = "Failed"
    cancelled = "Cancelled"


class ChildWorkflow(Model):
    """The child Workflow of a workflow step's latest attempt."""

    name: str
    """The child Workflow (in the same namespace)."""
    phase: str
    """Its phase as last seen: Pending, Running, Waiting, Suspended, Succeeded, Failed or Cancelled."""


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
    workflow: ChildWorkflow | None = None
    """A workflow step's child Workflow (its latest attempt's)."""


class PromptChoice(Model):
    """The PromptVersion a run got for a step's prompt family, and why."""

    family: str
    """The prompt family (spec.prompt)."""
    name: str
    """The PromptVersion."""
    version: str
    """Its spec.version."""
    reason: Literal["stable", "candidate", "pinned"]
    """stable or candidate (the rollout's split by run), or pinned (promptRef.version)."""


class TemplateRecord(Model):
    """Which WorkflowTemplate or ClusterWorkflowTemplate a Workflow was resolved from, as it was then."""

    name: str
    """The template."""
    kind: TemplateKind = "WorkflowTemplate"
    """WorkflowTemplate or ClusterWorkflowTemplate."""
    uid: str | None = None
    """Its metadata.uid."""
    generation: int | None = None
    """Its metadata.generation when the run was resolved."""
    resource_version: str | None = None
    """Its metadata.resourceVersion when the run was resolved."""


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
    prompts: dict[str, PromptChoice] | None = None
    """The PromptVersion each step referring to a prompt family got, by step (decided when the run started)."""
    trace_id: str | None = None
    """OpenTelemetry trace id of the run (set when the operator traces: --otlp-endpoint)."""
    trace_url: str | None = None
    """A link to the run's trace in a tracing backend (the operator's --trace-url-template)."""
    message: str | None = None
    """Why the run is in its phase (for example the error that failed it)."""
    workflow_template: TemplateRecord | None = None
    """The WorkflowTemplate the run was resolved from (spec.workflowTemplateRef), as it was then."""
    template_spec: dict[str, JSONValue] | None = None
    """The spec the run was resolved to from its template: later edits of the template do not change it."""
    expires_at: str | None = None
    """RFC 3339 time the operator deletes this finished Workflow (spec.ttlSecondsAfterFinished, its template's
    or the operator's default); absent: kept."""


class Workflow(Model):
    """A Workflow: one run of a DAG, a state machine or a behavior tree of steps (llm, tool, approval)."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["Workflow"] = "Workflow"
    metadata: ObjectMeta
    spec: WorkflowSpec
    status: WorkflowStatus | None = None

"""WorkflowTemplate, ClusterWorkflowTemplate and WorkflowSchedule: reusable Workflow definitions, and cron schedules
creating runs of them.

A Workflow with ``spec.workflowTemplateRef`` gives only inputs (and run controls); the template gives the rest.
``workflowTemplateRef.kind`` says which kind: a WorkflowTemplate of the Workflow's namespace (the default) or a
ClusterWorkflowTemplate, cluster-scoped, written by the platform's admins and usable from every namespace. A cluster
template names Agents, PromptVersions, ToolPolicies and Budgets by name only: they are looked up in the namespace of
the Workflow that uses it, never anywhere else, so a tenant gets nothing through it that its namespace does not
hold.
:func:`agentflow.validation.templates.resolve_workflow` turns such a Workflow into the full one (the same function
for ``agentflow validate``/``run``, the admission webhook and the reconciler). The operator records the template it
resolved (``status.workflowTemplate``: name, uid, generation, resourceVersion) and the spec it resolved to
(``status.templateSpec``), so a later edit of the template never changes a run already started.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import API_VERSION, JSONValue, Model, ObjectMeta, ResourceStatus
from .workflow import TemplateRef, WorkflowSpec

TEMPLATE_ANNOTATION = "agentflow.dev/workflow-template"
"""On a Workflow the local runner resolved from a template: the template's name (ClusterWorkflowTemplate/NAME for a
cluster template)."""
SCHEDULE_LABEL = "agentflow.dev/schedule"
"""On a Workflow a WorkflowSchedule created: the schedule's name."""
SCHEDULED_TIME_ANNOTATION = "agentflow.dev/scheduled-time"
"""On a Workflow a WorkflowSchedule created: the RFC 3339 time of its slot."""

SCHEDULE_NAME_MAX = 52
"""A WorkflowSchedule's name is at most 52 characters: its Workflows are named NAME-MINUTES (11 more)."""


class _Template(Model):
    """What both template kinds hold."""

    metadata: ObjectMeta
    spec: WorkflowSpec
    status: ResourceStatus | None = None

    @model_validator(mode="after")
    def _not_a_reference(self) -> _Template:
        if self.spec.workflow_template_ref is not None:
            raise ValueError(f"spec.workflowTemplateRef: a {type(self).__name__} cannot refer to another template")
        return self


class WorkflowTemplate(_Template):
    """A reusable Workflow definition: a Workflow spec (steps, state machine or behavior tree) and the input
    schema its runs' inputs must satisfy (spec.inputs are the defaults)."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["WorkflowTemplate"] = "WorkflowTemplate"


class ClusterWorkflowTemplate(_Template):
    """A reusable Workflow definition for every namespace (cluster-scoped; written by the platform's admins): a
    Workflow spec and the input schema its runs' inputs must satisfy. The Agents, PromptVersions, ToolPolicies and
    Budgets it names are those of the namespace of each Workflow made from it. It has no Ready condition: what it
    refers to is checked per namespace, when a Workflow is admitted and reconciled."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["ClusterWorkflowTemplate"] = "ClusterWorkflowTemplate"


AnyTemplate = WorkflowTemplate | ClusterWorkflowTemplate
"""Either template kind."""


class WorkflowScheduleSpec(Model):
    """When to start runs of a WorkflowTemplate."""

    schedule: str = Field(min_length=1, max_length=256)
    """Cron expression: minute hour day-of-month month day-of-week (numbers, *, ranges, steps, lists; month and
    day names), or @yearly, @monthly, @weekly, @daily, @hourly."""
    time_zone: str = Field(default="UTC", min_length=1, max_length=64)
    """IANA time zone the schedule is read in (for example Europe/Berlin). A time skipped by a DST change runs
    at the first instant after the gap; a time repeated by one runs once (its first occurrence)."""
    workflow_template_ref: TemplateRef
    """The WorkflowTemplate (same namespace) or ClusterWorkflowTemplate (kind) each run is made from."""
    inputs: dict[str, JSONValue] = Field(default_factory=dict)
    """Inputs of each run (checked against the template's inputSchema)."""
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    """Allow: start runs side by side; Forbid: skip a slot while a run is active (it starts later if the
    previous run ends before startingDeadlineSeconds); Replace: cancel the active runs, then start."""
    starting_deadline_seconds: int | None = Field(default=None, ge=0, le=31_536_000)
    """A slot not started this many seconds after its time is missed (none: started however late)."""
    successful_jobs_history_limit: int = Field(default=3, ge=0, le=1000)
    """Succeeded Workflows kept; older ones are deleted (the template's ttlSecondsAfterFinished, or the operator's
    default, may delete them sooner: whichever comes first)."""
    failed_jobs_history_limit: int = Field(default=1, ge=0, le=1000)
    """Failed or cancelled Workflows kept; older ones are deleted (or sooner by their TTL)."""
    suspend: bool = False
    """Set to true to start no new runs (runs already started go on)."""


class ActiveRun(Model):
    """A run of a schedule that has not finished."""

    name: str
    """The Workflow."""
    scheduled_time: str
    """RFC 3339 time of the slot it was started for."""


class WorkflowScheduleStatus(ResourceStatus):
    """Observed state of a WorkflowSchedule."""

    last_schedule_time: str | None = None
    """RFC 3339 time of the last slot a run was started for."""
    next_schedule_time: str | None = None
    """RFC 3339 time of the next slot (none while suspended)."""
    active: list[ActiveRun] = Field(default_factory=list)
    """The runs that have not finished."""
    message: str | None = None
    """What the last decision did (started, skipped, missed) or why the schedule is invalid."""


class WorkflowSchedule(Model):
    """A cron schedule creating Workflows from a WorkflowTemplate."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["WorkflowSchedule"] = "WorkflowSchedule"
    metadata: ObjectMeta
    spec: WorkflowScheduleSpec
    status: WorkflowScheduleStatus | None = None

    @model_validator(mode="after")
    def _short_name(self) -> WorkflowSchedule:
        if len(self.metadata.name) > SCHEDULE_NAME_MAX:
            raise ValueError(f"metadata.name: at most {SCHEDULE_NAME_MAX} characters (its Workflows are named "
                             "NAME-MINUTES)")
        return self

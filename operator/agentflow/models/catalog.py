"""A Catalog: the Agents, PromptVersions, ToolPolicies, Budgets and WorkflowTemplates a Workflow can refer to.

The local runner fills it from the manifests it loads; the operator fills it
from the cluster (one namespace, and the ClusterWorkflowTemplates, which are
cluster-scoped). Lookups return None for a missing name so validation can
report every missing reference at once.
"""

from __future__ import annotations

import dataclasses

from .agent import Agent
from .budget import Budget
from .prompt import PromptVersion
from .rollout import PromptRollout
from .template import AnyTemplate, ClusterWorkflowTemplate, WorkflowSchedule, WorkflowTemplate
from .toolpolicy import ToolPolicy, ToolSpec
from .trigger import WorkflowTrigger
from .workflow import TemplateRef


@dataclasses.dataclass
class Catalog:
    agents: dict[str, Agent] = dataclasses.field(default_factory=dict)
    prompts: dict[str, PromptVersion] = dataclasses.field(default_factory=dict)
    policies: dict[str, ToolPolicy] = dataclasses.field(default_factory=dict)
    budgets: dict[str, Budget] = dataclasses.field(default_factory=dict)
    templates: dict[str, WorkflowTemplate] = dataclasses.field(default_factory=dict)
    schedules: dict[str, WorkflowSchedule] = dataclasses.field(default_factory=dict)
    triggers: dict[str, WorkflowTrigger] = dataclasses.field(default_factory=dict)
    rollouts: dict[str, PromptRollout] = dataclasses.field(default_factory=dict)
    cluster_templates: dict[str, ClusterWorkflowTemplate] = dataclasses.field(default_factory=dict)

    def add(self, resource: Agent | PromptVersion | ToolPolicy | Budget | WorkflowTemplate | WorkflowSchedule
            | WorkflowTrigger | PromptRollout | ClusterWorkflowTemplate) -> None:
        table: dict[str, object] = {
            "Agent": self.agents,
            "PromptVersion": self.prompts,
            "ToolPolicy": self.policies,
            "Budget": self.budgets,
            "WorkflowTemplate": self.templates,
            "WorkflowSchedule": self.schedules,
            "WorkflowTrigger": self.triggers,
            "PromptRollout": self.rollouts,
            "ClusterWorkflowTemplate": self.cluster_templates,
        }[resource.kind]  # type: ignore[assignment]
        table[resource.metadata.name] = resource

    def templates_of(self, kind: str) -> dict[str, AnyTemplate]:
        """The templates of this kind (WorkflowTemplate or ClusterWorkflowTemplate), by name."""
        table = self.cluster_templates if kind == "ClusterWorkflowTemplate" else self.templates
        return dict(table)

    def template(self, ref: TemplateRef) -> AnyTemplate | None:
        """The template a workflowTemplateRef names, of its kind; None when there is none."""
        if ref.kind == "ClusterWorkflowTemplate":
            return self.cluster_templates.get(ref.name)
        return self.templates.get(ref.name)

    def policies_for(self, agent: Agent | None) -> list[ToolPolicy]:
        """ToolPolicies whose agentSelector matches the Agent (all policies when no agent)."""
        labels = agent.metadata.labels if agent is not None else {}
        return [
            p
            for _, p in sorted(self.policies.items())
            if agent is None or p.spec.agent_selector.matches(labels)
        ]

    def find_tool(self, name: str) -> ToolSpec | None:
        """The tool declared under this name in any policy (first by policy name)."""
        for _, policy in sorted(self.policies.items()):
            for tool in policy.spec.tools:
                if tool.name == name:
                    return tool
        return None

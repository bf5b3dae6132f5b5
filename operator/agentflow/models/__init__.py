"""Pydantic models of the five AgentFlow resources: the single source of truth."""

from .agent import Agent, AgentSpec, DataResidency, MemorySpec, ModelSpec, SecretKeyRef
from .base import API_VERSION, GROUP, VERSION, Condition, LabelSelector, LocalRef, Model, ObjectMeta, ResourceStatus
from .budget import Budget, BudgetLimits, BudgetScope, BudgetSpec, BudgetStatus
from .catalog import Catalog
from .manifests import KINDS, Document, ManifestError, Problem, Resource, parse_resource
from .prompt import Canary, EvaluationCase, PromptMessage, PromptVersion, PromptVersionSpec
from .toolpolicy import (
    BuiltinTool,
    ContainerTool,
    HttpTool,
    Permissions,
    RateLimit,
    ToolPolicy,
    ToolPolicySpec,
    ToolSpec,
    WasmTool,
)
from .workflow import (
    ApprovalSpec,
    Backoff,
    FinalOutcome,
    ModelParams,
    NodeStatus,
    Phase,
    RetryPolicy,
    RunOn,
    StateMachineSpec,
    StateSpec,
    StepKind,
    StepSpec,
    Transition,
    Workflow,
    WorkflowSpec,
    WorkflowStatus,
)

__all__ = [
    "API_VERSION", "GROUP", "KINDS", "VERSION",
    "Agent", "AgentSpec", "ApprovalSpec", "Backoff", "Budget", "BudgetLimits", "BudgetScope",
    "BudgetSpec", "BudgetStatus", "BuiltinTool", "Canary", "Catalog", "Condition", "ContainerTool",
    "DataResidency", "Document", "EvaluationCase", "FinalOutcome", "HttpTool", "LabelSelector",
    "LocalRef", "ManifestError", "MemorySpec", "Model", "ModelParams", "ModelSpec", "NodeStatus",
    "ObjectMeta", "Permissions", "Phase", "Problem", "PromptMessage", "PromptVersion",
    "PromptVersionSpec", "RateLimit", "Resource", "ResourceStatus", "RetryPolicy", "RunOn",
    "SecretKeyRef", "StateMachineSpec", "StateSpec", "StepKind", "StepSpec", "ToolPolicy",
    "ToolPolicySpec", "ToolSpec", "Transition", "WasmTool", "Workflow", "WorkflowSpec",
    "WorkflowStatus", "parse_resource",
]

"""The PromptVersion resource: an immutable, versioned prompt template."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from .base import API_VERSION, JSONValue, LocalRef, Model, ObjectMeta, ResourceStatus


class PromptMessage(Model):
    """One message of the template; content may embed ${{ expr }} over the step's inputs."""

    role: Literal["system", "user", "assistant"]
    """Chat role."""
    content: str
    """Message text."""


class EvaluationCase(Model):
    """An example input with assertions on the output."""

    name: str
    """Case name."""
    inputs: dict[str, JSONValue] = Field(default_factory=dict)
    """Inputs the template is rendered with."""
    assertions: list[str] = Field(default_factory=list)
    """CEL conditions over `output` that must hold."""


class Canary(Model):
    """Gradual rollout of this version against a baseline version."""

    baseline: LocalRef
    """The PromptVersion that takes the rest of the traffic."""
    weight: int = Field(ge=0, le=100)
    """Percent of runs that get this version."""


class PromptVersionSpec(Model):
    """Desired state of a PromptVersion (immutable once created)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self == oldSelf",
                    "message": "spec is immutable: create a new PromptVersion for a new version",
                }
            ]
        }
    )

    prompt: str = Field(min_length=1)
    """Name of the prompt family this is a version of."""
    version: str = Field(min_length=1)
    """Version label, e.g. 1, 1.2.0."""
    messages: list[PromptMessage] = Field(min_length=1)
    """The chat template."""
    input_schema: dict[str, JSONValue] | None = None
    """JSON Schema of the inputs."""
    output_schema: dict[str, JSONValue] | None = None
    """JSON Schema the model's output must satisfy (the output is parsed as JSON when given)."""
    evaluations: list[EvaluationCase] = Field(default_factory=list)
    """Evaluation cases."""
    canary: Canary | None = None
    """Canary rollout settings."""


class PromptVersion(Model):
    """A PromptVersion: an immutable, versioned prompt template with input/output schemas and evaluations."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["PromptVersion"] = "PromptVersion"
    metadata: ObjectMeta
    spec: PromptVersionSpec
    status: ResourceStatus | None = None

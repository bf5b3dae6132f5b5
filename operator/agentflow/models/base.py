"""Shared building blocks of the AgentFlow resource models.

Every resource model derives from :class:`Model`: camelCase aliases on the
wire, snake_case in Python, unknown fields rejected (so a typo in a manifest is
an error that names the field, not a silently ignored key).

These models are the single source of truth: the CRDs in ``crds/`` are
generated from them (:mod:`agentflow.models.crd`), and the admission webhook,
``agentflow validate`` and the reconcilers all validate through
:func:`agentflow.models.manifests.parse_resource`.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP: Final = "agentflow.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "agentflow.dev/v1alpha1"  # GROUP/VERSION, spelled out so mypy sees the Literal

DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
"""A Kubernetes object name (a Secret's, a ConfigMap's): lowercase letters, digits, '-' and '.'."""
SECRET_KEY: Final = r"^[-._a-zA-Z0-9]+$"
"""A key of a Secret's data, as the API server allows it (no '/', so no path)."""

# Free-form JSON (inputs, outputs, JSON Schemas). Rendered in the CRD with
# x-kubernetes-preserve-unknown-fields.
JSONValue = Any


class Model(BaseModel):
    """Base of every spec/status model: camelCase aliases, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        # YAML reads .inf, .nan and 1e400 as floats; JSON, the journal and the API server cannot hold them.
        allow_inf_nan=False,
    )

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(BaseModel):
    """The subset of Kubernetes ObjectMeta that AgentFlow reads.

    Fields the API server adds (managedFields, uid, ...) are accepted and
    ignored, so bodies read from a cluster parse as well as manifests do.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
    """Resource name: a DNS subdomain (lowercase letters, digits, '-' and '.')."""
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None


class LocalRef(Model):
    """A reference to another AgentFlow resource in the same namespace."""

    name: str = Field(min_length=1)
    """Name of the referenced resource."""


class LabelSelector(Model):
    """A Kubernetes-style label selector (matchLabels only, ANDed)."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels that must all be present with these values."""

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items())


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """A status condition in the shape kstatus and Argo CD understand."""

    type: str
    """Condition type, for example Ready, Succeeded, Failed."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = ""
    """One CamelCase word saying why."""
    message: str = ""
    """A human-readable explanation."""
    last_transition_time: str | None = None
    """RFC 3339 time of the last status change."""
    observed_generation: int | None = None
    """metadata.generation this condition was computed from."""


class ResourceStatus(Model):
    """Status every AgentFlow resource carries."""

    model_config = ConfigDict(extra="allow")

    observed_generation: int | None = None
    """metadata.generation the controller last acted on."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Current conditions (Ready at least), one per type."""

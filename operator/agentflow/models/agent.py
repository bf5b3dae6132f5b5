"""The Agent resource: who calls the model, with which instructions, tools and limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import API_VERSION, Model, ObjectMeta, ResourceStatus


class SecretKeyRef(Model):
    """A key of a Kubernetes Secret (read by the gateway, never by step pods)."""

    name: str
    """Secret name."""
    key: str = "api-key"
    """Key inside the Secret."""


class ModelSpec(Model):
    """The model an Agent calls, in litellm's naming (provider/model)."""

    name: str = Field(min_length=1)
    """Model name as litellm knows it, e.g. openai/gpt-4o-mini, anthropic/claude-3-5-haiku, ollama/llama3."""
    fallbacks: list[str] = Field(default_factory=list)
    """Models tried in order when the primary fails."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature."""
    max_tokens: int | None = Field(default=None, gt=0)
    """Upper bound on output tokens per call."""
    api_base: str | None = None
    """Base URL of an OpenAI-compatible endpoint (vLLM, Ollama, a gateway)."""
    credentials_secret_ref: SecretKeyRef | None = None
    """Where the provider API key is kept."""
    routing: Literal["fallback", "bandit"] = "fallback"
    """How the gateway picks among the model and its fallbacks: fallback (declared order) or bandit
    (Thompson sampling over success, cost and latency); failing models cool down in both."""


class MemorySpec(Model):
    """What an Agent remembers between calls within a run."""

    kind: Literal["none", "conversation", "summary"] = "none"
    """none: every call is independent; conversation: earlier turns of this agent are replayed."""
    max_messages: int = Field(default=20, ge=1)
    """Most earlier messages kept."""


class DataResidency(Model):
    """Where the Agent's data may be processed."""

    allowed_regions: list[str] = Field(default_factory=list)
    """Regions a provider must be in (empty = any)."""
    allowed_providers: list[str] = Field(default_factory=list)
    """Providers the Agent may use (empty = any)."""


PiiEntity = Literal[
    "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "LOCATION",
    "US_BANK_NUMBER", "US_PASSPORT", "US_DRIVER_LICENSE", "CRYPTO", "MEDICAL_LICENSE", "UK_NHS",
]
"""Entity types the redactor knows (Presidio's names)."""

DEFAULT_PII_ENTITIES: tuple[PiiEntity, ...] = (
    "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS",
)


class PiiPolicy(Model):
    """PII redaction of what leaves for a model provider or an http/container tool (agentflow.security.pii)."""

    redact: bool = True
    """Replace detected values by stable per-run tokens (<EMAIL_ADDRESS_3f9a1c2b7d>) before they leave."""
    entities: list[PiiEntity] = Field(default_factory=lambda: list(DEFAULT_PII_ENTITIES), min_length=1)
    """Entity types to redact."""
    min_score: float = Field(default=0.35, ge=0, le=1)
    """Lowest detector confidence that counts as a detection (pattern-only phone numbers score 0.4)."""
    restore: Literal["output", "never"] = "output"
    """output: tokens in the model's answer get their values back in the step output; never: tokens stay."""
    allow_restore_to_tools: bool = False
    """Send the original values to http/container tools (default: they receive the tokens)."""


class InjectionPolicy(Model):
    """Prompt-injection screening of untrusted context (agentflow.security.injection)."""

    threshold: float = Field(default=0.5, gt=0, le=1)
    """Score (0..1) from which ``action`` applies; below it the text is allowed (findings still recorded)."""
    action: Literal["allow", "flag", "block", "quarantine"] = "block"
    """allow: ignore; flag: continue and record; block: fail the step (InjectionDetected); quarantine: hold it
    for human review (today the step fails with InjectionQuarantined, not retried)."""
    untrusted_inputs: list[str] = Field(default_factory=lambda: ["*"])
    """Step inputs screened before an llm step (``*``: all); tool outputs are always screened."""


class AgentSpec(Model):
    """Desired state of an Agent."""

    role: str = Field(min_length=1)
    """Short role, e.g. 'support triage specialist'."""
    instructions: str = ""
    """System instructions prepended to every prompt."""
    model: ModelSpec
    """Primary model and fallbacks."""
    tools: list[str] = Field(default_factory=list)
    """Tools the Agent asks for; a ToolPolicy must also allow them."""
    memory: MemorySpec = Field(default_factory=MemorySpec)
    """Memory settings."""
    data_residency: DataResidency = Field(default_factory=DataResidency)
    """Data-residency limits."""
    runtime_class_name: str | None = None
    """RuntimeClass of the Agent's step pods (default gvisor)."""
    pii: PiiPolicy = Field(default_factory=PiiPolicy)
    """PII redaction before model and external tool calls; on by default."""
    injection: InjectionPolicy = Field(default_factory=InjectionPolicy)
    """Prompt-injection screening of tool outputs and untrusted inputs; blocks by default."""
    output_repairs: int = Field(default=1, ge=0, le=5)
    """Repair requests sent when an answer fails the PromptVersion's outputSchema before the step fails."""


class Agent(Model):
    """An Agent: role, instructions, model with fallbacks, tools, memory and data-residency limits."""

    api_version: Literal["agentflow.dev/v1alpha1"] = API_VERSION
    kind: Literal["Agent"] = "Agent"
    metadata: ObjectMeta
    spec: AgentSpec
    status: ResourceStatus | None = None

"""The Agent resource: who calls the model, with which instructions, tools and limits."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from . import limits
from .base import API_VERSION, DNS_SUBDOMAIN, SECRET_KEY, Model, ObjectMeta, ResourceStatus


class SecretKeyRef(Model):
    """A key of a Kubernetes Secret (read by the gateway, never by step pods)."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Secret name."""
    key: str = Field(default="api-key", min_length=1, max_length=253, pattern=SECRET_KEY)
    """Key inside the Secret."""


class ModelSpec(Model):
    """The model an Agent calls, in litellm's naming (provider/model)."""

    name: str = Field(min_length=1)
    """Model name as litellm knows it, e.g. openai/gpt-4o-mini, anthropic/claude-3-5-haiku, ollama/llama3."""
    fallbacks: list[str] = Field(default_factory=list, max_length=20)
    """Models tried in order when the primary fails."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature."""
    max_tokens: int | None = Field(default=None, gt=0, le=limits.MAX_OUTPUT_TOKENS)
    """Upper bound on output tokens per call (at most 1,000,000)."""
    api_base: str | None = None
    """Base URL of an OpenAI-compatible endpoint (vLLM, Ollama, a gateway)."""
    credentials_secret_ref: SecretKeyRef | None = None
    """Where the provider API key is kept."""
    routing: Literal["fallback", "bandit"] = "fallback"
    """How the gateway picks among the model and its fallbacks: fallback (declared order) or bandit
    (Thompson sampling over success, cost and latency); failing models cool down in both."""


HASHING_EMBEDDING = "agentflow/hashing-v1"
"""The offline embedding: word and word-piece hashing into 256 dimensions (agentflow.memory.embeddings). Not a
language model: it finds memories sharing words with the query, not meaning."""


class LongTermMemory(Model):
    """Facts the Agent saves and searches across runs (agentflow.memory), kept per namespace and Agent."""

    ttl_seconds: int | None = Field(default=None, ge=60)
    """How long a saved fact is kept (at least a minute); none: until it is forgotten."""
    embedding_model: str = Field(default=HASHING_EMBEDDING, min_length=1)
    """The model facts and queries are embedded with, through the gateway (budgeted, cached, charged to the step):
    any embedding model litellm knows (openai/text-embedding-3-small, ...), or agentflow/hashing-v1, the offline
    embedding (deterministic, free, no key; shared words, not meaning). Facts saved with one model are searched
    only with it."""
    search_k: int = Field(default=5, ge=1, le=50)
    """Most facts one search returns."""
    token_budget: int = Field(default=800, ge=16, le=32_000)
    """Most tokens (about 4 characters each) of facts one search returns: the best ones that fit."""


DEFAULT_CONVERSATION_TOKENS = 4000
"""memory.maxTokens when kind is conversation and it is not given."""


class MemorySpec(Model):
    """What an Agent remembers: within a run (kind, maxTokens) and across runs (longTerm, episodic)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "!has(self.maxTokens) || self.kind == 'conversation'",
        "message": "maxTokens is the budget of kind: conversation; set kind: conversation or drop maxTokens",
    }]})

    kind: Literal["none", "conversation"] = "none"
    """Memory within a run. none: each llm step starts a fresh conversation (within one step the agent loop keeps
    its own turns). conversation: the Agent's llm steps run as agent loops whose model turns also see the Agent's
    earlier exchanges of this run (each finished step's inputs and answer, in the order they finished; tool
    traffic of earlier steps is not carried); when what is carried passes maxTokens, the oldest exchanges and
    turns are compacted into a summary by a model call (a node of the run, ``STEP/sN``, charged to this Agent),
    journaled, so resume and replay read the summary back. Delegates called by the Agent start fresh."""
    max_tokens: int | None = Field(default=None, ge=limits.MIN_CONVERSATION_TOKENS,
                                   le=limits.MAX_CONVERSATION_TOKENS)
    """kind conversation only: the token budget of the carried conversation (the summary, earlier exchanges, the
    step's inputs and its loop's turns; not the Agent's instructions), counted as characters / 4 + 4 per message
    (agentflow.engine.tokens, the gateway's count without a tokenizer). Over it, before a model turn, the oldest
    exchanges and turns (never the latest turn) are summarized until what is left fits in half of it; the summary
    is asked for in at most a quarter of it. 256 to 1,000,000; default 4,000."""
    long_term: LongTermMemory | None = None
    """Long-term memory: the agent loop offers the tools memory_search and memory_save (agentflow.memory); none:
    nothing is kept across runs."""
    episodic: bool = False
    """Offer the read-only tool past_runs: this Agent's previous runs in its namespace (workflow, phase, when, its
    steps' outputs), from the local runner's journals or, on a cluster, the operator's journal (the gateway)."""

    @field_validator("max_tokens")
    @classmethod
    def _budget_of_a_conversation(cls, value: int | None, info: ValidationInfo) -> int | None:
        kind = info.data.get("kind", "none")
        if value is not None and kind != "conversation":
            raise ValueError(f"maxTokens is the budget of kind: conversation, but kind is {kind}: set kind: "
                             "conversation or drop maxTokens")
        return value

    @property
    def conversation_tokens(self) -> int | None:
        """The conversation's token budget, None without one (kind none)."""
        if self.kind != "conversation":
            return None
        return self.max_tokens if self.max_tokens is not None else DEFAULT_CONVERSATION_TOKENS


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
    """Score (0..1) from which ``action`` applies; below it the text is allowed (findings still recorded). One strong
    signal (an instruction override, a fake chat turn, a request for the system prompt) reaches 0.5 alone; weak ones
    (an address to send to, a money transfer, a "User:" line) only together, within about 1,500 characters."""
    action: Literal["allow", "flag", "block", "quarantine"] = "block"
    """allow: ignore; flag: continue and record; block: fail the step (InjectionDetected); quarantine: hold it
    for human review (InjectionQuarantined: the step waits like an approval step; approved, it runs again with
    this attempt's findings flagged instead of stopping it; rejected, it fails)."""
    untrusted_inputs: list[str] = Field(default_factory=lambda: ["*"])
    """Step inputs screened before an llm step: ``*`` (the default) all of them, since a workflow's inputs often carry
    third-party text (documents, tickets, e-mails) and earlier steps' outputs may relay it; or the names of the
    inputs that do; ``[]`` none. The Agent's instructions are never screened; tool outputs always are."""


class LoopSpec(Model):
    """The agent loop of an llm step whose Agent has tools or delegates: the model is offered them as functions,
    each call it makes runs (granted, screened, audited) and is fed back, until it answers or a bound is hit."""

    max_turns: int = Field(default=10, ge=1, le=limits.MAX_LOOP_TURNS)
    """Model calls in one loop before the step fails with MaxTurns (1 to 100)."""
    max_tool_calls: int = Field(default=20, ge=1, le=limits.MAX_LOOP_TOOL_CALLS)
    """Tool calls in one loop before the step fails with MaxToolCalls (1 to 1,000)."""
    parallel_tool_calls: bool = True
    """The tool calls of one turn run side by side; false: one after the other, in the model's order."""
    max_depth: int = Field(default=2, ge=1, le=limits.MAX_DELEGATION_DEPTH)
    """How deep agents may call agents (delegates), counting this one's callees as depth 1 (1 to 5)."""
    final_tool: bool = False
    """The answer must come through a ``final_answer`` function whose parameters are the PromptVersion's
    outputSchema (structured output by tool call, for models better at calling tools than at JSON mode)."""


class Delegate(Model):
    """Another Agent of the namespace this Agent may call as a tool (a function ``delegate_<name>`` with one
    ``task`` argument): the callee runs its own loop with its own model, tools and grants."""

    name: str = Field(min_length=1, max_length=253)
    """The Agent's name."""
    description: str = ""
    """When to call it (shown to the model)."""


class AgentSpec(Model):
    """Desired state of an Agent."""

    role: str = Field(min_length=1)
    """Short role, e.g. 'support triage specialist'."""
    instructions: str = ""
    """System instructions prepended to every prompt."""
    model: ModelSpec
    """Primary model and fallbacks."""
    tools: list[str] = Field(default_factory=list)
    """Tools the Agent asks for; a ToolPolicy must also allow them. In an llm step they are offered to the model
    (the agent loop, see ``loop``)."""
    delegates: list[Delegate] = Field(default_factory=list, max_length=50)
    """Agents this Agent may call as tools (agents calling agents)."""
    loop: LoopSpec = Field(default_factory=LoopSpec)
    """Bounds of the agent loop."""
    memory: MemorySpec = Field(default_factory=MemorySpec)
    """Memory settings."""
    data_residency: DataResidency = Field(default_factory=DataResidency)
    """Data-residency limits."""
    runtime_class_name: str | None = Field(default=None, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
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

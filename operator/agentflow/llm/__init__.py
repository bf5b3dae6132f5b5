"""Model calls: the request and response types, prompts, the providers behind the gateway, prices.

    chat.py             ChatRequest / ModelResponse, the ChatClient (executor -> gateway) and Upstream
                        (gateway -> provider) seams, ModelError
    prompts.py          Agent + PromptVersion -> messages; answers -> validated values
    gateway_client.py   the HTTP ChatClient of step pods (and of the local runner's step subprocesses)
    litellm_upstream.py the Upstream over litellm: the only module that imports litellm
    offline.py          the offline model ``agentflow/offline`` (NOT a real model): the Upstream of runs
                        with no provider configured
    pricing.py          prices from a price table, the token estimate

Nothing here is built at import time: a driver picks its :class:`Provider` once at startup
(:func:`provider_from_env`, :func:`offline_provider`, :func:`litellm_provider`) and hands it to the gateway.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .chat import (
    ChatClient,
    ChatRequest,
    Endpoint,
    LLMError,
    ModelError,
    ModelResponse,
    Upstream,
    canonical_json,
    request_hash,
)
from .gateway_client import (
    GATEWAY_URL_ENV,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    GatewayClient,
    TokenSource,
    close_client,
    gateway_base_url,
    token_source,
)
from .offline import OFFLINE_MODEL_NAME, OfflineModel
from .pricing import PriceLookup, TokenCounter, approximate_token_counter, estimate_cost, no_prices, price_per_token
from .prompts import (
    OutputValidationError,
    PromptRenderError,
    parse_output,
    render_messages,
    repair_messages,
    summary_messages,
    validate_inputs,
)

MODE_ENV = "AGENTFLOW_MODEL_MODE"
MODES = ("auto", "offline", "live")

PROVIDER_ENV = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "AZURE_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
    "COHERE_API_KEY",
    "DEEPSEEK_API_KEY",
    "OPENROUTER_API_KEY",
    "TOGETHERAI_API_KEY",
    "XAI_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "VERTEXAI_PROJECT",
    "OPENAI_API_BASE",
    "OPENAI_BASE_URL",
    "AGENTFLOW_API_BASE",
    "OLLAMA_API_BASE",
    "HOSTED_VLLM_API_BASE",
)
"""Any of these set (non-empty) means a provider is configured."""


@dataclasses.dataclass(frozen=True)
class Provider:
    """What the gateway calls and how it prices: the Upstream, its token counter and its price lookup."""

    upstream: Upstream
    count_tokens: TokenCounter
    prices: PriceLookup
    live: bool
    """False for the offline model (nothing priced, tokens estimated)."""


def offline_provider() -> Provider:
    """The offline model: no network, deterministic, free. Not a real model."""
    return Provider(OfflineModel(), approximate_token_counter, no_prices, live=False)


def litellm_prices() -> PriceLookup:
    """litellm's bundled prices per token (the table is loaded, and litellm imported, on the first lookup): what
    a step pod's plan step prices its plan's cost preflight with, as the gateway prices calls."""
    table: dict[str, Mapping[str, object]] = {}

    def prices(model: str) -> tuple[float, float] | None:
        if not table:
            from . import litellm_upstream

            table.update(litellm_upstream.cost_table())
        return price_per_token(model, table)

    return prices


def litellm_provider(*, api_base: str | None = None, api_key: str | None = None, openai_http: bool = False,
                     environment_key: str | None = None) -> Provider:
    """Real providers through litellm (imported on the first call; its tokenizers and bundled prices).

    ``openai_http``: ``openai/`` models (OpenAI, and OpenAI-compatible servers at an Agent's apiBase) are called
    over a thin aiohttp client instead (agentflow.llm.openai_upstream), every other model through litellm;
    ``environment_key`` is then this process's OPENAI_API_KEY, sent where litellm would read it."""
    from . import litellm_upstream

    prices = litellm_prices()
    upstream: Upstream = litellm_upstream.LiteLLMUpstream(api_base=api_base, api_key=api_key)
    if openai_http:
        from .openai_upstream import ByProvider, OpenAIUpstream

        upstream = ByProvider(OpenAIUpstream(api_base=api_base, api_key=api_key, environment_key=environment_key,
                                             prices=prices, count_tokens=litellm_upstream.count_message_tokens),
                              upstream)
    return Provider(upstream, litellm_upstream.count_message_tokens, prices, live=True)


def provider_configured(env: Mapping[str, str]) -> bool:
    return any(env.get(name, "").strip() for name in PROVIDER_ENV)


def provider_from_env(env: Mapping[str, str]) -> Provider:
    """The provider this environment selects (pass ``os.environ`` or a dict).

    ``AGENTFLOW_MODEL_MODE``: ``offline`` always uses the offline model; ``live`` always uses litellm;
    ``auto`` (default) uses litellm when a provider is configured (see PROVIDER_ENV), else the offline
    model. ``AGENTFLOW_API_BASE`` / ``AGENTFLOW_API_KEY`` give a default OpenAI-compatible endpoint for
    Agents that set no ``model.apiBase``. ValueError for an unknown mode.
    """
    mode = env.get(MODE_ENV, "").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{MODE_ENV}={env.get(MODE_ENV)!r} is not one of {', '.join(MODES)}; unset it or pick one")
    if mode == "offline" or (mode == "auto" and not provider_configured(env)):
        return offline_provider()
    return litellm_provider(api_base=env.get("AGENTFLOW_API_BASE") or None,
                            api_key=env.get("AGENTFLOW_API_KEY") or None)


def prices_from_env(env: Mapping[str, str]) -> PriceLookup:
    """The prices of the provider provider_from_env would select, without building it (litellm is imported on
    the first lookup only): the local runner's step subprocesses price like their parent."""
    mode = env.get(MODE_ENV, "").strip().lower() or "auto"
    if mode == "offline" or (mode == "auto" and not provider_configured(env)):
        return no_prices
    return litellm_prices()


__all__ = [
    "GATEWAY_URL_ENV",
    "MODES",
    "MODE_ENV",
    "OFFLINE_MODEL_NAME",
    "PROVIDER_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "ChatClient",
    "ChatRequest",
    "Endpoint",
    "GatewayClient",
    "LLMError",
    "ModelError",
    "ModelResponse",
    "OfflineModel",
    "OutputValidationError",
    "PriceLookup",
    "PromptRenderError",
    "Provider",
    "TokenCounter",
    "TokenSource",
    "Upstream",
    "approximate_token_counter",
    "canonical_json",
    "close_client",
    "estimate_cost",
    "gateway_base_url",
    "litellm_prices",
    "litellm_provider",
    "offline_provider",
    "parse_output",
    "price_per_token",
    "prices_from_env",
    "provider_configured",
    "provider_from_env",
    "render_messages",
    "repair_messages",
    "request_hash",
    "summary_messages",
    "token_source",
    "validate_inputs",
]

"""Model calls for llm steps: prompts, the litellm client, the offline model, prices.

Nothing here is built at import time; a driver builds its client once at
startup with :func:`make_model_client` and passes it to its executor.
"""

from __future__ import annotations

from collections.abc import Mapping

from .client import (
    IDEMPOTENCY_KEY,
    FallbackClient,
    LiteLLMClient,
    LLMError,
    ModelClient,
    ModelError,
    ModelRequest,
    ModelResponse,
    request_hash,
    translate_error,
)
from .gateway_client import GATEWAY_URL_ENV, GatewayClient, RoutedFailures, close_client, gateway_base_url
from .offline import OFFLINE_MODEL_NAME, OfflineModel
from .pricing import estimate_cost, load_litellm, price_per_token
from .prompts import (
    OutputValidationError,
    PromptRenderError,
    parse_output,
    render_messages,
    repair_messages,
    validate_inputs,
)

MODE_ENV = "AGENTFLOW_MODEL_MODE"
MODES = ("auto", "offline", "live")

KEYLESS_PLACEHOLDER = "sk-agentflow-no-key"
TOKEN_ENV = "AGENTFLOW_TOKEN"
"""The step attempt's token: the callback server's credential, and the gateway's API key."""

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


def provider_configured(env: Mapping[str, str]) -> bool:
    return any(env.get(name, "").strip() for name in PROVIDER_ENV)


def make_model_client(env: Mapping[str, str]) -> ModelClient:
    """The model client for this environment (pass ``os.environ`` or a dict).

    ``AGENTFLOW_GATEWAY_URL`` set (step pods of an operator that serves the gateway): every call goes to
    the gateway with ``AGENTFLOW_TOKEN`` as the API key (:class:`GatewayClient`); no provider key is
    needed or read, unless ``AGENTFLOW_MODEL_MODE=offline`` asks for the offline model explicitly.
    ``AGENTFLOW_MODEL_MODE``: ``offline`` always uses the offline model;
    ``live`` always uses litellm; ``auto`` (default) uses litellm when a
    provider is configured (see PROVIDER_ENV), else the offline model.
    ``AGENTFLOW_API_BASE`` / ``AGENTFLOW_API_KEY`` give a default
    OpenAI-compatible endpoint for Agents that set no ``model.apiBase``; with
    neither AGENTFLOW_API_KEY nor OPENAI_API_KEY set, a placeholder key is sent
    (keyless local servers accept any).
    """
    mode = env.get(MODE_ENV, "").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{MODE_ENV}={env.get(MODE_ENV)!r} is not one of {', '.join(MODES)}; unset it or pick one")
    gateway_url = env.get(GATEWAY_URL_ENV, "").strip()
    if gateway_url and mode != "offline":
        token = env.get(TOKEN_ENV, "").strip()
        if not token:
            raise ValueError(f"{GATEWAY_URL_ENV} is set but {TOKEN_ENV} is empty: the gateway needs the attempt's "
                             "token as its API key (the operator sets both on step pods)")
        return GatewayClient(gateway_url, token)
    if mode == "offline" or (mode == "auto" and not provider_configured(env)):
        return OfflineModel()
    api_base = env.get("AGENTFLOW_API_BASE") or None
    api_key = env.get("AGENTFLOW_API_KEY") or None
    if api_base and not api_key and not env.get("OPENAI_API_KEY"):
        # Keyless OpenAI-compatible servers (vLLM, Ollama, llama.cpp) still need *a* key for the
        # OpenAI client to send the request at all.
        api_key = KEYLESS_PLACEHOLDER
    return LiteLLMClient(api_base=api_base, api_key=api_key)


__all__ = [
    "GATEWAY_URL_ENV",
    "IDEMPOTENCY_KEY",
    "KEYLESS_PLACEHOLDER",
    "MODES",
    "MODE_ENV",
    "OFFLINE_MODEL_NAME",
    "PROVIDER_ENV",
    "TOKEN_ENV",
    "FallbackClient",
    "GatewayClient",
    "LLMError",
    "LiteLLMClient",
    "ModelClient",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "OfflineModel",
    "OutputValidationError",
    "PromptRenderError",
    "RoutedFailures",
    "close_client",
    "estimate_cost",
    "gateway_base_url",
    "load_litellm",
    "make_model_client",
    "parse_output",
    "price_per_token",
    "provider_configured",
    "render_messages",
    "repair_messages",
    "request_hash",
    "translate_error",
    "validate_inputs",
]

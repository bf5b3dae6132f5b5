"""How a process that runs attempts reaches the gateway, from its environment.

    AGENTFLOW_GATEWAY_URL + a token           a step pod (the operator's gateway; AGENTFLOW_TOKEN_FILE: its
                                              projected token) or a local step subprocess (the parent's
                                              LoopbackGateway; AGENTFLOW_TOKEN): every call goes there over HTTP
                                              with the attempt's token; no provider key is read
    otherwise                                 an in-process gateway over the Provider the environment selects
                                              (agentflow.llm.provider_from_env; the offline model when none
                                              is configured), with no Budgets: an operator run without a
                                              gateway, or a test
"""

from __future__ import annotations

from collections.abc import Mapping

from agentflow.gateway.local import local_gateway
from agentflow.llm import (
    GATEWAY_URL_ENV,
    MODE_ENV,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    GatewayClient,
    close_client,
    gateway_base_url,
    provider_from_env,
    token_source,
)
from agentflow.models import Catalog, Workflow
from agentflow.telemetry import Tracing

from .attempt import ModelAccess, OneClient

__all__ = ["check_environment", "close_access", "model_access"]


def check_environment(env: Mapping[str, str]) -> bool:
    """Whether calls go to a gateway over HTTP; ValueError naming the variable when the environment is unusable."""
    provider_from_env(env)  # checks AGENTFLOW_MODEL_MODE
    gateway_url = env.get(GATEWAY_URL_ENV, "").strip()
    if not gateway_url or env.get(MODE_ENV, "").strip().lower() == "offline":
        return False
    gateway_base_url(gateway_url)
    if token_source(env) is None:
        raise ValueError(f"{GATEWAY_URL_ENV} is set but neither {TOKEN_FILE_ENV} nor {TOKEN_ENV} is: the gateway "
                         "needs the attempt's token as its API key (the operator sets both on step pods)")
    return True


def model_access(env: Mapping[str, str], workflow: Workflow, catalog: Catalog, *,
                 tracing: Tracing | None = None) -> ModelAccess:
    """The ModelAccess this environment gives; ValueError naming the variable when it is unusable.
    ``tracing``: where an in-process gateway's spans go (a gateway service records its own)."""
    if check_environment(env):
        token = token_source(env)
        assert token is not None
        return OneClient(GatewayClient(env[GATEWAY_URL_ENV].strip(), token))
    return local_gateway(workflow, catalog, provider_from_env(env), tracing=tracing)


async def close_access(access: ModelAccess) -> None:
    """Close the connections ``access`` holds (a step pod's GatewayClient)."""
    if isinstance(access, OneClient):
        await close_client(access.chat)

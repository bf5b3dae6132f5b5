"""The gateway as a ChatClient in the same process: the local runner's path to budgets, cache and routing.

:class:`InProcessGatewayClient` is an :class:`agentflow.llm.ChatClient` bound to one attempt (its
:class:`~agentflow.gateway.service.Attribution`), the in-process twin of a step pod's HTTP GatewayClient
with its attempt token: the executor calls it like any client, and it hands each call to
:meth:`Gateway.complete` without HTTP. Errors are the gateway's (:class:`GatewayError` is a ModelError:
``BudgetExceeded`` is not retryable).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..llm.chat import ChatRequest, ModelResponse
from ..memory import MemoryUnavailable
from .memory import GatewayMemory
from .service import Attribution, Gateway

__all__ = ["InProcessGatewayClient"]


class InProcessGatewayClient:
    def __init__(self, gateway: Gateway, who: Attribution, memory: GatewayMemory | None = None) -> None:
        self.gateway = gateway
        self.who = who
        self.memory = memory

    async def complete(self, request: ChatRequest) -> ModelResponse:
        result = await self.gateway.complete(self.who, request)
        return result.response

    async def call_memory(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """A memory function of the attempt's Agent (agentflow.gateway.memory); MemoryStoreError when refused."""
        if self.memory is None:
            raise MemoryUnavailable(f"{name}: this run has no memory configured", retryable=False)
        return await self.memory.call(self.who, name, arguments)

"""The gateway as a model client in the same process: the local runner's path to budgets, cache and routing.

:class:`InProcessGatewayClient` is an :class:`agentflow.llm.ModelClient`; the InProcessExecutor calls it like
any other client, and it hands each call to :meth:`Gateway.complete` without HTTP. ``attribute(request)``
says whom the call is charged to (the local runner derives it from the request's run id and node and its
manifests). Errors are the gateway's (:class:`GatewayError` is a ModelError: ``BudgetExceeded`` is not
retryable), and a call the gateway already routed is not routed again for the next fallback
(:class:`agentflow.llm.RoutedFailures`).
"""

from __future__ import annotations

from collections.abc import Callable

from ..llm import ModelError, ModelRequest, ModelResponse, RoutedFailures
from .service import Attribution, ChatRequest, Gateway

__all__ = ["InProcessGatewayClient"]


class InProcessGatewayClient:
    def __init__(self, gateway: Gateway, attribute: Callable[[ModelRequest], Attribution]) -> None:
        self.gateway = gateway
        self._attribute = attribute
        self._failures = RoutedFailures()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self._failures.check(request)
        chat = ChatRequest(
            model=request.model,
            messages=request.messages,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            output_schema=request.output_schema,
            timeout_seconds=request.timeout_seconds,
            idempotency_key=request.idempotency_key,
        )
        try:
            result = await self.gateway.complete(self._attribute(request), chat)
        except ModelError as exc:
            self._failures.remember(request, exc)
            raise
        return result.response

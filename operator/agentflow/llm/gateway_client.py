"""The step pod's model client: every call goes to the AgentFlow gateway, never to a provider.

The pod holds no provider key: it sends its attempt token (``AGENTFLOW_TOKEN``) as the bearer token to
``$AGENTFLOW_GATEWAY_URL/v1/chat/completions`` (OpenAI-compatible). The gateway picks the model among the
Agent's candidates, charges the attempt's budgets and answers with the cost in ``x-agentflow-cost-usd``,
which becomes the call's CallRecord cost (and so the step's and the Workflow's cost in its status).

Errors come back as ``{"error": {"type", "message", "retryable"}}`` and become :class:`ModelError` with the
same type and retryability: ``BudgetExceeded`` (HTTP 402) is not retryable, so the step fails at once and
the workflow follows its failure policy. The gateway already tried every candidate model, so once a call
failed, asking again for the next fallback of the same call (what :class:`FallbackClient` does) re-raises
the same error instead of paying for the whole routing again (:class:`RoutedFailures`).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from .client import ModelError, ModelRequest, ModelResponse

__all__ = ["GATEWAY_URL_ENV", "GatewayClient", "RoutedFailures", "close_client", "gateway_base_url"]

GATEWAY_URL_ENV = "AGENTFLOW_GATEWAY_URL"


def gateway_base_url(url: str) -> str:
    """``http://host:port`` from the gateway URL as given (a trailing ``/`` or ``/v1`` is dropped)."""
    base = url.strip().rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"{GATEWAY_URL_ENV}={url!r} is not an http(s) URL, e.g. http://agentflow-gateway:8082")
    return base


class RoutedFailures:
    """The last failures by idempotency key, so a call the gateway already routed is not routed again."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._failures: collections.OrderedDict[str, ModelError] = collections.OrderedDict()

    def check(self, request: ModelRequest) -> None:
        key = request.idempotency_key
        if key is not None and key in self._failures:
            raise self._failures[key]

    def remember(self, request: ModelRequest, error: ModelError) -> None:
        key = request.idempotency_key
        if key is None:
            return
        self._failures[key] = error
        while len(self._failures) > self._size:
            self._failures.popitem(last=False)


class GatewayClient:
    """A :class:`agentflow.llm.ModelClient` over HTTP to the gateway. ``close()`` it when done."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not token:
            raise ValueError("GatewayClient: the attempt token is empty; the gateway refuses calls without one")
        self.base_url = gateway_base_url(url)
        self._token = token
        self._timeout = timeout_seconds
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._failures = RoutedFailures()

    def __repr__(self) -> str:
        return f"GatewayClient({self.base_url!r})"

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": request.model, "messages": [dict(m) for m in request.messages]}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.output_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": dict(request.output_schema)},
            }
        return body

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self._failures.check(request)
        try:
            return await self._post(request)
        except ModelError as exc:
            self._failures.remember(request, exc)
            raise

    async def _post(self, request: ModelRequest) -> ModelResponse:
        headers = {"Authorization": f"Bearer {self._token}"}
        if request.idempotency_key:
            headers["Idempotency-Key"] = request.idempotency_key
        timeout = request.timeout_seconds or self._timeout
        headers["X-AgentFlow-Timeout-Seconds"] = f"{min(timeout, 3600.0):.3f}"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        started = self._clock()
        url = f"{self.base_url}/v1/chat/completions"
        try:
            async with self._session.post(url, json=self._body(request), headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=timeout + 5)) as response:
                status = response.status
                try:
                    data = await response.json(content_type=None)
                except ValueError:
                    data = None
                cost = response.headers.get("x-agentflow-cost-usd")
                model = response.headers.get("x-agentflow-model")
                cache = response.headers.get("x-agentflow-cache")
        except TimeoutError:
            raise ModelError("ModelTimeout", f"the gateway did not answer within {timeout:.0f}s",
                             retryable=True, model=request.model) from None
        except aiohttp.ClientError as exc:
            raise ModelError("GatewayUnavailable", f"cannot reach the gateway at {self.base_url}: {exc} (check "
                             f"{GATEWAY_URL_ENV} and the network policy of the step pod)",
                             retryable=True, model=request.model) from None
        if status != 200:
            raise _error(status, data, request.model)
        try:
            text = data["choices"][0]["message"]["content"] or ""
            usage = data.get("usage") or {}
            return ModelResponse(
                text=str(text),
                model=model or str(data.get("model") or request.model),
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                cost_usd=float(cost) if cost else 0.0,
                latency_ms=(self._clock() - started) * 1000.0,
                cached=cache == "hit",
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise ModelError("BadModelResponse", f"the gateway answered 200 without a chat completion: "
                             f"{str(data)[:300]}", retryable=True, model=request.model) from None


def _error(status: int, data: Any, model: str) -> ModelError:
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("type"), str) and isinstance(error.get("message"), str):
        retryable = error.get("retryable")
        if not isinstance(retryable, bool):
            retryable = status in (408, 409, 429) or status >= 500
        return ModelError(error["type"], f"gateway: {error['message']}", retryable=retryable, model=model)
    if status == 401:
        return ModelError("GatewayUnauthorized", "the gateway refused the attempt token (expired or from another "
                          "operator key)", retryable=False, model=model)
    retryable = status in (408, 409, 429) or status >= 500
    return ModelError("GatewayError", f"the gateway answered HTTP {status}: {str(data)[:300]}",
                      retryable=retryable, model=model)


async def close_client(client: object) -> None:
    """Close ``client`` if it holds connections (a GatewayClient); other clients hold none."""
    close = getattr(client, "close", None)
    if close is not None and asyncio.iscoroutinefunction(close):
        await close()

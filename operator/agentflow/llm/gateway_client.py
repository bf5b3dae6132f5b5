"""The HTTP side of the gateway for step pods: a ChatClient whose every call goes to the AgentFlow gateway.

The pod holds no provider key: it sends its attempt token (``AGENTFLOW_TOKEN``) as the bearer token to
``$AGENTFLOW_GATEWAY_URL/v1/chat/completions`` (OpenAI-compatible). The gateway picks the model among the
Agent's candidates, charges the attempt's budgets and answers with the cost in ``x-agentflow-cost-usd``,
which becomes the call's CallRecord cost (and so the step's and the Workflow's cost in its status).

Errors come back as ``{"error": {"type", "message", "retryable"}}`` and become :class:`ModelError` with the
same type and retryability: ``BudgetExceeded`` (HTTP 402) is not retryable, so the step fails at once and
the workflow follows its failure policy. The gateway already tried every candidate model: nothing here
loops over models.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from ..telemetry import inject
from .chat import ChatRequest, ModelError, ModelResponse

__all__ = ["GATEWAY_URL_ENV", "TOKEN_ENV", "TOKEN_FILE_ENV", "GatewayClient", "TokenSource", "close_client",
           "gateway_base_url", "token_source"]

GATEWAY_URL_ENV = "AGENTFLOW_GATEWAY_URL"
TOKEN_ENV = "AGENTFLOW_TOKEN"
"""The attempt's token as a value (the local runner's step subprocesses)."""
TOKEN_FILE_ENV = "AGENTFLOW_TOKEN_FILE"
"""A file holding the attempt's token (step pods: the projected service-account token, rotated by the
kubelet, so it is read again for every request)."""

TokenSource = Callable[[], str]


def token_source(env: Mapping[str, str]) -> TokenSource | None:
    """How to get the attempt's token from ``env`` (the file wins over the value); None when neither is set.
    ValueError naming the variable when the file cannot be read or is empty."""
    path = env.get(TOKEN_FILE_ENV, "").strip()
    if path:
        def from_file() -> str:
            try:
                with open(path, encoding="utf-8") as f:
                    token = f.read().strip()
            except OSError as exc:
                raise ValueError(f"{TOKEN_FILE_ENV}={path!r}: cannot read the token: {exc.strerror}") from None
            if not token:
                raise ValueError(f"{TOKEN_FILE_ENV}={path!r} is empty")
            return token

        from_file()  # fail now, naming the variable, rather than at the first call
        return from_file
    value = env.get(TOKEN_ENV, "").strip()
    return (lambda: value) if value else None


def gateway_base_url(url: str) -> str:
    """``http://host:port`` from the gateway URL as given (a trailing ``/`` or ``/v1`` is dropped)."""
    base = url.strip().rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"{GATEWAY_URL_ENV}={url!r} is not an http(s) URL, e.g. http://agentflow-gateway:8082")
    return base


class GatewayClient:
    """A :class:`~agentflow.llm.chat.ChatClient` over HTTP to the gateway. ``close()`` it when done."""

    def __init__(
        self,
        url: str,
        token: str | TokenSource,
        *,
        timeout_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not token:
            raise ValueError("GatewayClient: the attempt token is empty; the gateway refuses calls without one")
        self.base_url = gateway_base_url(url)
        self._token: TokenSource = token if callable(token) else (lambda: token)
        self._timeout = timeout_seconds
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"GatewayClient({self.base_url!r})"

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def complete(self, request: ChatRequest) -> ModelResponse:
        try:
            headers = inject({"Authorization": f"Bearer {self._token()}"})
        except ValueError as exc:
            raise ModelError("GatewayUnauthorized", str(exc), retryable=False, model=request.model) from None
        if request.idempotency_key:
            headers["Idempotency-Key"] = request.idempotency_key
        timeout = request.timeout_seconds or self._timeout
        headers["X-AgentFlow-Timeout-Seconds"] = f"{min(timeout, 3600.0):.3f}"
        if not request.write_cache:
            headers["Cache-Control"] = "no-store"
        elif not request.read_cache:
            headers["Cache-Control"] = "no-cache"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        started = self._clock()
        url = f"{self.base_url}/v1/chat/completions"
        try:
            async with self._session.post(url, json=request.openai_body(), headers=headers,
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
            choice = data["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            calls = message.get("tool_calls") or []
            if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
                raise TypeError("tool_calls is not a list of objects")
            usage = data.get("usage") or {}
            return ModelResponse(
                text=str(text),
                tool_calls=tuple(calls),
                finish_reason=str(choice.get("finish_reason") or "stop"),
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

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """POST /v1/embeddings: a vector per text (the gateway charges the attempt). ModelError when refused."""
        try:
            headers = inject({"Authorization": f"Bearer {self._token()}"})
        except ValueError as exc:
            raise ModelError("GatewayUnauthorized", str(exc), retryable=False, model=model) from None
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(f"{self.base_url}/v1/embeddings", json={"model": model, "input": texts},
                                          headers=headers, timeout=aiohttp.ClientTimeout(total=self._timeout)) as r:
                status = r.status
                try:
                    data = await r.json(content_type=None)
                except ValueError:
                    data = None
        except TimeoutError:
            raise ModelError("ModelTimeout", f"the gateway did not embed within {self._timeout:.0f}s",
                             retryable=True, model=model) from None
        except aiohttp.ClientError as exc:
            raise ModelError("GatewayUnavailable", f"cannot reach the gateway at {self.base_url}: {exc}",
                             retryable=True, model=model) from None
        if status != 200:
            raise _error(status, data, model)
        try:
            rows = sorted(data["data"], key=lambda d: d["index"])
            vectors = [[float(v) for v in row["embedding"]] for row in rows]
        except (KeyError, TypeError, ValueError):
            raise ModelError("BadModelResponse", f"the gateway answered 200 without embeddings: {str(data)[:300]}",
                             retryable=True, model=model) from None
        if len(vectors) != len(texts):
            raise ModelError("BadModelResponse", f"the gateway returned {len(vectors)} embeddings for {len(texts)} "
                             "texts", retryable=True, model=model)
        return vectors

    async def call_memory(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """POST /v1/agentflow/memory/NAME: a memory function of the attempt's Agent (the gateway scopes it to the
        attempt's namespace and Agent). ModelError with the gateway's error type when refused."""
        what = f"memory:{name}"
        try:
            headers = inject({"Authorization": f"Bearer {self._token()}"})
        except ValueError as exc:
            raise ModelError("GatewayUnauthorized", str(exc), retryable=False, model=what) from None
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(f"{self.base_url}/v1/agentflow/memory/{name}", json=dict(arguments),
                                          headers=headers, timeout=aiohttp.ClientTimeout(total=self._timeout)) as r:
                status = r.status
                try:
                    data = await r.json(content_type=None)
                except ValueError:
                    data = None
        except TimeoutError:
            raise ModelError("MemoryUnavailable", f"the gateway did not answer {name} within {self._timeout:.0f}s",
                             retryable=True, model=what) from None
        except aiohttp.ClientError as exc:
            raise ModelError("GatewayUnavailable", f"cannot reach the gateway at {self.base_url}: {exc}",
                             retryable=True, model=what) from None
        if status != 200:
            raise _error(status, data, what)
        if not isinstance(data, dict):
            raise ModelError("BadGatewayResponse", f"the gateway answered {name} with {str(data)[:200]}",
                             retryable=True, model=what)
        return data


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

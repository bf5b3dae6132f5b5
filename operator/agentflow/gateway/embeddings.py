"""Embeddings through the gateway: what long-term memory embeds facts and queries with, charged like chat calls.

:meth:`Embeddings.embed` (served as ``POST /v1/embeddings`` by agentflow.gateway.server) does, in order::

    model      the attempt's Agent must set spec.memory.longTerm; the model is its embeddingModel (no other)
    offline    agentflow/hashing-v1 is computed here (agentflow.memory.embeddings): free, no provider, no key
    endpoint   the Agent's apiBase through the platform's endpoint policy, the key from its credential Secret
               (the Gateway's EndpointPolicy and CredentialSource: the same rules as its chat calls)
    cache      per text, keyed by namespace, Agent, endpoint, credential, model and the text: cached texts are
               not sent again (exact match, LRU, no TTL: an embedding model's answer for a text does not change)
    budgets    the Budgets that apply to the attempt (the Gateway's BudgetSource); the texts not cached are
               reserved at their approximate tokens * 1.1 + 8, priced from the Gateway's price table; a hard
               Budget that cannot fit refuses with BudgetExceeded (402)
    upstream   one call for every text not cached (litellm's aembedding); settled with the tokens the provider
               counted, recorded in the call log (LlmCall: output tokens 0, routing {"embeddings": N}) and the
               audit chain (model_call), metrics under the model's name

Errors are :class:`agentflow.gateway.service.GatewayError`: NoAgent (403), ModelNotAllowed (400, param model),
EndpointNotAllowed (403), BudgetExceeded (402), NoEmbeddingProvider (400: a model other than the offline one
while the gateway runs without a provider), InvalidInput (400, param input), and the provider's ModelErrors.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from opentelemetry.trace import SpanKind

from ..audit.records import AuditEvent
from ..llm.chat import Endpoint, ModelError
from ..memory.embeddings import HashingEmbedder
from ..memory.records import EmbeddingError, approximate_tokens
from ..models import HASHING_EMBEDDING
from ..storage.ledger import BudgetExceeded, LlmCall, Reservation
from ..telemetry import genai
from .router import provider_of
from .service import Attribution, Gateway, GatewayError

__all__ = ["EmbeddingResult", "EmbeddingUpstream", "Embeddings", "InProcessEmbedder"]

MAX_INPUTS = 256
MAX_INPUT_CHARS = 32_000


class EmbeddingUpstream(Protocol):
    async def embed(self, model: str, texts: Sequence[str], endpoint: Endpoint,
                    timeout_seconds: float | None = None) -> tuple[list[list[float]], int]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    model: str
    input_tokens: int
    cost_usd: float
    cache: Literal["hit", "miss", "bypass"]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class Embeddings:
    """Embeddings of one Gateway (its ledger, budgets, credentials, endpoints, metrics and audit sink).

    ``upstream``: default, the Gateway's provider when it can embed (litellm); None: only the offline model."""

    def __init__(self, gateway: Gateway, upstream: EmbeddingUpstream | None = None, *, cache_entries: int = 8192,
                 clock: Any = time.time) -> None:
        self.gateway = gateway
        default = gateway.provider.upstream if gateway.provider.live else None
        self.upstream = upstream if upstream is not None else default if hasattr(default, "embed") else None
        self._cache: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._cache_entries = cache_entries
        self._clock = clock
        self._salt = secrets.token_bytes(16)
        self._offline = HashingEmbedder()

    def model_of(self, who: Attribution) -> str:
        """The embedding model ``who``'s Agent may use; GatewayError when it may use none."""
        agent = who.agent
        if agent is None:
            raise GatewayError("NoAgent", f"step {who.step!r} of {who.subject} has no agentRef, so it may not embed "
                               "through the gateway", retryable=False, status=403)
        long_term = agent.spec.memory.long_term
        if long_term is None:
            raise GatewayError("ModelNotAllowed", f"Agent {agent.metadata.name!r} has no spec.memory.longTerm, so "
                               "it may not embed", retryable=False, status=400, param="model")
        return long_term.embedding_model

    async def embed(self, who: Attribution, model: str, texts: Sequence[str]) -> EmbeddingResult:
        """Vectors of ``texts`` with the Agent's embedding model, traced as ``embeddings MODEL``."""
        tracing = self.gateway.tracing
        with tracing.span(f"{genai.EMBEDDINGS} {model}", {
                genai.OPERATION_NAME: genai.EMBEDDINGS, genai.PROVIDER_NAME: provider_of(model),
                genai.REQUEST_MODEL: model, genai.AGENT_NAME: who.agent_name or None, genai.NODE: who.node,
                genai.ATTEMPT: who.attempt}, kind=SpanKind.CLIENT) as span:
            result = await self._embed(who, model, texts)
            if tracing.enabled:
                span.set_attributes({genai.USAGE_INPUT_TOKENS: result.input_tokens, genai.CACHE: result.cache,
                                     genai.COST_USD: result.cost_usd})
            return result

    async def _embed(self, who: Attribution, model: str, texts: Sequence[str]) -> EmbeddingResult:
        allowed = self.model_of(who)
        if model != allowed:
            raise GatewayError("ModelNotAllowed", f"embedding model {model!r} is not the one Agent "
                               f"{who.agent_name!r} uses (spec.memory.longTerm.embeddingModel: {allowed})",
                               retryable=False, status=400, param="model", model=model)
        if not texts or len(texts) > MAX_INPUTS or not all(isinstance(t, str) and t for t in texts) or any(
                len(t) > MAX_INPUT_CHARS for t in texts):
            raise GatewayError("InvalidInput", f"input must be 1 to {MAX_INPUTS} non-empty strings of at most "
                               f"{MAX_INPUT_CHARS} characters", retryable=False, status=400, param="input")
        if model == HASHING_EMBEDDING:
            try:
                vectors = await self._offline.embed(list(texts))
            except EmbeddingError as exc:
                raise GatewayError("InvalidInput", str(exc), retryable=False, status=400, param="input") from exc
            return EmbeddingResult(vectors, model, sum(approximate_tokens(t) for t in texts), 0.0, "bypass")
        if self.upstream is None:
            raise GatewayError("NoEmbeddingProvider", f"embedding model {model!r}: this gateway runs without a model "
                               f"provider; use {HASHING_EMBEDDING} (offline) or configure a provider",
                               retryable=False, status=400, param="model", model=model)
        return await self._upstream(who, model, list(texts))

    async def _upstream(self, who: Attribution, model: str, texts: list[str]) -> EmbeddingResult:
        gw = self.gateway
        assert who.agent is not None
        try:
            where = gw.endpoints.decide(who.namespace, model, who.agent.spec.model.api_base)
        except ValueError as exc:
            raise GatewayError("EndpointNotAllowed", f"Agent {who.agent_name!r}: {exc}", retryable=False,
                               status=403, param="model") from None
        api_key = await gw.credentials(who.namespace, who.agent)
        credential = "none" if api_key is None else hmac.new(self._salt, api_key.encode(), hashlib.sha256).hexdigest()
        keys = [hashlib.sha256("\0".join((who.namespace, who.agent_name, where.api_base or "", credential, model,
                                          t)).encode("utf-8")).hexdigest() for t in texts]
        vectors: list[list[float] | None] = [self._cache.get(k) for k in keys]
        missing = [i for i, v in enumerate(vectors) if v is None]
        for k in keys:
            if k in self._cache:
                self._cache.move_to_end(k)
        if not missing:
            gw.metrics.cache.labels(who.namespace, "hit").inc()
            return EmbeddingResult([v for v in vectors if v is not None], model, 0, 0.0, "hit")
        gw.metrics.cache.labels(who.namespace, "miss").inc()
        todo = [texts[i] for i in missing]
        lines = list(await gw.budgets(who, datetime.fromtimestamp(self._clock(), UTC)))
        # Counted as chat prompts are (the provider's tokenizer, cl100k_base for models litellm has none for), never
        # below four characters a token: CJK text is about a token a character, which characters/4 undercounts.
        counted = sum(max(gw.provider.count_tokens(model, [{"role": "user", "content": t}]), approximate_tokens(t))
                      for t in todo)
        estimate = math.ceil(counted * 1.1) + 8
        price = gw.provider.prices(model)
        usd = estimate * price[0] if price is not None else 0.0
        reservation: Reservation | None = None
        if lines:
            try:
                with gw.tracing.span("budget.reserve", {genai.BUDGET_LINES: len(lines), genai.BUDGET_ESTIMATE_USD: usd,
                                                        genai.BUDGET_ESTIMATE_TOKENS: estimate}):
                    reservation = await gw.ledger.reserve(lines, usd, estimate, reference=who.reference,
                                                          ttl_seconds=gw.upstream_timeout_seconds + 60)
            except BudgetExceeded as exc:
                gw.metrics.refusals.labels(who.namespace, "BudgetExceeded").inc()
                await self._record(who, model, lines, 0, 0.0, 0.0, "BudgetExceeded", len(todo), reason=str(exc))
                raise GatewayError("BudgetExceeded", str(exc), retryable=False, status=402, model=model) from exc
        endpoint = Endpoint(where.api_base, api_key, environment_key=where.environment_key)
        started = time.monotonic()
        try:
            fresh, tokens = await self.upstream.embed(model, todo, endpoint, gw.upstream_timeout_seconds)  # type: ignore[union-attr]
        except BaseException as exc:
            if reservation is not None:
                await asyncio.shield(self._release(reservation))
            if isinstance(exc, ModelError):
                await self._record(who, model, lines, 0, 0.0, 0.0, exc.type, len(todo))
                status = 504 if exc.type == "ModelTimeout" else 502 if exc.retryable else 400
                raise GatewayError(exc.type, exc.message, retryable=exc.retryable, status=status,
                                   model=model) from exc
            raise
        latency = (time.monotonic() - started) * 1000.0
        tokens = tokens or estimate
        cost = tokens * price[0] if price is not None else 0.0
        call = self._call(who, model, lines, tokens, cost, latency, "ok", len(todo))
        if reservation is not None:
            await asyncio.shield(gw.ledger.settle(reservation.id, cost, tokens, call))
        else:
            await gw.ledger.record(call)
        await self._audit(who, call)
        gw.metrics.calls.labels(who.namespace, model, "ok").inc()
        gw.metrics.tokens.labels(who.namespace, model, "input").inc(tokens)
        gw.metrics.cost.labels(who.namespace, model).inc(cost)
        for i, vector in zip(missing, fresh, strict=True):
            vectors[i] = vector
            self._cache[keys[i]] = vector
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)
        return EmbeddingResult([v for v in vectors if v is not None], model, tokens, cost, "miss")

    async def _release(self, reservation: Reservation) -> None:
        try:
            await self.gateway.ledger.release(reservation.id)
        except Exception:  # it expires on its own
            return

    def _call(self, who: Attribution, model: str, lines: Sequence[Any], tokens: int, cost: float, latency: float,
              status: str, count: int) -> LlmCall:
        return LlmCall(namespace=who.namespace, workflow=who.workflow, run_uid=who.run_uid, node=who.node,
                       attempt=who.attempt, step=who.step, agent=who.agent_name, prompt=who.prompt,
                       model_requested=model, model_used=model if status == "ok" else "", input_tokens=tokens,
                       output_tokens=0, cost_usd=cost, latency_ms=latency, cached=False, status=status,
                       budgets=tuple(f"{line.namespace}/{line.name}" for line in lines),
                       routing={"embeddings": count}, at=datetime.fromtimestamp(self._clock(), UTC))

    async def _record(self, who: Attribution, model: str, lines: Sequence[Any], tokens: int, cost: float,
                      latency: float, status: str, count: int, reason: str = "") -> None:
        call = self._call(who, model, lines, tokens, cost, latency, status, count)
        self.gateway.metrics.calls.labels(who.namespace, model, status).inc()
        with contextlib.suppress(Exception):  # the refusal or failure is what the caller must see
            await self.gateway.ledger.record(call)
        await self._audit(who, call, reason)

    async def _audit(self, who: Attribution, call: LlmCall, reason: str = "") -> None:
        if self.gateway.audit is None:
            return
        data: dict[str, Any] = {"runUid": who.run_uid, "step": who.step, "agent": who.agent_name,
                                "modelRequested": call.model_requested, "modelUsed": call.model_used,
                                "inputTokens": call.input_tokens, "outputTokens": 0, "costUsd": call.cost_usd,
                                "cached": False, "budgets": list(call.budgets), "embeddings": call.routing}
        if reason:
            data["reason"] = reason
        decision = "ok" if call.status == "ok" else "deny" if call.status == "BudgetExceeded" else call.status
        await self.gateway.audit.append([AuditEvent("model_call", "gateway", who.namespace, who.subject, decision,
                                                    _iso(self._clock()), data)])

    def embedder(self, who: Attribution) -> InProcessEmbedder:
        """The memory Embedder of one attempt in this process (the local runner)."""
        return InProcessEmbedder(self, who)


@dataclasses.dataclass
class InProcessEmbedder:
    """agentflow.memory's Embedder over :class:`Embeddings`, charged to one attempt (the local runner)."""

    embeddings: Embeddings
    who: Attribution

    @property
    def model(self) -> str:
        return self.embeddings.model_of(self.who)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        try:
            return (await self.embeddings.embed(self.who, self.model, list(texts))).vectors
        except GatewayError as exc:
            raise EmbeddingError(f"{exc.type}: {exc.message}", retryable=exc.retryable) from exc


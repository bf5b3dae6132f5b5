"""The gateway's core, without HTTP: one model call for one step attempt, charged to its budgets.

:meth:`Gateway.complete` does, in order::

    candidates   the Agent's model + fallbacks allowed by dataResidency (providers, and regions through the
                 endpoint policy); the requested model must be one
    endpoint     the Agent's apiBase must be one the platform lists for its namespace (EndpointPolicy); the
                 key comes from the Agent's credential Secret, or from the environment only where allowed
    cache        exact-match lookup keyed by namespace, Agent, endpoint, credential identity, model, messages
                 and every parameter (unless the step or the client opted out); a hit costs nothing and is
                 served even when a budget is exhausted (it spends nothing), and is recorded in the call log
    budgets      the lines that apply (injected BudgetSource: the operator reads Budgets from the cluster,
                 the local runner from its manifests; both through agentflow.cost.scope.lines_for)
    estimate     prompt tokens (injected counter: litellm.token_counter by default) * 1.1 + 8, plus
                 max_tokens (the request's, else ``default_max_tokens``, which is then sent upstream so the
                 answer cannot outgrow the reservation), priced at the dearest candidate
    reserve      ledger.reserve on every line at once; a hard line that cannot fit -> BudgetExceeded, the
                 call is logged as refused and nothing stays reserved
    route        Router.decide (fallback order or Thompson sampling, cooldowns); the candidates are tried in
                 that order on retryable errors, each outcome fed back to the router
    settle       ledger.settle with the actual cost and tokens and the LlmCall (routing decision included);
                 on failure ledger.release; a cancelled call releases too
    record       audit event (optional sink), metrics, cache
    trace        the call is a ``chat MODEL`` span (GenAI conventions, agentflow.telemetry.genai) child of the
                 caller's context, with a ``budget.reserve`` span inside; content only when opted in, redacted

:meth:`Gateway.stream` does the same up to the provider call, then hands back a
:class:`~agentflow.gateway.streaming.GatewayStream` once a candidate has sent its first piece (fallback
happens only before that); the stream settles the call when it ends, fails or is closed early.

The upstream is the :class:`agentflow.llm.Provider` given (litellm in production, the offline model for
runs without a provider); the Agent's credentials come from the injected CredentialSource
(Kubernetes Secrets labelled ``agentflow.dev/credential`` in the operator), so callers never hold provider
keys. Only the gateway picks among an Agent's models: callers name the primary.

Errors: :class:`GatewayError` (a :class:`agentflow.llm.ModelError` with an HTTP status and the request field
at fault), ``type`` one of::

    BudgetExceeded       402  a hard budget cannot fit the call's estimate; not retryable
    ModelNotAllowed      400  the requested model is not among the Agent's allowed candidates (param "model")
    NoAgent              403  the attempt's step has no Agent, so it may not call models
    DataResidencyViolation 403 every model of the Agent is from a provider or region it may not use
    EndpointNotAllowed   403  the Agent's apiBase is not an endpoint the platform lists for its namespace
    <ModelError types>   what the last candidate failed with (agentflow.llm.client translate_error)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import math
import random
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, Protocol

from opentelemetry.trace import Span, SpanKind

from ..audit.records import AuditSink
from ..llm import OfflineModel, Provider, offline_provider
from ..llm.chat import ChatRequest, Endpoint, ModelError, ModelResponse, StreamDelta, StreamingUpstream
from ..models import Agent
from ..storage.ledger import BudgetExceeded, BudgetLedger, BudgetLine, LlmCall, Reservation
from ..telemetry import Tracing, fail, genai
from .attribution import Attribution, attribution_for
from .cache import ResponseCache, cache_key
from .endpoints import EndpointDecision, EndpointPolicy
from .metrics import GatewayMetrics
from .records import llm_call, model_call_event
from .router import Outcome, Router, RoutingDecision, candidates_for, provider_of
from .streaming import CLIENT_DISCONNECTED, GatewayStream

__all__ = [
    "Attribution",
    "BudgetSource",
    "CredentialSource",
    "Gateway",
    "GatewayError",
    "GatewayResult",
    "GatewayStream",
    "attribution_for",
]

log = logging.getLogger(__name__)

CacheUse = Literal["hit", "miss", "bypass"]


class GatewayError(ModelError):
    """A call the gateway refused or could not complete. ``status``: the HTTP status the server answers with;
    ``param``: the request field at fault (None when it is not the caller's input)."""

    def __init__(
        self, type: str, message: str, *, retryable: bool, status: int, model: str = "", param: str | None = None
    ) -> None:
        super().__init__(type, message, retryable=retryable, model=model)
        self.status = status
        self.param = param


async def _close(source: AsyncIterator[Any]) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayResult:
    response: ModelResponse
    cache: CacheUse
    call: LlmCall
    warnings: tuple[str, ...] = ()


class BudgetSource(Protocol):
    """The budget lines that apply to a call of ``who`` at ``now`` (agentflow.cost.scope.lines_for)."""

    def __call__(self, who: Attribution, now: datetime) -> Awaitable[Sequence[BudgetLine]]: ...


class CredentialSource(Protocol):
    """The provider API key of ``agent`` (from its credentialsSecretRef), or None when it names none."""

    def __call__(self, namespace: str, agent: Agent) -> Awaitable[str | None]: ...


async def _no_budgets(who: Attribution, now: datetime) -> Sequence[BudgetLine]:
    return ()


async def _no_credentials(namespace: str, agent: Agent) -> str | None:
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class _Route:
    """The models a call may use and how each is reached (decided before the cache and the budgets)."""

    candidates: tuple[str, ...]
    endpoints: Mapping[str, EndpointDecision]
    api_key: str | None = dataclasses.field(repr=False)
    credential_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Prepared:
    """A call that passed the cache and holds its reservation: what the provider call and its ending need."""

    route: _Route
    candidates: list[str]
    key: str
    cache: CacheUse
    lines: list[BudgetLine]
    max_tokens: int
    reservation: Reservation | None


class Gateway:
    """Budget-enforcing, caching, routing model calls. Build once per process; safe for concurrent calls."""

    def __init__(
        self,
        *,
        ledger: BudgetLedger,
        provider: Provider | None = None,
        budgets: BudgetSource = _no_budgets,
        credentials: CredentialSource = _no_credentials,
        endpoints: EndpointPolicy | None = None,
        router: Router | None = None,
        cache: ResponseCache | None = None,
        metrics: GatewayMetrics | None = None,
        audit: AuditSink | None = None,
        tracing: Tracing | None = None,
        default_max_tokens: int = 1024,
        upstream_timeout_seconds: float = 120.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``provider``: what is called (default: the offline model); ``endpoints``: the platform's endpoint
        policy (default: no apiBase is allowed, provider endpoints only)."""
        if default_max_tokens < 1:
            raise ValueError("Gateway: default_max_tokens must be >= 1")
        self.ledger = ledger
        self.provider = provider if provider is not None else offline_provider()
        self.budgets = budgets
        self.credentials = credentials
        self.endpoints = endpoints if endpoints is not None else EndpointPolicy()
        self.router = router or Router()
        self.cache = cache if cache is not None else ResponseCache(clock=monotonic)
        self.metrics = metrics or GatewayMetrics()
        self.audit = audit
        self.tracing = tracing or Tracing.off()
        self.default_max_tokens = default_max_tokens
        self.upstream_timeout_seconds = upstream_timeout_seconds
        self._rng = rng or random.Random()
        self._clock = clock
        self._monotonic = monotonic
        self._salt = secrets.token_bytes(16)  # credential fingerprints in cache keys: never the key itself

    # ------------------------------------------------------------------------------------------- public

    def candidates(self, who: Attribution) -> list[str]:
        """The models ``who`` may call, in declared order; GatewayError when none."""
        return list(self._plan(who)[0])

    def _plan(self, who: Attribution) -> tuple[tuple[str, ...], dict[str, EndpointDecision]]:
        """The candidate models and how each is reached; GatewayError (403) when none may be used."""
        agent = who.agent
        if agent is None:
            raise GatewayError(
                "NoAgent",
                f"step {who.step!r} of {who.subject} has no agentRef (or its Agent is not loaded), so it may "
                "not call models through the gateway",
                retryable=False,
                status=403,
            )
        spec = agent.spec.model
        residency = agent.spec.data_residency
        models = candidates_for(spec.name, spec.fallbacks, residency.allowed_providers)
        if not models:
            raise GatewayError(
                "DataResidencyViolation",
                f"Agent {agent.metadata.name!r}: none of its models ({spec.name}, fallbacks {spec.fallbacks}) is "
                f"from an allowed provider ({', '.join(residency.allowed_providers)}); change the model or "
                "dataResidency.allowedProviders",
                retryable=False,
                status=403,
            )
        try:
            decisions = {m: self.endpoints.decide(who.namespace, m, spec.api_base) for m in models}
        except ValueError as exc:
            raise GatewayError("EndpointNotAllowed", f"Agent {agent.metadata.name!r}: {exc}", retryable=False,
                               status=403, param="model") from None
        regions = residency.allowed_regions
        # The offline model answers inside this process: nothing leaves it, so it is in every region (a local run
        # of an Agent with allowedRegions works with no provider configured, as every other Agent does).
        if regions and not isinstance(self.provider.upstream, OfflineModel):
            skipped = {m: d.region for m, d in decisions.items() if d.region not in regions}
            models = [m for m in models if m not in skipped]
            if not models:
                why = "; ".join(f"{m}: region {r or 'unknown (the endpoint policy names none)'}"
                                for m, r in skipped.items())
                raise GatewayError(
                    "DataResidencyViolation",
                    f"Agent {agent.metadata.name!r}: dataResidency.allowedRegions {list(regions)} excludes every "
                    f"model ({why})", retryable=False, status=403)
        return tuple(models), {m: decisions[m] for m in models}

    async def complete(self, who: Attribution, request: ChatRequest) -> GatewayResult:
        """Make (or answer from cache) one call; GatewayError when refused or when every candidate failed."""
        started = self._monotonic()
        status = "error"
        with self.tracing.span(f"{genai.CHAT} {request.model}", self._chat_attributes(who, request),
                               kind=SpanKind.CLIENT) as span:
            try:
                result = await self._complete(who, request)
                status = "hit" if result.cache == "hit" else "ok"
                self._traced(span, result, request)
                return result
            except GatewayError as exc:
                status = exc.type
                raise
            finally:
                self.metrics.request_seconds.labels(status).observe(self._monotonic() - started)

    def _chat_attributes(self, who: Attribution, request: ChatRequest) -> dict[str, Any]:
        if not self.tracing.enabled:
            return {}
        attrs = {genai.OPERATION_NAME: genai.CHAT, genai.PROVIDER_NAME: provider_of(request.model),
                 genai.REQUEST_MODEL: request.model, genai.AGENT_NAME: who.agent_name or None,
                 genai.REQUEST_MAX_TOKENS: request.max_tokens, genai.REQUEST_TEMPERATURE: request.temperature,
                 genai.NAMESPACE: who.namespace, genai.WORKFLOW: who.workflow, genai.NODE: who.node,
                 genai.ATTEMPT: who.attempt, genai.CONVERSATION_ID: who.run_uid}
        messages = self.tracing.content(list(request.messages))
        if messages is not None:
            attrs[genai.INPUT_MESSAGES] = messages
        return attrs

    def _traced(self, span: Span, result: GatewayResult, request: ChatRequest) -> None:
        if not self.tracing.enabled:
            return
        response = result.response
        span.set_attributes({genai.RESPONSE_MODEL: response.model, genai.USAGE_INPUT_TOKENS: response.input_tokens,
                             genai.USAGE_OUTPUT_TOKENS: response.output_tokens, genai.COST_USD: response.cost_usd,
                             genai.RESPONSE_FINISH_REASONS: [response.finish_reason], genai.CACHE: result.cache})
        answer = self.tracing.content([response.message()])
        if answer is not None:
            span.set_attribute(genai.OUTPUT_MESSAGES, answer)

    async def stream(self, who: Attribution, request: ChatRequest) -> GatewayStream:
        """The same call, streamed: a GatewayStream once a candidate has sent its first piece.

        Refusals and a failure of every candidate before its first piece raise GatewayError here, like
        :meth:`complete`; after that the stream settles the call however it ends (agentflow.gateway.streaming).
        A cache hit, or an upstream that cannot stream (the offline model), is answered whole and cut into
        pieces."""
        if not isinstance(self.provider.upstream, StreamingUpstream):
            return GatewayStream.whole(await self.complete(who, request))
        started = self._monotonic()
        status = "error"
        try:
            prepared = await self._prepare(who, request)
            if isinstance(prepared, GatewayResult):
                status = "hit"
                return GatewayStream.whole(prepared)
            opened = await self._open_stream(who, request, prepared)
            status = "ok"
            return opened
        except GatewayError as exc:
            status = exc.type
            raise
        finally:  # a stream's request time is the time to its first piece
            self.metrics.request_seconds.labels(status).observe(self._monotonic() - started)

    async def _open_stream(self, who: Attribution, request: ChatRequest, prepared: _Prepared) -> GatewayStream:
        """Try the candidates in the router's order until one sends its first piece (no fallback after that)."""
        upstream = self.provider.upstream
        assert isinstance(upstream, StreamingUpstream)
        arm = f"{who.namespace}/{who.agent_name}"
        decision: RoutingDecision | None = None
        tried: list[dict[str, Any]] = []
        try:
            decision = self._decide(who, prepared)
            last: ModelError | None = None
            for model in decision.order:
                call, endpoint = self._call_to(who, request, prepared.route, prepared.max_tokens, model)
                began = self._monotonic()
                source = upstream.stream(call, endpoint)
                try:
                    first = await anext(source)
                except (ModelError, StopAsyncIteration) as exc:
                    error = exc if isinstance(exc, ModelError) else ModelError(
                        "BadModelResponse", f"model {model!r}: the stream ended before its first piece",
                        retryable=True, model=model)
                    last = self._tried_and_failed(who, arm, model, began, error, tried)
                    if not error.retryable:
                        break
                    continue
                except BaseException:
                    await asyncio.shield(_close(source))
                    raise
                return self._streaming(who, request, prepared, decision, tried, model, began, source, first)
            assert last is not None
            raise self._all_failed(last, tried)
        except BaseException as exc:
            await self._failed(who, request, prepared, decision, tried, exc)

    def _streaming(self, who: Attribution, request: ChatRequest, prepared: _Prepared, decision: RoutingDecision,
                   tried: list[dict[str, Any]], model: str, began: float,
                   source: AsyncIterator[StreamDelta | ModelResponse], first: StreamDelta | ModelResponse,
                   ) -> GatewayStream:
        arm = f"{who.namespace}/{who.agent_name}"

        async def end(response: ModelResponse) -> GatewayResult:
            took = (self._monotonic() - began) * 1000.0
            self.router.observe(arm, model, Outcome(True, cost_usd=response.cost_usd, latency_ms=took),
                                self._monotonic())
            self.metrics.upstream_seconds.labels(model).observe(took / 1000.0)
            tried.append({"model": model, "ok": True, "latencyMs": round(took, 1)})
            failed = tuple(t["model"] for t in tried[:-1])
            response = dataclasses.replace(response, latency_ms=took, failed_models=failed)
            return await self._finish(who, request, prepared, decision, tried, response)

        async def abandon(streamed: str, error: ModelError | None) -> None:
            took = (self._monotonic() - began) * 1000.0
            if error is not None:
                self._tried_and_failed(who, arm, model, began, error, tried)
            else:
                tried.append({"model": model, "error": CLIENT_DISCONNECTED, "latencyMs": round(took, 1)})
            input_tokens = self.provider.count_tokens(model, request.messages)
            output_tokens = (len(streamed) + 3) // 4
            price = self.provider.prices(model)
            cost = input_tokens * price[0] + output_tokens * price[1] if price is not None else 0.0
            partial = ModelResponse(text=streamed, model=model, input_tokens=input_tokens,
                                    output_tokens=output_tokens, cost_usd=cost, latency_ms=took)
            await self._finish(who, request, prepared, decision, tried, partial,
                               status=error.type if error is not None else CLIENT_DISCONNECTED)

        return GatewayStream(cache=prepared.cache, model=model,
                             warnings=prepared.reservation.warnings if prepared.reservation is not None else (),
                             source=source, first=first, end=end, abandon=abandon)

    # ------------------------------------------------------------------------------------------- steps

    async def _complete(self, who: Attribution, request: ChatRequest) -> GatewayResult:
        prepared = await self._prepare(who, request)
        if isinstance(prepared, GatewayResult):
            return prepared
        decision: RoutingDecision | None = None
        tried: list[dict[str, Any]] = []
        try:
            decision = self._decide(who, prepared)
            response = await self._route(who, request, prepared.route, prepared.max_tokens, decision, tried)
        except BaseException as exc:
            await self._failed(who, request, prepared, decision, tried, exc)
        return await self._finish(who, request, prepared, decision, tried, response)

    async def _prepare(self, who: Attribution, request: ChatRequest) -> GatewayResult | _Prepared:
        """Everything before the provider is called: the route, the cache (a hit is the answer), the budgets
        and the reservation."""
        try:
            route = await self._resolve(who)
        except GatewayError as exc:
            self.metrics.refusals.labels(who.namespace, exc.type).inc()
            raise
        candidates = list(route.candidates)
        if request.model not in candidates:
            self.metrics.refusals.labels(who.namespace, "ModelNotAllowed").inc()
            raise GatewayError(
                "ModelNotAllowed",
                f"model {request.model!r} is not one Agent {who.agent_name!r} may use; allowed: "
                f"{', '.join(candidates)}",
                retryable=False,
                status=400,
                param="model",
                model=request.model,
            )
        use_cache = who.cache and request.read_cache and self.cache.enabled
        key = cache_key(who.namespace, request.model, request.messages, request.params(), scope={
            "agent": who.agent_name, "candidates": candidates, "credential": route.credential_id,
            "endpoints": {m: d.api_base for m, d in route.endpoints.items()}})
        if use_cache:
            hit = self.cache.get(key)
            if hit is not None:
                self.metrics.cache.labels(who.namespace, "hit").inc()
                return await self._cache_hit(who, request, hit)
            self.metrics.cache.labels(who.namespace, "miss").inc()
        else:
            self.metrics.cache.labels(who.namespace, "bypass").inc()

        lines = list(await self.budgets(who, self._now()))
        max_tokens = request.max_tokens or self.default_max_tokens
        usd, tokens = self._estimate(candidates, request, max_tokens)
        reservation: Reservation | None = None
        if lines:
            try:
                with self.tracing.span("budget.reserve", {genai.BUDGET_LINES: len(lines),
                                                          genai.BUDGET_ESTIMATE_USD: usd,
                                                          genai.BUDGET_ESTIMATE_TOKENS: tokens}) as span:
                    try:
                        reservation = await self._reserve_uncancellable(
                            lines,
                            usd,
                            tokens,
                            reference=who.reference,  # the authenticated attempt, never a caller's header:
                            # retention collects reservations by the run this names
                            ttl_seconds=(request.timeout_seconds or self.upstream_timeout_seconds) * len(candidates)
                            + 60,
                        )
                    except BudgetExceeded as exc:
                        fail(span, "BudgetExceeded", str(exc))
                        raise
            except BudgetExceeded as exc:
                await self._refused(who, request, lines, exc)
                raise GatewayError("BudgetExceeded", str(exc), retryable=False, status=402,
                                   model=request.model) from exc
        return _Prepared(route, candidates, key, "miss" if use_cache else "bypass", lines, max_tokens, reservation)

    def _decide(self, who: Attribution, prepared: _Prepared) -> RoutingDecision:
        return self.router.decide(f"{who.namespace}/{who.agent_name}", prepared.candidates, self._mode(who),
                                  self._monotonic(), self._rng)

    async def _failed(self, who: Attribution, request: ChatRequest, prepared: _Prepared,
                      decision: RoutingDecision | None, tried: list[dict[str, Any]], exc: BaseException) -> NoReturn:
        """No candidate answered (or the call was cancelled mid-way): nothing was spent, so the reservation is
        given back; the failure is recorded and raised as a GatewayError."""
        await asyncio.shield(self._release(prepared.reservation))
        if not isinstance(exc, ModelError):
            raise exc
        failed = llm_call(self._now(), who, request, prepared.lines, decision, tried, error=exc)
        await self._log_failure(who, failed)
        if isinstance(exc, GatewayError):
            raise exc
        status = 504 if exc.type == "ModelTimeout" else 502 if exc.retryable else 400
        raise GatewayError(exc.type, exc.message, retryable=exc.retryable, status=status, model=exc.model) from exc

    async def _finish(self, who: Attribution, request: ChatRequest, prepared: _Prepared,
                      decision: RoutingDecision | None, tried: list[dict[str, Any]], response: ModelResponse, *,
                      status: str | None = None) -> GatewayResult:
        """The provider answered (``status`` None) or streamed part of an answer (``status`` says why it
        stopped): settle what it cost, record the call, cache a whole answer, audit."""
        call = llm_call(self._now(), who, request, prepared.lines, decision, tried, response=response, status=status)
        reservation = prepared.reservation
        try:
            if reservation is not None:
                # Shielded: the provider has answered and charged, so the settlement must land even when the
                # client went away (a cancelled step pod) and this handler is cancelled.
                await asyncio.shield(self.ledger.settle(reservation.id, response.cost_usd,
                                                        response.input_tokens + response.output_tokens, call))
            else:
                await asyncio.shield(self.ledger.record(call))
        except Exception:
            # The provider answered and charged: returning the answer beats a retry that pays twice. The
            # reservation (never less than the call cost) stays held until its TTL.
            log.exception("gateway: settling the call of %s failed; its reservation is held until it expires",
                          who.subject)
        if status is None and who.cache and request.write_cache:
            self.cache.put(prepared.key, response)
        self._count(who, call)
        await self._audit(who, call, "ok" if status is None else status)
        warnings = reservation.warnings if reservation is not None else ()
        return GatewayResult(response, prepared.cache, call, warnings)

    async def _resolve(self, who: Attribution) -> _Route:
        """Candidates, endpoints and the Agent's credential (read once per call)."""
        candidates, endpoints = self._plan(who)
        assert who.agent is not None
        api_key = await self.credentials(who.namespace, who.agent)
        if api_key is None:
            credential_id = "environment" if any(d.environment_key for d in endpoints.values()) else "none"
        else:
            digest = hmac.new(self._salt, api_key.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
            credential_id = f"secret:{digest}"
        return _Route(candidates, endpoints, api_key, credential_id)

    async def _route(
        self,
        who: Attribution,
        request: ChatRequest,
        route: _Route,
        max_tokens: int,
        decision: RoutingDecision,
        tried: list[dict[str, Any]],
    ) -> ModelResponse:
        """Try the decision's order until a candidate answers; every try is appended to ``tried``."""
        arm = f"{who.namespace}/{who.agent_name}"
        upstream = self.provider.upstream
        last: ModelError | None = None
        for model in decision.order:
            call, endpoint = self._call_to(who, request, route, max_tokens, model)
            began = self._monotonic()
            try:
                response = await upstream.complete(call, endpoint)
            except ModelError as exc:
                last = self._tried_and_failed(who, arm, model, began, exc, tried)
                if not exc.retryable:
                    break
                continue
            took = (self._monotonic() - began) * 1000.0
            self.router.observe(arm, model, Outcome(True, cost_usd=response.cost_usd, latency_ms=took),
                                self._monotonic())
            self.metrics.upstream_seconds.labels(model).observe(took / 1000.0)
            tried.append({"model": model, "ok": True, "latencyMs": round(took, 1)})
            failed = tuple(t["model"] for t in tried[:-1])
            return dataclasses.replace(response, latency_ms=took, failed_models=failed)
        assert last is not None
        raise self._all_failed(last, tried)

    def _call_to(self, who: Attribution, request: ChatRequest, route: _Route, max_tokens: int,
                 model: str) -> tuple[ChatRequest, Endpoint]:
        """The request sent to one candidate and where it goes."""
        where = route.endpoints[model]
        call = dataclasses.replace(
            request, model=model, max_tokens=max_tokens,
            timeout_seconds=request.timeout_seconds or self.upstream_timeout_seconds,
            idempotency_key=request.idempotency_key or who.reference)
        return call, Endpoint(where.api_base, route.api_key, environment_key=where.environment_key)

    def _tried_and_failed(self, who: Attribution, arm: str, model: str, began: float, exc: ModelError,
                          tried: list[dict[str, Any]]) -> ModelError:
        took = (self._monotonic() - began) * 1000.0
        self.router.observe(arm, model, Outcome(False, latency_ms=took, retryable=exc.retryable, error=exc.type),
                            self._monotonic())
        tried.append({"model": model, "error": exc.type, "latencyMs": round(took, 1)})
        if exc.retryable:
            self.metrics.fallbacks.labels(who.namespace, model).inc()
        return exc

    @staticmethod
    def _all_failed(last: ModelError, tried: list[dict[str, Any]]) -> ModelError:
        if len(tried) <= 1:
            return last
        summary = "; ".join(f"{t['model']}: {t['error']}" for t in tried)
        return ModelError(last.type, f"every model failed ({summary}); last error: {last.message}",
                          retryable=last.retryable, model=last.model)

    # ------------------------------------------------------------------------------------------- helpers

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @staticmethod
    def _mode(who: Attribution) -> Literal["fallback", "bandit"]:
        assert who.agent is not None
        mode = getattr(who.agent.spec.model, "routing", "fallback")
        return "bandit" if mode == "bandit" else "fallback"

    def _estimate(self, candidates: Sequence[str], request: ChatRequest, max_tokens: int) -> tuple[float, int]:
        """(US dollars, tokens) to reserve: a margin over the prompt's count plus the most it may answer."""
        prompt = math.ceil(self.provider.count_tokens(candidates[0], request.messages) * 1.1) + 8
        if request.tools:  # function schemas count as prompt tokens too
            prompt += math.ceil(len(str([dict(t) for t in request.tools])) / 4)
        usd = 0.0
        for model in candidates:
            price = self.provider.prices(model)
            if price is not None:
                usd = max(usd, prompt * price[0] + max_tokens * price[1])
        return usd, prompt + max_tokens

    async def _cache_hit(self, who: Attribution, request: ChatRequest, hit: ModelResponse) -> GatewayResult:
        call = llm_call(self._now(), who, request, (), None, (), response=hit)
        call = dataclasses.replace(call, routing={"cache": "hit"})
        await self.ledger.record(call)
        self._count(who, call)
        await self._audit(who, call, "ok")
        return GatewayResult(hit, "hit", call)

    async def _refused(
        self, who: Attribution, request: ChatRequest, lines: Sequence[BudgetLine], exc: BudgetExceeded
    ) -> None:
        call = llm_call(self._now(), who, request, lines, None, (), status="BudgetExceeded")
        self.metrics.refusals.labels(who.namespace, "BudgetExceeded").inc()
        self.metrics.calls.labels(who.namespace, request.model, "BudgetExceeded").inc()
        try:
            await self.ledger.record(call)
        except Exception:
            log.exception("gateway: recording the refused call of %s failed", who.subject)
        await self._audit(who, call, "deny", reason=str(exc))

    async def _reserve_uncancellable(self, lines: list[BudgetLine], usd: float, tokens: int, *, reference: str,
                                     ttl_seconds: float) -> Reservation:
        """ledger.reserve, but a cancellation mid-way cannot leave a reservation held until its TTL: the
        reservation is finished and then given back before the cancellation goes on."""
        task = asyncio.ensure_future(self.ledger.reserve(lines, usd, tokens, reference=reference,
                                                         ttl_seconds=ttl_seconds))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(await task))
            raise

    async def _release(self, reservation: Reservation | None) -> None:
        if reservation is None:
            return
        try:
            await self.ledger.release(reservation.id)
        except Exception:  # it expires on its own (ttl); never hide the call's own outcome behind this
            log.exception("gateway: releasing reservation %s failed; it expires on its own", reservation.id)

    async def _log_failure(self, who: Attribution, call: LlmCall) -> None:
        self.metrics.calls.labels(who.namespace, call.model_requested, call.status).inc()
        try:
            await self.ledger.record(call)
        except Exception:
            log.exception("gateway: recording the failed call of %s failed", who.subject)
        await self._audit(who, call, call.status)

    def _count(self, who: Attribution, call: LlmCall) -> None:
        m = self.metrics
        m.calls.labels(who.namespace, call.model_used, call.status).inc()  # a stream cut short: why
        m.tokens.labels(who.namespace, call.model_used, "input").inc(call.input_tokens)
        m.tokens.labels(who.namespace, call.model_used, "output").inc(call.output_tokens)
        m.cost.labels(who.namespace, call.model_used).inc(call.cost_usd)

    async def _audit(self, who: Attribution, call: LlmCall, decision: str, reason: str = "") -> None:
        if self.audit is None:
            return
        try:
            await self.audit.append([model_call_event(self._now(), who, call, decision, reason)])
        except Exception:
            log.exception("gateway: the audit sink refused the model_call event of %s", who.subject)

    @staticmethod
    def request_id() -> str:
        return f"chatcmpl-{uuid.uuid4().hex}"

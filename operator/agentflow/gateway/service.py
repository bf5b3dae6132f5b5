"""The gateway's core, without HTTP: one model call for one step attempt, charged to its budgets.

:meth:`Gateway.complete` does, in order::

    candidates   the Agent's model + fallbacks allowed by dataResidency; the requested model must be one
    cache        exact-match lookup (unless the step or the client opted out); a hit costs nothing and is
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

The upstream is any :class:`agentflow.llm.ModelClient` (LiteLLMClient in production, the offline model for
the local runner without a provider); the Agent's credentials come from the injected CredentialSource
(Kubernetes Secrets in the operator), so callers never hold provider keys.

Errors: :class:`GatewayError` (a :class:`agentflow.llm.ModelError` with an HTTP status and the request field
at fault), ``type`` one of::

    BudgetExceeded       402  a hard budget cannot fit the call's estimate; not retryable
    ModelNotAllowed      400  the requested model is not among the Agent's allowed candidates (param "model")
    NoAgent              403  the attempt's step has no Agent, so it may not call models
    DataResidencyViolation 403 every model of the Agent is from a provider it may not use
    <ModelError types>   what the last candidate failed with (agentflow.llm.client translate_error)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from ..audit.records import AuditEvent, AuditSink
from ..llm.client import IDEMPOTENCY_KEY, ModelClient, ModelError, ModelRequest, ModelResponse
from ..models import Agent, StepSpec, Workflow
from ..storage.ledger import BudgetExceeded, BudgetLedger, BudgetLine, LlmCall, Reservation
from .cache import ResponseCache, cache_key
from .metrics import GatewayMetrics
from .router import Outcome, Router, RoutingDecision, candidates_for

__all__ = [
    "Attribution",
    "BudgetSource",
    "ChatRequest",
    "CredentialSource",
    "Gateway",
    "GatewayError",
    "GatewayResult",
    "approximate_token_counter",
    "attribution_for",
    "litellm_prices",
    "litellm_token_counter",
]

log = logging.getLogger(__name__)

TokenCounter = Callable[[str, Sequence[Mapping[str, str]]], int]
PriceLookup = Callable[[str], "tuple[float, float] | None"]
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


@dataclasses.dataclass(frozen=True, slots=True)
class Attribution:
    """Whom a call is charged to: one attempt of one step, its Agent, and what the budgets select on."""

    namespace: str
    workflow: str
    run_uid: str
    node: str
    attempt: int
    step: str
    agent: Agent | None
    prompt: str = ""
    workflow_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cache: bool = True  # False: the step set modelParams.cache false
    budget_ref: str | None = None  # the Workflow's spec.budgetRef (always charged)
    expires: float | None = None  # unix seconds after which the credential that proved it is void

    @property
    def agent_name(self) -> str:
        return self.agent.metadata.name if self.agent is not None else ""

    @property
    def agent_labels(self) -> Mapping[str, str]:
        return self.agent.metadata.labels if self.agent is not None else {}

    @property
    def subject(self) -> str:
        return f"{self.namespace}/{self.workflow}/{self.node}#{self.attempt}"

    @property
    def reference(self) -> str:
        return f"{self.run_uid}/{self.node}/{self.attempt}"


def attribution_for(
    *,
    namespace: str,
    run_uid: str,
    node: str,
    attempt: int,
    workflow: Workflow,
    step: StepSpec | None,
    agents: Mapping[str, Agent],
    expires: float | None = None,
) -> Attribution:
    """The Attribution of an attempt of ``step`` (found by the caller, e.g. runner.executors.find_step)."""
    agent = None
    if step is not None and step.agent_ref is not None:
        agent = agents.get(step.agent_ref.name)
    return Attribution(
        namespace=namespace,
        workflow=workflow.metadata.name,
        run_uid=run_uid,
        node=node,
        attempt=attempt,
        step=step.name if step is not None else "",
        agent=agent,
        prompt=step.prompt_ref.name if step is not None and step.prompt_ref is not None else "",
        workflow_labels=dict(workflow.metadata.labels),
        cache=step.model_params.cache if step is not None and step.model_params is not None else True,
        budget_ref=workflow.spec.budget_ref.name if workflow.spec.budget_ref is not None else None,
        expires=expires,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion as a client asked for it (validated by the server, or built in-process)."""

    model: str
    messages: tuple[Mapping[str, str], ...]
    temperature: float | None = None
    max_tokens: int | None = None
    output_schema: Mapping[str, Any] | None = None
    timeout_seconds: float | None = None
    idempotency_key: str | None = None
    read_cache: bool = True  # Cache-Control: no-cache turns it off
    write_cache: bool = True  # Cache-Control: no-store turns both off

    def params(self) -> dict[str, Any]:
        """The parameters that change the answer (part of the cache key)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "output_schema": self.output_schema}


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
    """The provider API key of ``agent`` (from its credentialsSecretRef), or None to let litellm use its
    environment variables."""

    def __call__(self, namespace: str, agent: Agent) -> Awaitable[str | None]: ...


def approximate_token_counter(model: str, messages: Sequence[Mapping[str, str]]) -> int:
    """Characters / 4 plus 4 per message: the offline model's own count (no tokenizer to load)."""
    return sum(4 + math.ceil(len(m.get("content", "")) / 4) for m in messages)


def litellm_token_counter() -> TokenCounter:
    """litellm.token_counter (the model's own tokenizer where litellm bundles it, else tiktoken's)."""
    from ..llm.pricing import load_litellm

    litellm = load_litellm()

    def count(model: str, messages: Sequence[Mapping[str, str]]) -> int:
        try:
            return int(litellm.token_counter(model=model, messages=[dict(m) for m in messages]))
        except Exception:  # an unknown tokenizer must not fail the call: fall back to the estimate
            return approximate_token_counter(model, messages)

    return count


def litellm_prices() -> PriceLookup:
    """Price per (input, output) token from litellm's bundled table (agentflow.llm.pricing)."""
    from ..llm.pricing import load_litellm, price_per_token

    table = load_litellm().model_cost
    return lambda model: price_per_token(model, table)


async def _no_budgets(who: Attribution, now: datetime) -> Sequence[BudgetLine]:
    return ()


async def _env_credentials(namespace: str, agent: Agent) -> str | None:
    return None


class Gateway:
    """Budget-enforcing, caching, routing model calls. Build once per process; safe for concurrent calls."""

    def __init__(
        self,
        *,
        ledger: BudgetLedger,
        upstream: ModelClient,
        budgets: BudgetSource = _no_budgets,
        credentials: CredentialSource = _env_credentials,
        router: Router | None = None,
        cache: ResponseCache | None = None,
        metrics: GatewayMetrics | None = None,
        audit: AuditSink | None = None,
        token_counter: TokenCounter = approximate_token_counter,
        prices: PriceLookup = lambda model: None,
        default_max_tokens: int = 1024,
        upstream_timeout_seconds: float = 120.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if default_max_tokens < 1:
            raise ValueError("Gateway: default_max_tokens must be >= 1")
        self.ledger = ledger
        self.upstream = upstream
        self.budgets = budgets
        self.credentials = credentials
        self.router = router or Router()
        self.cache = cache if cache is not None else ResponseCache(clock=monotonic)
        self.metrics = metrics or GatewayMetrics()
        self.audit = audit
        self.token_counter = token_counter
        self.prices = prices
        self.default_max_tokens = default_max_tokens
        self.upstream_timeout_seconds = upstream_timeout_seconds
        self._rng = rng or random.Random()
        self._clock = clock
        self._monotonic = monotonic

    # ------------------------------------------------------------------------------------------- public

    def candidates(self, who: Attribution) -> list[str]:
        """The models ``who`` may call, in declared order; GatewayError when none."""
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
        allowed = agent.spec.data_residency.allowed_providers
        models = candidates_for(spec.name, spec.fallbacks, allowed)
        if not models:
            raise GatewayError(
                "DataResidencyViolation",
                f"Agent {agent.metadata.name!r}: none of its models ({spec.name}, fallbacks {spec.fallbacks}) is "
                f"from an allowed provider ({', '.join(allowed)}); change the model or "
                "dataResidency.allowedProviders",
                retryable=False,
                status=403,
            )
        return models

    async def complete(self, who: Attribution, request: ChatRequest) -> GatewayResult:
        """Make (or answer from cache) one call; GatewayError when refused or when every candidate failed."""
        started = self._monotonic()
        status = "error"
        try:
            result = await self._complete(who, request)
            status = "hit" if result.cache == "hit" else "ok"
            return result
        except GatewayError as exc:
            status = exc.type
            raise
        finally:
            self.metrics.request_seconds.labels(status).observe(self._monotonic() - started)

    # ------------------------------------------------------------------------------------------- steps

    async def _complete(self, who: Attribution, request: ChatRequest) -> GatewayResult:
        try:
            candidates = self.candidates(who)
        except GatewayError as exc:
            self.metrics.refusals.labels(who.namespace, exc.type).inc()
            raise
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
        key = cache_key(who.namespace, request.model, request.messages, request.params())
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
                reservation = await self._reserve_uncancellable(
                    lines,
                    usd,
                    tokens,
                    reference=request.idempotency_key or who.reference,
                    ttl_seconds=(request.timeout_seconds or self.upstream_timeout_seconds) * len(candidates) + 60,
                )
            except BudgetExceeded as exc:
                await self._refused(who, request, lines, exc)
                raise GatewayError("BudgetExceeded", str(exc), retryable=False, status=402,
                                   model=request.model) from exc
        decision: RoutingDecision | None = None
        tried: list[dict[str, Any]] = []
        try:
            decision = self.router.decide(
                f"{who.namespace}/{who.agent_name}", candidates, self._mode(who), self._monotonic(), self._rng
            )
            response = await self._route(who, request, max_tokens, decision, tried)
        except BaseException as exc:
            # Nothing was spent (or the call was cancelled mid-way): give the reservation back.
            await asyncio.shield(self._release(reservation))
            if not isinstance(exc, ModelError):
                raise
            failed = self._call(who, request, lines, decision, tried, error=exc)
            await self._log_failure(who, failed)
            if isinstance(exc, GatewayError):
                raise
            status = 504 if exc.type == "ModelTimeout" else 502 if exc.retryable else 400
            raise GatewayError(exc.type, exc.message, retryable=exc.retryable, status=status,
                               model=exc.model) from exc
        call = self._call(who, request, lines, decision, tried, response=response)
        try:
            if reservation is not None:
                # Shielded: the provider has answered and charged, so the settlement must land even when the
                # client went away (a cancelled step pod) and this handler is cancelled.
                await asyncio.shield(self.ledger.settle(reservation.id, response.cost_usd,
                                                        response.input_tokens + response.output_tokens, call))
            else:
                await self.ledger.record(call)
        except Exception:
            # The provider answered and charged: returning the answer beats a retry that pays twice. The
            # reservation (never less than the call cost) stays held until its TTL.
            log.exception("gateway: settling the call of %s failed; its reservation is held until it expires",
                          who.subject)
        if who.cache and request.write_cache:
            self.cache.put(key, response)
        self._count(who, call)
        await self._audit(who, call, "ok")
        warnings = reservation.warnings if reservation is not None else ()
        return GatewayResult(response, "miss" if use_cache else "bypass", call, warnings)

    async def _route(
        self,
        who: Attribution,
        request: ChatRequest,
        max_tokens: int,
        decision: RoutingDecision,
        tried: list[dict[str, Any]],
    ) -> ModelResponse:
        """Try the decision's order until a candidate answers; every try is appended to ``tried``."""
        assert who.agent is not None
        spec = who.agent.spec.model
        api_key = await self.credentials(who.namespace, who.agent)
        arm = f"{who.namespace}/{who.agent_name}"
        last: ModelError | None = None
        for model in decision.order:
            upstream = ModelRequest(
                model=model,
                messages=request.messages,
                temperature=request.temperature,
                max_tokens=max_tokens,
                api_base=spec.api_base,
                api_key=api_key,
                output_schema=request.output_schema,
                timeout_seconds=request.timeout_seconds or self.upstream_timeout_seconds,
                metadata={IDEMPOTENCY_KEY: request.idempotency_key or who.reference},
            )
            began = self._monotonic()
            try:
                response = await self.upstream.complete(upstream)
            except ModelError as exc:
                took = (self._monotonic() - began) * 1000.0
                self.router.observe(arm, model, Outcome(False, latency_ms=took, retryable=exc.retryable,
                                                        error=exc.type), self._monotonic())
                tried.append({"model": model, "error": exc.type, "latencyMs": round(took, 1)})
                last = exc
                if not exc.retryable:
                    break
                self.metrics.fallbacks.labels(who.namespace, model).inc()
                continue
            took = (self._monotonic() - began) * 1000.0
            self.router.observe(arm, model, Outcome(True, cost_usd=response.cost_usd, latency_ms=took),
                                self._monotonic())
            self.metrics.upstream_seconds.labels(model).observe(took / 1000.0)
            tried.append({"model": model, "ok": True, "latencyMs": round(took, 1)})
            failed = tuple(t["model"] for t in tried[:-1])
            return dataclasses.replace(response, latency_ms=took, failed_models=failed)
        assert last is not None
        if len(tried) > 1:
            summary = "; ".join(f"{t['model']}: {t['error']}" for t in tried)
            last = ModelError(last.type, f"every model failed ({summary}); last error: {last.message}",
                              retryable=last.retryable, model=last.model)
        raise last

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
        prompt = math.ceil(self.token_counter(candidates[0], request.messages) * 1.1) + 8
        usd = 0.0
        for model in candidates:
            price = self.prices(model)
            if price is not None:
                usd = max(usd, prompt * price[0] + max_tokens * price[1])
        return usd, prompt + max_tokens

    def _call(
        self,
        who: Attribution,
        request: ChatRequest,
        lines: Sequence[BudgetLine],
        decision: RoutingDecision | None,
        tried: Sequence[Mapping[str, Any]],
        *,
        response: ModelResponse | None = None,
        error: ModelError | None = None,
        status: str | None = None,
    ) -> LlmCall:
        routing: dict[str, Any] = decision.to_dict() if decision is not None else {}
        if tried:
            routing["tried"] = [dict(t) for t in tried]
        return LlmCall(
            namespace=who.namespace,
            workflow=who.workflow,
            run_uid=who.run_uid,
            node=who.node,
            attempt=who.attempt,
            step=who.step,
            agent=who.agent_name,
            prompt=who.prompt,
            model_requested=request.model,
            model_used=response.model if response is not None else "",
            input_tokens=response.input_tokens if response is not None else 0,
            output_tokens=response.output_tokens if response is not None else 0,
            cost_usd=response.cost_usd if response is not None else 0.0,
            latency_ms=response.latency_ms if response is not None else 0.0,
            cached=response.cached if response is not None else False,
            status=status or (error.type if error is not None else "ok"),
            budgets=tuple(f"{line.namespace}/{line.name}" for line in lines),
            routing=routing,
            at=self._now(),
        )

    async def _cache_hit(self, who: Attribution, request: ChatRequest, hit: ModelResponse) -> GatewayResult:
        call = self._call(who, request, (), None, (), response=hit)
        call = dataclasses.replace(call, routing={"cache": "hit"})
        await self.ledger.record(call)
        self._count(who, call)
        await self._audit(who, call, "ok")
        return GatewayResult(hit, "hit", call)

    async def _refused(
        self, who: Attribution, request: ChatRequest, lines: Sequence[BudgetLine], exc: BudgetExceeded
    ) -> None:
        call = self._call(who, request, lines, None, (), status="BudgetExceeded")
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
        m.calls.labels(who.namespace, call.model_used, "ok").inc()
        m.tokens.labels(who.namespace, call.model_used, "input").inc(call.input_tokens)
        m.tokens.labels(who.namespace, call.model_used, "output").inc(call.output_tokens)
        m.cost.labels(who.namespace, who.workflow, call.model_used).inc(call.cost_usd)

    async def _audit(self, who: Attribution, call: LlmCall, decision: str, reason: str = "") -> None:
        if self.audit is None:
            return
        data: dict[str, Any] = {
            "runUid": who.run_uid,
            "step": who.step,
            "agent": who.agent_name,
            "prompt": who.prompt,
            "modelRequested": call.model_requested,
            "modelUsed": call.model_used,
            "inputTokens": call.input_tokens,
            "outputTokens": call.output_tokens,
            "costUsd": call.cost_usd,
            "cached": call.cached,
            "budgets": list(call.budgets),
        }
        if call.routing:
            data["routing"] = dict(call.routing)
        if reason:
            data["reason"] = reason
        event = AuditEvent(
            kind="model_call",
            actor="gateway",
            namespace=who.namespace,
            subject=who.subject,
            decision=decision,
            at=self._now().isoformat().replace("+00:00", "Z"),
            data=data,
        )
        try:
            await self.audit.append([event])
        except Exception:
            log.exception("gateway: the audit sink refused the model_call event of %s", who.subject)

    @staticmethod
    def request_id() -> str:
        return f"chatcmpl-{uuid.uuid4().hex}"

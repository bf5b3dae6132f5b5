"""`agentflow step`: what runs inside a step pod.

One pod runs one attempt of one step::

    GET  $AGENTFLOW_CALLBACK_URL/v1/attempt          {"request", "manifests", "workflow"}, Bearer $AGENTFLOW_TOKEN
    run it with InProcessExecutor                      (the local runner's executor: same prompts, grants,
                                                        output validation and deadline)
    POST $AGENTFLOW_CALLBACK_URL/v1/attempt/result   the StepResult (StepResult.to_dict)

The attempt payload has the format of the local runner's subprocess executor, so it is read by the same
code (agentflow.executors.payload.load_payload). Model access comes from the environment
(agentflow.executors.access): with ``AGENTFLOW_GATEWAY_URL`` (set by an operator that serves the gateway)
every model call goes to the AgentFlow gateway with the attempt token as its API key, so the pod holds no
provider key and the gateway charges the attempt's budgets; a refused call fails the step with a
non-retryable ``BudgetExceeded``. Without it (an operator with no gateway), an in-process gateway over the
provider its environment selects; ``AGENTFLOW_MODEL_MODE=offline`` selects the offline model.
``TRACEPARENT`` (set by an operator that traces) is the attempt's span. With ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(set by an operator given ``--step-otlp-endpoint``) the pod exports spans of its own over OTLP/HTTP, as service
``agentflow-step``: ``run_step NODE`` (child of the attempt's span: fetching the attempt, running it, delivering
the result), under it an http tool's request (a CLIENT span named for its method) and, with no gateway service,
the in-process gateway's model calls. The step's gateway calls and HTTP tool calls carry the current span as their
``traceparent`` header. Prompts and completions are never recorded in a pod. A collector that cannot be reached
costs the pod at most ``TRACE_FLUSH_SECONDS`` at its end and never fails the step.

Exit status::

    0   the result was delivered (201 stored or 200 already stored), also when the step failed:
        the failure is in the result
    1   the result could not be delivered (callback server unreachable or refusing the token);
        the step may not have run
    2   bad configuration (a missing or malformed environment variable); nothing was fetched or run

Errors::

    ConfigError             an environment variable or flag is missing or malformed; exit 2
    client.CallbackError    the callback server could not be used; exit 1 (see agentflow.runtime.client)

Logs go to stderr, one JSON object per line (agentflow.runtime.logs), never holding the token, the
step's inputs or its output.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.trace import Span

from agentflow.audit.records import AuditSink
from agentflow.engine.values import StepError, StepRequest, StepResult
from agentflow.executors import InProcessExecutor, PayloadError, StepServices, load_payload
from agentflow.executors.access import check_environment, close_access, model_access
from agentflow.llm import TOKEN_ENV, TOKEN_FILE_ENV, TokenSource, litellm_prices, token_source
from agentflow.security import RunKeys, SecurityContext
from agentflow.telemetry import Tracing, attached, fail, from_env, genai
from agentflow.tools import ToolRunner

from .client import AiohttpTransport, CallbackClient, CallbackError, HttpAuditSink, RetryPolicy, Sleep, Transport
from .logs import JsonLog

CALLBACK_URL_ENV = "AGENTFLOW_CALLBACK_URL"
CA_FILE_ENV = "AGENTFLOW_CALLBACK_CA_FILE"

EXIT_DELIVERED, EXIT_UNDELIVERED, EXIT_CONFIG = 0, 1, 2

FETCH_PATIENCE_SECONDS = 120.0
"""How long a pod keeps asking for its attempt (an operator restarting, or not yet past recording the pod):
nothing ran yet, so giving up is safe, but it spends one of the step's tries."""
TRACE_FLUSH_SECONDS = 2.0
"""How long a pod waits at its end for its spans to reach the collector."""
STEP_SERVICE_NAME = "agentflow-step"
DELIVERY_MIN_SECONDS = 60.0
"""A result is retried at least this long, and without a deadline for this long."""


def delivery_deadline(deadline: float | None, now: float) -> float:
    """Until when the pod keeps delivering its result: the attempt's deadline (the pod is stopped there anyway),
    and at least DELIVERY_MIN_SECONDS. Giving up earlier would fail the pod, and the operator would run the step
    again: its tool calls and model calls twice."""
    floor = now + DELIVERY_MIN_SECONDS
    return floor if deadline is None else max(deadline, floor)


class ConfigError(Exception):
    """The pod's configuration is unusable; the message names the variable and what it should hold."""


@dataclasses.dataclass(frozen=True, slots=True)
class StepConfig:
    callback_url: str
    token: TokenSource = dataclasses.field(repr=False)
    ca_file: str | None = None


def read_config(env: Mapping[str, str], *, callback_url: str | None = None) -> StepConfig:
    """The callback server and token from ``env`` (``callback_url`` overrides the variable)."""
    url = (callback_url or env.get(CALLBACK_URL_ENV, "")).strip()
    if not url:
        raise ConfigError(
            f"{CALLBACK_URL_ENV} is not set; set it to the operator's callback server, e.g. "
            "http://agentflow-callback.agentflow-system.svc:8080 (the operator sets it on the step pods it creates)"
        )
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{CALLBACK_URL_ENV}={url!r} is not an http(s) URL with a host, e.g. http://HOST:PORT")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{CALLBACK_URL_ENV} must not hold credentials (user:password@); the token comes from {TOKEN_FILE_ENV}"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{CALLBACK_URL_ENV}={url!r} must have no ?query or #fragment; give the server's base URL")
    try:
        token = token_source(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if token is None:
        raise ConfigError(
            f"neither {TOKEN_FILE_ENV} nor {TOKEN_ENV} is set; a step pod authenticates with the service-account "
            f"token the operator has projected into it ({TOKEN_FILE_ENV}), and cannot run without one"
        )
    ca_file = env.get(CA_FILE_ENV, "").strip() or None
    if ca_file is not None and not os.path.isfile(ca_file):
        raise ConfigError(f"{CA_FILE_ENV}={ca_file!r} is not a readable file; mount the CA bundle there or unset it")
    return StepConfig(url, token, ca_file)


def _failed(type: str, message: str, retryable: bool) -> StepResult:
    return StepResult(error=StepError(type, message, retryable))


def encodable_result(result: StepResult) -> StepResult:
    """``result``, or a failed result when its output or calls hold NaN or infinity or text that is not UTF-8 (a
    lone surrogate): JSON cannot carry them.

    Values that are not JSON types are sent as their str(), like the subprocess executor does.
    """
    if _encodable(result):
        return result
    error = StepError(
        "InvalidOutput",
        "the step's output holds NaN or Infinity or text that is not UTF-8 (a lone surrogate), which JSON cannot "
        "carry; make the tool or prompt return finite numbers (or null) and valid text",
        False,
    )
    failed = StepResult(error=error, calls=tuple(dataclasses.replace(c, response=None) for c in result.calls))
    return failed if _encodable(failed) else StepResult(error=error)


def _encodable(result: StepResult) -> bool:
    try:  # as RuntimeClient.post_result encodes it
        json.dumps(result.to_dict(), ensure_ascii=False, default=str, allow_nan=False).encode("utf-8")
    except ValueError:  # UnicodeEncodeError too
        return False
    return True


async def _execute(payload: str, env: Mapping[str, str], log: JsonLog, *,
                   security: SecurityContext | None = None,
                   audit: AuditSink | None = None,
                   tracing: Tracing | None = None) -> tuple[StepResult, float | None]:
    """Run the attempt in ``payload``: its result and deadline; a payload that cannot be read becomes a failed
    StepResult."""
    try:
        loaded = load_payload(payload)
    except PayloadError as exc:
        log.error("attempt.invalid", f"the attempt from the callback server is unusable: {exc}")
        return _failed(
            "ExecutorError", f"agentflow step: the attempt from the callback server is unusable: {exc}", False
        ), None
    except Exception as exc:  # a bug in reading it must still end the attempt with a delivered result
        message = f"agentflow step: reading the attempt failed: {type(exc).__name__}: {exc}"
        log.error("attempt.invalid", message)
        return _failed("ExecutorError", message, True), None
    request: StepRequest = loaded[0]
    catalog, workflow = loaded[1], loaded[2]
    left = None if request.deadline is None else round(request.deadline - time.time(), 3)
    log.info(
        "step.started",
        f"running {request.kind} step {request.step!r} ({request.node}), attempt "
        f"{request.attempt} of run {request.run_id}",
        runId=request.run_id,
        node=request.node,
        step=request.step,
        kind=request.kind,
        attempt=request.attempt,
        deadlineInSeconds=left,
    )
    try:
        access = model_access(env, workflow, catalog, tracing=tracing)
    except ValueError as exc:
        log.error("config.invalid", str(exc))
        return _failed("ExecutorError", f"agentflow step: {exc}", False), request.deadline
    try:
        executor = InProcessExecutor(StepServices(catalog, workflow.spec, access, ToolRunner(tracing=tracing),
                                                  security or SecurityContext(), audit, prices=litellm_prices()))
        started = time.monotonic()
        result = encodable_result(await executor.execute(request))
    finally:
        await close_access(access)
    fields = {
        "runId": request.run_id,
        "node": request.node,
        "attempt": request.attempt,
        "durationSeconds": round(time.monotonic() - started, 3),
        "costUsd": result.cost_usd,
        "tokens": result.tokens,
        "calls": len(result.calls),
    }
    if result.error is None:
        log.info("step.succeeded", f"step {request.step!r} ({request.node}) succeeded", **fields)
    else:
        log.warning(
            "step.failed",
            f"step {request.step!r} ({request.node}) failed: {result.error.type}: {result.error.message}",
            errorType=result.error.type,
            retryable=result.error.retryable,
            **fields,
        )
    return result, request.deadline


async def run_step(
    callback_url: str,
    token: str | TokenSource,
    *,
    env: Mapping[str, str],
    http: Transport | None = None,
    retry: RetryPolicy | None = None,
    sleep: Sleep = asyncio.sleep,
    log: JsonLog | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Fetch the attempt, run it, deliver its result; the exit status (EXIT_*).

    ``http`` defaults to an AiohttpTransport (CA bundle from AGENTFLOW_CALLBACK_CA_FILE) closed on return;
    ``retry`` defaults to 6 tries over about 30 s, seeded by the pod's HOSTNAME, and beyond that the attempt is
    fetched for FETCH_PATIENCE_SECONDS and its result delivered until delivery_deadline; ``log`` defaults to
    JSON lines on stderr and always redacts ``token``.
    """
    source: TokenSource = token if callable(token) else (lambda: token)
    try:
        first = source()
    except ValueError as exc:
        (log or JsonLog(sys.stderr)).error("config.invalid", str(exc), exitCode=EXIT_CONFIG)
        return EXIT_CONFIG
    log = (log if log is not None else JsonLog(sys.stderr)).redacting(first)
    try:
        gateway = check_environment(env)
    except ValueError as exc:
        log.error("config.invalid", str(exc), exitCode=EXIT_CONFIG)
        return EXIT_CONFIG
    if retry is None:
        retry = RetryPolicy(seed=zlib.crc32(env.get("HOSTNAME", "").encode("utf-8")))
    owned: AiohttpTransport | None = None
    if http is None:
        http = owned = AiohttpTransport(ca_file=env.get(CA_FILE_ENV, "").strip() or None)
    client = CallbackClient(callback_url, source, http, retry=retry, sleep=sleep, log=log, clock=clock)
    tracing, warning = Tracing.for_child(env, STEP_SERVICE_NAME)
    if warning is not None:
        log.warning("tracing.invalid", warning)
    try:
        # TRACEPARENT: the attempt's span, the parent of this pod's span (and of its gateway and tool calls)
        with attached(from_env(env)), tracing.span(_span_name(env), _span_attributes(env)) as span:
            return await _attempt(client, callback_url, env, log, gateway=gateway, clock=clock, tracing=tracing,
                                  span=span)
    finally:
        tracing.shutdown(TRACE_FLUSH_SECONDS)
        if owned is not None:
            await owned.close()


def _span_name(env: Mapping[str, str]) -> str:
    node = env.get("AGENTFLOW_NODE", "").strip()
    return f"run_step {node}" if node else "run_step"


def _span_attributes(env: Mapping[str, str]) -> dict[str, Any]:
    attempt = env.get("AGENTFLOW_ATTEMPT", "").strip()
    return {genai.NODE: env.get("AGENTFLOW_NODE", "").strip() or None,
            genai.ATTEMPT: int(attempt) if attempt.isdigit() else None,
            "k8s.pod.name": env.get("HOSTNAME", "").strip() or None}


async def _attempt(client: CallbackClient, callback_url: str, env: Mapping[str, str], log: JsonLog, *,
                   gateway: bool, clock: Callable[[], float], tracing: Tracing, span: Span) -> int:
    """Fetch, run, deliver (see run_step); the exit status. ``span``: the pod's, told what happened."""
    server = urllib.parse.urlsplit(callback_url).netloc
    log.info(
        "attempt.fetching",
        f"fetching the attempt from {server}",
        callbackServer=server,
        modelAccess="gateway" if gateway else "in-process",
    )
    try:
        payload = await client.fetch_attempt(until=clock() + FETCH_PATIENCE_SECONDS)
    except CallbackError as exc:
        log.error("attempt.unavailable", f"{exc}; nothing ran", exitCode=EXIT_UNDELIVERED)
        fail(span, "AttemptUnavailable", str(exc))
        return EXIT_UNDELIVERED
    span.add_event("attempt fetched")
    try:
        security = SecurityContext(keys=RunKeys.from_env(env))
    except ValueError as exc:  # a malformed AGENTFLOW_PII_KEY: nothing may run without its redaction key
        log.error("config.invalid", str(exc), exitCode=EXIT_CONFIG)
        fail(span, "ConfigError", str(exc))
        return EXIT_CONFIG
    result, deadline = await _execute(payload, env, log, security=security, audit=HttpAuditSink(client),
                                      tracing=tracing)
    if result.error is not None:
        fail(span, result.error.type, result.error.message)
    span.add_event("step finished", {"ok": result.ok})
    try:
        status = await client.post_result(result.to_dict(), until=delivery_deadline(deadline, clock()))
    except CallbackError as exc:
        log.error(
            "result.undelivered",
            f"the step ran but its result was not delivered: {exc}",
            ok=result.ok,
            exitCode=EXIT_UNDELIVERED,
        )
        fail(span, "ResultUndelivered", str(exc))
        return EXIT_UNDELIVERED
    stored = "stored" if status == 201 else "already stored"
    span.add_event("result delivered", {"http.response.status_code": status})
    log.info(
        "result.delivered",
        f"result delivered ({status} {stored})",
        status=status,
        ok=result.ok,
        exitCode=EXIT_DELIVERED,
    )
    return EXIT_DELIVERED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentflow step",
        description="Run one step attempt inside a step pod: fetch it from the operator's callback server, run "
        "it, post the result. The token is read from $AGENTFLOW_TOKEN_FILE (or $AGENTFLOW_TOKEN), never a flag: "
        "flags are visible "
        "in the process list and the pod spec).",
        epilog="exit status: 0 result delivered (also when the step failed), 1 result not delivered, "
        "2 bad configuration",
    )
    parser.add_argument("--callback-url", help=f"the callback server's base URL (default: ${CALLBACK_URL_ENV})")
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """The `agentflow step` command; returns the exit status."""
    env = os.environ if env is None else env
    log = JsonLog(sys.stderr)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a bad flag (argparse has printed why)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    try:
        config = read_config(env, callback_url=args.callback_url)
    except ConfigError as exc:
        log.error("config.invalid", str(exc), exitCode=EXIT_CONFIG)
        return EXIT_CONFIG
    return asyncio.run(run_step(config.callback_url, config.token, env=env, log=log))


if __name__ == "__main__":
    raise SystemExit(main())

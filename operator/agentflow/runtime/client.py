"""The step pod's client of the operator's callback server, and the one HTTP seam.

Two layers, like httpx's transports::

    Transport          one HTTP exchange: ``request(method, url, headers, body, timeout) -> HttpResponse``;
                       AiohttpTransport is the real one, and the only code here that imports aiohttp
    CallbackClient     the calls a step pod makes, with bounded retries:
                         fetch_attempt()      GET  /v1/attempt         -> the attempt payload (JSON text)
                         post_result(body)    POST /v1/attempt/result  -> 201 stored / 200 already stored
                         post_audit(events)   POST /v1/attempt/audit   -> 201 appended / 200 auditing off
    HttpAuditSink      the AuditSink of a step pod's executor: its events reach the operator's audit chain
                       through post_audit (the server sets actor, namespace and subject from the token)

Errors::

    CallbackError               the callback server could not be used; str() says why and what to do
    ├── CallbackRefused         it answered 4xx (bad or expired token, unknown attempt, rejected result):
    │                           retrying the same request cannot help
    └── CallbackUnavailable     no answer, or 5xx/429, on every one of the bounded tries
    TransportError              one exchange failed before an HTTP status arrived (connection refused or
                                reset, DNS, TLS, timeout); CallbackClient retries it

The first two calls are safe to repeat: the attempt is read-only and the server stores a result once
(keyed by the attempt the token is scoped to), answering 200 to a repeat. Both take ``until`` (a wall-clock
time): they keep retrying until then, not just ``tries`` times, because a result that is not delivered makes
the pod fail and the operator run the step again, side effects included (an operator restarted a few times in
a row is away for longer than the tries last). Audit events are appended
at least once: a retry after a lost answer may append a batch twice (each copy in the chain).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import aiohttp

from agentflow.audit.records import AuditEvent
from agentflow.engine.backoff import retry_delay
from agentflow.models.workflow import Backoff

from .logs import JsonLog

ATTEMPT_PATH = "/v1/attempt"
RESULT_PATH = "/v1/attempt/result"
AUDIT_PATH = "/v1/attempt/audit"

Sleep = Callable[[float], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    retry_after: float | None = None
    """Seconds from a ``Retry-After`` header, when it holds a number."""

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def error_message(self) -> str:
        """The server's ``{"error": ...}``, else the start of the body."""
        try:
            data = json.loads(self.body)
        except ValueError:
            data = None
        if isinstance(data, Mapping) and data.get("error"):
            return str(data["error"])
        return self.text().strip()[:300] or "(empty body)"


class TransportError(Exception):
    """One HTTP exchange failed before a status arrived; worth retrying."""


class Transport(Protocol):
    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse: ...


class AiohttpTransport:
    """Transport over one aiohttp ClientSession, built lazily in the running loop; call close() when done.

    ``ca_file`` is a PEM bundle to verify an https callback server with (default: the system's).
    Environment proxies are ignored: the callback server is in-cluster.
    """

    def __init__(self, *, ca_file: str | None = None) -> None:
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_context = ssl.create_default_context(cafile=self._ca_file) if self._ca_file else None
            connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else aiohttp.TCPConnector()
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpResponse:
        try:
            async with self._client().request(
                method,
                url,
                headers=dict(headers),
                data=body,
                timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0)),
                allow_redirects=False,
            ) as response:
                return HttpResponse(
                    response.status, await response.read(), _seconds(response.headers.get("Retry-After"))
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # The message of an aiohttp error names the host and port, never the request's headers.
            raise TransportError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _seconds(header: str | None) -> float | None:
    try:
        value = float(header) if header is not None else None
    except ValueError:  # an HTTP date: rare from an in-cluster server; the backoff applies
        return None
    return value if value is not None and value >= 0 else None


class CallbackError(Exception):
    """The callback server could not be used; the message says why and what to do."""


class CallbackRefused(CallbackError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class CallbackUnavailable(CallbackError):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff: ``tries`` requests, delays 1, 2, 4, 8, 15 s (+/- jitter) by default.

    Delays come from the engine's retry_delay with deterministic jitter from ``seed``, so pods
    started together (different seeds) spread their retries apart.
    """

    tries: int = 6
    backoff: Backoff = dataclasses.field(
        default_factory=lambda: Backoff(initial_seconds=1.0, factor=2.0, max_seconds=15.0, jitter=0.2)
    )
    request_timeout: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tries < 1:
            raise ValueError(f"RetryPolicy.tries must be at least 1, got {self.tries}")
        if self.request_timeout <= 0:
            raise ValueError(f"RetryPolicy.request_timeout must be positive, got {self.request_timeout}")

    def delay(self, failed_try: int, what: str, retry_after: float | None = None) -> float:
        """Seconds before the next try; a server's Retry-After lengthens it, up to the backoff's cap."""
        delay = retry_delay(self.backoff, failed_try, self.seed, what)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff.max_seconds))
        return delay


def _retryable_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


_REFUSED_HINTS = {
    401: "the token was refused: it is scoped to one attempt and short-lived, so it may have expired or belong "
    "to another attempt; the operator starts a new attempt with a new token",
    403: "the token does not allow this call; check that the pod got the token of its own attempt",
    404: "the callback server does not know this attempt (it may have been cancelled or cleaned up) or "
    "AGENTFLOW_CALLBACK_URL points at the wrong server",
    409: "the server already holds a different result for this attempt; nothing to do",
    413: "the server refused the body as too large; raise the callback server's body limit",
}


class CallbackClient:
    """GET the attempt and POST its result, retrying connection errors, 5xx, 408 and 429 with backoff."""

    def __init__(
        self,
        base_url: str,
        token: str | Callable[[], str],
        transport: Transport,
        *,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        log: JsonLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._token: Callable[[], str] = token if callable(token) else (lambda: token)
        self._transport = transport
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._log = log or JsonLog(None)

    async def fetch_attempt(self, *, until: float | None = None) -> str:
        """The attempt payload: JSON text ``{"request", "manifests", "workflow"}``; retried until ``until``."""
        response = await self._send("GET", ATTEMPT_PATH, None, "fetching the attempt", until=until)
        if response.status != 200:
            raise CallbackRefused(
                f"GET {ATTEMPT_PATH} answered {response.status} (expected 200): {response.error_message()}",
                response.status,
            )
        return response.text()

    async def post_result(self, result: Mapping[str, Any], *, until: float | None = None) -> int:
        """POST the StepResult dict; 201 (stored) or 200 (already stored); retried until ``until``.

        ValueError if ``result`` holds NaN or infinity, which JSON cannot carry (see step.encodable_result).
        """
        body = json.dumps(result, ensure_ascii=False, default=str, allow_nan=False).encode("utf-8")
        response = await self._send("POST", RESULT_PATH, body, "posting the result", until=until)
        if response.status not in (200, 201):
            raise CallbackRefused(
                f"POST {RESULT_PATH} answered {response.status} (expected 201 or 200): {response.error_message()}",
                response.status,
            )
        return response.status

    async def post_audit(self, events: Sequence[Mapping[str, Any]]) -> int:
        """POST audit events ``{kind, decision, at, data}``; 201 (appended) or 200 (auditing is off)."""
        body = json.dumps({"events": list(events)}, ensure_ascii=False, allow_nan=False).encode("utf-8")
        response = await self._send("POST", AUDIT_PATH, body, "posting audit events")
        if response.status not in (200, 201):
            raise CallbackRefused(
                f"POST {AUDIT_PATH} answered {response.status} (expected 201 or 200): {response.error_message()}",
                response.status,
            )
        return response.status

    async def _send(self, method: str, path: str, body: bytes | None, doing: str, *,
                    until: float | None = None) -> HttpResponse:
        """One request, retried: ``tries`` times, and beyond that while the next try would start before
        ``until``."""
        url = self._base + path
        try:
            headers = {"Authorization": f"Bearer {self._token()}"}
        except ValueError as exc:  # the token file went missing
            raise CallbackRefused(f"{method} {path}: {exc}", 401) from None
        headers["Accept"] = "application/json"
        if body is not None:
            headers["Content-Type"] = "application/json"
        what = f"{method} {path}"
        tries = self._retry.tries
        last = ""
        retry_after: float | None = None
        n = 0
        while True:
            n += 1
            retry_after = None
            try:
                response = await self._transport.request(
                    method, url, headers=headers, body=body, timeout=self._retry.request_timeout
                )
            except TransportError as exc:
                last = f"no answer ({exc})"
            else:
                if not _retryable_status(response.status):
                    if 400 <= response.status < 500:
                        raise CallbackRefused(self._refused(what, response, doing), response.status)
                    return response
                last = f"{response.status}: {response.error_message()}"
                retry_after = response.retry_after
            delay = self._retry.delay(n, what, retry_after)
            if n >= tries and (until is None or self._clock() + delay >= until):
                break
            left = f"of {tries}" if n < tries or until is None else f"(retried {until - self._clock():.0f}s more)"
            self._log.warning(
                "callback.retry",
                f"{what} failed ({last}); try {n + 1} {left} in {delay:.1f}s",
                request=what,
                tryNumber=n,
                delaySeconds=round(delay, 3),
            )
            await self._sleep(delay)
        raise CallbackUnavailable(
            f"{doing} failed: {what} at {url} got no usable answer in {n} tries (last: {last}); check that "
            "the operator's callback server is running and that the pod's NetworkPolicy lets it reach "
            "AGENTFLOW_CALLBACK_URL"
        )

    @staticmethod
    def _refused(what: str, response: HttpResponse, doing: str) -> str:
        hint = _REFUSED_HINTS.get(response.status, "the server refused the request; retrying cannot help")
        return f"{doing} failed: {what} answered {response.status}: {response.error_message()} ({hint})"


class HttpAuditSink:
    """An AuditSink for a step pod: appends through the operator's callback server, ``batch`` events a request.

    Only ``kind``, ``decision``, ``at`` and ``data`` of each event are sent: the server sets the actor
    ("step-pod"), the namespace and the subject (NS/WORKFLOW/NODE#ATTEMPT) from the pod's token, and
    accepts the kinds redaction, injection and policy_decision. Raises CallbackError when the server
    refuses the events (400 names the field) or cannot be reached after the client's retries.
    """

    def __init__(self, client: CallbackClient, *, batch: int = 500) -> None:
        if batch < 1:
            raise ValueError(f"HttpAuditSink batch must be at least 1, got {batch}")
        self._client = client
        self._batch = batch

    async def append(self, events: Sequence[AuditEvent]) -> None:
        wire = [{"kind": e.kind, "decision": e.decision, "at": e.at, "data": dict(e.data)} for e in events]
        for start in range(0, len(wire), self._batch):
            await self._client.post_audit(wire[start : start + self._batch])

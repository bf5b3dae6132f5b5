"""The HTTP endpoint step pods talk to: fetch the attempt to run, post its result.

Step pods hold no credentials in their Pod object and no Kubernetes access: each sends the service-account
token projected into it, which the injected ``authenticate`` maps to its one attempt
(:mod:`agentflow.callback.identity`; on a cluster agentflow.services.identity.PodIdentity), and the URL of
this server::

    GET  /healthz                  200 {"ok": true}
    GET  /v1/attempt               Bearer token -> 200 the stored attempt payload (404 if none is stored)
    POST /v1/attempt/result        Bearer token, body: the step result JSON {output, error, calls}
                                   -> 201 stored now, 200 already stored (the first result wins; posting
                                   again is safe), then on_result(claims) is called either way; with an
                                   audit sink, a tool_call event per tool call in it is appended first
    POST /v1/attempt/audit         Bearer token, body {"events": [{kind, decision, at, data}, ...]}
                                   -> 201 {"appended": N}: the pod's audit events (redaction, injection,
                                   policy_decision), chained with actor "step-pod", the namespace and the
                                   subject NS/WORKFLOW/NODE#ATTEMPT taken from the token (a pod cannot
                                   speak for another) and the server's time (the pod's is kept as data.podAt);
                                   at most ``max_events_per_attempt`` per attempt (429 past it); 200
                                   {"appended": 0} when auditing is off

A token is refused once its attempt has ended (its result is stored), except that re-posting the result
answers 200 (already stored), so a pod whose first answer was lost still exits cleanly.

Every error is JSON ``{"error": "..."}`` and never a traceback: 400 bad body (naming the field),
401 missing / bad / expired / revoked token, 404 no such attempt or route, 413 body over ``max_body_bytes``
(``max_audit_body_bytes`` for audit events; read as a stream, never buffered past the limit),
422 a value storage refuses, 503 storage unavailable (with Retry-After: the pod should retry),
500 anything else (details in the log).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import orjson
from aiohttp import web

from ..audit.events import AuditEventError, pod_event_from_dict, rfc3339
from ..audit.records import AuditEvent, AuditSink
from ..engine.canonical import canonical_json
from ..engine.values import CallRecord, StepResult
from ..listener import Listener
from ..security.identity import AttemptEnded, Authenticate, AuthError
from ..security.tokens import AttemptClaims
from ..storage import InvalidValue, StorageError, StorageUnavailable

__all__ = ["AttemptStore", "CallbackServer", "ResultShapeError", "parse_step_result"]

log = logging.getLogger(__name__)

OnResult = Callable[[AttemptClaims], Awaitable[None] | None]
Clock = Callable[[], float]

RETRY_AFTER_SECONDS = 5
POD_AUDIT_KINDS = ("redaction", "injection", "policy_decision")
"""What a step pod may report itself; model calls come from the gateway, tool calls from its result,
approvals from the operator."""
POD_ACTOR = "step-pod"
_T = TypeVar("_T")


class AttemptStore(Protocol):
    """What the server needs of storage (PostgresStore has it)."""

    async def get_attempt(self, run_uid: str, node: str, attempt: int) -> dict[str, Any] | None: ...

    async def put_result(self, run_uid: str, node: str, attempt: int, result: Mapping[str, Any]) -> bool: ...

    async def has_result(self, run_uid: str, node: str, attempt: int) -> bool: ...


# --------------------------------------------------------------------------- the result body


class ResultShapeError(ValueError):
    """A posted result does not have the shape of a step result; ``field`` is its JSON path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r}: {problem}")
        self.field = field


_RESULT_FIELDS = frozenset({"output", "error", "calls"})
_ERROR_FIELDS = {"type": str, "message": str, "retryable": bool}
_CALL_FIELDS = {f.name: f for f in dataclasses.fields(CallRecord)}


def _check_call_field(path: str, annotation: object, value: Any) -> None:
    """The check of a call's field by its annotation (CallRecord's, as strings); a field of another type is refused,
    so a field added to CallRecord without a check here is never taken unchecked from a pod."""
    if annotation not in ("str", "bool", "int", "float", "int | None", "Any"):
        raise ResultShapeError(path, "this field cannot be posted")
    if annotation == "int | None":
        if value is None:
            return
        annotation = "int"
    if annotation == "str" and not isinstance(value, str):
        raise ResultShapeError(path, f"must be a string, got {type(value).__name__}")
    if annotation == "bool" and not isinstance(value, bool):
        raise ResultShapeError(path, f"must be true or false, got {type(value).__name__}")
    if annotation == "int" and (type(value) is not int or value < 0):
        raise ResultShapeError(path, f"must be a non-negative integer, got {value!r}")
    if annotation == "float" and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0
    ):
        raise ResultShapeError(path, f"must be a non-negative number, got {value!r}")


def parse_step_result(body: Any) -> StepResult:
    """The StepResult a posted body describes; ResultShapeError naming the first bad field."""
    if not isinstance(body, dict):
        raise ResultShapeError("$", f"the body must be a JSON object, got {type(body).__name__}")
    extra = sorted(body.keys() - _RESULT_FIELDS)
    if extra:
        raise ResultShapeError(extra[0], "unexpected field; a step result has output, error and calls")
    if "output" not in body and "error" not in body:
        raise ResultShapeError("output", "missing: a step result has an output (success) or an error (failure)")
    error = body.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise ResultShapeError("error", f"must be an object {{type, message, retryable}} or null, got {error!r}")
        for name, kind in _ERROR_FIELDS.items():
            if name in error and not isinstance(error[name], kind):
                raise ResultShapeError(f"error.{name}", f"must be a {kind.__name__}, got {error[name]!r}")
        for name in ("type", "message"):
            if name not in error:
                raise ResultShapeError(f"error.{name}", "missing")
        unknown = sorted(error.keys() - _ERROR_FIELDS.keys())
        if unknown:
            raise ResultShapeError(f"error.{unknown[0]}", "unexpected field")
    calls = body.get("calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise ResultShapeError("calls", f"must be a list, got {type(calls).__name__}")
        for i, call in enumerate(calls):
            if not isinstance(call, dict):
                raise ResultShapeError(f"calls[{i}]", f"must be an object, got {type(call).__name__}")
            for name, value in call.items():
                if name not in _CALL_FIELDS:
                    raise ResultShapeError(f"calls[{i}].{name}", "unexpected field")
                _check_call_field(f"calls[{i}].{name}", _CALL_FIELDS[name].type, value)
            for name, f in _CALL_FIELDS.items():
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in call:
                    raise ResultShapeError(f"calls[{i}].{name}", "missing")
    try:
        return StepResult.from_dict(body)
    except (KeyError, TypeError, ValueError) as e:  # the checks above should have caught it
        raise ResultShapeError("$", f"not a step result: {type(e).__name__}: {e}") from None


# --------------------------------------------------------------------------- HTTP


class _ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    """Every error as {"error": ...}; an unexpected exception is logged, never shown."""
    try:
        return await handler(request)
    except _ApiError as e:
        return _json(e.status, {"error": e.message}, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _json(e.status, {"error": f"{e.reason}: {request.method} {request.path}"})
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("callback server: %s %s failed", request.method, request.path)
        return _json(500, {"error": "internal error in the callback server; the operator log has the details"})


MAX_RESULT_BYTES = 16 * 2**20
"""The largest result body accepted: a step output is journaled and read back into later steps' prompts, so
anything near this is already far past what a model can take; PostgreSQL's json would take 1 GiB."""


class CallbackServer:
    """Serves attempts to step pods and stores their results. Build it with a store and an authenticator."""

    def __init__(
        self,
        store: AttemptStore,
        authenticate: Authenticate,
        *,
        on_result: OnResult | None = None,
        clock: Clock = time.time,
        max_body_bytes: int = MAX_RESULT_BYTES,
        audit: AuditSink | None = None,
        max_audit_body_bytes: int = 2**20,
        max_audit_events: int = 500,
        max_events_per_attempt: int = 2000,
    ) -> None:
        """``audit``: where tool calls of posted results and the pods' own audit events go (None: off)."""
        self._store = store
        self._authenticate = authenticate
        self._on_result = on_result
        self._clock = clock
        self._max_body = max_body_bytes
        self._audit = audit
        self._max_audit_body = max_audit_body_bytes
        self._max_audit_events = max_audit_events
        self._max_per_attempt = max_events_per_attempt
        self._events_seen: collections.OrderedDict[tuple[str, str, int], int] = collections.OrderedDict()
        self.app = web.Application(middlewares=[_json_errors], client_max_size=max_body_bytes)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/v1/attempt", self._get_attempt)
        self.app.router.add_post("/v1/attempt/result", self._post_result)
        self.app.router.add_post("/v1/attempt/audit", self._post_audit)
        self._listener = Listener(self.app, "the callback server")

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0 picks a free one: read ``.port``)."""
        await self._listener.start(host, port)

    @property
    def port(self) -> int:
        """The port it listens on (after start)."""
        return self._listener.port

    async def stop(self) -> None:
        """Stop listening and finish in-flight requests. Safe to call twice."""
        await self._listener.stop()

    # ----------------------------------------------------------------------- handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"ok": True})

    async def _claims(self, request: web.Request, *, ended_ok: bool = False) -> AttemptClaims:
        return (await self._claims_and_end(request, ended_ok=ended_ok))[0]

    async def _claims_and_end(self, request: web.Request, *, ended_ok: bool) -> tuple[AttemptClaims, bool]:
        """The token's claims, and whether its attempt has ended (only with ``ended_ok``; else that is a 401)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="agentflow"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise _ApiError(401, "missing token: send the attempt's token as 'Authorization: Bearer TOKEN'", challenge)
        try:
            return await self._authenticate(token.strip()), False
        except AttemptEnded as e:
            if ended_ok:
                return e.claims, True
            raise _ApiError(401, str(e), {"WWW-Authenticate": 'Bearer realm="agentflow", error="invalid_token"'}) \
                from None
        except AuthError as e:
            if e.retry_after is not None:
                raise _ApiError(503, str(e), {"Retry-After": str(max(1, round(e.retry_after)))}) from None
            invalid = {"WWW-Authenticate": 'Bearer realm="agentflow", error="invalid_token"'}
            raise _ApiError(401, str(e), invalid) from None

    async def _get_attempt(self, request: web.Request) -> web.Response:
        claims = await self._claims(request)
        payload = await self._storage(self._store.get_attempt(claims.run_uid, claims.node, claims.attempt))
        if payload is None:
            raise _ApiError(404, f"no attempt stored for {claims.describe()}; the operator stores it before the pod")
        return _json(200, payload)

    async def _post_result(self, request: web.Request) -> web.Response:
        claims, ended = await self._claims_and_end(request, ended_ok=True)
        body = await self._read_body(request)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise _ApiError(400, f"the body is not JSON: {e}") from None
        try:
            result = parse_step_result(document)
        except ResultShapeError as e:
            raise _ApiError(400, f"the body is not a step result: {e}") from None
        if ended and await self._storage(self._store.has_result(claims.run_uid, claims.node, claims.attempt)):
            # the pod's own retry of a stored result, or a token used past its attempt: nothing more is audited
            return _json(200, {"stored": False,
                               "message": f"result already stored (the first result wins) for {claims.describe()}"})
        # Audited before the result is stored: a failure here (503) makes the pod post again, so a tool
        # call is audited at least once (twice only if the pod re-posts a result that was stored).
        tool_events = self._tool_events(claims, result)
        if tool_events and self._audit is not None:
            await self._storage(self._audit.append(tool_events))
        stored = await self._storage(
            self._store.put_result(claims.run_uid, claims.node, claims.attempt, result.to_dict())
        )
        await self._notify(claims)
        state = "stored" if stored else "already stored (the first result wins)"
        return _json(201 if stored else 200, {"stored": stored, "message": f"result {state} for {claims.describe()}"})

    async def _post_audit(self, request: web.Request) -> web.Response:
        claims = await self._claims(request)
        body = await self._read_body(
            request,
            self._max_audit_body,
            f"the audit events are larger than this server accepts ({self._max_audit_body} bytes); "
            "send fewer per request",
        )
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise _ApiError(400, f"the body is not JSON: {e}") from None
        try:
            events = self._pod_events(claims, document)
        except AuditEventError as e:
            raise _ApiError(400, f"the body is not a list of audit events: {e}") from None
        if self._audit is None:
            return _json(200, {"appended": 0, "message": "auditing is off on this operator; events dropped"})
        key = (claims.run_uid, claims.node, claims.attempt)
        seen = self._events_seen.get(key, 0)
        if seen + len(events) > self._max_per_attempt:
            raise _ApiError(429, f"{claims.describe()} has sent {seen} audit events; at most "
                            f"{self._max_per_attempt} per attempt are accepted")
        self._events_seen[key] = seen + len(events)
        self._events_seen.move_to_end(key)
        while len(self._events_seen) > 10_000:
            self._events_seen.popitem(last=False)
        if events:
            await self._storage(self._audit.append(events))
        return _json(201, {"appended": len(events), "message": f"{len(events)} event(s) audited for "
                           f"{claims.describe()}"})

    @staticmethod
    def subject(claims: AttemptClaims) -> str:
        """The audit subject of an attempt: ``NS/WORKFLOW/NODE#ATTEMPT``."""
        return f"{claims.namespace}/{claims.workflow}/{claims.node}#{claims.attempt}"

    def _pod_events(self, claims: AttemptClaims, document: Any) -> list[AuditEvent]:
        if not isinstance(document, dict):
            raise AuditEventError("$", f"the body must be a JSON object {{events}}, got {type(document).__name__}")
        extra = sorted(document.keys() - {"events"})
        if extra:
            raise AuditEventError(extra[0], "unexpected field; the body is {\"events\": [...]}")
        raw = document.get("events")
        if not isinstance(raw, list):
            raise AuditEventError("events", f"must be a list, got {type(raw).__name__}")
        if len(raw) > self._max_audit_events:
            raise AuditEventError(
                "events", f"holds {len(raw)} events; at most {self._max_audit_events} per request"
            )
        subject, now = self.subject(claims), rfc3339(self._clock())
        events = []
        for i, item in enumerate(raw):
            event = pod_event_from_dict(item, f"events[{i}]", actor=POD_ACTOR, namespace=claims.namespace,
                                        subject=subject, kinds=POD_AUDIT_KINDS)
            # The chain's time is the server's: a pod cannot back-date what it reports.
            events.append(dataclasses.replace(event, at=now, data={**event.data, "podAt": event.at}))
        return events

    def _tool_events(self, claims: AttemptClaims, result: StepResult) -> list[AuditEvent]:
        """A tool_call event per tool call of a result: what ran, never what it returned (only its hash)."""
        calls = [c for c in result.calls if c.kind == "tool"]
        if not calls or self._audit is None:
            return []
        at, subject = rfc3339(self._clock()), self.subject(claims)
        events = []
        for call in calls:
            try:
                response_hash: str | None = hashlib.sha256(canonical_json(call.response)).hexdigest()
            except (TypeError, ValueError):
                response_hash = None
            data = {"tool": call.name, "requestHash": call.request_hash, "responseHash": response_hash,
                    "latencyMs": call.latency_ms, "cached": call.cached, "runUid": claims.run_uid,
                    "stepFailed": result.error is not None}
            events.append(AuditEvent("tool_call", POD_ACTOR, claims.namespace, subject, "ok", at, data))
        return events

    async def _read_body(self, request: web.Request, limit: int | None = None, too_large: str | None = None) -> bytes:
        limit = self._max_body if limit is None else limit
        too_large = too_large or (
            f"the result is larger than this server accepts ({limit} bytes); return a smaller output"
        )
        if request.content_length is not None and request.content_length > limit:
            raise _ApiError(413, too_large)
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise _ApiError(413, too_large)
        return bytes(body)

    async def _storage(self, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except StorageUnavailable as e:
            raise _ApiError(503, f"{e}", {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        except InvalidValue as e:
            raise _ApiError(422, str(e)) from None
        except StorageError as e:
            log.error("callback server: storage failed: %s", e)
            raise _ApiError(500, f"storage failed: {e}") from None

    async def _notify(self, claims: AttemptClaims) -> None:
        if self._on_result is None:
            return
        try:
            outcome = self._on_result(claims)
            if inspect.isawaitable(outcome):
                await outcome
        except asyncio.CancelledError:
            raise
        except Exception:  # the result is stored; the reconciler finds it on its next pass anyway
            log.exception("callback server: on_result failed for %s", claims.describe())

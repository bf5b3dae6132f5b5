"""The trigger server: ``POST /v1/triggers/NAMESPACE/NAME`` starts a run of a WorkflowTrigger's template.

Served by the operator on a port of its own (``--trigger-listen``, off by default; the chart's ``triggers.*``).
One delivery, in this order::

    body read as a stream, at most max_body_bytes, within body_seconds              413, 408
    the headers: a field sent twice is read as its lines joined with ", "          (RFC 9110 5.3)
    the trigger read (its namespace must be one the operator watches)                401 (as a bad signature)
    its Secret read in the trigger's namespace, labelled agentflow.dev/trigger       401 (the reason on its status)
    auth verified on the raw bytes, in constant time (agentflow.triggers.auth)      401 (the reason in the log)
    spec.suspend                                                                     503
    body parsed: JSON, or application/x-www-form-urlencoded fields                  400
    delivery id, when, inputs evaluated (agentflow.validation.triggers)              400 naming the field
    when false                                                                       202 {"started": false}
    inputs checked against the template's inputSchema                                422 naming the input
    the Workflow NAME-HASH(delivery id) created                                     201 {"workflow", "started"}
    ... it exists already (a replay, a retry)                                        200 {"started": false,
                                                                                         "duplicate": true}

Tenant-first: an unknown trigger, an event trigger (spec.events), a namespace the operator does not serve, a
missing or unlabelled Secret and a bad signature all answer the same 401, so a caller without the key learns
nothing about what exists. Once authenticated, the caller holds the trigger's key and is told exactly what is
wrong. At most ``max_in_flight`` deliveries are handled at once (429 with Retry-After past it), and triggers and
Secrets are read through a short cache (``cache_seconds``), so a flood of unauthenticated posts costs the API
server little. A body is read before a delivery takes its place among those in flight, by at most
``4 * max_in_flight`` readers at once, each within ``body_seconds`` (408 past it): clients that open connections
and send nothing more (slowloris) hold no delivery's place, and lose theirs among the readers after seconds.

The signature and the mapping read the same headers: a field sent twice is joined into one value, so a captured
Standard Webhooks request with a second webhook-id added fails its signature instead of starting a run under the
added id.

Every error is JSON ``{"error": "..."}``; 503 with Retry-After when the API server cannot be reached. The
trigger's status (path, lastDelivery, message) is written after each authenticated delivery, best effort.
"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from ..k8s.kube import Kube, KubeError, NotFound
from ..k8s.trigger import secret_problem
from ..listener import Listener
from ..models import ManifestError, WorkflowTrigger, parse_resource
from ..validation.triggers import MappingError, TriggerSpecError, compile_trigger
from .auth import Unauthenticated, verify
from .runs import RETRY_AFTER_SECONDS, TRIGGERS, Refused, TriggerRuns, unavailable

__all__ = ["MAX_DELIVERY_BYTES", "TriggerServer"]

log = logging.getLogger("agentflow.triggers")

MAX_DELIVERY_BYTES = 2**20
BODY_SECONDS = 10.0
"""How long a client has to send its whole body (408 past it)."""
"""The largest body accepted (GitHub caps webhook payloads at 25 MiB, but its large ones are pushes of many
commits a run would not read; Slack's are a few KiB)."""
NOT_AUTHENTICATED = "not authenticated: sign the body with the trigger's key (see its spec.auth)"
Clock = Callable[[], float]
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    try:
        return await handler(request)
    except Refused as e:
        return _json(e.status, {"error": e.message}, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _json(e.status, {"error": f"{e.reason}: {request.method} {request.path}"})
    except asyncio.CancelledError:
        raise
    except ConnectionError as e:  # the client hung up: nobody to answer
        log.debug("trigger server: %s %s: the client went away: %s", request.method, request.path, e)
        return _json(400, {"error": "the connection was lost before the delivery was read"})
    except Exception:
        log.exception("trigger server: %s %s failed", request.method, request.path)
        return _json(500, {"error": "internal error in the trigger server; the operator log has the details"})


def joined_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request's header fields by lower-case name, a field sent on several lines joined with ", " (RFC 9110
    5.3): what the signature check and the trigger's expressions both read, so they cannot read different lines."""
    lines: dict[str, list[str]] = {}
    for key, value in headers.items():
        lines.setdefault(key.lower(), []).append(value)
    return {key: ", ".join(values) for key, values in lines.items()}


def _unauthenticated() -> Refused:
    return Refused(401, NOT_AUTHENTICATED)


class _Cache:
    """A few seconds of memory of what the API server answered (a body, or the KubeError it raised)."""

    def __init__(self, seconds: float, clock: Clock, size: int = 1024) -> None:
        self._seconds, self._clock, self._size = seconds, clock, size
        self._items: collections.OrderedDict[tuple[str, ...], tuple[float, dict[str, Any] | KubeError]] = \
            collections.OrderedDict()

    async def get(self, key: tuple[str, ...], load: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        hit = self._items.get(key)
        if hit is None or hit[0] <= self._clock():
            try:
                value: dict[str, Any] | KubeError = await load()
            except NotFound as exc:  # remembered: unknown names cost one read per cache period
                value = exc
            except KubeError:
                raise  # not remembered: the next delivery tries again
            hit = (self._clock() + self._seconds, value)
            self._items[key] = hit
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        if isinstance(hit[1], KubeError):
            raise hit[1]
        return hit[1]


class TriggerServer:
    """Starts runs for authenticated deliveries. Build it with the operator's Kubernetes client."""

    def __init__(self, kube: Kube, *, namespaces: Sequence[str] = (), clock: Clock = time.time,
                 max_body_bytes: int = MAX_DELIVERY_BYTES, max_in_flight: int = 64,
                 cache_seconds: float = 5.0, body_seconds: float = BODY_SECONDS) -> None:
        """``namespaces``: the ones the operator watches (names or globs, as --namespace; empty: all)."""
        self._kube = kube
        self._namespaces = tuple(namespaces)
        self._clock = clock
        self._runs = TriggerRuns(kube, clock)
        self._max_body = max_body_bytes
        self._slots = asyncio.Semaphore(max_in_flight)
        self._readers = asyncio.Semaphore(4 * max_in_flight)
        self._body_seconds = body_seconds
        self._cache = _Cache(cache_seconds, time.monotonic)
        self._reported: dict[tuple[str, str], str] = {}
        """The configuration problem last written on each trigger's status."""
        self.app = web.Application(middlewares=[_json_errors], client_max_size=max_body_bytes)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_post("/v1/triggers/{namespace}/{name}", self._deliver)
        self._listener = Listener(self.app, "the trigger server")

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

    async def _deliver(self, request: web.Request) -> web.Response:
        busy = Refused(429, "too many deliveries in flight; try again shortly",
                       {"Retry-After": str(RETRY_AFTER_SECONDS)})
        if self._readers.locked():
            raise busy
        async with self._readers:
            raw = await self._read_body(request)
        if self._slots.locked():
            raise busy
        async with self._slots:
            return await self._handle(request, raw, request.match_info["namespace"], request.match_info["name"])

    async def _handle(self, request: web.Request, raw: bytes, namespace: str, name: str) -> web.Response:
        headers = joined_headers(request.headers)
        trigger = await self._trigger(namespace, name)
        key = await self._key(namespace, trigger)
        auth = trigger.spec.auth
        assert auth is not None  # _trigger: an HTTP trigger
        try:
            verify(auth, key, raw, headers, self._clock())
        except Unauthenticated as exc:
            log.info("trigger %s/%s: delivery refused: %s", namespace, name, exc)
            raise _unauthenticated() from None
        if trigger.spec.suspend:
            raise Refused(503, f"WorkflowTrigger {namespace}/{name} is suspended (spec.suspend)")
        document = _parse_body(raw, request.content_type)
        try:
            delivery = compile_trigger(trigger.spec).deliver(document, headers)
        except TriggerSpecError as exc:
            raise Refused(400, f"WorkflowTrigger {namespace}/{name} {exc}") from None
        except MappingError as exc:
            if exc.delivery_id is not None:
                await self._status(namespace, trigger, exc.delivery_id, "Refused", message=str(exc))
            raise Refused(400, f"the delivery does not map onto WorkflowTrigger {namespace}/{name}: {exc}") \
                from None
        if not delivery.accepted or delivery.inputs is None:
            await self._status(namespace, trigger, delivery.id, "Filtered")
            return _json(202, {"started": False, "deliveryId": delivery.id,
                               "message": "spec.when is false for this delivery; no run started"})
        run = await self._runs.start(namespace, trigger, delivery)
        if run.started:
            return _json(201, {"started": True, "workflow": run.workflow, "deliveryId": delivery.id})
        return _json(200, {"started": False, "duplicate": True, "workflow": run.workflow, "deliveryId": delivery.id,
                           "message": "this delivery already started this run"})

    # ----------------------------------------------------------------------- reading

    async def _read_body(self, request: web.Request) -> bytes:
        too_large = f"the body is larger than this server accepts ({self._max_body} bytes)"
        if request.content_length is not None and request.content_length > self._max_body:
            raise Refused(413, too_large)
        body = bytearray()
        try:
            async with asyncio.timeout(self._body_seconds):
                async for chunk in request.content.iter_any():
                    body += chunk
                    if len(body) > self._max_body:
                        raise Refused(413, too_large)
        except TimeoutError:
            raise Refused(408, f"the body did not arrive within {self._body_seconds:g} seconds") from None
        return bytes(body)

    def _served(self, namespace: str) -> bool:
        return not self._namespaces or any(fnmatch.fnmatchcase(namespace, p) for p in self._namespaces)

    async def _trigger(self, namespace: str, name: str) -> WorkflowTrigger:
        """The trigger, or the 401 every other failure to authenticate gets (it may not exist; it may be in a
        namespace this operator does not serve, or be invalid: the log says which)."""
        if not (_NAMESPACE.fullmatch(namespace) and _NAME.fullmatch(name)):
            log.info("trigger %r/%r: refused: not a namespace and a resource name", namespace[:80], name[:80])
            raise _unauthenticated()
        if not self._served(namespace):
            log.info("trigger %s/%s: refused: the operator does not watch namespace %s", namespace, name, namespace)
            raise _unauthenticated()
        try:
            body = await self._cache.get(("t", namespace, name),
                                         lambda: self._kube.get_resource(TRIGGERS, namespace, name))
        except KubeError as exc:
            if exc.retryable:
                raise self._unavailable(exc) from None
            log.info("trigger %s/%s: refused: %s", namespace, name,
                     "no such WorkflowTrigger" if isinstance(exc, NotFound) else exc)  # RBAC: not served here
            raise _unauthenticated() from None
        try:
            trigger = parse_resource(body)
        except ManifestError as exc:
            log.warning("trigger %s/%s: refused: the WorkflowTrigger is invalid: %s", namespace, name, exc)
            raise _unauthenticated() from None
        assert isinstance(trigger, WorkflowTrigger)
        if trigger.spec.auth is None:
            log.info("trigger %s/%s: refused: an event trigger takes no HTTP deliveries (no spec.auth)", namespace,
                     name)
            raise _unauthenticated()
        return trigger

    async def _key(self, namespace: str, trigger: WorkflowTrigger) -> bytes:
        """The trigger's key, from a Secret of its own namespace only (a reference names no namespace)."""
        assert trigger.spec.auth is not None  # _trigger: an HTTP trigger
        ref = trigger.spec.auth.secret_ref
        try:
            secret = await self._cache.get(("s", namespace, ref.name),
                                           lambda: self._kube.read_secret(namespace, ref.name))
            problem = secret_problem(secret, namespace, ref.name, ref.key)
        except NotFound:
            problem = f"Secret {namespace}/{ref.name} does not exist"
            secret = {}
        except KubeError as exc:
            if exc.retryable:
                raise self._unavailable(exc) from None
            problem = f"cannot read Secret {namespace}/{ref.name}: {exc}"
        if problem is not None:
            where = f"spec.auth: {problem}"
            log.warning("trigger %s/%s: refused: %s", namespace, trigger.metadata.name, where)
            key = (namespace, trigger.metadata.name)
            shown = trigger.status.message if trigger.status is not None else None
            if where not in (shown, self._reported.get(key)):  # written once, not per request (the body may be
                self._reported[key] = where                     # a cached one, its status not yet updated)
                while len(self._reported) > 1024:
                    self._reported.pop(next(iter(self._reported)))
                await self._patch_status(namespace, trigger.metadata.name, {"message": where})
            raise _unauthenticated()
        self._reported.pop((namespace, trigger.metadata.name), None)
        return str(secret["data"][ref.key]).strip().encode("utf-8")

    async def _status(self, namespace: str, trigger: WorkflowTrigger, delivery_id: str, outcome: str,
                      message: str = "") -> None:
        await self._runs.status(namespace, trigger, delivery_id, outcome, message=message)

    async def _patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self._runs.patch_status(namespace, name, status)

    @staticmethod
    def _unavailable(exc: KubeError) -> Refused:
        return unavailable(exc)


def _parse_body(raw: bytes, content_type: str) -> Any:
    """JSON, or the fields of a form (application/x-www-form-urlencoded: each name's last value, a string)."""
    if content_type == "application/x-www-form-urlencoded":
        try:
            text = raw.decode("utf-8")
            return dict(urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                                               max_num_fields=1000))
        except (UnicodeDecodeError, ValueError) as exc:
            raise Refused(400, f"the body is not a form (application/x-www-form-urlencoded): {exc}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"the body is not JSON: {exc}") from None

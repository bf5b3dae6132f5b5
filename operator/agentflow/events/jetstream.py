"""NATS JetStream: the only module that imports nats-py (the ``operator`` extra).

    js = await JetStream.connect(ConnectSettings(servers=("nats://nats:4222",)))
    await js.ensure_stream(StreamSettings())             # created if missing; warnings when it differs
    stored = await js.publish(message, "AGENTFLOW")       # False: a duplicate JetStream dropped (Nats-Msg-Id)
    async for seq, body in js.read("AGENTFLOW", "agentflow.team-a.*.*", follow=True): ...
    await js.consume("AGENTFLOW", "agentflow-triggers-...", "agentflow.>", handle)   # a durable work queue
    await js.close()

nats-py's exceptions never leave this module; they become (agentflow.events.errors)::

    EventsError             base: the message says what failed and what to do
    ├── EventsUnavailable   NATS cannot be reached or did not answer in time: try again later (the publisher
    │                       backs off; the events wait in the outbox)
    ├── StreamMissing       no stream takes the subject (deleted, or JetStream still loading after a restart):
    │                       ensure the stream, then try again
    └── PermissionDenied    the server refused this user (authorization, or a subject outside its permissions)

The connection reconnects by itself (forever, every ``reconnect_wait`` seconds); errors nats-py reports on its
own are logged once per kind, not as tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from .errors import EventsError, EventsUnavailable, PermissionDenied, StreamMissing
from .settings import ConnectSettings, StreamSettings
from .wire import MSG_ID, EventMessage

__all__ = ["Delivered", "JetStream"]

log = logging.getLogger("agentflow.events")


class _Errors:
    """What nats-py reported by callback, for better messages than a bare timeout."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.permission: str | None = None
        self.last: str | None = None
        self.closing = False
        self._seen: set[str] = set()

    async def error(self, exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        self.last = text
        if "permissions violation" in text.lower() or isinstance(exc, nats.errors.AuthorizationError):
            self.permission = text
        kind = type(exc).__name__
        if kind not in self._seen:  # once per kind, not a traceback per reconnect attempt
            self._seen.add(kind)
            log.warning("NATS %s: %s", self.where, text)

    async def disconnected(self) -> None:
        if not self.closing:
            log.warning("NATS %s: disconnected; reconnecting", self.where)

    async def reconnected(self) -> None:
        self._seen.clear()
        log.info("NATS %s: reconnected", self.where)


def _translate(exc: BaseException, what: str, where: str, errors: _Errors | None = None) -> EventsError:
    prefix = f"{what}: NATS at {where}"
    if errors is not None and errors.permission:
        denied, errors.permission = errors.permission, None
        return PermissionDenied(f"{prefix} refused it: {denied}; grant this NATS user the subjects (README, Events)")
    if isinstance(exc, nats.errors.AuthorizationError | nats.errors.InvalidUserCredentialsError):
        return PermissionDenied(f"{prefix} refused the login: {exc}; check the user, password, token or --nats-creds")
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return StreamMissing(f"{prefix}: no stream takes this subject (the stream was deleted, or JetStream is "
                             "still starting); the stream is ensured again before the next try")
    if isinstance(exc, nats.js.errors.NotFoundError):
        return StreamMissing(f"{prefix}: {exc.description or exc}")
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return EventsUnavailable(f"{prefix}: JetStream is unavailable ({exc.description or exc}); will retry")
    if isinstance(exc, nats.js.errors.APIError):
        return EventsError(f"{prefix} refused it: {exc.description or exc} (error {exc.err_code})")
    if isinstance(exc, nats.errors.TimeoutError | nats.errors.NoServersError | nats.errors.ConnectionClosedError
                  | nats.errors.StaleConnectionError | nats.errors.ConnectionReconnectingError
                  | nats.errors.OutboundBufferLimitError | nats.errors.NoRespondersError | OSError
                  | asyncio.TimeoutError):
        detail = str(exc) or type(exc).__name__
        return EventsUnavailable(f"{prefix} is unavailable: {detail}; check that it runs and the URL; will retry")
    return EventsError(f"{prefix} failed: {type(exc).__name__}: {exc}")


_NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


@dataclasses.dataclass(frozen=True)
class Delivered:
    """One message handed to :meth:`JetStream.consume`'s handler."""

    subject: str
    data: bytes
    msg_id: str | None
    """Its Nats-Msg-Id header (every AgentFlow event has one)."""
    deliveries: int
    """1 the first time it is handed over, more when it is delivered again."""


class JetStream:
    """One NATS connection and its JetStream context."""

    def __init__(self, nc: Client, settings: ConnectSettings, errors: _Errors) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=settings.request_timeout)
        self.settings = settings
        self._errors = errors
        self.where = settings.shown

    @classmethod
    async def connect(cls, settings: ConnectSettings) -> JetStream:
        """Connect (one attempt over the servers); EventsUnavailable or PermissionDenied when that fails."""
        where = settings.shown
        errors = _Errors(where)
        options: dict[str, Any] = {
            "servers": list(settings.servers), "name": settings.name, "error_cb": errors.error,
            "disconnected_cb": errors.disconnected, "reconnected_cb": errors.reconnected,
            "connect_timeout": settings.connect_timeout, "reconnect_time_wait": settings.reconnect_wait,
            "max_reconnect_attempts": -1, "allow_reconnect": True,
        }
        if settings.creds:
            if not os.path.isfile(settings.creds):  # nats-py would fail on it deep inside its connect
                raise EventsError(f"connect: --nats-creds {settings.creds}: no such file (a NATS credentials file: "
                                  "the user's JWT and NKey seed, as `nsc generate creds` writes it)")
            options["user_credentials"] = settings.creds
        if settings.inbox_prefix:
            options["inbox_prefix"] = settings.inbox_prefix
        nc = Client()
        try:
            # nats-py would try the first connection forever too: bounded here (the caller retries); once
            # connected, it reconnects by itself, forever.
            budget = settings.connect_timeout * len(settings.servers) + settings.reconnect_wait
            await asyncio.wait_for(nc.connect(**options), budget)
        except _NATS_ERRORS as exc:
            await _close_quietly(nc)
            if isinstance(exc, asyncio.TimeoutError) and errors.last and not errors.permission:
                raise EventsUnavailable(f"connect: NATS at {where} is unavailable: {errors.last}; check that it "
                                        "runs and the URL; will retry") from None
            raise _translate(exc, "connect", where, errors) from exc
        except ValueError as exc:  # a URL nats-py cannot parse
            await _close_quietly(nc)
            raise EventsError(f"connect: the NATS URL {where} is not valid: {exc}; use nats://HOST:4222") from None
        return cls(nc, settings, errors)

    async def close(self) -> None:
        self._errors.closing = True
        await _close_quietly(self._nc)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def ensure_stream(self, stream: StreamSettings) -> list[str]:
        """Create the stream when it is missing; an existing one is left as it is (it may be managed elsewhere):
        the differences that matter are returned (and logged)."""
        what = f"ensure the stream {stream.name}"
        try:
            try:
                info = await self._js.stream_info(stream.name)
            except nats.js.errors.NotFoundError:
                await self._js.add_stream(StreamConfig(
                    name=stream.name, subjects=list(stream.subjects), max_age=stream.max_age or None,
                    max_bytes=stream.max_bytes, duplicate_window=stream.duplicate_window,
                    num_replicas=stream.replicas,
                    storage=StorageType.FILE if stream.storage == "file" else StorageType.MEMORY))
                log.info("created the JetStream stream %s (subjects %s, duplicate window %.0fs)", stream.name,
                         ", ".join(stream.subjects), stream.duplicate_window)
                return []
        except _NATS_ERRORS as exc:
            raise _translate(exc, what, self.where, self._errors) from exc
        config = info.config
        differences = []
        missing = [s for s in stream.subjects if s not in (config.subjects or [])]
        if missing:
            differences.append(f"it does not take the subjects {', '.join(missing)} (it takes "
                               f"{', '.join(config.subjects or [])}): events published there are refused")
        window = config.duplicate_window or 0.0
        if window < stream.duplicate_window:
            differences.append(f"its duplicate window is {window:.0f}s, shorter than the "
                               f"{stream.duplicate_window:.0f}s configured: a copy republished after a crash later "
                               "than that is kept twice")
        for text in differences:
            log.warning("the JetStream stream %s exists and was left as it is, but %s", stream.name, text)
        return differences

    async def publish(self, message: EventMessage, stream: str) -> bool:
        """Publish and wait for the ack: True when stored, False when JetStream dropped it as a duplicate."""
        try:
            ack = await self._js.publish(message.subject, message.body, stream=stream, headers=dict(message.headers))
        except _NATS_ERRORS as exc:
            raise _translate(exc, f"publish {message.msg_id} on {message.subject}", self.where, self._errors) from exc
        return not ack.duplicate

    async def read(self, stream: str, subject_filter: str, *, since: dt.datetime | None = None,
                   follow: bool = False, batch: int = 256, wait: float = 2.0) -> AsyncIterator[tuple[int, bytes]]:
        """(stream sequence, body) of every message on ``subject_filter`` in stream order, from ``since`` (stream
        time) or the start; without ``follow`` it ends once it has caught up. A consumer lost to a NATS restart is
        made again from where it was."""
        next_seq: int | None = None
        subscribed = False
        backoff = 0.5
        while True:
            try:
                sub = await self._subscribe(stream, subject_filter, since, next_seq)
                subscribed = True
                if not follow and (await sub.consumer_info()).num_pending == 0:
                    await _unsubscribe(sub)
                    return
                backoff = 0.5
                while True:
                    try:
                        messages = await sub.fetch(batch, timeout=wait)
                    except TimeoutError:  # nats-py raises its own (a subclass) or asyncio's
                        if self._errors.permission:
                            raise
                        if follow:  # nothing new; a consumer lost to a NATS restart is made again
                            await sub.consumer_info()
                        continue
                    for msg in messages:
                        meta = msg.metadata
                        next_seq = meta.sequence.stream + 1
                        # nats-server 2.9 starts a consumer whose start time is past the last message at the first
                        # one: what was published before ``since`` is skipped here.
                        if since is None or meta.timestamp >= since:
                            yield meta.sequence.stream, msg.data
                        if not follow and meta.num_pending == 0:
                            await _unsubscribe(sub)
                            return
            except _NATS_ERRORS as exc:
                error = _translate(exc, f"read {subject_filter} from the stream {stream}", self.where, self._errors)
                if not follow or not subscribed or isinstance(error, PermissionDenied):
                    raise error from exc
                log.warning("%s; reading again from stream sequence %s in %.1fs", error, next_seq or "start",
                            backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def consume(self, stream: str, durable: str, subject_filter: str,
                      handle: Callable[[Delivered], Awaitable[bool]], *, batch: int = 64, wait: float = 5.0,
                      ack_wait: float = 60.0, max_deliver: int = 20, retry_delay: float = 5.0,
                      inactive: float | None = None) -> None:
        """Hand each message on ``subject_filter`` to ``handle``, forever (until cancelled): True acknowledges it, False
        (or an exception, logged) has it delivered again after ``retry_delay`` (doubling with each delivery, at
        most a minute), at most ``max_deliver`` times in all. ``durable`` is a durable consumer that starts at
        the messages published after it was first made and remembers its place; whoever consumes under the same
        name shares its messages (each goes to one of them). A message not acknowledged within ``ack_wait`` (a
        consumer that died) is delivered again. A lost connection or consumer is made again; PermissionDenied
        when this user may not consume. ``inactive``: seconds without a reader after which NATS deletes the
        consumer (None: never)."""
        config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW,
                                ack_wait=ack_wait, max_deliver=max_deliver, filter_subject=subject_filter,
                                inactive_threshold=inactive)
        backoff = 0.5
        what = f"consume {subject_filter} from the stream {stream}"
        while True:
            try:
                sub = await self._js.pull_subscribe(subject_filter, durable=durable, stream=stream, config=config)
                log.info("consuming %s from the stream %s (a durable consumer)", subject_filter, stream)
                backoff = 0.5
                while True:
                    try:
                        messages = await sub.fetch(batch, timeout=wait)
                    except TimeoutError:  # nothing new; a consumer lost to a NATS restart is made again
                        if self._errors.permission:
                            raise
                        await sub.consumer_info()
                        continue
                    for msg in messages:
                        try:
                            done = await handle(Delivered(msg.subject, msg.data, (msg.headers or {}).get(MSG_ID),
                                                          msg.metadata.num_delivered))
                        except Exception:  # a bug must not stop the consumer: the message comes again
                            log.exception("%s: handling %s failed", what, msg.subject)
                            done = False
                        if done:
                            await msg.ack()
                        else:  # 1x, 2x, 4x ... retry_delay, at most a minute
                            deliveries = max(1, msg.metadata.num_delivered)
                            await msg.nak(delay=min(retry_delay * 2 ** min(deliveries - 1, 10), 60.0))
            except _NATS_ERRORS as exc:
                error = _translate(exc, what, self.where, self._errors)
                if isinstance(error, PermissionDenied):
                    raise error from exc
                log.warning("%s; again in %.1fs", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _subscribe(self, stream: str, subject_filter: str, since: dt.datetime | None,
                         next_seq: int | None) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=120.0, mem_storage=True,
                                num_replicas=1)
        if next_seq is not None:
            config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, next_seq
        elif since is not None:
            config.deliver_policy, config.opt_start_time = DeliverPolicy.BY_START_TIME, since
        return await self._js.pull_subscribe(subject_filter, stream=stream, config=config)


async def _unsubscribe(sub: JetStreamContext.PullSubscription) -> None:
    with contextlib.suppress(*_NATS_ERRORS):  # the ephemeral consumer goes away on its own (inactive_threshold)
        await sub.unsubscribe()


async def _close_quietly(nc: Client) -> None:
    with contextlib.suppress(*_NATS_ERRORS):
        await nc.close()

"""Event triggers: WorkflowTriggers with ``spec.events`` start runs from AgentFlow's own events.

The operator (with ``--nats-url``) reads the events stream through one durable consumer,
``agentflow-triggers-<secret>`` (agentflow.events.jetstream.JetStream.consume), shared by its replicas: each event
goes to one of them, and is acknowledged once every trigger it concerns has started its run or refused it for good.
While the API server is away the event is not acknowledged, and JetStream delivers it again (5 s later, doubling to
a minute, up to 20 deliveries: about 15 minutes). The consumer starts at the events published after it was first
made; it remembers its place across restarts, and is deleted by NATS after a day without a reader
(:data:`INACTIVE_SECONDS`). Its name is derived from the operator's signing key (:func:`consumer_name`): JetStream
lets whoever may pull from the stream (``$JS.API.CONSUMER.MSG.NEXT``, which a tenant's user holds to read its own
namespace) pull from any consumer whose name it knows, and this one hears every namespace.

One event, in this order (:meth:`EventTriggers.handle`)::

    subject agentflow.NS.WORKFLOW.TYPE                                                     else passed over (logged)
    NS one the operator serves (--namespace)                                               else passed over
    NS's WorkflowTriggers (listed, kept cache_seconds) with spec.events naming TYPE, not suspended: none, done
    its body an AgentFlow event of NS and WORKFLOW                                         else passed over (logged)
    ... not the trigger that started WORKFLOW (a trigger never hears its own runs)
    mapped: when, inputs, deliveryId over body (the event) and headers (nats-msg-id)       when false: nothing
    WORKFLOW's chain of event-started runs shorter than MAX_EVENT_CHAIN                    else Refused
    the run started, named from the delivery id (the event's id by default)                a second delivery of
                                                                                            the event: nothing
    outcomes on the trigger's status.lastDelivery (Started, Refused; a filtered event writes nothing)

Tenant-first: a trigger hears only the events published under its own namespace's subjects, and the body must
name that namespace and workflow too. Whoever may publish on ``agentflow.NS.>`` can start NS's event triggers:
grant publishing on ``agentflow.>`` to the operator alone (tenants subscribe; README, Events).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson

from ..k8s.kube import Kube, KubeError, NotFound
from ..models import ManifestError, WorkflowTrigger, parse_resource
from ..models.trigger import EVENT_DEPTH_LABEL, MAX_EVENT_CHAIN, TRIGGER_LABEL
from ..triggers.runs import TRIGGERS, WORKFLOWS, Refused, TriggerRuns
from ..validation.triggers import CompiledTrigger, MappingError, TriggerSpecError, compile_trigger
from .errors import EventsError
from .subjects import SubjectError, parse_subject
from .wire import WireError, decode

__all__ = ["EventTriggers", "consumer_name"]

log = logging.getLogger("agentflow.triggers")

SUBJECTS = "agentflow.>"
INACTIVE_SECONDS = 86400.0
"""A consumer no replica read from for this long is deleted by NATS (the operator down a day, or a new key)."""


def consumer_name(key: bytes) -> str:
    """The durable consumer's name: ``agentflow-triggers-`` and 96 bits of an HMAC of the operator's signing key
    (replicas share the key, so they share the consumer; nobody without the key can name it)."""
    return "agentflow-triggers-" + hmac.new(key, b"agentflow event triggers consumer", hashlib.sha256).hexdigest()[:24]


class Incoming(Protocol):
    """What the consumer hands over (agentflow.events.jetstream.Delivered)."""

    @property
    def subject(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def msg_id(self) -> str | None: ...


class Stream(Protocol):
    """A connection to the events stream (agentflow.events.jetstream.JetStream)."""

    async def consume(self, stream: str, durable: str, subject_filter: str,
                      handle: Callable[[Any], Awaitable[bool]], *, inactive: float) -> None: ...
    async def close(self) -> None: ...


class EventTriggers:
    """Starts the runs of event triggers. Build it with the operator's Kubernetes client."""

    def __init__(self, kube: Kube, consumer: str, *, namespaces: Sequence[str] = (),
                 clock: Callable[[], float] = time.time, cache_seconds: float = 5.0) -> None:
        """``consumer``: the durable consumer's name (:func:`consumer_name`); ``namespaces``: the ones the operator
        watches (names or globs, as --namespace; empty: all)."""
        self._kube = kube
        self._consumer = consumer
        self._namespaces = tuple(namespaces)
        self._runs = TriggerRuns(kube, clock)
        self._cache_seconds = cache_seconds
        self._triggers: collections.OrderedDict[str, tuple[float, list[tuple[WorkflowTrigger, frozenset[str]]]]] \
            = collections.OrderedDict()
        self._compiled_triggers: dict[tuple[str, str, str, str], CompiledTrigger] = {}

    async def run(self, connect: Callable[[], Awaitable[Stream]], stream: str, stopped: asyncio.Event, *,
                  retry: float = 1.0) -> None:
        """Consume the events stream ``stream`` until ``stopped``: connected with ``connect``, again after a failure
        (``retry`` seconds, doubling to 30 s; the failure logged)."""
        backoff = retry
        while not stopped.is_set():
            try:
                js = await connect()
            except EventsError as exc:
                log.warning("event triggers: %s; again in %.0fs", exc, backoff)
            else:
                try:
                    consuming = asyncio.ensure_future(js.consume(stream, self._consumer, SUBJECTS, self.handle,
                                                                 inactive=INACTIVE_SECONDS))
                    stop = asyncio.ensure_future(stopped.wait())
                    try:
                        await asyncio.wait({consuming, stop}, return_when=asyncio.FIRST_COMPLETED)
                    finally:  # stopped, or this task cancelled: neither is left running
                        for task in (consuming, stop):
                            task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await consuming  # what ended it, if it ended by itself
                    backoff = retry
                except EventsError as exc:  # this NATS user may not consume: said, and tried again slowly
                    log.error("event triggers: %s; again in %.0fs", exc, backoff)
                except Exception:  # a bug: said, and tried again; the triggers must not stop for good
                    log.exception("event triggers: consuming failed; again in %.0fs", backoff)
                finally:
                    await js.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), backoff)
            backoff = min(backoff * 2, max(retry, 30.0))

    async def handle(self, event: Incoming) -> bool:
        """Act on one event: True when done with it (acknowledge), False to have it delivered again."""
        try:
            namespace, workflow, kind = parse_subject(event.subject)
        except SubjectError as exc:
            log.info("event triggers: %s passed over: %s", event.subject[:200], exc)
            return True
        if event.msg_id is None or not self._served(namespace):
            return True
        try:  # most events concern no trigger: looked up before the body is read
            triggers = [t for t, types in await self._event_triggers(namespace) if kind in types]
        except KubeError as exc:
            log.warning("event triggers: cannot list the WorkflowTriggers of %s (%s); the event comes again",
                        namespace, exc)
            return False
        if not triggers:
            return True
        try:
            body = orjson.loads(event.data)
            received = decode(body)
        except (WireError, orjson.JSONDecodeError) as exc:
            log.info("event triggers: %s passed over: %s", event.subject[:200], exc)
            return True
        if received.namespace != namespace or received.workflow != workflow:
            log.warning("event triggers: %s passed over: its body is about %s/%s", event.subject[:200],
                        received.namespace, received.workflow)
            return True
        source: dict[str, Any] | None = None
        done = True
        for trigger in triggers:
            try:
                if source is None:
                    source = await self._source(namespace, workflow)
                done = await self._deliver(namespace, trigger, body, event.msg_id, workflow, source) and done
            except KubeError as exc:
                log.warning("event triggers: %s/%s: the API server is unavailable (%s); the event comes again",
                            namespace, trigger.metadata.name, exc)
                done = False
        return done

    async def _deliver(self, namespace: str, trigger: WorkflowTrigger, body: Any, msg_id: str, workflow: str,
                       source: dict[str, Any]) -> bool:
        name = trigger.metadata.name
        labels = (source.get("metadata") or {}).get("labels") or {}
        if labels.get(TRIGGER_LABEL) == name:  # its own run: hearing it would start runs forever
            return True
        try:
            delivery = self._compiled(trigger).deliver(body, {"nats-msg-id": msg_id})
        except TriggerSpecError as exc:  # admission refuses these; one made before it was checked
            log.warning("event triggers: WorkflowTrigger %s/%s %s", namespace, name, exc)
            return True
        except MappingError as exc:
            await self._runs.status(namespace, trigger, exc.delivery_id or msg_id, "Refused",
                                    message=f"the event does not map onto the trigger: {exc}")
            return True
        if not delivery.accepted:
            return True
        depth = _depth(labels.get(EVENT_DEPTH_LABEL)) + 1
        if depth > MAX_EVENT_CHAIN:
            await self._runs.status(namespace, trigger, delivery.id, "Refused", message=(
                f"Workflow {workflow} is the end of a chain of {depth - 1} runs started by events; at most "
                f"{MAX_EVENT_CHAIN} are started in a row (a loop between triggers?); no run started"))
            return True
        try:
            await self._runs.start(namespace, trigger, delivery, labels={EVENT_DEPTH_LABEL: str(depth)})
        except Refused as exc:
            if exc.retryable:
                return False
            log.info("event triggers: %s/%s refused event %s: %s", namespace, name, msg_id, exc.message)
            if not exc.reported:
                await self._runs.status(namespace, trigger, delivery.id, "Refused", message=exc.message)
        return True

    def _compiled(self, trigger: WorkflowTrigger) -> CompiledTrigger:
        """The trigger's expressions, compiled once per version of it (TriggerSpecError when one does not)."""
        meta = trigger.metadata
        key = (str(meta.namespace), meta.name, str(meta.uid), str(meta.generation))
        compiled = self._compiled_triggers.get(key)
        if compiled is None:
            compiled = compile_trigger(trigger.spec)
            self._compiled_triggers[key] = compiled
            while len(self._compiled_triggers) > 1024:
                self._compiled_triggers.pop(next(iter(self._compiled_triggers)))
        return compiled

    async def _source(self, namespace: str, workflow: str) -> dict[str, Any]:
        """The Workflow the event is about ({} when it is gone already)."""
        try:
            return await self._kube.get_resource(WORKFLOWS, namespace, workflow)
        except NotFound:
            return {}

    async def _event_triggers(self, namespace: str) -> list[tuple[WorkflowTrigger, frozenset[str]]]:
        """The namespace's event triggers that are not suspended, with the types each hears."""
        now = time.monotonic()
        hit = self._triggers.get(namespace)
        if hit is not None and hit[0] > now:
            return hit[1]
        found: list[tuple[WorkflowTrigger, frozenset[str]]] = []
        for body in await self._kube.list_resources(TRIGGERS, namespace):
            try:
                trigger = parse_resource(body)
            except ManifestError as exc:  # admission refuses these; one made before it was checked
                log.info("event triggers: WorkflowTrigger %s/%s is invalid: %s", namespace,
                         (body.get("metadata") or {}).get("name"), exc)
                continue
            if isinstance(trigger, WorkflowTrigger) and trigger.spec.events is not None and not trigger.spec.suspend:
                found.append((trigger, frozenset(trigger.spec.events.types)))
        self._triggers[namespace] = (now + self._cache_seconds, found)
        self._triggers.move_to_end(namespace)
        while len(self._triggers) > 1024:
            self._triggers.popitem(last=False)
        return found

    def _served(self, namespace: str) -> bool:
        return not self._namespaces or any(fnmatch.fnmatchcase(namespace, p) for p in self._namespaces)


def _depth(value: Any) -> int:
    """A Workflow's event-depth label (0 without one or when it is not a whole number from 0)."""
    try:
        depth = int(str(value))
    except ValueError:
        return 0
    return max(depth, 0)

"""Approval notifications on a cluster: notify, remind, escalate (issue 17).

::

    WorkflowReconciler.reconcile -> ApprovalNotifier.observe(body, run, records) -> the next send's time (its wake_at)
        waiting(run, records)          the approval nodes that wait and have approval.notify: since = the journal's
                                       ApprovalRequested time (the same after a restart), message, approvers, deadline
        done                           the outcomes recorded in PostgreSQL (agentflow_notifications): kept in memory,
                                       read again whenever something looks due (another replica may have driven
                                       the run meanwhile), so a quiet pass costs no query
        notify.plan.due(...)           PURE: what is due now and not done
        one task per send              never awaited by the reconcile: delivery cannot block or fail the run
            recipients                 e-mails (notify.emails, else the approvers that are e-mail addresses); the
                                       webhook URL from a Secret of the Workflow's namespace, labelled
                                       agentflow.dev/credential: "true"; its host on --notify-webhook-hosts
            send, retried              DeliveryError(retryable): backoff 10 s doubling to 5 min, RETRIES times;
                                       stops as soon as the step no longer waits
            record the outcome         sent | failed (refused for good, or retries exhausted), once per
                                       (run, node, key); an Event: ApprovalNotified or NotificationFailed (Warning)

At least once, never twice for what was recorded: an outcome is recorded after the send, so a crash between the
two sends again after a restart (the reconciler drives one Workflow from one replica at a time). A send that
failed for good is not tried again by a restart either: its Event says why and what to fix. A reminder period
missed while the operator was down is not sent late one by one: the current period's is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from ..engine.journal import Record
from ..engine.nodes import WAITING
from ..engine.run import Run
from ..engine.values import EventType
from ..k8s.events import event_body
from ..k8s.kube import Kube, KubeError, NotFound
from ..k8s.podspec import Owner
from ..k8s.status import rfc3339
from ..models.notify import ApprovalNotify, NotifyTarget, is_email
from ..notify.delivery import DeliveryError, Mailer, WebhookPoster
from ..notify.message import Notice, render
from ..notify.plan import Channel, Plan, Send, Wait, due
from ..storage.errors import StorageError
from .gateway import CREDENTIAL_LABEL

__all__ = ["DEFAULT_WEBHOOK_HOSTS", "ApprovalNotifier", "NotificationLog", "NotifySettings", "Waiting", "waiting"]

log = logging.getLogger("agentflow.notifications")

DEFAULT_WEBHOOK_HOSTS = ("hooks.slack.com",)
STORAGE_RETRY_SECONDS = 30.0


class NotificationLog(Protocol):
    async def notifications_done(self, run_uid: str) -> set[tuple[str, str]]: ...
    async def record_notification(self, run_uid: str, node: str, key: str, outcome: str,
                                  detail: str = "") -> bool: ...


@dataclasses.dataclass(frozen=True)
class NotifySettings:
    """The operator's side of notifications (flags --console-url, --notify-webhook-hosts, --smtp-*)."""

    console_url: str | None = None
    webhook_hosts: tuple[str, ...] = DEFAULT_WEBHOOK_HOSTS
    retries: int = 5
    """Further tries of a send after a retryable failure."""
    backoff_seconds: float = 10.0
    max_backoff_seconds: float = 300.0


@dataclasses.dataclass(frozen=True)
class Waiting:
    """An approval node that waits and asks to be notified."""

    node: str
    since: float
    message: str
    approvers: tuple[str, ...]
    deadline: float | None
    notify: ApprovalNotify


def waiting(run: Run, records: Sequence[Record]) -> list[Waiting]:
    """The approval nodes of ``run`` that wait now and have ``approval.notify``, from the journal's
    ApprovalRequested records (a tool's approval gate and a quarantine review have no notify: not notified)."""
    found: dict[str, Waiting] = {}
    for record in records:
        event = record.event
        if event.type is not EventType.approval_requested or event.node is None:
            continue
        data = event.data
        if data.get("gate") is not None or data.get("review") is not None:
            continue
        node = run.nodes.get(str(event.node))
        if node is None or node.planned is not None:
            continue
        approval = getattr(node.plan.spec, "approval", None)
        notify = approval.notify if approval is not None else None
        if notify is None:
            continue
        deadline = data.get("deadline")
        found[node.id] = Waiting(node.id, float(event.at), str(data.get("message") or ""),
                                 tuple(str(a) for a in data.get("approvers") or ()),
                                 float(deadline) if deadline is not None else None, notify)
    return [w for w in found.values() if run.nodes[w.node].phase == WAITING]


def _emails(target: NotifyTarget, approvers: Sequence[str], first: bool) -> list[str]:
    if target.emails or not first:
        return list(target.emails)
    return [a for a in approvers if is_email(a)]


def _channels(target: NotifyTarget | None, approvers: Sequence[str], first: bool) -> tuple[Channel, ...]:
    if target is None:
        return ()
    out: list[Channel] = []
    if _emails(target, approvers, first):
        out.append("email")
    if target.webhook_secret_ref is not None:
        out.append("webhook")
    return tuple(out)


def plan_wait(w: Waiting) -> Wait:
    n = w.notify
    return Wait(w.node, w.since, _channels(n, w.approvers, True), n.remind_every_seconds, n.escalate_after_seconds,
                _channels(n.escalate_to, w.approvers, False))


class ApprovalNotifier:
    """Sends the approval notifications of the runs the reconciler drives (see the module docstring)."""

    def __init__(self, kube: Kube, store: NotificationLog, settings: NotifySettings, *, mailer: Mailer | None,
                 poster: WebhookPoster, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, reporting_instance: str = "") -> None:
        self.kube = kube
        self.store = store
        self.settings = settings
        self.mailer = mailer
        self.poster = poster
        self.clock = clock
        self._sleep = sleep
        self._reporting_instance = reporting_instance
        self._done: dict[str, set[tuple[str, str]]] = {}
        self._inflight: dict[str, set[tuple[str, str]]] = {}
        self._waiting: dict[str, set[str]] = {}
        self._unrecorded: dict[str, set[tuple[str, str]]] = {}
        """Sent, but PostgreSQL refused the record: not sent again by this process."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def observe(self, body: Mapping[str, Any], run: Run, records: Sequence[Record]) -> float | None:
        """Start the sends due now (in the background) and say when the next one falls due. Never raises: a
        notification problem is logged and in an Event, never the run's."""
        uid = str(body["metadata"]["uid"])
        try:
            waits = [] if run.finished else waiting(run, records)
        except Exception:  # a bug here must not fail the reconcile
            log.exception("approval notifications of %s", uid)
            return None
        if not waits:
            self.forget(uid)  # sends in flight stop at their next try
            return None
        self._waiting[uid] = {w.node for w in waits}
        inflight = self._inflight.setdefault(uid, set())
        now = self.clock()
        plans = self._plans(uid, waits, now, inflight)
        if plans is None or any(plan.sends for _, plan in plans):
            # Something looks due: read what is recorded (another replica may have driven this run meanwhile).
            try:
                self._done[uid] = await self.store.notifications_done(uid) | self._unrecorded.get(uid, set())
            except StorageError as exc:
                log.warning("approval notifications of %s wait for PostgreSQL: %s", uid, exc)
                return now + STORAGE_RETRY_SECONDS
            plans = self._plans(uid, waits, now, inflight)
            assert plans is not None
        next_at: float | None = None
        for w, plan in plans:
            if plan.next_at is not None:
                next_at = plan.next_at if next_at is None else min(next_at, plan.next_at)
            for send in plan.sends:
                inflight.add((w.node, send.key))
                task = asyncio.create_task(self._deliver(body, w, send), name=f"notify {uid} {w.node} {send.key}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return next_at

    def _plans(self, uid: str, waits: Sequence[Waiting], now: float,
               inflight: set[tuple[str, str]]) -> list[tuple[Waiting, Plan]] | None:
        """Each wait's plan against what this process knows is done, sends in flight left out; None when it
        knows nothing of the run yet."""
        done = self._done.get(uid)
        if done is None:
            return None
        out = []
        for w in waits:
            plan = due(plan_wait(w), now, {key for node, key in done if node == w.node})
            sends = tuple(send for send in plan.sends if (w.node, send.key) not in inflight)
            out.append((w, Plan(sends, plan.next_at)))
        return out

    def forget(self, run_uid: str) -> None:
        """The run finished or its Workflow is gone: drop what is kept of it (its sends in flight stop at their
        next try)."""
        self._done.pop(run_uid, None)
        self._waiting.pop(run_uid, None)
        self._unrecorded.pop(run_uid, None)
        if not self._inflight.get(run_uid, True):
            del self._inflight[run_uid]

    async def drain(self) -> None:
        """Wait for the sends in flight (tests; a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.poster.close()

    # ------------------------------------------------------------------ one send

    async def _deliver(self, body: Mapping[str, Any], w: Waiting, send: Send) -> None:
        uid = str(body["metadata"]["uid"])
        try:
            outcome, detail = await self._try(body, w, send)
            if outcome is None:
                return
            try:
                await self.store.record_notification(uid, w.node, send.key, outcome, detail)
            except StorageError as exc:  # sent and not recorded: a restart may send it again (at least once)
                log.warning("could not record notification %s of %s in %s: %s", send.key, w.node, uid, exc)
                self._unrecorded.setdefault(uid, set()).add((w.node, send.key))
            if uid in self._done:
                self._done[uid].add((w.node, send.key))
            await self._event(body, outcome, w, send, detail)
        except Exception:  # never escapes into the event loop's handler unseen
            log.exception("approval notification %s of %s in %s", send.key, w.node, uid)
        finally:
            self._inflight.get(uid, set()).discard((w.node, send.key))

    async def _try(self, body: Mapping[str, Any], w: Waiting, send: Send) -> tuple[str | None, str]:
        """(``sent``, detail) | (``failed``, why) | (None, _) when the step stopped waiting before it was sent."""
        uid = str(body["metadata"]["uid"])
        delay = self.settings.backoff_seconds
        for attempt in range(self.settings.retries + 1):
            if w.node not in self._waiting.get(uid, ()):
                return None, ""
            try:
                return "sent", await self._send(body, w, send)
            except DeliveryError as exc:
                if not exc.retryable or attempt == self.settings.retries:
                    tries = f" (after {attempt + 1} tries)" if exc.retryable else ""
                    return "failed", f"{exc}{tries}"
                log.info("notification %s of %s in %s failed, retrying in %.0fs: %s", send.key, w.node, uid,
                         delay, exc)
            await self._sleep(delay)
            delay = min(delay * 2, self.settings.max_backoff_seconds)
        return "failed", "no try left"  # pragma: no cover (the loop returns)

    def _notice(self, body: Mapping[str, Any], w: Waiting, send: Send) -> Notice:
        meta = body["metadata"]
        return Notice(str(meta["namespace"]), str(meta["name"]), w.node, send.kind, send.number, w.message,
                      w.approvers, rfc3339(w.since), rfc3339(w.deadline) if w.deadline is not None else None,
                      self.settings.console_url)

    async def _send(self, body: Mapping[str, Any], w: Waiting, send: Send) -> str:
        target = w.notify.escalate_to if send.escalation else w.notify
        assert target is not None
        rendered = render(self._notice(body, w, send))
        if send.channel == "email":
            recipients = _emails(target, w.approvers, not send.escalation)
            if self.mailer is None:
                raise DeliveryError("the operator has no SMTP relay configured (--smtp-host, the chart's "
                                    "notifications.smtp.host)", retryable=False)
            await self.mailer.send(recipients, rendered.subject, rendered.text)
            return f"e-mail to {len(recipients)} recipient(s)"
        ref = target.webhook_secret_ref
        assert ref is not None
        if not self.settings.webhook_hosts:  # before reading any Secret: the operator may not be allowed to
            raise DeliveryError("the operator allows no webhook hosts (--notify-webhook-hosts, the chart's "
                                "notifications.webhookHosts)", retryable=False)
        url = await self._webhook_url(str(body["metadata"]["namespace"]), ref.name, ref.key)
        await self.poster.post(url, rendered.payload)
        return f"webhook of Secret {ref.name} (key {ref.key})"

    async def _webhook_url(self, namespace: str, name: str, key: str) -> str:
        """The webhook URL in Secret ``namespace/name`` (the Workflow's own namespace, always), which must opt in
        with the credential label."""
        try:
            secret = await self.kube.read_secret(namespace, name)
        except NotFound:
            raise DeliveryError(f"Secret {namespace}/{name} (notify webhookSecretRef) does not exist",
                                retryable=False) from None
        except KubeError as exc:
            raise DeliveryError(f"cannot read Secret {namespace}/{name}: {exc}", retryable=exc.retryable) from None
        labels = (secret.get("metadata") or {}).get("labels") or {}
        if labels.get(CREDENTIAL_LABEL) != "true":
            raise DeliveryError(f'Secret {namespace}/{name} lacks the label {CREDENTIAL_LABEL}: "true" (only '
                                "Secrets that opt in are read by the operator; label it)", retryable=False)
        value = (secret.get("data") or {}).get(key)
        if not value:
            keys = ", ".join(sorted(secret.get("data") or {})) or "none"
            raise DeliveryError(f"Secret {namespace}/{name} has no key {key!r} (its keys: {keys})", retryable=False)
        return str(value).strip()

    async def _event(self, body: Mapping[str, Any], outcome: str, w: Waiting, send: Send, detail: str) -> None:
        meta = body["metadata"]
        what = {"notify": "notification", "remind": f"reminder {send.number}", "escalate": "escalation"}[send.kind]
        if outcome == "sent":
            type_, reason, message = "Normal", "ApprovalNotified", f"approval {what} for {w.node}: {detail}"
        else:
            type_, reason, message = ("Warning", "NotificationFailed",
                                      f"approval {what} for {w.node} by {send.channel} was not sent: {detail}")
        owner = Owner(str(body.get("apiVersion", "agentflow.dev/v1alpha1")), "Workflow", str(meta["name"]),
                      str(meta["uid"]))
        try:
            await self.kube.create_event(str(meta["namespace"]), event_body(
                owner, str(meta["namespace"]), type_, reason, message, rfc3339(self.clock()),
                reporting_instance=self._reporting_instance))
        except KubeError as exc:  # Events are best effort; the table is the record
            log.warning("could not record event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc)

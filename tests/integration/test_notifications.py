"""Approval notifications end to end on loopback: the reconciler (in-memory API server) drives a Workflow whose
approval step notifies; e-mail goes through a real SMTP server (aiosmtpd) and the webhook to a recording HTTP
server; what was sent is recorded in a real PostgreSQL, so a restarted operator sends nothing twice."""

from __future__ import annotations

import asyncio
import copy
import email
import email.policy
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from agentflow.k8s import names
from agentflow.k8s.podspec import PodConfig
from agentflow.models import Catalog
from agentflow.notify.delivery import Mailer, SmtpSettings, WebhookPoster
from agentflow.services.notifications import ApprovalNotifier, NotifySettings
from agentflow.services.reconcile import WorkflowReconciler
from agentflow.storage import PostgresStore
from agentflow.testing import SIGNING_KEY, FakeKube, decided_by

pytestmark = pytest.mark.integration

HOUR = 3600.0
START = 1_800_000_000.0


class Mailbox:
    """aiosmtpd's handler: every message it accepts, parsed."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"


class Smtp:
    def __init__(self, mailbox: Mailbox, port: int) -> None:
        self.mailbox = mailbox
        self.port = port


@pytest.fixture
async def smtp() -> AsyncIterator[Smtp]:
    """A real SMTP server on 127.0.0.1 (a free port), accepting a login of user/secret without TLS."""
    mailbox = Mailbox()

    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == b"user" and data.password == b"secret"
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(mailbox, authenticator=authenticate, auth_require_tls=False,
                                                   hostname="relay.test"), "127.0.0.1", 0)
    try:
        yield Smtp(mailbox, server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


class Hooks:
    """A recording HTTP server: the JSON bodies posted to /hook, answering ``fail`` times 503 first."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=503, text="busy")
        self.bodies.append(await request.json())
        return web.Response(text="ok")


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    h = Hooks()
    app = web.Application()
    app.router.add_post("/hook", h.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    h.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield h
    finally:
        await runner.cleanup()


def secret(name: str, url: str, *, namespace: str = "team", labelled: bool = True) -> dict[str, Any]:
    labels = {"agentflow.dev/credential": "true"} if labelled else {}
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}, "data": {"url": url}}


def workflow(notify: dict[str, Any], *, uid: str | None = None, **approval: Any) -> dict[str, Any]:
    spec = {"steps": [{"name": "ask", "kind": "approval",
                       "approval": {"message": "Refund 40 EUR to <!channel>?", "approvers": ["finance"],
                                    "notify": notify, **approval}}]}
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "refund", "namespace": "team", "uid": uid or str(uuid.uuid4()), "generation": 1,
                         "annotations": {}},
            "spec": copy.deepcopy(spec)}


class Operator:
    """One operator process: its reconciler and notifier over the shared API server and PostgreSQL."""

    def __init__(self, kube: FakeKube, store: PostgresStore, smtp_port: int | None, clock: list[float], *,
                 hosts: tuple[str, ...] = ("127.0.0.1",), username: str | None = "user") -> None:
        self.sleeps: list[float] = []
        smtp = None if smtp_port is None else SmtpSettings(
            "127.0.0.1", smtp_port, "agentflow@example.com", username=username,
            password="secret" if username else None, timeout=5)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        self.notifier = ApprovalNotifier(kube, store, NotifySettings(console_url="https://console.example.com",
                                                                     webhook_hosts=hosts, retries=3),
                                         mailer=Mailer(smtp) if smtp else None, poster=WebhookPoster(hosts),
                                         clock=lambda: clock[0], sleep=sleep)
        self.reconciler = WorkflowReconciler(kube, store, PodConfig(image="runtime:dev",
                                                                    callback_url="http://10.88.0.1:8081"),
                                             signing_key=SIGNING_KEY, clock=lambda: clock[0],
                                             notifier=self.notifier)

    async def reconcile(self, body: dict[str, Any]) -> Any:
        """One pass and the sends it started."""
        outcome = await self.reconciler.reconcile(body, Catalog())
        await self.notifier.drain()
        return outcome

    async def close(self) -> None:
        await self.notifier.close()


def subject(msg: email.message.EmailMessage) -> str:
    """The Subject as read (a long one is folded onto a continuation line)."""
    return str(msg["Subject"]).strip()


def phase(kube: FakeKube) -> str:
    """The Workflow's phase on its last status."""
    return str(kube.statuses[-1]["phase"])


def reasons(kube: FakeKube, reason: str) -> list[str]:
    return [e["message"] for e in kube.events if e["reason"] == reason]


async def test_notify_remind_escalate_and_a_restart_sends_nothing_twice(store: PostgresStore, smtp: Smtp,
                                                                       hooks: Hooks) -> None:
    kube = FakeKube(secrets=[secret("slack", hooks.url)])
    clock = [START]
    body = workflow({"emails": ["lead@example.com"], "webhookSecretRef": {"name": "slack"}, "remindEvery": "1h",
                     "escalateAfter": "3h", "escalateTo": {"emails": ["boss@example.com"]}},
                    timeoutSeconds=86400)
    op = Operator(kube, store, smtp.port, clock)
    outcome = await op.reconcile(body)
    assert phase(kube) == "Waiting"
    assert outcome.wake_at is not None
    # the first notice: one e-mail, one webhook post
    assert [to for to, _ in smtp.mailbox.messages] == [["lead@example.com"]]
    msg = smtp.mailbox.messages[0][1]
    assert subject(msg) == "[AgentFlow] Approval needed for step ask of team/refund"
    assert msg["From"] == "agentflow@example.com" and msg["To"] == "lead@example.com"
    text = msg.get_content()
    assert "Refund 40 EUR to <!channel>?" in text  # e-mail is plain text: shown as written
    assert "https://console.example.com/#/runs/team%3Arefund" in text
    assert "agentflow approve refund ask --namespace team" in text
    assert "agentflow approve refund ask --namespace team --reject" in text
    assert len(hooks.bodies) == 1
    assert "&lt;!channel&gt;" in hooks.bodies[0]["text"] and "<!channel>" not in hooks.bodies[0]["text"]
    assert len(reasons(kube, "ApprovalNotified")) == 2
    # passes in between send nothing
    clock[0] += 600
    await op.reconcile(body)
    assert len(smtp.mailbox.messages) == 1 and len(hooks.bodies) == 1
    # the operator restarts: nothing recorded is sent again
    await op.close()
    op = Operator(kube, store, smtp.port, clock)
    await op.reconcile(body)
    assert len(smtp.mailbox.messages) == 1 and len(hooks.bodies) == 1
    # one hour waited: a reminder on both channels of the first group
    clock[0] = START + HOUR + 1
    outcome = await op.reconcile(body)
    assert subject(smtp.mailbox.messages[-1][1]).startswith("[AgentFlow] Reminder:")
    assert len(smtp.mailbox.messages) == 2 and len(hooks.bodies) == 2
    assert outcome.wake_at == START + 2 * HOUR
    # down from 1h to 3.5h: one reminder (the current period) and the escalation, once each
    await op.close()
    op = Operator(kube, store, smtp.port, clock)
    clock[0] = START + 3.5 * HOUR
    await op.reconcile(body)
    await op.reconcile(body)
    sent = [(to, subject(m)) for to, m in smtp.mailbox.messages[2:]]
    assert sorted(sent) == sorted([(["lead@example.com"], "[AgentFlow] Reminder: approval still needed for step "
                                                          "ask of team/refund"),
                                   (["boss@example.com"], "[AgentFlow] Escalated: approval needed for step ask of "
                                                          "team/refund")])
    assert len(hooks.bodies) == 3  # the escalation group has no webhook
    rows = await store.notifications_done(body["metadata"]["uid"])
    assert rows == {("ask", k) for k in ("notify:email", "notify:webhook", "remind-1:email", "remind-1:webhook",
                                         "remind-3:email", "remind-3:webhook", "escalate:email")}
    # decided: no more reminders
    body["metadata"]["annotations"] = decided_by(body, names.APPROVE_ANNOTATION, '{"node": "ask", "reason": "ok"}',
                                                 "finance")
    clock[0] = START + 10 * HOUR
    await op.reconcile(body)
    assert phase(kube) == "Succeeded"
    await op.reconcile(body)
    assert len(smtp.mailbox.messages) == 4 and len(hooks.bodies) == 3
    await op.close()


async def test_approvers_that_are_emails_are_notified_when_no_emails_are_given(store: PostgresStore,
                                                                              smtp: Smtp) -> None:
    kube = FakeKube()
    clock = [START]
    body = workflow({}, approvers=["ann@example.com", "finance", "bob@example.com"])
    op = Operator(kube, store, smtp.port, clock, username=None)
    await op.reconcile(body)
    assert [to for to, _ in smtp.mailbox.messages] == [["ann@example.com", "bob@example.com"]]
    await op.close()


async def test_a_failing_webhook_is_retried_with_backoff_then_sent_once(store: PostgresStore, hooks: Hooks) -> None:
    kube = FakeKube(secrets=[secret("slack", hooks.url)])
    clock = [START]
    hooks.fail = 2
    body = workflow({"webhookSecretRef": {"name": "slack"}})
    op = Operator(kube, store, None, clock)
    await op.reconcile(body)
    assert phase(kube) == "Waiting"
    assert len(hooks.bodies) == 1 and op.sleeps == [10.0, 20.0]
    assert len(reasons(kube, "ApprovalNotified")) == 1 and not reasons(kube, "NotificationFailed")
    await op.close()


async def test_a_webhook_that_keeps_failing_is_given_up_with_a_warning_and_the_run_keeps_waiting(
        store: PostgresStore, hooks: Hooks) -> None:
    kube = FakeKube(secrets=[secret("slack", hooks.url)])
    clock = [START]
    hooks.fail = 100
    body = workflow({"webhookSecretRef": {"name": "slack"}})
    op = Operator(kube, store, None, clock)
    await op.reconcile(body)
    assert phase(kube) == "Waiting" and not hooks.bodies
    assert op.sleeps == [10.0, 20.0, 40.0]
    [warning] = reasons(kube, "NotificationFailed")
    assert "HTTP 503" in warning and "after 4 tries" in warning
    # given up is recorded: a restart does not try again
    await op.close()
    hooks.fail = 0
    op = Operator(kube, store, None, clock)
    await op.reconcile(body)
    assert not hooks.bodies
    await op.close()


@pytest.mark.parametrize(("url", "namespace", "labelled", "hosts", "says"), [
    ("https://hooks.evil.example/x", "team", True, ("127.0.0.1",), "not on the operator's allowlist"),
    (None, "team", True, ("hooks.slack.com",), "not on the operator's allowlist"),
    (None, "team", False, ("127.0.0.1",), "lacks the label agentflow.dev/credential"),
    (None, "other", True, ("127.0.0.1",), "Secret team/slack (notify webhookSecretRef) does not exist"),
])
async def test_refused_webhooks_are_warned_about_never_posted_and_never_fail_the_run(
        store: PostgresStore, hooks: Hooks, url: str | None, namespace: str, labelled: bool, hosts: tuple[str, ...],
        says: str) -> None:
    kube = FakeKube(secrets=[secret("slack", url or hooks.url, namespace=namespace, labelled=labelled)])
    clock = [START]
    body = workflow({"webhookSecretRef": {"name": "slack"}})
    op = Operator(kube, store, None, clock, hosts=hosts)
    await op.reconcile(body)
    assert phase(kube) == "Waiting" and not hooks.bodies and op.sleeps == []
    [warning] = reasons(kube, "NotificationFailed")
    assert says in warning and hooks.url not in warning  # the URL is the tenant's secret
    await op.close()


async def test_an_unreachable_smtp_relay_is_retried_then_warned_about(store: PostgresStore, smtp: Smtp) -> None:
    kube = FakeKube()
    clock = [START]
    body = workflow({"emails": ["lead@example.com"]})
    op = Operator(kube, store, 1, clock)  # nothing listens on port 1
    await op.reconcile(body)
    assert phase(kube) == "Waiting"
    assert op.sleeps == [10.0, 20.0, 40.0]
    [warning] = reasons(kube, "NotificationFailed")
    assert "could not be reached" in warning
    await op.close()


async def test_a_wrong_smtp_password_fails_for_good_without_retries(store: PostgresStore, smtp: Smtp) -> None:
    kube = FakeKube()
    clock = [START]
    body = workflow({"emails": ["lead@example.com"]})
    op = Operator(kube, store, smtp.port, clock, username="mallory")
    await op.reconcile(body)
    assert op.sleeps == [] and not smtp.mailbox.messages
    [warning] = reasons(kube, "NotificationFailed")
    assert "refused the login" in warning
    await op.close()


async def test_without_an_smtp_relay_email_notices_fail_with_a_warning_saying_so(store: PostgresStore) -> None:
    kube = FakeKube()
    body = workflow({"emails": ["lead@example.com"]})
    op = Operator(kube, store, None, [START])
    await op.reconcile(body)
    assert phase(kube) == "Waiting"
    [warning] = reasons(kube, "NotificationFailed")
    assert "no SMTP relay configured" in warning
    await op.close()


async def test_a_collected_run_takes_its_notification_rows_with_it(store: PostgresStore, smtp: Smtp) -> None:
    kube = FakeKube()
    body = workflow({"emails": ["lead@example.com"]})
    op = Operator(kube, store, smtp.port, [START])
    await op.reconcile(body)
    uid = body["metadata"]["uid"]
    assert await store.notifications_done(uid)
    collected = await store.delete_run(uid)
    assert collected.rows["agentflow_notifications"] == 1
    assert await store.notifications_done(uid) == set()
    await op.close()

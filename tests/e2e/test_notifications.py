"""Approval notifications on a real cluster: a Workflow's approval step waits; the operator (on this machine) sends
the first notice by e-mail to a real SMTP server (aiosmtpd) and to a Slack-compatible webhook (a recording HTTP
server), both on loopback and allowed by the operator's flags; the operator is killed and started again and sends
nothing twice; the reminder comes once per period; a cancelled run is reminded of no more.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from .conftest import SESSION_PREFIX, Cluster, fresh_namespace
from .test_operator import Operator, free_port

pytestmark = pytest.mark.e2e

PREFIX = "nt-"


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Any]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(raw, policy=email.policy.default)))
        return "250 OK"


class Recorder(http.server.ThreadingHTTPServer):
    bodies: list[dict[str, Any]]


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        assert isinstance(self.server, Recorder)
        self.server.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port("127.0.0.1")
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture(scope="module")
def hook() -> Iterator[Recorder]:
    server = Recorder(("127.0.0.1", 0), Hook)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def notify_operator(cluster: Cluster, crds: None, postgres_dsn: str, mailbox: tuple[Mailbox, int],
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    op = Operator(cluster, postgres_dsn, host, tmp_path_factory.mktemp("notify") / "operator.log",
                  ["--namespace", f"{SESSION_PREFIX}{PREFIX}*", "--smtp-host", "127.0.0.1",
                   "--smtp-port", str(mailbox[1]), "--smtp-from", "agentflow@example.com",
                   "--notify-webhook-hosts", "127.0.0.1", "--console-url", "https://console.example.com"])
    op.start()
    yield op
    op.stop()


def workflow(hook_secret: str) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "refund"},
            "spec": {"steps": [{"name": "ask", "kind": "approval", "approval": {
                "message": "Refund 40 EUR?", "approvers": ["finance"],
                "notify": {"emails": ["lead@example.com"], "webhookSecretRef": {"name": hook_secret},
                           "remindEvery": "1m"}}}]}}


def events(cluster: Cluster, namespace: str, reason: str) -> list[str]:
    items = cluster.get_json("events", "-n", namespace)["items"]
    return [e["message"] for e in items if e.get("reason") == reason]


def test_notice_restart_without_duplicates_reminder_and_silence_after_cancel(
        cluster: Cluster, notify_operator: Operator, mailbox: tuple[Mailbox, int], hook: Recorder) -> None:
    box, _ = mailbox
    with fresh_namespace(cluster, PREFIX) as namespace:
        hook_url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
        cluster.apply({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "approvals-hook", "labels": {"agentflow.dev/credential": "true"}},
                       "stringData": {"url": hook_url}}, namespace)
        cluster.apply(workflow("approvals-hook"), namespace)
        started = time.monotonic()

        cluster.wait_until("the first notice by e-mail and webhook",
                           lambda: len(box.messages) >= 1 and len(hook.bodies) >= 1, timeout=120)
        to, msg = box.messages[0]
        assert to == ["lead@example.com"]
        assert "refund" in str(msg["Subject"]) and namespace in str(msg["Subject"])
        text = msg.get_content()
        assert f"agentflow approve refund ask --namespace {namespace}" in text
        assert f"https://console.example.com/#/runs/{namespace}%3Arefund" in text
        assert "Refund 40 EUR?" in hook.bodies[0]["text"]
        cluster.wait_until("the ApprovalNotified Events",
                           lambda: len(events(cluster, namespace, "ApprovalNotified")) >= 2, timeout=60)

        # killed and started again before the first reminder is due: the notice is not sent twice
        notify_operator.kill()
        notify_operator.start()
        time.sleep(max(0.0, 40 - (time.monotonic() - started)))
        assert len(box.messages) == 1 and len(hook.bodies) == 1

        # the first reminder, once per channel
        cluster.wait_until("the first reminder", lambda: len(box.messages) >= 2 and len(hook.bodies) >= 2,
                           timeout=120)
        assert str(box.messages[1][1]["Subject"]).strip().startswith("[AgentFlow] Reminder:")
        time.sleep(10)
        assert len(box.messages) == 2 and len(hook.bodies) == 2

        # cancelled: no more reminders
        cluster.kubectl("-n", namespace, "patch", "workflows.agentflow.dev", "refund", "--type=merge",
                        "-p", '{"spec": {"cancel": true}}')
        cluster.wait_until("the run to be cancelled", lambda: (cluster.get_json(
            "workflows.agentflow.dev", "refund", "-n", namespace).get("status") or {}).get("phase") == "Cancelled",
            timeout=120)
        time.sleep(75)
        assert len(box.messages) == 2 and len(hook.bodies) == 2
        assert not events(cluster, namespace, "NotificationFailed")

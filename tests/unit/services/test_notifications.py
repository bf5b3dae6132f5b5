"""The approval notifier's failure paths, without a network: PostgreSQL away, a Workflow deleted mid-retry, a
step that is not an approval with notify. (Delivery itself: tests/integration/test_notifications.py.)"""

from __future__ import annotations

import socket
from typing import Any

from agentflow.k8s.podspec import PodConfig
from agentflow.models import Catalog
from agentflow.notify.delivery import WebhookPoster
from agentflow.services.notifications import ApprovalNotifier, NotifySettings
from agentflow.services.reconcile import WorkflowReconciler
from agentflow.storage.errors import StorageUnavailable
from agentflow.testing import SIGNING_KEY, FakeKube, MemoryStore

UID = "0b5e7c1a-0000-4000-8000-0000000000aa"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workflow(approval: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "wf", "namespace": "team", "uid": UID, "generation": 1, "annotations": {}},
            "spec": {"steps": [{"name": "ask", "kind": "approval", "approval": approval}]}}


class Setup:
    def __init__(self, url: str = "https://hooks.example.com/x", hosts: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.kube = FakeKube(secrets=[{"metadata": {"name": "hook", "namespace": "team",
                                                    "labels": {"agentflow.dev/credential": "true"}},
                                       "data": {"url": url}}])
        self.store = MemoryStore()
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: Any = None

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)
            if self.on_sleep is not None:
                self.on_sleep()

        self.notifier = ApprovalNotifier(self.kube, self.store, NotifySettings(webhook_hosts=hosts), mailer=None,
                                         poster=WebhookPoster(hosts, timeout=2), clock=lambda: self.now, sleep=sleep)
        self.reconciler = WorkflowReconciler(self.kube, self.store, PodConfig(image="runtime:dev",
                                                                              callback_url="http://10.88.0.1:8081"),
                                             signing_key=SIGNING_KEY, clock=lambda: self.now,
                                             notifier=self.notifier)

    async def reconcile(self, body: dict[str, Any]) -> Any:
        outcome = await self.reconciler.reconcile(body, Catalog())
        await self.notifier.drain()
        return outcome


def failed(kube: FakeKube) -> list[str]:
    return [e["message"] for e in kube.events if e["reason"] == "NotificationFailed"]


async def test_an_outcome_that_cannot_be_recorded_is_still_not_sent_twice_by_this_process() -> None:
    s = Setup()
    body = workflow({"message": "ok?", "notify": {"webhookSecretRef": {"name": "hook"}, "remindEvery": "1h"}})

    async def broken(*args: Any, **kwargs: Any) -> bool:
        raise StorageUnavailable("PostgreSQL went away")

    s.store.record_notification = broken  # type: ignore[method-assign]
    await s.reconcile(body)
    await s.reconcile(body)
    s.now += 3600  # the reminder is due: what is recorded is read again, and the unrecorded notice still counts
    await s.reconcile(body)
    await s.reconcile(body)
    assert s.kube.statuses[-1]["phase"] == "Waiting"
    messages = failed(s.kube)  # hooks.example.com is not on the allowlist: refused for good, each said once
    assert len(messages) == 2 and "approval notification for ask" in messages[0]
    assert "approval reminder 1 for ask" in messages[1] and "not on the operator's allowlist" in messages[1]
    await s.notifier.close()


async def test_a_notification_store_that_fails_alone_gives_a_retry_wake_up() -> None:
    s = Setup()
    body = workflow({"message": "ok?", "notify": {"webhookSecretRef": {"name": "hook"}}})

    async def broken(run_uid: str) -> set[tuple[str, str]]:
        raise StorageUnavailable("the notifications table cannot be read")

    s.store.notifications_done = broken  # type: ignore[method-assign]
    outcome = await s.reconcile(body)
    outcome = await s.reconcile(body)
    assert s.kube.statuses[-1]["phase"] == "Waiting"
    assert outcome.wake_at is not None and outcome.wake_at <= s.now + 30
    assert not s.store.notifications and not failed(s.kube)
    await s.notifier.close()


async def test_a_deleted_workflows_retrying_send_stops_without_recording() -> None:
    s = Setup(url=f"http://127.0.0.1:{closed_port()}/hook")
    s.on_sleep = lambda: s.notifier.forget(UID)
    body = workflow({"message": "ok?", "notify": {"webhookSecretRef": {"name": "hook"}}})
    await s.reconcile(body)
    assert s.sleeps == [10.0]  # one try refused (nothing listens), then the Workflow went away
    assert not s.store.notifications and not failed(s.kube)
    await s.notifier.close()


async def test_an_unreachable_webhook_is_retried_then_given_up_once() -> None:
    s = Setup(url=f"http://127.0.0.1:{closed_port()}/hook")
    body = workflow({"message": "ok?", "notify": {"webhookSecretRef": {"name": "hook"}}})
    await s.reconcile(body)
    await s.reconcile(body)
    assert s.sleeps == [10.0, 20.0, 40.0, 80.0, 160.0]
    [message] = failed(s.kube)
    assert "could not be reached" in message and "after 6 tries" in message
    assert s.store.notifications[(UID, "ask", "notify:webhook")][0] == "failed"
    await s.notifier.close()


async def test_approvals_without_notify_send_nothing() -> None:
    s = Setup()
    outcome = await s.reconcile(workflow({"message": "ok?"}))
    outcome = await s.reconcile(workflow({"message": "ok?"}))
    assert s.kube.statuses[-1]["phase"] == "Waiting" and outcome.wake_at is None
    assert not s.store.notifications and not failed(s.kube)
    await s.notifier.close()


async def test_with_no_webhook_host_allowed_no_secret_is_even_read() -> None:
    s = Setup(hosts=())
    body = workflow({"message": "ok?", "notify": {"webhookSecretRef": {"name": "hook"}}})
    await s.reconcile(body)
    await s.reconcile(body)
    [message] = failed(s.kube)
    assert "allows no webhook hosts" in message and not s.kube.secret_reads
    await s.notifier.close()

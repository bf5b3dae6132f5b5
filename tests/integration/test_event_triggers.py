"""Event triggers with a real nats-server: events published on the stream start their triggers' runs (in the
shipped FakeKube), through the durable consumer; an event the handler could not finish (the API server away) is
delivered again and starts its run once; the consumer remembers its place across a restart, so an event is
acted on once; two consumers share the events, each going to one of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentflow.events.jetstream import JetStream
from agentflow.events.settings import ConnectSettings
from agentflow.events.triggers import EventTriggers, consumer_name
from agentflow.events.wire import phase_message
from agentflow.k8s.kube import KubeError
from agentflow.models.trigger import TRIGGER_LABEL
from agentflow.testing import FakeKube
from services.nats import NatsServer

from .test_events import STREAM
from .test_events_process import until

pytestmark = pytest.mark.integration

CONSUMER = consumer_name(b"k" * 32)

TEMPLATE: dict[str, Any] = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTemplate",
    "metadata": {"name": "postmortem", "namespace": "team"},
    "spec": {"inputs": {"run": ""}, "steps": [{"name": "s", "kind": "tool", "tool": "echo"}]},
}
TRIGGER: dict[str, Any] = {
    "apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTrigger",
    "metadata": {"name": "on-failure", "namespace": "team", "uid": "uid-t", "generation": 1},
    "spec": {"workflowTemplateRef": {"name": "postmortem"}, "events": {"types": ["PhaseChanged"]},
             "inputs": {"run": "body.workflow"}, "when": "body.to == 'Failed'"},
}


async def connect(server: NatsServer) -> JetStream:
    return await JetStream.connect(ConnectSettings((server.url,), request_timeout=2.0, connect_timeout=2.0,
                                                   reconnect_wait=0.2))


async def publish(server: NatsServer, *runs: str, to: str = "Failed") -> None:
    js = await connect(server)
    try:
        for run in runs:
            assert await js.publish(phase_message(f"uid-{run}", "team", run, 3, "Running", to, 1.0), STREAM.name)
    finally:
        await js.close()


def runs(kube: FakeKube) -> list[str]:
    return sorted(o["spec"]["inputs"]["run"] for (plural, _, _), o in kube.resources.items()
                  if plural == "workflows" and TRIGGER_LABEL in (o["metadata"].get("labels") or {}))


class Running:
    """EventTriggers.run in a task, on the real server."""

    def __init__(self, triggers: EventTriggers, server: NatsServer) -> None:
        self.stopped = asyncio.Event()
        self.task = asyncio.ensure_future(triggers.run(lambda: connect(server), STREAM.name, self.stopped))

    async def stop(self) -> None:
        self.stopped.set()
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def stream(nats_server: NatsServer) -> AsyncIterator[NatsServer]:
    js = await connect(nats_server)
    try:
        await js.ensure_stream(STREAM)
    finally:
        await js.close()
    yield nats_server


async def test_events_on_the_stream_start_their_runs_once_through_an_api_outage(stream: NatsServer) -> None:
    kube = FakeKube(TEMPLATE, TRIGGER)
    kube.list_error = KubeError("the API server is away")  # the first deliveries cannot be acted on
    triggers = EventTriggers(kube, CONSUMER, cache_seconds=0)
    running = Running(triggers, stream)
    try:
        await asyncio.sleep(1.0)  # the consumer is made: it starts at what is published from now on
        await publish(stream, "deploy-a", "deploy-b")
        await publish(stream, "deploy-c", to="Succeeded")  # when is false
        await asyncio.sleep(1.0)
        assert runs(kube) == []
        kube.list_error = None  # back: the events not acknowledged come again (after the retry delay)
        await until("both runs", lambda: runs(kube) == ["deploy-a", "deploy-b"])
    finally:
        await running.stop()
    restarted = Running(EventTriggers(kube, CONSUMER, cache_seconds=0), stream)  # a new process: same place
    try:
        await publish(stream, "deploy-d")
        await until("the new event's run", lambda: runs(kube) == ["deploy-a", "deploy-b", "deploy-d"])
        await asyncio.sleep(1.0)
        assert runs(kube) == ["deploy-a", "deploy-b", "deploy-d"]  # nothing acted on twice
    finally:
        await restarted.stop()


async def test_two_replicas_share_the_events(stream: NatsServer) -> None:
    kube = FakeKube(TEMPLATE, TRIGGER)
    seen: list[list[str]] = [[], []]

    def counting(i: int) -> EventTriggers:
        triggers = EventTriggers(kube, CONSUMER, cache_seconds=0)
        handle = triggers.handle

        async def counted(event: Any) -> bool:
            seen[i].append(event.subject)
            return await handle(event)

        triggers.handle = counted  # type: ignore[method-assign]
        return triggers

    replicas = [Running(counting(0), stream), Running(counting(1), stream)]
    try:
        await asyncio.sleep(1.0)
        names = [f"run-{i}" for i in range(40)]
        await publish(stream, *names)
        await until("every run", lambda: runs(kube) == sorted(names))
    finally:
        for replica in replicas:
            await replica.stop()
    assert len(seen[0]) + len(seen[1]) == 40  # each event handed to one of them
    assert sorted(seen[0] + seen[1]) == sorted(f"agentflow.team.{n}.PhaseChanged" for n in names)
    js = await connect(stream)
    try:
        info = await js._js.consumer_info(STREAM.name, CONSUMER)
    finally:
        await js.close()
    assert info.num_ack_pending == 0 and info.num_pending == 0

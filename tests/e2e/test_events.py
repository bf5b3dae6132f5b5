"""Events on a real cluster: the operator publishes a fan-out run's journal to a real nats-server (Debian's package,
on this machine); nats-server is killed mid-run and stays down until the run has finished (the run never waits
for it, and the operator's lag metric shows what waits); once it is back, the stream holds every journal record
of the run exactly once, in sequence order, with no gap, the same as PostgreSQL's journal, read back through
`agentflow events`. An event trigger starts a run when another run of its namespace succeeds.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow.engine.journal import verify
from agentflow.storage import PostgresStore
from services.nats import NatsServer, NatsUnavailable, running_nats

from .conftest import SESSION_PREFIX, Cluster, fresh_namespace
from .test_operator import REPO, CountingServer, Operator, counting_workflow, wait_finished

pytestmark = pytest.mark.e2e

PREFIX = "ev-"
ITEMS = 10


@pytest.fixture(scope="module")
def nats_host() -> Iterator[NatsServer]:
    """nats-server on loopback: the operator runs on this machine (step pods never talk to NATS)."""
    try:
        with running_nats() as server:
            yield server
    except NatsUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"no nats-server in CI: {e}")
        pytest.skip(f"no nats-server: {e}")


@pytest.fixture(scope="module")
def events_operator(cluster: Cluster, crds: None, step_images: None,
                    postgres_dsn: str, nats_host: NatsServer,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    op = Operator(cluster, postgres_dsn, host, tmp_path_factory.mktemp("events") / "operator.log",
                  ["--namespace", f"{SESSION_PREFIX}{PREFIX}*", "--nats-url", nats_host.url])
    op.start()
    yield op
    op.stop()


def metric(op: Operator, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def stream_of(url: str, namespace: str, workflow: str) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "events", "--nats-url", url, "-n", namespace,
                          workflow, "--json"], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO / "operator")})
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


async def journal_of(dsn: str, uid: str) -> list[dict[str, Any]]:
    store = await PostgresStore.connect(dsn)
    try:
        return [r.to_dict() for r in await store.load_journal(uid)]
    finally:
        await store.close()


async def test_killing_nats_mid_run_loses_nothing_and_duplicates_nothing(
        cluster: Cluster, events_operator: Operator, nats_host: NatsServer, postgres_dsn: str) -> None:
    assert cluster.host_address
    server = CountingServer(cluster.host_address)
    with fresh_namespace(cluster, PREFIX) as namespace:
        try:
            docs = counting_workflow(server.url, ITEMS)
            cluster.apply(docs, namespace)
            name = "exactly-once"

            # Some events are on the stream: NATS goes away (SIGKILL), mid-run.
            cluster.wait_until("the first events on the stream",
                               lambda: len(stream_of(nats_host.url, namespace, name)) >= 4, timeout=180, every=1)
            nats_host.kill()
            wf = cluster.get_json("workflows.agentflow.dev", name, "-n", namespace)
            assert (wf.get("status") or {}).get("phase") not in ("Succeeded", "Failed"), "killed after the run ended"

            # The run goes on to the end without NATS; what is not published waits in the outbox, and says so.
            wf = wait_finished(cluster, namespace, name, timeout=600)
            assert wf["status"]["phase"] == "Succeeded", json.dumps(wf["status"], indent=2)
            cluster.wait_until("the lag metric to show the waiting events",
                               lambda: (metric(events_operator, "agentflow_events_pending") or 0) > 0, timeout=60)
            assert (metric(events_operator, "agentflow_events_lag_seconds") or 0) > 0

            # NATS is back (same store): the publisher catches up from the outbox.
            nats_host.start()
            cluster.wait_until("the outbox to drain",
                               lambda: metric(events_operator, "agentflow_events_pending") == 0, timeout=180)

            uid = wf["metadata"]["uid"]
            journal = await journal_of(postgres_dsn, uid)
            bodies = stream_of(nats_host.url, namespace, name)
            records = [b["record"] for b in bodies if b["kind"] == "journal"]
            assert {b["run"] for b in bodies} == {uid}
            assert [r["seq"] for r in records] == list(range(len(journal))), "every record once, in order, no gap"
            assert records == journal
            assert verify(records).ok
            types = [r["type"] for r in records]
            assert types[0] == "RunStarted" and types[-1] == "RunFinished"
            assert types.count("StepSucceeded") == ITEMS + 2
            phases = [(b["from"], b["to"]) for b in bodies if b["kind"] == "phase"]
            assert phases[0] == (None, "Running") and phases[-1][1] == "Succeeded"
            assert all(a[1] == b[0] for a, b in itertools.pairwise(phases)), phases
            assert len(bodies) == len(journal) + len(phases)
            # the outage was real to the operator: it tried, backed off and caught up
            log = Path(events_operator.log).read_text()
            assert "events cannot be published now" in log or "publishing events failed" in log
            nodes = sorted(key.rsplit("/", 2)[1] for key in server.calls)
            assert nodes == sorted(["first", "last", *(f"fan[{i}]" for i in range(ITEMS))]), "each step ran once"
        finally:
            server.close()


def test_the_operator_log_says_where_it_publishes(events_operator: Operator) -> None:
    log = Path(events_operator.log).read_text()
    assert "publishing events to NATS at nats://127.0.0.1:" in log and "stream AGENTFLOW" in log


def test_an_event_trigger_starts_a_run_when_another_succeeds(cluster: Cluster, events_operator: Operator) -> None:
    """A WorkflowTrigger with spec.events hears a run of its namespace succeed (PhaseChanged, from the stream) and
    starts one run of its template with the run's name as input; the started run's own events start nothing more
    (a trigger never hears its own runs), and the step of each ran once."""
    assert cluster.host_address
    consuming = "consuming agentflow.> from the stream AGENTFLOW"
    cluster.wait_until("the event triggers' consumer", lambda: consuming in Path(events_operator.log).read_text(),
                       timeout=120, every=1)
    server = CountingServer(cluster.host_address)
    with fresh_namespace(cluster, PREFIX) as namespace:
        try:
            tool = {"name": "count", "http": {"url": server.url, "method": "POST"}, "timeoutSeconds": 20}
            step = {"name": "one", "kind": "tool", "tool": "count", "inputs": {"step": "${{ inputs.source }}"}}
            cluster.apply([
                {"apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy", "metadata": {"name": "counting"},
                 "spec": {"tools": [tool]}},
                {"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTemplate", "metadata": {"name": "next"},
                 "spec": {"inputs": {"source": ""}, "steps": [step]}},
                {"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTrigger", "metadata": {"name": "chain"},
                 "spec": {"workflowTemplateRef": {"name": "next"}, "events": {"types": ["PhaseChanged"]},
                          "when": 'body.to == "Succeeded"', "inputs": {"source": "body.workflow"}}},
            ], namespace)
            cluster.apply([{"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "first"},
                            "spec": {"inputs": {"source": "first"}, "steps": [step]}}], namespace)
            assert wait_finished(cluster, namespace, "first")["status"]["phase"] == "Succeeded"

            def started() -> list[dict[str, Any]]:
                return cluster.get_json("workflows.agentflow.dev", "-n", namespace,
                                        "-l", "agentflow.dev/trigger=chain")["items"]

            cluster.wait_until("the triggered run", lambda: len(started()) == 1, timeout=180, every=1)
            [run] = started()
            assert run["spec"]["inputs"] == {"source": "first"}
            assert run["metadata"]["labels"]["agentflow.dev/event-depth"] == "1"
            done = wait_finished(cluster, namespace, run["metadata"]["name"])
            assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=2)
            trigger = cluster.get_json("workflowtriggers.agentflow.dev", "chain", "-n", namespace)
            assert trigger["status"]["lastDelivery"]["outcome"] == "Started"
            cluster.wait_until("the triggered run's own success to be read (and start nothing)",
                               lambda: len(server.calls) == 2, timeout=30, every=1)
            time.sleep(10)  # its PhaseChanged to Succeeded is on the stream by now: nothing more may start
            assert len(started()) == 1 and len(server.calls) == 2
        finally:
            server.close()

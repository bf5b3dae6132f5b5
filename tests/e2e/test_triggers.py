"""WorkflowTriggers on a real cluster: the operator started with its trigger port takes a GitHub-style signed
delivery, starts one run of the template with the mapped inputs, and a second post of the same delivery (same
X-GitHub-Delivery) starts nothing, even after the operator restarts; an unsigned post is 401. Not run in the unit
tier (pytest -m e2e, a cluster)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import SESSION_PREFIX, Cluster, fresh_namespace
from .test_operator import (
    REPO,
    Operator,
    free_port,
    load_manifests,
    wait_finished,
)

pytestmark = pytest.mark.e2e

PREFIX = "tr-"
EXAMPLE = REPO / "examples/manifests/scheduled-digest.yaml"
KEY = b"e2e-trigger-key"


@pytest.fixture(scope="module")
def trigger_operator(cluster: Cluster, crds: None, step_images: None, postgres_dsn: str,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Operator, int]]:
    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    port = free_port("127.0.0.1")
    op = Operator(cluster, postgres_dsn, host, tmp_path_factory.mktemp("triggers") / "operator.log",
                  ["--namespace", f"{SESSION_PREFIX}{PREFIX}*", "--trigger-listen", f"127.0.0.1:{port}"])
    op.start()
    listening(cluster, port)
    yield op, port
    op.stop()


def listening(cluster: Cluster, port: int) -> None:
    """The trigger server starts after the callback server (which op.start() waits for)."""
    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    cluster.wait_until("the trigger server to listen", up, timeout=60, every=0.3)


def post(port: int, namespace: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/triggers/{namespace}/digest-on-release",
                                     data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_signed_delivery_starts_one_run_and_its_replay_none(
        cluster: Cluster, trigger_operator: tuple[Operator, int]) -> None:
    op, port = trigger_operator
    with fresh_namespace(cluster, PREFIX) as namespace:
        docs = [d for d in load_manifests(EXAMPLE) if d["kind"] not in ("Workflow", "WorkflowSchedule")]
        cluster.apply(docs, namespace)
        cluster.apply({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "digest-webhook", "labels": {"agentflow.dev/trigger": "true"}},
                       "stringData": {"secret": KEY.decode()}}, namespace)
        body = json.dumps({"action": "published", "release": {"tag_name": "v1.4.0"}}).encode()
        headers = {"Content-Type": "application/json", "X-GitHub-Delivery": "e2e-delivery-1",
                   "X-Hub-Signature-256": "sha256=" + hmac.new(KEY, body, hashlib.sha256).hexdigest()}

        status, answer = post(port, namespace, body, {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64})
        assert status == 401, answer
        status, first = post(port, namespace, body, headers)
        assert status == 201 and first["started"], first
        status, again = post(port, namespace, body, headers)
        assert status == 200 and again["duplicate"] and again["workflow"] == first["workflow"], again

        op.stop()  # the dedupe lives in the API server: a restarted operator finds the run
        op.start()
        listening(cluster, port)
        status, after = post(port, namespace, body, headers)
        assert status == 200 and after["workflow"] == first["workflow"], after

        items = cluster.get_json("workflows.agentflow.dev", "-n", namespace,
                                 "-l", "agentflow.dev/trigger=digest-on-release")["items"]
        assert [i["metadata"]["name"] for i in items] == [first["workflow"]]
        assert items[0]["spec"]["inputs"] == {"topic": "release v1.4.0"}
        wf = wait_finished(cluster, namespace, first["workflow"])
        assert wf["status"]["phase"] == "Succeeded", wf["status"]
        assert wf["status"]["templateSpec"]["inputs"]["topic"] == "release v1.4.0"
        trigger = cluster.get_json("workflowtriggers.agentflow.dev", "digest-on-release", "-n", namespace)
        assert trigger["status"]["lastDelivery"]["id"] == "e2e-delivery-1"
        assert trigger["status"]["lastDelivery"]["workflow"] == first["workflow"]

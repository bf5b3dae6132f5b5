"""A tenant against the platform, through the real API server and kubelet: a namespace's own pod, holding a
service-account token made for AgentFlow's audience, gets no attempt and can post no result.

Step pods authenticate with their projected service-account token (audience ``agentflow``), which the
operator checks with a TokenReview and maps to the one attempt the operator created that pod for. Anyone
allowed to create pods in a namespace can mount a token of that audience too; this test is that tenant.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Cluster
from .test_operator import RUNTIME_IMAGE, Operator

pytestmark = pytest.mark.e2e

PROBE = r"""
import json, urllib.error, urllib.request
base = "%(url)s"
tokens = {"agentflow": open("/var/run/agentflow/token").read().strip(),
          "api": open("/var/run/api/token").read().strip(), "none": None}
out = {}
for token_name, token in tokens.items():
    for path, body in (("/v1/attempt", None), ("/v1/attempt/result", b'{"output": "forged"}')):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = "Bearer " + token
        request = urllib.request.Request(base + path, data=body, headers=headers,
                                         method="POST" if body else "GET")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                out[token_name + " " + path] = [r.status, r.read().decode()[:300]]
        except urllib.error.HTTPError as e:
            out[token_name + " " + path] = [e.code, e.read().decode()[:300]]
print("PROBE " + json.dumps(out))
"""


def impostor(url: str) -> dict[str, Any]:
    token = {"serviceAccountToken": {"path": "token", "expirationSeconds": 600}}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "impostor"},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": RUNTIME_IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-c", PROBE % {"url": url}],
                            "volumeMounts": [{"name": "agentflow", "mountPath": "/var/run/agentflow"},
                                             {"name": "api", "mountPath": "/var/run/api"}]}],
            "volumes": [
                {"name": "agentflow", "projected": {"sources": [
                    {"serviceAccountToken": {**token["serviceAccountToken"], "audience": "agentflow"}}]}},
                {"name": "api", "projected": {"sources": [token]}},  # the API server's own audience
            ],
        },
    }


def test_a_tenants_pod_with_an_agentflow_token_gets_no_attempt_and_posts_no_result(
        cluster: Cluster, operator: Operator, op_namespace: str) -> None:
    ns = op_namespace
    cluster.apply(impostor(f"http://{operator.host}:{operator.port}"), ns)

    def done() -> bool:
        phase = cluster.get_json("pod", "impostor", "-n", ns)["status"].get("phase")
        return phase in ("Succeeded", "Failed")

    cluster.wait_until("the impostor pod to finish", done, timeout=180)
    logs = cluster.kubectl("logs", "impostor", "-n", ns).stdout
    (line,) = [x for x in logs.splitlines() if x.startswith("PROBE ")]
    answers = json.loads(line.removeprefix("PROBE "))
    assert len(answers) == 6, answers
    for what, (status, body) in answers.items():
        assert status == 401, (what, status, body)
    assert "runs no AgentFlow attempt" in answers["agentflow /v1/attempt"][1], answers
    assert "refused by the API server" in answers["api /v1/attempt"][1], answers
    assert "missing token" in answers["none /v1/attempt"][1], answers

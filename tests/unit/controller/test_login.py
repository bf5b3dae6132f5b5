"""The operator's API server address in a pod: from the Service variables, not cluster DNS."""

from __future__ import annotations

from agentflow.controller.main import in_cluster_server


def test_the_service_variables_name_the_api_server() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_server(env) == "https://10.96.0.1:443"
    assert in_cluster_server({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}) == (
        "https://[fd00::1]:6443")


def test_outside_a_pod_there_is_none() -> None:
    assert in_cluster_server({}) is None
    assert in_cluster_server({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}) is None

"""`agentflow gateway` as a process on a real PostgreSQL: the API on --listen, Prometheus on --metrics-listen."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_are_served_on_their_own_listener_only(postgres_dsn: str, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(base64.b64encode(os.urandom(48)).decode())
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("apiVersion: agentflow.dev/v1alpha1\nkind: Budget\nmetadata: {name: b, namespace: a}\n"
                       "spec: {limits: {usd: 1}}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentflow.cli", "gateway", "--listen", "127.0.0.1:0", "--metrics-listen",
         "127.0.0.1:0", "--postgres-dsn", postgres_dsn, "--token-key-file", str(key), "--budgets", str(budgets),
         "--upstream", "offline"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        api = proc.stdout.readline().strip()
        metrics = proc.stdout.readline().strip()
        assert api.startswith("agentflow gateway listening on http://127.0.0.1:"), (api, proc.stderr)
        assert metrics.startswith("agentflow gateway metrics on http://127.0.0.1:"), metrics
        api_url, metrics_url = api.rsplit(" ", 1)[1], metrics.rsplit(" ", 1)[1]
        assert metrics_url.endswith("/metrics") and metrics_url.removesuffix("/metrics") != api_url
        status, text = get(metrics_url)
        assert status == 200 and "# TYPE agentflow_gateway_calls_total counter" in text
        assert get(f"{api_url}/metrics")[0] == 404, "the API port serves no metrics"
        status, health = get(f"{api_url}/healthz")
        assert status == 200 and json.loads(health) == {"ok": True}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and get_refused(metrics_url) is False:
        time.sleep(0.2)
    assert get_refused(metrics_url), "the metrics listener stops with the gateway"


def get_refused(url: str) -> bool:
    try:
        get(url)
    except urllib.error.URLError:
        return True
    return False

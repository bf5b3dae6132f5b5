"""One hard Budget against 60 concurrent model calls from gVisor step pods, through the operator's gateway.

The operator runs on this machine (the ``Operator`` of test_operator.py) with its gateway on, scoped to this
module's namespaces; step pods get ``AGENTFLOW_GATEWAY_URL`` and call the gateway with their attempt token.
The Agent's model points at a fake OpenAI-compatible upstream this test starts on the pod-reachable host
address. A Workflow fans one llm step out over 60 items, all 60 at once (``parallelism: 60``).

The upstream holds every answer until ``HOLD_UNTIL`` calls are in flight at once (or, when fewer ever
arrive, until no new call came for ``QUIET`` seconds), and at least ``MIN_HOLD`` seconds, so admitted calls
overlap; it answers with
``completion_tokens`` = the request's ``max_tokens``, so what a call costs is what the gateway reserved for
it (give or take its prompt estimate's margin). The Budget's limit holds about 56.5 such reservations: the
gateway admits 55 or 56 calls, and refuses the rest with BudgetExceeded before they reach the upstream. A
refused item fails the fan-out step, which cancels the items still running (the default failure policy).

Checked: the ledger's spend (PostgreSQL) never passes the limit and nothing stays reserved; the upstream saw
only admitted calls, at least 20 of them at once (60 gVisor sandboxes starting together load a 2-core node to a
load average of 80: 25 to 50 calls overlapped in the runs here); every refused item failed with BudgetExceeded
(retried only when a pod failed before it, retryOn PodFailed); the Workflow follows its failure policy (the
fan-out step fails, its dependent never runs, the ``runOn: failure`` handler does, the run is Failed); the Budget's
status shows the ledger's spend, at most the limit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentflow.k8s.names import ATTEMPT_LABEL, NODE_ANNOTATION

from .conftest import SESSION_PREFIX, Cluster, fresh_namespace
from .test_operator import REPO, Operator, free_port

pytestmark = pytest.mark.e2e

API = "agentflow.dev/v1alpha1"
PREFIX = "gwb-"  # namespaces of this module; its operator watches only these
MODEL = "openai/gpt-4o-mini"  # priced in litellm's cost map, which the gateway reads
ITEMS = 60
HOLD_UNTIL = 20
MIN_HOLD, QUIET = 1.5, 90.0  # pods of a loaded 2-core node may need a while from Running to their call
MAX_TOKENS = 4000
KINDS = "workflows.agentflow.dev,agents.agentflow.dev,promptversions.agentflow.dev,budgets.agentflow.dev," \
        "toolpolicies.agentflow.dev"
ADMITTED_RESERVATIONS = 56.5  # the limit, in reservations of one call


class HoldingUpstream:
    """An OpenAI-compatible chat server that holds its answers (see the module docstring) and records calls."""

    def __init__(self, host: str) -> None:
        self.calls: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.released = False
        self.released_because = ""
        self.last_arrival = 0.0
        self._cond = threading.Condition()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                arrived = time.monotonic()
                with upstream._cond:
                    upstream.calls.append({"body": body, "authorization": self.headers.get("Authorization"),
                                           "arrived": arrived})
                    upstream.last_arrival = arrived
                    upstream.in_flight += 1
                    upstream.max_in_flight = max(upstream.max_in_flight, upstream.in_flight)
                    while not upstream.released:
                        if upstream.in_flight >= HOLD_UNTIL:
                            upstream.release(f"{upstream.in_flight} calls in flight")
                        elif time.monotonic() - upstream.last_arrival >= QUIET:
                            upstream.release(f"no new call for {QUIET:.0f}s with {upstream.in_flight} in flight")
                        else:
                            upstream._cond.wait(timeout=0.5)
                    upstream.in_flight -= 1
                time.sleep(max(0.0, arrived + MIN_HOLD - time.monotonic()))
                max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
                prompt_tokens = max(1, sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4)
                data = json.dumps({
                    "id": f"chatcmpl-{len(upstream.calls)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "gpt-4o-mini"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "summary: ok"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens,
                              "total_tokens": prompt_tokens + max_tokens},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # 60 pods connect at once

        self._httpd = Server((host, 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def release(self, because: str) -> None:
        """Answer every held call (the caller holds the condition's lock)."""
        self.released, self.released_because = True, because
        self._cond.notify_all()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        with self._cond:
            self.release("stopped")
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="module")
def upstream(cluster: Cluster) -> Iterator[HoldingUpstream]:
    if not cluster.host_address:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    server = HoldingUpstream(cluster.host_address)
    yield server
    server.stop()


def operator_help() -> str:
    return subprocess.run([sys.executable, "-m", "agentflow.cli", "operator", "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=60).stdout


@pytest.fixture(scope="module")
def gateway_operator(cluster: Cluster, crds: None, step_images: None, postgres_dsn: str,
                     upstream: HoldingUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    gateway_port = free_port(host)
    args = ["--namespace", f"{SESSION_PREFIX}{PREFIX}*",
            # Step pods call the model through the gateway, not the offline model test_operator.py sets.
            "--step-env", "AGENTFLOW_MODEL_MODE=live",
            "--gateway-listen", f"{host}:{gateway_port}", "--gateway-url", f"http://{host}:{gateway_port}",
            # The platform lists the endpoint the Agent's apiBase names (any other would be refused).
            "--model-endpoint", upstream.base_url]
    if "--step-cpu-request" in operator_help():
        # 60 step pods at the default 100m do not fit a 2-CPU node; they wait on the model, they need little.
        args += ["--step-cpu-request", "10m"]
    op = Operator(cluster, postgres_dsn, host, tmp_path_factory.mktemp("gateway-operator") / "operator.log", args)
    op.start()
    yield op
    op.stop()


def manifests(upstream_url: str, limit_usd: float) -> list[dict[str, Any]]:
    items = [f"T-{i:02d}" for i in range(ITEMS)]
    return [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "upstream-key", "labels": {"agentflow.dev/credential": "true"}},
         "stringData": {"api-key": "sk-e2e-upstream"}},
        {"apiVersion": API, "kind": "Budget", "metadata": {"name": "hard-cap"},
         "spec": {"period": "total", "limits": {"usd": limit_usd}, "enforcement": "hard"}},
        {"apiVersion": API, "kind": "Agent", "metadata": {"name": "summarizer"},
         "spec": {"role": "ticket summarizer", "instructions": "Summarise the ticket in one line.",
                  "model": {"name": MODEL, "apiBase": upstream_url, "maxTokens": MAX_TOKENS, "temperature": 0,
                            "credentialsSecretRef": {"name": "upstream-key", "key": "api-key"}},
                  # This test is about budgets: without PII redaction a pod does not load Presidio and spaCy,
                  # so 60 gVisor pods on a 2-core node reach their model call together.
                  "pii": {"redact": False}}},
        {"apiVersion": API, "kind": "PromptVersion", "metadata": {"name": "summarize-v1"},
         "spec": {"prompt": "summarize", "version": "1",
                  "messages": [{"role": "user", "content": "Summarise ticket ${{ inputs.ticket }}."}]}},
        {"apiVersion": API, "kind": "ToolPolicy", "metadata": {"name": "handlers"},
         "spec": {"tools": [{"name": "record", "builtin": {"name": "echo"}}]}},
        {"apiVersion": API, "kind": "Workflow", "metadata": {"name": "fan-out"},
         "spec": {
             "inputs": {"tickets": items},
             "budgetRef": {"name": "hard-cap"},
             "podCleanup": "never",
             "steps": [
                 {"name": "summarize", "kind": "llm", "agentRef": {"name": "summarizer"},
                  "promptRef": {"name": "summarize-v1"}, "forEach": "inputs.tickets", "parallelism": ITEMS,
                  "timeoutSeconds": 600, "inputs": {"ticket": "${{ item }}"},
                  # A gVisor sandbox that could not start on a loaded node (StartError) is no call and no spend:
                  # tried again; a BudgetExceeded is never retryable, whatever retryOn says.
                  "retry": {"limit": 2, "retryOn": ["PodFailed"]}},
                 {"name": "report", "kind": "tool", "tool": "record", "dependsOn": ["summarize"],
                  "inputs": {"all": "${{ steps.summarize.output }}"}},
                 {"name": "on-failure", "kind": "tool", "tool": "record", "runOn": "failure",
                  "inputs": {"failed": True}},
             ],
         }},
    ]


def limit_for(model: str) -> tuple[float, float]:
    """(limit in dollars, one call's reservation): ADMITTED_RESERVATIONS calls of MAX_TOKENS output tokens
    and a short prompt, at the prices the gateway charges."""
    from agentflow.llm import litellm_provider

    prices = litellm_provider().prices(model)
    assert prices is not None, f"{model} has no price in litellm's cost map"
    per_input, per_output = prices
    # The gateway reserves (prompt tokens * 1.1 + 8) input tokens; the prompt here is ~40-80 tokens.
    one = per_input * (60 * 1.1 + 8) + per_output * MAX_TOKENS
    return round(ADMITTED_RESERVATIONS * one, 6), one


def ledger_rows(dsn: str, namespace: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Budget's window row and the call log of the namespace, read straight from PostgreSQL."""
    import asyncio

    import asyncpg

    async def read() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        conn = await asyncpg.connect(dsn)
        try:
            window = await conn.fetchrow(
                "SELECT spent_usd, reserved_usd, spent_tokens, reserved_tokens FROM agentflow_budget_windows "
                "WHERE namespace = $1 AND name = 'hard-cap'", namespace)
            calls = await conn.fetch(
                "SELECT node, status, cost_usd, cached, output_tokens FROM agentflow_llm_calls WHERE namespace = $1",
                namespace)
            states = await conn.fetch(
                "SELECT state, count(*) AS n FROM agentflow_budget_reservations WHERE budgets @> ARRAY[$1]::text[] "
                "GROUP BY state", f"{namespace}/hard-cap")
        finally:
            await conn.close()
        assert window is not None, f"no ledger window for Budget {namespace}/hard-cap"
        return {**dict(window), "reservations": {r["state"]: r["n"] for r in states}}, [dict(c) for c in calls]

    return asyncio.run(read())


class PodWatch:
    """Step pods by phase, sampled while the run goes on: the most Running at once, and why the scheduler
    left any Pending (what limits concurrency on a small node)."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.max_running = 0
        self.last: dict[str, int] = {}
        self.unschedulable: set[str] = set()
        self.failed_logs: dict[str, str] = {}
        self.stuck: dict[str, str] = {}  # pod -> why its container cannot start (the image is missing, ...)

    def sample(self) -> None:
        pods = self.cluster.get_json("pods", "-n", self.namespace, "-l",
                                     "app.kubernetes.io/managed-by=agentflow")["items"]
        phases: dict[str, int] = {}
        for p in pods:
            phase = p["status"].get("phase", "?")
            phases[phase] = phases.get(phase, 0) + 1
            for c in p["status"].get("conditions", []):
                if c.get("type") == "PodScheduled" and c.get("status") == "False":
                    self.unschedulable.add(c.get("message") or c.get("reason", ""))
            for cs in p["status"].get("containerStatuses", []):
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in STUCK:
                    self.stuck[p["metadata"]["name"]] = f"{waiting['reason']}: {waiting.get('message', '')[:300]}"
        self._keep_logs(pods)
        self.last = phases
        self.max_running = max(self.max_running, phases.get("Running", 0))

    def _keep_logs(self, pods: list[dict[str, Any]], most: int = 3) -> None:
        """The last lines of the logs of the first pods that failed, read at once (the operator may delete them)."""
        for p in pods:
            name = p["metadata"]["name"]
            if p["status"].get("phase") == "Failed" and name not in self.failed_logs and len(self.failed_logs) < most:
                logs = self.cluster.kubectl("logs", "-n", self.namespace, name, "--tail=5", check=False)
                self.failed_logs[name] = (logs.stdout[-2000:] + logs.stderr[-500:]).strip()

    def __str__(self) -> str:
        text = f"at most {self.max_running} Running at once, last seen {self.last}"
        text += f"; unschedulable: {' | '.join(sorted(self.unschedulable))}" if self.unschedulable else ""
        return text + "".join(f"\n--- logs of failed pod {n}:\n{log}" for n, log in self.failed_logs.items())


STUCK = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"})
"""Waiting reasons of a step container that will not go away by waiting."""


def wait_sampling(cluster: Cluster, namespace: str, name: str, pods: PodWatch, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pods.sample()
        if pods.stuck:
            pod, why = next(iter(pods.stuck.items()))
            raise AssertionError(f"{len(pods.stuck)} step pods cannot start, e.g. {pod}: {why}; pods: {pods}")
        wf = cluster.get_json("workflows.agentflow.dev", name, "-n", namespace)
        if (wf.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled"):
            return wf
        if time.monotonic() > deadline:
            raise AssertionError(f"workflow {namespace}/{name} did not finish in {timeout:.0f}s; pods: {pods}; "
                                 f"status: {json.dumps(wf.get('status'))[:3000]}")
        time.sleep(2)


def test_sixty_concurrent_calls_never_overspend_one_hard_budget(
        cluster: Cluster, gateway_operator: Operator, upstream: HoldingUpstream, postgres_dsn: str) -> None:
    limit, one_call = limit_for(MODEL)
    with fresh_namespace(cluster, PREFIX) as namespace:
        try:
            run_and_check(cluster, namespace, upstream, postgres_dsn, limit, one_call)
        finally:
            # The operator removes its finalizers only while it runs (it stops with this module).
            cluster.kubectl("delete", KINDS, "--all", "-n", namespace, "--wait=true", "--timeout=120s", check=False,
                            timeout=150)


NEVER_STARTED = frozenset({"StartError", "ContainerCannotRun"})
"""Terminated reasons of a container whose process never ran (the runtime could not start it)."""


def pods_that_never_started(cluster: Cluster, namespace: str) -> set[tuple[str, int]]:
    """(node, attempt) of the step pods whose container never ran (podCleanup never keeps them all)."""
    found = set()
    for pod in cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=agentflow")["items"]:
        meta = pod["metadata"]
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if ((cs.get("state") or {}).get("terminated") or {}).get("reason") in NEVER_STARTED:
                found.add(((meta.get("annotations") or {}).get(NODE_ANNOTATION, ""),
                           int((meta.get("labels") or {}).get(ATTEMPT_LABEL, "0"))))
    return found


def run_and_check(cluster: Cluster, namespace: str, upstream: HoldingUpstream, postgres_dsn: str, limit: float,
                  one_call: float) -> None:
    docs = manifests(upstream.base_url, limit)
    cluster.apply(docs, namespace)
    started = time.monotonic()
    pods = PodWatch(cluster, namespace)
    wf = wait_sampling(cluster, namespace, "fan-out", pods, timeout=900)
    took = time.monotonic() - started
    status = wf["status"]
    nodes = status["nodes"]
    items = {k: v for k, v in nodes.items() if k.startswith("summarize[")}
    succeeded = sorted(k for k, v in items.items() if v["phase"] == "Succeeded")
    failed = {k: v for k, v in items.items() if v["phase"] == "Failed"}
    context = (f"took {took:.0f}s; upstream: {len(upstream.calls)} calls, at most {upstream.max_in_flight} at "
               f"once, released: {upstream.released_because}; step pods: {pods}; "
               f"status: {json.dumps(status, indent=1)[:4000]}")

    # Every item ran (once, or again after a sandbox that never started). The budget refused some (BudgetExceeded,
    # not retried); a failed item fails the fan-out step, which cancels the items still running (the default
    # failure policy), so the rest Succeeded or were Cancelled.
    phases = {k: v["phase"] for k, v in items.items()}
    assert len(items) == ITEMS, context
    assert set(phases.values()) <= {"Succeeded", "Failed", "Cancelled"}, context
    never_started = pods_that_never_started(cluster, namespace)
    context += f"\nstep pods whose sandbox never started (tried again): {never_started}"
    for node, entry in failed.items():
        # Each Failed item ended refused by the budget. An item may have needed more than one attempt when its pod
        # failed first (a sandbox that never started, an attempt it could not fetch on a loaded node: retryOn
        # PodFailed); BudgetExceeded itself reaches the pod as not retryable (tests/unit/gateway/test_clients.py),
        # and the ledger below shows no refused call was made twice (refusals <= Failed + Cancelled items).
        assert entry.get("message", "").startswith("BudgetExceeded"), f"{node}: {entry}\n{context}"
        assert entry["attempts"] <= 3, f"{node}: {entry}"
    assert len(failed) >= 1, f"the limit should refuse some of the {ITEMS} calls\n{context}"

    # The ledger: what was spent never passes the limit, nothing stays reserved (calls of cancelled pods are
    # released or settled moments after the run ends).
    deadline = time.monotonic() + 60
    window, calls = ledger_rows(postgres_dsn, namespace)
    while window["reservations"].get("held", 0) and time.monotonic() < deadline:
        time.sleep(1)
        window, calls = ledger_rows(postgres_dsn, namespace)
    reservations = window["reservations"]
    admitted = sum(reservations.values())
    context += f"\nledger: {window}; calls by status: {Counter(c['status'] for c in calls)}"
    spent = float(window["spent_usd"])
    assert spent <= limit + 1e-9, f"spent ${spent} of a ${limit} hard limit\n{context}"
    assert float(window["reserved_usd"]) == 0 and window["reserved_tokens"] == 0, context
    assert reservations.get("held", 0) == 0, context
    ok = [c for c in calls if c["status"] == "ok"]
    refused = [c for c in calls if c["status"] == "BudgetExceeded"]
    # Each Failed item was refused; a refused item whose result arrived after the fan-out had already failed is
    # Cancelled instead (the run stopped waiting for it), so refusals may outnumber Failed items.
    cancelled = [k for k, v in items.items() if v["phase"] == "Cancelled"]
    assert len(failed) <= len(refused) <= len(failed) + len(cancelled), context
    assert len(ok) == reservations.get("settled", 0) >= len(succeeded), context
    assert abs(sum(c["cost_usd"] for c in ok) - spent) < 1e-6, context

    # The upstream saw only admitted calls, at least HOLD_UNTIL of them at once: 20+ concurrent calls
    # against one hard Budget, and the ones that did not fit never left the gateway.
    assert 0 < len(upstream.calls) <= admitted, context
    assert all(c["authorization"] == "Bearer sk-e2e-upstream" for c in upstream.calls), \
        "the gateway sends the Agent's key from its Secret"
    assert upstream.max_in_flight >= HOLD_UNTIL, (
        f"only {upstream.max_in_flight} calls reached the upstream at once (pods not running at the same "
        f"time?)\n{context}")

    # The failure policy: the fan-out step failed, its dependent never ran, the failure handler did.
    assert status["phase"] == "Failed", context
    assert "BudgetExceeded" in json.dumps(status.get("conditions", [])), context
    assert nodes.get("report", {}).get("phase") in (None, "Pending", "Skipped"), context
    assert nodes["on-failure"]["phase"] == "Succeeded", context

    print(f"\n{ITEMS} calls, limit ${limit:.6f} (~{ADMITTED_RESERVATIONS} reservations of ${one_call:.6f}): "
          f"{admitted} admitted ({reservations}), {len(failed)} refused, items {Counter(phases.values())}, "
          f"spent ${spent:.6f}; upstream: {len(upstream.calls)} calls, at most {upstream.max_in_flight} at once; "
          f"step pods: {pods.max_running} Running at most; workflow took {took:.0f}s")

    # The Budget's status comes from the ledger: spent <= limit, nothing reserved.
    def budget_status() -> dict[str, Any]:
        return dict(cluster.get_json("budgets.agentflow.dev", "hard-cap", "-n", namespace).get("status") or {})

    cluster.wait_until("the Budget's status to show the ledger's spend",
                       lambda: abs(float(budget_status().get("spentUsd") or 0) - spent) < 1e-6, timeout=120)
    b = budget_status()
    assert float(b["spentUsd"]) <= limit, b
    assert not b.get("reservedUsd"), b
    assert float(b.get("remainingUsd", 0)) >= 0, b

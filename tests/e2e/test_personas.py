"""The chart's personas through the real API server: who may run, approve, cancel and read, and where.

The persona ClusterRoles are rendered from charts/agentflow (``helm template --show-only
templates/personas.yaml``, a release of this module's own) and applied; each persona is a ServiceAccount of a
fresh namespace ``team``, bound there by a RoleBinding, as the chart's README tells a cluster admin to do. A
second namespace ``other`` holds a run nobody of ``team`` may see. Users act as themselves: ``kubectl --as``
(impersonation, which the local cluster's admin may do), and the CLI and the console with a kubeconfig or
bearer token of the persona's own (``kubectl create token``).

Without an operator (RBAC alone decides): each persona's verbs (``kubectl auth can-i``), a viewer neither
creates nor cancels, a runner does, and no persona reads ``other``'s run through kubectl, the CLI
(``agentflow approve/cancel -n other``) or the console (its runs, a node's results, the run's events with
their costs; the audit chain is not shown per user at all).

With an operator and its admission webhook (:func:`tests.e2e.admission.admission_operator`, no step pods: the
runs here are approval gates only): a runner, even one the Workflow names among its approvers, cannot approve
(the webhook asks RBAC for ``approve`` on ``workflows/approval``); the approver can; and a persona's own
service-account token gets nothing from the callback endpoint or the gateway (they answer step pods only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .admission import admission_operator, drain
from .conftest import SESSION_PREFIX, Cluster, fresh_namespace
from .test_console_rbac import _call, console  # noqa: F401 (fixture)
from .test_operator import REPO, Operator, free_port
from .test_operator_admission import wait_phase
from .test_operator_incluster import helm, run_helm  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e

API = "agentflow.dev/v1alpha1"
PREFIX = "personas-"  # namespaces of this module; its operator watches only these
PERSONAS = ("viewer", "runner", "approver", "prompt-author", "budget-admin")


@dataclass
class Tenancy:
    team: str  # the namespace the personas are bound in
    other: str  # another tenant's namespace, with a run of its own
    kubeconfigs: dict[str, str]  # persona -> a kubeconfig holding its own token (the CLI runs as the persona)

    def account(self, persona: str) -> str:
        return f"system:serviceaccount:{self.team}:{persona}"

    def kubectl_as(self, cluster: Cluster, persona: str, *args: str,
                   input: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl as the persona would run it: its user name and the groups a service account has."""
        return cluster.kubectl(*args, f"--as={self.account(persona)}", "--as-group=system:serviceaccounts",
                               f"--as-group=system:serviceaccounts:{self.team}", "--as-group=system:authenticated",
                               input=input, check=False)

    def token(self, cluster: Cluster, persona: str, *audience: str) -> str:
        args = ("--audience", audience[0]) if audience else ()
        return cluster.kubectl("create", "token", persona, "-n", self.team, "--duration", "1h", *args).stdout.strip()


def gate(name: str, approvers: list[str] | None = None) -> dict[str, Any]:
    """A run that is one approval gate: it waits for a human and starts no pod."""
    approval: dict[str, Any] = {"message": "ship it?"}
    if approvers:
        approval["approvers"] = approvers
    return {"apiVersion": API, "kind": "Workflow", "metadata": {"name": name},
            "spec": {"steps": [{"name": "gate", "kind": "approval", "approval": approval}]}}


def bindings(namespace: str, roles: dict[str, str]) -> list[dict[str, Any]]:
    """A ServiceAccount per persona and the RoleBinding the chart's README shows (a ClusterRole, bound here)."""
    objects: list[dict[str, Any]] = []
    for persona, role in roles.items():
        objects += [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": persona, "namespace": namespace}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": f"agentflow-{persona}", "namespace": namespace},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
             "subjects": [{"kind": "ServiceAccount", "name": persona, "namespace": namespace}]},
        ]
    return objects


def kubeconfig_for(cluster: Cluster, token: str, namespace: str, path: Path) -> str:
    """The cluster's address and CA from the admin's kubeconfig, and only this token as the user."""
    raw = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout)
    (entry,) = raw["clusters"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [entry],
        "users": [{"name": "persona", "user": {"token": token}}],
        "contexts": [{"name": "persona", "context": {"cluster": entry["name"], "user": "persona",
                                                     "namespace": namespace}}],
        "current-context": "persona"}))
    return str(path)


def agentflow(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with no credential but the --kubeconfig it is given (no KUBECONFIG of the admin's)."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run([sys.executable, "-m", "agentflow.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**env, "PYTHONPATH": str(REPO / "operator")})


@pytest.fixture(scope="module")
def tenancy(cluster: Cluster, crds: None, helm: tuple[str, Path],  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenancy]:
    release = f"personas-{uuid.uuid4().hex[:6]}"  # fullname RELEASE-agentflow: roles of this module alone
    rendered = run_helm(helm, cluster, "template", release, str(helm[1]), "--show-only", "templates/personas.yaml",
                        "--set", "postgres.dsn=postgresql://unused@db/unused").stdout
    roles = [d for d in yaml.safe_load_all(rendered) if d]
    by_persona = {r["metadata"]["labels"]["agentflow.dev/persona"]: r["metadata"]["name"] for r in roles}
    assert sorted(by_persona) == sorted(PERSONAS), by_persona
    cluster.apply(roles)
    tmp = tmp_path_factory.mktemp("personas")
    try:
        with fresh_namespace(cluster, PREFIX) as team, fresh_namespace(cluster, PREFIX) as other:
            cluster.apply(bindings(team, by_persona))
            cluster.apply(bindings(other, by_persona))  # the other tenant's people, bound there only
            cluster.apply(gate("private"), other)
            tenancy = Tenancy(team, other, {})
            for persona in PERSONAS:
                tenancy.kubeconfigs[persona] = kubeconfig_for(cluster, tenancy.token(cluster, persona), team,
                                                              tmp / f"{persona}.kubeconfig")
            yield tenancy
    finally:
        for role in roles:
            cluster.kubectl("delete", "clusterrole", role["metadata"]["name"], "--ignore-not-found", check=False)


# -- RBAC alone


@pytest.mark.parametrize(("persona", "allowed"), [
    ("viewer", {"get workflows", "list workflows", "watch workflows", "list promptversions", "list budgets"}),
    ("runner", {"get workflows", "list workflows", "watch workflows", "list promptversions", "list budgets",
                "create workflows", "patch workflows", "delete workflows", "create workflowschedules"}),
    ("approver", {"get workflows", "list workflows", "watch workflows", "list promptversions", "list budgets",
                  "patch workflows", "approve workflows/approval"}),
    ("prompt-author", {"get workflows", "list workflows", "watch workflows", "list promptversions", "list budgets",
                       "create promptversions", "patch agents"}),
    ("budget-admin", {"get workflows", "list workflows", "watch workflows", "list promptversions", "list budgets",
                      "patch budgets"}),
])
def test_each_persona_holds_its_verbs_and_no_other(cluster: Cluster, tenancy: Tenancy, persona: str,
                                                   allowed: set[str]) -> None:
    asked = allowed | {"get workflows", "create workflows", "patch workflows", "delete workflows",
                       "approve workflows/approval", "create workflowschedules", "create promptversions",
                       "patch agents", "patch budgets", "create toolpolicies", "get secrets", "create pods"}
    got = {}
    for what in sorted(asked):
        verb, _, resource = what.partition(" ")
        name, _, sub = resource.partition("/")
        qualified = name if name in ("secrets", "pods") else f"{name}.agentflow.dev"
        ask = ["auth", "can-i", verb, qualified, *([f"--subresource={sub}"] if sub else [])]
        got[what] = tenancy.kubectl_as(cluster, persona, *ask, "-n", tenancy.team).stdout.strip() == "yes"
        elsewhere = tenancy.kubectl_as(cluster, persona, *ask, "-n", tenancy.other).stdout.strip()
        assert elsewhere == "no", (persona, what, "in the other namespace", elsewhere)
    assert {w for w, yes in got.items() if yes} == allowed, got


def test_a_viewer_neither_creates_nor_cancels_and_a_runner_does_both(cluster: Cluster, tenancy: Tenancy) -> None:
    ns = tenancy.team
    body = json.dumps(gate("by-runner"))
    refused = tenancy.kubectl_as(cluster, "viewer", "create", "-n", ns, "-f", "-", input=body)
    assert refused.returncode != 0 and 'cannot create resource "workflows"' in refused.stderr, refused.stderr
    created = tenancy.kubectl_as(cluster, "runner", "create", "-n", ns, "-f", "-", input=body)
    assert created.returncode == 0, created.stderr

    viewer = agentflow("cancel", "by-runner", "-n", ns, "--kubeconfig", tenancy.kubeconfigs["viewer"])
    assert viewer.returncode == 2, viewer.stdout + viewer.stderr
    assert f'User "{tenancy.account("viewer")}" cannot patch resource "workflows"' in viewer.stderr, viewer.stderr
    assert not cluster.get_json("workflows.agentflow.dev", "by-runner", "-n", ns)["spec"].get("cancel")

    runner = agentflow("cancel", "by-runner", "-n", ns, "--kubeconfig", tenancy.kubeconfigs["runner"])
    assert runner.returncode == 0, runner.stderr
    assert cluster.get_json("workflows.agentflow.dev", "by-runner", "-n", ns)["spec"]["cancel"] is True


def test_no_persona_reads_another_namespaces_run_through_kubectl_or_the_cli(
        cluster: Cluster, tenancy: Tenancy) -> None:
    other = tenancy.other
    for persona in PERSONAS:
        listed = tenancy.kubectl_as(cluster, persona, "get", "workflows.agentflow.dev", "-n", other)
        assert listed.returncode != 0 and "forbidden" in listed.stderr.lower(), (persona, listed.stderr)
        read = tenancy.kubectl_as(cluster, persona, "get", "workflows.agentflow.dev", "private", "-n", other,
                                  "-o", "json")
        assert read.returncode != 0 and not read.stdout, (persona, read.stdout)
        kubeconfig = tenancy.kubeconfigs[persona]
        for args in (("approve", "private", "gate"), ("cancel", "private")):
            out = agentflow(*args, "-n", other, "--kubeconfig", kubeconfig)
            assert out.returncode == 2, (persona, args, out.stdout, out.stderr)
            assert 'cannot get resource "workflows"' in out.stderr and f'namespace "{other}"' in out.stderr, (
                persona, out.stderr)
            assert "operator's RBAC" not in out.stderr  # the user's own RBAC refused it, and it says so
            assert "ship it?" not in out.stdout + out.stderr
    assert not cluster.get_json("workflows.agentflow.dev", "private", "-n", other)["spec"].get("cancel")


def test_no_persona_reads_another_namespaces_runs_results_or_costs_through_the_console(
        cluster: Cluster, tenancy: Tenancy, console: str) -> None:  # noqa: F811 (fixture)
    ref = f"{tenancy.other}:private"
    for persona in PERSONAS:
        token = tenancy.token(cluster, persona)
        code, rows = _call(f"{console}/api/runs?namespace={tenancy.team}", token)
        assert code == 200 and all(r["runId"].startswith(f"{tenancy.team}:") for r in rows), (persona, rows)
        for path in (f"/api/runs?namespace={tenancy.other}", f"/api/runs/{ref}", f"/api/runs/{ref}/nodes/gate",
                     f"/api/runs/{ref}/events?after=-1"):
            code, body = _call(f"{console}{path}", token)
            assert code == 403, (persona, path, code, body)
            assert "RBAC refused" in body["error"] and "ship it?" not in json.dumps(body), (persona, path, body)
        code, body = _call(f"{console}/api/runs/{ref}/cancel", token, {"reason": "not mine"})
        assert code == 403, (persona, code, body)
        code, body = _call(f"{console}/api/audit", token)
        assert code == 200 and not body.get("rows"), (persona, body)  # the chain is not shown per user at all
    assert not cluster.get_json("workflows.agentflow.dev", "private", "-n", tenancy.other)["spec"].get("cancel")


# -- with the operator: its approval webhook, callback endpoint and gateway


@dataclass
class Served:
    operator: Operator
    gateway: str  # the gateway's base URL


@pytest.fixture(scope="module")
def served(cluster: Cluster, postgres_dsn: str, tenancy: Tenancy,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    host = cluster.host_address
    if not host:
        pytest.skip("pods must reach this machine: set AGENTFLOW_E2E_HOST_ADDRESS for a cluster given by KUBECONFIG")
    gateway = f"http://{host}:{free_port(host)}"
    log = tmp_path_factory.mktemp("personas-operator") / "operator.log"
    with admission_operator(cluster, postgres_dsn, log, f"{SESSION_PREFIX}{PREFIX}*",
                            ["--gateway-listen", gateway.removeprefix("http://"), "--gateway-url", gateway]) as op:
        try:
            yield Served(op, gateway)
        finally:  # a glob: admission_operator leaves the draining to us (the finalizers need the operator)
            for ns in (tenancy.team, tenancy.other):
                drain(cluster, ns, op)


def test_a_runner_cannot_approve_even_named_an_approver_and_the_approver_can(
        cluster: Cluster, tenancy: Tenancy, served: Served) -> None:
    ns = tenancy.team
    # The runner writes the Workflow and names itself among the approvers: the step narrows, RBAC decides.
    body = gate("release", approvers=[tenancy.account("runner"), tenancy.account("approver")])
    created = tenancy.kubectl_as(cluster, "runner", "create", "-n", ns, "-f", "-", input=json.dumps(body))
    assert created.returncode == 0, created.stderr
    wait_phase(cluster, ns, "release", "Waiting")

    runner = agentflow("approve", "release", "gate", "-n", ns, "--kubeconfig", tenancy.kubeconfigs["runner"])
    assert runner.returncode == 2, runner.stdout + runner.stderr
    assert f"{tenancy.account('runner')} may not approve or reject steps of workflow {ns}/release" in runner.stderr
    assert "'approve' on workflows/approval" in runner.stderr, runner.stderr
    annotated = tenancy.kubectl_as(cluster, "runner", "annotate", "workflows.agentflow.dev", "release", "-n", ns,
                                   "agentflow.dev/approve=gate")
    assert annotated.returncode != 0 and "may not approve or reject" in annotated.stderr, annotated.stderr
    viewer = agentflow("approve", "release", "gate", "-n", ns, "--kubeconfig", tenancy.kubeconfigs["viewer"])
    assert viewer.returncode == 2 and 'cannot patch resource "workflows"' in viewer.stderr, viewer.stderr
    assert (wait_phase(cluster, ns, "release", "Waiting")["metadata"].get("annotations") or {}).get(
        "agentflow.dev/approve") is None

    approver = agentflow("approve", "release", "gate", "-n", ns, "--kubeconfig", tenancy.kubeconfigs["approver"],
                         "--reason", "reviewed")
    assert approver.returncode == 0, approver.stderr
    status = wait_phase(cluster, ns, "release", "Succeeded")["status"]
    by = json.loads(status["nodes"]["gate"]["outputPreview"])["by"]  # a status preview: masked, maybe
    assert by == tenancy.account("approver") or by.endswith(":approver"), status

    # The other tenant's run waits too (the operator watches it), and this approver cannot reach it.
    wait_phase(cluster, tenancy.other, "private", "Waiting")
    elsewhere = agentflow("approve", "private", "gate", "-n", tenancy.other, "--kubeconfig",
                          tenancy.kubeconfigs["approver"])
    assert elsewhere.returncode == 2 and 'cannot get resource "workflows"' in elsewhere.stderr, elsewhere.stderr


def _post(url: str, token: str, body: dict[str, Any] | None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()[:500]
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()[:500]


def test_a_persona_token_gets_nothing_from_the_callback_or_the_gateway(
        cluster: Cluster, tenancy: Tenancy, served: Served) -> None:
    wait_phase(cluster, tenancy.other, "private", "Waiting")  # the other tenant's run exists and is live
    callback = f"http://{served.operator.host}:{served.operator.port}"
    calls: list[tuple[str, dict[str, Any] | None]] = [
        (f"{callback}/v1/attempt", None),
        (f"{callback}/v1/attempt/result", {"output": "forged"}),
        (f"{callback}/v1/attempt/audit", {"events": []}),
        (f"{served.gateway}/v1/agentflow/memory/past_runs", {"query": "private", "limit": 5}),
        (f"{served.gateway}/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    ]
    for persona in PERSONAS:
        for token in (tenancy.token(cluster, persona, "agentflow"), tenancy.token(cluster, persona)):
            for url, body in calls:
                code, text = _post(url, token, body)
                assert code == 401, (persona, url, code, text)
                assert "ship it?" not in text, (persona, url, text)

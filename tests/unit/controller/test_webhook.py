"""The admission webhook: the validation of `agentflow validate`, its verdicts and its message."""

from __future__ import annotations

import asyncio
import base64
import copy
import inspect
import json
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
import yaml

from agentflow import cli
from agentflow.controller import handlers, webhook
from agentflow.controller.webhook import PLURALS, admission_message, register_admission, review
from agentflow.gateway.endpoints import EndpointPolicy
from agentflow.k8s import names
from agentflow.k8s.egress import EgressDenyList
from agentflow.models import Catalog
from agentflow.models.manifests import Problem, parse_resource
from agentflow.services import approvals
from agentflow.services.platform import PlatformPolicy
from agentflow.testing import SIGNING_KEY, FakeKube

ROOT = Path(__file__).resolve().parents[3]
API = "agentflow.dev/v1alpha1"
NAMESPACE = "team-a"

BROKEN = f"""\
apiVersion: {API}
kind: Workflow
metadata:
  name: broken
spec:
  steps:
    - name: a
      kind: llm
      agentRef: {{name: ghost}}
      promptRef: {{name: p1}}
      dependsOn: [b]
    - name: b
      kind: llm
      agentRef: {{name: writer}}
      promptRef: {{name: p1}}
      dependsOn: [a]
"""

SUPPORTING = f"""\
apiVersion: {API}
kind: Agent
metadata:
  name: writer
spec:
  role: writer
  instructions: Write.
  model: {{name: openai/gpt-4o-mini}}
---
apiVersion: {API}
kind: PromptVersion
metadata:
  name: p1
spec:
  prompt: p
  version: "1"
  messages:
    - role: user
      content: hi
"""

CYCLE = "spec.steps[0].dependsOn: dependsOn has a cycle: a -> b -> a"
UNKNOWN_AGENT = "spec.steps[0].agentRef.name: unknown Agent 'ghost'"


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def catalog_of(bodies: list[dict[str, Any]]) -> Catalog:
    catalog = Catalog()
    for body in bodies:
        resource = parse_resource(body)
        if resource.kind != "Workflow":
            catalog.add(resource)
    return catalog


def indices_of(bodies: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """What the operator's kopf indices hold: per kind, the bodies by namespace (None: cluster-scoped kinds)."""
    indices: dict[str | None, Any] = {plural: {} for plural in handlers.INDEXED}
    kinds = {**handlers.KINDS, **handlers.CLUSTER_KINDS}
    for body in bodies:
        plural = {kind: plural for plural, kind in kinds.items()}[body["kind"]]
        key = None if plural in handlers.CLUSTER_KINDS else NAMESPACE
        indices[plural].setdefault(key, []).append(body)
    return indices


def with_namespace(body: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"]["namespace"] = NAMESPACE
    return body


def handler_fns() -> dict[str, Callable[..., Any]]:
    registry = kopf.OperatorRegistry()
    register_admission(registry)
    return {str(h.id): h.fn for h in registry._webhooks.get_all_handlers()}


def call(fn: Callable[..., Any], body: dict[str, Any], indices: dict[str, Any], *, operation: str = "CREATE",
         old: dict[str, Any] | None = None, subresource: str | None = None) -> list[str]:
    """Call a validate handler with the kwargs kopf gives it; the warnings it added."""
    warnings: list[str] = []
    result = fn(body=kopf.Body(cast(kopf.RawBody, body)),
                old=kopf.Body(cast(kopf.RawBody, old)) if old is not None else None,
                namespace=body["metadata"].get("namespace"), operation=operation, subresource=subresource,
                warnings=warnings, dryrun=False, memo=None, **indices)
    if inspect.iscoroutine(result):
        asyncio.run(result)
    return warnings


# -- admission_message: the formatting


def test_message_lists_every_problem_with_its_path() -> None:
    problems = [Problem("Workflow/wf", "spec.steps[2].dependsOn[0]", "unknown step 'x'"),
                Problem("Workflow/wf", "", "not a mapping")]
    assert admission_message(problems) == (
        "Workflow/wf has 2 problems:\n- spec.steps[2].dependsOn[0]: unknown step 'x'\n- not a mapping"
    )


def test_message_of_one_problem_and_of_none() -> None:
    assert admission_message([Problem("Agent/a", "spec.role", "required")]) == (
        "Agent/a has 1 problem:\n- spec.role: required"
    )
    assert admission_message([]) is None


def test_message_names_a_second_source() -> None:
    message = admission_message([Problem("Workflow/a", "spec", "x"), Problem("Workflow/b", "spec", "y")])
    assert message is not None and message.endswith("- Workflow/b: spec: y")


# -- review: the verdicts


def test_rejects_a_cycle_and_an_unknown_agent_with_both_paths() -> None:
    verdict = review(docs(BROKEN)[0], catalog_of(docs(SUPPORTING)))
    assert not verdict.allowed
    assert verdict.message is not None
    assert verdict.message.startswith("Workflow/broken has 2 problems:")
    assert CYCLE in verdict.message
    assert UNKNOWN_AGENT in verdict.message


def test_accepts_a_valid_workflow() -> None:
    bodies = docs((ROOT / "examples" / "manifests" / "quickstart.yaml").read_text())
    catalog = catalog_of(bodies)
    for body in bodies:
        assert review(body, catalog) == webhook.Verdict(allowed=True), body["metadata"]["name"]


def test_unknown_references_alone_warn_by_default_and_reject_when_strict() -> None:
    body = docs(BROKEN)[0]
    del body["spec"]["steps"][0]["dependsOn"]  # no cycle: only the unknown Agent is left
    catalog = catalog_of(docs(SUPPORTING))
    verdict = review(body, catalog)
    assert verdict.allowed
    assert len(verdict.warnings) == 1 and verdict.warnings[0].startswith(UNKNOWN_AGENT)
    strict = review(body, catalog, references="reject")
    assert not strict.allowed and strict.message is not None and UNKNOWN_AGENT in strict.message


def test_without_a_catalog_references_are_not_checked() -> None:
    verdict = review(docs(BROKEN)[0], None)
    assert not verdict.allowed and verdict.message is not None
    assert CYCLE in verdict.message and "ghost" not in verdict.message


def test_a_body_that_does_not_parse_is_rejected_with_its_paths() -> None:
    body = {"apiVersion": API, "kind": "Workflow", "metadata": {"name": "wf"}, "spec": {"steps": "nope"}}
    verdict = review(body, Catalog())
    assert not verdict.allowed and verdict.message is not None
    assert verdict.message.startswith("Workflow/wf has ") and "- spec.steps" in verdict.message


@pytest.mark.parametrize("operation", ["DELETE", "UPDATE"])
def test_delete_and_spec_preserving_updates_are_always_allowed(operation: str) -> None:
    body = docs(BROKEN)[0]
    old = copy.deepcopy(body)
    body["metadata"]["finalizers"] = []  # kopf removing its finalizer from an invalid Workflow
    assert review(body, Catalog(), operation=operation, old=old).allowed


def test_an_update_of_an_object_being_deleted_is_allowed() -> None:
    body = docs(BROKEN)[0]
    old = copy.deepcopy(body)
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    body["spec"]["steps"].append({"name": "c", "kind": "llm", "dependsOn": ["nowhere"]})
    assert review(body, Catalog(), operation="UPDATE", old=old).allowed


def test_an_update_changing_the_spec_is_validated() -> None:
    bodies = docs((ROOT / "examples" / "manifests" / "quickstart.yaml").read_text())
    old, catalog = bodies[0], catalog_of(bodies)
    body = copy.deepcopy(old)
    body["spec"]["steps"][0]["dependsOn"] = ["act"]
    verdict = review(body, catalog, operation="UPDATE", old=old)
    assert not verdict.allowed and verdict.message is not None and "cycle" in verdict.message


# -- the kopf handlers


def test_handlers_cover_the_eight_kinds_on_create_and_update_without_side_effects() -> None:
    registry = kopf.OperatorRegistry()
    register_admission(registry)
    found = {str(h.id): h for h in registry._webhooks.get_all_handlers() if str(h.id) != "budget-workflows"}
    assert set(found) == {f"validate-{plural}" for plural in PLURALS}
    assert set(PLURALS) == {"workflows", "agents", "promptversions", "toolpolicies", "budgets", "workflowtemplates",
                            "workflowschedules", "workflowtriggers", "promptrollouts", "clusterworkflowtemplates"}
    for handler in found.values():
        assert list(handler.operations or []) == ["CREATE", "UPDATE"]
        assert handler.side_effects is False and not handler.ignore_failures and not handler.persistent
        assert handler.selector is not None and handler.selector.group == "agentflow.dev"
        assert handler.selector.version == "v1alpha1"


def test_the_handler_says_what_agentflow_validate_says(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(BROKEN + "---\n" + SUPPORTING)
    assert cli.main(["validate", str(manifest)]) != 0
    printed = capsys.readouterr().err.splitlines()
    prefix = re.compile(re.escape(str(manifest)) + r":\d+: ")
    from_cli = sorted(prefix.sub("", line) for line in printed if prefix.match(line))
    assert len(from_cli) == 2

    body, *supporting = docs(BROKEN + "---\n" + SUPPORTING)
    fn = handler_fns()["validate-workflows"]
    with pytest.raises(kopf.AdmissionError) as caught:
        call(fn, with_namespace(body), indices_of([with_namespace(b) for b in supporting]))
    assert caught.value.code == 422
    lines = str(caught.value).splitlines()
    assert lines[0] == "Workflow/broken has 2 problems:"
    assert sorted(line.removeprefix("- ") for line in lines[1:]) == from_cli


def test_the_handler_reads_the_catalog_of_the_objects_namespace_only() -> None:
    body, *supporting = docs(BROKEN + "---\n" + SUPPORTING)
    body = with_namespace(body)
    del body["spec"]["steps"][0]["dependsOn"]
    body["spec"]["steps"][0]["agentRef"]["name"] = "writer"
    fn = handler_fns()["validate-workflows"]
    assert call(fn, body, indices_of([with_namespace(b) for b in supporting])) == []
    elsewhere = indices_of(supporting)
    for index in elsewhere.values():  # the same Agent and PromptVersion, in another namespace
        index["other"] = index.pop(NAMESPACE, [])
    warnings = call(fn, body, elsewhere)
    assert any(w.startswith("spec.steps[0].agentRef.name: unknown Agent 'writer'") for w in warnings)


def test_the_handler_ignores_subresources_and_deletes() -> None:
    body = with_namespace(docs(BROKEN)[0])
    fn = handler_fns()["validate-workflows"]
    assert call(fn, body, indices_of([]), operation="UPDATE", subresource="status") == []
    assert call(fn, body, indices_of([]), operation="DELETE") == []


def test_the_other_kinds_are_validated_too() -> None:
    agent = with_namespace(docs(SUPPORTING)[0])
    agent["spec"]["instructions"] = "Answer ${{ steps.x.output }}"
    fn = handler_fns()["validate-agents"]
    with pytest.raises(kopf.AdmissionError) as caught:
        call(fn, agent, indices_of([]))
    assert "- spec.instructions: expression" in str(caught.value)


# -- through kopf's own admission code (its internals: this breaks loudly if kopf changes how it calls us)


async def test_kopf_answers_an_admission_review_with_our_verdict() -> None:
    from kopf._cogs.configs.configuration import OperatorSettings
    from kopf._cogs.structs.ephemera import AnyMemo
    from kopf._cogs.structs.ids import HandlerId
    from kopf._cogs.structs.references import Insights, Resource
    from kopf._cogs.structs.reviews import Request
    from kopf._core.engines.admission import build_webhooks, serve_admission_request
    from kopf._core.engines.indexing import OperatorIndexers
    from kopf._core.reactor.inventory import ResourceMemories

    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    register_admission(registry)
    indexers = OperatorIndexers()
    indexers.ensure(registry._indexing.get_all_handlers())  # empty indices, as at an operator's start
    insights = Insights()
    workflows = Resource(group="agentflow.dev", version="v1alpha1", plural="workflows", kind="Workflow",
                         namespaced=True, verbs=frozenset({"list", "watch", "patch"}))
    insights.webhook_resources.add(workflows)
    body = with_namespace(docs(BROKEN)[0])

    async def answer(obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
        request: dict[str, Any] = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "r1", "operation": operation, "userInfo": {"username": "someone"}, "object": obj,
            "dryRun": True, "resource": {"group": "agentflow.dev", "version": "v1alpha1", "resource": "workflows"}}}
        response = await serve_admission_request(
            cast(Request, request), webhook=HandlerId("validate-workflows"), settings=OperatorSettings(),
            memories=ResourceMemories(), memobase=AnyMemo(kopf.Memo()), registry=registry, insights=insights,
            indices=indexers.indices)
        result: dict[str, Any] = dict(response["response"])
        return result

    rejected = await answer(body)
    assert rejected["allowed"] is False and rejected["status"]["code"] == 422
    assert CYCLE in rejected["status"]["message"] and UNKNOWN_AGENT in rejected["status"]["message"]
    del body["spec"]["steps"][0]["dependsOn"]
    warned = await answer(body)
    assert warned["allowed"] is True and any(w.startswith(UNKNOWN_AGENT) for w in warned["warnings"])

    (config,) = [w for w in build_webhooks(registry._webhooks.get_all_handlers(), resources=[workflows],
                                           name_suffix="agentflow.dev", client_config={"url": "https://10.0.0.7:9443"})
                 if w["rules"] and w["name"] != "budget-workflows.agentflow.dev"]
    assert config["name"] == "validate-workflows.agentflow.dev"
    assert config["sideEffects"] == "None" and config["failurePolicy"] == "Fail"
    assert config["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert config["clientConfig"] == {"url": "https://10.0.0.7:9443/validate-workflows"}


# -- the platform's decisions: endpoints, egress, credentials, who approves

TOOLS = f"""\
apiVersion: {API}
kind: ToolPolicy
metadata: {{name: tools, namespace: {NAMESPACE}}}
spec:
  tools:
    - name: fetch
      http: {{url: "http://169.254.169.254/latest/meta-data/", allowedHosts: ["api.example.com", "[::1]:8080"]}}
    - name: shell
      container: {{image: "busybox:1.36", command: ["sh"]}}
      permissions: {{egressHosts: ["93.184.216.34:443", "10.96.0.1:443"]}}
"""


def platform() -> PlatformPolicy:
    return PlatformPolicy(
        endpoints=EndpointPolicy.parse({"endpoints": [{"url": "https://llm.internal.example/v1",
                                                       "namespaces": [NAMESPACE]}]}),
        egress=EgressDenyList.with_extra(["10.96.0.0/12"]))


def test_a_tool_policy_granting_what_the_platform_denies_is_refused_naming_each_field() -> None:
    verdict = review(docs(TOOLS)[0], Catalog(), platform=platform(), namespace=NAMESPACE)
    assert not verdict.allowed and verdict.message is not None
    paths = [line.split(":")[0].removeprefix("- ") for line in verdict.message.splitlines()[1:]]
    assert paths == ["spec.tools[0].http.url", "spec.tools[0].http.allowedHosts[1]",
                     "spec.tools[1].permissions.egressHosts[1]"]
    assert review(docs(TOOLS)[0], Catalog(), namespace=NAMESPACE).allowed  # `agentflow validate` alone


@pytest.mark.parametrize(("api_base", "namespace", "allowed"), [
    ("https://llm.internal.example/v1", NAMESPACE, True),
    ("https://llm.internal.example/v1/", NAMESPACE, True),
    ("https://llm.internal.example/v1", "team-b", False),
    ("http://10.0.0.5:8000/v1", NAMESPACE, False),
    ("https://llm.internal.example.attacker.io/v1", NAMESPACE, False),
    (None, NAMESPACE, True),
])
def test_an_agents_endpoint_must_be_listed_for_its_namespace(api_base: str | None, namespace: str,
                                                             allowed: bool) -> None:
    agent = docs(SUPPORTING)[0]
    if api_base is not None:
        agent["spec"]["model"]["apiBase"] = api_base
    verdict = review(agent, Catalog(), platform=platform(), namespace=namespace)
    assert verdict.allowed is allowed, verdict.message
    if not allowed:
        assert verdict.message is not None and "spec.model.apiBase" in verdict.message


def agent_with_secret(name: str) -> dict[str, Any]:
    agent = with_namespace(docs(SUPPORTING)[0])
    agent["spec"]["model"]["credentialsSecretRef"] = {"name": name, "key": "api-key"}
    return agent


def memo_with(kube: FakeKube) -> Any:
    return types.SimpleNamespace(driver=types.SimpleNamespace(reconciler=types.SimpleNamespace(kube=kube)))


def secret(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NAMESPACE, "labels": labels}, "data": {"api-key": "c2s="}}


async def test_an_agent_may_name_only_a_secret_that_opts_in_as_a_model_credential() -> None:
    kube = FakeKube()
    kube.secrets[(NAMESPACE, "model-key")] = secret("model-key", {"agentflow.dev/credential": "true"})
    kube.secrets[(NAMESPACE, "db-password")] = secret("db-password", {})
    registry = kopf.OperatorRegistry()
    register_admission(registry, platform=platform())
    fn = {str(h.id): h.fn for h in registry._webhooks.get_all_handlers()}["validate-agents"]

    async def admit(body: dict[str, Any]) -> list[str]:
        warnings: list[str] = []
        await fn(body=kopf.Body(cast(kopf.RawBody, body)), old=None, namespace=NAMESPACE, operation="CREATE",
                 subresource=None, warnings=warnings, memo=memo_with(kube), **indices_of([]))
        return warnings

    assert await admit(agent_with_secret("model-key")) == []
    with pytest.raises(kopf.AdmissionError) as caught:
        await admit(agent_with_secret("db-password"))
    assert "spec.model.credentialsSecretRef.name" in str(caught.value) and "agentflow.dev/credential" in str(
        caught.value)
    missing = await admit(agent_with_secret("later"))  # applied before its Secret: warned, refused at call time
    assert missing and "does not exist" in missing[0]


async def test_kopf_stamps_an_approval_with_the_requesting_user_or_refuses_a_non_approver() -> None:
    """RBAC's approve verb first (a SubjectAccessReview with the request's userInfo), then the step's approvers."""
    from kopf._cogs.configs.configuration import OperatorSettings
    from kopf._cogs.structs.ephemera import AnyMemo
    from kopf._cogs.structs.ids import HandlerId
    from kopf._cogs.structs.references import Insights, Resource
    from kopf._cogs.structs.reviews import Request
    from kopf._core.engines.admission import serve_admission_request
    from kopf._core.engines.indexing import OperatorIndexers
    from kopf._core.reactor.inventory import ResourceMemories

    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    register_admission(registry, signing_key=SIGNING_KEY)
    indexers = OperatorIndexers()
    indexers.ensure(registry._indexing.get_all_handlers())
    insights = Insights()
    insights.webhook_resources.add(Resource(group="agentflow.dev", version="v1alpha1", plural="workflows",
                                            kind="Workflow", namespaced=True, verbs=frozenset({"patch"})))
    old = {"apiVersion": API, "kind": "Workflow",
           "metadata": {"name": "ship", "namespace": NAMESPACE, "uid": "uid-9", "annotations": {}},
           "spec": {"steps": [{"name": "gate", "kind": "approval", "approval": {"approvers": ["release"]}}]}}
    new = copy.deepcopy(old)
    new["metadata"]["annotations"][names.APPROVE_ANNOTATION] = '{"node": "gate", "by": "release-bot"}'
    kube = FakeKube()
    kube.grant("release", NAMESPACE, "approve", "workflows/approval")
    memo = kopf.Memo()
    memo.driver = memo_with(kube).driver

    async def answer(user: dict[str, Any], obj: dict[str, Any] = new) -> dict[str, Any]:
        request: dict[str, Any] = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "r2", "operation": "UPDATE", "userInfo": user, "object": obj, "oldObject": old,
            "resource": {"group": "agentflow.dev", "version": "v1alpha1", "resource": "workflows"}}}
        response = await serve_admission_request(
            cast(Request, request), webhook=HandlerId("approve-workflows"), settings=OperatorSettings(),
            memories=ResourceMemories(), memobase=AnyMemo(memo), registry=registry, insights=insights,
            indices=indexers.indices)
        return dict(response["response"])

    ci = {"username": "system:serviceaccount:team-a:ci", "uid": "u-ci", "groups": ["system:serviceaccounts"],
          "extra": {"authentication.kubernetes.io/pod-name": ["ci-0"]}}
    cancelled = copy.deepcopy(old)
    cancelled["spec"]["cancel"] = True
    assert (await answer(ci, cancelled))["allowed"] is True  # no decision in it: RBAC's patch was enough
    assert kube.access_reviews == []  # and the API server was not asked
    refused = await answer(ci)  # may patch the Workflow (the API server let the request through), not approve
    assert refused["allowed"] is False and refused["status"]["code"] == 403
    assert "RBAC does not grant the verb 'approve' on workflows/approval" in refused["status"]["message"]
    assert kube.access_reviews[-1]["spec"] == {
        "user": ci["username"], "uid": "u-ci", "groups": ci["groups"], "extra": ci["extra"],
        "resourceAttributes": {"namespace": NAMESPACE, "verb": "approve", "group": "agentflow.dev",
                               "resource": "workflows", "subresource": "approval", "name": "ship"}}

    kube.grant(ci["username"], NAMESPACE, "approve", "workflows/approval")  # an approver, yet not this step's
    refused = await answer(ci)
    assert refused["allowed"] is False and refused["status"]["code"] == 403
    assert "may not decide step gate" in refused["status"]["message"]

    allowed = await answer({"username": "carol", "groups": ["release", "system:authenticated"]})
    assert allowed["allowed"] is True and allowed["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(allowed["patch"]))
    (value,) = [op["value"] for op in ops if op["path"].endswith("agentflow.dev~1approve")] or [
        op["value"][names.APPROVE_ANNOTATION] for op in ops if op["path"] == "/metadata/annotations"]
    decision = names.parse_decision(names.APPROVE_ANNOTATION, value)
    assert decision.by == "carol" and "release" in decision.groups
    assert approvals.verified(SIGNING_KEY, "uid-9", decision)


# -- ClusterWorkflowTemplates: resolved through the reference, with the Workflow's own namespace

CLUSTER_TEMPLATE: dict[str, Any] = {
    "apiVersion": API, "kind": "ClusterWorkflowTemplate", "metadata": {"name": "shared"},
    "spec": {"inputSchema": {"type": "object", "properties": {"topic": {"type": "string"}},
                             "additionalProperties": False},
             "steps": [{"name": "a", "kind": "llm", "agentRef": {"name": "writer"}, "promptRef": {"name": "p1"}}]},
}


def from_cluster_template(**inputs: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workflow", "metadata": {"name": "run", "namespace": NAMESPACE},
            "spec": {"workflowTemplateRef": {"name": "shared", "kind": "ClusterWorkflowTemplate"}, "inputs": inputs}}


def test_a_workflow_from_a_cluster_template_is_checked_against_its_own_namespace() -> None:
    fn = handler_fns()["validate-workflows"]
    supporting = [with_namespace(b) for b in docs(SUPPORTING)]
    assert call(fn, from_cluster_template(topic="x"), indices_of([CLUSTER_TEMPLATE, *supporting])) == []
    # The same Agent and PromptVersion in another namespace are not this Workflow's: named, with the template.
    elsewhere = indices_of([CLUSTER_TEMPLATE, *supporting])
    for plural in handlers.KINDS:
        elsewhere[plural]["other"] = elsewhere[plural].pop(NAMESPACE, [])
    warnings = call(fn, from_cluster_template(topic="x"), elsewhere)
    assert "spec.steps[0].agentRef.name: unknown Agent 'writer'; there are no Agents (from ClusterWorkflowTemplate " \
           "'shared')" in warnings
    rejecting = kopf.OperatorRegistry()
    register_admission(rejecting, references="reject")
    strict = next(h.fn for h in rejecting._webhooks.get_all_handlers() if str(h.id) == "validate-workflows")
    with pytest.raises(kopf.AdmissionError) as caught:
        call(strict, from_cluster_template(topic="x", colour="red"), indices_of([CLUSTER_TEMPLATE, *supporting]))
    assert "- spec.inputs.colour: ClusterWorkflowTemplate 'shared' has no input 'colour'" in str(caught.value)


def test_a_cluster_template_is_validated_at_admission_without_a_namespace() -> None:
    fn = handler_fns()["validate-clusterworkflowtemplates"]
    assert call(fn, copy.deepcopy(CLUSTER_TEMPLATE), indices_of([])) == []  # its Agent is each namespace's concern
    broken = copy.deepcopy(CLUSTER_TEMPLATE)
    broken["spec"]["outputs"] = {"x": "steps.nope.output"}
    with pytest.raises(kopf.AdmissionError) as caught:
        call(fn, broken, indices_of([]))
    assert "ClusterWorkflowTemplate/shared" in str(caught.value) and "spec.outputs.x" in str(caught.value)


async def test_the_cost_preflight_goes_through_a_cluster_template(monkeypatch: pytest.MonkeyPatch) -> None:
    """budget-workflows estimates what the cluster template makes of the Workflow, on its namespace's Budgets."""
    from types import SimpleNamespace

    from agentflow.controller import webhook
    from agentflow.services.admission import CostMeter
    from agentflow.storage.memory_ledger import MemoryLedger
    from agentflow.testing import FakeKube

    monkeypatch.setattr(webhook, "cost_meter", lambda: CostMeter(count_tokens=lambda model, messages: 1000,
                                                                 prices=lambda model: (1.0, 2.0)))
    budget = {"apiVersion": API, "kind": "Budget", "metadata": {"name": "tight", "namespace": NAMESPACE},
              "spec": {"limits": {"usd": 5.0}, "enforcement": "hard", "period": "monthly"}}
    indices = indices_of([CLUSTER_TEMPLATE, budget, *[with_namespace(b) for b in docs(SUPPORTING)]])
    memo = SimpleNamespace(driver=SimpleNamespace(reconciler=SimpleNamespace(kube=FakeKube())),
                           factory=SimpleNamespace(db=SimpleNamespace(ledger=MemoryLedger())), ledger_problem=None)
    warnings: list[str] = []
    with pytest.raises(kopf.AdmissionError) as caught:
        await webhook.check_budgets(body=kopf.Body(cast(kopf.RawBody, from_cluster_template(topic="x"))), old=None,
                                    namespace=NAMESPACE, operation="CREATE", subresource=None, warnings=warnings,
                                    memo=memo, **indices)
    assert "Workflow/run: estimated cost $" in str(caught.value) and f"Budget {NAMESPACE}/tight (hard)" in str(
        caught.value)


def template_body(name: str, calls: str, kind: str = "WorkflowTemplate") -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"steps": [{"name": "sub", "kind": "workflow",
                                "workflowTemplateRef": {"name": calls, "kind": kind}}]}}


def test_a_cycle_of_templates_is_rejected_even_where_unknown_references_only_warn() -> None:
    first = template_body("a", "b")
    catalog = Catalog()
    verdict = review(first, catalog)  # b is not there yet: an unknown reference, a warning
    assert verdict.allowed and "unknown WorkflowTemplate 'b'" in verdict.warnings[0]
    resource = parse_resource(first)
    catalog.add(resource)  # type: ignore[arg-type]
    verdict = review(template_body("b", "a"), catalog)  # closes the cycle: refused, on the field
    assert not verdict.allowed and verdict.message is not None
    assert "spec.steps[0].workflowTemplateRef.name: workflow steps run templates in a cycle (WorkflowTemplate/b " \
           "-> WorkflowTemplate/a -> WorkflowTemplate/b)" in verdict.message


def test_a_cluster_template_calling_itself_is_rejected() -> None:
    verdict = review(template_body("shared", "shared", "ClusterWorkflowTemplate"), None)
    assert not verdict.allowed and verdict.message is not None
    assert "ClusterWorkflowTemplate/shared -> ClusterWorkflowTemplate/shared" in verdict.message

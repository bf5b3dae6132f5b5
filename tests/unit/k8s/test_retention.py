"""When a finished Workflow is deleted: per phase, the Workflow's own TTL, its template's, the operator's default,
not finished, the finish time, the clock; the operator's flag."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.k8s.retention import (
    SOURCE_DEFAULT,
    SOURCE_SPEC,
    SOURCE_TEMPLATE,
    expired_event,
    expiry,
    parse_ttl_flag,
    plain_namespaces,
    run_ttl,
    watched,
)
from agentflow.models import ManifestError, RunTtl, Workflow, WorkflowTemplate, parse_resource
from agentflow.validation.templates import resolve_spec

FINISHED_AT = "2026-12-01T10:00:00Z"
T0 = 1_796_119_200.0  # 2026-12-01T10:00:00Z


def workflow(phase: str | None = "Succeeded", ttl: dict[str, Any] | None = None, *,
             template_ttl: dict[str, Any] | None = None, finished_at: str | None = FINISHED_AT) -> dict[str, Any]:
    spec: dict[str, Any] = {"steps": [{"name": "a", "kind": "approval"}]}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if finished_at is not None:
        status["finishedAt"] = finished_at
    if template_ttl is not None:
        spec = {"workflowTemplateRef": {"name": "t"}}
        status["templateSpec"] = {"steps": [{"name": "a", "kind": "approval"}],
                                  "ttlSecondsAfterFinished": template_ttl}
    return {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "w", "namespace": "team", "uid": "u-1"}, "spec": spec, "status": status}


def test_t0_is_the_finish_time() -> None:
    assert expiry(workflow(ttl={"succeeded": 0}), None).finished_at == T0  # type: ignore[union-attr]


@pytest.mark.parametrize(("phase", "seconds"), [("Succeeded", 60), ("Failed", 600), ("Cancelled", 6)])
def test_each_phase_has_its_own_ttl(phase: str, seconds: int) -> None:
    found = expiry(workflow(phase, {"succeeded": 60, "failed": 600, "cancelled": 6}), None)
    assert found is not None
    assert (found.phase, found.seconds, found.source) == (phase, seconds, SOURCE_SPEC)
    assert not found.due(T0 + seconds - 1)
    assert found.due(T0 + seconds)


def test_a_phase_not_named_is_kept() -> None:
    assert expiry(workflow("Failed", {"succeeded": 60}), None) is None


@pytest.mark.parametrize("phase", [None, "Pending", "Running", "Waiting", "Suspended"])
def test_a_run_not_finished_is_kept(phase: str | None) -> None:
    assert expiry(workflow(phase, {"succeeded": 0, "failed": 0, "cancelled": 0}), None) is None


def test_the_default_applies_without_a_ttl_of_its_own() -> None:
    default = RunTtl(succeeded=3600, failed=86400)
    found = expiry(workflow("Failed"), default)
    assert found is not None and (found.seconds, found.source) == (86400, SOURCE_DEFAULT)
    assert expiry(workflow("Cancelled"), default) is None
    assert expiry(workflow("Succeeded"), None) is None  # no default, no TTL: kept


def test_a_ttl_of_its_own_replaces_the_default_as_a_whole() -> None:
    default = RunTtl(succeeded=3600, failed=86400, cancelled=60)
    assert expiry(workflow("Failed", {}), default) is None  # {} opts out
    found = expiry(workflow("Failed", {"failed": 5}), default)
    assert found is not None and (found.seconds, found.source) == (5, SOURCE_SPEC)
    assert expiry(workflow("Cancelled", {"failed": 5}), default) is None


def test_a_template_run_takes_the_resolved_spec_unless_it_gives_its_own() -> None:
    default = RunTtl(succeeded=3600)
    found = expiry(workflow("Succeeded", template_ttl={"succeeded": 30}), default)
    assert found is not None and (found.seconds, found.source) == (30, SOURCE_TEMPLATE)
    body = workflow("Succeeded", template_ttl={"succeeded": 30})
    body["spec"]["ttlSecondsAfterFinished"] = {"succeeded": 7}
    assert run_ttl(body, default) == (RunTtl(succeeded=7), SOURCE_SPEC)


def test_the_template_carries_it_through_resolution() -> None:
    template = parse_resource({"apiVersion": "agentflow.dev/v1alpha1", "kind": "WorkflowTemplate",
                               "metadata": {"name": "t"},
                               "spec": {"steps": [{"name": "a", "kind": "approval"}],
                                        "ttlSecondsAfterFinished": {"failed": 40}}})
    run = parse_resource({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
                          "spec": {"workflowTemplateRef": {"name": "t"}}})
    assert isinstance(run, Workflow) and isinstance(template, WorkflowTemplate)
    assert resolve_spec(run.spec, template).ttl_seconds_after_finished == RunTtl(failed=40)
    own = parse_resource({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
                          "spec": {"workflowTemplateRef": {"name": "t"}, "ttlSecondsAfterFinished": {}}})
    assert isinstance(own, Workflow)
    assert resolve_spec(own.spec, template).ttl_seconds_after_finished == RunTtl()


def test_the_finish_time_must_be_known() -> None:
    assert expiry(workflow("Succeeded", {"succeeded": 0}, finished_at=None), None) is None


def test_an_invalid_spec_expires_from_its_failed_condition() -> None:
    body = workflow("Failed", {"failed": 10}, finished_at=None)
    body["status"]["conditions"] = [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                                    {"type": "Failed", "status": "True", "lastTransitionTime": FINISHED_AT}]
    found = expiry(body, None)
    assert found is not None and found.at == T0 + 10


def test_a_ttl_written_around_the_schema_keeps_the_run() -> None:
    assert expiry(workflow("Succeeded", {"succeeded": -5}), RunTtl(succeeded=0)) is None


def test_the_model_bounds_the_ttl() -> None:
    with pytest.raises(ManifestError, match=r"spec\.ttlSecondsAfterFinished\.succeeded: Input should be greater"):
        parse_resource({"apiVersion": "agentflow.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
                        "spec": {"steps": [{"name": "a", "kind": "approval"}],
                                 "ttlSecondsAfterFinished": {"succeeded": -1}}})


@pytest.mark.parametrize(("text", "ttl"), [
    ("", RunTtl()),
    ("3600", RunTtl(succeeded=3600, failed=3600, cancelled=3600)),
    ("succeeded=60,failed=600", RunTtl(succeeded=60, failed=600)),
    (" Cancelled = 0 ", RunTtl(cancelled=0)),
])
def test_the_flag(text: str, ttl: RunTtl) -> None:
    assert parse_ttl_flag(text) == ttl


@pytest.mark.parametrize(("text", "message"), [
    ("soon", "'soon': expected a whole number"),
    ("-1", "-1: out of range"),
    ("succeeded=1,running=2", "'running=2': expected PHASE=SECONDS"),
    ("failed=1,failed=2", "failed is given twice"),
    ("failed=x", "failed='x'"),
])
def test_a_bad_flag_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ttl_flag(text)


def test_the_event_says_why() -> None:
    found = expiry(workflow("Failed", {"failed": 90}), None)
    assert found is not None
    event = expired_event(workflow("Failed", {"failed": 90}), found, T0 + 90)
    assert (event["type"], event["reason"]) == ("Normal", "TTLExpired")
    assert "finished Failed at 2026-12-01T10:00:00Z; spec.ttlSecondsAfterFinished keeps a Failed run 90s" in \
        event["message"]
    assert event["involvedObject"]["uid"] == "u-1"


@pytest.mark.parametrize(("namespace", "patterns", "expected"), [
    ("team-a", [], True),
    ("team-a", ["team-a", "team-b"], True),
    ("team-c", ["team-a", "team-b"], False),
    ("e2e-op-1", ["e2e-op*"], True),
    ("myapp-pr-123", ["myapp-*, !*-pr-*, *pr-123"], True),
    ("myapp-pr-456", ["myapp-*, !*-pr-*, *pr-123"], False),
    ("otherapp-pr-123", ["myapp-*, !*-pr-*, *pr-123"], False),
    ("kube-system", ["!kube-*"], False),
    ("default", ["!kube-*"], True),
])
def test_the_namespaces_an_operator_watches_are_kopfs_patterns(namespace: str, patterns: list[str],
                                                                expected: bool) -> None:
    assert watched(namespace, patterns) is expected


def test_only_plain_names_are_listed_one_by_one() -> None:
    assert plain_namespaces(["team-a", "b1"]) and not plain_namespaces(["team-a", "e2e-*"])

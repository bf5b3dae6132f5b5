"""Ready of the non-Workflow kinds is re-checked often but written only when it changes."""

from __future__ import annotations

from agentflow.controller.handlers import same_readiness
from agentflow.models import Catalog, ToolPolicy
from agentflow.services.resources import check_dependent

AGENT = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Agent",
         "metadata": {"name": "a", "namespace": "n", "generation": 1},
         "spec": {"role": "r", "model": {"name": "openai/gpt-4o-mini"}, "tools": ["search"]}}


def policy() -> ToolPolicy:
    return ToolPolicy.model_validate({"apiVersion": "agentflow.dev/v1alpha1", "kind": "ToolPolicy",
                                      "metadata": {"name": "p"},
                                      "spec": {"tools": [{"name": "search", "builtin": {"name": "echo"}}]}})


def test_a_missing_tool_makes_the_agent_not_ready_with_the_reason() -> None:
    status = check_dependent(AGENT, Catalog(), now=0.0)
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "MissingReference")
    assert "'search' is declared in no ToolPolicy" in ready["message"]
    assert status["observedGeneration"] == 1


def test_the_agent_becomes_ready_once_the_tool_is_declared() -> None:
    catalog = Catalog()
    catalog.add(policy())
    before = check_dependent(AGENT, Catalog(), now=0.0)
    after = check_dependent(AGENT, catalog, now=5.0)
    assert after["conditions"][0]["status"] == "True"
    assert not same_readiness(before, after)


def test_only_timestamps_differing_is_no_change() -> None:
    first = check_dependent(AGENT, Catalog(), now=0.0)
    later = check_dependent(AGENT, Catalog(), now=99.0)
    assert first != later and same_readiness(first, later)


def test_ready_keeps_the_agents_drifting_condition() -> None:
    drifting = {"type": "Drifting", "status": "True", "reason": "QualityDrift", "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}
    body = AGENT | {"status": {"conditions": [{"type": "Ready", "status": "False"}, drifting]}}
    catalog = Catalog()
    catalog.add(policy())
    status = check_dependent(body, catalog, now=5.0)
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Drifting"]
    assert status["conditions"][1] == drifting

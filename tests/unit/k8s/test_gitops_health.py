"""What GitOps tools make of our statuses, computed by their own code, not by a copy of their rules.

* kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status: Flux's health checks, kpt): ``tests/e2e/tools/kstatus``.
* Argo CD: ``charts/agentflow/health/workflow.lua`` (the one copy of the health check) run in gopher-lua the
  way Argo CD runs it: ``tests/e2e/tools/argocd-health``.

Both are tiny Go programs that ``tests/e2e/tools/gotool.sh`` builds from the Go module proxy into
``$AGENTFLOW_CACHE`` (``make tools``, which ``make test`` and CI run before the unit tests). Without them the
tests skip, except in CI (``CI`` set), where they fail.

The statuses are the ones ``k8s/status.py`` builds for engine runs in every phase (the status cases of
``cases/``, plus a run not started yet), and the Ready conditions of the other kinds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentflow.k8s.status import workflow_status
from agentflow.models import Catalog
from agentflow.services.budgets import budget_status
from agentflow.services.resources import check_dependent
from agentflow.storage.ledger import Usage

from .cases import build
from .runs import drive

REPO = Path(__file__).resolve().parents[3]
TOOLS = REPO / "tests" / "e2e" / "tools"
HEALTH_LUA = REPO / "charts" / "agentflow" / "health" / "workflow.lua"
CASES = Path(__file__).parent / "cases"


def tool(name: str) -> str:
    out = subprocess.run(["bash", str(TOOLS / "gotool.sh"), "--path", name], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        message = f"{name} is not built: `bash tests/e2e/tools/gotool.sh {name}` (or `make tools`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return out.stdout.strip()


def run_tool(argv: Sequence[str], objects: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    body = "".join(json.dumps(o) + "\n" for o in objects)
    out = subprocess.run(list(argv), input=body, capture_output=True, text=True, timeout=60, check=True)
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(answers) == len(objects)
    errors = [a["error"] for a in answers if "error" in a]
    assert not errors, errors
    return answers


def kstatus(*objects: dict[str, Any]) -> list[str]:
    return [a["status"] for a in run_tool([tool("kstatus")], objects)]


def argocd(*objects: dict[str, Any]) -> list[dict[str, str]]:
    return run_tool([tool("argocd-health"), str(HEALTH_LUA)], objects)


def obj(kind: str, status: dict[str, Any] | None, generation: int = 1, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "agentflow.dev/v1alpha1", "kind": kind,
                            "metadata": {"name": "x", "namespace": "team-a", "generation": generation, **extra}}
    if status is not None:
        body["status"] = status
    return body


def _statuses() -> dict[str, dict[str, Any]]:
    """Phase -> a status of that phase, built by status.py from engine runs."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(CASES.glob("status-*.yaml")):
        status = build("status", yaml.safe_load(path.read_text())["input"])
        out.setdefault(status["phase"], status)
    pending = workflow_status(drive({"workflow": "metadata: {name: p}\nspec:\n  steps:\n"
                                                 "  - {name: a, kind: tool, tool: t}\n", "steps": 0}).run,
                              generation=1)
    out["Pending"] = pending
    return out


STATUSES = _statuses()
# phase: (kstatus, Argo CD health). Decided in k8s/status.py's docstring.
EXPECTED = {
    "Pending": ("InProgress", "Progressing"),
    "Running": ("InProgress", "Progressing"),
    "Waiting": ("InProgress", "Suspended"),
    "Suspended": ("InProgress", "Suspended"),
    "Succeeded": ("Current", "Healthy"),
    "Failed": ("Failed", "Degraded"),
    "Cancelled": ("Failed", "Degraded"),
}


def test_the_cases_cover_every_phase() -> None:
    assert set(STATUSES) == set(EXPECTED)


@pytest.mark.parametrize("phase", sorted(EXPECTED))
def test_workflow_phases_as_kstatus_and_argocd_see_them(phase: str) -> None:
    status = {**STATUSES[phase], "observedGeneration": 1}
    body = obj("Workflow", status)
    want_kstatus, want_health = EXPECTED[phase]
    assert kstatus(body) == [want_kstatus]
    (health,) = argocd(body)
    assert health == {"status": want_health, "message": status["message"]}


def test_every_terminal_phase_is_terminal_for_kstatus() -> None:
    """A Flux health check ends when its objects are Current or Failed; InProgress makes it wait to its timeout."""
    terminal = [obj("Workflow", {**STATUSES[p], "observedGeneration": 1}) for p in ("Succeeded", "Failed", "Cancelled")]
    assert "InProgress" not in kstatus(*terminal)


def test_a_spec_the_operator_has_not_acted_on_is_in_progress() -> None:
    ahead = obj("Workflow", {**STATUSES["Succeeded"], "observedGeneration": 1}, generation=2)
    assert kstatus(ahead) == ["InProgress"]
    assert argocd(ahead)[0]["status"] == "Progressing"
    unseen = {"status": "Progressing", "message": "Waiting for the AgentFlow operator"}
    assert argocd(obj("Workflow", None))[0] == unseen
    assert kstatus(obj("Workflow", None, deletionTimestamp="2024-01-01T00:00:00Z")) == ["Terminating"]


def test_the_health_script_refuses_nothing_status_py_writes() -> None:
    """Every status of every case, with and without its message (the script builds one when it is missing)."""
    bodies = [obj("Workflow", s) for s in STATUSES.values()]
    bodies += [obj("Workflow", {k: v for k, v in s.items() if k != "message"}) for s in STATUSES.values()]
    answers = argocd(*bodies)
    assert all(a["message"] for a in answers)


# -- the other kinds


AGENT = {"role": "r", "model": {"name": "openai/gpt-4o-mini"}}
NOW = 1_700_000_000.0


def resource_status(kind: str, spec: dict[str, Any], catalog: Catalog | None = None) -> dict[str, Any]:
    return check_dependent(obj(kind, None) | {"spec": spec}, catalog or Catalog(), NOW)


def test_valid_resources_are_current() -> None:
    statuses = [resource_status("Agent", AGENT),
                resource_status("PromptVersion", {"prompt": "p", "version": "1",
                                                  "messages": [{"role": "user", "content": "hi"}]}),
                resource_status("ToolPolicy", {"tools": [{"name": "t", "builtin": {"name": "echo"}}]})]
    assert kstatus(*[obj("X", s) for s in statuses]) == ["Current"] * 3


def test_a_missing_reference_is_in_progress_until_it_appears() -> None:
    status = resource_status("Agent", {**AGENT, "tools": ["nowhere"]})
    assert status["conditions"][0]["reason"] == "MissingReference"
    assert kstatus(obj("Agent", status)) == ["InProgress"]


def test_an_invalid_resource_is_failed() -> None:
    status = resource_status("Agent", {"role": "r"})
    assert status["conditions"][0]["reason"] == "InvalidSpec"
    assert kstatus(obj("Agent", status)) == ["Failed"]


def budget(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return obj("Budget", status) | {"spec": {"limits": {"usd": 1.0}, **spec}}


def test_budgets_are_current_whether_or_not_exhausted() -> None:
    """An exhausted Budget is working as intended: refusing calls until its window ends."""
    now = dt.datetime.fromtimestamp(NOW, dt.UTC)
    within = budget_status(budget(), Usage(spent_usd=0.1), now).status
    exhausted = budget_status(budget(), Usage(spent_usd=1.5), now).status
    assert {c["type"]: c["status"] for c in exhausted["conditions"]}["Exhausted"] == "True"
    assert kstatus(obj("Budget", within), obj("Budget", exhausted)) == ["Current", "Current"]


def test_what_the_driver_writes_when_it_cannot_go_on_is_failed_or_in_progress_for_kstatus() -> None:
    """The operator stalled on an error (k8s.status.stalled_status) and an invalid spec are Failed: a Flux health
    check ends at once with the message; a Workflow waiting for its references is InProgress."""
    patches = {path.stem: build("statusPatch", yaml.safe_load(path.read_text())["input"])
               for path in sorted(CASES.glob("patch-*.yaml"))}
    assert set(patches) == {"patch-stalled", "patch-stalled-blank", "patch-invalid-spec",
                            "patch-missing-references"}
    generations = {"patch-stalled": 4, "patch-invalid-spec": 2}
    bodies = [obj("Workflow", patches[name], generation=generations.get(name, 1)) for name in sorted(patches)]
    assert dict(zip(sorted(patches), kstatus(*bodies), strict=True)) == {
        "patch-invalid-spec": "Failed", "patch-missing-references": "InProgress",
        "patch-stalled": "Failed", "patch-stalled-blank": "Failed"}

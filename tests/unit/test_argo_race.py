"""bench/argo_race.py's parts that need no control plane: the Argo workflows it submits, its stand-in for
argoexec's wait container and a kubelet (the writes, in argoexec's order), and how it meters a process."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import argo_race  # noqa: E402
from operator_bench import Counts, StepTimes  # noqa: E402


class FakeApi:
    """Records each call; answers a 404 (None with missing_ok) or raises for the paths it is told to."""

    def __init__(self, missing: str = "", failing: str = "") -> None:
        self.calls: list[tuple[str, str, Any, str]] = []
        self.missing, self.failing = missing, failing

    async def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json", *,
                   missing_ok: bool = False) -> Any:
        self.calls.append((method, path, body, content_type))
        if self.failing and path.endswith(self.failing):
            raise RuntimeError(f"{method} {path}: 403 forbidden")
        if self.missing and path.endswith(self.missing):
            assert missing_ok
            return None
        return {}


def pod(name: str = "chain-0-0-step-123", workflow: str = "chain-0-0", task: str = "s1") -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": "pod-uid",
                         "annotations": {"workflows.argoproj.io/node-name": f"{workflow}.{task}",
                                         "workflows.argoproj.io/node-id": f"{workflow}-123"},
                         "ownerReferences": [{"kind": "Workflow", "name": workflow, "uid": "wf-uid"}]},
            "spec": {"initContainers": [{"name": "init", "image": "argoexec"}],
                     "containers": [{"name": "wait", "image": "argoexec"}, {"name": "main", "image": "echo"}]}}


async def run_step(api: FakeApi, body: dict[str, Any]) -> tuple[argo_race.ArgoKubelet, StepTimes]:
    kubelet = argo_race.ArgoKubelet(api, "argo-bench")  # type: ignore[arg-type]
    try:
        times = StepTimes("chain-0-0", "s1", created=time.perf_counter())
        await kubelet._run_step(body, times)
        return kubelet, times
    finally:
        await kubelet.close()


def test_a_chain_is_a_dag_of_container_steps_each_depending_on_the_one_before() -> None:
    wf = argo_race.argo_workflow("chain-0-0", 3)
    dag = next(t for t in wf["spec"]["templates"] if t["name"] == wf["spec"]["entrypoint"])["dag"]
    assert [(t["name"], t.get("depends")) for t in dag["tasks"]] == [("s0", None), ("s1", "s0"), ("s2", "s1")]
    step = next(t for t in wf["spec"]["templates"] if t["name"] == "step")
    assert "container" in step
    assert wf["spec"]["podGC"] == {"strategy": "OnPodSuccess", "deleteDelayDuration": "0s"}
    assert [t["name"] for t in argo_race.argo_workflow("single-0", 1)["spec"]["templates"][0]["dag"]["tasks"]] == ["s0"]


def test_the_step_of_a_pod_is_its_dag_task() -> None:
    kubelet = object.__new__(argo_race.ArgoKubelet)
    assert kubelet.step_of("chain-0-0", pod()["metadata"]) == "s1"
    assert kubelet.step_of("chain-0-0", {"annotations": {}}) == "?"


async def test_the_stand_in_writes_as_argoexec_then_a_kubelet_do() -> None:
    api = FakeApi()
    kubelet, times = await run_step(api, pod())
    assert kubelet.errors == []
    results = "/apis/argoproj.io/v1alpha1/namespaces/argo-bench/workflowtaskresults"
    assert [(m, p) for m, p, _, _ in api.calls] == [
        ("POST", results), ("PATCH", f"{results}/chain-0-0-123"), ("PATCH", f"{results}/chain-0-0-123"),
        ("PATCH", "/api/v1/namespaces/argo-bench/pods/chain-0-0-step-123/status")]
    created = api.calls[0][2]
    assert created["metadata"]["name"] == "chain-0-0-123"
    assert created["metadata"]["labels"] == {"workflows.argoproj.io/workflow": "chain-0-0",
                                             "workflows.argoproj.io/report-outputs-completed": "false"}
    assert created["metadata"]["ownerReferences"][0]["uid"] == "wf-uid"
    assert api.calls[2][2] == {"metadata": {"labels": {"workflows.argoproj.io/report-outputs-completed": "true"}}}
    status = api.calls[3][2]["status"]
    assert status["phase"] == "Succeeded"
    assert [c["name"] for c in status["containerStatuses"]] == ["wait", "main"]
    assert [c["name"] for c in status["initContainerStatuses"]] == ["init"]
    assert all(c["state"]["terminated"]["exitCode"] == 0
               for c in status["containerStatuses"] + status["initContainerStatuses"])
    assert times.created is not None and times.result is not None and times.succeeded is not None
    assert times.created <= times.result <= times.succeeded


async def test_a_pod_gone_before_its_status_counts_apart_and_a_refused_write_is_an_error() -> None:
    kubelet, times = await run_step(FakeApi(missing="/status"), pod())
    assert (kubelet.gone_before_status, kubelet.errors, times.succeeded) == (1, [], None)
    assert times.result is not None
    kubelet, times = await run_step(FakeApi(failing="/workflowtaskresults"), pod())
    assert len(kubelet.errors) == 1 and "403 forbidden" in kubelet.errors[0]
    assert times.result is None


def test_writes_per_step_are_told_apart_by_user() -> None:
    bench = object.__new__(argo_race.ArgoBench)
    stored = {("argo-controller", "pods"): 6, ("argo-controller", "workflows"): 12, ("argoexec", "pods/status"): 6,
              ("argoexec", "workflowtaskresults"): 18, ("kwok", "pods/status"): 6}
    counts = Counts(0.0, {}, 0)
    assert bench.per_step(counts, counts, stored, 6) == {"controller audit": 3.0, "stand-in audit": 4.0,
                                                         "all clients audit": 8.0}


def test_cpu_seconds_take_in_a_reaped_child_and_peak_rss_is_read() -> None:
    before = argo_race.cpu_seconds(os.getpid())
    subprocess.run([sys.executable, "-c", "import time\nwhile time.process_time() < 0.3: pass"], check=True)
    assert argo_race.cpu_seconds(os.getpid()) - before >= 0.25
    assert argo_race.cpu_seconds(2**22 + 7) == 0.0  # no such process
    assert argo_race.peak_rss_mib(os.getpid()) > 1


def test_the_argo_version_is_the_one_lib_sh_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert argo_race.argo_version().startswith("v3.")
    (tmp_path / "tests/e2e/cluster").mkdir(parents=True)
    (tmp_path / "tests/e2e/cluster/lib.sh").write_text("KWOK_VERSION=v0.7.0\n")
    monkeypatch.setattr(argo_race, "REPO", tmp_path)
    with pytest.raises(SystemExit, match="ARGO_WORKFLOWS_VERSION not found"):
        argo_race.argo_version()


def test_the_requeue_time_is_a_go_duration_or_refused_naming_the_flag() -> None:
    assert [argo_race.requeue_time(v) for v in ("10s", "1s", "500ms", "1.5s", "2m")] == ["10s", "1s", "500ms",
                                                                                        "1.5s", "2m"]
    for bad in ("10", "1h", "-1s", "s", "1s;rm"):
        with pytest.raises(argparse.ArgumentTypeError, match="--argo-requeue"):
            argo_race.requeue_time(bad)

"""AgentFlow's operator raced against Argo Workflows' controller on one private kwok control plane (issue 17).

Both systems run the same workloads, one after the other, on the control plane bench/operator_bench.py brings up
(its ControlPlane, reused: etcd, kube-apiserver with an audit log of every write, kube-scheduler, kwok nodes; no
kubelet, no container): an unmeasured 2-step warm-up chain, then ``--chains`` chains of ``--chain-steps`` steps
(each depending on the one before) run one at a time, then ``--workflows`` single-step workflows created at once
(at most 16 requests in flight). AgentFlow's side is operator_bench's own run (the `agentflow operator` host process
with a throwaway PostgreSQL; the bench is its step pods' kubelet and runtime). Argo's side is the
``workflow-controller`` of Argo Workflows (ARGO_WORKFLOWS_VERSION in tests/e2e/cluster/lib.sh), built from the Go
module proxy by ``bash tests/e2e/cluster/build.sh argo-workflows`` into
$AGENTFLOW_CACHE/bin/argo-workflow-controller-VERSION with the module's CRDs (manifests/base/crds/minimal), run
as a host process in namespaced mode with its defaults (no leader election: LEADER_ELECTION_DISABLE=true, as
AgentFlow's operator runs here without peering), once per ``--argo-requeue`` value (its DEFAULT_REQUEUE_TIME, the
least time between two reconciliations of one workflow: 10s by default), each in a namespace of its own and printed
as a column of its own; each workflow a DAG whose tasks are container steps, with
``podGC: OnPodSuccess`` and no delete delay (AgentFlow deletes a step's pod as soon as it succeeded; Argo's default
delay of 5 s would also put the last pods' deletions past the phase's 2 s window for trailing writes).

The bench stands in for Argo's argoexec the way a step pod's ``wait`` container writes, in order (v3.7
cmd/argoexec/commands/wait.go): when kwok has marked a pod Running it creates the pod's WorkflowTaskResult (named
by the node id, labelled with the workflow and ``report-outputs-completed: "false"``, owned by the workflow), as
InitializeOutput does; then, the main container done, patches the result's outputs (ReportOutputs) and its label
to ``"true"`` (FinalizeOutput); then writes the pod's status Succeeded with every container terminated (exit 0),
as a kubelet would. Those writes are made with a token of their own (user ``argoexec``) and counted apart from the
controller's (user ``argo-controller``) in the audit log, as AgentFlow's step runtime (user ``bench``) is counted
apart from the operator.

Printed side by side: single-step workflows completed per minute; step-to-next-pod latency p50/p95 (from the
step's output reported complete, AgentFlow's result POST answered / Argo's FinalizeOutput label patch answered,
and from the pod's Succeeded status written, to the next step's pod in the bench's pod watch); API writes per step
by the controller itself (audit log, per phase; the stand-ins' writes on a row of their own); the controller's CPU
seconds over the measured phases (warm-up excluded; AgentFlow's PostgreSQL on a row of its own, since Argo keeps
its state in the API server) and its peak RSS (VmHWM).

Usage (as root, after `bash tests/e2e/cluster/build.sh kubernetes etcd kwok argo-workflows`, or `make bench-argo`):
  python bench/argo_race.py [--chains 10] [--chain-steps 6] [--workflows 60] [--nodes 4]
                            [--first agentflow|argo] [--argo-requeue 10s --argo-requeue 1s]
                            [--argo-arg=--qps=50 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from operator_bench import (
    CACHE,
    NOT_STORED,
    REPO,
    Bench,
    ChainFigures,
    ControlPlane,
    Counts,
    Kubelet,
    OperatorRunner,
    PhaseResult,
    Processes,
    StepTimes,
    bench_processes,
    free_port,
    percentile,
    stop_on_sigterm,
    wait_until,
    workdir,
)

ARGO_GROUP = "argoproj.io/v1alpha1"
ARGO_LABEL = "workflows.argoproj.io"
ARGO_NAMESPACE = "argo-bench"
AGENTFLOW_NAMESPACE = "agentflow-bench"
CONTROLLER_USER, EXECUTOR_USER = "argo-controller", "argoexec"


def argo_version() -> str:
    """ARGO_WORKFLOWS_VERSION from tests/e2e/cluster/lib.sh: the one place the version is pinned."""
    text = (REPO / "tests/e2e/cluster/lib.sh").read_text()
    found = re.search(r'^ARGO_WORKFLOWS_VERSION="([^"]+)"', text, re.M)
    if not found:
        raise SystemExit("ARGO_WORKFLOWS_VERSION not found in tests/e2e/cluster/lib.sh")
    return found.group(1)


def argo_workflow(name: str, steps: int) -> dict[str, Any]:
    """A DAG of ``steps`` container tasks, each depending on the one before: operator_bench's chain_workflow in
    Argo's terms (one step is a single-step workflow)."""
    tasks = [{"name": f"s{i}", "template": "step", **({"depends": f"s{i - 1}"} if i else {})} for i in range(steps)]
    return {"apiVersion": ARGO_GROUP, "kind": "Workflow", "metadata": {"name": name},
            "spec": {"entrypoint": "main", "podGC": {"strategy": "OnPodSuccess", "deleteDelayDuration": "0s"},
                     "templates": [{"name": "main", "dag": {"tasks": tasks}},
                                   {"name": "step", "container": {"image": "localhost/bench-echo:dev",
                                                                  "command": ["echo", "ok"]}}]}}


# --------------------------------------------------------------------------- argoexec + kubelet stand-in


class ArgoKubelet(Kubelet):
    """Runs every step pod of Argo's namespace as its wait container and a kubelet would: WorkflowTaskResult
    created (incomplete), outputs reported, result marked complete, pod Succeeded."""

    workflows_path = f"/apis/{ARGO_GROUP}/namespaces/{{namespace}}/workflows"
    finished_phases = ("Succeeded", "Failed", "Error")

    def step_of(self, workflow: str, meta: dict[str, Any]) -> str:
        """The DAG task's name: the pod's node-name annotation is ``WORKFLOW.TASK``."""
        node = str((meta.get("annotations") or {}).get(f"{ARGO_LABEL}/node-name", "?"))
        return node.removeprefix(f"{workflow}.")

    async def _run_step(self, pod: dict[str, Any], times: StepTimes) -> None:
        meta = pod["metadata"]
        try:
            node_id = meta["annotations"][f"{ARGO_LABEL}/node-id"]
            owner = next(o for o in meta.get("ownerReferences", []) if o["kind"] == "Workflow")
            results = f"/apis/{ARGO_GROUP}/namespaces/{self.namespace}/workflowtaskresults"
            await self.api.call("POST", results, {
                "apiVersion": ARGO_GROUP, "kind": "WorkflowTaskResult",
                "metadata": {"name": node_id, "labels": {f"{ARGO_LABEL}/workflow": owner["name"],
                                                         f"{ARGO_LABEL}/report-outputs-completed": "false"},
                             "ownerReferences": [{"apiVersion": ARGO_GROUP, "kind": "Workflow",
                                                  "name": owner["name"], "uid": owner["uid"]}]}})
            merge = "application/merge-patch+json"
            await self.api.call("PATCH", f"{results}/{node_id}", {"outputs": {}}, merge)
            await self.api.call("PATCH", f"{results}/{node_id}",
                                {"metadata": {"labels": {f"{ARGO_LABEL}/report-outputs-completed": "true"}}}, merge)
            times.result = time.perf_counter()
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

            def terminated(containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                         "started": False, "state": {"terminated": {
                             "exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}}
                        for c in containers]

            status = {"phase": "Succeeded", "conditions": [
                {"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}
                for t in ("Ready", "ContainersReady")],
                "initContainerStatuses": terminated(pod["spec"].get("initContainers", [])),
                "containerStatuses": terminated(pod["spec"]["containers"])}
            written = await self.api.call("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{meta['name']}/status",
                                          {"status": status}, "application/strategic-merge-patch+json",
                                          missing_ok=True)
            if written is None:
                self.gone_before_status += 1
            else:
                times.succeeded = time.perf_counter()
        except Exception as exc:  # reported at the end; the phase then fails
            self.errors.append(f"pod {meta['name']}: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- CPU and memory of a process


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, its reaped children and its live descendants (PostgreSQL's backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    total += cpu_seconds(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return total


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


class MeteredBench(Bench):
    """operator_bench's Bench, adding up the CPU seconds of some processes (label -> pid) over every measured
    phase (the warm-up is not measured)."""

    def __init__(self, plane: ControlPlane, metrics_url: str, namespace: str, timeout: float, *,
                 metered: dict[str, int], kubelet_user: str = "bench") -> None:
        super().__init__(plane, metrics_url, namespace, timeout, kubelet_user)
        self.metered = metered
        self.cpu = dict.fromkeys(metered, 0.0)

    async def phase(self, name: str, bodies: list[dict[str, Any]], steps: int, *,
                    sequential: bool) -> tuple[PhaseResult, dict[str, float]]:
        before = {label: cpu_seconds(pid) for label, pid in self.metered.items()}
        result = await super().phase(name, bodies, steps, sequential=sequential)
        if name != "warm-up":
            for label, pid in self.metered.items():
                self.cpu[label] += cpu_seconds(pid) - before[label]
        return result


class ArgoBench(MeteredBench):
    """The same phases against Argo's controller: its workflows, its stand-in, writes told apart by user."""

    kubelet_class = ArgoKubelet

    async def counts(self) -> Counts:
        return Counts(0.0, {}, (self.plane.root / "audit.log").stat().st_size)

    def per_step(self, before: Counts, after: Counts, stored: dict[tuple[str, str], int],
                 steps: int) -> dict[str, float]:
        def by(user: str) -> float:
            return sum(v for (who, _), v in stored.items() if who == user) / steps

        return {"controller audit": by(CONTROLLER_USER), "stand-in audit": by(EXECUTOR_USER),
                "all clients audit": sum(stored.values()) / steps}

    async def run_argo(self, chains: int, chain_steps: int, workflows: int) -> tuple[ChainFigures, PhaseResult]:
        """Warm-up, chains one at a time, single-step workflows at once (operator_bench's Bench.run, for Argo)."""
        self.watchers = [asyncio.create_task(self.kubelet.watch_pods()),
                         asyncio.create_task(self.kubelet.watch_workflows())]
        try:
            await self.phase("warm-up", [argo_workflow("warmup-0", 2)], 2, sequential=True)
            wanted = [f"chain-0-{i}" for i in range(chains)]
            chain, _ = await self.phase("chains", [argo_workflow(w, chain_steps) for w in wanted],
                                        chains * chain_steps, sequential=True)
            figures = ChainFigures("argo", [chain])
            figures.add(self.kubelet, wanted, chain_steps)
            single, _ = await self.phase("single-step", [argo_workflow(f"single-{i}", 1) for i in range(workflows)],
                                         workflows, sequential=False)
        finally:
            for task in self.watchers:
                task.cancel()
        return figures, single


# --------------------------------------------------------------------------- one side of the race


@dataclasses.dataclass
class Side:
    """One system's figures."""

    name: str
    chains: ChainFigures
    single: PhaseResult
    own_writes: str  # the writes key of the controller's own writes
    stand_in_user: str  # the audit log user of the stand-in for the step pods
    cpu: float
    peak_rss: float
    state_cpu: float | None = None  # AgentFlow's PostgreSQL
    notes: list[str] = dataclasses.field(default_factory=list)


def pid_of(procs: Processes, name: str) -> int:
    return next(p.pid for n, p in procs.procs if n == name)


def run_agentflow(plane: ControlPlane, procs: Processes, args: argparse.Namespace) -> Side:
    from tests.services.postgres import running_postgres

    with running_postgres() as pg:
        operator = OperatorRunner(procs, plane.kubeconfig("agentflow-operator"), pg.dsn, None)
        operator.start(False)
        postmaster = int((Path(str(pg.data_dir)) / "postmaster.pid").read_text().split()[0])

        async def go() -> tuple[MeteredBench, ChainFigures, PhaseResult, dict[str, Any]]:
            bench = MeteredBench(plane, operator.metrics_url, AGENTFLOW_NAMESPACE, args.timeout,
                                 metered={"controller": pid_of(procs, operator.name), "state": postmaster})
            try:
                figures, single, lat = await bench.run(args.chains, args.chain_steps, args.workflows, ["off"],
                                                       operator)
                return bench, figures["off"], single, lat
            finally:
                await bench.close()

        try:
            bench, chains, single, lat = asyncio.run(go())
            rss = peak_rss_mib(pid_of(procs, operator.name))
        finally:
            operator.stop()  # before PostgreSQL goes
    return Side("AgentFlow", chains, single, "operator audit", "bench", bench.cpu["controller"], rss,
                bench.cpu["state"], [f"step pods deleted before their Succeeded status: {lat['gone_before_status']}",
                                     f"callback calls answered 503/429 and tried again: {lat['retried']}"])


def run_argo(plane: ControlPlane, procs: Processes, args: argparse.Namespace, argo_bin: Path, requeue: str,
             index: int) -> Side:
    """One Argo controller with DEFAULT_REQUEUE_TIME ``requeue`` (its default: 10s), in a namespace of its own."""
    version = argo_version()
    namespace, name = f"{ARGO_NAMESPACE}-{index}", f"argo-controller-{index}"
    metrics, telemetry = free_port(), free_port()
    config = {"metricsConfig": {"enabled": True, "port": metrics, "secure": False},
              "telemetryConfig": {"enabled": True, "port": telemetry, "secure": False}}
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "workflow-controller-configmap", "namespace": namespace},
         "data": {k: yaml.safe_dump(v) for k, v in config.items()}}]))
    # DEFAULT_REQUEUE_TIME: the least time between two reconciliations of one workflow (rate_limiters.go).
    env = {**os.environ, "LEADER_ELECTION_DISABLE": "true", "DEFAULT_REQUEUE_TIME": requeue}
    procs.start(name, [
        str(argo_bin / "workflow-controller"), "--kubeconfig", str(plane.kubeconfig(CONTROLLER_USER)),
        "--namespace", namespace, "--namespaced", "--managed-namespace", namespace,
        "--configmap", "workflow-controller-configmap", "--executor-image", f"quay.io/argoproj/argoexec:{version}",
        *args.argo_arg], env=env)

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", metrics), timeout=1):
            return True

    wait_until("Argo's workflow-controller (its metrics port)", listening, 90, procs)
    pid = pid_of(procs, name)

    async def go() -> tuple[ArgoBench, ChainFigures, PhaseResult]:
        bench = ArgoBench(plane, "", namespace, args.timeout, metered={"controller": pid},
                          kubelet_user=EXECUTOR_USER)
        try:
            chains, single = await bench.run_argo(args.chains, args.chain_steps, args.workflows)
            return bench, chains, single
        finally:
            await bench.close()

    try:
        bench, chains, single = asyncio.run(go())
        rss = peak_rss_mib(pid)
    finally:
        procs.stop(name)
    flags = " ".join(args.argo_arg) or "none"
    notes = [f"step pods deleted before their Succeeded status: {bench.kubelet.gone_before_status}",
             f"extra controller flags: {flags}"]
    return Side(f"Argo {version}, requeue {requeue}", chains, single, "controller audit", EXECUTOR_USER,
                bench.cpu["controller"], rss, None, notes)


# --------------------------------------------------------------------------- report


def report(sides: list[Side], args: argparse.Namespace) -> None:
    def stand_in(phase: PhaseResult, user: str) -> float:
        """Writes by the step pods' stand-in (AgentFlow's shares the user "bench" with the workflow creates)."""
        stored = {k: v for k, v in phase.breakdown.items() if k[1] not in NOT_STORED and k[1] != "workflows"}
        return sum(v for (who, _), v in stored.items() if who == user) / phase.steps

    rows: list[tuple[str, list[str]]] = [
        (f"single-step workflows completed per minute ({args.workflows} at once)",
         [f"{s.single.steps / s.single.seconds * 60:.0f}/min" for s in sides]),
    ]
    for label, key in (("step output reported -> next pod created", "from_result"),
                       ("pod Succeeded written -> next pod created", "from_succeeded")):
        for q in (50, 95):
            values = [getattr(s.chains, key) for s in sides]
            rows.append((f"{label}, p{q}", [f"{percentile(v, q):.0f} ms" if v else "no sample" for v in values]))
    by_phase = (("chains", [s.chains.merged() for s in sides]), ("single-step", [s.single for s in sides]))
    for phase_name, phases in by_phase:
        rows.append((f"API writes per step, controller's own ({phase_name})",
                     [f"{ph.writes[s.own_writes]:.2f}" for s, ph in zip(sides, phases, strict=True)]))
        rows.append((f"API writes per step, step stand-in ({phase_name})",
                     [f"{stand_in(ph, s.stand_in_user):.2f}" for s, ph in zip(sides, phases, strict=True)]))
    rows += [
        ("controller CPU seconds (measured phases)", [f"{s.cpu:.1f} s" for s in sides]),
        ("  + its PostgreSQL's CPU seconds", [f"{s.state_cpu:.1f} s" if s.state_cpu is not None else "(none)"
                                             for s in sides]),
        ("controller peak RSS", [f"{s.peak_rss:.0f} MiB" for s in sides]),
        ("measured phases' wall time (chains + single-step)",
         [f"{s.chains.merged().seconds + s.single.seconds:.1f} s" for s in sides]),
    ]
    samples = ", ".join(f"{s.name}: {len(s.chains.from_result)}" for s in sides)
    print(f"\nAgentFlow vs Argo Workflows on one kwok control plane: {args.chains} chains x {args.chain_steps} steps "
          f"one at a time (step-to-step samples {samples}), {args.workflows} single-step workflows at once, "
          f"{args.nodes} kwok nodes; run in the order {', '.join(s.name for s in sides)}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    width = max(len(r[0]) for r in rows)
    cols = [max(len(s.name), *(len(r[1][i]) for r in rows)) for i, s in enumerate(sides)]
    print(f"{'figure':<{width}}  " + "  ".join(f"{s.name:>{c}}" for s, c in zip(sides, cols, strict=True)))
    for label, shown in rows:
        print(f"{label:<{width}}  " + "  ".join(f"{v:>{c}}" for v, c in zip(shown, cols, strict=True)))
    for s in sides:
        print(f"\n{s.name}: " + "; ".join(s.notes))
        for phase in (s.chains.merged(), s.single):
            print(f"writes in phase {phase.name!r} ({phase.steps} steps, {phase.seconds:.1f} s), audit log, by client "
                  f"and resource (per step):")
            for (who, resource), n in sorted(phase.breakdown.items(), key=lambda kv: (kv[0][0], -kv[1])):
                apart = "  (not stored: not counted as a write)" if resource in NOT_STORED else ""
                print(f"  {who:<24} {resource:<28} {n:>6}  {n / phase.steps:>6.2f}{apart}")


# --------------------------------------------------------------------------- main


def requeue_time(value: str) -> str:
    """A Go duration of the simple kind DEFAULT_REQUEUE_TIME takes (``10s``, ``500ms``, ``1m``)."""
    if not re.fullmatch(r"\d+(\.\d+)?(ms|s|m)", value):
        raise argparse.ArgumentTypeError(f"--argo-requeue {value!r}: expected a duration such as 10s, 1s or 500ms")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=10, help="chain workflows per system, run one at a time")
    parser.add_argument("--chain-steps", type=int, default=6, help="steps per chain (each depends on the one before)")
    parser.add_argument("--workflows", type=int, default=60, help="single-step workflows per system, created at once")
    parser.add_argument("--nodes", type=int, default=4, help="kwok nodes")
    parser.add_argument("--first", choices=["agentflow", "argo"], default="agentflow", help="which system runs first")
    parser.add_argument("--argo-requeue", action="append", type=requeue_time,
                        help="Argo's DEFAULT_REQUEUE_TIME (repeatable: one Argo column each, in this order); "
                             "default: 10s, Argo's own default")
    parser.add_argument("--argo-arg", action="append", default=[],
                        help="an extra flag for Argo's workflow-controller (repeatable), e.g. --argo-arg=--qps=50")
    parser.add_argument("--timeout", type=float, default=300, help="seconds each phase may take")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, audit log)")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    for name in ("chains", "chain_steps", "workflows", "nodes"):
        if getattr(args, name) < (2 if name == "chain_steps" else 1):
            parser.error(f"--{name.replace('_', '-')} must be at least {2 if name == 'chain_steps' else 1}")
    if os.geteuid() != 0:
        print("run as root: the throwaway PostgreSQL runs as the postgres user", file=sys.stderr)
        return 2
    argo_bin = CACHE / f"bin/argo-workflow-controller-{argo_version()}"
    if not (argo_bin / "workflow-controller").exists() or not (argo_bin / "crds").is_dir():
        raise SystemExit(f"{argo_bin}/workflow-controller is missing: run "
                         "`bash tests/e2e/cluster/build.sh argo-workflows` (slow on a cold cache)")
    requeues = args.argo_requeue or ["10s"]
    order = ["agentflow", *requeues] if args.first == "agentflow" else [*requeues, "agentflow"]
    with workdir(args.keep) as root, bench_processes(root, args.keep) as procs:
        t0 = time.monotonic()
        plane = ControlPlane(root, procs, args.nodes, extra_users=(CONTROLLER_USER, EXECUTOR_USER))
        plane.start()
        plane.kubectl("apply", "--server-side", "-f", str(argo_bin / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        print(f"control plane up in {time.monotonic() - t0:.0f}s", file=sys.stderr)
        sides = [run_agentflow(plane, procs, args) if system == "agentflow"
                 else run_argo(plane, procs, args, argo_bin, system, i) for i, system in enumerate(order)]
        report(sides, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Two `agentflow operator --shards auto` processes against a private kwok control plane and a real PostgreSQL
(issue 17): they split a burst of Workflows as the hash says, and when one is killed (SIGKILL) the other takes its
unfinished Workflows over, with no step scheduled or started twice.

The control plane, the kubelet stand-in and the replicas are bench/operator_bench.py's (``--replicas``), so this
needs what the bench needs: root (PostgreSQL runs as the postgres user) and the cluster binaries
(``bash tests/e2e/cluster/build.sh kubernetes etcd kwok``); without them it is skipped. About two minutes.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from agentflow.k8s.shards import owner

REPO = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 6


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("operator_bench", REPO / "bench" / "operator_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["operator_bench"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_two_replicas_split_the_work_and_a_killed_ones_workflows_are_taken_over(own_dsn: str, tmp_path: Path
                                                                                ) -> None:
    bench = bench_module()
    missing = [b for b in (bench.K8S_BIN / "kube-apiserver", bench.ETCD_BIN / "etcd", bench.KWOK_BIN / "kwok")
               if not b.exists()]
    if missing:
        pytest.skip(f"no cluster binaries ({missing[0]}): bash tests/e2e/cluster/build.sh kubernetes etcd kwok")
    if os.geteuid() != 0:
        pytest.skip("the private control plane's bench needs root")
    (tmp_path / "logs").mkdir()
    procs = bench.Processes(tmp_path / "logs")
    try:
        plane = bench.ControlPlane(tmp_path, procs, 2)
        plane.start()
        plane.kubectl("create", "namespace", bench.LEASE_NAMESPACE)
        operators = bench.ShardedOperators(procs, plane.kubeconfig("agentflow-operator"), own_dsn, LEASE_SECONDS)
        try:
            operators.start(2, 0)
            members = sorted(operators.replicas)

            # A burst of 16 single-step Workflows: each driven by the replica its uid hashes to.
            split = asyncio.run(bench.scale_round(plane, operators, "split", 16, 240))
            listed = json.loads(plane.kubectl("get", "workflows.agentflow.dev", "-n", "split", "-o", "json"))
            owners = collections.Counter(owner(w["metadata"]["uid"], members) for w in listed["items"])
            assert split.by_replica == {m: n for m, n in owners.items() if n}, (split.by_replica, owners)

            # Chains of 3 steps; once a quarter of the steps ran, the replica with the most unfinished is killed.
            failover = asyncio.run(bench.failover_round(plane, operators, own_dsn, "failover", 10, 3, 240))
        finally:
            operators.stop()
    except Exception:
        for log in sorted((tmp_path / "logs").glob("operator-*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        procs.stop()
    assert failover.victim_unfinished >= 1
    # taken over within the lease, a renewal and a reconcile (generous: the machine is shared)
    assert max(failover.takeover) < LEASE_SECONDS + 30, failover.takeover
    assert failover.twice == 0 and failover.scheduled == 30, failover
    # Every pod made once: 30 seen, and no create the API server answered other than made (201), the name taken
    # (409) or its own timeout on a loaded machine (504: the create may have gone through; a retry then gets 409).
    assert failover.pods_seen == 30, failover
    assert set(failover.pod_creates) <= {201, 409, 504}, failover
    assert 30 - failover.pod_creates[504] <= failover.pod_creates[201] <= 30, failover

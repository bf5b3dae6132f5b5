"""Teardown and warm bring-up of the local cluster (tests/e2e/cluster/down.sh and up.sh).

Runs last in the session (file name) and only against the project's local cluster: it stops the
cluster, checks that no process, port, bridge or mount is left, then brings it up again with
every build cached and checks that took at most 3 minutes. The cluster is running afterwards,
as before (empty: etcd starts fresh). It runs in CI (CI=true), when the session brought the
cluster up itself, or with AGENTFLOW_E2E_LIFECYCLE=1; AGENTFLOW_E2E_SKIP_LIFECYCLE=1 always skips.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .conftest import CLUSTER_DIR, cluster_setting

if TYPE_CHECKING:
    from .conftest import Cluster

pytestmark = pytest.mark.e2e

WARM_BRING_UP_LIMIT_S = 180


def test_down_leaves_nothing_and_warm_up_is_fast(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("only for the local cluster of tests/e2e/cluster")
    if os.environ.get("AGENTFLOW_E2E_SKIP_LIFECYCLE") == "1":
        pytest.skip("AGENTFLOW_E2E_SKIP_LIFECYCLE=1")
    # Restarting a cluster that other people's tests are using would break them: only in CI, when
    # this session brought the cluster up itself, or when asked for.
    if not (cluster.started_here or os.environ.get("CI") == "true" or os.environ.get("AGENTFLOW_E2E_LIFECYCLE") == "1"):
        pytest.skip("restarts the shared local cluster: runs in CI, or with AGENTFLOW_E2E_LIFECYCLE=1")

    mode_file = Path(cluster_setting("RUN_DIR")) / "mode"
    mode = mode_file.read_text().strip() if mode_file.exists() else "real"

    down = subprocess.run(["bash", str(CLUSTER_DIR / "down.sh")], capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    check = subprocess.run(
        ["bash", str(CLUSTER_DIR / "down.sh"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, f"leftovers after down.sh:\n{check.stderr}"
    assert not cluster.ready()

    t0 = time.monotonic()
    up = subprocess.run(
        ["bash", str(CLUSTER_DIR / "up.sh"), "--mode", mode], capture_output=True, text=True, timeout=900
    )
    took = time.monotonic() - t0
    assert up.returncode == 0, up.stderr[-4000:]
    print(f"warm bring-up took {took:.0f}s")
    assert cluster.ready()
    assert took <= WARM_BRING_UP_LIMIT_S, f"warm bring-up took {took:.0f}s > {WARM_BRING_UP_LIMIT_S}s"

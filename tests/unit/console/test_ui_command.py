"""`agentflow ui`: starts, says where, serves the API; bad flags exit 2 with the flag named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "operator")}


def test_ui_serves_on_a_free_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "ui", "--state-dir", str(tmp_path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("agentflow console on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        with urllib.request.urlopen(f"{url}/api/info", timeout=30) as r:
            assert json.load(r)["mode"] == "local"
        with urllib.request.urlopen(f"{url}/api/runs", timeout=30) as r:
            assert json.load(r) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_a_bad_port_is_named() -> None:
    proc = subprocess.run([sys.executable, "-m", "agentflow.cli", "ui", "--port", "70000"], capture_output=True,
                          text=True, env=_env(), timeout=60)
    assert proc.returncode == 2 and "--port 70000" in proc.stderr

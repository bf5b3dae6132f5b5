"""Runs the corpus in a worker process and judges each command: the hang and memory watchdog.

The worker (worker.py) runs the `agentflow` CLI in-process, case after case. The timeout here is not a speed
assertion: it only tells a hung command from a slow one (a command that prints nothing for HANG_SECONDS on a
machine that runs the whole corpus in well under a minute has stopped making progress). The worker is also
killed when its resident memory passes RSS_LIMIT. Either way the command is judged and the worker restarted on
the next case.

Outcomes of one command::

    ok          what the case expects (corpus.Refused or corpus.Runs)
    accepted    a refusal was expected and the command exited 0 (or ran)
    traceback   main raised: the user saw a Python traceback
    hang        no result within HANG_SECONDS
    memory      the worker passed RSS_LIMIT (or died of MemoryError)
    unclear     exit 2 but the message does not name what the case expects (file, line, field, limit)
    wrong       another exit code than the case expects
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .corpus import Case, Refused

HANG_SECONDS = 120.0
RSS_LIMIT_KB = 2 * 1024 * 1024
WORKER = Path(__file__).with_name("worker.py")


@dataclasses.dataclass(frozen=True)
class Result:
    case: Case
    command: int
    outcome: str
    code: int | None
    text: str
    seconds: float
    maxrss_kb: int

    @property
    def argv(self) -> tuple[str, ...]:
        return self.case.commands[self.command].argv


def write_cases(cases: Sequence[Case], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for case in cases:
        folder = root / case.id
        folder.mkdir()
        for name, content in case.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        for name, target in case.symlinks.items():
            (folder / name).symlink_to(target)
    listed = [{"id": c.id, "commands": [list(cmd.argv) for cmd in c.commands]} for c in cases]
    (root / "cases.json").write_text(json.dumps(listed))


def judge(case: Case, command: int, record: dict[str, Any]) -> str:
    expect = case.commands[command].expect
    text = (record.get("out") or "") + (record.get("err") or "")
    if record.get("traceback"):
        return "memory" if "MemoryError" in record["traceback"] else "traceback"
    code = record.get("code")
    if isinstance(expect, Refused):
        if code == 2:
            return "ok" if all(name in text for name in expect.names) else "unclear"
        return "accepted" if code in (0, 1, 3) else "wrong"
    if code not in expect.codes:
        return "wrong"
    return "ok" if all(name in text for name in expect.names) else "unclear"


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_corpus(cases: Sequence[Case], root: Path, *, pythonpath: str, hang_seconds: float = HANG_SECONDS,
               rss_limit_kb: int = RSS_LIMIT_KB) -> list[Result]:
    """Every command of every case, judged (see the module docstring)."""
    write_cases(cases, root)
    results_file = root / "results.jsonl"
    results_file.touch()
    flat = [(ci, k) for ci, case in enumerate(cases) for k in range(len(case.commands))]
    out: list[Result] = []
    env = {**os.environ, "PYTHONPATH": pythonpath, "AGENTFLOW_MODEL_MODE": "offline", "NO_COLOR": "1",
           "AGENTFLOW_CONTAINER_ISOLATION": "off"}
    start = 0
    while start < len(cases):
        worker = subprocess.Popen([sys.executable, str(WORKER), str(root), str(start)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        done_before = len(out)
        last = time.monotonic()
        peak = 0
        failure: str | None = None
        while True:
            lines = results_file.read_text().splitlines()
            for line in lines[len(out):]:
                record = json.loads(line)
                ci, k = flat[len(out)]
                assert record["case"] == cases[ci].id and record["command"] == k, (record, cases[ci].id)
                text = (record.get("traceback") or "") + (record.get("out") or "") + (record.get("err") or "")
                out.append(Result(cases[ci], k, judge(cases[ci], k, record), record.get("code"), text,
                                  record["seconds"], record["maxrss_kb"]))
                last = time.monotonic()
            if len(out) == len(flat) or worker.poll() is not None:
                break
            peak = max(peak, _rss_kb(worker.pid))
            if peak > rss_limit_kb:
                failure = "memory"
            elif time.monotonic() - last > hang_seconds:
                failure = "hang"
            if failure is not None:
                worker.kill()
                break
            time.sleep(0.05)
        worker.wait()
        stderr = worker.stderr.read().decode("utf-8", "replace") if worker.stderr else ""
        if len(out) == len(flat):
            break
        # the worker stopped (killed, or died) during the next command: judge it, go on with the next case
        ci, k = flat[len(out)]
        outcome = failure or ("memory" if "MemoryError" in stderr or worker.returncode == -9 else "traceback")
        out.append(Result(cases[ci], k, outcome, None, stderr[-2000:], time.monotonic() - last, peak))
        for k2 in range(k + 1, len(cases[ci].commands)):  # the case's other commands did not run
            out.append(Result(cases[ci], k2, "skipped", None, "", 0.0, 0))
        start = ci + 1
        assert len(out) > done_before
        # results.jsonl only holds what the workers wrote: rewrite it to match ``out``'s positions
        results_file.write_text("".join(json.dumps({"case": r.case.id, "command": r.command}) + "\n" for r in out))
    return out

"""Runs the commands of corpus cases with the `agentflow` CLI in this process, one after the other.

    python worker.py ROOT START

ROOT/cases.json lists the cases (id and commands); each case's files are in ROOT/<id>/. From case index
START on, each command runs in its case's folder through ``agentflow.cli.main`` with stdout and stderr
captured; one JSON line per command is appended to ROOT/results.jsonl (flushed at once, so the parent sees
how far the worker got):

    {"case", "command", "code", "out", "err", "traceback", "seconds", "maxrss_kb"}

``traceback`` is set when main raised (SystemExit aside): what the user would have seen instead of a message.
The parent (harness.py) watches the worker: no new line for too long is a hang, too much memory a blow-up.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path


def main(root: Path, start: int) -> None:
    from agentflow.cli import main as cli

    cases = json.loads((root / "cases.json").read_text())
    results = (root / "results.jsonl").open("a", encoding="utf-8")
    for case in cases[start:]:
        folder = root / case["id"]
        for index, argv in enumerate(case["commands"]):
            os.chdir(folder)
            out, err = io.StringIO(), io.StringIO()
            started = time.perf_counter()
            code: int | None = None
            trace = None
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = cli(list(argv))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
            except BaseException:  # what the user would see: recorded, not raised
                trace = traceback.format_exc()[-4000:]
            record = {"case": case["id"], "command": index, "code": code, "out": out.getvalue()[-4000:],
                      "err": err.getvalue()[-4000:], "traceback": trace,
                      "seconds": round(time.perf_counter() - started, 3),
                      "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
            results.write(json.dumps(record) + "\n")
            results.flush()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))

"""The 60,000-step workflow of the hostile-input issue, and the largest ones the limits let through: time and RSS.

Each case runs ``agentflow run --no-wait --progress none FILE`` in a child process (offline model, builtin echo
tool), killed at ``--kill-after`` seconds as the issue's was at 300. Printed per case and code base: the exit
code, wall and CPU seconds, and the child's peak RSS (ru_maxrss). Figures only; nothing is asserted.

    python bench/hostile_bench.py [--before /path/to/old/operator] [--kill-after 300] [--steps 60000]

Cases::

    wide-60000        60,000 independent steps (the issue's): all ready at once
    wide-2000         the most steps a Workflow may have (agentflow.models.limits.MAX_STEPS), all ready at once
    fanout-10000      one step over the most items a forEach may give (MAX_FANOUT_ITEMS), then a fan-in
    engine-60000      (this code only) the 60,000 steps through the local runner with the validation limit
                      bypassed: the runner's parallelism cap and its bookkeeping alone, at scale
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = """---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: tools}
spec:
  tools:
  - name: echo
    builtin: {name: echo}
"""


def wide(n: int) -> str:
    steps = "".join(f"  - {{name: s{i}, kind: tool, tool: echo}}\n" for i in range(n))
    head = "apiVersion: agentflow.dev/v1alpha1\nkind: Workflow\nmetadata: {name: wide}\nspec:\n  steps:\n"
    return head + steps + TOOLS


def fanout(n: int) -> str:
    items = "[" + ", ".join("0" for _ in range(n)) + "]"
    return textwrap.dedent("""\
        apiVersion: agentflow.dev/v1alpha1
        kind: Workflow
        metadata: {name: fanout}
        spec:
          inputs: {items: ITEMS}
          steps:
          - {name: map, kind: tool, tool: echo, forEach: inputs.items, inputs: {i: "${{ item }}"}}
          - {name: reduce, kind: tool, tool: echo, dependsOn: [map], inputs: {count: "${{ size(steps.map.output) }}"}}
        """).replace("ITEMS", items) + TOOLS


ENGINE = """
import asyncio, sys, yaml
from pathlib import Path
from agentflow.models import Workflow, StepSpec, WorkflowSpec, ObjectMeta, Catalog, ToolPolicy
from agentflow.engine.plan import compile_plan
from agentflow.executors import InProcessExecutor, StepServices
from agentflow.tools.runner import ToolRunner
from agentflow.runner.loop import LocalRun, DEFAULT_MAX_PARALLEL
from agentflow.runner.store import RunStore

n = int(sys.argv[1])
steps = [StepSpec(name=f"s{i}", kind="tool", tool="echo") for i in range(n)]
spec = WorkflowSpec.model_construct(steps=steps)  # not validated: past MAX_STEPS
workflow = Workflow.model_construct(metadata=ObjectMeta(name="wide"), spec=spec)
catalog = Catalog()
catalog.add(ToolPolicy.model_validate(yaml.safe_load(sys.argv[2])))
plan = compile_plan(workflow, max_parallel=DEFAULT_MAX_PARALLEL)
executor = InProcessExecutor(StepServices(catalog, spec, None, ToolRunner()))
run_dir = RunStore(Path(sys.argv[3])).create("engine-run", "", {"workflow": "wide"})
run = asyncio.run(LocalRun(run_dir, plan, executor).drive())
print(run.phase, *run.progress)
"""


def measure(argv: list[str], env: dict[str, str], kill_after: float, cwd: Path) -> dict[str, object]:
    """Run ``argv``; its exit, wall and CPU seconds and its own peak RSS (os.wait4's rusage of that child)."""
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        code: object = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() - started > kill_after:
                proc.kill()
                _, _, usage = os.wait4(proc.pid, 0)
                code = f"killed at {kill_after:.0f}s"
                break
            time.sleep(0.05)
        proc.returncode = -1  # reaped here: Popen must not wait for it again
        wall = time.monotonic() - started
        out.seek(0)
        tail = out.read().decode("utf-8", "replace").strip().splitlines()
    return {"code": code, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
            "says": tail[-1][:110] if tail else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", help="PYTHONPATH of the code to compare with (e.g. an older checkout's operator/)")
    parser.add_argument("--kill-after", type=float, default=300.0)
    parser.add_argument("--steps", type=int, default=60_000)
    args = parser.parse_args()
    codes = [("after", str(ROOT / "operator"))] + ([("before", args.before)] if args.before else [])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = {f"wide-{args.steps}": wide(args.steps), "wide-2000": wide(2_000), "fanout-10000": fanout(10_000)}
        for name, text in files.items():
            (work / f"{name}.yaml").write_text(text)
        print(f"{'case':<14} {'code':<7} {'exit':<16} {'wall s':>8} {'cpu s':>8} {'peak RSS MiB':>13}  says")
        for label, pythonpath in codes:
            env = {**os.environ, "PYTHONPATH": pythonpath, "AGENTFLOW_MODEL_MODE": "offline", "NO_COLOR": "1"}
            for name in ("wide-2000", "fanout-10000", f"wide-{args.steps}"):
                state = work / f"state-{label}-{name}"
                argv = [sys.executable, "-m", "agentflow.cli", "--state-dir", str(state), "run", "--no-wait",
                        "--progress", "none", str(work / f"{name}.yaml")]
                r = measure(argv, env, args.kill_after, work)
                print(f"{name:<14} {label:<7} {r['code']!s:<16} {r['wall']:>8.1f} {r['cpu']:>8.1f} "
                      f"{r['rss_mib']:>13.0f}  {r['says']}", flush=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "operator"), "NO_COLOR": "1"}
        argv = [sys.executable, "-c", ENGINE, str(args.steps), TOOLS.split("---\n", 1)[1], str(work / "engine")]
        r = measure(argv, env, args.kill_after, work)
        print(f"{'engine-' + str(args.steps):<14} {'after':<7} {r['code']!s:<16} {r['wall']:>8.1f} {r['cpu']:>8.1f} "
              f"{r['rss_mib']:>13.0f}  {r['says']}")


if __name__ == "__main__":
    main()

"""Tracing overhead on local runs: the same runs with tracing off, exporting over OTLP/HTTP to a loopback receiver,
and exporting to a collector that is not there (a closed port), side by side in one process.

Two workloads, run by the full local runner (in-process executor, the offline model, the journal on disk):

  chain        --steps builtin tool steps one after the other: the runner's step-to-step cost, where the
               spans of each attempt are built from the journal and handed to the batch processor
  agent loop   examples/manifests/support-agent.yaml: an agent loop with tools, a delegate and memory, so the
               gateway's chat, memory and the attempts' spans are all made

Modes are interleaved per repeat (machine drift hits all alike); the median wall time per run and per step is
printed, with the overhead against off. The receiver reads and acknowledges each request (it does not decode),
in a thread of this process. Usage:
  python bench/trace_bench.py [--steps 100] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from agentflow.runner import session
from agentflow.runner.store import RunStore
from agentflow.telemetry import TraceSettings, Tracing

REPO = Path(__file__).resolve().parents[1]
SUPPORT_AGENT = REPO / "examples/manifests/support-agent.yaml"
OFFLINE = {"AGENTFLOW_MODEL_MODE": "offline"}

POLICY = """
---
apiVersion: agentflow.dev/v1alpha1
kind: Agent
metadata: {name: a, labels: {team: t}}
spec:
  role: echo
  model: {name: openai/gpt-4o-mini}
  tools: [echo]
---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: p}
spec:
  agentSelector: {matchLabels: {team: t}}
  tools:
    - name: echo
      builtin: {name: echo}
"""


def chain(steps: int) -> str:
    lines = ["apiVersion: agentflow.dev/v1alpha1", "kind: Workflow", "metadata: {name: chain}", "spec:", "  steps:"]
    for i in range(steps):
        dep = f", dependsOn: [s{i - 1}]" if i else ""
        lines.append(f"    - {{name: s{i}, kind: tool, tool: echo, agentRef: {{name: a}}, inputs: {{i: {i}}}{dep}}}")
    return "\n".join(lines) + "\n" + POLICY


class Receiver:
    """An OTLP/HTTP endpoint that reads each request and answers 200 (an empty ExportTraceServiceResponse)."""

    def __init__(self) -> None:
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one_run(paths: list[Path], state: Path, tracing: Tracing) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the whole process: the exporter's thread included, attempts)."""
    bundle = session.load_bundle(paths)
    run_dir = session.create_run(RunStore(state), bundle, paths)
    executor = session.make_executor(bundle, "inprocess", env=OFFLINE, state_dir=state, tracing=tracing)
    started, cpu = time.perf_counter(), time.process_time()
    run = await session.drive(run_dir, bundle, executor, tracing=tracing)
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert run.phase == "Succeeded", run.phase
    return took, cpu, sum(1 for r in run_dir.read_records() if r.event.type.value == "StepStarted")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)
    receiver = Receiver()
    modes: dict[str, Callable[[], Tracing]] = {
        "off": Tracing.off,
        "on (loopback collector)": lambda: Tracing.build(TraceSettings(endpoint=receiver.url + "/v1/traces")),
        "on (collector unreachable)": lambda: Tracing.build(
            TraceSettings(endpoint=f"http://127.0.0.1:{closed_port()}/v1/traces")),
    }
    tracers = {name: make() for name, make in modes.items()}
    with tempfile.TemporaryDirectory(prefix="agentflow-trace-bench-") as tmp:
        manifest = Path(tmp) / "chain.yaml"
        manifest.write_text(chain(args.steps))
        workloads = {f"chain of {args.steps} tool steps": [manifest], "agent loop (support-agent)": [SUPPORT_AGENT]}
        results: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        attempts: dict[str, int] = {}
        for workload, paths in workloads.items():
            asyncio.run(one_run(paths, Path(tmp) / "warm", Tracing.off()))  # imports, caches: not measured
            for r in range(args.repeat):
                for mode, tracing in tracers.items():
                    took, used, n = asyncio.run(one_run(paths, Path(tmp) / f"{mode[:3]}-{r}", tracing))
                    results.setdefault((workload, mode), []).append(took)
                    cpu.setdefault((workload, mode), []).append(used)
                    attempts[workload] = n
        for tracing in tracers.values():
            tracing.shutdown(2.0)
    print(f"tracing overhead on local runs (median of {args.repeat}; CPU time of the process, the exporter's thread "
          f"included, and wall time; Python {sys.version.split()[0]}); the loopback collector got "
          f"{receiver.requests} export requests\n")
    print("| workload | attempts | measure | " + " | ".join(modes) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in modes) + " |")
    for workload in workloads:
        for measure, table in (("CPU", cpu), ("wall", results)):
            base = statistics.median(table[(workload, "off")])
            cells = []
            for mode in modes:
                median = statistics.median(table[(workload, mode)])
                per_step = median / attempts[workload] * 1000
                extra = "" if mode == "off" else f", {100 * (median - base) / base:+.1f} %"
                cells.append(f"{per_step:.2f} ms/attempt{extra}")
            print(f"| {workload} | {attempts[workload]} | {measure} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

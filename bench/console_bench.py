"""The console's speed, measured in headless Chromium on loopback; prints figures, asserts nothing.

    python bench/console_bench.py [--events 200] [--steps 1999] [--items 5000] [--loads 3]

1. Journal event -> node on the page: a local run of --events waiting approval steps is open in the run page; the
   bench appends one ApprovalDecided record at a time to the run's journal (as the process driving the run
   would, fsync included) and the page's MutationObserver stamps when that node's data-phase turns Succeeded.
   Both clocks are this machine's wall clock (time.time() and the page's performance.timeOrigin + now()).
   Prints p50, p90 and max over --events events.
2. Page load of a run with --steps approval steps (with the fan-out step, the 2,000 a Workflow may have) plus
   one fan-out of --items items (collapsed into one node):
   from navigation start to the first view drawn (the graph up to 2,000 nodes, the virtualised list past that),
   then from the click on the view toggle to the other view drawn, median of --loads fresh loads; plus the API's
   time for
   the graph (first, cold: the plan compiled and the journal read; then cached) and its size.

Needs Debian's Chromium (make browser) and playwright (the dev extra). Everything runs on 127.0.0.1 and stops.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from agentflow.engine.journal import Journal  # noqa: E402
from agentflow.engine.values import Event, EventType  # noqa: E402
from agentflow.runner.store import RunStore  # noqa: E402
from agentflow.testing import waiting_run  # noqa: E402

CHROMIUM = os.environ.get("AGENTFLOW_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
OBSERVE = """(node) => { window.__seen = new Promise((resolve) => {
  const el = document.querySelector(`[data-testid="node-${node}"]`);
  const stamp = () => performance.timeOrigin + performance.now();
  if (el.getAttribute('data-phase') === 'Succeeded') { resolve(stamp()); return; }
  new MutationObserver((_, obs) => {
    if (el.getAttribute('data-phase') === 'Succeeded') { obs.disconnect(); resolve(stamp()); }
  }).observe(el, {attributes: true, attributeFilter: ['data-phase']});
}); }"""


@contextlib.contextmanager
def console(state: Path) -> Iterator[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "ui", "--state-dir", str(state), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("agentflow console on "):
            raise SystemExit(f"agentflow ui did not start: {line!r}")
        yield line.rsplit(" ", 1)[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def event_latency(browser: object, events: int) -> list[float]:
    from playwright.sync_api import BrowserContext

    assert isinstance(browser, BrowserContext)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        run_id = waiting_run(state, steps=max(events, 1), name="latency")
        run_dir = RunStore(state).open(run_id)
        with console(state) as url:
            page = browser.new_page()
            page.goto(f"{url}/#/runs/{run_id}")
            page.wait_for_selector('[data-testid="live"]:has-text("live"), [data-testid="live"]:has-text("connecting")')
            page.wait_for_selector('[data-testid="node-s00000"]')
            page.wait_for_timeout(500)
            out = []
            with run_dir.lock():
                journal = Journal(run_dir.read_records())
                for i in range(events):
                    node = f"s{i:05d}"
                    page.evaluate(OBSERVE, node)
                    event = Event(EventType.approval_decided, node, {"approved": True, "by": "bench", "reason": ""},
                                  time.time())
                    start = time.time()
                    run_dir.append(journal.extend([event]))
                    shown = page.evaluate("() => window.__seen") / 1000.0
                    out.append((shown - start) * 1000)
            page.close()
            return out


def page_load(browser: object, steps: int, items: int,
              loads: int) -> tuple[list[float], list[float], float, float, int]:
    from playwright.sync_api import BrowserContext

    assert isinstance(browser, BrowserContext)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        run_id = waiting_run(state, steps=steps, items=items, name="big")
        with console(state) as url:
            t = time.perf_counter()
            with urllib.request.urlopen(f"{url}/api/runs/{run_id}", timeout=120) as r:
                size = len(r.read())
            cold = time.perf_counter() - t
            t = time.perf_counter()
            with urllib.request.urlopen(f"{url}/api/runs/{run_id}", timeout=120) as r:
                r.read()
            warm = time.perf_counter() - t
            times, draws = [], []
            for _ in range(loads):
                page = browser.new_page()
                t = time.perf_counter()
                page.goto(f"{url}/#/runs/{run_id}")
                # The page opens on the graph up to 2,000 nodes, on its virtualised list past that.
                listed = f'[data-testid="node-list"][data-count="{steps + 1}"] .vrow'
                graph = f'[data-testid="graph"][data-nodes="{steps + 1}"] .react-flow__node'
                page.wait_for_selector(f"{listed}, {graph}", timeout=120_000)
                times.append(time.perf_counter() - t)
                other = listed if page.locator(graph).count() else graph
                t = time.perf_counter()
                page.click('[data-testid="toggle-view"]')
                page.wait_for_selector(other, timeout=120_000)
                draws.append(time.perf_counter() - t)
                page.close()
            return times, draws, cold, warm, size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=200, help="journal events whose arrival on the page is timed")
    p.add_argument("--steps", type=int, default=1999,
                   help="approval steps of the large run (with the fan-out step: at most 2000)")
    p.add_argument("--items", type=int, default=5000, help="items of the large run's fan-out")
    p.add_argument("--loads", type=int, default=3, help="page loads of the large run")
    args = p.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM}: make browser", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                        viewport={"width": 1400, "height": 860})
        try:
            latency = event_latency(browser, args.events)
            loads, draws, cold, warm, size = page_load(browser, args.steps, args.items, args.loads)
        finally:
            browser.close()
    print(f"console, headless Chromium on loopback ({os.cpu_count()} cores, shared)")
    print(f"journal event -> node state on the page, {len(latency)} events: p50 {statistics.median(latency):.1f} ms, "
          f"p90 {pct(latency, 0.9):.1f} ms, max {max(latency):.1f} ms")
    print(f"page load, {args.steps} steps + a fan-out of {args.items} items (collapsed), to its first view drawn: "
          f"median "
          f"{statistics.median(loads):.2f} s over {len(loads)} loads ({', '.join(f'{x:.2f}' for x in loads)} s)")
    print(f"  then the other view (graph or list) of {args.steps + 1} nodes (only those in view): median "
          f"{statistics.median(draws):.2f} s ({', '.join(f'{x:.2f}' for x in draws)} s)")
    print(f"  GET /api/runs/RUN: {cold:.2f} s cold (plan compiled, journal read), {warm * 1000:.0f} ms cached, "
          f"{size / 1e6:.1f} MB of JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a person sees while a local run goes: a live table on a terminal, one line
per transition elsewhere (CI logs, pipes), nothing with --json."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..engine.run import Run
from ..engine.values import Event, EventType

STYLE = {
    "Succeeded": "green", "Failed": "red", "Running": "cyan", "Waiting": "yellow", "Retrying": "magenta",
    "Skipped": "dim", "Cancelled": "dim red", "Pending": "dim",
}

LINE_EVENTS = {
    EventType.step_scheduled: "started",
    EventType.step_succeeded: "succeeded",
    EventType.step_failed: "failed",
    EventType.step_skipped: "skipped",
    EventType.step_cancelled: "cancelled",
    EventType.step_timed_out: "timed out",
    EventType.retry_scheduled: "will retry",
    EventType.approval_requested: "waits for approval",
    EventType.approval_decided: "decided",
    EventType.state_entered: "entered",
}


def node_rows(run: Run) -> list[dict[str, Any]]:
    """One row per node, in the order nodes appeared."""
    rows = []
    for node in run.nodes.values():
        duration = (node.finished_at or time.time()) - node.started_at if node.started_at else None
        rows.append({
            "node": node.id, "phase": node.phase, "attempts": node.attempt,
            "seconds": round(duration, 3) if duration is not None else None,
            "costUsd": round(node.cost_usd, 6), "tokens": node.tokens, "message": node.message,
        })
    for name, step in run.steps.items():
        if name not in run.nodes and step.phase in ("Pending",):
            rows.append({"node": name, "phase": "Pending", "attempts": 0, "seconds": None, "costUsd": 0.0,
                         "tokens": 0, "message": None})
    return rows


def render_table(run: Run) -> Group:
    done, total = run.progress
    phase = run.shown_phase
    header = Text.assemble(
        ("run ", "bold"), (run.run_id, "bold cyan"), f"  {run.plan.name}  ",
        (phase, STYLE.get(phase, "")), f"  {done}/{total} steps  ${run.cost_usd:.4f}  {run.tokens} tokens",
    )
    table = Table(box=None, pad_edge=False)
    for column in ("step", "phase", "try", "time", "cost", "note"):
        table.add_column(column)
    for row in node_rows(run)[-40:]:
        table.add_row(
            row["node"], Text(row["phase"], STYLE.get(row["phase"], "")), str(row["attempts"] or ""),
            f"{row['seconds']:.2f}s" if row["seconds"] is not None else "",
            f"${row['costUsd']:.4f}" if row["costUsd"] else "", (row["message"] or "")[:60],
        )
    return Group(header, table)


class Progress:
    """The observer LocalRun calls after each batch of journaled events."""

    def __init__(self, mode: str, stream: IO[str]) -> None:
        self.mode = mode  # "live", "lines" or "quiet"
        self.stream = stream
        self.console = Console(file=stream)
        self.live: Live | None = None
        self._last = 0.0

    def __enter__(self) -> Progress:
        if self.mode == "live":
            self.live = Live(console=self.console, refresh_per_second=8, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def __call__(self, run: Run, events: Sequence[Event]) -> None:
        if self.mode == "live" and self.live is not None:
            now = time.monotonic()
            if now - self._last > 0.1 or run.finished:
                self._last = now
                self.live.update(render_table(run))
        elif self.mode == "lines":
            for event in events:
                verb = LINE_EVENTS.get(event.type)
                if verb is None:
                    continue
                extra = ""
                if event.type is EventType.step_failed:
                    extra = f": {event.data.get('error', {}).get('message', '')}"
                elif event.type is EventType.step_skipped:
                    extra = f": {event.data.get('reason', '')}"
                elif event.type is EventType.approval_requested:
                    extra = f": {event.data.get('message', '')}"
                print(f"  {event.node:<24} {verb}{extra}", file=self.stream, flush=True)


def summary(run: Run) -> dict[str, Any]:
    """The machine-readable end of a run (what --json prints)."""
    done, total = run.progress
    return {
        "runId": run.run_id,
        "workflow": run.plan.name,
        "phase": run.shown_phase,
        "reason": run.reason,
        "progress": f"{done}/{total}",
        "outputs": run.outputs,
        "costUsd": round(run.cost_usd, 6),
        "tokens": run.tokens,
        "nodes": node_rows(run),
        **({"prompts": {k: dict(v) for k, v in sorted(run.prompts.items())}} if run.prompts else {}),
    }


def print_summary(run: Run, stream: IO[str]) -> None:
    console = Console(file=stream)
    data = summary(run)
    console.print(render_table(run))
    console.print(Text(f"\n{run.phase}", style=STYLE.get(run.phase, "bold")) +
                  Text(f" {run.reason}" if run.reason else ""))
    stream.flush()
    if run.outputs is not None:
        print("outputs:", file=stream)
        print(json.dumps(run.outputs, indent=2, ensure_ascii=False), file=stream)
    for step, choice in sorted(run.prompts.items()):
        print(f"prompt: step {step} got {choice.get('name')} (family {choice.get('family')}, version "
              f"{choice.get('version')}, {choice.get('reason')})", file=stream)
    calls = [r for r in data["nodes"] if r["costUsd"] or r["tokens"]]
    print(f"cost: ${run.cost_usd:.6f} over {run.tokens} tokens in {len(calls)} steps with model calls", file=stream)

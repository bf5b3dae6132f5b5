"""`agentflow cost`: a workflow's cost before it runs, and where past spend went.

::

    agentflow cost FILE.yaml [MORE ...] [--workflow NAME] [--input K=V] [--json]
                   [--state-dir DIR] [--postgres-dsn DSN] [--no-calibration] [--min-samples N]
        the preflight estimate per step (low / expected / high tokens and USD, with every assumption),
        calibrated from past runs: the local journals under --state-dir (default .agentflow) and, with
        --postgres-dsn, the calls the gateway recorded in the ledger
    agentflow cost report [--state-dir DIR | --postgres-dsn DSN] [--namespace NS] [--since WHEN] [--json]
        spend by namespace / workflow / agent / model, cache hit rates, cheaper-model recommendations
        (the criterion is printed with them: see agentflow.cost.report)

Exit codes: 0 done; 2 bad input (files, flags), with every problem printed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cost.calibration import Calibration, Observation, RunShape, observations_from_calls, observations_from_journal
from ..cost.estimate import Estimate, EstimateError, TokenCounter, estimate_workflow
from ..cost.report import Report, build_report
from ..loader import file_roots_from_env
from ..models import ManifestError
from ..runner import session
from ..runner.store import RunStore, StoreError
from ..storage.errors import StorageError
from ..storage.ledger import LlmCall

EXIT_OK, EXIT_USAGE = 0, 2


class CostError(Exception):
    """Bad input to `agentflow cost`; the message names the flag or file."""


def _state_dir_default() -> str:
    return os.environ.get("AGENTFLOW_STATE_DIR", ".agentflow")


def estimate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentflow cost", description="Estimate a workflow's cost before it runs "
                                "(or: agentflow cost report).")
    p.add_argument("files", nargs="+", help="YAML files or folders with the Workflow and what it refers to")
    p.add_argument("--workflow", help="which Workflow, when the files hold several")
    p.add_argument("--input", action="append", metavar="KEY=VALUE", help="override an input (value read as YAML)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--state-dir", default=_state_dir_default(),
                   help="local runs to calibrate from (default .agentflow; missing = none)")
    p.add_argument("--postgres-dsn", default=None, help="also calibrate from the ledger's recorded calls")
    p.add_argument("--no-calibration", action="store_true", help="use the documented defaults only")
    p.add_argument("--min-samples", type=int, default=3,
                   help="calls a step needs in past runs before they replace the defaults (default 3)")
    return p


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentflow cost report", description="Spend, cache hit rates and "
                                "cheaper-model recommendations from past calls.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state-dir", default=None, help="local runs (default .agentflow)")
    where.add_argument("--postgres-dsn", default=None, help="the ledger of the cluster (the gateway's calls)")
    p.add_argument("--namespace", "-n", help="only calls in this namespace")
    p.add_argument("--since", help="only calls since: an ISO date/time (2025-01-31, 2025-01-31T12:00Z) or an "
                   "age (30m, 24h, 7d)")
    p.add_argument("--min-calls", type=int, default=3, help="successful calls a cheaper model needs with the same "
                   "PromptVersion before it is recommended (default 3)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return p


_AGE = re.compile(r"^(\d+)([mhdw])$")


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """``--since``: an age (``7d``) or an ISO date/time (UTC when it names no zone)."""
    match = _AGE.match(text.strip())
    if match:
        n, unit = int(match.group(1)), match.group(2)
        return now - dt.timedelta(**{{"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: n})
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CostError(f"--since {text!r}: expected an ISO date/time (2025-01-31, 2025-01-31T12:00Z) "
                        "or an age (30m, 24h, 7d)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


# -- reading past runs ---------------------------------------------------------------------------------


def local_history(state_dir: Path, count_tokens: TokenCounter | None, since: dt.datetime | None = None,
                  warn: Any = None) -> tuple[list[Observation], list[RunShape]]:
    """Observations of every readable local run under ``state_dir`` (none when it does not exist)."""
    observations: list[Observation] = []
    shapes: list[RunShape] = []
    store = RunStore(state_dir)
    if not store.runs_path.is_dir():
        return observations, shapes
    for info in store.list_runs():
        if since is not None and info.created < since.timestamp():
            continue
        try:
            run_dir = store.open(info.run_id)
            bundle = session.bundle_of(run_dir)
            events = [r.event for r in run_dir.read_records()]
        except (ManifestError, StoreError, session.SessionError, ValueError) as exc:
            if warn is not None:
                warn(f"skipped run {info.run_id}: {str(exc).splitlines()[0]}")
            continue
        obs, shape = observations_from_journal(info.run_id, events, bundle.workflow, bundle.catalog, count_tokens)
        observations.extend(obs)
        shapes.append(shape)
    return observations, shapes


async def ledger_calls(dsn: str, namespace: str | None, since: dt.datetime | None,
                       workflow: str | None = None, limit: int = 100_000) -> list[LlmCall]:
    """The calls the ledger in PostgreSQL recorded (agentflow.storage.budgets.PostgresLedger)."""
    from ..storage.budgets import PostgresLedger

    ledger = await PostgresLedger.connect(dsn)
    try:
        return await ledger.calls(namespace=namespace, since=since, workflow=workflow, limit=limit)
    finally:
        await ledger.close()


# -- printing ------------------------------------------------------------------------------------------


def _usd(x: float) -> str:
    return f"${x:.6f}" if x < 1 else f"${x:,.2f}"


def format_estimate(estimate: Estimate) -> str:
    head = (f"{'STEP':<22} {'KIND':<8} {'MODEL':<28} {'ITEMS':>7} {'CALLS':>6} {'IN TOK':>8} {'OUT TOK':>8} "
            f"{'USD LOW':>11} {'USD EXPECTED':>13} {'USD HIGH':>11}")
    lines = [f"cost estimate of Workflow {estimate.workflow} (low / expected / high)", "", head]
    for s in estimate.steps:
        items = f"{s.multiplicity.expected:g}" + ("*" if s.multiplicity_basis != "exact" else "")
        usd = (f"{_usd(s.usd.low):>11} {_usd(s.usd.expected):>13} {_usd(s.usd.high):>11}" if s.usd is not None
               else f"{'no price':>11} {'no price':>13} {'no price':>11}")
        lines.append(f"{s.step[:22]:<22} {s.kind:<8} {(s.model or '-')[:28]:<28} {items:>7} {s.calls.expected:>6.2f} "
                     f"{s.input_tokens.expected:>8.0f} {s.output_tokens.expected:>8.0f} {usd}")
    lines.append(f"{'TOTAL':<22} {'':<8} {'':<28} {'':>7} {'':>6} "
                 f"{sum(s.input_tokens.expected for s in estimate.steps):>8.0f} "
                 f"{sum(s.output_tokens.expected for s in estimate.steps):>8.0f} "
                 f"{_usd(estimate.usd.low):>11} {_usd(estimate.usd.expected):>13} {_usd(estimate.usd.high):>11}")
    lines.append(f"tokens: {estimate.tokens.low:.0f} / {estimate.tokens.expected:.0f} / {estimate.tokens.high:.0f}"
                 "   (* items assumed or calibrated, not known before the run)")
    lines.append("")
    lines.append("assumptions:")
    for s in estimate.steps:
        tag = " [calibrated]" if s.calibrated else ""
        for note in s.assumptions:
            lines.append(f"  {s.step}{tag}: {note}")
    for note in estimate.assumptions:
        lines.append(f"  workflow: {note}")
    return "\n".join(lines)


def _spend_table(title: str, rows: Sequence[Any]) -> list[str]:
    out = [f"{title}:", f"  {'':<44} {'CALLS':>7} {'IN TOK':>10} {'OUT TOK':>10} {'USD':>12} {'CACHE HIT':>9}"]
    for r in rows:
        out.append(f"  {r.key[:44]:<44} {r.calls:>7} {r.input_tokens:>10} {r.output_tokens:>10} "
                   f"{_usd(r.cost_usd):>12} {r.cache_hit_rate:>9.1%}")
    return out


def format_report(report: Report, source: str) -> str:
    lines = [f"spend from {source}: {report.calls} calls, {_usd(report.cost_usd)}, "
             f"cache hit rate {report.cache_hit_rate:.1%}", ""]
    for title, rows in (("by namespace", report.by_namespace), ("by workflow", report.by_workflow),
                        ("by agent", report.by_agent), ("by model (cache hit rate per model)", report.by_model)):
        lines.extend(_spend_table(title, rows))
        lines.append("")
    lines.append("recommendations:")
    if not report.recommendations:
        lines.append("  none (no cheaper model meets the criterion below)")
    for r in report.recommendations:
        lines.append(f"  agent {r.agent}, prompt {r.prompt}: try {r.model} instead of {r.current_model}: "
                     f"{_usd(r.usd_per_call)} vs {_usd(r.current_usd_per_call)} per call, {r.ok_calls} ok calls "
                     f"({r.ok_rate:.0%} ok vs {r.current_ok_rate:.0%}); would have saved {_usd(r.saving_usd)}")
    lines.append(f"criterion: {report.criterion}")
    return "\n".join(lines)


# -- commands ------------------------------------------------------------------------------------------


def _warn(message: str) -> None:
    print(f"agentflow cost: {message}", file=sys.stderr)


def cmd_estimate(args: argparse.Namespace) -> int:
    from ..llm import litellm_provider

    provider = litellm_provider()
    count_message_tokens, price_per_token = provider.count_tokens, provider.prices

    if args.min_samples < 1:
        raise CostError(f"--min-samples {args.min_samples}: must be at least 1")
    inputs = dict(session.parse_input(i) for i in args.input or [])
    bundle = session.load_bundle(args.files, args.workflow, inputs, file_roots_from_env(os.environ))
    calibration = None
    if not args.no_calibration:
        observations, shapes = local_history(Path(args.state_dir), count_message_tokens, warn=_warn)
        if args.postgres_dsn:
            observations.extend(observations_from_calls(asyncio.run(ledger_calls(
                args.postgres_dsn, None, None, bundle.workflow.metadata.name))))
        calibration = Calibration.build(observations, shapes, args.min_samples)
    estimate = estimate_workflow(bundle.workflow, bundle.catalog, {}, price_per_token, calibration,
                                 count_tokens=count_message_tokens)
    if args.json:
        print(json.dumps(estimate.to_dict(), indent=2))
    else:
        print(format_estimate(estimate))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    if args.min_calls < 1:
        raise CostError(f"--min-calls {args.min_calls}: must be at least 1")
    since = parse_since(args.since, dt.datetime.now(dt.UTC)) if args.since else None
    if args.postgres_dsn:
        calls = asyncio.run(ledger_calls(args.postgres_dsn, args.namespace, since))
        source = "the ledger"
    else:
        state_dir = Path(args.state_dir or _state_dir_default())
        observations, _ = local_history(state_dir, None, since, warn=_warn)
        calls = [o.call for o in observations if args.namespace in (None, o.call.namespace)]
        source = f"local runs in {state_dir}"
    report = build_report(calls, min_calls=args.min_calls)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report, source))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    reporting = argv[:1] == ["report"]
    args = report_parser().parse_args(argv[1:]) if reporting else estimate_parser().parse_args(argv)
    try:
        return cmd_report(args) if reporting else cmd_estimate(args)
    except ManifestError as exc:
        if args.json:
            print(json.dumps({"ok": False, "problems": session.problems_json(exc.problems)}, indent=2))
        else:
            for p in exc.problems:
                print(p, file=sys.stderr)
        return EXIT_USAGE
    except (CostError, EstimateError, session.SessionError, StoreError, StorageError) as exc:
        _warn(str(exc))
        return EXIT_USAGE
    except OSError as exc:  # PostgreSQL unreachable, unreadable state dir
        _warn(f"{exc}")
        return EXIT_USAGE

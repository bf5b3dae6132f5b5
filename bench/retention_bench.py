"""Retention: PostgreSQL's size over many runs with finished runs collected (the TTL) and without (kept forever).

What runs (on loopback, started here and stopped at the end): a throwaway PostgreSQL with two databases, written to
alike, run after run, through the real store the operator uses (agentflow.storage.database.Database):

  per run    (--concurrency runs side by side, as an operator drives many) the journal as the reconciler
             appends it (RunStarted; per step StepScheduled with ~1.5 KB of inputs,
             StepStarted, CostRecorded, StepSucceeded with ~2 KB of output; RunFinished), an attempt payload per
             step with the run's manifests (~4 KB), a posted result per step, a reserved-and-settled model call
             per step on a Budget (call log + reservation), an audit record per call (the gateway's model_call)
  on         the Workflow of run i - KEEP is deleted when run i finishes (a TTL that keeps about KEEP runs):
             PostgresStore.delete_run, what the operator's DELETED handler calls
  off        nothing is ever deleted (no TTL: how LangGraph's checkpoint tables grow)

Every --every runs it prints both databases' size (pg_database_size) and the run tables' (journal, attempts,
results, call log, reservations, audit: pg_total_relation_size) side by side, and how often autovacuum has been
over the journal. What keeps "on" flat is VACUUM making the deleted rows' space reusable, not the deletes alone:
by default autovacuum (the server's defaults; --vacuum explicit runs a plain VACUUM of the "on" database at each
report instead, for a figure that does not depend on autovacuum's timing). The audit chain grows in both: it is
kept (one row per call). Usage:

  python bench/retention_bench.py [--runs 10000] [--every 1000] [--keep 500] [--steps 4] [--vacuum auto|explicit]
                                  [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # services.postgres
sys.path.insert(0, str(REPO / "operator"))

import asyncpg  # noqa: E402

from agentflow.audit.records import AuditEvent  # noqa: E402
from agentflow.engine.journal import Journal  # noqa: E402
from agentflow.engine.values import Event, EventType  # noqa: E402
from agentflow.storage.database import Database  # noqa: E402
from agentflow.storage.ledger import BudgetLine, LlmCall  # noqa: E402
from agentflow.storage.outbox import EventSource  # noqa: E402

E = EventType
TABLES = ("agentflow_journal", "agentflow_attempts", "agentflow_step_results", "agentflow_llm_calls",
          "agentflow_budget_reservations", "agentflow_audit")
MANIFESTS = ("apiVersion: agentflow.dev/v1alpha1\nkind: Agent\nmetadata: {name: analyst}\nspec:\n"
             "  model: {name: openai/gpt-4o-mini}\n  systemPrompt: |\n" + "    You are a careful analyst.\n" * 120)
BUDGET = BudgetLine("bench-budget", "team", "monthly", dt.datetime(2026, 12, 1, tzinfo=dt.UTC), None, None, None,
                    False)


async def one_run(db: Database, uid: str, steps: int, at: float) -> None:
    """What the operator and the gateway store for one finished run of ``steps`` llm steps."""
    journal = Journal()
    source = EventSource("team", f"report-{uid[:8]}", "Running")
    await db.store.append(uid, journal.extend([Event(E.run_started, None, {"workflow": "report", "seed": 7}, at)]),
                          source)
    for i in range(steps):
        node = f"section-{i}"
        await db.store.append(uid, journal.extend([
            Event(E.step_scheduled, node, {"step": node, "kind": "llm", "attempt": 1,
                                           "inputs": {"topic": "quarterly figures " * 80, "n": i}}, at + i),
            Event(E.step_started, node, {"attempt": 1, "pod": f"report-{node}-1"}, at + i + 0.1)]), source)
        await db.store.put_attempt(uid, node, 1, {"request": {"node": node, "attempt": 1}, "manifests": MANIFESTS})
        reservation = await db.ledger.reserve([BUDGET], 0.002, 2000, reference=f"{uid}/{node}/1")
        await db.ledger.settle(reservation.id, 0.0012, 1480, LlmCall(
            namespace="team", workflow=source.workflow, run_uid=uid, node=node, attempt=1, step=node, agent="analyst",
            prompt="", model_requested="openai/gpt-4o-mini", model_used="openai/gpt-4o-mini", input_tokens=1200,
            output_tokens=280, cost_usd=0.0012, latency_ms=850.0, cached=False, status="ok",
            budgets=("team/monthly",), routing={"rule": "primary", "candidates": ["openai/gpt-4o-mini"]}))
        await db.audit.append([AuditEvent(kind="model_call", actor="gateway", namespace="team",
                                          subject=f"team/{source.workflow}/{node}#1", decision="allow",
                                          at="2026-12-06T12:00:00Z", data={"model": "openai/gpt-4o-mini",
                                                                           "inputTokens": 1200, "costUsd": 0.0012})])
        output = {"text": "The quarter closed with revenue up. " * 55}
        await db.store.put_result(uid, node, 1, {"output": output, "error": None, "calls": []})
        call = {"kind": "llm", "name": "openai/gpt-4o-mini", "input_tokens": 1200, "output_tokens": 280,
                "cost_usd": 0.0012, "latency_ms": 850.0, "cached": False}
        await db.store.append(uid, journal.extend([
            Event(E.cost_recorded, node, {"attempt": 1, "call": call}, at + i + 0.9),
            Event(E.step_succeeded, node, {"attempt": 1, "output": output, "costUsd": 0.0012, "tokens": 1480},
                  at + i + 1)]), source)
    await db.store.append(uid, journal.extend([Event(E.run_finished, None, {"phase": "Succeeded"}, at + steps + 1)]),
                          EventSource("team", source.workflow, "Succeeded"))


async def sizes(db: Database) -> tuple[int, dict[str, int], int]:
    async with db.pool.acquire() as conn:
        total = await conn.fetchval("SELECT pg_database_size(current_database())")
        tables = {t: await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", t) for t in TABLES}
        vacuums = await conn.fetchval("SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = "
                                      "'agentflow_journal'")
    return int(total), {t: int(v) for t, v in tables.items()}, int(vacuums or 0)


def mb(n: int) -> str:
    return f"{n / 2**20:8.1f}"


async def database(dsn: str, name: str) -> Database:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    parts = urllib.parse.urlsplit(dsn)
    db = await Database.connect(urllib.parse.urlunsplit(parts._replace(path=f"/{name}")), max_size=4)
    await db.migrate()
    return db


async def bench(args: argparse.Namespace) -> None:
    from services.postgres import running_postgres

    with running_postgres() as pg:
        on, off = await database(pg.dsn, "retention_on"), await database(pg.dsn, "retention_off")
        try:
            vacuum = "explicit, plain, at each report" if args.vacuum == "explicit" else "autovacuum"
            print(f"{args.runs} runs of {args.steps} llm steps; 'on' keeps the last {args.keep} (the TTL), 'off' "
                  f"keeps every run; VACUUM: {vacuum}")
            print("   runs |   on: DB MB  journal  attempts  results    calls  reserv.    audit  autovac |"
                  "  off: DB MB  journal  attempts  results    calls  reserv.    audit")
            uids: list[str] = []
            started = time.perf_counter()
            for i in range(args.concurrency, args.runs + 1, args.concurrency):
                batch = [str(uuid.uuid4()) for _ in range(args.concurrency)]
                uids += batch
                at = 1_796_000_000.0 + i * 60
                await asyncio.gather(*(one_run(db, uid, args.steps, at) for uid in batch for db in (on, off)))
                for old in uids[max(0, len(uids) - len(batch) - args.keep):max(0, len(uids) - args.keep)]:
                    await on.store.delete_run(old)  # each as its DELETED event does: one transaction per run
                if i % args.every == 0:
                    if args.vacuum == "explicit":
                        async with on.pool.acquire() as conn:
                            await conn.execute("VACUUM")
                    (on_total, on_t, vacuums), (off_total, off_t, _) = await sizes(on), await sizes(off)
                    print(f"{i:7d} |   {mb(on_total)} " + " ".join(mb(on_t[t]) for t in TABLES) + f" {vacuums:8d} |"
                          f"   {mb(off_total)} " + " ".join(mb(off_t[t]) for t in TABLES), flush=True)
            print(f"({time.perf_counter() - started:.0f} s; the audit chain is kept in both: one row per model call)")
        finally:
            await on.close()
            await off.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--every", type=int, default=1000, help="report every N runs")
    p.add_argument("--keep", type=int, default=500, help="runs the TTL keeps ('on')")
    p.add_argument("--steps", type=int, default=4, help="llm steps per run")
    p.add_argument("--vacuum", choices=["auto", "explicit"], default="auto")
    p.add_argument("--concurrency", type=int, default=10, help="runs written side by side (divides --every)")
    args = p.parse_args()
    if min(args.runs, args.every, args.steps, args.concurrency) < 1 or args.keep < 0:
        p.error("--runs, --every, --steps and --concurrency must be 1 or more, --keep 0 or more")
    if args.every % args.concurrency:
        p.error(f"--every {args.every} must be a multiple of --concurrency {args.concurrency}")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()

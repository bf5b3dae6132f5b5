"""Events: what the outbox costs a journal append, and how fast the publisher drains it to NATS JetStream.

What runs (on loopback, started here and stopped at the end): a throwaway PostgreSQL and a nats-server with
JetStream (tests/services), the real PostgresStore and OutboxPublisher.

  append     the reconciler's journal append (PostgresStore.append: fenced, one transaction) of batches of
             records shaped like a fan-out step's (StepScheduled with inputs, CostRecorded with a call,
             StepSucceeded with an output), with the outbox off (no --nats-url) and on, in alternating rounds
             so drift in the machine's load falls on both alike: the p50 and mean per append, and the difference
  drain      the publisher draining what those appends left, to JetStream (each run's events one after the
             other, waiting for each ack; runs side by side): events per second and per event
  outage     appends while nats-server is down (nothing in an append waits for NATS)

Prints a table; asserts nothing about timings. Usage:
  python bench/events_bench.py [--appends 2000] [--batch 3] [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # services.postgres, services.nats
sys.path.insert(0, str(REPO / "operator"))

from agentflow.engine.journal import Journal, Record  # noqa: E402
from agentflow.engine.values import Event, EventType  # noqa: E402
from agentflow.events.jetstream import JetStream  # noqa: E402
from agentflow.events.publisher import EventMetrics, EventSink, OutboxPublisher, PublisherSettings  # noqa: E402
from agentflow.events.settings import ConnectSettings, StreamSettings  # noqa: E402
from agentflow.storage.database import Database  # noqa: E402
from agentflow.storage.outbox import EventSource  # noqa: E402

E = EventType


def step_events(i: int, at: float) -> list[Event]:
    call = {"kind": "llm", "name": "openai/gpt-4o-mini", "request_hash": "ab" * 32, "response": "x" * 200,
            "input_tokens": 412, "output_tokens": 96, "cost_usd": 0.00012, "latency_ms": 840.0, "cached": False}
    return [
        Event(E.step_scheduled, f"map[{i}]", {"step": "map", "kind": "llm", "attempt": 1,
                                              "inputs": {"doc": "lorem ipsum " * 20, "n": i}}, at),
        Event(E.cost_recorded, f"map[{i}]", {"attempt": 1, "call": call}, at + 1),
        Event(E.step_succeeded, f"map[{i}]", {"attempt": 1, "output": {"summary": "dolor sit amet " * 10},
                                              "costUsd": 0.00012, "tokens": 508}, at + 1),
    ]


class Runs:
    """Journals of ``n`` runs appended round-robin, as a reconciler driving many runs does."""

    def __init__(self, n: int) -> None:
        self.uids = [str(uuid.uuid4()) for _ in range(n)]
        self.journals = {uid: Journal() for uid in self.uids}
        self.steps = dict.fromkeys(self.uids, 0)
        self.turn = 0

    def next_batch(self, batch: int) -> tuple[str, list[Record]]:
        uid = self.uids[self.turn % len(self.uids)]
        self.turn += 1
        events: list[Event] = []
        while len(events) < batch:
            events.extend(step_events(self.steps[uid], 1000.0 + self.turn))
            self.steps[uid] += 1
        return uid, self.journals[uid].extend(events[:batch])


async def timed_appends(db: Database, runs: Runs, count: int, batch: int) -> list[float]:
    source = EventSource("team-a", "report", "Running")
    out = []
    for _ in range(count):
        uid, records = runs.next_batch(batch)
        started = time.perf_counter()
        await db.store.append(uid, records, source)
        out.append(time.perf_counter() - started)
    return out


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:6.3f} ms  mean {statistics.fmean(values) * 1000:6.3f} ms"


async def bench(args: argparse.Namespace) -> None:
    from services.nats import running_nats
    from services.postgres import running_postgres

    with running_postgres() as pg, running_nats() as nats_server:
        off = await Database.connect(pg.dsn)
        on = await Database.connect(pg.dsn, outbox=True)
        try:
            await on.migrate()
            await timed_appends(off, Runs(5), 50, args.batch)  # warm up both pools
            await timed_appends(on, Runs(5), 50, args.batch)
            async with on.pool.acquire() as conn:
                await conn.execute("TRUNCATE agentflow_outbox, agentflow_event_runs")
            times: dict[str, list[float]] = {"off": [], "on": []}
            runs = {"off": Runs(args.runs), "on": Runs(args.runs)}
            rounds = 10
            for _ in range(rounds):
                for name, db in (("off", off), ("on", on)):
                    times[name] += await timed_appends(db, runs[name], args.appends // rounds, args.batch)
            print(f"journal append of {args.batch} records, {len(times['on'])} appends over {args.runs} runs, "
                  "PostgreSQL on loopback (fsync off):")
            print(f"  outbox off (no --nats-url)   {ms(times['off'])}")
            print(f"  outbox on                    {ms(times['on'])}")
            overhead = statistics.median(times["on"]) - statistics.median(times["off"])
            print(f"  overhead per append (p50)    {overhead * 1000:6.3f} ms "
                  f"({overhead / args.batch * 1e6:.0f} us per record)")

            stream = StreamSettings(name="BENCH", duplicate_window=600)

            async def connect() -> EventSink:
                return await JetStream.connect(ConnectSettings((nats_server.url,)))

            for concurrency in (1, 32):
                pub = OutboxPublisher(on.outbox, connect, stream, EventMetrics(),
                                      PublisherSettings(batch=500, concurrency=concurrency))
                if concurrency != 1:  # refill the outbox with as many new events
                    await timed_appends(on, Runs(args.runs), args.appends, args.batch)
                pending = (await on.outbox.stats()).pending
                started = time.perf_counter()
                published = 0
                while True:
                    result = await pub.drain()
                    published += result.published
                    if result.leased and result.claimed == 0:
                        break
                took = time.perf_counter() - started
                await pub.close()
                print(f"drain {pending} events to JetStream (nats-server {nats_server.url}), "
                      f"{concurrency} run(s) side by side: {published / took:8.0f} events/s, "
                      f"{took / max(published, 1) * 1e6:6.0f} us per event")

            nats_server.kill()
            down = await timed_appends(on, Runs(args.runs), args.appends // 4, args.batch)
            print(f"outbox on, nats-server down     {ms(down)}   (an append never waits for NATS)")
        finally:
            await off.close()
            await on.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--appends", type=int, default=2000)
    p.add_argument("--batch", type=int, default=3, help="records per append")
    p.add_argument("--runs", type=int, default=50)
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()

"""`agentflow memory search|list|forget`: look inside Agents' long-term memory, and erase it.

Local runs' memory is ``STATE_DIR/memory.sqlite3`` (``--state-dir``, default .agentflow); the cluster's is the
PostgreSQL with pgvector named by ``--postgres-dsn`` (or AGENTFLOW_MEMORY_DSN). Erasure is recorded in the audit
chain before the command reports success: the state dir's ``audit.jsonl``, or the operator's chain in PostgreSQL
(``--audit-dsn``, default: the memory DSN), checked to be reachable before anything is deleted.

::

    agentflow memory search -n NS --agent A "QUERY" [-k 5] [--token-budget N]
    agentflow memory list   -n NS [--agent A] [--limit 50]
    agentflow memory forget -n NS --agent A --id ID            one fact
    agentflow memory forget -n NS --agent A --all              every fact of an Agent
    agentflow memory forget -n NS [--agent A] --subject "Ann Lee"   every fact mentioning a subject (right to
                                                               erasure), across the namespace's Agents unless --agent

Search embeds the query with the offline embedding (agentflow/hashing-v1) unless ``--embedding-model`` names
another; facts saved with a real embedding model are searched through the gateway by agents, and listed here
(``list``) but not searched (that would call a provider outside the gateway's budgets).

Exit codes: 0 done, 1 the store or the audit chain is unavailable, or forget --id found nothing, 2 bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..audit.events import AuditEventError, check_text
from ..audit.records import AuditSink
from ..memory import HashingEmbedder, MemoryStore, MemoryStoreError, Scope
from ..memory.local import SqliteMemoryStore, default_path
from ..models import HASHING_EMBEDDING

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
AUDIT_FILE = "audit.jsonl"
MAX_LIST = 10_000
"""The most facts `memory list` prints at once (--limit)."""


class UsageError(Exception):
    """Bad flags: exit 2."""


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="agentflow memory", description="Search, list and erase Agents' "
                                     "long-term memory (local runs' state dir, or the cluster's PostgreSQL).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--namespace", "-n", default="default", help="the Agents' namespace (local runs: default)")
        p.add_argument("--state-dir", default=env("AGENTFLOW_STATE_DIR", ".agentflow"),
                       help="local runs' state dir (default .agentflow)")
        p.add_argument("--postgres-dsn", default=env("AGENTFLOW_MEMORY_DSN"), metavar="DSN",
                       help="the cluster's memory store, PostgreSQL with pgvector (env AGENTFLOW_MEMORY_DSN); "
                       "without it, the state dir's")
        p.add_argument("--json", action="store_true", help="print JSON")

    s = sub.add_parser("search", help="the facts of an Agent closest to a query")
    common(s)
    s.add_argument("--agent", required=True)
    s.add_argument("query")
    s.add_argument("-k", type=int, default=5)
    s.add_argument("--token-budget", type=int, default=None)
    s.add_argument("--embedding-model", default=HASHING_EMBEDDING,
                   help=f"the model the facts were embedded with (only {HASHING_EMBEDDING} here)")
    ls = sub.add_parser("list", help="an Agent's (or a namespace's) facts, newest first")
    common(ls)
    ls.add_argument("--agent")
    ls.add_argument("--limit", type=int, default=50)
    f = sub.add_parser("forget", help="erase facts: one (--id), an Agent's (--all), or every one mentioning a "
                       "subject (--subject); recorded in the audit chain")
    common(f)
    f.add_argument("--agent")
    what = f.add_mutually_exclusive_group(required=True)
    what.add_argument("--id", dest="memory_id")
    what.add_argument("--subject")
    what.add_argument("--all", action="store_true", help="every fact of --agent")
    f.add_argument("--by", default=None, help="who erases, for the audit chain (default: your user name)")
    f.add_argument("--audit-dsn", default=env("AGENTFLOW_POSTGRES_DSN"), metavar="DSN",
                   help="the operator's PostgreSQL holding the audit chain (env AGENTFLOW_POSTGRES_DSN; default: "
                   "--postgres-dsn)")
    return parser


async def _store(args: argparse.Namespace, audit: AuditSink | None) -> MemoryStore:
    if getattr(args, "embedding_model", HASHING_EMBEDDING) != HASHING_EMBEDDING:
        raise UsageError(f"--embedding-model {args.embedding_model}: this command embeds queries with "
                         f"{HASHING_EMBEDDING} only (another model would be called outside the gateway's budgets); "
                         "`agentflow memory list` shows every fact")
    if args.postgres_dsn:
        from ..memory.postgres import PostgresMemoryStore  # the operator extra (asyncpg)

        store = await PostgresMemoryStore.connect(args.postgres_dsn, HashingEmbedder(), audit=audit)
        await store.migrate()
        return store
    return SqliteMemoryStore(default_path(Path(args.state_dir)), HashingEmbedder(), audit=audit)


async def _audit(args: argparse.Namespace) -> tuple[AuditSink, Any]:
    """The audit sink of an erasure, checked to be usable (and what to close)."""
    dsn = args.audit_dsn or args.postgres_dsn
    if dsn:
        from ..storage.audit import PostgresAuditLog
        from ..storage.errors import StorageError

        try:
            log = await PostgresAuditLog.connect(dsn, min_size=1, max_size=1)
            await log.head()
        except StorageError as exc:
            raise MemoryStoreError(f"the audit chain is not usable, so nothing was erased: {exc}",
                                   retryable=True) from exc
        return log, log
    from ..storage.audit_file import JsonlAuditLog
    from ..storage.errors import StorageError

    try:  # as with PostgreSQL: the chain must take the record before anything is erased
        Path(args.state_dir).mkdir(parents=True, exist_ok=True)
        chain = JsonlAuditLog(Path(args.state_dir) / AUDIT_FILE)
        chain.head()
    except (StorageError, OSError) as exc:
        raise MemoryStoreError(f"the audit chain {Path(args.state_dir) / AUDIT_FILE} is not usable, so nothing was "
                               f"erased: {exc}") from exc
    return chain, None


def _shown(text: str) -> str:
    """``text`` on one line of a terminal: line breaks, escape sequences and other control characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _print(args: argparse.Namespace, value: Any, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(value, ensure_ascii=False, sort_keys=True))
    else:
        for line in lines:
            print(line)


async def _run(args: argparse.Namespace) -> int:
    closing: Any = None
    audit: AuditSink | None = None
    if args.command == "forget":
        if args.all and not args.agent:
            raise UsageError("forget --all erases an Agent's facts: name it with --agent")
        if args.memory_id and not args.agent:
            raise UsageError("forget --id needs the fact's --agent")
        try:  # the record of the erasure must be one the chain takes, or nothing is erased
            check_text("--by", f"user:{args.by or getpass.getuser()}")
        except AuditEventError as exc:
            raise UsageError(f"--by: {exc.problem}") from None
        audit, closing = await _audit(args)
    if args.command == "list" and not 1 <= args.limit <= MAX_LIST:
        raise UsageError(f"--limit {args.limit}: give 1 to {MAX_LIST}")
    store = await _store(args, audit)
    try:
        if args.command == "search":
            hits = await store.search(Scope(args.namespace, args.agent), args.query, args.k, args.token_budget)
            _print(args, hits, [f"{h['score']:.3f}  {h['id']}  {_shown(h['text'])}" for h in hits]
                   or ["no facts found"])
        elif args.command == "list":
            entries = await store.entries(Scope(args.namespace, args.agent), limit=args.limit)
            _print(args, entries, [f"{e['id']}  {_shown(e['namespace'])}/{_shown(e['agent'])}  {_shown(e['text'])}"
                                   for e in entries] or ["no facts"])
        else:
            who = f"user:{args.by or getpass.getuser()}"
            ids = await store.forget(Scope(args.namespace, args.agent), memory_id=args.memory_id,
                                     subject=args.subject, actor=who)
            where = f"{args.namespace}/{args.agent or '*'}"
            _print(args, {"forgotten": ids, "scope": where},
                   [f"forgot {len(ids)} fact(s) in {where}; recorded in the audit chain"])
    finally:
        await store.close()
        if closing is not None:
            await closing.close()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return asyncio.run(_run(args))
    except UsageError as exc:
        print(f"agentflow memory {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryStoreError as exc:
        print(f"agentflow memory {args.command}: {exc.type}: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.type == "InvalidMemory" else EXIT_FAILED

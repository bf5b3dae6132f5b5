"""`agentflow audit verify|export`: check the audit hash chain for tampering, and write it out.

Where the chain is read from: ``--file FILE`` (an export, or any audit.jsonl), else ``--postgres-dsn`` (the
operator's PostgreSQL), else the local runner's ``STATE_DIR/audit.jsonl`` (``--state-dir``, default
AGENTFLOW_STATE_DIR or .agentflow). Only PostgreSQL needs the operator extra (asyncpg).

Exit codes: 0 the chain is intact (verify) or was written (export); 1 the chain was tampered
with (the message names the row); 2 bad flags, an unreadable file, or PostgreSQL unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from ..audit.chain import EMPTY, AuditReport, ChainVerifier, Head
from ..audit.files import AuditFileError, FileFormat, csv_header, csv_line, jsonl_line, read_rows, sniff_format
from ..storage.errors import StorageError

if TYPE_CHECKING:
    from ..storage.audit import PostgresAuditLog

EXIT_OK, EXIT_TAMPERED, EXIT_USAGE = 0, 1, 2
AUDIT_FILE = "audit.jsonl"  # the local runner's chain in its state dir (agentflow.runner.session.AUDIT_FILE)

_ANCHOR_HELP = (
    "Hashes alone cannot show rows removed from the end, or a tail rewritten with recomputed hashes: "
    "keep the head that verify prints (SEQ:HASH), or the head file export writes, where the database's "
    "users cannot write (a ticket, a WORM bucket, another team's system), and pass it back with "
    "--expect-head to check that the chain still holds that very row."
)


class UsageError(Exception):
    """Bad flags or an unusable file: exit 2 with this message."""


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="agentflow audit",
        description="Verify or export the audit hash chain (model calls, tool calls, approvals, policy decisions).",
        epilog=_ANCHOR_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def dsn(p: argparse.ArgumentParser) -> None:
        p.add_argument("--postgres-dsn", default=env("AGENTFLOW_POSTGRES_DSN"), metavar="DSN",
                       help="the operator's PostgreSQL (env AGENTFLOW_POSTGRES_DSN; needs the operator extra)")
        p.add_argument("--state-dir", default=env("AGENTFLOW_STATE_DIR", ".agentflow"), metavar="DIR",
                       help=f"without --file or --postgres-dsn: the local runs' chain, DIR/{AUDIT_FILE} "
                            "(default AGENTFLOW_STATE_DIR, else .agentflow)")

    v = sub.add_parser(
        "verify",
        help="recompute every hash and name the first modified, deleted, inserted or reordered row",
        description="Recompute every hash of the audit chain (an exported file, PostgreSQL, or by default the "
        f"local runs' STATE_DIR/{AUDIT_FILE}) and name the first modified, deleted, inserted or reordered row. "
        "Prints the head (SEQ:HASH) to anchor.",
        epilog=_ANCHOR_HELP + " Exit codes: 0 intact, 1 tampered, 2 bad flags or unreachable database.",
    )
    dsn(v)
    v.add_argument("--file", metavar="FILE", help="verify an export (JSON Lines or CSV) or an audit.jsonl "
                   "instead of the database or the state dir's")
    v.add_argument("--expect-head", metavar="SEQ:HASH",
                   help="an anchor kept elsewhere: the chain must hold row SEQ with this hash "
                        "(or @FILE: the head file of an export)")
    v.add_argument("--since", type=int, metavar="SEQ",
                   help="with --file: the export starts at row SEQ (made with export --since)")
    v.add_argument("--namespace", metavar="NS",
                   help="with --file: the export holds only this namespace (made with export --namespace); "
                        "each row's hash and the links of consecutive rows are checked")
    v.add_argument("--json", action="store_true", help="print the report as JSON")

    e = sub.add_parser(
        "export",
        help="write the audit chain out as JSON Lines or CSV, hashes included (verifiable offline)",
        description="Write the audit chain out, every row with its hashes (from PostgreSQL in one consistent "
        f"snapshot, or by default from the local runs' STATE_DIR/{AUDIT_FILE}); check the file later with "
        "`agentflow audit verify --file FILE`.",
        epilog=_ANCHOR_HELP,
    )
    dsn(e)
    e.add_argument("--file", metavar="FILE", help="export this audit.jsonl instead of the database or the "
                   "state dir's")
    e.add_argument("--since", type=int, default=0, metavar="SEQ", help="only rows from this seq on")
    e.add_argument("--namespace", metavar="NS", help="only the rows of this namespace")
    e.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    e.add_argument("--output", "-o", metavar="FILE", help="write here, atomically (default: standard output)")
    e.add_argument("--head-file", metavar="FILE",
                   help="write the chain's head (seq, hash) here as JSON (default with --output: FILE.head.json)")
    return parser


# --------------------------------------------------------------------------- verify


def _parse_anchor(text: str | None) -> Head | None:
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            content = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise UsageError(f"--expect-head: cannot read the head file {path}: {e.strerror or e}") from None
        if content.startswith("{"):
            try:
                data = json.loads(content)
                content = f"{data['seq']}:{data['hash']}"
            except (ValueError, KeyError, TypeError):
                raise UsageError(f"--expect-head: {path} is not a head file (expected {{seq, hash}})") from None
        text = content
    try:
        return Head.parse(text)
    except ValueError as e:
        raise UsageError(f"--expect-head: {e}") from None


@contextlib.contextmanager
def _lines(path: Path) -> Iterator[tuple[Iterator[str], FileFormat]]:
    """The file's lines, each decoded as UTF-8 on its own: a first line that is not is a UsageError (not an audit
    file); a later one is an AuditFileError of that line (verify: the chain is unreadable there)."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise UsageError(f"--file: cannot read {path}: {e.strerror or e}") from None
    with f:
        try:
            first = f.readline().decode("utf-8")
        except UnicodeDecodeError as e:
            raise UsageError(f"--file: {path} is not UTF-8 text ({e.reason})") from None

        def lines() -> Iterator[str]:
            if first:
                yield first
            for number, raw in enumerate(f, start=2):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise AuditFileError(number, f"not UTF-8 text ({e.reason})") from None

        yield lines(), sniff_format(first)


def _local_file(args: argparse.Namespace) -> Path:
    """The chain a command reads without --file or --postgres-dsn: the local runs' STATE_DIR/audit.jsonl."""
    path = Path(args.state_dir) / AUDIT_FILE
    if not path.is_file():
        raise UsageError(f"no local audit chain at {path} (local runs write it); give --state-dir DIR, "
                         "--file FILE or --postgres-dsn DSN (or AGENTFLOW_POSTGRES_DSN)")
    return path


def _verify_file(args: argparse.Namespace, path: Path, anchor: Head | None) -> AuditReport:
    start = EMPTY if not args.since else None
    verifier = ChainVerifier(start=start, gaps=args.namespace is not None, expect_head=anchor)
    with _lines(path) as (lines, fmt):
        try:
            for n, raw in enumerate(read_rows(lines, fmt)):
                if n == 0 and args.since and raw.get("seq") != args.since:
                    raise UsageError(f"--since {args.since}: the file starts at row {raw.get('seq')!r}")
                if args.namespace is not None and raw.get("namespace") != args.namespace:
                    raise UsageError(
                        f"--namespace {args.namespace}: the file holds a row of namespace {raw.get('namespace')!r} "
                        f"(row {raw.get('seq')}); it is not an export of that namespace"
                    )
                if not verifier.feed(raw):
                    break
        except UnicodeDecodeError as e:
            raise UsageError(f"--file: {path} is not UTF-8 text ({e.reason})") from None
        except AuditFileError as e:
            verifier.unreadable(str(e))
    return verifier.finish()


async def _connect(dsn: str) -> PostgresAuditLog:
    from ..storage.audit import PostgresAuditLog  # asyncpg: the operator extra

    return await PostgresAuditLog.connect(dsn, min_size=1, max_size=1)


async def _verify_db(dsn: str, anchor: Head | None) -> AuditReport:
    log = await _connect(dsn)
    try:
        return await log.verify(anchor)
    finally:
        await log.close()


def cmd_verify(args: argparse.Namespace) -> int:
    anchor = _parse_anchor(args.expect_head)
    if args.file is not None or not args.postgres_dsn:
        if args.file is None and (args.since is not None or args.namespace is not None):
            raise UsageError("--since and --namespace describe an export: use them with --file")
        if args.since is not None and args.since < 0:
            raise UsageError(f"--since must be 0 or more, got {args.since}")
        path = Path(args.file) if args.file is not None else _local_file(args)
        report = _verify_file(args, path, anchor)
        source = str(path)
    else:
        if args.since is not None or args.namespace is not None:
            raise UsageError("--since and --namespace describe an export: use them with --file")
        report = asyncio.run(_verify_db(args.postgres_dsn, anchor))
        source = "postgresql"
    if args.json:
        print(json.dumps({"source": source, **report.to_dict()}, indent=2))
    else:
        print(report)
        if report.ok:
            print(f"head: {report.head}")
            if anchor is None:
                print("(keep this head elsewhere, where the chain's writers cannot write, and pass it back with "
                      "--expect-head: it is what shows a truncated or rewritten tail)")
        for note in report.notes:
            print(f"note: {note}")
    return EXIT_OK if report.ok else EXIT_TAMPERED


# --------------------------------------------------------------------------- export


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[IO[str]]:
    """A temporary file next to ``path``, fsynced and renamed over it on success, removed on failure."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise UsageError(f"--output: cannot write in {folder}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


async def _export(args: argparse.Namespace, out: IO[str]) -> tuple[Head, int, int | None, int | None]:
    log = await _connect(args.postgres_dsn)
    try:
        async with log.snapshot("export the audit chain") as snap:
            count, first, last = 0, None, None
            if args.format == "csv":
                out.write(csv_header())
            async for row in snap.rows(args.since, namespace=args.namespace):
                out.write(jsonl_line(row).decode() if args.format == "jsonl" else csv_line(row))
                count += 1
                first = row["seq"] if first is None else first
                last = row["seq"]
            return snap.last, count, first, last
    finally:
        await log.close()


def _export_file(args: argparse.Namespace, path: Path, out: IO[str]) -> tuple[Head, int, int | None, int | None]:
    """Like _export, from an audit.jsonl: the rows as they are (verify checks them), the head its last row."""
    head, count, first, last = EMPTY, 0, None, None
    if args.format == "csv":
        out.write(csv_header())
    with _lines(path) as (lines, fmt):
        try:
            for raw in read_rows(lines, fmt):
                row: dict[str, Any] = raw
                try:
                    head = Head(int(row["seq"]), str(row["hash"]))
                except (KeyError, TypeError, ValueError):
                    raise UsageError(f"{path}: a row without seq and hash (seq {row.get('seq')!r}): "
                                     f"check it with agentflow audit verify --file {path}") from None
                if head.seq < args.since or (args.namespace is not None and row.get("namespace") != args.namespace):
                    continue
                out.write(jsonl_line(row).decode() if args.format == "jsonl" else csv_line(row))
                count += 1
                first = head.seq if first is None else first
                last = head.seq
        except UnicodeDecodeError as e:
            raise UsageError(f"{path} is not UTF-8 text ({e.reason})") from None
        except (AuditFileError, KeyError) as e:
            raise UsageError(f"{path}: {e}: check it with agentflow audit verify --file {path}") from None
    return head, count, first, last


def cmd_export(args: argparse.Namespace) -> int:
    if args.since < 0:
        raise UsageError(f"--since must be 0 or more, got {args.since}")
    if args.file is not None or not args.postgres_dsn:
        path = Path(args.file) if args.file is not None else _local_file(args)

        def export(out: IO[str]) -> tuple[Head, int, int | None, int | None]:
            return _export_file(args, path, out)
    else:
        def export(out: IO[str]) -> tuple[Head, int, int | None, int | None]:
            return asyncio.run(_export(args, out))
    if args.output:
        with _atomic(Path(args.output)) as f:
            head, count, first, last = export(f)
    else:
        head, count, first, last = export(sys.stdout)
        sys.stdout.flush()
    head_file = args.head_file or (f"{args.output}.head.json" if args.output else None)
    if head_file:
        document = {"seq": head.seq, "hash": head.hash, "head": str(head), "rows": count, "firstSeq": first,
                    "lastSeq": last, "since": args.since, "namespace": args.namespace, "format": args.format}
        with _atomic(Path(head_file)) as f:
            f.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    where = args.output or "standard output"
    print(f"exported {count} audit rows to {where}; chain head {head}"
          + (f" (written to {head_file})" if head_file else ""), file=sys.stderr)
    verify_flags = (f" --since {args.since}" if args.since else "") + (
        f" --namespace {args.namespace}" if args.namespace else "")
    if args.output:
        print(f"check it with: agentflow audit verify --file {args.output}{verify_flags}"
              + (f" --expect-head @{head_file}" if head_file and not args.namespace else ""), file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # argparse: --help (0) or bad flags (2, usage printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        return cmd_verify(args) if args.command == "verify" else cmd_export(args)
    except UsageError as e:
        print(f"agentflow audit {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except StorageError as e:
        print(f"agentflow audit {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"agentflow audit {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE

"""`agentflow events`: tail the events of runs, the cluster's from NATS JetStream or local runs' journals.

With ``--nats-url`` (or AGENTFLOW_NATS_URL): the operator's runs, from the JetStream stream the operator
publishes to (subjects ``agentflow.<namespace>.<workflow>.<type>``; what this NATS user may read decides what it
sees). Without: local runs, from ``.agentflow/runs/*/journal.jsonl`` (``--state-dir``).

Lines are ``TIME  NAMESPACE/WORKFLOW  RUN  #SEQ  TYPE  NODE  DATA``; with ``--json``, one JSON object per line:
the event message itself (agentflow.events.wire; local runs have ``namespace`` null). Without ``--follow`` it
prints what is there and exits; with it, it keeps printing until interrupted (Ctrl-C).

Exit status: 0 done (or interrupted while following), 1 NATS unavailable, the stream missing or reading refused,
2 bad arguments, or nats-py missing (the ``operator`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..events.errors import INSTALL_HINT, EventsError
from ..events.settings import ConnectSettings, parse_duration, parse_servers
from ..events.subjects import SubjectError, filter_subject, workflow_token
from ..events.wire import ReceivedEvent, WireError, decode, local_body
from ..runner.follow import JournalFollower
from ..runner.store import RunStore, StoreError

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2
POLL_SECONDS = 0.25


class UsageError(Exception):
    """A bad argument; the message names it."""


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="agentflow events", description=__doc__.split("\n")[0])
    p.add_argument("workflow", nargs="?", help="only this Workflow's events (default: every Workflow)")
    p.add_argument("-n", "--namespace", help="only this namespace's events (the cluster: needs --nats-url)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events until interrupted")
    p.add_argument("--since", help="only events since then: a duration back from now (30s, 10m, 2h, 1d) or a time "
                   "(2026-01-31T12:00:00Z); the cluster's: published since then")
    p.add_argument("--json", action="store_true", help="one JSON object per line: the event message")
    p.add_argument("--nats-url", default=env("AGENTFLOW_NATS_URL", ""),
                   help="read the operator's events from NATS here (env AGENTFLOW_NATS_URL); without: local runs")
    p.add_argument("--nats-creds", default=env("AGENTFLOW_NATS_CREDS") or None, metavar="FILE",
                   help="NATS credentials file (JWT and NKey seed)")
    p.add_argument("--stream", default=env("AGENTFLOW_EVENTS_STREAM", "AGENTFLOW"), help="the JetStream stream")
    p.add_argument("--inbox-prefix", help="the NATS reply subjects' prefix (default with -n: "
                   "_INBOX.agentflow.NAMESPACE, what a tenant's permissions allow; else _INBOX)")
    p.add_argument("--state-dir", default=env("AGENTFLOW_STATE_DIR", ".agentflow"),
                   help="where local runs are kept (default .agentflow)")
    return p


def parse_since(text: str | None, now: float) -> float | None:
    """Unix seconds from ``--since``: a duration back from ``now`` or an ISO 8601 time (UTC unless it says)."""
    if text is None:
        return None
    try:
        return now - parse_duration(text, "--since")
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: expected a duration (30s, 10m, 2h, 1d) or a time "
                         "(2026-01-31T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _stamp(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _clip(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_event(event: ReceivedEvent) -> str:
    """One line of text for an event."""
    where = f"{event.namespace}/{event.workflow}" if event.namespace else str(event.workflow or "-")
    if event.kind == "phase":
        detail = f"{event.phase_from or '-'} -> {event.phase_to}"
    else:
        assert event.record is not None
        detail = _clip(dict(event.record.event.data))
    run = event.run[:8] if event.namespace else event.run  # a cluster run's uid, shortened; a local run's id
    return f"{_stamp(event.at)}  {where}  {run}  #{event.seq}  {event.type}  {event.node or '-'}  {detail}"


def _emitter(as_json: bool) -> Callable[[ReceivedEvent], None]:
    def emit(event: ReceivedEvent) -> None:
        line = json.dumps(event.body, ensure_ascii=False, separators=(",", ":")) if as_json else format_event(event)
        print(line, flush=True)

    return emit


def local(args: argparse.Namespace, since: float | None, emit: Callable[[ReceivedEvent], None]) -> int:
    if args.workflow is not None:
        try:
            workflow_token(args.workflow)
        except SubjectError as exc:
            raise UsageError(f"WORKFLOW: {exc}") from None
    follower = JournalFollower(RunStore(Path(args.state_dir)), workflow=args.workflow, since=since)
    while True:
        for info, record in follower.poll():
            emit(decode(local_body(info.run_id, info.workflow or None, record)))
        if not args.follow:
            return EXIT_OK
        time.sleep(POLL_SECONDS)


async def cluster(args: argparse.Namespace, since: float | None, emit: Callable[[ReceivedEvent], None]) -> int:
    try:
        servers = parse_servers(args.nats_url)
    except ValueError as exc:
        raise UsageError(f"--nats-url: {exc}") from None
    try:
        filter_subject(args.namespace)
    except SubjectError as exc:
        raise UsageError(f"-n: {exc}") from None
    try:
        subjects = filter_subject(args.namespace, args.workflow)
    except SubjectError as exc:
        raise UsageError(f"WORKFLOW: {exc}") from None
    try:
        from ..events.jetstream import JetStream
    except ImportError:
        raise UsageError(f"--nats-url: reading events from NATS needs nats-py: {INSTALL_HINT}") from None
    if args.nats_creds is not None and not os.path.isfile(args.nats_creds):
        raise UsageError(f"--nats-creds {args.nats_creds}: no such file (a NATS credentials file: the user's JWT "
                         "and NKey seed, as `nsc generate creds` writes it)")
    inbox = args.inbox_prefix or (f"_INBOX.agentflow.{args.namespace}" if args.namespace else None)
    settings = ConnectSettings(servers, creds=args.nats_creds, name="agentflow-events", inbox_prefix=inbox)
    js = await JetStream.connect(settings)
    try:
        start = dt.datetime.fromtimestamp(since, dt.UTC) if since is not None else None
        async for seq, body in js.read(args.stream, subjects, since=start, follow=args.follow):
            try:
                emit(decode(body))
            except WireError as exc:
                print(f"agentflow events: stream message {seq} is not an AgentFlow event ({exc}); skipped",
                      file=sys.stderr)
    finally:
        await js.close()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    emit = _emitter(args.json)
    try:
        since = parse_since(args.since, time.time())
        if not args.nats_url:
            if args.namespace:
                raise UsageError("-n selects a namespace of the cluster, whose events are in NATS: give --nats-url "
                                 "(or AGENTFLOW_NATS_URL); local runs have no namespace")
            return local(args, since, emit)
        return asyncio.run(cluster(args, since, emit))
    except UsageError as exc:
        print(f"agentflow events: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (EventsError, StoreError) as exc:
        print(f"agentflow events: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # | head: the reader went away
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

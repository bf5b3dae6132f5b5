"""`agentflow ui`: the console, a web page to watch runs live, act on them and design workflows.

    agentflow ui [--host 127.0.0.1] [--port 8765]                 the local runs of the state directory
    agentflow ui --cluster [--kubeconfig F] [--postgres-dsn DSN]  Workflows in a cluster (the chart runs this)

Local: binds 127.0.0.1 by default; anything that changes a run needs the per-process token the page carries,
and the Host must be this machine. Cluster: every request acts with the signed-in user's own bearer token
(the console has no Kubernetes credentials of its own for runs); the PostgreSQL journal, when given, adds
each node's attempts, calls and events.

On start it prints one line ``agentflow console on http://HOST:PORT`` (with ``--port 0`` a free port: read it
from that line). Exit status: 0 after SIGTERM/SIGINT, 2 bad flags, 1 it could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from ..console.app import Settings, build_app
from ..console.local import LocalRunSource
from ..console.source import RunSource

EXIT_OK, EXIT_START, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="agentflow ui", description=__doc__.split("\n")[0])
    p.add_argument("--state-dir", default=env("AGENTFLOW_STATE_DIR", ".agentflow"),
                   help="where local runs are kept (default .agentflow)")
    p.add_argument("--host", default=env("AGENTFLOW_UI_HOST", "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=int(env("AGENTFLOW_UI_PORT", "8765")),
                   help="port (default 8765; 0: a free one, printed at start)")
    p.add_argument("--executor", choices=["inprocess", "subprocess"], default="inprocess",
                   help="how runs started or resumed from the console run their steps")
    p.add_argument("--cluster", action="store_true", help="show the Workflows of a cluster instead of local runs")
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"),
                   help="--cluster outside a pod: the API server and its CA (never its credentials) come from it")
    p.add_argument("--kube-ca-file", default=env("AGENTFLOW_KUBE_CA_FILE"),
                   help="--cluster in a pod: the API server's CA (the chart mounts the kube-root-ca.crt ConfigMap)")
    p.add_argument("--postgres-dsn", default=env("AGENTFLOW_POSTGRES_DSN"),
                   help="--cluster: the operator's PostgreSQL, for each node's journal (attempts, calls, events)")
    return p


async def _source(args: argparse.Namespace) -> RunSource:
    if not args.cluster:
        return LocalRunSource(args.state_dir, executor=args.executor)
    from ..console.cluster import ClusterRunSource

    return await ClusterRunSource.create(kubeconfig=args.kubeconfig, dsn=args.postgres_dsn, ca_file=args.kube_ca_file)


async def serve(args: argparse.Namespace) -> int:
    source = await _source(args)
    local = not args.cluster
    settings = Settings(mode="local" if local else "cluster",
                        loopback_only=local and args.host in ("127.0.0.1", "localhost", "::1"))
    if local and not settings.loopback_only:
        print(f"agentflow ui: listening on {args.host}: anyone who can reach it can read the runs; actions "
              "still need the page's token", file=sys.stderr)
    runner = web.AppRunner(build_app(source, settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"agentflow ui: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_START
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else args.port
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"agentflow console on http://{shown}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not 0 <= args.port <= 65535:
        print(f"agentflow ui: --port {args.port}: expected 0 to 65535", file=sys.stderr)
        return EXIT_CONFIG
    if not args.cluster and (args.postgres_dsn and "--postgres-dsn" in (argv or sys.argv)):
        print("agentflow ui: --postgres-dsn is for --cluster", file=sys.stderr)
        return EXIT_CONFIG
    from ..console.errors import ConsoleError

    try:
        return asyncio.run(serve(args))
    except ConsoleError as exc:
        print(f"agentflow ui: {exc.message}", file=sys.stderr)
        return EXIT_START

"""`agentflow gateway`: the OpenAI-compatible LLM gateway as its own process (several replicas may share one
PostgreSQL: the budget ledger is atomic there).

    agentflow gateway --listen 0.0.0.0:8082 --postgres-dsn DSN

On a cluster (``--kubeconfig``, or the pod's service account) it accepts the token each step pod gets
projected (checked with a TokenReview: agentflow.services.identity), reads the attempt payloads the operator
stored in PostgreSQL, Budgets and Agents' credential Secrets from the cluster. Off a cluster, with
``--budgets FILE.yaml`` and ``--token-key-file FILE``, it accepts HMAC attempt tokens signed with that key
(agentflow.security.tokens: benchmarks, development). On start it prints one line
``agentflow gateway listening on http://HOST:PORT`` to stdout (with ``--listen 127.0.0.1:0`` the port is a
free one: read it from that line), then
``agentflow gateway metrics on http://HOST:PORT/metrics``: Prometheus metrics have a listener of their own
(``--metrics-listen``, default 0.0.0.0:9091; '' turns it off), apart from the API step pods call.

Exit status: 0 after SIGTERM/SIGINT, 2 bad flags or configuration, 1 it could not start (PostgreSQL or the
address unavailable).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from ..factory import (
    ConfigError,
    Factory,
    add_gateway_arguments,
    add_trace_arguments,
    gateway_settings,
    trace_settings,
)
from ..k8s.kube import Kube, KubeClient, KubeError
from ..models import Budget, ManifestError
from ..models.manifests import parse_documents, parse_yaml
from ..security.tokens import MIN_KEY_BYTES
from ..storage import StorageError

log = logging.getLogger("agentflow.gateway")

EXIT_OK, EXIT_START, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="agentflow gateway", description=__doc__.split("\n")[0])
    p.add_argument("--listen", default=env("AGENTFLOW_GATEWAY_LISTEN", "0.0.0.0:8082"),
                   help="HOST:PORT to listen on (port 0: a free one, printed at start)")
    p.add_argument("--metrics-listen", default=env("AGENTFLOW_GATEWAY_METRICS_LISTEN", "0.0.0.0:9091"),
                   help="HOST:PORT of the Prometheus /metrics listener, apart from the API ('' turns it off)")
    p.add_argument("--postgres-dsn", default=env("AGENTFLOW_POSTGRES_DSN"),
                   help="the operator's PostgreSQL: attempts and the budget ledger (env AGENTFLOW_POSTGRES_DSN)")
    p.add_argument("--token-key-file", default=env("AGENTFLOW_TOKEN_KEY_FILE"),
                   help="off a cluster: a file holding a base64 key (>= 32 bytes once decoded) whose HMAC attempt "
                        "tokens are accepted (with a cluster, step pods' projected tokens are checked instead)")
    p.add_argument("--token-audience", default=env("AGENTFLOW_TOKEN_AUDIENCE", "agentflow"),
                   help="audience of the step pods' projected tokens (the operator's --token-audience)")
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"),
                   help="outside a cluster: the kubeconfig to read Budgets and Secrets with")
    p.add_argument("--budgets", metavar="FILE.yaml",
                   help="read Budgets from this manifest file instead of the cluster (no Kubernetes needed; "
                        "Agents' credentialsSecretRef then cannot be read: provider keys come from the environment)")
    add_gateway_arguments(p, os.environ)
    add_trace_arguments(p, os.environ)
    return p


def _address(listen: str, flag: str = "--listen", example: str = "0.0.0.0:8082") -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{flag} {listen!r}: expected HOST:PORT, e.g. {example} or 127.0.0.1:0")
    return host.strip("[]") or "0.0.0.0", int(port)


def start_metrics(listen: str, registry: CollectorRegistry) -> tuple[Any, int]:
    """Serve ``registry`` at ``http://listen/metrics`` from a thread (prometheus_client's server): the server
    (``shutdown()`` it) and the port it listens on (a free one for port 0). OSError if the address is taken."""
    host, port = _address(listen, "--metrics-listen", "0.0.0.0:9091")
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)


def read_key(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--token-key-file {path!r}: cannot read it: {exc.strerror}") from None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"--token-key-file {path!r}: not base64 (e.g. `openssl rand -base64 32`)") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"--token-key-file {path!r}: the key decodes to {len(key)} bytes; it needs at least "
                          f"{MIN_KEY_BYTES}")
    return key


def read_budgets(path: str) -> list[Budget]:
    try:
        loaded = parse_documents(parse_yaml(Path(path).read_text(), path))
    except OSError as exc:
        raise ConfigError(f"--budgets {path!r}: cannot read it: {exc.strerror}") from None
    except ManifestError as exc:
        raise ConfigError(f"--budgets {path!r}: {exc}") from None
    return [item.resource for item in loaded if isinstance(item.resource, Budget)]


async def serve(args: argparse.Namespace, key: bytes | None, budgets: list[Budget] | None) -> int:
    host, port = _address(args.listen)
    settings = gateway_settings(args)
    kube: Kube | None = None
    if budgets is None:
        try:
            kube = KubeClient.from_environment(args.kubeconfig)
        except Exception as exc:  # the kubernetes client's config errors are not KubeError
            print(f"agentflow gateway: no usable Kubernetes configuration ({exc}); give --kubeconfig, or "
                  "--budgets FILE.yaml to run without a cluster", file=sys.stderr)
            return EXIT_CONFIG
    try:
        factory = await Factory.create(dsn=args.postgres_dsn, key=key, kube=kube, gateway=settings, budgets=budgets,
                                       token_audience=args.token_audience,
                                       traces=trace_settings(args, os.environ, "agentflow-gateway"))
    except StorageError as exc:
        print(f"agentflow gateway: {exc}", file=sys.stderr)
        if kube is not None:
            kube.close()
        return EXIT_START
    try:
        server = factory.gateway_server()
        try:
            await server.start(host, port)
        except OSError as exc:
            print(f"agentflow gateway: {exc}", file=sys.stderr)
            return EXIT_START
        shown = f"[{host}]" if ":" in host else host
        print(f"agentflow gateway listening on http://{shown}:{server.port}", flush=True)
        metrics_server = None
        if args.metrics_listen:
            try:
                metrics_server, metrics_port = start_metrics(args.metrics_listen, factory.gateway().metrics.registry)
            except OSError as exc:
                await server.stop()
                print(f"agentflow gateway: --metrics-listen {args.metrics_listen}: {exc}", file=sys.stderr)
                return EXIT_START
            metrics_host, _ = _address(args.metrics_listen)
            metrics_host = f"[{metrics_host}]" if ":" in metrics_host else metrics_host
            print(f"agentflow gateway metrics on http://{metrics_host}:{metrics_port}/metrics", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        return EXIT_OK
    finally:
        await factory.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if not args.postgres_dsn:
            raise ConfigError("--postgres-dsn (or AGENTFLOW_POSTGRES_DSN) is required: the operator's PostgreSQL "
                              "holds the attempts and the budget ledger")
        gateway_settings(args)
        trace_settings(args, os.environ, "agentflow-gateway")
        _address(args.listen)
        if args.metrics_listen:
            _address(args.metrics_listen, "--metrics-listen", "0.0.0.0:9091")
        key = read_key(args.token_key_file)
        budgets = read_budgets(args.budgets) if args.budgets else None
        if budgets is not None and key is None:
            raise ConfigError("--budgets runs without a cluster, so step pods' tokens cannot be checked: give "
                              "--token-key-file too (HMAC attempt tokens), or drop --budgets to use the cluster")
    except ConfigError as exc:
        print(f"agentflow gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(serve(args, key, budgets))
    except KubeError as exc:
        print(f"agentflow gateway: {exc}", file=sys.stderr)
        return EXIT_START

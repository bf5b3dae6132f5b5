"""`agentflow gateway`: the OpenAI-compatible LLM gateway as its own process (several replicas may share one
PostgreSQL: the budget ledger is atomic there).

    agentflow gateway --listen 0.0.0.0:8082 --postgres-dsn DSN --token-key-file /etc/agentflow/token-key

It accepts the tokens the operator gives step attempts (same key as the operator's ``--token-key``), reads
the attempt payloads the operator stored in PostgreSQL, Budgets and Agents' credential Secrets from the
cluster (``--kubeconfig``, or the pod's service account), or Budgets from ``--budgets FILE.yaml`` without a
cluster. On start it prints one line ``agentflow gateway listening on http://HOST:PORT`` to stdout (with
``--listen 127.0.0.1:0`` the port is a free one: read it from that line).

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

from ..callback.tokens import MIN_KEY_BYTES
from ..gateway.cache import ResponseCache
from ..gateway.metrics import GatewayMetrics
from ..gateway.router import Router
from ..gateway.server import GatewayServer
from ..gateway.service import Gateway, approximate_token_counter, litellm_prices, litellm_token_counter
from ..k8s.kube import Kube, KubeError
from ..llm import LiteLLMClient, OfflineModel
from ..models import Budget, ManifestError
from ..models.manifests import parse_documents, parse_yaml
from ..runner.local_gateway import CatalogBudgets
from ..services.gateway import AttemptAuthenticator, KubeBudgets, KubeCredentials
from ..storage import PostgresLedger, PostgresStore, StorageError

log = logging.getLogger("agentflow.gateway")

EXIT_OK, EXIT_START, EXIT_CONFIG = 0, 1, 2


class ConfigError(Exception):
    """A flag is missing or wrong; the message names it."""


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="agentflow gateway", description=__doc__.split("\n")[0])
    p.add_argument("--listen", default=env("AGENTFLOW_GATEWAY_LISTEN", "0.0.0.0:8082"),
                   help="HOST:PORT to listen on (port 0: a free one, printed at start)")
    p.add_argument("--postgres-dsn", default=env("AGENTFLOW_POSTGRES_DSN"),
                   help="the operator's PostgreSQL: attempts and the budget ledger (env AGENTFLOW_POSTGRES_DSN)")
    p.add_argument("--token-key-file", default=env("AGENTFLOW_TOKEN_KEY_FILE"),
                   help="file holding the operator's --token-key (base64, >= 32 bytes once decoded)")
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"),
                   help="outside a cluster: the kubeconfig to read Budgets and Secrets with")
    p.add_argument("--budgets", metavar="FILE.yaml",
                   help="read Budgets from this manifest file instead of the cluster (no Kubernetes needed; "
                        "Agents' credentialsSecretRef then cannot be read: provider keys come from the environment)")
    p.add_argument("--cache-ttl", type=float, default=float(env("AGENTFLOW_GATEWAY_CACHE_TTL", "300")),
                   help="seconds a cached answer is served (0: no cache)")
    p.add_argument("--cache-size", type=int, default=int(env("AGENTFLOW_GATEWAY_CACHE_SIZE", "10000")),
                   help="most cached answers kept (least recently used go first; 0: no cache)")
    p.add_argument("--default-max-tokens", type=int, default=1024,
                   help="output tokens reserved (and sent upstream as max_tokens) when a request sets none")
    p.add_argument("--upstream", choices=["litellm", "offline"], default=env("AGENTFLOW_GATEWAY_UPSTREAM", "litellm"),
                   help="litellm: real providers (default); offline: the built-in offline model (tests, demos)")
    p.add_argument("--cooldown-after", type=int, default=3, help="consecutive failures before a model cools down")
    p.add_argument("--cooldown-seconds", type=float, default=30.0, help="how long a failing model is skipped")
    return p


def _address(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {listen!r}: expected HOST:PORT, e.g. 0.0.0.0:8082 or 127.0.0.1:0")
    return host.strip("[]") or "0.0.0.0", int(port)


def read_key(path: str | None) -> bytes:
    if not path:
        raise ConfigError("--token-key-file (or AGENTFLOW_TOKEN_KEY_FILE) is required: the file holding the "
                          "operator's --token-key, so the gateway accepts the tokens of step attempts")
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--token-key-file {path!r}: cannot read it: {exc.strerror}") from None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"--token-key-file {path!r}: not base64 (write the operator's --token-key value)") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"--token-key-file {path!r}: the key decodes to {len(key)} bytes; it needs at least "
                          f"{MIN_KEY_BYTES} (the operator's --token-key)")
    return key


def read_budgets(path: str) -> list[Budget]:
    try:
        loaded = parse_documents(parse_yaml(Path(path).read_text(), path))
    except OSError as exc:
        raise ConfigError(f"--budgets {path!r}: cannot read it: {exc.strerror}") from None
    except ManifestError as exc:
        raise ConfigError(f"--budgets {path!r}: {exc}") from None
    return [item.resource for item in loaded if isinstance(item.resource, Budget)]


async def serve(args: argparse.Namespace, key: bytes, budgets: list[Budget] | None) -> int:
    host, port = _address(args.listen)
    try:
        store = await PostgresStore.connect(args.postgres_dsn)
        ledger = await PostgresLedger.connect(args.postgres_dsn)
        await ledger.migrate()
    except StorageError as exc:
        print(f"agentflow gateway: {exc}", file=sys.stderr)
        return EXIT_START
    kube: Kube | None = None
    try:
        live = args.upstream == "litellm"
        credentials: Any = None
        if budgets is None:
            try:
                kube = Kube.from_environment(args.kubeconfig)
            except Exception as exc:  # the kubernetes client's config errors are not KubeError
                print(f"agentflow gateway: no usable Kubernetes configuration ({exc}); give --kubeconfig, or "
                      "--budgets FILE.yaml to run without a cluster", file=sys.stderr)
                return EXIT_CONFIG
            budget_source: Any = KubeBudgets(kube)
            credentials = KubeCredentials(kube)
        else:
            budget_source = CatalogBudgets(budgets)
        extra = {"credentials": credentials} if credentials is not None else {}
        gateway = Gateway(
            ledger=ledger,
            upstream=LiteLLMClient() if live else OfflineModel(),
            budgets=budget_source,
            router=Router(cooldown_after=args.cooldown_after, cooldown_seconds=args.cooldown_seconds),
            cache=ResponseCache(ttl_seconds=args.cache_ttl, max_entries=args.cache_size,
                                clock=asyncio.get_running_loop().time),
            metrics=GatewayMetrics(),
            token_counter=litellm_token_counter() if live else approximate_token_counter,
            prices=litellm_prices() if live else (lambda model: None),
            default_max_tokens=args.default_max_tokens,
            **extra,
        )
        server = GatewayServer(gateway, AttemptAuthenticator(key, store))
        try:
            await server.start(host, port)
        except OSError as exc:
            print(f"agentflow gateway: {exc}", file=sys.stderr)
            return EXIT_START
        shown = f"[{host}]" if ":" in host else host
        print(f"agentflow gateway listening on http://{shown}:{server.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()
        return EXIT_OK
    finally:
        await ledger.close()
        await store.close()
        if kube is not None:
            kube.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if not args.postgres_dsn:
            raise ConfigError("--postgres-dsn (or AGENTFLOW_POSTGRES_DSN) is required: the operator's PostgreSQL "
                              "holds the attempts and the budget ledger")
        if args.cache_ttl < 0 or args.cache_size < 0:
            raise ConfigError("--cache-ttl and --cache-size must be >= 0 (0 turns the cache off)")
        if args.default_max_tokens < 1:
            raise ConfigError("--default-max-tokens must be >= 1")
        _address(args.listen)
        key = read_key(args.token_key_file)
        budgets = read_budgets(args.budgets) if args.budgets else None
    except ConfigError as exc:
        print(f"agentflow gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(serve(args, key, budgets))
    except KubeError as exc:
        print(f"agentflow gateway: {exc}", file=sys.stderr)
        return EXIT_START

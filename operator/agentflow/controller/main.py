"""`agentflow operator`: run the operator, in a cluster or against a kubeconfig.

Everything is built at startup from flags and environment and closed at
cleanup: the Kubernetes client, the PostgreSQL pool, the callback server the
step pods talk to, and the metrics endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import logging
import os
import secrets
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
from prometheus_client import start_http_server

from ..callback.server import CallbackServer
from ..gateway.metrics import GatewayMetrics
from ..gateway.server import GatewayServer
from ..gateway.service import Gateway, approximate_token_counter, litellm_prices, litellm_token_counter
from ..k8s.kube import Kube
from ..k8s.podspec import PodConfig
from ..llm import LiteLLMClient, OfflineModel
from ..services.driver import WorkflowDriver
from ..services.gateway import AttemptAuthenticator, KubeBudgets, KubeCredentials
from ..services.metrics import Metrics
from ..services.reconcile import WorkflowReconciler
from ..storage.audit import PostgresAuditLog
from ..storage.budgets import PostgresLedger
from ..storage.postgres import PostgresStore
from . import certs, handlers, webhook
from .runtime import Memo, new_memo

log = logging.getLogger("agentflow.operator")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="agentflow operator", description=__doc__.split("\n")[0])
    p.add_argument("--namespace", action="append", default=[], help="watch this namespace (repeatable); "
                   "default: all namespaces")
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="outside a cluster: the kubeconfig to use")
    p.add_argument("--postgres-dsn", default=env("AGENTFLOW_POSTGRES_DSN"),
                   help="PostgreSQL for journals and step results (env AGENTFLOW_POSTGRES_DSN)")
    p.add_argument("--step-cpu-request", default=env("AGENTFLOW_STEP_CPU_REQUEST", "100m"),
                   help="CPU request of a step pod (default 100m; a ToolPolicy's resources take precedence)")
    p.add_argument("--step-memory-request", default=env("AGENTFLOW_STEP_MEMORY_REQUEST", "128Mi"),
                   help="memory request of a step pod (default 128Mi)")
    p.add_argument("--step-image", default=env("AGENTFLOW_STEP_IMAGE", "localhost/agentflow-runtime:dev"),
                   help="image of step pods")
    p.add_argument("--runtime-class", default=env("AGENTFLOW_RUNTIME_CLASS", "gvisor"),
                   help="default RuntimeClass of step pods ('' for the node default)")
    p.add_argument("--callback-listen", default=env("AGENTFLOW_CALLBACK_LISTEN", "0.0.0.0:8081"),
                   help="address the step-pod callback server listens on")
    p.add_argument("--callback-url", default=env("AGENTFLOW_CALLBACK_URL"),
                   help="URL step pods use to reach the callback server (required)")
    p.add_argument("--token-key", default=env("AGENTFLOW_TOKEN_KEY"),
                   help="base64 key (>= 32 bytes) signing step tokens; keep it in a Secret (random if unset: "
                        "tokens then do not survive a restart)")
    p.add_argument("--metrics-port", type=int, default=int(env("AGENTFLOW_METRICS_PORT", "9090")))
    p.add_argument("--peering", default=env("AGENTFLOW_PEERING", ""),
                   help="kopf peering name; replicas with the same name never both act (default: standalone)")
    priority = env("AGENTFLOW_PRIORITY")
    p.add_argument("--priority", type=int, default=int(priority) if priority else None,
                   help="kopf peering priority; default with --peering: from the start time, so the oldest "
                        "replica acts (kopf pauses every replica when two share a priority)")
    p.add_argument("--webhook-host", default=env("AGENTFLOW_WEBHOOK_HOST", ""),
                   help="address the API server calls the admission webhook at: the pod IP in a cluster, "
                        "127.0.0.1 when the API server runs on this host ('' = no webhook)")
    p.add_argument("--webhook-listen", default=env("AGENTFLOW_WEBHOOK_LISTEN", "0.0.0.0:9443"),
                   help="address the admission webhook listens on")
    p.add_argument("--webhook-cert-dir", default=env("AGENTFLOW_WEBHOOK_CERT_DIR", ""),
                   help="folder for the webhook's generated CA, certificate and key (default: a new temporary one)")
    p.add_argument("--webhook-references", choices=["warn", "reject"],
                   default=env("AGENTFLOW_WEBHOOK_REFERENCES", "warn"),
                   help="unknown Agent/PromptVersion/ToolPolicy/Budget references: admit with a warning, or reject")
    p.add_argument("--gateway-listen", default=env("AGENTFLOW_GATEWAY_LISTEN", ""),
                   help="address the LLM gateway listens on, e.g. 0.0.0.0:8082 (default '': no gateway in this "
                        "process; step pods then call providers directly unless --gateway-url names one)")
    p.add_argument("--gateway-url", default=env("AGENTFLOW_GATEWAY_URL"),
                   help="URL step pods reach the gateway at (default: the --callback-url host, the "
                        "--gateway-listen port)")
    p.add_argument("--gateway-upstream", choices=["litellm", "offline"],
                   default=env("AGENTFLOW_GATEWAY_UPSTREAM", "litellm"),
                   help="what the gateway calls: litellm (real providers, keys from Agents' Secrets) or the "
                        "offline model (tests, demos)")
    p.add_argument("--step-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment given to every step pod (e.g. AGENTFLOW_MODEL_MODE=offline)")
    return p


def _config(args: argparse.Namespace) -> tuple[bytes, PodConfig]:
    if not args.postgres_dsn:
        raise SystemExit("agentflow operator: --postgres-dsn (or AGENTFLOW_POSTGRES_DSN) is required")
    if not args.callback_url:
        raise SystemExit("agentflow operator: --callback-url (or AGENTFLOW_CALLBACK_URL) is required: "
                         "the URL step pods reach this operator at")
    key = base64.b64decode(args.token_key) if args.token_key else secrets.token_bytes(32)
    if len(key) < 32:
        raise SystemExit("agentflow operator: --token-key must decode to at least 32 bytes")
    step_env = {}
    for item in args.step_env:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"agentflow operator: --step-env {item!r}: expected KEY=VALUE")
        step_env[k] = v
    config = PodConfig(image=args.step_image, callback_url=args.callback_url, gateway_url=gateway_url(args),
                       default_runtime_class=args.runtime_class or None, env=step_env,
                       cpu_request=args.step_cpu_request, memory_request=args.step_memory_request)
    return key, config


def gateway_url(args: argparse.Namespace) -> str | None:
    """The URL step pods call the gateway at: --gateway-url (this process's, or a standalone `agentflow
    gateway`), else the callback URL's host with the --gateway-listen port; None when neither is given."""
    if args.gateway_url:
        return str(args.gateway_url)
    if not args.gateway_listen:
        return None
    port = args.gateway_listen.rpartition(":")[2]
    parts = urllib.parse.urlsplit(args.callback_url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def in_cluster_server(environ: Mapping[str, str]) -> str | None:
    """The API server's URL from the Service variables every pod gets, as client-go and the official client
    find it; None outside a pod. kopf's service-account login names ``https://kubernetes.default.svc``,
    which needs cluster DNS (a cluster may have none, the operator never needs it otherwise)."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def build_gateway(kube: Kube, store: PostgresStore, ledger: Any, key: bytes, upstream: str,
                  metrics: Metrics, audit: PostgresAuditLog | None = None) -> GatewayServer:
    """The gateway served from the operator process: attempts from ``store``, budgets on ``ledger``, Budgets
    and Agents' Secrets through ``kube``, metrics on the operator's registry."""
    live = upstream == "litellm"
    gateway = Gateway(
        ledger=ledger,
        upstream=LiteLLMClient() if live else OfflineModel(),
        budgets=KubeBudgets(kube),
        credentials=KubeCredentials(kube),
        metrics=GatewayMetrics(metrics.registry),
        audit=audit,
        token_counter=litellm_token_counter() if live else approximate_token_counter,
        prices=litellm_prices() if live else (lambda model: None),
    )
    return GatewayServer(gateway, AttemptAuthenticator(key, store))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    key, pod_config = _config(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    if args.webhook_host:
        webhook.register_admission(registry, references=args.webhook_references)
    if args.priority is None:
        args.priority = -(time.time_ns() // 1000) if args.peering else 0
    memo = new_memo()
    metrics = Metrics()
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # what kopf's own client logs in with

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """A registry of our own has no default login: in a pod its service account, else the kubeconfig."""
        in_pod = kopf.login_with_service_account(**kwargs)
        if in_pod is None:
            return kopf.login_with_kubeconfig(**kwargs)
        return dataclasses.replace(in_pod, server=in_cluster_server(os.environ) or in_pod.server)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: Memo, **_: Any) -> None:
        settings.posting.level = logging.WARNING
        settings.persistence.finalizer = "agentflow.dev/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="agentflow.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="agentflow.dev")
        if args.peering:
            settings.peering.name = args.peering
            settings.peering.priority = args.priority
        else:
            settings.peering.standalone = True
        if args.webhook_host:
            listen, _, port = args.webhook_listen.rpartition(":")
            folder = args.webhook_cert_dir or tempfile.mkdtemp(prefix="agentflow-webhook-")
            settings.admission.server = certs.webhook_server(listen.strip("[]") or "0.0.0.0", int(port),
                                                             args.webhook_host, folder)
            settings.admission.managed = "agentflow.dev"
        kube = Kube.from_environment(args.kubeconfig)
        store = await PostgresStore.connect(args.postgres_dsn)
        await store.migrate()
        # Model calls, tool calls, approvals and policy decisions: one hash chain in the same database.
        memo.audit = await PostgresAuditLog.connect(args.postgres_dsn)
        await memo.audit.migrate()
        reconciler = WorkflowReconciler(kube, store, key, pod_config, audit=memo.audit)
        memo.store = store
        memo.driver = WorkflowDriver(reconciler, metrics)
        memo.ledger = await PostgresLedger.connect(args.postgres_dsn)  # budgets: the same database
        await memo.ledger.migrate()
        handlers.start_budget_sync(memo, memo.ledger, namespaces=args.namespace, metrics=metrics,
                                   reporting_instance=os.environ.get("POD_ID", ""))
        host, _, port = args.callback_listen.rpartition(":")
        memo.callback = CallbackServer(store, key, on_result=lambda claims: memo.poke(claims.run_uid),
                                       audit=memo.audit)
        await memo.callback.start(host or "0.0.0.0", int(port))
        if args.gateway_listen:
            memo.gateway = build_gateway(kube, store, memo.ledger, key, args.gateway_upstream, metrics, memo.audit)
            host, _, port = args.gateway_listen.rpartition(":")
            await memo.gateway.start(host.strip("[]") or "0.0.0.0", int(port))
        start_http_server(args.metrics_port, registry=metrics.registry)
        log.info("operator ready: callback %s, step image %s", args.callback_url, args.step_image)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Memo, **_: Any) -> None:
        await handlers.stop_budget_sync(memo)
        await memo.ledger.close()
        if memo.get("gateway") is not None:
            await memo.gateway.stop()
        await memo.callback.stop()
        await memo.audit.close()
        await memo.store.close()
        memo.driver.reconciler.kube.close()

    asyncio.run(kopf.operator(
        registry=registry, memo=memo, clusterwide=not args.namespace, namespaces=args.namespace,
        standalone=not args.peering, priority=args.priority, peering_name=args.peering or None,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())

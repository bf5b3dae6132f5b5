"""`agentflow operator`: run the operator, in a cluster or against a kubeconfig.

Everything is built at startup from flags and environment and closed at
cleanup: the Kubernetes client, the PostgreSQL pool, the callback server the
step pods talk to, the metrics endpoint and, with --nats-url, the events
publisher (a task draining the outbox to NATS JetStream: it never holds up
startup or a run when NATS is away) and the event triggers (WorkflowTriggers with spec.events, read from the
stream by a durable consumer), with --trigger-listen, the endpoint
WorkflowTriggers' deliveries are posted to and, with --shards auto, the shard membership (a thread renewing this
replica's Lease and reading the others': agentflow.services.shards), left first at cleanup, and the LISTEN for
results other replicas stored (agentflow.storage.notices).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import os
import secrets
import socket
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import kopf
from prometheus_client import start_http_server

from ..events.settings import add_events_arguments, events_settings
from ..factory import (
    ConfigError,
    Factory,
    add_gateway_arguments,
    add_notify_arguments,
    add_trace_arguments,
    gateway_settings,
    notify_config,
    trace_settings,
)
from ..k8s.egress import EgressDenyList
from ..k8s.kube import KubeClient
from ..k8s.netpol import NetworkConfig, parse_pod_selector
from ..k8s.podspec import PodConfig
from ..k8s.profile import parse_host
from ..k8s.retention import parse_ttl_flag
from ..k8s.shards import GROUP_LABEL, LEADER_KEY
from ..models import RunTtl
from ..models.limits import DEFAULT_WORKFLOW_DEPTH, MAX_FANOUT_ITEMS, MAX_WORKFLOW_DEPTH, workflow_depth
from ..services.driver import DEFAULT_MAX_CONCURRENT_RECONCILES, WorkflowDriver
from ..services.evaluations import EvaluationSync
from ..services.metrics import Metrics, driven_runs
from ..services.platform import PlatformPolicy
from ..services.podcache import RunPods
from ..services.quality import QualityMetrics
from ..services.reconcile import DEFAULT_MAX_PARALLEL
from ..services.retention import RunRetention
from ..services.shards import ShardMembership
from ..telemetry import TraceSettings
from ..telemetry.tracing import traces_url
from . import certs, handlers, kopf_fixes, webhook
from .runtime import Memo, new_memo, stop_task

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
    p.add_argument("--token-audience", default=env("AGENTFLOW_TOKEN_AUDIENCE", "agentflow"),
                   help="audience of the service-account token projected into step pods, which the callback "
                        "server and the gateway check with a TokenReview (default agentflow)")
    p.add_argument("--metrics-port", type=int, default=int(env("AGENTFLOW_METRICS_PORT", "9090")))
    p.add_argument("--peering", default=env("AGENTFLOW_PEERING", ""),
                   help="kopf peering name; replicas with the same name never both act (default: standalone)")
    priority = env("AGENTFLOW_PRIORITY")
    p.add_argument("--priority", type=int, default=int(priority) if priority else None,
                   help="kopf peering priority; default with --peering: from the start time, so the oldest "
                        "replica acts (kopf pauses every replica when two share a priority)")
    p.add_argument("--shards", choices=["off", "auto"], default=env("AGENTFLOW_SHARDS", "off"),
                   help="auto: every replica acts, each on the Workflows (and WorkflowSchedules, PromptRollouts) it "
                        "owns by rendezvous hashing of their uid over the live replicas, which hold a Lease each in "
                        "--shard-namespace; a dead replica's share moves after a lease duration and a renewal. "
                        "off (default): this process acts on everything (alone, or under --peering)")
    p.add_argument("--replica-id", default=env("POD_NAME") or socket.gethostname(),
                   help="this replica's name among the shards (default: POD_NAME, else the host name); unique")
    p.add_argument("--shard-namespace", default=env("POD_NAMESPACE", ""),
                   help="the namespace the replicas' Leases are kept in (default: POD_NAMESPACE; required with "
                        "--shards auto)")
    p.add_argument("--shard-group", default=env("AGENTFLOW_SHARD_GROUP", "agentflow"),
                   help="the replicas sharing the work: their Leases carry this label value (default agentflow)")
    p.add_argument("--shard-lease-seconds", type=_positive_int, default=env("AGENTFLOW_SHARD_LEASE_SECONDS", "10"),
                   help="a replica not renewing its Lease for this long is dropped and its share taken over; a "
                        "new replica waits this long before acting (default 10)")
    p.add_argument("--shard-renew-seconds", type=_positive_float,
                   default=env("AGENTFLOW_SHARD_RENEW_SECONDS", "2"),
                   help="how often a replica renews its Lease and reads the others' (default 2; under half the "
                        "lease duration)")
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
    p.add_argument("--webhook-check-secrets", action="store_true",
                   default=env("AGENTFLOW_WEBHOOK_CHECK_SECRETS", "") == "true",
                   help="refuse an Agent whose credentialsSecretRef names a Secret without the label "
                        "agentflow.dev/credential: \"true\" at admission (needs get on secrets; without it the "
                        "gateway refuses such a Secret at call time)")
    p.add_argument("--gateway-listen", default=env("AGENTFLOW_GATEWAY_LISTEN", ""),
                   help="address the LLM gateway listens on, e.g. 0.0.0.0:8082 (default '': no gateway in this "
                        "process; step pods then call providers directly unless --gateway-url names one)")
    p.add_argument("--gateway-url", default=env("AGENTFLOW_GATEWAY_URL"),
                   help="URL step pods reach the gateway at (default: the --callback-url host, the "
                        "--gateway-listen port)")
    p.add_argument("--trigger-listen", default=env("AGENTFLOW_TRIGGER_LISTEN", ""),
                   help="address the WorkflowTrigger endpoint listens on, e.g. 0.0.0.0:8083: POST "
                        "/v1/triggers/NAMESPACE/NAME starts a run per authenticated delivery (default '': off)")
    add_gateway_arguments(p, os.environ)
    add_events_arguments(p, os.environ)
    p.add_argument("--step-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment given to every step pod (e.g. AGENTFLOW_MODEL_MODE=offline)")
    p.add_argument("--signing-key-file", default=env("AGENTFLOW_SIGNING_KEY_FILE"),
                   help="file holding the key (32 bytes or more) the approval webhook signs decisions with; the "
                        "reconciler takes only decisions signed with it. Replicas must share it. Default: a random "
                        "key per process (decisions stamped before a restart must then be made again)")
    p.add_argument("--egress-deny", action="append", default=[], metavar="CIDR|IP:PORT",
                   help="a network no ToolPolicy may grant (repeatable), added to the built-in deny-list (link-local "
                        "and cloud metadata, loopback) and the API server's Service address: the cluster's pod and "
                        "service ranges, the API server's endpoints")
    p.add_argument("--callback-pods", default=env("AGENTFLOW_CALLBACK_PODS"), metavar="NAMESPACE:key=value",
                   help="the operator pods by label, also allowed to step pods on the callback port (CNIs that "
                        "match a Service's address after DNAT need this)")
    p.add_argument("--gateway-pods", default=env("AGENTFLOW_GATEWAY_PODS"), metavar="NAMESPACE:key=value",
                   help="the gateway pods by label, allowed to step pods on the gateway port")
    p.add_argument("--status-previews", choices=["masked", "none"], default=env("AGENTFLOW_STATUS_PREVIEWS", "masked"),
                   help="what Workflow status shows of run data: output previews and approval questions with "
                        "personal-data patterns masked (default), or none of it")
    p.add_argument("--max-parallel", type=_max_parallel, metavar="N",
                   default=env("AGENTFLOW_MAX_PARALLEL", str(DEFAULT_MAX_PARALLEL)),
                   help=f"step pods one Workflow runs at once (default {DEFAULT_MAX_PARALLEL}, "
                   "AGENTFLOW_MAX_PARALLEL); "
                   "a lower spec.parallelism wins; a run keeps the cap it started with")
    p.add_argument("--max-concurrent-reconciles", type=_max_concurrent_reconciles, metavar="N",
                   default=env("AGENTFLOW_MAX_CONCURRENT_RECONCILES", str(DEFAULT_MAX_CONCURRENT_RECONCILES)),
                   help=f"Workflow reconciles this replica runs at once (default {DEFAULT_MAX_CONCURRENT_RECONCILES}, "
                   "AGENTFLOW_MAX_CONCURRENT_RECONCILES); the rest wait in arrival order "
                   "(agentflow_reconciles_waiting): a burst's API requests and database work follow this bound")
    p.add_argument("--max-workflow-depth", type=_workflow_depth, metavar="N",
                   default=env("AGENTFLOW_MAX_WORKFLOW_DEPTH", str(DEFAULT_WORKFLOW_DEPTH)),
                   help=f"how deep workflow steps nest child Workflows (default {DEFAULT_WORKFLOW_DEPTH}, "
                   f"AGENTFLOW_MAX_WORKFLOW_DEPTH; at most {MAX_WORKFLOW_DEPTH}): a workflow step of a Workflow this "
                   "deep fails instead of making a child, so a template that runs itself stops there")
    p.add_argument("--ttl-seconds-after-finished", type=_ttl, metavar="SECONDS|PHASE=SECONDS,...",
                   default=env("AGENTFLOW_TTL_SECONDS_AFTER_FINISHED", ""),
                   help="delete finished Workflows this long after they finished, and collect their journal, "
                        "results and call log (the audit chain stays): N for every phase, or per phase, e.g. "
                        "succeeded=3600,failed=604800,cancelled=3600 (a phase not named is kept). A Workflow's "
                        "spec.ttlSecondsAfterFinished replaces it. Default '': kept until deleted")
    p.add_argument("--no-orphan-sweep", action="store_true",
                   default=env("AGENTFLOW_ORPHAN_SWEEP", "on") == "off",
                   help="do not collect, at start and hourly, the rows of runs whose Workflow no longer exists "
                        "(needed only when two clusters' operators share one database; env "
                        "AGENTFLOW_ORPHAN_SWEEP=off)")
    add_trace_arguments(p, os.environ)
    add_notify_arguments(p, os.environ)
    p.add_argument("--step-otlp-endpoint", metavar="URL", default=env("AGENTFLOW_STEP_OTLP_ENDPOINT"),
                   help="the collector step pods export their own spans to over OTLP/HTTP (the address pods reach "
                        "it at; /v1/traces is added); their NetworkPolicy allows it. Default: the operator's own "
                        "endpoint unless that is a loopback address; 'none': pods export nothing (they still pass "
                        "the trace context on)")
    p.add_argument("--step-otlp-pods", default=env("AGENTFLOW_STEP_OTLP_PODS"), metavar="NAMESPACE:key=value",
                   help="the collector's pods by label, allowed to step pods on the collector's port (a collector "
                        "reached through a Service, or by a name a NetworkPolicy cannot match)")
    return p


def step_otlp_endpoint(args: argparse.Namespace, traces: TraceSettings) -> str | None:
    """The traces URL step pods export to: --step-otlp-endpoint, else the operator's own unless it is on
    loopback (a pod's loopback is not this machine); None when the operator does not trace or 'none' is given."""
    if not traces.enabled:
        return None
    given = (args.step_otlp_endpoint or "").strip()
    if given.lower() == "none":
        return None
    if given:
        if not given.startswith(("http://", "https://")) or not urllib.parse.urlsplit(given).hostname:
            raise SystemExit(f"agentflow operator: --step-otlp-endpoint {given!r}: expected the http(s) URL step "
                             "pods reach the collector's OTLP/HTTP receiver at, e.g. http://otel-collector."
                             "observability:4318, or none")
        return traces_url(given)
    assert traces.endpoint is not None
    host = urllib.parse.urlsplit(traces.endpoint).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        log.warning("tracing: the collector %s is on this machine's loopback, which step pods cannot reach: they "
                    "export no spans of their own (give --step-otlp-endpoint)", traces.endpoint)
        return None
    return traces.endpoint


def _ttl(text: str) -> RunTtl:
    try:
        return parse_ttl_flag(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _max_concurrent_reconciles(text: str) -> int:
    """--max-concurrent-reconciles: 1 to 10,000."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 10000, got {text!r}") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 10000, got {value}")
    return value


def _workflow_depth(text: str) -> int:
    """--max-workflow-depth (agentflow.models.limits.workflow_depth)."""
    try:
        return workflow_depth(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give 1 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give more than 0")
    return value


def shard_settings(args: argparse.Namespace) -> None:
    """Check the --shards flags together; SystemExit naming the flag at fault."""
    if args.shards != "auto":
        return
    if args.peering:
        raise SystemExit("agentflow operator: --shards auto and --peering: give one; kopf peering lets one replica "
                         "act, sharding lets every replica act on its share")
    if not args.shard_namespace:
        raise SystemExit("agentflow operator: --shards auto needs --shard-namespace (or POD_NAMESPACE): where the "
                         "replicas' Leases are kept")
    if not args.replica_id.strip():
        raise SystemExit("agentflow operator: --replica-id: empty; give each replica a unique name (POD_NAME)")
    if not args.shard_renew_seconds < args.shard_lease_seconds / 2:
        raise SystemExit(f"agentflow operator: --shard-renew-seconds {args.shard_renew_seconds:g} must be under half "
                         f"--shard-lease-seconds {args.shard_lease_seconds}: a replica renews at least twice before "
                         "the others drop it")


def _max_parallel(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of step pods, got {text!r}") from None
    if not 1 <= value <= MAX_FANOUT_ITEMS:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give 1 to {MAX_FANOUT_ITEMS}")
    return value


def signing_key(path: str | None) -> bytes:
    """The approval signing key from ``path``; a random one (with a warning) without it."""
    if not path:
        log.warning("no --signing-key-file: approvals are signed with a key of this process only; replicas and "
                    "restarts do not share it (set it from a Secret, as the chart does)")
        return secrets.token_bytes(32)
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise SystemExit(f"agentflow operator: --signing-key-file {path!r}: cannot read it: {exc.strerror}") from None
    if len(key) < 32:
        raise SystemExit(f"agentflow operator: --signing-key-file {path!r}: the key has {len(key)} bytes; "
                         "at least 32 are needed (e.g. `head -c 32 /dev/urandom | base64`)")
    return key


def network_config(args: argparse.Namespace, environ: Mapping[str, str],
                   collector: str | None = None) -> NetworkConfig:
    """The platform's side of step pods' NetworkPolicies, from flags; SystemExit naming a bad one."""
    deny = list(args.egress_deny)
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if host and port:  # the API server's Service address: never a tool's destination
        deny.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        deny.append(f"[{host}]:443" if ":" in host else f"{host}:443")
    try:
        return NetworkConfig(
            callback_pods=parse_pod_selector(args.callback_pods, "--callback-pods") if args.callback_pods else None,
            gateway_pods=parse_pod_selector(args.gateway_pods, "--gateway-pods") if args.gateway_pods else None,
            collector=parse_host(collector) if collector else None,
            collector_pods=(parse_pod_selector(args.step_otlp_pods, "--step-otlp-pods")
                            if collector and args.step_otlp_pods else None),
            deny=EgressDenyList.with_extra(deny))
    except ValueError as exc:
        raise SystemExit(f"agentflow operator: {exc}") from None


def _config(args: argparse.Namespace, trace: bool = False, otlp_endpoint: str | None = None) -> PodConfig:
    if not args.postgres_dsn:
        raise SystemExit("agentflow operator: --postgres-dsn (or AGENTFLOW_POSTGRES_DSN) is required")
    if not args.callback_url:
        raise SystemExit("agentflow operator: --callback-url (or AGENTFLOW_CALLBACK_URL) is required: "
                         "the URL step pods reach this operator at")
    step_env = {}
    for item in args.step_env:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"agentflow operator: --step-env {item!r}: expected KEY=VALUE")
        step_env[k] = v
    config = PodConfig(image=args.step_image, callback_url=args.callback_url, gateway_url=gateway_url(args),
                       default_runtime_class=args.runtime_class or None, env=step_env,
                       cpu_request=args.step_cpu_request, memory_request=args.step_memory_request,
                       token_audience=args.token_audience, trace=trace, otlp_endpoint=otlp_endpoint)
    return config


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


async def stop_events(memo: Memo, timeout: float = 10.0) -> None:
    """At cleanup: stop the events publisher (what it has not published stays in the outbox for the next one)."""
    # a publish still waiting for NATS past the timeout is cancelled: its round rolls back
    await stop_task(memo.events_task, memo.events_stopped, "the events publisher", timeout)
    memo.events_task = None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        gateway_config = gateway_settings(args)
        events_config = events_settings(args)
        traces = trace_settings(args, os.environ, "agentflow-operator")
        notify = notify_config(args, os.environ)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"agentflow operator: {exc}") from None
    if args.trigger_listen and not args.trigger_listen.rpartition(":")[2].isdigit():
        raise SystemExit(f"agentflow operator: --trigger-listen {args.trigger_listen!r}: expected HOST:PORT")
    shard_settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    step_traces = step_otlp_endpoint(args, traces)
    pod_config = _config(args, trace=traces.enabled, otlp_endpoint=step_traces)
    network = network_config(args, os.environ, collector=step_traces)
    key = signing_key(args.signing_key_file)
    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    if args.webhook_host:
        webhook.register_admission(registry, references=args.webhook_references, signing_key=key,
                                   platform=PlatformPolicy(endpoints=gateway_config.endpoints, egress=network.deny,
                                                           check_secrets=args.webhook_check_secrets))
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
        settings.persistence.diffbase_storage = kopf_fixes.LeanDiffBaseStorage(prefix="agentflow.dev")
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
        memo.factory = factory = await Factory.create(
            dsn=args.postgres_dsn, kube=KubeClient.from_environment(args.kubeconfig), gateway=gateway_config,
            registry=metrics.registry, token_audience=args.token_audience, events=events_config,
            traces=traces)
        notifier = factory.notifier(notify, reporting_instance=os.environ.get("POD_ID", ""))
        quality = factory.quality_watch(QualityMetrics(metrics.registry),
                                        reporting_instance=os.environ.get("POD_ID", ""))
        memo.driver = WorkflowDriver(factory.reconciler(pod_config, metrics, network=network, signing_key=key,
                                                        previews=args.status_previews == "masked",
                                                        max_parallel=args.max_parallel, quality=quality,
                                                        notifier=notifier,
                                                        max_workflow_depth=args.max_workflow_depth,
                                                        pods=RunPods()), metrics,
                                     max_concurrent=args.max_concurrent_reconciles)
        metrics.watch(driven_runs(memo.driver.reconciler.runs))
        memo.evaluations = EvaluationSync(memo.driver.reconciler.kube, factory.db.store, memo.clock)
        memo.rollouts = factory.rollout_sync(memo.clock, reporting_instance=os.environ.get("POD_ID", ""))
        reconciler = memo.driver.reconciler

        def forget(run_uid: str) -> None:  # what this process keeps of a run whose Workflow is gone
            reconciler.forget(run_uid)
            metrics.forget(run_uid)
            quality.forget(run_uid)
            notifier.forget(run_uid)

        default_ttl = args.ttl_seconds_after_finished
        memo.retention = RunRetention(reconciler.kube, factory.db.store,
                                      default=default_ttl if default_ttl != RunTtl() else None,
                                      namespaces=args.namespace, forget=forget)
        if args.shards == "auto":
            # a client of its own, renewing in a thread of its own (a busy event loop must not miss renewals)
            memo.membership = ShardMembership(KubeClient.from_environment(args.kubeconfig), args.shard_namespace,
                                              args.replica_id, group=args.shard_group,
                                              duration=args.shard_lease_seconds, renew=args.shard_renew_seconds,
                                              on_change=memo.poke_all)
            memo.shards = memo.membership
            memo.membership.start()
            # a result may be posted to another replica (a Service as the callback URL): it NOTIFYs, this one pokes
            factory.db.store.notify_results = True
            memo.notices_stopped = asyncio.Event()
            memo.notices_task = asyncio.create_task(factory.db.notices.run(memo.notices_stopped, memo.poke),
                                                    name="result-notices")
            log.info("sharding: replica %s, Leases %s=%s in %s (duration %ds, renewed every %gs)", args.replica_id,
                     GROUP_LABEL, args.shard_group, args.shard_namespace, args.shard_lease_seconds,
                     args.shard_renew_seconds)
        if not args.no_orphan_sweep:
            memo.sweep_stopped = asyncio.Event()
            memo.sweep_task = asyncio.create_task(
                memo.retention.run(memo.sweep_stopped, leader=lambda: memo.shards.owns(LEADER_KEY)),
                name="orphan-sweep")
        if events_config is not None:
            publisher = factory.event_publisher()
            memo.events_stopped = asyncio.Event()
            memo.events_task = asyncio.create_task(publisher.run(memo.events_stopped), name="events-publisher")
            log.info("publishing events to NATS at %s, stream %s", events_config.connect.shown,
                     events_config.stream.name)
            memo.event_triggers_stopped = asyncio.Event()
            memo.event_triggers_task = asyncio.ensure_future(
                factory.event_triggers(key, args.namespace)(memo.event_triggers_stopped))
        handlers.start_budget_sync(memo, factory.db.ledger, namespaces=args.namespace, metrics=metrics,
                                   reporting_instance=os.environ.get("POD_ID", ""))
        host, _, port = args.callback_listen.rpartition(":")
        memo.callback = factory.callback_server(on_result=lambda claims: memo.poke(claims.run_uid))
        await memo.callback.start(host or "0.0.0.0", int(port))
        if args.gateway_listen:
            memo.gateway = factory.gateway_server()
            host, _, port = args.gateway_listen.rpartition(":")
            await memo.gateway.start(host.strip("[]") or "0.0.0.0", int(port))
        if args.trigger_listen:
            memo.triggers = factory.trigger_server(args.namespace)
            host, _, port = args.trigger_listen.rpartition(":")
            await memo.triggers.start(host.strip("[]") or "0.0.0.0", int(port))
            log.info("serving WorkflowTriggers on %s", args.trigger_listen)
        start_http_server(args.metrics_port, registry=metrics.registry)
        if traces.enabled:
            log.info("exporting traces over OTLP/HTTP to %s", traces.endpoint)
        log.info("operator ready: callback %s, step image %s", args.callback_url, args.step_image)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Memo, **_: Any) -> None:
        if memo.membership is not None:  # leave first: the others take this replica's share at their next round
            await memo.membership.stop()
            memo.membership.leases.close()
            await stop_task(memo.notices_task, memo.notices_stopped, "the result notices")
        await handlers.stop_budget_sync(memo)
        # a sweep cut short has collected whole batches (one transaction each) or nothing
        await stop_task(memo.sweep_task, memo.sweep_stopped, "the orphan sweep")
        await stop_task(memo.event_triggers_task, memo.event_triggers_stopped, "the event triggers")
        await stop_events(memo)
        if memo.triggers is not None:
            await memo.triggers.stop()
        if memo.gateway is not None:
            await memo.gateway.stop()
        if memo.callback is not None:
            await memo.callback.stop()
        if memo.factory is not None:
            await memo.factory.close()

    kopf_fixes.apply()  # a namespace created while the operator starts is served too
    asyncio.run(kopf.operator(
        registry=registry, memo=memo, clusterwide=not args.namespace, namespaces=args.namespace,
        standalone=not args.peering, priority=args.priority, peering_name=args.peering or None,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())

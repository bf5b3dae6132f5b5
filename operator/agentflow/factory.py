"""The factory: every long-lived client of the operator and the standalone gateway, built once, closed once.

Entry points (``agentflow operator``, ``agentflow gateway``) read their flags into settings, build one
:class:`Factory` at startup, ask it for what they serve and close it at cleanup::

    factory = await Factory.create(dsn=..., gateway=GatewaySettings(...), kube=KubeClient.from_environment())
    factory.db                  one PostgreSQL pool: the journal store, the budget ledger, the audit chain
    factory.gateway()           the Gateway (provider, budgets and credentials from the cluster, the endpoint
                                policy, cache, router, metrics, the audit chain): built on first use, then shared
    factory.gateway_server()    the OpenAI-compatible server over it, authenticating attempt tokens
    factory.callback_server()   the server step pods fetch attempts from and post results to
    factory.trigger_server()    with a cluster: the server WorkflowTriggers' deliveries are posted to
    factory.event_triggers()    with a cluster and ``events``: WorkflowTriggers with spec.events, fed from the stream
    factory.reconciler(config)  the Workflow reconciler (its journal appends metered when given the Metrics)
    factory.notifier(config)    the approval notifier (SMTP relay, webhook allowlist, console URL): to reconciler()
    factory.event_publisher()   with ``events`` (``--nats-url``): the publisher draining the outbox to NATS (in a child
                                process: agentflow.events.process)
                                JetStream, poked by every journal append that wrote the outbox
    factory.tracing             with ``traces`` (``--otlp-endpoint`` or OTEL_EXPORTER_OTLP_ENDPOINT): the spans of
                                the gateway and the reconciler, exported over OTLP/HTTP (agentflow.telemetry);
                                off otherwise
    await factory.close()       (flushes the last spans for at most TRACE_FLUSH_SECONDS)

So the operator and the standalone gateway cannot drift: both get their Gateway from here, with the same
audit sink and endpoint policy. (The local runner's in-process gateway is agentflow.gateway.local.)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry

from .callback.server import CallbackServer
from .events.process import PublisherProcess
from .events.publisher import EventMetrics, EventSink, OutboxPublisher
from .events.settings import EventSettings
from .events.triggers import EventTriggers, Stream, consumer_name
from .gateway.budgets import CatalogBudgets
from .gateway.cache import ResponseCache
from .gateway.embeddings import Embeddings
from .gateway.endpoints import EndpointPolicy, EndpointPolicyError
from .gateway.memory import GatewayMemory
from .gateway.metrics import GatewayMetrics
from .gateway.router import Router
from .gateway.server import GatewayServer
from .gateway.service import BudgetSource, Gateway
from .k8s.kube import Kube
from .k8s.netpol import NetworkConfig
from .k8s.podspec import PodConfig
from .llm import Provider, litellm_provider, offline_provider
from .memory import HashingEmbedder, MemoryStoreError, StoredEpisodes
from .memory.postgres import PostgresMemoryStore
from .models import Budget
from .models.limits import DEFAULT_WORKFLOW_DEPTH
from .models.notify import is_email
from .notify.delivery import Mailer, SmtpSettings, WebhookPoster
from .security.identity import Authenticate, SignedTokens
from .security.pii import text_redactor
from .services.canary import RolloutSync
from .services.gateway import AttemptAuthenticator, KubeBudgets, KubeCredentials
from .services.identity import TOKEN_AUDIENCE, PodIdentity
from .services.metrics import MeteredStore, Metrics
from .services.notifications import DEFAULT_WEBHOOK_HOSTS, ApprovalNotifier, NotifySettings
from .services.podcache import RunPods
from .services.quality import QualityMetrics, QualityWatch
from .services.reconcile import DEFAULT_MAX_PARALLEL, WorkflowReconciler
from .storage.database import Database
from .telemetry import TraceSettings, Tracing
from .triggers.server import TriggerServer

__all__ = ["ConfigError", "Factory", "GatewaySettings", "add_gateway_arguments", "add_trace_arguments",
           "gateway_settings", "trace_settings"]

TRACE_FLUSH_SECONDS = 2.0
"""How long closing waits for the last spans to reach the collector (an unreachable one: no longer)."""


_HOST = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*|\[?[0-9a-f:.]+\]?")


class ConfigError(Exception):
    """A flag or setting is missing or wrong; the message names it."""


@dataclasses.dataclass(frozen=True)
class GatewaySettings:
    """How the gateway is built, from the flags both `agentflow operator` and `agentflow gateway` take."""

    upstream: Literal["litellm", "openai-http", "offline"] = "openai-http"
    openai_key: str | None = dataclasses.field(default=None, repr=False)
    """This process's OPENAI_API_KEY (openai-http sends it where litellm would read it from the environment)."""
    cache_ttl: float = 300.0
    cache_size: int = 10_000
    default_max_tokens: int = 1024
    cooldown_after: int = 3
    cooldown_seconds: float = 30.0
    endpoints: EndpointPolicy = dataclasses.field(default_factory=EndpointPolicy)
    memory_dsn: str | None = None
    """PostgreSQL with pgvector for the agents' long-term memory (None: memory_search/memory_save answer that no
    store is configured)."""

    def provider(self) -> Provider:
        if self.upstream == "offline":
            return offline_provider()
        return litellm_provider(openai_http=self.upstream == "openai-http", environment_key=self.openai_key)


def add_gateway_arguments(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """The gateway's flags (defaults from AGENTFLOW_GATEWAY_* variables)."""
    p.add_argument("--gateway-upstream", "--upstream", dest="gateway_upstream",
                   choices=["litellm", "openai-http", "offline"],
                   default=env.get("AGENTFLOW_GATEWAY_UPSTREAM", "openai-http"),
                   help="what the gateway calls: openai-http (the default: openai/ models, OpenAI and "
                        "OpenAI-compatible servers, over a thin HTTP client; every other provider through litellm), "
                        "litellm (every provider through litellm; keys from Agents' credential Secrets) or the "
                        "offline model (tests, demos)")
    p.set_defaults(openai_key=env.get("OPENAI_API_KEY") or None)
    p.add_argument("--cache-ttl", type=float, default=float(env.get("AGENTFLOW_GATEWAY_CACHE_TTL", "300")),
                   help="seconds a cached answer is served (0: no cache)")
    p.add_argument("--cache-size", type=int, default=int(env.get("AGENTFLOW_GATEWAY_CACHE_SIZE", "10000")),
                   help="most cached answers kept (least recently used go first; 0: no cache)")
    p.add_argument("--default-max-tokens", type=int, default=1024,
                   help="output tokens reserved (and sent upstream as max_tokens) when a request sets none")
    p.add_argument("--cooldown-after", type=int, default=3, help="consecutive failures before a model cools down")
    p.add_argument("--cooldown-seconds", type=float, default=30.0, help="how long a failing model is skipped")
    p.add_argument("--model-endpoint", action="append", default=[], metavar="URL",
                   help="an OpenAI-compatible base URL Agents of every namespace may name in spec.model.apiBase "
                        "(repeatable; never sent the gateway's own provider key)")
    p.add_argument("--model-endpoints", metavar="FILE", default=env.get("AGENTFLOW_MODEL_ENDPOINTS"),
                   help="the endpoint policy: YAML with endpoints [{url, namespaces, environmentKey, region}] and "
                        "providerRegions (see agentflow.gateway.endpoints); without it and --model-endpoint, "
                        "Agents may not set apiBase")
    p.add_argument("--memory-dsn", metavar="DSN", default=env.get("AGENTFLOW_MEMORY_DSN"),
                   help="PostgreSQL with the pgvector extension for the agents' long-term memory (memory_search, "
                        "memory_save through the gateway); without it those tools answer that no store is set")


def gateway_settings(args: argparse.Namespace) -> GatewaySettings:
    """Settings from parsed flags; ConfigError naming the flag at fault."""
    if args.cache_ttl < 0 or args.cache_size < 0:
        raise ConfigError("--cache-ttl and --cache-size must be >= 0 (0 turns the cache off)")
    if args.default_max_tokens < 1:
        raise ConfigError("--default-max-tokens must be >= 1")
    if args.cooldown_after < 1 or args.cooldown_seconds < 0:
        raise ConfigError("--cooldown-after must be >= 1 and --cooldown-seconds >= 0")
    try:
        policy = EndpointPolicy.from_urls(args.model_endpoint)
        if args.model_endpoints:
            try:
                text = Path(args.model_endpoints).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"--model-endpoints {args.model_endpoints!r}: cannot read it: {exc.strerror}") \
                    from None
            policy = policy.merged(EndpointPolicy.from_text(text, f"--model-endpoints {args.model_endpoints}"))
    except EndpointPolicyError as exc:
        raise ConfigError(str(exc)) from None
    return GatewaySettings(upstream=args.gateway_upstream, openai_key=getattr(args, "openai_key", None),
                           cache_ttl=args.cache_ttl, cache_size=args.cache_size,
                           default_max_tokens=args.default_max_tokens, cooldown_after=args.cooldown_after,
                           cooldown_seconds=args.cooldown_seconds, endpoints=policy,
                           memory_dsn=getattr(args, "memory_dsn", None) or None)


def add_trace_arguments(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """The flags of traces (agentflow.telemetry); the standard OTEL_* variables apply when a flag is not given."""
    p.add_argument("--otlp-endpoint", metavar="URL", default=env.get("AGENTFLOW_OTLP_ENDPOINT") or None,
                   help="export traces over OTLP/HTTP to this collector (http://otel-collector:4318; /v1/traces "
                        "is added); default OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; "
                        "without any, tracing is off")
    p.add_argument("--trace-url-template", metavar="URL", default=env.get("AGENTFLOW_TRACE_URL_TEMPLATE") or None,
                   help="a link to a run's trace put on the Workflow's status (status.traceUrl), with {trace_id} "
                        "in it: https://jaeger.example.com/trace/{trace_id}")
    p.add_argument("--trace-content", action="store_true",
                   default=env.get("AGENTFLOW_TRACE_CONTENT", "").strip().lower() in ("1", "true", "yes", "on"),
                   help="record prompts and completions on model-call spans, after PII redaction "
                        "(agentflow.security.pii); off by default")


def _on(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def add_notify_arguments(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """The flags of approval notifications (agentflow.services.notifications). The SMTP password is read from
    AGENTFLOW_SMTP_PASSWORD only (a flag would show in the process list); the chart sets it from a Secret."""
    p.add_argument("--console-url", metavar="URL", default=env.get("AGENTFLOW_CONSOLE_URL") or None,
                   help="the console's external URL (https://agentflow.example.com): notifications link to a run's "
                        "page there")
    p.add_argument("--smtp-host", default=env.get("AGENTFLOW_SMTP_HOST") or None,
                   help="the SMTP relay approval e-mails go through (default: none; e-mail notifications then fail "
                        "with an Event saying so)")
    p.add_argument("--smtp-port", type=int, default=int(env.get("AGENTFLOW_SMTP_PORT") or 587))
    p.add_argument("--smtp-from", default=env.get("AGENTFLOW_SMTP_FROM") or None, metavar="ADDRESS",
                   help="the From address of approval e-mails")
    p.add_argument("--smtp-starttls", action="store_true", default=_on(env.get("AGENTFLOW_SMTP_STARTTLS")),
                   help="upgrade the SMTP connection with STARTTLS (the relay must offer it)")
    p.add_argument("--smtp-tls", action="store_true", default=_on(env.get("AGENTFLOW_SMTP_TLS")),
                   help="implicit TLS from the first byte (port 465)")
    p.add_argument("--smtp-username", default=env.get("AGENTFLOW_SMTP_USERNAME") or None,
                   help="log in to the relay as this user, with the password in AGENTFLOW_SMTP_PASSWORD")
    p.add_argument("--notify-webhook-hosts", default=env.get("AGENTFLOW_NOTIFY_WEBHOOK_HOSTS",
                                                              ",".join(DEFAULT_WEBHOOK_HOSTS)),
                   metavar="HOST,...", help="the only hosts approval webhooks are posted to (tenants name the URL "
                   "in a Secret); exact host names, comma-separated (default: hooks.slack.com; '' for none)")


@dataclasses.dataclass(frozen=True)
class NotifyConfig:
    settings: NotifySettings
    smtp: SmtpSettings | None


def notify_config(args: argparse.Namespace, env: Mapping[str, str]) -> NotifyConfig:
    """Settings from the flags of :func:`add_notify_arguments`; ConfigError naming the flag at fault."""
    console = args.console_url
    if console is not None:
        parts = urllib.parse.urlsplit(console)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError(f"--console-url: {console!r} is not an http(s) URL without a query or fragment "
                              "(https://agentflow.example.com)")
    hosts = tuple(h.strip().lower() for h in (args.notify_webhook_hosts or "").split(",") if h.strip())
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise ConfigError(f"--notify-webhook-hosts: {host!r} is not a host name (no scheme, port or path)")
    smtp = None
    if args.smtp_host:
        if not 0 < args.smtp_port < 65536:
            raise ConfigError(f"--smtp-port: {args.smtp_port} is not a TCP port")
        if not args.smtp_from or not is_email(args.smtp_from):
            raise ConfigError(f"--smtp-from: {args.smtp_from!r} is not a plain e-mail address; the relay needs a "
                              "From address")
        if args.smtp_starttls and args.smtp_tls:
            raise ConfigError("--smtp-starttls and --smtp-tls exclude each other: STARTTLS upgrades a plain "
                              "connection, --smtp-tls starts with TLS")
        username = args.smtp_username or env.get("AGENTFLOW_SMTP_USERNAME") or None
        password = env.get("AGENTFLOW_SMTP_PASSWORD") or None
        if (username is None) != (password is None):
            raise ConfigError("--smtp-username (or AGENTFLOW_SMTP_USERNAME) and AGENTFLOW_SMTP_PASSWORD go together: "
                              "give both or neither")
        smtp = SmtpSettings(args.smtp_host, args.smtp_port, args.smtp_from, starttls=args.smtp_starttls,
                            tls=args.smtp_tls, username=username, password=password)
    return NotifyConfig(NotifySettings(console_url=console, webhook_hosts=hosts), smtp)


def trace_settings(args: argparse.Namespace, env: Mapping[str, str], service_name: str) -> TraceSettings:
    """Settings from parsed flags and the OTEL_* variables; ConfigError naming the setting at fault."""
    try:
        return TraceSettings.from_env(env, endpoint=getattr(args, "otlp_endpoint", None),
                                      content=bool(getattr(args, "trace_content", False)) or None,
                                      url_template=getattr(args, "trace_url_template", None),
                                      service_name=service_name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class Factory:
    def __init__(self, db: Database, *, kube: Kube | None = None, key: bytes | None = None,
                 gateway: GatewaySettings | None = None, registry: CollectorRegistry | None = None,
                 budgets: list[Budget] | None = None, token_audience: str = TOKEN_AUDIENCE,
                 events: EventSettings | None = None, traces: TraceSettings | None = None,
                 tracing: Tracing | None = None) -> None:
        """``kube`` None: no cluster (the standalone gateway with ``budgets`` from a file: no credential
        Secrets then). Callers are authenticated by their pod's identity with a cluster, and by HMAC attempt
        tokens signed with ``key`` when one is given (off a cluster: benchmarks, development).
        ``registry``: where the gateway's metrics go (default: a registry of its own).
        ``events``: publish to NATS (the database must have been connected with ``outbox=True``).
        ``traces``: export spans (content redacted when it is recorded); ``tracing`` a Tracing built elsewhere
        (tests)."""
        self.db = db
        if tracing is None and traces is not None and traces.enabled:
            tracing = Tracing.build(traces, redact=text_redactor() if traces.content else None)
        self.tracing = tracing if tracing is not None else Tracing.off()
        self.trace_settings = traces if traces is not None else TraceSettings()
        self.key = key
        self.kube = kube
        self.token_audience = token_audience
        self.gateway_settings = gateway or GatewaySettings()
        self.registry = registry
        self.events = events
        self._budgets = budgets
        self._gateway: Gateway | None = None
        self._authenticate: Authenticate | None = None
        self._publisher: OutboxPublisher | PublisherProcess | None = None
        self.dsn: str | None = None
        """The PostgreSQL DSN (set by :meth:`create`): what the events publisher process connects with."""
        self._memory: PostgresMemoryStore | None = None
        self._notifier: ApprovalNotifier | None = None

    @classmethod
    async def create(cls, *, dsn: str, key: bytes | None = None, kube: Kube | None = None,
                     gateway: GatewaySettings | None = None, registry: CollectorRegistry | None = None,
                     budgets: list[Budget] | None = None, token_audience: str = TOKEN_AUDIENCE,
                     migrate: bool = True, events: EventSettings | None = None,
                     traces: TraceSettings | None = None, tracing: Tracing | None = None) -> Factory:
        """Connect to PostgreSQL (one pool) and bring every schema up to date. With ``events``, journal
        appends also write the events outbox."""
        db = await Database.connect(dsn, outbox=events is not None)
        try:
            if migrate:
                await db.migrate()
        except BaseException:
            await db.close()
            raise
        factory = cls(db, kube=kube, key=key, gateway=gateway, registry=registry, budgets=budgets,
                      token_audience=token_audience, events=events, traces=traces, tracing=tracing)
        factory.dsn = dsn
        dsn_memory = factory.gateway_settings.memory_dsn
        if dsn_memory:
            try:  # the pool of the agents' memory (its embedder is chosen per call, charged to the caller)
                factory._memory = await PostgresMemoryStore.connect(dsn_memory, HashingEmbedder(), audit=db.audit)
                if migrate:
                    await factory._memory.migrate()
            except MemoryStoreError as exc:
                await factory.close()
                raise ConfigError(f"--memory-dsn: {exc}") from None
        return factory

    def gateway(self) -> Gateway:
        if self._gateway is None:
            settings = self.gateway_settings
            budgets: BudgetSource
            extra: dict[str, Any] = {}
            if self._budgets is not None or self.kube is None:
                budgets = CatalogBudgets(self._budgets or [])
            else:
                budgets = KubeBudgets(self.kube)
                extra["credentials"] = KubeCredentials(self.kube)
            self._gateway = Gateway(
                ledger=self.db.ledger,
                provider=settings.provider(),
                budgets=budgets,
                endpoints=settings.endpoints,
                router=Router(cooldown_after=settings.cooldown_after, cooldown_seconds=settings.cooldown_seconds),
                cache=ResponseCache(ttl_seconds=settings.cache_ttl, max_entries=settings.cache_size,
                                    clock=time.monotonic),
                metrics=GatewayMetrics(self.registry),
                audit=self.db.audit,
                tracing=self.tracing,
                default_max_tokens=settings.default_max_tokens,
                **extra,
            )
        return self._gateway

    def authenticator(self) -> Authenticate:
        """Who calls: a step pod's projected token (with a cluster), else HMAC attempt tokens (with a key)."""
        if self._authenticate is None:
            if self.kube is not None:
                self._authenticate = PodIdentity(self.kube, self.db.store, audiences=(self.token_audience,))
            elif self.key is not None:
                self._authenticate = SignedTokens(self.key)
            else:
                raise ConfigError("no way to authenticate callers: give a cluster (--kubeconfig, or run in a pod) "
                                  "or --token-key-file")
        return self._authenticate

    def gateway_server(self) -> GatewayServer:
        gateway = self.gateway()
        embeddings = Embeddings(gateway)
        store = self._memory
        memory = GatewayMemory(embeddings, (lambda embedder: PostgresMemoryStore(
            store.pool, embedder, where=store.where, audit=self.db.audit)) if store is not None else None,
            episodes=StoredEpisodes(self.db.store), tracing=self.tracing)
        return GatewayServer(gateway, AttemptAuthenticator(self.authenticator(), self.db.store),
                             embeddings=embeddings, memory=memory)

    def callback_server(self, on_result: Callable[[Any], Any] | None = None) -> CallbackServer:
        return CallbackServer(self.db.store, self.authenticator(), on_result=on_result, audit=self.db.audit)

    def event_triggers(self, key: bytes, namespaces: Sequence[str] = ()) -> Callable[[asyncio.Event], Awaitable[None]]:
        """Event triggers (WorkflowTriggers with spec.events) fed from the events stream, in ``namespaces``, through
        the durable consumer named from ``key`` (the operator's signing key, shared by its replicas): the coroutine
        function that runs them until its event is set. ConfigError when events are off."""
        if self.events is None:
            raise ConfigError("event triggers read the events stream: give --nats-url")
        if self.kube is None:
            raise ConfigError("event triggers need a Kubernetes client")
        triggers = EventTriggers(self.kube, consumer_name(key), namespaces=namespaces)
        settings = self.events

        async def connect() -> Stream:
            from .events.jetstream import JetStream  # nats-py: only when events are on

            return await JetStream.connect(settings.connect)

        def run(stopped: asyncio.Event) -> Awaitable[None]:
            return triggers.run(connect, settings.stream.name, stopped)

        return run

    def trigger_server(self, namespaces: Sequence[str] = ()) -> TriggerServer:
        """The server starting runs of WorkflowTriggers, in ``namespaces`` (names or globs; empty: all)."""
        if self.kube is None:
            raise ConfigError("the trigger server needs a Kubernetes client")
        return TriggerServer(self.kube, namespaces=namespaces)

    def notifier(self, config: NotifyConfig, *, reporting_instance: str = "") -> ApprovalNotifier:
        """The approval notifier (built once; closed with the factory): give it to :meth:`reconciler`."""
        if self.kube is None:
            raise ConfigError("approval notifications need a Kubernetes client")
        if self._notifier is None:
            mailer = Mailer(config.smtp) if config.smtp is not None else None
            self._notifier = ApprovalNotifier(self.kube, self.db.store, config.settings, mailer=mailer,
                                              poster=WebhookPoster(config.settings.webhook_hosts),
                                              reporting_instance=reporting_instance)
        return self._notifier

    def reconciler(self, pod_config: PodConfig, metrics: Metrics | None = None, *,
                   network: NetworkConfig | None = None, signing_key: bytes | None = None,
                   previews: bool = True, max_parallel: int | None = DEFAULT_MAX_PARALLEL,
                   quality: QualityWatch | None = None,
                   notifier: ApprovalNotifier | None = None,
                   max_workflow_depth: int = DEFAULT_WORKFLOW_DEPTH, pods: RunPods | None = None) -> WorkflowReconciler:
        """The Workflow reconciler: with ``metrics``, what its journal appends record is counted (steps,
        durations, tokens and cost: agentflow.services.metrics); ``network`` the platform's side of step pods'
        NetworkPolicies, ``signing_key`` the key approval decisions are stamped with by the admission webhook
        (None: every decision by annotation is refused), ``previews`` whether status shows masked output
        previews, ``max_parallel`` the step pods one Workflow runs at once, ``max_workflow_depth`` how deep workflow
        steps nest child Workflows; ``quality`` (with ``metrics``) is shown every append and follows the reconciler's
        runs (agentflow.services.quality); ``pods`` the step pods kept from the operator's pod watch
        (agentflow.services.podcache; None: each reconcile lists them)."""
        if self.kube is None:
            raise ConfigError("the reconciler needs a Kubernetes client")
        observers = (quality,) if quality is not None else ()
        store = self.db.store if metrics is None else MeteredStore(self.db.store, metrics, observers)
        reconciler = WorkflowReconciler(self.kube, store, pod_config, network=network, signing_key=signing_key,
                                        previews=previews, audit=self.db.audit, max_parallel=max_parallel,
                                        tracing=self.tracing, max_workflow_depth=max_workflow_depth,
                                        trace_url_template=self.trace_settings.url_template,
                                        notifier=notifier, pods=pods)
        if quality is not None and metrics is not None:
            quality.follow(reconciler.runs)
        return reconciler

    def quality_watch(self, metrics: QualityMetrics | None = None, *, reporting_instance: str = "") -> QualityWatch:
        """Quality drift of the Agents of the runs the reconciler drives: give it to :meth:`reconciler`."""
        if self.kube is None:
            raise ConfigError("the quality watch needs a Kubernetes client")
        return QualityWatch(self.kube, metrics, reporting_instance=reporting_instance)

    def rollout_sync(self, clock: Callable[[], float], *, reporting_instance: str = "") -> RolloutSync:
        """PromptRollouts' decisions: the evidence from the journal in PostgreSQL, decisions to the audit chain."""
        if self.kube is None:
            raise ConfigError("the rollout sync needs a Kubernetes client")
        return RolloutSync(self.kube, self.db.store, audit=self.db.audit, clock=clock,
                           reporting_instance=reporting_instance)

    def event_publisher(self) -> OutboxPublisher | PublisherProcess:
        """The outbox publisher (built once; its metrics on ``registry``): in a child process of its own
        (agentflow.events.process) unless ``--events-publisher loop``. ConfigError when events are off."""
        if self.events is None:
            raise ConfigError("events are off: give --nats-url to publish them")
        if self._publisher is None:
            settings = self.events
            metrics = EventMetrics(self.registry)
            if settings.publisher == "process":
                if self.dsn is None:
                    raise ConfigError("the events publisher process needs the PostgreSQL DSN")
                self._publisher = PublisherProcess(self.dsn, settings, metrics)
            else:
                async def connect() -> EventSink:
                    from .events.jetstream import JetStream  # nats-py: only when events are on

                    return await JetStream.connect(settings.connect)

                self._publisher = OutboxPublisher(self.db.outbox, connect, settings.stream, metrics)
            self.db.store.on_outbox = self._publisher.poke
        return self._publisher

    async def close(self) -> None:
        self.tracing.shutdown(TRACE_FLUSH_SECONDS)
        if self._notifier is not None:
            await self._notifier.close()
        if self._publisher is not None:
            await self._publisher.close()
        if self._gateway is not None:
            close = getattr(self._gateway.provider.upstream, "close", None)  # openai-http's HTTP session
            if close is not None:
                await close()
        if self._memory is not None:
            await self._memory.pool.close()
        await self.db.close()
        if self.kube is not None:
            self.kube.close()


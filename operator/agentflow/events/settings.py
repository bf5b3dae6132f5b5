"""Settings of the events publisher and reader, from flags (no NATS client needed to parse them).

``add_events_arguments(parser, env)`` adds the flags `agentflow operator` takes (defaults from AGENTFLOW_NATS_*
and AGENTFLOW_EVENTS_* variables); ``events_settings(args)`` reads them back, None when ``--nats-url`` is not
given (events are off), ConfigError-like ValueError naming the flag at fault otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import urllib.parse
from collections.abc import Mapping, Sequence

__all__ = [
    "ConnectSettings",
    "EventSettings",
    "StreamSettings",
    "add_events_arguments",
    "events_settings",
    "parse_duration",
    "parse_servers",
    "redact_url",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
PUBLISHERS = ("process", "loop")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def redact_url(url: str) -> str:
    """A server URL without its password or token, fit for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    host = f"[{host}]" if ":" in host else host
    who = "***" if parts.password is None else f"{parts.username}:***"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{who}@{host}" + (f":{port}" if port else "")))


def parse_servers(value: str | Sequence[str]) -> tuple[str, ...]:
    """Server URLs from ``--nats-url`` (comma-separated); ValueError naming what is wrong."""
    items = [value] if isinstance(value, str) else list(value)
    servers = tuple(s.strip() for item in items for s in item.split(",") if s.strip())
    if not servers:
        raise ValueError("no NATS server URL given")
    for server in servers:
        try:
            parts = urllib.parse.urlsplit(server)
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"{redact_url(server)!r} is not a NATS URL ({exc}): use nats://HOST:4222") from None
        if "://" not in server or parts.scheme not in ("nats", "tls", "ws", "wss") or not parts.hostname:
            raise ValueError(f"{redact_url(server)!r} is not a NATS URL: use nats://HOST:4222 "
                             "(or tls://, ws://, wss://)")
    return servers


def parse_duration(text: str, what: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``168h``, ``7d`` or ``250ms``; ValueError naming ``what``."""
    m = _DURATION.match(str(text))
    if m is None:
        raise ValueError(f"{what} {text!r}: expected a duration such as 30s, 10m, 168h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclasses.dataclass(frozen=True)
class StreamSettings:
    """The JetStream stream the operator creates when it is missing (``--events-*`` flags)."""

    name: str = "AGENTFLOW"
    subjects: tuple[str, ...] = ("agentflow.>",)
    max_age: float = 7 * 86400.0
    """Seconds a message is kept (0: no limit)."""
    max_bytes: int = -1
    """Most bytes kept, oldest dropped first (-1: no limit)."""
    duplicate_window: float = 600.0
    """Seconds JetStream remembers a Nats-Msg-Id: a copy published within it is dropped."""
    replicas: int = 1
    storage: str = "file"


@dataclasses.dataclass(frozen=True)
class ConnectSettings:
    servers: tuple[str, ...]
    creds: str | None = None
    """A NATS credentials file (JWT + NKey seed)."""
    name: str = "agentflow"
    connect_timeout: float = 5.0
    request_timeout: float = 5.0
    """Seconds to wait for a publish ack or an API answer."""
    reconnect_wait: float = 1.0
    inbox_prefix: str | None = None
    """Reply subjects' prefix (a tenant's permissions may allow only its own: ``_INBOX.agentflow.<namespace>``)."""

    @property
    def shown(self) -> str:
        return ",".join(redact_url(s) for s in self.servers)


@dataclasses.dataclass(frozen=True)
class EventSettings:
    connect: ConnectSettings
    stream: StreamSettings
    publisher: str = "process"
    """Where the outbox publisher runs: ``process`` (a child process, agentflow.events.process) or ``loop`` (the
    operator's event loop)."""


def add_events_arguments(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """The operator's events flags. Without --nats-url nothing is published and no outbox is written."""
    p.add_argument("--nats-url", default=env.get("AGENTFLOW_NATS_URL", ""),
                   help="publish every journal event and status transition to NATS JetStream here "
                        "(nats://HOST:4222; several: comma-separated); '' (default): events off")
    p.add_argument("--nats-creds", default=env.get("AGENTFLOW_NATS_CREDS") or None, metavar="FILE",
                   help="NATS credentials file (JWT and NKey seed) of the operator's NATS user")
    p.add_argument("--events-stream", default=env.get("AGENTFLOW_EVENTS_STREAM", "AGENTFLOW"),
                   help="the JetStream stream (subjects agentflow.>), created when missing")
    p.add_argument("--events-max-age", default=env.get("AGENTFLOW_EVENTS_MAX_AGE", "168h"),
                   help="how long the stream keeps an event, e.g. 168h or 30d (0: no limit)")
    p.add_argument("--events-max-bytes", type=int, default=int(env.get("AGENTFLOW_EVENTS_MAX_BYTES", "-1")),
                   help="most bytes the stream keeps, oldest dropped first (-1: no limit)")
    p.add_argument("--events-duplicate-window", default=env.get("AGENTFLOW_EVENTS_DUPLICATE_WINDOW", "10m"),
                   help="how long JetStream remembers an event id to drop a copy republished after a crash")
    p.add_argument("--events-publisher", choices=PUBLISHERS,
                   default=env.get("AGENTFLOW_EVENTS_PUBLISHER", "process"),
                   help="where the publisher runs: 'process' (default: a child process, off the reconciler's event "
                        "loop) or 'loop' (the operator's event loop: one process, ~45 MB less, slower hops)")
    p.add_argument("--events-replicas", type=int, default=int(env.get("AGENTFLOW_EVENTS_REPLICAS", "1")),
                   help="stream replicas (clustered NATS: 3)")


def events_settings(args: argparse.Namespace, *, name: str = "agentflow-operator") -> EventSettings | None:
    """Settings from parsed flags; None when events are off; ValueError naming the flag at fault."""
    if not args.nats_url:
        return None
    try:
        servers = parse_servers(args.nats_url)
    except ValueError as exc:
        raise ValueError(f"--nats-url: {exc}") from None
    if not _STREAM_NAME.match(args.events_stream):
        raise ValueError(f"--events-stream {args.events_stream!r}: a stream name is letters, digits, '-' and '_'")
    max_age = parse_duration(args.events_max_age, "--events-max-age")
    window = parse_duration(args.events_duplicate_window, "--events-duplicate-window")
    if window <= 0:
        raise ValueError("--events-duplicate-window must be > 0: it is what drops a republished event")
    if max_age and window > max_age:
        raise ValueError(f"--events-duplicate-window ({args.events_duplicate_window}) cannot exceed "
                         f"--events-max-age ({args.events_max_age}): JetStream refuses such a stream")
    if args.events_max_bytes < -1 or args.events_max_bytes == 0:
        raise ValueError("--events-max-bytes must be -1 (no limit) or a number of bytes > 0")
    if not 1 <= args.events_replicas <= 5:
        raise ValueError("--events-replicas must be 1 to 5")
    stream = StreamSettings(name=args.events_stream, max_age=max_age, max_bytes=args.events_max_bytes,
                            duplicate_window=window, replicas=args.events_replicas)
    publisher = getattr(args, "events_publisher", "process")
    if publisher not in PUBLISHERS:
        raise ValueError(f"--events-publisher {publisher!r}: use one of {', '.join(PUBLISHERS)}")
    return EventSettings(ConnectSettings(servers, creds=args.nats_creds, name=name), stream, publisher)

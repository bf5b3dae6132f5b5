"""The errors of agentflow.events, apart from the NATS client (agentflow.events.jetstream raises them)::

    EventsError             base: publishing or reading events failed; the message says what to do
    ├── EventsUnavailable   NATS cannot be reached or did not answer in time: try again later (the publisher
    │                       backs off; the events wait in the outbox)
    ├── StreamMissing       no stream takes the subject (deleted, or JetStream still loading after a restart):
    │                       ensure the stream, then try again
    ├── PermissionDenied    the server refused this user (authorization, or a subject outside its permissions)
    └── NatsMissing         nats-py is not installed: the message names the extra to install
"""

from __future__ import annotations

__all__ = ["INSTALL_HINT", "EventsError", "EventsUnavailable", "NatsMissing", "PermissionDenied", "StreamMissing"]

INSTALL_HINT = "pip install -e '.[operator]' in the repository (the operator extra brings nats-py)"


class EventsError(Exception):
    """Publishing or reading events failed; the message says what to do."""


class EventsUnavailable(EventsError):
    """NATS cannot be reached or did not answer in time: try again later."""


class StreamMissing(EventsError):
    """No stream takes the subject: ensure the stream, then try again."""


class PermissionDenied(EventsError):
    """The NATS server refused this user."""


class NatsMissing(EventsError):
    """nats-py is not installed."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} needs the NATS client: {INSTALL_HINT}")

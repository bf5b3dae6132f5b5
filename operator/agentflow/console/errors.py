"""The console's errors; each carries the HTTP status the API answers with, and says what to do.

::

    ConsoleError            500 unless a subclass says otherwise
    ├── BadRequest          400: the request itself is wrong (names the field or argument)
    ├── Unauthorized        401: no credential (cluster mode: sign in with a bearer token)
    ├── Forbidden           403: RBAC (or the local origin check) refuses it; the message is the API server's
    ├── NotFound            404: no such run, node or route
    ├── Conflict            409: the run is in a state that does not allow it (finished, driven elsewhere)
    ├── Unprocessable       422: inputs the template refuses (``details``: each input and why)
    └── Unavailable         503: a backend (API server, PostgreSQL) cannot be reached

``details`` go into the JSON answer beside ``error`` (what a client needs to raise its own error: the problems of
the inputs, the template that does not exist).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["BadRequest", "Conflict", "ConsoleError", "Forbidden", "NotFound", "Unauthorized", "Unavailable",
           "Unprocessable"]


class ConsoleError(Exception):
    status = 500

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})


class BadRequest(ConsoleError):
    status = 400


class Unauthorized(ConsoleError):
    status = 401


class Forbidden(ConsoleError):
    status = 403


class NotFound(ConsoleError):
    status = 404


class Conflict(ConsoleError):
    status = 409


class Unprocessable(ConsoleError):
    status = 422


class Unavailable(ConsoleError):
    status = 503

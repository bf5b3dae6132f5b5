"""The console's errors; each carries the HTTP status the API answers with, and says what to do.

::

    ConsoleError            500 unless a subclass says otherwise
    ├── BadRequest          400: the request itself is wrong (names the field or argument)
    ├── Unauthorized        401: no credential (cluster mode: sign in with a bearer token)
    ├── Forbidden           403: RBAC (or the local origin check) refuses it; the message is the API server's
    ├── NotFound            404: no such run, node or route
    ├── Conflict            409: the run is in a state that does not allow it (finished, driven elsewhere)
    └── Unavailable         503: a backend (API server, PostgreSQL) cannot be reached
"""

from __future__ import annotations

__all__ = ["BadRequest", "Conflict", "ConsoleError", "Forbidden", "NotFound", "Unauthorized", "Unavailable"]


class ConsoleError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


class Unavailable(ConsoleError):
    status = 503

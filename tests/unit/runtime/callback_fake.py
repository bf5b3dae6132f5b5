"""A fake of the operator's callback server on 127.0.0.1, in a thread: one stored attempt, the results posted.

Speaks the contract of agentflow.callback.server: ``GET /v1/attempt`` (Bearer token) answers
``{"request", "manifests", "workflow"}``; ``POST /v1/attempt/result`` answers 201 the first time and
200 after; errors are 4xx/5xx with ``{"error": ...}``.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections import deque
from typing import Any


class FakeCallbackServer:
    """``start(listen=False)`` binds the port without listening (connections are refused) until ``listen()``."""

    def __init__(self, attempt: dict[str, Any] | str, token: str) -> None:
        self.attempt = attempt
        self.token = token
        self.results: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.fail: deque[int] = deque()  # statuses to answer (one per request) before behaving
        self.fail_post: deque[int] = deque()  # statuses to answer POSTs with (one each) before storing
        self.post_status: int | None = None  # answer every POST with this status instead of storing
        self.retry_after: str | None = None  # Retry-After header of the failures from ``fail``
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, listen: bool = True) -> FakeCallbackServer:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler(), bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.server_bind()
        if listen:
            self.listen()
        return self

    def listen(self) -> None:
        assert self._server is not None and self._thread is None
        self._server.server_activate()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
                self._thread.join()
            self._server.server_close()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _gate(self) -> bool:
                fake.requests.append((self.command, self.path))
                if fake.fail:
                    headers = {"Retry-After": fake.retry_after} if fake.retry_after is not None else None
                    self._answer(fake.fail.popleft(), {"error": "the callback server is starting"}, headers)
                    return False
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._answer(401, {"error": "invalid or expired token"})
                    return False
                return True

            def do_GET(self) -> None:
                if not self._gate():
                    return
                if self.path != "/v1/attempt":
                    self._answer(404, {"error": f"no route {self.path}"})
                    return
                self._answer(200, fake.attempt if isinstance(fake.attempt, str) else json.dumps(fake.attempt))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self._gate():
                    return
                if self.path != "/v1/attempt/result":
                    self._answer(404, {"error": f"no route {self.path}"})
                    return
                if fake.fail_post:
                    self._answer(fake.fail_post.popleft(), {"error": "the database is busy"})
                    return
                if fake.post_status is not None:
                    self._answer(fake.post_status, {"error": "result rejected"})
                    return
                if self.headers.get("Content-Type") != "application/json":
                    self._answer(415, {"error": "send application/json"})
                    return
                first = not fake.results
                fake.results.append(json.loads(body))
                self._answer(201 if first else 200, {"stored": first})

        return Handler

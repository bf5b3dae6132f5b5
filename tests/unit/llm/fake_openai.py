"""An OpenAI-compatible chat server on loopback that records what it receives (test helper)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclasses.dataclass
class Reply:
    status: int = 200
    text: str = "hello from the fake server"
    prompt_tokens: int = 11
    completion_tokens: int = 7
    model: str | None = None


class FakeOpenAI:
    """Answers POST /v1/chat/completions with scripted replies (default: 200 with ``Reply()``)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: deque[Reply] = deque()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    reply = server.script.popleft() if server.script else Reply()
                payload: dict[str, Any]
                if reply.status != 200:
                    payload = {"error": {"message": f"scripted {reply.status}", "type": "test", "code": None}}
                else:
                    payload = {
                        "id": f"chatcmpl-{len(server.received)}",
                        "object": "chat.completion",
                        "created": 1700000000,
                        "model": reply.model or body.get("model", "fake-model"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply.text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": reply.prompt_tokens,
                            "completion_tokens": reply.completion_tokens,
                            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                        },
                    }
                data = json.dumps(payload).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def stop_unstarted(self) -> None:
        """Close the listening socket of a server that was never started (its port then refuses)."""
        self._httpd.server_close()

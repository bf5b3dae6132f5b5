"""An OpenAI-compatible chat server on loopback that records what it receives (test helper)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
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
    tool_calls: list[dict[str, Any]] | None = None
    """OpenAI tool calls [{id, type: function, function: {name, arguments}}]; the content is then null
    unless ``text`` is also given explicitly."""
    piece: int = 8
    """A streamed reply (the request has stream: true) sends the text in pieces of this many characters."""
    delay: float = 0.0
    """Seconds between the pieces of a streamed reply."""
    fail_after: int | None = None
    """A streamed reply ends the connection after this many pieces (a provider failing mid-stream)."""
    raw: dict[str, Any] | None = None
    """The whole body of a (not streamed) reply, sent as it is: a provider answering what it should not."""


class FakeOpenAI:
    """Answers POST /v1/chat/completions with scripted replies (default: 200 with ``Reply()``); a request with
    stream: true is answered with server-sent chunks (usage last when stream_options.include_usage)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.aborted: list[int] = []
        """For each streamed reply whose client went away: how many pieces it had sent."""
        self.streamed: list[int] = []
        """For each streamed reply sent to its end: how many pieces it sent."""
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
                if reply.status == 200 and body.get("stream"):
                    self.stream(body, reply)
                    return
                if reply.raw is not None:
                    payload = reply.raw
                elif reply.status != 200:
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
                                "message": {"role": "assistant", "content": reply.text,
                                            **({"tool_calls": reply.tool_calls} if reply.tool_calls else {})},
                                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
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

            def stream(self, body: dict[str, Any], reply: Reply) -> None:
                """Server-sent chat.completion.chunk events, as OpenAI sends them."""
                base = {"id": f"chatcmpl-{len(server.received)}", "object": "chat.completion.chunk",
                        "created": 1700000000, "model": reply.model or body.get("model", "fake-model")}

                def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                    return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

                text = reply.text or ""
                events = [chunk({"role": "assistant", "content": ""})]
                events += [chunk({"content": text[i:i + reply.piece]}) for i in range(0, len(text), reply.piece)]
                for i, call in enumerate(reply.tool_calls or []):
                    events.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                                         "function": {"name": call["function"]["name"],
                                                                      "arguments": ""}}]}))
                    events.append(chunk({"tool_calls": [{"index": i, "function": {
                        "arguments": call["function"]["arguments"]}}]}))
                events.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
                if (body.get("stream_options") or {}).get("include_usage"):
                    events.append({**base, "choices": [], "usage": {
                        "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                        "total_tokens": reply.prompt_tokens + reply.completion_tokens}})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                sent = 0
                try:
                    for event in events:
                        if reply.fail_after is not None and sent >= reply.fail_after:
                            return  # the connection ends without [DONE]
                        self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                        self.wfile.flush()
                        sent += 1
                        if reply.delay:
                            time.sleep(reply.delay)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with server._lock:
                        server.aborted.append(sent)
                    return
                with server._lock:
                    server.streamed.append(sent)

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

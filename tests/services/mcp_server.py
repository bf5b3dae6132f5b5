"""A real MCP server for tests, written with the official SDK's server side (``MCPServer``, once FastMCP).

    python tests/services/mcp_server.py --stdio [--log FILE]
    python tests/services/mcp_server.py --http HOST:PORT [--log FILE]     streamable HTTP at /mcp

``running_mcp_server(host)`` starts it over HTTP on a free port of ``host`` as a child process and stops it.

Tools: ``search(query, limit=3)`` (structured output), ``fetch(url)`` (text), ``echo_json(value)`` (a JSON
text block), ``fail(reason)`` (an error result), ``slow(seconds)`` (sleeps), ``whoami()`` (the environment
and the idempotency key it was given), ``broken`` (listed with an input schema that is not a JSON Schema),
``delete_everything()`` (a tool a policy should not grant). Each call is appended to ``--log`` as a JSON line
``{"tool", "arguments", "idempotencyKey"}`` (HTTP: the ``Idempotency-Key`` header; stdio: the environment).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer

HERE = Path(__file__).resolve()


def build(log: str | None) -> Any:
    class TestServer(MCPServer):  # type: ignore[type-arg]
        async def list_tools(self) -> Any:
            tools = await super().list_tools()
            for tool in tools:
                if tool.name == "broken":
                    tool.input_schema = {"type": "object", "properties": {"x": {"type": 12}}}
            return tools

    app = TestServer("agentflow-test-tools")

    def record(tool: str, arguments: dict[str, Any], ctx: Context | None) -> None:
        if not log:
            return
        key = os.environ.get("AGENTFLOW_IDEMPOTENCY_KEY")
        request = getattr(ctx.request_context, "request", None) if ctx is not None else None
        if request is not None and hasattr(request, "headers"):
            key = request.headers.get("idempotency-key", key)
        with open(log, "a", encoding="utf-8") as out:
            out.write(json.dumps({"tool": tool, "arguments": arguments, "idempotencyKey": key}) + "\n")

    @app.tool()
    def search(query: str, ctx: Context, limit: int = 3) -> list[str]:
        """Search the documents for a query; the titles of the best matches."""
        record("search", {"query": query, "limit": limit}, ctx)
        return [f"{query} result {i}" for i in range(1, limit + 1)]

    @app.tool(structured_output=False)
    def fetch(url: str, ctx: Context) -> str:
        """Fetch a document by its URL."""
        record("fetch", {"url": url}, ctx)
        return f"the text of {url}"

    @app.tool(structured_output=False)
    def echo_json(value: str, ctx: Context) -> str:
        """Answer with a JSON document as text."""
        record("echo_json", {"value": value}, ctx)
        return json.dumps({"echo": value, "length": len(value)})

    @app.tool()
    def fail(reason: str, ctx: Context) -> str:
        """Always fails."""
        record("fail", {"reason": reason}, ctx)
        raise ValueError(reason)

    @app.tool()
    async def slow(seconds: float, ctx: Context) -> str:
        """Sleeps, then answers."""
        record("slow", {"seconds": seconds}, ctx)
        await anyio.sleep(seconds)
        return "done"

    @app.tool()
    def whoami(ctx: Context) -> dict[str, Any]:
        """The environment variables this server was started with."""
        record("whoami", {}, ctx)
        return {"env": sorted(os.environ), "region": os.environ.get("REGION")}

    @app.tool()
    def broken(x: int) -> int:
        """Listed with a malformed input schema."""
        return x

    @app.tool()
    def delete_everything(ctx: Context) -> str:
        """Deletes everything (never grant this)."""
        record("delete_everything", {}, ctx)
        return "deleted"

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stdio", action="store_true")
    parser.add_argument("--http", metavar="HOST:PORT")
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    app = build(args.log)
    if args.http:
        host, _, port = args.http.rpartition(":")
        app.settings.log_level = "WARNING"
        app.run("streamable-http", host=host, port=int(port))
    else:
        app.run()


# ---- for tests ----------------------------------------------------------------------------------------------

@dataclass
class McpServer:
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


def stdio_command(log: Path | None = None) -> list[str]:
    """The command line of this server over stdio."""
    return [sys.executable, str(HERE), "--stdio", *(["--log", str(log)] if log else [])]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running_mcp_server(host: str, log: Path, *, timeout: float = 60) -> Iterator[McpServer]:
    """The server over streamable HTTP on a free port of ``host`` (http://HOST:PORT/mcp), stopped afterwards."""
    port = _free_port(host)
    proc = subprocess.Popen([sys.executable, str(HERE), "--http", f"{host}:{port}", "--log", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"the MCP test server exited ({proc.returncode}): {err[-2000:]}")
            try:
                with socket.create_connection((host, port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the MCP test server did not listen on {host}:{port}") from None
                time.sleep(0.1)
        yield McpServer(f"http://{host}:{port}/mcp", log, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


if __name__ == "__main__":
    main()

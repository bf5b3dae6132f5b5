"""MCP tool servers: discovery, calls and every way a server can go wrong, against a real MCP server written with
the SDK's server side (tests/services/mcp_server.py) over streamable HTTP on loopback and over stdio."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentflow.models import ToolSpec
from agentflow.tools import ToolError, ToolRunner
from agentflow.tools.mcp import Interpreter, McpClient, stdio_parameters
from services.mcp_server import HERE as TEST_SERVER
from services.mcp_server import McpServer, running_mcp_server, stdio_command


def mcp_tool(name: str = "docs", tools: list[str] | None = None, **server: Any) -> ToolSpec:
    spec: dict[str, Any] = {"name": name, "mcp": {"tools": tools or ["*"], **server}}
    if "env" in server:
        spec["permissions"] = {"env": spec["mcp"].pop("env")}
    return ToolSpec.model_validate(spec)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpServer]:
    with running_mcp_server("127.0.0.1", tmp_path_factory.mktemp("mcp") / "calls.jsonl") as running:
        yield running


@pytest.fixture
def client() -> McpClient:
    return McpClient()


def calls_of(server: McpServer, key: str) -> list[dict[str, Any]]:
    return [c for c in server.calls() if c["idempotencyKey"] == key]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class TestDiscovery:
    async def test_only_the_granted_tools_are_listed(self, server: McpServer, client: McpClient) -> None:
        listing = await client.list_tools(mcp_tool(url=server.url, tools=["search", "fetch", "gone"]))
        assert [t.name for t in listing.tools] == ["search", "fetch"]
        assert listing.missing == ("gone",)
        search = listing.tools[0]
        assert search.description.startswith("Search the documents")
        assert search.input_schema["required"] == ["query"]
        assert search.input_schema["properties"]["limit"]["type"] == "integer"

    async def test_star_grants_every_tool_and_a_malformed_schema_is_refused_with_why(
            self, server: McpServer, client: McpClient) -> None:
        listing = await client.list_tools(mcp_tool(url=server.url))
        names = [t.name for t in listing.tools]
        assert {"search", "fetch", "fail", "slow", "delete_everything"} <= set(names)
        assert "broken" not in names
        ((name, why),) = listing.refused
        assert name == "broken" and "not a valid JSON Schema" in why

    async def test_stdio_server_is_listed_the_same(self, client: McpClient) -> None:
        listing = await client.list_tools(mcp_tool(command=stdio_command(), tools=["search"]))
        assert [t.name for t in listing.tools] == ["search"]


class TestCalls:
    async def test_structured_text_and_json_text_results(self, server: McpServer, client: McpClient) -> None:
        spec = mcp_tool(url=server.url)
        found = await client.call(spec, "search", {"query": "refunds", "limit": 2}, idempotency_key="k-1", timeout=20)
        assert found == {"result": ["refunds result 1", "refunds result 2"]}
        assert await client.call(spec, "fetch", {"url": "doc://1"}, idempotency_key="k-2", timeout=20) == (
            "the text of doc://1")
        assert await client.call(spec, "echo_json", {"value": "hi"}, idempotency_key="k-3", timeout=20) == {
            "echo": "hi", "length": 2}

    async def test_the_idempotency_key_reaches_the_server(self, server: McpServer, client: McpClient) -> None:
        await client.call(mcp_tool(url=server.url), "fetch", {"url": "u"}, idempotency_key="run-9/a/1", timeout=20)
        assert calls_of(server, "run-9/a/1") == [
            {"tool": "fetch", "arguments": {"url": "u"}, "idempotencyKey": "run-9/a/1"}]

    async def test_stdio_server_gets_only_its_granted_environment(self, tmp_path: Path, client: McpClient) -> None:
        spec = mcp_tool(command=stdio_command(tmp_path / "calls.jsonl"), env={"REGION": "eu-west-1"})
        who = await client.call(spec, "whoami", {}, idempotency_key="run-1/s/2", timeout=30)
        assert who["region"] == "eu-west-1"
        assert "AGENTFLOW_IDEMPOTENCY_KEY" in who["env"]
        assert not {"KUBECONFIG", "AGENTFLOW_PII_KEY", "OPENAI_API_KEY", "PYTHONPATH"} & set(who["env"])
        assert set(who["env"]) <= {"AGENTFLOW_IDEMPOTENCY_KEY", "REGION", "HOME", "LOGNAME", "PATH", "SHELL", "TERM",
                                   "USER", "LC_CTYPE"}

    async def test_a_tool_that_is_not_granted_is_refused_before_anything_is_sent(
            self, server: McpServer, client: McpClient) -> None:
        spec = mcp_tool(url=server.url, tools=["search"])
        with pytest.raises(ToolError) as caught:
            await client.call(spec, "delete_everything", {}, idempotency_key="never-1", timeout=20)
        assert (caught.value.type, caught.value.retryable) == ("ToolNotAllowed", False)
        assert "'delete_everything'" in str(caught.value) and server.url in str(caught.value)
        assert calls_of(server, "never-1") == []


class TestBadServers:
    async def test_a_server_that_is_down(self, client: McpClient) -> None:
        url = f"http://127.0.0.1:{closed_port()}/mcp"
        with pytest.raises(ToolError) as caught:
            await client.call(mcp_tool(url=url), "search", {"query": "q"}, idempotency_key="k", timeout=10)
        assert (caught.value.type, caught.value.retryable) == ("McpUnavailable", True)
        assert "'docs/search'" in str(caught.value) and url in str(caught.value)

    async def test_a_slow_tool_times_out_and_nothing_hangs(self, server: McpServer, client: McpClient) -> None:
        with pytest.raises(ToolError) as caught:
            await client.call(mcp_tool(url=server.url), "slow", {"seconds": 60}, idempotency_key="k", timeout=1)
        assert (caught.value.type, caught.value.retryable) == ("ToolTimeout", True)
        assert "'docs/slow'" in str(caught.value) and "within 1s" in str(caught.value)

    async def test_a_stdio_server_that_never_answers_times_out(self, client: McpClient) -> None:
        spec = mcp_tool(command=["sleep", "600"], connectTimeoutSeconds=1)
        with pytest.raises(ToolError) as caught:
            await client.list_tools(spec)
        assert caught.value.type == "ToolTimeout" and "sleep 600" in str(caught.value)

    async def test_a_tool_error_is_not_retryable(self, server: McpServer, client: McpClient) -> None:
        with pytest.raises(ToolError) as caught:
            await client.call(mcp_tool(url=server.url), "fail", {"reason": "no"}, idempotency_key="k", timeout=20)
        assert (caught.value.type, caught.value.retryable) == ("McpToolError", False)
        assert "answered with an error" in str(caught.value)

    async def test_a_tool_the_server_does_not_have(self, server: McpServer, client: McpClient) -> None:
        with pytest.raises(ToolError) as caught:
            await client.call(mcp_tool(url=server.url), "nope", {}, idempotency_key="k", timeout=20)
        assert caught.value.type == "McpToolNotFound"
        assert "has no tool 'nope'" in str(caught.value) and "search" in str(caught.value)

    async def test_arguments_are_checked_against_the_listed_schema(self, server: McpServer, client: McpClient) -> None:
        with pytest.raises(ToolError) as caught:
            await client.call(mcp_tool(url=server.url), "search", {"limit": 1}, idempotency_key="bad-args",
                              timeout=20)
        assert caught.value.type == "InvalidToolInput" and "'query' is a required property" in str(caught.value)
        assert calls_of(server, "bad-args") == []

    async def test_a_tool_with_a_malformed_schema_is_refused(self, server: McpServer, client: McpClient) -> None:
        with pytest.raises(ToolError) as caught:
            await client.call(mcp_tool(url=server.url), "broken", {"x": 1}, idempotency_key="k", timeout=20)
        assert caught.value.type == "McpInvalidSchema" and "'broken'" in str(caught.value)

    async def test_a_missing_command(self, client: McpClient) -> None:
        with pytest.raises(ToolError) as caught:
            await client.list_tools(mcp_tool(command=["/nonexistent/mcp-server"]))
        assert (caught.value.type, caught.value.retryable) == ("McpCommandNotFound", False)

    async def test_a_stdio_server_that_dies_is_quoted(self, client: McpClient) -> None:
        spec = mcp_tool(command=[sys.executable, "-c", "import sys; sys.stderr.write('config missing'); sys.exit(3)"])
        with pytest.raises(ToolError) as caught:
            await client.list_tools(spec)
        assert caught.value.type == "McpUnavailable" and "config missing" in str(caught.value)

    async def test_a_url_that_is_not_an_mcp_server(self, client: McpClient) -> None:
        class NotMcp(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.send_response(404)
                self.end_headers()

            def do_GET(self) -> None:
                self.do_POST()

            def log_message(self, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), NotMcp)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{httpd.server_address[1]}/nothing"
            with pytest.raises(ToolError) as caught:
                await client.list_tools(mcp_tool(url=url))
        finally:
            httpd.shutdown()
            httpd.server_close()
        assert caught.value.type in ("McpProtocolError", "McpUnavailable")
        assert url in str(caught.value)


class TestPythonCommand:
    """A stdio command starting with ``python`` runs on the Python that runs AgentFlow, whatever PATH says (a step
    pod's PATH has the runtime image's python first; locally the user's PATH may name another one, or none)."""

    SOURCE = Interpreter("/opt/agentflow/bin/python", "/src/operator")

    def test_python_is_the_interpreter_and_its_agentflow_folder(self) -> None:
        spec = mcp_tool(command=["python", "-m", "some.server", "--flag"], env={"REGION": "eu"})
        params = stdio_parameters(spec.mcp, {"REGION": "eu"}, self.SOURCE)  # type: ignore[arg-type]
        assert (params.command, params.args) == ("/opt/agentflow/bin/python", ["-m", "some.server", "--flag"])
        assert params.env == {"PYTHONPATH": "/src/operator", "REGION": "eu"}

    def test_an_installed_agentflow_needs_no_pythonpath_and_the_policys_wins(self) -> None:
        spec = mcp_tool(command=["python", "-m", "some.server"])
        installed = stdio_parameters(spec.mcp, {}, Interpreter("/venv/bin/python"))  # type: ignore[arg-type]
        assert (installed.command, installed.env) == ("/venv/bin/python", {})
        own = stdio_parameters(spec.mcp, {"PYTHONPATH": "/mine"}, self.SOURCE)  # type: ignore[arg-type]
        assert own.env == {"PYTHONPATH": "/mine"}

    @pytest.mark.parametrize("command", [["python3", "-m", "x"], ["/usr/bin/python", "x.py"], ["node", "python"]])
    def test_other_commands_are_looked_up_as_they_are(self, command: list[str]) -> None:
        params = stdio_parameters(mcp_tool(command=command).mcp, {}, self.SOURCE)  # type: ignore[arg-type]
        assert [params.command, *params.args] == command and params.env == {}

    def test_the_current_interpreter_is_this_process_and_its_source_folder(self) -> None:
        import agentflow

        here = Interpreter.current()
        # The tests run agentflow from the repository's operator/ (PYTHONPATH or an editable install), which is
        # not a site-packages folder: the server is told where it is.
        assert here == Interpreter(sys.executable, str(Path(agentflow.__file__).resolve().parents[1]))

    async def test_python_starts_without_python_on_path_from_any_folder(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        client = McpClient()
        monkeypatch.chdir(tmp_path)
        spec = mcp_tool(command=["python", str(TEST_SERVER), "--stdio"], tools=["fetch"], env={"PATH": "/nonexistent"})
        assert await client.call(spec, "fetch", {"url": "u"}, idempotency_key="k", timeout=30) == "the text of u"
        with pytest.raises(ToolError) as caught:  # the same PATH without the word: nothing to start
            await client.list_tools(mcp_tool(command=["python3", str(TEST_SERVER), "--stdio"],
                                             env={"PATH": "/nonexistent"}))
        assert caught.value.type == "McpCommandNotFound" and "python for the Python" in str(caught.value)


class TestToolRunner:
    async def test_the_runner_calls_the_named_tool_of_the_server(self, server: McpServer) -> None:
        runner = ToolRunner()
        spec = ToolSpec.model_validate({"name": "docs", "mcp": {"url": server.url, "tools": ["fetch"]},
                                        "costPerCallUsd": 0.01})
        outcome = await runner.call(spec, {"url": "x"},
                                    idempotency_key="r-1", deadline=None, member="fetch")
        assert outcome.output == "the text of x" and outcome.cost_usd == 0.01

    async def test_the_runner_refuses_a_server_without_a_tool_name(self, server: McpServer) -> None:
        with pytest.raises(ToolError) as caught:
            await ToolRunner().call(mcp_tool(url=server.url), {}, idempotency_key="r-2", deadline=None)
        assert caught.value.type == "InvalidToolReference"


class TestHostileServers:
    async def test_a_server_flooding_stderr_costs_no_disk_or_memory_and_its_tail_is_said(
            self, tmp_path: Path) -> None:
        flood = tmp_path / "flood.py"  # not MCP at all: writes ~200 MB to stderr, then exits
        flood.write_text("import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(200_000):\n"
                         "    sys.stderr.write(line)\nsys.stderr.write('the last words\\n')\n")
        with pytest.raises(ToolError) as caught:
            await McpClient().list_tools(mcp_tool(command=[sys.executable, str(flood)]), timeout=60)
        message = str(caught.value)
        assert caught.value.type in ("McpUnavailable", "McpProtocolError"), message
        assert "the last words" in message and len(message) < 2000

    @pytest.mark.parametrize(("code", "message", "kind", "retryable"), [
        (-32000, "Connection closed", "McpUnavailable", True),
        (-32001, "Timed out", "ToolTimeout", True),
        (-32603, "Server returned an error response", "McpUnavailable", True),  # the SDK's word for HTTP 5xx
        (-32700, "Parse error", "McpProtocolError", False),
        (-32603, "the tool crashed", "McpToolError", False),  # the server's own answer
        (-32602, "x" * 3_000_000, "McpToolError", False),
    ])
    def test_a_calls_error_is_told_apart_by_who_said_it(self, code: int, message: str, kind: str,
                                                        retryable: bool) -> None:
        from mcp import MCPError

        from agentflow.tools.mcp import _call_error

        error = _call_error(MCPError(code, message), mcp_tool(url="http://127.0.0.1:1/mcp").mcp,  # type: ignore[arg-type]
                            "docs/search", "calling 'search'")
        assert (error.type, error.retryable) == (kind, retryable) and len(str(error)) < 1500

    async def test_a_result_past_the_output_bound_is_refused(self, server: McpServer, client: McpClient) -> None:
        spec = mcp_tool(url=server.url, tools=["search"])
        with pytest.raises(ToolError) as caught:  # 120,000 results of ~100 characters: a small call, a 12 MB answer
            await client.call(spec, "search", {"query": "q" * 80, "limit": 120_000}, idempotency_key="k",
                              timeout=120)
        assert caught.value.type == "InvalidToolOutput" and "more than a tool's output may be" in str(caught.value)

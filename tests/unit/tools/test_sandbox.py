"""Container tools in the local runner: isolated by bubblewrap (no user files, no network unless granted), or
plainly run with a warning. The isolation tests run real bwrap: installed by tests/services/bwrap.py when
missing (as root: CI), skipped elsewhere without it, never in CI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow.models import ToolSpec
from agentflow.tools import ToolError, ToolRunner
from agentflow.tools.sandbox import ContainerSandbox, SandboxUnavailable, choose_sandbox
from services.bwrap import BwrapUnavailable, ensure_bwrap

PROBE = textwrap.dedent("""
    import json, os, socket, sys
    asked = json.load(sys.stdin)
    out = {"uid": os.getuid(), "cwd": os.getcwd()}
    try:
        out["read"] = open(asked["file"]).read()
    except OSError as exc:
        out["read"] = type(exc).__name__
    try:
        socket.create_connection(("127.0.0.1", asked["port"]), timeout=2).close()
        out["net"] = "connected"
    except OSError as exc:
        out["net"] = type(exc).__name__
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def bwrap() -> str:
    try:
        path = ensure_bwrap()
    except BwrapUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    sandbox = choose_sandbox({"AGENTFLOW_CONTAINER_ISOLATION": "auto"})
    if sandbox.bwrap is None:
        message = f"bwrap is installed but cannot isolate here: {sandbox.why_not}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on the host's loopback, accepting."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


def python3() -> str:
    found = shutil.which("python3", path="/usr/bin:/bin")
    if found is None:
        pytest.skip("no system python3 under /usr/bin to run the probe with")
    return found


def tool(**permissions: Any) -> ToolSpec:
    return ToolSpec.model_validate({"name": "probe", "container": {"image": "unused", "command": [python3(), "-c",
                                                                                                  PROBE]},
                                    "permissions": permissions, "timeoutSeconds": 20})


async def call(runner: ToolRunner, spec: ToolSpec, file: Path, port: int) -> dict[str, Any]:
    outcome = await runner.call(spec, {"file": str(file), "port": port}, idempotency_key="run/probe/1", deadline=None)
    assert isinstance(outcome.output, dict)
    return outcome.output


async def test_isolated_a_tool_cannot_read_the_users_files_nor_reach_the_network(
        bwrap: str, tmp_path: Path, listener: int) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's secret")
    plain = await call(ToolRunner(), tool(), secret, listener)
    assert plain["read"] == "the user's secret" and plain["net"] == "connected"  # what isolation takes away
    isolated = ToolRunner(container_sandbox=ContainerSandbox(bwrap))
    out = await call(isolated, tool(), secret, listener)
    assert out["read"] == "FileNotFoundError" and out["net"] != "connected"
    assert out["uid"] == 65534 and out["cwd"] == "/tmp"
    shadow = await call(isolated, tool(), Path("/etc/shadow"), listener)
    assert shadow["read"] == "FileNotFoundError"


async def test_isolated_a_tool_gets_exactly_its_grants(bwrap: str, tmp_path: Path, listener: int) -> None:
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "data.txt").write_text("shared on purpose")
    isolated = ToolRunner(container_sandbox=ContainerSandbox(bwrap))
    out = await call(isolated, tool(readPaths=[str(granted)], egressHosts=["127.0.0.1"]), granted / "data.txt",
                     listener)
    assert out["read"] == "shared on purpose" and out["net"] == "connected"
    with pytest.raises(ToolError) as failed:  # read-only: it cannot change what it was shown
        writer = ToolSpec.model_validate({"name": "w", "container": {"image": "-", "command": [
            python3(), "-c", f"open({str(granted / 'data.txt')!r}, 'w').write('x')"]},
            "permissions": {"readPaths": [str(granted)]}})
        await isolated.call(writer, {}, idempotency_key="k", deadline=None)
    assert failed.value.type == "ToolProcessFailed" and "Read-only file system" in failed.value.message
    assert (granted / "data.txt").read_text() == "shared on purpose"


def test_auto_takes_bwrap_when_it_works_and_says_why_not_otherwise() -> None:
    assert choose_sandbox({}, which=lambda _: "/usr/bin/bwrap", probe=lambda _: None).bwrap == "/usr/bin/bwrap"
    missing = choose_sandbox({}, which=lambda _: None)
    assert missing.bwrap is None and "not installed" in missing.why_not
    broken = choose_sandbox({"AGENTFLOW_CONTAINER_ISOLATION": "auto"}, which=lambda _: "/usr/bin/bwrap",
                            probe=lambda _: "user namespaces are disabled")
    assert broken.bwrap is None and broken.why_not == "user namespaces are disabled"
    off = choose_sandbox({"AGENTFLOW_CONTAINER_ISOLATION": "off"}, which=lambda _: "/usr/bin/bwrap")
    assert off.bwrap is None


def test_required_isolation_refuses_without_bwrap_and_bad_modes_are_named() -> None:
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        choose_sandbox({"AGENTFLOW_CONTAINER_ISOLATION": "bwrap"}, which=lambda _: None)
    with pytest.raises(ValueError, match="AGENTFLOW_CONTAINER_ISOLATION='docker': expected one of auto, bwrap, off"):
        choose_sandbox({"AGENTFLOW_CONTAINER_ISOLATION": "docker"})


def test_the_warning_names_the_tools_the_user_and_the_fix() -> None:
    spec = tool()
    text = ContainerSandbox(None, "bubblewrap (bwrap) is not installed").warning([spec], "root (uid 0)")
    assert text is not None
    assert "probe" in text and "root (uid 0)" in text and "apt-get install bubblewrap" in text
    assert ContainerSandbox("/usr/bin/bwrap").warning([spec], "root") is None
    assert ContainerSandbox(None).warning([], "root") is None
    net = ContainerSandbox("/usr/bin/bwrap").warning([tool(egressHosts=["api.example.com"])], "root")
    assert net is not None and "whole network" in net


RUN = """
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: boxed}
spec:
  steps:
  - {name: probe, kind: tool, tool: count}
---
apiVersion: agentflow.dev/v1alpha1
kind: ToolPolicy
metadata: {name: tools}
spec:
  tools:
  - name: count
    container: {image: unused, command: [PYTHON, -c, "import json,sys; print(json.dumps(len(sys.stdin.read())))"]}
"""


def test_a_run_with_an_unisolated_container_tool_says_so_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from agentflow.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "boxed.yaml").write_text(RUN.replace("PYTHON", python3()))
    code = main(["run", "boxed.yaml", "--container-isolation", "off", "--json"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert code == 0, captured
    assert captured.err.count("container tools (count) run as plain subprocesses") == 1
    [warning] = result["warnings"]
    assert "as user" in warning and "AGENTFLOW_CONTAINER_ISOLATION=off" in warning
    meta = json.loads((tmp_path / ".agentflow" / "runs" / result["runId"] / "meta.json").read_text())
    assert meta["warnings"] == [warning]

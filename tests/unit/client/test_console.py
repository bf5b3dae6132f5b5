"""The application client through the console's HTTP API: a cluster console (acting with each caller's token
against the shipped FakeKube, RBAC as RbacKube grants it) on a real port, and the client speaking HTTP to it.
A run of a template starts with its inputs checked, follows the status the operator writes, and errors are the
cluster client's kinds: the template missing, an input refused (named), RBAC, a run that does not exist."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from agentflow.client import (
    AsyncConsoleClient,
    ClientError,
    ConsoleClient,
    InputError,
    RunExists,
    RunFailed,
    RunNotFound,
    RunRefused,
    TemplateNotFound,
)
from agentflow.console.app import Settings, build_app
from agentflow.console.cluster import ClusterRunSource
from agentflow.console.local import LocalRunSource
from agentflow.k8s.kube import ApiServer
from agentflow.testing import FakeKube, RbacKube

from .test_cluster import NS, TEMPLATE

RUNNER = {("get", "workflowtemplates"), ("get", "workflows"), ("create", "workflows"), ("patch", "workflows")}
USERS = {
    "runner-token": ("system:serviceaccount:team:app", RUNNER),
    "viewer-token": ("system:serviceaccount:team:viewer", {("get", "workflowtemplates"), ("get", "workflows")}),
}


def source(kube: FakeKube) -> ClusterRunSource:
    def connect(token: str) -> RbacKube:
        user, grants = USERS.get(token, ("system:anonymous", set()))
        return RbacKube(kube, user, grants)

    return ClusterRunSource(ApiServer("https://127.0.0.1:6443"), connect=connect)


@pytest.fixture
async def console() -> AsyncIterator[tuple[str, FakeKube]]:
    kube = FakeKube(TEMPLATE)
    server = TestServer(build_app(source(kube), Settings(mode="cluster")))
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), kube
    finally:
        await server.close()


def finish(kube: FakeKube, name: str, phase: str = "Succeeded", **status: Any) -> None:
    """What the operator writes at the end of a run."""
    kube.resources[("workflows", NS, name)]["status"] = {
        "phase": phase, "costUsd": 0.5, "tokens": 42,
        "nodes": {"draft": {"phase": "Succeeded"}, "publish": {"phase": phase}}, **status}


async def test_a_run_of_a_template_starts_as_the_caller_and_is_followed_to_its_outputs(console: Any) -> None:
    url, kube = console
    async with AsyncConsoleClient(url, "runner-token", NS, poll_seconds=0.05) as client:
        handle = await client.start("digest", {"topic": "upgrades"}, labels={"app": "chat"})
        body = kube.resources[("workflows", NS, handle.name)]
        assert body["spec"] == {"workflowTemplateRef": {"name": "digest"}, "inputs": {"topic": "upgrades"}}
        assert body["metadata"]["labels"] == {"app": "chat"} and handle.name.startswith("digest-")
        first = await handle.result()
        assert first.phase == "Pending" and not first.finished
        waiting = asyncio.ensure_future(handle.wait(timeout=30))
        await asyncio.sleep(0.2)
        finish(kube, handle.name, outputs={"digest": "upgrades, weekly"})
        result = await waiting
        assert result.outputs == {"digest": "upgrades, weekly"} and result.cost_usd == 0.5 and result.tokens == 42
        assert dict(result.steps)["publish"].phase == "Succeeded"
        again = await client.get(handle.name)
        assert (await again.outputs()) == {"digest": "upgrades, weekly"}
        named = await client.start("digest", {"topic": "named"}, name="my-digest")
        assert named.name == "my-digest"
        with pytest.raises(RunExists, match="exists already") as taken:  # 409 naming the name
            await client.start("digest", {"topic": "named"}, name="my-digest")
        assert taken.value.name == "my-digest"


async def test_errors_are_the_cluster_clients(console: Any) -> None:
    url, kube = console
    async with AsyncConsoleClient(url, "runner-token", NS) as client:
        with pytest.raises(InputError) as bad:
            await client.start("digest", {"topic": "x"})
        assert bad.value.field == "topic" and "inputs.topic" in str(bad.value)
        with pytest.raises(InputError) as extra:
            await client.start("digest", {"topic": "fine", "other": 1})
        assert "other" in str(extra.value)
        with pytest.raises(TemplateNotFound) as missing:
            await client.start("nope")
        assert missing.value.template == "nope" and missing.value.kind == "WorkflowTemplate"
        with pytest.raises(RunNotFound):
            await client.get("no-such-run")
        with pytest.raises(ValueError, match="kind"):
            await client.start("digest", kind="Template")  # type: ignore[arg-type]
        handle = await client.start("digest", {"topic": "failing"})
        finish(kube, handle.name, "Failed", message="publish failed: 500",
               nodes={"draft": {"phase": "Succeeded"}, "publish": {"phase": "Failed", "message": "HTTP 500"}})
        with pytest.raises(RunFailed) as failed:
            await handle.wait(timeout=10)
        assert failed.value.step == "publish" and failed.value.message == "HTTP 500"
    assert [k for k in kube.resources if k[0] == "workflows"] == [("workflows", NS, handle.name)]


async def test_a_namespace_that_is_not_one_is_refused_naming_it(console: Any) -> None:
    url, kube = console
    for namespace in ("Team", "team/../kube-system", "a" * 64, "-team"):
        async with AsyncConsoleClient(url, "runner-token", namespace) as client:
            with pytest.raises(ClientError, match=r"\(400\): namespace: "):
                await client.start("digest", {"topic": "upgrades"})
    assert not [k for k in kube.resources if k[0] == "workflows"]


async def test_rbac_decides_what_a_token_may_do(console: Any) -> None:
    url, kube = console
    async with AsyncConsoleClient(url, "viewer-token", NS) as viewer:
        with pytest.raises(RunRefused, match="cannot create"):
            await viewer.start("digest", {"topic": "upgrades"})
    async with AsyncConsoleClient(url, "stolen-token", NS) as nobody:
        with pytest.raises(RunRefused, match="forbidden"):
            await nobody.start("digest", {"topic": "upgrades"})
        with pytest.raises(ClientError):
            await nobody.get("anything")
    assert not [k for k in kube.resources if k[0] == "workflows"]


async def test_cancel_goes_through_the_console(console: Any) -> None:
    url, kube = console
    async with AsyncConsoleClient(url, "runner-token", NS) as client:
        handle = await client.start("digest", {"topic": "upgrades"})
        await handle.cancel("not needed")
    assert kube.resources[("workflows", NS, handle.name)]["spec"]["cancel"] is True


def test_the_blocking_client(tmp_path: Path) -> None:
    kube = FakeKube(TEMPLATE)
    ready, stop = threading.Event(), threading.Event()
    where: list[str] = []

    def serve() -> None:  # the console in a thread of its own, as a real one would be elsewhere
        async def main() -> None:
            server = TestServer(build_app(source(kube), Settings(mode="cluster")))
            await server.start_server()
            where.append(str(server.make_url("")).rstrip("/"))
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)
            await server.close()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        with ConsoleClient(where[0], "runner-token", NS, poll_seconds=0.05) as client:
            handle = client.start("digest", {"topic": "upgrades"})
            finish(kube, handle.name, outputs={"digest": "done"})
            assert handle.outputs(timeout=10) == {"digest": "done"}
    finally:
        stop.set()
        thread.join(10)


async def test_a_local_console_says_where_templates_start(tmp_path: Path) -> None:
    server = TestServer(build_app(LocalRunSource(tmp_path / "state"), Settings(mode="local", user="alice",
                                                                               static=tmp_path)))
    await server.start_server()
    try:
        async with AsyncConsoleClient(str(server.make_url("")).rstrip("/"), "t", NS) as client:
            with pytest.raises(ClientError, match=r"X-AgentFlow-Token|manifests"):
                await client.start("digest", {"topic": "upgrades"})
    finally:
        await server.close()


def test_arguments_are_checked() -> None:
    for args, message in [(("ftp://x", "t", NS), "url"), (("http://x", "", NS), "token"),
                          (("http://x", "a\nb", NS), "token"), (("http://x", "t", ""), "namespace")]:
        with pytest.raises(ValueError, match=message):
            AsyncConsoleClient(*args)


"""The console's HTTP API over local runs: reads, live updates, actions as the CLI records them, the guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agentflow.console.api import ROUTES, openapi
from agentflow.console.app import Settings, build_app
from agentflow.console.local import LocalRunSource
from agentflow.engine.values import EventType

from ..runner.test_subworkflow_runs import MANIFESTS  # its ToolPolicy and the template "leaf"
from .conftest import APPROVALS, drive, start


@pytest.fixture
async def client(state: Path) -> AsyncIterator[tuple[TestClient[Any, Any], Settings]]:
    settings = Settings(mode="local", user="alice", static=state / "no-page")
    async with TestClient(TestServer(build_app(LocalRunSource(state), settings))) as c:
        yield c, settings


def _mutating(settings: Settings) -> dict[str, str]:
    return {"X-AgentFlow-Token": settings.token}


async def test_runs_are_listed_with_phase_progress_cost_and_filters(client: Any, state: Path) -> None:
    c, _ = client
    run_dir = await asyncio.to_thread(start, state, APPROVALS)
    rows = await (await c.get("/api/runs")).json()
    (row,) = rows
    assert row["runId"] == run_dir.run_id and row["phase"] == "Waiting"  # as a Workflow's status.phase says
    assert row["progress"] == {"done": 0, "total": 4} and row["waiting"] == ["ask"] and row["waitingCount"] == 1
    assert row["labels"] == {"team": "support"} and row["namespace"] == "default"
    assert await (await c.get("/api/runs?label=team=support")).json() == rows
    assert await (await c.get("/api/runs?label=team=billing")).json() == []
    assert await (await c.get("/api/runs?phase=Succeeded")).json() == []
    assert await (await c.get("/api/runs?phase=Running")).json() == []
    assert await (await c.get("/api/runs?phase=Waiting")).json() == rows
    assert await (await c.get("/api/runs?namespace=default")).json() == rows


async def test_a_run_page_gets_the_whole_graph_and_node_details(client: Any, state: Path) -> None:
    c, _ = client
    run_dir = await asyncio.to_thread(start, state, APPROVALS)
    g = await (await c.get(f"/api/runs/{run_dir.run_id}")).json()
    assert [n["id"] for n in g["nodes"]] == ["ask", "each", "done", "cleanup"]
    assert g["seq"] >= 1
    node = await (await c.get(f"/api/runs/{run_dir.run_id}/nodes/ask")).json()
    assert node["phase"] == "Waiting" and node["approval"]["approvers"] == ["alice"]
    assert [e["type"] for e in node["events"]] == ["ApprovalRequested"]
    missing = await c.get(f"/api/runs/{run_dir.run_id}/nodes/nope")
    assert missing.status == 404 and "no node 'nope'" in (await missing.json())["error"]
    unknown = await c.get("/api/runs/no-such-run")
    assert unknown.status == 404 and "agentflow runs" in (await unknown.json())["error"]


async def test_an_approval_from_the_api_is_recorded_as_the_cli_records_it(client: Any, state: Path) -> None:
    c, settings = client
    run_dir = await asyncio.to_thread(start, state, APPROVALS)
    url = f"/api/runs/{run_dir.run_id}/nodes/ask/decision"
    refused = await c.post(url, json={"approved": True, "reason": "ok"})
    assert refused.status == 403 and "X-AgentFlow-Token" in (await refused.json())["error"]
    bad = await c.post(url, json={"approved": "yes"}, headers=_mutating(settings))
    assert bad.status == 400 and "approved" in (await bad.json())["error"]
    ok = await c.post(url, json={"approved": True, "reason": "looks fine"}, headers=_mutating(settings))
    assert ok.status == 200, await ok.text()
    assert (await ok.json())["by"] == "alice"
    await drive(run_dir)
    decided = [r.event for r in run_dir.read_records() if r.event.type is EventType.approval_decided]
    assert [dict(e.data) for e in decided] == [{"approved": True, "by": "alice", "reason": "looks fine"}]
    again = await c.post(url, json={"approved": True}, headers=_mutating(settings))
    assert again.status == 409 and "not waiting" in (await again.json())["error"]


async def test_the_live_stream_sends_only_the_nodes_that_changed(client: Any, state: Path) -> None:
    c, settings = client
    run_dir = await asyncio.to_thread(start, state, APPROVALS)
    g = await (await c.get(f"/api/runs/{run_dir.run_id}")).json()
    response = await c.get(f"/api/runs/{run_dir.run_id}/events?after={g['seq']}")
    assert response.headers["Content-Type"] == "text/event-stream"
    await c.post(f"/api/runs/{run_dir.run_id}/nodes/ask/decision", json={"approved": True},
                 headers=_mutating(settings))
    await drive(run_dir)  # another process would do this: the journal grows
    block = b""
    while b"\n\n" not in block:
        block += await asyncio.wait_for(response.content.readline(), 10)
    lines = dict(line.split(": ", 1) for line in block.decode().strip().split("\n"))
    assert lines["event"] == "update"
    update = orjson.loads(lines["data"])
    assert update["seq"] > g["seq"] and int(lines["id"]) == update["seq"]
    assert update["nodes"]["ask"]["phase"] == "Succeeded"
    assert update["nodes"]["each"]["counts"] == {"Waiting": 3}
    assert "done" not in update["nodes"], "unchanged nodes are not sent again"
    response.close()


async def test_watch_rejects_a_seq_from_the_future(client: Any, state: Path) -> None:
    c, _ = client
    run_dir = await asyncio.to_thread(start, state, APPROVALS)
    r = await c.get(f"/api/runs/{run_dir.run_id}/events?after=999")
    assert r.status == 400 and "ends at record" in (await r.json())["error"]
    r = await c.get(f"/api/runs/{run_dir.run_id}/events?after=x")
    assert r.status == 400


async def test_cancel_and_replay_and_diff(client: Any, state: Path) -> None:
    c, settings = client
    a = await asyncio.to_thread(start, state, APPROVALS, "a.yaml")
    b = await asyncio.to_thread(start, state, APPROVALS, "b.yaml")
    r = await c.post(f"/api/runs/{a.run_id}/cancel", json={"reason": "enough"}, headers=_mutating(settings))
    assert r.status == 200
    await drive(a)
    run = (await (await c.get(f"/api/runs/{a.run_id}")).json())["run"]
    assert run["reason"] == "cancelled by alice: enough" and run["waiting"] == ["cleanup"], "exit handlers still run"
    r = await c.post(f"/api/runs/{a.run_id}/nodes/cleanup/decision", json={"approved": True},
                     headers=_mutating(settings))
    assert r.status == 200
    await drive(a)
    assert (await (await c.get(f"/api/runs/{a.run_id}")).json())["run"]["phase"] == "Cancelled"
    replay = await (await c.post(f"/api/runs/{a.run_id}/replay", headers=_mutating(settings))).json()
    assert replay["samePathAndOutputs"] is True
    d = await (await c.get(f"/api/diff?a={a.run_id}&b={b.run_id}")).json()
    assert d["phase"] == ["Cancelled", None]
    assert (await c.get("/api/diff?a=x")).status == 400
    retry = await c.post(f"/api/runs/{a.run_id}/retry", headers=_mutating(settings))
    assert retry.status == 409 and "only a Failed run" in (await retry.json())["error"]


async def test_a_foreign_origin_or_host_is_refused(client: Any, state: Path) -> None:
    c, settings = client
    run_dir = await asyncio.to_thread(start, state, APPROVALS)
    r = await c.post(f"/api/runs/{run_dir.run_id}/cancel",
                     headers={**_mutating(settings), "Origin": "http://evil.example"})
    assert r.status == 403 and "Origin" in (await r.json())["error"]
    r = await c.get("/api/runs", headers={"Host": "evil.example:8765"})
    assert r.status == 403 and "not this machine" in (await r.json())["error"]


async def test_validate_parse_and_export(client: Any) -> None:
    c, _ = client
    r = await (await c.post("/api/validate", json={"yaml": APPROVALS})).json()
    assert r == {"ok": True, "resources": ["Workflow/approvals"], "problems": []}
    parsed = await (await c.post("/api/manifests/parse", json={"yaml": APPROVALS})).json()
    exported = await (await c.post("/api/manifests/export", json={"documents": parsed["documents"]})).json()
    assert exported["ok"] and (await (await c.post("/api/manifests/parse", json={"yaml": exported["yaml"]})).json())[
        "documents"] == parsed["documents"]
    bad = await c.post("/api/manifests/export", json={"documents": "x"})
    assert bad.status == 400 and "documents" in (await bad.json())["error"]
    notjson = await c.post("/api/validate", data=b"{", headers={"Content-Type": "application/json"})
    assert notjson.status == 400 and "not JSON" in (await notjson.json())["error"]


async def test_start_runs_manifests_like_agentflow_run(client: Any, state: Path) -> None:
    c, settings = client
    bad = await c.post("/api/runs", json={"yaml": "kind: Nope\n"}, headers=_mutating(settings))
    assert bad.status == 400 and "apiVersion" in (await bad.json())["error"]
    r = await c.post("/api/runs", json={"yaml": APPROVALS}, headers=_mutating(settings))
    assert r.status == 200, await r.text()
    run_id = (await r.json())["run"]
    for _ in range(200):
        g = await (await c.get(f"/api/runs/{run_id}")).json()
        if g["run"]["waiting"]:
            break
        await asyncio.sleep(0.05)
    assert g["run"]["waiting"] == ["ask"]
    assert (state / "designer").is_dir()


async def test_starts_in_one_second_keep_their_own_sources_and_a_refused_one_removes_only_its_own(
        client: Any, state: Path) -> None:
    c, settings = client
    answers = await asyncio.gather(*(c.post("/api/runs", json={"yaml": APPROVALS}, headers=_mutating(settings))
                                     for _ in range(3)))
    files = [(await a.json())["file"] for a in answers]
    assert all(a.status == 200 for a in answers) and len(set(files)) == 3
    bad = await c.post("/api/runs", json={"yaml": APPROVALS.replace("approvals", "Not A Name", 1)},
                       headers=_mutating(settings))
    assert bad.status == 400
    assert sorted(str(f) for f in (state / "designer").iterdir()) == sorted(files)  # the refused one left nothing
    assert all(Path(f).read_text(encoding="utf-8") == APPROVALS for f in files)


async def test_hostile_headers_queries_and_nesting_are_4xx_naming_them(client: Any, state: Path) -> None:
    c, settings = client
    run_dir = await asyncio.to_thread(start, state, APPROVALS)
    url = f"/api/runs/{run_dir.run_id}/cancel"
    for token in ("\u00e9", "t\u00f6ken", settings.token + "\u00e9"):  # not ASCII: refused, not a 500
        r = await c.post(url, json={"reason": "x"}, headers={"X-AgentFlow-Token": token})
        assert r.status == 403 and "X-AgentFlow-Token" in (await r.json())["error"]
    r = await c.get(f"/api/runs/{run_dir.run_id}/events?after=\u0663")  # an Arabic-Indic three
    assert r.status == 400 and "after=" in (await r.json())["error"]
    deep: Any = "leaf"
    for _ in range(150):
        deep = [deep]
    r = await c.post("/api/manifests/export", json={"documents": [{"kind": "Workflow", "spec": {"a": deep}}]})
    error = (await r.json())["error"]
    assert r.status == 400 and error.startswith("documents[0].spec.a[0]") and "deeper than 100 levels" in error
    huge = await c.post("/api/validate", data=b"{" + b" " * (3 << 20) + b"}",
                        headers={"Content-Type": "application/json"})
    assert huge.status == 413 and "bytes" in (await huge.json())["error"]


async def test_every_route_is_documented_and_every_documented_route_exists(client: Any) -> None:
    c, _ = client
    doc = await (await c.get("/api/openapi.json")).json()
    assert doc == orjson.loads(orjson.dumps(openapi(doc["info"]["version"])))
    app_routes = {(r.method, r.resource.canonical) for r in c.app.router.routes()  # type: ignore[union-attr]
                  if r.resource is not None and r.resource.canonical.startswith("/api/")}
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert app_routes == documented
    assert all(route.summary for route in ROUTES)


async def test_the_page_says_how_to_build_it_when_it_is_missing(client: Any) -> None:
    c, _ = client
    r = await c.get("/")
    assert r.status == 503 and "make console" in await r.text()


async def test_the_built_page_carries_the_token(state: Path) -> None:
    settings = Settings(mode="local")
    if not (settings.static / "index.html").is_file():
        pytest.fail("the console page is not built: run `make console` (operator/agentflow/console/static)")
    async with TestClient(TestServer(build_app(LocalRunSource(state), settings))) as c:
        text = await (await c.get("/")).text()
        assert f'<meta name="agentflow-token" content="{settings.token}">' in text
        assert (await c.get("/assets/console.js")).status == 200


CHILDREN = "---\n".join(MANIFESTS.split("---\n")[:2]) + """---
apiVersion: agentflow.dev/v1alpha1
kind: Workflow
metadata: {name: parent}
spec:
  inputs: {topics: [a, b]}
  steps:
  - {name: one, kind: workflow, workflowTemplateRef: {name: leaf}, inputs: {topic: solo}}
  - {name: each, kind: workflow, workflowTemplateRef: {name: leaf}, forEach: inputs.topics,
     inputs: {topic: "${{ item }}"}}
"""


async def test_a_workflow_step_links_to_its_child_run_which_the_console_serves(client: Any, state: Path) -> None:
    from agentflow.runner import session
    from agentflow.runner.store import RunStore
    from agentflow.runner.subworkflows import child_run_id

    c, _ = client
    path = state.parent / "children.yaml"
    path.write_text(CHILDREN)
    bundle = session.load_bundle([path])
    run_dir = session.create_run(RunStore(state), bundle, [path])  # as `agentflow run`: children in the state dir
    await session.drive(run_dir, bundle, session.make_executor(bundle, "inprocess", state_dir=state))
    one = await (await c.get(f"/api/runs/{run_dir.run_id}/nodes/one")).json()
    assert one["phase"] == "Succeeded" and one["childRun"] == child_run_id(run_dir.run_id, "one", 1)
    got = await c.get(f"/api/runs/{one['childRun']}")
    child = await got.json()
    assert got.status == 200, child
    assert child["run"]["phase"] == "Succeeded" and [n["id"] for n in child["nodes"]] == ["say"]
    each = await (await c.get(f"/api/runs/{run_dir.run_id}/nodes/each")).json()
    assert [i["childRun"] for i in each["items"]] == [child_run_id(run_dir.run_id, f"each[{i}]", 1) for i in (0, 1)]
    item = await (await c.get(f"/api/runs/{run_dir.run_id}/nodes/each%5B1%5D")).json()
    assert item["childRun"] == each["items"][1]["childRun"]
    assert (await c.get(f"/api/runs/{item['childRun']}")).status == 200
    [call] = item["attempts"][0]["calls"]
    assert call["kind"] == "workflow"


async def test_a_local_runs_result_is_what_the_application_client_reads(client: Any, state: Path) -> None:
    from agentflow.client.runs import RunResult

    c, settings = client
    run_dir = await asyncio.to_thread(start, state, APPROVALS)
    got = await c.get(f"/api/runs/{run_dir.run_id}/result")
    result = RunResult.from_dict(await got.json())
    assert got.status == 200 and result.run == run_dir.run_id and result.phase == "Waiting"
    assert result.steps["ask"].phase == "Waiting" and not result.finished
    refused = await c.post("/api/template-runs", json={"template": "digest"}, headers=_mutating(settings))
    assert refused.status == 409 and "POST /api/runs" in (await refused.json())["error"]
    bad = await c.post("/api/template-runs", json={"template": "digest", "inputs": [1]}, headers=_mutating(settings))
    assert bad.status == 400 and "inputs" in (await bad.json())["error"]

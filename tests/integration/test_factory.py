"""The factory wires the operator's and the standalone gateway's clients once, on one PostgreSQL pool."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from agentflow.engine.values import StepRequest
from agentflow.executors.payload import attempt_payload
from agentflow.factory import Factory, GatewaySettings
from agentflow.models import Budget
from agentflow.security.tokens import AttemptClaims, issue_token, new_key
from agentflow.storage.database import SCHEMAS, Database

pytestmark = pytest.mark.integration

QUICKSTART = Path(__file__).parents[2] / "examples" / "manifests" / "quickstart.yaml"


async def test_one_migration_creates_every_schema_and_is_idempotent(postgres_dsn: str) -> None:
    db = await Database.connect(postgres_dsn)
    try:
        await db.migrate()
        await db.migrate()  # nothing to do the second time
        async with db.pool.acquire() as conn:
            for schema in SCHEMAS:
                versions = [r["version"] for r in await conn.fetch(f"SELECT version FROM {schema.version_table}")]
                assert versions == list(range(1, schema.version + 1)), schema.name
        # the three stores share the one pool
        assert db.store._pool is db.pool and db.ledger._pool is db.pool and db.audit._pool is db.pool
    finally:
        await db.close()


async def test_calls_through_a_factory_built_gateway_reach_the_audit_chain(postgres_dsn: str) -> None:
    """`agentflow gateway` used to build its Gateway without the audit sink; both entry points now get it here."""
    key = new_key()
    run_uid = f"factory-{uuid.uuid4().hex[:8]}"
    budget = Budget.model_validate({"metadata": {"name": "cap", "namespace": "fac"},
                                    "spec": {"limits": {"usd": 5}, "period": "total"}})
    factory = await Factory.create(dsn=postgres_dsn, key=key, gateway=GatewaySettings(upstream="offline"),
                                   budgets=[budget])
    server = factory.gateway_server()
    await server.start("127.0.0.1", 0)
    try:
        request = StepRequest(run_id=run_uid, node="classify", step="classify", kind="llm", attempt=1, inputs={})
        await factory.db.store.put_attempt(run_uid, "classify", 1,
                                           attempt_payload(request, QUICKSTART.read_text(), "quickstart"))
        token = issue_token(key, AttemptClaims(run_uid, "fac", "quickstart", "classify", 1, time.time() + 60))
        before = (await factory.db.audit.head()).seq
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{server.port}/v1/chat/completions",
                json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "late parcel"}]},
                headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200, await r.text()
        rows = await factory.db.audit.rows(since_seq=before + 1)
        calls = [row for row in rows if row["kind"] == "model_call" and row["data"]["runUid"] == run_uid]
        assert len(calls) == 1 and calls[0]["actor"] == "gateway" and calls[0]["namespace"] == "fac"
        [logged] = [c for c in await factory.db.ledger.calls(namespace="fac", limit=100) if c.run_uid == run_uid]
        assert logged.budgets == ("fac/cap",)
    finally:
        await server.stop()
        await factory.close()


async def test_agents_memory_through_a_factory_built_gateway_in_pgvector(postgres_dsn: str, pgvector_dsn: str) -> None:
    """--memory-dsn: memory_save and memory_search of a loop's calls run by the gateway, scoped by the token."""
    example = (Path(__file__).parents[2] / "examples" / "manifests" / "support-agent.yaml").read_text()
    key = new_key()
    namespace = f"mem-{uuid.uuid4().hex[:6]}"
    factory = await Factory.create(dsn=postgres_dsn, key=key,
                                   gateway=GatewaySettings(upstream="offline", memory_dsn=pgvector_dsn))
    without = await Factory.create(dsn=postgres_dsn, key=key, gateway=GatewaySettings(upstream="offline"))
    server, plain = factory.gateway_server(), without.gateway_server()
    await server.start("127.0.0.1", 0)
    await plain.start("127.0.0.1", 0)

    async def token(run_uid: str) -> str:
        node = "answer/t1/call-1"
        request = StepRequest(run_id=run_uid, node=node, step="answer", kind="tool", attempt=1, inputs={},
                              context={"agent": "support-agent", "call": {"id": "c0", "name": "memory_save",
                                                                          "kind": "memory"}})
        await factory.db.store.put_attempt(run_uid, node, 1, attempt_payload(request, example, "support-agent"))
        return issue_token(key, AttemptClaims(run_uid, namespace, "support-agent", node, 1, time.time() + 60))

    try:
        async with aiohttp.ClientSession() as session:
            async def call(port: int, bearer: str, name: str, body: dict[str, object]) -> tuple[int, dict]:
                async with session.post(f"http://127.0.0.1:{port}/v1/agentflow/memory/{name}", json=body,
                                        headers={"Authorization": f"Bearer {bearer}"}) as r:
                    return r.status, await r.json()

            first = await token(f"run-{uuid.uuid4().hex[:8]}")
            status, saved = await call(server.port, first, "memory_save", {"text": "Order 4411 was charged twice"})
            assert status == 200, saved
            second = await token(f"run-{uuid.uuid4().hex[:8]}")
            status, found = await call(server.port, second, "memory_search", {"query": "order 4411"})
            assert status == 200 and [m["id"] for m in found["memories"]] == [saved["id"]], found
            status, refused = await call(plain.port, second, "memory_search", {"query": "order 4411"})
            assert status == 409 and refused["error"]["type"] == "MemoryUnavailable", refused
    finally:
        await server.stop()
        await plain.stop()
        await factory.close()
        await without.close()

"""The local runner's audit chain in a JSON Lines file, and event checks."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest

from agentflow.audit.chain import EMPTY, verify
from agentflow.audit.events import AuditEventError, check_event, rfc3339
from agentflow.audit.files import read_rows
from agentflow.audit.records import AuditEvent
from agentflow.storage.audit_file import JsonlAuditLog


def event(i: int, size: int = 0) -> AuditEvent:
    return AuditEvent("tool_call", "runner", "local", f"local/wf/step#{i}", "ok", "2026-01-02T03:04:05Z",
                      {"i": i, "pad": "x" * size})


def rows_of(path: Path) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as f:
        return list(read_rows(f, "jsonl"))


async def test_appends_chain_across_instances_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "run" / "audit.jsonl"
    assert JsonlAuditLog(path).head() == EMPTY
    await JsonlAuditLog(path).append([event(0), event(1)])
    await JsonlAuditLog(path).append([event(2, size=200_000)])  # a row longer than the tail read at once
    await JsonlAuditLog(path).append([event(3)])
    rows = rows_of(path)
    report = verify(rows)
    assert report.ok and report.checked == 4 and JsonlAuditLog(path).head() == report.head
    assert path.stat().st_mode & 0o777 == 0o600


async def test_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await JsonlAuditLog(path).append([event(0)])
    with path.open("ab") as f:
        f.write(b'{"seq":1,"at":"2026')  # a kill -9 in the middle of a write
    await JsonlAuditLog(path).append([event(1)])
    assert verify(rows_of(path)).ok and len(rows_of(path)) == 2


async def test_invalid_events_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with pytest.raises(AuditEventError, match=r"events\[0\].kind"):
        await JsonlAuditLog(path).append([AuditEvent("nope", "a", "n", "s", "ok", "2026-01-02T03:04:05Z")])  # type: ignore[arg-type]
    assert not path.exists()


def _append_many(path: str, worker: int) -> None:
    async def go() -> None:
        for i in range(20):
            await JsonlAuditLog(path).append([event(worker * 100 + i)])

    asyncio.run(go())


def test_processes_appending_to_one_file_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    report = verify(rows_of(path))
    assert report.ok and report.checked == 60


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "other"}, "event.kind"),
        ({"actor": ""}, "event.actor"),
        ({"subject": "x" * 2000}, "event.subject"),
        ({"decision": "a\x00b"}, "event.decision"),
        ({"at": "2026-01-02 03:04:05"}, "event.at"),
        ({"at": "2026-13-02T03:04:05Z"}, "event.at"),
        ({"data": {"x": float("inf")}}, "event.data.x"),
        ({"data": {"x": {1}}}, "event.data.x"),
    ],
)
def test_check_event_names_the_field(changes: dict[str, object], field: str) -> None:
    base = {"kind": "approval", "actor": "user:alice", "namespace": "", "subject": "ns/wf", "decision": "approved",
            "at": "2026-01-02T03:04:05.5+02:00", "data": {}}
    check_event(AuditEvent(**base))  # type: ignore[arg-type]
    with pytest.raises(AuditEventError) as info:
        check_event(AuditEvent(**{**base, **changes}))  # type: ignore[arg-type]
    assert info.value.field == field


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"

"""The audit chain: linking, and naming the first tampered row of every kind of tampering."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import orjson
import pytest

from agentflow.audit.chain import (
    EMPTY,
    GENESIS,
    ChainVerifier,
    Head,
    check_recorded_head,
    event_bytes,
    link,
    row_hash,
    verify,
)
from agentflow.audit.records import AuditEvent


def event(i: int, namespace: str = "team-a") -> AuditEvent:
    return AuditEvent(
        kind="model_call" if i % 2 else "tool_call",
        actor="gateway",
        namespace=namespace,
        subject=f"{namespace}/triage/classify#{i}",
        decision="allow",
        at=f"2026-01-02T03:04:{i % 60:02d}Z",
        data={"model": "gpt-x", "tokens": i, "cost": i / 10, "nested": {"b": [1, 2.5, None], "a": "é"}},
    )


def chain(n: int = 30) -> list[dict[str, Any]]:
    return [r.to_dict() for r in link(EMPTY, [event(i) for i in range(n)])]


def rehash(rows: list[dict[str, Any]], start: int) -> None:
    """What an attacker who knows the scheme does after an edit: recompute every hash from ``start``."""
    prev = rows[start - 1]["hash"] if start else GENESIS
    for r in rows[start:]:
        r["prev_hash"] = prev
        r["hash"] = prev = row_hash(prev, event_bytes(r))


def problem(rows: list[dict[str, Any]], **kw: Any) -> tuple[str, tuple[int, ...], str]:
    report = verify(rows, **kw)
    assert not report.ok, report
    assert report.problem is not None
    return report.problem.kind, report.problem.seqs, report.problem.message


def test_hash_is_sha256_of_prev_and_canonical_event() -> None:
    rows = link(EMPTY, [event(0), event(1)])
    canonical = orjson.dumps(event(0).to_dict(), option=orjson.OPT_SORT_KEYS)
    assert rows[0].hash == hashlib.sha256(GENESIS.encode() + canonical).hexdigest()
    assert rows[1].prev_hash == rows[0].hash and rows[1].seq == 1
    assert [r.seq for r in link(Head(41, rows[1].hash), [event(2)])] == [42]


def test_link_names_the_event_that_is_not_json() -> None:
    bad = AuditEvent("tool_call", "op", "ns", "s", "ok", "2026-01-01T00:00:00Z", {"x": {1, 2}})
    with pytest.raises(TypeError, match=r"audit event 1: data.x"):
        link(EMPTY, [event(0), bad])


def test_an_intact_chain_verifies_and_reports_its_head() -> None:
    rows = chain()
    report = verify(rows)
    assert report.ok and report.checked == 30
    assert report.head == Head(29, rows[-1]["hash"])
    assert str(report).startswith("audit chain intact: 30 rows verified, head 29:")
    assert verify([]).ok and verify([]).head == EMPTY


def test_modified_row() -> None:
    rows = chain()
    rows[17]["data"] = {**rows[17]["data"], "tokens": 1}
    assert problem(rows) == ("modified", (17,), "row 17 was modified (its hash does not match its contents)")
    rows = chain()
    rows[17]["decision"] = "deny"
    assert problem(rows)[:2] == ("modified", (17,))
    rows = chain()
    rows[0]["actor"] = "someone"
    assert problem(rows)[:2] == ("modified", (0,))
    rows = chain()
    rows[29]["at"] = "2026-01-02T03:04:00Z"
    assert problem(rows)[:2] == ("modified", (29,))


def test_modified_row_with_its_own_hash_recomputed() -> None:
    rows = chain()
    rows[17]["data"] = {"tokens": 0}
    rows[17]["hash"] = row_hash(rows[17]["prev_hash"], event_bytes(rows[17]))
    kind, seqs, message = problem(rows)
    assert (kind, seqs) == ("modified", (17,))
    assert message.startswith("row 17 was modified and its hash recomputed")


def test_deleted_rows() -> None:
    rows = chain()
    del rows[17]
    assert problem(rows) == ("deleted", (17,), "row 17 was deleted (a row between 16 and 18 is missing)")
    rows = chain()
    del rows[5:8]
    assert problem(rows)[:3] == ("deleted", (5, 6, 7), "rows 5..7 were deleted (rows between 4 and 8 are missing)")
    rows = chain()
    del rows[0]
    assert problem(rows) == ("deleted", (0,), "row 0 was deleted: the chain starts at row 1")


def test_deleted_tail_needs_an_anchor() -> None:
    rows = chain()
    anchor = Head(29, rows[29]["hash"])
    assert verify(rows[:25]).ok  # hashes alone cannot tell
    kind, seqs, message = problem(rows[:25], expect_head=anchor)
    assert kind == "deleted" and seqs == (25, 29)
    assert message == "the chain ends at row 24 but the anchor names row 29: rows 25..29 were deleted from the end"
    assert verify(rows, expect_head=anchor).ok
    assert verify(rows, expect_head=Head(10, rows[10]["hash"])).ok  # rows after an anchor are appends
    assert verify(rows, expect_head=EMPTY).ok


def test_rewritten_tail_needs_an_anchor() -> None:
    rows = chain()
    anchor = Head(20, rows[20]["hash"])
    rows[12]["data"] = {"forged": True}
    rehash(rows, 12)
    assert verify(rows).ok
    kind, seqs, message = problem(rows, expect_head=anchor)
    assert (kind, seqs) == ("anchor", (20,))
    assert "rewritten (hashes recomputed) at or before row 20" in message


def test_inserted_row_with_a_plausible_hash() -> None:
    """Renumber the rows from 9 on and slip a well-hashed forged row in at 9."""
    rows = chain()
    forged = link(Head(8, rows[8]["hash"]), [event(99)])[0].to_dict()
    for r in rows[9:]:
        r["seq"] += 1
    rows.insert(9, forged)
    assert problem(rows) == ("inserted", (9,), "row 9 was inserted: row 10 links past it to row 8")


def test_inserted_rows_with_plausible_hashes() -> None:
    rows = chain()
    forged = [r.to_dict() for r in link(Head(8, rows[8]["hash"]), [event(98), event(99)])]
    for r in rows[9:]:
        r["seq"] += 2
    rows[9:9] = forged
    assert problem(rows)[:2] == ("inserted", (9, 10))


def test_inserted_row_with_a_bad_hash() -> None:
    rows = chain()
    forged = {**rows[9], "decision": "deny", "hash": "ab" * 32}
    for r in rows[9:]:
        r["seq"] += 1
    rows.insert(9, forged)
    kind, seqs, message = problem(rows)
    assert (kind, seqs) == ("inserted", (9,))
    assert "row 10 links past it to row 8" in message


def test_swapped_seqs() -> None:
    """UPDATE ... SET seq: rows come back in seq order, the contents of 5 and 6 exchanged."""
    rows = chain()
    rows[5], rows[6] = rows[6], rows[5]
    rows[5]["seq"], rows[6]["seq"] = 5, 6
    assert problem(rows) == ("reordered", (5, 6), "rows 5 and 6 are out of order (swapped)")


def test_rows_far_apart_exchanged() -> None:
    rows = chain()
    rows[3], rows[7] = rows[7], rows[3]
    rows[3]["seq"], rows[7]["seq"] = 3, 7
    kind, seqs, message = problem(rows)
    assert (kind, seqs) == ("reordered", (3, 7))
    assert message == "rows 3 and 7 are out of order: the row at 7 belongs at 3"


def test_lines_moved_in_a_file() -> None:
    rows = chain()
    rows[5], rows[6] = rows[6], rows[5]
    assert problem(rows) == ("reordered", (5, 6), "rows 5 and 6 are out of order (swapped)")
    rows = chain()
    rows.insert(12, rows.pop(2))
    assert problem(rows) == ("reordered", (2, 12), "row 2 is out of order: it comes after row 12")
    rows = chain()
    rows.append(copy.deepcopy(rows[4]))
    assert problem(rows) == ("duplicated", (4,), "row 4 appears twice")


def test_replaced_beginning() -> None:
    rows = chain()
    rows[0]["prev_hash"] = "1" * 64
    rows[0]["hash"] = row_hash(rows[0]["prev_hash"], event_bytes(rows[0]))
    rehash(rows, 1)
    assert problem(rows)[:2] == ("modified", (0,))


def test_malformed_rows_are_named() -> None:
    rows = chain()
    rows[4]["hash"] = "XYZ"
    kind, seqs, message = problem(rows)
    assert (kind, seqs) == ("malformed", (4,)) and "field 'hash' of row 4" in message
    rows = chain()
    del rows[3]["data"]
    assert problem(rows)[0] == "malformed"
    rows = chain()
    rows[3]["data"] = {"x": float("nan")}
    assert "not JSON" in problem(rows)[2]


def test_export_since_a_seq() -> None:
    rows = chain()[10:]
    assert not verify(rows).ok  # it does not start the chain
    report = verify(rows, start=None)
    assert report.ok and report.checked == 20 and report.notes
    rows[3]["subject"] = "x"
    assert problem(rows, start=None)[:2] == ("modified", (13,))


def test_export_of_one_namespace() -> None:
    events = [event(i, "team-a" if i % 3 else "team-b") for i in range(30)]
    rows = [r.to_dict() for r in link(EMPTY, events) if r.event.namespace == "team-a"]
    report = verify(rows, gaps=True)
    assert report.ok and report.checked == 20
    rows[5]["data"] = {}
    assert problem(rows, gaps=True)[:2] == ("modified", (rows[5]["seq"],))


def test_recorded_head() -> None:
    rows = chain()
    report = verify(rows[:28])
    assert check_recorded_head(verify(rows), Head(29, rows[29]["hash"])).ok
    r = check_recorded_head(report, Head(29, rows[29]["hash"]))
    assert not r.ok and r.problem is not None and r.problem.kind == "deleted" and r.problem.seqs == (28, 29)
    r = check_recorded_head(verify(rows), Head(27, rows[27]["hash"]))
    assert r.problem is not None and r.problem.kind == "inserted" and "rows 28..29 were inserted" in r.problem.message
    r = check_recorded_head(verify(rows), Head(29, "0" * 64))
    assert r.problem is not None and r.problem.kind == "modified"


def test_verifier_stops_early_and_bounds_its_lookahead() -> None:
    rows = chain(200)
    rows[50]["decision"] = "deny"
    v = ChainVerifier(lookahead=4)
    fed = 0
    for r in rows:
        fed += 1
        if not v.feed(r):
            break
    assert fed == 55  # the bad row and its lookahead
    assert v.finish().problem is not None and v.finish().problem.seqs == (50,)  # type: ignore[union-attr]


def test_head_parse() -> None:
    h = "ab" * 32
    assert Head.parse(f"41:{h}") == Head(41, h)
    assert str(Head(41, h)) == f"41:{h}"
    for bad in ("41", f"x:{h}", "41:abc", f"-5:{h}"):
        with pytest.raises(ValueError):
            Head.parse(bad)


def test_report_json() -> None:
    rows = chain(3)
    rows[1]["kind"] = "approval"
    d = verify(rows).to_dict()
    assert d["ok"] is False and d["problem"]["kind"] == "modified" and d["problem"]["seqs"] == [1]
    assert d["head"] == {"seq": 0, "hash": rows[0]["hash"]}

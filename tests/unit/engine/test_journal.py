"""The run journal: canonical JSON, the hash chain, and tamper detection."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.engine.journal import (
    GENESIS,
    Journal,
    JournalError,
    Record,
    VerifyReport,
    canonical_json,
    verify,
)
from agentflow.engine.values import Event, EventType

Rows = list[dict[str, Any]]


def sample_events(n: int = 10) -> list[Event]:
    return [
        Event(
            EventType.step_succeeded,
            f"s{i}",
            {"attempt": 1, "output": {"i": i, "text": f"out {i}"}},
            10.0 + i,
        )
        for i in range(n)
    ]


def rows_of(journal: Journal) -> Rows:
    """Raw dicts as a store would read them back from JSON lines."""
    return [json.loads(r.to_json()) for r in journal.records]


def journal_rows(n: int = 10) -> Rows:
    j = Journal()
    j.extend(sample_events(n))
    return rows_of(j)


def rehash(row: dict[str, Any]) -> dict[str, Any]:
    """What a forger does: fix the record's own hash after editing it."""
    body = {k: v for k, v in row.items() if k != "hash"}
    return {**row, "hash": hashlib.sha256(canonical_json(body)).hexdigest()}


# ------------------------------------------------------------------ canonical JSON


class TestCanonicalJson:
    def test_key_order_does_not_matter(self) -> None:
        a = {"b": 1, "a": {"y": [1, 2], "x": None}, "é": "ü"}
        b = {"é": "ü", "a": {"x": None, "y": [1, 2]}, "b": 1}
        assert canonical_json(a) == canonical_json(b)
        assert canonical_json(a) == '{"a":{"x":null,"y":[1,2]},"b":1,"é":"ü"}'.encode()

    def test_unicode_is_utf8_not_escaped(self) -> None:
        assert canonical_json({"k": "日本語 ✓ \n"}) == '{"k":"日本語 ✓ \\n"}'.encode()

    def test_floats_are_stable_and_distinct_from_ints(self) -> None:
        assert canonical_json([0.1, 1.0, 1, -0.0, 1e16, 1.5e-7]) == b"[0.1,1.0,1,-0.0,1e+16,1.5e-7]"
        assert canonical_json(0.1 + 0.2) == b"0.30000000000000004"

    def test_tuples_and_read_only_mappings_encode_as_json(self) -> None:
        assert canonical_json(MappingProxyType({"t": (1, "a")})) == b'{"t":[1,"a"]}'

    def test_str_enum_encodes_as_its_value(self) -> None:
        assert canonical_json({"t": EventType.run_started}) == b'{"t":"RunStarted"}'

    @pytest.mark.parametrize(
        ("value", "error", "words"),
        [
            ({"a": {"b": [1.0, math.nan]}}, ValueError, ["a.b[1]", "NaN"]),
            ({"a": math.inf}, ValueError, ["a:", "infinity"]),
            ({"a": {1: "x"}}, TypeError, ["a:", "key 1", "strings"]),
            ({"tags": {"x", "y"}}, TypeError, ["tags:", "set"]),
            ({"blob": b"x"}, TypeError, ["blob:", "bytes"]),
            ({"n": 2**64}, ValueError, ["n:", "64-bit"]),
            ({"s": "\ud800"}, ValueError, ["s:", "surrogate"]),
            ({"weird key": [object()]}, TypeError, ["['weird key'][0]", "'object'"]),
            (math.nan, ValueError, ["value:"]),
        ],
    )
    def test_rejects_non_json_values_naming_the_path(
        self, value: Any, error: type[Exception], words: list[str]
    ) -> None:
        with pytest.raises(error) as info:
            canonical_json(value)
        for w in words:
            assert w in str(info.value)

    def test_rejects_nesting_deeper_than_orjson_allows(self) -> None:
        deep: Any = "leaf"
        for _ in range(300):
            deep = [deep]
        with pytest.raises(ValueError, match="nested deeper"):
            canonical_json(deep)


# ------------------------------------------------------------------ the chain


GOLDEN_EVENTS = [
    Event(
        EventType.run_started,
        None,
        {"workflow": "support", "inputs": {"q": "héllo"}, "seed": 7},
        1700000000.5,
    ),
    Event(EventType.step_scheduled, "classify", {"attempt": 1, "key": "r1/classify/1"}, 1700000000.75),
    Event(
        EventType.step_succeeded,
        "classify",
        {"attempt": 1, "output": {"p": 0.1}, "costUsd": 0.0},
        1700000001.0,
    ),
]
GOLDEN_FIRST_LINE = (
    '{"at":1700000000.5,"data":{"inputs":{"q":"héllo"},"seed":7,"workflow":"support"},'
    '"hash":"b3863dc2b8aa2cddfd90f18b088aeb71e5812e56f9b7a3ae696f3e2894a9995e","node":null,'
    '"prev":"0000000000000000000000000000000000000000000000000000000000000000","seq":0,"type":"RunStarted"}'
)
GOLDEN_HASHES = [
    "b3863dc2b8aa2cddfd90f18b088aeb71e5812e56f9b7a3ae696f3e2894a9995e",
    "e13e8d6d1d85887eac1b338230efd94e866722b88ac20f56fd67c2669736a93d",
    "0729dd67fc5efedc040f74751ee3b1759404e0c54e4e71babc237827cf3b56bb",
]


class TestJournal:
    def test_golden_hashes_pin_the_encoding(self) -> None:
        j = Journal()
        records = j.extend(GOLDEN_EVENTS)
        assert [r.hash for r in records] == GOLDEN_HASHES
        assert records[0].to_json() == GOLDEN_FIRST_LINE.encode()
        assert j.head == GOLDEN_HASHES[-1]

    def test_hash_is_sha256_of_the_record_without_hash(self) -> None:
        j = Journal()
        j.extend(GOLDEN_EVENTS)
        for row in rows_of(j):
            body = {k: v for k, v in row.items() if k != "hash"}
            stdlib = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            assert hashlib.sha256(stdlib).hexdigest() == row["hash"]

    def test_append_links_each_record_to_the_previous(self) -> None:
        j = Journal()
        assert j.head == GENESIS and len(j) == 0
        records = j.extend(sample_events(3))
        assert [r.seq for r in records] == [0, 1, 2]
        assert records[0].prev == GENESIS
        assert records[1].prev == records[0].hash and records[2].prev == records[1].hash
        assert j.head == records[2].hash and len(j) == 3
        assert j.events() == sample_events(3)
        assert list(j.records) == records

    def test_records_view_is_read_only(self) -> None:
        j = Journal()
        j.extend(sample_events(2))
        view = j.records
        assert not hasattr(view, "append")
        assert view[-1].seq == 1 and [r.seq for r in view[:1]] == [0]

    def test_journal_continues_after_records_read_back(self) -> None:
        whole = Journal()
        whole.extend(sample_events(6))
        resumed = Journal(Record.from_dict(row) for row in rows_of(whole)[:4])
        resumed.extend(sample_events(6)[4:])
        assert [r.hash for r in resumed.records] == [r.hash for r in whole.records]

    def test_record_roundtrips_through_its_dict(self) -> None:
        j = Journal()
        j.extend(GOLDEN_EVENTS)
        for record in j.records:
            assert Record.from_dict(json.loads(record.to_json())) == record

    def test_integer_at_is_kept_as_written(self) -> None:
        j = Journal()
        r = j.append(Event(EventType.run_started, at=5))
        back = Record.from_dict(json.loads(r.to_json()))
        assert back.event.at == 5 and verify([back.to_dict()]).ok

    def test_float_subclass_at_hashes_like_a_float(self) -> None:
        class Seconds(float):
            pass

        a, b = Journal(), Journal()
        assert (
            a.append(Event(EventType.run_started, at=Seconds(2.5))).hash
            == b.append(Event(EventType.run_started, at=2.5)).hash
        )

    def test_read_only_mapping_data_hashes_like_a_dict(self) -> None:
        a, b = Journal(), Journal()
        ra = a.append(Event(EventType.fan_out, "x", MappingProxyType({"count": 2})))
        rb = b.append(Event(EventType.fan_out, "x", {"count": 2}))
        assert ra.hash == rb.hash and ra.to_json() == rb.to_json()

    @pytest.mark.parametrize(
        ("event", "error", "words"),
        [
            (
                Event(EventType.step_succeeded, "a", {"output": {"score": math.nan}}),
                ValueError,
                "data.output.score",
            ),
            (Event(EventType.step_succeeded, "a", {"seen": {1, 2}}), TypeError, "data.seen"),
            (Event(EventType.step_succeeded, 3, {}), TypeError, "node"),  # type: ignore[arg-type]
            (Event("StepSucceeded", "a", {}), TypeError, "EventType"),  # type: ignore[arg-type]
            (Event(EventType.step_succeeded, "a", {}, math.inf), ValueError, "at: inf is not valid JSON"),
            (Event(EventType.step_succeeded, "a", {}, "now"), TypeError, "event at must be a number"),  # type: ignore[arg-type]
            (Event(EventType.step_succeeded, "a", [1]), TypeError, "mapping"),  # type: ignore[arg-type]
        ],
    )
    def test_bad_event_is_refused_and_leaves_the_chain_unchanged(
        self, event: Event, error: type[Exception], words: str
    ) -> None:
        j = Journal()
        j.append(sample_events(1)[0])
        head = j.head
        with pytest.raises(error, match=words.replace(".", r"\.")):
            j.extend([sample_events(2)[1], event])
        assert len(j) == 1 and j.head == head
        assert j.append(sample_events(2)[1]).seq == 1

    @pytest.mark.parametrize(
        ("change", "words"),
        [
            (lambda d: d.pop("hash"), "missing field(s) hash"),
            (lambda d: d.update(extra=1), "unexpected field(s) extra"),
            (lambda d: d.update(seq=-1), "'seq'"),
            (lambda d: d.update(seq=True), "'seq'"),
            (lambda d: d.update(type="Exploded"), "unknown event type 'Exploded'"),
            (lambda d: d.update(node=5), "'node'"),
            (lambda d: d.update(at="now"), "'at'"),
            (lambda d: d.update(data=[]), "'data'"),
            (lambda d: d.update(prev="abc"), "'prev'"),
            (lambda d: d.update(hash="A" * 64), "'hash'"),
        ],
    )
    def test_from_dict_rejects_bad_shapes(self, change: Callable[[dict[str, Any]], Any], words: str) -> None:
        row = journal_rows(1)[0]
        change(row)
        with pytest.raises(JournalError) as info:
            Record.from_dict(row)
        assert words in str(info.value)


# ------------------------------------------------------------------ verify


def check(rows: Rows, bad_seq: int | None, *words: str, head: str | None = None) -> VerifyReport:
    report = verify(rows, head=head)
    assert not report.ok, "tampering went undetected"
    assert report.bad_seq == bad_seq, report.problem
    for w in words:
        assert w in (report.problem or ""), report.problem
    return report


class TestVerify:
    def test_intact_journal_verifies(self) -> None:
        rows = journal_rows(10)
        report = verify(rows)
        assert report == VerifyReport(True, 10, None, None, 9, rows[-1]["hash"])
        assert report.head == f"9:{rows[-1]['hash']}"
        assert verify(rows, head=rows[-1]["hash"]).ok
        assert verify([]).ok and verify([], head=GENESIS).ok
        assert verify([]).head == f"-1:{GENESIS}"

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("seq", 42),
            ("type", "StepFailed"),
            ("node", "other"),
            ("node", None),
            ("at", 99.5),
            ("at", 15),  # 15 vs 15.0: a different encoding is a different record
            ("data", {"attempt": 2}),
            ("prev", "f" * 64),
            ("hash", "e" * 64),
        ],
    )
    def test_any_field_of_a_middle_record_edited_is_named(self, field: str, value: Any) -> None:
        rows = journal_rows(10)
        rows[5][field] = value
        check(rows, 5, "record 5 was modified", "line 6")

    def test_nested_data_edit_is_detected(self) -> None:
        rows = journal_rows(10)
        rows[3]["data"]["output"]["text"] = "forged"
        check(rows, 3, "record 3 was modified")

    def test_edit_with_recomputed_hash_breaks_the_next_link(self) -> None:
        rows = journal_rows(10)
        rows[4] = rehash({**rows[4], "data": {"attempt": 9}})
        check(rows, 5, "record 5", "does not link to record 4")

    def test_deleted_middle_record(self) -> None:
        rows = journal_rows(10)
        del rows[6]
        check(rows, 6, "seq jumps from 5 to 7", "record 6 was deleted")

    def test_several_deleted_records(self) -> None:
        rows = journal_rows(10)
        del rows[3:6]
        check(rows, 3, "records 3..5 were deleted")

    def test_deleted_first_record(self) -> None:
        rows = journal_rows(10)
        del rows[0]
        check(rows, 0, "starts at record 1", "beginning was truncated")

    def test_first_record_replaced(self) -> None:
        rows = journal_rows(3)
        rows[0] = rehash({**rows[0], "prev": "1" * 64})
        check(rows, 0, "record 0 does not start the chain")

    def test_swapped_neighbours(self) -> None:
        rows = journal_rows(10)
        rows[4], rows[5] = rows[5], rows[4]
        check(rows, 5, "record 5 appears out of order")

    def test_swapped_last_two(self) -> None:
        rows = journal_rows(10)
        rows[8], rows[9] = rows[9], rows[8]
        check(rows, 9, "record 9 appears out of order")

    def test_record_moved_to_the_end(self) -> None:
        rows = journal_rows(10)
        rows.append(rows.pop(2))
        check(rows, 2, "record 2 appears out of order", "line 10")

    def test_forged_record_with_a_correct_own_hash_inserted(self) -> None:
        rows = journal_rows(10)
        forged = rehash({**rows[5], "data": {"attempt": 1, "output": "forged"}})  # same seq, same prev
        rows.insert(5, forged)
        check(rows, 5, "forged record 5 was inserted at line 6", "genuine record 5 is at line 7")

    def test_forged_record_after_its_genuine_twin(self) -> None:
        rows = journal_rows(10)
        rows.insert(6, rehash({**rows[5], "data": {"forged": True}}))
        check(rows, 5, "forged record 5 was inserted at line 7", "genuine record 5 is at line 6")

    def test_garbage_record_inserted(self) -> None:
        rows = journal_rows(10)
        rows.insert(3, {**rows[3], "data": {"junk": 1}})  # own hash wrong, next record links past it
        check(rows, 3, "line 4 was inserted before record 3")

    def test_foreign_record_with_a_new_seq_inserted(self) -> None:
        rows = journal_rows(10)
        rows.insert(3, rehash({**rows[3], "seq": 77, "prev": "2" * 64}))
        check(rows, 77, "not part of the chain")

    def test_duplicated_record(self) -> None:
        rows = journal_rows(10)
        rows.insert(4, copy.deepcopy(rows[3]))
        check(rows, 3, "record 3 appears twice", "lines 4 and 5")

    def test_malformed_record(self) -> None:
        rows = journal_rows(5)
        rows[2] = {"seq": 2, "type": "StepSucceeded"}
        check(rows, 2, "line 3", "malformed", "missing field(s)")

    def test_truncated_tail_needs_the_head(self) -> None:
        rows = journal_rows(10)
        head = rows[-1]["hash"]
        assert verify(rows[:7]).ok  # a shorter chain is still a chain ...
        check(rows[:7], 7, "removed from the end", head=head)  # ... unless the head is known

    def test_records_after_the_head(self) -> None:
        rows = journal_rows(10)
        check(rows, 7, "appended after the expected head (record 6)", head=rows[6]["hash"])
        check(rows, 0, "appended after the expected empty journal", head=GENESIS)

    def test_report_reads_well(self) -> None:
        rows = journal_rows(3)
        assert str(verify(rows)) == "journal ok: 3 records verified"
        rows[1]["node"] = "x"
        assert str(verify(rows)).startswith("journal broken after 1 intact records: record 1 was modified")


# ------------------------------------------------------------------ property: any single mutation is caught

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
events = st.builds(
    Event,
    st.sampled_from(list(EventType)),
    st.none() | st.text(min_size=1, max_size=6),
    st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    st.floats(0, 2e9, allow_nan=False),
)


def _mutate(rows: Rows, data: st.DataObject) -> Rows:
    rows = copy.deepcopy(rows)
    n = len(rows)
    kind = data.draw(st.sampled_from(["edit", "edit+rehash", "delete", "swap", "insert", "duplicate", "move"]))
    i = data.draw(st.integers(0, n - 1))
    if kind in ("edit", "edit+rehash"):
        field = data.draw(st.sampled_from(["seq", "type", "node", "at", "data", "prev", "hash"]))
        new = data.draw(
            {
                "seq": st.integers(0, 50),
                "type": st.sampled_from([t.value for t in EventType]),
                "node": st.none() | st.text(max_size=6),
                "at": st.floats(0, 2e9, allow_nan=False) | st.integers(0, 100),
                "data": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
                "prev": st.text("0123456789abcdef", min_size=64, max_size=64),
                "hash": st.text("0123456789abcdef", min_size=64, max_size=64),
            }[field]
        )
        old = rows[i][field]
        if canonical_json(new) == canonical_json(old):
            new = {"changed": True} if field == "data" else ("x" if field == "node" else None)
            if field in ("seq", "at"):
                new = old + 1
            elif field in ("type",):
                new = "RunFinished" if old != "RunFinished" else "RunStarted"
            elif field in ("prev", "hash"):
                new = ("1" if old[0] != "1" else "2") + old[1:]
        rows[i][field] = new
        if kind == "edit+rehash" and field != "hash":
            rows[i] = rehash(rows[i])
    elif kind == "delete":
        del rows[i]
    elif kind == "swap":
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i)) if n > 1 else i
        rows[i], rows[j] = rows[j], rows[i]
    elif kind == "insert":
        forged = rehash({**rows[i], "data": {"forged": data.draw(st.integers(0, 1000))}})
        rows.insert(data.draw(st.integers(0, n)), forged)
    elif kind == "duplicate":
        rows.insert(data.draw(st.integers(0, n)), copy.deepcopy(rows[i]))
    else:
        row = rows.pop(i)
        rows.insert(data.draw(st.integers(0, n - 1)), row)
    return rows


@settings(max_examples=200, deadline=None)
@given(st.lists(events, min_size=2, max_size=8), st.data())
def test_any_single_mutation_is_detected(evs: list[Event], data: st.DataObject) -> None:
    j = Journal()
    j.extend(evs)
    rows = rows_of(j)
    assert verify(rows, head=j.head).ok
    mutated = _mutate(rows, data)
    if [canonical_json(r) for r in mutated] == [canonical_json(r) for r in rows]:
        return  # e.g. a record moved back to where it was: nothing changed
    report = verify(mutated, head=j.head)
    assert not report.ok
    assert report.problem and report.bad_seq is not None

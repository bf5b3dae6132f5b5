"""The run journal: a SHA-256 hash chain of events (pure: no I/O, no clock).

Every record is ``{seq, type, node, at, data, prev, hash}``. ``hash`` is the
SHA-256 hex digest of the canonical JSON of the record without ``hash``;
``prev`` is the hash of the record before it (:data:`GENESIS`, 64 zeros, for
``seq`` 0). Editing, deleting, inserting or moving any record breaks the chain,
and :func:`verify` names the first record where that happened.

Canonical JSON (sorted keys, no whitespace, UTF-8; only JSON values) is
defined in :mod:`agentflow.engine.canonical`; :func:`canonical_json` is
re-exported here.

Errors::

    TypeError / ValueError   a value is not canonical JSON (the message names its path)
    JournalError             a record read back has the wrong shape (Record.from_dict)

Tampering is not an exception: :func:`verify` returns a :class:`VerifyReport`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import orjson

from .canonical import ORJSON_OPTIONS, canonical_json, check_json, encode, is_plain, to_builtin
from .values import Event, EventType

__all__ = [
    "GENESIS",
    "Journal",
    "JournalError",
    "Record",
    "VerifyReport",
    "canonical_json",
    "verify",
]

GENESIS = "0" * 64
"""The ``prev`` of the first record."""

_FIELDS = frozenset({"seq", "type", "node", "at", "data", "prev", "hash"})
_HEX = frozenset("0123456789abcdef")
_isfinite = math.isfinite
_sha256 = hashlib.sha256
_dumps = orjson.dumps


class JournalError(Exception):
    """A journal record does not have the shape ``{seq, type, node, at, data, prev, hash}``."""


# --------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One event of the journal with its place in the chain."""

    seq: int
    event: Event
    prev: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``{seq, type, node, at, data, prev, hash}``."""
        e = self.event
        data = e.data if type(e.data) is dict else dict(e.data)
        return {
            "seq": self.seq,
            "type": e.type.value,
            "node": e.node,
            "at": e.at,
            "data": data,
            "prev": self.prev,
            "hash": self.hash,
        }

    def to_json(self) -> bytes:
        """One canonical JSON line (without the newline), hash included."""
        return encode(self.to_dict(), f"record {self.seq}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        """Parse a record read back from storage. Checks its shape, not its hash (see :func:`verify`)."""
        problem = _shape_problem(d)
        if problem is not None:
            raise JournalError(f"bad journal record: {problem}")
        try:
            kind = EventType(d["type"])
        except ValueError:
            known = ", ".join(t.value for t in EventType)
            raise JournalError(
                f"bad journal record {d['seq']}: unknown event type {d['type']!r} (known: {known}); "
                "was the journal written by a newer AgentFlow?"
            ) from None
        return cls(d["seq"], Event(kind, d["node"], d["data"], d["at"]), d["prev"], d["hash"])


def _is_hash(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and _HEX.issuperset(v)


def _shape_problem(d: Any) -> str | None:
    """What is wrong with the shape of a raw record, or None."""
    if not isinstance(d, Mapping):
        return f"expected a JSON object, got {type(d).__name__}"
    missing = sorted(_FIELDS - d.keys())
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    extra = sorted(str(k) for k in d.keys() - _FIELDS)
    if extra:
        return f"unexpected field(s) {', '.join(extra)}"
    seq = d["seq"]
    if type(seq) is not int or seq < 0:
        return f"field 'seq' must be a non-negative integer, got {seq!r}"
    if not isinstance(d["type"], str):
        return f"field 'type' must be a string, got {d['type']!r}"
    if d["node"] is not None and not isinstance(d["node"], str):
        return f"field 'node' must be a string or null, got {d['node']!r}"
    at = d["at"]
    if isinstance(at, bool) or not isinstance(at, int | float):
        return f"field 'at' must be a number, got {at!r}"
    if not isinstance(d["data"], Mapping):
        return f"field 'data' must be an object, got {type(d['data']).__name__}"
    for name in ("prev", "hash"):
        if not _is_hash(d[name]):
            return f"field {name!r} must be 64 lowercase hex digits, got {d[name]!r}"
    return None


def _hash_of(d: Mapping[str, Any]) -> str:
    """The hash a raw record should carry."""
    body = {k: v for k, v in d.items() if k != "hash"}
    return _sha256(encode(body, f"record {d.get('seq')}")).hexdigest()


# --------------------------------------------------------------------------- the chain


class _RecordsView(Sequence[Record]):
    """A read-only view of the journal's records (no copy)."""

    __slots__ = ("_items",)

    def __init__(self, items: list[Record]) -> None:
        self._items = items

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Record]: ...
    def __getitem__(self, index: int | slice) -> Record | Sequence[Record]:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"<{len(self._items)} journal records>"


class Journal:
    """The in-memory hash chain of one run.

    ``Journal(records)`` continues after the given records without checking
    them; call :func:`verify` on what was read back first if it matters.
    """

    __slots__ = ("_head", "_next_seq", "_records")

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._records: list[Record] = list(records)
        last = self._records[-1] if self._records else None
        self._head = last.hash if last is not None else GENESIS
        self._next_seq = last.seq + 1 if last is not None else 0

    @property
    def records(self) -> Sequence[Record]:
        """Every record, oldest first (a read-only view)."""
        return _RecordsView(self._records)

    @property
    def head(self) -> str:
        """Hash of the last record (:data:`GENESIS` when empty)."""
        return self._head

    def __len__(self) -> int:
        return len(self._records)

    def events(self) -> list[Event]:
        return [r.event for r in self._records]

    def append(self, event: Event) -> Record:
        """Chain one event. Raises TypeError/ValueError (naming the field) if it is not JSON."""
        kind = event.type
        if type(kind) is not EventType:
            raise TypeError(f"event type must be an EventType, got {kind!r}")
        node = event.node
        if node is not None and type(node) is not str:
            raise TypeError(f"event node must be a string or None, got {node!r}")
        at = event.at
        if not ((type(at) is float and _isfinite(at)) or type(at) is int):
            if isinstance(at, bool) or not isinstance(at, int | float):
                raise TypeError(f"event at must be a number of seconds, got {type(at).__name__} {at!r}")
            check_json(at, "at")  # a float/int subclass: fine if finite and in range
        data = event.data
        if type(data) is not dict or not is_plain(data, 1):
            if not isinstance(data, Mapping):
                raise TypeError(f"event data must be a mapping, got {type(data).__name__}")
            check_json(data, "data", 1)
        seq = self._next_seq
        prev = self._head
        body = {"seq": seq, "type": kind, "node": node, "at": at, "data": data, "prev": prev}
        try:
            digest = _sha256(_dumps(body, default=to_builtin, option=ORJSON_OPTIONS)).hexdigest()
        except orjson.JSONEncodeError as e:  # e.g. a lone surrogate in a key
            check_json(data, "data", 1)
            raise TypeError(f"event data cannot be encoded as canonical JSON: {e}") from e
        record = Record(seq, event, prev, digest)
        self._records.append(record)
        self._head = digest
        self._next_seq = seq + 1
        return record

    def extend(self, events: Iterable[Event]) -> list[Record]:
        """Chain several events; all or nothing if one of them is not JSON."""
        start = len(self._records)
        head, next_seq = self._head, self._next_seq
        try:
            return [self.append(e) for e in events]
        except BaseException:
            del self._records[start:]
            self._head, self._next_seq = head, next_seq
            raise


# --------------------------------------------------------------------------- verification


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """The outcome of :func:`verify`.

    ``checked`` counts the records found intact before the first problem;
    ``bad_seq`` is the seq the problem is about (the record edited, the first
    one deleted, the one inserted or moved); ``problem`` says what happened,
    with line numbers counted from 1 in the order the records were given.
    """

    ok: bool
    checked: int
    bad_seq: int | None = None
    problem: str | None = None
    head_seq: int | None = None
    """When ok: the seq of the last record (-1 for an empty journal), the head to keep elsewhere."""
    head_hash: str | None = None
    """When ok: its hash (64 zeros for an empty journal)."""

    @property
    def head(self) -> str | None:
        """``SEQ:HASH`` of the last record when ok (what ``agentflow verify --expect-head`` takes back)."""
        return f"{self.head_seq}:{self.head_hash}" if self.head_seq is not None else None

    def __str__(self) -> str:
        if self.ok:
            return f"journal ok: {self.checked} records verified"
        return f"journal broken after {self.checked} intact records: {self.problem}"


def verify(records: Iterable[Mapping[str, Any]], *, head: str | None = None) -> VerifyReport:
    """Recompute every hash of raw records (as read from storage) and check the chain.

    Detects modified, deleted, inserted, duplicated and reordered records and
    a truncated beginning. Dropping records from the end leaves a valid
    (shorter) chain: pass the ``head`` hash kept elsewhere to detect that too.
    """
    return _Verifier(list(records)).run(head)


class _Verifier:
    def __init__(self, rows: list[Mapping[str, Any]]) -> None:
        self.rows = rows
        self.shape: list[str | None] = []
        self.sound: list[bool] = []
        for d in rows:
            problem, sound = _shape_problem(d), False
            if problem is None:
                try:
                    sound = _hash_of(d) == d["hash"]
                except (TypeError, ValueError) as e:
                    problem = str(e)
            self.shape.append(problem)
            self.sound.append(sound)

    def _fail(self, checked: int, bad_seq: int, problem: str) -> VerifyReport:
        return VerifyReport(False, checked, bad_seq, problem)

    def _find(self, start: int, *, seq: int | None = None, prev: str | None = None) -> int | None:
        """First sound row at or after ``start`` with that seq and/or prev."""
        for q in range(start, len(self.rows)):
            d = self.rows[q]
            if self.sound[q] and (seq is None or d["seq"] == seq) and (prev is None or d["prev"] == prev):
                return q
        return None

    def _linked_to(self, p: int) -> bool:
        """Does any sound row name row ``p`` as its prev?"""
        h = self.rows[p]["hash"]
        return any(self.sound[q] and self.rows[q]["prev"] == h for q in range(len(self.rows)) if q != p)

    def _links_to_known(self, p: int) -> bool:
        """Is row ``p``'s prev the hash of another sound row?"""
        prev = self.rows[p]["prev"]
        return any(self.sound[q] and self.rows[q]["hash"] == prev for q in range(len(self.rows)) if q != p)

    def run(self, head: str | None) -> VerifyReport:
        rows = self.rows
        prev = GENESIS
        for p, d in enumerate(rows):
            k, line = p, p + 1  # the intact prefix holds seqs 0..p-1
            if self.shape[p] is not None:
                return self._fail(p, k, f"line {line} (record {k}) is malformed: {self.shape[p]}")
            seq = d["seq"]
            if not self.sound[p]:
                nxt = self._find(p + 1, seq=k, prev=prev)
                if nxt == p + 1:
                    return self._fail(
                        p,
                        k,
                        f"line {line} was inserted before record {k} (its hash does not "
                        f"match and record {k} on the next line links past it)",
                    )
                return self._fail(p, k, f"record {k} was modified (hash mismatch at line {line})")
            if seq == k and d["prev"] == prev:
                prev = d["hash"]
                continue
            if seq == k:
                return self._fail(p, k, self._bad_link(p, k, prev))
            if seq > k:
                return self._jump(p, k, seq)
            first = seq  # seq < k: the intact prefix holds it at row seq
            if d["hash"] == rows[first]["hash"]:
                return self._fail(p, seq, f"record {seq} appears twice (lines {first + 1} and {line})")
            after = self._find(p + 1, prev=d["hash"]) == p + 1
            forged, genuine = (first, p) if after else (p, first)
            problem = (
                f"a forged record {seq} was inserted at line {forged + 1}; "
                f"the genuine record {seq} is at line {genuine + 1}"
            )
            return self._fail(p, seq, problem)
        n = len(rows)
        if head is not None and prev != head:
            q = next((q for q in range(n) if rows[q]["hash"] == head), None)
            if q is not None or head == GENESIS:
                last = -1 if q is None else rows[q]["seq"]
                where = "the expected empty journal" if q is None else f"the expected head (record {last})"
                return self._fail(n, last + 1, f"records were appended after {where}")
            return self._fail(
                n,
                n,
                f"the journal ends at record {n - 1} but the expected head is {head}: "
                "records were removed from the end or the chain was rewritten",
            )
        return VerifyReport(True, n, head_seq=n - 1, head_hash=prev)

    def _bad_link(self, p: int, k: int, prev: str) -> str:
        d, line = self.rows[p], p + 1
        if k == 0:
            return "record 0 does not start the chain (its prev is not 64 zeros): the beginning was replaced"
        for q in range(p):
            if self.rows[q]["hash"] == d["prev"]:
                return (
                    f"record {k} at line {line} links to record {self.rows[q]['seq']} instead of "
                    f"record {k - 1} (records were reordered)"
                )
        genuine = self._find(p + 1, seq=k, prev=prev)
        if genuine is not None:
            return f"a forged record {k} was inserted at line {line}; the genuine record {k} is at line {genuine + 1}"
        return (
            f"record {k} at line {line} does not link to record {k - 1} (prev does not match its hash): "
            f"record {k - 1} was rewritten with a recomputed hash, or record {k} was replaced"
        )

    def _jump(self, p: int, k: int, seq: int) -> VerifyReport:
        line = p + 1
        q = self._find(p + 1, seq=k)
        if q is None:
            gone = f"record {k} was" if seq == k + 1 else f"records {k}..{seq - 1} were"
            if p == 0:
                return self._fail(
                    p,
                    0,
                    f"the journal starts at record {seq}: {gone} deleted (the beginning was truncated)",
                )
            return self._fail(p, k, f"seq jumps from {k - 1} to {seq} at line {line} ({gone} deleted)")
        if q == p + 1 and (self._linked_to(p) or self._links_to_known(p)):
            problem = f"record {seq} appears out of order (at line {line}, before record {k})"
            return self._fail(p, seq, problem)
        if q == p + 1:
            return self._fail(
                p,
                seq,
                f"line {line} holds a record {seq} that is not part of the chain "
                f"(a record was inserted before record {k})",
            )
        return self._fail(p, k, f"record {k} appears out of order (at line {q + 1} instead of line {line})")

"""The audit hash chain: linking events into rows, and finding the first tampered row. Pure.

A row is ``{seq, at, kind, actor, namespace, subject, decision, data, prev_hash, hash}`` where::

    canonical = canonical JSON of the event {kind, actor, namespace, subject, decision, at, data}
    hash      = sha256(prev_hash (64 hex chars, ASCII) + canonical).hexdigest()
    prev_hash = the hash of row seq-1; GENESIS (64 zeros) for row 0

The seq is not hashed: the chain's order is the one its links give, and a row whose seq says
otherwise was moved. :class:`ChainVerifier` (push, for rows streamed from PostgreSQL) and
:func:`verify` (an iterable) walk the rows in seq order and stop at the first problem, naming it:
"row 17 was modified", "row 17 was deleted (a row between 16 and 18 is missing)", "row 9 was
inserted", "rows 5 and 6 are out of order".

What hashes cannot show: rows removed from the end, or a tail rewritten with recomputed hashes,
leave a valid (different) chain. An operator anchors it by keeping the head (``SEQ:HASH``,
printed by ``agentflow audit verify``) somewhere the database's users cannot write, and passing it
back as ``expect_head``: the chain must then hold that very row. Appending a well-formed row needs
no secret, so rows appended after the last anchor are only as trustworthy as the database's access
control; the PostgreSQL writer also keeps a head record that a hand-made INSERT does not update.

Canonical JSON is the journal's (:mod:`agentflow.engine.canonical`), and so is GENESIS.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from ..engine.canonical import canonical_json
from ..engine.journal import GENESIS
from .records import AuditEvent

__all__ = [
    "EMPTY",
    "EVENT_FIELDS",
    "GENESIS",
    "ROW_FIELDS",
    "AuditReport",
    "AuditRow",
    "ChainVerifier",
    "Head",
    "Problem",
    "check_recorded_head",
    "event_bytes",
    "link",
    "row_hash",
    "verify",
]

EVENT_FIELDS = ("kind", "actor", "namespace", "subject", "decision", "at", "data")
ROW_FIELDS = ("seq", *EVENT_FIELDS, "prev_hash", "hash")
_HASH = re.compile(r"[0-9a-f]{64}")
_sha256 = hashlib.sha256


@dataclasses.dataclass(frozen=True, slots=True)
class Head:
    """The last row of a chain: its seq and hash (``EMPTY``: seq -1 and GENESIS, no rows)."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Head:
        """``SEQ:HASH`` as printed by ``agentflow audit verify``; ValueError saying what is wrong."""
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.strip().lstrip("-").isdigit():
            raise ValueError(f"expected SEQ:HASH (e.g. 41:3fa9...), got {text!r}")
        if not _HASH.fullmatch(digest.strip()):
            raise ValueError(f"the hash in {text!r} must be 64 lowercase hex digits")
        head = cls(int(seq), digest.strip())
        if head.seq < -1 or (head.seq == -1 and head.hash != GENESIS):
            raise ValueError(f"the seq in {text!r} must be a row number (0 or more)")
        return head


EMPTY = Head(-1, GENESIS)


def event_bytes(event: AuditEvent | Mapping[str, Any]) -> bytes:
    """The canonical JSON that a row's hash covers. TypeError/ValueError naming the path if not JSON."""
    fields = event.to_dict() if isinstance(event, AuditEvent) else {k: event[k] for k in EVENT_FIELDS}
    return canonical_json(fields)


def row_hash(prev_hash: str, canonical: bytes) -> str:
    """sha256(prev_hash + canonical) as 64 hex digits."""
    return _sha256(prev_hash.encode("ascii") + canonical).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class AuditRow:
    """One event in its place in the chain."""

    seq: int
    prev_hash: str
    event: AuditEvent
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The row as stored and exported: ROW_FIELDS."""
        return {"seq": self.seq, **self.event.to_dict(), "prev_hash": self.prev_hash, "hash": self.hash}

    @property
    def head(self) -> Head:
        return Head(self.seq, self.hash)


def link(head: Head, events: Iterable[AuditEvent]) -> list[AuditRow]:
    """Chain ``events`` after ``head``. TypeError/ValueError (naming the event) if one is not JSON."""
    rows: list[AuditRow] = []
    seq, prev = head.seq + 1, head.hash
    for i, event in enumerate(events):
        try:
            digest = row_hash(prev, event_bytes(event))
        except (TypeError, ValueError) as e:
            raise type(e)(f"audit event {i}: {e}") from None
        rows.append(AuditRow(seq, prev, event, digest))
        seq, prev = seq + 1, digest
    return rows


# --------------------------------------------------------------------------- the report

ProblemKind = Literal["modified", "deleted", "inserted", "reordered", "duplicated", "malformed", "anchor"]


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """The first problem found: what (``kind``), which rows (``seqs``), and a sentence saying so."""

    kind: ProblemKind
    seqs: tuple[int, ...]
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class AuditReport:
    """The outcome of a verification.

    ``checked``: rows found intact before the first problem; ``head``: the last of them (the chain's
    head when ``ok``); ``notes``: what could not be checked (e.g. the rows before ``--since``).
    """

    ok: bool
    checked: int
    head: Head
    problem: Problem | None = None
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.checked} rows verified, head {self.head}"
        assert self.problem is not None
        return f"audit chain TAMPERED: {self.problem.message} ({self.checked} rows intact before it)"

    def to_dict(self) -> dict[str, Any]:
        problem = None if self.problem is None else dataclasses.asdict(self.problem)
        if problem is not None:
            problem["seqs"] = list(self.problem.seqs)  # type: ignore[union-attr]
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head": {"seq": self.head.seq, "hash": self.head.hash},
            "problem": problem,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- verification


@dataclasses.dataclass(frozen=True, slots=True)
class _Row:
    """What verification keeps of a row: where it claims to be, its links, and whether it hashes right."""

    seq: int
    prev: str
    hash: str
    sound: bool


def _parse(raw: Any) -> _Row | str:
    """The row's links, or what makes it unreadable."""
    if not isinstance(raw, Mapping):
        return f"expected an object, got {type(raw).__name__}"
    missing = [f for f in ROW_FIELDS if f not in raw]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    seq = raw["seq"]
    if type(seq) is not int or seq < 0:
        return f"field 'seq' must be a non-negative integer, got {seq!r}"
    for name in ("prev_hash", "hash"):
        if not isinstance(raw[name], str) or not _HASH.fullmatch(raw[name]):
            return f"field {name!r} of row {seq} must be 64 lowercase hex digits, got {raw[name]!r}"
    try:
        canonical = event_bytes(raw)
    except (TypeError, ValueError) as e:
        return f"row {seq} is not JSON: {e}"
    return _Row(seq, raw["prev_hash"], raw["hash"], row_hash(raw["prev_hash"], canonical) == raw["hash"])


def _rows(first: int, last: int) -> str:
    return f"row {first}" if first == last else f"rows {first}..{last}"


class ChainVerifier:
    """Feed rows in seq order (``feed`` returns False once a problem is found), then ``finish()``.

    ``start``: the head the rows continue (EMPTY: they must start the chain at row 0 with
    GENESIS); ``None`` trusts the first row's seq and prev (an export made with ``--since``).
    ``gaps``: rows may be missing between the ones given (an export of one namespace): each row's
    own hash is checked, and the link of each pair of consecutive seqs.
    ``expect_head``: an anchor kept elsewhere; the chain must hold that row with that hash.
    ``lookahead``: rows read past a problem to tell what happened (a move, an insertion...).
    Memory stays bounded by ``lookahead``, whatever the length of the chain.
    """

    def __init__(
        self,
        *,
        start: Head | None = EMPTY,
        gaps: bool = False,
        expect_head: Head | None = None,
        lookahead: int = 64,
    ) -> None:
        if lookahead < 2:
            raise ValueError(f"lookahead must be at least 2, got {lookahead}")
        self._seq = None if start is None else start.seq + 1
        self._prev = None if start is None else start.hash
        self._start = start
        self._gaps = gaps
        self._expect = expect_head
        self._lookahead = lookahead
        self._recent: collections.deque[_Row] = collections.deque(maxlen=lookahead)
        self._pending: list[_Row] = []
        self._checked = 0
        self._head = start if start is not None else EMPTY
        self._anchored = False
        self._position = 0
        self._notes: list[str] = []
        self.report: AuditReport | None = None
        if start is None:
            self._notes.append("the first row's link to the rows before it was not checked (they are not here)")
        if gaps:
            self._notes.append(
                "rows between non-consecutive seqs are not here: only the links of consecutive rows were checked"
            )

    # ----------------------------------------------------------------------- feeding

    def feed(self, raw: Mapping[str, Any]) -> bool:
        """Check one more row; False once the verdict is in (stop feeding, call finish())."""
        if self.report is not None:
            return False
        self._position += 1
        row = _parse(raw)
        if isinstance(row, str):
            if not self._pending:
                where = self._seq if self._seq is not None else self._position - 1
                self._fail("malformed", (where,), f"the row after row {where - 1} is unreadable: {row}")
                return False
            row = _Row(-1, "", "", False)  # unreadable lookahead: it links nowhere
        if self._pending:
            self._pending.append(row)
            if len(self._pending) > self._lookahead:
                self._diagnose()
            return self.report is None
        if self._seq is None:  # start=None: the first row sets where the chain is
            self._seq, self._prev = row.seq, row.prev
        if row.sound and row.seq == self._seq and row.prev == self._prev:
            self._accept(row)
        elif self._gaps and row.sound and row.seq > self._seq:
            self._accept(row)  # the rows between are in other namespaces: not here to check
        else:
            self._pending.append(row)
        return self.report is None

    def unreadable(self, problem: str) -> None:
        """The next row cannot even be read (e.g. a line of a file that is not JSON): that is the verdict,
        unless a problem found before it is."""
        if self.report is None and self._pending:
            self._diagnose()
        if self.report is None:
            where = self._seq if self._seq is not None else 0
            self._fail("malformed", (where,), f"the row after row {where - 1} is unreadable: {problem}")

    def finish(self) -> AuditReport:
        """The verdict, once every row was fed (or feed returned False)."""
        if self.report is None and self._pending:
            self._diagnose()
        if self.report is None and self._expect is not None and not self._anchored:
            self._end_anchor()
        if self.report is None:
            self.report = AuditReport(True, self._checked, self._head, None, tuple(self._notes))
        return self.report

    # ----------------------------------------------------------------------- internals

    def _fail(self, kind: ProblemKind, seqs: Sequence[int], message: str) -> None:
        self.report = AuditReport(False, self._checked, self._head, Problem(kind, tuple(seqs), message),
                                  tuple(self._notes))

    def _accept(self, row: _Row) -> None:
        self._checked += 1
        self._seq, self._prev = row.seq + 1, row.hash
        self._head = Head(row.seq, row.hash)
        self._recent.append(row)
        expect = self._expect
        if expect is not None and row.seq == expect.seq:
            self._anchored = True
            if row.hash != expect.hash:
                self._fail(
                    "anchor",
                    (row.seq,),
                    f"row {row.seq} does not match the anchor: its hash is {row.hash}, the anchor says "
                    f"{expect.hash}; the chain was rewritten (hashes recomputed) at or before row {row.seq}",
                )

    def _end_anchor(self) -> None:
        expect = self._expect
        assert expect is not None
        last = self._head.seq
        first = self._recent[0].seq if self._recent else None
        if self._gaps or (self._start is None and (first is None or expect.seq < first)):
            self._notes.append(f"the anchor (row {expect.seq}) is not among these rows: it was not checked")
            return
        if expect.seq == -1:
            return  # an empty chain was anchored: everything after it is an append
        self._fail(
            "deleted",
            (last + 1, expect.seq),
            f"the chain ends at row {last} but the anchor names row {expect.seq}: "
            f"{_rows(last + 1, expect.seq)} were deleted from the end",
        )

    def _diagnose(self) -> None:
        r, ahead = self._pending[0], self._pending[1:]
        s, p = self._seq, self._prev
        assert s is not None and p is not None
        sound_ahead = [q for q in ahead if q.sound]
        if r.seq < s:
            if any(q.seq == r.seq and q.hash == r.hash for q in self._recent):
                self._fail("duplicated", (r.seq,), f"row {r.seq} appears twice")
            else:
                self._fail("reordered", (r.seq, s - 1), f"row {r.seq} is out of order: it comes after row {s - 1}")
            return
        if r.seq > s and self._gaps:  # a gap is allowed here: r did not hash right
            self._fail("modified", (r.seq,), f"row {r.seq} was modified (its hash does not match its contents)")
            return
        if r.seq > s:
            self._gap(r, ahead, s, p)
            return
        # r.seq == s
        if not r.sound:
            nxt = ahead[0] if ahead else None
            if nxt is not None and nxt.sound and nxt.seq == s + 1 and nxt.prev == p:
                self._fail(
                    "inserted",
                    (s,),
                    f"row {s} was inserted: its hash does not match and row {s + 1} links past it to row {s - 1}",
                )
            else:
                self._fail("modified", (s,), f"row {s} was modified (its hash does not match its contents)")
            return
        # sound, at the right seq, linked to something else
        belongs = next((q for q in sound_ahead if q.prev == p), None)
        if belongs is not None:
            if belongs.seq == s + 1 and r.prev == belongs.hash:
                message = f"rows {s} and {s + 1} are out of order (swapped)"
            else:
                message = f"rows {s} and {belongs.seq} are out of order: the row at {belongs.seq} belongs at {s}"
            self._fail("reordered", (s, belongs.seq), message)
            return
        if s == 0 or (self._start is not None and s == self._start.seq + 1 and not self._recent):
            self._fail(
                "modified",
                (s,),
                f"row {s} does not continue the chain (its prev_hash is not {p[:12]}...): "
                "the beginning was replaced",
            )
            return
        for back in range(len(self._recent) - 2, -1, -1):
            q = self._recent[back]
            if q.hash == r.prev:
                self._fail(
                    "inserted",
                    tuple(range(q.seq + 1, s)),
                    f"{_rows(q.seq + 1, s - 1)} {'was' if q.seq + 1 == s - 1 else 'were'} inserted: "
                    f"row {s} links past {'it' if q.seq + 1 == s - 1 else 'them'} to row {q.seq}",
                )
                return
        self._fail(
            "modified",
            (s - 1,),
            f"row {s - 1} was modified and its hash recomputed to hide it: row {s} links to a different "
            f"row {s - 1} (or row {s} was replaced by a forged row)",
        )

    def _gap(self, r: _Row, ahead: list[_Row], s: int, p: str) -> None:
        """The next row's seq is past the one expected: rows moved or deleted."""
        moved = next((i for i, q in enumerate(ahead) if q.seq == s), None)
        if moved is not None:
            if moved == 0 and r.seq == s + 1:
                self._fail("reordered", (s, s + 1), f"rows {s} and {s + 1} are out of order (swapped)")
            else:
                after = ahead[moved - 1].seq if moved > 0 else r.seq
                self._fail("reordered", (s, after), f"row {s} is out of order: it comes after row {after}")
            return
        gone = _rows(s, r.seq - 1)
        verb = "was" if r.seq == s + 1 else "were"
        if s == 0:
            message = f"{gone} {verb} deleted: the chain starts at row {r.seq}"
        elif r.seq == s + 1:
            message = f"row {s} was deleted (a row between {s - 1} and {s + 1} is missing)"
        else:
            message = f"{gone} were deleted (rows between {s - 1} and {r.seq} are missing)"
        if r.sound and r.prev == p:
            message += f"; row {r.seq} links to row {s - 1}, so its seq was changed or the chain re-hashed"
        elif not r.sound:
            message += f"; row {r.seq} does not match its hash either"
        self._fail("deleted", tuple(range(s, r.seq)), message)


def verify(
    rows: Iterable[Mapping[str, Any]],
    *,
    start: Head | None = EMPTY,
    gaps: bool = False,
    expect_head: Head | None = None,
) -> AuditReport:
    """Verify rows given in seq order (see :class:`ChainVerifier` for the options)."""
    verifier = ChainVerifier(start=start, gaps=gaps, expect_head=expect_head)
    for raw in rows:
        if not verifier.feed(raw):
            break
    return verifier.finish()


def check_recorded_head(report: AuditReport, recorded: Head) -> AuditReport:
    """Compare an intact chain with the head its writer recorded (PostgreSQL's head row).

    A hand-made DELETE of the last rows or INSERT past the head leaves the chain valid but not
    the head record (unless that is edited too, which only an external anchor catches).
    """
    if not report.ok or report.head == recorded:
        return report
    head = report.head
    if recorded.seq > head.seq:
        problem = Problem(
            "deleted",
            tuple(range(head.seq + 1, recorded.seq + 1)),
            f"{_rows(head.seq + 1, recorded.seq)} {'was' if head.seq + 1 == recorded.seq else 'were'} deleted "
            f"from the end: the chain ends at row {head.seq}, the writer's head record says row {recorded.seq}",
        )
    elif recorded.seq < head.seq:
        problem = Problem(
            "inserted",
            tuple(range(recorded.seq + 1, head.seq + 1)),
            f"{_rows(recorded.seq + 1, head.seq)} {'was' if recorded.seq + 1 == head.seq else 'were'} inserted "
            f"past the writer's head record (row {recorded.seq}): appended outside AgentFlow",
        )
    else:
        problem = Problem(
            "modified",
            (head.seq,),
            f"row {head.seq} is not the row the writer recorded as its head (hash {recorded.hash[:12]}...): "
            "the tail was rewritten with recomputed hashes",
        )
    return dataclasses.replace(report, ok=False, problem=problem)

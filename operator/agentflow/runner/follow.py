"""Following local runs' journals as they grow (`agentflow events` without NATS).

    follower = JournalFollower(RunStore(Path(".agentflow")), workflow="report")
    for run, record in follower.poll():     # what was appended since the last poll, complete lines only
        ...

Each poll lists the runs again (a run started meanwhile is picked up from its first record), reads every journal
from where the last poll stopped, and returns the new records: runs oldest first, each run's in sequence order.
A line without its newline yet (being written, or torn by a kill -9 and truncated by the next writer) is left for
a later poll; a line that is not a journal record with more lines after it is damage: StoreError naming it.
Reading only: the follower never locks or writes a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import orjson

from ..engine.journal import JournalError, Record
from .store import RunInfo, RunStore, StoreError

__all__ = ["JournalFollower"]


@dataclasses.dataclass(slots=True)
class _Cursor:
    offset: int = 0  # bytes of complete lines read
    line: int = 0  # lines read


class JournalFollower:
    def __init__(self, store: RunStore, *, workflow: str | None = None, since: float | None = None) -> None:
        """``workflow``: only runs of that Workflow; ``since``: only records at or after (Unix seconds)."""
        self.store = store
        self.workflow = workflow
        self.since = since
        self._cursors: dict[str, _Cursor] = {}

    def poll(self) -> Iterator[tuple[RunInfo, Record]]:
        for info in self.store.list_runs():
            if self.workflow is not None and info.workflow != self.workflow:
                continue
            cursor = self._cursors.setdefault(info.run_id, _Cursor())
            for record in self._read(info, cursor):
                if self.since is None or record.event.at >= self.since:
                    yield info, record

    @staticmethod
    def _read(info: RunInfo, cursor: _Cursor) -> list[Record]:
        path = info.path / "journal.jsonl"
        try:
            with path.open("rb") as f:
                f.seek(cursor.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        lines = data.split(b"\n")
        tail = lines.pop()  # what follows the last newline: nothing, or a line still being written
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(Record.from_dict(orjson.loads(line)))
            except (orjson.JSONDecodeError, JournalError) as exc:
                if i == len(lines) - 1 and not tail:
                    break  # the last line, nothing after it: a torn write the next writer truncates; look again
                raise StoreError(f"{path}:{cursor.line + 1}: not a journal record ({exc}); the journal was damaged: "
                                 "check it with `agentflow verify`") from None
            cursor.offset += len(line) + 1
            cursor.line += 1
        return records

"""The audit chain in a JSON Lines file, for the local runner (no PostgreSQL): ``RUN_DIR/audit.jsonl``.

Same rows and hashes as the PostgreSQL chain (agentflow.audit.chain), one canonical JSON row per
line (agentflow.audit.files), so ``agentflow audit verify --file RUN_DIR/audit.jsonl`` checks it.
Each append takes an exclusive ``flock`` on the file, reads the head from its last line, writes
the rows and fsyncs before returning: several processes appending to one file keep one chain.
A torn last line (a kill -9 during a write; that append never returned) is cut off first.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

import orjson

from ..audit.chain import EMPTY, Head, link
from ..audit.events import check_event
from ..audit.files import jsonl_line
from ..audit.records import AuditEvent
from .errors import StorageError

__all__ = ["JsonlAuditLog"]

_TAIL = 64 * 1024  # a row is far shorter than this, unless its data is large: then read more


class JsonlAuditLog:
    """An AuditSink appending to one JSON Lines file (created with its folder if missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"JsonlAuditLog({str(self.path)!r})"

    async def append(self, events: Sequence[AuditEvent]) -> None:
        """Chain ``events`` after the file's last row and fsync. AuditEventError if one is invalid."""
        if not events:
            return
        for i, event in enumerate(events):
            check_event(event, f"events[{i}]")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            head, end = self._head(fd)
            data = b"".join(jsonl_line(r.to_dict()) for r in link(head, events))
            os.ftruncate(fd, end)  # drops a torn last line, if any
            os.lseek(fd, end, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            raise StorageError(f"append to the audit file {self.path}: {e.strerror or e}") from e
        finally:
            os.close(fd)  # releases the lock

    def head(self) -> Head:
        """The last row's seq and hash (EMPTY for a missing or empty file)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return EMPTY
        try:
            return self._head(fd)[0]
        finally:
            os.close(fd)

    def _head(self, fd: int) -> tuple[Head, int]:
        """The head and where the complete lines end (a torn last line starts there)."""
        size = os.fstat(fd).st_size
        want = _TAIL
        while True:
            start = max(0, size - want)
            tail = os.pread(fd, size - start, start)
            end = tail.rfind(b"\n") + 1  # past the last complete line; 0 if none
            prev = tail.rfind(b"\n", 0, max(end - 1, 0)) + 1
            if start > 0 and (end == 0 or prev == 0):
                want *= 4  # the last complete line is longer than what was read
                continue
            if end == 0:
                return EMPTY, 0
            line = tail[prev:end]
            try:
                row = orjson.loads(line)
                head = Head(int(row["seq"]), str(row["hash"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise StorageError(
                    f"the audit file {self.path} does not end with a row; it was edited: run "
                    f"`agentflow audit verify --file {self.path}`"
                ) from None
            return head, start + end

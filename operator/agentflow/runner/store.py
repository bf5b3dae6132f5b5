"""Runs on local disk: the journal, the manifests a run started with, and its inbox.

Layout (ROOT is ``.agentflow`` in the working directory unless the caller says
otherwise)::

    ROOT/runs/RUN_ID/
        meta.json        runId, workflow, created (unix seconds), sources, ...
        manifests.yaml   every resource the run was started with
        journal.jsonl    one canonical JSON record per line, append-only, fsync per batch
        inbox/           events posted by other processes (approvals, cancels), one file each
        lock             flock'ed by the process driving the run; holds its pid

A run directory appears complete or not at all (built under a temporary name,
then renamed). A kill -9 can leave a torn last journal line: readers drop it and
the next writer truncates it away. Only the holder of :meth:`RunDir.lock`
appends; anyone may :meth:`RunDir.post` to the inbox.

Errors::

    StoreError   any failure; the message names the run or file and says what to do
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..engine.journal import GENESIS, JournalError, Record, VerifyReport, canonical_json, verify
from ..engine.values import Event, EventType

__all__ = ["RunDir", "RunInfo", "RunStore", "StoreError"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_EVENT_FIELDS = frozenset({"type", "node", "at", "data"})


class StoreError(Exception):
    """A run cannot be created, found, read or written; the message says what to do."""


@dataclasses.dataclass(frozen=True, slots=True)
class RunInfo:
    """One line of ``agentflow runs``."""

    run_id: str
    workflow: str
    created: float
    path: Path


def _check_run_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise StoreError(
            f"run id {run_id!r} is not valid: use letters, digits, '.', '_' and '-' "
            "(at most 200 characters, starting with a letter or digit)"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` and fsync it (the caller renames or fsyncs the directory)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


class RunStore:
    """All runs under ``ROOT/runs``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runs_path = self.root / "runs"

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def create(self, run_id: str, manifests_yaml: str, meta: Mapping[str, Any]) -> RunDir:
        """Create a run directory, all at once: either it exists complete or not at all."""
        _check_run_id(run_id)
        target = self.runs_path / run_id
        if target.exists():
            raise StoreError(f"run {run_id!r} already exists under {self.runs_path}; choose another run id")
        full = {**meta, "runId": run_id}
        full.setdefault("created", time.time())
        created = full["created"]
        if isinstance(created, bool) or not isinstance(created, int | float):
            raise StoreError(f"meta.created must be a number of seconds since the epoch, got {created!r}")
        try:
            canonical_json(full)  # only JSON values, so meta.json reads back as written
        except (TypeError, ValueError) as e:
            raise StoreError(f"meta of run {run_id!r}: {e}") from None
        meta_json = orjson.dumps(full, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        try:
            self.runs_path.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".creating-{run_id}-", dir=self.runs_path))
        except OSError as e:
            raise StoreError(f"cannot create the run directory under {self.runs_path}: {e}") from e
        try:
            _write_durably(tmp / "manifests.yaml", manifests_yaml.encode("utf-8"))
            _write_durably(tmp / "meta.json", meta_json)
            _write_durably(tmp / "journal.jsonl", b"")
            (tmp / "inbox").mkdir()
            _fsync_dir(tmp)
            os.rename(tmp, target)
            _fsync_dir(self.runs_path)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise StoreError(f"run {run_id!r} already exists under {self.runs_path}; choose another run id") from e
            if isinstance(e, OSError | UnicodeError):
                raise StoreError(f"cannot create run {run_id!r} under {self.runs_path}: {e}") from e
            raise
        return RunDir(target, run_id, full, manifests_yaml)

    def open(self, run_id: str) -> RunDir:
        """An existing run; StoreError if there is none by that id."""
        _check_run_id(run_id)
        path = self.runs_path / run_id
        meta = self._read_meta(path)
        if meta is None:
            raise StoreError(f"run {run_id!r} not found under {self.runs_path}; list runs with `agentflow runs`")
        try:
            manifests = (path / "manifests.yaml").read_text(encoding="utf-8")
        except (OSError, UnicodeError) as e:
            raise StoreError(f"cannot read {path / 'manifests.yaml'}: {e}; the run directory is damaged") from e
        return RunDir(path, run_id, meta, manifests)

    def list_runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        try:
            names = os.listdir(self.runs_path)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StoreError(f"cannot list {self.runs_path}: {e}") from e
        infos = []
        for name in names:
            if not _RUN_ID.match(name):  # .creating-* leftovers and stray files
                continue
            meta = self._read_meta(self.runs_path / name)
            if meta is None:
                continue
            created = meta.get("created")
            if isinstance(created, bool) or not isinstance(created, int | float):
                created = 0.0
            infos.append(RunInfo(name, str(meta.get("workflow", "")), float(created), self.runs_path / name))
        infos.sort(key=lambda i: (i.created, i.run_id))
        return infos

    def latest(self) -> RunDir | None:
        """The most recently created run, if any."""
        runs = self.list_runs()
        return self.open(runs[-1].run_id) if runs else None

    def resolve(self, ref: str) -> RunDir:
        """A run by full id, unique id prefix, or ``latest``."""
        if ref == "latest":
            run = self.latest()
            if run is None:
                raise StoreError(f"no runs under {self.runs_path} yet; start one with `agentflow run FILE.yaml`")
            return run
        if _RUN_ID.match(ref) and (self.runs_path / ref / "meta.json").is_file():
            return self.open(ref)
        matches = [i.run_id for i in self.list_runs() if ref and i.run_id.startswith(ref)]
        if len(matches) == 1:
            return self.open(matches[0])
        if not matches:
            raise StoreError(f"run {ref!r} not found under {self.runs_path}; list runs with `agentflow runs`")
        shown = ", ".join(matches[:5]) + (f" and {len(matches) - 5} more" if len(matches) > 5 else "")
        raise StoreError(f"run prefix {ref!r} is ambiguous: it matches {shown}; give more of the run id")

    @staticmethod
    def _read_meta(path: Path) -> dict[str, Any] | None:
        """meta.json of a run directory; None if there is no run there."""
        meta_path = path / "meta.json"
        try:
            meta = orjson.loads(meta_path.read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, orjson.JSONDecodeError) as e:
            raise StoreError(f"cannot read {meta_path}: {e}; fix the file or remove the run directory") from e
        if not isinstance(meta, dict):
            raise StoreError(f"{meta_path} is not a JSON object; fix the file or remove the run directory")
        return meta


@dataclasses.dataclass(slots=True)
class _Tail:
    """Where the next record goes, as last seen on disk by this process."""

    valid_size: int  # bytes of complete lines
    file_size: int  # bytes on disk, torn tail included
    head: str
    next_seq: int


class RunDir:
    """One run on disk. Read it from anywhere; append only inside :meth:`lock`."""

    def __init__(self, path: Path, run_id: str, meta: Mapping[str, Any], manifests_yaml: str) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.meta: dict[str, Any] = dict(meta)
        self.manifests_yaml = manifests_yaml
        self.journal_path = self.path / "journal.jsonl"
        self.inbox_path = self.path / "inbox"
        self._lock_fd: int | None = None
        self._tail: _Tail | None = None
        self._posted = 0

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ journal

    def _scan(self, *, strict: bool = True) -> tuple[list[tuple[int, Any]], _Tail, str | None]:
        """Parse journal.jsonl into (line number, JSON value) pairs, dropping a torn last line.

        A line that is not JSON before the last one is damage, not a torn write:
        StoreError when ``strict``, else parsing stops there and the third item
        describes it.
        """
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as e:
            raise StoreError(f"cannot read {self.journal_path}: {e}") from e
        lines = data.split(b"\n")
        partial = lines.pop()  # b"" when the file ends with a newline
        valid_size = len(data) - len(partial)
        rows: list[tuple[int, Any]] = []
        damage = None
        for i, line in enumerate(lines):
            try:
                rows.append((i + 1, orjson.loads(line)))
            except orjson.JSONDecodeError as e:
                if i == len(lines) - 1 and not partial:  # a torn last line that happens to end in "\n"
                    valid_size -= len(line) + 1
                    break
                damage = f"line {i + 1} is not valid JSON ({e})"
                if strict:
                    raise StoreError(
                        f"{self.journal_path}:{i + 1}: corrupt journal line ({e}); the journal was damaged "
                        "after it was written: restore it from a copy, or inspect it with `agentflow verify`"
                    ) from None
                break
        head, next_seq = GENESIS, 0
        if rows:
            last = rows[-1][1]
            if isinstance(last, dict) and isinstance(last.get("hash"), str) and isinstance(last.get("seq"), int):
                head, next_seq = last["hash"], last["seq"] + 1
        return rows, _Tail(valid_size, len(data), head, next_seq), damage

    def read_records(self) -> list[Record]:
        """Every complete record of the journal, oldest first (the chain is not verified).

        StoreError names the line of a record that is not JSON or not a journal record.
        """
        rows, tail, _ = self._scan()
        records = []
        for line, row in rows:
            try:
                records.append(Record.from_dict(row))
            except JournalError as e:
                raise StoreError(f"{self.journal_path}:{line}: {e}") from None
        self._tail = tail
        return records

    def verify(self, *, head: str | None = None, head_seq: int | None = None) -> VerifyReport:
        """Check the hash chain of the journal as it is on disk (a torn last line is ignored).

        ``head`` (and ``head_seq``): the last record's hash (and seq) kept from an earlier verify; the journal
        must end at that very record, so a truncated tail or records appended since fail too.
        Damage is reported, not raised: a line that is not JSON is a failed report too.
        """
        rows, _, damage = self._scan(strict=False)
        report = verify((row for _, row in rows), head=None if damage else head)
        if damage is None and report.ok and head_seq is not None and report.head_seq != head_seq:
            return VerifyReport(False, report.checked, head_seq, f"the expected head is record {head_seq} but its "
                                f"hash is that of record {report.head_seq}: the head given is not one verify printed")
        if damage is None or not report.ok:
            return report
        return VerifyReport(False, len(rows), len(rows), f"{damage}: the journal was damaged or edited")

    def append(self, records: Sequence[Record]) -> None:
        """Write a batch of records durably: one write, one fsync, before the caller acts on them."""
        if not records:
            return
        if self._lock_fd is None:
            raise StoreError(
                f"cannot append to run {self.run_id!r} without its lock; drive the run inside `with run_dir.lock():`"
            )
        tail = self._tail
        if tail is None:
            _, tail, _ = self._scan()
        expected_seq, expected_prev = tail.next_seq, tail.head
        for r in records:
            if r.seq != expected_seq or r.prev != expected_prev:
                raise StoreError(
                    f"record {r.seq} does not continue the journal of run {self.run_id!r} (expected seq "
                    f"{expected_seq} after {expected_prev[:12]}...); build the Journal from read_records()"
                )
            expected_seq, expected_prev = r.seq + 1, r.hash
        payload = b"".join([r.to_json() + b"\n" for r in records])
        self._tail = None  # unknown until the write succeeded
        try:
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                if tail.file_size > tail.valid_size:  # drop the torn line a kill -9 left behind
                    os.ftruncate(fd, tail.valid_size)
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise StoreError(
                f"cannot write {self.journal_path}: {e}; the run stopped before acting on these events, "
                "free disk space or fix permissions and resume it"
            ) from e
        size = tail.valid_size + len(payload)
        self._tail = _Tail(size, size, expected_prev, expected_seq)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive right to drive this run (and append to its journal); fails at once if taken."""
        return self._locked()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock_fd is not None:
            raise StoreError(f"run {self.run_id!r} is already locked through this RunDir; lock() does not nest")
        lock_path = self.path / "lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StoreError(f"cannot open {lock_path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"run {self.run_id!r} is being driven by another process (pid {holder}); "
                "wait for it to finish, or stop that process and resume the run"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._lock_fd, self._tail = fd, None
            yield
        finally:
            self._lock_fd, self._tail = None, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # releases the flock

    # ------------------------------------------------------------------ inbox

    def post(self, event: Event) -> Path:
        """Queue an event for the process driving the run; atomic (tmp file, then rename)."""
        body = canonical_json({"type": event.type.value, "node": event.node, "at": event.at, "data": event.data})
        self._posted += 1
        name = f"{time.time_ns():020d}-{self._posted:06d}-{secrets.token_hex(4)}.json"
        final, tmp = self.inbox_path / name, self.inbox_path / f".{name}.tmp"
        try:
            self.inbox_path.mkdir(exist_ok=True)
            _write_durably(tmp, body)
            os.rename(tmp, final)
            _fsync_dir(self.inbox_path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"cannot post to the inbox of run {self.run_id!r} ({self.inbox_path}): {e}") from e
        return final

    def inbox(self) -> list[tuple[Path, Event]]:
        """Posted events not yet acknowledged, oldest first."""
        try:
            names = sorted(n for n in os.listdir(self.inbox_path) if n.endswith(".json") and not n.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StoreError(f"cannot read the inbox {self.inbox_path}: {e}") from e
        items = []
        for name in names:
            path = self.inbox_path / name
            try:
                raw = path.read_bytes()
            except FileNotFoundError:  # acknowledged meanwhile
                continue
            except OSError as e:
                raise StoreError(f"cannot read {path}: {e}") from e
            items.append((path, _inbox_event(path, raw)))
        return items

    def ack(self, paths: Iterable[Path]) -> None:
        """Delete inbox files whose events are now in the journal."""
        removed = False
        for p in paths:
            path = Path(p)
            if path.parent != self.inbox_path:
                raise StoreError(f"{path} is not in the inbox of run {self.run_id!r}; pass paths from inbox()")
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                pass
            except OSError as e:
                raise StoreError(f"cannot remove {path} from the inbox: {e}") from e
        if removed:
            _fsync_dir(self.inbox_path)


def _inbox_event(path: Path, raw: bytes) -> Event:
    """Parse one inbox file; StoreError naming it if someone wrote it by hand and got it wrong."""
    fix = "delete the file and post the event again (agentflow approve / cancel)"
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise StoreError(f"{path}: not JSON ({e}); {fix}") from None
    if not isinstance(d, dict) or d.keys() != _EVENT_FIELDS:
        raise StoreError(f"{path}: expected an object with exactly {sorted(_EVENT_FIELDS)}; {fix}")
    try:
        kind = EventType(d["type"])
    except ValueError:
        raise StoreError(f"{path}: unknown event type {d['type']!r}; {fix}") from None
    node, at, data = d["node"], d["at"], d["data"]
    if node is not None and not isinstance(node, str):
        raise StoreError(f"{path}: node must be a string or null; {fix}")
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise StoreError(f"{path}: at must be a number; {fix}")
    if not isinstance(data, dict):
        raise StoreError(f"{path}: data must be an object; {fix}")
    return Event(kind, node, data, at)

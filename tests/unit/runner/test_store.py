"""Runs on disk: atomic creation, the journal file, the lock, the inbox, finding runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from agentflow.engine.journal import Journal, Record, verify
from agentflow.engine.values import Event, EventType
from agentflow.runner import store as store_module
from agentflow.runner.store import RunDir, RunStore, StoreError

MANIFESTS = "apiVersion: agentflow.dev/v1alpha1\nkind: Workflow\nmetadata: {name: demo}\n"


def events(n: int, start: int = 0) -> list[Event]:
    return [
        Event(EventType.step_succeeded, f"s{i}", {"attempt": 1, "output": f"héllo {i}"}, 100.0 + i)
        for i in range(start, start + n)
    ]


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / ".agentflow")


@pytest.fixture
def run(store: RunStore) -> RunDir:
    return store.create("demo-1", MANIFESTS, {"workflow": "demo", "created": 1000.0, "sources": ["wf.yaml"]})


def write_events(run: RunDir, n: int) -> Journal:
    with run.lock():
        journal = Journal(run.read_records())
        run.append(journal.extend(events(n, len(journal))))
    return journal


# ------------------------------------------------------------------ creating and finding runs


class TestCreate:
    def test_creates_a_complete_run_directory(self, store: RunStore, run: RunDir) -> None:
        path = store.root / "runs" / "demo-1"
        assert run.path == path and run.run_id == "demo-1"
        assert sorted(p.name for p in path.iterdir()) == [
            "inbox",
            "journal.jsonl",
            "manifests.yaml",
            "meta.json",
        ]
        assert (path / "manifests.yaml").read_text() == MANIFESTS
        assert json.loads((path / "meta.json").read_text()) == {
            "runId": "demo-1",
            "workflow": "demo",
            "created": 1000.0,
            "sources": ["wf.yaml"],
        }
        reopened = store.open("demo-1")
        assert reopened.meta == run.meta and reopened.manifests_yaml == MANIFESTS
        assert reopened.read_records() == []

    def test_existing_run_is_not_overwritten(self, store: RunStore, run: RunDir) -> None:
        with pytest.raises(StoreError, match="'demo-1' already exists"):
            store.create("demo-1", "other", {})
        assert store.open("demo-1").manifests_yaml == MANIFESTS

    def test_created_defaults_to_now(self, store: RunStore) -> None:
        before = time.time()
        created = store.create("r", MANIFESTS, {"workflow": "w"}).meta["created"]
        assert before <= created <= time.time()

    @pytest.mark.parametrize("run_id", ["", "../escape", "a/b", ".hidden", "x" * 201, "sp ace"])
    def test_bad_run_ids_are_refused(self, store: RunStore, run_id: str) -> None:
        with pytest.raises(StoreError, match=r"run id .* is not valid"):
            store.create(run_id, MANIFESTS, {})
        with pytest.raises(StoreError, match="is not valid"):
            store.open(run_id)

    def test_non_json_meta_is_refused_before_anything_is_written(self, store: RunStore) -> None:
        with pytest.raises(StoreError, match=r"meta of run 'r': sources: type 'set'"):
            store.create("r", MANIFESTS, {"sources": {"a.yaml"}})
        assert not (store.root / "runs" / "r").exists()

    def test_failure_midway_leaves_nothing(self, store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
        real = store_module._write_durably

        def fail_on_meta(path: Path, data: bytes) -> None:
            if path.name == "meta.json":
                raise OSError(28, "No space left on device")
            real(path, data)

        monkeypatch.setattr(store_module, "_write_durably", fail_on_meta)
        with pytest.raises(StoreError, match=r"cannot create run 'r'.*No space left"):
            store.create("r", MANIFESTS, {})
        assert os.listdir(store.root / "runs") == []
        assert store.list_runs() == []


class TestFind:
    @pytest.fixture
    def three(self, store: RunStore) -> RunStore:
        # created out of name order: listing goes by creation time
        store.create("support-b", MANIFESTS, {"workflow": "support", "created": 30.0})
        store.create("support-a", MANIFESTS, {"workflow": "support", "created": 10.0})
        store.create("fraud-x", MANIFESTS, {"workflow": "fraud", "created": 20.0})
        return store

    def test_list_runs_sorted_by_created(self, three: RunStore) -> None:
        infos = three.list_runs()
        assert [(i.run_id, i.workflow, i.created) for i in infos] == [
            ("support-a", "support", 10.0),
            ("fraud-x", "fraud", 20.0),
            ("support-b", "support", 30.0),
        ]
        assert infos[0].path == three.root / "runs" / "support-a"

    def test_unfinished_creations_are_not_runs(self, three: RunStore) -> None:
        (three.root / "runs" / ".creating-zzz-123").mkdir()
        (three.root / "runs" / "stray-dir").mkdir()
        assert len(three.list_runs()) == 3

    def test_latest(self, three: RunStore, store: RunStore) -> None:
        latest = three.latest()
        assert latest is not None and latest.run_id == "support-b"
        assert RunStore(store.root / "elsewhere").latest() is None

    def test_resolve_full_id_prefix_and_latest(self, three: RunStore) -> None:
        assert three.resolve("fraud-x").run_id == "fraud-x"
        assert three.resolve("fr").run_id == "fraud-x"
        assert three.resolve("support-a").run_id == "support-a"
        assert three.resolve("latest").run_id == "support-b"

    def test_ambiguous_prefix_names_the_candidates(self, three: RunStore) -> None:
        with pytest.raises(StoreError, match=r"'support' is ambiguous: it matches support-a, support-b"):
            three.resolve("support")

    def test_unknown_run_says_how_to_list_runs(self, three: RunStore) -> None:
        with pytest.raises(StoreError, match=r"run 'nope' not found under .*runs; list runs with `agentflow runs`"):
            three.resolve("nope")
        with pytest.raises(StoreError, match="not found"):
            three.open("nope")

    def test_latest_of_an_empty_store(self, store: RunStore) -> None:
        with pytest.raises(StoreError, match=r"no runs under .* yet; start one with `agentflow run"):
            store.resolve("latest")

    def test_corrupt_meta_is_named(self, three: RunStore) -> None:
        meta = three.root / "runs" / "fraud-x" / "meta.json"
        meta.write_text("{not json")
        with pytest.raises(StoreError, match=f"cannot read {meta}.*fix the file or remove the run directory"):
            three.list_runs()


# ------------------------------------------------------------------ the journal file


class TestJournalFile:
    def test_append_and_read_back(self, run: RunDir) -> None:
        journal = write_events(run, 5)
        assert run.read_records() == list(journal.records)
        lines = run.journal_path.read_bytes().split(b"\n")
        assert lines[-1] == b"" and len(lines) == 6  # one line per record, newline-terminated
        assert lines[0] == journal.records[0].to_json()
        assert run.verify().ok and run.verify(head=journal.head).ok

    def test_a_later_process_continues_the_chain(self, store: RunStore, run: RunDir) -> None:
        write_events(run, 3)
        again = write_events(store.open("demo-1"), 4)
        assert [r.seq for r in store.open("demo-1").read_records()] == list(range(7))
        assert verify(r.to_dict() for r in again.records).ok

    def test_batch_is_one_write_and_one_fsync(self, run: RunDir, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[str] = []
        real_write, real_fsync = os.write, os.fsync

        def write(fd: int, data: bytes) -> int:
            calls.append("write")
            return real_write(fd, data)

        def fsync(fd: int) -> None:
            calls.append("fsync")
            real_fsync(fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)
        with run.lock():
            run.append(Journal().extend(events(50)))
        assert calls == ["write", "fsync"]

    def test_append_needs_the_lock(self, run: RunDir) -> None:
        with pytest.raises(StoreError, match=r"without its lock; drive the run inside `with run_dir.lock\(\):`"):
            run.append(Journal().extend(events(1)))
        assert run.journal_path.read_bytes() == b""

    def test_append_refuses_records_that_do_not_continue_the_file(self, run: RunDir) -> None:
        write_events(run, 2)
        with run.lock(), pytest.raises(StoreError, match="record 0 does not continue the journal"):
            run.append(Journal().extend(events(1)))  # a fresh chain: seq 0 again
        assert len(run.read_records()) == 2

    @pytest.mark.parametrize("torn", [b'{"at":105.0,"data":{"att', b'{"at":1\n', b"\x00\x00\x00"])
    def test_torn_last_line_is_dropped_then_truncated(self, run: RunDir, torn: bytes) -> None:
        journal = write_events(run, 3)
        good = run.journal_path.read_bytes()
        with run.journal_path.open("ab") as f:
            f.write(torn)
        assert run.read_records() == list(journal.records)
        assert run.journal_path.read_bytes() == good + torn  # reading changes nothing
        assert run.verify().ok
        with run.lock():
            run.append(Journal(run.read_records()).extend(events(1, 3)))
        data = run.journal_path.read_bytes()
        assert data.startswith(good) and data.count(b"\n") == 4 and torn not in data
        assert verify(json.loads(line) for line in data.splitlines()).ok

    def test_torn_line_is_truncated_even_without_reading_first(self, run: RunDir) -> None:
        journal = write_events(run, 2)
        with run.journal_path.open("ab") as f:
            f.write(b'{"partial')
        with run.lock():
            run.append(Journal(journal.records).extend(events(1, 2)))
        assert [r.seq for r in run.read_records()] == [0, 1, 2]

    def test_corrupt_middle_line_is_reported_with_its_number(self, run: RunDir) -> None:
        write_events(run, 4)
        lines = run.journal_path.read_bytes().split(b"\n")
        lines[1] = lines[1][:20] + b"#garbage#" + lines[1][20:]
        run.journal_path.write_bytes(b"\n".join(lines))
        with pytest.raises(StoreError, match=r"journal.jsonl:2: corrupt journal line"):
            run.read_records()
        report = run.verify()
        assert not report.ok and report.bad_seq == 1 and report.checked == 1
        assert report.problem is not None and report.problem.startswith("line 2 is not valid JSON")
        with run.lock(), pytest.raises(StoreError, match="corrupt journal line"):
            run.append(Journal().extend(events(1)))

    def test_record_of_the_wrong_shape_is_reported_with_its_line(self, run: RunDir) -> None:
        write_events(run, 2)
        with run.journal_path.open("ab") as f:
            f.write(b'{"seq": 2}\n')
        with pytest.raises(StoreError, match=r"journal.jsonl:3: bad journal record: missing field"):
            run.read_records()

    def test_verify_finds_an_edited_line(self, run: RunDir) -> None:
        write_events(run, 4)
        text = run.journal_path.read_text().replace("héllo 2", "hello 2")
        run.journal_path.write_text(text)
        report = run.verify()
        assert not report.ok and report.bad_seq == 2


# ------------------------------------------------------------------ the lock


class TestLock:
    def test_second_holder_in_the_same_process_is_refused(self, store: RunStore, run: RunDir) -> None:
        other = store.open("demo-1")
        with run.lock():
            assert (run.path / "lock").read_text().strip() == str(os.getpid())
            refused = rf"being driven by another process \(pid {os.getpid()}\)"
            with pytest.raises(StoreError, match=refused), other.lock():
                pass
        with other.lock():  # released on exit
            pass

    def test_lock_does_not_nest(self, run: RunDir) -> None:
        with run.lock(), pytest.raises(StoreError, match="does not nest"), run.lock():
            pass

    def test_another_process_is_refused_while_held(self, store: RunStore, run: RunDir) -> None:
        script = textwrap.dedent(f"""
            from pathlib import Path
            from agentflow.runner.store import RunStore, StoreError
            try:
                with RunStore(Path({str(store.root)!r})).open("demo-1").lock():
                    print("locked")
            except StoreError as e:
                print(e)
        """)
        with run.lock():
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
            assert f"being driven by another process (pid {os.getpid()})" in out.stdout
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "locked"

    def test_lock_is_released_when_the_holder_is_killed(self, store: RunStore, run: RunDir) -> None:
        script = textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from agentflow.runner.store import RunStore
            with RunStore(Path({str(store.root)!r})).open("demo-1").lock():
                print("locked", flush=True)
                time.sleep(60)
        """)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "locked"
            with pytest.raises(StoreError, match=f"pid {child.pid}"), run.lock():
                pass
        finally:
            child.kill()
            child.wait()
        with run.lock():
            pass


# ------------------------------------------------------------------ the inbox


class TestInbox:
    def test_posted_events_come_back_in_order(self, run: RunDir) -> None:
        posted = [
            Event(
                EventType.approval_decided,
                f"gate{i}",
                {"approved": True, "by": "ana", "reason": "ok"},
                float(i),
            )
            for i in range(12)
        ]
        paths = [run.post(e) for e in posted]
        items = run.inbox()
        assert [p for p, _ in items] == paths
        assert [e for _, e in items] == posted
        assert all(p.parent == run.path / "inbox" for p in paths)

    def test_post_is_atomic_and_unfinished_files_are_ignored(self, run: RunDir) -> None:
        (run.path / "inbox" / ".123.json.tmp").write_text('{"type": "Cancel')
        path = run.post(Event(EventType.cancel_requested, None, {"by": "bo", "reason": "late"}))
        assert run.inbox() == [(path, Event(EventType.cancel_requested, None, {"by": "bo", "reason": "late"}))]
        assert sorted(os.listdir(run.path / "inbox")) == [".123.json.tmp", path.name]

    def test_ack_removes_consumed_events(self, run: RunDir) -> None:
        first = run.post(Event(EventType.suspended, None, {"by": "a"}))
        second = run.post(Event(EventType.resumed, None, {"by": "a"}))
        run.ack([first])
        assert [p for p, _ in run.inbox()] == [second]
        run.ack([first, second])  # acknowledging twice is harmless
        assert run.inbox() == []

    def test_ack_refuses_paths_outside_the_inbox(self, run: RunDir) -> None:
        with pytest.raises(StoreError, match="is not in the inbox"):
            run.ack([run.path / "meta.json"])
        assert (run.path / "meta.json").exists()

    def test_posts_from_another_run_dir_object_are_seen(self, store: RunStore, run: RunDir) -> None:
        store.open("demo-1").post(Event(EventType.cancel_requested, None, {"by": "x", "reason": ""}))
        assert [e.type for _, e in run.inbox()] == [EventType.cancel_requested]

    @pytest.mark.parametrize(
        ("content", "words"),
        [
            ("not json", "not JSON"),
            ('{"type": "Nope", "node": null, "at": 0, "data": {}}', "unknown event type 'Nope'"),
            ('{"type": "Resumed", "node": null, "at": 0}', "exactly"),
            ('{"type": "Resumed", "node": 1, "at": 0, "data": {}}', "node must be"),
            ('{"type": "Resumed", "node": null, "at": "x", "data": {}}', "at must be"),
        ],
    )
    def test_hand_written_garbage_is_named(self, run: RunDir, content: str, words: str) -> None:
        bad = run.path / "inbox" / "00000000000000000001-000001-abcd.json"
        bad.write_text(content)
        with pytest.raises(StoreError) as info:
            run.inbox()
        assert str(bad) in str(info.value) and words in str(info.value)
        assert "delete the file" in str(info.value)


# ------------------------------------------------------------------ kill -9 while appending

APPENDER = """
import sys
from pathlib import Path
from agentflow.engine.journal import Journal
from agentflow.engine.values import Event, EventType
from agentflow.runner.store import RunStore

run = RunStore(Path(sys.argv[1])).open(sys.argv[2])
with run.lock():
    journal = Journal(run.read_records())
    i = 0
    while True:
        batch = [Event(EventType.step_succeeded, f"n{i}-{k}", {"output": "x" * (i % 5000), "i": i}, float(i))
                 for k in range(1 + i % 3)]
        run.append(journal.extend(batch))
        i += 1
        if i == 20:
            print("running", flush=True)
"""


@pytest.mark.parametrize("round_", range(3))
def test_kill_9_while_appending_leaves_a_journal_that_verifies(run: RunDir, round_: int) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(run.path.parent.parent), run.run_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "running"
        time.sleep(0.05 * (round_ + 1))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    records = run.read_records()
    assert len(records) >= 20
    rows: list[dict[str, Any]] = [r.to_dict() for r in records]
    assert verify(rows).ok and run.verify().ok
    # The next driver picks up where the killed one stopped.
    journal = Journal(records)
    with run.lock():
        run.append(journal.extend(events(2)))
    assert run.verify(head=journal.head).ok
    assert [r.seq for r in run.read_records()] == list(range(len(records) + 2))


def test_records_read_back_equal_the_records_written(run: RunDir) -> None:
    journal = write_events(run, 3)
    back = run.read_records()
    assert back == list(journal.records)
    assert all(isinstance(r, Record) for r in back)

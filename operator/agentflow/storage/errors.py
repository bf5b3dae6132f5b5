"""The errors of agentflow.storage, apart from any database client (the JSONL audit file raises them too)::

    StorageError            base: an operation failed or was refused; the message says what to do
    ├── StorageUnavailable  the database cannot be reached or the connection broke: try again later
    ├── JournalConflict     another writer extended the run's journal first (fencing)
    └── InvalidValue        the database refuses a value we sent; retrying cannot help
"""

from __future__ import annotations

__all__ = ["InvalidValue", "JournalConflict", "StorageError", "StorageUnavailable"]


class StorageError(Exception):
    """PostgreSQL failed or refused an operation; the message names it and says what to do."""


class StorageUnavailable(StorageError):
    """PostgreSQL cannot be reached or the connection broke: try again later."""


class JournalConflict(StorageError):
    """Another writer appended to this run's journal first: reload it and decide again."""

    def __init__(self, run_uid: str, seq: int, detail: str) -> None:
        super().__init__(
            f"journal of run {run_uid!r}: record {seq} was not appended because {detail}; another writer "
            "extended this run first (fencing): reload the journal with load_journal() and decide again, "
            "do not retry this batch"
        )
        self.run_uid = run_uid
        self.seq = seq


class InvalidValue(StorageError):
    """PostgreSQL refuses a value we sent; retrying the same value cannot help."""

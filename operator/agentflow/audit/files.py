"""The audit chain as text: JSON Lines and CSV, written by exports and read back to verify them. Pure.

JSON Lines: one row per line, the canonical JSON of ``{seq, at, kind, actor, namespace, subject,
decision, data, prev_hash, hash}`` (the local runner's ``audit.jsonl`` is the same format).
CSV: a header line of those names, ``data`` as its canonical JSON text. Both carry every hash, so
``agentflow audit verify --file`` checks an export with no database.

Errors::

    AuditFileError(ValueError)   a line that is not a row; str() names the line number and the field
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

import orjson

from ..engine.canonical import canonical_json
from .chain import ROW_FIELDS

__all__ = ["AuditFileError", "FileFormat", "csv_header", "csv_line", "jsonl_line", "read_rows", "sniff_format"]

FileFormat = Literal["jsonl", "csv"]


class AuditFileError(ValueError):
    """A line of an audit file that cannot be read as a row."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line


def jsonl_line(row: Mapping[str, Any]) -> bytes:
    """One JSON Lines line (newline included)."""
    return canonical_json({k: row[k] for k in ROW_FIELDS}) + b"\n"


def _csv(values: Iterable[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def csv_header() -> str:
    return _csv(ROW_FIELDS)


def csv_line(row: Mapping[str, Any]) -> str:
    """One CSV record (newline included); ``data`` is its canonical JSON."""
    return _csv(canonical_json(row[k]).decode() if k == "data" else row[k] for k in ROW_FIELDS)


def sniff_format(first_line: str) -> FileFormat:
    """``jsonl`` when the first line is a JSON object, else ``csv``."""
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


def read_rows(lines: Iterable[str], fmt: FileFormat) -> Iterator[dict[str, Any]]:
    """Rows from the lines of a file, lazily. AuditFileError names the line of a row it cannot read.

    A row whose values are wrong (a bad hash, a changed seq) is returned as it is: finding those is
    the verifier's job. Blank lines are skipped.
    """
    if fmt == "jsonl":
        yield from _read_jsonl(lines)
    else:
        yield from _read_csv(lines)


def _read_jsonl(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise AuditFileError(number, f"not JSON ({e}); the file may have been cut short or edited") from None
        if not isinstance(row, dict):
            raise AuditFileError(number, f"expected a JSON object, got {type(row).__name__}")
        yield row


def _read_csv(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    if tuple(header) != ROW_FIELDS:
        raise AuditFileError(1, f"the CSV header must be {','.join(ROW_FIELDS)}; got {','.join(header)}")
    for record in reader:
        number = reader.line_num
        if not record:
            continue
        if len(record) != len(ROW_FIELDS):
            raise AuditFileError(number, f"expected {len(ROW_FIELDS)} fields, got {len(record)}")
        row: dict[str, Any] = dict(zip(ROW_FIELDS, record, strict=True))
        try:
            row["seq"] = int(row["seq"])
        except ValueError:
            raise AuditFileError(number, f"field 'seq' must be an integer, got {row['seq']!r}") from None
        try:
            row["data"] = orjson.loads(row["data"])
        except orjson.JSONDecodeError as e:
            raise AuditFileError(number, f"field 'data' is not JSON ({e})") from None
        yield row

"""What `agentflow screen` and `agentflow redact` read: one text (a file or stdin), or JSON lines.

    read_text(path)         the whole of FILE, or stdin for "-", as UTF-8 text
    records(text)           --jsonl: one Record per non-blank line: a JSON string, or an object with a
                            string "text" (and an optional "id", echoed back); a bad line is a Record with
                            an error naming the line, so the other lines still run
    Parser                  argparse that reports a bad flag as one line (UsageError), never usage + exit

Errors::

    UsageError              bad flags, an unreadable file, input that is not UTF-8: exit 2 with the message
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_FLAGGED, EXIT_USAGE, EXIT_PIPE = 0, 1, 2, 141


class UsageError(Exception):
    """Bad flags or unusable input; the message names the argument or the file."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised as UsageError) instead of usage text and exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def unit_interval(*, open_low: bool) -> Any:
    """An argparse type: a float in (0, 1] (``open_low``) or [0, 1] (argparse names the flag in the error)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        low_ok = value > 0 if open_low else value >= 0
        if not (low_ok and value <= 1):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {'> 0' if open_low else '>= 0'} and <= 1")
        return value

    return parse


def read_text(path: str) -> str:
    """The UTF-8 text of ``path``, or of stdin for ``-``."""
    where = "stdin" if path == "-" else f"FILE {path!r}"
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{where}: is a directory, expected a file") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (byte {exc.start})") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One line of --jsonl input: its text, or why it has none."""

    line: int
    text: str | None = None
    id: Any = None
    error: str | None = None

    def head(self) -> dict[str, Any]:
        """The fields every result of this line starts with."""
        out: dict[str, Any] = {"line": self.line}
        if self.id is not None:
            out["id"] = self.id
        return out


def _record(line: int, raw: str) -> Record:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return Record(line, error=f"line {line}: not JSON: {exc.msg} (column {exc.colno})")
    if isinstance(value, str):
        return Record(line, value)
    if not isinstance(value, dict):
        return Record(line, error=f"line {line}: expected a JSON string or an object with a \"text\" field, "
                                  f"got {type(value).__name__}")
    rid = value.get("id")
    if "text" not in value:
        return Record(line, id=rid, error=f"line {line}: the object has no \"text\" field")
    if not isinstance(value["text"], str):
        return Record(line, id=rid, error=f"line {line}: \"text\" must be a string, got "
                                          f"{type(value['text']).__name__}")
    return Record(line, value["text"], rid)


def records(text: str) -> list[Record]:
    """The --jsonl records of ``text``, in order; blank lines are skipped (line numbers count them)."""
    return [_record(n, raw) for n, raw in enumerate(text.splitlines(), 1) if raw.strip()]


def print_jsonl(result: dict[str, Any]) -> None:
    print(json.dumps(result, ensure_ascii=False), flush=False)


def stdout_closed() -> int:
    """The reader of stdout went away (``| head``): stop quietly, as a shell's SIGPIPE would (exit 141)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_PIPE


def run_filter(name: str, run: Callable[[Sequence[str]], int], argv: Sequence[str] | None) -> int:
    """A text filter's main (``agentflow screen``, ``agentflow redact``): a UsageError is one line naming the
    command on stderr (exit 2, after what was printed is flushed), a closed stdout stops quietly, Ctrl-C is 130."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            stdout_closed()
        print(f"agentflow {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return stdout_closed()
    except KeyboardInterrupt:
        return 130

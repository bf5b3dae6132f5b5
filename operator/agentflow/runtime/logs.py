"""Structured logs of a step pod: one JSON object per line on stderr.

Each line is ``{"time", "level", "event", "message", ...fields}``; ``time`` is RFC 3339 UTC.
Secrets given as ``redact`` (the attempt token) are replaced by ``[redacted]`` in every line,
whatever field they turn up in. Step inputs and outputs are never logged: they may hold personal data.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from typing import Any, TextIO

REDACTED = "[redacted]"
_MIN_SECRET = 4  # shorter strings are too likely to occur by chance to be blanked out everywhere


class JsonLog:
    """Writes JSON lines to ``stream`` (None: discard). Built per process run, never at import."""

    def __init__(self, stream: TextIO | None, *, redact: Iterable[str] = ()) -> None:
        self._stream = stream
        given = [s for s in redact if len(s) >= _MIN_SECRET]
        self._given = given
        # As written, and as it reads inside a JSON string (escaped quotes or backslashes).
        forms = {form for s in given for form in (s, json.dumps(s, ensure_ascii=False)[1:-1])}
        self._secrets = sorted(forms, key=len, reverse=True)

    def redacting(self, *secrets: str) -> JsonLog:
        """A log to the same stream that also blanks out ``secrets``."""
        return JsonLog(self._stream, redact=[*self._given, *secrets])

    def info(self, event: str, message: str, **fields: Any) -> None:
        self.write("info", event, message, fields)

    def warning(self, event: str, message: str, **fields: Any) -> None:
        self.write("warning", event, message, fields)

    def error(self, event: str, message: str, **fields: Any) -> None:
        self.write("error", event, message, fields)

    def write(self, level: str, event: str, message: str, fields: dict[str, Any]) -> None:
        if self._stream is None:
            return
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = {"time": now, "level": level, "event": event, "message": message, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str)
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        self._stream.write(line + "\n")
        self._stream.flush()

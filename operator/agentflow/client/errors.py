"""What the application client raises: one tree, each error saying what to do.

::

    ClientError              the run could not be started, read or waited for
    ├── TemplateNotFound     no template of that name and kind (in the client's namespace, or cluster-wide)
    ├── InputError           inputs the template refuses: ``field`` names the first (``topic``, ``items[2].id``)
    ├── RunRefused           the cluster refused the Workflow (admission: a Budget, a quota; RBAC) or it exists
    │   └── RunExists        a run of that name exists already (``name``)
    ├── RunNotFound          no run of that name
    ├── RunFailed            the run ended Failed or Cancelled: ``step`` (the first failed step) and ``message``
    └── Timeout              the run did not finish in time (also a TimeoutError); it goes on

Findings (``(path, message)`` pairs from agentflow.validation) and admission messages become these in one place:
:func:`from_findings`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runs import RunResult

__all__ = ["ClientError", "InputError", "RunExists", "RunFailed", "RunNotFound", "RunRefused", "TemplateNotFound",
           "Timeout", "from_admission", "from_findings"]


class ClientError(Exception):
    """The run could not be started, read or waited for (the message says why)."""


class TemplateNotFound(ClientError):
    """No template of that name and kind."""

    def __init__(self, template: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.template = template
        self.kind = kind


class InputError(ClientError, ValueError):
    """Inputs the template refuses. ``field``: the first one, as a path within the inputs (``topic``,
    ``items[2].id``; empty when the inputs as a whole are refused); ``problems``: every (field, message)."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        self.field = self.problems[0][0] if self.problems else ""
        super().__init__("; ".join(f"inputs.{f}: {m}" if f else f"inputs: {m}" for f, m in self.problems))


class RunRefused(ClientError):
    """The cluster refused to create the run: the admission webhook (a hard Budget, a ResourceQuota, an invalid
    Workflow), RBAC, or a run of that name exists already."""


class RunExists(RunRefused):
    """A run of that name exists already: give another name (or none, for a generated one)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class RunNotFound(ClientError):
    """No run of that name."""


class RunFailed(ClientError):
    """The run ended Failed or Cancelled. ``step``: the first step that failed (None: the run as a whole, for
    example its timeout or a cancel); ``message``: why; ``result``: what it ended with."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        self.run = result.run
        self.phase = result.phase
        failed = result.failed_step()
        self.step = failed[0] if failed else None
        self.message = (failed[1] if failed else None) or result.message or result.phase
        where = f" at step {self.step!r}" if self.step else ""
        super().__init__(f"run {result.run} {result.phase.lower()}{where}: {self.message}")


class Timeout(ClientError, TimeoutError):
    """The run did not finish in time. It goes on: wait again, or cancel it. ``result``: its state then."""

    def __init__(self, result: RunResult, seconds: float) -> None:
        self.result = result
        self.run = result.run
        super().__init__(f"run {result.run} did not finish within {seconds:g}s (it is {result.phase}; it goes on)")


_INPUTS = ("spec", "inputs")
_REF = ("spec", "workflowTemplateRef")


def _field(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def from_findings(findings: Sequence[tuple[Sequence[str | int], str]], *, template: str, kind: str) -> ClientError:
    """The error of a Workflow's findings (paths on its body): the template missing, the inputs refused, or
    else the first finding as a RunRefused."""
    if any(tuple(path[:2]) == _REF for path, _ in findings):
        message = next(m for p, m in findings if tuple(p[:2]) == _REF)
        return TemplateNotFound(template, kind, message)
    inputs = [(_field(list(path[2:])), message) for path, message in findings if tuple(path[:2]) == _INPUTS]
    if inputs:
        return InputError(inputs)
    return RunRefused("; ".join(f"{_field(list(p))}: {m}" for p, m in findings) or "refused")


_LINE = re.compile(r"^- (?P<path>[A-Za-z0-9_.\[\]-]+): (?P<message>.*)$")
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    return [int(index) if index else name for name, index in _PART.findall(path)]


def from_admission(message: str, *, template: str, kind: str) -> ClientError:
    """The error of a Workflow the API server refused (422 from the validating webhook, whose message lists
    ``- PATH: MESSAGE`` lines; 403 from the budget webhook, a quota or RBAC: the message as it is)."""
    findings: list[tuple[Sequence[str | int], str]] = []
    for line in message.splitlines():
        match = _LINE.match(line.strip())
        if match:
            findings.append((_parts(match["path"]), match["message"]))
    if findings and any(tuple(p[:2]) in (_INPUTS, _REF) for p, _ in findings):
        return from_findings(findings, template=template, kind=kind)
    return RunRefused(message)

"""Cost control: budget periods and scopes, cost preflight estimates, calibration and reports.

:mod:`.periods` (the window of a period), :mod:`.scope` (which Budgets count a call, their ledger lines,
alert thresholds). Both are pure.
"""

from __future__ import annotations

from .periods import EPOCH, PERIODS, Period, window
from .scope import (
    applies,
    budget_uid,
    exhausted,
    line_for,
    lines_for,
    scope_problem,
    thresholds_crossed,
    used_fraction,
)

__all__ = [
    "EPOCH",
    "PERIODS",
    "Period",
    "applies",
    "budget_uid",
    "exhausted",
    "line_for",
    "lines_for",
    "scope_problem",
    "thresholds_crossed",
    "used_fraction",
    "window",
]

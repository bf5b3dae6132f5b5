"""Cron expressions, parsed (pure: no clock). The times they name are computed by agentflow.k8s.schedule.

Five fields, minute hour day-of-month month day-of-week, each ``*``, a number, a range ``a-b``, a step ``*/n``
or ``a-b/n``, or a list of those; months and days of the week also by name (jan, mon); day of week 0 or 7 is
Sunday. As in cron, when both day fields are restricted a day matching either runs. Macros: @yearly
(@annually), @monthly, @weekly, @daily (@midnight), @hourly.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Cron", "CronError", "parse_cron"]

_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_MONTHS = {m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                            "nov", "dec"])}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS))


class CronError(ValueError):
    """A cron expression that cannot be read; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 = Sunday."""
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, day: int, month: int, weekday: int) -> bool:
        """Whether a date runs (weekday 0 = Sunday)."""
        if month not in self.months:
            return False
        if self.days_restricted and self.weekdays_restricted:
            return day in self.days or weekday in self.weekdays
        return day in self.days and weekday in self.weekdays


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    value = names.get(text.lower()) if names else None
    if value is None:
        if not (text.isascii() and text.isdigit()):  # str.isdigit() is true of superscripts and other scripts' digits
            raise CronError(f"{name}: {text!r} is not a number" + (f" or a name ({', '.join(names)})" if names
                                                                       else ""))
        value = int(text)
    if not low <= value <= high:
        raise CronError(f"{name}: {value} is outside {low}-{high}")
    return value


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) < 1:
                raise CronError(f"{name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, name, low, high, names), _value(b, name, low, high, names)
            if start > end:
                raise CronError(f"{name}: range {base!r} runs backwards")
        else:
            start = _value(base, name, low, high, names)
            end = high if step_text else start
        out.update(range(start, end + 1, step))
    return frozenset(out)


def parse_cron(text: str) -> Cron:
    """The parsed expression; CronError naming the field that cannot be read."""
    expanded = _MACROS.get(text.strip().lower(), text)
    parts = expanded.split()
    if len(parts) != 5:
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week) or a macro "
                        f"({', '.join(_MACROS)}), got {len(parts)}")
    sets = [_field(p, name, low, high, names) for p, (name, low, high, names) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] != "*", parts[4] != "*")

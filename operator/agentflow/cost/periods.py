"""Budget periods: the window a moment falls in. Pure: ``now`` is always given, never read.

Windows are half-open ``[start, end)`` in UTC, whatever the time zone of ``now``::

    daily     [today 00:00 UTC,             tomorrow 00:00 UTC)
    weekly    [this Monday 00:00 UTC,       next Monday 00:00 UTC)          (ISO weeks)
    monthly   [the 1st of this month 00:00, the 1st of next month 00:00)    (December rolls into January)
    total     [1970-01-01 00:00 UTC,        no end)                         (the one window that never ends)

UTC and not a local zone so that every gateway and operator replica, whatever its ``TZ``, charges a
call to the same window, and so that no window is 23 or 25 hours long at a daylight-saving change.
A moment exactly at a boundary belongs to the window that starts there.

Periods roll over by themselves: the ledger keys spend by (budget uid, window start), so the first call
of a new window finds an empty row (:mod:`agentflow.storage.ledger`).
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal, get_args

__all__ = ["EPOCH", "PERIODS", "Period", "window"]

Period = Literal["daily", "weekly", "monthly", "total"]
PERIODS: Final[tuple[str, ...]] = get_args(Period)
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
"""Start of the window of period ``total``."""


def window(period: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime | None]:
    """``(start, end)`` in UTC of the ``period`` window containing ``now``; ``end`` is None for ``total``.

    ``now`` must carry a time zone (a naive datetime is ambiguous between replicas): ValueError
    otherwise, and for an unknown period.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"window: now={now.isoformat()} has no time zone; pass an aware datetime (UTC)")
    utc = now.astimezone(dt.UTC)
    midnight = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    match period:
        case "daily":
            return midnight, midnight + dt.timedelta(days=1)
        case "weekly":
            monday = midnight - dt.timedelta(days=midnight.weekday())
            return monday, monday + dt.timedelta(days=7)
        case "monthly":
            first = midnight.replace(day=1)
            following = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(
                month=first.month + 1
            )
            return first, following
        case "total":
            return EPOCH, None
    raise ValueError(f"window: unknown period {period!r}; use one of {', '.join(PERIODS)}")

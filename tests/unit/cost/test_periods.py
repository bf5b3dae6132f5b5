"""Budget windows: daily, weekly (ISO Monday), monthly (incl. December and leap Februaries), total."""

from __future__ import annotations

import datetime as dt

import pytest

from agentflow.cost import EPOCH, window

UTC = dt.UTC


def t(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0,
      tz: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("daily", t(2024, 3, 5, 13, 7, 9), t(2024, 3, 5), t(2024, 3, 6)),
        ("daily", t(2024, 3, 5), t(2024, 3, 5), t(2024, 3, 6)),  # a boundary opens its window
        ("daily", t(2024, 3, 5, 23, 59, 59, 999999), t(2024, 3, 5), t(2024, 3, 6)),
        ("daily", t(2023, 12, 31, 12), t(2023, 12, 31), t(2024, 1, 1)),  # year boundary
        ("daily", t(2024, 2, 28, 12), t(2024, 2, 28), t(2024, 2, 29)),  # leap day follows
        ("daily", t(2023, 2, 28, 12), t(2023, 2, 28), t(2023, 3, 1)),  # no leap day
        ("weekly", t(2024, 3, 6, 10), t(2024, 3, 4), t(2024, 3, 11)),  # Wednesday -> Monday
        ("weekly", t(2024, 3, 4), t(2024, 3, 4), t(2024, 3, 11)),  # Monday 00:00 itself
        ("weekly", t(2024, 3, 10, 23, 59), t(2024, 3, 4), t(2024, 3, 11)),  # Sunday night
        ("weekly", t(2025, 1, 1, 8), t(2024, 12, 30), t(2025, 1, 6)),  # week across New Year
        ("weekly", t(2024, 3, 1), t(2024, 2, 26), t(2024, 3, 4)),  # across a leap February
        ("monthly", t(2024, 3, 15, 8), t(2024, 3, 1), t(2024, 4, 1)),
        ("monthly", t(2024, 12, 31, 23, 59), t(2024, 12, 1), t(2025, 1, 1)),  # December rolls into January
        ("monthly", t(2025, 1, 1), t(2025, 1, 1), t(2025, 2, 1)),
        ("monthly", t(2024, 2, 29, 12), t(2024, 2, 1), t(2024, 3, 1)),  # leap day
        ("monthly", t(2100, 2, 28, 12), t(2100, 2, 1), t(2100, 3, 1)),  # 2100 is no leap year
        ("monthly", t(2000, 2, 29), t(2000, 2, 1), t(2000, 3, 1)),  # 2000 is one
        ("monthly", t(2024, 1, 31, 9), t(2024, 1, 1), t(2024, 2, 1)),  # a 31st does not overflow
        ("total", t(2024, 3, 15, 8), EPOCH, None),
    ],
)
def test_windows(period: str, now: dt.datetime, start: dt.datetime, end: dt.datetime | None) -> None:
    assert window(period, now) == (start, end)
    got_start, got_end = window(period, now)
    assert got_start.tzinfo is UTC
    assert got_start <= now and (got_end is None or now < got_end)


def test_other_time_zones_are_converted_to_utc() -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))
    # 2024-04-01 08:00 in Tokyo is still 2024-03-31 23:00 UTC: March, Sunday, the 31st.
    now = t(2024, 4, 1, 8, tz=tokyo)
    assert window("monthly", now) == (t(2024, 3, 1), t(2024, 4, 1))
    assert window("daily", now) == (t(2024, 3, 31), t(2024, 4, 1))
    assert window("weekly", now) == (t(2024, 3, 25), t(2024, 4, 1))
    start, _ = window("daily", now)
    assert start.utcoffset() == dt.timedelta(0)


def test_consecutive_windows_tile_the_time_line() -> None:
    for period in ("daily", "weekly", "monthly"):
        start, end = window(period, t(2023, 11, 20, 5))
        for _ in range(30):
            assert end is not None
            nxt_start, nxt_end = window(period, end)
            assert nxt_start == end
            assert window(period, end - dt.timedelta(microseconds=1)) == (start, end)
            start, end = nxt_start, nxt_end


def test_naive_now_and_unknown_period_are_errors() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        window("daily", dt.datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="unknown period 'hourly'; use one of daily, weekly, monthly, total"):
        window("hourly", t(2024, 1, 1))

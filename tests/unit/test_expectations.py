"""Absence schedules: the phrases read strictly, and the windows they make, in UTC and in a declared time zone."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from relay.expectations import Schedule, ScheduleError, last_closed, parse_schedule, parse_zone, window_at

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("by 06:00", Schedule(deadline=time(6, 0))),
        ("by 23:59 on mon-fri", Schedule(deadline=time(23, 59), days=frozenset(range(5)))),
        ("by 00:00 on mon,wed,sat-sun", Schedule(deadline=time(0, 0), days=frozenset({0, 2, 5, 6}))),
        ("every 1h", Schedule(every=timedelta(hours=1))),
        ("every 15m", Schedule(every=timedelta(minutes=15))),
        ("every 24h", Schedule(every=timedelta(hours=24))),
    ],
)
def test_the_phrases_read_as_they_say(text: str, expected: Schedule):
    assert parse_schedule(text) == expected


@pytest.mark.parametrize(
    "text",
    ["by 6:00", "by 24:00", "by 06:60", "by 06:00 on fri-mon", "by 06:00 on weekdays", "by 06:00 on ", "every 7m",
     "every 4m", "every 0h", "every 25h", "every 1d", "every 1 h", "0 6 * * *", "BY 06:00", " by 06:00", 6, None],
)  # fmt: skip
def test_anything_else_is_refused_saying_what_was_expected(text: object):
    with pytest.raises(ScheduleError, match=r"expected .*found"):
        parse_schedule(text)


def test_time_zones_are_iana_names_or_utc():
    assert parse_zone(None) is UTC and parse_zone("UTC") is UTC
    assert parse_zone("Europe/Berlin") == BERLIN
    for bad in ("Mars/Olympus", "../etc/passwd", "", 1):
        with pytest.raises(ScheduleError, match="expected"):
            parse_zone(bad)


def test_a_by_window_is_the_day_before_its_deadline_start_included_end_excluded():
    daily = parse_schedule("by 06:00")
    window = window_at(daily, UTC, at("2026-12-07T05:59:59"))
    assert window is not None and (window.start, window.end, window.name) == (
        at("2026-12-06T06:00"), at("2026-12-07T06:00"), "2026-12-07T0600"
    )  # fmt: skip
    assert window_at(daily, UTC, at("2026-12-06T06:00")) == window  # the start belongs to it
    following = window_at(daily, UTC, at("2026-12-07T06:00"))  # the deadline itself is the next day's
    assert following is not None and following.name == "2026-12-08T0600"
    assert last_closed(daily, UTC, at("2026-12-07T06:00")) == window
    assert last_closed(daily, UTC, at("2026-12-07T05:59")).name == "2026-12-06T0600"  # type: ignore[union-attr]


def test_days_leave_out_the_windows_of_other_deadlines():
    weekdays = parse_schedule("by 06:00 on mon-fri")
    # 2026-12-07 is a Monday: Saturday's and Sunday's deadlines are not checked, Monday's is.
    assert last_closed(weekdays, UTC, at("2026-12-06T12:00")) is None
    assert window_at(weekdays, UTC, at("2026-12-06T07:00")).name == "2026-12-07T0600"  # type: ignore[union-attr]
    assert window_at(weekdays, UTC, at("2026-12-05T07:00")) is None  # Saturday 07:00 counts toward Sunday's
    assert last_closed(weekdays, UTC, at("2026-12-07T06:00")).name == "2026-12-07T0600"  # type: ignore[union-attr]


def test_every_windows_start_at_midnight():
    hourly = parse_schedule("every 2h")
    window = window_at(hourly, UTC, at("2026-12-07T13:30"))
    assert window is not None and (window.start, window.end, window.name) == (
        at("2026-12-07T12:00"), at("2026-12-07T14:00"), "2026-12-07T1200"
    )  # fmt: skip
    assert last_closed(hourly, UTC, at("2026-12-07T14:00")) == window
    assert last_closed(hourly, UTC, at("2026-12-07T00:30")).name == "2026-12-06T2200"  # type: ignore[union-attr]


def test_a_time_zone_moves_the_deadline_and_keeps_it_across_summer_time():
    daily = parse_schedule("by 06:00")
    winter = window_at(daily, BERLIN, at("2026-12-07T04:00"))  # 05:00 in Berlin
    assert winter is not None and winter.end == at("2026-12-07T05:00") and winter.name == "2026-12-07T0600"
    assert window_at(daily, BERLIN, at("2026-12-07T05:00")).name == "2026-12-08T0600"  # type: ignore[union-attr]
    summer = window_at(daily, BERLIN, at("2026-07-01T03:00"))
    assert summer is not None and summer.end == at("2026-07-01T04:00")
    # The night summer time starts (29 March 2026) has 23 hours: the window is that long, the deadline stays 06:00.
    spring = window_at(daily, BERLIN, at("2026-03-29T03:00"))
    assert spring is not None and spring.end - spring.start == timedelta(hours=23)


def test_every_windows_follow_the_wall_clock_of_their_zone():
    hourly = parse_schedule("every 1h")
    window = window_at(hourly, BERLIN, at("2026-12-07T12:30"))  # 13:30 in Berlin
    assert window is not None and window.name == "2026-12-07T1300" and window.start == at("2026-12-07T12:00")

"""Absence declarations: a tenant's route or trigger prefix expects something in each window of a schedule.

A schedule is one of two phrases, read strictly:

- `by HH:MM` (optionally `on DAYS`, e.g. `on mon-fri` or `on mon,wed,fri`): something must arrive in the day
  before each deadline, from HH:MM the day before (included) to HH:MM (excluded); only the deadlines on DAYS are
  checked. A window is named by its deadline: `2026-12-07T0600`.
- `every N(m|h)`, N minutes or hours that divide a day (at least 5 minutes, a reconcile tick's default): windows
  from midnight on, `[00:00, N)`, `[N, 2N)`, ...; each is named by its start: `2026-12-07T1300`.

Times are wall-clock times in the declaration's time zone (UTC unless it names one), so a deadline stays at 06:00
across a change to or from summer time. Pure: no I/O; relay.absence records and alerts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MIN_EVERY = timedelta(minutes=5)
_BY = re.compile(r"by (?P<hour>[01]\d|2[0-3]):(?P<minute>[0-5]\d)(?: on (?P<days>[a-z,-]+))?")
_EVERY = re.compile(r"every (?P<count>[1-9]\d{0,3})(?P<unit>[mh])")
SYNTAX = "'by HH:MM', 'by HH:MM on DAYS' (mon-fri, or mon,wed,fri) or 'every N(m|h)' (N dividing a day, >= 5m)"


class ScheduleError(ValueError):
    """A schedule or time zone that does not read as the syntax says."""


@dataclass(frozen=True)
class Schedule:
    """`deadline` and `days` (by), or `every` (every): one of the two."""

    deadline: time | None = None
    days: frozenset[int] = frozenset(range(7))  # date.weekday() numbers
    every: timedelta | None = None


@dataclass(frozen=True)
class Window:
    """[start, end) in UTC, and its name (the local deadline or start, as the module's doc says)."""

    start: datetime
    end: datetime
    name: str


def parse_schedule(text: object) -> Schedule:
    """The schedule a declaration's `when` says; ScheduleError saying what was expected and what was found."""
    if not isinstance(text, str):
        raise ScheduleError(f"expected {SYNTAX}, found {text!r}")
    if match := _BY.fullmatch(text):
        days = _days(match["days"]) if match["days"] else frozenset(range(7))
        return Schedule(deadline=time(int(match["hour"]), int(match["minute"])), days=days)
    if match := _EVERY.fullmatch(text):
        every = timedelta(**{"minutes" if match["unit"] == "m" else "hours": int(match["count"])})
        if every < MIN_EVERY or timedelta(days=1) % every:
            raise ScheduleError(f"expected an interval of at least 5m that divides a day, found {text!r}")
        return Schedule(every=every)
    raise ScheduleError(f"expected {SYNTAX}, found {text!r}")


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in DAY_NAMES or (last and last not in DAY_NAMES):
            raise ScheduleError(f"expected days as mon-fri or mon,wed,fri ({', '.join(DAY_NAMES)}), found {text!r}")
        start, stop = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        if stop < start:
            raise ScheduleError(f"expected a range of days in week order (mon-fri), found {part!r}")
        days.update(range(start, stop + 1))
    return frozenset(days)


def parse_zone(name: object) -> tzinfo:
    """A time zone by its IANA name (Europe/Berlin), or UTC when none is given."""
    if name is None or name == "UTC":
        return UTC
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)*", name):
        raise ScheduleError(f"expected an IANA time zone name such as Europe/Berlin, found {name!r}")
    # Deferred: zoneinfo's import (about 7 ms) is paid at a cold start only where a policy names a time zone.
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"expected a time zone the runtime knows (IANA), found {name!r}") from None


def window_at(schedule: Schedule, zone: tzinfo, moment: datetime) -> Window | None:
    """The window an arrival at `moment` counts in; None for a moment no checked window holds (a `by` window of a
    day not in its days)."""
    local = moment.astimezone(zone)
    if schedule.every is not None:
        midnight = datetime.combine(local.date(), time(), zone)
        index = int((local.replace(tzinfo=None) - midnight.replace(tzinfo=None)) // schedule.every)
        return _every_window(local.date(), index, schedule.every, zone)
    deadline = _deadline(local.date(), schedule, zone)
    if deadline <= moment:
        deadline = _deadline(local.date() + timedelta(days=1), schedule, zone)
    return _by_window(deadline, schedule, zone)


def last_closed(schedule: Schedule, zone: tzinfo, now: datetime) -> Window | None:
    """The latest window that ended at or before `now` (the one a tick checks), None if that one is not checked."""
    current = window_at(schedule, zone, now)
    if schedule.every is not None:
        assert current is not None  # every moment lies in an interval
        return window_at(schedule, zone, current.start - timedelta(microseconds=1))
    local = now.astimezone(zone)
    deadline = _deadline(local.date(), schedule, zone)
    if deadline > now:
        deadline = _deadline(local.date() - timedelta(days=1), schedule, zone)
    return _by_window(deadline, schedule, zone)


def _deadline(day: date, schedule: Schedule, zone: tzinfo) -> datetime:
    assert schedule.deadline is not None
    return datetime.combine(day, schedule.deadline, zone).astimezone(UTC)


def _by_window(deadline: datetime, schedule: Schedule, zone: tzinfo) -> Window | None:
    local = deadline.astimezone(zone)
    if local.weekday() not in schedule.days:
        return None
    start = _deadline(local.date() - timedelta(days=1), schedule, zone)
    return Window(start, deadline, local.strftime("%Y-%m-%dT%H%M"))


def _every_window(day: date, index: int, every: timedelta, zone: tzinfo) -> Window:
    midnight = datetime.combine(day, time())
    start = (midnight + every * index).replace(tzinfo=zone)
    end = (midnight + every * (index + 1)).replace(tzinfo=zone)
    return Window(start.astimezone(UTC), end.astimezone(UTC), start.strftime("%Y-%m-%dT%H%M"))

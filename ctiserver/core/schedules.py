"""Business hours and holidays: is a schedule open at a given instant?

A schedule has, per weekday, opening intervals in its own IANA time zone, an
optional public-holiday calendar (the ``holidays`` library), custom closed dates
and special hours for given dates (:meth:`Schedule.is_open` says how they combine).
Pure: the instant is passed in; nothing reads the clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")

Interval = tuple[int, int]  # minutes since local midnight; end may exceed 1440 (overnight)


class ScheduleError(ValueError):
    """A schedule definition is wrong; the message says how."""


def parse_time(text: str) -> int:
    m = _TIME.match(text.strip())
    if not m:
        raise ScheduleError(f"bad time {text!r}: use HH:MM, e.g. 09:00")
    minutes = int(m.group(1)) * 60 + int(m.group(2))
    if minutes > 24 * 60:
        raise ScheduleError(f"bad time {text!r}: after 24:00")
    return minutes


def parse_hours(spec: Any) -> tuple[Interval, ...]:
    """``"09:00-14:00, 15:00-18:00"`` / list of such / ``closed`` -> intervals."""
    if spec is None or spec is False:
        return ()
    parts: list[str]
    if isinstance(spec, str):
        if spec.strip().lower() in ("closed", "", "none"):
            return ()
        parts = [p for p in spec.split(",") if p.strip()]
    elif isinstance(spec, list):
        parts = [str(p) for p in spec]
    else:
        raise ScheduleError(f'bad hours {spec!r}: use "09:00-18:00" or "closed"')
    out: list[Interval] = []
    for part in parts:
        if "-" not in part:
            raise ScheduleError(f"bad interval {part.strip()!r}: use HH:MM-HH:MM")
        start_s, end_s = part.split("-", 1)
        start, end = parse_time(start_s), parse_time(end_s)
        if start == end:
            raise ScheduleError(f"empty interval {part.strip()!r}")
        if start >= 24 * 60:
            raise ScheduleError(f"interval {part.strip()!r} starts at 24:00")
        if end < start:  # crosses midnight
            end += 24 * 60
        out.append((start, end))
    return tuple(sorted(out))


_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(token: str) -> int:
    token = token.strip()
    if token in WEEKDAYS:
        return WEEKDAYS.index(token)
    if token in _FULL:
        return _FULL.index(token)
    raise ScheduleError(f"bad weekday {token!r}: use mon, tue, … sun (or mon-fri)")


def parse_weekdays(key: str) -> list[int]:
    """``mon``, ``mon-fri``, ``sat,sun``, ``daily`` -> weekday indexes."""
    key = key.strip().lower()
    if key in ("daily", "all", "every day"):
        return list(range(7))
    days: list[int] = []
    for part in key.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            i, j = _day(a), _day(b)
            days.extend(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        else:
            days.append(_day(part))
    return days


@lru_cache(maxsize=64)
def holiday_calendar(country: str, subdiv: str | None = None) -> holidays_lib.HolidayBase:
    """The public holidays of a country (and region), e.g. ``('ES', 'MD')``."""
    try:
        return holidays_lib.country_holidays(country.upper(), subdiv=subdiv)
    except NotImplementedError:
        raise ScheduleError(f"unknown holiday country {country!r}") from None
    except Exception as exc:  # unknown subdivision
        raise ScheduleError(f"holiday calendar {country}/{subdiv}: {exc}") from None


def get_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r} (use an IANA name like Europe/Madrid)"
        ) from None


@dataclass(frozen=True)
class Schedule:
    name: str
    zone: ZoneInfo
    weekly: tuple[tuple[Interval, ...], ...]  # 7 entries, Monday first
    holiday_country: str | None = None
    holiday_subdiv: str | None = None
    closed_dates: frozenset[date] = frozenset()
    special: Mapping[date, tuple[Interval, ...]] = field(default_factory=dict)

    def _day_intervals(self, day: date) -> tuple[Interval, ...]:
        if day in self.special:
            return self.special[day]
        if day in self.closed_dates or self.is_holiday(day):
            return ()
        return self.weekly[day.weekday()]

    def is_holiday(self, day: date) -> bool:
        if self.holiday_country is None:
            return False
        return day in holiday_calendar(self.holiday_country, self.holiday_subdiv)

    def is_open(self, now: datetime) -> bool:
        """Whether the schedule is open at the aware instant ``now``.

        Rules of the calendar, in order, for the local date ``d`` of the instant:

        1. ``special[d]`` replaces the weekday's hours for that date (``[]`` = closed);
        2. else, if ``d`` is in ``closed`` or is a public holiday, the schedule is closed;
        3. else the weekday's hours apply.

        An interval may cross midnight (``22:00-02:00``): it belongs to the day it
        starts on, so Friday ``22:00-02:00`` is open until Saturday 02:00 even if
        Saturday is a holiday. ``24:00`` may be used as an end. Times are local wall
        clock: on the day clocks change, ``09:00`` is 09:00 local whatever the UTC
        offset; an instant in the skipped hour simply never occurs.
        """
        if now.tzinfo is None:
            raise ValueError("is_open needs a timezone-aware datetime")
        local = now.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        today = local.date()
        for start, end in self._day_intervals(today):
            if start <= minute < end:
                return True
        for _start, end in self._day_intervals(today - timedelta(days=1)):
            if end > 24 * 60 and minute < end - 24 * 60:
                return True
        return False


def build_schedule(name: str, spec: Mapping[str, Any], default_zone: str) -> Schedule:
    """Build a schedule from its YAML mapping (see ``routing_rules/README.md``)."""
    allowed = {"timezone", "hours", "holidays", "closed", "special", "description"}
    unknown = set(spec) - allowed
    if unknown:
        raise ScheduleError(
            f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {sorted(allowed)}"
        )
    zone = get_zone(str(spec.get("timezone", default_zone)))
    weekly: list[tuple[Interval, ...]] = [()] * 7
    hours = spec.get("hours") or {}
    if not isinstance(hours, Mapping):
        raise ScheduleError("hours must map weekdays to intervals, e.g. mon-fri: 09:00-18:00")
    for key, value in hours.items():
        intervals = parse_hours(value)
        for day in parse_weekdays(str(key)):
            weekly[day] = intervals
    country = subdiv = None
    hol = spec.get("holidays")
    if isinstance(hol, str):
        country = hol
    elif isinstance(hol, Mapping):
        country = str(hol.get("country", "")) or None
        subdiv = str(hol["subdiv"]) if hol.get("subdiv") else None
    elif hol is not None:
        raise ScheduleError("holidays must be a country code (ES) or {country: ES, subdiv: MD}")
    if country:
        holiday_calendar(country, subdiv)  # validate now
    closed = frozenset(_as_date(d) for d in _as_list(spec.get("closed")))
    special_spec = spec.get("special") or {}
    if not isinstance(special_spec, Mapping):
        raise ScheduleError("special must map dates to hours, e.g. 2026-12-24: 09:00-14:00")
    special = {_as_date(k): parse_hours(v) for k, v in special_spec.items()}
    return Schedule(name, zone, tuple(weekly), country, subdiv, closed, special)


def _as_list(value: Any) -> Iterable[Any]:
    if value is None:
        return ()
    return value if isinstance(value, list) else [value]


def _as_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ScheduleError(f"bad date {value!r}: use YYYY-MM-DD") from None

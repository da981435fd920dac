"""Schedules: business hours, midnight, DST, holidays, closed dates, special hours."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ctiserver.core.schedules import ScheduleError, build_schedule, parse_hours

MADRID = "Europe/Madrid"


def sched(**spec):
    return build_schedule("s", spec, MADRID)


def at(text: str, zone: str = MADRID) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


WEEKDAYS = sched(hours={"mon-fri": "09:00-14:00, 15:00-18:00", "sat": "10:00-13:00"})


@pytest.mark.parametrize(
    "when,is_open",
    [
        ("2026-12-22 08:59", False),
        ("2026-12-22 09:00", True),  # start is inclusive
        ("2026-12-22 13:59", True),
        ("2026-12-22 14:00", False),  # end is exclusive: lunch
        ("2026-12-22 15:00", True),
        ("2026-12-22 18:00", False),
        ("2026-12-26 10:30", True),  # Saturday
        ("2026-12-27 10:30", False),  # Sunday: no hours
    ],
)
def test_weekly_hours(when, is_open):
    assert WEEKDAYS.is_open(at(when)) is is_open


def test_other_time_zone_of_the_instant_is_converted():
    # 08:30 UTC in winter is 09:30 in Madrid
    assert WEEKDAYS.is_open(datetime(2026, 12, 22, 8, 30, tzinfo=UTC))
    assert not WEEKDAYS.is_open(datetime(2026, 12, 22, 7, 30, tzinfo=UTC))
    new_york = sched(timezone="America/New_York", hours={"mon-fri": "09:00-17:00"})
    assert new_york.is_open(at("2026-12-22 16:00"))  # 10:00 in New York
    assert not new_york.is_open(at("2026-12-22 14:00"))  # 08:00 in New York


def test_overnight_interval_crosses_midnight():
    night = sched(hours={"fri": "22:00-02:00"})
    assert not night.is_open(at("2026-12-25 21:59"))
    assert night.is_open(at("2026-12-25 23:59"))
    assert night.is_open(at("2026-12-26 00:00"))  # Saturday, still Friday's shift
    assert night.is_open(at("2026-12-26 01:59"))
    assert not night.is_open(at("2026-12-26 02:00"))
    assert not night.is_open(at("2026-12-27 01:00"))  # Sunday: Saturday had no shift


def test_until_midnight_with_24_00():
    late = sched(hours={"daily": "18:00-24:00"})
    assert late.is_open(at("2026-12-22 23:59"))
    assert not late.is_open(at("2026-12-23 00:00"))


def test_dst_change_uses_local_wall_clock():
    # 29 March 2026: clocks go 02:00 -> 03:00 in Madrid (UTC+1 -> UTC+2)
    s = sched(hours={"daily": "09:00-18:00"})
    assert s.is_open(datetime(2026, 3, 29, 7, 30, tzinfo=UTC))  # 09:30 CEST
    assert not s.is_open(datetime(2026, 3, 28, 7, 30, tzinfo=UTC))  # 08:30 CET
    assert not s.is_open(datetime(2026, 3, 29, 16, 30, tzinfo=UTC))  # 18:30 CEST
    night = sched(hours={"daily": "01:00-03:30"})
    assert night.is_open(datetime(2026, 3, 29, 0, 59, tzinfo=UTC))  # 01:59 CET
    assert night.is_open(datetime(2026, 3, 29, 1, 0, tzinfo=UTC))  # 03:00 CEST (02:xx skipped)
    assert not night.is_open(datetime(2026, 3, 29, 1, 30, tzinfo=UTC))  # 03:30 CEST
    # 25 October 2026: 03:00 -> 02:00; both 02:30s are inside 02:00-03:00
    fall = sched(hours={"daily": "02:00-03:00"})
    assert fall.is_open(datetime(2026, 10, 25, 0, 30, tzinfo=UTC))  # 02:30 CEST
    assert fall.is_open(datetime(2026, 10, 25, 1, 30, tzinfo=UTC))  # 02:30 CET


def test_public_holidays_close_the_day():
    s = sched(hours={"daily": "09:00-18:00"}, holidays={"country": "ES", "subdiv": "MD"})
    assert not s.is_open(at("2026-12-25 11:00"))  # Christmas
    assert not s.is_open(at("2026-05-02 11:00"))  # Madrid Day: regional
    assert s.is_open(at("2026-12-23 11:00"))
    national = sched(hours={"daily": "09:00-18:00"}, holidays="ES")
    assert national.is_open(at("2026-05-02 11:00"))


def test_closed_dates_and_special_hours():
    s = sched(
        hours={"daily": "09:00-18:00"},
        holidays="ES",
        closed=["2026-12-24"],
        special={"2026-12-31": "09:00-13:00", "2026-12-25": "10:00-12:00"},
    )
    assert not s.is_open(at("2026-12-24 11:00"))
    assert s.is_open(at("2026-12-31 12:59"))
    assert not s.is_open(at("2026-12-31 13:00"))
    assert s.is_open(at("2026-12-25 11:00"))  # special hours beat the holiday


def test_overnight_shift_belongs_to_the_day_it_starts():
    s = sched(hours={"daily": "22:00-02:00"}, holidays="ES")
    assert s.is_open(at("2026-12-25 01:00"))  # shift of the 24th
    assert not s.is_open(at("2026-12-25 23:00"))  # Christmas: no shift
    assert not s.is_open(at("2026-12-26 01:00"))


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ({"hours": {"mon": "9-18"}}, "bad time"),
        ({"hours": {"mon": "09:00-09:00"}}, "empty interval"),
        ({"hours": {"mon": "25:00-26:00"}}, "bad time"),
        ({"hours": {"mond": "09:00-18:00"}}, "bad weekday"),
        ({"timezone": "Europe/Madird"}, "unknown time zone"),
        ({"holidays": "XX"}, "unknown holiday country"),
        ({"closed": ["24/12/2026"]}, "bad date"),
        ({"opening": {}}, "unknown key"),
    ],
)
def test_bad_schedules(spec, fragment):
    with pytest.raises(ScheduleError, match=fragment):
        sched(**spec)


def test_naive_time_is_refused():
    with pytest.raises(ValueError):
        WEEKDAYS.is_open(datetime(2026, 12, 22, 10, 0))


def test_parse_hours_closed():
    assert parse_hours("closed") == ()
    assert parse_hours(["09:00-10:00", "11:00-12:00"]) == ((540, 600), (660, 720))

"""Business calendars: hours, holidays, overnight spans, time zones, SLA arithmetic."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from mailrouter import yamlsrc
from mailrouter.calendars import build_calendars, parse_calendar
from mailrouter.errors import ConfigErrors

MSK = ZoneInfo("Europe/Moscow")


def cal(text: str):  # type: ignore[no-untyped-def]
    return parse_calendar("c", yamlsrc.loads(text, "c.yaml"))


OFFICE = cal('{timezone: Europe/Moscow, hours: "Mon-Fri 09:00-18:00", holidays: [2027-01-01, 2027-01-07]}')
NIGHT = cal('{timezone: Europe/Moscow, hours: "Mon-Fri 22:00-06:00"}')


@pytest.mark.parametrize("at, expected", [
    (datetime(2027, 1, 11, 9, 0, tzinfo=MSK), True),          # Monday opening, inclusive
    (datetime(2027, 1, 11, 17, 59, tzinfo=MSK), True),
    (datetime(2027, 1, 11, 18, 0, tzinfo=MSK), False),        # closing, exclusive
    (datetime(2027, 1, 9, 12, 0, tzinfo=MSK), False),         # Saturday
    (datetime(2027, 1, 7, 12, 0, tzinfo=MSK), False),         # holiday (Thursday)
    (datetime(2027, 1, 11, 6, 30), True),                     # naive = UTC: 09:30 MSK
    (datetime(2027, 1, 11, 12, 0, tzinfo=ZoneInfo("America/New_York")), False),  # 20:00 MSK
])
def test_is_business_time(at: datetime, expected: bool) -> None:
    """Working hours are read in the calendar's zone; holidays and weekends are closed."""
    assert OFFICE.is_business_time(at) is expected


@pytest.mark.parametrize("at, expected", [
    (datetime(2027, 1, 11, 23, 0, tzinfo=MSK), True),         # Monday night shift
    (datetime(2027, 1, 12, 5, 59, tzinfo=MSK), True),         # still Monday's shift
    (datetime(2027, 1, 11, 3, 0, tzinfo=MSK), False),         # Sunday had no shift
    (datetime(2027, 1, 16, 3, 0, tzinfo=MSK), True),          # Friday's shift runs into Saturday
    (datetime(2027, 1, 16, 23, 0, tzinfo=MSK), False),        # Saturday night: none
])
def test_overnight_span_belongs_to_its_start_day(at: datetime, expected: bool) -> None:
    """A span whose end is before its start runs overnight and belongs to the day it starts."""
    assert NIGHT.is_business_time(at) is expected


@pytest.mark.parametrize("start, hours, due", [
    (datetime(2027, 1, 11, 10, 0, tzinfo=MSK), 4, datetime(2027, 1, 11, 14, 0, tzinfo=MSK)),
    (datetime(2027, 1, 11, 16, 0, tzinfo=MSK), 4, datetime(2027, 1, 12, 11, 0, tzinfo=MSK)),
    (datetime(2027, 1, 8, 17, 0, tzinfo=MSK), 4, datetime(2027, 1, 11, 12, 0, tzinfo=MSK)),   # over a weekend
    (datetime(2027, 1, 6, 17, 0, tzinfo=MSK), 4, datetime(2027, 1, 8, 12, 0, tzinfo=MSK)),    # over a holiday
    (datetime(2027, 1, 9, 12, 0, tzinfo=MSK), 1, datetime(2027, 1, 11, 10, 0, tzinfo=MSK)),   # from a Saturday
    (datetime(2027, 1, 11, 10, 0, tzinfo=MSK), 18, datetime(2027, 1, 13, 10, 0, tzinfo=MSK)),  # two days
])
def test_add_business_hours(start: datetime, hours: float, due: datetime) -> None:
    """SLA due times count only working time."""
    got = OFFICE.add_business_hours(start, hours)
    assert got == due and got.tzinfo is not None


def test_add_business_hours_overnight() -> None:
    """Night shift: 4 hours from Monday 23:00 end on Tuesday 03:00."""
    got = NIGHT.add_business_hours(datetime(2027, 1, 11, 23, 0, tzinfo=MSK), 4)
    assert got == datetime(2027, 1, 12, 3, 0, tzinfo=MSK)


def test_dst_zone_counts_elapsed_hours() -> None:
    """Across a DST change a span lasts its real length (Berlin, last Sunday of March 2027)."""
    c = cal('{timezone: Europe/Berlin, hours: "Daily 00:00-24:00"}')
    start = datetime(2027, 3, 28, 1, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    got = c.add_business_hours(start, 2)
    assert got.astimezone(timezone.utc) - start.astimezone(timezone.utc) == timedelta(hours=2)
    assert got.hour == 4                     # wall clock jumped 02:00 -> 03:00
    assert got.astimezone(timezone.utc) == datetime(2027, 3, 28, 2, 0, tzinfo=timezone.utc)


def test_day_hours_and_business_days() -> None:
    """One business day is the working hours of one day: 2d from Friday 10:00 is Tuesday 10:00."""
    assert OFFICE.day_hours == 9
    got = OFFICE.add_business_days(datetime(2027, 1, 15, 10, 0, tzinfo=MSK), 2)
    assert got == datetime(2027, 1, 19, 10, 0, tzinfo=MSK)


def test_several_spans_and_wrapping_day_ranges() -> None:
    """'Fri-Mon' wraps the week; several spans are separated by commas."""
    c = cal('{timezone: UTC, hours: "Fri-Mon 10:00-12:00, Wed 14:00-15:00"}')
    assert {d for d, _, _ in c.spans} == {4, 5, 6, 0, 2}


def test_bad_calendars_report_every_error() -> None:
    """Unknown zone, unreadable hours, bad holiday and unknown key are all reported with lines."""
    doc = yamlsrc.loads(
        "x:\n  timezone: Europe/Mosow\n  hours: Mon-Fry 9-18\n  holidays: [2027-01-xx]\n  tz: 1\n",
        "cal.yaml")
    with pytest.raises(ConfigErrors) as info:
        build_calendars(doc)
    assert [str(e) for e in info.value.errors] == [
        "cal.yaml:5:3: calendar 'x': unknown key 'tz'; known keys: timezone, hours, holidays, workdays",
        "cal.yaml:2:13: calendar 'x': unknown time zone 'Europe/Mosow'; did you mean 'Europe/Moscow'?",
        "cal.yaml:3:10: calendar 'x': cannot read working hours 'Mon-Fry 9-18'; "
        'write e.g. "Mon-Fri 09:00-18:00, Sat 10:00-14:00"',
        "cal.yaml:4:14: calendar 'x': cannot read holiday '2027-01-xx'; write dates as YYYY-MM-DD",
    ]


def test_a_calendar_with_an_error_is_not_also_unknown_to_the_rules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One typo in a calendar was reported once, then again as "unknown calendar 'msk'
    (known: none defined)" for every rule naming any calendar, the good ones too; a
    calendar that is null was named '<config>'. Now: the calendar's own errors, at their place."""
    from mailrouter.config import Limits
    from mailrouter.routing.snapshot import load_snapshot
    path = tmp_path / "r.yaml"
    path.write_text("domains: [example.com]\nmailboxes: {s: {maildir: s}}\n"
                    "aliases: {a@example.com: mailbox:s}\n"
                    "calendars:\n  msk: {timezone: Europe/Moscow}\n  spb: {timezone: Moscow}\n"
                    "  ekb:\n"
                    "rules:\n  - {name: r, when: {business_hours: spb},\n"
                    "     then: {sla: {first_response: 4h, calendar: msk}}}\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_snapshot((str(path),), Limits(), "mx.test")
    assert [str(e) for e in info.value.errors] == [
        f"{path}:6:19: calendar 'spb': unknown time zone 'Moscow'; use an IANA name such as "
        "Europe/Moscow",
        f"{path}:7:3: calendar 'ekb' must be a mapping; "
        'write {timezone: Europe/Moscow, hours: "Mon-Fri 09:00-18:00"}']


def test_working_day_shift() -> None:
    """A Saturday made a working day (`workdays:`) works Monday's hours: SLA time counts it,
    is_business_time sees it, the Saturday after does not; the Monday off it replaces is a
    holiday. Before, a calendar could not say so and every due time over it was a day late."""
    c = cal('{timezone: Europe/Moscow, hours: "Mon-Thu 09:00-18:00, Fri 09:00-16:45",'
            ' holidays: [2027-01-11], workdays: [2027-01-09]}')
    friday = datetime(2027, 1, 8, 16, 0, tzinfo=MSK)
    assert c.add_business_hours(friday, 4) == datetime(2027, 1, 9, 12, 15, tzinfo=MSK)
    assert c.is_business_time(datetime(2027, 1, 9, 17, 59, tzinfo=MSK))
    assert not c.is_business_time(datetime(2027, 1, 16, 12, 0, tzinfo=MSK))
    assert c.business_hours_between(friday, datetime(2027, 1, 12, 9, 0, tzinfo=MSK)) == 9.75
    assert c.add_business_days(friday, 1) == datetime(2027, 1, 9, 17, 15, tzinfo=MSK)


def test_bad_workdays_are_refused_at_their_line() -> None:
    doc = yamlsrc.loads(
        "x:\n  hours: Mon-Fri 09:00-18:00\n  holidays: [2027-01-09]\n"
        "  workdays: [2027-01-09, 2027-01-08, 2027-02-3x]\n", "cal.yaml")
    with pytest.raises(ConfigErrors) as info:
        build_calendars(doc)
    assert [str(e) for e in info.value.errors] == [
        "cal.yaml:4: calendar 'x': 2027-01-09 is both a holiday and a workday; "
        "keep it in one list",
        "cal.yaml:4: calendar 'x': workday 2027-01-08 is a Fri, which already has working "
        "hours; list only days off that are worked (a Saturday)",
        "cal.yaml:4:38: calendar 'x': cannot read workday '2027-02-3x'; write dates as YYYY-MM-DD",
    ]


def test_overlapping_spans_count_once() -> None:
    """`Mon-Fri 09:00-18:00, Mon 08:00-10:00` works Monday 08:00-18:00: ten hours, not eleven.
    business_hours_between (the report's first response, the board's hours late) and
    day_hours (one business `d`) counted 09:00-10:00 twice, while add_business_hours (the
    due time) counted it once: a request answered at its due time showed as late."""
    c = cal('{timezone: Europe/Moscow, hours: "Mon-Fri 09:00-18:00, Mon 08:00-10:00"}')
    start = datetime(2027, 1, 11, 8, 0, tzinfo=MSK)
    assert c.business_hours_between(start, datetime(2027, 1, 11, 19, 0, tzinfo=MSK)) == 10.0
    assert c.day_hours == 10.0
    assert c.week_hours == 46.0
    due = c.add_business_hours(start, 10)
    assert c.business_hours_between(start, due) == 10.0
    # An overnight span running into the next day's: Tuesday 00:00-09:00 is nine hours.
    n = cal('{timezone: UTC, hours: "Daily 22:00-06:00, Daily 05:00-09:00"}')
    day = datetime(2027, 1, 12, tzinfo=timezone.utc)
    assert n.business_hours_between(day, day + timedelta(hours=10)) == 9.0
    assert n.business_hours_between(day, n.add_business_hours(day, 9)) == 9.0
    # A Sunday night running into Monday morning's span counts once in the week.
    w = cal('{timezone: UTC, hours: "Sun 22:00-06:00, Mon 05:00-09:00"}')
    assert w.week_hours == 11.0


@pytest.mark.parametrize("zone, hours, day, start, end", [
    # the clock goes 02:00 -> 03:00: work "from 02:30" starts when the clock passes it, 03:00
    ("Europe/Prague", "Daily 02:30-10:00", "2026-03-29", "01:00", "08:00"),
    # ... and work "until 02:30" ends then too: two hours on the clock, 00:00 to 03:00
    ("Europe/Prague", "Daily 00:00-02:30", "2026-03-29", "2026-03-28T23:00", "01:00"),
    ("America/New_York", "Daily 02:30-03:15", "2026-03-08", "07:00", "07:15"),
    # Samoa skipped 30 December 2011 whole: no working time that day
    ("Pacific/Apia", "Daily 09:00-18:00", "2011-12-30", "10:00", "10:00"),
])
def test_a_working_time_the_clock_skips_is_when_the_clock_passes_it(zone: str, hours: str, day: str,
                                                                    start: str, end: str) -> None:
    """Hours that start or end inside the hour a DST change skips. zoneinfo reads 02:30
    of that night with the offset before the jump, 03:30: "Daily 02:30-10:00" worked 6.5
    hours and "Daily 00:00-02:30" 2.5 hours that day, and "02:30-03:15" none at all."""
    c = cal(f'{{timezone: {zone}, hours: "{hours}"}}')

    def utc(text: str) -> datetime:
        return datetime.fromisoformat(text if "T" in text else f"{day}T{text}").replace(tzinfo=timezone.utc)
    hour = timedelta(hours=1)
    worked = (utc(end) - utc(start)).total_seconds() / 3600
    assert c.business_hours_between(utc(start) - hour, utc(end) + hour) == worked
    if worked:
        assert c.add_business_hours(utc(start) - hour, 0) == utc(start)
        assert c.add_business_hours(utc(start) - hour, worked) == utc(end)

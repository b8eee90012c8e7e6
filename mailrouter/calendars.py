"""Business calendars: when a company works, for rule conditions and SLA due times.

A calendar is a time zone (IANA name, via zoneinfo), weekly working hours,
holidays and working-day shifts (`workdays`: a day off made a working day, as a
production calendar moves a Monday's work to a Saturday)::

    calendars:
      msk: {timezone: Europe/Moscow, hours: "Mon-Fri 09:00-18:00", holidays: [2027-01-01],
            workdays: [2027-02-20]}
      night: {timezone: Asia/Yekaterinburg, hours: "Mon-Fri 09:00-18:00, Sat-Sun 22:00-06:00"}

`hours` is a comma-separated list of `DAYS HH:MM-HH:MM` spans; DAYS is a day
(`Mon`), a range (`Mon-Fri`, wrapping allowed: `Fri-Mon`) or `Daily`. A span whose end
is not after its start runs overnight into the next day and belongs to the day it
starts on: a holiday cancels the spans that start on it. `24:00` is allowed as an end.
A `workdays` date works the hours of the first working weekday (the day whose length is
one business `d`), in place of its own weekday's (none).

Naive datetimes are taken as UTC: the daemon's clock is UTC and rule tests may
write `at:` with or without an offset. Results are aware datetimes in the
calendar's zone. Across a DST change a span lasts its real (elapsed) length; a start
or end the clock skips (02:30 when it jumps from 02:00 to 03:00) is when the clock passes
it (03:00). Spans that overlap count each working minute once.

The company's zone (`company_zone`): the zone of the calendar named `default`, else the
one zone every calendar names, else UTC. It says on which day a moment falls for
`away:` dates (control/owners.py) and for report days (registry/queries.py), so a
company in Moscow with only `msk` calendars gets Moscow days without writing anything.

Refused at load: unknown time zone, unparsable hours, days, holidays or workdays, a
calendar with no working time at all (an SLA on it would never fall due), a workday
that is also a holiday or whose weekday already has working hours (a typo, or a
shift written the wrong way round).
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any, Iterable, Iterator, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from .errors import ConfigError, ConfigErrors
from .yamlsrc import where

__all__ = ["Calendar", "parse_calendar", "build_calendars", "company_zone", "company_time",
           "zone_warnings", "DEFAULT_CALENDAR"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^\s*(?P<days>[A-Za-z]+(?:\s*-\s*[A-Za-z]+)?)\s+"
                   r"(?P<h1>\d{1,2}):(?P<m1>\d\d)\s*-\s*(?P<h2>\d{1,2}):(?P<m2>\d\d)\s*$")
_KEYS = ("timezone", "hours", "holidays", "workdays")
# How far ahead add_business_hours looks before giving up (a calendar whose every
# day is a holiday for years is a configuration mistake, not a reason to hang).
_HORIZON_DAYS = 3 * 366
# The calendar whose zone is the company's when the calendars name several zones.
DEFAULT_CALENDAR = "default"
UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class Calendar:
    """Working time of one team: zone, weekly spans (minutes from the start day's midnight)."""

    name: str
    tz: ZoneInfo
    spans: tuple[tuple[int, int, int], ...]     # (weekday, start minute, end minute; end may pass 1440)
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()     # days off worked with the first weekday's hours
    file: str = field(default="", compare=False)    # where it is defined, for check's warnings
    line: int = field(default=0, compare=False)

    def local(self, at: datetime) -> datetime:
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        return at.astimezone(self.tz)

    def _day_spans(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """The working spans that start on `day`, as aware datetimes (cached: a report's
        first-response times over 100,000 requests ask for the same days again and again)."""
        return _day_spans(self, day)

    def is_business_time(self, at: datetime) -> bool:
        """True when `at` falls inside a working span (start inclusive, end exclusive)."""
        local = self.local(at)
        now = local.astimezone(timezone.utc)
        for day in (local.date() - timedelta(days=1), local.date()):
            if any(s <= now < e for s, e in self._day_spans(day)):
                return True
        return False

    def add_business_hours(self, start: datetime, hours: float) -> datetime:
        """The moment when `hours` of working time have passed since `start`."""
        left = timedelta(hours=hours)
        day = self.local(start).date() - timedelta(days=1)
        now = self.local(start).astimezone(timezone.utc)
        for _ in range(_HORIZON_DAYS):
            for s, e in sorted(self._day_spans(day)):
                s = max(s, now)
                if e <= s:
                    continue
                if left <= e - s:
                    return (s + left).astimezone(self.tz)
                left -= e - s
                now = e
            day += timedelta(days=1)
        raise ValueError(f"calendar {self.name!r} has no working time within {_HORIZON_DAYS} days")

    def business_hours_between(self, start: datetime, end: datetime) -> float:
        """Working hours between `start` and `end` (0 when end is not after start)."""
        ls, le = self.local(start), self.local(end)
        a, b = ls.astimezone(timezone.utc), le.astimezone(timezone.utc)
        total = timedelta()
        day = ls.date() - timedelta(days=1)
        last = le.date()
        upto = a        # counted up to here: spans that overlap (Mon-Fri 09:00-18:00 beside
        # Mon 08:00-10:00, or an overnight span running into the next day's) count once
        while a < b and day <= last:
            for s, e in sorted(self._day_spans(day)):
                lo, hi = max(s, upto), min(e, b)
                if hi > lo:
                    total += hi - lo
                    upto = hi
            day += timedelta(days=1)
        return total.total_seconds() / 3600

    @property
    def day_hours(self) -> float:
        """Working hours of the first working weekday: the length of one business `d`."""
        first = min(s[0] for s in self.spans)
        return _merged_minutes((s, e) for wd, s, e in self.spans if wd == first) / 60

    @property
    def week_hours(self) -> float:
        """Working hours of a week without holidays (overlapping spans count once)."""
        week = 7 * 1440         # Sun 22:00-06:00 runs into Monday: seen from the week before
        return _merged_minutes(
            (max(0, wd * 1440 + s + shift), min(week, wd * 1440 + e + shift))
            for wd, s, e in self.spans for shift in (-week, 0)) / 60

    def add_business_days(self, start: datetime, days: float) -> datetime:
        return self.add_business_hours(start, days * self.day_hours)


def _merged_minutes(spans: Iterable[tuple[int, int]]) -> int:
    """Minutes covered by (start, end) spans, each minute once however many spans hold it."""
    total, upto = 0, None
    for s, e in sorted(spans):
        if upto is not None:
            s = max(s, upto)
        if e > s:
            total += e - s
        upto = e if upto is None else max(upto, e)
    return total


@functools.lru_cache(maxsize=8192)
def _day_spans(cal: Calendar, day: date) -> tuple[tuple[datetime, datetime], ...]:
    if day in cal.holidays:
        return ()
    wd = min(s[0] for s in cal.spans) if day in cal.workdays else day.weekday()
    midnight = datetime.combine(day, time(0), cal.tz)
    # In UTC: aware datetimes sharing one tzinfo subtract as wall clocks (DST).
    return tuple((_wall(midnight, start, cal.tz).astimezone(timezone.utc),
                  _wall(midnight, end, cal.tz).astimezone(timezone.utc))
                 for weekday, start, end in cal.spans if weekday == wd)


def _wall(midnight: datetime, minute: int, tz: ZoneInfo) -> datetime:
    """Local wall-clock time `minute` minutes after midnight (days may roll over).

    A time the clock skips (02:30 on the night it goes from 02:00 to 03:00) is the moment
    the clock passes it: 03:00. Taken as zoneinfo takes it (the offset before the jump),
    it was 03:30, so hours "Daily 02:30-10:00" worked 6.5 hours that day instead of 7, and
    "Daily 00:00-02:30" 2.5 hours instead of 2 (on the clock: 00:00 to 03:00)."""
    d, m = divmod(minute, 1440)
    wall = datetime.combine(midnight.date() + timedelta(days=d), time(m // 60, m % 60))
    at = wall.replace(tzinfo=tz)
    after = int(at.timestamp())                 # fold 0: the offset before the jump
    if datetime.fromtimestamp(after, tz).replace(tzinfo=None) == wall:
        return at
    before = int(wall.replace(tzinfo=tz, fold=1).timestamp())    # the offset after it
    while after - before > 1:    # the first second whose wall clock reads `wall` or later
        mid = (before + after) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            after = mid
        else:
            before = mid
    return datetime.fromtimestamp(after, tz)


def _parse_days(text: str) -> list[int] | None:
    t = text.replace(" ", "").lower()
    if t in ("daily", "every", "all"):
        return list(range(7))
    parts = t.split("-")
    try:
        idx = [DAYS.index(p[:3]) for p in parts if p]
    except ValueError:
        return None
    if len(idx) == 1 and len(parts) == 1:
        return idx
    if len(idx) == 2:
        a, b = idx
        return [(a + i) % 7 for i in range((b - a) % 7 + 1)]
    return None


def parse_hours(text: str) -> tuple[tuple[int, int, int], ...]:
    """'Mon-Fri 09:00-18:00, Sat 10:00-14:00' -> spans; ValueError with what is wrong."""
    spans: list[tuple[int, int, int]] = []
    for chunk in str(text).split(","):
        m = _SPAN.match(chunk)
        days = _parse_days(m["days"]) if m else None
        if not m or days is None:
            raise ValueError(f"cannot read working hours {chunk.strip()!r}")
        start = int(m["h1"]) * 60 + int(m["m1"])
        end = int(m["h2"]) * 60 + int(m["m2"])
        if start >= 1440 or end > 1440 or int(m["m1"]) > 59 or int(m["m2"]) > 59:
            raise ValueError(f"no such time of day in {chunk.strip()!r}")
        if end <= start:
            end += 1440                 # overnight: ends on the next day
        spans.extend((d, start, end) for d in days)
    return tuple(sorted(spans))


def parse_calendar(name: str, spec: Any) -> Calendar:
    """One `calendars:` entry -> Calendar; raises ConfigErrors with every problem.
    `name` may be the loaded key: a value with no position of its own (null) is named there."""
    path, line, col = where(spec, name)
    errors: list[ConfigError] = []
    if not isinstance(spec, Mapping):
        raise ConfigErrors([ConfigError(f"calendar {str(name)!r} must be a mapping", path, line, col,
                                        'write {timezone: Europe/Moscow, hours: "Mon-Fri 09:00-18:00"}')])

    def err(key: str, msg: str, hint: str, node: Any = None) -> None:
        """At the value (`node`, else spec[key]) when it has a position, else at the key."""
        _, vl, vc = where(node if node is not None else spec.get(key))
        if not vl:
            vl, vc = (spec.key_line(key) if hasattr(spec, "key_line") else line), 0
        errors.append(ConfigError(f"calendar {str(name)!r}: {msg}", path, vl, vc, hint))

    for key in spec:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1)
            err(key, f"unknown key '{key}'",
                f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(_KEYS), key)
    tz: ZoneInfo | None = None
    try:
        tz = ZoneInfo(str(spec.get("timezone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError):
        err("timezone", f"unknown time zone {spec.get('timezone')!r}", _zone_hint(spec.get("timezone")))
    spans: tuple[tuple[int, int, int], ...] = ()
    try:
        spans = parse_hours(spec.get("hours", "Mon-Fri 09:00-18:00"))
    except ValueError as exc:
        err("hours", str(exc), 'write e.g. "Mon-Fri 09:00-18:00, Sat 10:00-14:00"')
    holidays = {day for day, _ in _dates(spec, "holidays", err)}
    workdays = _workdays(spec, spans, holidays, err)
    if errors or tz is None:
        raise ConfigErrors(errors)
    at, at_line, _ = where(name, spec)
    return Calendar(str(name), tz, spans, frozenset(holidays), frozenset(workdays), at, at_line)


def _dates(spec: Mapping[str, Any], key: str, err: Any) -> Iterator[tuple[date, Any]]:
    """The dates listed under `key` (holidays, workdays), each with the value written, in
    the list's order; one that cannot be read goes to `err` at its place."""
    raw = spec.get(key) or []
    for w in raw if isinstance(raw, list) else [raw]:
        try:
            day = w if isinstance(w, date) else date.fromisoformat(str(w))
        except ValueError:
            err(key, f"cannot read {key[:-1]} {w!r}", "write dates as YYYY-MM-DD", w)
            continue
        yield day, w


def _workdays(spec: Mapping[str, Any], spans: tuple[tuple[int, int, int], ...],
              holidays: set[date], err: Any) -> set[date]:
    """The `workdays:` dates; each problem goes to `err` at its date."""
    found: set[date] = set()
    working = {wd for wd, _, _ in spans}
    for day, w in _dates(spec, "workdays", err):
        if day in holidays:
            err("workdays", f"{day} is both a holiday and a workday", "keep it in one list", w)
        elif day.weekday() in working:
            err("workdays", f"workday {day} is a {DAYS[day.weekday()].title()}, which already "
                "has working hours", "list only days off that are worked (a Saturday)", w)
        else:
            found.add(day)
    return found


def _zone_hint(name: Any) -> str:
    """'Europe/Moskow' -> did you mean 'Europe/Moscow'? (the zones of this host's tzdata)."""
    close = difflib.get_close_matches(str(name), sorted(available_timezones()), n=1, cutoff=0.8)
    return f"did you mean '{close[0]}'?" if close else "use an IANA name such as Europe/Moscow"


def build_calendars(spec: Mapping[str, Any] | None) -> dict[str, Calendar]:
    """The merged `calendars:` mapping -> {name: Calendar}; every error of every calendar."""
    result: dict[str, Calendar] = {}
    errors: list[ConfigError] = []
    for name, body in (spec or {}).items():
        try:
            result[str(name)] = parse_calendar(name, body)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigErrors(errors)
    return result


def zone_warnings(calendars: Mapping[str, Calendar]) -> list[str]:
    """For `check`: calendars in several zones and none named `default` leave company_zone
    at UTC, which a company in Moscow and Yekaterinburg would not guess. Said at the first
    calendar written (where `default` would go beside it), as file:line."""
    zones = sorted({c.tz.key for c in calendars.values()})
    if DEFAULT_CALENDAR in calendars or len(zones) < 2:
        return []
    named = ", ".join(f"{name}: {cal.tz.key}" for name, cal in sorted(calendars.items()))
    first = min(calendars.values(), key=lambda c: (c.file, c.line))
    at = f"{first.file}:{first.line}: " if first.line else f"{first.file}: " if first.file else ""
    return [f"{at}calendars name {len(zones)} time zones ({named}) and none is called "
            f"'{DEFAULT_CALENDAR}': away: dates and report days are read in UTC; add a "
            f"calendar named '{DEFAULT_CALENDAR}' in the company's zone"]


def company_time(at: datetime | str | None, zone: tzinfo, timespec: str = "minutes") -> str:
    """A registry time (aware, naive UTC, or ISO) as `zone`'s wall clock with the offset
    (`2027-01-11 12:00+03:00`), as the CLI and the web view show it: a head in Moscow reads
    12:00+03:00, not a bare 09:00 that is UTC. "-" for none."""
    if not at:
        return "-"
    t = datetime.fromisoformat(at) if isinstance(at, str) else at
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(zone).isoformat(sep=" ", timespec=timespec)


# An instant as the registry writes one into a text (an event's detail: "answer due
# 2027-01-11T09:00:00.123456+00:00", a team pick's "starts first (...)"): with its offset.
_INSTANT = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?(?:Z|[+-]\d\d:\d\d)")


def company_times(text: str | None, zone: tzinfo, timespec: str = "seconds") -> str:
    """`text` with every instant the registry wrote into it (ISO, with an offset) shown as
    company_time shows the rest: a reopen's "answer due 2027-01-11T12:00:00.81+03:00"
    stood beside times printed "2027-01-11 12:00:00+03:00". '' for None."""
    def local(m: re.Match[str]) -> str:
        try:
            return company_time(datetime.fromisoformat(m.group()), zone, timespec)
        except ValueError:      # 2027-13-45T...: not a time after all, left as written
            return m.group()
    return _INSTANT.sub(local, text) if text else ""


def company_zone(calendars: Mapping[str, Calendar]) -> ZoneInfo:
    """The zone whose dates `away:` and report days are read in: the `default` calendar's,
    else the one zone all calendars share, else UTC (the daemon's clock; nothing to go by)."""
    if DEFAULT_CALENDAR in calendars:
        return calendars[DEFAULT_CALENDAR].tz
    zones = {c.tz.key: c.tz for c in calendars.values()}
    return next(iter(zones.values())) if len(zones) == 1 else UTC

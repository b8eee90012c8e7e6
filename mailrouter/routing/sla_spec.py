"""SLA terms of a rule: `sla: {first_response: 4h, resolve: 2d, calendar: msk}`.

Durations are `30m`, `4h`, `2d`, `1h30m` (a bare number is hours). With a calendar
they count working time: `h`/`m` are business hours and minutes, `d` is business
days (one `d` = the working hours of one business day of that calendar). Without a
calendar they are elapsed time. The decision carries the terms and the computed
due times as one string, e.g.
`first_response=4h calendar=msk first_response_due=2027-01-11T14:00:00+03:00`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from ..errors import ConfigError
from ..yamlsrc import where

__all__ = ["Sla", "parse_sla", "parse_duration"]

SLA_KEYS = ("first_response", "resolve", "calendar")
# The longest term: a year (366 days) of elapsed time, or 52 weeks of a calendar's working
# time. Past it a due time fell outside datetime (999999999d: OverflowError) or beyond the
# horizon add_business_hours searches: every message the rule matched failed at decision time.
MAX_DAYS, MAX_WEEKS = 366, 52
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+)m)?")


def parse_duration(text: Any) -> tuple[float, float]:
    """'1d4h30m' -> (days, hours incl. minutes); ValueError when unreadable, zero or not
    finite (YAML's `.nan` passed `<= 0` and every limit, then failed each message the rule
    matched when its due time was computed; `.inf` was called "more than a year")."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not math.isfinite(text) or text <= 0:
            raise ValueError(text)
        return 0.0, float(text)
    m = _DURATION.fullmatch(str(text).strip().replace(" ", ""))
    if not m or not any(m.groups()):
        raise ValueError(text)
    days = float(m[1] or 0)
    hours = float(m[2] or 0) + int(m[3] or 0) / 60
    if days + hours <= 0:
        raise ValueError(text)
    return days, hours


def _too_long(days: float, hours: float, calendar: Any) -> bool:
    if calendar is None or not hasattr(calendar, "spans"):
        return days * 24 + hours > MAX_DAYS * 24
    week: float = calendar.week_hours
    need: float = days * calendar.day_hours + hours
    return need > MAX_WEEKS * week


@dataclass(frozen=True, slots=True)
class Sla:
    terms: tuple[tuple[str, str, float, float], ...]    # (key, as written, days, hours)
    calendar: str | None = None

    def due(self, at: datetime, days: float, hours: float, cal: Any) -> datetime:
        if cal is None:
            start = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
            return start + timedelta(days=days, hours=hours)
        due: datetime = cal.add_business_hours(at, days * cal.day_hours + hours)
        return due

    def describe(self, at: datetime, calendars: Mapping[str, Any]) -> str:
        cal = calendars.get(self.calendar) if self.calendar else None
        parts = [f"{k}={text}" for k, text, _, _ in self.terms]
        if self.calendar:
            parts.append(f"calendar={self.calendar}")
        parts += [f"{k}_due={self.due(at, d, h, cal).isoformat()}" for k, _, d, h in self.terms]
        return " ".join(parts)


def parse_sla(spec: Any, calendars: Mapping[str, Any], who: str, errors: list[ConfigError],
              parent: Any = None) -> Sla | None:
    """Check and compile one `sla:` mapping; problems go to `errors`."""
    before = len(errors)

    def err(msg: str, node: Any, hint: str = "") -> None:
        path, line, col = where(node, spec if hasattr(spec, "line") else parent)
        errors.append(ConfigError(f"{who}: {msg}", path, line, col, hint))

    if not isinstance(spec, Mapping):
        err("'sla' must be a mapping", spec, "write e.g. sla: {first_response: 4h, calendar: msk}")
        return None
    from .conditions import did_you_mean
    for key in spec:
        if key not in SLA_KEYS:
            err(f"unknown sla key '{key}'", key, did_you_mean(str(key), SLA_KEYS))
    terms = []
    for key in ("first_response", "resolve"):
        if key not in spec:
            continue
        try:
            days, hours = parse_duration(spec[key])
            terms.append((key, str(spec[key]), days, hours))
        except ValueError:
            err(f"bad duration {spec[key]!r} for {key}", spec[key], "write e.g. 30m, 4h, 2d or 1d4h")
    if not terms and "first_response" not in spec and "resolve" not in spec:
        err("'sla' needs first_response or resolve", spec,
            "write e.g. sla: {first_response: 4h, resolve: 2d, calendar: msk}")
    cal = spec.get("calendar")
    if cal is not None and str(cal) not in calendars:
        known = ", ".join(calendars) or "none defined"
        err(f"unknown calendar {cal!r}", cal, f"define it under 'calendars:' (known: {known})")
    elif len(errors) == before and (cal is None or calendars[str(cal)] is not None):
        calendar = calendars[str(cal)] if cal is not None else None
        for key, text, days, hours in terms:
            if _too_long(days, hours, calendar):
                of = f" of working time on calendar {cal!r}" if calendar is not None else ""
                err(f"{key} {text} is more than a year{of}", spec[key],
                    "an SLA term is at most a year; write a shorter one, e.g. 30d")
    if len(errors) != before:
        return None
    return Sla(tuple(terms), str(cal) if cal is not None else None)

"""Absence dates are read in the company's zone, not in UTC: pure owner choice, and the
SLA scheduler's choice of whom to remind (control/owners.py Zones)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from mailrouter.addresses import AddressBook
from mailrouter.calendars import build_calendars, company_zone
from mailrouter.control import choose_owner
from mailrouter.control.owners import Zones, on_duty

MSK = ZoneInfo("Europe/Moscow")
MSK_CAL = {"msk": {"timezone": "Europe/Moscow", "hours": "Mon-Fri 09:00-18:00"}}


class State:
    def last_pick(self, team: str) -> str | None:
        return None

    def open_count(self, person: str) -> int:
        return 0


def book(teams: dict | None = None) -> AddressBook:
    people = {"ivanov": {"address": "ivanov@example.com", "deputy": "petrov",
                         "away": ["2026-12-07"]},
              "petrov": {"address": "petrov@example.com"}}
    return AddressBook.build({"domains": ["example.com"], "people": people,
                              "teams": teams or {}})


def owner(b: AddressBook, cals: dict, key: str, at: datetime) -> str | None:
    return choose_owner(b.people, b.teams, build_calendars(cals), key, at, State()).owner


def test_away_day_starts_and_ends_at_moscow_midnight() -> None:
    """`away: 2026-12-07` with Moscow calendars: at 00:30 MSK on the 7th (21:30 UTC on the
    6th) the deputy takes it, and at 23:30 MSK on the 7th (20:30 UTC) still the deputy; at
    00:30 MSK on the 8th the person is back. In UTC the first and last were the other way."""
    b = book()
    first = datetime(2026, 12, 7, 0, 30, tzinfo=MSK)
    last = datetime(2026, 12, 7, 23, 30, tzinfo=MSK)
    back = datetime(2026, 12, 8, 0, 30, tzinfo=MSK)
    before = datetime(2026, 12, 6, 23, 30, tzinfo=MSK)
    assert [owner(b, MSK_CAL, "ivanov", at) for at in (before, first, last, back)] == [
        "ivanov", "petrov", "petrov", "ivanov"]
    choice = choose_owner(b.people, b.teams, build_calendars(MSK_CAL), "ivanov",
                          first.astimezone(timezone.utc), State())
    assert choice.why == ("ivanov is away on 2026-12-07: deputy petrov",)


def test_default_calendar_settles_several_zones_and_none_means_utc() -> None:
    """Calendars in two zones: the `default` calendar's zone counts; without it, UTC (and
    with no calendars at all, UTC, as before)."""
    two = MSK_CAL | {"ekb": {"timezone": "Asia/Yekaterinburg"}}
    at = datetime(2026, 12, 6, 21, 30, tzinfo=timezone.utc)       # 00:30 MSK on the 7th
    assert company_zone(build_calendars(two)) == ZoneInfo("UTC")
    assert owner(book(), two, "ivanov", at) == "ivanov"
    assert owner(book(), {}, "ivanov", at) == "ivanov"
    with_default = two | {"default": {"timezone": "Europe/Moscow"}}
    assert company_zone(build_calendars(with_default)) == MSK
    assert owner(book(), with_default, "ivanov", at) == "petrov"


def test_a_schedule_calendar_gives_the_member_its_zone() -> None:
    """A member on a Yekaterinburg (+05) shift is away from 00:00 Yekaterinburg time although
    the company is in Moscow; a team pick skips them then."""
    cals = MSK_CAL | {"default": {"timezone": "Europe/Moscow"},
                      "ekb": {"timezone": "Asia/Yekaterinburg", "hours": "Daily 00:00-24:00"}}
    b = book({"t": {"members": ["ivanov", "petrov"], "pick": "schedule",
                    "schedule": {"ivanov": "ekb", "petrov": "ekb"}}})
    zones = Zones.of(b.teams, build_calendars(cals))
    at = datetime(2026, 12, 6, 19, 30, tzinfo=timezone.utc)    # 00:30 on the 7th at +05, 22:30 MSK
    assert zones.day("ivanov", at).isoformat() == "2026-12-07"
    assert on_duty(b.people, "ivanov", at, zones)[0] == "petrov"
    assert owner(b, cals, "t", at) == "petrov"


async def test_escalation_after_moscow_midnight_skips_the_deputy_away_that_day(make_app, tmp_path):
    """The scheduler catches up at 00:30 MSK on Wednesday (21:30 UTC on Tuesday) and owes
    ivanov's escalation; his deputy petrova is away on Wednesday: it goes to the head
    smirnov. Reading the date in UTC (Tuesday) sent it to petrova."""
    from mailrouter.config import ControlConfig, RegistryConfig
    from mailrouter.control.sla import Scheduler
    from tests.control_support import ROUTING, mail, send, write_routing
    routing = write_routing(tmp_path)
    with open(routing[0], "w", encoding="utf-8") as f:
        f.write(ROUTING.replace("petrova: {address: petrova@example.com, name: Анна Петрова}",
                                "petrova: {address: petrova@example.com, name: Анна Петрова,"
                                " away: [\"2027-01-13\"]}"))
    control = ControlConfig(replies=("replies@example.com",), remind_after=0, escalate_after=7200)
    app = await make_app(routing=routing, control=control,
                         registry=RegistryConfig(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"))
    app.sla_task.cancel()
    sched = Scheduler(app.registry, control, app.snapshot)
    app.pipeline.clock = lambda: datetime(2027, 1, 11, 16, tzinfo=MSK)
    await send(app.bound["smtp"][1], mail("c@client.example", "printer", "p1@client"),
               "c@client.example")
    [remind] = await sched.tick(datetime(2027, 1, 12, 11, tzinfo=MSK))
    assert (remind.stage, remind.recipient) == ("remind", "ivanov")
    [escalate] = await sched.tick(datetime(2027, 1, 13, 0, 30, tzinfo=MSK))
    assert (escalate.stage, escalate.recipient) == ("escalate", "smirnov")

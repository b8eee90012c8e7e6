"""Who owns a request: a person, or a team member picked by the team's rule; absence -> deputy.

Pure: the registry's view (the last member a team picked, each person's open requests)
comes in as a `TeamState`, the time as an argument, so a test can replay a hundred
picks without a database. The store (control/store.py) gives the real state.

- A person who is away (`away:` in the address book, on the day of `at` in their zone)
  is replaced by their deputy, and so on down the chain. Loops are refused when the
  address book loads, so the walk ends; when everybody on the chain is away, the
  request stays with the first person (someone must own it) and the reason says so.
- A team picks among members who are not away (if all are, among all of them):
  `round-robin` takes the next member after the last one picked, in member order;
  `least-open` the one with the fewest open requests, ties broken in round-robin
  order; `schedule` the members whose calendar (`schedule: {member: CALENDAR}`) is in
  working hours at `at`, or, when nobody is, the one whose shift starts first, then
  round-robin among those. The picked member then goes through the absence walk.

A person's zone (`Zones`) is the zone of the calendar a team schedule gives them (when
all their schedules agree), else the company's (calendars.company_zone): `away:
2026-12-07` in Moscow starts at 00:00 MSK, 21:00 UTC the day before, not at 03:00 MSK.

Refused: nothing at run time (unknown names are load-time errors); an owner key that
is neither a person nor a team gives no owner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone, tzinfo
from typing import Any, Protocol

from ..addressbook.model import Person, Team
from ..calendars import Calendar, company_zone
from ..values import Target

__all__ = ["OwnerChoice", "TeamState", "Zones", "choose_owner", "on_duty", "owner_targets", "pick_member"]


class TeamState(Protocol):
    """What a pick needs to know from the registry."""

    def last_pick(self, team: str) -> str | None: ...

    def open_count(self, person: str) -> int: ...


@dataclass(frozen=True, slots=True)
class OwnerChoice:
    owner: str | None                  # a person key
    team: str | None = None            # the team it was picked from
    why: tuple[str, ...] = ()
    member: str | None = None          # the member the team picked (before any deputy)


@dataclass(frozen=True, slots=True)
class Zones:
    """In which zone each person's `away:` dates are read: `people` (from team schedules),
    else `default`. UTC for everybody is what the daemon did before it knew better."""

    default: tzinfo = timezone.utc
    people: Mapping[str, tzinfo] = field(default_factory=dict)

    @classmethod
    def of(cls, teams: Mapping[str, Team], calendars: Mapping[str, Calendar]) -> Zones:
        found: dict[str, dict[str, tzinfo]] = {}
        for team in teams.values():
            for member, cal in team.schedule:
                if cal in calendars:
                    found.setdefault(member, {})[calendars[cal].tz.key] = calendars[cal].tz
        # two schedules in two zones: no way to tell which one is home; the company's
        return cls(company_zone(calendars),
                   {m: next(iter(z.values())) for m, z in found.items() if len(z) == 1})

    def day(self, person: str, at: datetime) -> date:
        """The date `at` falls on where `person` works (naive `at` is UTC)."""
        aware = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        return aware.astimezone(self.people.get(person, self.default)).date()

    def is_away(self, person: Person, at: datetime) -> bool:
        return person.is_away(self.day(person.key, at))


def on_duty(people: Mapping[str, Person], key: str, at: datetime,
            zones: Zones) -> tuple[str, tuple[str, ...]]:
    """`key`, or the first deputy down the chain who is not away at `at`."""
    chain: list[str] = [key]
    why: list[str] = []
    while zones.is_away(people[chain[-1]], at):
        deputy = people[chain[-1]].deputy
        if deputy is None or deputy in chain:
            why.append(f"{key} and every deputy after are away on {zones.day(key, at)}: "
                       f"{key} keeps it")
            return key, tuple(why)
        why.append(f"{chain[-1]} is away on {zones.day(chain[-1], at)}: deputy {deputy}")
        chain.append(deputy)
    return chain[-1], tuple(why)


def _after(members: Sequence[str], last: str | None, among: Sequence[str]) -> str:
    """The first of `among` after `last` in member order, cyclically."""
    start = members.index(last) + 1 if last in members else 0
    order = list(members[start:]) + list(members[:start])
    return next(m for m in order if m in among)


def pick_member(team: Team, people: Mapping[str, Person], calendars: Mapping[str, Calendar],
                at: datetime, state: TeamState, zones: Zones | None = None) -> tuple[str, str]:
    """(member, why) for one new request to `team`."""
    zones = zones or Zones.of({team.key: team}, calendars)
    present = [m for m in team.members if not zones.is_away(people[m], at)] or list(team.members)
    last = state.last_pick(team.key)
    if team.pick == "least-open":
        counts = {m: state.open_count(m) for m in present}
        low = min(counts.values())
        member = _after(team.members, last, [m for m in present if counts[m] == low])
        return member, f"team {team.key}: fewest open requests ({low}): {member}"
    if team.pick == "schedule":
        shifts = {m: calendars[c] for m, c in team.schedule if m in present and c in calendars}
        now = [m for m, cal in shifts.items() if cal.is_business_time(at)]
        if now:
            member = _after(team.members, last, now)
            return member, f"team {team.key}: on duty now: {member}"
        if shifts:
            starts = {m: cal.add_business_hours(at, 0) for m, cal in shifts.items()}
            first = min(starts.values())
            member = _after(team.members, last, [m for m, s in starts.items() if s == first])
            return member, f"team {team.key}: nobody on duty; {member} starts first ({first.isoformat()})"
    member = _after(team.members, last, present)
    return member, f"team {team.key}: round-robin: {member}"


def choose_owner(people: Mapping[str, Person], teams: Mapping[str, Team],
                 calendars: Mapping[str, Calendar], key: str | None, at: datetime,
                 state: TeamState) -> OwnerChoice:
    """The owner of a new request whose rule names `key` (a person or a team)."""
    if key is None:
        return OwnerChoice(None)
    team: Any = teams.get(key)
    zones = Zones.of(teams, calendars)
    why: list[str] = []
    member = None
    if team is not None:
        if not team.members:
            return OwnerChoice(None, key, (f"team {key} has no members",))
        key, reason = pick_member(team, people, calendars, at, state, zones)
        member = key
        why.append(reason)
    if key not in people:
        return OwnerChoice(None, team.key if team else None, (f"no person {key!r}",))
    owner, absent = on_duty(people, key, at, zones)
    return OwnerChoice(owner, team.key if team else None, tuple(why) + absent, member)


def owner_targets(book: Any, key: str) -> tuple[Target, ...]:
    """Where a copy for person `key` goes (`copy_to_owner`): what their own address resolves
    to in the address book, or their mailbox when the address is not ours or is refused."""
    person = book.people.get(key)
    if person is None:
        return ()
    if person.address:
        found = book.resolve(person.address)
        if found.reply is None and found.targets:
            return tuple(found.targets)
    return (Target(person.mailbox, None, key, (key,)),)

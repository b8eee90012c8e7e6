"""Owner choice (team picks, absence and deputies) and follow-up matching helpers: pure."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailrouter.addresses import AddressBook
from mailrouter.calendars import build_calendars
from mailrouter.config import Limits
from mailrouter.control import NumberTag, choose_owner, references, took_part
from mailrouter.control.threads import sla_due
from mailrouter.errors import ConfigErrors
from mailrouter.message import MessageView
from mailrouter.routing.snapshot import load_snapshot

AT = datetime(2027, 1, 11, 10, 0, tzinfo=timezone.utc)   # a Monday


class State:
    """A registry stand-in that remembers picks and open requests as the store does."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}
        self.open: Counter[str] = Counter()

    def last_pick(self, team: str) -> str | None:
        return self.last.get(team)

    def open_count(self, person: str) -> int:
        return self.open[person]


def book(teams: dict, people: dict | None = None) -> AddressBook:
    people = people or {k: {"address": f"{k}@example.com"} for k in ("a", "b", "c")}
    return AddressBook.build({"domains": ["example.com"], "people": people, "teams": teams})


def run(b: AddressBook, team: str, n: int, state: State, closes: set[str] = frozenset(),
        cals: dict | None = None, at: datetime = AT) -> Counter[str]:
    got: Counter[str] = Counter()
    for _ in range(n):
        choice = choose_owner(b.people, b.teams, cals or {}, team, at, state)
        assert choice.owner is not None
        got[choice.owner] += 1
        state.last[team] = choice.owner
        if choice.owner not in closes:
            state.open[choice.owner] += 1
    return got


def test_round_robin_over_100_requests() -> None:
    """Round-robin over three members and 100 requests: 34/33/33, in member order."""
    b = book({"t": {"members": ["a", "b", "c"], "pick": "round-robin"}})
    assert run(b, "t", 100, State()) == {"a": 34, "b": 33, "c": 33}


def test_fewest_open_over_100_requests() -> None:
    """Fewest-open: with nobody closing it is even (34/33/33); when `a` closes each request at
    once, `a` takes all but the two ties at the start (98/1/1)."""
    b = book({"t": {"members": ["a", "b", "c"], "pick": "least-open"}})
    assert run(b, "t", 100, State()) == {"a": 34, "b": 33, "c": 33}
    assert run(b, "t", 100, State(), closes={"a"}) == {"a": 98, "b": 1, "c": 1}


def test_round_robin_skips_an_absent_member_and_deputy_takes_a_person() -> None:
    """An away member is skipped by the team pick; a person named directly who is away is
    replaced by the deputy, transitively (a -> b away too -> c)."""
    people = {"a": {"address": "a@example.com", "deputy": "b", "away": ["2027-01-10..2027-01-12"]},
              "b": {"address": "b@example.com", "deputy": "c", "away": ["2027-01-11"]},
              "c": {"address": "c@example.com"}}
    b = book({"t": {"members": ["a", "b", "c"]}}, people)
    assert run(b, "t", 10, State()) == {"c": 10}
    choice = choose_owner(b.people, b.teams, {}, "a", AT, State())
    assert choice.owner == "c"
    assert choice.why == ("a is away on 2027-01-11: deputy b", "b is away on 2027-01-11: deputy c")
    later = datetime(2027, 1, 13, 9, tzinfo=timezone.utc)
    assert choose_owner(b.people, b.teams, {}, "a", later, State()).owner == "a"


def test_everyone_on_the_chain_away_keeps_the_first() -> None:
    """When the whole deputy chain is away the request stays with the person named."""
    people = {"a": {"address": "a@example.com", "deputy": "b", "away": ["2027-01-11"]},
              "b": {"address": "b@example.com", "away": ["2027-01-11"]}}
    b = book({}, people)
    choice = choose_owner(b.people, b.teams, {}, "a", AT, State())
    assert choice.owner == "a" and "every deputy after are away" in choice.why[-1]


def test_schedule_pick() -> None:
    """Schedule: the member whose calendar is in working hours; at night the one whose
    shift starts first."""
    cals = build_calendars({"early": {"timezone": "UTC", "hours": "Mon-Fri 06:00-14:00"},
                            "late": {"timezone": "UTC", "hours": "Mon-Fri 14:00-22:00"}})
    b = book({"t": {"members": ["a", "b"], "pick": "schedule",
                    "schedule": {"a": "early", "b": "late"}}})
    assert run(b, "t", 3, State(), cals=cals, at=AT) == {"a": 3}
    assert run(b, "t", 3, State(), cals=cals, at=AT.replace(hour=15)) == {"b": 3}
    assert run(b, "t", 3, State(), cals=cals, at=AT.replace(hour=23)) == {"a": 3}


def test_schedule_needs_known_calendars(tmp_path: Path) -> None:
    """A schedule naming an unknown calendar is a load-time error with file:line."""
    f = tmp_path / "r.yaml"
    f.write_text("domains: [example.com]\npeople: {a: {address: a@example.com}}\n"
                 "teams:\n  t: {members: [a], pick: schedule, schedule: {a: nigth}}\n",
                 encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_snapshot([str(f)], Limits(), "mx.test")
    assert [str(e) for e in info.value.errors] == [
        f"{f}:4:51: team 't': schedule of 'a' names unknown calendar 'nigth'; "
        "define it under 'calendars:' (known: none defined)"]


def test_deputy_loop_is_a_load_error(tmp_path: Path) -> None:
    """Two people naming each other as deputy: refused with both lines."""
    f = tmp_path / "r.yaml"
    f.write_text("domains: [example.com]\npeople:\n"
                 "  x: {address: x@example.com, deputy: y}\n"
                 "  y: {address: y@example.com, deputy: x}\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        AddressBook.load(f)
    assert [str(e) for e in info.value.errors] == [
        f"{f}:3:39: deputies form a loop: x -> y -> x: x -> y ({f}:3), y -> x ({f}:4); "
        "end the chain: one of them must name a deputy outside the loop, or none"]


def test_references_number_and_join_check() -> None:
    """In-Reply-To first, then References newest first; our subject number; who may join."""
    view = MessageView(b"In-Reply-To: <c@x>\r\nReferences: <a@x> <b@x>\r\n <c@x>\r\n"
                       b"Subject: Re: [#42] invoice\r\n\r\nhi\r\n")
    assert references(view) == ("<c@x>", "<b@x>", "<a@x>")
    assert references(MessageView(b"Subject: x\r\n\r\n")) == ()
    # no brackets, a comment, garbage: each id as a follow-up names it, nothing else
    odd = MessageView(b"In-Reply-To: a@x (your message of Monday)\r\n"
                      b"References: garbage <<>> < > <b@x> <c @x>\r\n\r\n")
    assert references(odd) == ("<a@x>", "<c@x>", "<b@x>")
    assert references(MessageView(b"In-Reply-To: a@x\r\n\r\n")) == ("<a@x>",)
    assert references(MessageView(b"In-Reply-To: your message of Monday\r\n\r\n")) == ()
    # a long thread: the newest and the root
    long = " ".join(f"<{i}@x>" for i in range(200))
    refs = references(MessageView(f"In-Reply-To: <199@x>\r\nReferences: {long}\r\n\r\n".encode()))
    assert refs == tuple(f"<{i}@x>" for i in range(199, 150, -1)) + ("<0@x>",)
    tag = NumberTag()
    assert tag.find(view.subject) == 42 and tag.find("order 42") is None
    assert tag.tag("invoice", 7) == "[#7] invoice" and tag.tag("[#7] invoice", 7) == "[#7] invoice"
    assert NumberTag("(req {n})").find("Re: (req 9) x") == 9
    assert tag.find("[#2147483647]") == 2**31 - 1 and tag.find("[#2147483648]") is None
    assert NumberTag("#{n}").find("#12345678901234567890") is None
    who = ["client@bigco.example", "ivanov@example.com"]
    assert took_part("Client@BigCo.example", who, "address")
    assert not took_part("boss@bigco.example", who, "address")
    assert took_part("STRASSE@example.com", ["straße@example.com"], "address")   # as the book folds
    assert took_part("boss@bigco.example", who, "domain")
    assert not took_part("x@evil.example", who, "domain")
    assert took_part("x@evil.example", who, "off")
    assert sla_due("first_response=4h first_response_due=2027-01-11T14:00:00+03:00") == \
        datetime(2027, 1, 11, 11, tzinfo=timezone.utc)


def test_control_config_section(tmp_path: Path) -> None:
    """config.yaml `control:` is read with its defaults; bad values name file:line."""
    from mailrouter.config import load_config
    good = tmp_path / "good.yaml"
    good.write_text("control: {replies: Replies@example.com, join: domain, escalate_after: 2h}\n",
                    encoding="utf-8")
    cfg = load_config(good).control
    assert cfg is not None
    assert (cfg.replies, cfg.join, cfg.escalate_after, cfg.number) == (
        ("replies@example.com",), "domain", 7200.0, "[#{n}]")
    assert load_config(None).control is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("control:\n  join: everyone\n  number: '#N'\n  close_after: soon\n  replys: x\n",
                   encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(bad)
    assert [str(e).split(": ", 1)[1] for e in info.value.errors] == [     # in the file's order
        "'control.join' must be address, domain or off, not 'everyone'; address: only a "
        "participant's address may join a request; domain: their domain",
        "'control.number' must contain {n} once, not '#N'; for example 'number: \"[#{n}]\"', "
        "or null to match by references only",
        "'control.close_after' must be a duration such as 30m, 12h or 1d, not 'soon'; "
        "for example 'close_after: 1d' (0 turns it off)",
        "unknown key 'replys' in 'control'; did you mean 'replies'?"]


def test_business_hours_between() -> None:
    """Working hours between two moments: nights, weekends and holidays do not count, and it
    is the inverse of add_business_hours."""
    [cal] = build_calendars({"msk": {"timezone": "Europe/Moscow", "hours": "Mon-Fri 09:00-18:00",
                                     "holidays": ["2027-01-15"]}}).values()
    mon = datetime(2027, 1, 11, 14, 0, tzinfo=timezone.utc)          # Mon 17:00 Moscow
    assert cal.business_hours_between(mon, mon.replace(hour=17)) == 1.0
    assert cal.business_hours_between(mon, datetime(2027, 1, 12, 9, tzinfo=timezone.utc)) == 4.0
    thu = datetime(2027, 1, 14, 14, 0, tzinfo=timezone.utc)          # Thu 17:00; Fri holiday
    due = cal.add_business_hours(thu, 4)
    assert due == datetime(2027, 1, 18, 12, 0, tzinfo=cal.tz)
    assert cal.business_hours_between(thu, due) == 4.0
    assert cal.business_hours_between(due, thu) == 0.0

"""Routing-file sections -> checked address-book parts (no graph work yet).

Each section may be one mapping, or a list of mappings (one per routing file),
so an address defined in two files is caught here even if the caller merges
files itself (the YAML loader already refuses a key twice in one mapping).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .canon import canonical, domain_problem
from .errs import Collector, at_line, did_you_mean
from ..values import maildir_problem
from .model import (PERSON_MAILBOX_PREFIX, PERSON_MAILDIR_PREFIX, Mailbox, Moved, Options,
                    Person, Team)

__all__ = ["Parts", "parse_parts", "entries", "SECTIONS"]

SECTIONS = ("domains", "mailboxes", "people", "teams", "aliases", "moved", "address_options")
MAILBOX_KINDS = ("maildir", "lmtp", "smtp")
# lmtp: the folder travels in an X-Mailrouter-Folder line that Dovecot's Sieve files by
MAILBOX_OPTIONS = ("sieve_folders",)
PICKS = ("round-robin", "schedule", "least-open")
TEAM_KEYS = ("members", "pick", "mailbox", "head", "schedule")


@dataclass
class Parts:
    options: Options = field(default_factory=Options)
    domains: set[str] = field(default_factory=set)
    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    teams: dict[str, Team] = field(default_factory=dict)
    by_address: dict[str, str] = field(default_factory=dict)      # person address -> key
    defined: dict[str, tuple[str, Any]] = field(default_factory=dict)  # address -> (what, key)
    moved: dict[str, Moved] = field(default_factory=dict)
    moved_at: dict[str, Any] = field(default_factory=dict)        # old -> `now` value (position)


def entries(section: Any) -> Iterator[tuple[Any, Any, Any]]:
    """(key, value, container) over a mapping section or a list of them (one per file)."""
    if isinstance(section, Mapping):
        for key, value in section.items():
            yield key, value, section
    elif isinstance(section, list):
        for part in section:
            yield from entries(part)


def _string(c: Collector, value: Any, what: str, at: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    c.add(f"{what} must be a non-empty string, not {value!r}", value, default=at)
    return None


def _parse_options(c: Collector, section: Any) -> Options:
    opts: dict[str, str] = {}
    for key, value, box in entries(section):
        if key == "local_part_case":
            if value not in ("insensitive", "sensitive"):
                c.add(f"local_part_case must be insensitive or sensitive, not {value!r}", value,
                      did_you_mean(str(value), ["insensitive", "sensitive"], "values"), box)
                continue
        elif key == "detail_separator":
            if not isinstance(value, str) or len(value) > 1 or (value and value in "@\""):
                c.add(f"detail_separator must be one character or \"\", not {value!r}", value,
                      'use "+" (the default) or "-"', box)
                continue
        else:
            c.unknown_keys({key: value}, ("local_part_case", "detail_separator"),
                           "address_options")
            continue
        opts[str(key)] = str(value)
    return Options(**opts)


_NOT_IN_DOMAIN = frozenset('<>()[],;:\\"/')


def _parse_domains(c: Collector, section: Any, p: Parts) -> None:
    items = section if isinstance(section, list) else [] if section is None else [section]
    for item in items:
        if isinstance(item, list):
            _parse_domains(c, item, p)
        elif (d := _string(c, item, "a domain", section)) is not None:
            if "@" in d:
                c.add(f"domain {d!r} contains '@'", item, "list bare domains: [example.com]")
                continue
            problem = None if d.isascii() else domain_problem(d)
            if problem is not None:     # RCPT refuses it written so: no address could match
                c.add(f"domain {d!r} is not a domain name: {problem}", item,
                      "write the domain as it is registered, in plain characters (or its "
                      "xn-- form)", section)
                continue
            dom = (canonical("x@" + d, p.options) or "").partition("@")[2]
            if not dom or "" in dom.split(".") or any(ch.isspace() or ch in _NOT_IN_DOMAIN
                                                       for ch in dom):
                # 'example .com', 'a..b': no address on it could ever be ours
                c.add(f"domain {d!r} is not a domain name", item, "list domains as [example.com]",
                      section)
                continue
            p.domains.add(dom)


def _parse_mailboxes(c: Collector, section: Any, p: Parts) -> None:
    for key, value, box in entries(section):
        name = str(key)
        if name in p.mailboxes:
            c.add(f"mailbox {name!r} is defined twice", key, "keep one definition", box)
            continue
        options = {k: v for k, v in value.items() if k in MAILBOX_OPTIONS} \
            if isinstance(value, Mapping) else {}
        kinds = {k: v for k, v in value.items() if k not in MAILBOX_OPTIONS} \
            if isinstance(value, Mapping) else {}
        if not isinstance(value, Mapping) or len(kinds) != 1:
            c.add(f"mailbox {name!r} needs exactly one of maildir:, lmtp:, smtp:", value,
                  f"write {name}: {{maildir: {name}}}", key)
            continue
        kind, where_ = next(iter(kinds.items()))
        if kind not in MAILBOX_KINDS:
            c.add(f"mailbox {name!r}: unknown kind {str(kind)!r}", kind,
                  did_you_mean(str(kind), MAILBOX_KINDS + MAILBOX_OPTIONS, "keys"), value)
            continue
        sieve = options.get("sieve_folders", False)
        if not isinstance(sieve, bool) or (sieve and kind != "lmtp"):
            c.add(f"mailbox {name!r}: sieve_folders must be true or false, and only for lmtp:",
                  sieve, "write sieve_folders: true next to lmtp: (see deploy/dovecot)", value)
            continue
        target = _string(c, where_, f"mailbox {name!r} {kind}:", value)
        problem = maildir_problem(target) if target is not None and kind == "maildir" else None
        if problem:
            c.add(f"mailbox {name!r} maildir: {target!r} {problem}", where_,
                  f"write a path under the root, e.g. {{maildir: {name}}}; move it with "
                  "delivery.maildir_root in config.yaml", value)
        if target is not None:      # kept though refused: no "unknown mailbox" for each use
            p.mailboxes[name] = Mailbox(name, str(kind), target, sieve)


def _parse_away(c: Collector, value: Any, at: Any) -> tuple[tuple[dt.date, dt.date], ...]:
    periods: list[tuple[dt.date, dt.date]] = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dt.date):
            periods.append((item, item))
            continue
        start, _, end = str(item).partition("..")
        try:
            first = dt.date.fromisoformat(start.strip())
            last = dt.date.fromisoformat(end.strip()) if end else first
        except ValueError:
            c.add(f"away period {str(item)!r} is not DATE..DATE", item,
                  'write "2026-12-28..2027-01-08"', at)
            continue
        if last < first:
            c.add(f"away period {str(item)!r} ends before it starts", item, "swap the dates", at)
            continue
        periods.append((first, last))
    return tuple(periods)


PERSON_KEYS = ("address", "name", "deputy", "away", "mailbox")


def _parse_person(c: Collector, key: Any, value: Any, p: Parts) -> Person | None:
    if not isinstance(value, Mapping):
        c.add(f"person {str(key)!r} must be a mapping", value,
              f"write {key}: {{address: someone@{next(iter(p.domains), 'example.com')}}}", key)
        return None
    c.unknown_keys(value, PERSON_KEYS, f"person {str(key)!r}")
    address = None
    if "address" in value:
        raw = value["address"]
        # str() of a list made "['a@example.com']" an address on the domain "example.com']"
        address = canonical(raw, p.options) if isinstance(raw, str) else None
        if address is None:
            c.add(f"person {str(key)!r}: {raw!r} is not an address", raw,
                  "write one address, local@domain", value)
    mailbox = value.get("mailbox")
    if mailbox is None:
        mailbox = PERSON_MAILBOX_PREFIX + str(key)
        problem = maildir_problem(PERSON_MAILDIR_PREFIX + str(key))
        if problem:     # the key names the person's own Maildir, people/KEY
            c.add(f"person {str(key)!r}: their Maildir {PERSON_MAILDIR_PREFIX + str(key)!r} "
                  f"{problem}", key, "use a key of letters, digits, '-' or '_', or give "
                  "'mailbox:'", value)
        p.mailboxes[mailbox] = Mailbox(mailbox, "maildir", PERSON_MAILDIR_PREFIX + str(key))
    elif str(mailbox) not in p.mailboxes:
        c.add(f"person {str(key)!r} names unknown mailbox {str(mailbox)!r}", mailbox,
              did_you_mean(str(mailbox), p.mailboxes, "mailboxes")
              + " (define it under 'mailboxes:')", value)
    deputy = value.get("deputy")
    return Person(str(key), address, str(value["name"]) if "name" in value else None,
                  str(deputy) if deputy is not None else None,
                  _parse_away(c, value.get("away", []), value), str(mailbox))


def _parse_people(c: Collector, section: Any, p: Parts) -> None:
    for key, value, box in entries(section):
        if str(key) in p.people:
            c.add(f"person {str(key)!r} is defined twice", key, "keep one definition", box)
            continue
        person = _parse_person(c, key, value, p)
        if person is None:
            continue
        p.people[person.key] = person
        if person.address is not None:
            define(c, p, person.address, f"the address of person {person.key!r}", value["address"])
            p.by_address[person.address] = person.key
    deputies: dict[str, Any] = {}
    for key, value, _box in entries(section):
        deputy = value.get("deputy") if isinstance(value, Mapping) else None
        if isinstance(deputy, (list, Mapping)):
            # "names unknown deputy \"['ivanov']\"; did you mean 'ivanov'?" before
            c.add(f"person {str(key)!r}: 'deputy' takes one person, not a "
                  f"{'list' if isinstance(deputy, list) else 'mapping'}", deputy,
                  "write e.g. deputy: petrova (one person key from people:)", value)
        elif deputy is not None and str(deputy) not in p.people:
            c.add(f"person {str(key)!r} names unknown deputy {str(deputy)!r}", deputy,
                  did_you_mean(str(deputy), p.people, "people"), value)
        elif deputy is not None:
            deputies[str(key)] = deputy
    _check_deputy_loops(c, deputies)


def _check_deputy_loops(c: Collector, deputies: Mapping[str, Any]) -> None:
    """A chain of deputies that comes back to a person never ends: refuse it at load.

    Each loop is reported once, at the deputy line of its first person in name order,
    with file:line of every edge, so `is away -> deputy` is a finite walk at run time."""
    reported: set[str] = set()
    for start in sorted(deputies):
        chain, at = [start], start
        while at in deputies and str(deputies[at]) not in chain:
            at = str(deputies[at])
            chain.append(at)
        if at not in deputies:
            continue
        loop = chain[chain.index(str(deputies[at])):]
        if reported & set(loop):
            continue
        reported.update(loop)
        first = min(loop)
        loop = loop[loop.index(first):] + loop[:loop.index(first)]
        edges = ", ".join(f"{k} -> {deputies[k]} ({at_line(deputies[k])})" for k in loop)
        c.add(f"deputies form a loop: {' -> '.join(loop + [first])}: {edges}", deputies[first],
              "end the chain: one of them must name a deputy outside the loop, or none")


def _parse_teams(c: Collector, section: Any, p: Parts) -> None:
    for key, value, box in entries(section):
        name = str(key)
        if name in p.teams:
            c.add(f"team {name!r} is defined twice", key, "keep one definition", box)
            continue
        if isinstance(value, Mapping):
            c.unknown_keys(value, TEAM_KEYS, f"team {name!r}")
        if not isinstance(value, Mapping) or not isinstance(value.get("members"), list) \
                or not value["members"]:    # [] loaded: its requests had no owner, unsaid
            c.add(f"team {name!r} needs members: [person, ...]", value,
                  f"write {name}: {{members: [{next(iter(p.people), 'someone')}]}}", key)
            continue
        if name in p.people:
            # `owner: NAME` took the team and an alias target NAME the person: one name, two
            c.add(f"team {name!r} has the name of a person", key,
                  "give the team a name of its own (owner: and alias targets name either)", box)
            continue
        for m in value["members"]:
            if str(m) not in p.people:
                c.add(f"team {name!r} names unknown person {str(m)!r}", m,
                      did_you_mean(str(m), p.people, "people"), value)
        pick = str(value.get("pick", "round-robin"))
        if pick not in PICKS:
            c.add(f"team {name!r}: unknown pick {pick!r}", value.get("pick"),
                  did_you_mean(pick, PICKS, "picks"), value)
        mailbox = value.get("mailbox")
        if mailbox is not None and str(mailbox) not in p.mailboxes:
            c.add(f"team {name!r} names unknown mailbox {str(mailbox)!r}", mailbox,
                  did_you_mean(str(mailbox), p.mailboxes, "mailboxes")
                  + " (define it under 'mailboxes:')", value)
        members = tuple(dict.fromkeys(str(m) for m in value["members"] if str(m) in p.people))
        head = value.get("head")
        if head is not None and str(head) not in p.people:
            c.add(f"team {name!r} names unknown head {str(head)!r}", head,
                  did_you_mean(str(head), p.people, "people"), value)
            head = None
        p.teams[name] = Team(name, members, pick, str(mailbox) if mailbox is not None else None,
                             str(head) if head is not None else None,
                             _parse_schedule(c, name, value, members, pick))


def _parse_schedule(c: Collector, name: str, value: Mapping[str, Any], members: tuple[str, ...],
                    pick: str) -> tuple[tuple[str, str], ...]:
    """`schedule: {member: CALENDAR}`: the member is on duty in that calendar's working hours.

    Calendar names are checked against `calendars:` with the rules (routing/snapshot.py)."""
    spec = value.get("schedule")
    if spec is None:
        if pick == "schedule":
            c.add(f"team {name!r} picks by schedule but has no schedule:", value,
                  "write schedule: {member: calendar, ...} naming calendars from calendars:")
        return ()
    if not isinstance(spec, Mapping):
        c.add(f"team {name!r}: schedule must map members to calendars", spec,
              "write schedule: {ivanov: early-shift, petrova: late-shift}", value)
        return ()
    out = []
    for member, cal in spec.items():
        if str(member) not in members:
            c.add(f"team {name!r}: schedule names {str(member)!r}, who is not a member", member,
                  did_you_mean(str(member), members, "members"), spec)
            continue
        out.append((str(member), str(cal)))
    return tuple(out)


def define(c: Collector, p: Parts, address: str, what: str, at: Any) -> bool:
    """Record that `address` is defined here; an address defined twice is an error."""
    if address in p.defined:
        first_what, first_at = p.defined[address]
        moved = "moved" in what or "moved" in first_what
        kind = what if what == first_what else f"as {what} and as {first_what}"
        c.add(f"address {address} is defined twice ({kind}; first at {at_line(first_at)})", at,
              "a moved address cannot also be an alias: keep the moved entry (deliver: true "
              "still delivers to now:) or the alias" if moved else "keep one definition")
        return False
    if address.partition("@")[2] not in p.domains:
        domain = address.partition("@")[2]
        if what.startswith("the address of person"):
            # a colleague outside (gmail.com): "add gmail.com under domains:" would make us
            # take gmail.com's mail and the Postfix tables send that domain to mailrouter
            c.add(f"address {address} ({what}) is not on one of our domains", at,
                  f"correct the address, or add {domain} under domains: if it is ours; for "
                  f"someone outside, leave out address: and give mailbox: NAME, a mailbox "
                  f"{{smtp: {address}}}")
        else:
            c.add(f"address {address} is not on one of our domains", at,
                  f"add {domain} under domains:, or correct the address")
    p.defined[address] = (what, at)
    return True


def _parse_moved(c: Collector, section: Any, p: Parts) -> None:
    for key, value, box in entries(section):
        old = canonical(str(key), p.options)
        if old is None:
            c.add(f"moved: {str(key)!r} is not an address", key, "write local@domain", box)
            continue
        if not isinstance(value, Mapping) or "now" not in value:
            c.add(f"moved address {old} needs now: NEW-ADDRESS", value,
                  f"write {key}: {{now: new@{old.partition('@')[2]}, deliver: true}}", key)
            continue
        c.unknown_keys(value, ("now", "deliver", "autoreply"), f"moved address {old}")
        now = canonical(str(value["now"]), p.options)
        deliver = value.get("deliver", True)
        if now is None or not isinstance(deliver, bool):
            c.add(f"moved address {old}: now must be an address and deliver true or false",
                  value, "write {now: new@example.com, deliver: true}", key)
            continue
        if not define(c, p, old, "a moved address", key):
            continue
        autoreply = value.get("autoreply")
        p.moved[old] = Moved(old, now, deliver, str(autoreply) if autoreply is not None else None)
        p.moved_at[old] = value["now"]


def parse_parts(c: Collector, sections: Mapping[str, Any]) -> Parts:
    """Parse every section except aliases (the graph needs all names first)."""
    p = Parts()
    p.options = _parse_options(c, sections.get("address_options"))
    _parse_domains(c, sections.get("domains"), p)
    _parse_mailboxes(c, sections.get("mailboxes"), p)
    _parse_people(c, sections.get("people"), p)
    _parse_teams(c, sections.get("teams"), p)
    return p

"""Searches and reports over messages and decisions: what the web view shows.

Each query is one function on a Connection returning plain rows (dicts), so the web view
and the command line can share them (run with `Registry.read`). Every query takes a
`Scope`: what the asker may see (everything, or the mail of some mailboxes plus the mail
they own); a message outside it is simply not found.

Subject words are matched with the rules' normalising (NFKC, case-folded, ё = е, č = c, reply
prefixes stripped): "СЧЕТ" finds "Счёт №42", through the subject-word index
(words.py); the walk goes newest first and stops at `limit` hits. Only a tag is
tested in Python; a search with a tag stops after SCAN_MAX messages (the answer says so).

Days are the company's (calendars.company_zone): `volume` counts a message on the date
its time falls on in that zone, and the period runs from local midnight to local
midnight, whatever the database server's own TimeZone (PostgreSQL's date() or
date_trunc would use it; SQLite's is UTC). The day is a CASE over the local midnights
as bound UTC instants, compared as every other time here, so both backends agree.

Known limits: attachments' names are not recorded in the registry, so the story of a
message has none; a counterparty's domain is matched with a LIKE suffix, which no index
serves.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from email.utils import parseaddr
from typing import Any

from sqlalchemy import (ColumnElement, Connection, Select, and_, case, exists, func, literal_column,
                        or_, select, union)

from .models import decisions, deliveries, fold_address, messages
from .words import newest, parse_words

__all__ = ["Scope", "SearchResult", "search", "message_story", "counterparty", "volume",
           "volume_totals",
           "local_midnight", "day_of", "idn_forms", "folded_forms", "from_domain", "theirs",
           "SCAN_MAX"]

SCAN_MAX = 200_000        # rows a subject-word search reads before it gives up
_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Scope:
    """What one person may see: everything, or the mail of `mailboxes` and of `owner`.

    `owns` (a condition on a message key, and on a decision's mailbox when given): the
    messages of the requests this viewer may see (of `mailboxes`, or owned by `owner` now),
    and the decisions that belong to those requests. A decision names the rule's owner (a
    team, or the person before any deputy), not the member the team picked, the deputy, or
    whom a request was reassigned to, and our replies' copies land in the replies mailbox:
    without it a team member opened their own request's page and its messages were "not
    found", and a head the replies in their department's requests. The requests are
    control/'s, a layer above: the web view passes control.queries.through_requests.
    `covers`: the people whose requests `owner` has now as the deputy on duty for them
    (they are away), for control.queries.requests_in."""

    everything: bool = False
    mailboxes: frozenset[str] = frozenset()
    owner: str | None = None
    owns: Callable[..., ColumnElement[bool]] | None = field(default=None, compare=False)
    covers: frozenset[str] = frozenset()

    def where(self, q: Select[Any]) -> Select[Any]:
        if self.everything:
            return q
        cond: ColumnElement[bool] = decisions.c.mailbox.in_(sorted(self.mailboxes))
        if self.owner:
            cond = or_(cond, decisions.c.owner == self.owner)
        # correlated EXISTS: one lookup in the (message_key, mailbox, owner) index per
        # message walked; `key IN (SELECT ... WHERE mailbox IN ...)` made SQLite scan
        seen: ColumnElement[bool] = exists().where(decisions.c.message_key == messages.c.key, cond)
        if self.owns is not None:
            seen = or_(seen, self.owns(messages.c.key))
        return q.where(seen)

    def owned(self, conn: Connection, keys: list[str]) -> set[int]:
        """The ids of the decisions of `keys` seen through `owns`: each with an owner, of a
        message in a request this viewer may see, the request of the decision's mailbox."""
        if not keys or self.everything or self.owns is None:
            return set()
        return set(conn.execute(select(decisions.c.id).where(
            decisions.c.message_key.in_(keys), decisions.c.owner.is_not(None),
            self.owns(decisions.c.message_key, decisions.c.mailbox))).scalars())


@dataclass(frozen=True, slots=True)
class SearchResult:
    rows: tuple[dict[str, Any], ...]
    scanned: int
    complete: bool            # False: the scan stopped at SCAN_MAX before `limit` hits


def idn_forms(who: str) -> list[str]:
    """`who` (an address or a domain, lower case) with its domain as typed and in its other
    IDNA form: пример.рф and xn--e1afmkfd.xn--p1ai are one domain, stored as it came.
    A From line pasted whole (`Бухгалтерия <buh@romashka.example>`) is its address: it
    found nothing."""
    if "<" in who and "@" in (inner := parseaddr(who)[1]):
        who = inner
    local, at, domain = who.rpartition("@")
    forms = {who}
    for codec in ("to ascii", "to unicode"):
        try:
            other = (domain.encode("idna").decode("ascii") if codec == "to ascii"
                     else domain.encode("ascii").decode("idna"))
        except (UnicodeError, ValueError):
            continue
        forms.add(f"{local}{at}{other.lower()}")
    return sorted(forms)


def folded_forms(who: str) -> list[str]:
    """`who` (an address or a domain) as the registry keeps senders folded (from_fold,
    mail_from_fold: models.fold_address), its domain in either IDNA form."""
    return sorted({fold_address(f) for f in idn_forms(fold_address(who.strip()))})


def _sender(who: str) -> Any:
    """From (or the envelope sender) an address, or an address of a domain, in either
    IDNA form of its domain, in any case: the folded columns, through their indexes."""
    forms = folded_forms(who.strip().lstrip("@"))
    if "@" in forms[0]:
        return or_(messages.c.from_fold.in_(forms), messages.c.mail_from_fold.in_(forms))
    return from_domain(forms)


def from_domain(domains: list[str]) -> Any:
    """From an address of one of `domains` (folded: folded_forms), each matched as typed:
    "%" or "_" in it are not LIKE wildcards ("%" was everyone)."""
    return or_(*(messages.c.from_fold.like(
        "%@" + re.sub(r"([\\%_])", r"\\\1", d), escape="\\") for d in domains))


def _with_decisions(conn: Connection, rows: Iterable[Any],
                    scope: Scope | None = None) -> list[dict[str, Any]]:
    """The messages of `rows`, each with its decisions and deliveries: those of `scope`
    only (a message to two departments showed a head the other department's decision,
    its owner, rules and reasons, and its copy).

    `rcpts` is every recipient the message was received for: the row's are those of its
    last attempt (an LMTP retry for the one recipient deferred left only that one, and
    the message page named it alone), each decision's recipient is added after them."""
    found = {r.key: dict(r._mapping) | {"decisions": [], "deliveries": []} for r in rows}
    if found:
        keys = list(found)
        for table, name in ((decisions, "decisions"), (deliveries, "deliveries")):
            for d in conn.execute(select(table).where(table.c.message_key.in_(keys))
                                  .order_by(table.c.id)):
                found[d.message_key][name].append(dict(d._mapping))
        for m in found.values():
            m["rcpts"] = list(dict.fromkeys([*m["rcpts"], *(d["rcpt"] for d in m["decisions"])]))
    if scope is not None and not scope.everything:
        # a message of a request the viewer may see: the decision that gave it its owner
        owned = scope.owned(conn, list(found))
        for m in found.values():
            m["decisions"] = [d for d in m["decisions"] if d["mailbox"] in scope.mailboxes
                              or (scope.owner and d["owner"] == scope.owner)
                              or d["id"] in owned]
            places = {p for d in m["decisions"] if d["mailbox"]
                      for p in (d["mailbox"], f"{d['mailbox']}/{d['folder']}")}
            m["deliveries"] = [c for c in m["deliveries"] if c["target"] in places]
    return list(found.values())


def search(conn: Connection, scope: Scope, *, sender: str = "", rcpt: str = "", words: str = "",
           since: date | None = None, until: date | None = None, tag: str = "", status: str = "",
           mailbox: str = "", owner: str = "", limit: int = 100,
           zone: tzinfo = timezone.utc, before: tuple[datetime, str] | None = None,
           owned: Callable[[Any], ColumnElement[bool]] | None = None) -> SearchResult:
    """Messages, newest first, each with its decisions and deliveries. `until` is inclusive;
    `since` and `until` are days of `zone` (the web view passes the company's).
    `words`: every word in the subject (whole words; `счет*` for every word it begins).
    `before`: (received_at, key) of the last message of the page shown; the next page.
    `owner`: the rule's owner (a person or a team), or with `owned` (a condition on a
    message key: of a request `owner` owns now, control.queries.owned_by) the request's,
    as `registry search --owner` matches: a team's pick, a deputy, a reassignment."""
    q = scope.where(select(messages.c.key, messages.c.received_at))
    if sender.strip():
        q = q.where(_sender(sender))
    if status.strip():
        q = q.where(messages.c.status == status.strip())
    for column, value in ((decisions.c.rcpt, rcpt), (decisions.c.mailbox, mailbox),
                          (decisions.c.owner, owner)):
        if value.strip():
            # a recipient in either IDNA form of its domain: the decision keeps the RCPT as
            # Postfix passed it (продажи@xn--e1afmkfd.xn--p1ai was not found as @пример.рф)
            cond = (func.lower(column).in_(idn_forms(value.strip().lower()))
                    if column is decisions.c.rcpt else column == value.strip())
            found: ColumnElement[bool] = exists().where(
                decisions.c.message_key == messages.c.key, cond)
            if column is decisions.c.owner and owned is not None:
                found = or_(found, owned(messages.c.key))
            q = q.where(found)
    want_tag = tag.strip()
    walk = newest(conn, q, parse_words(words), page=_CHUNK,
                  since=None if since is None else local_midnight(since, zone),
                  until=None if until is None else local_midnight(until, zone, 1), before=before)
    hits: list[dict[str, Any]] = []
    scanned = 0
    while len(hits) < limit and scanned < SCAN_MAX:
        keys = [r.key for r in itertools.islice(walk, limit - len(hits) if not want_tag else _CHUNK)]
        scanned += len(keys)
        for row in _with_decisions(conn, _in_order(conn, keys), scope):
            if not want_tag or any(want_tag in (d["tags"] or []) for d in row["decisions"]):
                hits.append(row)
        if not keys or (not want_tag and len(hits) < limit):
            return SearchResult(tuple(hits[:limit]), scanned, True)
    return SearchResult(tuple(hits[:limit]), scanned, len(hits) >= limit)


def _in_order(conn: Connection, keys: list[str]) -> list[Any]:
    found = {r.key: r for r in conn.execute(select(messages).where(messages.c.key.in_(keys)))
             } if keys else {}
    return [found[k] for k in keys]


def local_midnight(day: date, zone: tzinfo, plus: int = 0) -> datetime:
    """The UTC instant `day` (+ `plus` days) begins in `zone`. Across a DST change a day
    lasts 23 or 25 hours; where midnight itself is skipped the day begins at the jump."""
    local = datetime.combine(day + timedelta(days=plus), time(0), zone)
    try:
        return local.astimezone(timezone.utc)
    except OverflowError:           # year 1 east of Greenwich, 9999 west of it: the ends
        return (datetime.min if local.year == 1 else datetime.max).replace(tzinfo=timezone.utc)


def day_of(column: Any, zone: tzinfo, first: date, last: date) -> tuple[Any, list[date]]:
    """(an SQL expression giving the index of the local day `column` falls on, the days):
    for rows with first's midnight <= column < the midnight after `last`. A binary tree of
    CASEs over the bound midnights: log2(days) comparisons per row, integer labels, one
    bound parameter per day, the same answer on every backend."""
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    starts = [local_midnight(d, zone) for d in days]

    def tree(lo: int, hi: int) -> Any:             # the days lo..hi-1
        if hi - lo == 1:
            return literal_column(str(lo))
        mid = (lo + hi) // 2
        return case((column < starts[mid], tree(lo, mid)), else_=tree(mid, hi))
    return tree(0, len(days)), days


def message_story(conn: Connection, scope: Scope, key: str) -> dict[str, Any] | None:
    """One message with every decision (and its explanation) and every delivery, or None
    when there is no such message or it is outside the scope."""
    row = conn.execute(scope.where(select(messages).where(messages.c.key == key))).first()
    return _with_decisions(conn, [row], scope)[0] if row is not None else None


def theirs(who: str, sent: ColumnElement[bool], threads: Select[Any]) -> ColumnElement[bool]:
    """The messages `sent` by `who` (an address or a domain) or among `threads` (the keys of
    their requests' messages): for an address one set of keys from the two indexes (an OR
    of the sender and their requests could use neither, and walked every message newest
    first); for a domain, which no index finds, the OR (the walk newest first stops at the
    query's limit)."""
    if "@" in who.strip().lstrip("@"):
        return messages.c.key.in_(union(select(messages.c.key).where(sent), threads))
    return or_(sent, messages.c.key.in_(threads))


def counterparty(conn: Connection, scope: Scope, who: str, limit: int = 500,
                 before: tuple[datetime, str] | None = None,
                 threads: Select[Any] | None = None) -> list[dict[str, Any]]:
    """The messages from one address, or from anyone at a domain, newest first: `limit`
    of them, after `before` (received_at, key of the last one of the page shown).
    `threads` (the message keys of their requests, control.queries.counterparty_threads):
    also those messages, our replies among them, as `registry history` lists."""
    if not who.strip():
        return []
    found = _sender(who)
    if threads is not None:
        found = theirs(who, found, threads)
    q = scope.where(select(messages)).where(found)
    at, key = messages.c.received_at, messages.c.key
    if before is not None:
        q = q.where(at <= before[0], or_(at < before[0], key < before[1]))
    rows = conn.execute(q.order_by(at.desc(), key.desc()).limit(limit)).all()
    return _with_decisions(conn, rows, scope)


def _volume_rows(conn: Connection, scope: Scope, since: date, until: date,
                 zone: tzinfo) -> tuple[Any, list[date]] | None:
    """(a subquery of (day index, key, status, mailbox, owner): one row per message and
    decision the scope sees in the period, the days), or None when no mail is in it."""
    start, end = local_midnight(since, zone), local_midnight(until, zone, 1)
    span = (messages.c.received_at >= start, messages.c.received_at < end)
    # the days that hold mail (two index lookups), not every day asked for: a period
    # from year 1 would be a million-branch CASE
    low, high = conn.execute(select(func.min(messages.c.received_at),
                                    func.max(messages.c.received_at)).where(*span)).one()
    if low is None:
        return None
    first, last = low.astimezone(zone).date(), high.astimezone(zone).date()
    index, days = day_of(messages.c.received_at, zone, first, last)
    rows = (select(index.label("day"), messages.c.key, messages.c.status, decisions.c.mailbox,
                   decisions.c.owner)
            .join(decisions, decisions.c.message_key == messages.c.key).where(*span))
    if not scope.everything:
        cond: ColumnElement[bool] = decisions.c.mailbox.in_(sorted(scope.mailboxes))
        if scope.owner:
            cond = or_(cond, decisions.c.owner == scope.owner)
        if scope.owns is not None:     # as _with_decisions shows a message of a request
            cond = or_(cond, and_(decisions.c.owner.is_not(None),
                                  scope.owns(messages.c.key, decisions.c.mailbox)))
        rows = rows.where(cond)
    # grouped outside: PostgreSQL does not see a CASE with bound parameters in the select
    # list and the same CASE in GROUP BY as one expression
    return rows.subquery(), days


def volume(conn: Connection, scope: Scope, since: date, until: date,
           zone: tzinfo = timezone.utc) -> list[dict[str, Any]]:
    """Messages per day of `zone`, mailbox and owner (a message to two mailboxes counts in
    each), with how many were deferred or rejected; `until` inclusive."""
    found = _volume_rows(conn, scope, since, until, zone)
    if found is None:
        return []
    sub, days = found
    q = (select(sub.c.day, sub.c.mailbox, sub.c.owner,
                func.count(func.distinct(sub.c.key)).label("messages"),
                func.count(func.distinct(sub.c.key)).filter(
                    sub.c.status.in_(("deferred", "rejected", "partial"))).label("trouble"))
         .group_by(sub.c.day, sub.c.mailbox, sub.c.owner)
         .order_by(sub.c.day, sub.c.mailbox, sub.c.owner))
    return [{"day": days[int(r.day)].isoformat(), "mailbox": r.mailbox, "owner": r.owner,
             "messages": int(r.messages), "trouble": int(r.trouble)} for r in conn.execute(q)]


def volume_totals(conn: Connection, scope: Scope, since: date, until: date,
                  zone: tzinfo = timezone.utc) -> dict[str, dict[Any, int]]:
    """Messages per day of `zone` ({"per_day": {"2026-12-07": n}}), per mailbox and per
    owner ({"per_owner": {owner or None: n}}), each message once in each: `volume`'s rows
    added up counted a message to two mailboxes twice on its day and for its owner (and
    one to a mailbox with two owners twice there)."""
    found = _volume_rows(conn, scope, since, until, zone)
    if found is None:
        return {"per_day": {}, "per_mailbox": {}, "per_owner": {}}
    sub, days = found
    n = func.count(func.distinct(sub.c.key))
    out: dict[str, dict[Any, int]] = {}
    for name, col in (("per_day", sub.c.day), ("per_mailbox", sub.c.mailbox),
                      ("per_owner", sub.c.owner)):
        out[name] = {(days[int(k)].isoformat() if name == "per_day" else k): int(c)
                     for k, c in conn.execute(select(col, n).group_by(col))}
    return out

"""Searches and reports over messages and decisions: what the web view shows.

Each query is one function on a Connection returning plain rows (dicts), so the web view
and the command line can share them (run with `Registry.read`). Every query takes a
`Scope`: what the asker may see (everything, or the mail of some mailboxes plus the mail
they own); a message outside it is simply not found.

Subject words are matched with the rules' normalising (NFKC, case-folded, ё = е, reply
prefixes stripped): "СЧЕТ" finds "Счёт №42", through the subject-word index
(words.py); the walk goes newest first and stops at `limit` hits. Only a tag is
tested in Python; a search with a tag stops after SCAN_MAX messages (the answer says so).

Known limits: attachments' names are not recorded in the registry, so the story of a
message has none; a counterparty's domain is matched with a LIKE suffix, which no index
serves.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, exists, func, or_, select

from .models import decisions, deliveries, messages
from .words import newest, parse_words

__all__ = ["Scope", "SearchResult", "search", "message_story", "counterparty", "volume",
           "SCAN_MAX"]

SCAN_MAX = 200_000        # rows a subject-word search reads before it gives up
_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Scope:
    """What one person may see: everything, or the mail of `mailboxes` and of `owner`."""

    everything: bool = False
    mailboxes: frozenset[str] = frozenset()
    owner: str | None = None

    def where(self, q: Select[Any]) -> Select[Any]:
        if self.everything:
            return q
        cond: ColumnElement[bool] = decisions.c.mailbox.in_(sorted(self.mailboxes))
        if self.owner:
            cond = or_(cond, decisions.c.owner == self.owner)
        # correlated EXISTS: one lookup in the (message_key, mailbox, owner) index per
        # message walked; `key IN (SELECT ... WHERE mailbox IN ...)` made SQLite scan
        return q.where(exists().where(decisions.c.message_key == messages.c.key, cond))


@dataclass(frozen=True, slots=True)
class SearchResult:
    rows: tuple[dict[str, Any], ...]
    scanned: int
    complete: bool            # False: the scan stopped at SCAN_MAX before `limit` hits


def _sender(who: str) -> Any:
    who = who.strip().lower()
    if "@" in who:
        return or_(func.lower(messages.c.from_addr) == who, func.lower(messages.c.mail_from) == who)
    # a domain is matched as typed: "%" or "_" in it are not LIKE wildcards ("%" was everyone)
    domain = re.sub(r"([\\%_])", r"\\\1", who.lstrip("@"))
    return func.lower(messages.c.from_addr).like(f"%@{domain}", escape="\\")


def _with_decisions(conn: Connection, rows: Iterable[Any]) -> list[dict[str, Any]]:
    found = {r.key: dict(r._mapping) | {"decisions": [], "deliveries": []} for r in rows}
    if found:
        keys = list(found)
        for table, name in ((decisions, "decisions"), (deliveries, "deliveries")):
            for d in conn.execute(select(table).where(table.c.message_key.in_(keys))
                                  .order_by(table.c.id)):
                found[d.message_key][name].append(dict(d._mapping))
    return list(found.values())


def search(conn: Connection, scope: Scope, *, sender: str = "", rcpt: str = "", words: str = "",
           since: date | None = None, until: date | None = None, tag: str = "", status: str = "",
           mailbox: str = "", owner: str = "", limit: int = 100) -> SearchResult:
    """Messages, newest first, each with its decisions and deliveries. `until` is inclusive.
    `words`: every word in the subject (whole words; `счет*` for every word it begins)."""
    q = scope.where(select(messages.c.key, messages.c.received_at))
    if sender.strip():
        q = q.where(_sender(sender))
    if status.strip():
        q = q.where(messages.c.status == status.strip())
    for column, value in ((decisions.c.rcpt, rcpt), (decisions.c.mailbox, mailbox),
                          (decisions.c.owner, owner)):
        if value.strip():
            cond = (func.lower(column) == value.strip().lower() if column is decisions.c.rcpt
                    else column == value.strip())
            q = q.where(exists().where(decisions.c.message_key == messages.c.key, cond))
    want_tag = tag.strip()
    walk = newest(conn, q, parse_words(words), page=_CHUNK,
                  since=None if since is None else _midnight(since),
                  until=None if until is None else _midnight(until, 1))
    hits: list[dict[str, Any]] = []
    scanned = 0
    while len(hits) < limit and scanned < SCAN_MAX:
        keys = [r.key for r in itertools.islice(walk, limit - len(hits) if not want_tag else _CHUNK)]
        scanned += len(keys)
        for row in _with_decisions(conn, _in_order(conn, keys)):
            if not want_tag or any(want_tag in (d["tags"] or []) for d in row["decisions"]):
                hits.append(row)
        if not keys or (not want_tag and len(hits) < limit):
            return SearchResult(tuple(hits[:limit]), scanned, True)
    return SearchResult(tuple(hits[:limit]), scanned, len(hits) >= limit)


def _in_order(conn: Connection, keys: list[str]) -> list[Any]:
    found = {r.key: r for r in conn.execute(select(messages).where(messages.c.key.in_(keys)))
             } if keys else {}
    return [found[k] for k in keys]


def _midnight(day: date, plus: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=plus)


def message_story(conn: Connection, scope: Scope, key: str) -> dict[str, Any] | None:
    """One message with every decision (and its explanation) and every delivery, or None
    when there is no such message or it is outside the scope."""
    row = conn.execute(scope.where(select(messages).where(messages.c.key == key))).first()
    return _with_decisions(conn, [row])[0] if row is not None else None


def counterparty(conn: Connection, scope: Scope, who: str, limit: int = 500) -> list[dict[str, Any]]:
    """Every message from one address, or from anyone at a domain, newest first."""
    if not who.strip():
        return []
    q = scope.where(select(messages)).where(_sender(who))
    rows = conn.execute(q.order_by(messages.c.received_at.desc()).limit(limit)).all()
    return _with_decisions(conn, rows)


def volume(conn: Connection, scope: Scope, since: date, until: date) -> list[dict[str, Any]]:
    """Messages per day, mailbox and owner (a message to two mailboxes counts in each),
    with how many were deferred or rejected; `until` inclusive."""
    day = func.date(messages.c.received_at)
    q = (select(day.label("day"), decisions.c.mailbox, decisions.c.owner,
                func.count(func.distinct(messages.c.key)).label("messages"),
                func.count(func.distinct(messages.c.key)).filter(
                    messages.c.status.in_(("deferred", "rejected", "partial"))).label("trouble"))
         .join(decisions, decisions.c.message_key == messages.c.key)
         .where(messages.c.received_at >= _midnight(since),
                messages.c.received_at < _midnight(until, 1)))
    if not scope.everything:
        cond = decisions.c.mailbox.in_(sorted(scope.mailboxes))
        q = q.where(or_(cond, decisions.c.owner == scope.owner) if scope.owner else cond)
    q = q.group_by(day, decisions.c.mailbox, decisions.c.owner).order_by(
        day, decisions.c.mailbox, decisions.c.owner)
    return [{"day": str(r.day), "mailbox": r.mailbox, "owner": r.owner, "messages": int(r.messages),
             "trouble": int(r.trouble)} for r in conn.execute(q)]

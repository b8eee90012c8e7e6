"""Which request a message belongs to: references, our request number, who may join.

Pure helpers the store uses to match a message to a request:

- `references(view)`: the Message-IDs named by In-Reply-To and References, newest
  first (RFC 5322 3.6.4), written as `message.msg_ids` writes them; a follow-up joins
  the request that holds any of them. Of a long References (a thread of hundreds) the
  newest are kept and its first, the thread's root (RFC 5322 3.6.4: References starts
  with the parent's first; clients that trim it keep that one too).
- `NumberTag`: the request number we put into subjects ourselves (`[#123]` by
  default, `control.number` in config.yaml); used only when no reference matched,
  because a customer's client may drop In-Reply-To but keeps the subject.
- `took_part(sender, participants, mode)`: a stranger who quotes a known Message-ID
  or number must not join someone else's request. `address`: the sender must be one
  of the request's participants; `domain`: share a domain with one; `off`: anyone.
- `sla_terms(text)`: the due times a Decision's `sla` string carries.

Refused: nothing; an unreadable header simply names no reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..message import msg_ids

__all__ = ["NumberTag", "references", "took_part", "domain_of", "sla_terms", "JOIN_MODES"]

JOIN_MODES = ("address", "domain", "off")
_MAX_REFS = 50          # References of a long thread: the newest and the root are enough
# The largest request number: `requests.id` is a 32-bit INTEGER on PostgreSQL, and a
# larger number in a lookup fails the whole query (the message got 451 for ever).
MAX_NUMBER = 2**31 - 1


def references(view: Any) -> tuple[str, ...]:
    """Message-IDs (with angle brackets) from In-Reply-To, then References newest first."""
    found: list[str] = []
    root: str | None = None
    for name in ("In-Reply-To", "References"):
        for value in view.headers(name):
            ids = msg_ids(value)
            if name == "References" and ids:
                root = root or ids[0]
                ids.reverse()
            found.extend(ids)
    unique = tuple(dict.fromkeys(found))
    if len(unique) <= _MAX_REFS or root is None or root in unique[:_MAX_REFS]:
        return unique[:_MAX_REFS]
    return unique[:_MAX_REFS - 1] + (root,)


@dataclass(frozen=True, slots=True)
class NumberTag:
    """The request number in a subject, written by `template` ('{n}' is the number)."""

    template: str = "[#{n}]"

    @property
    def pattern(self) -> re.Pattern[str]:
        before, _, after = self.template.partition("{n}")
        return re.compile(re.escape(before) + r"(?<!\d)(\d{1,18})(?!\d)" + re.escape(after))

    def find(self, subject: str) -> int | None:
        """The number, or None: none there, or one no request can have (over MAX_NUMBER)."""
        m = self.pattern.search(subject or "")
        return int(m[1]) if m and int(m[1]) <= MAX_NUMBER else None

    def tag(self, subject: str, number: int) -> str:
        """`subject` with our number in front, once."""
        if self.find(subject) == number:
            return subject
        return f"{self.template.format(n=number)} {subject}".strip()


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def took_part(sender: str, participants: Iterable[str], mode: str) -> bool:
    """May `sender` join a request whose messages came from or went to `participants`?
    Compared case-folded, as the address book and Postfix's tables fold: one of ours writing
    from STRASSE@ (the book's straße@) opened a new request under `join: address`."""
    if mode == "off":
        return True
    sender = sender.strip().casefold()
    if not sender:
        return False
    known = {p.strip().casefold() for p in participants if p}
    if mode == "domain":
        return domain_of(sender) in {domain_of(p) for p in known}
    return sender in known


def sla_terms(text: str | None) -> dict[str, str]:
    """'first_response=4h calendar=msk first_response_due=2027-...' -> a dict of the terms."""
    out: dict[str, str] = {}
    for part in (text or "").split():
        key, eq, value = part.partition("=")
        if eq:
            out[key] = value
    return out


def sla_due(text: str | None, key: str = "first_response_due") -> datetime | None:
    value = sla_terms(text).get(key)
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None

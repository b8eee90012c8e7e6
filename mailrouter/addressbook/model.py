"""The values of the address book: limits, options, mailboxes, people, teams, results.

Everything here is a frozen value; the address book hands these out and nobody
changes them. `Resolution` is what the intake and the router ask for per recipient.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..values import REPLY_MOVED, Reply, Target

__all__ = ["Limits", "Options", "Mailbox", "Person", "Team", "Moved", "Resolution",
           "PERSON_MAILBOX_PREFIX", "PERSON_MAILDIR_PREFIX", "REPLY_MOVED"]

# A person without `mailbox:` gets an implicit Maildir mailbox of their own.
PERSON_MAILBOX_PREFIX = "person:"
PERSON_MAILDIR_PREFIX = "people/"



@dataclass(frozen=True, slots=True)
class Limits:
    """Expansion limits: deeper alias chains or wider groups are refused at load time."""

    max_depth: int = 20        # addresses on the longest chain, the recipient included
    max_width: int = 1000      # final targets of one recipient after dedupe


@dataclass(frozen=True, slots=True)
class Options:
    """The `address_options:` section of the routing files."""

    local_part_case: str = "insensitive"     # or "sensitive"
    detail_separator: str = "+"              # "" turns subaddressing off

    @property
    def fold_local(self) -> bool:
        return self.local_part_case == "insensitive"


@dataclass(frozen=True, slots=True)
class Mailbox:
    """Where mail can land. `where`: Maildir path under the root, or the downstream address."""

    name: str
    kind: str                  # 'maildir' | 'lmtp' | 'smtp'
    where: str
    sieve_folders: bool = False   # lmtp: folder in X-Mailrouter-Folder, filed by Dovecot's Sieve


@dataclass(frozen=True, slots=True)
class Person:
    key: str
    address: str | None        # canonical
    name: str | None
    deputy: str | None         # a person key
    away: tuple[tuple[dt.date, dt.date], ...]
    mailbox: str               # a mailbox name; implicit `person:<key>` when not given

    def is_away(self, day: dt.date) -> bool:
        return any(start <= day <= end for start, end in self.away)


@dataclass(frozen=True, slots=True)
class Team:
    key: str
    members: tuple[str, ...]   # person keys
    pick: str                  # 'round-robin' | 'schedule' | 'least-open'
    mailbox: str | None        # when set, mail to the team lands here, not with each member
    head: str | None = None    # a person key: escalations go here when a deputy cannot take them
    schedule: tuple[tuple[str, str], ...] = ()   # (member, calendar name): when each is on duty


@dataclass(frozen=True, slots=True)
class Moved:
    old: str
    now: str
    deliver: bool
    autoreply: str | None


@dataclass(frozen=True, slots=True)
class Resolution:
    """One envelope recipient resolved: where its copies go, or why it is refused."""

    rcpt: str                          # as given
    address: str                       # canonical: local@domain, domain in U-labels, no detail
    detail: str | None                 # the +detail, as given
    targets: tuple[Target, ...]        # final, deduplicated, each with its path
    moved: Moved | None = None
    reply: Reply | None = None         # set when refused
    person: str | None = None          # when the rcpt is a person's own address

    @property
    def path(self) -> tuple[str, ...]:
        """The path of the first target, or just the address: for the Decision."""
        return self.targets[0].path if self.targets else (self.address,)

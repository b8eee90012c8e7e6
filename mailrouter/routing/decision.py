"""The Decision: what mailrouter does with one message for one envelope recipient.

A Decision is a value, built by pure code (address book + rules) from the message
view, the envelope, the configuration snapshot and the clock. The intake answers
from it, delivery follows its targets, the registry stores it, and `mailrouter
explain` prints it. Later stages add fields with defaults; nothing is renamed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..errors import Reply

__all__ = ["Action", "Target", "RuleMatch", "Decision",
           "REPLY_OK", "REPLY_UNKNOWN", "REPLY_LOOP", "REPLY_LOOP_SUSPECT", "REPLY_TEMPFAIL"]

REPLY_OK = Reply(250, "2.1.5", "Ok")
REPLY_UNKNOWN = Reply(550, "5.1.1", "Recipient address rejected: no such address here")
REPLY_LOOP = Reply(554, "5.4.6", "Mail loop detected")
REPLY_LOOP_SUSPECT = Reply(451, "4.4.6", "Possible mail loop, try again later")
REPLY_TEMPFAIL = Reply(451, "4.3.0", "Temporary failure, try again later")


class Action(enum.Enum):
    DELIVER = "deliver"
    REJECT = "reject"      # 5xx for this recipient
    DEFER = "defer"        # 4xx for this recipient


@dataclass(frozen=True, slots=True)
class Target:
    """One final place a copy goes: a mailbox, optionally a folder in it."""

    mailbox: str
    folder: str | None = None
    person: str | None = None          # the person this copy is for, if any
    path: tuple[str, ...] = ()         # the alias path walked to get here

    @property
    def key(self) -> str:
        """Stable identity for dedupe: two paths to one place are one copy."""
        return f"{self.mailbox}/{self.folder}" if self.folder else self.mailbox


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """One rule that matched, and on what."""

    name: str
    file: str
    line: int
    matched: str = ""                  # "subject contains 'счёт' (value: 'Счёт №5')"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "line": self.line, "matched": self.matched}


@dataclass(frozen=True, slots=True)
class Decision:
    rcpt: str
    action: Action
    reply: Reply
    targets: tuple[Target, ...] = ()
    mailbox: str | None = None
    folder: str | None = None
    owner: str | None = None           # a person key, or a team key to pick from later
    tags: tuple[str, ...] = ()
    priority: str | None = None
    sla: str | None = None             # e.g. "first_response=4h calendar=msk"
    autoreply: str | None = None       # name of the autoreply to send (moved addresses)
    path: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    rules: tuple[RuleMatch, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """The `recipients[]` object of `mailrouter explain --json`."""
        return {
            "rcpt": self.rcpt, "action": self.action.value, "reply": str(self.reply),
            "mailbox": self.mailbox, "folder": self.folder, "owner": self.owner,
            "tags": list(self.tags), "priority": self.priority, "sla": self.sla,
            "autoreply": self.autoreply, "path": list(self.path), "reasons": list(self.reasons),
            "rules": [r.as_dict() for r in self.rules],
            "targets": [{"mailbox": t.mailbox, "folder": t.folder, "person": t.person,
                         "path": list(t.path)} for t in self.targets],
        }

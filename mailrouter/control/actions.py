"""What a person does to a request by hand: reassign its owner, close or reopen it, add a note.

Each is one function on a Connection (run it with `Registry.write`), so the web view and
the command line share them. Each writes the change and a `request_events` row with who
did it (`actor`, a person key) and when, in one transaction: the request's story shows it.

Refused (a `ValueError` whose text says why, nothing written): a note that is empty or
longer than MAX_NOTE characters; closing a closed request, reopening an open one,
reassigning to the current owner. An unknown request number is `LookupError`. Whether
the person may act on the request, and whether the new owner is a person of the address
book, is the caller's check (the web view: rights by department).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from .store import add_event, reopened, request_row
from .tables import requests
from .threads import MAX_NUMBER

__all__ = ["reassign", "close", "reopen", "add_note", "MAX_NOTE", "Refused"]

MAX_NOTE = 4000


class Refused(ValueError):
    """An action not done, with why: `key` and `values` for a view that says it in its
    reader's language (the web view's i18n), the English text as str() (the CLI, the log).
    The Russian request page said "Не сделано: request #1 is already closed"."""

    def __init__(self, key: str, text: str, **values: object) -> None:
        super().__init__(text)
        self.key, self.values = key, values


def _status(conn: Connection, number: int) -> tuple[str, str | None]:
    """The request's status and owner, its row locked until the caller's commit (PostgreSQL;
    SQLite's writers take turns): what is checked here is what the change is made on.
    Before, a reopen by hand read `closed` while the customer's mail at another instance
    was reopening it, waited for that commit only at its UPDATE, and reopened it a second
    time (two "closed -> open" lines, the round counted twice); two reassigns at once
    each wrote "from" the same old owner."""
    if not 0 < number <= MAX_NUMBER:      # PostgreSQL would fail the query, not find nothing
        raise LookupError(f"no request #{number}")
    row = conn.execute(select(requests.c.status, requests.c.owner).where(
        requests.c.id == number).with_for_update()).first()
    if row is None:
        raise LookupError(f"no request #{number}")
    return str(row.status), row.owner


def reassign(conn: Connection, number: int, to: str, actor: str, at: datetime, how: str,
             teams: Mapping[str, Any] | None = None) -> None:
    """Make `to` the owner; the event keeps the old owner, the new one and who did it.
    With `teams` (the address book's): a new owner outside the request's team moves it to
    the one team `to` is a member of, so the SLA's escalation goes to the head over the
    new owner, not to the old team's head, who no longer has the request. One in no team
    (a specialist, a head) or in several keeps the request's team and its head."""
    _, old = _status(conn, number)
    if old == to:
        raise Refused("already_owner", f"{to} already owns request #{number}", who=to,
                      number=number)
    row = request_row(conn, number)
    assert row is not None
    team = row["team"]
    if teams is not None and (team not in teams or to not in teams[team].members):
        mine = [k for k, t in teams.items() if to in t.members]
        team = mine[0] if len(mine) == 1 else team
    conn.execute(update(requests).where(requests.c.id == number).values(owner=to, team=team))
    change: dict[str, Any] = {"from": old, "to": to, "why": [f"reassigned by {actor} ({how})"]}
    if team != row["team"]:
        change["team"] = {"from": row["team"], "to": team}
    add_event(conn, number, at, "owner", json.dumps(change, ensure_ascii=False), actor)


def close(conn: Connection, number: int, actor: str, at: datetime, how: str) -> None:
    status, _ = _status(conn, number)
    if status == "closed":
        raise Refused("already_closed", f"request #{number} is already closed", number=number)
    conn.execute(update(requests).where(requests.c.id == number)
                 .values(status="closed", closed_at=at, response_due=None))
    add_event(conn, number, at, "status", f"{status} -> closed: closed by {actor} ({how})", actor)


def reopen(conn: Connection, number: int, actor: str, at: datetime, how: str,
           calendars: Mapping[str, Any]) -> None:
    """Back to `open`, as when the customer writes: a closed request reopened is one
    someone owes the customer an answer on, due its SLA term from now on the request's
    calendar (`calendars`: the snapshot's), reminded and escalated like the first one.
    Before, a request that had had its first response went back to `answered`, which no
    clock watched, while the customer's own reopen gave `open`."""
    status, _ = _status(conn, number)
    if status != "closed":
        raise Refused("not_closed", f"request #{number} is not closed (it is {status})",
                      number=number, status=status)
    row = request_row(conn, number)
    assert row is not None
    reopened(conn, number, row, at, calendars, f"reopened by {actor} ({how})", actor)


def add_note(conn: Connection, number: int, text: str, actor: str, at: datetime) -> None:
    """An internal note: seen in the request's story only, never sent to anyone."""
    text = text.strip()
    if not text:
        raise Refused("note_empty", "a note needs some text")
    if len(text) > MAX_NOTE:
        raise Refused("note_long", f"a note is at most {MAX_NOTE} characters, this one has "
                      f"{len(text)}", most=MAX_NOTE, got=len(text))
    _status(conn, number)
    add_event(conn, number, at, "note", text, actor)

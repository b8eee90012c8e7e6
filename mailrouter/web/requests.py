"""The request board, a request's page, and the actions on a request.

- `/board`: requests not closed per owner and per mailbox (open, awaiting an answer:
  the first, or the next after a reopen; overdue), then those awaiting one, soonest due first, each
  with its SLA time left in business hours of its calendar (negative and marked when
  overdue); `?owner=` / `?mailbox=` narrow the list. The same query as
  `control.queries.board`, scoped by the viewer's rights.
- `/request/N`: `control.queries.show_request`, the query of `mailrouter request show`:
  its messages in order (100 a page, `?page=2` on) (decoded subject, From, each decision with its rule, file:line
  relative to the routing directory, the rule set's hash and the reasons), then the
  history (owner changes, replies, status changes, reminders, escalations, notes).
- `POST /request/N/owner|close|reopen|note`: control/actions.py, with the viewer as actor.

Refused: a request outside the viewer's rights is 404 whether or not it exists (by link
too), and so is any action on it: a head acts within their department only. A new owner
who is not a person of the address book, or an empty note, is 400 with the reason; closing
a closed request (or reopening an open one) is 409; the form without its CSRF token is
403 (auth.py). Nothing is written in any of these cases.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import Connection, select

from ..control import actions
from ..control.notice import Notices, queue_notice
from ..control.queries import board, requests_in, show_request, sla_left
from ..control.store import owner_change, request_row
from ..control.tables import requests
from ..registry.queries import Scope
from .auth import REGISTRY
from .common import RulePlaces, bad, lang_of, page_key, redirect, render, snap, viewer
from .i18n import translate

__all__ = ["board_page", "request_page", "act", "ACTION_OPS"]

HOW = "web view"


async def board_page(request: web.Request) -> web.Response:
    owner = request.query.get("owner", "").strip()[:255]
    mailbox = request.query.get("mailbox", "").strip()[:255]
    try:
        after = _after(request.query.get("after", ""))
    except ValueError:
        return bad(request, "after")
    scope, s = viewer(request).scope, snap(request)
    now = datetime.now(timezone.utc)
    data = await request.app[REGISTRY].read("web board", lambda c: board(
        c, now, s.rules.calendars, scope, owner or None, mailbox or None, after=after))
    nxt = data["next"]
    more = None if nxt is None else urlencode(
        {k: v for k, v in (("owner", owner), ("mailbox", mailbox)) if v}
        | {"after": f"{nxt[0].isoformat() if nxt[0] else ''},{nxt[1]}"})
    return render(request, "board.html", b=data, owner=owner, mailbox=mailbox,
                  people=s.book.people, more=more)


def _after(text: str) -> tuple[datetime | None, int] | None:
    """The board's next-page key `DUE,ID` (DUE an ISO time with its zone, or empty)."""
    if not text:
        return None
    at, rid = page_key(text)
    number = int(rid)
    if not 0 <= number < 2**63:     # a request id is a 64-bit integer in the registry
        raise ValueError("a request number out of range")
    return at, number


def _history(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Events and alerts in time order; an owner change's JSON read into from/to/why."""
    out = []
    for e in doc["events"]:
        item = {"at": e["at"], "kind": e["kind"], "actor": e["actor"], "detail": e["detail"],
                "event": True}      # its detail's times are shown in the company's zone
        if e["kind"] == "owner" and (change := owner_change(e["detail"])) is not None:
            item["owner"] = change
        out.append(item)
    for a in doc["alerts"]:
        out.append({"at": a["at"], "kind": a["stage"], "actor": None,
                    "detail": f"{a['recipient'] or '-'} <{a['address'] or '-'}>: {a['subject']}"})
    return sorted(out, key=lambda i: str(i["at"]))


# A request's messages per page, in order (each with every decision's explanation): a
# thread of thousands (a customer's autoresponder) was one page of megabytes.
THREAD_PAGE = 100


async def request_page(request: web.Request) -> web.Response:
    number, scope, s = int(request.match_info["number"]), viewer(request).scope, snap(request)
    text = request.query.get("page", "1")
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 10**6):
        return bad(request, f"page={text[:40]!r}")
    page = int(text)
    doc = await request.app[REGISTRY].read("web request", lambda c: show_request(
        c, number, scope, skip=(page - 1) * THREAD_PAGE, limit=THREAD_PAGE))
    if doc is None:
        raise web.HTTPNotFound()
    pages = max(1, -(-doc["message_count"] // THREAD_PAGE))
    if page > pages:            # past the thread's last message: no such page
        raise web.HTTPNotFound()
    thread = {"page": page, "pages": pages, "count": doc["message_count"],
              "first": (page - 1) * THREAD_PAGE + 1, "last": (page - 1) * THREAD_PAGE + len(doc["messages"])}
    left, overdue = None, False
    if doc["status"] == "open" and doc["response_due"]:      # the answer owed now
        due, now = datetime.fromisoformat(doc["response_due"]), datetime.now(timezone.utc)
        left = sla_left(s.rules.calendars, doc["sla_calendar"], due, now)
        # as the board marks it: past its due time, however few business hours late (fell
        # due at 18:00 and read at 20:00 is 0.0 late, and read "0.0 business h left")
        overdue = due <= now
    return render(request, "request.html", r=doc, history=_history(doc), left=left, thread=thread,
                  overdue=overdue, people=s.book.people, places=RulePlaces(s))


NOTICES: web.AppKey[Notices | None] = web.AppKey("notices")
# The registry operation of each action (its `what`: logs, mailrouter_registry_errors_total),
# written out: metrics.REGISTRY_OPS makes each one's series at 0, which f"web {what}" escaped
ACTION_OPS = {"owner": "web owner", "close": "web close", "reopen": "web reopen", "note": "web note"}


def _tell_new_owner(request: web.Request, conn: Connection, number: int, to: str,
                    at: datetime) -> None:
    """Mail the new owner that the request is theirs now, in the reassign's transaction
    (a reassign that fails sends nothing). Not to whoever took it themselves, nor to a
    person without an address; nothing when control is off."""
    notices, me, s = request.app[NOTICES], viewer(request), snap(request)
    person = s.book.people.get(to)
    if notices is None or to == me.person or person is None or not person.address:
        return
    row = request_row(conn, number)
    assert row is not None
    subject, body = notices.assigned(dict(row), me.name, s.rules.calendars)
    queue_notice(conn, notices, f"assign:{number}:{at.isoformat()}", "assign", row["message_key"],
                 person.address, person.name, subject, body, at)


def _mine(conn: Connection, scope: Scope, number: int) -> None:
    if conn.execute(select(requests.c.id).where(requests.c.id == number,
                                                requests_in(scope))).first() is None:
        raise LookupError(number)


async def act(request: web.Request) -> web.Response:
    number, what = int(request.match_info["number"]), request.match_info["action"]
    me, s = viewer(request), snap(request)
    form = await request.post()
    now = datetime.now(timezone.utc)
    to = str(form.get("owner", "")).strip()
    text = str(form.get("text", ""))
    if what == "owner" and to not in s.book.people:
        return bad(request, f"owner={to[:60]!r}: not a person of the address book")

    def write(conn: Connection) -> tuple[int, str] | None:
        """None when done; else (status, why). Every check comes before any write."""
        try:
            _mine(conn, me.scope, number)
            if what == "owner":
                actions.reassign(conn, number, to, me.person, now, HOW, s.book.teams)
                _tell_new_owner(request, conn, number, to, now)
            elif what == "close":
                actions.close(conn, number, me.person, now, HOW)
            elif what == "reopen":
                actions.reopen(conn, number, me.person, now, HOW, s.rules.calendars)
            else:
                actions.add_note(conn, number, text, me.person, now)
        except LookupError:
            return 404, ""
        except actions.Refused as exc:     # said in the reader's language
            lang = lang_of(request)
            values = dict(exc.values)
            if "status" in values:     # a request's status, as its page names it
                values["status"] = translate(lang, f"st_{values['status']}")
            return (400 if what == "note" else 409), translate(
                lang, f"refused_{exc.key}", **values)
        except ValueError as exc:
            return (400 if what == "note" else 409), str(exc)
        return None
    refused = await request.app[REGISTRY].write(ACTION_OPS[what], write)
    if refused is None:
        return redirect(f"/request/{number}")
    if refused[0] == 404:
        raise web.HTTPNotFound()
    return bad(request, refused[1], refused[0])

"""The web view's pages: sign-in, search, a message's story, a counterparty; the board, a
request's page and its actions are in requests.py, the report in reports.py.

Served by aiohttp on the daemon's own event loop (`start_web` returns the AppRunner the
daemon cleans up at shutdown); pages are Jinja2 templates from the package, and every
asset (one style sheet, one icon) is in the package too, so it works with no internet.
Registry work runs through `Registry.read`/`write` (threads for SQLite, asyncpg for
PostgreSQL), never on the loop; a password check runs in a thread (scrypt is slow on
purpose).

Refused: see auth.py (no session, no CSRF token, foreign Origin); sign-in is throttled
(throttle.py: too many failures for one name or from one address answer 429). Bad input
(a date that is not YYYY-MM-DD, a NUL character anywhere: common.no_nul) is answered 400
with the reason on the page; an unknown message or one outside the viewer's rights is 404,
the same answer for both, so a link says nothing.
Forms are limited to 64 KiB. A search shows 100 messages a page and a counterparty's history
500, newest first; a "Next page" link (`before=TIME,KEY`, the last row's) goes on from there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from sqlalchemy import Connection

from ..calendars import company_zone
from ..config import WebConfig, is_loopback
from ..control.notice import Notices
from ..control.queries import (counterparty_requests, counterparty_threads, may_see_request, owned_by,
                               request_of)
from ..registry import Registry
from ..registry.accounts import close_session, open_session, password_hash, verify_password
from ..registry.models import MESSAGE_STATUSES
from ..registry.queries import Scope, counterparty, message_story, search
from ..routing.snapshot import Snapshot
from .auth import (COOKIE, ERRORS, LOGIN_CSRF, REGISTRY, SETTINGS, SNAPSHOT, csrf, find_person, from_proxy,
                   headers, https, known_host, login_token, safe_next, session_token, set_session_cookie,
                   signed_in)
from .common import (HERE, LANG_COOKIE, BadInput, RulePlaces, bad, day, error_page, lang_of,
                     no_nul, page_key, redirect, render, snap, viewer)
from .i18n import LANGUAGES, translate
from .reads import WebRegistry
from .reports import report_page
from .requests import NOTICES, act, board_page, request_page
from .throttle import Throttle

__all__ = ["make_app", "start_web"]

THROTTLE: web.AppKey[Throttle] = web.AppKey("throttle")
log = logging.getLogger(__name__)


# -- sign-in, sign-out, language -------------------------------------------------------

async def login_form(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    if request.app[SETTINGS].trusted_header is not None:
        raise web.HTTPSeeOther("/")
    token = login_token(request) or secrets.token_urlsafe(32)
    resp = render(request, "login.html", status=status, csrf_token=token, error=error,
                  next=safe_next(request.query.get("next")))
    resp.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="Strict", path="/login",
                    secure=https(request))
    return resp


def client_address(request: web.Request) -> str:
    """Whom sign-in failures count against: the peer, or behind a reverse proxy on this host
    (a loopback peer) the address that proxy appended last to X-Forwarded-For. Counted
    against the proxy's own address, 20 failures from anyone locked everyone out. With
    `web.proxy_secret` set, only a request carrying it is the proxy's: another user of this
    host sending X-Forwarded-For of their choice counts against the loopback peer."""
    peer = request.remote or "?"
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and is_loopback(peer) and from_proxy(request):
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return peer


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    registry, settings, throttle = request.app[REGISTRY], request.app[SETTINGS], request.app[THROTTLE]
    typed, ip = str(form.get("person", ""))[:200], client_address(request)
    person = find_person(snap(request), typed)
    # a person's failures count together whether they typed the key or the address
    name = person if person is not None else typed
    wait = throttle.wait(name, ip)
    # logged for fail2ban and the like; the name as typed, quoted by the log formatter
    seen = {"person": name, "peer": ip}
    if wait > 0:
        log.warning("event=web_signin_throttled", extra={"fields": seen | {"retry_after": math.ceil(wait)}})
        resp = await login_form(request, translate(lang_of(request), "throttled",
                                                   minutes=math.ceil(wait / 60)), 429)
        resp.headers["Retry-After"] = str(math.ceil(wait))
        return resp
    # counted as failed before the check (tens of ms of scrypt): tries sent at once see each other
    at = throttle.failed(name, ip)
    try:
        stored = await registry.read("web sign-in", lambda c: password_hash(c, person)) if person else None
        ok = await asyncio.to_thread(verify_password, str(form.get("password", "")), stored)
    except BaseException:           # an outage is no wrong password: five would lock the person
        throttle.unknown(name, ip, at)
        raise
    if not ok or person is None:
        log.warning("event=web_signin_failed", extra={"fields": seen | {"known": person is not None}})
        return await login_form(request, translate(lang_of(request), "bad_login"), 401)
    throttle.succeeded(name, ip, at)
    log.info("event=web_signin", extra={"fields": seen})
    now = datetime.now(timezone.utc)
    token, _ = await registry.write("web sign-in",
                                    lambda c: open_session(c, person, now, settings.session_ttl))
    resp = redirect(safe_next(str(form.get("next", ""))))
    set_session_cookie(resp, request, token, settings.session_ttl)
    resp.del_cookie(LOGIN_CSRF, path="/login")
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    token = session_token(request)
    await request.app[REGISTRY].write("web sign-out", lambda c: close_session(c, token))
    resp = redirect("/login")
    resp.del_cookie(COOKIE, path="/")
    return resp


async def language(request: web.Request) -> web.StreamResponse:
    resp = redirect(safe_next(request.query.get("next")))
    if request.query.get("to") in LANGUAGES:
        resp.set_cookie(LANG_COOKIE, request.query["to"], max_age=365 * 86400, samesite="Lax",
                        httponly=True, path="/")
    return resp


# -- pages ------------------------------------------------------------------------------

async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/board")


def _visible_mailboxes(request: web.Request) -> list[str]:
    me = viewer(request)
    boxes = snap(request).book.mailboxes
    return sorted(boxes if me.admin else (b for b in me.scope.mailboxes if b in boxes))


# Messages per page of a search and of a counterparty's history; the page after is by
# `before=TIME,KEY` (the last row's), newest first as the rows are.
SEARCH_PAGE, HISTORY_PAGE = 100, 500


def _before(request: web.Request) -> tuple[datetime, str] | None:
    """The `before` of a next-page link: the last message shown, its time (ISO, with its zone) and key."""
    text = request.query.get("before", "")
    if not text:
        return None
    try:
        when, key = page_key(text)
        if when is None or not key or len(key) > 64:
            raise ValueError(text)
        return when, key
    except ValueError:
        raise BadInput(f"before={text[:80]!r}") from None


def _older(request: web.Request, rows: Sequence[Mapping[str, Any]], size: int) -> str | None:
    """The query of the page after `rows` (one more than `size` asked: there is one), or None."""
    if len(rows) <= size:
        return None
    last = rows[size - 1]
    at = last["received_at"]
    at = at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)
    keep = {k: v for k, v in request.query.items() if k != "before" and v}
    return urlencode(keep | {"before": f"{at.isoformat()},{last['key']}"})


async def search_page(request: web.Request) -> web.Response:
    q = request.query
    try:
        since, until, before = day(request, "since"), day(request, "until"), _before(request)
    except BadInput as exc:
        return bad(request, str(exc))
    if since is not None and until is not None and until < since:
        # as the report: dates typed the wrong way round found "no messages", as if none came
        return bad(request, f"until={until} is before since={since}")
    fields = {k: q.get(k, "")[:200] for k in ("sender", "rcpt", "words", "tag", "status", "mailbox",
                                              "owner")}
    scope, zone = viewer(request).scope, company_zone(snap(request).rules.calendars)
    # the owner list names people: the requests they own (a team's pick) as the rules' owner
    owned = owned_by(fields["owner"].strip()) if fields["owner"].strip() else None
    found = await request.app[REGISTRY].read("web search", lambda c: search(
        c, scope, since=since, until=until, limit=SEARCH_PAGE + 1, zone=zone, before=before,
        owned=owned, **fields))
    more = _older(request, found.rows, SEARCH_PAGE)
    found = dataclasses.replace(found, rows=found.rows[:SEARCH_PAGE])
    return render(request, "search.html", found=found, q=fields, since=q.get("since", ""),
                  until=q.get("until", ""), statuses=sorted(MESSAGE_STATUSES), more=more,
                  mailboxes=_visible_mailboxes(request), people=snap(request).book.people)


async def message_page(request: web.Request) -> web.Response:
    key, scope = request.match_info["key"], viewer(request).scope
    story = await request.app[REGISTRY].read("web message", lambda c: _story(c, scope, key))
    if story is None:
        raise web.HTTPNotFound()
    return render(request, "message.html", m=story, people=snap(request).book.people,
                  places=RulePlaces(snap(request)))


def _story(conn: Connection, scope: Scope, key: str) -> dict[str, Any] | None:
    """The message's story, its request's number, and whether this viewer may open that
    request (else the number is shown without a link to a page that is "not found")."""
    story = message_story(conn, scope, key)
    if story is None:
        return None
    number = request_of(conn, key)
    return story | {"request": number, "request_seen": number is not None and (
        scope.everything or may_see_request(conn, number, scope))}


async def counterparty_page(request: web.Request) -> web.Response:
    who, scope = request.query.get("who", "").strip()[:200], viewer(request).scope
    try:
        before = _before(request)
    except BadInput as exc:
        return bad(request, str(exc))
    def read(c: Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Their messages, and on the first page their requests (as `registry history`)."""
        found = counterparty(c, scope, who, limit=HISTORY_PAGE + 1, before=before,
                             threads=counterparty_threads(who) if who else None)
        reqs = counterparty_requests(c, who, scope, REQUESTS_SHOWN + 1) if before is None else []
        return found, reqs
    found, reqs = await request.app[REGISTRY].read("web counterparty", read)
    return render(request, "counterparty.html", who=who, found=found[:HISTORY_PAGE],
                  more=_older(request, found, HISTORY_PAGE), reqs=reqs[:REQUESTS_SHOWN],
                  reqs_more=len(reqs) > REQUESTS_SHOWN, people=snap(request).book.people)


# The counterparty page lists this many of their requests, newest first.
REQUESTS_SHOWN = 100


# -- the application -------------------------------------------------------------------

def make_app(registry: Registry, snapshot: Callable[[], Snapshot], settings: WebConfig,
             throttle: Throttle | None = None, notices: Notices | None = None) -> web.Application:
    """`notices`: how to tell a person a request was given to them (None: control is off)."""
    app = web.Application(middlewares=[headers, known_host, signed_in, no_nul, csrf], client_max_size=64 * 1024)
    app[REGISTRY], app[SNAPSHOT], app[SETTINGS] = WebRegistry(registry), snapshot, settings
    app[NOTICES] = notices
    app[ERRORS] = error_page
    app[THROTTLE] = throttle or Throttle()
    app.router.add_get("/", index)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/lang", language)
    app.router.add_get("/search", search_page)
    app.router.add_get("/message/{key}", message_page)
    app.router.add_get("/counterparty", counterparty_page)
    app.router.add_get("/report", report_page)
    app.router.add_get("/board", board_page)
    app.router.add_get("/request/{number:[0-9]{1,18}}", request_page)
    app.router.add_post("/request/{number:[0-9]{1,18}}/{action:owner|close|reopen|note}", act)
    app.router.add_static("/static/", HERE / "static", follow_symlinks=False)
    return app


class ProtocolLog(logging.Logger):
    """aiohttp's own errors: a request it cannot parse (any scanner, a TLS hello sent to the
    port) is one warning line naming the peer and the reason, where aiohttp logged an
    ERROR with a traceback for each. A failure that is not the client's keeps its traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            reason = (exc.message or "").strip().splitlines()
            log.warning("event=web_bad_request peer=%s status=%d reason=%s",
                        args[0] if args else "-", exc.code, reason[0].rstrip(":") if reason else "-")
        else:
            log.error(msg, *args, exc_info=exc_info, **kw)


async def start_web(host: str, port: int, registry: Registry, snapshot: Callable[[], Snapshot],
                    settings: WebConfig, notices: Notices | None = None
                    ) -> tuple[web.AppRunner, tuple[str, int]]:
    """Serve the web view on this event loop; the runner to clean up, and the bound address."""
    runner = web.AppRunner(make_app(registry, snapshot, settings, notices=notices), access_log=None,
                           handle_signals=False, shutdown_timeout=5.0,
                           logger=ProtocolLog(__name__ + ".protocol"))
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    return runner, (str(bound[0]), int(bound[1]))

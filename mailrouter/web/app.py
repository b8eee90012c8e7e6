"""The web view's pages: sign-in, search, a message's story, a counterparty, the report.

Served by aiohttp on the daemon's own event loop (`start_web` returns the AppRunner the
daemon cleans up at shutdown); pages are Jinja2 templates from the package, and every
asset (one style sheet, one icon) is in the package too, so it works with no internet.
Registry work runs through `Registry.read`/`write` (threads for SQLite, asyncpg for
PostgreSQL), never on the loop; a password check runs in a thread (scrypt is slow on
purpose).

Refused: see auth.py (no session, no CSRF token, foreign Origin). Bad input (a date that
is not YYYY-MM-DD) is answered 400 with the reason on the page; an unknown message or
one outside the viewer's rights is 404, the same answer for both, so a link says nothing.
Forms are limited to 64 KiB.
"""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from ..config import WebConfig
from ..registry import Registry
from ..registry.accounts import close_session, open_session, password_hash, verify_password
from ..registry.models import MESSAGE_STATUSES
from ..registry.queries import counterparty, message_story, search, volume
from ..routing.snapshot import Snapshot
from .auth import (COOKIE, ERRORS, LOGIN_CSRF, REGISTRY, SETTINGS, SNAPSHOT, VIEWER, Viewer, csrf,
                   find_person, headers, safe_next, set_session_cookie, signed_in)
from .charts import bar_chart
from .i18n import LANGUAGES, pick_language, translate

__all__ = ["make_app", "start_web"]

HERE = Path(__file__).resolve().parent
LANG_COOKIE = "mailrouter_lang"
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined)


class BadInput(ValueError):
    """A query parameter that cannot be read; the page says which and how to write it."""


def _lang(request: web.Request) -> str:
    return pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language"))


def render(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    lang = _lang(request)
    viewer = request.get(VIEWER)
    body = _ENV.get_template(template).render(
        t=lambda key, **v: translate(lang, key, **v), lang=lang, languages=LANGUAGES,
        viewer=viewer, here=request.path_qs, **ctx)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _error_page(request: web.Request, status: int, text: str) -> web.StreamResponse:
    key = {403: "forbidden", 404: "not_found"}.get(status)
    return render(request, "error.html", status=status, status_code=status,
                  message=translate(_lang(request), key) if key else text)


def _day(request: web.Request, name: str, default: date | None = None) -> date | None:
    text = request.query.get(name, "").strip()
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{name}={text[:40]!r}: " + translate(_lang(request), "bad_date")) from None


def _bad(request: web.Request, exc: BadInput) -> web.Response:
    return render(request, "error.html", status=400, status_code=400,
                  message=translate(_lang(request), "bad_input", what=str(exc)))


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _viewer(request: web.Request) -> Viewer:
    return request[VIEWER]


def _snap(request: web.Request) -> Snapshot:
    return request.app[SNAPSHOT]()


# -- sign-in, sign-out, language -------------------------------------------------------

async def login_form(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    if request.app[SETTINGS].trusted_header is not None:
        raise web.HTTPSeeOther("/")
    token = request.cookies.get(LOGIN_CSRF) or secrets.token_urlsafe(32)
    resp = render(request, "login.html", status=status, csrf_token=token, error=error,
                  next=safe_next(request.query.get("next")))
    resp.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="Strict", path="/login")
    return resp


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    registry, settings = request.app[REGISTRY], request.app[SETTINGS]
    person = find_person(_snap(request), str(form.get("person", "")))
    stored = await registry.read("web sign-in", lambda c: password_hash(c, person)) if person else None
    ok = await asyncio.to_thread(verify_password, str(form.get("password", "")), stored)
    if not ok or person is None:
        return await login_form(request, translate(_lang(request), "bad_login"), 401)
    now = datetime.now(timezone.utc)
    token, _ = await registry.write("web sign-in",
                                    lambda c: open_session(c, person, now, settings.session_ttl))
    resp = _redirect(safe_next(str(form.get("next", ""))))
    set_session_cookie(resp, request, token, settings.session_ttl)
    resp.del_cookie(LOGIN_CSRF, path="/login")
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(COOKIE, "")
    await request.app[REGISTRY].write("web sign-out", lambda c: close_session(c, token))
    resp = _redirect("/login")
    resp.del_cookie(COOKIE, path="/")
    return resp


async def language(request: web.Request) -> web.StreamResponse:
    resp = _redirect(safe_next(request.query.get("next")))
    if request.query.get("to") in LANGUAGES:
        resp.set_cookie(LANG_COOKIE, request.query["to"], max_age=365 * 86400, samesite="Lax",
                        httponly=True, path="/")
    return resp


# -- pages ------------------------------------------------------------------------------

async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/search")


def _visible_mailboxes(request: web.Request) -> list[str]:
    viewer = _viewer(request)
    boxes = _snap(request).book.mailboxes
    return sorted(boxes if viewer.admin else (b for b in viewer.scope.mailboxes if b in boxes))


async def search_page(request: web.Request) -> web.Response:
    q = request.query
    try:
        since, until = _day(request, "since"), _day(request, "until")
    except BadInput as exc:
        return _bad(request, exc)
    fields = {k: q.get(k, "")[:200] for k in ("sender", "rcpt", "words", "tag", "status", "mailbox",
                                              "owner")}
    scope = _viewer(request).scope
    found = await request.app[REGISTRY].read("web search", lambda c: search(
        c, scope, since=since, until=until, limit=100, **fields))
    return render(request, "search.html", found=found, q=fields, since=q.get("since", ""),
                  until=q.get("until", ""), statuses=sorted(MESSAGE_STATUSES),
                  mailboxes=_visible_mailboxes(request), people=_snap(request).book.people)


async def message_page(request: web.Request) -> web.Response:
    key, scope = request.match_info["key"], _viewer(request).scope
    story = await request.app[REGISTRY].read("web message", lambda c: message_story(c, scope, key))
    if story is None:
        raise web.HTTPNotFound()
    return render(request, "message.html", m=story, people=_snap(request).book.people,
                  rule_file=lambda path: Path(str(path)).name)


async def counterparty_page(request: web.Request) -> web.Response:
    who, scope = request.query.get("who", "").strip()[:200], _viewer(request).scope
    found = await request.app[REGISTRY].read("web counterparty", lambda c: counterparty(c, scope, who))
    return render(request, "counterparty.html", who=who, found=found)


async def report_page(request: web.Request) -> web.StreamResponse:
    today = datetime.now(timezone.utc).date()
    try:
        since = _day(request, "since", today - timedelta(days=29)) or today
        until = _day(request, "until", today) or today
    except BadInput as exc:
        return _bad(request, exc)
    scope = _viewer(request).scope
    rows = await request.app[REGISTRY].read("web report", lambda c: volume(c, scope, since, until))
    if request.query.get("format") == "csv":
        return _csv(rows, f"mailrouter-{since}-{until}.csv")
    per_day: dict[str, int] = {}
    per_box: dict[str, int] = {}
    per_owner: dict[str, int] = {}
    for r in rows:
        per_day[r["day"]] = per_day.get(r["day"], 0) + r["messages"]
        per_box[r["mailbox"] or "-"] = per_box.get(r["mailbox"] or "-", 0) + r["messages"]
        per_owner[r["owner"] or "-"] = per_owner.get(r["owner"] or "-", 0) + r["messages"]
    days = [(since + timedelta(days=i)).isoformat() for i in range((until - since).days + 1)][-92:]
    lang = _lang(request)
    chart = bar_chart([(d[5:], per_day.get(d, 0)) for d in days], translate(lang, "per_day"))
    return render(request, "report.html", since=since.isoformat(), until=until.isoformat(), chart=chart,
                  per_box=sorted(per_box.items()), per_owner=sorted(per_owner.items()),
                  csv_link=f"/report?since={since}&until={until}&format=csv")


def _csv(rows: list[dict[str, Any]], name: str) -> web.Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["day", "mailbox", "owner", "messages", "trouble"])
    writer.writeheader()
    writer.writerows(rows)
    return web.Response(body=out.getvalue().encode("utf-8"), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


# -- the application -------------------------------------------------------------------

def make_app(registry: Registry, snapshot: Callable[[], Snapshot], settings: WebConfig) -> web.Application:
    app = web.Application(middlewares=[headers, signed_in, csrf], client_max_size=64 * 1024)
    app[REGISTRY], app[SNAPSHOT], app[SETTINGS], app[ERRORS] = registry, snapshot, settings, _error_page
    app.router.add_get("/", index)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/lang", language)
    app.router.add_get("/search", search_page)
    app.router.add_get("/message/{key}", message_page)
    app.router.add_get("/counterparty", counterparty_page)
    app.router.add_get("/report", report_page)
    app.router.add_static("/static/", HERE / "static", follow_symlinks=False)
    return app


async def start_web(host: str, port: int, registry: Registry, snapshot: Callable[[], Snapshot],
                    settings: WebConfig) -> tuple[web.AppRunner, tuple[str, int]]:
    """Serve the web view on this event loop; the runner to clean up, and the bound address."""
    runner = web.AppRunner(make_app(registry, snapshot, settings), access_log=None,
                           handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    return runner, (str(bound[0]), int(bound[1]))

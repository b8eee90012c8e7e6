"""Who is asking, and what they may see: sessions, sign-in, CSRF, security headers.

Middlewares, outermost first:
- `headers`: every answer (errors too) carries Content-Security-Policy (no script at all,
  styles and images from us only, no framing), X-Frame-Options DENY, nosniff,
  Referrer-Policy same-origin (no address of ours leaks to another site; not no-referrer,
  with which browsers send `Origin: null` on our own forms) and Cache-Control no-store
  (the pages show private mail). An unexpected error is logged with its traceback
  (event=web_error) and answered 500 with a plain page and these headers: aiohttp's own
  500 had none of them and named its version in Server;
- `signed_in`: a page needs a live session. With `web.trusted_header` the reverse proxy
  names the person in that header and a session is opened for them on the spot; else
  the session cookie must name a live row of `web_sessions` (registry/accounts.py).
  A person no longer in the address book is signed out. Without a session a GET (or HEAD)
  goes to /login and a POST is refused. A path we do not serve, or a method it does not
  take (OPTIONS, TRACE, PUT, POST /board), is 404 or 405 with Allow before all that,
  signed in or not: there is no such page to sign in for, and no form to be stale;
- `csrf`: a POST whose Origin is not this site, or whose form lacks the session's CSRF
  token (for /login: the token of its own cookie), gets 403 and changes nothing.

Rights (`viewer_for`): an admin (`web.admins`) sees everything; a head of department the
mail of the department's mailboxes; everybody also the mail they own or that lands in
their own mailbox, and the requests of the people away whom they cover as the deputy on
duty now (`covered_by`).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit

from aiohttp import web

from ..config import PROXY_SECRET_HEADER, WebConfig
from ..control.owners import Zones, on_duty
from ..control.queries import through_requests
from ..errors import RegistryError
from ..registry.accounts import Session, find_session, open_session
from ..registry.queries import Scope
from ..routing.snapshot import Snapshot
from .reads import WebRegistry

__all__ = ["Viewer", "viewer_for", "headers", "known_host", "signed_in", "csrf", "find_person", "from_proxy",
           "set_session_cookie",
           "COOKIE", "session_token", "LOGIN_CSRF", "login_token", "PUBLIC", "safe_next", "REGISTRY", "SETTINGS",
           "SNAPSHOT", "ERRORS", "VIEWER"]

COOKIE = "mailrouter_session"
LOGIN_CSRF = "mailrouter_login"
PUBLIC = ("/login", "/lang", "/static/")
_LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorPage = Callable[[web.Request, int, str], web.StreamResponse]

REGISTRY: web.AppKey[WebRegistry] = web.AppKey("registry")
SETTINGS: web.AppKey[WebConfig] = web.AppKey("settings")
SNAPSHOT: web.AppKey[Callable[[], Snapshot]] = web.AppKey("snapshot")
ERRORS: web.AppKey[ErrorPage] = web.AppKey("errors")
VIEWER: web.RequestKey[Viewer] = web.RequestKey("viewer")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Viewer:
    person: str
    name: str
    admin: bool
    scope: Scope
    session: Session


def viewer_for(snap: Snapshot, settings: WebConfig, session: Session) -> Viewer | None:
    """The viewer of a session, or None when the person left the address book."""
    person = snap.book.people.get(session.person)
    if person is None:
        return None
    admin = session.person in settings.admins
    boxes = {person.mailbox} | {box for d in snap.departments.values() if d.head == session.person
                                for box in d.mailboxes}
    covers = covered_by(snap, session.person, datetime.now(timezone.utc)) if not admin else frozenset()
    scope = Scope(everything=admin, mailboxes=frozenset(boxes), owner=session.person,
                  owns=through_requests(frozenset(boxes), session.person, covers), covers=covers)
    return Viewer(session.person, person.name or session.person, admin, scope, session)


def covered_by(snap: Snapshot, person: str, at: datetime) -> frozenset[str]:
    """The people away at `at` whose deputy on duty (down the chain, control.owners.on_duty,
    as the SLA reminders pick them) is `person`: their requests are `person`'s to work on."""
    people = snap.book.people
    if not any(p.deputy for p in people.values()):
        return frozenset()
    zones = Zones.of(snap.book.teams, snap.rules.calendars)
    return frozenset(key for key, p in people.items() if key != person and p.deputy
                     and zones.is_away(p, at) and on_duty(people, key, at, zones)[0] == person)


def find_person(snap: Snapshot, given: str) -> str | None:
    """A person key from what one types at sign-in: the key or the person's address."""
    given = given.strip()
    if given in snap.book.people:
        return given
    low = given.lower()
    return next((key for key, p in snap.book.people.items() if p.address and p.address.lower() == low),
                None)


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a path of ours, never another site (//evil, http:...).

    Browsers drop tabs and line breaks from a Location before reading it, so `/<TAB>/evil`
    would go to //evil; a line break would also split the header. Any control character
    or space sends one to the start page instead."""
    if (not target or not target.startswith("/") or target.startswith("//") or "\\" in target
            or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in target)):
        return "/"
    return target


def set_session_cookie(resp: web.StreamResponse, request: web.Request, token: str, ttl: float) -> None:
    """SameSite=Lax: a reminder's link opened from a mail client (another site) comes signed
    in, as a top-level GET; under Strict it met the sign-in form. A POST from another site
    still carries no cookie, and the CSRF token and the Origin check refuse it anyway."""
    resp.set_cookie(COOKIE, token, max_age=int(ttl), httponly=True, samesite="Lax", path="/",
                    secure=https(request))


def https(request: web.Request) -> bool:
    """Served over TLS, here or at a proxy that says so: cookies are then Secure."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


@web.middleware
async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            resp = request.app[ERRORS](request, exc.status, exc.text or "")
            if "Allow" in exc.headers:      # a 405 names the methods there are
                resp.headers["Allow"] = exc.headers["Allow"]
        else:           # a redirect
            resp = web.Response(status=exc.status, headers={"Location": exc.headers["Location"]})
    except RegistryError:
        resp = request.app[ERRORS](request, 503, "registry unavailable")
    except Exception:       # a bug: logged with its traceback, answered as every error is
        log.exception("event=web_error method=%s path=%s", request.method, request.path[:200])
        resp = _internal_error(request)
    resp.headers.update({
        "Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Server": "mailrouter"})           # not aiohttp's name and version (it only sets a missing one)
    if not request.path.startswith("/static/"):
        resp.headers["Cache-Control"] = "no-store"
    return resp


def _internal_error(request: web.Request) -> web.StreamResponse:
    text = "internal error; the server's log (event=web_error) says why"
    try:
        return request.app[ERRORS](request, 500, text)
    except Exception:       # the error page itself failed (a template, the snapshot)
        return web.Response(status=500, text=text)


@web.middleware
async def known_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a Host that `web.hosts` does not list (when it lists any): a page whose name
    was pointed at our listener (DNS rebinding) sends its own name, and with
    `web.trusted_header` could otherwise sign itself in as anyone."""
    hosts = request.app[SETTINGS].hosts
    if hosts and request.headers.get("Host", "").strip().lower() not in hosts:
        raise web.HTTPBadRequest(text="this web view does not answer to that host name "
                                      "(web.hosts in config.yaml lists the ones it does)")
    return await handler(request)


def from_proxy(request: web.Request) -> bool:
    """The request carries `web.proxy_secret` (True when none is set: nothing to tell by)."""
    secret = request.app[SETTINGS].proxy_secret
    if not secret:
        return True
    given = request.headers.get(PROXY_SECRET_HEADER, "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, secret.encode())


@web.middleware
async def signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    refused = request.match_info.http_exception
    if refused is not None:     # no such page, or not by this method: 404/405, signed in or not
        raise refused
    if request.path.startswith(PUBLIC):
        return await handler(request)
    registry, settings = request.app[REGISTRY], request.app[SETTINGS]
    if settings.trusted_header is not None and (not settings.proxy_secret or not from_proxy(request)):
        # not the proxy: another user of this host on the loopback listener (refused before
        # the session is looked up: nothing of theirs is worth a registry read)
        log.warning("event=web_not_from_proxy peer=%s path=%s: %s %s; the proxy must send "
                    "web.proxy_secret", request.remote, request.path[:100], PROXY_SECRET_HEADER,
                    "wrong" if request.headers.get(PROXY_SECRET_HEADER) else "missing")
        raise web.HTTPForbidden(text=f"not from the reverse proxy ({PROXY_SECRET_HEADER} "
                                     "missing or wrong: web.proxy_secret)")
    snap = request.app[SNAPSHOT]()
    now = datetime.now(timezone.utc)
    token = session_token(request)
    session = await registry.read("web session", lambda c: find_session(c, token, now)) if token else None
    new_token = None
    if settings.trusted_header is not None:
        named = find_person(snap, request.headers.get(settings.trusted_header, ""))
        if named is None:
            raise web.HTTPUnauthorized(text="the reverse proxy did not name a person of the address book")
        if session is None or session.person != named:
            new_token, session = await registry.write(
                "web sign-in", lambda c: open_session(c, named, now, settings.session_ttl))
    viewer = viewer_for(snap, settings, session) if session is not None else None
    if viewer is None:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther("/login?next=" + _quote(request.path_qs))
        raise web.HTTPForbidden(text="sign in first")
    request[VIEWER] = viewer
    resp = await handler(request)
    if new_token is not None:
        set_session_cookie(resp, request, new_token, settings.session_ttl)
    return resp


def session_token(request: web.Request) -> str:
    """The session cookie's token, or "" for one we never gave: ours are short and ASCII
    (token_urlsafe), and a cookie of other bytes (decoded as surrogates) failed to hash in
    the registry thread, answered 503 and logged as a registry bug."""
    token = request.cookies.get(COOKIE, "")
    return token if token.isascii() and len(token) <= 128 else ""


def login_token(request: web.Request) -> str:
    """The sign-in form's CSRF cookie, or "" for one we never gave: ours are 43 characters
    of token_urlsafe(32). A cookie of other bytes (decoded as surrogates) failed to encode,
    answering the sign-in page and form 500."""
    token = request.cookies.get(LOGIN_CSRF, "")
    return token if _LOGIN_TOKEN.fullmatch(token) else ""


def _quote(text: str) -> str:
    return quote(text, safe="")


@web.middleware
async def csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        origin = request.headers.get("Origin")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc != request.host):
            raise web.HTTPForbidden(text="cross-origin form")
        form = await request.post()
        given = str(form.get("csrf", ""))
        viewer = request.get(VIEWER)
        want = viewer.session.csrf if viewer is not None else login_token(request)
        if not want or not hmac.compare_digest(given.encode(), want.encode()):
            raise web.HTTPForbidden(text="missing or stale CSRF token")
    return await handler(request)

"""What every page of the web view shares: templates, language, error pages, small helpers.

`render` fills a Jinja2 template from the package (autoescaped, undefined names are
errors) with the viewer and the words of their language. `rule_place` writes a rule's
file relative to the routing directory (the common folder of the routing files), as
the operators who edit the rules name them: `routing.yaml:22`, not an absolute path of
the server; a file outside it (an older rule set elsewhere) is shown as recorded.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from aiohttp import web

from ..calendars import company_time, company_times, company_zone
from ..routing.snapshot import Snapshot
from .auth import SNAPSHOT, VIEWER, Handler, Viewer
from .i18n import LANGUAGES, pick_language, translate

__all__ = ["HERE", "LANG_COOKIE", "BadInput", "no_nul", "lang_of", "render", "error_page", "day", "page_key", "bad",
           "redirect", "viewer", "snap", "RulePlaces"]

HERE = Path(__file__).resolve().parent
LANG_COOKIE = "mailrouter_lang"
# Bidi embedding, override and isolate controls in a subject, a sender's name or a file name
# reorder what follows them on the page ("счет\u202efdp.exe" shows as "счетexe.pdf"): every
# value a page shows has them made visible, as U+FFFD, before it is escaped.
_BIDI = str.maketrans(dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"),
                                    "\ufffd"))


def _shown(value: Any) -> Any:
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return value.translate(_BIDI)
    return value


_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined, finalize=_shown)


# The last day a period may end on: queries run to the midnight after `until`, and the
# midnight after 9999-12-31 is past what a datetime holds (OverflowError, once a 503).
LAST_DAY = date.max - timedelta(days=1)


_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


class BadInput(ValueError):
    """A query parameter that cannot be read; the page says which and how to write it."""


@web.middleware
async def no_nul(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a NUL character in the path, the query or a form field. No text of ours
    has one, and PostgreSQL refuses it in any string: the query failed, was answered 503
    and counted as a registry outage (mailrouter_registry_errors_total) for one %00.
    A POSTed form that cannot be read at all is 400 here too, before any handler."""
    texts = [request.path, *request.query.keys(), *request.query.values()]
    if request.method == "POST" and request.content_type in _FORMS:
        try:
            form = await request.post()
        except (ValueError, LookupError, web.RequestPayloadError):
            # bytes that are not UTF-8, an unknown charset, a broken multipart body or
            # Content-Encoding: each was an exception out of the handler, answered 500
            raise web.HTTPBadRequest(text="a form that cannot be read (not UTF-8, or malformed)") from None
        texts += [*form.keys(), *(v for v in form.values() if isinstance(v, str))]
    if any("\x00" in text for text in texts):
        raise web.HTTPBadRequest(text="a NUL character (%00) in the address or the form")
    return await handler(request)


def lang_of(request: web.Request) -> str:
    return pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language"))


def render(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    lang = lang_of(request)
    zone = company_zone(snap(request).rules.calendars)
    body = _ENV.get_template(template).render(
        t=lambda key, **v: translate(lang, key, **v), lang=lang, languages=LANGUAGES,
        viewer=request.get(VIEWER), here=request.path_qs,
        when=lambda at, timespec="minutes": company_time(at, zone, timespec),
        times=lambda text: company_times(text, zone), **ctx)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def error_page(request: web.Request, status: int, text: str) -> web.StreamResponse:
    key = {403: "forbidden", 404: "not_found", 503: "unavailable"}.get(status)
    return render(request, "error.html", status=status, status_code=status,
                  message=translate(lang_of(request), key) if key else text)


def day(request: web.Request, name: str, default: date | None = None) -> date | None:
    text = request.query.get(name, "").strip()
    if not text:
        return default
    try:
        value = date.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{name}={text[:40]!r}: " + translate(lang_of(request), "bad_date")) from None
    if value > LAST_DAY:
        raise BadInput(f"{name}={text[:40]!r}: " + translate(lang_of(request), "date_range"))
    return value


def page_key(text: str) -> tuple[datetime | None, str]:
    """A next-page link's `TIME,KEY`: the time (ISO with its zone, in UTC; None when empty)
    and the key as text. ValueError for a time without its zone or past UTC's range."""
    at_text, _, key = text.rpartition(",")
    at = datetime.fromisoformat(at_text) if at_text else None
    if at is not None and at.tzinfo is None:
        raise ValueError("a time without its zone")
    try:        # the registry stores UTC; 0001-01-01T00:00+01:00 has no UTC time
        return (at.astimezone(timezone.utc) if at is not None else None), key
    except OverflowError:
        raise ValueError("a time out of range") from None


def bad(request: web.Request, what: str, status: int = 400) -> web.Response:
    """400: what could not be read; 409 (closing a closed request): what was not done, not
    "Cannot read this: request #1 is already closed"."""
    key = "conflict" if status == 409 else "bad_input"
    return render(request, "error.html", status=status, status_code=status,
                  message=translate(lang_of(request), key, what=what))


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def viewer(request: web.Request) -> Viewer:
    return request[VIEWER]


def snap(request: web.Request) -> Snapshot:
    return request.app[SNAPSHOT]()


class RulePlaces:
    """Rule files relative to the routing directory, in file:line and in explanations."""

    def __init__(self, snapshot: Snapshot) -> None:
        dirs = [os.path.dirname(os.path.abspath(f)) for f in snapshot.files]
        self.base = os.path.commonpath(dirs) if dirs else ""

    def file(self, path: object) -> str:
        text = str(path or "")
        if self.base and text.startswith(self.base + os.sep):
            return text[len(self.base) + 1:]
        return text

    def line(self, text: str) -> str:
        """An explanation line with the routing directory taken out of every path."""
        return text.replace(self.base + os.sep, "") if self.base else text

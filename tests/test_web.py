"""The web view over real HTTP: the daemon's App on loopback with listen.web on port 0,
a real aiohttp client with a cookie jar, messages delivered by a real SMTP client.

Covers sign-in, rights (a head of department sees their mailboxes only, by link too),
CSRF (a form without its token is refused and changes nothing), the security headers,
the languages, bad input, the report's CSV, and the config and address-book checks
of the web settings. The browser tests are in test_web_browser.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes, urlencode

import aiohttp
import aiosmtplib
import pytest

from mailrouter.config import PROXY_SECRET_HEADER, Listener, WebConfig, load_config
from mailrouter.errors import ConfigErrors
from mailrouter.logs import Formatter
from mailrouter.registry.accounts import hash_password, set_password, verify_password
from mailrouter.routing.snapshot import load_snapshot
from tests.support.daemon import RULES

PASSWORD = "correct horse battery"
SECRET = "5f0c2b7e9a1d4c3b8e6f"          # web.proxy_secret of the trusted-header tests


async def _deliver(app: Any, rcpt: str, subject: str) -> None:
    host, port = app.bound["smtp"]
    msg = (f"From: Client <client@outside.test>\r\nTo: {rcpt}\r\nSubject: =?utf-8?b?"
           + __import__("base64").b64encode(subject.encode()).decode() + "?=\r\n\r\nhello\r\n")
    await aiosmtplib.send(msg.encode(), sender="client@outside.test", recipients=[rcpt],
                          hostname=host, port=port)


@pytest.fixture
async def site(make_app: Any) -> Any:
    app = await make_app(web=Listener("127.0.0.1", 0), webui=WebConfig(admins=("petrova",)))
    hashed = hash_password(PASSWORD)
    now = datetime.now(timezone.utc)
    for person in ("ivanov", "smirnov", "petrova"):
        await app.registry.write("test", lambda c, p=person: set_password(c, p, hashed, now))
    await _deliver(app, "invoices@example.com", "Счёт №42 за декабрь")
    await _deliver(app, "sales@example.com", "Вопрос о цене")
    host, port = app.bound["web"]
    return app, f"http://{host}:{port}"


class Client:
    """A cookie-keeping HTTP client that does not follow redirects."""

    def __init__(self, base: str, lang: str = "en") -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          headers={"Accept-Language": lang})

    async def get(self, path: str) -> tuple[int, str, Any]:
        async with self.http.get(self.base + path, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers

    async def post(self, path: str, data: dict[str, str], **kw: Any) -> tuple[int, str, Any]:
        async with self.http.post(self.base + path, data=data, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r.headers

    async def login(self, person: str, password: str = PASSWORD) -> int:
        _, page, _ = await self.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        status, _, headers = await self.post("/login", {"csrf": token, "person": person,
                                                        "password": password, "next": "/search"})
        return status

    async def csrf(self) -> str:
        _, page, _ = await self.get("/search")
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


@pytest.fixture
async def client(site: Any) -> Any:
    made: list[Client] = []

    def make(lang: str = "en") -> Client:
        made.append(Client(site[1], lang))
        return made[-1]
    yield make
    for c in made:
        await c.http.close()


async def test_pages_need_a_session_and_carry_the_security_headers(client: Any) -> None:
    """Without a session a page sends you to sign in; every answer has CSP without inline
    script, no framing, nosniff and a same-origin referrer policy; the sign-in form works on its own."""
    c = client()
    status, _, headers = await c.get("/search?words=x")
    assert status == 303 and headers["Location"] == "/login?next=/search?words%3Dx"
    status, page, headers = await c.get("/login")
    assert status == 200 and 'name="password"' in page
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "script-src" not in csp
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin" and headers["Cache-Control"] == "no-store"
    assert "<script" not in page
    status, _, headers = await c.get("/static/style.css")
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    # no aiohttp name and version for a scanner to match against its advisories
    for path in ("/login", "/static/style.css", "/no-such-page"):
        assert (await c.get(path))[2].getall("Server") == ["mailrouter"], path


async def test_cookies_are_secure_behind_https(client: Any) -> None:
    """Behind a TLS proxy (X-Forwarded-Proto: https) both the sign-in form's CSRF cookie and
    the session cookie are Secure; over plain HTTP on loopback neither is (it would be lost)."""
    c = client()
    _, _, plain = await c.get("/login")
    assert "secure" not in plain["Set-Cookie"].lower()
    async with c.http.get(c.base + "/login", headers={"X-Forwarded-Proto": "https"},
                          allow_redirects=False) as r:
        page, form_cookie = await r.text(), r.headers["Set-Cookie"]
    assert form_cookie.startswith("mailrouter_login=") and "; secure" in form_cookie.lower()
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    async with aiohttp.ClientSession() as browser:    # over TLS the browser would send it back
        r = await browser.post(c.base + "/login", data={"csrf": token, "person": "ivanov",
                                                        "password": PASSWORD, "next": "/"},
                               headers={"X-Forwarded-Proto": "https",
                                        "Cookie": form_cookie.split(";")[0]},
                               allow_redirects=False)
        assert r.status == 303 and "; secure" in r.headers["Set-Cookie"].lower(), r.headers


async def test_a_session_cookie_of_stray_bytes_sends_one_to_sign_in(site: Any) -> None:
    """A cookie whose bytes are not UTF-8 (the server reads them as surrogates) failed to
    hash in the registry thread: 503 "registry unavailable" and a registry_bug in the log.
    It is no session: 303 to sign in, like any unknown token."""
    host, port = site[1].removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /search HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n"
                 b"Cookie: mailrouter_session=\xff\xfe\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 303 ") and b"Location: /login?next=/search" in answer


async def _raw(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    answer = await reader.read()
    writer.close()
    return answer


async def test_a_sign_in_cookie_of_stray_bytes_gets_a_fresh_form_not_500(site: Any) -> None:
    """The sign-in form reused its CSRF cookie whatever it held: bytes that are not UTF-8
    (read as surrogates) failed to encode, and the form and the sign-in both answered 500.
    The form now gives a fresh token of its own; the sign-in with that cookie is 403."""
    host = site[1].removeprefix("http://").encode()
    for cookie in (b"\xff\xfe", b"a", b'a"b'):
        answer = await _raw(site[1], b"GET /login HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n"
                            b"Cookie: mailrouter_login=" + cookie + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 "), (cookie, answer[:200])
        given = re.search(rb"Set-Cookie: mailrouter_login=([A-Za-z0-9_-]+);", answer)
        assert given and len(given[1]) == 43 and b'value="' + given[1] + b'"' in answer, cookie
        form = b"csrf=" + quote_from_bytes(cookie).encode() + b"&person=ivanov&password=x&next=/"
        answer = await _raw(site[1], b"POST /login HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n"
                            b"Cookie: mailrouter_login=" + cookie + b"\r\n"
                            b"Content-Type: application/x-www-form-urlencoded\r\n"
                            b"Content-Length: " + str(len(form)).encode() + b"\r\n\r\n" + form)
        assert answer.startswith(b"HTTP/1.1 403 "), (cookie, answer[:200])


async def test_a_request_aiohttp_cannot_parse_is_400_and_one_warning_line(site: Any, caplog: Any) -> None:
    """A request line aiohttp's parser refuses (a scanner, a TLS hello sent to the port) got
    its 400 and an ERROR with a traceback in the daemon's log, one per request: alerts fired
    on noise. It is one warning line naming the peer and the reason."""
    caplog.set_level(logging.DEBUG)
    for request in (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"):
        answer = await _raw(site[1], request)
        assert answer.startswith(b"HTTP/1.0 400 ") or answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]
    warned = [r.getMessage() for r in caplog.records if "event=web_bad_request" in r.getMessage()]
    assert len(warned) == 2 and all("peer=127.0.0.1 status=400 reason=" in m for m in warned), warned


async def test_a_form_that_cannot_be_read_is_400_not_500(client: Any, site: Any) -> None:
    """A form body that is not UTF-8, names an unknown charset, is a broken multipart body
    or has a Content-Encoding that does not decode raised out of the handler: 500. It is 400
    with the security headers, signed in or not, and the session lives on."""
    c = client()
    assert await c.login("ivanov") == 303
    token = (await c.csrf()).encode()
    bodies = [("application/x-www-form-urlencoded", b"csrf=" + token + b"&x=\xff\xfe"),
              ("application/x-www-form-urlencoded; charset=no-such-charset", b"csrf=" + token),
              ("multipart/form-data", b"--x\r\n"),
              ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n"),
              ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n'
               + token)]
    for path in ("/logout", "/login"):
        for ctype, body in bodies:
            async with c.http.post(c.base + path, data=body, allow_redirects=False,
                                   headers={"Content-Type": ctype}) as r:
                assert r.status == 400, (path, ctype, body, r.status)
                assert "Content-Security-Policy" in r.headers
    assert (await c.get("/search"))[0] == 200
    body = b"csrf=" + token                  # not gzip: the server closes the connection after it
    answer = await _raw(site[1], b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Content-Security-Policy" in answer, answer[:200]


async def test_wrong_password_and_unknown_person_get_the_same_answer(client: Any, caplog: Any) -> None:
    """A wrong password and an unknown person both get 401 with one message; no cookie. The
    log has each try, one line, the name as typed quoted (for fail2ban and the like)."""
    c = client()
    with caplog.at_level(logging.INFO, logger="mailrouter.web"):
        assert await c.login("ivanov", "wrong password!") == 401
        assert await c.login('nobody" peer=10.0.0.1\nx', PASSWORD) == 401
        assert (await c.get("/search"))[0] == 303
        assert await c.login("ivanov") == 303
    lines = [Formatter().format(r).split(" ", 4)[4] for r in caplog.records
             if r.name == "mailrouter.web.app"]
    assert lines == [
        "event=web_signin_failed person=ivanov peer=127.0.0.1 known=True",
        'event=web_signin_failed person="nobody\\" peer=10.0.0.1\\nx" peer=127.0.0.1 known=False',
        "event=web_signin person=ivanov peer=127.0.0.1"], lines


async def test_search_finds_a_cyrillic_subject_word_in_another_case_and_with_e_for_yo(client: Any) -> None:
    """'СЧЕТ' finds 'Счёт №42' (case-folded, ё = е, as the rules compare), signed in by
    address as well as by key; the story shows the rule, its file:line and the rule set."""
    c = client()
    assert await c.login("p.ivanov@example.com") == 303
    status, page, _ = await c.get("/search?words=%D0%A1%D0%A7%D0%95%D0%A2")
    assert status == 200 and "Счёт №42 за декабрь" in page
    key = re.search(r'href="/message/([0-9a-f]{64})"', page).group(1)
    status, story, _ = await c.get(f"/message/{key}")
    assert status == 200 and "Счёт №42 за декабрь" in story
    assert re.search(r"<strong>invoices</strong> <code>routing\.yaml:\d+</code>", story)
    assert re.search(r"<code>[0-9a-f]{16}</code>", story)           # the rule set's hash
    status, page, _ = await c.get("/search?words=%D1%81%D1%87%D0%B5%D1%82+%D0%BD%D0%BE%D1%8F%D0%B1%D1%80%D1%8C")
    assert "Счёт №42" not in page                                   # every word must be there


async def test_bidi_controls_in_a_subject_are_shown_not_obeyed(client: Any, site: Any) -> None:
    """A right-to-left override in a subject ('счет' RLO 'fdp.exe' reads as 'счетexe.pdf' on
    the page) is shown as a visible U+FFFD on the search page and in the message's story."""
    await _deliver(site[0], "invoices@example.com", "Счет\u202efdp.exe")
    c = client()
    assert await c.login("petrova") == 303
    status, page, _ = await c.get("/search?" + urlencode({"words": "счет*"}))
    assert status == 200 and "Счет\ufffdfdp.exe" in page and "\u202e" not in page
    key = re.search(r'href="/message/([0-9a-f]{64})"[^>]*>Счет\ufffd', page)
    assert key, page
    status, story, _ = await c.get(f"/message/{key.group(1)}")
    assert status == 200 and "Счет\ufffdfdp.exe" in story and "\u202e" not in story


async def test_a_pasted_reply_subject_finds_the_message_in_czech_and_russian(client: Any,
                                                                              site: Any) -> None:
    """Subjects are indexed as the rules see them, reply prefixes stripped; a query is read
    the same way, so pasting "RE: Přihláška" or "Fwd: Re: СЧЁТ*" finds the message (the
    query's "re" was a word no subject has: nothing found). Czech case folds as Russian."""
    await _deliver(site[0], "invoices@example.com", "Re: Přihláška na školení")
    c = client()
    assert await c.login("petrova") == 303
    for words, want in (("RE: PŘIHLÁŠKA", "Přihláška na školení"), ("škol*", "Přihláška na"),
                        ("Fwd: Re: СЧЁТ* декабрь", "Счёт №42 за декабрь")):
        status, page, _ = await c.get("/search?" + urlencode({"words": words}))
        assert status == 200 and want in page, words


async def test_a_head_sees_their_department_only_even_by_link(client: Any, site: Any) -> None:
    """smirnov heads sales: he finds the sales message, not the finance one, and the
    finance message's link answers 404 to him; petrova (admin) sees both. The page says
    what he may see without the inner name of his own mailbox (person:smirnov)."""
    ivanov, smirnov, petrova = client(), client(), client()
    for c, who in ((ivanov, "ivanov"), (smirnov, "smirnov"), (petrova, "petrova")):
        assert await c.login(who) == 303
    _, page, _ = await ivanov.get("/search")
    link = re.search(r'href="(/message/[0-9a-f]{64})"', page).group(1)
    assert "Счёт №42" in page and "Вопрос о цене" not in page
    _, page, _ = await smirnov.get("/search")
    assert "Вопрос о цене" in page and "Счёт №42" not in page
    # what he may see, in words he knows: his departments' mailboxes (not his own
    # mailbox's inner name, person:smirnov: "your own mail" says it), his own by his name
    rights = re.search(r'<p class="rights">([^<]*)</p>', page).group(1)
    assert "person:" not in rights and "sales" in rights and "your own mail" in rights
    assert re.search(r'<option value="person:smirnov">Сергей Смирнов</option>', page)
    status, page, _ = await smirnov.get(link)
    assert status == 404 and "Счёт" not in page
    _, page, _ = await smirnov.get("/counterparty?who=outside.test")
    assert "Вопрос о цене" in page and "Счёт №42" not in page
    _, page, _ = await petrova.get("/search")
    assert "Вопрос о цене" in page and "Счёт №42" in page
    assert (await petrova.get(link))[0] == 200


async def test_a_message_to_two_departments_shows_each_head_their_own_decision(
        client: Any, site: Any) -> None:
    """One message to invoices@ (finance) and sales@: smirnov (head of sales) saw on its
    page the finance decision too, its owner, rules and reasons, and its copy. Each head
    now sees the decisions and copies of their department; the admin sees both."""
    app, _ = site
    host, port = app.bound["smtp"]
    msg = ("From: Client <client@outside.test>\r\nTo: invoices@example.com, sales@example.com"
           "\r\nSubject: both departments\r\n\r\nhello\r\n")
    await aiosmtplib.send(msg.encode(), sender="client@outside.test", hostname=host, port=port,
                          recipients=["invoices@example.com", "sales@example.com"])
    smirnov, petrova = client(), client()
    for c, who in ((smirnov, "smirnov"), (petrova, "petrova")):
        assert await c.login(who) == 303
    _, page, _ = await smirnov.get("/search?subject=both")
    link = re.search(r'href="(/message/[0-9a-f]{64})"', page).group(1)
    status, page, _ = await smirnov.get(link)
    assert status == 200 and "sales@example.com → deliver" in page
    assert "invoices@example.com → " not in page and "<td>finance" not in page
    _, page, _ = await petrova.get(link)
    assert "sales@example.com → deliver" in page and "invoices@example.com → deliver" in page
    assert "<td>finance" in page


async def test_a_counterparty_domain_is_matched_as_typed_not_as_a_pattern(client: Any) -> None:
    """`who` without @ is a domain: "%" (every sender) and "outside_test" (_ as any
    character) were LIKE wildcards; they find nothing, while outside.test finds its mail."""
    c = client()
    assert await c.login("petrova") == 303
    for who in ("%25", "outside_test", "%25.test", "_utside.test"):
        status, page, _ = await c.get(f"/counterparty?who={who}")
        assert status == 200 and 'class="empty"' in page and "Счёт" not in page, who
    _, page, _ = await c.get("/counterparty?who=OUTSIDE.test")
    assert "Счёт №42" in page and "Вопрос о цене" in page


async def test_a_form_without_its_csrf_token_is_refused(client: Any) -> None:
    """Sign-out without the token, with another session's token or from a foreign Origin
    is 403 and the session lives on; with its own token it ends the session."""
    a, b = client(), client()
    assert await a.login("ivanov") == 303 and await b.login("ivanov") == 303
    assert (await a.post("/logout", {}))[0] == 403
    assert (await a.post("/logout", {"csrf": await b.csrf()}))[0] == 403
    own = await a.csrf()
    assert (await a.post("/logout", {"csrf": own}, headers={"Origin": "http://evil.test"}))[0] == 403
    assert (await a.get("/search"))[0] == 200
    assert (await a.post("/logout", {"csrf": own}))[0] == 303
    assert (await a.get("/search"))[0] == 303
    assert (await b.get("/search"))[0] == 200                        # the other session stays
    c = client()
    await c.get("/login")
    status, _, _ = await c.post("/login", {"person": "ivanov", "password": PASSWORD})
    assert status == 403                                             # sign-in needs its token too


async def test_a_method_a_page_does_not_take_is_405_with_allow_not_a_stale_form(client: Any) -> None:
    """OPTIONS or PUT on a page, a POST to a page of GETs, or a POST to a path we do not
    serve was 403 "the form was stale or came from elsewhere" (the CSRF check ran first).
    It is 405 naming the methods there are, or 404; a POST without its token stays 403."""
    c = client()
    assert await c.login("petrova") == 303
    for method, path in (("OPTIONS", "/board"), ("PUT", "/search"), ("POST", "/board"),
                         ("DELETE", "/logout")):
        async with c.http.request(method, c.base + path, allow_redirects=False) as r:
            assert r.status == 405 and "Allow" in r.headers, (method, path, r.status)
            assert "Content-Security-Policy" in r.headers
    assert (await c.post("/nowhere", {}))[0] == 404
    assert (await c.post("/logout", {}))[0] == 403


async def test_without_a_session_head_is_get_and_a_method_no_page_takes_is_405(client: Any) -> None:
    """Without a session only GET went to sign in: HEAD /search was 403 "sign in first",
    and so were OPTIONS, TRACE or PUT on a page and a POST to a path we do not serve, as if
    there were something to sign in for. HEAD goes to sign in as GET does; the others are
    405 with Allow, or 404, as for the signed in."""
    c = client()
    async with c.http.head(c.base + "/search?words=x", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/login?next=/search?words%3Dx"
    for method, path, allow in (("OPTIONS", "/board", "GET,HEAD"), ("TRACE", "/search", "GET,HEAD"),
                                ("PUT", "/search", "GET,HEAD"), ("TRACE", "/login", "GET,HEAD,POST")):
        async with c.http.request(method, c.base + path, allow_redirects=False) as r:
            assert r.status == 405 and r.headers["Allow"] == allow, (method, path, r.status)
            assert "Content-Security-Policy" in r.headers
    assert (await c.post("/nowhere", {}))[0] == 404
    assert (await c.post("/logout", {}))[0] == 403                  # a page, but no session


async def test_statuses_and_the_registry_down_page_are_in_the_readers_language(
        client: Any, site: Any) -> None:
    """The Russian pages showed statuses in English ("delivered" among Russian words) and
    a registry that was down as "registry unavailable": both are in the reader's language,
    and the search's status filter still sends the status itself."""
    app, _ = site
    ru, en = client("ru"), client("en")
    for c in (ru, en):
        assert await c.login("petrova") == 303
    _, page, _ = await ru.get("/search")
    assert "<td>доставлено</td>" in page and "<td>delivered</td>" not in page
    assert '<option value="delivered">доставлено</option>' in page
    _, page, _ = await ru.get("/search?status=delivered")
    assert '<option value="delivered" selected>доставлено</option>' in page
    assert "<td>delivered</td>" in (await en.get("/search"))[1]
    await app.registry.close()                     # the registry gone under the web view
    status, page, _ = await ru.get("/search")
    assert status == 503 and "Реестр недоступен" in page


async def test_language_by_accept_language_and_by_the_switch(client: Any) -> None:
    """Accept-Language ru gives Russian; the switch sets English for later pages."""
    c = client("ru-RU,ru;q=0.9,en;q=0.8")
    _, page, _ = await c.get("/login")
    assert 'lang="ru"' in page and "Пароль" in page
    status, _, headers = await c.get("/lang?to=en&next=/login")
    assert status == 303 and headers["Location"] == "/login"
    _, page, _ = await c.get("/login")
    assert 'lang="en"' in page and "Password" in page
    assert (await c.get("/lang?to=en&next=//evil.test/"))[2]["Location"] == "/"


async def test_a_next_with_a_tab_or_a_line_break_goes_to_the_start_page(client: Any) -> None:
    """Browsers drop tabs and line breaks from a Location, so `/<TAB>/evil.test` would be
    //evil.test, another site; a line break would split the header (the server dropped the
    connection). Both, after the language switch and after sign-in, go to `/`."""
    c = client()
    for bad in ("/%09/evil.test", "/%0d%0aSet-Cookie:x=1", "/%0a/evil.test", "/%20/evil.test"):
        status, _, headers = await c.get(f"/lang?to=en&next={bad}")
        assert status == 303 and headers["Location"] == "/", bad
    _, page, _ = await c.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    status, _, headers = await c.post("/login", {"csrf": token, "person": "ivanov",
                                                 "password": PASSWORD, "next": "/\t/evil.test"})
    assert status == 303 and headers["Location"] == "/"


async def test_bad_dates_get_a_clear_answer_and_the_report_a_csv(client: Any) -> None:
    """since=31.12.2026 is 400 naming the field and the form; the report draws an SVG
    chart and its CSV has one row per day and mailbox."""
    c = client()
    assert await c.login("petrova") == 303
    status, page, _ = await c.get("/search?since=31.12.2026")
    assert status == 400 and "since=&#39;31.12.2026&#39;" in page and "2026-03-31" in page
    # dates the wrong way round: 400 as on the report page, not an empty list of messages
    status, page, _ = await c.get("/search?since=2026-12-07&until=2026-12-01")
    assert status == 400 and "until=2026-12-01 is before since=2026-12-07" in page
    assert (await c.get("/search?since=2026-12-07&until=2026-12-07"))[0] == 200
    status, page, _ = await c.get("/report")
    assert status == 200 and "<svg" in page and "<rect" in page
    status, body, headers = await c.get("/report?format=csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    lines = body.strip().splitlines()
    assert lines[0] == "day,mailbox,owner,messages,trouble"
    assert {l.split(",")[1] for l in lines[1:]} == {"finance", "sales"}


async def test_a_date_at_the_end_of_the_calendar_is_400_not_503(client: Any) -> None:
    """The search and the report run to the midnight after `until`; for 9999-12-31 that is
    past what a datetime holds, which was an OverflowError answered 503 "registry
    unavailable". It is 400 naming the field; a report from year 1 draws the last 92 days."""
    c = client()
    assert await c.login("petrova") == 303
    for path in ("/search?until=9999-12-31", "/search?since=9999-12-31", "/report?until=9999-12-31",
                 "/report?since=2026-01-01&until=9999-12-31&format=csv"):
        status, page, _ = await c.get(path)
        assert status == 400 and "9999-12-30" in page, (path, status)
    status, page, _ = await c.get("/report?since=0001-01-01&until=9999-12-30")
    assert status == 200 and page.count('<rect class="bar"') == 92
    # a period in the first days of year 1: 91 days before its end are before date.min
    status, page, _ = await c.get("/report?since=0001-01-01&until=0001-01-02")
    assert status == 200 and page.count('<rect class="bar"') == 2


def test_passwords_are_salted_scrypt_and_short_ones_refused() -> None:
    """Two hashes of one password differ; each verifies; a 7-character password is refused."""
    a, b = hash_password(PASSWORD), hash_password(PASSWORD)
    assert a != b and a.startswith("scrypt$") and verify_password(PASSWORD, a)
    assert not verify_password("wrong", a) and not verify_password(PASSWORD, None)
    with pytest.raises(ValueError):
        hash_password("1234567")


def test_a_trusted_header_needs_a_loopback_web_listener(tmp_path: Path) -> None:
    """web.trusted_header with listen.web off loopback is refused with file:line and a fix."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("listen: {web: '0.0.0.0:9126'}\nweb: {trusted_header: X-Remote-User, hosts: [a], "
                   f"proxy_secret: {SECRET}}}\n",
                   encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg)
    assert [str(e) for e in info.value.errors] == [
        f"{cfg}:1:15: the web listener 0.0.0.0:9126 is not on loopback, so anyone who can connect "
        "could send X-Remote-User and sign in as anyone; listen on 127.0.0.1 behind the reverse "
        "proxy, or drop 'web.trusted_header'"]
    cfg.write_text("web: {session_ttl: soon, admins: petrova}\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg)
    assert len(info.value.errors) == 2


@pytest.mark.parametrize("url, error", [
    ("https://mail-control.example.com/", None),
    ("https://Mail-Control.example.com:8443/mr", None),
    ("ftp://mail-control.example.com", "must be http:// or https://"),
    ("https://mail-control.example.com/?a=1", "without ?query"),
    ("mail-control.example.com", "must be http:// or https://"),
    ("https://mail-control.example.com:99999", "is not an address"),
    ("https://other.example.com", "which 'web.hosts' does not answer"),
    ("https://mail control", "must be an address like"),
])
def test_web_url_is_an_address_the_web_view_answers(tmp_path: Path, url: str, error: str | None) -> None:
    """web.url (where reminders link to): http(s), a host that web.hosts answers, no query;
    a bad one is refused at its line with an example."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("web:\n  hosts: [mail-control.example.com, mail-control.example.com:8443]\n"
                   f"  url: '{url}'\n", encoding="utf-8")
    if error is None:
        assert load_config(cfg).webui.url == url.rstrip("/")
        return
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg)
    [e] = info.value.errors
    fix = ("; add 'other.example.com' to 'web.hosts'" if "hosts" in error
           else "; for example 'url: https://mail-control.example.com'")
    assert str(e).startswith(f"{cfg}:3:") and error in str(e) and fix in str(e), str(e)


def test_a_config_file_leaves_the_web_view_off_unless_it_sets_it(tmp_path: Path) -> None:
    """The embedded default serves the web view on 127.0.0.1:9126; a config file does
    not, unless listen.web is set."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("hostname: mx.test\n", encoding="utf-8")
    assert load_config(cfg).web is None
    assert load_config(None).web == Listener("127.0.0.1", 9126)
    cfg.write_text("listen: {web: '127.0.0.1:8080'}\n", encoding="utf-8")
    assert load_config(cfg).web == Listener("127.0.0.1", 8080)


def test_departments_name_known_heads_and_mailboxes(tmp_path: Path) -> None:
    """An unknown head and an unknown mailbox are refused with file:line and a did-you-mean."""
    (tmp_path / "company.yaml").write_text((RULES / "company.yaml").read_text(encoding="utf-8"),
                                           encoding="utf-8")
    bad = tmp_path / "z.yaml"
    bad.write_text("departments:\n  support: {head: ivanof, mailboxes: [suport]}\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_snapshot([str(tmp_path / "*.yaml")], load_config(None).limits, "mx.test")
    assert [str(e) for e in info.value.errors] == [
        f"{bad}:2:19: department 'support' names unknown head 'ivanof'; did you mean 'ivanov'?",
        f"{bad}:2:39: department 'support' names unknown mailbox 'suport'; did you mean 'support'? "
        "(define it under 'mailboxes:')"]


async def test_a_trusted_proxy_header_signs_people_in(make_app: Any) -> None:
    """With web.trusted_header the header names the person (key or address) and no password
    is asked; without it, or naming nobody of the address book, the answer is 401; a
    session follows the header when the proxy names someone else."""
    app = await make_app(web=Listener("127.0.0.1", 0),
                         webui=WebConfig(trusted_header="X-Remote-User", proxy_secret=SECRET))
    await _deliver(app, "invoices@example.com", "Счёт №7")
    host, port = app.bound["web"]
    base = f"http://{host}:{port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async def get(path: str, who: str | None) -> tuple[int, str]:
            hdrs = {PROXY_SECRET_HEADER: SECRET} | ({"X-Remote-User": who} if who is not None else {})
            async with http.get(base + path, headers=hdrs, allow_redirects=False) as r:
                return r.status, await r.text()
        assert (await get("/search", None))[0] == 401
        assert (await get("/search", "nobody"))[0] == 401
        status, page = await get("/search", "p.ivanov@example.com")
        assert status == 200 and "Счёт №7" in page and "Пётр Иванов" in page
        status, page = await get("/search", "smirnov")
        assert status == 200 and "Счёт №7" not in page and "Сергей Смирнов" in page
        assert (await get("/login", "smirnov"))[0] == 303


async def test_only_the_proxy_may_name_the_person(make_app: Any, caplog: Any) -> None:
    """The loopback listener keeps the network out, not the other users of this host: one
    of them sent X-Remote-User: petrova (an admin) and was signed in as her. Without the
    proxy's web.proxy_secret in X-Mailrouter-Proxy-Secret, or with a wrong one, the answer
    is 403 and no session is given; with it, the person is signed in."""
    app = await make_app(web=Listener("127.0.0.1", 0),
                         webui=WebConfig(trusted_header="X-Remote-User", proxy_secret=SECRET,
                                         admins=("petrova",)))
    host, port = app.bound["web"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async def get(secret: str | None) -> tuple[int, str]:
            hdrs = {"X-Remote-User": "petrova"} | ({PROXY_SECRET_HEADER: secret} if secret else {})
            async with http.get(f"http://{host}:{port}/search", headers=hdrs,
                                allow_redirects=False) as r:
                return r.status, await r.text()
        for wrong in (None, "", SECRET[:-1], SECRET + "x"):
            assert (await get(wrong))[0] == 403, wrong
            assert len(http.cookie_jar) == 0
        assert (await get(SECRET))[0] == 200
    refused = [r.getMessage() for r in caplog.records if "web_not_from_proxy" in r.getMessage()]
    assert len(refused) == 4 and "X-Mailrouter-Proxy-Secret missing" in refused[0], refused
    assert "X-Mailrouter-Proxy-Secret wrong" in refused[2] and SECRET not in caplog.text


def test_a_trusted_header_needs_a_proxy_secret(tmp_path: Path) -> None:
    """web.trusted_header without web.proxy_secret, or with a short one, is refused at its
    line with the fix (how the proxy sends it)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("web:\n  trusted_header: X-Remote-User\n  hosts: [a]\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg)
    assert [str(e) for e in info.value.errors] == [
        f"{cfg}:2:19: 'web.trusted_header' needs 'web.proxy_secret': any user of this host could "
        "connect to the loopback listener and send X-Remote-User itself; set 'proxy_secret:' to "
        "a long random string (openssl rand -hex 32) and have the proxy send it: "
        'proxy_set_header X-Mailrouter-Proxy-Secret "SECRET"; (deploy/nginx/mailrouter-web.conf)']
    cfg.write_text("web:\n  trusted_header: X-Remote-User\n  hosts: [a]\n  proxy_secret: short\n",
                   encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg)
    assert [(e.line, e.message) for e in info.value.errors] == [
        (4, "'web.proxy_secret' must be 16 or more printable ASCII characters without spaces")]


def test_a_trusted_header_needs_the_hosts_the_proxy_forwards(tmp_path: Path) -> None:
    """web.trusted_header without web.hosts is refused with file:line and a fix: any Host
    would be answered, so a page rebinding its own name to the loopback listener could send
    the header itself; web.hosts that is not a list of names is refused too."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"web:\n  trusted_header: X-Remote-User\n  proxy_secret: {SECRET}\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg)
    assert [str(e) for e in info.value.errors] == [
        f"{cfg}:2:19: 'web.trusted_header' needs 'web.hosts': a page in a browser on this host "
        "could point its name at the loopback listener and send X-Remote-User itself (DNS "
        "rebinding); list the names the reverse proxy forwards as Host, e.g. "
        "'hosts: [mail-control.example.com]'"]
    cfg.write_text("web:\n  hosts: mail-control.example.com\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg)
    assert [e.line for e in info.value.errors] == [2]
    assert "'web.hosts' must be a list of host names" in str(info.value.errors[0])
    cfg.write_text("web: {trusted_header: X-Remote-User, hosts: [Mail-Control.example.com], "
                   f"proxy_secret: {SECRET}}}\n",
                   encoding="utf-8")
    assert load_config(cfg).webui.hosts == ("mail-control.example.com",)


async def test_a_rebound_host_name_cannot_sign_in_through_the_trusted_header(make_app: Any) -> None:
    """DNS rebinding: a page whose name now points at the loopback listener sends its own
    name as Host and the trusted header itself. With web.hosts only the names listed are
    answered: another Host is 400 with no session given; the proxy's Host signs in."""
    app = await make_app(web=Listener("127.0.0.1", 0),
                         webui=WebConfig(trusted_header="X-Remote-User", proxy_secret=SECRET,
                                         hosts=("mail-control.example.com",)))
    host, port = app.bound["web"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async def get(name: str) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
            hdrs = {"X-Remote-User": "petrova", "Host": name, PROXY_SECRET_HEADER: SECRET}
            async with http.get(f"http://{host}:{port}/search", headers=hdrs,
                                allow_redirects=False) as r:
                return r.status, await r.text(), r.headers
        status, page, hdrs = await get(f"evil.example:{port}")
        assert status == 400 and "web.hosts" in page
        assert "Set-Cookie" not in hdrs and hdrs["X-Frame-Options"] == "DENY"
        assert (await get(f"127.0.0.1:{port}"))[0] == 400
        status, page, hdrs = await get("Mail-Control.example.com")
        assert status == 200 and "Set-Cookie" in hdrs


def _copies_of_the_invoice(conn: Any, n: int, start: datetime) -> None:
    """`n` copies of the delivered invoice (its decisions and subject words too), one a
    minute back from `start`, keys c0000.. ; two share each time, so a page may end between them."""
    from sqlalchemy import insert, select

    from mailrouter.registry.models import decisions, messages
    from mailrouter.registry.words import subject_words
    first = conn.execute(select(messages).where(messages.c.subject == "Счёт №42 за декабрь")).one()._mapping
    decs = [{k: v for k, v in d._mapping.items() if k != "id"} for d in conn.execute(
        select(decisions).where(decisions.c.message_key == first["key"]))]
    words = [{k: v for k, v in w._mapping.items() if k != "id"} for w in conn.execute(
        select(subject_words).where(subject_words.c.message_key == first["key"]))]
    for i in range(n):
        key, at = f"c{i:04d}", start - timedelta(minutes=i // 2)
        conn.execute(insert(messages), [dict(first) | {"key": key, "received_at": at, "updated_at": at}])
        conn.execute(insert(decisions), [d | {"message_key": key} for d in decs])
        conn.execute(insert(subject_words), [w | {"message_key": key, "received_at": at} for w in words])


async def _walk_pages(c: Client, path: str) -> tuple[int, list[str]]:
    """Every message key listed on `path` and the pages after it (its "Next page" links)."""
    keys: list[str] = []
    pages = 0
    while path:
        status, page, _ = await c.get(path)
        assert status == 200, (path, page)
        pages += 1
        keys += re.findall(r'href="/message/(\w+)"', page)
        more = re.search(r'id="next-page" href="([^"]+)"', page)
        path = more.group(1).replace("&amp;", "&") if more else ""
    return pages, keys


async def test_a_search_and_a_history_longer_than_a_page_go_on_to_the_next(client: Any, site: Any) -> None:
    """A search (by subject word, by sender) and a counterparty's history with more
    messages than a page holds link to the next page, which lists the older ones, each
    message once. The pages ended at 100 and 500 rows, saying nothing of the rest: a head
    read a customer's last 500 messages as all of them."""
    newest = datetime.now(timezone.utc) - timedelta(hours=1)
    await site[0].registry.write("test", lambda conn: _copies_of_the_invoice(conn, 1204, newest))
    c = client()
    assert await c.login("ivanov") == 303
    for path, page_size in (("/search?" + urlencode({"words": "СЧЕТ"}), 100),
                            ("/search?sender=client%40outside.test&until=2999-01-01", 100),
                            ("/counterparty?who=outside.test", 500)):
        pages, keys = await _walk_pages(c, path)
        assert len(keys) == len(set(keys)) == 1205, path           # the copies and the invoice
        assert pages == -(-1205 // page_size), path
    status, page, _ = await c.get("/search?before=2026-01-01T00:00,x")
    assert status == 400 and "before=" in page                          # a time without its zone


async def test_an_unexpected_error_is_a_plain_500_with_our_headers_and_a_logged_traceback(
        client: Any, site: Any, caplog: Any) -> None:
    """A bug in a page (here: a snapshot without its departments) is answered 500 with the
    error page and every security header, Server "mailrouter", no-store; the traceback is
    in the log as event=web_error. aiohttp's own 500 had no CSP, no nosniff, no no-store
    and named itself and its version in Server."""
    import dataclasses
    app = site[0]
    c = client()
    assert await c.login("petrova") == 303
    good = app._snapshot
    app._snapshot = dataclasses.replace(good, departments=None)
    try:
        with caplog.at_level(logging.ERROR, logger="mailrouter.web"):
            status, page, headers = await c.get("/board")
    finally:
        app._snapshot = good
    assert status == 500 and "internal error" in page and "Traceback" not in page
    assert headers.getall("Server") == ["mailrouter"] and headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    logged = [r for r in caplog.records if "event=web_error" in r.getMessage()]
    assert logged and logged[0].exc_info is not None and "path=/board" in logged[0].getMessage()

"""The request board, a request's page, its actions, the response report and sign-in
throttling, over real HTTP against the daemon's App (execution control on, listen.web on
port 0), messages sent by a real SMTP client, a real SQLite registry.

The example company: an invoice opens a finance request owned by the finance-duty team's
pick (ivanov, head of finance); an urgent support message opens a support request with no
owner (smirnov heads sales and support); petrova is an admin.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import insert, select, update

from mailrouter.config import ControlConfig, Listener, RegistryConfig, WebConfig, is_loopback
from mailrouter.control.queries import report
from mailrouter.control.tables import request_events, request_messages, requests
from mailrouter.registry.accounts import hash_password, set_password
from mailrouter.registry.models import decisions
from mailrouter.web.throttle import Throttle
from tests.support.daemon import RULES
from tests.test_web import PASSWORD, Client, _deliver


@pytest.fixture
async def site(make_app: Any) -> Any:
    app = await make_app(web=Listener("127.0.0.1", 0), webui=WebConfig(admins=("petrova",)),
                         control=ControlConfig())
    hashed = hash_password(PASSWORD)
    now = datetime.now(timezone.utc)
    for person in ("ivanov", "smirnov", "petrova"):
        await app.registry.write("test", lambda c, p=person: set_password(c, p, hashed, now))
    await _deliver(app, "invoices@example.com", "Счёт №42 за декабрь")
    await _deliver(app, "support@example.com", "Срочно: принтер не печатает")
    rows = await app.registry.read("test", lambda c: c.execute(
        select(requests.c.id, requests.c.mailbox, requests.c.owner)).all())
    ids = {box: (rid, owner) for rid, box, owner in rows}
    assert set(ids) == {"finance", "support"} and ids["finance"][1] == "ivanov", ids
    host, port = app.bound["web"]
    return app, f"http://{host}:{port}", ids["finance"][0], ids["support"][0]


@pytest.fixture
async def client(site: Any) -> Any:
    made: list[Client] = []

    async def make(person: str | None = None, lang: str = "en") -> Client:
        made.append(Client(site[1], lang))
        if person is not None:
            assert await made[-1].login(person) == 303
        return made[-1]
    yield make
    for c in made:
        await c.http.close()


def _board_rows(page: str) -> dict[str, str]:
    """request number -> its board row (the HTML between <tr id="req-N"> and </tr>)."""
    return dict(re.findall(r'<tr class="\w+" id="req-(\d+)">(.*?)</tr>', page, re.S))


async def _edited_company(make_app: Any, tmp_path: Any, name: str,
                          edits: list[tuple[str, str]], person: str) -> tuple[Any, Any, Client]:
    """The example company with `edits` (old, new: the first of each, which must be there)
    made to rules/NAME, its daemon with the web view and execution control, and a client
    signed in as `person`. The caller closes the client (`.http.close()`)."""
    import shutil
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    text = (rules / name).read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    (rules / name).write_text(text, encoding="utf-8")
    app = await make_app(web=Listener("127.0.0.1", 0), webui=WebConfig(admins=("petrova",)),
                         control=ControlConfig(), routing=(str(rules / "*.yaml"),))
    now = datetime.now(timezone.utc)
    await app.registry.write("test", lambda c: set_password(c, person, hash_password(PASSWORD), now))
    host, port = app.bound["web"]
    signed = Client(f"http://{host}:{port}", "en")
    assert await signed.login(person) == 303
    return app, rules, signed


async def test_the_board_shows_each_head_their_requests_with_sla_time_left(site: Any,
                                                                           client: Any) -> None:
    """ivanov's board lists the finance request (owner Пётр Иванов, business hours left),
    not the support one; smirnov's the support one only; petrova's both. A request whose
    due time has passed is marked overdue with the business hours it is late by."""
    app, _, fin, sup = site
    ivanov, smirnov, petrova = [await client(p) for p in ("ivanov", "smirnov", "petrova")]
    _, page, _ = await ivanov.get("/board")
    rows = _board_rows(page)
    assert set(rows) == {str(fin)} and "Пётр Иванов" in rows[str(fin)]
    assert "business h left" in rows[str(fin)] and 'class="ok"' in page
    assert re.search(r'id="per-mailbox">.*?/board\?mailbox=finance', page, re.S)
    _, page, _ = await smirnov.get("/board")
    assert set(_board_rows(page)) == {str(sup)}
    _, page, _ = await petrova.get("/board")
    assert set(_board_rows(page)) == {str(fin), str(sup)}
    _, page, _ = await petrova.get("/board?mailbox=support")
    assert set(_board_rows(page)) == {str(sup)}

    due = datetime.now(timezone.utc) - timedelta(days=21)
    await app.registry.write("test", lambda c: c.execute(update(requests).where(
        requests.c.id == fin).values(first_response_due=due, response_due=due)))
    _, page, _ = await ivanov.get("/board")
    row = _board_rows(page)[str(fin)]
    late = re.search(r"overdue by ([\d.]+) business h", row)
    assert late and 80 <= float(late[1]) <= 15 * 9 + 1, row   # 3 weeks of 9-hour days, holidays aside
    assert re.search(rf'<tr class="late" id="req-{fin}">', page)
    assert re.search(r"Пётр Иванов</a></td><td>1</td><td>1</td><td>1</td>", page)


async def test_a_board_page_key_out_of_range_is_400_not_503(client: Any) -> None:
    """`after=` is the next-page key DUE,ID from the board's own link; a number past a
    64-bit integer, or a time with no UTC equivalent, made the registry fail (503
    "registry unavailable"). Both are 400; the greatest valid key still answers."""
    petrova = await client("petrova")
    for key in (",99999999999999999999999", ",-1", "0001-01-01T00:00:00%2B01:00,1",
                "9999-12-31T23:59:59-10:00,1"):
        status, page, _ = await petrova.get(f"/board?after={key}")
        assert status == 400 and "after" in page, (key, status)
    assert (await petrova.get("/board?after=,9223372036854775807"))[0] == 200


async def test_a_nul_character_is_400_on_postgresql_not_a_registry_outage(make_app: Any,
                                                                          pg_db: str,
                                                                          ) -> None:
    """PostgreSQL refuses NUL in any string: /search?sender=%00 (and the board, a message
    link, a note) failed in the registry, answered 503 and counted as an outage. Each is
    400 now, and the note is not written."""
    app = await make_app(web=Listener("127.0.0.1", 0), webui=WebConfig(admins=("petrova",)),
                         control=ControlConfig(), registry=RegistryConfig(url=pg_db))
    hashed, now = hash_password(PASSWORD), datetime.now(timezone.utc)
    await app.registry.write("test", lambda c: set_password(c, "petrova", hashed, now))
    await _deliver(app, "invoices@example.com", "Счёт №42 за декабрь")
    host, port = app.bound["web"]
    c = Client(f"http://{host}:{port}")
    try:
        assert await c.login("petrova") == 303
        for path in ("/search?sender=%00", "/search?words=a&mailbox=x%00", "/board?owner=%00",
                     "/counterparty?who=a%00", "/message/%00"):
            status, page, _ = await c.get(path)
            assert status == 400 and "NUL" in page, (path, status)
        status, _, _ = await c.post("/request/1/note", {"csrf": await c.csrf(), "text": "a\x00b"})
        assert status == 400
        notes = await app.registry.read("test", lambda conn: conn.execute(
            select(request_events.c.id).where(request_events.c.kind == "note")).all())
        assert notes == []
    finally:
        await c.http.close()


async def test_markup_in_a_mail_is_shown_as_text_on_every_page(site: Any, client: Any) -> None:
    """A subject, a From name (plain and RFC 2047-encoded) and a Message-ID carrying markup
    open a request and are shown as text, escaped, on the search, counterparty, board,
    request and message pages: no tag or attribute of theirs reaches any page."""
    app, base, _, _ = site
    host, port = app.bound["smtp"]
    mails = [('"<img src=x onerror=alert(1)>" <evil@outside.test>', 'urgent <script>alert(1)</script> "q"'),
             ("=?utf-8?b?PHN2ZyBvbmxvYWQ9YWxlcnQoMik+?= <evil@outside.test>",
              "=?utf-8?q?urgent_=3Ca_href=3D=22javascript:alert=283=29=22=3Ex=3C/a=3E?=")]
    for n, (sender, subject) in enumerate(mails):
        await aiosmtplib.send((f"From: {sender}\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
                               f'Message-ID: <{n}"><script>alert(4)</script>@outside.test>\r\n\r\nhi\r\n').encode(),
                              sender="evil@outside.test", recipients=["support@example.com"],
                              hostname=host, port=port)
    petrova = await client("petrova")
    _, board, _ = await petrova.get("/board")
    _, found, _ = await petrova.get("/search?sender=evil%40outside.test")
    pages = [board, found] + [(await petrova.get(path))[1] for path in
                              {*re.findall(r'href="(/request/\d+)"', board),
                               *re.findall(r'href="(/message/[0-9a-f]{64})"', found),
                               "/counterparty?who=outside.test"}]
    assert len(pages) >= 7
    assert board.count("&lt;script&gt;alert(1)&lt;/script&gt; &#34;q&#34;") == 1
    assert sum("&lt;img src=x onerror=alert(1)&gt;" in p for p in pages) >= 4
    assert any("&lt;svg onload=alert(2)&gt;" in p for p in pages)
    assert any("&lt;a href=&#34;javascript:alert(3)&#34;&gt;x&lt;/a&gt;" in p for p in pages)
    assert any("&lt;script&gt;alert(4)&lt;/script&gt;" in p for p in pages)
    for page in pages:
        assert not re.search(r"<(script|img|svg onload|a href=\"javascript)|onerror=alert\(1\)[^&]", page)


async def test_a_request_page_tells_its_story_with_the_rule_relative_to_the_routing_dir(
        site: Any, client: Any) -> None:
    """The finance request shows its message (decoded subject, From), the decision with
    rule invoices at routing.yaml:N (no absolute path anywhere), the rule set's hash, that
    attachment names are not recorded, and the history (opened, owner). The message page
    links to its request. A request whose rule names no owner has no owner event (it said
    "(nobody) -> (nobody)")."""
    _, _, fin, sup = site
    ivanov = await client("ivanov")
    status, page, _ = await ivanov.get(f"/request/{fin}")
    assert status == 200
    assert "Счёт №42 за декабрь" in page and "&lt;client@outside.test&gt;" in page
    assert re.search(r"<strong>invoices</strong> <code>routing\.yaml:\d+</code>", page)
    assert re.search(r"rule &#39;invoices&#39; \(routing\.yaml:\d+\)", page)
    assert str(RULES) not in page and str(RULES.resolve()) not in page
    assert re.search(r'<code class="ruleset">[0-9a-f]{16}</code>', page)
    assert "not recorded in the registry" in page
    assert 'class="ev-opened"' in page and 'class="ev-owner"' in page
    key = re.search(r'href="/message/([0-9a-f]{64})"', page)[1]
    _, story, _ = await ivanov.get(f"/message/{key}")
    assert f'<a id="request" href="/request/{fin}">' in story
    assert str(RULES) not in story
    # the support request's rule names no owner: its history has no "(nobody) -> (nobody)"
    _, page, _ = await (await client("smirnov")).get(f"/request/{sup}")
    assert 'class="ev-opened"' in page and 'class="ev-owner"' not in page


async def test_a_long_thread_is_shown_a_hundred_messages_a_page(site: Any, client: Any) -> None:
    """A request of 251 messages (a customer's autoresponder answering each reminder) shows
    them 100 a page, in order, with where one is and links to the pages before and after;
    every message is on one page. The page listed all of them, each with its decisions'
    explanations: megabytes for a thread of thousands. A page that is no number is 400,
    one past the last 404."""
    app, _, fin, _ = site

    def answer_250_times(conn: Any) -> None:
        first = conn.execute(select(request_messages).where(request_messages.c.request_id == fin)).one()
        at = first.at
        conn.execute(insert(request_messages), [
            {"request_id": fin, "message_key": f"auto{i:04d}", "message_id": f"<auto{i}@outside.test>",
             "direction": "in", "at": at + timedelta(minutes=i + 1), "sender": first.sender}
            for i in range(250)])
    await app.registry.write("test", answer_250_times)
    ivanov = await client("ivanov")
    seen, path = [], f"/request/{fin}"
    while path:
        status, page, _ = await ivanov.get(path)
        assert status == 200, page
        shown = re.findall(r'<section class="decision msg-in">.*?<small>[^<]*· ([^<]+)</small>', page, re.S)
        assert 0 < len(shown) <= 100, len(shown)
        first = len(seen) + 1
        assert f"Messages {first}–{first + len(shown) - 1} of 251" in page
        assert ('class="prev-page"' in page) == (first > 1)
        seen += shown
        more = re.search(r'class="next-page" href="([^"]+)"', page)
        path = more[1] if more else ""
    assert len(seen) == 251 and seen == sorted(seen)
    assert (await ivanov.get(f"/request/{fin}?page=4"))[0] == 404        # past the last
    for bad in ("0", "x", "-1", "١"):
        status, page, _ = await ivanov.get(f"/request/{fin}?page={bad}")
        assert status == 400 and "page=" in page, bad


async def test_actions_are_recorded_with_who_and_when_and_kept_to_the_department(
        site: Any, client: Any) -> None:
    """ivanov reassigns his request to petrova, adds a note, closes and reopens it: each is
    a request_events row with him as actor, shown in the story; the board follows. Bad
    input changes nothing: an owner outside the address book (400), an empty note (400),
    closing twice (409). smirnov, head of another department, gets 404 for the page and
    for every action even with his own valid CSRF token; a form without a token is 403."""
    app, _, fin, _ = site
    ivanov, smirnov = await client("ivanov"), await client("smirnov")
    token = await ivanov.csrf()
    assert (await ivanov.post(f"/request/{fin}/owner", {"owner": "petrova"}))[0] == 403
    status, _, headers = await ivanov.post(f"/request/{fin}/owner", {"csrf": token, "owner": "petrova"})
    assert status == 303 and headers["Location"] == f"/request/{fin}"
    _, page, _ = await ivanov.get("/board")
    assert "Анна Петрова" in _board_rows(page)[str(fin)]
    assert (await ivanov.post(f"/request/{fin}/owner", {"csrf": token, "owner": "nobody"}))[0] == 400
    assert (await ivanov.post(f"/request/{fin}/note", {"csrf": token, "text": "  "}))[0] == 400
    assert (await ivanov.post(f"/request/{fin}/note", {"csrf": token,
                                                       "text": "Позвонить клиенту"}))[0] == 303
    assert (await ivanov.post(f"/request/{fin}/close", {"csrf": token}))[0] == 303
    _, page, _ = await ivanov.get("/board")
    assert str(fin) not in _board_rows(page)
    status, page, _ = await ivanov.post(f"/request/{fin}/close", {"csrf": token})
    assert status == 409 and "Not done: request" in page and "already closed" in page
    assert "Cannot read" not in page
    assert (await ivanov.post(f"/request/{fin}/reopen", {"csrf": token}))[0] == 303

    other = await smirnov.csrf()
    assert (await smirnov.get(f"/request/{fin}"))[0] == 404
    for action, data in (("owner", {"owner": "smirnov"}), ("close", {}), ("note", {"text": "x"})):
        assert (await smirnov.post(f"/request/{fin}/{action}", {"csrf": other} | data))[0] == 404
    assert (await smirnov.get("/request/999999"))[0] == 404

    events = await app.registry.read("test", lambda c: c.execute(
        select(request_events.c.kind, request_events.c.actor, request_events.c.detail).where(
            request_events.c.request_id == fin, request_events.c.actor == "ivanov")
        .order_by(request_events.c.id)).all())
    want = [("owner", '{"from": "ivanov", "to": "petrova", "why"'), ("note", "Позвонить клиенту"),
            ("status", "open -> closed: closed by ivanov (web view)"),
            ("status", "closed -> open: reopened by ivanov (web view)")]
    assert len(events) == len(want)
    assert all(k == wk and d.startswith(wd) for (k, _, d), (wk, wd) in zip(events, want)), events
    _, page, _ = await ivanov.get(f"/request/{fin}")
    assert re.search(r"Пётр Иванов → Анна Петрова · reassigned by ivanov \(web view\)", page)
    assert "Позвонить клиенту" in page and 'id="status">open<' in page
    # reopened by hand: open, with the next answer due on the request's calendar
    assert re.search(r'id="next-due">[^<]+\(reopened\)<', page)
    # the reopen's history line gives that time as the page's other times, not ISO
    # ("answer due 2027-01-11T12:00:00.123456+03:00", the text the registry keeps)
    due = re.search(r"reopened by ivanov \(web view\); answer due ([^<]+)<", page)
    assert due and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d", due.group(1)), due


async def test_a_request_given_to_someone_else_is_mailed_to_them(site: Any, client: Any) -> None:
    """ivanov gives his request to petrova: one notice for her in the outbox, in the
    reassign's transaction, saying who gave it, with the request's number, counterparty and
    subject. Taking a request oneself, or a refused reassign, mails nobody. Before, the new
    owner learnt of it only from the board."""
    from email import message_from_bytes, policy

    from mailrouter.registry.models import outbox
    app, _, fin, sup = site
    ivanov, petrova = await client("ivanov"), await client("petrova")
    assert (await ivanov.post(f"/request/{fin}/owner", {"csrf": await ivanov.csrf(),
                                                        "owner": "petrova"}))[0] == 303
    token = await petrova.csrf()
    assert (await petrova.post(f"/request/{fin}/owner", {"csrf": token, "owner": "petrova"}))[0] == 409
    assert (await petrova.post(f"/request/{sup}/owner", {"csrf": token, "owner": "petrova"}))[0] == 303
    rows = await app.registry.read("test", lambda c: c.execute(
        select(outbox.c.kind, outbox.c.rcpt, outbox.c.raw).where(outbox.c.kind == "assign")).all())
    assert [(k, r) for k, r, _ in rows] == [("assign", "a.petrova@example.com")]
    mail = message_from_bytes(rows[0][2], policy=policy.default)
    assert mail["Subject"] == f"[#{fin}] Assigned to you: Счёт №42 за декабрь"
    assert mail["Auto-Submitted"] == "auto-generated"
    body = mail.get_content().replace("\r\n", "\n")
    assert body.startswith(f"Request #{fin} is now yours: assigned by Пётр Иванов.\n\n"
                           "From: client@outside.test\nSubject: Счёт №42 за декабрь\n"), body


async def test_the_owner_of_a_request_sees_its_messages_whoever_the_rule_named(
        site: Any, client: Any) -> None:
    """The support request (sales: smirnov's department, no owner by its rule) is given to
    ivanov, head of finance only: its page, the message it links to, a search by its
    subject and its counterparty's history show him the message and the decision that
    opened it; given back to smirnov, it is "not found" for ivanov again. Before, the
    owner of a request picked by a team, covered as a deputy or reassigned got its page,
    but each of its messages was 404: the messages were scoped by the rule's owner."""
    app, _, _, sup = site
    ivanov, petrova = await client("ivanov"), await client("petrova")
    _, page, _ = await petrova.get(f"/request/{sup}")
    key = re.search(r'href="/message/([0-9a-f]{64})"', page).group(1)
    assert (await ivanov.get(f"/message/{key}"))[0] == 404
    assert (await petrova.post(f"/request/{sup}/owner", {"csrf": await petrova.csrf(),
                                                         "owner": "ivanov"}))[0] == 303
    status, page, _ = await ivanov.get(f"/request/{sup}")
    assert status == 200 and f'href="/message/{key}"' in page
    status, page, _ = await ivanov.get(f"/message/{key}")
    assert status == 200 and "принтер не печатает" in page and "support@example.com" in page
    _, page, _ = await ivanov.get("/search?words=принтер")
    assert f"/message/{key}" in page
    _, page, _ = await ivanov.get("/counterparty?who=client@outside.test")
    assert f"/message/{key}" in page and "Счёт №42" in page
    assert (await petrova.post(f"/request/{sup}/owner", {"csrf": await petrova.csrf(),
                                                         "owner": "smirnov"}))[0] == 303
    assert (await ivanov.get(f"/message/{key}"))[0] == 404
    _, page, _ = await ivanov.get("/search?words=принтер")
    assert f"/message/{key}" not in page


async def test_the_search_by_owner_finds_the_requests_a_person_was_given(
        site: Any, client: Any) -> None:
    """The search's owner list names people: choosing Пётр Иванов finds the invoice the
    finance-duty team picked him for, and the support message once it is given to him,
    as `mailrouter registry search --owner ivanov` does (the rule's owner or the
    request's). Before, it compared the rule's owner only (the team, or nobody): a head
    choosing a person of the list found nothing of what that person owns."""
    app, _, fin, sup = site
    petrova = await client("petrova")
    _, page, _ = await petrova.get("/search?owner=ivanov")
    assert "Счёт №42 за декабрь" in page and "принтер не печатает" not in page
    assert (await petrova.post(f"/request/{sup}/owner", {"csrf": await petrova.csrf(),
                                                         "owner": "ivanov"}))[0] == 303
    _, page, _ = await petrova.get("/search?owner=ivanov")
    assert "Счёт №42 за декабрь" in page and "принтер не печатает" in page
    _, page, _ = await petrova.get("/search?owner=smirnov")
    assert "Счёт №42" not in page and "принтер" not in page


async def test_a_message_to_two_mailboxes_is_one_message_of_its_day_and_owner(
        site: Any, client: Any) -> None:
    """One message to sales@ and support@ (smirnov heads both) counts once in the report's
    messages per day and per owner, and once in each mailbox's row. Before, the day's bar
    and the owner's row added the mailboxes up: 2 for one message (the search showed 1)."""
    app, _, _, _ = site
    host, port = app.bound["smtp"]
    await aiosmtplib.send(b"From: c@outside.test\r\nTo: sales@example.com, support@example.com\r\n"
                          b"Subject: both\r\n\r\nhello\r\n", sender="c@outside.test",
                          recipients=["sales@example.com", "support@example.com"],
                          hostname=host, port=port)
    smirnov = await client("smirnov")
    _, page, _ = await smirnov.get("/search?words=both")
    assert page.count('href="/message/') == 1
    _, page, _ = await smirnov.get("/report")
    chart = page[page.index("<figure>"):page.index("</figure>")]
    bars = [int(n) for n in re.findall(r"<title>\d\d-\d\d: (\d+)</title>", chart)]
    assert sum(bars) == 2                     # the urgent support message, and this one
    tables = re.findall(r"<tbody>(.*?)</tbody>", page[:page.index("response-mailbox")], re.S)
    rows = [dict(re.findall(r"<tr><td>([^<]*)</td><td>(\d+)</td></tr>", t)) for t in tables]
    assert rows == [{"sales": "1", "support": "2"}, {"-": "2"}]


async def test_the_report_answers_from_the_query_mailrouter_report_prints(site: Any,
                                                                          client: Any) -> None:
    """First response per mailbox and owner, with SVG charts; the response CSV has the
    figures control.queries.report (the CLI's) computes for the same period."""
    app, _, fin, _ = site
    first = datetime.now(timezone.utc)
    await app.registry.write("test", lambda c: c.execute(update(requests).where(
        requests.c.id == fin).values(first_response_at=first, status="answered")))
    petrova = await client("petrova")
    status, page, _ = await petrova.get("/report")
    assert status == 200 and 'id="response-mailbox"' in page and page.count("<svg") == 4
    status, body, _ = await petrova.get("/report?format=csv&part=response")
    got = list(csv.DictReader(io.StringIO(body)))
    today = datetime.now(timezone.utc).date()
    since = datetime(today.year, today.month, today.day, tzinfo=timezone.utc) - timedelta(days=29)
    snap = app.snapshot()
    doc = await app.registry.read("test", lambda c: report(
        c, since, since + timedelta(days=30), datetime.now(timezone.utc), snap.rules.calendars))
    want = [{"section": "mailbox", "name": r["mailbox"]} | r for r in doc["response_per_mailbox"]]
    want += [{"section": "owner", "name": r["owner"] or ""} | r for r in doc["response_per_owner"]]
    assert [(g["section"], g["name"], g["answered"], g["median"], g["kept"]) for g in got] == [
        (w["section"], w["name"], str(w["answered"]), "" if w["median"] is None else str(w["median"]),
         str(w["kept"])) for w in want]
    assert ("mailbox", "finance", "1") in [(g["section"], g["name"], g["answered"]) for g in got]
    status, page, _ = await petrova.get("/report?since=2027-02-01&until=2027-01-01")
    assert status == 400 and "is before" in page
    # an until alone: the 30 days that end with it, as `mailrouter report --until` (it was
    # today - 29 whatever the until: 400 for an until before it)
    status, page, _ = await petrova.get("/report?until=2027-01-31")
    assert status == 200 and 'name="since" type="date" value="2027-01-02"' in page


async def test_the_reports_messages_per_owner_name_people_as_its_response_tables_do(
        site: Any, client: Any) -> None:
    """The report's messages-per-owner table names a person as the first-response tables
    below it do ("Пётр Иванов"), a team or an owner outside the address book by its key;
    it showed every owner by key ("ivanov" above "Пётр Иванов")."""
    from mailrouter.registry.models import decisions
    app = site[0]
    ivanov = await client("ivanov")
    # a team the rule named is shown as a team, not as if it were a person's key
    status, page, _ = await ivanov.get("/report")
    per_owner = page.split("<h2>Per owner</h2>", 1)[1].split("</table>", 1)[0]
    assert "<td>finance-duty (team)</td><td>1</td>" in per_owner, per_owner
    await app.registry.write("test", lambda c: c.execute(update(decisions).where(
        decisions.c.mailbox == "finance").values(owner="ivanov")))
    status, page, _ = await ivanov.get("/report")
    per_owner = page.split("<h2>Per owner</h2>", 1)[1].split("</table>", 1)[0]
    assert status == 200 and "<td>Пётр Иванов</td><td>1</td>" in per_owner, per_owner
    assert "<td>ivanov</td>" not in per_owner


async def test_slow_reports_leave_the_daemon_registry_reads_of_its_own(
        site: Any, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six reports whose query hangs (a report over years of requests, a head pressing
    reload) hold at most two of the registry's read threads; an incoming message's read
    (first_seen, as a retry asks it) is answered meanwhile, and every report answers once
    its query is done. Each report took a thread: four took them all, and the daemon's own
    reads waited behind them (an SMTP reply 14 s late beside twelve reports of 20000
    requests; past the registry timeout a 451)."""
    import threading

    from mailrouter.web import reports as web_reports
    app = site[0]
    release, lock = threading.Event(), threading.Lock()
    running, most = [0], [0]
    real = web_reports.report

    def slow_report(*args: Any, **kw: Any) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            release.wait(60)
            return real(*args, **kw)
        finally:
            with lock:
                running[0] -= 1
    monkeypatch.setattr(web_reports, "report", slow_report)
    heads = [await client(person) for person in ("petrova", "ivanov", "smirnov") * 2]
    pages = [asyncio.create_task(c.get("/report")) for c in heads]
    try:
        for _ in range(400):                    # until the reports hold what they may
            if running[0] >= 2:
                break
            await asyncio.sleep(0.01)
        assert await asyncio.wait_for(app.registry.first_seen("no-such-message"), 5) is None
        assert most[0] == 2, most
    finally:
        release.set()
    assert [status for status, _, _ in await asyncio.gather(*pages)] == [200] * 6
    assert most[0] == 2, most


async def test_failed_sign_ins_lock_the_name_for_a_while(client: Any, caplog: Any) -> None:
    """Five wrong passwords for ivanov: the sixth try, even with the right password, is
    429 with Retry-After and no session, and logged; another person from the same address
    still signs in."""
    c = await client()
    for _ in range(5):
        assert await c.login("ivanov", "wrong password!") == 401
    _, page, _ = await c.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page)[1]
    with caplog.at_level(logging.WARNING, logger="mailrouter.web"):
        status, page, headers = await c.post("/login", {"csrf": token, "person": "IVANOV",
                                                        "password": PASSWORD, "next": "/"})
    assert status == 429 and int(headers["Retry-After"]) > 0 and "try again in" in page
    throttled = [r for r in caplog.records if r.getMessage() == "event=web_signin_throttled"]
    assert [r.fields["person"] for r in throttled] == ["IVANOV"]      # as typed
    assert throttled[0].fields["retry_after"] == int(headers["Retry-After"])
    assert (await c.get("/board"))[0] == 303
    assert await (await client()).login("smirnov") == 303


async def test_sign_ins_sent_at_once_are_throttled_as_one_after_another(client: Any) -> None:
    """Twelve wrong passwords for ivanov sent at once all passed the throttle (each was counted
    only after its tens of milliseconds of scrypt): all twelve were checked, 401. Now each try
    counts before the check: five are checked, seven get 429, and then so does the right one."""
    guessers = [await client() for _ in range(12)]
    tokens = []
    for c in guessers:
        _, page, _ = await c.get("/login")
        tokens.append(re.search(r'name="csrf" value="([^"]+)"', page)[1])
    answers = await asyncio.gather(*(c.post("/login", {"csrf": t, "person": "ivanov", "next": "/",
                                                       "password": f"wrong password {i}"})
                                     for i, (c, t) in enumerate(zip(guessers, tokens))))
    assert sorted(a[0] for a in answers) == [401] * 5 + [429] * 7
    assert await guessers[0].login("ivanov") == 429


async def test_sign_ins_the_registry_could_not_check_do_not_lock(site: Any, client: Any) -> None:
    """A try counts as failed before its password is checked; when the registry cannot be
    read (here: its accounts table is gone) the answer is 503 and the try is taken back:
    six tries are six 503s, not five and a lock."""
    await site[0].registry.write("test", lambda c: c.exec_driver_sql("DROP TABLE web_accounts"))
    c = await client()
    assert [await c.login("ivanov") for _ in range(6)] == [503] * 6


async def test_a_person_is_locked_by_key_and_by_address_alike(client: Any) -> None:
    """One signs in with the key or the address: five failures for "ivanov" locked that name
    only, and his address, with the right password, still signed in (five more guesses per
    lock). Both names are one person's: the address is locked too, and the other way round."""
    c = await client()
    for _ in range(5):
        assert await c.login("ivanov", "wrong password!") == 401
    assert await c.login("p.ivanov@example.com") == 429
    for _ in range(5):
        assert await c.login("S.Smirnov@example.com", "wrong password!") == 401
    assert await c.login("smirnov") == 429
    assert await c.login("petrova") == 303


async def test_behind_a_local_proxy_failures_count_per_client_not_per_proxy(client: Any) -> None:
    """Behind a reverse proxy on this host every sign-in comes from 127.0.0.1: twenty failures
    from one client (X-Forwarded-For, the proxy's last entry) locked everyone out. Now that
    client is locked and another behind the same proxy still signs in."""
    guesser, other = await client(), await client()
    guesser.http.headers["X-Forwarded-For"] = "198.51.100.7"
    other.http.headers["X-Forwarded-For"] = "203.0.113.9, 192.0.2.44"   # the proxy appended .44
    for n in range(20):
        assert await guesser.login(f"nobody{n}", "wrong password!") == 401
    assert await guesser.login("ivanov") == 429
    assert await other.login("ivanov") == 303


async def test_with_a_proxy_secret_only_the_proxy_names_the_client(make_app: Any) -> None:
    """With web.proxy_secret, X-Forwarded-For counts only on a request that carries it:
    another user of this host rotating X-Forwarded-For on the loopback listener had twenty
    fresh failures per made-up address. Now theirs count against 127.0.0.1 and are locked;
    a client behind the real proxy still signs in."""
    from tests.test_web import SECRET
    from mailrouter.config import PROXY_SECRET_HEADER
    app = await make_app(web=Listener("127.0.0.1", 0), webui=WebConfig(proxy_secret=SECRET))
    await app.registry.write("test", lambda c: set_password(
        c, "ivanov", hash_password(PASSWORD), datetime.now(timezone.utc)))
    host, port = app.bound["web"]
    guesser, proxied = Client(f"http://{host}:{port}", "en"), Client(f"http://{host}:{port}", "en")
    try:
        for n in range(20):
            guesser.http.headers["X-Forwarded-For"] = f"198.51.100.{n}"
            assert await guesser.login(f"nobody{n}", "wrong password!") == 401
        guesser.http.headers["X-Forwarded-For"] = "198.51.100.200"
        assert await guesser.login("ivanov") == 429
        proxied.http.headers.update({"X-Forwarded-For": "203.0.113.9", PROXY_SECRET_HEADER: SECRET})
        assert await proxied.login("ivanov") == 303
    finally:
        await guesser.http.close()
        await proxied.http.close()


async def test_one_ipv6_network_counts_as_one_client(client: Any) -> None:
    """Failures counted per address, and a host owns a whole IPv6 /64 (2**64 addresses):
    a guesser took a fresh address every 20 tries and was never locked. The /64 counts as
    one client; another /64 behind the same proxy still signs in."""
    guesser, other = await client(), await client()
    other.http.headers["X-Forwarded-For"] = "2001:db8:0:2::1"
    for n in range(20):
        guesser.http.headers["X-Forwarded-For"] = f"2001:db8:0:1::{n + 1:x}"
        assert await guesser.login(f"nobody{n}", "wrong password!") == 401
    guesser.http.headers["X-Forwarded-For"] = "2001:db8:0:1:ffff::99"
    assert await guesser.login("ivanov") == 429
    assert await other.login("ivanov") == 303


@pytest.mark.parametrize("peer, local", [
    ("127.0.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("::ffff:127.0.0.1", True), ("::ffff:127.8.9.1", True),
    ("::ffff:192.0.2.1", False), ("::1%lo", True), ("fe80::1%eth0", False), ("192.0.2.1", False), ("2001:db8::1", False), ("?", False)])
def test_a_proxy_seen_through_a_dual_stack_socket_is_on_this_host(peer: str, local: bool) -> None:
    """A web view bound to ``::`` sees a proxy on 127.0.0.1 as ``::ffff:127.0.0.1``, which
    Python 3.11's ipaddress does not call loopback: X-Forwarded-For was then ignored and all
    sign-in failures behind the proxy counted against it (and the greeting delay for local
    clients was not applied). The mapped IPv4 address is what decides."""
    assert is_loopback(peer) is local


def test_the_throttle_counts_per_name_and_address_and_unlocks_after_the_lock() -> None:
    """Clock-driven: 3 failures lock the name for 60 s from the last; success forgets the
    name's failures; 4 failures from one address lock the address for any name; a try
    counted as failed and then taken back by its success does not count for the address;
    an IPv6 /64 is one address, a mapped IPv4 address its IPv4 one; failures spread wider
    than the window do not lock."""
    now = [1000.0]
    t = Throttle(per_person=3, per_ip=4, window=100.0, lock=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert t.wait("ivanov", "10.0.0.1") == 0
        t.failed("Ivanov", "10.0.0.1")
    assert t.wait("IVANOV", "10.0.0.2") == 60.0
    now[0] += 59
    assert t.wait("ivanov", "10.0.0.2") == pytest.approx(1.0)
    now[0] += 2
    assert t.wait("ivanov", "10.0.0.2") == 0
    t.failed("petrova", "10.0.0.1")                 # 4th from this address
    assert t.wait("smirnov", "10.0.0.1") > 0 and t.wait("smirnov", "10.0.0.3") == 0
    t.succeeded("petrova")
    assert t.wait("petrova", "10.0.0.3") == 0
    tried = Throttle(per_person=3, per_ip=2, window=100.0, lock=60.0, clock=lambda: now[0])
    at = tried.failed("ivanov", "10.0.0.9")          # counted before the check, taken back
    tried.succeeded("ivanov", "10.0.0.9", at)
    tried.failed("smirnov", "10.0.0.9")
    assert tried.wait("petrova", "10.0.0.9") == 0
    tried.unknown("petrova", "10.0.0.9", tried.failed("petrova", "10.0.0.9"))    # not checked
    assert tried.wait("petrova", "10.0.0.9") == 0
    v6 = Throttle(per_person=100, per_ip=2, window=100.0, lock=60.0, clock=lambda: now[0])
    v6.failed("a", "2001:db8::1")
    v6.failed("b", "[2001:db8::2]")
    assert v6.wait("c", "2001:db8::ffff:1") > 0 and v6.wait("c", "2001:db8:0:1::1") == 0
    v6.failed("a", "::ffff:192.0.2.1")                   # a mapped IPv4 address is that address
    v6.failed("b", "192.0.2.1")
    assert v6.wait("c", "192.0.2.1") > 0 and v6.wait("c", "192.0.2.2") == 0
    slow = Throttle(per_person=3, per_ip=100, window=100.0, lock=60.0, clock=lambda: now[0])
    for _ in range(3):
        slow.failed("x", "ip")
        now[0] += 51
    assert slow.wait("x", "ip") == 0


def test_the_boards_shortcut_for_long_overdue_requests_gives_the_same_hours() -> None:
    """sla_left with the per-day cache (the board's) equals the plain day-by-day walk for
    dues spread over 100 days, DST-free and across holidays, including two sharing a day."""
    from mailrouter.calendars import build_calendars
    from mailrouter.control.queries import sla_left
    cals = build_calendars({"msk": {"timezone": "Europe/Moscow", "hours": "Mon-Fri 09:00-18:00",
                                    "holidays": ["2027-01-01", "2027-01-07"]},
                            "night": {"timezone": "Asia/Yekaterinburg",
                                      "hours": "Mon-Fri 22:00-06:00"}})
    now = datetime(2027, 3, 3, 11, 17, tzinfo=timezone.utc)
    cache: dict[Any, float] = {}
    for cal in ("msk", "night"):
        for i in range(0, 100 * 24, 7):
            due = now - timedelta(hours=i, minutes=13)
            assert sla_left(cals, cal, due, now, cache) == sla_left(cals, cal, due, now), (cal, due)
    assert len(cache) > 10


async def test_a_request_page_in_russian_names_its_status_and_its_letters(site: Any,
                                                                          client: Any) -> None:
    """The Russian request page showed the status in English ("open") and headed its thread
    "Писем" (the report's count column, "of letters"): "открыт" and "Письма"."""
    _, _, fin, _ = site
    ivanov = await client("ivanov", lang="ru")
    status, page, _ = await ivanov.get(f"/request/{fin}")
    assert status == 200 and 'id="status">открыт<' in page and "<h2>Письма</h2>" in page


async def test_a_head_opens_every_message_of_a_request_in_the_department_our_replies_too(
        make_app: Any, tmp_path: Any) -> None:
    """smirnov heads the support mailbox. A customer writes to support@ (the team `duty`
    picks ivanov), ivanov's answer comes back as the copy to replies@ (the replies
    mailbox, no department's): on the request's page both messages are linked and both
    open for smirnov. Before, the reply's copy was "not found" for the head whose
    department's request it answered (messages were scoped by their own mailbox)."""
    from tests.control_support import mail, send, write_routing
    routing = write_routing(tmp_path, "departments:\n  support: {head: smirnov, mailboxes: [support]}\n")
    app = await make_app(routing=routing, web=Listener("127.0.0.1", 0), webui=WebConfig(),
                         control=ControlConfig(replies=("replies@example.com",)))
    now = datetime.now(timezone.utc)
    await app.registry.write("t", lambda c: set_password(c, "smirnov", hash_password(PASSWORD), now))
    port = app.bound["smtp"][1]
    await send(port, mail("c@client.example", "printer", "c1@client"), "c@client.example")
    await send(port, mail("ivanov@example.com", "Re: printer", "r1@example.com", "<c1@client>",
                          to="c@client.example"), "ivanov@example.com", "replies@example.com")
    host, web_port = app.bound["web"]
    head = Client(f"http://{host}:{web_port}")
    try:
        assert await head.login("smirnov") == 303
        status, page, _ = await head.get("/request/1")
        keys = re.findall(r'href="/message/([0-9a-f]{64})"', page)
        assert status == 200 and len(set(keys)) == 2
        for key in dict.fromkeys(keys):
            assert (await head.get(f"/message/{key}"))[0] == 200, key
        # the customer's history lists our answer too, as `registry history` does (it
        # listed only the customer's own mail)
        for who in ("c@client.example", "client.example"):
            _, page, _ = await head.get(f"/counterparty?who={who}")
            assert all(f"/message/{key}" in page for key in keys), who
    finally:
        await head.http.close()


async def test_a_request_past_due_outside_working_hours_is_overdue_on_its_page(make_app: Any,
                                                                                tmp_path: Any) -> None:
    """A request that fell due at the end of the working day and is read in the evening is
    0.0 business hours late: the board marked it overdue, its own page said "0.0 business h
    left" (it tested the hours' sign, and -0.0 is not below 0). Both say overdue now."""
    now = datetime.now(timezone.utc)
    # a calendar whose only working hour is later today: it is not working time now
    start = (now + timedelta(hours=3)).strftime("%H:%M")
    end = (now + timedelta(hours=4)).strftime("%H:%M")
    app, _, petrova = await _edited_company(make_app, tmp_path, "routing.yaml", [(
        "calendars:\n", f'calendars:\n  later: {{timezone: UTC, hours: "Daily {start}-{end}"}}\n')],
        "petrova")
    try:
        await _deliver(app, "invoices@example.com", "Счёт №43")
        due = now - timedelta(minutes=30)
        await app.registry.write("test", lambda c: c.execute(update(requests).values(
            first_response_due=due, response_due=due, sla_calendar="later")))
        number = await app.registry.read("test", lambda c: c.execute(select(requests.c.id)).scalar_one())
        _, page, _ = await petrova.get("/board")
        assert "overdue by 0.0 business h" in _board_rows(page)[str(number)]
        status, page, _ = await petrova.get(f"/request/{number}")
        left = re.search(r'<dd id="left">(.*?)</dd>', page, re.S)
        assert status == 200 and left and "overdue by 0.0 business h" in left[1], left
    finally:
        await petrova.http.close()


async def test_a_deputy_reminded_of_a_request_opens_it_and_its_messages(
        site: Any, client: Any) -> None:
    """The scheduler reminds the deputy covering an absent owner (or escalates to a team's
    head) with a link to the request's page; the request stays its owner's, and the page and
    its messages were "not found" for the person the reminder went to. A person an alert of
    the request went to now sees it, on the board too; others still do not."""
    from mailrouter.control.tables import request_alerts
    app, _, _, sup = site
    ivanov = await client("ivanov")
    assert (await ivanov.get(f"/request/{sup}"))[0] == 404
    await app.registry.write("test", lambda c: c.execute(insert(request_alerts).values(
        request_id=sup, stage="remind", round=1, at=datetime.now(timezone.utc),
        recipient="ivanov", address="ivanov@example.com", subject="Reminder", body="...",
        state="queued")))
    status, page, _ = await ivanov.get(f"/request/{sup}")
    assert status == 200, page
    key = re.search(r'href="/message/([0-9a-f]{64})"', page).group(1)
    status, page, _ = await ivanov.get(f"/message/{key}")
    assert status == 200 and "принтер не печатает" in page
    _, board, _ = await ivanov.get("/board")
    assert str(sup) in _board_rows(board)
    await app.registry.write("test", lambda c: c.execute(
        update(request_alerts).where(request_alerts.c.request_id == sup).values(
            recipient="smirnov")))
    assert (await ivanov.get(f"/request/{sup}"))[0] == 404
    assert (await ivanov.get(f"/message/{key}"))[0] == 404


async def test_an_action_refused_is_said_in_the_readers_language(site: Any, client: Any) -> None:
    """Closing a closed request, reopening an open one, an empty note: the Russian page said
    "Не сделано: request #1 is already closed", the reason in English. The reason is now in
    the page's language (the English text stays for the CLI and the log)."""
    _, _, fin, _ = site
    ru = await client("ivanov", lang="ru")
    token = await ru.csrf()
    status, page, _ = await ru.post(f"/request/{fin}/reopen", {"csrf": token})
    assert status == 409 and f"Не сделано: обращение №{fin} не закрыто (его статус: " in page, page
    assert "is not closed" not in page
    assert (await ru.post(f"/request/{fin}/close", {"csrf": token}))[0] == 303
    status, page, _ = await ru.post(f"/request/{fin}/close", {"csrf": token})
    assert status == 409 and f"обращение №{fin} уже закрыто" in page and "already" not in page
    status, page, _ = await ru.post(f"/request/{fin}/note", {"csrf": token, "text": " "})
    assert status == 400 and "в заметке нет текста" in page
    en = await client("petrova")
    status, page, _ = await en.post(f"/request/{fin}/close", {"csrf": await en.csrf()})
    assert status == 409 and f"Not done: request #{fin} is already closed" in page


async def test_a_messages_sla_due_is_shown_in_the_companys_zone(make_app: Any, tmp_path: Any) -> None:
    """The invoice's SLA runs on a New York calendar while the company's zone is Moscow's
    (its `default` calendar): the message page showed the decision's raw
    `first_response_due=...T09:00:00-05:00` beside times printed 17:00+03:00 everywhere else,
    and a head in Moscow read a New York wall clock. It is the company's wall clock now, as
    the request's page shows the same due time."""
    app, _, petrova = await _edited_company(make_app, tmp_path, "routing.yaml", [
        ("calendars:\n", 'calendars:\n  default: {timezone: Europe/Moscow}\n'
                         '  ny: {timezone: America/New_York, hours: "Mon-Fri 09:00-17:00"}\n'),
        ("priority: high\n      sla: {first_response: 4h, calendar: msk}",
         "priority: high\n      sla: {first_response: 4h, calendar: ny}")], "petrova")
    try:
        await _deliver(app, "invoices@example.com", "Счёт №44")
        number, due = await app.registry.read("test", lambda c: c.execute(
            select(requests.c.id, requests.c.first_response_due)).one())
        shown = due.astimezone(timezone(timedelta(hours=3))).isoformat(sep=" ", timespec="seconds")
        _, page, _ = await petrova.get(f"/request/{number}")
        key = re.search(r'href="/message/([0-9a-f]{64})"', page).group(1)
        status, page, _ = await petrova.get(f"/message/{key}")
        sla = re.search(r"<dt>SLA</dt><dd>(.*?)</dd>", page, re.S)
        assert status == 200 and sla is not None, page
        assert "calendar=ny" in sla[1] and f"first_response_due={shown}" in sla[1], sla[1]
        assert "-05:00" not in sla[1]
    finally:
        await petrova.http.close()


async def test_a_message_seen_through_its_rule_links_no_request_page_that_is_not_found(
        site: Any, client: Any) -> None:
    """A rule named ivanov the owner (he sees its mail) but the request went to someone
    else in another department (his deputy while he was away): the message page linked
    /request/N, which is "not found" for him. It names the request without a link now; one
    who may open the request still gets the link."""
    from mailrouter.registry.models import decisions
    app, _, _, sup = site
    ivanov, petrova = await client("ivanov"), await client("petrova")
    _, page, _ = await petrova.get(f"/request/{sup}")
    key = re.search(r'href="/message/([0-9a-f]{64})"', page).group(1)
    await app.registry.write("test", lambda c: c.execute(
        update(decisions).where(decisions.c.message_key == key).values(owner="ivanov")))
    assert (await ivanov.get(f"/request/{sup}"))[0] == 404
    status, page, _ = await ivanov.get(f"/message/{key}")
    assert status == 200 and "принтер не печатает" in page
    assert f'href="/request/{sup}"' not in page and f"#{sup}" in page
    _, page, _ = await petrova.get(f"/message/{key}")
    assert f'href="/request/{sup}"' in page


async def test_a_counterpartys_page_lists_their_requests_as_registry_history_does(
        site: Any, client: Any) -> None:
    """`mailrouter registry history client@outside.test` starts with the customer's
    requests, each with its status and owner; the web view's page of the same counterparty
    listed their messages only, and a head could not see from it which requests were still
    open, or whose. It lists the requests the viewer may see, newest first, linked; in
    either form of the address."""
    app, _, fin, sup = site
    petrova, ivanov, smirnov = [await client(p) for p in ("petrova", "ivanov", "smirnov")]

    def listed(page: str) -> list[int]:
        table = re.search(r'<table class="board" id="requests">(.*?)</table>', page, re.S)
        return [int(n) for n in re.findall(r'<tr id="req-(\d+)">', table[1])] if table else []
    _, page, _ = await petrova.get("/counterparty?who=CLIENT@outside.test")
    assert listed(page) == sorted((fin, sup), reverse=True)
    assert f'href="/request/{fin}"' in page and "Пётр Иванов" in page and ">open<" in page
    _, page, _ = await ivanov.get("/counterparty?who=outside.test")
    assert listed(page) == [fin]
    _, page, _ = await smirnov.get("/counterparty?who=client@outside.test")
    assert listed(page) == [sup]
    _, page, _ = await petrova.get("/counterparty?who=nobody@outside.test")
    assert listed(page) == []


async def test_a_person_of_no_department_is_told_they_see_their_own_mail(make_app: Any,
                                                                          tmp_path: Any) -> None:
    """ivanov heads no department here: the board and the search said "You may see the
    mail of:  + your own mail", an empty list of mailboxes joined to the rest."""
    _, _, ivanov = await _edited_company(make_app, tmp_path, "company.yaml", [
        ("  finance: {head: ivanov, mailboxes: [finance]}\n", "")], "ivanov")
    try:
        for path in ("/board", "/search"):
            _, page, _ = await ivanov.get(path)
            rights = re.search(r'<p class="rights">(.*?)</p>', page, re.S)
            assert rights is not None and rights[1] == "You may see the mail of: your own mail", path
    finally:
        await ivanov.http.close()


async def test_the_deputy_covering_an_absent_owner_sees_their_requests_before_any_reminder(
        make_app: Any, tmp_path: Any) -> None:
    """The invoice went to ivanov; then his absence starts (the routing files say so and
    are reloaded), and smirnov, his deputy here, covers him. smirnov heads sales and
    support, not finance: his board held none of ivanov's open requests, whose page and
    messages were "not found" for him, until the SLA reminder reached him at the due time.
    He sees them now, acts on them, and stops seeing them once ivanov is back."""
    from zoneinfo import ZoneInfo
    app, rules, smirnov = await _edited_company(make_app, tmp_path, "company.yaml", [
        ('deputy: petrova,\n            away: ["2026-12-28..2027-01-08"]}', 'deputy: smirnov}')],
        "smirnov")
    book = rules / "company.yaml"
    here = book.read_text(encoding="utf-8")
    now = datetime.now(timezone.utc)
    try:
        await _deliver(app, "invoices@example.com", "Счёт №45")
        number, owner = await app.registry.read("test", lambda c: c.execute(
            select(requests.c.id, requests.c.owner)).one())
        assert owner == "ivanov"
        assert (await smirnov.get(f"/request/{number}"))[0] == 404
        today = now.astimezone(ZoneInfo("Europe/Moscow")).date()
        book.write_text(here.replace("deputy: smirnov}", f'deputy: smirnov, away: ["{today}"]}}'),
                        encoding="utf-8")
        assert (await app.reload())[0]
        _, board, _ = await smirnov.get("/board")
        assert str(number) in _board_rows(board)
        assert "whom you cover as their deputy: Пётр Иванов</p>" in board
        status, page, _ = await smirnov.get(f"/request/{number}")
        assert status == 200, page
        key = re.search(r'href="/message/([0-9a-f]{64})"', page).group(1)
        assert (await smirnov.get(f"/message/{key}"))[0] == 200
        assert (await smirnov.post(f"/request/{number}/note", {"csrf": await smirnov.csrf(),
                                                               "text": "covering"}))[0] == 303
        book.write_text(here, encoding="utf-8")
        assert (await app.reload())[0]
        assert (await smirnov.get(f"/request/{number}"))[0] == 404
        assert (await smirnov.get(f"/message/{key}"))[0] == 404
    finally:
        await smirnov.http.close()


async def test_a_reassign_that_moves_the_request_to_another_team_says_so_in_its_story(
        make_app: Any, tmp_path: Any) -> None:
    """Reassigning the invoice (team finance-duty) to smirnov, the one member of
    sales-duty, moves it to that team (its head gets the escalations now): the event keeps
    both teams and `request show` prints them, but the web view's history said only
    "Пётр Иванов → Сергей Смирнов", and a head could not see why the escalations went
    elsewhere from then on."""
    app, _, petrova = await _edited_company(make_app, tmp_path, "company.yaml", [
        ("teams:\n", "teams:\n  sales-duty: {members: [smirnov]}\n")], "petrova")
    try:
        await _deliver(app, "invoices@example.com", "Счёт №46")
        number = await app.registry.read("test", lambda c: c.execute(select(requests.c.id)).scalar_one())
        assert (await petrova.post(f"/request/{number}/owner", {"csrf": await petrova.csrf(),
                                                               "owner": "smirnov"}))[0] == 303
        _, page, _ = await petrova.get(f"/request/{number}")
        row = re.findall(r'<tr class="ev-owner">(.*?)</tr>', page, re.S)[-1]
        assert "Сергей Смирнов" in row and "team finance-duty → sales-duty" in row, row
    finally:
        await petrova.http.close()


async def test_a_decisions_owner_is_called_the_rules_not_the_requests(site: Any, client: Any) -> None:
    """The invoice's rule names the team finance-duty, whose pick (or the deputy of an
    absent pick, or whom it was reassigned to) owns the request: the message page said
    "Owner finance-duty" and the board "Анна Петрова", and a head read two owners of one
    request. The decision's is "Owner by the rule" on the message and the request pages."""
    app, _, fin, _ = site
    petrova = await client("petrova")
    assert (await petrova.post(f"/request/{fin}/owner", {"csrf": await petrova.csrf(),
                                                         "owner": "petrova"}))[0] == 303
    _, page, _ = await petrova.get(f"/request/{fin}")
    assert "Owner by the rule finance-duty" in page
    key = re.search(r'href="/message/([0-9a-f]{64})"', page).group(1)
    _, page, _ = await petrova.get(f"/message/{key}")
    assert "<dt>Owner by the rule</dt><dd>finance-duty</dd>" in page and "<dt>Owner</dt>" not in page


async def test_a_request_without_an_owner_preselects_nobody_to_reassign_to(site: Any, client: Any) -> None:
    """The urgent support request has no owner (its rule names none): the reassign list
    marked no one, so the browser showed its first person (Пётр Иванов, by key) as the
    new owner, and one click on Reassign gave him the request. It offers "(choose)" now,
    which the form cannot send; a request with an owner still shows that owner."""
    _, _, fin, sup = site
    petrova = await client("petrova")
    _, page, _ = await petrova.get(f"/request/{sup}")
    select = re.search(r'<select name="owner" id="new-owner" required>(.*?)</select>', page, re.S)
    assert select is not None and re.match(r'<option value="" selected disabled>\(choose\)</option>', select[1])
    assert (await petrova.post(f"/request/{sup}/owner", {"csrf": await petrova.csrf(), "owner": ""}))[0] == 400
    _, page, _ = await petrova.get(f"/request/{fin}")
    assert '<option value="ivanov" selected>' in page and "(choose)" not in page


async def test_a_message_page_shows_the_decision_of_the_request_not_another_departments(
        site: Any, client: Any) -> None:
    """One message from the key customer to invoices@ and support@ gets two decisions with
    an owner (smirnov, the key customer's person): finance's and support's. It opens one
    request, finance's, which ivanov (head of finance) sees. Its message page showed him
    support's decision too (its rules, tags, priority and copy): every decision with an
    owner of a message in a request he may see. He sees finance's decision only; smirnov
    sees both, as their owner."""
    app, _, _, _ = site
    host, port = app.bound["smtp"]
    await aiosmtplib.send(
        b"From: cto@bigclient.example\r\nTo: invoices@example.com, support@example.com\r\n"
        b"Subject: Contract renewal\r\n\r\nhello\r\n", sender="cto@bigclient.example",
        recipients=["invoices@example.com", "support@example.com"], hostname=host, port=port)
    rows = await app.registry.read("test", lambda c: c.execute(
        select(decisions.c.mailbox, decisions.c.owner, decisions.c.message_key)
        .order_by(decisions.c.id)).all())
    key = rows[-1].message_key
    assert {(r.mailbox, r.owner) for r in rows if r.message_key == key} == {
        ("finance", "smirnov"), ("support", "smirnov")}
    opened = await app.registry.read("test", lambda c: c.execute(
        select(requests.c.mailbox).where(requests.c.message_key == key)).scalars().all())
    assert opened == ["finance"]
    ivanov, smirnov = await client("ivanov"), await client("smirnov")
    status, page, _ = await ivanov.get(f"/message/{key}")
    shown = re.findall(r"<h3>(\S+) →", page)
    assert status == 200 and shown == ["invoices@example.com"], shown
    targets = re.findall(r"<tr><td>([^<]*)</td>", page)
    assert targets and not any(t.startswith("support") for t in targets), targets
    _, page, _ = await ivanov.get("/report")      # its per-mailbox table, as volume counts
    boxes = re.findall(r"<tr><td>(\w+)</td><td>\d+</td></tr>", page)
    assert "finance" in boxes and "support" not in boxes, boxes
    status, page, _ = await smirnov.get(f"/message/{key}")
    assert status == 200 and sorted(re.findall(r"<h3>(\S+) →", page)) == [
        "invoices@example.com", "support@example.com"]

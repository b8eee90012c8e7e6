"""Report days are the company's, on SQLite and on a PostgreSQL whose own TimeZone is
elsewhere: messages per day (registry.queries.volume), requests per day and the period
of first-response and SLA figures (control.queries.report), the web report's since/until.
A Moscow (no DST) day boundary, and Prague across both DST changes (23- and 25-hour days).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert

from mailrouter.control.queries import report
from mailrouter.control.tables import requests
from mailrouter.registry import Registry
from mailrouter.registry.models import decisions, messages
from mailrouter.registry.queries import Scope, local_midnight, volume

pytestmark = pytest.mark.asyncio
UTC = timezone.utc
MSK, PRAGUE = ZoneInfo("Europe/Moscow"), ZoneInfo("Europe/Prague")
EVERYTHING = Scope(everything=True)


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


# (UTC time, the day it is in Moscow, the day it is in Prague)
TIMES = [
    (utc(2026, 12, 6, 20, 59, 59), "2026-12-06", "2026-12-06"),   # 23:59:59 MSK
    (utc(2026, 12, 6, 21, 0), "2026-12-07", "2026-12-06"),         # 00:00 MSK: a new day
    (utc(2026, 12, 6, 22, 0), "2026-12-07", "2026-12-06"),         # 01:00 MSK, 23:00 CET
    (utc(2026, 12, 6, 23, 0), "2026-12-07", "2026-12-07"),         # 00:00 CET
    # Prague, autumn: 2026-10-25 lasts 25 hours (02:00-03:00 twice)
    (utc(2026, 10, 24, 21, 59), "2026-10-25", "2026-10-24"),       # 23:59 CEST
    (utc(2026, 10, 24, 22, 0), "2026-10-25", "2026-10-25"),        # 00:00 CEST
    (utc(2026, 10, 25, 22, 30), "2026-10-26", "2026-10-25"),       # 23:30 CET, after the change
    (utc(2026, 10, 25, 23, 0), "2026-10-26", "2026-10-26"),        # 00:00 CET
    # Prague, spring: 2027-03-28 lasts 23 hours
    (utc(2027, 3, 27, 22, 59), "2027-03-28", "2027-03-27"),        # 23:59 CET
    (utc(2027, 3, 27, 23, 0), "2027-03-28", "2027-03-28"),         # 00:00 CET
    (utc(2027, 3, 28, 21, 59), "2027-03-29", "2027-03-28"),        # 23:59 CEST
    (utc(2027, 3, 28, 22, 30), "2027-03-29", "2027-03-29"),        # 00:30 CEST
]


def message(i: int, at: datetime) -> dict[str, Any]:
    return dict(key=f"{i:064x}", received_at=at, updated_at=at, protocol="smtp", peer="127.0.0.1",
                mail_from="c@client.example", rcpts=["s@example.com"], message_id=f"<{i}@c>",
                from_name="", from_addr="c@client.example", subject=f"m{i}", size=10,
                content_hash=f"{i:064x}", defects=[], ruleset_hash="x", status="delivered",
                attempts=1)


def decision(i: int) -> dict[str, Any]:
    return dict(message_key=f"{i:064x}", rcpt="s@example.com", action="deliver",
                reply="250 2.0.0", mailbox="support", owner=None, tags=[], path=[], reasons=[],
                rules=[])


def request(i: int, at: datetime) -> dict[str, Any]:
    """Answered an hour after opening, due in two: every request keeps its SLA."""
    return dict(opened_at=at, message_key=f"{i:064x}", counterparty="c@client.example",
                counterparty_domain="client.example", mailbox="support", status="answered",
                subject=f"m{i}", tags=[], first_response_due=at + timedelta(hours=2),
                first_response_at=at + timedelta(hours=1), last_in_at=at)


def expected(column: int, since: str, until: str) -> dict[str, int]:
    got: dict[str, int] = {}
    for t in TIMES:
        if since <= t[column] <= until:
            got[t[column]] = got.get(t[column], 0) + 1
    return got


async def check(url: str) -> None:
    reg = await Registry.open(url)
    try:
        rows = [message(i, t[0]) for i, t in enumerate(TIMES)]
        await reg.write("fill", lambda c: (
            c.execute(insert(messages), rows),
            c.execute(insert(decisions), [decision(i) for i in range(len(rows))]),
            c.execute(insert(requests), [request(i, t[0]) for i, t in enumerate(TIMES)])))
        now = utc(2027, 6, 1)
        for column, zone in ((1, MSK), (2, PRAGUE)):
            for since, until in (("2026-12-07", "2026-12-07"), ("2026-12-06", "2026-12-06"),
                                 ("2026-10-25", "2026-10-25"), ("2027-03-28", "2027-03-28"),
                                 ("2026-10-01", "2027-03-31"), ("2027-03-29", "2027-03-29")):
                a, b = date.fromisoformat(since), date.fromisoformat(until)
                want = expected(column, since, until)
                got = await reg.read("volume", lambda c, a=a, b=b, zone=zone: volume(
                    c, EVERYTHING, a, b, zone))
                assert {r["day"]: r["messages"] for r in got} == want, (zone, since, until)
                doc = await reg.read("report", lambda c, a=a, b=b, zone=zone: report(
                    c, local_midnight(a, zone), local_midnight(b, zone, 1), now, {}, None, zone))
                per_day = {r["day"]: r["requests"] for r in doc["volume_per_day"]}
                assert per_day == want, (zone, since)
                # the period of the response figures is the same local days
                assert doc["first_response_hours"]["answered"] == sum(want.values())
                assert doc["sla"]["kept"] == sum(want.values())
        assert await reg.read("empty", lambda c: volume(c, EVERYTHING, date(2025, 1, 1),
                                                        date(2025, 1, 31), MSK)) == []
        # a period from year 1 to the last day: the days holding mail, nothing overflows
        got = await reg.read("all", lambda c: volume(c, EVERYTHING, date(1, 1, 1),
                                                      date(9999, 12, 30), MSK))
        assert sum(r["messages"] for r in got) == len(TIMES)
    finally:
        await reg.close()


async def test_report_days_are_local_on_sqlite(tmp_path):
    """SQLite: each message and request counts on its Moscow or Prague date; a one-day
    period runs from local midnight to local midnight (23 and 25 hours across DST)."""
    await check(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")


async def test_report_days_are_local_on_postgresql_in_another_timezone(private_pg):
    """PostgreSQL whose TimeZone is America/Los_Angeles (what its date() or date_trunc would
    use): the same days as on SQLite."""
    from tests.support.pg import _admin
    await _admin(private_pg.url, "ALTER DATABASE postgres SET timezone TO 'America/Los_Angeles'")
    reg = await Registry.open(private_pg.url)
    try:
        shown = await reg.read("tz", lambda c: c.exec_driver_sql("SHOW timezone").scalar())
        assert shown == "America/Los_Angeles"
    finally:
        await reg.close()
    await check(private_pg.url)


async def test_web_report_and_cli_periods_are_moscow_days(make_app, tmp_path):
    """With only a Moscow calendar, a message received at 01:00 MSK on 2026-12-07 (22:00 UTC
    on the 6th) is in the web report and search of the 7th (CSV and request figures), not
    of the 6th;
    `mailrouter report --since 2026-12-07 --until 2026-12-08` counts it too."""
    import asyncio
    import io
    from contextlib import redirect_stdout

    import aiohttp

    from mailrouter.cli import main
    from mailrouter.config import ControlConfig, Listener, RegistryConfig, WebConfig
    from tests.control_support import mail, send, sign_in, write_routing
    db = tmp_path / "r.db"
    app = await make_app(routing=write_routing(tmp_path), web=Listener("127.0.0.1", 0),
                         webui=WebConfig(admins=("petrova",)),
                         control=ControlConfig(replies=("replies@example.com",)),
                         registry=RegistryConfig(f"sqlite+aiosqlite:///{db}"))
    app.sla_task.cancel()
    app.pipeline.clock = lambda: utc(2026, 12, 6, 22, 0)
    await send(app.bound["smtp"][1], mail("c@client.example", "printer", "p1@client"),
               "c@client.example")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        base = await sign_in(http, app, utc(2026, 12, 1))

        async def csv(day: str, part: str = "") -> list[str]:
            async with http.get(f"{base}/report?since={day}&until={day}&format=csv{part}") as r:
                assert r.status == 200
                return (await r.text()).strip().splitlines()[1:]
        assert [line.split(",")[:2] for line in await csv("2026-12-07")] == [
            ["2026-12-07", "support"]]
        assert await csv("2026-12-06") == []
        [box] = [r for r in await csv("2026-12-07", "&part=response") if r.startswith("mailbox")]
        assert box.split(",")[:3] == ["mailbox", "support", "1"]
        # the search page's days are the same Moscow days
        for day, hits in (("2026-12-07", 1), ("2026-12-06", 0)):
            async with http.get(f"{base}/search?since={day}&until={day}") as r:
                assert r.status == 200
                assert (await r.text()).count('href="/message/') == hits, day
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"registry: {{url: 'sqlite+aiosqlite:///{db}'}}\n"
                   f"routing: ['{tmp_path}/rules/*.yaml']\ncontrol: {{}}\n", encoding="utf-8")

    def cli(*argv: str) -> str:
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["report", *argv, "--json", "-c", str(cfg)]) == 0
        return out.getvalue()
    doc = __import__("json").loads(await asyncio.to_thread(cli, "--since", "2026-12-07",
                                                           "--until", "2026-12-08"))
    assert doc["since"] == "2026-12-07T00:00:00+03:00"
    assert doc["volume_per_day"] == [{"day": "2026-12-07", "requests": 1}]


async def test_the_cli_reports_period_is_printed_on_the_company_clock(tmp_path):
    """`mailrouter report --since D` (text) prints its period from the company's midnight to
    the end of today, both on the company's clock with the offset; the end (by default) was
    printed in UTC without its offset beside a start in Moscow time, three hours off."""
    import asyncio
    import io
    import re
    from contextlib import redirect_stdout

    from mailrouter.calendars import company_zone
    from mailrouter.cli import main
    from mailrouter.config import Limits
    from mailrouter.routing.snapshot import load_snapshot
    from tests.support.daemon import RULES
    db = tmp_path / "r.db"
    reg = await Registry.open(f"sqlite+aiosqlite:///{db}")
    await reg.close()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"registry: {{url: 'sqlite+aiosqlite:///{db}'}}\nrouting: ['{RULES}/*.yaml']\n",
                   encoding="utf-8")
    zone = company_zone(load_snapshot((f"{RULES}/*.yaml",), Limits(), "mx.test").rules.calendars)
    assert zone == MSK
    out = io.StringIO()

    def cli() -> None:
        with redirect_stdout(out):
            assert main(["report", "--since", "2026-12-01", "-c", str(cfg)]) == 0
    await asyncio.to_thread(cli)
    before = datetime.now(MSK)
    first = out.getvalue().splitlines()[0]
    found = re.fullmatch(r"requests opened 2026-12-01 00:00\+03:00 \.\. (\S+ \S+)", first)
    assert found, first
    end = datetime.fromisoformat(found[1])
    assert end.utcoffset() == timedelta(hours=3)
    # the end of today on the company's clock (control.queries.report_period, the web
    # view's period too), not a UTC time three hours off; the day before when the report
    # ran before a midnight that `before` is after
    tomorrow = datetime.combine(before.date() + timedelta(days=1), time(), tzinfo=MSK)
    assert end in (tomorrow, tomorrow - timedelta(days=1)), (end, before)

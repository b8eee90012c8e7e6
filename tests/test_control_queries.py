"""`registry search` pages through a registry larger than its page (2,000 rows) without
losing or repeating a message, ties in received_at included, and its cheap subject test
before the full normalising never hides a match (decomposed ё, full-width letters, case).
Real SQLite and PostgreSQL registries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert

from mailrouter.control.queries import search
from mailrouter.registry import Registry
from mailrouter.registry.models import messages
from mailrouter.registry.words import subject_words, word_rows

pytestmark = pytest.mark.asyncio
AT = datetime(2027, 1, 11, 9, 0, tzinfo=timezone.utc)
SPECIAL = {10: "Re: СЧЕ\u0308Т №5", 2500: "ＳＣＨＥＴ счёт за март", 4499: "Fwd: счет и акт"}


def row(i: int) -> dict:
    at = AT + timedelta(seconds=i // 3)          # three messages share each second
    return dict(key=f"{i:064x}", received_at=at, updated_at=at, protocol="smtp", peer="127.0.0.1",
                mail_from="a@x.example", rcpts=["s@example.com"], message_id=f"<{i}@x>",
                from_name="", from_addr="a@x.example", subject=SPECIAL.get(i, f"hello {i}"),
                size=10, content_hash=f"{i:064x}", defects=[], ruleset_hash="x",
                status="delivered", attempts=1)


async def test_search_pages_whole_registry_and_finds_every_spelling(registry_url):
    """4,500 messages: without words every one comes back once, newest first; the word
    `счет` finds exactly the three subjects that spell it (decomposed ё, after a reply
    prefix, beside a full-width word) wherever they sit in the pages."""
    reg = await Registry.open(registry_url)
    try:
        every_row = [row(i) for i in range(4500)]
        await reg.write("fill", lambda c: c.execute(insert(messages), every_row))
        await reg.write("words", lambda c: c.execute(insert(subject_words), [
            w for r in every_row for w in word_rows(r["key"], r["received_at"], r["subject"])]))
        every = await reg.read("all", lambda c: search(c, limit=None))
        assert len(every) == 4500 and len({m["key"] for m in every}) == 4500
        assert [m["key"] for m in every] == sorted((m["key"] for m in every), reverse=True)
        found = await reg.read("word", lambda c: search(c, words="Счет", limit=None))
        assert [m["message_id"] for m in found] == ["<4499@x>", "<2500@x>", "<10@x>"]
        assert await reg.read("none", lambda c: search(c, words="накладная", limit=None)) == []
    finally:
        await reg.close()


async def empty_registry_cli(tmp_path):
    """`cli(*argv)`: (exit code, stdout, stderr) of `mailrouter ARGV -c CONFIG` run in this
    process, on a new empty SQLite registry and the control routing files."""
    from tests.control_support import cli_on, write_routing
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    await (await Registry.open(url)).close()
    write_routing(tmp_path)
    return cli_on(tmp_path, url)


async def test_report_and_search_refuse_a_period_that_ends_before_it_starts(tmp_path):
    """`--since` after `--until` (or after now, without `--until`) is exit 2 with a message
    naming both dates; before, it printed an empty report, as for a quiet month. A period
    with nothing in it still prints '-' figures and exit 0."""
    import asyncio
    cli = await empty_registry_cli(tmp_path)
    code, out, err = await asyncio.to_thread(cli, "report", "--since", "2027-02-01",
                                             "--until", "2027-01-01")
    assert (code, out) == (2, "") and err == (
        "mailrouter report: --since 2027-02-01T00:00:00+03:00 is not before --until "
        "2027-01-01T00:00:00+03:00 (--until is the end of the period, not included)\n")
    assert (await asyncio.to_thread(cli, "report", "--since", "2999-01-01"))[0] == 2
    assert (await asyncio.to_thread(cli, "registry", "search", "--since", "2027-01-02",
                                    "--until", "2027-01-01"))[0] == 2
    code, out, _ = await asyncio.to_thread(cli, "report", "--since", "2027-01-01",
                                           "--until", "2027-01-02")
    assert code == 0 and "0 answered, median -, p90 -" in out
    # an empty period says "-", not a line ending in "per mailbox: " and a space
    assert "  per mailbox: -\n" in out and "  per owner: -\n" in out and ": \n" not in out


@pytest.mark.parametrize("argv", [
    ("report", "--since", "0001-01-01"),
    ("report", "--until", "0001-01-05"),
    ("report", "--since", "0001-01-01", "--until", "0001-01-02"),
    ("report", "--until", "9999-12-31T23:00-05:00"),
    ("registry", "search", "--since", "0001-01-01"),
    ("registry", "search", "--until", "9999-12-31T23:00-05:00"),
])
async def test_a_period_at_the_ends_of_the_calendar_is_answered_not_a_traceback(tmp_path, argv):
    """The company is in Moscow: `--since 0001-01-01` is 0000-12-31 21:00 UTC, before the
    first datetime. The registry's UTC conversion raised OverflowError: a traceback and
    "registry report failed on an internal error ... check registry.url", exit 2; 30 days
    before `--until 0001-01-05` (the default start) raised it in the command itself. The
    period is held within the instants a datetime holds: nothing is in it, exit 0."""
    import asyncio
    cli = await empty_registry_cli(tmp_path)
    code, out, err = await asyncio.to_thread(cli, *argv)
    assert "Traceback" not in err and "internal error" not in err, err
    if argv[0] == "report":
        assert code == 0 and "  per mailbox: -\n" in out, (code, out, err)
    else:
        assert code == 0 and "no message matches" in err, (code, out, err)


async def test_text_output_names_no_owner_and_no_sla_without_none(tmp_path):
    """A request with no owner, no team and no SLA (a rule with `sla:` on no calendar, or
    an owner since removed): report, history and request show print '(nobody)' and '-'
    where they printed 'None'."""
    import asyncio

    from mailrouter.control.store import Plan, apply_plan
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    reg = await Registry.open(url)
    await reg.write("t", lambda c: apply_plan(c, Plan("open", "c@x.example", "<1@x>",
                                                      mailbox="support", rule="support",
                                                      subject="Привет"), "k1", AT))
    await reg.close()
    cli = _cli_on(tmp_path, url)
    report = await asyncio.to_thread(cli, "report", "--since", "2027-01-11", "--until", "2027-01-12")
    assert "per owner: (nobody)=1" in report
    assert "(nobody): 1 not closed, 1 awaiting an answer, 0 overdue" in report
    history = await asyncio.to_thread(cli, "registry", "history", "c@x.example")
    # times in the company's zone (the routing's only calendar is Moscow's): 09:00 UTC
    assert history.startswith("#1 2027-01-11 12:00+03:00 open     owner=-  'Привет'")
    show = await asyncio.to_thread(cli, "request", "show", "1")
    assert show.startswith("#1 open owner=- team=- from c@x.example  'Привет'\n"
                           "  opened 2027-01-11 12:00:00+03:00, first response due - (no SLA), "
                           "answered -\n")
    assert "None" not in report + history


async def test_search_and_history_with_nothing_found_say_so_on_stderr(tmp_path):
    """`registry history X` and `registry search` that found nothing printed nothing at all,
    exit 0, as if the command had not run: the text output says so on stderr; stdout stays
    empty, and --json still prints the empty document."""
    import asyncio
    import json
    cli = await empty_registry_cli(tmp_path)
    assert await asyncio.to_thread(cli, "registry", "history", "nobody@x.example") == (
        0, "", "mailrouter registry history: no request or message from 'nobody@x.example'\n")
    assert await asyncio.to_thread(cli, "registry", "search", "--from", "nobody@x.example") == (
        0, "", "mailrouter registry search: no message matches\n")
    code, out, err = await asyncio.to_thread(cli, "registry", "history", "nobody@x.example",
                                             "--json")
    assert (code, err) == (0, "") and json.loads(out)["requests"] == []


async def test_the_report_counts_each_requests_business_hours_once(tmp_path):
    """Every request is in three groups of the report (all, its mailbox, its owner); its
    business hours to the first response are counted once, not once per group (a report
    over years of requests spent most of its time on the calendar three times over). The
    figures stay: three answered requests of 1, 2 and 4 working hours, one missed SLA."""
    from mailrouter.calendars import build_calendars
    from mailrouter.control.queries import report
    from mailrouter.control.tables import requests

    class Counted:
        def __init__(self, calendar):
            self.calendar, self.calls = calendar, 0

        def business_hours_between(self, start, end):
            self.calls += 1
            return self.calendar.business_hours_between(start, end)

    cal = Counted(build_calendars({"office": {"timezone": "UTC", "hours": "mon-fri 09:00-18:00"}})["office"])
    reg = await Registry.open(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}")
    try:
        opened = AT                                 # Monday 09:00 UTC
        await reg.write("fill", lambda c: c.execute(insert(requests), [dict(
            opened_at=opened, message_key=f"k{n}", counterparty="a@x.example",
            counterparty_domain="x.example", mailbox="finance", owner="ivanov", status="answered",
            subject="s", tags=[], sla_calendar="office", first_response_due=opened + timedelta(hours=3),
            first_response_at=opened + timedelta(hours=n), last_in_at=opened) for n in (1, 2, 4)]))
        doc = await reg.read("report", lambda c: report(
            c, AT - timedelta(days=1), AT + timedelta(days=1), AT + timedelta(days=1), {"office": cal}))
    finally:
        await reg.close()
    assert doc["first_response_hours"] == {"answered": 3, "median": 2.0, "p90": 3.6}
    assert doc["sla"] == {"kept": 2, "missed": 1, "share_kept": 0.6667}
    assert doc["response_per_mailbox"][0]["median"] == doc["response_per_owner"][0]["median"] == 2.0
    assert cal.calls == 3


async def test_the_reports_open_count_per_owner_tells_answered_from_awaiting(tmp_path):
    """ivanov has two requests not closed, one of them answered: the report says "2 not
    closed, 1 awaiting an answer" (and "awaiting": 1 in --json), as the board's columns
    do. Before, it printed "2 open", while a request's status `open` means an answer is
    owed: a head read two customers waiting where one was."""
    import asyncio
    import json

    from mailrouter.control.store import Plan, apply_plan
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    reg = await Registry.open(url)
    for n in (1, 2):
        await reg.write("t", lambda c, n=n: apply_plan(c, Plan(
            "open", f"c{n}@x.example", f"<{n}@x>", owner="ivanov", mailbox="support",
            rule="support", subject=f"q{n}"), f"k{n}", AT))
    await reg.write("t", lambda c: apply_plan(c, Plan("reply", "ivanov@example.com", "<r1@e>",
                                                      request_id=1), "r1", AT + timedelta(hours=1)))
    await reg.close()
    cli = _cli_on(tmp_path, url)
    period = ("--since", "2027-01-11", "--until", "2027-01-12")
    text = await asyncio.to_thread(cli, "report", *period)
    assert "  ivanov: 2 not closed, 1 awaiting an answer, 0 overdue\n" in text
    doc = json.loads(await asyncio.to_thread(cli, "report", *period, "--json"))
    assert doc["open_per_owner"] == [{"owner": "ivanov", "open": 2, "awaiting": 1, "overdue": 0}]


async def test_a_request_closed_unanswered_before_it_fell_due_is_neither_kept_nor_missed(
        registry_url):
    """Three requests due 4 hours after opening: one answered in an hour (kept), one
    closed unanswered after five minutes (spam: no answer was owed), one closed unanswered
    after five hours (it was overdue: missed). The report, read once the due times have
    passed, says kept 1, missed 1. Before, the spam closed by hand counted as missed from
    its due time on: a head's share fell hours after the close."""
    from mailrouter.control.actions import close
    from mailrouter.control.queries import report
    from mailrouter.control.store import Plan, apply_plan
    reg = await Registry.open(registry_url)
    try:
        for n in (1, 2, 3):
            await reg.write("t", lambda c, n=n: apply_plan(c, Plan(
                "open", f"c{n}@x.example", f"<{n}@x>", owner="ivanov", mailbox="support",
                rule="support", subject=f"q{n}", due=AT + timedelta(hours=4)), f"k{n}", AT))
        await reg.write("t", lambda c: apply_plan(c, Plan("reply", "ivanov@example.com", "<r1@e>",
                                                          request_id=1), "r1", AT + timedelta(hours=1)))
        await reg.write("t", lambda c: close(c, 2, "smirnov", AT + timedelta(minutes=5), "web view"))
        await reg.write("t", lambda c: close(c, 3, "smirnov", AT + timedelta(hours=5), "web view"))
        doc = await reg.read("t", lambda c: report(c, AT - timedelta(days=1), AT + timedelta(days=1),
                                                   AT + timedelta(hours=6), {}))
        assert doc["sla"] == {"kept": 1, "missed": 1, "share_kept": 0.5}
        assert [(r["owner"], r["requests"], r["kept"], r["missed"])
                for r in doc["response_per_owner"]] == [("ivanov", 3, 1, 1)]
    finally:
        await reg.close()


def _cli_on(tmp_path, url):
    """`mailrouter ARGV -c CONFIG` on the registry at `url` with the control example's
    routing files, as a function returning what it printed (and asserting exit 0)."""
    from tests.control_support import cli_on, write_routing
    write_routing(tmp_path)
    run = cli_on(tmp_path, url)

    def cli(*argv):
        code, out, _ = run(*argv)
        assert code == 0
        return out
    return cli


async def test_search_and_history_find_a_sender_in_any_case_of_any_letters(registry_url, tmp_path):
    """Mail from Иван@Пример.рф and Žofie@Příklad.cz is found by the address or the domain
    in any case, in either IDNA form, by `registry search --from`, `registry history` and
    the web view's search and counterparty pages, the same on SQLite and PostgreSQL.
    Before, SQLite's lower() folded A-Z only (the web view found them on PostgreSQL only)
    and the CLI matched the address as typed or in lower case (neither was as it came).
    A From line pasted whole into the web view's boxes is read as its address (it found
    nothing)."""
    import asyncio
    import json

    from mailrouter.registry.queries import Scope, counterparty
    from mailrouter.registry.queries import search as web_search
    reg = await Registry.open(registry_url)
    try:
        senders = {1: "Иван@Пример.рф", 2: "Žofie@Příklad.cz", 3: "ivan@example.com",
                   4: "Straße@Beispiel.de", 5: "Z\u030cofie@P\u0159i\u0301klad.sk"}
        await reg.write("fill", lambda c: c.execute(insert(messages), [
            row(i) | {"from_addr": a, "mail_from": a} for i, a in senders.items()]))
    finally:
        await reg.close()
    cli = _cli_on(tmp_path, registry_url)
    for who, want in (("иван@пример.рф", 1), ("ИВАН@ПРИМЕР.РФ", 1), ("иван@xn--e1afmkfd.xn--p1ai", 1),
                      ("ŽOFIE@PŘÍKLAD.CZ", 2), ("žofie@příklad.cz", 2), ("STRASSE@beispiel.DE", 4),
                      ("žofie@příklad.sk", 5)):
        for argv in (("registry", "search", "--from", who), ("registry", "history", who)):
            found = json.loads(await asyncio.to_thread(cli, *argv, "--json"))
            found = found["messages"] if argv[1] == "history" else found
            assert [m["message_id"] for m in found] == [f"<{want}@x>"], (argv, found)
    for domain, want in (("ПРИМЕР.РФ", 1), ("příklad.cz", 2), ("PŘÍKLAD.CZ", 2)):
        found = json.loads(await asyncio.to_thread(cli, "registry", "history", domain, "--json"))
        assert [m["message_id"] for m in found["messages"]] == [f"<{want}@x>"], domain
    reg = await Registry.open(registry_url)
    try:
        every = Scope(everything=True)
        for who, want in (("ИВАН@пример.рф", 1), ("пример.рф", 1), ("ŽOFIE@příklad.cz", 2),
                          ("PŘÍKLAD.CZ", 2), ("straße@beispiel.de", 4), ("ŽOFIE@Příklad.SK", 5),
                          ("Иван Петров <ИВАН@Пример.рф>", 1), ('"Nováková, Ž." <žofie@příklad.cz>', 2)):
            hits = await reg.read("web", lambda c, who=who: web_search(c, every, sender=who))
            assert [m["message_id"] for m in hits.rows] == [f"<{want}@x>"], who
            seen = await reg.read("web", lambda c, who=who: counterparty(c, every, who))
            assert [m["message_id"] for m in seen] == [f"<{want}@x>"], who
    finally:
        await reg.close()


async def test_searches_by_sender_read_the_folded_senders_index(tmp_path):
    """`registry search --from`, `registry history ADDRESS` and the web view's search and
    counterparty page find a sender through the (from_fold, received_at) and
    (mail_from_fold, received_at) indexes (SQLite's plan of every statement that names a
    sender), not by walking every message newest first: lower(from_addr) no index served
    (0.10 s against 1 ms at 200,000 messages, bench/bench_registry.py)."""
    from sqlalchemy import event

    from mailrouter.control.queries import counterparty_threads, history
    from mailrouter.registry.queries import Scope, counterparty
    from mailrouter.registry.queries import search as web_search
    reg = await Registry.open(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    try:
        await reg.write("fill", lambda c: c.execute(insert(messages), [
            row(i) | {"from_addr": f"u{i % 5}@x.example", "mail_from": f"b{i}@x.example"}
            for i in range(50)]))
        said: list[tuple[str, object]] = []

        def seen(conn, cursor, statement, parameters, context, many):
            if "_fold IN (" in statement and not many:
                said.append((statement, parameters))
        event.listen(reg.commit_engine, "before_cursor_execute", seen)
        who, every = "U3@X.EXAMPLE", Scope(everything=True)
        found = {
            "search": await reg.read("s", lambda c: search(c, sender=who)),
            "history": (await reg.read("h", lambda c: history(c, who)))["messages"],
            "web search": (await reg.read("w", lambda c: web_search(c, every, sender=who))).rows,
            "counterparty": await reg.read("c", lambda c: counterparty(
                c, every, who, threads=counterparty_threads(who))),
        }
        event.remove(reg.commit_engine, "before_cursor_execute", seen)
        for name, rows in found.items():
            assert len(rows) == 10, name
        assert len(said) >= 4

        def plans(conn):
            return [" / ".join(r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql,
                                                                  params)) for sql, params in said]
        for plan in await reg.read("plans", plans):
            assert "INDEX ix_messages_from_fold_received_at" in plan, plan
            assert "SCAN messages" not in plan, plan
    finally:
        await reg.close()


async def test_the_commands_open_the_registry_with_the_configs_timeout(registry_url, tmp_path):
    """`mailrouter registry|report|request ...` open the registry with config.yaml's
    `registry.timeout`, as the daemon does: its sessions carry it (PostgreSQL's
    idle_in_transaction_session_timeout, SQLite's busy timeout: half of it). Before, the
    commands opened it with the default 10 s: against a paused PostgreSQL with
    `timeout: 1` they waited 10 s whatever config.yaml said."""
    import asyncio

    from sqlalchemy import text

    from mailrouter.config import load_config
    from mailrouter.control.cli import ask_registry
    await (await Registry.open(registry_url)).close()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"registry: {{url: '{registry_url}', timeout: 2.5}}\n", encoding="utf-8")
    pg = registry_url.startswith("postgresql")
    ask = text("SHOW idle_in_transaction_session_timeout" if pg else "PRAGMA busy_timeout")
    got = await asyncio.to_thread(ask_registry, load_config(cfg), "t",
                                  lambda reg: reg.read("t", lambda c: c.execute(ask).scalar()))
    assert str(got) == ("2500ms" if pg else "1250")


async def test_the_reports_default_period_is_the_web_views_30_days_of_the_company(tmp_path):
    """`mailrouter report` without --since covers the 30 days of the company's zone that
    end with the period's last day, from local midnight, as the web view's report does
    (its days today - 29 .. today; control.queries.report_period for both). Before, the
    CLI took now (or --until) minus 30 days in UTC: `requests opened 2026-11-08 00:49+03:00
    .. 2026-12-08 00:49+03:00` beside the web's 2026-11-09 .. 2026-12-08."""
    import asyncio
    import json
    from zoneinfo import ZoneInfo

    from mailrouter.registry.queries import local_midnight
    msk = ZoneInfo("Europe/Moscow")        # the control routing's calendar: the company's
    cli = await empty_registry_cli(tmp_path)
    code, out, err = await asyncio.to_thread(cli, "report", "--until", "2027-01-11", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert datetime.fromisoformat(doc["since"]) == datetime(2026, 12, 12, tzinfo=msk)
    assert datetime.fromisoformat(doc["until"]) == datetime(2027, 1, 11, tzinfo=msk)
    days = []
    for _ in range(3):          # the same day before and after (not across a midnight)
        before = datetime.now(msk).date()
        code, out, err = await asyncio.to_thread(cli, "report", "--json")
        if datetime.now(msk).date() == before:
            break
    doc = json.loads(out)
    days = [before - timedelta(days=29), before]
    assert (datetime.fromisoformat(doc["since"]), datetime.fromisoformat(doc["until"])) == (
        local_midnight(days[0], msk), local_midnight(days[1], msk, 1))
    code, out, _ = await asyncio.to_thread(cli, "report")
    assert out.splitlines()[0] == (f"requests opened {days[0]} 00:00+03:00 .. "
                                   f"{days[1] + timedelta(days=1)} 00:00+03:00")


async def test_a_request_set_waiting_before_its_first_response_fell_due_is_not_missed(
        registry_url, tmp_path):
    """Three requests, first response due in an hour: one set waiting for the customer
    (`mailrouter request wait`) before it, one left unanswered, one answered in time. The
    report read after the due times says kept 1, missed 1, as the SLA timers have it: a
    waiting request owes no answer (no reminder, no escalation, README "The answer owed").
    Before, the waiting one counted as missed too (kept 1, missed 2), though the board and
    the report's own per-owner line showed it awaiting nothing and overdue nothing."""
    import asyncio

    from mailrouter.control.queries import report
    from mailrouter.control.store import Plan, apply_plan
    now = datetime.now(timezone.utc)
    opened, due = now - timedelta(minutes=10), now + timedelta(hours=1)
    reg = await Registry.open(registry_url)
    try:
        for n in (1, 2, 3):
            await reg.write("t", lambda c, n=n: apply_plan(c, Plan(
                "open", f"c{n}@x.example", f"<{n}@x>", owner="ivanov", mailbox="support",
                rule="support", subject=f"q{n}", due=due), f"k{n}", opened))
        await reg.write("t", lambda c: apply_plan(c, Plan("reply", "ivanov@example.com", "<r3@e>",
                                                          request_id=3), "r3", now))
    finally:
        await reg.close()
    cli = _cli_on(tmp_path, registry_url)
    assert await asyncio.to_thread(cli, "request", "wait", "1") == "request #1 waiting\n"
    reg = await Registry.open(registry_url)
    try:
        doc = await reg.read("t", lambda c: report(c, now - timedelta(days=1), now + timedelta(days=1),
                                                   now + timedelta(hours=2), {}))
        assert doc["sla"] == {"kept": 1, "missed": 1, "share_kept": 0.5}
        assert doc["open_per_owner"] == [{"owner": "ivanov", "open": 3, "awaiting": 1,
                                          "overdue": 1}]
    finally:
        await reg.close()

"""The SLA scheduler over a simulated week, and two instances on one PostgreSQL.

The week (Moscow calendar Mon-Fri 09:00-18:00, Friday 2027-01-15 a holiday; team `duty`
= ivanov, petrova round-robin, head smirnov; ivanov away on Wednesday with deputy
petrova; first response 4 business hours; reminder at the due time, escalation two
business hours later; quiet close after 3 days). Messages arrive through the real
daemon with a controlled clock; the scheduler ticks every 15 simulated minutes.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from mailrouter.config import ControlConfig, RegistryConfig
from mailrouter.control.queries import report
from mailrouter.control.sla import Alert, Scheduler
from mailrouter.control.store import Plan, apply_plan
from mailrouter.control.tables import request_alerts, requests
from mailrouter.registry import Registry
from mailrouter.routing.snapshot import load_snapshot
from mailrouter.config import Limits
from tests.control_support import mail, send, until_pg_waiting, write_routing

pytestmark = pytest.mark.asyncio
MSK = timezone(timedelta(hours=3))
CONTROL = ControlConfig(replies=("replies@example.com",), remind_after=0, escalate_after=7200,
                        close_after=3 * 86400)


def msk(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2027, 1, day, hour, minute, tzinfo=MSK).astimezone(timezone.utc)


# (time, customer message or our reply); the letters name the requests in order of arrival
WEEK = [
    (msk(11, 10), "in", "A"), (msk(11, 12), "reply", "A"),     # answered before the deadline
    (msk(11, 17), "in", "B"),                                   # never answered
    (msk(11, 20), "in", "C"), (msk(12, 13, 30), "reply", "C"),  # answered after the reminder
    (msk(12, 17), "in", "D"),                                   # never answered
    (msk(12, 17, 30), "in", "E"),                               # ivanov's, who is away Wednesday
    (msk(13, 10), "in", "F"), (msk(13, 10, 30), "reply", "F"),
    (msk(13, 11), "in", "G"), (msk(13, 16), "reply", "G"),      # after the reminder
    (msk(14, 17), "in", "H"),                                   # due only Monday: Friday is a holiday
]


async def _alerts_of(make_app, tmp_path, routing, written, start, stop, step):  # type: ignore[no-untyped-def]
    """The daemon on `routing` with its scheduler driven here: a request written by each
    of `written` (at, who) at its time, then a tick every `step` from `start` to `stop`
    (inclusive); each alert as (request, stage, at)."""
    app = await make_app(routing=routing, control=CONTROL,
                         registry=RegistryConfig(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"))
    app.sla_task.cancel()
    sched = Scheduler(app.registry, CONTROL, app.snapshot)
    for at, who in written:
        app.pipeline.clock = lambda at=at: at
        await send(app.bound["smtp"][1], mail(f"{who}@client.example", f"printer {who}",
                                              f"{who}@client"), f"{who}@client.example")
    got = []
    at = start
    while at <= stop:
        got += [(a.request, a.stage, a.at) for a in await sched.tick(at)]
        at += step
    return got


async def run_week(make_app, tmp_path):
    """The daemon through the simulated week; the app and every alert the scheduler made."""
    app = await make_app(routing=write_routing(tmp_path), control=CONTROL,
                         registry=RegistryConfig(f"sqlite+aiosqlite:///{tmp_path / 'week.db'}"))
    app.sla_task.cancel()       # the test drives its own scheduler with the simulated clock
    port = app.bound["smtp"][1]
    sched = Scheduler(app.registry, CONTROL, app.snapshot)
    events = sorted(WEEK)
    alerts: list[Alert] = []
    now = msk(11, 0)
    while now < msk(18, 0):
        while events and events[0][0] <= now:
            at, kind, name = events.pop(0)
            app.pipeline.clock = lambda at=at: at
            if kind == "in":
                await send(port, mail(f"{name.lower()}@client.example", f"question {name}",
                                      f"{name}@client"), f"{name.lower()}@client.example")
            else:
                await send(port, mail("ivanov@example.com", f"Re: question {name}",
                                      f"re-{name}@example.com", f"<{name}@client>"),
                           "ivanov@example.com", "replies@example.com")
        alerts += await sched.tick(now)
        now += timedelta(minutes=15)
    assert not events
    return app, alerts


async def test_simulated_week(make_app, tmp_path):
    """Exactly the expected reminders and escalations, at the expected moments, to the
    expected people; owners, final statuses and the report's figures as planned."""
    app, alerts = await run_week(make_app, tmp_path)
    ids = {chr(ord("A") + i): i + 1 for i in range(8)}
    got = [(a.stage, a.request, a.at, a.recipient) for a in alerts]
    assert got == [
        ("remind", ids["B"], msk(12, 12), "petrova"),
        ("remind", ids["C"], msk(12, 13), "ivanov"),
        ("escalate", ids["B"], msk(12, 14), "smirnov"),       # petrova has no deputy: the head
        ("remind", ids["D"], msk(13, 12), "petrova"),
        ("remind", ids["E"], msk(13, 12, 30), "petrova"),     # ivanov away: his deputy
        ("escalate", ids["D"], msk(13, 14), "smirnov"),
        ("escalate", ids["E"], msk(13, 14, 30), "smirnov"),   # the deputy had it: the head
        ("remind", ids["G"], msk(13, 15), "petrova"),
    ]

    def table(conn):
        return ([tuple(r) for r in conn.execute(select(requests.c.owner, requests.c.status)
                                                 .order_by(requests.c.id))],
                conn.execute(select(request_alerts.c.address, request_alerts.c.subject)
                             .order_by(request_alerts.c.id)).first())
    reqs, first_alert = await app.registry.read("t", table)
    assert reqs == [("ivanov", "closed"), ("petrova", "open"), ("ivanov", "closed"),
                    ("petrova", "open"), ("ivanov", "open"), ("petrova", "closed"),
                    ("petrova", "closed"), ("ivanov", "open")]
    assert first_alert == ("petrova@example.com",
                           "[#2] Reminder: no first response yet: question B")
    # E's reminder reached petrova for ivanov, who is away: it says so; B's is her own
    bodies = await app.registry.read("t", lambda conn: {r.request_id: r.body for r in conn.execute(
        select(request_alerts.c.request_id, request_alerts.c.body)
        .where(request_alerts.c.stage == "remind"))})
    assert "Owner: ivanov\nYou get this for ivanov, who is away.\n" in bodies[ids["E"]]
    assert "You get this" not in bodies[ids["B"]]
    # a restart (a new scheduler) scanning again creates nothing more
    assert await Scheduler(app.registry, CONTROL, app.snapshot).tick(msk(18, 0)) == []
    doc = await app.registry.read("t", lambda conn: report(
        conn, msk(11, 0), msk(18, 0), msk(18, 0), app.snapshot().rules.calendars))
    assert doc["volume_per_owner"] == [{"owner": "ivanov", "requests": 4},
                                       {"owner": "petrova", "requests": 4}]
    assert doc["volume_per_day"] == [{"day": "2027-01-11", "requests": 3},
                                     {"day": "2027-01-12", "requests": 2},
                                     {"day": "2027-01-13", "requests": 2},
                                     {"day": "2027-01-14", "requests": 1}]
    assert doc["volume_per_rule"] == [{"rule": "support", "requests": 8}]
    # A 2h, C 4.5h (Monday 20:00 counts from Tuesday 09:00), F 0.5h, G 5h of business time
    assert doc["first_response_hours"] == {"answered": 4, "median": 3.25, "p90": 4.85}
    # kept: A, F; missed: C, G (late), B, D, E (overdue); H is not due yet
    assert doc["sla"] == {"kept": 2, "missed": 5, "share_kept": 0.2857}
    assert doc["open_per_owner"] == [{"owner": "ivanov", "open": 2, "awaiting": 2, "overdue": 1},
                                     {"owner": "petrova", "open": 2, "awaiting": 2, "overdue": 2}]


async def test_two_instances_create_each_alert_once(pg_url, tmp_path):
    """Two schedulers, each with its own connections to one PostgreSQL, scan 200 overdue
    requests at the same moments: every request gets exactly one reminder and one
    escalation, and no alert is reported by both instances."""
    from tests.support.pg import _admin
    import secrets
    from sqlalchemy.engine import make_url
    name = f"t_{secrets.token_hex(6)}"
    await _admin(pg_url, f'CREATE DATABASE "{name}"')
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    snap = load_snapshot(write_routing(tmp_path), Limits(), "mx.test")
    a = await Registry.open(url, timeout=60)     # the fill's 200 requests in one transaction
    b = await Registry.open(url, create=False, timeout=60)   # outlast a loaded machine's 10 s
    try:
        opened = msk(11, 10)

        def fill(conn):
            for n in range(200):
                apply_plan(conn, Plan("open", f"c{n}@x.example", f"<{n}@x>", owner="ivanov",
                                      team="duty", subject=f"q{n}", calendar="msk",
                                      due=msk(11, 14)), f"{n:064d}", opened)
        await a.write("fill", fill)
        sa, sb = Scheduler(a, CONTROL, lambda: snap), Scheduler(b, CONTROL, lambda: snap)
        made: list[Alert] = []
        for at in (msk(11, 14), msk(11, 15), msk(11, 16), msk(11, 17)):
            for _ in range(3):
                got = await asyncio.gather(sa.tick(at), sb.tick(at))
                made += got[0] + got[1]
        keys = [(x.request, x.stage) for x in made]
        assert len(keys) == len(set(keys)) == 400
        assert {x.stage for x in made} == {"remind", "escalate"}
    finally:
        await a.close()
        await b.close()
        await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')



async def test_a_scan_and_a_record_touching_the_same_requests_do_not_deadlock(pg_url, tmp_path):
    """The SLA scan of one instance and a group commit of another at one moment: the batch
    holds a follow-up to Q (answered, quiet for close_after: the scan closes it) and then
    one to R (open and overdue: the scan locks it to remind). The record has Q locked and
    waits for R; the scan, holding R, closed quiet requests and waited for Q: PostgreSQL
    found a deadlock and aborted one (the record's: 451 for every message of its batch, or
    the scan). The scan now leaves a quiet request another transaction holds to its next
    pass, and both commit."""
    import secrets

    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy import func
    from sqlalchemy.engine import make_url

    from tests.support.pg import _admin
    from tests.test_registry_pg_daemon import _dsn
    name = f"t_{secrets.token_hex(6)}"
    await _admin(pg_url, f'CREATE DATABASE "{name}"')
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    snap = load_snapshot(write_routing(tmp_path), Limits(), "mx.test")
    a = await Registry.open(url, timeout=60)
    b = await Registry.open(url, create=False, timeout=60)
    gate = await asyncpg.connect(_dsn(url), timeout=30)
    try:
        def fill(conn):
            for n, who in enumerate(("q@x.example", "r@x.example")):
                apply_plan(conn, Plan("open", who, f"<{n}@x>", owner="ivanov", team="duty",
                                      subject=who, calendar="msk", due=msk(4, 14)),
                           f"{n:064d}", msk(4, 10))
            conn.execute(requests.update().where(requests.c.counterparty == "q@x.example")
                         .values(status="answered", response_due=None))
            return {r.counterparty: r.id for r in conn.execute(select(requests))}
        ids = await a.write("fill", fill)
        await gate.execute("SELECT pg_advisory_lock(4243)")

        def record(conn):           # one batch: Q's follow-up, then (held) R's
            for n, who in ((2, "q@x.example"), (3, "r@x.example")):
                apply_plan(conn, Plan("join", who, f"<{n}@x>", ids[who], "ivanov", "duty"),
                           f"{n:064d}", msk(18, 12))
                if n == 2:
                    conn.execute(select(func.pg_advisory_xact_lock(4243)))
        recorded = asyncio.ensure_future(a.write("record", record))

        await until_pg_waiting(gate, "advisory")
        scanned = asyncio.ensure_future(Scheduler(b, CONTROL, lambda: snap).tick(msk(18, 12)))
        await until_pg_waiting(gate, "transactionid", scanned)  # the scan waits for Q, or is done
        await gate.execute("SELECT pg_advisory_unlock(4243)")
        made = await scanned
        await recorded
        assert [(x.request, x.stage) for x in made] == [(ids["r@x.example"], "remind")]
    finally:
        await gate.close()
        await a.close()
        await b.close()
        await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_cli_on_the_week(make_app, tmp_path):
    """request show/close, registry search/history and report on the week's registry, as
    text, JSON and CSV; -n 0 lists everything; a missing request is exit 1."""
    import csv
    import io
    import json
    from contextlib import redirect_stderr, redirect_stdout

    from mailrouter.cli import main
    app, _ = await run_week(make_app, tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"registry: {{url: 'sqlite+aiosqlite:///{tmp_path / 'week.db'}'}}\n"
                   f"routing: ['{tmp_path / 'rules' / '*.yaml'}']\n", encoding="utf-8")

    async def cli(*argv):
        out = io.StringIO()

        def go():
            with redirect_stdout(out), redirect_stderr(io.StringIO()):
                try:
                    return main(list(argv))
                except SystemExit as exc:      # argparse refusing an argument
                    return exc.code
        code = await asyncio.to_thread(go)
        return code, out.getvalue()
    code, out = await cli("request", "show", "5", "--json", "-c", str(cfg))
    doc = json.loads(out)
    assert code == 0 and doc["owner"] == "ivanov" and doc["status"] == "open"
    assert [e["kind"] for e in doc["events"]] == ["opened", "owner", "reminder", "escalation"]
    assert [(a["stage"], a["recipient"]) for a in doc["alerts"]] == [("remind", "petrova"),
                                                                     ("escalate", "smirnov")]
    assert doc["messages"][0]["recipients"][0]["reasons"][-1].startswith("rule 'support'")
    code, out = await cli("request", "show", "5", "-c", str(cfg))
    assert "escalate" in out and "why <E@client> support@example.com: rule 'support'" in out
    code, out = await cli("request", "show", "5", "--csv", "-c", str(cfg))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["what"] for r in rows] == ["message in", "opened", "owner", "reminder", "remind",
                                         "escalation", "escalate"]
    assert await cli("request", "close", "5", "-c", str(cfg)) == (0, "request #5 closed\n")
    assert (await cli("request", "close", "5", "-c", str(cfg)))[0] == 1
    assert (await cli("request", "show", "99", "-c", str(cfg)))[0] == 1
    code, out = await cli("registry", "search", "--subject", "QUESTION b", "--json", "-c", str(cfg))
    assert [m["subject"] for m in json.loads(out)] == ["question B"]
    code, out = await cli("registry", "search", "--owner", "ivanov", "--csv", "-n", "0",
                          "-c", str(cfg))
    assert sorted(r["subject"] for r in csv.DictReader(io.StringIO(out))) == [
        "Re: question A", "Re: question C", "question A", "question C", "question E", "question H"]
    code, out = await cli("registry", "search", "--status", "closed", "-n", "0", "-c", str(cfg))
    assert out.count("question ") == 5 + out.count("Re: question ")
    code, out = await cli("registry", "history", "client.example", "--json", "-c", str(cfg))
    doc = json.loads(out)
    # the customers' 8 and our 4 replies in their requests (only theirs were listed before)
    assert len(doc["requests"]) == 8 and len(doc["messages"]) == 12
    code, out = await cli("registry", "history", "a@client.example", "--json", "-c", str(cfg))
    assert [(m["from"], m["subject"], m["request"]) for m in json.loads(out)["messages"]] == [
        ("ivanov@example.com", "Re: question A", 1), ("a@client.example", "question A", 1)]
    code, out = await cli("registry", "history", "b@client.example", "-c", str(cfg))
    assert out.startswith("#2 ") and "question B" in out
    code, out = await cli("registry", "-n", "0", "-c", str(cfg))
    assert out.count("support@example.com ->") == 8 and out.count("replies@example.com ->") == 4
    code, out = await cli("report", "--since", "2027-01-11", "--until", "2027-01-18", "--csv",
                          "-c", str(cfg))
    assert "first_response_hours" in out and code == 0
    code, out = await cli("report", "--since", "yesterday", "-c", str(cfg))
    assert code == 2
    code, out = await cli("report", "--since", "2030-01-01", "--until", "2030-01-02", "-c", str(cfg))
    assert code == 0 and "None" not in out, out         # nothing in the period: '-', not None
    assert "0 answered, median -, p90 -" in out and "share kept -" in out


async def test_reminder_mail_reaches_the_relay_once_across_a_restart(make_app, tmp_path,
                                                                       registry_url):
    """The reminder goes through the outbox to a real aiosmtpd relay sink: to the owner's
    address from mailrouter@HOST, `[#1]` in the subject, a UTF-8 body naming the request,
    the customer, the subject and the due time. Ticks again at the same time and after a
    restart (same registry) send nothing more; the escalation two business hours later is
    the second and last mail, to the deputy."""
    from email import message_from_bytes, policy

    from mailrouter.config import Listener, OutboxConfig
    from tests.test_delivery_smtp import Sink

    sink = Sink()
    await sink.start()
    relay = OutboxConfig(Listener("127.0.0.1", sink.port), timeout=5.0, retry_min=0.05,
                         retry_max=0.2)

    async def daemon():
        app = await make_app(routing=write_routing(tmp_path), control=CONTROL, outbox=relay,
                             registry=RegistryConfig(registry_url))
        app.sla_task.cancel()   # the test ticks its own scheduler on the simulated clock
        return app, Scheduler(app.registry, CONTROL, app.snapshot, hostname="mx.test",
                              wake=app.outbox.wake, web_url="https://mc.example.com")

    async def sent(n):
        loop = asyncio.get_running_loop()
        end = loop.time() + 30      # only to fail a hung test, not a speed check
        while len(sink.envelopes) < n or any(
                r["state"] == "queued" for r in await app.registry.outbox_list()):
            assert loop.time() < end, f"waited for {n} mail(s) at the relay"
            await asyncio.sleep(0.02)
    try:
        app, sched = await daemon()
        app.pipeline.clock = lambda: msk(11, 10)
        await send(app.bound["smtp"][1], mail("client@bigco.example", "принтер сломался", "p1@bigco"),
                   "client@bigco.example")
        assert await sched.tick(msk(11, 13, 59)) == []
        [alert] = await sched.tick(msk(11, 14))
        assert (alert.stage, alert.address) == ("remind", "ivanov@example.com")
        assert await sched.tick(msk(11, 14)) == []
        await sent(1)
        app.request_stop()
        await app.wait_stopped()

        app, sched = await daemon()
        for at in (msk(11, 14), msk(11, 15), msk(11, 15, 59)):
            assert await sched.tick(at) == []
        [alert] = await sched.tick(msk(11, 16))
        assert (alert.stage, alert.address) == ("escalate", "petrova@example.com")
        await sent(2)
        assert [(e.mail_from, e.rcpt_tos) for e in sink.envelopes] == [
            ("mailrouter@mx.test", ["ivanov@example.com"]),
            ("mailrouter@mx.test", ["petrova@example.com"])]
        remind = message_from_bytes(sink.envelopes[0].content, policy=policy.default)
        assert remind["Subject"] == "[#1] Reminder: no first response yet: принтер сломался"
        assert str(remind["To"]) == "Пётр Иванов <ivanov@example.com>"
        assert remind["Auto-Submitted"] == "auto-generated"
        body = remind.get_content()
        for part in ("Request #1", "client@bigco.example", "принтер сломался", "Owner: ivanov",
                     "2027-01-11 14:00 (Europe/Moscow)",
                     "\nhttps://mc.example.com/request/1\r\n"):   # web.url: the request's page
            assert part in body
        escalate = message_from_bytes(sink.envelopes[1].content, policy=policy.default)
        assert escalate["Subject"].startswith("[#1] Escalation:")
        assert "Reminder sent to: ivanov" in escalate.get_content()
        alerts = await app.registry.read("alerts", lambda c: [
            tuple(r) for r in c.execute(select(request_alerts.c.stage, request_alerts.c.state))])
        assert alerts == [("remind", "queued"), ("escalate", "queued")]
    finally:
        await sink.stop()


async def test_escalation_skips_a_deputy_who_is_away(make_app, tmp_path):
    """ivanov owns the request and had the reminder; on the escalation's day his deputy
    petrova is away (and has no deputy of her own): the escalation goes to the team's head
    smirnov, not into the mailbox of someone on leave. Before, it went to petrova."""
    from tests.control_support import ROUTING
    routing = write_routing(tmp_path)
    with open(routing[0], "w", encoding="utf-8") as f:
        f.write(ROUTING.replace("petrova: {address: petrova@example.com, name: Анна Петрова}",
                                "petrova: {address: petrova@example.com, name: Анна Петрова,"
                                " away: [\"2027-01-12\"]}"))
    app = await make_app(routing=routing, control=CONTROL,
                         registry=RegistryConfig(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"))
    app.sla_task.cancel()
    sched = Scheduler(app.registry, CONTROL, app.snapshot)
    app.pipeline.clock = lambda: msk(11, 16)
    await send(app.bound["smtp"][1], mail("c@client.example", "printer", "p1@client"),
               "c@client.example")
    assert await sched.tick(msk(12, 10, 59)) == []     # due Tuesday 11:00 (2h + 2h)
    [remind] = await sched.tick(msk(12, 11))
    assert (remind.stage, remind.recipient) == ("remind", "ivanov")
    [escalate] = await sched.tick(msk(12, 13))
    assert (escalate.stage, escalate.recipient, escalate.address) == (
        "escalate", "smirnov", "smirnov@example.com")


async def test_a_request_due_at_the_lunch_break_is_reminded_when_it_falls_due(make_app,
                                                                               tmp_path):
    """On a calendar with a lunch break (09:00-13:00, 14:00-18:00), a request written Monday
    at 10:00 with a 3h first response is due at 13:00, as the lunch starts; with
    remind_after 0 its reminder goes at 13:00, and the escalation two working hours after
    it, 16:00. One written at 16:00 is due Tuesday 10:00 and reminded then. Before, the due
    time at the end of a span was reminded at the next span's start (14:00), an hour after
    the board showed it overdue (a due time of 18:00: the next morning)."""
    from tests.control_support import ROUTING
    routing = write_routing(tmp_path)
    with open(routing[0], "w", encoding="utf-8") as f:
        f.write(ROUTING.replace('hours: "Mon-Fri 09:00-18:00"',
                                'hours: "Mon-Fri 09:00-13:00, Mon-Fri 14:00-18:00"')
                .replace("first_response: 4h", "first_response: 3h"))
    got = await _alerts_of(make_app, tmp_path, routing, ((msk(11, 10), "a"), (msk(11, 16), "b")),
                           msk(11, 12), msk(12, 18), timedelta(minutes=15))
    assert got == [(1, "remind", msk(11, 13)), (1, "escalate", msk(11, 16)),
                   (2, "remind", msk(12, 10)), (2, "escalate", msk(12, 12))]


async def test_notices_in_russian_carry_the_configured_number(make_app, tmp_path):
    """control.language: ru writes the reminder and the escalation in Russian, and their
    subject carries the request number as control.number spells it (it was always "[#N]",
    which a reply could not be matched by when the number is "[REQ-N]")."""
    from dataclasses import replace
    control = replace(CONTROL, language="ru", number="[REQ-{n}]")
    app = await make_app(routing=write_routing(tmp_path), control=control,
                         registry=RegistryConfig(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"))
    app.sla_task.cancel()
    sched = Scheduler(app.registry, control, app.snapshot)
    app.pipeline.clock = lambda: msk(11, 10)
    await send(app.bound["smtp"][1], mail("c@client.example", "принтер", "p1@client"),
               "c@client.example")
    assert [a.stage for a in await sched.tick(msk(11, 14))] == ["remind"]
    assert [a.stage for a in await sched.tick(msk(11, 16))] == ["escalate"]
    rows = await app.registry.read("alerts", lambda c: [tuple(r) for r in c.execute(
        select(request_alerts.c.subject, request_alerts.c.body).order_by(request_alerts.c.at))])
    (remind, remind_body), (escalate, escalate_body) = rows
    assert remind == "[REQ-1] Напоминание: нет первого ответа: принтер"
    assert escalate == "[REQ-1] Эскалация: нет первого ответа: принтер"
    assert remind_body.startswith("Запрос №1 остаётся без ответа.\n\nОт: c@client.example\n"
                                  "Тема: принтер\nОтветственный: ivanov\n"
                                  "Срок первого ответа: 2027-01-11 14:00 (Europe/Moscow)")
    assert "Напоминание отправлено: ivanov\n" in escalate_body



@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\u0085"], ids=["LS", "PS", "NEL"])
async def test_a_line_separator_in_a_customers_subject_stops_no_reminder(make_app, tmp_path, sep):
    """A customer's Subject whose RFC 2047 word decodes to LINE SEPARATOR (or PARAGRAPH
    SEPARATOR, or NEL) reached the reminder's Subject: Python's email package refused it
    (ValueError, "Header values may not contain linefeed"), which failed the whole scan, so
    no request got its reminder or escalation, on every scan, for as long as that request
    stayed open. The reminders go out; the separator is a space in the header, no line."""
    import base64

    from mailrouter.registry.models import outbox
    app = await make_app(routing=write_routing(tmp_path), control=CONTROL,
                         registry=RegistryConfig(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"))
    app.sla_task.cancel()
    sched = Scheduler(app.registry, CONTROL, app.snapshot)
    app.pipeline.clock = lambda: msk(11, 10)
    word = base64.b64encode(f"Счёт{sep}Bcc: victim@evil.test".encode()).decode()
    await send(app.bound["smtp"][1], mail("c@client.example", f"=?utf-8?b?{word}?=", "p1@client"),
               "c@client.example")
    await send(app.bound["smtp"][1], mail("d@client.example", "printer", "p2@client"),
               "d@client.example")
    assert sorted(a.request for a in await sched.tick(msk(11, 14))) == [1, 2]
    raws = await app.registry.read("outbox", lambda c: [r for (r,) in c.execute(
        select(outbox.c.raw).where(outbox.c.kind == "sla-remind").order_by(outbox.c.id))])
    assert len(raws) == 2
    head = raws[0].split(b"\r\n\r\n")[0].decode("ascii")
    assert "\nBcc:" not in head and sep.encode() not in raws[0]
    assert head.count("\nSubject:") == 1


async def test_requests_waiting_for_their_escalation_hold_back_no_reminder(make_app, tmp_path,
                                                                         monkeypatch):
    """A scan reads the overdue requests not yet escalated, soonest due first, a batch at a
    time (500; 2 here). A and B, reminded at 14:00 and waiting for their escalation at
    16:00, filled the batch: C, due 14:30, was reminded only at 16:00, once they were
    escalated. Now the scan goes on past them, and C is reminded when it falls due."""
    from mailrouter.control import sla
    monkeypatch.setattr(sla, "_BATCH", 2)
    got = await _alerts_of(make_app, tmp_path, write_routing(tmp_path),
                           ((msk(11, 10), "a"), (msk(11, 10), "b"), (msk(11, 10, 30), "c")),
                           msk(11, 13), msk(11, 18), timedelta(minutes=30))
    assert got == [(1, "remind", msk(11, 14)), (2, "remind", msk(11, 14)),
                   (3, "remind", msk(11, 14, 30)), (1, "escalate", msk(11, 16)),
                   (2, "escalate", msk(11, 16)), (3, "escalate", msk(11, 16, 30))]


async def test_a_scan_that_crashes_does_not_stop_the_scheduler(make_app, tmp_path, caplog):
    """A scan that raises something other than a registry error (a bug, a calendar whose
    reminder falls past its search limit) ended the scheduler's task: no request was reminded
    or escalated again until a restart. It is logged and the next scan runs."""
    import dataclasses
    app = await make_app(routing=write_routing(tmp_path), control=CONTROL,
                         registry=RegistryConfig(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"))
    app.sla_task.cancel()
    calls: list[int] = []

    def snapshot():                                   # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("no working time within 3 years")
        return app.snapshot()

    sched = Scheduler(app.registry, dataclasses.replace(CONTROL, scan_every=0.01), snapshot)
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run(stop))
    while len(calls) < 3 and not task.done():
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert len(calls) >= 3
    assert "event=sla_scan_crashed" in caplog.text and "no working time" in caplog.text


AWKWARD = """\
domains: [example.com]
mailboxes:
  support: {maildir: support}
  replies: {maildir: replies}
people:
  ivanov:  {address: ivanov@example.com, name: I}
aliases:
  support@example.com: mailbox:support
  ny@example.com: mailbox:support
  night@example.com: mailbox:support
  replies@example.com: mailbox:replies
calendars:
  default: {timezone: Europe/Prague, hours: "Mon-Fri 09:00-18:00",
            holidays: [2027-12-24, 2027-12-27]}
  ny: {timezone: America/New_York, hours: "Mon-Fri 09:00-17:00"}
  night: {timezone: Europe/Prague, hours: "Daily 00:00-24:00"}
rules:
  - name: ny
    when: {rcpt: ny@example.com}
    then: {owner: ivanov, sla: {first_response: 1d, calendar: ny}}
  - name: night
    when: {rcpt: night@example.com}
    then: {owner: ivanov, sla: {first_response: 2h, calendar: night}}
  - name: support
    when: {rcpt: support@example.com}
    then: {owner: ivanov, sla: {first_response: 4h, calendar: default}}
"""


async def test_awkward_times_fall_due_remind_and_count_in_the_company_zone(make_app, tmp_path):
    """Requests written at awkward moments through the daemon (Prague the company's zone,
    New York and a round-the-clock calendar beside it): each falls due where its calendar
    says, the reminder comes at the due time and not a second before, the report puts
    each in the Prague day it was written on, and an answer at the very due time is kept
    while one a second later is missed."""
    from zoneinfo import ZoneInfo
    prg, ny = ZoneInfo("Europe/Prague"), ZoneInfo("America/New_York")
    cases = [   # written (local), to, due (local)
        (datetime(2027, 1, 8, 17, 59, tzinfo=prg), "support",      # Friday 17:59
         datetime(2027, 1, 11, 12, 59, tzinfo=prg)),
        (datetime(2027, 12, 23, 17, 0, tzinfo=prg), "support",     # before the holidays
         datetime(2027, 12, 28, 12, 0, tzinfo=prg)),
        (datetime(2027, 3, 28, 1, 30, tzinfo=prg), "night",        # the clock jumps 02 -> 03
         datetime(2027, 3, 28, 4, 30, tzinfo=prg)),
        (datetime(2027, 10, 31, 2, 30, tzinfo=prg), "night",       # 02:00-03:00 twice: the first
         datetime(2027, 10, 31, 3, 30, tzinfo=prg)),
        (datetime(2027, 12, 31, 23, 30, tzinfo=ny), "ny",          # Jan 1 in Prague
         datetime(2028, 1, 3, 17, 0, tzinfo=ny)),
        (datetime(2027, 3, 12, 16, 0, tzinfo=ny), "ny",            # New York's DST weekend
         datetime(2027, 3, 15, 16, 0, tzinfo=ny)),
        (datetime(2028, 2, 29, 17, 0, tzinfo=prg), "support",      # a leap day
         datetime(2028, 3, 1, 12, 0, tzinfo=prg)),
        (datetime(2027, 1, 10, 23, 30, tzinfo=timezone.utc), "support",    # Monday in Prague
         datetime(2027, 1, 11, 13, 0, tzinfo=prg)),
    ]
    path = tmp_path / "rules" / "company.yaml"
    path.parent.mkdir()
    path.write_text(AWKWARD, encoding="utf-8")
    app = await make_app(routing=(str(path),), control=CONTROL,
                         registry=RegistryConfig(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"))
    app.sla_task.cancel()
    port = app.bound["smtp"][1]
    for i, (at, to, _) in enumerate(cases):
        app.pipeline.clock = lambda at=at: at.astimezone(timezone.utc)
        await send(port, mail(f"c{i}@client.example", f"question {i}", f"{i}@client",
                              to=f"{to}@example.com"), f"c{i}@client.example", f"{to}@example.com")
    due = await app.registry.read("t", lambda conn: [r.first_response_due for r in conn.execute(
        select(requests.c.first_response_due).order_by(requests.c.id))])
    assert due == [d.astimezone(timezone.utc) for _, _, d in cases]
    sched = Scheduler(app.registry, CONTROL, app.snapshot)
    for when, i in sorted((when, i) for i, when in enumerate(due, 1)):     # in time order
        assert (i, "remind") not in [(a.request, a.stage)
                                     for a in await sched.tick(when - timedelta(seconds=1))]
        assert (i, "remind") in [(a.request, a.stage) for a in await sched.tick(when)]
    for n, late in ((0, timedelta(0)), (1, timedelta(seconds=1))):     # exactly due; a second late
        app.pipeline.clock = lambda at=due[n] + late: at
        await send(port, mail("ivanov@example.com", f"Re: question {n}", f"re-{n}@example.com",
                              f"<{n}@client>"), "ivanov@example.com", "replies@example.com")
    doc = await app.registry.read("t", lambda conn: report(
        conn, datetime(2027, 1, 1, tzinfo=timezone.utc), datetime(2029, 1, 1, tzinfo=timezone.utc),
        datetime(2029, 1, 1, tzinfo=timezone.utc), app.snapshot().rules.calendars, zone=prg))
    assert [d["day"] for d in doc["volume_per_day"]] == [
        "2027-01-08", "2027-01-11", "2027-03-12", "2027-03-28", "2027-10-31", "2027-12-23",
        "2028-01-01", "2028-02-29"]
    assert doc["sla"] == {"kept": 1, "missed": 7, "share_kept": 0.125}
    assert doc["first_response_hours"]["median"] == 4.0        # 4h of business time each

"""A request's life as its people live it, through the real daemon (SMTP in, Maildir out,
SQLite and PostgreSQL registries), with a daemon restart between each stage and the
Moscow calendar's weekend and holiday edges (Mon-Fri 09:00-18:00, Friday 2027-01-15 a
holiday; team `duty` = ivanov, petrova round-robin; ivanov away on Wednesday 2027-01-13
with deputy petrova; first response within 4 business hours)."""

from __future__ import annotations

import email
from datetime import datetime, timedelta, timezone
from email.header import decode_header, make_header

import pytest
from sqlalchemy import select

from mailrouter.config import ControlConfig, RegistryConfig
from mailrouter.control import actions
from mailrouter.control.service import OWNER_HEADER
from mailrouter.control.sla import Scheduler
from mailrouter.control.tables import request_events, requests, team_picks
from tests.control_support import ROUTING, mail, send, write_routing
from tests.support.daemon import maildir_files

pytestmark = pytest.mark.asyncio
MSK = timezone(timedelta(hours=3))
CONTROL = ControlConfig(replies=("replies@example.com",), remind_after=0,
                        escalate_after=2 * 3600, close_after=0)


def msk(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2027, 1, day, hour, minute, tzinfo=MSK).astimezone(timezone.utc)


async def test_a_requests_life_across_restarts(make_app, tmp_path, registry_url):
    """Opened on Friday 17:30 (due Monday 12:30: the weekend is not working time) for
    ivanov; a second one on Saturday for petrova (due Monday 13:00); restart. Wednesday,
    ivanov away: a new request skips him (petrova), the customer's follow-up to his stays
    his (the owner does not change with a day off), the reminder goes to his deputy.
    Restart. Thursday 17:00 a request is due Monday 12:00 (Friday is a holiday). The head
    reassigns #1 to smirnov (the web's action); the customer's next mail, by [#1] alone,
    goes to smirnov; his reply `[#1] [closed]` closes it; restart; the customer's answer
    to that reply reopens it with its owner. Every delivered copy names the owner of the
    moment, and the history tells it in order."""
    routing = write_routing(tmp_path)
    who, app = "client@bigco.example", None

    async def daemon(at: datetime):
        """A daemon (started afresh: the one before is stopped) whose clock says `at`."""
        nonlocal app
        if app is not None:
            app.request_stop()
            await app.wait_stopped()
        app = await make_app(routing=routing, registry=RegistryConfig(registry_url),
                             control=CONTROL)
        app.sla_task.cancel()           # the test's scheduler ticks with the test's clock
        app.pipeline.clock = lambda: at
        return app.bound["smtp"][1]

    def at(when: datetime) -> None:
        app.pipeline.clock = lambda: when

    port = await daemon(msk(8, 17, 30))
    await send(port, mail(who, "printer", "c1@bigco"), who)
    at(msk(9, 12))
    await send(port, mail("other@x.example", "scanner", "o1@x"), "other@x.example")

    port = await daemon(msk(11, 12, 29))
    sched = Scheduler(app.registry, CONTROL, app.snapshot)
    assert await sched.tick(msk(11, 12, 29)) == []         # #1 due 12:30, #2 13:00
    at(msk(13, 10))
    await send(port, mail("new@y.example", "toner", "n1@y"), "new@y.example")
    await send(port, mail(who, "Re: printer", "c2@bigco", "<c1@bigco>"), who)
    reminded = await sched.tick(msk(13, 10))
    assert [(a.request, a.stage, a.recipient) for a in reminded] == [
        (1, "remind", "petrova"), (2, "remind", "petrova")]

    port = await daemon(msk(14, 17))
    await send(port, mail("late@z.example", "fax", "l1@z"), "late@z.example")

    async def rows():
        return await app.registry.read("t", lambda conn: [dict(r._mapping) for r in conn.execute(
            select(requests).order_by(requests.c.id))])
    reqs = await rows()
    assert [(r["owner"], r["first_response_due"]) for r in reqs] == [
        ("ivanov", msk(11, 12, 30)), ("petrova", msk(11, 13)), ("petrova", msk(13, 14)),
        ("ivanov", msk(18, 12))]

    await app.registry.write("reassign", lambda conn: actions.reassign(
        conn, 1, "smirnov", "smirnov", msk(14, 17, 10), "web"))
    at(msk(14, 17, 20))
    await send(port, mail(who, "Re: [#1] printer", "c3@bigco"), who)
    at(msk(14, 17, 40))
    await send(port, mail("smirnov@example.com", "Re: [#1] [closed] printer", "r1@example.com",
                          "<c1@bigco> <c3@bigco>", to=who, body="fixed"),
               "smirnov@example.com", "replies@example.com")
    assert [(r["id"], r["status"]) for r in await rows()][0] == (1, "closed")

    port = await daemon(msk(18, 9, 5))
    await send(port, mail(who, "Re: [#1] [closed] printer", "c4@bigco",
                          "<c1@bigco> <c3@bigco> <r1@example.com>", body="it broke again"), who)
    [one, *_] = await rows()
    assert (one["owner"], one["status"], one["first_response_at"]) == (
        "smirnov", "open", msk(14, 17, 40))
    assert len(await rows()) == 4
    events = await app.registry.read("t", lambda conn: [
        (r.kind, r.detail) for r in conn.execute(select(request_events).where(
            request_events.c.request_id == 1).order_by(request_events.c.id))])
    assert [k for k, _ in events] == ["opened", "owner", "joined", "reminder", "owner", "joined",
                                      "reply", "status", "joined", "status"]
    # Monday 09:05 + 4 business hours
    assert events[-1][1] == "closed -> open: the customer wrote; answer due 2027-01-18T13:05:00+03:00"

    heads = {}
    for path in maildir_files(tmp_path / "var" / "mail" / "support"):
        msg = email.message_from_bytes(path.read_bytes())
        heads[msg["Message-ID"]] = str(make_header(decode_header(msg[OWNER_HEADER])))
    assert {m: h.rpartition("<")[2].rstrip(">") for m, h in heads.items()} == {
        "<c1@bigco>": "ivanov@example.com", "<o1@x>": "petrova@example.com",
        "<n1@y>": "petrova@example.com", "<c2@bigco>": "ivanov@example.com",
        "<l1@z>": "ivanov@example.com", "<c3@bigco>": "smirnov@example.com",
        "<c4@bigco>": "smirnov@example.com"}



def _with_urgent(tmp_path) -> tuple[str, ...]:
    """The company's routing with urgent@ (support's mailbox) owned by ivanov himself."""
    path = tmp_path / "rules" / "company.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ROUTING.replace(
        "  replies@example.com: mailbox:replies\n",
        "  replies@example.com: mailbox:replies\n  urgent@example.com: mailbox:support\n")
        + "  - name: urgent\n    when: {rcpt: urgent@example.com}\n    then: {owner: ivanov}\n",
        encoding="utf-8")
    return (str(path),)


async def test_a_person_owner_away_gives_the_deputy_and_keeps_the_thread(make_app, tmp_path,
                                                                         registry_url):
    """A rule naming a person (not a team): on the day ivanov is away the request goes to
    his deputy petrova and the team's turn does not move; the customer's follow-up the
    next day, with ivanov back, stays petrova's; a new request that day is ivanov's."""
    app = await make_app(routing=_with_urgent(tmp_path), registry=RegistryConfig(registry_url),
                         control=CONTROL)
    port, who = app.bound["smtp"][1], "client@bigco.example"
    app.pipeline.clock = lambda: msk(13, 10)
    await send(port, mail(who, "down", "u1@bigco", to="urgent@example.com"), who,
               "urgent@example.com")
    app.pipeline.clock = lambda: msk(14, 10)
    await send(port, mail(who, "Re: down", "u2@bigco", "<u1@bigco>", to="urgent@example.com"),
               who, "urgent@example.com")
    await send(port, mail("b@x.example", "other", "u3@x", to="urgent@example.com"),
               "b@x.example", "urgent@example.com")

    def state(conn):
        return ([(r.id, r.owner, r.team) for r in conn.execute(
                    select(requests).order_by(requests.c.id))],
                conn.execute(select(team_picks)).all())
    assert await app.registry.read("t", state) == (
        [(1, "petrova", None), (2, "ivanov", None)], [])

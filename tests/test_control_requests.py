"""Requests in the daemon: a new message opens one with an owner, follow-ups join it and keep
the owner, a stranger quoting a known Message-ID or number is refused and recorded, and a copy
of our own reply (reply tracking) answers the request. Real SMTP, real SQLite and PostgreSQL."""

from __future__ import annotations

import email
from datetime import datetime, timezone
from email.header import decode_header, make_header
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import func, select

from mailrouter.config import AutoreplyConfig, ControlConfig, RegistryConfig
from mailrouter.control.tables import request_events, request_messages, requests
from mailrouter.registry.models import messages
from tests.control_support import cli_on, mail, send, write_routing
from tests.support.automatic_mail import AUTOMATIC, raw
from tests.support.daemon import maildir_files

pytestmark = pytest.mark.asyncio
MONDAY = datetime(2027, 1, 11, 7, 0, tzinfo=timezone.utc)      # 10:00 in Moscow


async def rows(app, table, *where):
    def q(conn):
        return [dict(r._mapping) for r in conn.execute(select(table).where(*where)
                                                        .order_by(table.c.id))]
    return await app.registry.read("test", q)


async def start(make_app, tmp_path: Path, url: str, **control):
    app = await make_app(routing=write_routing(tmp_path), registry=RegistryConfig(url),
                         control=ControlConfig(replies=("replies@example.com",), **control))
    app.pipeline.clock = lambda: MONDAY
    return app, app.bound["smtp"][1]


async def test_sticky_owner_and_hijack_refused(make_app, tmp_path, registry_url):
    """Two new messages go to the team round-robin (ivanov, then petrova); three follow-ups
    from the customer (by In-Reply-To, by References only, by [#N] alone) join the first
    request and keep its owner; a stranger quoting its Message-ID and one writing its number
    are refused, recorded as join_refused on it, and open requests of their own."""
    app, port = await start(make_app, tmp_path, registry_url)
    await send(port, mail("client@bigco.example", "printer broken", "m1@bigco"), "client@bigco.example")
    await send(port, mail("other@x.example", "question", "m2@x"), "other@x.example")
    await send(port, mail("client@bigco.example", "Re: printer broken", "m3@bigco", "<m1@bigco>"),
               "client@bigco.example")
    await send(port, mail("Client@BigCo.example", "Re: printer", "m4@bigco", "<m1@bigco> <zz@a>"
                          .replace(" <zz@a>", "")), "client@bigco.example")
    await send(port, mail("client@bigco.example", "Re: [#1] still broken", "m5@bigco"),
               "client@bigco.example")
    await send(port, mail("evil@attacker.example", "Re: printer", "m6@evil", "<m1@bigco>"),
               "evil@attacker.example")
    await send(port, mail("evil@attacker.example", "[#1] me too", "m7@evil"), "evil@attacker.example")

    reqs = await rows(app, requests)
    assert [(r["id"], r["owner"], r["team"], r["counterparty"]) for r in reqs] == [
        (1, "ivanov", "duty", "client@bigco.example"), (2, "petrova", "duty", "other@x.example"),
        (3, "ivanov", "duty", "evil@attacker.example"), (4, "petrova", "duty", "evil@attacker.example")]
    assert reqs[0]["first_response_due"] == datetime(2027, 1, 11, 11, 0, tzinfo=timezone.utc)
    linked = await rows(app, request_messages, request_messages.c.request_id == 1)
    assert [m["message_id"] for m in linked] == ["<m1@bigco>", "<m3@bigco>", "<m4@bigco>", "<m5@bigco>"]
    events = await rows(app, request_events, request_events.c.request_id == 1)
    assert [e["kind"] for e in events] == ["opened", "owner", "joined", "joined", "joined",
                                           "join_refused", "join_refused"]
    assert events[5]["actor"] == "evil@attacker.example"
    assert "named it by reference" in events[5]["detail"]
    assert "named it by number" in events[6]["detail"]

    # every copy of request 1's messages carries its owner, RFC 2047 encoded
    owners = {}
    for f in maildir_files(tmp_path / "var" / "mail" / "support"):
        msg = email.message_from_bytes(f.read_bytes())
        owners[msg["Message-ID"]] = str(make_header(decode_header(msg["X-Mailrouter-Owner"])))
    assert owners["<m1@bigco>"] == owners["<m3@bigco>"] == owners["<m5@bigco>"] == \
        "Пётр Иванов <ivanov@example.com>"
    assert owners["<m2@x>"] == "Анна Петрова <petrova@example.com>"


async def test_reply_copy_answers_and_customer_reopens(make_app, tmp_path, registry_url):
    """A copy of our reply (sent to replies@, as Postfix's sender_bcc_maps does) matched by
    In-Reply-To stops the first-response clock (status answered); a second reply does not move
    it; the customer's follow-up reopens; a reply with the close marker closes; a retry of
    the same message is not linked twice."""
    app, port = await start(make_app, tmp_path, registry_url)
    await send(port, mail("client@bigco.example", "printer", "c1@bigco"), "client@bigco.example")
    t1 = datetime(2027, 1, 11, 8, 30, tzinfo=timezone.utc)
    app.pipeline.clock = lambda: t1
    reply = mail("ivanov@example.com", "Re: printer", "r1@example.com", "<c1@bigco>",
                 to="client@bigco.example")
    await send(port, reply, "ivanov@example.com", "replies@example.com")
    await send(port, reply, "ivanov@example.com", "replies@example.com")      # a retry
    [r] = await rows(app, requests)
    assert (r["status"], r["first_response_at"], r["last_out_at"]) == ("answered", t1, t1)
    app.pipeline.clock = lambda: datetime(2027, 1, 11, 9, 0, tzinfo=timezone.utc)
    await send(port, mail("client@bigco.example", "Re: printer", "c2@bigco", "<c1@bigco> <r1@example.com>"),
               "client@bigco.example")
    [r] = await rows(app, requests)
    assert r["status"] == "open" and r["first_response_at"] == t1
    await send(port, mail("petrova@example.com", "Re: [#1] printer", "r2@example.com",
                          body="[closed] fixed, thanks"), "petrova@example.com", "replies@example.com")
    [r] = await rows(app, requests)
    assert r["status"] == "closed" and r["first_response_at"] == t1
    kinds = [e["kind"] + ":" + e["detail"] for e in await rows(app, request_events)
             if e["kind"] in ("reply", "status")]
    assert kinds == ["reply:first response <r1@example.com>", "status:open -> answered: we replied",
                     "status:answered -> open: the customer wrote; answer due "
                     "2027-01-11T16:00:00+03:00", "reply:reply <r2@example.com>",
                     "status:open -> closed: close marker in the reply"]
    links = await rows(app, request_messages)
    assert [(m["direction"], m["message_id"]) for m in links] == [
        ("in", "<c1@bigco>"), ("out", "<r1@example.com>"), ("in", "<c2@bigco>"),
        ("out", "<r2@example.com>")]


async def test_absent_person_gives_the_deputy_and_robots_open_nothing(make_app, tmp_path):
    """On ivanov's away day the round-robin skips him; an auto-reply opens no request."""
    app, port = await start(make_app, tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    app.pipeline.clock = lambda: datetime(2027, 1, 13, 7, 0, tzinfo=timezone.utc)
    for n in range(3):
        await send(port, mail(f"c{n}@x.example", "hi", f"a{n}@x"), f"c{n}@x.example")
    robot = mail("c9@x.example", "Out of office", "oof@x").replace(
        b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:")
    await send(port, robot, "c9@x.example")
    assert [r["owner"] for r in await rows(app, requests)] == ["petrova"] * 3


async def test_a_robots_from_address_opens_answers_and_turns_nothing(make_app, tmp_path, registry_url):
    """Mail whose From is a robot's address (noreply@, a +detail of no-reply@,
    MAILER-DAEMON@, as the autoresponder's robot_senders read it) is delivered and recorded
    but opens no request with an SLA and takes no team member's turn: nobody can answer it,
    and its request stood overdue on the board. A person's mail sent with a mailing
    service's envelope sender (bounces+x@) still opens one, with the member next in turn;
    a noreply@ notice of ours copied to replies@ in the request's thread answers nothing.
    Before, the bank's noreply@ opened request #1 for ivanov, due in 4 business hours."""
    app, port = await start(make_app, tmp_path, registry_url)
    for frm, msgid in (("Банк <noreply@bank.example>", "n1@bank"),
                       ("no-reply+alerts@shop.example", "n2@shop"),
                       ("MAILER-DAEMON@mx.partner.example", "n3@mx")):
        await send(port, mail(frm, "Выписка по счёту", msgid), "bounce-7@esp.example")
    assert await rows(app, requests) == []
    await send(port, mail("Иван <ivan@client.example>", "printer", "p1@client"),
               "bounces+ivan=client.example@esp.example")
    [r] = await rows(app, requests)
    assert (r["counterparty"], r["owner"], r["status"]) == ("ivan@client.example", "ivanov", "open")
    assert r["first_response_due"] is not None
    await send(port, mail("noreply@example.com", "Re: printer", "auto1@example.com", "<p1@client>",
                          to="ivan@client.example"), "noreply@example.com", "replies@example.com")
    [r] = await rows(app, requests)
    assert (r["status"], r["first_response_at"]) == ("open", None)
    stored = maildir_files(tmp_path / "var" / "mail" / "support")
    assert len(stored) == 4
    recorded = await app.registry.read("n", lambda c: c.execute(
        select(func.count()).select_from(messages)).scalar_one())
    assert recorded == 5


async def test_automatic_mail_the_autoresponder_knew_opens_nothing(make_app, tmp_path,
                                                                  registry_url):
    """Automatic mail only the autoresponder recognised (tests/support/automatic_mail.py:
    CommuniGate's X-Autogenerated, Mailtraq's and FirstClass's markers, qmail's Delivered-To:
    Autoresponder, Apple's vacation, X-AutoReply-From, X-Mail-Autoreply, X-Precedence, a
    Precedence with a comment, Lotus Notes' and Polish Exchange's out-of-office subjects, a
    DMARC report's subject, a DSN without multipart/report, LISTSERV 1.8c's list mail) each
    opened a request with an SLA and took a team member's turn. Sent through the daemon with a
    forwarder's envelope sender, each is delivered and recorded and opens nothing; a person's
    mail after them opens the first request, for the first member in turn."""
    app, port = await start(make_app, tmp_path, registry_url)
    for n, (_, headers, subject, _why) in enumerate(AUTOMATIC):
        await send(port, raw(headers, subject, msgid=f"auto{n}@client.example"), "fwd@relay.example")
    assert await rows(app, requests) == []
    await send(port, mail("Ann <ann@client.example>", "printer", "p1@client"), "ann@client.example")
    [r] = await rows(app, requests)
    assert (r["id"], r["counterparty"], r["owner"]) == (1, "ann@client.example", "ivanov")
    assert len(maildir_files(tmp_path / "var" / "mail" / "support")) == len(AUTOMATIC) + 1


async def test_a_customer_asking_about_bounces_opens_a_request(make_app, tmp_path, registry_url):
    """A mail host's customer writes "Mail delivery failed for our domain since Monday": a
    bounce subject's first words (Exim's "Mail delivery failed: returning message to sender"),
    then the person's. Since Control reads MessageView.automatic it was robot mail: delivered,
    and no request opened, so nobody in the team was ever given it. Now a request."""
    app, port = await start(make_app, tmp_path, registry_url)
    await send(port, mail("Ann <ann@client.example>", "Mail delivery failed for our domain since "
                          "Monday", "b1@client"), "ann@client.example")
    [r] = await rows(app, requests)
    assert (r["counterparty"], r["owner"]) == ("ann@client.example", "ivanov")


async def test_the_robots_config_yaml_names_open_no_request(make_app, tmp_path, registry_url):
    """autoreply.robot_senders of config.yaml is the list both the autoresponder and the
    requests read: a company's own robot (alerts@ of its monitoring) opens no request.
    Before, the daemon gave Control the default list, so it opened one with an SLA."""
    app = await make_app(routing=write_routing(tmp_path), registry=RegistryConfig(registry_url),
                         control=ControlConfig(replies=("replies@example.com",)),
                         autoreply=AutoreplyConfig(robot_senders=("alerts", "noreply")))
    app.pipeline.clock = lambda: MONDAY
    port = app.bound["smtp"][1]
    await send(port, mail("Monitoring <alerts@monitor.example>", "disk 91%", "a1@monitor"),
               "alerts@monitor.example")
    assert await rows(app, requests) == []
    await send(port, mail("Иван <ivan@client.example>", "printer", "p1@client"),
               "ivan@client.example")
    assert [r["counterparty"] for r in await rows(app, requests)] == ["ivan@client.example"]


async def test_a_narrower_config_yaml_robot_list_is_the_one_requests_read(make_app, tmp_path,
                                                                         registry_url):
    """A site whose customers write from orders-request@ leaves '*-request' out of
    autoreply.robot_senders: their mail opens a request. Since the rules' `robot: true`
    learnt the default list (routing/robots.py), Control's plan read From against that
    default list too, whatever config.yaml says, and opened nothing for them."""
    app = await make_app(routing=write_routing(tmp_path), registry=RegistryConfig(registry_url),
                         control=ControlConfig(replies=("replies@example.com",)),
                         autoreply=AutoreplyConfig(robot_senders=("alerts", "noreply")))
    app.pipeline.clock = lambda: MONDAY
    port = app.bound["smtp"][1]
    await send(port, mail("Orders <orders-request@client.example>", "order 7", "o1@client"),
               "orders-request@client.example")
    await send(port, mail("Monitoring <alerts@monitor.example>", "disk 91%", "a1@monitor"),
               "alerts@monitor.example")
    assert [r["counterparty"] for r in await rows(app, requests)] == [
        "orders-request@client.example"]


async def test_the_plan_matches_the_sender_against_the_robots_once(make_app, tmp_path,
                                                                    monkeypatch):
    """Control's plan matched From against robot_senders twice (routing.facts.robot_of,
    then its own _robot_sender); once now, with the same outcome: a robot's From opens
    nothing, a person's opens a request, and a message with no From is judged by its
    envelope sender (noreply@ opens nothing, a person's opens one)."""
    from mailrouter.control import service
    from mailrouter.routing import robots
    matched: list[str] = []
    real = robots.robot_pattern

    def counted(address: str, patterns: object) -> str | None:
        matched.append(address)
        return real(address, patterns)  # type: ignore[arg-type]
    monkeypatch.setattr(robots, "robot_pattern", counted)
    monkeypatch.setattr(service, "robot_pattern", counted, raising=False)
    app, port = await start(make_app, tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    no_from = b"To: support@example.com\r\nSubject: hi\r\nMessage-ID: <%s>\r\n\r\nx\r\n"
    await send(port, mail("Банк <noreply@bank.example>", "statement", "n1@bank"), "ann@bank.example")
    await send(port, mail("Иван <ivan@client.example>", "printer", "p1@client"), "x@esp.example")
    await send(port, no_from % b"n2@shop", "noreply@shop.example")
    await send(port, no_from % b"p2@client", "petr@client.example")
    assert matched == ["noreply@bank.example", "ivan@client.example", "noreply@shop.example",
                       "petr@client.example"]
    assert [r["counterparty"] for r in await rows(app, requests)] == [
        "ivan@client.example", "petr@client.example"]


async def test_null_sender_mail_opens_no_request(make_app, tmp_path):
    """An Exchange 2010 out-of-office reply (sisimai's rfc3834-04: no Auto-Submitted, only
    X-Auto-Response-Suppress, which is no robot sign) comes with MAIL FROM:<>, as bounces and
    other notices do (RFC 5321 4.5.5, RFC 3834 2): robot mail, as the rules' `robot: true`
    says. It opened a request with an owner and an SLA; a person's mail still opens one."""
    app, port = await start(make_app, tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    oof = (Path(__file__).parent / "corpus" / "real_exchange_oof_null_sender.eml").read_bytes()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) as client:
        await client.sendmail("", ["support@example.com"], oof.replace(b"\n", b"\r\n"))
    await send(port, mail("c1@x.example", "hi", "a1@x"), "c1@x.example")
    assert [r["counterparty"] for r in await rows(app, requests)] == ["c1@x.example"]


async def test_migration_matches_the_tables(registry_url):
    """Revisions 0004 and 0007 create exactly the tables control/tables.py declares (columns, indexes,
    constraints), on SQLite and PostgreSQL: Alembic's comparison finds nothing to add."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mailrouter.control import tables
    from mailrouter.registry import Registry

    reg = await Registry.open(registry_url)
    try:
        def diff(conn):
            ctx = MigrationContext.configure(conn, opts={"compare_type": False})
            return [d for d in compare_metadata(ctx, tables.metadata)
                    if any(t in repr(d) for t in ("request", "team_picks", "thread_claims"))]
        assert await reg.read("diff", diff) == []
    finally:
        await reg.close()


async def test_waiting_marker_cli_wait_and_customer_follow_up(make_app, tmp_path, registry_url):
    """Our reply with `[waiting]` on its first line stops the clock and marks the request
    waiting; the customer's follow-up moves it back to open; `mailrouter request wait N`
    marks it waiting by hand (a second time, or on a missing request, is exit 1); a reply
    without a marker leaves waiting alone."""
    import asyncio

    app, port = await start(make_app, tmp_path, registry_url)
    await send(port, mail("client@bigco.example", "printer", "c1@bigco"), "client@bigco.example")
    t1 = datetime(2027, 1, 11, 8, 30, tzinfo=timezone.utc)
    app.pipeline.clock = lambda: t1
    await send(port, mail("ivanov@example.com", "Re: printer", "r1@example.com", "<c1@bigco>",
                          to="client@bigco.example", body="\r\n[Waiting] which model is it?"),
               "ivanov@example.com", "replies@example.com")
    [r] = await rows(app, requests)
    assert (r["status"], r["first_response_at"]) == ("waiting", t1)
    await send(port, mail("client@bigco.example", "Re: printer", "c2@bigco", "<r1@example.com>"),
               "client@bigco.example")
    [r] = await rows(app, requests)
    assert r["status"] == "open"

    run = cli_on(tmp_path, registry_url)

    async def cli(*argv):
        code, out, err = await asyncio.to_thread(run, *argv)
        return code, out + err
    assert await cli("request", "wait", "1") == (0, "request #1 waiting\n")
    assert await cli("request", "wait", "1") == (
        1, "mailrouter request wait: request #1 not changed: it is waiting\n")
    assert (await cli("request", "wait", "7"))[0] == 1
    await send(port, mail("ivanov@example.com", "Re: printer", "r2@example.com", "<c2@bigco>",
                          to="client@bigco.example", body="model X?"),
               "ivanov@example.com", "replies@example.com")
    [r] = await rows(app, requests)
    assert r["status"] == "waiting"
    kinds = [e["detail"] for e in await rows(app, request_events) if e["kind"] == "status"]
    assert kinds == ["open -> waiting: waiting marker in the reply",
                     "waiting -> open: the customer wrote; answer due 2027-01-11T15:30:00+03:00",
                     "open -> waiting: mailrouter request wait"]


def _hold_records_until_planned(app, n: int, first: str | None = None) -> None:
    """Make `n` messages arrive together: no record commits before all `n` are planned,
    and none before the record of the message whose Message-ID is `first`."""
    import asyncio
    planned, first_done = asyncio.Event(), asyncio.Event()
    control, registry = app.pipeline.control, app.pipeline.registry
    plan, record, count = control.plan, registry.record, [0]
    if first is None:
        first_done.set()

    async def counting_plan(*a, **k):
        try:
            return await plan(*a, **k)
        finally:
            count[0] += 1
            if count[0] >= n:
                planned.set()

    async def held_record(message, *a, **k):
        await asyncio.wait_for(planned.wait(), 10)
        if message.message_id != first:
            await asyncio.wait_for(first_done.wait(), 10)
        try:
            return await record(message, *a, **k)
        finally:
            if message.message_id == first:
                first_done.set()
    control.plan, registry.record = counting_plan, held_record


async def test_messages_of_one_thread_arriving_together_open_one_request(make_app, tmp_path,
                                                                         registry_url):
    """Both are planned before either is recorded: the same message in two SMTP transactions
    (an MTA splitting recipients) is one request, and a follow-up naming the first message
    joins its request instead of opening a second one."""
    import asyncio
    app, port = await start(make_app, tmp_path, registry_url)
    _hold_records_until_planned(app, 2)
    first = mail("client@bigco.example", "printer", "c1@bigco")
    await asyncio.gather(send(port, first, "client@bigco.example"),
                         send(port, first, "client@bigco.example"))
    assert [(r["id"], r["owner"]) for r in await rows(app, requests)] == [(1, "ivanov")]
    assert len(await rows(app, request_messages)) == 1

    # As in two worker processes, which do not see each other's messages in flight
    # (test_a_thread_in_flight_is_planned_in_order): the record's second look joins them.
    class Unshared(dict):
        def __setitem__(self, key, value):
            pass
    app.pipeline.control._flight = Unshared()
    _hold_records_until_planned(app, 3, first="<s1@x>")
    second = mail("other@x.example", "scanner", "s1@x")
    follow = mail("other@x.example", "Re: scanner", "s2@x", "<s1@x>")
    stranger = mail("evil@attacker.example", "Re: scanner", "e1@evil", "<s1@x>")
    await asyncio.gather(send(port, second, "other@x.example"),
                         send(port, follow, "other@x.example"),
                         send(port, stranger, "evil@attacker.example"))
    reqs = await rows(app, requests)
    assert [(r["id"], r["counterparty"]) for r in reqs] == [
        (1, "client@bigco.example"), (2, "other@x.example"), (3, "evil@attacker.example")]
    linked = await rows(app, request_messages, request_messages.c.request_id == 2)
    assert [m["message_id"] for m in linked] == ["<s1@x>", "<s2@x>"]


async def test_number_no_request_can_have_is_no_number(make_app, tmp_path, registry_url):
    """A `[#N]` past the 32-bit request numbers (PostgreSQL's INTEGER id) in a customer's
    subject or in a reply copy's is no request's number: the customer's message opens a
    request, the copy answers none; before, the lookup failed and both got 451 for ever."""
    app, port = await start(make_app, tmp_path, registry_url)
    await send(port, mail("client@bigco.example", "Re: [#99999999999] printer", "c1@bigco"),
               "client@bigco.example")
    await send(port, mail("ivanov@example.com", "Re: [#2147483648] printer", "r1@example.com"),
               "ivanov@example.com", "replies@example.com")
    [r] = await rows(app, requests)
    assert (r["id"], r["status"], r["subject"]) == (1, "open", "Re: [#99999999999] printer")
    # such a number by hand: no such request (exit 1), not a registry failure (exit 2)
    import asyncio

    from mailrouter.control.actions import reopen
    run = cli_on(tmp_path, registry_url)

    def cli(*argv):
        code, _, err = run(*argv)
        return code, err
    assert await asyncio.to_thread(cli, "request", "show", "99999999999") == (
        1, "mailrouter request show: no request #99999999999\n")
    assert await asyncio.to_thread(cli, "request", "close", "99999999999") == (
        1, "mailrouter request close: request #99999999999 not changed: no such request\n")

    def web_reopen(conn):
        try:
            return reopen(conn, 2**31, "smirnov", MONDAY, "web", {})
        except LookupError as exc:
            return str(exc)
    assert await app.registry.write("t", web_reopen) == "no request #2147483648"


async def test_a_burst_of_new_messages_is_spread_over_the_team(make_app, tmp_path, registry_url):
    """Six new messages planned before any is recorded (an MTA flushing its queue) go three
    to ivanov and three to petrova, and the next one continues the turn; before, all six
    read the same cursor from the registry and went to ivanov."""
    import asyncio
    app, port = await start(make_app, tmp_path, registry_url)
    _hold_records_until_planned(app, 6)
    await asyncio.gather(*[send(port, mail(f"c{i}@x.example", "hi", f"b{i}@x"), f"c{i}@x.example")
                           for i in range(6)])
    owners = [r["owner"] for r in await rows(app, requests)]
    assert sorted(owners) == ["ivanov"] * 3 + ["petrova"] * 3
    await send(port, mail("late@x.example", "hi", "late@x"), "late@x.example")
    assert (await rows(app, requests))[-1]["owner"] == "ivanov"


async def test_a_thread_in_flight_is_planned_in_order(make_app, tmp_path, registry_url):
    """Two messages of one thread in flight at once, whichever is planned first and whichever
    would record first: one request. (1) The original is planned first and its record is
    held until the follow-up is being planned: the follow-up waits for it and joins. (2) The
    follow-up is planned first (it reached the end of DATA first) and its record is held
    until the original is being planned: the original waits, then joins the request the
    follow-up opened. Before, each case opened two requests."""
    import asyncio
    app, port = await start(make_app, tmp_path, registry_url)
    control, registry = app.pipeline.control, app.pipeline.registry
    plan, record = control.plan, registry.record
    entered: dict[str, asyncio.Event] = {}

    async def noting_plan(mail_from, rcpts, view, *a, **k):
        entered.setdefault(view.message_id, asyncio.Event()).set()
        return await plan(mail_from, rcpts, view, *a, **k)
    hold: dict[str, str] = {}           # a message's record waits for another's plan to begin

    async def held_record(message, *a, **k):
        other = hold.get(message.message_id)
        if other is not None:
            await asyncio.wait_for(entered.setdefault(other, asyncio.Event()).wait(), 10)
        return await record(message, *a, **k)
    control.plan, registry.record = noting_plan, held_record

    async def together(first: bytes, first_id: str, second: bytes, second_id: str) -> None:
        hold[first_id] = second_id
        one = asyncio.ensure_future(send(port, first, "client@bigco.example"))
        await asyncio.wait_for(entered.setdefault(first_id, asyncio.Event()).wait(), 10)
        await asyncio.gather(one, send(port, second, "client@bigco.example"))

    await together(mail("client@bigco.example", "printer", "a1@bigco"), "<a1@bigco>",
                   mail("client@bigco.example", "Re: printer", "a2@bigco", "<a1@bigco>"),
                   "<a2@bigco>")
    await together(mail("client@bigco.example", "Re: scanner", "b2@bigco", "<b1@bigco>"),
                   "<b2@bigco>", mail("client@bigco.example", "scanner", "b1@bigco"), "<b1@bigco>")
    reqs = await rows(app, requests)
    assert [(r["id"], r["subject"]) for r in reqs] == [(1, "printer"), (2, "Re: scanner")]
    linked = await rows(app, request_messages)
    assert [(m["request_id"], m["message_id"]) for m in linked] == [
        (1, "<a1@bigco>"), (1, "<a2@bigco>"), (2, "<b2@bigco>"), (2, "<b1@bigco>")]
    assert control._flight == {}


async def test_an_original_recorded_after_its_follow_up_joins_its_request(make_app, tmp_path,
                                                                          registry_url):
    """The follow-up is recorded first (the MTA held the original back, or another worker or
    instance took it): the original joins the request the follow-up opened, found by its own
    Message-ID among the ones the follow-up named, and so does a reply to the original alone.
    Before, the follow-up's references were not kept and the original opened a second one."""
    app, port = await start(make_app, tmp_path, registry_url)
    who = "client@bigco.example"
    await send(port, mail(who, "Re: printer", "a2@bigco", "<a1@bigco>"), who)
    await send(port, mail(who, "printer", "a1@bigco"), who)
    await send(port, mail(who, "Re: printer", "a3@bigco", "<a1@bigco>"), who)
    assert [(r["id"], r["subject"]) for r in await rows(app, requests)] == [(1, "Re: printer")]
    assert [m["message_id"] for m in await rows(app, request_messages)] == [
        "<a2@bigco>", "<a1@bigco>", "<a3@bigco>"]
    assert [e["kind"] for e in await rows(app, request_events)] == [
        "opened", "owner", "joined", "joined"]
    # planned as a join, the original's copy names the request's owner (no new team pick)
    heads = {}
    for f in maildir_files(tmp_path / "var" / "mail" / "support"):
        msg = email.message_from_bytes(f.read_bytes())
        heads[msg["Message-ID"]] = str(make_header(decode_header(msg["X-Mailrouter-Owner"])))
    assert set(heads.values()) == {"Пётр Иванов <ivanov@example.com>"}, heads
    await send(port, mail("new@x.example", "toner", "b1@x"), "new@x.example")
    assert (await rows(app, requests))[-1]["owner"] == "petrova"    # the team's next turn


async def test_migration_0007_keeps_old_requests_findable(tmp_path, make_app):
    """A registry at 0006 whose requests hold messages (one Message-ID in two requests, as
    the instance race could leave): opening it fills request_threads, the older request
    keeps the shared ID, and a follow-up naming the original joins it."""
    from sqlalchemy import create_engine, insert

    from mailrouter.registry.store import _alembic_upgrade
    path = tmp_path / "registry.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        _alembic_upgrade(conn, "0006")
        conn.execute(insert(requests), [dict(
            opened_at=MONDAY, message_key=k, counterparty="client@bigco.example",
            counterparty_domain="bigco.example", owner="ivanov", team="duty", status="open",
            subject="printer", tags=[], last_in_at=MONDAY) for k in ("k1", "k2")])
        conn.execute(insert(request_messages), [dict(
            request_id=rid, message_key=k, message_id="<a1@bigco>", direction="in", at=MONDAY,
            sender="client@bigco.example") for rid, k in ((1, "k1"), (2, "k2"))])
    engine.dispose()
    from mailrouter.control.tables import request_threads
    app, port = await start(make_app, tmp_path, f"sqlite+aiosqlite:///{path}")
    assert [(r["message_id"], r["request_id"]) for r in await rows_by(app, request_threads)] == [
        ("<a1@bigco>", 1)]
    who = "client@bigco.example"
    await send(port, mail(who, "Re: printer", "a2@bigco", "<a1@bigco>"), who)
    assert [m["request_id"] for m in await rows(app, request_messages)] == [1, 2, 1]


async def rows_by(app, table):
    def q(conn):
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(*table.primary_key))]
    return await app.registry.read("test", q)


async def test_follow_ups_name_ids_the_way_clients_write_them(make_app, tmp_path, registry_url):
    """A Message-ID with a comment after it (a gateway's note) and one without angle
    brackets (scripts, some webmail) are recorded as `<id>`, so a follow-up naming them the
    usual way joins the request; a follow-up whose In-Reply-To has a comment after the id,
    or no brackets, joins too. Before, the header's whole text was recorded and each
    follow-up opened a request of its own."""
    app, port = await start(make_app, tmp_path, registry_url)
    who = "client@bigco.example"

    def head(*lines: str) -> bytes:
        return ("\r\n".join((f"From: {who}", "To: support@example.com") + lines)
                + "\r\n\r\nhello\r\n").encode()
    await send(port, head("Subject: fax", "Message-ID: <fax1@bigco.example> (added by gw)"), who)
    await send(port, head("Subject: Re: fax", "Message-ID: <fax2@bigco.example>",
                          "In-Reply-To: <fax1@bigco.example>"), who)
    await send(port, head("Subject: scanner", "Message-ID: scan1@bigco.example"), who)
    await send(port, head("Subject: Re: scanner", "Message-ID: <scan2@bigco.example>",
                          "In-Reply-To: <scan1@bigco.example> (Client's message of Monday)"), who)
    await send(port, head("Subject: Re: scanner", "Message-ID: <scan3@bigco.example>",
                          "In-Reply-To: scan2@bigco.example"), who)
    assert [(r["id"], r["subject"]) for r in await rows(app, requests)] == [
        (1, "fax"), (2, "scanner")]
    assert [(m["request_id"], m["message_id"]) for m in await rows(app, request_messages)] == [
        (1, "<fax1@bigco.example>"), (1, "<fax2@bigco.example>"), (2, "<scan1@bigco.example>"),
        (2, "<scan2@bigco.example>"), (2, "<scan3@bigco.example>")]


async def test_a_long_thread_keeps_its_root(make_app, tmp_path, registry_url):
    """A follow-up deep in a long thread: its References name the request's message first
    and then 200 messages we never saw (the customer's colleagues wrote among themselves).
    Only the newest 50 references were looked up, so it opened a second request; the root
    (the first of References) is looked up too."""
    app, port = await start(make_app, tmp_path, registry_url)
    who = "client@bigco.example"
    await send(port, mail(who, "printer", "root@bigco"), who)
    refs = "<root@bigco> " + " ".join(f"<x{i}@bigco>" for i in range(200))
    await send(port, mail(who, "Re: printer", "deep@bigco", refs), who)
    assert [r["id"] for r in await rows(app, requests)] == [1]
    assert [m["message_id"] for m in await rows(app, request_messages)] == [
        "<root@bigco>", "<deep@bigco>"]


async def test_mail_from_exchange_with_auto_response_suppress_opens_a_request(
        make_app, tmp_path, registry_url):
    """A person's message sent through an Exchange organisation that marks all its outgoing
    mail `X-Auto-Response-Suppress: DR, OOF, AutoReply` (as Cisco's does, on Outlook replies
    and git-send-email alike) is a person's: it opens a request with an owner, and the reply
    to it joins. Before, the header made it robot mail and it opened nothing."""
    app, port = await start(make_app, tmp_path, registry_url)
    who = "danielwa@cisco.example"

    def outlook(subject: str, msgid: str, *more: str) -> bytes:
        return ("\r\n".join((f'From: "Daniel Walker (danielwa)" <{who}>',
                             "To: support@example.com", f"Subject: {subject}",
                             f"Thread-Topic: {subject}", "Thread-Index: AQHZbVA/W/PiGCKJbkGjA==",
                             f"Message-ID: <{msgid}>", *more, "Content-Language: en-US",
                             "X-MS-Has-Attach: ", "X-Auto-Response-Suppress: DR, OOF, AutoReply",
                             "X-MS-TNEF-Correlator: "))
                + "\r\n\r\nThe router does not boot.\r\n").encode()
    await send(port, outlook("router", "d1@cisco.example"), who)
    await send(port, outlook("RE: router", "d2@cisco.example", "In-Reply-To: <d1@cisco.example>"),
               who)
    [r] = await rows(app, requests)
    assert (r["owner"], r["counterparty"], r["status"]) == ("ivanov", who, "open")
    assert [m["message_id"] for m in await rows(app, request_messages)] == [
        "<d1@cisco.example>", "<d2@cisco.example>"]


async def test_robot_copies_of_our_outgoing_mail_answer_nothing(make_app, tmp_path, registry_url):
    """The owner is away and their mailbox answers the customer with an out-of-office reply;
    a reminder goes out from an address that sender_bcc_maps copies too: both copies reach
    replies@ and name the request (by In-Reply-To, by [#1]). Neither is a response: the
    request stays open, its clock running, until the owner's own reply. Before, the
    out-of-office reply stopped the clock (answered)."""
    app, port = await start(make_app, tmp_path, registry_url)
    who = "client@bigco.example"
    await send(port, mail(who, "printer", "c1@bigco"), who)
    oof = ("From: =?utf-8?b?0J/RkdGC0YAg0JjQstCw0L3QvtCy?= <ivanov@example.com>\r\n"
           f"To: {who}\r\nSubject: Automatic reply: printer\r\nIn-Reply-To: <c1@bigco>\r\n"
           "References: <c1@bigco>\r\nMessage-ID: <oof1@example.com>\r\n"
           "Auto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\n"
           "\r\nI am out of the office until Monday.\r\n").encode()
    await send(port, oof, "ivanov@example.com", "replies@example.com")
    reminder = ("From: helpdesk@example.com\r\nTo: ivanov@example.com\r\n"
                "Subject: [#1] reminder: first response due\r\nMessage-ID: <rem1@example.com>\r\n"
                "Auto-Submitted: auto-generated\r\nX-Mailrouter-Loop: mx.test; generated=sla\r\n"
                "\r\nRequest #1 waits for its first response.\r\n").encode()
    await send(port, reminder, "helpdesk@example.com", "replies@example.com")
    [r] = await rows(app, requests)
    assert (r["status"], r["first_response_at"]) == ("open", None)
    t1 = datetime(2027, 1, 11, 9, 0, tzinfo=timezone.utc)
    app.pipeline.clock = lambda: t1
    await send(port, mail("petrova@example.com", "Re: printer", "r1@example.com", "<c1@bigco>",
                          to=who), "petrova@example.com", "replies@example.com")
    [r] = await rows(app, requests)
    assert (r["status"], r["first_response_at"]) == ("answered", t1)
    assert [(m["direction"], m["message_id"]) for m in await rows(app, request_messages)] == [
        ("in", "<c1@bigco>"), ("out", "<r1@example.com>")]


async def test_request_show_prints_no_control_characters(make_app, tmp_path, registry_url):
    """A customer's subject carrying terminal escapes (RFC 2047 hides any byte: ESC ] 0;
    retitles the terminal, ESC [2J clears it) is printed by `request show` and `registry
    search` with the escapes written out, Cyrillic as it is. Before, the timeline printed
    the subject raw into the terminal of whoever ran the command."""
    import asyncio

    app, port = await start(make_app, tmp_path, registry_url)
    who = "client@bigco.example"
    raw = (f"From: {who}\r\nTo: support@example.com\r\nMessage-ID: <e1@bigco>\r\n"
           "Subject: =?utf-8?q?=D0=9F=D1=80=D0=B8=D0=BD=D1=82=D0=B5=D1=80=1B]0;owned=07=1B[2J?=\r\n"
           "\r\nhi\r\n").encode()
    await send(port, raw, who)
    run = cli_on(tmp_path, registry_url)

    def cli(*argv):
        code, out, err = run(*argv)
        return code, out + err
    for argv in (("request", "show", "1"), ("registry", "search", "--from", who),
                 ("registry", "history", who)):
        code, text = await asyncio.to_thread(cli, *argv)
        assert code == 0 and "Принтер" in text, (argv, text)
        assert not any(c in text for c in "\x1b\x07"), (argv, text)
    assert "message in   client@bigco.example  Принтер\\x1b]0;owned\\x07\\x1b[2J\n" in \
        (await asyncio.to_thread(cli, "request", "show", "1"))[1]


async def test_reply_copy_to_a_subaddress_of_the_replies_address_answers(make_app, tmp_path,
                                                                        registry_url):
    """A copy of our reply sent to `replies+detail@` (a ticket flow or a client adding a
    detail; the address book delivers it to the replies mailbox as `replies@`) or written in
    another case answers the request, as a copy to `replies@` does. Before, only the exact
    configured address was reply tracking: the copy opened nothing, answered nothing, and
    the request went on to its reminder."""
    app, port = await start(make_app, tmp_path, registry_url)
    await send(port, mail("client@bigco.example", "printer", "c1@bigco"), "client@bigco.example")
    await send(port, mail("ivanov@example.com", "Re: printer", "r1@example.com", "<c1@bigco>",
                          to="client@bigco.example"), "ivanov@example.com",
               "replies+ticket-1@example.com")
    [r] = await rows(app, requests)
    assert (r["status"], r["first_response_at"]) == ("answered", MONDAY)
    await send(port, mail("ivanov@example.com", "Re: [#1] printer", "r2@example.com",
                          body="[closed] done"), "ivanov@example.com", "Replies+x@Example.COM")
    [r] = await rows(app, requests)
    assert r["status"] == "closed"
    links = await rows(app, request_messages)
    assert [(m["direction"], m["message_id"]) for m in links] == [
        ("in", "<c1@bigco>"), ("out", "<r1@example.com>"), ("out", "<r2@example.com>")]



async def test_an_outsider_writing_to_the_replies_address_answers_and_closes_nothing(
        make_app, tmp_path, registry_url):
    """Anyone can write to replies@: a customer (or anyone who guessed the address) sending
    "[#1] ... [closed]" there marked request 1 answered and closed it. A copy counts as our
    reply only when its envelope sender is an address of the book's domains (the senders
    Postfix's sender_bcc_maps copies); the outsider's leaves an event on the request."""
    app, port = await start(make_app, tmp_path, registry_url)
    await send(port, mail("client@bigco.example", "printer", "c1@bigco"), "client@bigco.example")
    await send(port, mail("ivanov@example.com", "Re: [#1] printer", "x1@evil", "<c1@bigco>",
                          body="[closed] done"), "mallory@evil.example", "replies@example.com")
    [r] = await rows(app, requests)
    assert (r["status"], r["first_response_at"]) == ("open", None)
    events = [(e["kind"], e["detail"]) for e in await rows(app, request_events)]
    assert ("join_refused", "a copy to replies@example.com from mallory@evil.example: not "
            "counted as our reply (its envelope sender is not an address of the address "
            "book's domains)") in events
    await send(port, mail("ivanov@example.com", "Re: [#1] printer", "r1@example.com",
                          "<c1@bigco>", body="[closed] done"), "ivanov@example.com",
               "replies@example.com")
    [r] = await rows(app, requests)
    assert r["status"] == "closed"


MOVED = """\
moved:
  old-support@example.com: {now: support@example.com, deliver: true, autoreply: moved}
autoreplies:
  moved:
    from: old
    subject: "Auto: {subject}"
    period: 7d
    body: "{old} is no longer in use; please write to {new}."
"""


@pytest.mark.parametrize("refs", ["in-reply-to", "references"])
async def test_an_answer_to_our_autoreply_joins_the_request_it_answered(make_app, tmp_path,
                                                                        registry_url, refs):
    """The customer writes to a moved address, which opens request 1 and answers with the
    'moved' autoreply; the customer answers the autoreply, naming only its Message-ID
    (In-Reply-To alone, as some clients do, or References of the autoreply's own ID): the
    answer joins request 1 with its owner, as a follow-up of the customer's first message
    does. Before, the autoreply's Message-ID led nowhere and the answer opened request 2
    (for the team's next member)."""
    from mailrouter.registry.models import outbox
    app = await make_app(routing=write_routing(tmp_path, MOVED), registry=RegistryConfig(registry_url),
                         control=ControlConfig(replies=("replies@example.com",)))
    app.pipeline.clock = lambda: MONDAY
    port = app.bound["smtp"][1]
    who = "client@bigco.example"
    await send(port, mail(who, "printer", "c1@bigco", to="old-support@example.com"), who,
               "old-support@example.com")
    [row] = await rows(app, outbox)
    ours = email.message_from_bytes(row["raw"])["Message-ID"]
    answer = mail(who, "Re: Auto: printer", "c2@bigco", to="old-support@example.com")
    header = (f"In-Reply-To: {ours}\r\n" if refs == "in-reply-to" else f"References: {ours}\r\n")
    await send(port, answer.replace(b"\r\n\r\n", f"\r\n{header}\r\n".encode(), 1), who,
               "old-support@example.com")
    reqs = await rows(app, requests)
    assert [(r["id"], r["owner"]) for r in reqs] == [(1, "ivanov")], reqs
    links = await rows(app, request_messages)
    assert [(m["request_id"], m["message_id"]) for m in links] == [
        (1, "<c1@bigco>"), (1, "<c2@bigco>")]


async def test_request_show_prints_owner_changes_as_the_web_view_does(make_app, tmp_path,
                                                                      registry_url):
    """`request show` prints each owner change as the web view's history does: who made
    it (by name), from whom to whom (by name), the team's move, why, the time in the
    company's zone. Before, the text printed the event's JSON as stored:
    `{"from": "ivanov", "to": "petrova", "why": ["reassigned by smirnov (web view)"], ...}`."""
    import asyncio

    from mailrouter.control.actions import reassign
    app, port = await start(make_app, tmp_path, registry_url)
    await send(port, mail("client@bigco.example", "printer", "c1@bigco"), "client@bigco.example")
    later = datetime(2027, 1, 11, 8, 30, tzinfo=timezone.utc)
    await app.registry.write("t", lambda c: reassign(c, 1, "petrova", "smirnov", later,
                                                      "web view"))
    run = cli_on(tmp_path, registry_url)

    def cli(*argv):
        code, out, err = run(*argv)
        return code, out + err
    code, text = await asyncio.to_thread(cli, "request", "show", "1")
    assert code == 0, text
    owner = [line for line in text.splitlines() if " owner " in line]
    assert owner == [
        "  2027-01-11 10:00:00+03:00 owner        -  (nobody) -> Пётр Иванов · team duty: "
        "round-robin: ivanov",
        "  2027-01-11 11:30:00+03:00 owner        Сергей Смирнов  Пётр Иванов -> Анна Петрова · "
        "reassigned by smirnov (web view)"]
    assert "{" not in "".join(owner)
    code, doc = await asyncio.to_thread(cli, "request", "show", "1", "--json")
    assert '\\"reassigned by smirnov (web view)\\"' in doc      # --json keeps the registry's

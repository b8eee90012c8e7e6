"""The answer a request owes after it is reopened: by the customer's new mail (on an
answered, waiting or quiet-closed request) or by a person's `reopen`, a new response clock
starts on the request's business calendar, reminded and escalated like the first one,
shown on the board and in `request show`, across daemon restarts. Real daemons on
loopback, real SMTP clients, SQLite and PostgreSQL registries.

The company of tests/control_support.py: Moscow calendar Mon-Fri 09:00-18:00, team `duty`
= ivanov, petrova round-robin (ivanov's deputy is petrova), first response 4 business
hours; reminder at the due time, escalation two business hours later."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, select

from mailrouter.config import ControlConfig, RegistryConfig
from mailrouter.control import actions
from mailrouter.control.queries import board
from mailrouter.control.sla import Scheduler
from mailrouter.control.tables import request_alerts, request_events, requests
from mailrouter.registry.models import outbox
from tests.control_support import mail, send, until_pg_waiting, write_routing

pytestmark = pytest.mark.asyncio
MSK = timezone(timedelta(hours=3))
CONTROL = ControlConfig(replies=("replies@example.com",), remind_after=0,
                        escalate_after=2 * 3600, close_after=3 * 86400)
WHO = "client@bigco.example"


def msk(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2027, 1, day, hour, minute, tzinfo=MSK).astimezone(timezone.utc)


class Company:
    """A daemon of the company on one registry, restarted at will, with its clock."""

    def __init__(self, make_app, tmp_path, url: str) -> None:
        self.make_app, self.tmp_path, self.url = make_app, tmp_path, url
        self.routing = write_routing(tmp_path)
        self.app = None
        self.port = 0

    async def start(self, at: datetime) -> None:
        """A daemon started afresh (the one before stopped) whose clock says `at`."""
        if self.app is not None:
            self.app.request_stop()
            await self.app.wait_stopped()
        self.app = await self.make_app(routing=self.routing, registry=RegistryConfig(self.url),
                                       control=CONTROL)
        self.app.sla_task.cancel()      # the test's scheduler ticks with the test's clock
        self.at(at)
        self.port = self.app.bound["smtp"][1]

    def at(self, when: datetime) -> None:
        self.app.pipeline.clock = lambda: when

    async def customer(self, when: datetime, msgid: str, refs: str = "") -> None:
        self.at(when)
        await send(self.port, mail(WHO, "Re: printer" if refs else "printer", msgid, refs), WHO)

    async def reply(self, when: datetime, msgid: str, refs: str, marker: str = "") -> None:
        """ivanov's answer, as the reply-tracking copy sender_bcc_maps sends us."""
        self.at(when)
        await send(self.port, mail("ivanov@example.com", f"Re: [#1] {marker}printer", msgid, refs,
                                   to=WHO, body="answer"), "ivanov@example.com",
                   "replies@example.com")

    async def tick(self, when: datetime) -> list[tuple[str, str | None]]:
        made = await Scheduler(self.app.registry, CONTROL, self.app.snapshot).tick(when)
        return [(a.stage, a.recipient) for a in made]

    async def request(self) -> dict:
        [row] = await self.app.registry.read("t", lambda conn: [
            dict(r._mapping) for r in conn.execute(select(requests))])
        return row

    async def board(self, when: datetime) -> dict:
        cals = self.app.snapshot().rules.calendars
        return await self.app.registry.read("t", lambda conn: board(conn, when, cals))

    async def cli(self, *argv: str) -> tuple[int, str, str]:
        """`mailrouter ARGV -c config.yaml` against this company's registry and rules:
        (exit code, stdout, stderr)."""
        from mailrouter.cli import main
        cfg = self.tmp_path / "config.yaml"
        cfg.write_text(f"registry: {{url: '{self.url}'}}\n"
                       f"routing: ['{self.tmp_path}/rules/*.yaml']\n", encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()

        def go() -> int:
            with redirect_stdout(out), redirect_stderr(err):
                return main([*argv, "-c", str(cfg)])
        code = await asyncio.to_thread(go)
        return code, out.getvalue(), err.getvalue()

    async def show(self, text: bool = False) -> dict:
        """`mailrouter request show 1 --json`, the command line's own output (`text`: its
        text output, as {"text": ...})."""
        code, out, err = await self.cli("request", "show", "1", *([] if text else ["--json"]))
        assert code == 0, err
        return {"text": out} if text else json.loads(out)


async def test_the_customers_new_mail_starts_a_new_response_clock(make_app, tmp_path,
                                                                   registry_url):
    """Answered on Monday within the SLA; the customer writes again Monday 15:00: the
    request is open again with an answer due Tuesday 10:00 (3 business hours on Monday, 1
    on Tuesday). Restart. The board lists it overdue at 10:30, `request show` says which
    answer is due when; the scan reminds ivanov at 10:00 and escalates to his deputy at
    12:00, each once and each mailed under its own outbox key (the first response's
    reminder key unchanged). Our answer stops the clock: nothing more is sent, the board
    no longer lists it. Before, the reopened request was never reminded and the board
    showed it as fine."""
    co = Company(make_app, tmp_path, registry_url)
    await co.start(msk(11, 10))
    await co.customer(msk(11, 10), "c1@bigco")
    await co.reply(msk(11, 11), "r1@example.com", "<c1@bigco>")
    assert await co.tick(msk(11, 14)) == []                 # answered before its due time
    await co.customer(msk(11, 15), "c2@bigco", "<c1@bigco> <r1@example.com>")
    r = await co.request()
    assert (r["status"], r["response_round"], r["response_due"], r["first_response_at"]) == (
        "open", 2, msk(12, 10), msk(11, 11))
    assert await co.tick(msk(11, 17)) == []

    await co.start(msk(12, 10, 30))
    b = await co.board(msk(12, 10, 30))
    assert [(x["id"], x["response_round"], x["overdue"], x["left"]) for x in b["requests"]] == [
        (1, 2, True, -0.5)]
    assert b["per_owner"] == [{"owner": "ivanov", "open": 1, "awaiting": 1, "overdue": 1}]
    shown = await co.show()
    assert (shown["status"], shown["response_round"], shown["response_due"]) == (
        "open", 2, msk(12, 10).isoformat())
    assert shown["events"][-1]["detail"] == (
        "answered -> open: the customer wrote; answer due 2027-01-12T10:00:00+03:00")
    assert "  the customer wrote again: answer 2 due 2027-01-12 10:00:00+03:00\n" in (
        await co.show(text=True))["text"]

    assert await co.tick(msk(12, 10)) == [("remind", "ivanov")]
    assert await co.tick(msk(12, 11, 59)) == []
    assert await co.tick(msk(12, 12)) == [("escalate", "petrova")]
    assert await co.tick(msk(12, 13)) == []
    alerts = await co.app.registry.read("t", lambda conn: [
        (a.round, a.stage, a.subject) for a in conn.execute(
            select(request_alerts).order_by(request_alerts.c.id))])
    assert alerts == [(2, "remind", "[#1] Reminder: the customer wrote again: printer"),
                      (2, "escalate", "[#1] Escalation: the customer wrote again: printer")]
    keys = await co.app.registry.read("t", lambda conn: sorted(
        conn.execute(select(outbox.c.dedupe).where(outbox.c.kind.like("sla-%"))).scalars()))
    assert keys == ["sla:1:escalate:2", "sla:1:remind:2"]

    await co.reply(msk(12, 13), "r2@example.com", "<c2@bigco>")
    r = await co.request()
    assert (r["status"], r["response_due"]) == ("answered", None)
    assert (await co.board(msk(12, 14)))["requests"] == []
    assert await co.tick(msk(13, 18)) == []


async def test_a_waiting_or_quiet_closed_request_and_a_reopen_by_hand_owe_an_answer(
        make_app, tmp_path, registry_url):
    """Every way back to `open` starts a clock: the customer answering our `[waiting]`
    question (due 4 business hours later, reminded then); the customer writing after the
    request was closed for quiet (control.close_after); a person reopening a request closed
    by hand (the web view's action: `open`, not `answered` as before, due 4 business hours
    from the reopen). Each round has its own reminder; a restart between them changes
    nothing."""
    co = Company(make_app, tmp_path, registry_url)
    await co.start(msk(11, 10))
    await co.customer(msk(11, 10), "c1@bigco")
    await co.reply(msk(11, 11), "r1@example.com", "<c1@bigco>", marker="[waiting] ")
    assert (await co.request())["status"] == "waiting"
    await co.customer(msk(11, 12), "c2@bigco", "<c1@bigco> <r1@example.com>")
    assert (await co.request())["response_due"] == msk(11, 16)
    assert await co.tick(msk(11, 16)) == [("remind", "ivanov")]
    await co.reply(msk(11, 16, 30), "r2@example.com", "<c2@bigco>")

    await co.start(msk(14, 17))
    assert await co.tick(msk(14, 17)) == []                 # quiet for 3 days: closed
    assert (await co.request())["status"] == "closed"
    await co.customer(msk(18, 9), "c3@bigco", "<c2@bigco> <r2@example.com>")
    r = await co.request()
    assert (r["status"], r["response_round"], r["response_due"]) == ("open", 3, msk(18, 13))
    assert await co.tick(msk(18, 13)) == [("remind", "ivanov")]
    await co.reply(msk(18, 13, 30), "r3@example.com", "<c3@bigco>")

    await co.start(msk(18, 14))
    cals = co.app.snapshot().rules.calendars
    await co.app.registry.write("t", lambda conn: actions.close(
        conn, 1, "smirnov", msk(18, 14), "web view"))
    await co.app.registry.write("t", lambda conn: actions.reopen(
        conn, 1, "smirnov", msk(18, 14, 30), "web view", cals))
    r = await co.request()
    assert (r["status"], r["response_round"], r["response_due"]) == ("open", 4, msk(19, 9, 30))
    assert await co.cli("request", "reopen", "1") == (
        1, "", "mailrouter request reopen: request #1 not changed: request #1 is not closed (it is open)\n")
    assert await co.cli("request", "reopen", "7") == (
        1, "", "mailrouter request reopen: request #7 not changed: no request #7\n")
    assert [x["id"] for x in (await co.board(msk(18, 15)))["requests"]] == [1]
    # a person reopened it: said so, not "the customer wrote again" (what it said before);
    # the reopen's line in the history gives its due time as every other time is printed
    # (it was ISO, "2027-01-19T09:30:00+03:00", the registry's text of the event)
    shown = (await co.show(text=True))["text"]
    assert "  reopened by smirnov: answer 4 due 2027-01-19 09:30:00+03:00\n" in shown
    assert ("2027-01-18 14:30:00+03:00 status       smirnov  closed -> open: reopened by "
            "smirnov (web view); answer due 2027-01-19 09:30:00+03:00\n") in shown
    assert not re.search(r"\d\d-\d\dT\d\d:", shown), shown
    assert await co.tick(msk(18, 18)) == []
    assert await co.tick(msk(19, 9, 30)) == [("remind", "ivanov")]
    rounds = await co.app.registry.read("t", lambda conn: [
        (a.round, a.stage, a.subject, a.body.split("\n")[0]) for a in conn.execute(
            select(request_alerts).order_by(request_alerts.c.id))])
    assert rounds == [
        (2, "remind", "[#1] Reminder: the customer wrote again: printer",
         "Request #1 has had no answer since the customer wrote again."),
        (3, "remind", "[#1] Reminder: the customer wrote again: printer",
         "Request #1 has had no answer since the customer wrote again."),
        (4, "remind", "[#1] Reminder: reopened by smirnov: printer",
         "Request #1 has had no answer since smirnov reopened it.")]
    assert (await co.cli("request", "close", "1"))[:2] == (0, "request #1 closed\n")
    assert await co.cli("request", "reopen", "1") == (0, "request #1 open\n", "")
    r = await co.request()
    assert (r["status"], r["response_round"]) == ("open", 5) and r["response_due"] is not None
    assert (await co.show())["events"][-1]["detail"].startswith(
        "closed -> open: reopened by cli (mailrouter request reopen); answer due ")


async def test_migration_0010_gives_open_requests_their_due_and_term(make_app, tmp_path):
    """A registry brought down to 0009 and up again: an open request without a first
    response owes it (response_due = first_response_due) and gets its SLA term from the
    opening message's decision, so a later reopen has a clock; an answered one owes
    nothing. Reminders made before the downgrade of round 1 are kept."""
    from alembic import command
    from alembic.config import Config

    from mailrouter.registry.store import MIGRATIONS, _alembic_upgrade
    path = tmp_path / "registry.db"
    co = Company(make_app, tmp_path, f"sqlite+aiosqlite:///{path}")
    await co.start(msk(11, 10))
    await co.customer(msk(11, 10), "c1@bigco")
    assert await co.tick(msk(11, 14)) == [("remind", "ivanov")]
    co.app.request_stop()
    await co.app.wait_stopped()
    co.app = None

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("path_separator", "os")
        config.attributes["connection"] = conn
        command.downgrade(config, "0009")
        _alembic_upgrade(conn)
    engine.dispose()

    await co.start(msk(11, 15))
    r = await co.request()
    assert (r["response_due"], r["response_round"], r["sla_term"]) == (msk(11, 14), 1, "4h")
    assert await co.tick(msk(11, 16)) == [("escalate", "petrova")]
    await co.reply(msk(11, 16), "r1@example.com", "<c1@bigco>")
    await co.customer(msk(11, 17), "c2@bigco", "<c1@bigco> <r1@example.com>")
    assert (await co.request())["response_due"] == msk(12, 12)


async def test_a_request_given_to_another_team_escalates_to_that_teams_head(make_app, tmp_path):
    """The web view's reassign of duty's request to popov (team sales, head kuznetsova):
    the request moves to sales, so when popov (no deputy) lets it go unanswered, the
    escalation goes to kuznetsova. Before, the request kept team duty and the escalation
    went to smirnov, head of a team that no longer had it; the history says the team moved."""
    from tests.control_support import ROUTING
    co = Company(make_app, tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    path = tmp_path / "rules" / "company.yaml"       # the company's, with team sales
    path.write_text(ROUTING.replace(
        "  smirnov: {", "  popov: {address: popov@example.com}\n"
        "  kuznetsova: {address: kuznetsova@example.com}\n  smirnov: {").replace(
        "teams:\n", "teams:\n  sales: {members: [popov], head: kuznetsova}\n"), encoding="utf-8")
    await co.start(msk(11, 10))
    await co.customer(msk(11, 10), "c1@bigco")
    teams = co.app.snapshot().book.teams
    await co.app.registry.write("t", lambda conn: actions.reassign(
        conn, 1, "popov", "smirnov", msk(11, 10, 30), "web view", teams))
    r = await co.request()
    assert (r["owner"], r["team"]) == ("popov", "sales")
    assert await co.tick(msk(11, 14)) == [("remind", "popov")]
    assert await co.tick(msk(11, 16)) == [("escalate", "kuznetsova")]
    shown = await co.show()
    moved = json.loads([e for e in shown["events"] if e["kind"] == "owner"][-1]["detail"])
    assert moved["team"] == {"from": "duty", "to": "sales"}


def _replace_in(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


async def test_one_of_ours_is_known_by_any_spelling_the_book_folds_to_their_address(
        make_app, tmp_path, registry_url):
    """A person whose address is straße@example.com (join: domain) forwards the answered
    thread from STRASSE@example.com, a spelling the address book and Postfix fold to
    straße@ (mail to it reaches them): the forward is theirs, one of ours, and the request
    stays answered. The staff lookup lower-cased the From (strasse@) against lower-cased
    people's addresses (straße@), missed, and reopened it as if the customer wrote again.
    Before that, every message of a request this person owned got 451 (the owner header
    could not be built for a non-ASCII address)."""
    co = Company(make_app, tmp_path, registry_url)
    _replace_in(Path(co.routing[0]), "address: ivanov@example.com", "address: straße@example.com")
    co.app = await make_app(routing=co.routing, registry=RegistryConfig(registry_url),
                            control=dataclasses.replace(CONTROL, join="domain"))
    co.app.sla_task.cancel()
    co.port = co.app.bound["smtp"][1]
    await co.customer(msk(11, 10), "c1@bigco")
    assert (await co.request())["owner"] == "ivanov"
    await co.reply(msk(11, 11), "r1@example.com", "<c1@bigco>")
    co.at(msk(11, 12))
    await send(co.port, mail("STRASSE@example.com", "Fwd: [#1] printer", "fw1@example.com",
                             body="see below"), "STRASSE@example.com")
    r = await co.request()
    assert (r["status"], r["response_round"], r["response_due"]) == ("answered", 1, None)
    shown = await co.show()
    assert shown["events"][-1]["detail"] == "stays answered: ivanov is one of ours, not the customer"


async def test_one_of_ours_forwarding_a_request_to_the_team_does_not_reopen_it(
        make_app, tmp_path, registry_url):
    """ivanov answers the customer, then forwards the thread ("Fwd: [#1] printer") to
    support@ from his own address: the forward joins the request, which stays answered (a
    "stays answered" event names him), with no answer due and nothing reminded. The
    customer's own next mail reopens it; so does a stranger's From: ivanov@ sent from
    outside our domains (one of ours is known by the envelope sender too, as a reply's
    copy is). Before, the owner's forward reopened the request as if the customer had
    written, and the owner was reminded that "the customer wrote again"."""
    co = Company(make_app, tmp_path, registry_url)
    await co.start(msk(11, 10))
    await co.customer(msk(11, 10), "c1@bigco")
    await co.reply(msk(11, 11), "r1@example.com", "<c1@bigco>")
    co.at(msk(11, 12))
    await send(co.port, mail("ivanov@example.com", "Fwd: [#1] printer", "fw1@example.com",
                             body="see below"), "ivanov@example.com")
    r = await co.request()
    assert (r["status"], r["response_round"], r["response_due"]) == ("answered", 1, None)
    shown = await co.show()
    assert [m["message_id"] for m in shown["messages"]] == [
        "<c1@bigco>", "<r1@example.com>", "<fw1@example.com>"]
    assert shown["events"][-1]["detail"] == "stays answered: ivanov is one of ours, not the customer"
    assert await co.tick(msk(12, 18)) == []

    await co.customer(msk(13, 10), "c2@bigco", "<c1@bigco> <r1@example.com>")
    r = await co.request()
    assert (r["status"], r["response_round"], r["response_due"]) == ("open", 2, msk(13, 14))
    await co.reply(msk(13, 11), "r2@example.com", "<c2@bigco>")
    co.at(msk(13, 12))
    await send(co.port, mail("ivanov@example.com", "Fwd: [#1] printer", "forged@elsewhere"),
               "someone@elsewhere.example")
    r = await co.request()
    assert (r["status"], r["response_round"], r["response_due"]) == ("open", 3, msk(13, 16))


async def test_closed_or_waiting_by_the_command_line_owes_no_answer(make_app, tmp_path,
                                                                     registry_url):
    """The customer writes again on an answered request (answer 2 due); `mailrouter request
    wait 1` and `request close 1` each leave no answer due, as a reply's marker and the web
    view's close do, and the request's page in the web view shows no "next answer due".
    Before, the due time stayed on the waiting or closed request, and its page still said
    when the next answer was due."""
    from mailrouter.config import Listener, WebConfig
    from mailrouter.registry.accounts import hash_password, set_password
    from tests.test_web import PASSWORD, Client
    co = Company(make_app, tmp_path, registry_url)
    await co.start(msk(11, 10))
    await co.customer(msk(11, 10), "c1@bigco")
    await co.reply(msk(11, 11), "r1@example.com", "<c1@bigco>")
    await co.customer(msk(11, 15), "c2@bigco", "<c1@bigco> <r1@example.com>")
    assert (await co.request())["response_due"] == msk(12, 10)
    assert (await co.cli("request", "wait", "1"))[0] == 0
    r = await co.request()
    assert (r["status"], r["response_due"]) == ("waiting", None)
    await co.customer(msk(11, 16), "c3@bigco", "<c2@bigco>")
    assert (await co.request())["response_due"] == msk(12, 11)
    assert (await co.cli("request", "close", "1"))[0] == 0
    r = await co.request()
    assert (r["status"], r["response_due"]) == ("closed", None)

    co.app.request_stop()
    await co.app.wait_stopped()
    app = await make_app(routing=co.routing, registry=RegistryConfig(co.url), control=CONTROL,
                         web=Listener("127.0.0.1", 0), webui=WebConfig(admins=("ivanov",)))
    now = datetime.now(timezone.utc)
    await app.registry.write("t", lambda c: set_password(c, "ivanov", hash_password(PASSWORD), now))
    host, port = app.bound["web"]
    web = Client(f"http://{host}:{port}")
    try:
        assert await web.login("ivanov") == 303
        status, page, _ = await web.get("/request/1")
        assert status == 200 and 'id="status">closed<' in page and 'id="next-due"' not in page
    finally:
        await web.http.close()


async def test_request_show_names_a_message_without_a_message_id_by_its_key(
        make_app, tmp_path, registry_url):
    """A customer's mail with no Message-ID opens a request; `request show` printed its
    decision's reasons as "why None support@example.com: ...". It names the message by the
    head of its registry key instead."""
    co = Company(make_app, tmp_path, registry_url)
    await co.start(msk(11, 10))
    raw = re.sub(rb"Message-ID: <[^>]*>\r\n", b"", mail(WHO, "printer", "gone@bigco"))
    assert b"Message-ID" not in raw
    co.at(msk(11, 10))
    await send(co.port, raw, WHO)
    text = (await co.show(text=True))["text"]
    assert "why None" not in text, text
    key = (await co.show())["messages"][0]["key"]
    assert f"  why (no Message-ID, key {key[:12]}) support@example.com: " in text, text


async def _request_row(reg, status: str, **more) -> int:
    """One request of WHO's, ivanov's in team duty, opened Monday 10:00, in `status`; its id."""
    return await reg.write("a request", lambda conn: conn.execute(
        requests.insert().values(
            opened_at=msk(11, 10), message_key="k" * 64, counterparty=WHO,
            counterparty_domain="bigco.example", owner="ivanov", team="duty",
            status=status, subject="printer", tags=[], sla_term="4h",
            last_in_at=msk(11, 10), response_round=1, **more)
        .returning(requests.c.id)).scalar_one())


async def test_a_reopen_by_hand_racing_the_customers_mail_reopens_once(pg_db):
    """A closed request; the customer's new mail is being recorded at one instance (its
    transaction has reopened the request, not committed yet) while a head clicks reopen at
    another. The head's reopen waits for the customer's and then finds the request open:
    refused, one reopen, one new round. Before, it read `closed` before the customer's
    commit and reopened it again: two "closed -> open" lines in the history and the answer
    owed counted as the third (round 3, "Answer 3 was due" in its reminder)."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy import func

    from mailrouter.control.store import Plan, apply_plan
    from mailrouter.registry import Registry
    from tests.test_registry_pg_daemon import _dsn

    customer, head = await Registry.open(pg_db), await Registry.open(pg_db)
    gate = await asyncpg.connect(_dsn(pg_db), timeout=30)
    at = msk(18, 14)
    try:
        rid = await _request_row(customer, "closed", closed_at=msk(12, 10))
        await gate.execute("SELECT pg_advisory_lock(4242)")
        plan = Plan("join", WHO, "<again@bigco>", rid, "ivanov", "duty")

        def join_then_wait(conn):        # the record: the join, then held before its commit
            apply_plan(conn, plan, "m" * 64, at)
            conn.execute(select(func.pg_advisory_xact_lock(4242)))
        joined = asyncio.ensure_future(customer.write("record", join_then_wait))

        await until_pg_waiting(gate, "advisory")
        def reopen(conn):             # as the web view and `request reopen` call it
            try:
                actions.reopen(conn, rid, "smirnov", at, "web", {})
            except ValueError as exc:
                return str(exc)
            return None
        reopened = asyncio.ensure_future(head.write("reopen", reopen))
        await until_pg_waiting(gate, "transactionid", reopened)  # the reopen waits for the customer's row lock
        await gate.execute("SELECT pg_advisory_unlock(4242)")
        await joined
        assert await reopened == f"request #{rid} is not closed (it is open)"

        def story(conn):
            row = conn.execute(select(requests.c.status, requests.c.response_round)
                               .where(requests.c.id == rid)).one()
            opens = conn.execute(select(func.count()).select_from(request_events).where(
                request_events.c.request_id == rid,
                request_events.c.detail.like("closed -> open%"))).scalar_one()
            return tuple(row), opens
        assert await customer.read("t", story) == (("open", 2), 1)
    finally:
        await gate.close()
        await customer.close()
        await head.close()


async def test_request_close_racing_a_change_names_the_status_it_closed(pg_db, tmp_path):
    """`mailrouter request close N` while another transaction (our reply being recorded at
    another instance) turns the request from open to answered, not committed yet: the close
    read `open` at once, waited only at its UPDATE, and its history line said "open ->
    closed" of a request that was answered. It now reads the status with the row locked
    (as the web view's actions do): "answered -> closed"."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy import func, update

    from mailrouter.cli import main
    from mailrouter.control.tables import request_events
    from mailrouter.registry import Registry
    from tests.test_registry_pg_daemon import _dsn
    reg = await Registry.open(pg_db)
    gate = await asyncpg.connect(_dsn(pg_db), timeout=30)
    try:
        rid = await _request_row(reg, "open")
        await gate.execute("SELECT pg_advisory_lock(4244)")

        def answer_then_wait(conn):      # our reply's record: held before its commit
            conn.execute(update(requests).where(requests.c.id == rid).values(status="answered"))
            conn.execute(select(func.pg_advisory_xact_lock(4244)))
        answered = asyncio.ensure_future(reg.write("record", answer_then_wait))
        await until_pg_waiting(gate, "advisory")
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"registry: {{url: '{pg_db}'}}\n", encoding="utf-8")
        closing = asyncio.ensure_future(asyncio.to_thread(
            main, ["request", "close", str(rid), "-c", str(cfg)]))
        await until_pg_waiting(gate, "transactionid", closing)  # the close waits for the record's row lock
        await gate.execute("SELECT pg_advisory_unlock(4244)")
        await answered
        assert await closing == 0
        lines = await reg.read("t", lambda conn: list(conn.execute(
            select(request_events.c.detail).where(request_events.c.request_id == rid,
                                                  request_events.c.kind == "status")).scalars()))
        assert lines == ["answered -> closed: mailrouter request close"], lines
    finally:
        await gate.close()
        await reg.close()

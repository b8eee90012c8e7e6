"""Execution control with two daemons on one PostgreSQL registry (scale-out, issue 10), or
with two worker processes (`workers: 2`) on one SQLite file.

Two real `mailrouter run -c` processes share the registry and the Maildir root. For
each thread the original goes to one instance while, at the same moment, its reply
(In-Reply-To/References) goes to the other and the original again (an MTA's retry)
to the other too; afterwards two subject-only follow-ups ("Re: [#N] ...", no
references) go to both at once. Whatever order the transactions commit in, the
registry must hold one request per thread, holding each message once, with one owner
and its history in order, and every delivered copy must name that owner
(X-Mailrouter-Owner). A 4xx is allowed (the test resends, as the MTA would). The
last test makes the race certain with two in-process apps whose records wait until both
messages are planned.
"""

from __future__ import annotations

import asyncio
import email
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import select

from mailrouter.config import ControlConfig, RegistryConfig
from mailrouter.control.service import OWNER_HEADER
from mailrouter.control.tables import request_messages, requests, team_picks
from tests.control_support import mail, send, write_routing
from tests.support.daemon import DaemonProcess, maildir_files
from tests.test_registry_pg_daemon import fetch

pytestmark = pytest.mark.asyncio

THREADS = 40


def _config(d: DaemonProcess, name: str, registry: str, mail_root: Path, routing: str,
            workers: int) -> None:
    d.config.write_text(
        f"hostname: {name}\n"
        f"listen: {{smtp: '127.0.0.1:{d.smtp}', lmtp: '127.0.0.1:{d.lmtp}', "
        f"admin: '127.0.0.1:{d.admin}'}}\n"
        f"routing: ['{routing}']\n"
        f"registry: {{url: '{registry}'}}\n"
        f"delivery: {{maildir_root: '{mail_root}'}}\n"
        f"control: {{replies: replies@example.com}}\n"
        f"workers: {workers}\nshutdown_grace: 10\nlog_level: WARNING\n", encoding="utf-8")


async def _send(port: int, raw: bytes, sender: str) -> None:
    """Send until 250, as an MTA would; a 5xx fails the test."""
    for _ in range(20):
        try:
            await aiosmtplib.send(raw, sender=sender, recipients=["support@example.com"],
                                  hostname="127.0.0.1", port=port, timeout=60)
            return
        except aiosmtplib.SMTPResponseException as exc:
            assert exc.code // 100 == 4, exc
    raise AssertionError(f"never accepted: {raw[:80]!r}")


@pytest.fixture(params=["postgresql", "sqlite"])
async def cluster(request, pg_db, tmp_path):
    """(registry URL, two SMTP ports): two daemons on one PostgreSQL database, or one daemon
    with `workers: 2` (two processes on one listener) on one SQLite file."""
    routing = write_routing(tmp_path)[0]
    if request.param == "postgresql":
        url, setups = pg_db, [("mx-a.test", 1), ("mx-b.test", 1)]
    else:
        url, setups = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}", [("mx.test", 2)]
    daemons = []
    for name, workers in setups:
        (tmp_path / name).mkdir()
        d = DaemonProcess(tmp_path / name)
        _config(d, name, url, tmp_path / "mail", routing, workers)
        daemons.append(d)
    try:
        for d in daemons:        # one after the other: both would create the schema at once
            await asyncio.to_thread(d.start, 60.0)
        ports = [d.smtp for d in daemons]
        yield url, (ports * 2)[:2], daemons[0].config
    finally:
        for d in daemons:
            await asyncio.to_thread(d.stop)


async def _rows(url: str, sql: str) -> list[dict]:
    if url.startswith("postgresql"):
        return await fetch(url, sql)
    with sqlite3.connect(url.partition(":///")[2]) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql)]


async def original_and_reply_at_once(apps: list) -> None:
    """An original to the first app and its reply (In-Reply-To the original) to the second,
    sent together."""
    who = "client@bigco.example"
    await asyncio.gather(
        send(apps[0].bound["smtp"][1], mail(who, "printer", "a1@bigco"), who),
        send(apps[1].bound["smtp"][1], mail(who, "Re: printer", "a2@bigco", "<a1@bigco>"), who))


def hold_records_until_both_planned(apps: list) -> None:
    """Each instance's record waits until both instances have planned their message: the
    two transactions overlap, as two MTAs' deliveries at one moment do."""
    planned, count = asyncio.Event(), [0]
    for app in apps:
        control, registry = app.pipeline.control, app.pipeline.registry

        async def counting_plan(*a, plan=control.plan, **k):
            try:
                return await plan(*a, **k)
            finally:
                count[0] += 1
                if count[0] == 2:
                    planned.set()

        async def held_record(*a, record=registry.record, **k):
            await asyncio.wait_for(planned.wait(), 10)
            return await record(*a, **k)
        control.plan, registry.record = counting_plan, held_record


async def test_a_thread_sent_to_two_instances_at_once_is_one_request(cluster, tmp_path):
    url, (a, b), config = cluster

    async def thread(n: int) -> None:
        who = f"client{n}@bigco.example"
        first = mail(who, f"printer {n}", f"o{n}@bigco")
        reply = mail(who, f"Re: printer {n}", f"r{n}@bigco", f"<o{n}@bigco>")
        one, other = (a, b) if n % 2 else (b, a)
        await asyncio.gather(_send(one, first, who), _send(other, reply, who),
                             _send(other, first, who))

    await asyncio.gather(*(thread(n) for n in range(THREADS)))
    reqs = await _rows(url, "SELECT id, counterparty, owner, subject FROM requests ORDER BY id")
    by_who: dict[str, list[int]] = {}
    for r in reqs:
        by_who.setdefault(r["counterparty"], []).append(r["id"])
    assert {w: ids for w, ids in by_who.items() if len(ids) > 1} == {}
    assert len(reqs) == THREADS

    async def subject_only(r: dict) -> None:     # "Re: [#N]" alone, twice at once to both
        who = r["counterparty"]
        again = mail(who, f"Re: [#{r['id']}] {r['subject']}", f"s{r['id']}@bigco")
        await asyncio.gather(_send(a, again, who), _send(b, again, who))
    await asyncio.gather(*(subject_only(r) for r in reqs))

    linked = await _rows(url, "SELECT request_id, message_key, message_id FROM request_messages"
                                " ORDER BY id")
    per_req: dict[int, list[str]] = {}
    for m in linked:
        per_req.setdefault(m["request_id"], []).append(m["message_id"])
    assert len({m["message_key"] for m in linked}) == len(linked), "a message in two requests"
    for r in reqs:
        n = int(r["counterparty"][6:].partition("@")[0])
        assert sorted(per_req[r["id"]]) == sorted(
            [f"<o{n}@bigco>", f"<r{n}@bigco>", f"<s{r['id']}@bigco>"]), r
    events = await _rows(url, "SELECT request_id, kind, detail FROM request_events ORDER BY id")
    kinds: dict[int, list[str]] = {}
    for e in events:
        kinds.setdefault(e["request_id"], []).append(e["kind"])
    for rid, ks in kinds.items():      # opened first, one owner, then the two follow-ups
        assert ks == ["opened", "owner", "joined", "joined"], (rid, ks)
    assert {r["owner"] for r in reqs} <= {"ivanov", "petrova"}
    # every delivered copy of a thread names the request's owner
    owners = {f"client{int(r['counterparty'][6:].partition('@')[0])}@bigco.example": r["owner"]
              for r in reqs}
    wrong, stored = [], []
    for path in maildir_files(tmp_path / "mail"):
        msg = email.message_from_bytes(path.read_bytes())
        stored.append(msg["Message-ID"])
        who, head = msg["From"], str(msg.get(OWNER_HEADER, ""))
        if f"{owners[who]}@example.com" not in head:
            wrong.append((who, msg["Message-ID"], head))
    assert wrong == []
    assert len(stored) == len(set(stored)) == 3 * THREADS      # each message stored once

    # as a head of department sees it: the report counts each thread once, and a search
    # finds each message of a thread once, in that one request
    report = json.loads(await asyncio.to_thread(_cli, config, "report", "--json"))
    assert sum(r["requests"] for r in report["volume_per_owner"]) == THREADS, report
    assert sum(r["open"] for r in report["open_per_owner"]) == THREADS
    [seven] = [r["id"] for r in reqs if r["counterparty"] == "client7@bigco.example"]
    found = json.loads(await asyncio.to_thread(_cli, config, "registry", "search", "--from",
                                               "client7@bigco.example", "--json"))
    assert sorted((m["message_id"], m["request"]) for m in found) == [
        ("<o7@bigco>", seven), ("<r7@bigco>", seven), (f"<s{seven}@bigco>", seven)], found


def _cli(config: Path, *argv: str) -> str:
    """`mailrouter ARGV -c CONFIG` as a process: its standard output."""
    done = subprocess.run([sys.executable, "-m", "mailrouter.cli", *argv, "-c", str(config)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_two_processes_planning_one_thread_at_once_name_one_owner(make_app, tmp_path,
                                                                        registry_url):
    """Deterministic form of the race above: two apps on one registry (as two instances, each
    with its own in-process thread order), an original at one and its reply at the other,
    both planned before either is recorded. A's clock is Monday (ivanov's turn), B's the
    Wednesday ivanov is away (petrova's turn): each would head its copy with its own pick.
    The thread is claimed before delivery, so both copies name A's owner (A claimed first),
    who owns the one request; B records first and opens it, and the team's turn is still
    A's pick (before the claim moved it, nobody's pick moved it)."""
    apps = []
    for day in (11, 13):
        app = await make_app(routing=write_routing(tmp_path), registry=RegistryConfig(registry_url),
                             control=ControlConfig(replies=("replies@example.com",)))
        app.pipeline.clock = lambda day=day: datetime(2027, 1, day, 7, 0, tzinfo=timezone.utc)
        apps.append(app)
    # A plans (and claims) first, B plans second; B records first, A after it: the
    # message that takes the claimed owner is the one that opens the request
    a_planned, b_planned, b_recorded = asyncio.Event(), asyncio.Event(), asyncio.Event()
    for app, (after_plan, before_plan, before_record, after_record) in zip(apps, [
            (a_planned, None, b_recorded, None), (b_planned, a_planned, b_planned, b_recorded)]):
        control, registry = app.pipeline.control, app.pipeline.registry

        async def ordered_plan(*a, plan=control.plan, done=after_plan, wait=before_plan, **k):
            if wait is not None:
                await asyncio.wait_for(wait.wait(), 10)
            try:
                return await plan(*a, **k)
            finally:
                done.set()

        async def ordered_record(*a, record=registry.record, wait=before_record,
                                 done=after_record, **k):
            await asyncio.wait_for(wait.wait(), 10)
            try:
                return await record(*a, **k)
            finally:
                if done is not None:
                    done.set()
        control.plan, registry.record = ordered_plan, ordered_record
    await original_and_reply_at_once(apps)

    def requests_rows(conn):
        return [dict(r._mapping) for r in conn.execute(select(requests))]
    [req] = await apps[0].registry.read("t", requests_rows)
    heads = {}
    for path in maildir_files(tmp_path / "var" / "mail"):
        msg = email.message_from_bytes(path.read_bytes())
        heads[msg["Message-ID"]] = str(msg[OWNER_HEADER])
    assert sorted(heads) == ["<a1@bigco>", "<a2@bigco>"]
    assert (req["owner"], req["subject"]) == ("ivanov", "Re: printer")    # B opened it
    assert {"ivanov@example.com" in h for h in heads.values()} == {True}, (req, heads)

    def picks(conn):
        return [tuple(r) for r in conn.execute(select(team_picks.c.member))]
    assert await apps[0].registry.read("t", picks) == [("ivanov",)]


async def test_two_processes_recording_one_thread_at_once_open_one_request(make_app, tmp_path,
                                                                            registry_url):
    """Two apps on one registry, an original at one and its reply at the other, both planned
    (as opens) before either is recorded, then recorded together: one request. On
    PostgreSQL each record transaction saw nothing of the other's uncommitted request
    and both opened one, until request writes took turns (store._one_at_a_time)."""
    apps = []
    for _ in range(2):
        app = await make_app(routing=write_routing(tmp_path), registry=RegistryConfig(registry_url),
                             control=ControlConfig(replies=("replies@example.com",)))
        app.pipeline.clock = lambda: datetime(2027, 1, 11, 7, 0, tzinfo=timezone.utc)
        apps.append(app)
    hold_records_until_both_planned(apps)
    await original_and_reply_at_once(apps)

    def linked(conn):
        return sorted(tuple(r) for r in conn.execute(select(request_messages.c.request_id,
                                                            request_messages.c.message_id)))
    [(one, _), (other, _)] = await apps[0].registry.read("t", linked)
    assert one == other


async def test_new_requests_sent_to_both_instances_at_once_alternate_owners(cluster):
    """A team picks one owner per request, fairly, whatever instance takes the message: 2N
    new requests (no thread between them) sent at once, half to each instance (or each
    worker), go N to ivanov and N to petrova, and each member's requests are every other
    one in the team's turn. Before, each instance read the team's turn before either moved
    it and both gave their message to the same member (one process's own picks were laid
    over the registry's, another's were not seen until committed)."""
    url, (a, b), _ = cluster
    pairs = 40

    async def one(n: int, port: int) -> None:
        who = f"new{n}@bigco.example"
        await _send(port, mail(who, f"question {n}", f"q{n}@bigco"), who)
    await asyncio.gather(*(one(n, (a, b)[n % 2]) for n in range(2 * pairs)))
    reqs = await _rows(url, "SELECT owner FROM requests ORDER BY id")
    owners = [r["owner"] for r in reqs]
    assert len(owners) == 2 * pairs
    assert (owners.count("ivanov"), owners.count("petrova")) == (pairs, pairs), owners
    picks = await _rows(url, "SELECT detail FROM request_events WHERE kind = 'owner' ORDER BY id")
    assert len(picks) == 2 * pairs


async def test_least_open_counts_what_another_instance_is_delivering(make_app, tmp_path,
                                                                     registry_url):
    """A `least-open` team, petrova with one open request and ivanov with none; two new
    requests reach two instances and both are picked before either is recorded: the
    second pick counts the first (claimed, in delivery) as ivanov's, so one each. Before,
    the second read the committed requests alone and ivanov got both (2 against 1)."""
    from tests.control_support import ROUTING
    path = tmp_path / "rules" / "company.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(ROUTING.replace("pick: round-robin", "pick: least-open"), encoding="utf-8")
    apps = []
    for _ in range(2):
        app = await make_app(routing=(str(path),), registry=RegistryConfig(registry_url),
                             control=ControlConfig(replies=("replies@example.com",)))
        app.pipeline.clock = lambda: datetime(2027, 1, 11, 7, 0, tzinfo=timezone.utc)
        apps.append(app)
    await apps[0].registry.write("petrova's", lambda conn: conn.execute(requests.insert().values(
        opened_at=datetime(2027, 1, 4, tzinfo=timezone.utc), message_key="k" * 64,
        counterparty="old@x.example", counterparty_domain="x.example", owner="petrova",
        team="duty", status="open", subject="old", tags=[],
        last_in_at=datetime(2027, 1, 4, tzinfo=timezone.utc))))
    hold_records_until_both_planned(apps)
    await asyncio.gather(*(send(app.bound["smtp"][1], mail(f"n{i}@y.example", "new", f"n{i}@y"),
                                f"n{i}@y.example") for i, app in enumerate(apps)))

    def owners(conn):
        return sorted(r.owner for r in conn.execute(select(requests.c.owner)))
    assert await apps[0].registry.read("t", owners) == ["ivanov", "petrova", "petrova"]


async def test_a_message_without_message_id_at_both_instances_is_picked_once(cluster, tmp_path):
    """A message with no Message-ID (nor references) sent to both instances at once (the
    MTA's retry after a timeout, landing on the other one): one pick of the team, and the
    stored copy names the owner the request has. Before, such a message claimed nothing
    before delivery, so each instance picked its own member: the team's turn moved twice
    (new requests one after the other went mostly to one member) and the copy stored
    could name the member the request did not get."""
    url, (a, b), _ = cluster
    count = 10
    for n in range(count):
        who = f"noid{n}@bigco.example"
        raw = (f"From: {who}\r\nTo: support@example.com\r\nSubject: no id {n}\r\n\r\n"
               "hello\r\n").encode()
        await asyncio.gather(_send(a, raw, who), _send(b, raw, who))
    reqs = await _rows(url, "SELECT counterparty, owner FROM requests ORDER BY id")
    owners = [r["owner"] for r in reqs]
    assert len(owners) == count
    assert all(x != y for x, y in zip(owners, owners[1:])), owners    # each in turn
    owner_of = {r["counterparty"]: r["owner"] for r in reqs}
    wrong = []
    for path in maildir_files(tmp_path / "mail"):
        msg = email.message_from_bytes(path.read_bytes())
        if f"{owner_of[msg['From']]}@example.com" not in str(msg.get(OWNER_HEADER, "")):
            wrong.append((msg["From"], str(msg[OWNER_HEADER])))
    assert wrong == []

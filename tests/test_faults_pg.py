"""Faults of a real PostgreSQL registry under the real daemon: crashes, cut connections.

test_faults.py stops and starts PostgreSQL cleanly between two messages; here the
server crashes (every process SIGKILLed, as the OOM killer or a power cut would) right
after a 250, or its connections are cut while records are in flight. After each: every
message that got 250 is in the registry once, and every Maildir copy has its row.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections import Counter
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import text

from mailrouter.config import RegistryConfig
from mailrouter.errors import RegistryError
from mailrouter.registry import Registry
from tests.support.daemon import DaemonProcess, maildir_files
from tests.support.pg import PgCluster
from tests.test_faults import SENDER, fill, mail, send
from tests.test_registry_pg_daemon import fetch

pytestmark = pytest.mark.asyncio


@pytest.fixture
def cluster(private_pg: PgCluster) -> PgCluster:
    """A private cluster: these tests crash, stop and fill it."""
    return private_pg


async def sql(c: PgCluster, query: str) -> list[dict]:
    import asyncpg  # type: ignore[import-untyped]
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{c.port}/postgres", timeout=30)
    try:
        return [dict(r) for r in await conn.fetch(query)]
    finally:
        await conn.close()


async def sql_in(url: str, query: str) -> list[dict]:
    from sqlalchemy.engine import make_url
    import asyncpg  # type: ignore[import-untyped]
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql")
                                 .render_as_string(hide_password=False), timeout=30)
    try:
        return [dict(r) for r in await conn.fetch(query)]
    finally:
        await conn.close()


def crash(c: PgCluster) -> None:
    """SIGKILL the postmaster and every process of the cluster: what was only in its shared
    memory (WAL not yet written out) is gone; what reached the kernel survives."""
    assert c.proc is not None
    kids = subprocess.run(["pgrep", "-P", str(c.proc.pid)], capture_output=True, text=True)
    for pid in [c.proc.pid, *map(int, kids.stdout.split())]:
        os.kill(pid, signal.SIGKILL)
    c.proc.wait()
    c.proc = None


async def test_record_answered_250_survives_a_postgresql_crash(make_app, cluster, tmp_path):
    """The server runs with synchronous_commit off (a DBA's choice for speed, and the
    suite's): a commit returns before its WAL is written, and a crash within the WAL
    writer's delay lost records of messages already answered 250 (1 of 600 in a load
    with `pg_ctl stop -m immediate`). The registry's sessions commit synchronously
    whatever the server's default. The WAL writer and background writer are held
    (SIGSTOP) so nothing else writes the WAL out before the crash."""
    app = await make_app(registry=RegistryConfig(cluster.url, timeout=5.0))
    port = app.bound["smtp"][1]
    assert (await send(port, mail("pg-warm")))[0].startswith("250 2.0.0")
    writers = await sql(cluster, "SELECT pid FROM pg_stat_activity "
                                 "WHERE backend_type IN ('walwriter', 'background writer')")
    assert len(writers) == 2
    for w in writers:
        os.kill(w["pid"], signal.SIGSTOP)
    assert (await send(port, mail("pg-crash")))[0].startswith("250 2.0.0")
    await asyncio.to_thread(crash, cluster)
    await asyncio.to_thread(cluster.start)
    rows = await sql(cluster, "SELECT message_id FROM messages ORDER BY message_id")
    assert [r["message_id"] for r in rows] == ["<fault-pg-crash@outside.test>",
                                               "<fault-pg-warm@outside.test>"]
    assert len(maildir_files(tmp_path / "var" / "mail")) == 2
    app.request_stop()
    await app.wait_stopped()


async def test_stalled_instance_does_not_hold_a_row_from_the_other(make_app, pg_db, tmp_path):
    """Two instances on one PostgreSQL; A stalls in the middle of a transaction that has
    written a message's row (a paused VM, a SIGSTOP, a network cut that leaves the session
    open: PostgreSQL keeps it `idle in transaction`, its locks held, for as long as TCP
    does not notice, hours). The MTA retries that message at B: B's batch waited on A's
    lock until the registry timeout and answered 451, and so did every message committed
    with it, at every retry, for as long as A stayed stalled. The registry's sessions now
    end a transaction left idle longer than the registry timeout, so A's lock goes and
    B's retry is taken; one copy, one row."""
    # The schema is made first without a hurry: the registry opens within its timeout, and
    # a loaded test machine (the suite beside other work on 2 cores) took longer than 2.5 s
    # to connect, create and check it. The instances then only connect and check; a start
    # timed out all the same is tried again, as systemd would: what is tested is the stall.
    await (await Registry.open(pg_db, timeout=60)).close()

    async def instance() -> Any:
        for attempt in range(3):
            try:
                return await make_app(registry=RegistryConfig(pg_db, timeout=2.5))
            except RegistryError:
                if attempt == 2:
                    raise
        raise AssertionError("not reached")
    a, b = await instance(), await instance()
    raw = mail("stalled")
    assert (await send(a.bound["smtp"][1], raw))[0].startswith("250 2.0.0")
    stalled = await a.registry.engine.connect()          # A's own pooled session
    await stalled.begin()
    await stalled.execute(text("UPDATE messages SET status = status WHERE message_id = :m"),
                          {"m": "<fault-stalled@outside.test>"})
    replies = []
    for _ in range(20):          # the MTA's retries at B, while A never comes back
        replies.append((await send(b.bound["smtp"][1], raw))[0])
        if replies[-1].startswith("250"):
            break
        await asyncio.sleep(0.2)
    with contextlib.suppress(Exception):   # the server ended it: closing may raise
        await stalled.close()
    assert replies[-1].startswith("250 2.0.0"), replies
    assert all(r.startswith(("250", "451")) for r in replies), replies
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    rows = await fetch(pg_db, "SELECT attempts FROM messages")
    # the first send, the retry taken, and a 451 retry when its count got in before its
    # deadline: A's lock goes and B's deadline passes at about the same time (both are the
    # registry timeout), so the first retry may be a 451, counted or not
    [attempts] = [r["attempts"] for r in rows]
    assert 2 <= attempts <= 1 + len(replies), (attempts, replies)


def _pg_daemon(tmp_path, url: str) -> DaemonProcess:
    d = DaemonProcess(tmp_path)
    d.config.write_text("\n".join(f"registry: {{url: '{url}', timeout: 3}}"
                                  if line.startswith("registry:") else line
                                  for line in d.config.read_text().splitlines())
                        + "\nworkers: 2\n")
    return d


async def test_a_registry_database_set_to_repeatable_read_takes_a_sibling_s_retry(make_app,
                                                                                  pg_db):
    """The registry's database (or role) has `default_transaction_isolation = 'repeatable
    read'` (a DBA's default for consistent reports). A message's record meets the lock of
    a sibling instance writing the same message (the MTA's retry of it landed on both): it
    waited, then failed with "could not serialize access due to concurrent update", and
    the whole batch got 451; with two instances under load a third of the attempts did.
    The registry's sessions run read committed, which its writes are made for."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    dsn = make_url(pg_db).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn, timeout=30)
    try:
        await admin.execute(f'ALTER DATABASE "{make_url(pg_db).database}" '
                            "SET default_transaction_isolation = 'repeatable read'")
    finally:
        await admin.close()
    await (await Registry.open(pg_db, timeout=60)).close()     # the schema, unhurried
    app = await make_app(registry=RegistryConfig(pg_db, timeout=10.0))
    port = app.bound["smtp"][1]
    raw = mail("isolation")
    assert (await send(port, raw))[0].startswith("250 2.0.0")
    sibling = await asyncpg.connect(dsn, timeout=30)     # the other instance's record of it
    try:
        writing = sibling.transaction()
        await writing.start()
        await sibling.execute("UPDATE messages SET attempts = attempts + 1 "
                              "WHERE message_id = '<fault-isolation@outside.test>'")
        retry = asyncio.ensure_future(send(port, raw))
        for _ in range(400):       # until the retry's record waits for the sibling's lock
            if await sibling.fetchval("SELECT count(*) FROM pg_stat_activity "
                                      "WHERE wait_event_type = 'Lock'"):
                break
            assert not retry.done(), retry.result()
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("the retry never waited for the sibling's lock")
        await writing.commit()
        assert (await retry)[0].startswith("250 2.0.0"), retry.result()
    finally:
        await sibling.close()
    rows = await sql_in(pg_db, "SELECT status FROM messages")
    assert [r["status"] for r in rows] == ["delivered"]


async def test_worker_dying_while_postgresql_is_down_is_replaced_once_it_is_up(cluster,
                                                                                tmp_path):
    """`workers: 2` on PostgreSQL, which goes down; both workers then die (the OOM killer).
    Their replacements cannot open the registry: the supervisor took that for a broken
    start and stopped the whole daemon (exit 2), so the port refused connections until an
    operator restarted it, long after PostgreSQL was back. Now it tries them again: once
    PostgreSQL is up, mail is taken with no restart."""
    d = _pg_daemon(tmp_path, cluster.url).start(60.0)
    try:
        assert (await send(d.smtp, mail("w-before")))[0].startswith("250 2.0.0")
        await asyncio.to_thread(cluster.stop)
        assert d.proc is not None
        kids = subprocess.run(["pgrep", "-P", str(d.proc.pid)], capture_output=True, text=True)
        workers = [int(p) for p in kids.stdout.split()]
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        for _ in range(600):         # a replacement has tried, and failed, to start
            if d.log.read_text().count("event=start_failed") >= 2:
                break
            await asyncio.sleep(0.05)
        assert d.log.read_text().count("event=start_failed") >= 2, d.log.read_text()[-3000:]
        assert d.proc.poll() is None, d.log.read_text()[-3000:]
        await asyncio.to_thread(cluster.start)
        raw, replies = mail("w-after"), []
        for _ in range(100):         # the MTA's retries, until a replacement serves
            with contextlib.suppress(OSError, AssertionError, asyncio.IncompleteReadError):
                replies.append((await send(d.smtp, raw))[0])
                if replies[-1].startswith("250"):
                    break
            await asyncio.sleep(0.2)
        assert replies and replies[-1].startswith("250 2.0.0"), (replies, d.log.read_text()[-3000:])
    finally:
        d.stop()
    assert len(maildir_files(tmp_path / "var" / "mail")) == 2


def _immediate_stop(c: PgCluster) -> None:
    """`pg_ctl stop -m immediate`: the postmaster quits at once, no checkpoint, every
    connection cut mid-statement or mid-commit (a crash, for the clients)."""
    assert c.proc is not None
    c.proc.send_signal(signal.SIGQUIT)
    c.proc.wait()
    c.proc = None


async def test_two_instances_through_a_postgresql_crash_under_load(cluster, tmp_path):
    """Two instances (one Maildir root, one PostgreSQL) take 300 messages from 12 MTA-like
    clients, each retrying a 4xx at the other instance; PostgreSQL is stopped with
    `-m immediate` mid-load (batch commits in flight: their outcome unknown to us) and
    started again. Never a 5xx; every message ends with a 250; each is stored once and
    has one registry row with a delivered copy; the instances reconnect on their own.
    (Before the synchronous_commit fix 1-5 messages of 600 answered 250 had no row.)"""
    mail_root = tmp_path / "mail"
    daemons = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        d = _pg_daemon(tmp_path / name, cluster.url)
        d.config.write_text(d.config.read_text().replace("workers: 2", "workers: 1").replace(
            f"maildir_root: '{tmp_path / name / 'var' / 'mail'}'", f"maildir_root: '{mail_root}'"))
        daemons.append(d)
    total, acked, fives, deferred = 300, Counter(), [], Counter()

    async def mta(todo: list[int]) -> None:
        for n in todo:
            for attempt in range(300):
                port = daemons[(n + attempt) % 2].smtp
                try:
                    await aiosmtplib.send(mail(f"load-{n}"), sender=SENDER, timeout=30,
                                          recipients=["sales@example.com"],
                                          hostname="127.0.0.1", port=port)
                    acked[n] += 1
                    break
                except aiosmtplib.SMTPResponseException as exc:
                    if exc.code >= 500:
                        fives.append((n, exc.code, exc.message))
                        break
                    deferred[exc.code] += 1
                except (aiosmtplib.SMTPException, OSError):
                    pass
                await asyncio.sleep(0.1)

    try:
        for d in daemons:
            await asyncio.to_thread(d.start, 60.0)
        load = asyncio.gather(*(mta(list(range(c, total, 12))) for c in range(12)))
        for _ in range(600):
            if len(acked) >= total // 4:
                break
            await asyncio.sleep(0.02)
        await asyncio.to_thread(_immediate_stop, cluster)
        await asyncio.sleep(0.5)         # the clients meet the outage (451), then it is over
        await asyncio.to_thread(cluster.start)
        await load
    finally:
        for d in daemons:
            await asyncio.to_thread(d.stop)
    assert fives == [] and sorted(acked) == list(range(total)), (fives, total - len(acked))
    assert deferred[451] > 0, "the outage never bit: the test proves nothing"
    stored = Counter(f.read_bytes().split(b"Subject: fault test ")[1].split(b"\r\n")[0]
                     for f in maildir_files(mail_root))
    assert len(stored) == total and max(stored.values()) == 1
    rows = await sql(cluster, "SELECT m.subject, count(d.id) AS copies FROM messages m "
                              "LEFT JOIN deliveries d ON d.message_key = m.key "
                              "AND d.state = 'delivered' GROUP BY m.key, m.subject")
    assert len(rows) == total and {r["copies"] for r in rows} == {1}
    for d in daemons:
        assert "Traceback" not in d.log.read_text(), d.log.read_text()[-3000:]


@pytest.fixture
def pg_tmpfs(cluster: PgCluster):
    """A 48 MiB tmpfs owned by postgres inside the cluster's directory (a tablespace must be
    reachable by the postgres user; tmp_path is not), unmounted at teardown."""
    mnt = cluster.root / "space"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        (mnt / "ts").mkdir()
        shutil.chown(mnt / "ts", "postgres", "postgres")
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_postgresql_tablespace_full_is_452_then_retry_delivers_once(make_app, cluster,
                                                                          pg_tmpfs, tmp_path):
    """The registry's database lives in a tablespace whose filesystem fills up: PostgreSQL
    refuses to extend a table (SQLSTATE 53100, disk full). The reply is 452 4.3.1, as for a
    full SQLite file or mail store, not 451 "registry unavailable" (the database answers;
    an operator must make room); room made: 250, one copy, one row."""
    await sql(cluster, f"CREATE TABLESPACE full_ts LOCATION '{pg_tmpfs / 'ts'}'")
    await sql(cluster, "CREATE DATABASE onfull TABLESPACE full_ts")
    url = cluster.url.rsplit("/", 1)[0] + "/onfull"
    app = await make_app(registry=RegistryConfig(url, timeout=5.0))
    port = app.bound["smtp"][1]
    await asyncio.to_thread(fill, pg_tmpfs / "filler")
    raw = mail("pg-full", body="z" * 300)
    assert (await send(port, raw))[0].startswith("452 4.3.1")   # the first row needs a page
    (pg_tmpfs / "filler").unlink()
    assert (await send(port, raw))[0].startswith("250 2.0.0")
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    assert await app.registry.count_messages() == 1
    app.request_stop()
    await app.wait_stopped()


async def test_a_postgresql_outage_names_the_registry_in_the_log(caplog):
    """A PostgreSQL that does not answer: the registry_error line names which registry
    (the URL without its password), not only "Connection refused"."""
    from tests.support.ports import free_port
    port = free_port()
    url = f"postgresql+asyncpg://mr:secret@127.0.0.1:{port}/registry"
    with pytest.raises(RegistryError):
        await Registry.open(url, timeout=5)
    [line] = [r.getMessage() for r in caplog.records if "event=registry_error" in r.getMessage()]
    assert line.endswith(f" registry=postgresql+asyncpg://mr@127.0.0.1:{port}/registry"), line
    assert "secret" not in caplog.text


async def test_the_end_of_a_postgresql_outage_is_one_log_line(make_app, cluster, caplog):
    """PostgreSQL stopped under a running instance, then started again: the instance takes
    mail again by itself, and its log says so once (`event=registry_recovered`, how long
    and how many calls failed). Before, each failure had its line and the end had none: the
    log's last registry lines were errors long after the registry was back."""
    app = await make_app(registry=RegistryConfig(cluster.url, timeout=5.0))
    port = app.bound["smtp"][1]
    assert (await send(port, mail("before")))[0].startswith("250 2.0.0")
    await asyncio.to_thread(cluster.stop)
    assert (await send(port, mail("during")))[0].startswith("451")
    assert "event=registry_recovered" not in caplog.text
    await asyncio.to_thread(cluster.start)
    assert (await send(port, mail("after")))[0].startswith("250 2.0.0")
    assert (await send(port, mail("after-2")))[0].startswith("250 2.0.0")
    back = [r.getMessage() for r in caplog.records if "event=registry_recovered" in r.getMessage()]
    assert len(back) == 1, back
    assert f"registry={cluster.url}" in back[0] and "failed_calls=" in back[0], back[0]
    assert int(back[0].split("failed_calls=")[1].split(":")[0]) >= 1, back[0]
    app.request_stop()
    await app.wait_stopped()


async def test_two_instances_recording_the_same_messages_in_other_orders_never_deadlock(
        pg_db):
    """Two instances on one PostgreSQL registry each record one group commit holding the
    same messages (a message split by recipients over both, an MTA's retry), in the
    order each received them: one [a, b, ...], the other [..., b, a]. Both batches commit.
    Before, each upserted its rows in arrival order; the two met in the middle, PostgreSQL
    found a deadlock and aborted one, and every message of that batch got 451."""
    from tests.test_registry import decision, delivery, message
    one, other = await Registry.open(pg_db), await Registry.open(pg_db)
    failed = []
    try:
        for n in range(80):
            recs = [(message(f"{n:03d}{c}".ljust(64, c), message_id=f"<{n}{c}@x.example>"),
                     [decision()], [delivery()]) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
            # queued before either writer runs: one batch each, in opposite orders
            done = await asyncio.gather(*(one.record(*r) for r in recs),
                                        *(other.record(*r) for r in reversed(recs)),
                                        return_exceptions=True)
            failed += [repr(e) for e in done if isinstance(e, BaseException)]
    finally:
        await one.close()
        await other.close()
    assert failed == []

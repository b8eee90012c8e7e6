"""Real faults against the in-process daemon: no mocks, exact reply codes.

The Maildir on a full or read-only tmpfs, the SQLite registry locked by another
connection, a PostgreSQL registry stopped and restarted, the Dovecot LMTP
downstream stopped and restarted, and hostile clients. Each fault must give the
sending MTA a 4xx (451 4.3.0, or 452 4.3.1 when storage is full), never 250 and
never 5xx; after the fault is gone the MTA's retry of the same message must get
250 and leave exactly one copy and one registry row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import smtplib
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from mailrouter.config import DeliveryConfig, Downstream, RegistryConfig
from mailrouter.pipeline import message_key
from mailrouter.registry.store import upgrade
from mailrouter.values import (
    REPLY_DELIVERY_TEMPFAIL,
    REPLY_INTENT_FAILED,
    REPLY_REGISTRY_UNAVAILABLE,
    REPLY_STORAGE_FULL,
)
from tests.support.daemon import maildir_files
from tests.support.tmpfs import tmpfs_on
from tests.support.wire import Wire

pytestmark = pytest.mark.asyncio

SENDER = "client@outside.test"


def mail(n: int | str, to: str = "sales@example.com", body: str = "A test.") -> bytes:
    body = "\r\n".join(body[i:i + 70] for i in range(0, len(body), 70))
    return (f"From: Client <{SENDER}>\r\nTo: {to}\r\nSubject: fault test {n}\r\n"
            f"Message-ID: <fault-{n}@outside.test>\r\n\r\n{body}\r\n").encode()


def data(raw: bytes) -> bytes:
    """Dot-stuff and terminate, as a client must."""
    lines = raw.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines) + b".\r\n"


async def send(port: int, raw: bytes, rcpts: list[str] | None = None, lmtp: bool = False) -> list[str]:
    """One session, one transaction; the reply (or LMTP replies) after DATA."""
    async with Wire(port) as w:
        await w.greet("LHLO" if lmtp else "EHLO")
        return await w.transaction(SENDER, rcpts or ["sales@example.com"], data(raw), lmtp=lmtp)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'var' / 'registry.db'}"


async def short_deadline(url: str) -> RegistryConfig:
    """A registry with a 1 s deadline per operation, its schema made first, as the daemon's
    supervisor makes it (under its own 60 s): a loaded machine's migrations took longer than 1 s."""
    await upgrade(url)
    return RegistryConfig(url, timeout=1.0)


# -- the Maildir on a small tmpfs ---------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path: Path, request: pytest.FixtureRequest):
    """A small tmpfs (256 KiB, or @pytest.mark.parametrize('tmpfs', [SIZE], indirect=True))
    mounted under tmp_path, unmounted at teardown."""
    with tmpfs_on(tmp_path / "store", getattr(request, "param", "256k")) as mnt:
        yield mnt


def fill(path: Path) -> None:
    """Write until the filesystem says ENOSPC."""
    with open(path, "wb", buffering=0) as f:
        chunk = b"x" * 4096
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC


async def test_full_maildir_is_452_then_retry_delivers_once(make_app, tmpfs, tmp_path):
    """Maildir on a full filesystem: 452 4.3.1, no debris in tmp/; space freed: the retry gets
    250 and there is exactly one copy and one registry row."""
    app = await make_app(delivery=DeliveryConfig(maildir_root=tmpfs))
    port = app.bound["smtp"][1]
    raw = mail("full", body="x" * 2000)
    await asyncio.to_thread(fill, tmpfs / "filler")
    replies = await send(port, raw)
    assert replies == [str(REPLY_STORAGE_FULL)]
    assert maildir_files(tmpfs) == []
    tmp = tmpfs / "sales" / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []      # no partial copy left behind
    (tmpfs / "filler").unlink()
    replies = await send(port, raw)                            # the MTA's retry
    assert replies[0].startswith("250 2.0.0")
    files = maildir_files(tmpfs)
    assert len(files) == 1 and files[0].read_bytes().endswith(raw)
    assert await app.registry.count_messages() == 1
    row = await app.registry.message(message_key(SENDER, raw))
    assert row["status"] == "delivered"
    assert [d["state"] for d in row["deliveries"]] == ["delivered"]


async def test_full_maildir_lmtp_is_452_per_recipient(make_app, tmpfs):
    """Over LMTP each recipient whose mailbox is on the full disk gets its own 452 4.3.1."""
    app = await make_app(delivery=DeliveryConfig(maildir_root=tmpfs))
    await asyncio.to_thread(fill, tmpfs / "filler")
    replies = await send(app.bound["lmtp"][1], mail("full-lmtp", body="y" * 2000),
                         ["sales@example.com", "support@example.com"], lmtp=True)
    assert [r[:9] for r in replies] == ["452 4.3.1", "452 4.3.1"]
    assert maildir_files(tmpfs) == []


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_our_outage_is_not_the_clients_error(make_app, tmpfs, proto, hello):
    """An MTA that keeps one connection through our disk-full outage gets 452 4.3.1 for each
    message, however many: those are not its errors, so no tarpit and no 421 at max_errors.
    Once there is room, the same connection's next message is taken."""
    app = await make_app(delivery=DeliveryConfig(maildir_root=tmpfs),
                         limits={"max_errors": 3, "soft_errors": 1, "error_delay": 0})
    await asyncio.to_thread(fill, tmpfs / "filler")
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        for n in range(6):
            replies = await w.transaction(SENDER, ["sales@example.com"],
                                          data(mail(f"outage-{n}", body="z" * 2000)),
                                          lmtp=proto == "lmtp")
            assert replies == [str(REPLY_STORAGE_FULL)], (n, replies)
        assert (await w.cmd("NOOP")).startswith("250")
        (tmpfs / "filler").unlink()
        replies = await w.transaction(SENDER, ["sales@example.com"], data(mail("after")),
                                      lmtp=proto == "lmtp")
        assert replies[0].startswith("250 2.0.0"), replies
    assert len(maildir_files(tmpfs)) == 1


async def test_readonly_maildir_is_451_then_retry_delivers_once(make_app, tmpfs):
    """Maildir remounted read-only: 451 4.3.0 (not 452, not 5xx); rw again: 250, one copy."""
    app = await make_app(delivery=DeliveryConfig(maildir_root=tmpfs))
    port = app.bound["smtp"][1]
    assert (await send(port, mail("before-ro")))[0].startswith("250 2.0.0")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        raw = mail("ro")
        replies = await send(port, raw)
        assert replies == [str(REPLY_DELIVERY_TEMPFAIL)]
        assert len(maildir_files(tmpfs)) == 1
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert (await send(port, raw))[0].startswith("250 2.0.0")
    files = maildir_files(tmpfs)
    assert len(files) == 2
    assert sum(f.read_bytes().endswith(raw) for f in files) == 1
    assert await app.registry.count_messages() == 2


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` read-only for new opens (a read-only bind mount over itself); files already
    open stay writable, so a remount cannot fail with EBUSY as tmpfs's does."""
    res = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot bind-mount (needs root / CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


async def test_journal_rotation_on_readonly_var_keeps_the_old_journal(make_app, tmp_path,
                                                                     monkeypatch):
    """var/intents read-only just when the journal is due for a new file: the new one cannot
    be made, so the message gets 451 and the old journal stays open. It was closed before the
    new one was tried, then closed again at every later try: that closed whatever file had
    been given its number since (here `other`), or failed with EBADF for good. Writable
    again: the next message gets 250 at once and `other` is still open."""
    monkeypatch.setattr("mailrouter.intents.ROTATE_AT", 0)     # every message rotates
    app = await make_app()
    port = app.bound["smtp"][1]
    assert (await send(port, mail("rot-1")))[0].startswith("250 2.0.0")
    with read_only(tmp_path / "var" / "intents"):
        assert await send(port, mail("rot-2")) == [str(REPLY_INTENT_FAILED)]
        other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT, 0o600)
        assert await send(port, mail("rot-3")) == [str(REPLY_INTENT_FAILED)]
    try:
        raw = mail("rot-4")
        assert (await send(port, raw))[0].startswith("250 2.0.0")
        assert os.fstat(other).st_ino == (tmp_path / "other").stat().st_ino
    finally:
        os.close(other)
    assert (await app.registry.message(message_key(SENDER, raw)))["status"] == "delivered"
    assert len(maildir_files(tmp_path / "var" / "mail")) == 2


async def test_intents_removed_while_running_still_reconciled(make_app, tmp_path):
    """var/intents removed while the daemon runs (a clean-up): the journal it was writing is
    unlinked, so the intent of a copy whose record then failed was found by no reconcile
    and the copy stayed without a registry row. Now a new journal is started in its place:
    the next start records the copy (`unanswered`)."""
    app = await make_app(registry=RegistryConfig(sqlite_url(tmp_path), timeout=3.0))
    port = app.bound["smtp"][1]
    assert (await send(port, mail("rm-1")))[0].startswith("250 2.0.0")
    shutil.rmtree(tmp_path / "var" / "intents")
    raw = mail("rm-2")
    with contextlib.closing(sqlite3.connect(tmp_path / "var" / "registry.db",
                                            isolation_level=None)) as locker:
        locker.execute("BEGIN EXCLUSIVE")
        assert await send(port, raw) == [str(REPLY_REGISTRY_UNAVAILABLE)]
        locker.execute("ROLLBACK")
    assert sum(f.read_bytes().endswith(raw) for f in maildir_files(tmp_path / "var" / "mail")) == 1
    app.request_stop()
    await app.wait_stopped()
    again = await make_app()                  # its start reconciles the journals left
    row = await again.registry.message(message_key(SENDER, raw))
    assert row is not None and row["status"] == "unanswered"


# -- the registry ---------------------------------------------------------------------

def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info is not None]


async def test_sqlite_locked_is_451_then_retry_finds_first_copy(make_app, tmp_path, caplog):
    """Another connection holds BEGIN EXCLUSIVE: 451 4.3.0 within the registry timeout. After
    release the retry gets 250; the Maildir copy of the first attempt is found by its name, so
    there is one copy and one registry row. The outage is logged in one line, no traceback."""
    app = await make_app(registry=await short_deadline(sqlite_url(tmp_path)))
    port = app.bound["smtp"][1]
    raw = mail("locked")
    locker = sqlite3.connect(tmp_path / "var" / "registry.db", isolation_level=None,
                             check_same_thread=False)
    try:
        await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
        replies = await send(port, raw)
        assert replies == [str(REPLY_REGISTRY_UNAVAILABLE)]
        assert any(m.startswith("mailrouter.decision: event=registry_failed ") for m in errors(caplog))
        assert tracebacks(caplog) == []
        first = maildir_files(tmp_path / "var" / "mail")
        await asyncio.to_thread(locker.execute, "ROLLBACK")
    finally:
        locker.close()
    replies = await send(port, raw)
    assert replies[0].startswith("250 2.0.0")
    files = maildir_files(tmp_path / "var" / "mail")
    assert len(files) == 1 and files[0].read_bytes().endswith(raw)
    assert first in ([], files)          # the first attempt's copy, if made, is the one kept
    assert await app.registry.count_messages() == 1
    row = await app.registry.message(message_key(SENDER, raw))
    assert row["status"] == "delivered" and len(row["deliveries"]) == 1


def rows_in_file(db: Path) -> set[str]:
    """Message-IDs recorded in the SQLite file at `db`, read by a connection of our own."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {m for (m,) in conn.execute("SELECT message_id FROM messages")}


@pytest.mark.parametrize("how", ["deleted", "replaced"])
@pytest.mark.parametrize("process", ["single", "worker"])
async def test_registry_file_deleted_or_replaced_while_running(make_app, tmp_path, how, process):
    """The SQLite registry file is deleted (or replaced by an empty file) while the daemon
    runs: SQLite went on committing to the unlinked file without an error, so each later
    message got 250 and its record was lost at exit. Now the record is in the file at the
    registry's path (its schema created, as a restart would), and the dedupe reads it;
    in a worker process too (it opens the registry without create)."""
    if process == "worker":          # worker 1 of `workers: 2`: the parent migrated
        await upgrade(sqlite_url(tmp_path))
    app = await make_app(worker=1 if process == "worker" else None)
    port = app.bound["smtp"][1]
    db = tmp_path / "var" / "registry.db"
    assert (await send(port, mail("before-rm")))[0].startswith("250 2.0.0")
    for name in ("registry.db-wal", "registry.db-shm", "registry.db"):
        (tmp_path / "var" / name).unlink(missing_ok=True)
    if how == "replaced":
        db.write_bytes(b"")
    raw = mail("after-rm")
    assert (await send(port, raw))[0].startswith("250 2.0.0")
    assert rows_in_file(db) == {"<fault-after-rm@outside.test>"}
    assert (await send(port, raw))[0].startswith("250 2.0.0")       # the retry: one copy
    assert (await app.registry.message(message_key(SENDER, raw)))["attempts"] == 2
    assert len(maildir_files(tmp_path / "var" / "mail")) == 2


async def test_postgresql_stopped_is_451_then_restarted_delivers(make_app, private_pg, tmp_path,
                                                                 caplog):
    """The PostgreSQL registry stops mid-run: 451 4.3.0, logged as the one-line
    registry_unavailable (no traceback: an outage, not a bug); back up: the next retry gets
    250 (stale pooled connections are not handed out), one copy, one row."""
    app = await make_app(registry=RegistryConfig(private_pg.url, timeout=3.0))
    port = app.bound["smtp"][1]
    assert (await send(port, mail("pg-before")))[0].startswith("250 2.0.0")
    await asyncio.to_thread(private_pg.stop)
    raw = mail("pg-down")
    replies = await send(port, raw)
    assert replies == [str(REPLY_REGISTRY_UNAVAILABLE)]
    assert any(m.startswith("mailrouter.decision: event=registry_unavailable ")
               for m in errors(caplog))
    assert tracebacks(caplog) == []
    await asyncio.to_thread(private_pg.start)
    assert (await send(port, raw))[0].startswith("250 2.0.0")
    files = maildir_files(tmp_path / "var" / "mail")
    assert len(files) == 2 and sum(f.read_bytes().endswith(raw) for f in files) == 1
    assert await app.registry.count_messages() == 2
    app.request_stop()
    await app.wait_stopped()             # close the pool before the cluster goes away


# -- the LMTP downstream (Dovecot) ------------------------------------------------------

LMTP_ROUTING = """\
domains: [example.com]
mailboxes:
  desk:  {lmtp: desk@example.test}
  sales: {maildir: sales}
aliases:
  desk@example.com:  mailbox:desk
  sales@example.com: mailbox:sales
"""


async def test_dovecot_stopped_is_451_for_its_recipients(make_app, dovecot, tmp_path):
    """Dovecot stops mid-run: over LMTP the recipient behind it gets 451 4.3.0 while the
    Maildir recipient in the same transaction gets 250; Dovecot back: the MTA's retry of the
    deferred recipient gets 250 and the message is in Dovecot's Maildir, once."""
    server = dovecot(["desk@example.test"])
    routing = tmp_path / "routing.yaml"
    routing.write_text(LMTP_ROUTING)
    app = await make_app(routing=(str(routing),), delivery=DeliveryConfig(
        maildir_root=tmp_path / "var" / "mail",
        lmtp=Downstream("127.0.0.1", server.port, timeout=5.0, pool_size=2)))
    lmtp, smtp = app.bound["lmtp"][1], app.bound["smtp"][1]
    inbox = server.maildir("desk@example.test")
    assert (await send(smtp, mail("dc-before"), ["desk@example.com"]))[0].startswith("250 2.0.0")
    assert len(maildir_files(inbox)) == 1       # the pool now holds a connection to Dovecot

    await asyncio.to_thread(server.stop)
    raw = mail("dc-down")
    replies = await send(lmtp, raw, ["desk@example.com", "sales@example.com"], lmtp=True)
    assert replies[0].startswith("451 4.3.0"), replies
    assert replies[1].startswith("250 2.0.0"), replies
    assert (await send(smtp, mail("dc-down-smtp"), ["desk@example.com"]))[0].startswith("451 4.3.0")

    await asyncio.to_thread(server.start)
    replies = await send(lmtp, raw, ["desk@example.com"], lmtp=True)   # only the deferred one
    assert replies == [replies[0]] and replies[0].startswith("250 2.0.0"), replies
    got = [f.read_bytes() for f in maildir_files(inbox)]     # Dovecot stores LF line ends
    assert len(got) == 2 and sum(b.endswith(raw.replace(b"\r\n", b"\n")) for b in got) == 1
    assert len(maildir_files(tmp_path / "var" / "mail" / "sales")) == 1
    row = await app.registry.message(message_key(SENDER, raw))
    assert row["status"] == "delivered"
    assert sorted(d["state"] for d in row["deliveries"]) == ["delivered", "delivered"]


# -- hostile sessions ---------------------------------------------------------------------

def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


async def test_ten_megabytes_without_newline(make_app, tmp_path, caplog):
    """10 MB of garbage with no line end: memory stays bounded, other clients are served
    meanwhile, and when the line finally ends the answer is 500 5.5.2; the session survives."""
    app = await make_app()
    port = app.bound["smtp"][1]
    async with Wire(port) as hostile:
        await hostile.greet()
        chunk = os.urandom(64 * 1024).replace(b"\n", b"x").replace(b"\r", b"x")
        for i in range(160):                                   # 10 MiB
            await hostile.send(chunk)
            if i == 80:
                assert (await send(port, mail("during-garbage")))[0].startswith("250 2.0.0")
        await hostile.send(b"\r\n")
        assert (await hostile.line()).startswith("500 5.5.2")
        assert (await hostile.cmd("NOOP")).startswith("250 2.0.0")
    assert (await send(port, mail("after-garbage")))[0].startswith("250 2.0.0")
    assert len(maildir_files(tmp_path / "var" / "mail")) == 2
    assert errors(caplog) == []


async def test_ten_megabyte_line_inside_data(make_app, tmp_path, caplog):
    """A 10 MB line inside DATA, over a 5 MB size limit: read to the end in bulk, refused
    552 5.3.4, nothing stored, the session goes on."""
    app = await make_app(limits={"max_message_size": 5 * 1024 * 1024})
    port = app.bound["smtp"][1]
    async with Wire(port) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: long\r\n\r\n")
        for _ in range(160):
            await w.send(b"y" * 64 * 1024)
        await w.send(b"\r\n.\r\n")
        assert (await w.line()).startswith("552 5.3.4")
        assert (await w.cmd("NOOP")).startswith("250")
    assert maildir_files(tmp_path / "var" / "mail") == []
    assert await app.registry.count_messages() == 0
    assert errors(caplog) == []


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
async def test_disconnect_mid_data(make_app, tmp_path, caplog, protocol):
    """A client that vanishes in the middle of DATA: nothing stored or recorded, no error
    logged, and the next client is served."""
    app = await make_app()
    port = app.bound[protocol][1]
    async with Wire(port) as w:
        await w.greet("LHLO" if protocol == "lmtp" else "EHLO")
        assert (await w.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(mail("cut")[:40])
    for _ in range(100):                           # let the server see the EOF
        if not app.sessions:
            break
        await asyncio.sleep(0.02)
    assert not app.sessions
    raw = mail("after-cut")
    assert (await send(port, raw, lmtp=protocol == "lmtp"))[0].startswith("250 2.0.0")
    files = maildir_files(tmp_path / "var" / "mail")
    assert len(files) == 1 and files[0].read_bytes().endswith(raw)
    assert await app.registry.count_messages() == 1
    assert errors(caplog) == []


async def test_200_idle_connections_do_not_block_the_201st(make_app, tmp_path):
    """200 clients connect and say nothing more; the 201st still delivers with 250."""
    app = await make_app()
    port = app.bound["smtp"][1]
    idle = [Wire(port) for _ in range(200)]
    try:
        await asyncio.gather(*(w.__aenter__() for w in idle))
        greetings = await asyncio.gather(*(w.line() for w in idle))
        assert all(g.startswith("220") for g in greetings)
        assert (await send(port, mail("201st")))[0].startswith("250 2.0.0")
        assert (await send(app.bound["lmtp"][1], mail("202nd"), lmtp=True))[0].startswith("250")
    finally:
        await asyncio.gather(*(w.__aexit__(None, None, None) for w in idle))
    assert len(maildir_files(tmp_path / "var" / "mail")) == 2


async def test_low_soft_fd_limit_is_raised_so_connections_are_not_refused(daemon_process, tmp_path):
    """Started from a shell whose soft RLIMIT_NOFILE is 128, the daemon lifts it towards the
    hard limit: 300 idle sessions are all greeted and the next client still gets 250."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} is too low to show the difference")
    d = daemon_process(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard)))
    idle = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", d.smtp), timeout=10)
            idle.append(s)
            assert s.recv(100).startswith(b"220")
        with smtplib.SMTP("127.0.0.1", d.smtp, timeout=30) as c:
            c.sendmail("a@outside.test", ["sales@example.com"], b"Subject: 301st\r\n\r\nx\r\n")
    finally:
        for s in idle:
            s.close()
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


@pytest.mark.parametrize("tmpfs", ["2m"], indirect=True)
async def test_registry_on_full_filesystem_is_4xx_then_retry_delivers_once(make_app, tmpfs,
                                                                            tmp_path):
    """The SQLite registry's own filesystem fills up: 452 4.3.1, as for a full mail store
    (never 250 without a record, never 5xx); space freed: the retry gets 250, one copy, one row."""
    app = await make_app(registry=RegistryConfig(f"sqlite+aiosqlite:///{tmpfs / 'registry.db'}",
                                                 timeout=3.0))
    port = app.bound["smtp"][1]
    await asyncio.to_thread(fill, tmpfs / "filler")
    raws = [mail(f"reg-full-{i}", body="z" * 300) for i in range(5)]
    replies = [(await send(port, raw))[0] for raw in raws]
    # SQLite may still fit a few records into pages it already owns; the first one that
    # needs a new page must be refused with a 4xx, and nothing may be a 5xx.
    assert all(r.startswith(("250 2.0.0", "452 4.3.1")) for r in replies), replies
    assert any(r.startswith("452 4.3.1") for r in replies), replies
    (tmpfs / "filler").unlink()
    for raw in raws:
        assert (await send(port, raw))[0].startswith("250 2.0.0")
    assert len(maildir_files(tmp_path / "var" / "mail")) == len(raws)
    assert await app.registry.count_messages() == len(raws)
    for raw in raws:
        assert (await app.registry.message(message_key(SENDER, raw)))["status"] == "delivered"


async def test_hung_downstream_answers_451_within_process_timeout(make_app, tmp_path):
    """A downstream that accepts the connection and then says nothing: the reply is 451 once
    limits.process_timeout passes, never a hang and never a 250."""
    from mailrouter.config import DeliveryConfig, Downstream
    from tests.support.ports import silent_listener
    silent = silent_listener()             # accepts (kernel backlog), never greets
    book = tmp_path / "book.yaml"
    book.write_text("domains: [example.com]\nmailboxes:\n  fwd: {smtp: x@downstream.test}\n"
                    "aliases:\n  hang@example.com: mailbox:fwd\n", encoding="utf-8")
    try:
        app = await make_app(
            routing=(str(book),), limits={"process_timeout": 1},
            delivery=DeliveryConfig(tmp_path / "mail", smtp=Downstream(
                "127.0.0.1", silent.getsockname()[1], timeout=30)))
        async with Wire(app.bound["smtp"][1]) as w:
            await w.greet()
            reply = await w.transaction("a@outside.test", ["hang@example.com"],
                                        b"Subject: x\r\n\r\ny\r\n.\r\n")
        assert reply[0].startswith("451 4.3.0")
    finally:
        silent.close()


# -- faults under load: a client that behaves like an MTA (retries every 4xx) -------------

async def _mta(port: int, messages: dict[str, bytes], outcome: dict[str, list[str]],
               stop_at: int | None = None) -> None:
    """Send each message; on 4xx send it again later (at most 200 tries); record replies."""
    for mid, raw in messages.items():
        for _ in range(200):
            reply = (await send(port, raw))[0]
            outcome.setdefault(mid, []).append(reply)
            if not reply.startswith("4"):
                break
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("tmpfs", ["8m"], indirect=True)
async def test_maildir_fault_under_load_loses_and_doubles_nothing(make_app, tmpfs):
    """Four MTA-like clients send 120 messages while the Maildir flips between read-only and
    writable: every message ends with one 250, never a 5xx, and is stored exactly once."""
    app = await make_app(delivery=DeliveryConfig(tmpfs))
    port = app.bound["smtp"][1]
    batches = [{f"L{c}-{i}": mail(f"L{c}-{i}") for i in range(30)} for c in range(4)]
    outcome: dict[str, list[str]] = {}

    load = [asyncio.create_task(_mta(port, b, outcome)) for b in batches]

    async def remount(mode: str) -> None:
        # remount,ro is refused (EBUSY) while a file is open for writing: the next
        # copy's tmp file, which is exactly the load we want to hit; try again shortly
        for _ in range(50):
            done = await asyncio.to_thread(subprocess.run, ["mount", "-o", f"remount,{mode}",
                                                            str(tmpfs)], capture_output=True)
            if done.returncode == 0:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"remount,{mode} kept failing: {done.stderr!r}")

    async def flap() -> None:      # read-only 0.2 s, writable 0.2 s, while the load runs
        while not all(t.done() for t in load):
            await asyncio.sleep(0.05)
            await remount("ro")
            await asyncio.sleep(0.2)
            await remount("rw")
            await asyncio.sleep(0.2)

    await asyncio.gather(flap(), *load)
    assert len(outcome) == 120
    assert all(replies[-1].startswith("250") for replies in outcome.values()), outcome
    assert not any(r.startswith("5") for replies in outcome.values() for r in replies)
    assert any(r.startswith("4") for replies in outcome.values() for r in replies), \
        "the fault never bit: the test proves nothing"
    stored = [f.read_bytes() for f in maildir_files(tmpfs)]
    ids = [next(l for l in s.split(b"\r\n") if l.startswith(b"Message-ID:")) for s in stored]
    assert len(ids) == 120 and len(set(ids)) == 120
    assert await app.registry.count_messages() == 120


async def test_registry_lock_under_load_loses_and_doubles_nothing(make_app, tmp_path):
    """Four MTA-like clients send 80 messages while another program takes the SQLite registry
    for 1.5 s at a time: every message ends with one 250, never a 5xx; one copy and one
    registry row each."""
    url = sqlite_url(tmp_path)
    app = await make_app(registry=await short_deadline(url))
    port = app.bound["smtp"][1]
    batches = [{f"R{c}-{i}": mail(f"R{c}-{i}") for i in range(20)} for c in range(4)]
    outcome: dict[str, list[str]] = {}
    load = [asyncio.create_task(_mta(port, b, outcome)) for b in batches]
    db = tmp_path / "var" / "registry.db"

    def hold() -> None:
        other = sqlite3.connect(db, timeout=10)
        try:
            other.execute("BEGIN EXCLUSIVE")
            time.sleep(1.5)
            other.rollback()
        finally:
            other.close()

    while not all(t.done() for t in load):
        await asyncio.sleep(0.1)
        await asyncio.to_thread(hold)
    await asyncio.gather(*load)
    assert len(outcome) == 80
    assert all(replies[-1].startswith("250") for replies in outcome.values()), outcome
    assert not any(r.startswith("5") for replies in outcome.values() for r in replies)
    assert any(r.startswith("451") for replies in outcome.values() for r in replies), \
        "the lock never bit: the test proves nothing"
    stored = [f.read_bytes() for f in maildir_files(tmp_path / "var" / "mail")]
    ids = [next(l for l in s.split(b"\r\n") if l.startswith(b"Message-ID:")) for s in stored]
    assert len(ids) == 80 and len(set(ids)) == 80
    assert await app.registry.count_messages() == 80


async def _recorded(registry, key: str, tries: int = 200):
    """The registry's row of `key` once there is one (up to `tries` x 0.1 s), else None."""
    for _ in range(tries):
        row = await registry.message(key)
        if row is not None:
            return row
        await asyncio.sleep(0.1)
    return None


async def test_copy_of_a_failed_record_is_recorded_while_the_process_runs(make_app, tmp_path):
    """The registry locked: the message's Maildir copy is made, its record fails, the sender
    gets 451 and never comes back (found by bench/chaos.py --give-up). The copy stayed
    without a registry row for as long as the process ran: only the journals of processes
    gone were reconciled. Now the process's own reconcile task records it (`unanswered`)
    within seconds of the registry's return, writes its done line, and a late retry finds
    the copy: 250, no second copy, the message delivered."""
    app = await make_app(registry=await short_deadline(sqlite_url(tmp_path)))
    port = app.bound["smtp"][1]
    raw = mail("given-up")
    key = message_key(SENDER, raw)
    with contextlib.closing(sqlite3.connect(tmp_path / "var" / "registry.db",
                                            isolation_level=None)) as locker:
        locker.execute("BEGIN EXCLUSIVE")
        assert await send(port, raw) == [str(REPLY_REGISTRY_UNAVAILABLE)]
        locker.execute("ROLLBACK")
    mail_root = tmp_path / "var" / "mail"
    assert sum(f.read_bytes().endswith(raw) for f in maildir_files(mail_root)) == 1
    row = await _recorded(app.registry, key)     # passes come every RETRY_OWN seconds
    assert row is not None, "the copy is still unknown to the registry"
    assert row["status"] == "unanswered"
    assert [d["state"] for d in row["deliveries"]] == ["delivered"]
    def done_line() -> bool:     # written just after the record: wait for it as for the row
        return any(f"D {key}".encode() in j.read_bytes()
                   for j in (tmp_path / "var" / "intents").glob("*.jrn"))
    for _ in range(100):
        if done_line():
            break
        await asyncio.sleep(0.1)
    assert done_line()
    assert (await send(port, raw))[0].startswith("250 2.0.0")        # a late retry
    assert sum(f.read_bytes().endswith(raw) for f in maildir_files(mail_root)) == 1
    assert (await app.registry.message(key))["status"] == "delivered"


async def test_journal_kept_for_a_registry_outage_is_tried_again_soon(make_app, tmp_path):
    """A process gone (here: stopped while its record failed) left an open intent; another
    process's reconcile pass meets the registry locked and keeps the journal. The next pass
    came `interval` (30 s) later, so copies of a worker killed during a registry outage
    stayed unrecorded up to 30 s after it ended. Now a deferred pass is tried again every
    RETRY_OWN seconds: the copy is recorded soon after the lock goes, without a restart."""
    url = sqlite_url(tmp_path)
    first = await make_app(registry=await short_deadline(url))
    second = await make_app(registry=await short_deadline(url))
    raw = mail("dead-journal")
    key = message_key(SENDER, raw)
    locker = sqlite3.connect(tmp_path / "var" / "registry.db", isolation_level=None,
                             check_same_thread=False)
    try:
        await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
        assert await send(first.bound["smtp"][1], raw) == [str(REPLY_REGISTRY_UNAVAILABLE)]
        first.request_stop()
        await first.wait_stopped()        # its journal, intent open, unlocked: a process gone
        assert await second.intents.reconcile(second.registry) == 0     # deferred: locked
        await asyncio.to_thread(locker.execute, "ROLLBACK")
    finally:
        locker.close()
    row = await _recorded(second.registry, key)
    assert row is not None, "the dead process's copy is still unknown to the registry"
    assert row["status"] == "unanswered"
    assert [d["state"] for d in row["deliveries"]] == ["delivered"]

"""Faults found by the fault sweep (a real `mailrouter run`, real clients, real faults).

Each test reproduces one way a fault lost a message or its record, from outside: the
daemon as a process, a real SMTP client, a full tmpfs, a SQLite registry locked by
another process, SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.daemon import DaemonProcess, maildir_files
from tests.support.tmpfs import tmpfs_on
from tests.support.wire import Wire

pytestmark = pytest.mark.asyncio

SENDER = "sweep@outside.test"


def mail(n: str, subject_words: int = 3) -> bytes:
    # a long subject is folded into lines of about 70 characters; it goes whole into
    # the message's intent line (intents.py), which it makes longer than a page
    words = [f"word{i:04d}" for i in range(subject_words)]
    folded = "\r\n ".join(" ".join(words[i:i + 7]) for i in range(0, len(words), 7))
    return (f"From: <{SENDER}>\r\nTo: sales@example.com\r\nSubject: {folded}\r\n"
            f"Message-ID: <sweep-{n}@outside.test>\r\n\r\nbody of {n}\r\n").encode()


async def send(port: int, raw: bytes) -> str:
    async with Wire(port, timeout=60) as w:
        await w.greet()
        return (await w.transaction(SENDER, ["sales@example.com"], raw + b".\r\n"))[0]


@pytest.fixture
def intents_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """var/intents on a tmpfs of its own (1 MiB), unmounted at teardown."""
    with tmpfs_on(tmp_path / "var" / "intents", "1m") as mnt:
        yield mnt


@contextlib.contextmanager
def locked(db: Path) -> Iterator[None]:
    """Another process's view of the registry: BEGIN EXCLUSIVE held until the block ends."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def fill(directory: Path) -> Path:
    """Write a file in `directory` until its filesystem says ENOSPC; the file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
    return filler


def daemon_with(tmp_path: Path, like: DaemonProcess | None = None) -> DaemonProcess:
    """One worker (one journal), a registry deadline of 2 s; `like`: its config again, on
    new ports (the restart of a killed one)."""
    before = like.config.read_text() if like is not None else ""    # the same file
    d = DaemonProcess(tmp_path, extra="workers: 1\n")
    db = tmp_path / "var" / "registry.db"
    text = d.config.read_text().replace(f"{db}'}}", f"{db}', timeout: 2}}")
    if like is not None:
        text = before
        for old, new in ((like.smtp, d.smtp), (like.lmtp, d.lmtp), (like.admin, d.admin)):
            text = text.replace(f":{old}'", f":{new}'")
    assert "timeout: 2}" in text and "workers: 1" in text
    d.config.write_text(text)
    return d.start()


async def copy_left_by_a_kill_is_recorded(tmp_path: Path, daemon: DaemonProcess) -> None:
    """A message copied while the registry is locked (451), the daemon SIGKILLed before the
    lock goes: the restart's reconcile records the copy (`unanswered`), and the sender's
    retry is answered without a second copy."""
    db = tmp_path / "var" / "registry.db"
    with locked(db):
        reply = await send(daemon.smtp, mail("next"))     # copied, then its record fails
        assert reply.startswith("451 "), reply
        assert len(maildir_files(tmp_path / "var" / "mail")) == 2        # first, next
        daemon.proc.kill()                                               # type: ignore[union-attr]
        await asyncio.to_thread(daemon.wait)
    second = daemon_with(tmp_path, like=daemon)    # listening: its first reconcile pass is done
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = dict(conn.execute("SELECT message_id, status FROM messages").fetchall())
        assert rows.get("<sweep-next@outside.test>") == "unanswered", rows
        assert (await send(second.smtp, mail("next"))).startswith("250 ")
        assert len(maildir_files(tmp_path / "var" / "mail")) == 2
    finally:
        second.stop()


async def test_an_intent_torn_by_a_full_disk_does_not_hide_the_next_ones_copy(
        intents_tmpfs: Path, tmp_path: Path) -> None:
    """The intent journal's filesystem full cut an intent line short (a short write, then
    ENOSPC); the next intent was appended after those bytes, on the same line, and a
    restart's reconcile could not read it. A copy of that next message made before a
    registry outage and a SIGKILL was then never recorded: in the Maildir, not in the
    registry. Now the torn bytes are cut off again, and the restart records the copy."""
    daemon = daemon_with(tmp_path)
    try:
        assert (await send(daemon.smtp, mail("first"))).startswith("250 ")
        filler = await asyncio.to_thread(fill, intents_tmpfs)
        # its intent line (> 4 KiB with this subject) fills the journal's last page, then
        # ENOSPC: the message is refused, and part of its line is in the journal
        reply = await send(daemon.smtp, mail("torn", subject_words=800))
        assert reply[:1] == "4", reply
        filler.unlink()
        await copy_left_by_a_kill_is_recorded(tmp_path, daemon)
    finally:
        daemon.stop()


async def test_an_intent_after_a_done_line_cut_short_is_read(tmp_path: Path) -> None:
    """A done line's write on a full disk can be short without an error (os.write wrote
    what fitted): the next intent was appended to that part of a line, read as a done line
    of no message, and the copy it named, left by a kill during a registry outage, was never
    recorded. Now an intent starts a line of its own. The short write is made here as the
    disk made it: the journal ends in part of a done line."""
    daemon = daemon_with(tmp_path)
    try:
        assert (await send(daemon.smtp, mail("first"))).startswith("250 ")
        [journal] = (tmp_path / "var" / "intents").glob("*.jrn")
        assert journal.read_bytes().endswith(b"\n")
        with open(journal, "ab") as f:
            f.write(b"D 3f5a0c")                       # what fitted of the next done line
        await copy_left_by_a_kill_is_recorded(tmp_path, daemon)
    finally:
        daemon.stop()


async def test_records_made_after_the_wal_was_deleted_survive_a_sigkill(tmp_path: Path) -> None:
    """The SQLite registry's write-ahead log (registry.db-wal) is deleted while the daemon
    runs, then the daemon is SIGKILLed. SQLite went on committing to the unlinked log
    with no error: every message got 250, and after the restart the registry held none
    of the records made since the last checkpoint, the ones before the deletion included
    (their copies were in the Maildir, their intents settled: nothing named them). Now
    the daemon notices the log is gone at its next registry call, copies its commits
    into the registry file, says so in the log, and goes on with a new log."""
    daemon = DaemonProcess(tmp_path, extra="workers: 1\n").start()
    db = tmp_path / "var" / "registry.db"
    try:
        for n in range(5):
            assert (await send(daemon.smtp, mail(f"wal-before-{n}"))).startswith("250 ")
        (tmp_path / "var" / "registry.db-wal").unlink()
        for n in range(5):
            assert (await send(daemon.smtp, mail(f"wal-after-{n}"))).startswith("250 ")
        assert daemon.proc is not None
        daemon.proc.kill()
        await asyncio.to_thread(daemon.wait)
        daemon.start()
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = dict(conn.execute("SELECT message_id, status FROM messages").fetchall())
        want = {f"<sweep-wal-{when}-{n}@outside.test>" for when in ("before", "after")
                for n in range(5)}
        assert rows == dict.fromkeys(want, "delivered")
        assert len(maildir_files(tmp_path / "var" / "mail")) == 10
        assert "event=registry_reopened" in daemon.log.read_text()
        assert "registry.db-wal deleted while open" in daemon.log.read_text()
    finally:
        daemon.stop()


async def test_a_full_intents_dir_is_named_in_the_log_not_the_maildir(tmp_path: Path) -> None:
    """`delivery.intents_dir` on a disk that fills up while the Maildir's has room: the
    sender gets 452 4.3.1 (right), but the log said `delivery_failed ... error='maildir
    /var/mail/sales: No space left on device'` and `intent_failed` named neither file nor
    setting: the admin freed the wrong disk. Now both lines name the intent journal and
    `delivery.intents_dir`; freed, the retry is stored once."""
    with tmpfs_on(tmp_path / "intents", "256k") as intents:
        daemon = DaemonProcess(tmp_path, extra="workers: 1\n")
        text = daemon.config.read_text()
        daemon.config.write_text(text.replace("delivery: {", f"delivery: {{intents_dir: '{intents}', "))
        daemon.start()
        try:
            filler = fill(intents)
            raw = mail("intents-full")
            assert (await send(daemon.smtp, raw)).startswith("452 4.3.1")
            log = daemon.log.read_text()
            failed = [ln for ln in log.splitlines() if "event=delivery_failed" in ln]
            assert failed and all("intent journal " + str(intents) in ln and "maildir" not in ln
                                  for ln in failed), failed
            said = [ln for ln in log.splitlines() if "event=intent_failed" in ln]
            assert said and all(f"journal={intents}/" in ln for ln in said), said
            assert "free space in delivery.intents_dir" in log
            filler.unlink()
            assert (await send(daemon.smtp, raw)).startswith("250 ")
            assert len(maildir_files(tmp_path / "var" / "mail")) == 1
        finally:
            daemon.stop()


async def test_a_registry_locked_by_another_process_is_named_with_the_fix(tmp_path: Path) -> None:
    """Another process holds the SQLite registry's lock (a sqlite3 shell in BEGIN
    EXCLUSIVE) for longer than registry.timeout: the sender gets 451 (right), but the log
    said only `error='OperationalError: database is locked'`: not which file, not who,
    not what to do. Now the line names the file and the way to find the holder; once it
    lets go, the retry is stored once and recorded."""
    daemon = daemon_with(tmp_path)
    db = tmp_path / "var" / "registry.db"
    try:
        raw = mail("locked")
        with locked(db):
            assert (await send(daemon.smtp, raw)).startswith("451 ")
        said = [ln for ln in daemon.log.read_text().splitlines()
                if "event=registry_error" in ln and "database is locked" in ln]
        assert said and all(f"file={db}" in ln and f"`fuser {db}` names it" in ln
                            and "messages get 451" in ln for ln in said), said
        assert (await send(daemon.smtp, raw)).startswith("250 ")
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT status FROM messages").fetchall() == [("delivered",)]
        assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    finally:
        daemon.stop()


async def test_a_bus_error_in_the_registry_says_so_and_the_retry_is_stored_once(
        tmp_path: Path) -> None:
    """The registry's files made immutable (`chattr +i`, as a disk remounted read-only
    after errors is) while the daemon runs: SQLite's write to its memory-mapped -shm is a
    SIGBUS, and the daemon died with not one line in its log. Now the log says `Fatal
    Python error: Bus error` with the stacks, the registry's among them; the message was
    not answered 250, and after a restart the retry is stored once and recorded."""
    daemon = daemon_with(tmp_path)
    var = tmp_path / "var"
    db = var / "registry.db"
    names = [str(p) for p in sorted(var.glob("registry.db*"))]
    assert (await send(daemon.smtp, mail("first"))).startswith("250 ")
    shm = os.open(var / "registry.db-shm", os.O_RDONLY)
    os.fsync(shm)          # its mapped pages written back: the next write to them faults
    os.close(shm)
    if subprocess.run(["chattr", "+i", *names], capture_output=True).returncode != 0:
        daemon.stop()
        pytest.skip("chattr +i refused (not root, or a file system without it)")
    raw = mail("bus")
    try:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            assert not (await send(daemon.smtp, raw)).startswith("250")
        assert await asyncio.to_thread(daemon.wait) == -signal.SIGBUS
    finally:
        subprocess.run(["chattr", "-i", *names], check=True)
        daemon.stop()
    log = daemon.log.read_text()
    assert "Fatal Python error: Bus error" in log
    assert "mailrouter/registry/store.py" in log.split("Fatal Python error: Bus error")[1]
    second = daemon_with(tmp_path, like=daemon)
    try:
        assert (await send(second.smtp, raw)).startswith("250 ")
    finally:
        second.stop()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = dict(conn.execute("SELECT message_id, status FROM messages").fetchall())
    assert rows["<sweep-bus@outside.test>"] == "delivered"
    assert len(maildir_files(var / "mail")) == 2



async def test_an_empty_line_in_a_journal_is_not_an_unreadable_intent(tmp_path: Path) -> None:
    """Under load the writer thread may put an empty line in the journal (it starts an
    intent on a line of its own when the last byte is not a newline, and a done line being
    appended meanwhile looks cut short: a race made in /tmp/faults, 5 in 100,000 lines).
    The reconcile logged it as `intent_unreadable ... error='unknown line'`, which reads as
    a copy that will never be recorded; an empty line carries nothing and is skipped."""
    daemon = daemon_with(tmp_path)
    try:
        assert (await send(daemon.smtp, mail("first"))).startswith("250 ")
        [journal] = (tmp_path / "var" / "intents").glob("*.jrn")
        with open(journal, "ab") as f:
            f.write(b"\n")
        await copy_left_by_a_kill_is_recorded(tmp_path, daemon)
    finally:
        daemon.stop()
    assert "event=intent_unreadable" not in daemon.log.read_text()

def _started_workers(daemon: DaemonProcess) -> list[int]:
    """The pids of the workers the log says started, oldest first."""
    return [int(ln.split("pid=")[1].split()[0]) for ln in daemon.log.read_text().splitlines()
            if "event=worker_started" in ln]


async def send_until_250(port: int, raw: bytes, tries: int = 100) -> list[str]:
    """An MTA's retries: the replies until the first 250 (a session cut or left unanswered
    counts as a try), `tries` at most."""
    replies: list[str] = []
    for _ in range(tries):
        try:
            async with Wire(port, timeout=10) as w:
                await w.greet()
                replies.append((await w.transaction(SENDER, ["sales@example.com"],
                                                    raw + b".\r\n"))[0])
        except (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            replies.append(f"cut: {exc!r}")
        if replies[-1].startswith("250 "):
            break
        await asyncio.sleep(0.1)
    return replies


async def test_workers_replaced_while_the_registry_was_unwritable_write_once_it_is_again(
        tmp_path: Path) -> None:
    """The registry's files unwritable (`chattr +i`; for a daemon not run as root, files
    left to root by a `db upgrade` run as root) while the workers are replaced (killed,
    or the SIGBUS of its -shm): SQLite opens a file it cannot write read-only without a
    word, and such a connection, and every other one of the process to that file, stays
    read-only. Those workers answered 451 ("attempt to write a readonly database") to
    every message once the files were writable again, until a restart, though the log
    said "messages get 451 until then". Now a read-only connection is refused: the
    replacement cannot start and is tried again, and once the files are writable the
    retries are answered 250, stored once and recorded."""
    daemon = DaemonProcess(tmp_path, extra="workers: 2\n")
    db = tmp_path / "var" / "registry.db"
    daemon.config.write_text(daemon.config.read_text().replace(f"{db}'}}", f"{db}', timeout: 2}}"))
    daemon.start()
    names: list[str] = []
    sent = ["before", "after-1", "after-2", "after-3", "after-4"]
    try:
        assert (await send(daemon.smtp, mail("before"))).startswith("250 ")
        names = [str(p) for p in sorted(db.parent.glob("registry.db*"))]
        if subprocess.run(["chattr", "+i", *names], capture_output=True).returncode != 0:
            names = []
            pytest.skip("chattr +i refused (not root, or a file system without it)")
        first = _started_workers(daemon)
        assert len(first) == 2
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        for _ in range(600):     # both replacements have started, or tried to
            log = daemon.log.read_text()
            if log.count("event=started ") + log.count("event=start_failed ") >= 4:
                break
            await asyncio.sleep(0.05)
        subprocess.run(["chattr", "-i", *names], check=True)
        names = []
        for n in sent[1:]:
            replies = await send_until_250(daemon.smtp, mail(n))
            assert replies[-1].startswith("250 "), (n, replies[-5:])
            assert not [r for r in replies if r[:1] == "5"], replies
    finally:
        if names:
            subprocess.run(["chattr", "-i", *names], check=True)
        daemon.stop()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = dict(conn.execute("SELECT message_id, status FROM messages").fetchall())
    assert rows == {f"<sweep-{n}@outside.test>": "delivered" for n in sent}
    assert len(maildir_files(tmp_path / "var" / "mail")) == len(sent)


async def test_workers_replaced_after_the_registry_folder_was_removed_make_it_again(
        tmp_path: Path) -> None:
    """The SQLite registry's folder removed while the daemon runs (a cleanup, a wrong
    `rm -r`): a running worker makes the file again at its next call (_SqliteFile), but a
    worker replaced before that (killed, OOM) refused to start, "no registry at ...", and
    was tried again every 5 s forever: with both replaced, every connection hung unanswered
    until a restart. Now a daemon's worker makes the registry as the running one would:
    the message is answered 250 and recorded in the new file."""
    daemon = DaemonProcess(tmp_path, extra="workers: 2\n")
    old = tmp_path / "var" / "registry.db"
    db = tmp_path / "reg" / "registry.db"
    daemon.config.write_text(daemon.config.read_text().replace(str(old), str(db)))
    daemon.start()
    try:
        assert (await send(daemon.smtp, mail("before"))).startswith("250 ")
        subprocess.run(["rm", "-r", str(db.parent)], check=True)
        first = _started_workers(daemon)
        assert len(first) == 2
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        replies = await send_until_250(daemon.smtp, mail("after"), tries=10)
        assert replies[-1].startswith("250 "), (replies, daemon.log.read_text()[-2000:])
    finally:
        daemon.stop()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = dict(conn.execute("SELECT message_id, status FROM messages").fetchall())
    assert rows == {"<sweep-after@outside.test>": "delivered"}
    assert len(maildir_files(tmp_path / "var" / "mail")) == 2

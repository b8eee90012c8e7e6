"""End to end: swaks -> a private Postfix -> mailrouter -> Maildir and registry.

Every part is real: Postfix (tests/support/postfix.py) relays to the in-process
daemon over SMTP (relayhost) or LMTP (lmtp:inet:), swaks submits to Postfix,
the Maildir fault is a tmpfs remounted read-only. What is asserted is what an
operator sees: files in the Maildir, rows in the registry, Postfix's queue and
its maillog (status=sent / bounced / deferred).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mailrouter.config import DeliveryConfig
from tests.support.daemon import maildir_files
from tests.support.postfix import PostfixServer

pytestmark = pytest.mark.asyncio


async def until(pred: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    """Poll `pred` (sync, cheap) until true; fail after `timeout` with `what`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"not reached in {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def swaks(port: int, to: str, frm: str = "client@outside.test",
                subject: str = "e2e") -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        ["swaks", "-s", "127.0.0.1", "-p", str(port), "-f", frm, "-t", to,
         "--header", f"Subject: {subject}", "--body", "hello from swaks"],
        capture_output=True, text=True, timeout=60)


async def start_postfix(factory: Callable[..., PostfixServer], port: int,
                        lmtp: bool = False) -> PostfixServer:
    return await asyncio.to_thread(factory, relay_port=port, lmtp=lmtp)


def log_lines(mta: PostfixServer, rcpt: str) -> list[str]:
    return [l for l in mta.maillog.splitlines() if f"to=<{rcpt}>" in l]


async def test_postfix_relays_into_maildir_and_registry(make_app, postfix, tmp_path):
    """swaks -> Postfix -> mailrouter: the mail is in sales' Maildir once, in the registry,
    Postfix logs status=sent and its queue is empty."""
    app = await make_app()
    mta = await start_postfix(postfix, app.bound["smtp"][1])
    done = await swaks(mta.port, "sales@example.com", subject="Quote please")
    assert done.returncode == 0, done.stdout + done.stderr
    box = tmp_path / "var" / "mail" / "sales"
    await until(lambda: maildir_files(box), what="mail in sales Maildir\n" + mta.maillog)
    await until(lambda: "status=sent" in mta.maillog, what="status=sent\n" + mta.maillog)
    files = maildir_files(tmp_path / "var" / "mail")
    assert len(files) == 1 and files[0].is_relative_to(box)
    body = files[0].read_bytes()
    assert b"Subject: Quote please" in body
    assert b"by upstream.example.test (Postfix)" in body      # Postfix's own Received: kept
    assert b"by mx.test (mailrouter)" in body.split(b"\r\n\r\n")[0]  # and ours on top
    assert await app.registry.count_messages() == 1
    sent = log_lines(mta, "sales@example.com")
    assert any("status=sent" in l and "250 2.0.0" in l for l in sent), sent
    assert await asyncio.to_thread(mta.queue_ids) == []


async def test_unknown_recipient_bounces_at_postfix(make_app, postfix, tmp_path):
    """An unknown address: mailrouter answers 550 5.1.1, Postfix bounces it (status=bounced),
    nothing lands in a Maildir for it, and the bounce notice reaches the sender
    (postmaster@example.com, a mailrouter mailbox) as a DSN; the queue ends empty."""
    app = await make_app()
    mta = await start_postfix(postfix, app.bound["smtp"][1])
    done = await swaks(mta.port, "nobody@example.com", frm="postmaster@example.com")
    assert done.returncode == 0, done.stdout + done.stderr
    await until(lambda: "status=bounced" in mta.maillog, what="bounce\n" + mta.maillog)
    bounced = log_lines(mta, "nobody@example.com")
    assert any("status=bounced" in l and "550 5.1.1" in l for l in bounced), bounced
    assert not any("status=sent" in l for l in bounced)
    # The DSN goes from <> to postmaster@example.com, through mailrouter again.
    pm = tmp_path / "var" / "mail" / "postmaster"
    await until(lambda: maildir_files(pm), what="DSN in postmaster Maildir\n" + mta.maillog)
    dsn = maildir_files(pm)[0].read_bytes()
    assert b"Undelivered Mail Returned to Sender" in dsn and b"nobody@example.com" in dsn
    await until(lambda: mta.queue_ids() == [], what="empty queue")
    assert [f.parent.parent.name for f in maildir_files(tmp_path / "var" / "mail")] == ["postmaster"]


async def test_postfix_lmtp_three_recipients_one_unknown(make_app, postfix, tmp_path):
    """Postfix over LMTP puts 3 recipients in one transaction; the two known ones land,
    the unknown one is bounced, and Postfix logs one status per recipient."""
    app = await make_app()
    mta = await start_postfix(postfix, app.bound["lmtp"][1], lmtp=True)
    rcpts = ["sales@example.com", "nobody@example.com", "support@example.com"]
    done = await swaks(mta.port, ",".join(rcpts))
    assert done.returncode == 0, done.stdout + done.stderr
    await until(lambda: all(re.search(r"status=(sent|bounced)", " ".join(log_lines(mta, r)))
                            for r in rcpts), what="3 statuses\n" + mta.maillog)
    lines = {r: " ".join(log_lines(mta, r)) for r in rcpts}
    assert "status=sent" in lines["sales@example.com"]
    assert "status=sent" in lines["support@example.com"]
    assert "status=bounced" in lines["nobody@example.com"]
    assert "550 5.1.1" in lines["nobody@example.com"]
    assert "lmtp" in lines["sales@example.com"]                  # relay=..., delivered by LMTP
    # one LMTP transaction: the queue id of the three statuses is the same
    qids = {l.split(": ")[0].split()[-1] for r in rcpts for l in log_lines(mta, r)}
    assert len(qids) == 1, qids
    mail = tmp_path / "var" / "mail"
    assert len(maildir_files(mail / "sales")) == 1
    assert len(maildir_files(mail / "support")) == 1
    assert await app.registry.count_messages() >= 1


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A 4 MB tmpfs at tmp_path/mnt; remount(ro=True/False). Skips if mount is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount tmpfs here (needs CAP_SYS_ADMIN)")

    def remount(ro: bool) -> None:
        subprocess.run(["mount", "-o", f"remount,{'ro' if ro else 'rw'}", str(mnt)], check=True)

    yield mnt, remount
    subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_maildir_fault_keeps_mail_deferred_then_delivers_once(make_app, postfix, tmpfs,
                                                                    tmp_path):
    """Maildir root on a read-only tmpfs: mailrouter answers 4xx, Postfix defers and keeps
    the mail (postqueue shows it). After the remount rw, flush() delivers it exactly once,
    and the registry holds one message."""
    mnt, remount = tmpfs
    remount(True)
    app = await make_app(delivery=DeliveryConfig(maildir_root=mnt))
    mta = await start_postfix(postfix, app.bound["smtp"][1])
    mta.postconf("minimal_backoff_time = 300s", "maximal_backoff_time = 300s",
                 "queue_run_delay = 300s")                  # only our flush retries it
    await asyncio.to_thread(mta.reload)
    done = await swaks(mta.port, "sales@example.com", subject="Deferred")
    assert done.returncode == 0, done.stdout + done.stderr
    await until(lambda: "status=deferred" in mta.maillog, what="deferral\n" + mta.maillog)
    deferred = log_lines(mta, "sales@example.com")
    assert any(re.search(r"said: 45\d 4\.\d\.\d", l) for l in deferred), deferred
    assert not any("status=bounced" in l or "status=sent" in l for l in deferred)
    queued = await asyncio.to_thread(mta.queue_ids)
    assert len(queued) == 1
    assert maildir_files(mnt) == []

    remount(False)
    await asyncio.to_thread(mta.flush)
    await until(lambda: "status=sent" in mta.maillog, what="sent after flush\n" + mta.maillog)
    await until(lambda: mta.queue_ids() == [], what="empty queue")
    files = maildir_files(mnt / "sales")
    assert len(files) == 1 and b"Subject: Deferred" in files[0].read_bytes()
    await asyncio.to_thread(mta.flush)                      # nothing left to send again
    await asyncio.sleep(0.5)
    assert len(maildir_files(mnt)) == 1
    assert len([l for l in log_lines(mta, "sales@example.com") if "status=sent" in l]) == 1
    assert await app.registry.count_messages() == 1

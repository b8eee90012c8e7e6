"""SIGTERM on the real `mailrouter run` process: drain, finish what is in flight, exit 0.

After SIGTERM: a transaction in flight finishes with 250 and is in the registry;
an idle session and a new connection get 421 4.3.2 (a new connection may also
be refused once the listener is closed) and never a 250; the process exits 0.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mailrouter.pipeline import message_key
from tests.support.daemon import maildir_files
from tests.support.wire import Wire

pytestmark = pytest.mark.asyncio

SENDER = "client@outside.test"


def mail(n: str) -> bytes:
    body = "".join(f"line {i} of the message body\r\n" for i in range(40))
    return (f"From: Client <{SENDER}>\r\nTo: sales@example.com\r\nSubject: shutdown {n}\r\n"
            f"Message-ID: <shutdown-{n}@outside.test>\r\n\r\n{body}").encode()


def registry_rows(tmp_path: Path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / "var" / "registry.db") as db:
        return dict(db.execute("SELECT key, status FROM messages"))


async def new_connection_lines(port: int) -> list[str]:
    """What a client connecting now sees when it tries to start a transaction."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return []
    lines: list[str] = []
    try:
        async with asyncio.timeout(15):
            first = await reader.readline()
            lines.append(first.decode().rstrip())
            if first.startswith(b"220"):
                writer.write(b"EHLO c.test\r\nMAIL FROM:<a@outside.test>\r\n"
                             b"RCPT TO:<sales@example.com>\r\n")
            while line := await reader.readline():
                lines.append(line.decode().rstrip())
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    return lines


async def all_draining(d: Any) -> None:
    """Wait until every worker has taken the SIGTERM the supervisor forwards: until then a
    new connection the kernel hands to one that has not is greeted 220, a race of the
    signal's delivery, not the drain under test."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 30                   # only to fail a hung test, not a speed check
    while True:
        log = d.log.read_text()
        workers = re.search(r"event=supervising workers=(\d+)", log)
        if log.count("event=stopping") >= (int(workers[1]) if workers else 1):
            return
        assert loop.time() < end, log
        await asyncio.sleep(0.02)


async def test_sigterm_drains(daemon_process, tmp_path):
    d = daemon_process()
    raw = mail("in-flight")
    half = len(raw) // 2
    async with Wire(d.smtp) as busy, Wire(d.smtp) as idle, Wire(d.lmtp) as idle_lmtp:
        await busy.greet()
        assert (await busy.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
        assert (await busy.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await busy.cmd("DATA")).startswith("354")
        await busy.send(raw[:half])
        await idle.greet()
        await idle_lmtp.greet("LHLO")

        d.signal(signal.SIGTERM)
        # Idle sessions are told 421 and closed; this also proves the daemon is draining.
        assert (await idle.line()).startswith("421 4.3.2")
        assert await idle.closed()
        assert (await idle_lmtp.line()).startswith("421 4.3.2")
        # A new connection never gets to deliver.
        await all_draining(d)
        lines = await new_connection_lines(d.smtp)
        assert not any(l.startswith("250") for l in lines), lines
        assert lines == [] or any(l.startswith("421 4.3.2") for l in lines), lines
        # The transaction in flight finishes with 250, then the session is closed with 421.
        await busy.send(raw[half:] + b".\r\n")
        assert (await busy.line()).startswith("250 2.0.0")
        assert (await busy.line()).startswith("421 4.3.2")
        assert await busy.closed()
    assert await asyncio.to_thread(d.wait, 30) == 0
    assert registry_rows(tmp_path) == {message_key(SENDER, raw): "delivered"}
    files = maildir_files(tmp_path / "var" / "mail")
    assert len(files) == 1 and files[0].read_bytes().endswith(raw)


async def test_new_connection_during_drain_is_greeted_421(daemon_process, tmp_path):
    """While a transaction keeps the daemon draining, a new client's first line is
    421 4.3.2 (RFC 5321 3.1), not a 220 that invites it to start a transaction."""
    d = daemon_process()
    async with Wire(d.smtp) as busy:
        await busy.greet()
        assert (await busy.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
        assert (await busy.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await busy.cmd("DATA")).startswith("354")
        async with Wire(d.smtp) as probe:
            await probe.greet()
            d.signal(signal.SIGTERM)
            assert (await probe.line()).startswith("421 4.3.2")
        await all_draining(d)
        lines = await new_connection_lines(d.smtp)
        assert lines[:1] == ["421 4.3.2 Service shutting down, try again later"], lines
        await busy.send(mail("x") + b".\r\n")
        assert (await busy.line()).startswith("250 2.0.0")
    assert await asyncio.to_thread(d.wait, 30) == 0
    assert list(registry_rows(tmp_path).values()) == ["delivered"]


@pytest.mark.parametrize("sender", [SENDER, ""], ids=["sender", "null-sender"])
async def test_transaction_between_commands_finishes(daemon_process, tmp_path, sender):
    """A client that has sent MAIL but not yet RCPT and DATA when SIGTERM arrives is in a
    transaction too (a bounce, MAIL FROM:<>, as well): it may finish it within shutdown_grace
    and gets 250."""
    d = daemon_process()
    raw = mail("between")
    async with Wire(d.smtp) as busy, Wire(d.smtp) as idle:
        await busy.greet()
        await idle.greet()
        assert (await busy.cmd(f"MAIL FROM:<{sender}>")).startswith("250")
        d.signal(signal.SIGTERM)
        assert (await idle.line()).startswith("421 4.3.2")    # the daemon is draining now
        assert (await busy.cmd("RCPT TO:<sales@example.com>")).startswith("250 2.1.5")
        assert (await busy.cmd("DATA")).startswith("354")
        await busy.send(raw + b".\r\n")
        assert (await busy.line()).startswith("250 2.0.0")
    assert await asyncio.to_thread(d.wait, 30) == 0
    assert list(registry_rows(tmp_path).values()) == ["delivered"]


def _grace(d_config: Path, seconds: int) -> None:
    text = d_config.read_text(encoding="utf-8")
    d_config.write_text(text.replace("shutdown_grace: 10\n", f"shutdown_grace: {seconds}\n"),
                        encoding="utf-8")


async def test_grace_over_mid_data_says_421_and_takes_nothing(tmp_path):
    """shutdown_grace runs out while a client (smtplib) is still sending its message: it is
    told 421 4.3.2 before the close (RFC 5321 3.8), not cut without a word as a crash
    would; nothing it sent is stored or recorded, and the cut DATA is counted (shutdown)."""
    import smtplib

    from tests.support.daemon import DaemonProcess
    d = DaemonProcess(tmp_path, extra="workers: 1\n")
    _grace(d.config, 1)
    d.start()
    try:
        def client() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", d.smtp, timeout=60) as s:
                s.ehlo()
                s.mail(SENDER)
                assert s.rcpt("sales@example.com")[0] == 250
                assert s.docmd("DATA")[0] == 354
                s.send(mail("cut")[:200])
                d.signal(signal.SIGTERM)          # the rest never comes: grace runs out
                reply = s.getreply()
                with pytest.raises(smtplib.SMTPServerDisconnected):
                    s.noop()
                return reply
        code, text = await asyncio.to_thread(client)
        assert (code, text[:5]) == (421, b"4.3.2"), (code, text)
        assert await asyncio.to_thread(d.wait, 30) == 0
    finally:
        d.stop()
    log = d.log.read_text()
    assert "event=session_shut_down" in log and "in_data=True" in log
    assert maildir_files(tmp_path / "var" / "mail") == []
    assert registry_rows(tmp_path) == {}


async def test_grace_over_while_processing_says_421_and_no_250(tmp_path):
    """The final dot was read, but the message's downstream never answers (a hung Postfix),
    and shutdown_grace runs out: the client gets 421 4.3.2, not a silent close, never a
    250, and the registry shows no delivered message."""

    from tests.support.daemon import DaemonProcess
    from tests.support.ports import silent_listener
    silent = silent_listener()             # accepts (kernel backlog), never greets
    book = tmp_path / "book.yaml"
    book.write_text("domains: [example.com]\nmailboxes:\n  fwd: {smtp: x@downstream.test}\n"
                    "aliases:\n  postmaster@example.com: mailbox:fwd\n"
                    "  hang@example.com: mailbox:fwd\n", encoding="utf-8")
    d = DaemonProcess(tmp_path, routing=str(book), extra="workers: 1\nlimits: {process_timeout: 600}\n")
    text = d.config.read_text(encoding="utf-8")
    d.config.write_text(text.replace("delivery: {", "delivery: {smtp: {host: 127.0.0.1, port: "
                                     f"{silent.getsockname()[1]}, timeout: 600}}, "), encoding="utf-8")
    _grace(d.config, 1)
    d.start()
    try:
        async with Wire(d.smtp, timeout=60) as w:
            await w.greet()
            assert (await w.cmd(f"MAIL FROM:<{SENDER}>")).startswith("250")
            assert (await w.cmd("RCPT TO:<hang@example.com>")).startswith("250")
            assert (await w.cmd("DATA")).startswith("354")
            await w.send(mail("held") + b".\r\n")
            silent.settimeout(30)                 # only to fail a hung test
            conn, _ = await asyncio.to_thread(silent.accept)   # the message is being delivered
            d.signal(signal.SIGTERM)
            assert (await w.line()).startswith("421 4.3.2")
            assert await w.closed()
        assert await asyncio.to_thread(d.wait, 30) == 0
        conn.close()
    finally:
        d.stop()
        silent.close()
    assert "delivered" not in registry_rows(tmp_path).values()


async def test_intents_dir_replaced_by_a_file_still_stops_cleanly(daemon_process, tmp_path):
    """var/intents removed while the daemon runs and a file made in its place (a careless
    clean-up): SIGTERM ended with a NotADirectoryError traceback from the journal's tidy-up,
    before the outbox and the registry were closed, and exit 1 (systemd: failed). Now the
    drain ends as always: exit 0, event=stopped."""
    import shutil
    import smtplib
    d = daemon_process(extra="workers: 1\n")

    def send() -> int:
        with smtplib.SMTP("127.0.0.1", d.smtp, timeout=30) as s:
            s.ehlo()
            s.mail(SENDER)
            s.rcpt("sales@example.com")
            return s.data(mail("before"))[0]
    assert await asyncio.to_thread(send) == 250          # this process's journal is open
    intents = tmp_path / "var" / "intents"
    shutil.rmtree(intents)
    intents.write_text("not a directory\n")
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait, 30) == 0, d.log.read_text()[-3000:]
    assert "event=stopped" in d.log.read_text()
    assert list(registry_rows(tmp_path).values()) == ["delivered"]

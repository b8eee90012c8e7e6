"""The outbox across a SIGKILL: an autoreply committed with its message but not yet sent
(the relay is down) is sent by the next daemon on the same registry, and only once.

The real `mailrouter run` process, a real aiosmtpd relay sink, the SQLite registry file
read directly with sqlite3 (the daemon is dead or busy; no mailrouter code in between).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiosmtplib

from tests.support.daemon import free_port
from tests.test_delivery_smtp import Sink

MAIL = (b"From: Ann <ann@client.example>\r\nTo: old-sales@example.com\r\nSubject: Question\r\n"
        b"Message-ID: <kill-1@client.example>\r\n\r\nHello\r\n")


def outbox_rows(workdir: Path) -> list[tuple[str, int, str]]:
    """(state, attempts, last_error) of every outbox row, straight from the file."""
    db = sqlite3.connect(f"file:{workdir / 'var' / 'registry.db'}?mode=ro", uri=True, timeout=10)
    try:
        return [(s, a, e or "") for s, a, e in
                db.execute("SELECT state, attempts, last_error FROM outbox ORDER BY id")]
    except sqlite3.OperationalError:      # not created yet
        return []
    finally:
        db.close()


async def until(cond: Any, what: str, limit: float = 150.0) -> None:
    """A generous deadline only to fail a hung test (a kill that lands inside a send
    leaves the row leased for 60 s; the next daemon sends it after that), never a speed test."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_sigkill_between_commit_and_send(tmp_path: Path, daemon_process: Any) -> None:
    """Relay down: the answer is committed and waits; SIGKILL; relay up and a new daemon on
    the same registry: the answer arrives, once."""
    port = free_port()
    extra = (f"outbox: {{relay: '127.0.0.1:{port}', retry_min: 1, retry_max: 1, timeout: 5}}\n"
             "autoreply: {dns: {check: false}}\n")
    first = await asyncio.to_thread(daemon_process, extra=extra)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=first.smtp, timeout=15) as smtp:
        await smtp.sendmail("ann@client.example", ["old-sales@example.com"], MAIL)
    # committed with the message, tried, refused by the dead relay, waiting for its retry
    await until(lambda: any(s == "queued" and e for s, _, e in outbox_rows(tmp_path)),
                "a failed attempt")
    first.signal(signal.SIGKILL)
    assert await asyncio.to_thread(first.wait) == -signal.SIGKILL
    [(state, _, error)] = outbox_rows(tmp_path)
    assert state == "queued" and "Connect" in error, error

    sink = Sink()
    sink.port = port
    await sink.start()
    try:
        await asyncio.to_thread(daemon_process, extra=extra)
        await until(lambda: [s for s, _, _ in outbox_rows(tmp_path)] == ["sent"], "the answer sent")
        await asyncio.sleep(1.5)        # one more retry period: a second copy would show here
        assert [e.rcpt_tos for e in sink.envelopes] == [["ann@client.example"]]
        assert b"Auto-Submitted: auto-replied" in sink.envelopes[0].content
        assert [s for s, _, _ in outbox_rows(tmp_path)] == ["sent"]
    finally:
        await sink.stop()

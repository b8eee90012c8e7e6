"""Scale-out (issue 10): two daemons on one PostgreSQL registry and one Maildir root.

Two real `mailrouter run -c` processes with different host names share the
registry database and the mail store, as two instances behind one MX would.
Every message is sent to both at the same moment (aiosmtplib, one session per
send): both ask the registry before either has recorded the message, so only
the mail store can tell that the copy already exists. Each message must end up
stored exactly once per target, counted in new/ and cur/ on disk.
"""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from pathlib import Path

import aiosmtplib
import pytest

from tests.support.daemon import DaemonProcess, maildir_files
from tests.test_registry_pg_daemon import fetch

pytestmark = pytest.mark.asyncio

MESSAGES = 1000          # the figure
IN_FLIGHT = 64           # sends open at once, per instance
RCPTS = ["sales@example.com", "support@example.com"]   # two targets per message


def _config(d: DaemonProcess, hostname: str, registry: str, mail: Path) -> None:
    d.config.write_text(
        f"hostname: {hostname}\n"
        f"listen: {{smtp: '127.0.0.1:{d.smtp}', lmtp: '127.0.0.1:{d.lmtp}', "
        f"admin: '127.0.0.1:{d.admin}'}}\n"
        f"routing: ['{Path(__file__).resolve().parents[1] / 'rules' / '*.yaml'}']\n"
        f"registry: {{url: '{registry}'}}\n"
        f"delivery: {{maildir_root: '{mail}'}}\n"
        f"workers: 1\nshutdown_grace: 10\nlog_level: WARNING\n", encoding="utf-8")


def _raw(n: int) -> bytes:
    return (f"From: client{n}@outside.test\r\nTo: sales@example.com\r\nSubject: order {n}\r\n"
            f"Message-ID: <m{n}@outside.test>\r\n\r\nbody {n}\r\n").encode()


async def test_same_messages_to_two_instances_at_once_are_stored_once(pg_db, tmp_path):
    """1,000 messages, each sent to instance A and instance B concurrently: every message is
    accepted (250) by at least one of them, and each of its two targets holds exactly one copy
    (with host-named Maildir files, 1-2% of the copies were stored twice)."""
    mail = tmp_path / "mail"
    daemons = []
    for name in ("mx-a.test", "mx-b.test"):
        work = tmp_path / name
        work.mkdir()
        d = DaemonProcess(work)
        _config(d, name, pg_db, mail)
        daemons.append(d)
    try:
        for d in daemons:        # one after the other: both would create the schema at once
            await asyncio.to_thread(d.start, 60.0)
        gates = [asyncio.Semaphore(IN_FLIGHT) for _ in daemons]

        async def send(d: DaemonProcess, gate: asyncio.Semaphore, n: int) -> bool:
            async with gate:
                try:
                    await aiosmtplib.send(_raw(n), sender=f"client{n}@outside.test",
                                          recipients=RCPTS, hostname="127.0.0.1", port=d.smtp,
                                          timeout=60)
                except aiosmtplib.SMTPResponseException as exc:
                    assert exc.code // 100 == 4, (n, exc)   # a deferral is allowed, never 5xx
                    return False
                return True

        async def both(n: int) -> bool:
            got = await asyncio.gather(*(send(d, g, n) for d, g in zip(daemons, gates)))
            return any(got)

        accepted = await asyncio.gather(*(both(n) for n in range(MESSAGES)))
        assert all(accepted), [n for n, ok in enumerate(accepted) if not ok][:10]
    finally:
        for d in daemons:
            await asyncio.to_thread(d.stop)

    per_box: dict[str, list[str]] = {"sales": [], "support": []}
    for path in maildir_files(mail):
        box = path.relative_to(mail).parts[0]
        per_box[box].append(message_from_bytes(path.read_bytes())["Message-ID"])
    for box, ids in per_box.items():
        assert len(ids) == MESSAGES and len(set(ids)) == MESSAGES, (box, len(ids), len(set(ids)))
    rows = await fetch(pg_db, "SELECT count(*) AS n FROM deliveries WHERE state = 'delivered'")
    assert rows[0]["n"] == MESSAGES * len(RCPTS)

"""One message split over several transactions meets a registry outage (real daemon, real
SQLite file locked by another connection, real sessions).

An MTA splits a message's recipients over transactions (Postfix's
*_destination_recipient_limit, an LMTP retry of the deferred recipients only): the same
envelope sender and bytes, so the same message key, reach us more than once, each for
other recipients. Each transaction's Maildir copies have an intent (intents.py). The
intents of one key were kept per key: the second one replaced the first, so a copy of the
first transaction was never recorded when the sender did not come back (or when the
process died before its records).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path

import pytest

from mailrouter.pipeline import message_key
from mailrouter.registry.store import upgrade
from mailrouter.config import RegistryConfig
from mailrouter.values import REPLY_REGISTRY_UNAVAILABLE
from tests.support.daemon import DaemonProcess, maildir_files
from tests.support.wire import Wire

pytestmark = pytest.mark.asyncio

SENDER = "client@outside.test"
RAW = (b"From: Client <client@outside.test>\r\nTo: sales@example.com, support@example.com\r\n"
       b"Subject: split\r\nMessage-ID: <split-1@outside.test>\r\n\r\nOne message, two "
       b"transactions.\r\n")
DATA = RAW + b".\r\n"


async def send(port: int, rcpt: str) -> list[str]:
    async with Wire(port) as w:
        await w.greet("EHLO")
        return await w.transaction(SENDER, [rcpt], DATA)


async def locked_registry_app(make_app, tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'registry.db'}"
    await upgrade(url)         # the schema first, as the supervisor makes it
    return await make_app(registry=RegistryConfig(url, timeout=1.0))


async def both_copies_refused(port: int, db: Path) -> None:
    """Both transactions, each for one recipient, answered 451 while another process holds
    the registry: each one's copy is made, neither is recorded."""
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as locker:
        locker.execute("BEGIN EXCLUSIVE")
        for rcpt in ("sales@example.com", "support@example.com"):
            assert await send(port, rcpt) == [str(REPLY_REGISTRY_UNAVAILABLE)]
        locker.execute("ROLLBACK")


def boxes(root: Path) -> list[str]:
    """The folders holding a copy of RAW."""
    return sorted(str(f.parent.parent.relative_to(root)) for f in maildir_files(root)
                  if f.read_bytes().endswith(RAW))


def delivered(row: dict | None) -> list[str]:  # type: ignore[type-arg]
    return sorted(d["target"] for d in (row or {}).get("deliveries", [])
                  if d["state"] == "delivered")


async def test_both_transactions_copies_are_recorded_by_the_live_process(make_app, tmp_path):
    app = await locked_registry_app(make_app, tmp_path)
    await both_copies_refused(app.bound["smtp"][1], tmp_path / "var" / "registry.db")
    assert len(set(boxes(tmp_path / "var" / "mail"))) == 2
    key = message_key(SENDER, RAW)
    row = None
    for _ in range(100):        # the process's own reconcile comes every RETRY_OWN seconds
        row = await app.registry.message(key)
        if len(delivered(row)) == 2:
            break
        await asyncio.sleep(0.1)
    assert row is not None and row["status"] == "unanswered"
    assert len(delivered(row)) == 2, row["deliveries"]


async def test_both_transactions_copies_are_recorded_after_a_sigkill(tmp_path):
    """The process SIGKILLed before its own pass could record them (the registry still
    locked): the restart's reconcile reads its journal, both intents of the key open."""
    db = tmp_path / "var" / "registry.db"
    d = DaemonProcess(tmp_path, extra="workers: 1\n")     # one journal for both
    d.config.write_text(d.config.read_text().replace("registry.db'}", "registry.db', timeout: 1}"))
    try:
        await asyncio.to_thread(d.start)
        await killed_with_both_intents_open(d, db)
        assert len(set(boxes(tmp_path / "var" / "mail"))) == 2
        await asyncio.to_thread(d.start)        # its reconcile runs before the listeners open
    finally:
        d.stop()
    with contextlib.closing(sqlite3.connect(db)) as reader:
        got = sorted(t for (t,) in reader.execute(
            "SELECT d.target FROM deliveries d JOIN messages m ON m.key = d.message_key "
            "WHERE m.message_id = '<split-1@outside.test>' AND d.state = 'delivered'"))
    assert len(got) == 2, got


async def killed_with_both_intents_open(d: DaemonProcess, db: Path) -> None:
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as locker:
        locker.execute("BEGIN EXCLUSIVE")
        for rcpt in ("sales@example.com", "support@example.com"):
            assert (await send(d.smtp, rcpt))[0].startswith("451 4.3.0"), rcpt
        d.signal(signal.SIGKILL)
        await asyncio.to_thread(d.wait)
        locker.execute("ROLLBACK")


async def test_a_transaction_deferred_after_another_delivered_leaves_the_message_partial(
        make_app, tmp_path):
    """The first transaction (sales) delivered and answered 250; the second (support)
    deferred: its folder is no folder (a file stands in its place). The message was
    recorded `deferred`, as if none of it had been stored; it is `partial`, the sales copy
    `delivered`; the second's retry, once the folder is back, makes it `delivered`."""
    app = await make_app()
    port = app.bound["smtp"][1]
    assert (await send(port, "sales@example.com"))[0].startswith("250 2.0.0")
    support = tmp_path / "var" / "mail" / "support"
    assert not support.exists()
    support.write_text("not a folder")
    assert (await send(port, "support@example.com"))[0].startswith("451 4.3.0")
    key = message_key(SENDER, RAW)
    row = await app.registry.message(key)
    assert row is not None and row["status"] == "partial"
    assert len(delivered(row)) == 1
    support.unlink()
    assert (await send(port, "support@example.com"))[0].startswith("250 2.0.0")
    row = await app.registry.message(key)
    assert row is not None and row["status"] == "delivered"
    assert len(delivered(row)) == 2


async def test_a_transaction_delivered_after_another_deferred_leaves_the_message_partial(
        make_app, tmp_path):
    """The other order: the first transaction (support) deferred, its folder no folder;
    the second (sales) delivered and answered 250. The message was recorded `delivered`
    while support's recipient still waited in the MTA's queue; it is `partial`. The
    retry of support, once the folder is back, makes it `delivered`."""
    app = await make_app()
    port = app.bound["smtp"][1]
    support = tmp_path / "var" / "mail" / "support"
    support.parent.mkdir(parents=True, exist_ok=True)
    support.write_text("not a folder")
    assert (await send(port, "support@example.com"))[0].startswith("451 4.3.0")
    assert (await send(port, "sales@example.com"))[0].startswith("250 2.0.0")
    key = message_key(SENDER, RAW)
    row = await app.registry.message(key)
    assert row is not None and row["status"] == "partial"
    assert len(delivered(row)) == 1
    support.unlink()
    assert (await send(port, "support@example.com"))[0].startswith("250 2.0.0")
    row = await app.registry.message(key)
    assert row is not None and row["status"] == "delivered"
    assert len(delivered(row)) == 2

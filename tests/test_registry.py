"""Registry tests on real SQLite files and a real PostgreSQL (fixtures in tests/support/pg.py).

Faults are real: a second SQLite connection holding an EXCLUSIVE transaction, a
read-only directory (entered as user nobody when we run as root, since root
ignores file modes), and a private PostgreSQL cluster stopped and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, inspect, select, text

from mailrouter.errors import RegistryBugError, RegistryError
from mailrouter.registry import (
    DecisionRecord,
    DeliveryRecord,
    MessageRecord,
    Registry,
    upgrade,
)
from mailrouter.registry.models import loops, reloads
from mailrouter.values import REPLY_INTERNAL_ERROR, REPLY_REGISTRY_UNAVAILABLE
from tests.support.pg import PgCluster

WHEN = datetime(2027, 1, 11, 9, 30, tzinfo=timezone.utc)


def message(key: str = "a" * 64, **changes: object) -> MessageRecord:
    base = MessageRecord(
        key=key, received_at=WHEN, protocol="smtp", peer="127.0.0.1",
        mail_from="client@example.org", rcpts=("invoices@example.com", "sales@example.com"),
        message_id="<1@example.org>", from_name="Пётр Иванов", from_addr="client@example.org",
        subject="Счёт №5", size=4096, content_hash="c" * 64, defects=("bare LF",),
        ruleset_hash="r" * 64, status="delivered")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def decision(rcpt: str = "invoices@example.com", **changes: object) -> DecisionRecord:
    base = DecisionRecord(
        rcpt=rcpt, action="deliver", reply="250 2.1.5 Ok", mailbox="finance", folder="Finance",
        owner="ivanov", tags=("invoice",), priority="high", sla="4h",
        path=(rcpt, "mailbox:finance"), reasons=("subject contains счёт",),
        rules=({"name": "invoices", "matched": "счет"},))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def delivery(target: str = "maildir:finance/.Finance", state: str = "delivered") -> DeliveryRecord:
    return DeliveryRecord(target=target, state=state, detail=f"{state} ok")


@pytest.fixture
async def registry(registry_url: str) -> AsyncIterator[Registry]:
    reg = await Registry.open(registry_url)
    yield reg
    await reg.close()


async def test_record_and_read_back(registry: Registry) -> None:
    """A recorded message comes back with its decisions and deliveries, values intact."""
    await registry.record(message(), [decision(), decision("sales@example.com", mailbox="sales")],
                          [delivery()])
    row = await registry.message("a" * 64)
    assert row is not None
    assert row["received_at"] == WHEN and row["received_at"].tzinfo is not None
    assert (row["subject"], row["from_name"], row["attempts"]) == ("Счёт №5", "Пётр Иванов", 1)
    assert row["rcpts"] == ["invoices@example.com", "sales@example.com"]
    assert row["defects"] == ["bare LF"]
    assert [d["mailbox"] for d in row["decisions"]] == ["finance", "sales"]
    assert row["decisions"][0]["rules"] == [{"name": "invoices", "matched": "счет"}]
    assert [(d["target"], d["state"]) for d in row["deliveries"]] == [
        ("maildir:finance/.Finance", "delivered")]
    assert await registry.message("b" * 64) is None
    assert await registry.count_messages() == 1


async def test_group_commit_batches_concurrent_records(registry: Registry) -> None:
    """200 concurrent record() calls share a handful of transactions, and all are stored."""
    commits: list[object] = []
    event.listen(registry.commit_engine, "commit", lambda conn: commits.append(conn))
    await asyncio.gather(*(registry.record(message(f"{n:064x}"), [decision()], [delivery()])
                           for n in range(200)))
    assert await registry.count_messages() == 200
    assert 1 <= len(commits) <= 20


async def test_retry_upserts_and_never_downgrades_delivered(registry: Registry) -> None:
    """A retry of one key updates the row, bumps attempts, adds no duplicates."""
    await registry.record(message(status="partial"), [decision()],
                          [delivery("maildir:finance"), delivery("lmtp:bob@mx", "deferred")])
    await registry.record(message(status="delivered"), [decision(reply="250 2.0.0 again")],
                          [delivery("maildir:finance", "failed"), delivery("lmtp:bob@mx")])
    row = await registry.message("a" * 64)
    assert row is not None
    assert (row["attempts"], row["status"]) == (2, "delivered")
    assert [d["reply"] for d in row["decisions"]] == ["250 2.0.0 again"]
    states = {d["target"]: d["state"] for d in row["deliveries"]}
    assert states == {"maildir:finance": "delivered", "lmtp:bob@mx": "delivered"}
    assert await registry.count_messages() == 1


async def test_a_late_reconcile_leaves_an_answered_message_answered(registry: Registry) -> None:
    """A process's reconcile records a copy whose record failed as `unanswered`; when the
    sender's retry was recorded as delivered meanwhile (by another worker or instance), that
    late `unanswered` replaced the status of a message whose sender got its 250. Not now:
    an answered record stays as it was; an unanswered one still replaces a deferred one."""
    await registry.record(message(status="delivered"), [decision()], [delivery()])
    await registry.record(message(status="unanswered", subject="late"), [],
                          [delivery(state="delivered")])
    row = await registry.message("a" * 64)
    assert row is not None
    assert (row["status"], row["subject"], row["attempts"]) == ("delivered", "Счёт №5", 1)
    await registry.record(message("b" * 64, status="deferred"), [decision()], [])
    await registry.record(message("b" * 64, status="unanswered"), [], [delivery()])
    row = await registry.message("b" * 64)
    assert row is not None and (row["status"], row["attempts"]) == ("unanswered", 2)


async def test_unanswered_changes_only_the_row_that_commit_wrote(registry: Registry) -> None:
    """`unanswered(key, committed_at)`: the 250 of that record reached nobody. A row written
    again since (the sender's retry answered 250, maybe by another process) stays as it is,
    and so does one that never said it was answered."""
    first = await registry.record(message(), [decision()], [delivery()])
    again = await registry.record(message(), [decision()], [delivery()])
    assert not await registry.unanswered("a" * 64, first)
    row = await registry.message("a" * 64)
    assert row is not None and (row["status"], row["attempts"]) == ("delivered", 2)
    assert await registry.unanswered("a" * 64, again)
    row = await registry.message("a" * 64)
    assert row is not None and (row["status"], row["attempts"]) == ("unanswered", 2)
    held = await registry.record(message("b" * 64, status="deferred"), [decision()], [])
    assert not await registry.unanswered("b" * 64, held)
    row = await registry.message("b" * 64)
    assert row is not None and row["status"] == "deferred"


async def test_an_answered_record_costs_one_commit_a_given_up_one_a_second(
        registry: Registry) -> None:
    """The normal path stays one commit per record (no `unanswered` write). A caller that
    gives up while its commit is under way (a process_timeout's cancel) answers no 250:
    that commit goes through, and one more write makes its row `unanswered`."""
    commits: list[object] = []
    event.listen(registry.commit_engine, "commit", lambda conn: commits.append(conn))
    for n in range(3):
        await registry.record(message(f"{n:064x}"), [decision()], [delivery()])
    await registry.record(message(f"{0:064x}"), [decision()], [delivery()])   # a retry
    assert len(commits) == 4
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(registry.record(message("9" * 64), [decision()], [delivery()]))

    def give_up(conn: object) -> None:     # in this record's commit, before it is done
        if len(commits) == 5:
            loop.call_soon_threadsafe(task.cancel)
    event.listen(registry.commit_engine, "commit", give_up)
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):
        row = await registry.message("9" * 64)
        if row is not None and row["status"] == "unanswered":
            break
        await asyncio.sleep(0.01)
    assert row is not None and row["status"] == "unanswered"
    assert len(commits) == 6


def split_decision(rcpt: str, reply: str) -> DecisionRecord:
    return decision(rcpt, reply=reply)


async def test_a_split_message_delivered_after_a_deferred_part_is_partial(
        registry: Registry) -> None:
    """An MTA splits a message over transactions (same key): the first one's recipient
    deferred, a later one's (another recipient) delivered. The later record said
    `delivered` while the first recipient was still waiting in the MTA's queue. Now
    `partial` while a recipient of the message stands deferred; the retry that delivers
    it ends `delivered`."""
    key = "c" * 64
    await registry.record(message(key, status="deferred", rcpts=("a@example.com",)),
                          [split_decision("a@example.com", "451 4.3.0 try again later")],
                          [delivery("lmtp:a@mx", "deferred")])
    await registry.record(message(key, status="delivered", rcpts=("b@example.com",)),
                          [split_decision("b@example.com", "250 2.0.0 Ok: delivered")],
                          [delivery("maildir:b")])
    row = await registry.message(key)
    assert row is not None and (row["status"], row["attempts"]) == ("partial", 2)
    await registry.record(message(key, status="delivered", rcpts=("a@example.com",)),
                          [split_decision("a@example.com", "250 2.0.0 Ok: delivered")],
                          [delivery("lmtp:a@mx")])
    row = await registry.message(key)
    assert row is not None and (row["status"], row["attempts"]) == ("delivered", 3)
    # a retry of the whole message, every recipient in it, delivered: delivered
    other = "d" * 64
    both = ("a@example.com", "b@example.com")
    await registry.record(message(other, status="partial", rcpts=both),
                          [split_decision("a@example.com", "451 4.3.0 try again later"),
                           split_decision("b@example.com", "250 2.0.0 Ok: delivered")],
                          [delivery("maildir:b")])
    await registry.record(message(other, status="delivered", rcpts=both),
                          [split_decision(r, "250 2.0.0 Ok: delivered") for r in both],
                          [delivery("maildir:b"), delivery("lmtp:a@mx")])
    row = await registry.message(other)
    assert row is not None and row["status"] == "delivered"


async def test_a_split_message_all_in_one_batch_is_partial(registry: Registry) -> None:
    """The deferred part and the delivered part of one key committed in one batch (two
    transactions at once): `partial` too, whichever came first."""
    key = "e" * 64
    await asyncio.gather(
        registry.record(message(key, status="deferred", rcpts=("a@example.com",)),
                        [split_decision("a@example.com", "451 4.3.0 try again later")], []),
        registry.record(message(key, status="delivered", rcpts=("b@example.com",)),
                        [split_decision("b@example.com", "250 2.0.0 Ok: delivered")],
                        [delivery("maildir:b")]))
    row = await registry.message(key)
    assert row is not None and (row["status"], row["attempts"]) == ("partial", 2)


async def test_same_key_twice_in_one_batch(registry: Registry) -> None:
    """Two concurrent records of one key land in one batch and still count as a retry."""
    await asyncio.gather(registry.record(message(), [decision()], [delivery()]),
                         registry.record(message(), [decision()], [delivery()]))
    row = await registry.message("a" * 64)
    assert row is not None and row["attempts"] == 2 and len(row["deliveries"]) == 1


async def test_delivered_targets(registry: Registry) -> None:
    """Only targets in state 'delivered' count as done for a message key."""
    assert await registry.delivered_targets("a" * 64) == set()
    await registry.record(message(status="partial"), [decision()],
                          [delivery("maildir:a"), delivery("maildir:b", "deferred"),
                           delivery("smtp:c@mx", "failed")])
    assert await registry.delivered_targets("a" * 64) == {"maildir:a"}
    assert await registry.delivered_targets("b" * 64) == set()


async def test_concurrent_lookups_share_queries_and_get_their_own_answers(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """500 concurrent dedupe lookups (more than one IN (...) holds) each get their own
    key's targets, and they are answered by a few queries, not 500."""
    from mailrouter.registry import store
    await registry.record(message("1" * 64), [decision()], [delivery("maildir:one")])
    await registry.record(message("2" * 64), [decision()],
                          [delivery("maildir:two"), delivery("lmtp:x@mx")])
    queries: list[object] = []
    if registry.engine.dialect.name == "sqlite":   # the driver's cursor, on a connection the
        lookup = store._delivered_targets           # thread keeps: count the calls
        monkeypatch.setattr(store, "_delivered_targets",
                            lambda conn, keys: queries.append(keys) or lookup(conn, keys))
    else:                                           # asyncpg: one checkout per query
        event.listen(registry.engine.sync_engine, "checkout", lambda *a: queries.append(a))
    keys = ["1" * 64, "2" * 64, "3" * 64] * 167
    got = await asyncio.gather(*(registry.delivered_targets(k) for k in keys))
    expected = {"1" * 64: {"maildir:one"}, "2" * 64: {"maildir:two", "lmtp:x@mx"}, "3" * 64: set()}
    assert got == [expected[k] for k in keys]
    assert 1 <= len(queries) <= 10


async def test_one_bad_record_fails_only_its_caller(registry: Registry) -> None:
    """A record the database refuses fails alone; its batch-mates are committed."""
    naive = message("f" * 64, received_at=WHEN.replace(tzinfo=None))
    results = await asyncio.gather(
        *(registry.record(message(f"{n:064x}"), [decision()], [delivery()]) for n in range(20)),
        registry.record(naive, [decision()], [delivery()]), return_exceptions=True)
    assert [type(r) for r in results[:20]] == [datetime] * 20     # committed at
    assert isinstance(results[20], RegistryError)
    assert await registry.count_messages() == 20


def store_log(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mailrouter.registry.store"]


async def test_a_bug_is_logged_with_its_traceback_once_and_answered_451(
        registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    """A real TypeError in the store (a set where the JSON column takes a list: the JSON
    encoder refuses it) is a bug, not an outage: RegistryBugError with 451 4.3.0 for the
    client, ONE error line with the traceback, no 'registry_error' outage line; the bad
    record's batch-mates are committed."""
    caplog.set_level(logging.WARNING, logger="mailrouter.registry.store")
    bad = decision(tags=frozenset({"invoice"}))
    results = await asyncio.gather(
        *(registry.record(message(f"{n:064x}"), [decision()], [delivery()]) for n in range(5)),
        registry.record(message("b" * 64), [bad], [delivery()]), return_exceptions=True)
    assert [type(r) for r in results[:5]] == [datetime] * 5
    err = results[5]
    assert isinstance(err, RegistryBugError) and err.reply == REPLY_INTERNAL_ERROR
    assert (err.reply.code, err.reply.status) == (451, "4.3.0")
    [rec] = store_log(caplog)
    assert rec.levelno == logging.ERROR and rec.getMessage().startswith("event=registry_bug ")
    assert rec.exc_info is not None and "TypeError" in rec.getMessage()
    assert "Traceback (most recent call last)" in caplog.text and "frozenset" in caplog.text
    assert await registry.count_messages() == 5
    caplog.clear()
    with pytest.raises(RegistryBugError):                      # alone in its batch
        await registry.record(message("c" * 64), [bad], [])
    assert [r.exc_info is not None for r in store_log(caplog)] == [True]


async def test_close_flushes_pending(registry_url: str) -> None:
    """close() commits what is queued; the callers see success and the rows exist."""
    reg = await Registry.open(registry_url)
    tasks = [asyncio.create_task(reg.record(message(f"{n:064x}"), [decision()], []))
             for n in range(50)]
    await asyncio.sleep(0)  # let every task enqueue
    await reg.close()
    await asyncio.gather(*tasks)
    with pytest.raises(RegistryError):
        await reg.record(message(), [], [])
    reg = await Registry.open(registry_url, create=False)
    try:
        assert await reg.count_messages() == 50
    finally:
        await reg.close()


async def test_loops_and_reloads(registry: Registry) -> None:
    """Loop detections and reloads are written to their tables."""
    await registry.record_loop("a" * 64, "sales@example.com", "Delivered-To: sales@example.com")
    await registry.record_reload("r" * 64, False, "rules.yaml:3:1: unknown key", worker=3)
    async with registry.engine.connect() as conn:
        assert (await conn.execute(select(loops.c.rcpt))).scalars().all() == ["sales@example.com"]
        assert (await conn.execute(select(reloads.c.ok, reloads.c.detail, reloads.c.instance))
                ).all() == [(False, "rules.yaml:3:1: unknown key",
                             f"{socket.gethostname()} pid={os.getpid()} worker=3")]


async def test_schema_on_first_open_and_upgrade_idempotent(registry_url: str) -> None:
    """The first open creates every table; upgrade() again changes nothing."""
    reg = await Registry.open(registry_url)
    await reg.close()
    await upgrade(registry_url)
    await upgrade(registry_url)
    reg = await Registry.open(registry_url, create=False)
    try:
        async with reg.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        assert {"messages", "decisions", "deliveries", "loops", "reloads", "requests",
                "outbox", "autoreply_log", "web_accounts", "web_sessions",
                "subject_words"} <= tables
        assert version == [("0012",)]
    finally:
        await reg.close()


# Senders folded (revision 0012): what a search by sender compares, through its index

FOLDED = {                    # as it came -> as registry.models.fold_address keeps it
    "Иван@Пример.РФ": "иван@пример.рф",
    "STRAßE@Beispiel.DE": "strasse@beispiel.de",
    "Z\u030cofie@P\u0159i\u0301klad.CZ": "\u017eofie@p\u0159\u00edklad.cz",  # decomposed Ž, í
    "KIM@Example.COM": "kim@example.com",
    "": "",
}


async def test_record_keeps_both_senders_folded(registry: Registry) -> None:
    """The store writes From and the envelope sender folded with the message (and again
    with a retry's record), the same text on SQLite and PostgreSQL: Python's casefold,
    so ß is ss and a decomposed Ž is the composed one."""
    from mailrouter.registry.models import messages

    for i, given in enumerate(FOLDED):
        rec = message(f"{i:064x}", from_addr=given, mail_from=given.swapcase() or "<>")
        await registry.record(rec, [decision()], [delivery()])
        await registry.record(rec, [decision()], [delivery()])          # a retry
    rows = await registry.read("folds", lambda c: c.execute(select(
        messages.c.from_fold, messages.c.mail_from_fold, messages.c.attempts)
        .order_by(messages.c.key)).all())
    assert [tuple(r) for r in rows] == [
        (folded, folded or "<>", 2) for folded in FOLDED.values()]


async def test_migration_0012_folds_the_senders_of_every_message(registry_url: str) -> None:
    """A registry at 0011 with 5,003 messages (two batches of the backfill) brought to
    0012: every message has both senders folded, by the database's lower() for ASCII and by
    Python for the rest (the batch's edges included), and the searches' indexes are there;
    the (from_addr, received_at) index, which nothing read, is gone."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from mailrouter.registry.models import fold_address, messages
    from mailrouter.registry.store import _alembic_upgrade, _prepare, _url

    await _prepare(_url(registry_url))
    engine = create_async_engine(registry_url)
    old = sa.table("messages", *(sa.column(c.name, c.type) for c in messages.c
                                 if not c.name.endswith("_fold")))
    special = dict(zip((0, 4998, 4999, 5000, 5002), FOLDED))

    def row(i: int) -> dict[str, Any]:
        sender = special.get(i, f"User{i}@Client{i % 7}.Example")
        return dict(key=f"{i:064x}", received_at=WHEN, updated_at=WHEN, protocol="smtp",
                    peer="127.0.0.1", mail_from=sender.upper() if i % 2 else sender,
                    rcpts=["s@example.com"], message_id=f"<{i}@x>", from_name="",
                    from_addr=sender, subject="s", size=1, content_hash="c", defects=[],
                    ruleset_hash="r", status="delivered", attempts=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_alembic_upgrade, "0011")
            await conn.execute(sa.insert(old), [row(i) for i in range(5003)])
        async with engine.begin() as conn:
            await conn.run_sync(_alembic_upgrade)
        async with engine.connect() as conn:
            got = (await conn.execute(select(messages.c.key, messages.c.from_addr,
                                             messages.c.mail_from, messages.c.from_fold,
                                             messages.c.mail_from_fold))).all()
            indexes = {ix["name"] for ix in await conn.run_sync(
                lambda c: inspect(c).get_indexes("messages"))}
    finally:
        await engine.dispose()
    assert len(got) == 5003
    assert [r for r in got if (r.from_fold, r.mail_from_fold)
            != (fold_address(r.from_addr), fold_address(r.mail_from))] == []
    by_key = {r.key: r.from_fold for r in got}
    assert [by_key[f"{i:064x}"] for i in special] == list(FOLDED.values())
    assert by_key[f"{17:064x}"] == "user17@client3.example"
    assert {"ix_messages_from_fold_received_at", "ix_messages_mail_from_fold_received_at"} <= indexes
    assert "ix_messages_from_addr_received_at" not in indexes


async def _registry_at_0011(url: str, senders: list[str]) -> None:
    """A registry at revision 0011 holding one message from each sender (keys k0, k1 ...)."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from mailrouter.registry.models import messages
    from mailrouter.registry.store import _alembic_upgrade, _prepare, _url

    await _prepare(_url(url))
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_alembic_upgrade, "0011")
            await conn.execute(sa.insert(sa.table("messages", *(
                sa.column(c.name, c.type) for c in messages.c if not c.name.endswith("_fold")))),
                [dict(key=f"k{i}", received_at=WHEN, updated_at=WHEN, protocol="smtp", peer="p",
                      mail_from="<>", rcpts=[], message_id=None, from_name="",
                      from_addr=sender, subject="s", size=1, content_hash="c",
                      defects=[], ruleset_hash="r", status="delivered", attempts=1)
                 for i, sender in enumerate(senders)])
    finally:
        await engine.dispose()


async def test_migration_0012_cut_short_on_sqlite_is_finished_by_the_next_start(
        tmp_path: Path) -> None:
    """SQLite runs a revision's DDL as it comes, outside the transaction that the
    backfill's updates and the version are in: an 0012 stopped during its backfill (the
    start's registry timeout: `Registry.open(timeout=...)`) leaves the old index dropped and
    the columns added, empty, at revision 0011. The next start finishes it. Before, it
    failed at every start on "no such index: ix_messages_from_addr_received_at"."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from mailrouter.registry.models import messages

    url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    await _registry_at_0011(url, ["Žofie@Příklad.CZ"])
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:      # what the cut-short run had done
            for sql in ("DROP INDEX ix_messages_from_addr_received_at",
                        "ALTER TABLE messages ADD COLUMN from_fold TEXT",
                        "ALTER TABLE messages ADD COLUMN mail_from_fold TEXT"):
                await conn.exec_driver_sql(sql)
            await conn.commit()
    finally:
        await engine.dispose()
    reg = await Registry.open(url)
    try:
        assert await reg.read("f", lambda c: c.execute(select(
            messages.c.from_fold, messages.c.mail_from_fold)).one()) == ("žofie@příklad.cz", "<>")
        assert await reg.read("v", lambda c: c.exec_driver_sql(
            "SELECT version_num FROM alembic_version").scalar_one()) == "0012"
    finally:
        await reg.close()


async def test_a_migration_longer_than_the_registry_timeout_completes(tmp_path: Path) -> None:
    """`registry.timeout` bounds each wait of a migration (a lock, a statement), not its
    length: a revision that rewrites every message (0009, 0012) runs minutes on a big
    registry, and under that deadline every start failed, `db upgrade` (60 s) too. Here
    the migration from 0011 takes longer than the 1 ms allowed and completes."""
    from mailrouter.registry.models import messages

    url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    await _registry_at_0011(url, [f"Žofie{i}@Příklad.CZ" for i in range(300)])
    await upgrade(url, timeout=0.001)
    reg = await Registry.open(url, create=False)
    try:
        assert await reg.read("v", lambda c: c.exec_driver_sql(
            "SELECT version_num FROM alembic_version").scalar_one()) == "0012"
        assert await reg.read("f", lambda c: c.execute(select(messages.c.from_fold).where(
            messages.c.key == "k7")).scalar_one()) == "žofie7@příklad.cz"
    finally:
        await reg.close()


# Faults: SQLite

async def test_sqlite_locked_raises_then_recovers(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A write lock held elsewhere gives RegistryError, not a hang, logged as one line
    without a traceback (an outage, not a bug); then writes work again."""
    caplog.set_level(logging.WARNING, logger="mailrouter.registry.store")
    path = tmp_path / "registry.db"
    await (await Registry.open(f"sqlite:///{path}")).close()   # the schema first: a loaded
    reg = await Registry.open(f"sqlite:///{path}", timeout=1.0)  # machine took over 1 s for it
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        async with asyncio.timeout(30):  # guard against a hang only
            with pytest.raises(RegistryError) as info:
                await reg.record(message(), [decision()], [delivery()])
        assert type(info.value) is RegistryError and info.value.reply == REPLY_REGISTRY_UNAVAILABLE
        assert [(r.levelno, r.getMessage().split()[0], r.exc_info) for r in store_log(caplog)] == [
            (logging.WARNING, "event=registry_error", None)]
        holder.execute("ROLLBACK")
        await reg.record(message(), [decision()], [delivery()])
        assert await reg.count_messages() == 1
    finally:
        holder.close()
        await reg.close()


async def test_a_record_not_committed_in_time_fails_and_the_next_one_works(
        tmp_path: Path) -> None:
    """record() answers RegistryError once its deadline passes without a commit (here the
    batch is held in its transaction by an `after` step), and the writer goes on."""
    import threading
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    await _create(url)    # the schema first: a loaded machine took more than 0.5 s to make it
    reg = await Registry.open(url, timeout=0.5)
    release = threading.Event()
    try:
        async with asyncio.timeout(30):  # guard against a hang only
            with pytest.raises(RegistryError) as info:
                await reg.record(message(), [decision()], [delivery()],
                                 after=lambda conn: release.wait(20) and None)
            assert type(info.value) is RegistryError
            release.set()
            await reg.record(message("b" * 64), [decision()], [delivery()])
            assert await reg.delivered_targets("b" * 64) == {"maildir:finance/.Finance"}
    finally:
        release.set()
        await reg.close()


@pytest.fixture
def readonly_dir() -> Iterator[Path]:
    """A directory with an existing registry, then made read-only (0555/0444)."""
    root = Path(tempfile.mkdtemp(prefix="mr-ro.", dir="/tmp"))
    os.chmod(root, 0o755)
    data = root / "ro"
    asyncio.run(_create(f"sqlite:///{data / 'registry.db'}"))  # also imports every driver
    for path in data.iterdir():
        path.chmod(0o444)
    data.chmod(0o555)
    yield data
    data.chmod(0o755)
    shutil.rmtree(root)


async def _create(url: str) -> None:
    reg = await Registry.open(url)
    await reg.record(message(), [decision()], [delivery()])
    await reg.close()


async def _write_or_error(url: str) -> str:
    try:
        reg = await Registry.open(url, timeout=2.0)
        try:
            await reg.record(message("e" * 64), [decision()], [delivery()])
        finally:
            await reg.close()
    except RegistryError:
        return "RegistryError"
    return "written"


def _unprivileged(url: str) -> str:
    """Run _write_or_error as we are, or as nobody in a forked child when we are root."""
    if os.geteuid() != 0:
        return asyncio.run(_write_or_error(url))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop root so file modes apply, report one word
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            outcome = asyncio.run(_write_or_error(url))
        except BaseException as exc:  # noqa: BLE001 - the parent reports it
            outcome = repr(exc)
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        outcome = pipe.read()
    os.waitpid(pid, 0)
    return outcome


@pytest.mark.parametrize("name", ["registry.db", "new.db"])
def test_sqlite_readonly_raises(readonly_dir: Path, name: str) -> None:
    """A read-only registry file, or a new file in a read-only directory: RegistryError."""
    assert _unprivileged(f"sqlite:///{readonly_dir / name}") == "RegistryError"


# Faults: PostgreSQL

async def test_postgresql_down_raises_then_recovers(private_pg: PgCluster) -> None:
    """With PostgreSQL stopped every call raises RegistryError; after restart it works."""
    reg = await Registry.open(private_pg.url, timeout=3.0)
    try:
        await reg.record(message("1" * 64), [decision()], [delivery()])
        await asyncio.to_thread(private_pg.stop)
        with pytest.raises(RegistryError):
            await reg.record(message("2" * 64), [decision()], [delivery()])
        with pytest.raises(RegistryError):
            await reg.delivered_targets("1" * 64)
        await asyncio.to_thread(private_pg.start)
        await reg.record(message("2" * 64), [decision()], [delivery()])
        assert await reg.delivered_targets("1" * 64) == {"maildir:finance/.Finance"}
        assert await reg.count_messages() == 2
    finally:
        await reg.close()


async def test_hostile_lengths_are_recorded(registry: Registry) -> None:
    """Values a sender controls (From address, recipient, subject) and long SLA texts fit on
    both databases: a poison message must not be refused by the registry forever (451 loop)."""
    long_addr = "x" * 2000 + "@example.org"
    sla = "first_response=4h calendar=msk first_response_due=2027-01-11T14:00:00+03:00 resolve=2d"
    await registry.record(message(from_addr=long_addr, subject="S" * 10000, mail_from=long_addr),
                          [decision("r" * 480 + "@example.com", sla=sla, priority="urgent" * 20)],
                          [delivery()])
    row = await registry.message("a" * 64)
    assert row is not None and row["from_addr"] == long_addr
    assert row["decisions"][0]["sla"] == sla


async def test_sqlite_threads_keep_their_connections_and_close_returns_them(
        tmp_path: Path) -> None:
    """On SQLite each registry thread keeps its connection between calls (no pool checkout
    per look-up or batch); a failed call gives its connection back and the next call works
    on another; close() returns every one of them to the pool."""
    reg = await Registry.open(f"sqlite:///{tmp_path / 'held.db'}")
    engine = reg.commit_engine
    checkouts: list[object] = []
    checkins: list[object] = []
    event.listen(engine, "checkout", lambda *a: checkouts.append(a))
    event.listen(engine, "checkin", lambda *a: checkins.append(a))
    try:
        for _ in range(3):
            await asyncio.gather(*(reg.record(message(f"{n:064x}"), [decision()], [delivery()])
                                   for n in range(20)),
                                 *(reg.delivered_targets(f"{n:064x}") for n in range(20)))
        assert await reg.count_messages() == 20
        assert len(checkouts) <= 5 and checkins == []      # one writer, at most four readers
        with pytest.raises(RegistryError):
            await reg.read("bad", lambda conn: conn.exec_driver_sql("SELECT * FROM no_such_table"))
        assert len(checkins) == 1                           # the failed read's, given back
        assert await reg.count_messages() == 20
        held = engine.pool.checkedout()
        assert held >= 2
    finally:
        await reg.close()
    assert len(checkins) == 1 + held


async def test_sqlite_sync_setting_reaches_the_connections(tmp_path: Path) -> None:
    """registry.sync: full -> PRAGMA synchronous=2 (FULL), normal -> 1 (NORMAL), on the
    connections that commit the group batches."""
    for setting, expected in (("FULL", 2), ("NORMAL", 1)):
        reg = await Registry.open(f"sqlite+aiosqlite:///{tmp_path / setting}.db", synchronous=setting)
        try:
            with reg.commit_engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == expected
        finally:
            await reg.close()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_read_first_after_the_file_is_deleted_or_replaced_reads_the_new_file(
        tmp_path: Path, how: str) -> None:
    """Only commits looked for a registry file deleted or replaced while open: a read that
    came first, on a reader thread's new connection, met the empty file ('no such table:
    deliveries', 451 for the retry look-up: CI, test_faults worker-replaced), and on an old
    connection it read the deleted file. Now a read reopens it as a commit does (schema
    made), finds nothing of the old file, and the write after it lands in the new file."""
    db = tmp_path / "var" / "registry.db"
    reg = await Registry.open(f"sqlite+aiosqlite:///{db}")
    try:
        await reg.record(message(), [decision()], [delivery()])
        for name in ("registry.db-wal", "registry.db-shm", "registry.db"):
            (db.parent / name).unlink(missing_ok=True)
        if how == "replaced":
            db.write_bytes(b"")
        assert await reg.delivered_targets("a" * 64) == set()
        assert await reg.message("a" * 64) is None
        await reg.record(message(), [decision()], [delivery()])
        assert (await reg.message("a" * 64))["status"] == "delivered"
    finally:
        await reg.close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1,)


async def test_a_lazy_write_commits_unsynced_and_the_next_writes_are_synced_again(
        registry: Registry) -> None:
    """Registry.write(lazy=True) (the thread claim before delivery) commits without waiting
    for the disk: SQLite runs that one transaction at synchronous=NORMAL (the WAL's next
    FULL commit syncs it, before any 250), PostgreSQL with synchronous_commit off. Its row
    is visible to the next read at once, and the writes after it are synced again."""
    def setting(conn: Any) -> str:
        if registry.dialect == "sqlite":
            return str(conn.exec_driver_sql("PRAGMA synchronous").scalar())
        return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())

    def lazy(conn: Any) -> str:
        conn.execute(insert(reloads).values(at=WHEN, ruleset_hash="0" * 64, ok=True,
                                            detail="lazy"))
        return setting(conn)

    unsynced, synced = ("1", "2") if registry.dialect == "sqlite" else ("off", "on")
    assert await registry.write("lazy", lazy, lazy=True) == unsynced
    assert await registry.write("after", setting) == synced
    assert await registry.read("seen", lambda c: c.execute(
        select(reloads.c.detail).where(reloads.c.detail == "lazy")).scalar_one()) == "lazy"


async def test_sqlite_group_commit_runs_compiled_statements_with_sqlalchemys_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQLite the group commit runs its statements, compiled once, on the driver's cursor:
    no SQLAlchemy execute per batch (that was half the writer thread's CPU per message), nor
    per retry look-up. The
    rows it leaves (timestamps, JSON, NULLs, a retry's attempts + 1, a delivery never
    downgraded, the subject words) are exactly those SQLAlchemy's own execute leaves."""
    from mailrouter.registry import store
    monkeypatch.setattr(store, "_now", lambda: WHEN)
    fast = await Registry.open(f"sqlite:///{tmp_path / 'fast.db'}")
    core = await Registry.open(f"sqlite:///{tmp_path / 'core.db'}")
    core._fast = None                 # the SQLAlchemy Core path, as PostgreSQL runs it
    executed: list[str] = []
    event.listen(fast.commit_engine, "before_cursor_execute",
                 lambda conn, cur, stmt, *a: executed.append(stmt))
    try:
        for reg in (fast, core):
            await asyncio.gather(
                reg.record(message(status="partial"), [decision(), decision(
                    "sales@example.com", mailbox=None, folder=None, owner=None, priority=None,
                    sla=None, tags=())], [delivery(), delivery("lmtp:bob@mx", "deferred")]),
                reg.record(message("b" * 64, message_id=None, subject=""), [decision()],
                           [delivery()]))
            await reg.record(message(status="delivered"), [decision(reply="250 again")],
                             [delivery(state="failed"), delivery("lmtp:bob@mx")])
        both = [await reg.delivered_targets(k) for reg in (fast, core) for k in ("a" * 64, "c" * 64)]
        assert both == [{"maildir:finance/.Finance", "lmtp:bob@mx"}, set()] * 2
    finally:
        await fast.close()
        await core.close()
    assert [s for s in executed if "INSERT" in s.upper() or "deliveries" in s] == []
    dumps = []
    for name in ("fast.db", "core.db"):
        with sqlite3.connect(tmp_path / name) as db:
            dumps.append({t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                          for t in ("messages", "decisions", "deliveries", "subject_words")})
            attempts = [d[0] for d in db.execute("SELECT * FROM messages").description
                        ].index("attempts")
    assert dumps[0]["messages"][0][attempts] == 2 and len(dumps[0]["subject_words"]) >= 2
    assert dumps[0] == dumps[1]


async def test_sqlite_registry_opens_and_records_when_the_compiled_statements_cannot_be_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled group-commit statements read a private member of SQLAlchemy; a release
    that changes it turns the fast path off (SQLAlchemy's own execute), it never stops the
    registry from opening or recording."""
    from mailrouter.registry import store

    def broken(dialect: object) -> None:
        raise AttributeError("'SQLiteCompiler' object has no attribute '_bind_processors'")
    monkeypatch.setattr(store._Prepared, "group", staticmethod(broken))
    reg = await Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        assert reg._fast is None
        await reg.record(message(), [decision()], [delivery()])
        assert await reg.delivered_targets("a" * 64) == {"maildir:finance/.Finance"}
    finally:
        await reg.close()


async def test_a_registry_at_an_unknown_revision_is_refused_as_a_registry_error(
        tmp_path: Path) -> None:
    """A registry written by a newer mailrouter (its alembic revision unknown here) is a
    RegistryError naming the revision, not a traceback; alembic's CommandError is known as
    an outage though alembic is now imported by the upgrade alone."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    await (await Registry.open(url)).close()
    with contextlib.closing(sqlite3.connect(tmp_path / "r.db")) as db, db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(RegistryError) as info:
        await Registry.open(url)
    assert type(info.value) is RegistryError
    assert "CommandError: Can't locate revision identified by '9999'" in str(info.value)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
async def test_the_registry_file_gives_no_one_else_the_mail(tmp_path: Path, umask: int) -> None:
    """The registry holds every subject, sender and recipient, the outbox's mail and the web
    view's password hashes. SQLite made its file (and so its -wal and -shm, which take its
    mode) 0644 under the usual umask 0022: any local user read it, where a Maildir copy is
    0640 whatever the umask. It is made 0640 & ~umask, as the copies are, at the start and
    when it is made again after being deleted while open."""
    db = tmp_path / "var" / "registry.db"
    old = os.umask(umask)
    try:
        reg = await Registry.open(f"sqlite+aiosqlite:///{db}")
        try:
            await reg.record(message(), [decision()], [delivery()])
            made = {p.name: p.stat().st_mode & 0o777 for p in db.parent.iterdir()}
            for name in ("registry.db-wal", "registry.db-shm", "registry.db"):
                (db.parent / name).unlink(missing_ok=True)
            await reg.record(message(), [decision()], [delivery()])
            again = {p.name: p.stat().st_mode & 0o777 for p in db.parent.iterdir()}
        finally:
            await reg.close()
    finally:
        os.umask(old)
    assert "registry.db" in made and "registry.db" in again
    want = 0o640 & ~umask
    assert {n: oct(m) for n, m in made.items()} == {n: oct(want) for n in made}
    assert {n: oct(m) for n, m in again.items()} == {n: oct(want) for n in again}


@pytest.mark.parametrize("ctype, warned", [("C", True), ("C.UTF-8", False)])
async def test_a_postgresql_database_that_folds_ascii_only_is_named_at_start(
        pg_url: str, caplog: Any, ctype: str, warned: bool) -> None:
    """lower() in a database of LC_CTYPE C folds A-Z only: searches by a Cyrillic or Czech
    address found only the case typed, where SQLite's registry finds every case, and nothing
    said why. The start now warns, naming the registry and the fix; a UTF-8 one is quiet."""
    import secrets

    from sqlalchemy.engine import make_url

    from tests.support.pg import _admin
    name = f"t_{secrets.token_hex(6)}"
    await _admin(pg_url, f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                         f"LC_CTYPE '{ctype}' LC_COLLATE '{ctype}'")
    try:
        url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
        with caplog.at_level(logging.WARNING, logger="mailrouter.registry.store"):
            reg = await Registry.open(url)
            await reg.close()
        said = [r.getMessage() for r in caplog.records if "registry_ascii_case" in r.getMessage()]
        assert len(said) == (1 if warned else 0), said
        if warned:
            assert f"/{name}" in said[0] and "lc_ctype=C:" in said[0] and "LC_CTYPE 'C.UTF-8'" in said[0]
    finally:
        await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_retry_for_one_recipient_keeps_every_recipient_of_the_message(
        registry: Registry) -> None:
    """An LMTP message to two recipients, one deferred: the retry is for that one alone, and
    its upsert left `rcpts` as [it], so the message page named one recipient of two. A
    message read back names every recipient it was received for, the last attempt's first."""
    await registry.record(message(status="partial"),
                          [decision(), decision("sales@example.com", action="defer",
                                                reply="451 4.4.1 down")], [delivery()])
    await registry.record(message(status="delivered", rcpts=("sales@example.com",)),
                          [decision("sales@example.com")], [delivery("lmtp:sales@mx")])
    row = await registry.message("a" * 64)
    assert row is not None and row["attempts"] == 2
    assert row["rcpts"] == ["sales@example.com", "invoices@example.com"]
    assert sorted(d["rcpt"] for d in row["decisions"]) == ["invoices@example.com",
                                                           "sales@example.com"]


OPEN_AT_ONCE = """
import asyncio, sys
from mailrouter.registry.store import Registry
sys.stdin.read(1)                      # everyone imported: all open at once
async def main() -> None:
    reg = await Registry.open(sys.argv[1])
    await reg.close()
asyncio.run(main())
"""


def test_processes_making_a_new_sqlite_registry_at_once_all_open_it(tmp_path: Path) -> None:
    """Two processes that found no registry file (two workers replaced after its folder was
    removed, two commands on a new registry) both created its tables, and the second failed
    "table messages already exists" (451 until one won, exit 2). One makes the schema, the
    others wait for it and open it."""
    import subprocess
    import sys
    for round_ in range(2):
        url = f"sqlite+aiosqlite:///{tmp_path / str(round_) / 'registry.db'}"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, url],
                                  stdin=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(4)]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go")
            p.stdin.flush()
        codes = [p.wait(timeout=60) for p in procs]
        errors = [p.stderr.read().decode() for p in procs if p.stderr is not None]
        for p in procs:
            for pipe in (p.stdin, p.stderr):
                if pipe is not None:
                    pipe.close()
        assert codes == [0] * 4, errors


async def test_a_registry_at_the_oldest_revision_keeps_every_row_and_is_searched(
        registry_url: str) -> None:
    """A registry made at revision 0001 (the oldest schema this release still migrates;
    the release at 66c8332 wrote these rows through its daemon) brought to the newest:
    every message, decision and delivery is kept, and the searches the newer revisions
    index find the old messages: subject words in their folded forms (0006, 0009), the
    sender in any case (0012), the counterparty's history."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from mailrouter.control.queries import history, search
    from mailrouter.registry.models import decisions, deliveries, messages
    from mailrouter.registry.store import _alembic_upgrade, _prepare, _url

    await _prepare(_url(registry_url))
    engine = create_async_engine(registry_url)
    subjects = ["Счёт №5 за декабрь", "Čeština příliš žluťoučký", "Re: Invoice 42 overdue"]

    def table(model: Any, *cols: str) -> Any:
        """`model`'s table with only `cols` (typed as the model types them), as at 0001."""
        return sa.table(model.name, *(sa.column(c, model.c[c].type) for c in cols))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_alembic_upgrade, "0001")
            await conn.execute(sa.insert(sa.table("messages", *(
                sa.column(c.name, c.type) for c in messages.c if not c.name.endswith("_fold")))),
                [dict(key=f"k{i}", received_at=WHEN, updated_at=WHEN, protocol="smtp",
                      peer="127.0.0.1", mail_from=f"ivan.{i}@customer.example.org",
                      rcpts=["sales@example.com"], message_id=f"<old-{i}@customer>",
                      from_name="Ivan", from_addr=f"Ivan.{i}@Customer.Example.org",
                      subject=subject, size=100, content_hash="c", defects=[],
                      ruleset_hash="r", status="delivered", attempts=1)
                 for i, subject in enumerate(subjects)])
            await conn.execute(sa.insert(table(
                decisions, "message_key", "rcpt", "action", "reply", "mailbox", "tags",
                "path", "reasons", "rules")), [dict(
                    message_key=f"k{i}", rcpt="sales@example.com", action="deliver",
                    reply="250 2.0.0 Ok: delivered", mailbox="sales", tags=[], path=[],
                    reasons=[], rules=[]) for i in range(len(subjects))])
            await conn.execute(sa.insert(table(
                deliveries, "message_key", "target", "state", "detail", "updated_at")),
                [dict(message_key=f"k{i}", target="maildir:sales", state="delivered",
                      detail="250", updated_at=WHEN) for i in range(len(subjects))])
    finally:
        await engine.dispose()
    reg = await Registry.open(registry_url)
    try:
        counts = await reg.read("t", lambda c: [c.execute(sa.text(f"SELECT count(*) FROM {t}"))
                                                .scalar() for t in ("messages", "decisions",
                                                                    "deliveries")])
        found = await reg.read("t", lambda c: {
            q: [m["subject"] for m in search(c, **q_args)] for q, q_args in (
                ("words", {"words": "счет*"}), ("czech", {"words": "cestina zlutoucky"}),
                ("invoice", {"words": "invoice"}),
                ("sender", {"sender": "IVAN.1@customer.EXAMPLE.ORG"}))})
        story = await reg.read("t", lambda c: history(c, "customer.example.org"))
    finally:
        await reg.close()
    assert counts == [3, 3, 3]
    assert found == {"words": [subjects[0]], "czech": [subjects[1]], "invoice": [subjects[2]],
                     "sender": [subjects[1]]}
    assert len(story["messages"]) == 3

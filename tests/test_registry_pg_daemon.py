"""The whole daemon on a real PostgreSQL registry (a fresh database per test).

`pg_url` (tests/support/pg.py) is a running cluster; each test creates its own
database, points `registry.url` at it and reads the rows back with asyncpg, not
through mailrouter's own code, so what is asserted is what an operator's
`psql` would show.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import smtplib

import pytest
from sqlalchemy.engine import make_url

from mailrouter.config import RegistryConfig
from tests.support.daemon import maildir_files

pytestmark = pytest.mark.asyncio


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def fetch(url: str, sql: str, *args: object) -> list[dict]:
    import asyncpg  # type: ignore[import-untyped]
    conn = await asyncpg.connect(_dsn(url), timeout=30)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def raw(subject: str, mid: str) -> bytes:
    return (f"From: Пётр <p@outside.test>\r\nSubject: {subject}\r\nMessage-ID: <{mid}@outside.test>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nтело письма\r\n").encode()


def send(port: int, rcpts: list[str], data: bytes) -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        return s.sendmail("client@outside.test", rcpts, data)


async def test_daemon_records_messages_in_postgresql(make_app, pg_db, tmp_path):
    """Two messages through SMTP: two rows in messages (envelope, decoded From/Subject,
    Message-ID, size, content hash, status), a decision per recipient and a delivered
    Maildir target per copy - in PostgreSQL, read back with asyncpg."""
    app = await make_app(registry=RegistryConfig(pg_db))
    port = app.bound["smtp"][1]
    await asyncio.to_thread(send, port, ["sales@example.com"], raw("Запрос цены", "m1"))
    await asyncio.to_thread(send, port, ["team@example.com", "support@example.com"],
                            raw("Вопрос", "m2"))
    rows = await fetch(pg_db, "SELECT * FROM messages ORDER BY subject DESC")
    assert [r["subject"] for r in rows] == ["Запрос цены", "Вопрос"]
    first = rows[0]
    assert first["mail_from"] == "client@outside.test"
    assert first["from_name"] == "Пётр" and first["from_addr"] == "p@outside.test"
    assert first["message_id"] == "<m1@outside.test>"
    assert first["size"] == len(raw("Запрос цены", "m1")) and len(first["content_hash"]) == 64
    decisions = await fetch(pg_db, "SELECT rcpt, mailbox, folder FROM decisions ORDER BY rcpt")
    got = {(d["rcpt"], d["mailbox"], d["folder"]) for d in decisions}
    assert ("sales@example.com", "sales", "Inbound") in got
    assert ("support@example.com", "support", None) in got
    assert any(r == "team@example.com" for r, _, _ in got)
    states = await fetch(pg_db, "SELECT state FROM deliveries")
    assert states and {s["state"] for s in states} == {"delivered"}
    assert len(maildir_files(tmp_path / "var" / "mail")) == len(states)


async def test_retry_dedupe_in_postgresql_across_two_instances(make_app, pg_db, tmp_path):
    """Two daemons share one PostgreSQL registry and one Maildir root (scale-out): a message
    accepted by A and retried (same bytes, same envelope) at A and then at B is delivered
    once and recorded once."""
    a = await make_app(registry=RegistryConfig(pg_db))
    b = await make_app(registry=RegistryConfig(pg_db))
    data = raw("Price list", "dup")
    for app in (a, a, b):
        refused = await asyncio.to_thread(send, app.bound["smtp"][1], ["sales@example.com"], data)
        assert refused == {}
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    rows = await fetch(pg_db, "SELECT key, attempts FROM messages")
    assert len(rows) == 1, rows
    assert len(await fetch(pg_db, "SELECT 1 FROM deliveries WHERE state = 'delivered'")) == 1


async def test_daemon_process_with_postgresql_url_and_sigterm(daemon_process, pg_db, tmp_path):
    """`mailrouter run -c config.yaml` with `registry: {url: postgresql+asyncpg://...}`:
    creates the schema itself, records the message, exits 0 on SIGTERM with the row kept."""
    d = daemon_process()               # write the config once to learn the ports, then swap URL
    d.stop()
    text = d.config.read_text().splitlines()
    d.config.write_text("\n".join(f"registry: {{url: '{pg_db}'}}" if l.startswith("registry:")
                                  else l for l in text) + "\n")
    d.start()
    refused = await asyncio.to_thread(send, d.smtp, ["support@example.com"], raw("Помогите", "p1"))
    assert refused == {}, d.log.read_text()
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0, d.log.read_text()
    rows = await fetch(pg_db, "SELECT subject, status FROM messages")
    assert [r["subject"] for r in rows] == ["Помогите"]


async def test_sla_decisions_fit_postgresql(make_app, pg_db, tmp_path):
    """product-a@ and invoices@ carry an SLA with a calendar: their ~75-char decision row must
    be accepted by PostgreSQL (SQLite ignores VARCHAR lengths, so only PG shows this; it was
    String(64) until bc90d71 and every SLA mail got 451)."""
    app = await make_app(registry=RegistryConfig(pg_db))
    for rcpt, subject in (("product-a@example.com", "Question"), ("invoices@example.com", "Счёт")):
        refused = await asyncio.to_thread(send, app.bound["smtp"][1], [rcpt], raw(subject, rcpt))
        assert refused == {}
    rows = await fetch(pg_db, "SELECT rcpt, sla FROM decisions ORDER BY rcpt")
    assert [r["rcpt"] for r in rows] == ["invoices@example.com", "product-a@example.com"]
    assert all("first_response_due=" in r["sla"] for r in rows)


async def test_an_instance_starting_while_another_migrates_waits_for_it(pg_db, caplog):
    """Two instances started together on one PostgreSQL registry whose migration takes
    longer than `registry.timeout` (revisions 0009 and 0012 rewrite every message): the
    second waits for the first's migration, says so in the log, then opens the migrated
    registry. Before, its wait for the migration lock was one statement under the
    registry timeout: it exited 2 saying "the database server cannot be reached (not
    running, or a wrong host or port)", and again at every restart until the first was done."""
    import asyncpg  # type: ignore[import-untyped]

    from mailrouter.registry import Registry
    first = await asyncpg.connect(_dsn(pg_db), timeout=30)
    try:
        migrating = first.transaction()
        await migrating.start()       # the first instance's migration: holds the lock
        await first.execute("SELECT pg_advisory_xact_lock(x'6D61696C726F75'::bigint)")
        second = asyncio.ensure_future(Registry.open(pg_db, timeout=1.0))
        await asyncio.wait([second], timeout=4.0)   # longer than its registry timeout
        assert not second.done() or second.exception() is None, second.exception()
        assert "event=registry_migration_waiting" in caplog.text
        await migrating.rollback()
        registry = await asyncio.wait_for(second, 60)
        await registry.close()
    finally:
        await first.close()


async def test_a_registry_migrated_by_a_newer_release_is_named_at_start(daemon_process, pg_db):
    """Two instances share one registry and a newer release on one migrated it (the README's
    scale-out; an upgrade done one instance at a time): an instance of this release then
    refused to start saying "registry open failed (CommandError: Can't locate revision
    identified by '0013'); check registry.url", and the URL was right. The start names the
    revisions and the fix (install the newer release here too)."""
    from mailrouter.registry import upgrade
    from mailrouter.registry.store import head_revision
    await upgrade(pg_db)
    ours = head_revision()
    newer = f"{int(ours) + 1:04d}"
    import asyncpg  # type: ignore[import-untyped]
    conn = await asyncpg.connect(_dsn(pg_db), timeout=30)
    try:
        await conn.execute("UPDATE alembic_version SET version_num = $1", newer)
    finally:
        await conn.close()
    d = daemon_process()               # write the config once to learn the ports, then swap URL
    d.stop()
    text = d.config.read_text().splitlines()
    d.config.write_text("\n".join(f"registry: {{url: '{pg_db}', timeout: 5}}"
                                  if l.startswith("registry:") else l for l in text) + "\n")
    d.start_refused("a start on a registry a newer release migrated")
    failed = [line for line in d.log.read_text().splitlines() if "event=start_failed" in line]
    assert len(failed) == 1, d.log.read_text()
    assert (f"its schema is at revision {newer}, newer than this mailrouter knows (up to "
            f"{ours}): an instance of a newer release migrated it; install that release here "
            "too") in failed[0], failed[0]
    assert "Traceback" not in d.log.read_text()


async def test_postgresql_out_of_connections_or_paused_is_said_as_such(private_pg):
    """An instance opening the shared registry while PostgreSQL has no free connection (the
    other instances hold them all) or while it does not answer (paused, overloaded): the
    start said "check registry.url", or for the pause "the database server cannot be
    reached (not running, or a wrong host or port)", of a server running at that URL.
    Each now names its cause: max_connections; no answer within registry.timeout."""
    import asyncpg  # type: ignore[import-untyped]

    from mailrouter.errors import RegistryError
    from mailrouter.registry import Registry, upgrade
    from mailrouter.registry.store import registry_advice
    url = private_pg.url
    admin = await asyncpg.connect(_dsn(url), timeout=30)
    try:
        await admin.execute("ALTER SYSTEM SET max_connections = 8")
    finally:
        await admin.close()
    await asyncio.to_thread(private_pg.stop)
    await asyncio.to_thread(private_pg.start)
    await upgrade(url)
    held = []
    try:
        while len(held) < 20:       # every slot, the superusers' reserved ones too
            try:
                held.append(await asyncpg.connect(_dsn(url), timeout=30))
            except asyncpg.TooManyConnectionsError:
                break
        with pytest.raises(RegistryError) as full:
            await Registry.open(url, timeout=5, create=False)
    finally:
        for conn in held:
            await conn.close()
    assert "max_connections reached" in registry_advice(full.value), full.value
    with socket.socket() as silent:          # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        paused_url = make_url(url).set(port=silent.getsockname()[1])
        with pytest.raises(RegistryError) as paused:
            await Registry.open(paused_url.render_as_string(hide_password=False), timeout=1,
                                create=False)
    advice = registry_advice(paused.value)
    assert advice.startswith("the database server did not answer within registry.timeout"), \
        (paused.value, advice)

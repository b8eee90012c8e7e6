"""SIGKILL under load: nothing that got 250 is lost, nothing is stored twice.

A client with 10 concurrent sessions sends 1,000 distinct messages to the real
`mailrouter run` process; the daemon is killed with SIGKILL partway through.
The daemon is started again on the same var/, and every message that did not
get 250 is sent again, as an MTA would. Afterwards every message that ever got
250 is in the Maildir exactly once and in the registry, every message is
there (the resent ones too), and no Message-ID appears twice in the Maildir.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections import Counter

import pytest

from tests.support.daemon import maildir_files
from tests.support.wire import Wire

pytestmark = pytest.mark.asyncio

SENDER = "load@outside.test"
TOTAL, CONNECTIONS, KILL_AFTER = 1000, 10, 300
MSGID = re.compile(rb"^Message-ID: <(crash-\d+)@outside\.test>\r?$", re.M | re.I)


def mail(i: int) -> bytes:
    return (f"From: Load <{SENDER}>\r\nTo: sales@example.com\r\nSubject: load {i}\r\n"
            f"Message-ID: <crash-{i}@outside.test>\r\n\r\nmessage number {i}\r\n"
            + "some body text to make it a few hundred bytes long.\r\n" * 6).encode()


async def blast(port: int, todo: list[int], acked: set[int], refused: dict[int, str],
                on_ack=None) -> None:
    """Send `todo` over CONNECTIONS sessions, a message after another in each session.
    A message is in `acked` only when its 250 was read; a session that breaks stops."""
    queue = iter(todo)

    async def worker() -> None:
        try:
            async with Wire(port, timeout=20) as w:
                await w.greet()
                for i in queue:
                    reply = (await w.transaction(SENDER, ["sales@example.com"],
                                                 mail(i) + b".\r\n"))[0]
                    if reply.startswith("250 "):
                        acked.add(i)
                        if on_ack is not None:
                            on_ack()
                    else:
                        refused[i] = reply
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass          # the daemon died under us: whatever was in flight is not acked

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))


async def test_sigkill_under_load_loses_nothing_and_duplicates_nothing(daemon_process, tmp_path):
    first = daemon_process()
    acked: set[int] = set()
    refused: dict[int, str] = {}

    def maybe_kill() -> None:
        if len(acked) >= KILL_AFTER and first.proc.poll() is None:
            first.proc.kill()                      # SIGKILL, mid-load

    await blast(first.smtp, list(range(TOTAL)), acked, refused, maybe_kill)
    assert await asyncio.to_thread(first.wait, 30) == -9
    assert refused == {}, refused                  # before the kill: 250 or nothing
    assert KILL_AFTER <= len(acked) < TOTAL
    acked_before = set(acked)

    second = daemon_process()                      # same var/: registry and Maildir
    resend = [i for i in range(TOTAL) if i not in acked_before]
    again: set[int] = set()
    await blast(second.smtp, resend, again, refused)
    assert refused == {} and again == set(resend)
    second.signal(15)
    assert await asyncio.to_thread(second.wait, 30) == 0

    # The Maildir: every message once, none twice.
    ids = Counter()
    for f in maildir_files(tmp_path / "var" / "mail" / "sales"):
        found = MSGID.findall(f.read_bytes())
        assert len(found) == 1, f
        ids[found[0].decode()] += 1
    assert [m for m, n in ids.items() if n > 1] == []
    assert set(ids) == {f"crash-{i}" for i in range(TOTAL)}
    assert {f"crash-{i}" for i in acked_before} <= set(ids)
    # The registry: one delivered row per message, each acked one included.
    with sqlite3.connect(tmp_path / "var" / "registry.db") as db:
        rows = db.execute("SELECT message_id, status FROM messages").fetchall()
        deliveries = db.execute("SELECT count(*) FROM deliveries WHERE state = 'delivered'"
                                ).fetchone()[0]
    by_id = Counter(mid for mid, _ in rows)
    assert len(rows) == TOTAL and max(by_id.values()) == 1
    assert {status for _, status in rows} == {"delivered"}
    assert {f"<crash-{i}@outside.test>" for i in acked_before} <= set(by_id)
    assert deliveries == TOTAL


async def test_sigkill_mid_transaction_every_copy_is_recorded_at_restart(daemon_process, tmp_path):
    """Issue 15: copies made by sessions the kill cut before their record were in the Maildir
    with no registry row. Now the restarted daemon's first reconcile pass, which runs before
    it listens, records them (as `unanswered`): as soon as it takes mail again every Maildir
    copy has its row. A retry then finds the copy (no second one) and records it delivered.
    Rounds repeat (same var/) until a kill has cut at least one such session, at most 6."""
    mail_root, db_path = tmp_path / "var" / "mail", tmp_path / "var" / "registry.db"
    reconciled = 0
    for round_ in range(6):
        first = daemon_process()
        acked: set[int] = set()
        refused: dict[int, str] = {}
        ids = list(range(10_000 * (round_ + 1), 10_000 * (round_ + 1) + 400))

        def maybe_kill(first=first, acked=acked) -> None:
            if len(acked) >= 60 and first.proc.poll() is None:
                first.proc.kill()

        await blast(first.smtp, ids, acked, refused, maybe_kill)
        assert await asyncio.to_thread(first.wait, 30) == -9
        second = daemon_process()          # listening: its first reconcile pass is done
        stored = Counter()
        for f in maildir_files(mail_root):
            stored[MSGID.findall(f.read_bytes())[0].decode()] += 1
        with sqlite3.connect(db_path) as db:
            rows = dict(db.execute("SELECT message_id, status FROM messages").fetchall())
        recorded = {m.strip("<>").split("@")[0] for m in rows}
        assert set(stored) <= recorded, sorted(set(stored) - recorded)[:5]
        unanswered = {m for m, s in rows.items() if s == "unanswered"}
        reconciled += len(unanswered)
        # the MTA's retry: the stored copy is found, not written again, and now answered
        resend = [i for i in ids if i not in acked]
        again: set[int] = set()
        await blast(second.smtp, resend, again, refused)
        assert refused == {} and again == set(resend)
        second.signal(15)
        assert await asyncio.to_thread(second.wait, 30) == 0
        counts = Counter(MSGID.findall(f.read_bytes())[0].decode() for f in maildir_files(mail_root))
        assert max(counts.values()) == 1
        with sqlite3.connect(db_path) as db:
            statuses = dict(db.execute("SELECT message_id, status FROM messages").fetchall())
        assert all(statuses[m] == "delivered" for m in unanswered)
        if reconciled:
            break
    assert reconciled > 0, "no kill cut a session between its copy and its record"
    assert list((tmp_path / "var" / "intents").glob("*.jrn")) == []   # all settled, removed

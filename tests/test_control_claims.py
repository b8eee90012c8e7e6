"""The SLA scan deletes thread claims of messages never recorded once they have been seen
so for a week (control/sla.py CLAIM_MAX_AGE); claims of recorded messages stay. Real
SQLite and PostgreSQL registries, the scan driven with a simulated clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from mailrouter.config import ControlConfig
from mailrouter.control.sla import Scheduler
from mailrouter.control.tables import thread_claims
from mailrouter.registry import Registry
from mailrouter.registry.models import messages

pytestmark = pytest.mark.asyncio
T0 = datetime(2027, 1, 11, 9, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def message(key: str, at: datetime) -> dict:
    return dict(key=key, received_at=at, updated_at=at, protocol="smtp", peer="127.0.0.1",
                mail_from="c@client.example", rcpts=["s@example.com"], message_id=f"<{key}>",
                from_name="", from_addr="c@client.example", subject="s", size=10,
                content_hash=key, defects=[], ruleset_hash="x", status="delivered", attempts=1)


def claim(mid: str, key: str) -> dict:
    return dict(message_id=mid, message_key=key, sender="c@client.example", owner="ivanov",
                team=None)


async def test_claims_of_unrecorded_messages_go_after_a_week(registry_url):
    """a: recorded, stays. b: never recorded, goes at the scan a week after the first that
    saw it. c: unrecorded at first, recorded on day 1: stays. d: claimed on day 6, goes on
    day 13, not with b. Before, every claim stayed for ever."""
    reg = await Registry.open(registry_url)
    k = {n: n * 64 for n in "abcd"}
    try:
        await reg.write("fill", lambda conn: (
            conn.execute(insert(messages), [message(k["a"], T0)]),
            conn.execute(insert(thread_claims), [claim(f"<{n}@x>", k[n]) for n in "abc"])))
        sched = Scheduler(reg, ControlConfig(close_after=0), lambda: None)

        async def left(at: datetime) -> list[str]:
            await sched.tick(at)
            return await reg.read("claims", lambda conn: list(conn.execute(
                select(thread_claims.c.message_id).order_by(thread_claims.c.message_id))
                .scalars()))
        assert await left(T0) == ["<a@x>", "<b@x>", "<c@x>"]
        await reg.write("record c", lambda conn: conn.execute(insert(messages),
                                                               [message(k["c"], T0 + DAY)]))
        await reg.write("claim d", lambda conn: conn.execute(insert(thread_claims),
                                                              [claim("<d@x>", k["d"])]))
        assert await left(T0 + 6 * DAY) == ["<a@x>", "<b@x>", "<c@x>", "<d@x>"]
        assert await left(T0 + 7 * DAY - timedelta(seconds=1)) == [
            "<a@x>", "<b@x>", "<c@x>", "<d@x>"]
        assert await left(T0 + 7 * DAY) == ["<a@x>", "<c@x>", "<d@x>"]
        assert await left(T0 + 13 * DAY - timedelta(seconds=1)) == ["<a@x>", "<c@x>", "<d@x>"]
        assert await left(T0 + 13 * DAY) == ["<a@x>", "<c@x>"]
    finally:
        await reg.close()


async def test_a_claims_week_survives_a_restart(registry_url):
    """The week counts from the claim's time in the registry, not from a scheduler's memory:
    a scheduler started afresh every day (a daemon restarted daily) still deletes an
    unrecorded claim made on day 0 at the first scan of day 7, and keeps one made on day 3.
    Before, each new scheduler saw the claim for the first time and the week started again:
    a daemon restarted more often than weekly kept every claim for ever."""
    reg = await Registry.open(registry_url)
    try:
        await reg.write("claims", lambda conn: conn.execute(insert(thread_claims), [
            claim("<old@x>", "o" * 64) | {"claimed_at": T0},
            claim("<new@x>", "n" * 64) | {"claimed_at": T0 + 3 * DAY}]))
        left = []
        for day in range(8):
            await Scheduler(reg, ControlConfig(close_after=0), lambda: None).tick(T0 + day * DAY)
            left.append(await reg.read("claims", lambda conn: sorted(conn.execute(
                select(thread_claims.c.message_id)).scalars())))
        assert left == [["<new@x>", "<old@x>"]] * 7 + [["<new@x>"]]
    finally:
        await reg.close()

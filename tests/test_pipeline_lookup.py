"""The retry look-up (registry.delivered_targets) is handed to the registry's thread before
the rules decide, so the query and the decision overlap; a failed decision drops it."""

from __future__ import annotations

import asyncio
import gc
import logging

from mailrouter.errors import RegistryError
from mailrouter.registry.store import Registry
from mailrouter.routing.snapshot import Snapshot
from tests.support.wire import Wire

RAW = (b"From: Client <client@outside.test>\r\nTo: sales@example.com\r\nSubject: overlap\r\n\r\n"
       b"A test.\r\n")


async def _send(port: int) -> list[str]:
    async with Wire(port) as w:
        assert (await w.reply())[0].startswith("220")
        await w.cmd("EHLO client.test")
        return await w.transaction("client@outside.test", ["sales@example.com"], RAW + b".\r\n")


async def test_the_lookup_is_in_the_registry_thread_before_the_rules_decide(make_app, monkeypatch):
    events: list[str] = []
    read, decide = Registry._read, Snapshot.decide

    async def recording_read(self, what, fn):
        if what == "delivered_targets":
            events.append("lookup")
        return await read(self, what, fn)

    def recording_decide(self, *args, **kw):
        events.append("decide")
        return decide(self, *args, **kw)

    monkeypatch.setattr(Registry, "_read", recording_read)
    monkeypatch.setattr(Snapshot, "decide", recording_decide)
    app = await make_app()
    replies = await _send(app.bound["smtp"][1])
    assert replies[0].startswith("250 2.0.0"), replies
    assert events == ["lookup", "decide"]
    replies = await _send(app.bound["smtp"][1])            # a retry still finds the copy
    assert replies[0].startswith("250"), replies
    assert events[2:] == ["lookup", "decide"]
    assert await app.registry.count_messages() == 1


async def test_a_failed_decision_drops_its_lookup(make_app, monkeypatch, caplog):
    """The rules raise: 451, nothing stored, and the look-up left behind is consumed
    (no 'exception was never retrieved' from a failing registry)."""
    read, decide = Registry._read, Snapshot.decide
    failing = [True]

    async def broken_read(self, what, fn):
        if what == "delivered_targets" and failing[0]:
            raise RegistryError("registry down")
        return await read(self, what, fn)

    def broken_decide(self, *args, **kw):
        if failing[0]:
            raise RuntimeError("rule bug")
        return decide(self, *args, **kw)

    monkeypatch.setattr(Registry, "_read", broken_read)
    monkeypatch.setattr(Snapshot, "decide", broken_decide)
    app = await make_app()
    with caplog.at_level(logging.ERROR):
        replies = await _send(app.bound["smtp"][1])
        assert replies[0].startswith("451"), replies
        await asyncio.sleep(0.05)
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert await app.registry.count_messages() == 0
    failing[0] = False
    assert (await _send(app.bound["smtp"][1]))[0].startswith("250 2.0.0")

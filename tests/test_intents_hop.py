"""A message's intent (intents.py) is written by the Maildir writer thread in the same hop as
its copies, before them; an intent that cannot be written refuses its copies (4xx, nothing
stored), and the retry delivers once."""

from __future__ import annotations

import errno
import threading

from mailrouter import intents
from mailrouter.delivery.maildir import Maildir
from tests.support.daemon import maildir_files
from tests.support.wire import Wire

RAW = (b"From: Client <client@outside.test>\r\nTo: sales@example.com\r\nSubject: intent\r\n\r\n"
       b"A test.\r\n")


async def _send(port: int, raw: bytes = RAW) -> list[str]:
    async with Wire(port) as w:
        assert (await w.reply())[0].startswith("220")
        await w.cmd("EHLO client.test")
        return await w.transaction("client@outside.test", ["sales@example.com"], raw + b".\r\n")


async def test_intent_and_copy_are_one_hop_intent_first(make_app, monkeypatch):
    events: list[tuple[str, str]] = []
    append, deliver = intents._append_synced, Maildir._deliver

    def recording_append(by_file):
        events.append(("intent", threading.current_thread().name))
        return append(by_file)

    def recording_deliver(self, *args):
        events.append(("copy", threading.current_thread().name))
        return deliver(self, *args)

    monkeypatch.setattr(intents, "_append_synced", recording_append)
    monkeypatch.setattr(Maildir, "_deliver", recording_deliver)
    app = await make_app()
    replies = await _send(app.bound["smtp"][1])
    assert replies[0].startswith("250 2.0.0"), replies
    assert [e for e, _ in events] == ["intent", "copy"]
    assert events[0][1] == events[1][1] and events[0][1].startswith("maildir")
    journals = list((app.config.workdir / "var" / "intents").glob("*.jrn"))
    text = b"".join(j.read_bytes() for j in journals)
    assert text.count(b"I {") == 1 and text.count(b"\nD ") == 1     # written, then done


async def test_an_intent_not_written_refuses_its_copies(make_app, monkeypatch, tmp_path):
    append = intents._append_synced
    failing = [True]

    def full(by_file):
        if failing[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return append(by_file)

    monkeypatch.setattr(intents, "_append_synced", full)
    app = await make_app()
    replies = await _send(app.bound["smtp"][1])
    assert replies[0].startswith("452"), replies
    assert maildir_files(tmp_path / "var" / "mail") == []
    failing[0] = False
    assert (await _send(app.bound["smtp"][1]))[0].startswith("250 2.0.0")
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    assert await app.registry.count_messages() == 1


def test_a_new_journal_is_never_seen_unlocked(tmp_path, monkeypatch):
    """Another worker's reconcile reads every *.jrn whose flock it can take. A journal made
    under its own name and locked after could be taken in between: our flock then failed
    (EAGAIN, 451 to the message; seen once in the full suite) and the reconcile removed the
    new journal. Now no *.jrn exists before it is locked."""
    import fcntl
    import os
    import types
    visible_before_lock: list[str] = []
    real_flock = fcntl.flock

    def flock(fd: int, op: int) -> None:             # the instant before our lock
        visible_before_lock.extend(p.name for p in tmp_path.glob("*.jrn"))
        real_flock(fd, op)

    monkeypatch.setattr(intents, "fcntl", types.SimpleNamespace(
        flock=flock, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB))
    journal = intents.Intents(tmp_path, stored=lambda place: False)._current()
    assert visible_before_lock == []
    assert [p.name for p in tmp_path.iterdir()] == [journal.path.name]   # no *.new left
    assert journal.path.suffix == ".jrn"
    other = os.open(journal.path, os.O_RDONLY)        # a reconcile now: it is ours
    try:
        try:
            real_flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            taken = True
        except BlockingIOError:
            taken = False
        assert not taken
    finally:
        os.close(other)
        os.close(journal.fd)

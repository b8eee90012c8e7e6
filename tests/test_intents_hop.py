"""A message's intent (intents.py) is written by the Maildir writer thread in the same hop as
its copies, before them; an intent that cannot be written refuses its copies (4xx, nothing
stored), and the retry delivers once."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

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


async def test_a_journal_holding_bytes_that_are_not_utf8_is_reconciled(tmp_path):
    """A journal written before command arguments were checked for UTF-8 (a sender
    'caf\\xe9@...' under SMTPUTF8) held a record the registry cannot store: every reconcile
    pass failed with a traceback, forever, and the copy stayed unrecorded. Such bytes are now
    read as U+FFFD and the copy is recorded."""
    import dataclasses
    from datetime import datetime, timezone

    from mailrouter.delivery.maildir import Place
    from mailrouter.registry import MessageRecord, Registry

    box = tmp_path / "mail" / "sales"
    md = Maildir(box, "mx.test")
    await md.deliver(b"Subject: x\r\n\r\nbody\r\n", "k" * 16)
    record = MessageRecord(
        key="k" * 64, received_at=datetime(2026, 12, 1, tzinfo=timezone.utc), protocol="smtp",
        peer="127.0.0.1", mail_from="caf\udce9@outside.test", rcpts=("sales@example.com",),
        message_id=None, from_name="", from_addr="", subject="x", size=20,
        content_hash="c" * 64, defects=(), ruleset_hash="r" * 16, status="delivered")
    place = Place("maildir:sales", str(box), "mr" + "k" * 16)
    journals = tmp_path / "intents"
    journals.mkdir()
    line = intents._ENCODE({"key": record.key, "record": intents._record_json(record),
                            "copies": [dataclasses.astuple(place)]})
    (journals / "99999.0.abcdef.jrn").write_bytes(
        b"I " + line.encode("utf-8", "surrogateescape") + b"\n")  # as the writer writes it
    registry = await Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        with_bytes = intents.Intents(journals, lambda p: (Path(p.box) / "new" / p.name).exists())
        assert await with_bytes.reconcile(registry) == 1
        assert list(journals.iterdir()) == []
        (row,) = await registry.recent(5)
        assert row["mail_from"] == "caf\ufffd@outside.test" and row["status"] == "unanswered"
        assert await registry.delivered_targets(record.key) == {"maildir:sales"}
    finally:
        await registry.close()


@pytest.mark.parametrize(("serials", "cut", "committed"), [
    ((1, 2), b" ", 0),          # "D KEY 1 .\n" cut after the key: the journal's last bytes
    ((1, 12), b" 1\n", 1),      # "D KEY 12 .\n" cut inside its number, a new line after it
], ids=["after-the-key", "inside-the-number"])
async def test_a_done_line_a_full_disk_cut_closes_no_other_transaction(tmp_path, serials, cut,
                                                                        committed):
    """One message split over two transactions (same key) has two intents, numbered, in one
    journal, both in flight at once. One was recorded, and its done line was cut short by a
    full disk (_done writes once and does not look at the count):
    - after the key (`D KEY `): the reader took it for an earlier version's `D KEY`, which
      closed every intent of the key;
    - inside its number (`D KEY 1` of `D KEY 12 .`), with the next intent's new line after
      it: it looked whole, and closed intent 1.
    Either way the other transaction's copy, stored and never recorded (451 to the sender,
    the process then killed), was left out of the reconcile. A done line without its final
    " ." closes nothing: the copy is recorded."""
    import dataclasses
    from datetime import datetime, timezone

    from mailrouter.delivery.maildir import Place
    from mailrouter.registry import DeliveryRecord, MessageRecord, Registry

    rcpts = ("sales@example.com", "support@example.com")
    copies = []
    for box_name in ("sales", "support"):
        box = tmp_path / "mail" / box_name
        await Maildir(box, "mx.test").deliver(b"Subject: x\r\n\r\nbody\r\n", "k" * 16)
        copies.append(Place(f"maildir:{box_name}", str(box), "mr" + "k" * 16))
    record = MessageRecord(
        key="k" * 64, received_at=datetime(2026, 12, 1, tzinfo=timezone.utc), protocol="smtp",
        peer="127.0.0.1", mail_from="client@outside.test", rcpts=(rcpts[committed],),
        message_id=None, from_name="", from_addr="", subject="x", size=20,
        content_hash="c" * 64, defects=(), ruleset_hash="r" * 16, status="delivered")
    lines = []
    for n, rcpt, place in zip(serials, rcpts, copies):
        rec = dataclasses.replace(record, rcpts=(rcpt,))
        lines.append(b"I " + intents._ENCODE({"key": record.key, "n": n,
                                                "record": intents._record_json(rec),
                                                "copies": [dataclasses.astuple(place)]}).encode())
    journals = tmp_path / "intents"
    journals.mkdir()
    (journals / "99999.0.abcdef.jrn").write_bytes(
        b"\n".join(lines) + b"\nD " + record.key.encode() + cut)
    registry = await Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:              # the recorded transaction's record, as it was committed
        await registry.record(record, [], [DeliveryRecord(copies[committed].target, "delivered",
                                                          "ok")], None, [])
        reader = intents.Intents(journals, lambda p: (Path(p.box) / "new" / p.name).exists())
        assert await reader.reconcile(registry) == 1
        assert await registry.delivered_targets(record.key) == {"maildir:sales", "maildir:support"}
    finally:
        await registry.close()

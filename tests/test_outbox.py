"""The outbox end to end on the in-process daemon: autoreplies and DSNs written with the
message, sent through a real aiosmtpd relay sink on loopback, never lost, never twice."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from mailrouter.cli import main
from mailrouter.config import Listener, OutboxConfig, RegistryConfig
from mailrouter.daemon import App
from tests.support.daemon import free_port
from tests.test_delivery_smtp import Sink

FAST = {"retry_min": 0.05, "retry_max": 0.2, "timeout": 5.0}


def relay_to(port: int) -> OutboxConfig:
    return OutboxConfig(Listener("127.0.0.1", port), **FAST)  # type: ignore[arg-type]


def mail(subject: str = "Question", msgid: str = "q1", *headers: str,
         sender: str = "ann@client.example", to: str = "old-sales@example.com") -> bytes:
    head = [f"From: Ann <{sender}>", f"To: {to}", f"Subject: {subject}",
            f"Message-ID: <{msgid}@client.example>", *headers]
    return ("\r\n".join(head) + "\r\n\r\nHello\r\n").encode()


async def send(app: App, mail_from: str, rcpts: list[str], raw: bytes) -> Any:
    host, port = app.bound["smtp"]
    async with aiosmtplib.SMTP(hostname=host, port=port, timeout=15) as smtp:
        return await smtp.sendmail(mail_from, rcpts, raw)


async def until(cond: Callable[[], Awaitable[bool]], what: str, limit: float = 30.0) -> None:
    """Wait for a condition (a generous deadline only to fail a hung test, not a speed test)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not await cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def rows(app: App) -> list[dict[str, Any]]:
    assert app.registry is not None
    return await app.registry.outbox_list(1000)


async def settled(app: App) -> bool:
    return all(r["state"] != "queued" for r in await rows(app))


@pytest.fixture
async def relay() -> Any:
    sinks: list[Sink] = []

    async def start(port: int = 0) -> Sink:
        s = Sink()
        s.port = port
        await s.start()
        sinks.append(s)
        return s
    yield start
    for s in sinks:
        await s.stop()


async def test_moved_address_answers_once(make_app: Any, relay: Any) -> None:
    """Mail to old-sales@ is delivered and answered: to the envelope sender, from <>.
    (A return path of bounce-*@, a list manager's VERP, is a robot's: no answer.)"""
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    await send(app, "ann.return@client.example", ["old-sales@example.com"], mail())
    await until(lambda: settled(app), "the outbox to settle")
    [env] = sink.envelopes
    assert (env.mail_from, env.rcpt_tos) == ("<>", ["ann.return@client.example"])
    m = message_from_bytes(env.content, policy=policy.default)
    assert (m["To"], m["From"], m["Auto-Submitted"]) == (
        "ann.return@client.example", "old-sales@example.com", "auto-replied")
    assert "sales@example.com" in m.get_body().get_content()   # type: ignore[union-attr]
    [row] = await rows(app)
    assert (row["kind"], row["state"], row["attempts"]) == ("autoreply", "sent", 1)
    msgs = await app.registry.recent(1)                        # type: ignore[union-attr]
    assert "autoreply moved: queued" in msgs[0]["decisions"][0]["reasons"]


async def test_hundred_messages_one_reply(make_app: Any, relay: Any) -> None:
    """A sender writing 100 times in a day gets one answer; the rest say why not."""
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    for n in range(100):
        await send(app, "ann@client.example", ["old-sales@example.com"], mail(msgid=f"m{n}"))
    await until(lambda: settled(app), "the outbox to settle")
    assert len(sink.envelopes) == 1
    assert len(await rows(app)) == 1
    last = (await app.registry.recent(1))[0]["decisions"][0]["reasons"]   # type: ignore[union-attr]
    assert any("not sent: ann@client.example already answered by moved" in r for r in last)


async def test_batv_signed_sender_is_answered_once(make_app: Any, relay: Any) -> None:
    """A gateway signs each message's envelope sender anew (BATV, `prvs=TAG=ann@`, as
    IronPort and Exim do; Barracuda's `btv1==TAG==`): one person, one answer per period,
    to the signed address the first message came from (the gateway takes no other). A
    signed noreply@ is still a robot. Before, every message got its own answer."""
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    for n, env in enumerate(("prvs=1306b4cea1=ann@client.example",
                             "prvs=1307c0ffee=ann@client.example",
                             "btv1==3a4f5e6d7c8==Ann@client.example", "ann@client.example")):
        await send(app, env, ["old-sales@example.com"], mail(msgid=f"b{n}"))
    await send(app, "prvs=1306b4cea1=noreply@shop.example", ["old-sales@example.com"],
               mail(msgid="shop1", sender="orders@shop.example"))
    await until(lambda: settled(app), "the outbox to settle")
    [env] = sink.envelopes
    assert (env.mail_from, env.rcpt_tos) == ("<>", ["prvs=1306b4cea1=ann@client.example"])
    recent = await app.registry.recent(5)                      # type: ignore[union-attr]
    reasons = [m["decisions"][0]["reasons"][-1] for m in recent]
    assert reasons[0].startswith("autoreply moved: not sent: robot sender: envelope sender "
                                 "noreply@shop.example matches 'noreply'"), reasons
    assert all(r.startswith("autoreply moved: not sent: ann@client.example already answered")
               for r in reasons[1:4]), reasons


async def test_a_sender_with_a_detail_is_answered_once(make_app: Any, relay: Any) -> None:
    """ann+shop@, ann+news@, Ann+Shop@ and ann@ are one person's mailbox (a shop writing
    from orders+8812@ changes the detail with every message): one answer per period, to the
    address the first message came from; before, each detail got its own answer (three in
    a row from the daemon) and its own daily cap. `+x@` keeps its `+`: a name, not a detail."""
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    senders = ("ann+shop@client.example", "ann+news@client.example",
               "Ann+Shop@Client.Example", "ann@client.example", "+x@client.example")
    for n, env in enumerate(senders):
        await send(app, env, ["old-sales@example.com"], mail(msgid=f"d{n}", sender=env))
    await until(lambda: settled(app), "the outbox to settle")
    assert sorted(e.rcpt_tos[0] for e in sink.envelopes) == [
        "+x@client.example", "ann+shop@client.example"]
    recent = await app.registry.recent(5)                      # type: ignore[union-attr]
    reasons = [m["decisions"][0]["reasons"][-1] for m in reversed(recent)]
    assert all(r.startswith("autoreply moved: not sent: ann@client.example already answered")
               for r in reasons[1:4]), reasons


async def test_mta_retry_sends_no_second_reply(make_app: Any, relay: Any) -> None:
    """The same message retried by the MTA is not answered again."""
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    for _ in range(3):
        await send(app, "ann@client.example", ["old-sales@example.com"], mail())
    await until(lambda: settled(app), "the outbox to settle")
    assert len(sink.envelopes) == 1


async def test_robot_mail_is_not_answered(make_app: Any, relay: Any) -> None:
    """A list message to a moved address is delivered, not answered, and the reason kept."""
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    await send(app, "news@client.example", ["old-sales@example.com"],
               mail("News", "n1", "List-Id: <news.client.example>"))
    assert await rows(app) == []
    reasons = (await app.registry.recent(1))[0]["decisions"][0]["reasons"]  # type: ignore[union-attr]
    assert "autoreply moved: not sent: mailing list (List-Id present)" in reasons
    assert sink.envelopes == []


async def test_relay_down_replies_wait_then_go_once(make_app: Any, relay: Any) -> None:
    """Relay down: answers wait with their error and go out once it is back, none twice."""
    port = free_port()
    app = await make_app(outbox=relay_to(port))
    for who in ("a", "b", "c"):
        await send(app, f"{who}@client.example", ["old-sales@example.com"], mail(msgid=who))

    async def tried() -> bool:
        found = await rows(app)
        return len(found) == 3 and all(r["attempts"] >= 2 and r["last_error"] for r in found)
    await until(tried, "three failed attempts each")
    assert all(r["state"] == "queued" for r in await rows(app))
    sink = await relay(port)
    await until(lambda: settled(app), "the outbox to drain")
    await asyncio.sleep(0.5)              # retries past due would show up as duplicates
    assert sorted(e.rcpt_tos[0] for e in sink.envelopes) == [
        "a@client.example", "b@client.example", "c@client.example"]
    assert all(r["state"] == "sent" for r in await rows(app))


async def test_relay_refusal_is_final(make_app: Any, relay: Any) -> None:
    """A 5xx from the relay marks the row failed with the relay's words; no retry."""
    sink = await relay()
    sink.rcpt_replies["gone@client.example"] = "550 5.1.1 no such user"
    app = await make_app(outbox=relay_to(sink.port))
    await send(app, "gone@client.example", ["old-sales@example.com"], mail())
    await until(lambda: settled(app), "the outbox to settle")
    [row] = await rows(app)
    assert row["state"] == "failed" and "550" in row["last_error"] and row["attempts"] == 1


@pytest.mark.parametrize("greeting", [True, False])
async def test_a_relay_refusing_the_session_is_retried(make_app: Any, relay: Any,
                                                        greeting: bool) -> None:
    """A relay that refuses mailrouter itself (Postfix's `554 5.7.1 Client host rejected`
    as it greets, when our host is not in its mynetworks; or a 5xx to EHLO) says nothing
    of the mail: the answers wait and go out once the relay takes us. Before, each was
    marked failed at its first attempt, lost to the relay's configuration."""
    port = free_port()
    greeted = 0

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal greeted
        greeted += 1
        text = b"554 5.7.1 relay.test: Client host rejected: Access denied\r\n"
        if greeting:
            writer.write(text)
        else:
            writer.write(b"220 relay.test ESMTP\r\n")
            await reader.readline()                           # EHLO
            writer.write(text.replace(b"554", b"550", 1))
            await reader.readline()                           # maybe HELO
            writer.write(text.replace(b"554", b"550", 1))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", port)
    try:
        app = await make_app(outbox=relay_to(port))
        await send(app, "ann@client.example", ["old-sales@example.com"], mail())

        async def tried() -> bool:
            found = await rows(app)
            return bool(found) and (found[0]["state"] != "queued" or found[0]["attempts"] >= 2)
        await until(tried, "two attempts, or the row settled")
        [row] = await rows(app)
        assert row["state"] == "queued" and "Client host rejected" in row["last_error"], row
        assert greeted >= 2
    finally:
        server.close()
        await server.wait_closed()
    sink = await relay(port)
    await until(lambda: settled(app), "the outbox to drain")
    assert [e.rcpt_tos for e in sink.envelopes] == [["ann@client.example"]]
    [row] = await rows(app)
    assert row["state"] == "sent"


async def test_no_relay_messages_wait_and_are_listed(make_app: Any, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Without outbox.relay the answer waits, the daemon says so once, `outbox` lists it."""
    caplog.set_level(logging.WARNING, logger="mailrouter")   # cli.main() of other tests lowers it
    app = await make_app()
    await send(app, "ann@client.example", ["old-sales@example.com"], mail())
    await send(app, "bob@client.example", ["old-sales@example.com"], mail(msgid="b"))
    assert [r["state"] for r in await rows(app)] == ["queued", "queued"]
    assert caplog.text.count("event=outbox_no_relay") == 1
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"registry: {{url: '{app.config.registry.url}'}}\nrouting: {list(app.config.routing)}\n",
                   encoding="utf-8")
    assert await asyncio.to_thread(main, ["outbox", "--json", "-c", str(cfg)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["state"], r["rcpt"]) for r in listed] == [
        ("autoreply", "queued", "bob@client.example"), ("autoreply", "queued", "ann@client.example")]
    assert await asyncio.to_thread(main, ["outbox", "-c", str(cfg)]) == 0
    assert "relay: none" in capsys.readouterr().out


async def test_queued_reply_survives_restart(make_app: Any, relay: Any, tmp_path: Path) -> None:
    """Committed but not sent (no relay), the daemon stops; the next one sends it, once."""
    app = await make_app()
    await send(app, "ann@client.example", ["old-sales@example.com"], mail())
    app.request_stop()
    await app.wait_stopped()
    sink = await relay()
    again = await make_app(outbox=relay_to(sink.port))
    await until(lambda: settled(again), "the outbox to settle")
    assert len(sink.envelopes) == 1


async def test_dsn_for_recipient_refused_after_data(make_app: Any, relay: Any) -> None:
    """SMTP, one recipient accepted and one refused after DATA (a loop): one 250, and an
    RFC 3464 DSN for the refused one goes to the envelope sender from <>."""
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    raw = mail("Loop", "l1", "Delivered-To: support@example.com")
    await send(app, "ann@client.example", ["sales@example.com", "support@example.com"], raw)
    await until(lambda: settled(app), "the outbox to settle")
    [env] = sink.envelopes
    assert (env.mail_from, env.rcpt_tos) == ("<>", ["ann@client.example"])
    m = message_from_bytes(env.content, policy=policy.default)
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    parts = list(m.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = env.content.decode()
    assert "Final-Recipient: rfc822; support@example.com" in status
    assert "Action: failed" in status and "Status: 5.4.6" in status
    assert "Message-ID: <l1@client.example>" in status


@pytest.mark.parametrize("sender, rcpts", [
    ("<>", ["sales@example.com", "support@example.com"]),       # never a DSN to <>
    ("ann@client.example", ["support@example.com"]),             # nothing accepted: 5xx itself
])
async def test_no_dsn(make_app: Any, relay: Any, sender: str, rcpts: list[str]) -> None:
    """No DSN to a null sender, nor when the refusal is the transaction's own reply."""
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    raw = mail("Loop", "l1", "Delivered-To: support@example.com")
    try:
        await send(app, "" if sender == "<>" else sender, rcpts, raw)
    except aiosmtplib.SMTPResponseException:
        pass
    assert [r for r in await rows(app) if r["kind"] == "dsn"] == []


@pytest.mark.parametrize("other", ["ann@client.example", "Ann+news@client.example"])
async def test_one_sender_two_instances_one_reply(make_app: Any, relay: Any, pg_db: str,
                                                  tmp_path: Path, other: str) -> None:
    """Two instances on one PostgreSQL registry, the same sender writing to both at once
    (to the second also as Ann+news@, one sender with ann@): one answer (the unique
    sender/responder/period key), sent once (SKIP LOCKED)."""
    url = pg_db
    sink = await relay()
    reg = RegistryConfig(url)
    a = await make_app(outbox=relay_to(sink.port), registry=reg)
    b_cfg = {"outbox": relay_to(sink.port), "registry": reg,
                 "delivery": dataclasses.replace(a.config.delivery,
                                              maildir_root=tmp_path / "b-mail")}
    b = await make_app(**b_cfg)
    for n in range(5):
        await asyncio.gather(
            send(a, "ann@client.example", ["old-sales@example.com"], mail(msgid=f"a{n}")),
            send(b, other, ["old-sales@example.com"], mail(msgid=f"b{n}")))
    await until(lambda: settled(a), "the outbox to settle")
    await asyncio.sleep(0.3)
    assert len(sink.envelopes) == 1
    assert len(await rows(a)) == 1


async def test_stop_right_after_a_wake_stops_the_worker(make_app: Any, relay: Any) -> None:
    """New rows committed (wake) in the same turn as the daemon stops the worker: on Python
    3.11, asyncio.wait_for around the wake event took the stop's cancellation for the event's
    result, the worker went on polling, and the daemon's shutdown waited for it forever."""
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    worker = app.outbox
    assert worker is not None
    for _ in range(5):               # the worker waits on its event, as when idle
        await asyncio.sleep(0.1)
        worker.wake()
        stopped = asyncio.ensure_future(worker.stop())
        done, _ = await asyncio.wait([stopped], timeout=10)   # only to fail, not a speed check
        assert done, "the outbox worker did not stop"
        worker.start()


async def test_stop_ends_the_worker_when_a_cancellation_is_lost(make_app: Any,
                                                                relay: Any) -> None:
    """aiosmtplib reads each reply of the relay with asyncio.wait_for, which on Python 3.11
    drops a cancellation that comes in the same turn as the reply: the worker went on
    polling and the daemon's shutdown waited for it for ever (a loaded suite hung 300 s in
    close). The claim below drops one cancellation as wait_for does; stop() still ends it."""
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    worker, registry = app.outbox, app.registry
    assert worker is not None and registry is not None
    await worker.stop()
    real, lost = registry.outbox_claim, []

    async def claim(limit: int, lease: float) -> list[dict[str, Any]]:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if lost:
                raise
            lost.append(True)
            return await real(limit, lease)     # the cancellation dropped, a result instead
        return []
    entered = asyncio.Event()
    registry.outbox_claim = claim  # type: ignore[method-assign]
    worker.start()
    await asyncio.wait_for(entered.wait(), 10)
    stopped = asyncio.ensure_future(worker.stop())
    done, _ = await asyncio.wait([stopped], timeout=10)      # only to fail, not a speed check
    assert done and lost == [True], "the outbox worker did not stop"


async def test_an_answer_that_cannot_be_written_is_skipped_not_a_451_for_ever(
        make_app: Any, relay: Any, caplog: Any) -> None:
    """A sender Python's email package refuses in a header (a LINE SEPARATOR: the intake
    refuses it now, this is the second line of defence) made building the autoreply raise:
    a traceback and 451 on every retry though the copy was stored. The answer is skipped,
    said in the decision's reasons and the log; the message is delivered, 250."""
    from mailrouter.values import Transaction
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    txn = Transaction(protocol="smtp", peer="127.0.0.1:1", helo="mx.outside.test",
                      mail_from="b\u2028c@outside.test", rcpts=("old-sales@example.com",),
                      raw=mail(msgid="sep"), smtputf8=True)
    with caplog.at_level(logging.ERROR, logger="mailrouter.outbox"):
        replies = await app.pipeline.process(txn)
    assert [r.ok for r in replies] == [True], replies
    assert await rows(app) == []
    assert any("event=autoreply_not_built" in r.getMessage() for r in caplog.records)
    assert app.registry is not None
    [d] = (await app.registry.recent(1))[0]["decisions"]
    assert any(line.startswith("autoreply moved: not sent: cannot write the answer: ValueError")
               for line in d["reasons"]), d["reasons"]


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\u0085"], ids=["LS", "PS", "NEL"])
async def test_a_line_separator_in_the_subject_is_answered(make_app: Any, relay: Any,
                                                             caplog: Any, sep: str) -> None:
    """A Subject whose RFC 2047 word decodes to LINE SEPARATOR (or PARAGRAPH SEPARATOR, or
    NEL) went as it was into the answer's "Auto: {subject}": Python's email package refused
    it (ValueError), so the customer got no answer and the log a traceback, for one
    character any sender can put there. The answer goes, its Subject one line, no header
    of the customer's making in it."""
    import base64
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    word = base64.b64encode(f"Invoice{sep}Bcc: victim@evil.test".encode()).decode()
    with caplog.at_level(logging.ERROR, logger="mailrouter.outbox"):
        await send(app, "ann@client.example", ["old-sales@example.com"],
                   mail(f"=?utf-8?b?{word}?="))
        await until(lambda: settled(app), "the outbox to settle")
    assert not any("autoreply_not_built" in r.getMessage() for r in caplog.records)
    [env] = sink.envelopes
    assert env.rcpt_tos == ["ann@client.example"]
    m = message_from_bytes(env.content, policy=policy.default)
    assert m["Subject"] == "Auto: Invoice Bcc: victim@evil.test"
    assert m["Bcc"] is None and sep.encode() not in env.content


async def test_a_registry_locked_as_the_relay_took_the_reply_does_not_send_it_twice(
        make_app: Any, relay: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The relay says 250 for an autoreply while another process holds the SQLite registry
    (BEGIN EXCLUSIVE) for a few seconds: the "sent" commit failed, was logged and dropped, so
    the row went back to `queued` and out a second time when its lease (60 s) ran out. Now
    the "sent" is written once the lock is gone, and the sender gets one answer."""
    import sqlite3

    from tests.test_faults import short_deadline, sqlite_url

    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port),
                         registry=await short_deadline(sqlite_url(tmp_path)))
    locker = sqlite3.connect(tmp_path / "var" / "registry.db", isolation_level=None,
                             check_same_thread=False)
    locked = asyncio.Event()

    async def lock_then_accept(_server: Any) -> None:
        await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
        locked.set()
    sink.on_data = lock_then_accept
    try:
        await send(app, "ann@client.example", ["old-sales@example.com"], mail())
        await asyncio.wait_for(locked.wait(), 30)
        sink.on_data = None

        async def failed() -> bool:       # the "sent" commit met the lock (1 s deadline)
            return any("event=outbox_settle_failed" in r.getMessage() and "state=sent" in
                       r.getMessage() for r in caplog.records)
        await until(failed, "the sent commit to fail on the lock")
    finally:
        await asyncio.to_thread(locker.execute, "ROLLBACK")
        locker.close()

    async def sent() -> bool:
        return [r["state"] for r in await rows(app)] == ["sent"]
    await until(sent, "the row marked sent once the registry is back", limit=20)
    assert len(sink.envelopes) == 1
    [row] = await rows(app)
    assert row["attempts"] == 1


async def test_a_row_that_fails_to_send_does_not_stop_the_outbox(
        make_app: Any, relay: Any, caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected error while sending one row (a bug: here the first send raises) ended
    the outbox's task, and nothing went out again until a restart. It is logged, and the
    next row (another sender's answer) is sent; the failed row waits for its lease."""
    from mailrouter.outbox import OutboxWorker

    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port))
    real = OutboxWorker._send_one
    calls: list[int] = []

    async def first_fails(self: OutboxWorker, row: dict[str, Any], smtp: Any) -> Any:
        calls.append(row["id"])
        if len(calls) == 1:
            raise RuntimeError("a bug in sending")
        return await real(self, row, smtp)

    OutboxWorker._send_one = first_fails        # type: ignore[method-assign]
    try:
        await send(app, "ann@client.example", ["old-sales@example.com"], mail())

        async def crashed() -> bool:
            return any("event=outbox_crashed" in r.getMessage() for r in caplog.records)
        await until(crashed, "the first send to fail")
        await send(app, "bob@client.example", ["old-sales@example.com"],
                   mail(msgid="q2", sender="bob@client.example"))

        async def answered() -> bool:
            return [e.rcpt_tos for e in sink.envelopes] == [["bob@client.example"]]
        await until(answered, "the next answer to be sent")
    finally:
        OutboxWorker._send_one = real           # type: ignore[method-assign]


async def test_a_slow_relay_gets_each_row_once_from_two_instances(make_app: Any, relay: Any,
                                                                  pg_db: str,
                                                                  tmp_path: Path) -> None:
    """Two instances on one PostgreSQL registry, a relay slow to take each message (a
    before-queue content filter): one worker claims the whole batch, and the batch takes
    longer than the claim's lease. Before, the other instance claimed the rows still
    waiting in that batch once their lease ran out and sent them too: answers went out
    twice. Each row's lease is now renewed (only by the worker still holding it) before
    it is sent, and a row another worker took meanwhile is left to it."""
    url = pg_db
    sink = await relay()
    reg = RegistryConfig(url)
    a = await make_app(outbox=relay_to(sink.port), registry=reg)
    b = await make_app(outbox=relay_to(sink.port), registry=reg,
                       delivery=dataclasses.replace(a.config.delivery,
                                                    maildir_root=tmp_path / "b-mail"))
    workers = [app.outbox for app in (a, b)]
    for w in workers:
        assert w is not None
        await w.stop()                  # the rows are all queued before anyone claims
    senders = [f"ann{n}@client.example" for n in range(12)]
    for n, who in enumerate(senders):
        await send(a, who, ["old-sales@example.com"], mail(msgid=f"s{n}", sender=who))
    assert len(await rows(a)) == len(senders)

    async def slow(_server: Any) -> None:
        await asyncio.sleep(0.5)        # the batch: 6 s, three leases
    sink.on_data = slow
    for w in workers:
        assert w is not None
        w.lease = 2.0
        w.start()
    await until(lambda: settled(a), "the outbox to settle", limit=120)
    got = sorted(r for env in sink.envelopes for r in env.rcpt_tos)
    assert got == sorted(senders)
    assert {r["state"] for r in await rows(a)} == {"sent"}


def _answer(at: Any, period: Any) -> Any:
    """The autoreply row Outgoing.plan makes for ann@ at `at` (responder `moved`)."""
    from mailrouter.autoreply import period_bucket
    from mailrouter.registry.models import OutboxRecord
    bucket = period_bucket(at, period)
    return OutboxRecord(f"autoreply:moved:ann@client.example:{bucket}", "autoreply", "",
                        "ann@client.example", b"Subject: Auto\r\n\r\nMoved\r\n", "moved",
                        "ann@client.example", bucket, period=period.total_seconds())


async def test_answers_either_side_of_a_period_boundary_are_one(registry_url: str) -> None:
    """Two messages of one sender to one responder, planned either side of the boundary of
    its period's buckets (the period is a span, the unique key of autoreply_log a bucket of
    it: 7d buckets turn at Thursday 00:00 UTC) while neither was recorded yet (two instances,
    two workers, or two sessions of one process, each reading the history before the other
    committed): both answers went out, seconds apart, against "one answer per sender per
    period". The record's transaction looks again, under a lock per sender and responder
    on PostgreSQL: one answer, at two instances and inside one group commit alike."""
    from datetime import UTC, datetime, timedelta

    from mailrouter.registry import Registry
    from tests.test_registry import message
    period = timedelta(days=7)
    span = int(period.total_seconds())
    edge = datetime.fromtimestamp((int(datetime.now(UTC).timestamp()) // span + 1) * span, UTC)
    before, after = edge - timedelta(milliseconds=5), edge + timedelta(milliseconds=5)
    a, b = await Registry.open(registry_url), await Registry.open(registry_url)
    try:
        await asyncio.gather(      # two instances
            a.record(message("1" * 64), [], [], outgoing=[_answer(before, period)]),
            b.record(message("2" * 64), [], [], outgoing=[_answer(after, period)]))
        assert [r["kind"] for r in await a.outbox_list()] == ["autoreply"]
        await a.record(message("3" * 64), [], [],     # later, the next bucket: answered already
                       outgoing=[_answer(edge + timedelta(days=1), period)])
        assert len(await a.outbox_list()) == 1
        other = dataclasses.replace(_answer(before, period), sender="bob@client.example",
                                    rcpt="bob@client.example",
                                    dedupe=_answer(before, period).dedupe.replace("ann", "bob"))
        later = dataclasses.replace(_answer(after, period), sender="bob@client.example",
                                    rcpt="bob@client.example",
                                    dedupe=_answer(after, period).dedupe.replace("ann", "bob"))
        await asyncio.gather(      # one process, both in one group commit
            a.record(message("4" * 64), [], [], outgoing=[other]),
            a.record(message("5" * 64), [], [], outgoing=[later]))
        assert sorted(r["rcpt"] for r in await a.outbox_list()) == ["ann@client.example",
                                                                  "bob@client.example"]
    finally:
        await a.close()
        await b.close()


async def test_an_answer_the_record_drops_is_not_sent_in_its_decision(registry_url: str) -> None:
    """An answer the record drops (answered within its period under the other bucket's
    key, by another instance or in the same group commit) had its decision's reason line
    `autoreply moved: queued`, written with the message: `request show`, the web view's
    message story and the registry showed an answer that never went. The dropped one's
    line now says `not sent: answered within its period by another process`; the answer
    that went keeps `queued`."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from mailrouter.registry import Registry
    from mailrouter.registry.models import decisions
    from tests.test_registry import decision, message
    period = timedelta(days=7)
    span = int(period.total_seconds())
    edge = datetime.fromtimestamp((int(datetime.now(UTC).timestamp()) // span + 1) * span, UTC)
    before, after = edge - timedelta(milliseconds=5), edge + timedelta(milliseconds=5)
    queued = "autoreply moved: queued"
    dropped = "autoreply moved: not sent: answered within its period by another process"

    def noted(key: str) -> Any:
        return [decision("old-sales@example.com", reasons=("moved", queued))]

    def bob(answer: Any) -> Any:
        return dataclasses.replace(answer, sender="bob@client.example", rcpt="bob@client.example",
                                   dedupe=answer.dedupe.replace("ann", "bob"))
    a, b = await Registry.open(registry_url), await Registry.open(registry_url)
    try:
        await asyncio.gather(      # two instances
            a.record(message("1" * 64), noted("1"), [], outgoing=[_answer(before, period)]),
            b.record(message("2" * 64), noted("2"), [], outgoing=[_answer(after, period)]))
        await asyncio.gather(      # one process, both in one group commit
            a.record(message("4" * 64), noted("4"), [], outgoing=[bob(_answer(before, period))]),
            a.record(message("5" * 64), noted("5"), [], outgoing=[bob(_answer(after, period))]))
        sent = {r["message_key"] for r in await a.outbox_list()}
        assert len(sent) == 2 and len(sent & {"1" * 64, "2" * 64}) == 1
        reasons = dict((r.message_key, r.reasons) for r in await a.read("t", lambda c: list(
            c.execute(select(decisions.c.message_key, decisions.c.reasons)))))
        assert reasons == {k * 64: ["moved", queued if k * 64 in sent else dropped]
                           for k in "1245"}, reasons
    finally:
        await a.close()
        await b.close()


async def test_the_daily_cap_holds_for_answers_recorded_at_once(registry_url: str) -> None:
    """A sender one answer under autoreply.daily_cap writes to two addresses with two
    responders, and two instances (or two workers, or one group commit) plan an answer
    each, both reading the history before the other recorded: both went out, the cap
    exceeded. The record counts the sender's answers again under its per-sender lock
    (PostgreSQL; SQLite's writes are one at a time): one answer goes, the other's decision
    says `not sent: ... (daily_cap 3)`."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from mailrouter.registry import Registry
    from mailrouter.registry.models import decisions
    from tests.test_registry import decision, message
    period = timedelta(days=7)
    now = datetime.now(UTC)

    def answer(responder: str, who: str = "ann") -> Any:
        a = dataclasses.replace(_answer(now, period), responder=responder, daily_cap=3,
                                sender=f"{who}@client.example", rcpt=f"{who}@client.example")
        return dataclasses.replace(a, dedupe=f"autoreply:{responder}:{a.sender}:{a.bucket}")

    def noted(responder: str) -> Any:
        return [decision("old-sales@example.com", reasons=(f"autoreply {responder}: queued",))]
    a, b = await Registry.open(registry_url), await Registry.open(registry_url)
    try:
        for n, who in enumerate(("ann", "ann", "bob", "bob")):      # two answers each, earlier
            await a.record(message(str(n) * 64), [], [], outgoing=[answer(f"r{n}", who)])
        await asyncio.gather(      # two instances
            a.record(message("a" * 64), noted("x"), [], outgoing=[answer("x")]),
            b.record(message("b" * 64), noted("y"), [], outgoing=[answer("y")]))
        await asyncio.gather(      # one process, both in one group commit
            a.record(message("c" * 64), noted("x"), [], outgoing=[answer("x", "bob")]),
            a.record(message("d" * 64), noted("y"), [], outgoing=[answer("y", "bob")]))
        keys = {r["message_key"][0] for r in await a.outbox_list()} - set("0123")
        assert len(keys & set("ab")) == 1 and len(keys & set("cd")) == 1, keys
        reasons = dict((r.message_key[0], r.reasons[0]) for r in await a.read(
            "t", lambda c: list(c.execute(select(decisions.c.message_key, decisions.c.reasons)))))
        for k, responder, who in (("a", "x", "ann"), ("b", "y", "ann"), ("c", "x", "bob"),
                                  ("d", "y", "bob")):
            assert reasons[k] == (f"autoreply {responder}: queued" if k in keys else
                                  f"autoreply {responder}: not sent: {who}@client.example got "
                                  "3 answers in 24 h (daily_cap 3)"), reasons
    finally:
        await a.close()
        await b.close()

"""LMTPClient: one reply per recipient (RFC 2033 4.2), against aiosmtpd and a real Dovecot.

Behaviour shared with SMTP (bytes, pipelining, pool, outages, timeouts) is
tested for both clients in test_delivery_smtp.py.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP

from mailrouter import metrics
from mailrouter.config import DeliveryConfig
from mailrouter.delivery.lmtp import Downstream, LMTPClient, PartialDeliveryError
from mailrouter.registry import Registry
from mailrouter.registry.models import messages
from mailrouter.values import Reply
from tests.support.daemon import maildir_files
from tests.support.dovecot import DovecotServer
from tests.test_delivery_smtp import (EHLO, GREET, TRICKY, Scripted, Sink, SinkFactory,  # noqa: F401
                                      sink)

DovecotFactory = Callable[[list[str]], DovecotServer]


async def test_mixed_replies_per_recipient_in_order(sink: SinkFactory) -> None:  # noqa: F811 (fixture)
    """RCPT refusal and per-recipient DATA replies (250/550/452) come back in RCPT order."""
    s = await sink(lmtp=True)
    s.rcpt_replies["nosuch@example.test"] = "550 5.1.1 <nosuch@example.test> User doesn't exist"
    s.data_replies["full@example.test"] = "452 4.2.2 <full@example.test> Mailbox full"
    rcpts = ["a@example.test", "nosuch@example.test", "full@example.test", "b@example.test"]
    client = LMTPClient(s.downstream())
    replies = await client.deliver("sender@example.org", rcpts, b"Subject: x\r\n\r\nbody\r\n")
    await client.close()
    assert list(replies) == rcpts
    assert [r.code for r in replies.values()] == [250, 550, 452, 250]
    assert replies["full@example.test"] == Reply(452, "4.2.2", "<full@example.test> Mailbox full")
    assert replies["b@example.test"].text == "<b@example.test> Saved"
    assert s.envelopes[0].rcpt_tos == ["a@example.test", "full@example.test", "b@example.test"]


async def test_next_message_after_mixed_replies_reuses_connection(sink: SinkFactory) -> None:  # noqa: F811 (fixture)
    """After per-recipient replies the session is clean: the next message reuses it."""
    s = await sink(lmtp=True)
    s.data_replies["full@example.test"] = "452 4.2.2 Mailbox full"
    client = LMTPClient(s.downstream())
    first = await client.deliver("s@example.org", ["full@example.test", "a@example.test"], b"1\r\n")
    second = await client.deliver("s@example.org", ["a@example.test"], b"2\r\n")
    await client.close()
    assert [r.code for r in first.values()] == [452, 250] and second["a@example.test"].ok
    assert s.connections == 1


async def test_broken_after_some_replies_is_partial(sink: SinkFactory) -> None:  # noqa: F811 (fixture)
    """The connection breaks after the first per-recipient reply: PartialDeliveryError says who has it."""
    s = await sink(lmtp=True)

    async def one_reply_then_hang_up(server: SMTP) -> None:
        await server.push("250 2.0.0 <a@example.test> Saved")
        assert server.transport is not None
        server.transport.abort()

    s.on_data = one_reply_then_hang_up
    client = LMTPClient(s.downstream())
    with pytest.raises(PartialDeliveryError) as caught:
        await client.deliver("s@example.org", ["a@example.test", "b@example.test"], b"x\r\n")
    await client.close()
    assert list(caught.value.replies) == ["a@example.test"]
    assert caught.value.replies["a@example.test"].ok


ENVELOPE2 = b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"   # MAIL, 2 RCPT, DATA


async def test_421_among_the_replies_defers_the_rest_at_once() -> None:
    """A 421 as the first recipient's reply: the server is closing (RFC 5321 3.8) and says no
    more. The recipients after it are deferred with it at once; they waited for replies
    that never come until the timeout, and the whole copy ended as a broken connection."""
    server = await Scripted([GREET, None, EHLO, None, ENVELOPE2, "DATA",
                             b"421 4.3.2 shutting down\r\n"]).start()
    client = LMTPClient(server.downstream(timeout=1.0))
    try:
        got = await client.deliver("s@example.org", ["a@example.test", "b@example.test"], b"x\r\n")
    finally:
        await client.close()
        await server.stop()
    assert [str(r) for r in got.values()] == ["421 4.3.2 shutting down"] * 2


async def test_a_reply_too_many_never_answers_the_next_message() -> None:
    """An LMTP server that answers three times for two recipients: the third reply answers
    nothing of ours. That connection is not reused (the next message's MAIL would read it,
    every reply one out of step); the next message goes out on a new connection."""
    once = [GREET, None, EHLO, None, ENVELOPE2, "DATA",
            b"250 2.0.0 one\r\n250 2.0.0 two\r\n250 2.0.0 three\r\n"]
    server = await Scripted(once + [None, ENVELOPE2, "DATA", b"250 2.0.0 1\r\n250 2.0.0 2\r\n"]).start()
    client = LMTPClient(server.downstream(timeout=2.0))
    rcpts = ["a@example.test", "b@example.test"]
    try:
        first = await client.deliver("s@example.org", rcpts, b"x\r\n")
        await asyncio.sleep(0.05)      # the third reply is in our buffer before the next message
        second = await client.deliver("s@example.org", rcpts, b"y\r\n")
    finally:
        await client.close()
        await server.stop()
    assert [str(r) for r in first.values()] == ["250 2.0.0 one", "250 2.0.0 two"]
    assert [str(r) for r in second.values()] == ["250 2.0.0 one", "250 2.0.0 two"]
    assert server.connections == 2 and len(server.messages) == 2


def _messages(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((folder / "new").iterdir())] if folder.exists() else []


async def test_dovecot_detail_folder_and_inbox(dovecot: DovecotFactory) -> None:
    """Real Dovecot: user+Finance lands in .Finance/new, bob in new/, unknown gets 550."""
    server = dovecot(["user@example.test", "bob@example.test"])
    rcpts = ["user+Finance@example.test", "nosuch@example.test", "bob@example.test"]
    client = LMTPClient(Downstream("127.0.0.1", server.port, timeout=10.0))
    replies = await client.deliver("sender@example.org", rcpts, TRICKY)
    await client.close()
    assert list(replies) == rcpts
    assert [r.code for r in replies.values()] == [250, 550, 250], server.log
    assert replies["nosuch@example.test"].status == "5.1.1"
    user, bob = server.maildir("user@example.test"), server.maildir("bob@example.test")
    (finance,) = _messages(user / ".Finance")
    (inbox,) = _messages(bob)
    assert _messages(user) == []
    # Dovecot prepends Return-Path and Delivered-To; the message itself is unchanged
    assert finance.endswith(TRICKY.replace(b"\r\n", b"\n")) and inbox.endswith(TRICKY.replace(b"\r\n", b"\n"))


async def test_dovecot_takes_a_quoted_sender_with_angle_brackets(dovecot: DovecotFactory) -> None:
    """Real Dovecot reads `MAIL FROM:<"a>b"@outside.test>` as the sender it is."""
    server = dovecot(["bob@example.test"])
    client = LMTPClient(Downstream("127.0.0.1", server.port, timeout=10.0))
    replies = await client.deliver('"a>b"@outside.test', ["bob@example.test"], b"Subject: q\r\n\r\nx\r\n")
    await client.close()
    assert replies["bob@example.test"].ok, server.log
    (message,) = _messages(server.maildir("bob@example.test"))
    assert message.startswith(b'Return-Path: <"a>b"@outside.test>')


async def test_dovecot_non_ascii_recipient_refused_locally(dovecot: DovecotFactory) -> None:
    """Dovecot offers no SMTPUTF8: the UTF-8 recipient gets 550 5.6.7, the other is delivered."""
    server = dovecot(["bob@example.test"])
    client = LMTPClient(Downstream("127.0.0.1", server.port, timeout=10.0))
    replies = await client.deliver("s@example.org", ["юзер@example.test", "bob@example.test"],
                                   "Subject: Привет\r\n\r\nтело\r\n".encode(), smtputf8=True)
    await client.close()
    assert replies["юзер@example.test"].status == "5.6.7"
    assert replies["bob@example.test"].ok, server.log
    assert len(_messages(server.maildir("bob@example.test"))) == 1


# The whole daemon in front of a recording downstream: what the upstream client hears,
# how many transactions and connections the downstream sees.

ROUTING = """\
domains: [example.com]
mailboxes:
  alice: {%(kind)s: alice@store.test}
  bob:   {%(kind)s: bob@store.test}
  carol: {%(kind)s: carol@store.test}
  dave:  {%(kind)s: dave@store.test}
  ghost: {%(kind)s: ghost@store.test}
  local: {maildir: local}
aliases:
  alice@example.com:   mailbox:alice
  bob@example.com:     mailbox:bob
  finance@example.com: {mailbox: carol, folder: Finance}
  dave@example.com:    mailbox:dave
  ghost@example.com:   mailbox:ghost
  local@example.com:   mailbox:local
  team@example.com:    [alice@example.com, bob@example.com, finance@example.com, local@example.com]
"""


async def _daemon(make_app: Any, tmp_path: Path, s: Sink, kind: str, **delivery: Any) -> int:
    """A daemon whose mailboxes (but `local`) live on the sink; returns its SMTP port."""
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING % {"kind": kind}, encoding="utf-8")
    ds = s.downstream(timeout=10.0)
    cfg = DeliveryConfig(maildir_root=tmp_path / "var" / "mail", **{kind: ds}, **delivery)
    app = await make_app(routing=(str(routing),), delivery=cfg)
    return int(app.bound["smtp"][1])


def _send(port: int, rcpts: list[str], body: bytes = b"Subject: hi\r\n\r\nhello\r\n") -> tuple[int, bytes]:
    """smtplib: the reply to DATA (every RCPT must be accepted)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo()
        c.mail("client@outside.test")
        for r in rcpts:
            assert c.rcpt(r)[0] == 250, r
        return c.data(body)


@pytest.mark.parametrize("kind", ["lmtp", "smtp"])
async def test_one_transaction_per_message_per_downstream(make_app, tmp_path, sink, kind):  # noqa: F811
    """Two envelope recipients fanning out to four downstream mailboxes and one Maildir: the
    downstream sees ONE connection and ONE transaction with four RCPTs (it saw four before);
    the copy carries both recipients' trace lines and a Received line without `for`."""
    s = await sink(lmtp=kind == "lmtp")
    port = await _daemon(make_app, tmp_path, s, kind)
    code, _ = await asyncio.to_thread(_send, port, ["team@example.com", "dave@example.com"])
    assert code == 250
    (env,) = s.envelopes
    finance = "carol+Finance@store.test" if kind == "lmtp" else "carol@store.test"
    assert sorted(env.rcpt_tos) == sorted(["alice@store.test", "bob@store.test", finance,
                                           "dave@store.test"])
    assert s.connections == 1
    head = env.original_content.split(b"\r\n\r\n")[0]
    assert b"Delivered-To: team@example.com\r\n" in head and b"Delivered-To: dave@example.com\r\n" in head
    assert b"\tfor <" not in head
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


@pytest.mark.parametrize("kind", ["lmtp", "smtp"])
async def test_downstream_421_reaches_client_as_our_451(make_app, tmp_path, sink, kind, caplog):  # noqa: F811
    """Dovecot shutting down answers `421 4.3.2 sink Shutting down` after DATA: the upstream
    client gets our `451 4.3.0` (a 421 would tell it that OUR channel closes, and it named
    the downstream's host); the log keeps the downstream's original."""
    s = await sink(lmtp=kind == "lmtp")
    if kind == "lmtp":
        s.data_replies["alice@store.test"] = "421 4.3.2 sink.example.test Shutting down"
    else:
        s.data_reply = "421 4.3.2 sink.example.test Shutting down"
    port = await _daemon(make_app, tmp_path, s, kind)
    got = await asyncio.to_thread(_send, port, ["alice@example.com"])
    assert got == (451, b"4.3.0 Delivery deferred by the mail store, try again later")
    assert "downstream='421 4.3.2 sink.example.test Shutting down'" in caplog.text


async def test_a_downstream_that_answers_data_with_250_never_gets_our_250(make_app, tmp_path):
    """The whole daemon in front of an SMTP downstream that answers DATA with 250 instead of
    354 (so it never reads the message): the client hears a 4xx and keeps the message, and
    the downstream got no message. It heard our 250 and the copy was recorded delivered."""
    server = await Scripted([GREET, None, EHLO, None,
                             b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.0.0 ok\r\n"]).start()
    try:
        port = await _daemon(make_app, tmp_path, server, "smtp")  # type: ignore[arg-type]
        code, _ = await asyncio.to_thread(_send, port, ["alice@example.com"])
    finally:
        await server.stop()
    assert 400 <= code < 500 and server.messages == []


@pytest.mark.parametrize("kind", ["lmtp", "smtp"])
async def test_a_bounce_to_a_downstream_mailbox_is_delivered(make_app, tmp_path, sink, kind):  # noqa: F811
    """A bounce (MAIL FROM:<>) through the whole daemon to an LMTP/SMTP mailbox: 250, and the
    downstream gets it with the null sender. Every one was answered 501 5.1.3 after DATA."""
    s = await sink(lmtp=kind == "lmtp")
    port = await _daemon(make_app, tmp_path, s, kind)

    def bounce() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
            c.ehlo()
            assert c.mail("<>")[0] == 250 and c.rcpt("alice@example.com")[0] == 250
            return c.data(b"Subject: Undelivered Mail Returned to Sender\r\n\r\nx\r\n")
    code, _ = await asyncio.to_thread(bounce)
    assert code == 250 and len(s.envelopes) == 1
    assert b"MAIL FROM:<>" in b"".join(s.chunks)


def _refused(kind: str) -> float:
    return metrics.REFUSED_CONFIGURED.labels(kind)._value.get()  # type: ignore[no-any-return]


async def test_unknown_user_held_as_451_then_refused(make_app, tmp_path, sink, caplog):  # noqa: F811
    """Dovecot refuses a mailbox our config names (`550 5.1.1 unknown user`): our config's
    fault, so the client hears 451 while the hold runs (logged at error, counted); once the
    message was first seen longer ago than the hold, the retry gets our 550 5.1.1."""
    s = await sink(lmtp=True)
    s.rcpt_replies["ghost@store.test"] = "550 5.1.1 <ghost@store.test> unknown user"
    port = await _daemon(make_app, tmp_path, s, "lmtp")
    held, given_up = _refused("held"), _refused("given_up")
    got = await asyncio.to_thread(_send, port, ["ghost@example.com"])
    assert got == (451, b"4.3.0 Mailbox temporarily unavailable, try again later")
    (line,) = [r for r in caplog.records if "event=downstream_refused_configured_mailbox" in r.message]
    assert line.levelname == "ERROR" and "550 5.1.1 <ghost@store.test> unknown user" in line.message
    assert _refused("held") == held + 1
    got = await asyncio.to_thread(_send, port, ["ghost@example.com"])   # the MTA retries
    assert got[0] == 451 and _refused("held") == held + 2
    # the first attempt was two days ago (as the registry records it): the hold (1d) is over
    registry = await Registry.open(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'registry.db'}")
    async with registry.engine.begin() as conn:
        await conn.execute(messages.update().values(
            received_at=datetime.now(UTC) - timedelta(days=2)))
    await registry.close()
    got = await asyncio.to_thread(_send, port, ["ghost@example.com"])
    assert got == (550, b"5.1.1 Delivery refused by the mail store")
    assert _refused("given_up") == given_up + 1
    assert s.envelopes == []


async def test_no_hold_refuses_at_once(make_app, tmp_path, sink):  # noqa: F811
    """With delivery.hold_permanent_failures: 0 the refusal is our 550 5.1.1 at once."""
    s = await sink(lmtp=True)
    s.rcpt_replies["ghost@store.test"] = "550 5.1.1 <ghost@store.test> unknown user"
    port = await _daemon(make_app, tmp_path, s, "lmtp", hold_permanent_failures=0.0)
    got = await asyncio.to_thread(_send, port, ["ghost@example.com"])
    assert got == (550, b"5.1.1 Delivery refused by the mail store")


async def test_content_refusal_is_not_held(make_app, tmp_path, sink):  # noqa: F811
    """A refusal of the message itself (5.6.x) is not a configuration fault: our 554 at once."""
    s = await sink()
    s.data_reply = "554 5.6.0 sink.example.test: content rejected"
    port = await _daemon(make_app, tmp_path, s, "smtp")
    got = await asyncio.to_thread(_send, port, ["alice@example.com"])
    assert got == (554, b"5.6.0 Delivery refused by the mail store")


@pytest.mark.parametrize("kind", ["lmtp", "smtp"])
async def test_concurrent_messages_stay_within_the_cap(make_app, tmp_path, sink, kind):  # noqa: F811
    """Twenty messages at once through the daemon with max_connections_per_downstream: 2:
    the downstream never has more than two connections open, and all twenty are delivered."""
    s = await sink(lmtp=kind == "lmtp")

    async def slow(server: SMTP) -> None:
        await asyncio.sleep(0.02)    # transactions overlap, as under load

    s.on_data = slow
    port = await _daemon(make_app, tmp_path, s, kind, max_connections_per_downstream=2)

    async def send(n: int) -> None:
        await aiosmtplib.send(b"Subject: %d\r\n\r\nbody\r\n" % n, sender="c@outside.test",
                              recipients=["alice@example.com"], hostname="127.0.0.1", port=port)
    await asyncio.gather(*(send(n) for n in range(20)))
    assert len(s.envelopes) == 20
    assert s.max_open <= 2

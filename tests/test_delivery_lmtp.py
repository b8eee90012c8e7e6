"""LMTPClient: one reply per recipient (RFC 2033 4.2), against aiosmtpd and a real Dovecot.

Behaviour shared with SMTP (bytes, pipelining, pool, outages, timeouts) is
tested for both clients in test_delivery_smtp.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP

from mailrouter.delivery.lmtp import Downstream, LMTPClient, PartialDeliveryError
from mailrouter.errors import Reply
from tests.support.dovecot import DovecotServer
from tests.test_delivery_smtp import TRICKY, Sink, SinkFactory, sink  # noqa: F401 (fixture)

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

"""SMTPClient (and what it shares with LMTPClient) against a real aiosmtpd sink.

The sink is aiosmtpd's own SMTP/LMTP protocol served with loop.create_server on
127.0.0.1 port 0 in the test's loop; it records every envelope, every chunk it
read from the socket and every connection it accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailrouter.config import load_config
from mailrouter.delivery.lmtp import LMTPClient
from mailrouter.delivery.replies import ours, refuses_mailbox
from mailrouter.delivery.smtp import Downstream, SMTPClient, TransactionClient
from mailrouter.errors import ConfigErrors, TemporaryDeliveryError
from mailrouter.values import Reply

OK_SMTP = "250 2.0.0 OK: queued"


class Sink:
    """A recording aiosmtpd server; `rcpt_replies`/`data_replies` script refusals."""

    def __init__(self, lmtp: bool = False, pipelining: bool = True, smtputf8: bool = True) -> None:
        self.lmtp, self.pipelining, self.smtputf8 = lmtp, pipelining, smtputf8
        self.port = 0
        self.envelopes: list[Envelope] = []
        self.chunks: list[bytes] = []
        self.connections = 0
        self.open = self.max_open = 0                # connections open now / at most at once
        self.transports: list[asyncio.BaseTransport] = []
        self.mail_reply: str | None = None
        self.data_reply: str | None = None           # SMTP: the one reply after DATA
        self.rcpt_replies: dict[str, str] = {}       # refusal at RCPT, by address
        self.data_replies: dict[str, str] = {}       # LMTP: per-recipient reply after DATA
        self.on_data: Callable[[SMTP], Awaitable[None]] | None = None
        self._server: asyncio.Server | None = None

    # aiosmtpd handler hooks

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname   # aiosmtpd leaves this to a handle_EHLO hook
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from, envelope.mail_options = address, list(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        if self.on_data is not None:
            await self.on_data(server)
        if not self.lmtp:
            return self.data_reply or OK_SMTP
        return "\r\n".join(self.data_replies.get(r, f"250 2.0.0 <{r}> Saved")
                           for r in envelope.rcpt_tos)

    # server lifecycle

    def _protocol(self) -> SMTP:
        sink, base = self, (LMTP if self.lmtp else SMTP)

        class Recording(base):  # type: ignore[valid-type,misc]
            line_length_limit = 100_000   # let the long-line test through

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sink.connections += 1
                sink.open += 1
                sink.max_open = max(sink.max_open, sink.open)
                sink.transports.append(transport)
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                sink.open -= 1
                super().connection_lost(exc)

            def data_received(self, data: bytes) -> None:
                sink.chunks.append(data)
                super().data_received(data)

        proto: SMTP = Recording(self, enable_SMTPUTF8=self.smtputf8, decode_data=False,
                                hostname="sink.example.test")
        return proto

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def drop_connections(self) -> None:
        """Close every connection from the server side, as an idle timeout does."""
        for transport in self.transports:
            transport.close()
        self.transports.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            await self._server.wait_closed()
            self._server = None

    def downstream(self, **kw: Any) -> Downstream:
        return Downstream("127.0.0.1", self.port, **{"timeout": 5.0, **kw})


SinkFactory = Callable[..., Awaitable[Sink]]


@pytest.fixture
async def sink() -> AsyncIterator[SinkFactory]:
    """Factory: `await sink(lmtp=False, pipelining=True, smtputf8=True)` -> started Sink."""
    sinks: list[Sink] = []

    async def start(**kw: Any) -> Sink:
        s = Sink(**kw)
        await s.start()
        sinks.append(s)
        return s

    yield start
    for s in sinks:
        await s.stop()


async def until(predicate: Callable[[], bool], tries: int = 1000) -> None:
    """Yield to the loop until the sink has seen what was already sent."""
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never became true")


TRICKY = (b"From: a@example.org\r\nTo: b@example.test\r\nSubject: =?utf-8?q?x?=\r\n\r\n"
          b".starts with a dot\r\n..two dots\r\n.\r\n \r\n"
          b"8-bit: \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 koi8: \xf0\xd2\xc9\r\n"
          + b"x" * 998 + b"\r\n" + b"y" * 5000 + b"\r\n" + b"\r\n.\r\n" + b"last\r\n")

CLIENTS: dict[str, type[TransactionClient]] = {"smtp": SMTPClient, "lmtp": LMTPClient}


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
async def test_bytes_arrive_identical(sink: SinkFactory, kind: str) -> None:
    """Dot lines, 8-bit bytes and long lines reach the sink byte-for-byte."""
    s = await sink(lmtp=kind == "lmtp")
    client = CLIENTS[kind](s.downstream())
    replies = await client.deliver("a@example.org", ["b@example.test"], TRICKY)
    await client.close()
    assert [r.code for r in replies.values()] == [250]
    (env,) = s.envelopes
    assert env.original_content == TRICKY
    assert (env.mail_from, env.rcpt_tos) == ("a@example.org", ["b@example.test"])
    assert "BODY=8BITMIME" in env.mail_options
    assert f"SIZE={len(TRICKY)}" in env.mail_options


async def test_message_without_final_crlf_gets_one(sink: SinkFactory) -> None:
    """A body not ending in CRLF is terminated; the rest stays identical."""
    s = await sink()
    client = SMTPClient(s.downstream())
    await client.deliver("a@example.org", ["b@example.test"], b"Subject: x\r\n\r\n.no end")
    await client.close()
    assert s.envelopes[0].original_content == b"Subject: x\r\n\r\n.no end\r\n"


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
async def test_pipelining_sends_envelope_in_one_write(sink: SinkFactory, kind: str) -> None:
    """With PIPELINING offered, MAIL, every RCPT and DATA arrive in one read."""
    s = await sink(lmtp=kind == "lmtp")
    client = CLIENTS[kind](s.downstream())
    await client.deliver("a@example.org", ["b@example.test", "c@example.test"], b"x\r\n")
    await client.close()
    (chunk,) = [c for c in s.chunks if c.startswith(b"MAIL FROM")]
    assert chunk.count(b"RCPT TO") == 2 and chunk.endswith(b"DATA\r\n")


async def test_without_pipelining_one_command_per_write(sink: SinkFactory) -> None:
    """A server without PIPELINING gets one command per round trip, and the mail."""
    s = await sink(pipelining=False)
    client = SMTPClient(s.downstream())
    replies = await client.deliver("a@example.org", ["b@example.test", "c@example.test"], b"x\r\n")
    await client.close()
    assert all(r.code == 250 for r in replies.values())
    commands = [c for c in s.chunks if c[:4] in (b"MAIL", b"RCPT", b"DATA")]
    assert len(commands) == 4 and all(c.count(b"\r\n") == 1 for c in commands)


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
async def test_pool_reuses_one_connection(sink: SinkFactory, kind: str) -> None:
    """Five messages in a row travel over one connection."""
    s = await sink(lmtp=kind == "lmtp")
    client = CLIENTS[kind](s.downstream())
    for i in range(5):
        replies = await client.deliver("a@example.org", ["b@example.test"], b"n%d\r\n" % i)
        assert replies["b@example.test"].ok
    await client.close()
    assert s.connections == 1 and len(s.envelopes) == 5


async def test_pool_keeps_at_most_pool_size_idle(sink: SinkFactory) -> None:
    """Concurrent deliveries open several connections; only pool_size stay open."""
    s = await sink()
    client = SMTPClient(s.downstream(pool_size=2))
    await asyncio.gather(*(client.deliver("a@example.org", ["b@example.test"], b"x\r\n")
                           for _ in range(6)))
    assert len(s.envelopes) == 6
    await until(lambda: sum(not t.is_closing() for t in s.transports) <= 2)
    await client.close()


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
async def test_stale_pooled_connection_is_replaced(sink: SinkFactory, kind: str) -> None:
    """A connection the server closed while idle is not reported as a failure."""
    s = await sink(lmtp=kind == "lmtp")
    client = CLIENTS[kind](s.downstream())
    await client.deliver("a@example.org", ["b@example.test"], b"one\r\n")
    s.drop_connections()
    replies = await client.deliver("a@example.org", ["b@example.test"], b"two\r\n")
    await client.close()
    assert replies["b@example.test"].ok
    assert s.connections == 2 and [e.original_content for e in s.envelopes] == [b"one\r\n", b"two\r\n"]


async def test_stale_connection_that_says_421_is_replaced(sink: SinkFactory) -> None:
    """An idle connection on which the server already sent 421 is replaced."""
    s = await sink()
    client = SMTPClient(s.downstream())
    await client.deliver("a@example.org", ["b@example.test"], b"one\r\n")
    for transport in s.transports:   # the server times out the idle session but
        transport.write(b"421 4.4.2 sink.example.test idle timeout\r\n")   # keeps it open
    replies = await client.deliver("a@example.org", ["b@example.test"], b"two\r\n")
    await client.close()
    assert replies["b@example.test"].ok and s.connections == 2


async def test_rcpt_refusal_and_data_reply_per_recipient(sink: SinkFactory) -> None:
    """SMTP: a refused RCPT keeps its reply; the one DATA reply goes to the rest."""
    s = await sink()
    s.rcpt_replies["x@example.test"] = "550 5.1.1 <x@example.test> no such user"
    client = SMTPClient(s.downstream())
    replies = await client.deliver("a@example.org", ["b@example.test", "x@example.test",
                                                     "c@example.test"], b"x\r\n")
    await client.close()
    assert list(replies) == ["b@example.test", "x@example.test", "c@example.test"]
    assert replies["x@example.test"] == Reply(550, "5.1.1", "<x@example.test> no such user")
    assert replies["b@example.test"] == replies["c@example.test"] == Reply(250, "2.0.0", "OK: queued")
    assert s.envelopes[0].rcpt_tos == ["b@example.test", "c@example.test"]


@pytest.mark.parametrize("pipelining", [True, False])
async def test_mail_refusal_is_a_reply_and_connection_recovers(
        sink: SinkFactory, pipelining: bool) -> None:
    """451 to MAIL comes back per recipient; the next message (after RSET) goes through."""
    s = await sink(pipelining=pipelining)
    s.mail_reply = "451 4.3.0 try again later"
    client = SMTPClient(s.downstream())
    replies = await client.deliver("a@example.org", ["b@example.test", "c@example.test"], b"x\r\n")
    assert set(replies.values()) == {Reply(451, "4.3.0", "try again later")}
    s.mail_reply = None
    replies = await client.deliver("a@example.org", ["b@example.test"], b"y\r\n")
    await client.close()
    assert replies["b@example.test"].ok and s.connections == 1
    assert [e.original_content for e in s.envelopes] == [b"y\r\n"]


@pytest.mark.parametrize("pipelining", [True, False])
async def test_421_to_mail_is_a_reply_and_connection_dropped(
        sink: SinkFactory, pipelining: bool) -> None:
    """421 to MAIL is returned per recipient; that connection is not reused."""
    s = await sink(pipelining=pipelining)
    s.mail_reply = "421 4.3.2 shutting down"
    client = SMTPClient(s.downstream())
    replies = await client.deliver("a@example.org", ["b@example.test", "c@example.test"], b"x\r\n")
    assert set(replies.values()) == {Reply(421, "4.3.2", "shutting down")}
    s.mail_reply = None
    assert (await client.deliver("a@example.org", ["b@example.test"], b"y\r\n"))["b@example.test"].ok
    await client.close()
    assert s.connections == 2


async def test_data_refusal_is_a_reply(sink: SinkFactory) -> None:
    """A 554 after the final dot is returned for every accepted recipient."""
    s = await sink()
    s.data_reply = "554 5.6.0 content rejected"
    client = SMTPClient(s.downstream())
    replies = await client.deliver("a@example.org", ["b@example.test", "c@example.test"], b"x\r\n")
    await client.close()
    assert set(replies.values()) == {Reply(554, "5.6.0", "content rejected")}


async def test_all_rcpts_refused_then_next_message_works(sink: SinkFactory) -> None:
    """Nobody accepted: the refusals come back, the connection stays usable."""
    s = await sink()
    s.rcpt_replies["x@example.test"] = "550 5.1.1 unknown"
    client = SMTPClient(s.downstream())
    replies = await client.deliver("a@example.org", ["x@example.test"], b"x\r\n")
    assert replies["x@example.test"].code == 550
    replies = await client.deliver("a@example.org", ["b@example.test"], b"y\r\n")
    await client.close()
    assert replies["b@example.test"].ok and len(s.envelopes) == 1


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
async def test_downstream_stopped_then_restarted(sink: SinkFactory, kind: str) -> None:
    """A stopped downstream raises TemporaryDeliveryError; after restart mail flows again."""
    s = await sink(lmtp=kind == "lmtp")
    client = CLIENTS[kind](s.downstream())
    assert (await client.deliver("a@example.org", ["b@example.test"], b"1\r\n"))["b@example.test"].ok
    await s.stop()
    with pytest.raises(TemporaryDeliveryError, match="unavailable"):
        await client.deliver("a@example.org", ["b@example.test"], b"2\r\n")
    await s.start()
    assert (await client.deliver("a@example.org", ["b@example.test"], b"3\r\n"))["b@example.test"].ok
    await client.close()
    assert [e.original_content for e in s.envelopes] == [b"1\r\n", b"3\r\n"]


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
async def test_silent_downstream_times_out(kind: str) -> None:
    """A server that accepts the connection and never answers: TemporaryDeliveryError."""
    accepted: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = CLIENTS[kind](Downstream("127.0.0.1", port, timeout=0.5))
    with pytest.raises(TemporaryDeliveryError, match="timed out"):
        await client.deliver("a@example.org", ["b@example.test"], b"x\r\n")
    await client.close()
    for writer in accepted:
        writer.close()
    server.close()
    await server.wait_closed()
    assert accepted


async def test_reply_after_the_timeout_never_answers_the_next_message(sink: SinkFactory) -> None:
    """A server that stalls after the final dot and answers once our timeout has passed:
    that message is temporary, and its connection is not used again (its late 250 would
    be read as the reply to the next message's MAIL, one reply out of step from then on):
    the next message goes out on a new connection and is answered by its own reply."""
    s = await sink()
    gate = asyncio.Event()

    async def stall(server: SMTP) -> None:
        s.on_data = None   # only once
        await gate.wait()

    s.on_data = stall
    client = SMTPClient(s.downstream(timeout=0.5))
    with pytest.raises(TemporaryDeliveryError, match="timed out"):
        await client.deliver("a@example.org", ["b@example.test"], b"1\r\n")
    gate.set()                                 # the late 250 goes to the old connection
    s.data_reply = "250 2.0.0 OK: second"
    replies = await client.deliver("a@example.org", ["b@example.test"], b"2\r\n")
    assert replies["b@example.test"].ok
    assert s.connections == 2
    assert [e.original_content for e in s.envelopes] == [b"1\r\n", b"2\r\n"]
    await client.close()


async def test_connection_broken_after_data_is_temporary(sink: SinkFactory) -> None:
    """The server drops the connection before answering the final dot."""
    s = await sink()

    async def hang_up(server: SMTP) -> None:
        assert server.transport is not None
        server.transport.abort()
        s.on_data = None   # only once

    s.on_data = hang_up
    client = SMTPClient(s.downstream())
    with pytest.raises(TemporaryDeliveryError, match="lost"):
        await client.deliver("a@example.org", ["b@example.test"], b"x\r\n")
    assert (await client.deliver("a@example.org", ["b@example.test"], b"y\r\n"))["b@example.test"].ok
    await client.close()


async def test_smtputf8_used_when_offered(sink: SinkFactory) -> None:
    """Non-ASCII addresses go out with MAIL ... SMTPUTF8 when the server offers it."""
    s = await sink()
    client = SMTPClient(s.downstream())
    replies = await client.deliver("отправитель@example.org", ["юзер@example.test"],
                                   b"x\r\n", smtputf8=True)
    await client.close()
    assert replies["юзер@example.test"].ok
    assert "SMTPUTF8" in s.envelopes[0].mail_options
    assert s.envelopes[0].rcpt_tos == ["юзер@example.test"]


async def test_smtputf8_not_offered(sink: SinkFactory) -> None:
    """Without SMTPUTF8: 550 5.6.7 for the non-ASCII recipient only; ASCII ones delivered."""
    s = await sink(smtputf8=False)
    client = SMTPClient(s.downstream())
    replies = await client.deliver("a@example.org", ["юзер@example.test", "b@example.test"],
                                   "Subject: Привет\r\n\r\nx\r\n".encode(), smtputf8=True)
    assert replies["юзер@example.test"] == Reply(550, "5.6.7", replies["юзер@example.test"].text)
    assert replies["b@example.test"].ok
    assert "SMTPUTF8" not in s.envelopes[0].mail_options
    replies = await client.deliver("отправитель@example.org", ["b@example.test"], b"x\r\n",
                                   smtputf8=True)
    await client.close()
    assert replies["b@example.test"].code == 550 and len(s.envelopes) == 1


async def test_refuses_bare_lf_and_injected_addresses(sink: SinkFactory) -> None:
    """A lone LF in the data, or CRLF in an address, is refused and never sent."""
    s = await sink()
    client = SMTPClient(s.downstream())
    bare = await client.deliver("a@example.org", ["b@example.test"], b"x\n.\r\nRCPT TO:<e@x>\r\n")
    injected = await client.deliver("a@example.org", ["b@example.test>\r\nRSET"], b"x\r\n")
    await client.close()
    assert bare["b@example.test"].code == 554
    assert injected["b@example.test>\r\nRSET"].code == 501
    assert s.envelopes == []


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
async def test_a_bounce_goes_out_with_the_null_sender(sink: SinkFactory, kind: str) -> None:
    """The intake writes the null reverse-path of a bounce as `<>`: it goes out as
    MAIL FROM:<> and is delivered. It was refused as a bad address (501 5.1.3, nothing sent),
    so every bounce to an LMTP or SMTP mailbox was refused for good."""
    s = await sink(lmtp=kind == "lmtp")
    client = CLIENTS[kind](s.downstream())
    replies = await client.deliver("<>", ["b@example.test"], b"Subject: bounce\r\n\r\nx\r\n")
    await client.close()
    assert replies["b@example.test"].ok
    assert len(s.envelopes) == 1 and b"MAIL FROM:<>" in b"".join(s.chunks)


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
async def test_a_quoted_local_part_with_angle_brackets_is_sent_as_it_is(sink: SinkFactory,
                                                                         kind: str) -> None:
    """`"a>b"@example.org` is a valid sender (RFC 5321 4.1.2: a quoted string holds < and >);
    the intake and Postfix take it. It was refused as an injection (501 5.1.3 after DATA for
    every message from it); now it goes out as written. Outside the quotes they still are."""
    s = await sink(lmtp=kind == "lmtp")
    client = CLIENTS[kind](s.downstream())
    sender = '"a>b <c"@example.org'
    sent = await client.deliver(sender, ["b@example.test"], b"x\r\n")
    unquoted = await client.deliver('a>b@example.org', ["b@example.test"], b"y\r\n")
    broken = await client.deliver('"a"b>"@example.org', ["b@example.test"], b"z\r\n")
    await client.close()
    assert sent["b@example.test"].ok
    assert [e.mail_from for e in s.envelopes] == [sender]
    assert unquoted["b@example.test"].code == broken["b@example.test"].code == 501


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
async def test_connections_capped_per_downstream(sink: SinkFactory, kind: str) -> None:
    """Ten messages at once with max_connections=3: the sink never has more than three
    connections open; the others wait their turn and all ten are delivered."""
    s = await sink(lmtp=kind == "lmtp")
    release = asyncio.Event()

    async def hold(server: SMTP) -> None:
        await release.wait()

    s.on_data = hold
    client = CLIENTS[kind](s.downstream(pool_size=10), max_connections=3)
    sends = [asyncio.create_task(client.deliver("a@example.org", ["b@example.test"], b"%d\r\n" % i))
             for i in range(10)]
    await until(lambda: len(s.envelopes) >= 3)      # transactions parked in DATA
    for _ in range(20):                             # give a fourth connection every chance
        await asyncio.sleep(0.005)
    assert s.open == 3 and s.connections == 3
    release.set()
    replies = await asyncio.gather(*sends)
    await client.close()
    assert all(r["b@example.test"].ok for r in replies) and len(s.envelopes) == 10
    assert s.max_open == 3


@pytest.mark.parametrize("downstream, ours_", [
    # the case: 421 closes *their* channel, not the upstream client's
    ("421 4.3.2 vm Shutting down", "451 4.3.0 Delivery deferred by the mail store, try again later"),
    ("450 4.2.1 <u@store> mailbox busy", "451 4.2.1 Delivery deferred by the mail store, try again later"),
    ("452 4.2.2 <u@store> Mailbox is full", "452 4.2.2 Mailbox full, try again later"),
    ("451 4.3.0 Temporary internal error", "451 4.3.0 Delivery deferred by the mail store, try again later"),
    ("450 too busy", "451 4.3.0 Delivery deferred by the mail store, try again later"),
    ("550 5.1.1 <u@store> User doesn't exist: u", "550 5.1.1 Delivery refused by the mail store"),
    ("552 5.2.2 <u@store> Quota exceeded", "552 5.2.2 Mailbox full"),
    ("552 5.3.4 Message size exceeds fixed limit", "552 5.3.4 Message too big"),
    ("554 5.6.0 content rejected", "554 5.6.0 Delivery refused by the mail store"),
    ("554 5.7.1 <u@store>: Relay access denied", "554 5.7.1 Delivery refused by the mail store"),
    ("554 5.4.6 Mail loop detected", "554 5.4.6 Mail loop detected"),
    ("500 5.5.2 Syntax error", "550 5.3.0 Delivery refused by the mail store"),
    ("550 4.1.1 class digits disagree", "550 5.1.1 Delivery refused by the mail store"),
    ("250 2.0.0 <u@store> vm Saved", "250 2.0.0 Delivered"),
])
def test_downstream_reply_mapping(downstream: str, ours_: str) -> None:
    """Every downstream reply becomes one of ours: class kept, 421 -> 451, the enhanced code
    kept only when it describes the recipient or the message, our text (never their host)."""
    from mailrouter.delivery.smtp import parse_reply
    assert str(ours(parse_reply([downstream.encode() + b"\r\n"]))) == ours_


@pytest.mark.parametrize("downstream, held", [
    ("550 5.1.1 unknown user", True), ("550 5.2.1 mailbox disabled", True),
    ("554 5.7.1 Relay access denied", True), ("550 no such user", True),
    ("554 5.6.0 content rejected", False), ("552 5.3.4 too big", False),
    ("552 5.2.3 too big for the mailbox", False), ("554 5.4.6 loop", False),
    ("451 4.3.0 later", False), ("250 2.0.0 ok", False),
])
def test_which_refusals_are_held(downstream: str, held: bool) -> None:
    """A 5xx refusing the mailbox is held (our config's fault); one about the message is not."""
    from mailrouter.delivery.smtp import parse_reply
    assert refuses_mailbox(parse_reply([downstream.encode() + b"\r\n"])) is held


def test_delivery_config_keys(tmp_path: Any) -> None:
    """delivery.max_connections_per_downstream and hold_permanent_failures (a duration or
    seconds) are read; a bad duration names the key, the line and an example."""
    path = tmp_path / "config.yaml"
    path.write_text("delivery:\n  max_connections_per_downstream: 3\n"
                    "  hold_permanent_failures: 12h\n", encoding="utf-8")
    cfg = load_config(path).delivery
    assert (cfg.max_connections_per_downstream, cfg.hold_permanent_failures) == (3, 43200.0)
    path.write_text("delivery: {hold_permanent_failures: 0}\n", encoding="utf-8")
    assert load_config(path).delivery.hold_permanent_failures == 0.0
    assert load_config(None).delivery.hold_permanent_failures == 86400.0
    path.write_text("delivery:\n  hold_permanent_failures: soon\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    (error,) = info.value.errors
    assert str(error) == (f"{path}:2:28: 'delivery.hold_permanent_failures' must be a duration "
                          "such as 30m, 12h or 1d, not 'soon'; for example "
                          "'hold_permanent_failures: 1d' (0 turns it off)")


# A hostile or broken downstream: raw replies from a script, no SMTP library behind them.

class Scripted:
    """A server that answers each connection from `script`: bytes are written (one byte per
    write when `trickle`), None reads one command line, DATA reads to the final dot. After
    the script it keeps the connection open and silent until stopped."""

    def __init__(self, script: list[Any], trickle: bool = False) -> None:
        self.script, self.trickle = script, trickle
        self.lines: list[bytes] = []
        self.messages: list[bytes] = []
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[Any] | None] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        self._tasks.append(asyncio.current_task())
        for step in self.script:
            if step is None:
                self.lines.append(await reader.readline())
            elif step == "DATA":
                self.messages.append(await reader.readuntil(b"\r\n.\r\n"))
            elif self.trickle:
                for byte in step:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0)
            else:
                writer.write(step)
                await writer.drain()
        await reader.read()                       # silent until the client or stop() closes

    async def start(self) -> Scripted:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(t for t in self._tasks if t is not None), return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def downstream(self, timeout: float = 5.0) -> Downstream:
        return Downstream("127.0.0.1", self.port, timeout=timeout)


GREET, EHLO = b"220 ds.test ESMTP\r\n", b"250-ds.test\r\n250 PIPELINING\r\n"
ACCEPT = b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"      # MAIL, RCPT, DATA pipelined


@pytest.mark.parametrize("script", [
    # DATA answered with 250: the message was never sent, yet its recipient was marked delivered
    [GREET, None, EHLO, None, b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.0.0 ok\r\n"],
    # one stray reply after EHLO: every reply read one out of step, the RCPT's 250 for DATA's
    [GREET, None, EHLO + b"250 2.0.0 stray\r\n", None, ACCEPT, "DATA", b"250 2.0.0 queued\r\n"],
    # a multi-line reply whose lines disagree (RFC 5321 4.2.1): read as its first line's 250
    [GREET, None, EHLO, None, ACCEPT, "DATA", b"250-2.0.0 queued\r\n550 5.7.1 refused\r\n"],
    # 354 after the final dot, or to MAIL: mapped to a 5xx, a bounce for a confused server
    [GREET, None, EHLO, None, ACCEPT, "DATA", b"354 go ahead\r\n"],
    [GREET, None, EHLO, None, b"354 go ahead\r\n250 2.1.5 ok\r\n354 go ahead\r\n"],
    # codes that are no reply (RFC 5321 4.2: 2xx-5xx): a 1xx or 6xx+ was a permanent refusal
    [GREET, None, EHLO, None, ACCEPT, "DATA", b"199 1.0.0 what\r\n"],
    [GREET, None, EHLO, None, ACCEPT, "DATA", b"600 6.0.0 what\r\n"],
], ids=["250_to_data", "stray_reply", "codes_disagree", "354_after_dot", "354_to_mail",
        "code_199", "code_600"])
async def test_a_reply_out_of_step_defers_and_never_delivers(script: list[Any]) -> None:
    """A downstream whose reply cannot answer the command it was read for is out of step
    with us: the copy is deferred (TemporaryDeliveryError), never taken as delivered nor
    refused for good, and that connection is not used again."""
    server = await Scripted(script).start()
    client = SMTPClient(server.downstream(timeout=2.0))
    try:
        with pytest.raises(TemporaryDeliveryError, match="protocol error"):
            await client.deliver("a@example.org", ["b@example.test"], b"x\r\n")
        assert client._idle == []
    finally:
        await client.close()
        await server.stop()


async def test_a_connection_left_in_data_after_a_refused_mail_is_not_reused() -> None:
    """A server that refuses MAIL but still answers our pipelined DATA with 354 is reading
    message text: the copy keeps MAIL's refusal and the connection is dropped, not pooled
    (the next message's RSET was read as text and waited for the timeout)."""
    server = await Scripted([GREET, None, EHLO, None,
                             b"550 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n354 go\r\n"]).start()
    client = SMTPClient(server.downstream())
    try:
        got = await client.deliver("a@example.org", ["b@example.test"], b"x\r\n")
        assert str(got["b@example.test"]) == "550 5.7.1 sender refused"
        assert client._idle == []
    finally:
        await client.close()
        await server.stop()


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
async def test_replies_split_byte_by_byte_are_read_whole(kind: str) -> None:
    """Every reply written one byte per segment, multi-line ones included: read as sent."""
    replies = (b"250 2.0.0 queued\r\n" if kind == "smtp"
               else b"250-2.0.0 <b@example.test>\r\n250 2.0.0 saved\r\n452 4.2.2 full\r\n")
    envelope = ACCEPT if kind == "smtp" else b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n" + ACCEPT[14:]
    server = await Scripted([b"220-ds.test\r\n220 ESMTP\r\n", None, EHLO, None, envelope,
                             "DATA", replies], trickle=True).start()
    client = CLIENTS[kind](server.downstream())
    rcpts = ["b@example.test"] + (["c@example.test"] if kind == "lmtp" else [])
    try:
        got = await client.deliver("a@example.org", rcpts, b"x\r\n")
    finally:
        await client.close()
        await server.stop()
    assert [str(r) for r in got.values()] == (
        ["250 2.0.0 queued"] if kind == "smtp"
        else ["250 2.0.0 <b@example.test> saved", "452 4.2.2 full"])
    assert [m[-len(b"DATA\r\nx\r\n.\r\n"):] for m in server.messages] == [b"DATA\r\nx\r\n.\r\n"]

"""Hostile sessions: random command streams never crash the server, never leak internals,
and never stop it from serving the next client."""

from __future__ import annotations

import asyncio
import re

from hypothesis import HealthCheck, given, settings, strategies as st

from tests.support.wire import Wire

REPLY = re.compile(r"^[2345]\d\d[ -]")
VERBS = [b"EHLO x", b"HELO x", b"MAIL FROM:<a@outside.test>", b"MAIL FROM:<>",
         b"RCPT TO:<sales@example.com>", b"RCPT TO:<nobody@example.com>", b"DATA", b"RSET",
         b"NOOP", b"VRFY x", b"EXPN x", b"HELP", b"AUTH PLAIN AGFiYwBkZWY=", b"STARTTLS",
         b"BDAT 10 LAST", b"MAIL FROM:<a@b> SIZE=abc", b"MAIL FROM:<a@b> BODY=9BIT",
         b"RCPT TO:<\"q u\"@example.com>", b"MAIL FROM:<@route:a@b>", b".", b""]
LINES = st.lists(st.one_of(st.sampled_from(VERBS),
                           st.binary(max_size=200).filter(lambda b: b"\n" not in b)),
                 min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=LINES)
async def test_random_command_streams(make_app_cached, script):
    """Whatever a client sends, each reply is a well-formed SMTP reply without exception text,
    and a well-behaved client is served right after."""
    app = await make_app_cached()
    port = app.bound["smtp"][1]
    await _play(port, script)
    async with Wire(port) as w:
        await w.greet()
        r = await w.transaction("ok@outside.test", ["sales@example.com"], b"Subject: ok\r\n\r\nok\r\n.\r\n")
        assert r[0].startswith("250")


async def _play(port: int, script: list[bytes]) -> None:
    """Send the script in one go (then an end of DATA and QUIT, in case it opened one); every
    reply must be a well-formed reply with no exception text in it."""
    async with Wire(port, timeout=5) as w:
        assert (await w.line()).startswith("220")
        await w.send(b"".join(line + b"\r\n" for line in script))
        await w.send(b"\r\n.\r\nQUIT\r\n")
        seen = await _drain(w)
    for line in seen:
        assert REPLY.match(line), line
        assert "Error: (" not in line and "Traceback" not in line, line


async def _drain(w: Wire) -> list[str]:
    lines: list[str] = []
    try:
        while True:
            async with asyncio.timeout(2):
                raw = await w.reader.readline()
            if not raw:
                return lines
            lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
    except TimeoutError:      # the server waits for more input (e.g. inside DATA): fine
        return lines


LMTP_LINES = st.lists(st.one_of(st.sampled_from([v for v in VERBS if not v.startswith(b"EHLO")]
                                                + [b"LHLO x", b"RCPT TO:<support@example.com>"]),
                                st.binary(max_size=200).filter(lambda b: b"\n" not in b)),
                      min_size=1, max_size=25)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=LMTP_LINES)
async def test_random_lmtp_streams(make_app_cached, script):
    """The same on the LMTP listener, and a well-behaved LMTP client then gets one 250 per
    recipient."""
    app = await make_app_cached()
    port = app.bound["lmtp"][1]
    await _play(port, script)
    async with Wire(port) as w:
        await w.greet("LHLO")
        await w.send(b"MAIL FROM:<ok@outside.test>\r\nRCPT TO:<sales@example.com>\r\n"
                     b"RCPT TO:<support@example.com>\r\nDATA\r\n")
        assert [(await w.line())[:3] for _ in range(4)] == ["250", "250", "250", "354"]
        await w.send(b"Subject: ok\r\n\r\nok\r\n.\r\n")
        assert [(await w.line())[:3] for _ in range(2)] == ["250", "250"]

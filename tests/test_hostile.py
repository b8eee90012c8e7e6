"""Hostile sessions: random command streams never crash the server, never leak internals,
and never stop it from serving the next client; and each hostile pattern a hardened Postfix
3.9 refuses (recipient harvesting, early talkers, unauthorised pipelining, message text before
354, non-ASCII addresses without SMTPUTF8) is refused the same way, on SMTP and on LMTP."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.support.daemon import RULES, maildir_files, write_config
from tests.support.wire import Wire

SYNC = "554 5.5.0 Error: SMTP protocol synchronization"
NEED_SMTPUTF8 = "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
PROTOS = [pytest.param("smtp", "EHLO", id="smtp"), pytest.param("lmtp", "LHLO", id="lmtp")]

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


# -- the hardened-Postfix cases, each on SMTP and on LMTP --------------------------------

@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_recipient_harvesting_is_cut_at_max_errors(make_app, proto, hello):
    """A client that tries address after address gets 550 5.1.1 twenty times (limits.max_errors,
    Postfix's smtpd_hard_error_limit), then 421 4.7.0 and the connection is closed."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        assert (await w.cmd("MAIL FROM:<harvester@outside.test>")).startswith("250")
        replies = [await w.cmd(f"RCPT TO:<guess{n}@example.com>") for n in range(20)]
        assert all(r.startswith("550 5.1.1") for r in replies), replies
        assert await w.line() == "421 4.7.0 mx.test Error: too many errors"
        assert await w.closed()


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_unknown_commands_are_cut_with_a_421(make_app, proto, hello):
    """aiosmtpd hangs up on the fifth unknown command; the client is told so with 421 4.7.0
    (RFC 5321 3.8: a server closes only after a 421), not with a 502 it would take for one
    refused command."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        await w.send(b"".join(b"JUNK%d\r\n" % n for n in range(5)))
        replies = [await w.line() for _ in range(5)]
        assert all(r.startswith("500 5.5.2") for r in replies[:4]), replies
        assert replies[4] == "421 4.7.0 mx.test Error: too many errors"
        assert await w.closed()


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_a_half_closed_session_is_answered_then_closed(make_app, tmp_path, proto, hello):
    """A client that sends its message and QUIT and then shuts its sending side (`nc -N`, a
    script) still reads: what it sent whole is answered (250, 221) and the session closed.
    One that half-closes inside DATA is closed with nothing stored."""
    app = await make_app()
    port = app.bound[proto][1]
    async with Wire(port) as w:
        await _in_data(w, hello)
        await w.send(b"Subject: half-closed\r\n\r\nwhole\r\n.\r\nQUIT\r\n")
        w.writer.write_eof()
        assert (await w.line()).startswith("250 2.0.0")
        assert (await w.line()).startswith("221")
        assert await w.closed()
    async with Wire(port) as w:
        await _in_data(w, hello)
        await w.send(b"Subject: cut\r\n\r\nhalf a mess")
        w.writer.write_eof()
        assert await w.closed()
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    assert await app.registry.count_messages() == 1


async def _in_data(w: Wire, hello: str) -> None:
    """Greeted, one sender and one recipient taken, DATA answered 354."""
    await w.greet(hello)
    await w.cmd("MAIL FROM:<script@outside.test>")
    await w.cmd("RCPT TO:<sales@example.com>")
    assert (await w.cmd("DATA")).startswith("354")


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_a_message_taken_forgives_earlier_errors(make_app, tmp_path, proto, hello):
    """An MTA reusing one connection meets an unknown recipient now and then: a message taken
    resets the count (as in Postfix), so only errors with no mail in between add up."""
    app = await make_app(limits={"max_errors": 5})
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        for n in range(3):
            assert (await w.cmd("MAIL FROM:<mta@outside.test>")).startswith("250")
            for k in range(4):
                assert (await w.cmd(f"RCPT TO:<gone{n}-{k}@example.com>")).startswith("550 5.1.1")
            assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
            assert (await w.cmd("DATA")).startswith("354")
            await w.send(b"Subject: %d\r\n\r\nx\r\n.\r\n" % n)
            assert (await w.line()).startswith("250 2.0.0")
        assert (await w.cmd("NOOP")).startswith("250")
    assert len(maildir_files(tmp_path / "var" / "mail")) == 3


async def test_past_soft_errors_replies_wait_and_no_other_session_does(make_app):
    """Past limits.soft_errors every reply of that session waits limits.error_delay (Postfix's
    smtpd_error_sleep_time), without holding up any other session: a NOOP sent on another
    connection afterwards is answered first. (Ordering only; the delay is generous.)"""
    app = await make_app(limits={"soft_errors": 2, "error_delay": 2})
    port = app.bound["smtp"][1]
    async with Wire(port) as slow, Wire(port) as other:
        await slow.greet()
        await other.greet()
        assert (await slow.cmd("MAIL FROM:<harvester@outside.test>")).startswith("250")
        for n in range(2):
            assert (await slow.cmd(f"RCPT TO:<guess{n}@example.com>")).startswith("550 5.1.1")
        await slow.send(b"NOOP\r\n")
        pending = asyncio.create_task(slow.line())
        assert (await other.cmd("NOOP")).startswith("250")
        assert not pending.done()
        assert (await pending).startswith("250")


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_non_ascii_address_needs_smtputf8(make_app, tmp_path, proto, hello):
    """RFC 6531 3.5: a non-ASCII sender or recipient in a transaction whose MAIL did not say
    SMTPUTF8 gets 553 5.6.7 (Postfix's text); with SMTPUTF8 the same addresses are served."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        assert await w.cmd("MAIL FROM:<счета@пример.рф>") == NEED_SMTPUTF8
        assert (await w.cmd("MAIL FROM:<client@outside.test>")).startswith("250")
        assert await w.cmd("RCPT TO:<счета@example.com>") == NEED_SMTPUTF8
        assert await w.cmd("RCPT TO:<sales@пример.рф>") == NEED_SMTPUTF8
        assert (await w.cmd("RSET")).startswith("250")
        assert (await w.cmd("MAIL FROM:<счета@пример.рф> SMTPUTF8")).startswith("250 2.1.0")
        assert (await w.cmd("RCPT TO:<счета@example.com>")).startswith("550 5.1.1")  # looked up
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send("Subject: счёт\r\n\r\nтекст\r\n.\r\n".encode())
        assert (await w.line()).startswith("250 2.0.0")
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    assert [m["mail_from"] for m in await app.registry.recent(5)] == ["счета@пример.рф"]


async def test_an_invisible_or_full_width_character_in_the_domain_is_no_domain_of_ours(
        make_app, tmp_path):
    """Under SMTPUTF8, RCPT TO:<sales@example.com + U+200B> was taken as sales@ (IDNA 2003's
    nameprep drops U+200B) and delivered, out of sight of every rule naming sales@; the
    full-width `ｅｘａｍｐｌｅ.com` too. Each is 501 5.1.3 naming the character; nothing is
    stored, and the plain address in the same session is served."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<client@outside.test> SMTPUTF8")).startswith("250")
        assert await w.cmd("RCPT TO:<sales@example.com\u200b>") == (
            "501 5.1.3 Bad recipient address syntax: the invisible character U+200B "
            "(ZERO WIDTH SPACE) in the domain")
        assert (await w.cmd("RCPT TO:<sales@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com>")
                ).startswith("501 5.1.3 Bad recipient address syntax: the compatibility character")
        assert await w.cmd("DATA") == "554 5.5.1 Error: no valid recipients"
        assert (await w.cmd("RSET")).startswith("250")
        r = await w.transaction("client@outside.test", ["sales@example.com"],
                                b"Subject: plain\r\n\r\nhi\r\n.\r\n")
        assert r[-1].startswith("250 2.0.0"), r
    assert len(await app.registry.recent(5)) == 1
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\u0085"], ids=["LS", "PS", "NEL"])
async def test_a_unicode_line_separator_in_an_argument_is_refused(make_app, tmp_path, caplog, sep):
    """Under SMTPUTF8 a sender holding LINE SEPARATOR (or PARAGRAPH SEPARATOR, or NEL) was
    taken; Python's email package ends a header line there, so the autoreply to a moved
    address (To: the envelope sender) raised ValueError: a traceback, and 451 4.3.0 on every
    retry. In EHLO or a +detail it reached our Received: and Delivered-To: lines, split there
    by any Python that re-writes the message. Each is 501 5.5.2, as a C0 control is; the
    session goes on and a clean sender's mail to the moved address is answered 250."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        for cmd in (f"EHLO a{sep}X-Injected: yes", f'MAIL FROM:<"a{sep}Bcc: v@evil.test"@x.test> SMTPUTF8',
                    f"MAIL FROM:<b{sep}c@outside.test> SMTPUTF8", f"MAIL FROM:<b@out{sep}side.test> SMTPUTF8"):
            assert await w.cmd(cmd) == "501 5.5.2 Syntax error: control character in command", cmd
        assert (await w.cmd("MAIL FROM:<b@outside.test> SMTPUTF8")).startswith("250")
        assert await w.cmd(f"RCPT TO:<sales+{sep}X-Evil@example.com>") \
            == "501 5.5.2 Syntax error: control character in command"
        assert (await w.cmd("RSET")).startswith("250")
        r = await w.transaction("c@outside.test", ["old-sales@example.com"],
                                b"Subject: moved\r\nMessage-ID: <sep@outside.test>\r\n\r\nhi\r\n.\r\n")
        assert r[-1].startswith("250 2.0.0"), r
    assert not [rec for rec in caplog.records if rec.levelno >= 40], caplog.text
    stored = b"".join(f.read_bytes() for f in maildir_files(tmp_path / "var" / "mail"))
    assert sep.encode() not in stored


NOT_UTF8 = "501 5.5.2 Syntax error: invalid UTF-8 in command"


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_an_address_that_is_not_utf8_is_refused_at_once(make_app, tmp_path, proto, hello):
    """Under SMTPUTF8 a sender or recipient holding bytes that are not UTF-8 (Latin-1 from a
    broken client) is 501 5.5.2 at MAIL or RCPT: such a sender could never be recorded, and
    taking it meant 451 after DATA on every retry. The transaction goes on with good ones."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        await w.send(b"MAIL FROM:<caf\xe9@outside.test> SMTPUTF8\r\n")
        assert await w.line() == NOT_UTF8
        assert (await w.cmd("MAIL FROM:<client@outside.test> SMTPUTF8")).startswith("250")
        await w.send(b"RCPT TO:<sales+\xe9t\xe9@example.com>\r\n")
        assert await w.line() == NOT_UTF8
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: ok\r\n\r\nok\r\n.\r\n")
        assert (await w.line()).startswith("250 2.0.0")
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    assert [m["mail_from"] for m in await app.registry.recent(5)] == ["client@outside.test"]


@pytest.mark.parametrize("verb, shown", [(b"NO\x00OP", "NO?OP"), (b"NO\rOP", "NO?OP"),
                                         (b"X\x1b[31mY", "X?[31MY")], ids=["NUL", "CR", "ESC"])
async def test_an_unknown_verb_is_not_echoed_with_its_control_bytes(make_app, verb, shown):
    """aiosmtpd's 500 quotes an unknown verb as it came: a NUL, an ESC or a bare CR (which
    ends a line for some clients) would be sent back inside the reply text. They read '?'."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        await w.send(verb + b"\r\n")
        assert await w.line() == f'500 5.5.2 Error: command "{shown}" not recognized'
        assert (await w.cmd("NOOP")).startswith("250")


@pytest.mark.parametrize("line", [b"X" * 508, b"VRFY " + "\u00e9 ".encode() * 167],
                         ids=["verb", "vrfy"])
async def test_a_reply_quoting_the_client_fits_in_512_octets(make_app, line):
    """RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF. aiosmtpd's 500
    quotes an unknown verb and its 502 VRFY's argument: a command line at the 512 limit made a
    reply of 552 octets. The quote is cut ("...") where it would not fit, never inside a
    UTF-8 letter."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        await w.send(line + b"\r\n")
        raw = await w.reader.readline()
        assert len(raw) <= 512 and raw.endswith(b'...\r\n'), raw
        assert raw[:9] in (b"500 5.5.2", b"502 5.5.1"), raw
        raw.decode("utf-8")
        assert (await w.cmd("NOOP")).startswith("250")


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_an_empty_recipient_is_a_syntax_error_not_an_unknown_user(make_app, proto, hello):
    """`RCPT TO:<>` names no mailbox: 501 5.1.3, as Postfix answers, not 550 5.1.1 (a user
    unknown, which a harvester would count); the transaction goes on."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        assert (await w.cmd("MAIL FROM:<client@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<>")).startswith("501 5.1.3")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_early_talker_is_refused_and_dropped(make_app, proto, hello):
    """A client that sends EHLO and MAIL without waiting for the greeting (a bot; Postfix 3.9's
    pregreet check) gets 554 5.5.0 and is disconnected; one that waits is greeted and served."""
    app = await make_app(limits={"greet_delay_loopback": 0.5})
    port = app.bound[proto][1]
    async with Wire(port) as w:
        await w.send(f"{hello} bot.test\r\nMAIL FROM:<bot@outside.test>\r\n".encode())
        assert await w.line() == SYNC
        assert await w.closed()
    async with Wire(port) as w:
        assert (await w.greet(hello))[-1].startswith("250")


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_early_talker_is_refused_without_a_greet_delay(make_app, tmp_path, proto, hello):
    """With greet_delay_loopback 0 (the default) an early talker was greeted and served: the
    session looked only at what the loop had read, and it had read nothing yet. A raw socket
    connects and sends its whole session before the server's loop runs at all (the bytes
    wait in the kernel): always 554 5.5.0 and a hang-up, nothing run, no 220 before it."""
    app = await make_app(limits={"greet_delay_loopback": 0})
    port = app.bound[proto][1]
    raw = socket.create_connection(("127.0.0.1", port))     # blocking: the loop does not run
    raw.sendall(f"{hello} bot.test\r\nMAIL FROM:<bot@outside.test>\r\nRCPT TO:<sales@example.com>"
                "\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n".encode())
    reader, writer = await asyncio.open_connection(sock=raw)
    try:
        async with asyncio.timeout(15):
            assert await reader.read() == SYNC.encode() + b"\r\n"     # all it got, then EOF
    finally:
        writer.close()
    assert maildir_files(tmp_path / "var" / "mail") == []
    async with Wire(port) as w:
        assert (await w.greet(hello))[-1].startswith("250")


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_pipelining_before_ehlo_is_refused_and_dropped(make_app, tmp_path, proto, hello):
    """Commands pipelined before PIPELINING was offered (EHLO/LHLO and MAIL... in one write) get
    554 5.5.0 and a hang-up, as Postfix 3.9's smtpd_forbid_unauth_pipelining; none is run."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        assert (await w.line()).startswith("220")
        await w.send(f"{hello} c.test\r\nMAIL FROM:<a@outside.test>\r\n"
                     "RCPT TO:<sales@example.com>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n".encode())
        assert await w.line() == SYNC
        assert await w.closed()
    assert maildir_files(tmp_path / "var" / "mail") == []


async def test_pipelining_after_helo_is_refused_and_dropped(make_app):
    """HELO offers no PIPELINING: MAIL and RCPT in one write after it get 554 5.5.0."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        assert (await w.line()).startswith("220")
        assert (await w.cmd("HELO c.test")).startswith("250")
        await w.send(b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<sales@example.com>\r\n")
        assert await w.line() == SYNC
        assert await w.closed()


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_message_text_before_354_is_refused_and_dropped(make_app, tmp_path, proto, hello):
    """MAIL, RCPT, DATA and the message in one write (RFC 2920 3.1: DATA ends a group; the
    text must wait for 354): MAIL and RCPT are answered, DATA gets 554 5.5.0, the connection
    is closed and nothing is stored or recorded."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        await w.send(b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<sales@example.com>\r\nDATA\r\n"
                     b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert [(await w.line())[:9] for _ in range(2)] == ["250 2.1.0", "250 2.1.5"]
        assert await w.line() == SYNC
        assert await w.closed()
    assert maildir_files(tmp_path / "var" / "mail") == []
    assert await app.registry.count_messages() == 0


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_message_text_before_a_354_held_in_the_tarpit_is_refused(make_app, tmp_path, proto,
                                                                       hello):
    """Past soft_errors our 354 waits error_delay. Text that a client sends after DATA without
    waiting for the 354 then arrives after the check at DATA, and was taken as the message
    once the 354 went out (a bot that does not wait, as the 554 above refuses). Now it gets
    554 5.5.0 and the hang-up. (Text sent before DATA is read is refused either way.)"""
    app = await make_app(limits={"soft_errors": 1, "error_delay": 1.0})
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        assert (await w.cmd("XYZZY")).startswith("500")   # one error
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        await w.send(b"DATA\r\n")
        await asyncio.sleep(0.2)     # DATA read and checked: its 354 waits in the tarpit
        await w.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert await w.line() == SYNC
        assert await w.closed()
    assert maildir_files(tmp_path / "var" / "mail") == []
    assert await app.registry.count_messages() == 0


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_delivered_to_the_recipient_is_554(make_app, tmp_path, proto, hello):
    """A message that already carries Delivered-To: <this recipient> (without our own trace
    header) is refused 554 5.4.6 as Postfix does, not 451: a 4xx kept it in the sender's
    queue for days before a vague bounce."""
    app = await make_app()
    raw = b"Delivered-To: sales@example.com\r\nSubject: back again\r\n\r\nbody\r\n.\r\n"
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        replies = await w.transaction("a@outside.test", ["sales@example.com"], raw,
                                      lmtp=proto == "lmtp")
    assert [r[:9] for r in replies] == ["554 5.4.6"]
    assert maildir_files(tmp_path / "var" / "mail") == []


@pytest.mark.parametrize("proto, hello", PROTOS)
async def test_same_sender_same_bytes_is_one_message_and_a_retry(make_app, tmp_path, proto, hello):
    """The same envelope sender and the same bytes twice: two 250s, one stored copy, one
    registry row that counts the second as a retry (attempts 2), shown by `mailrouter registry`."""
    app = await make_app()
    raw = b"Subject: twice\r\nMessage-ID: <twice@outside.test>\r\n\r\nsame bytes\r\n.\r\n"
    for _ in range(2):
        async with Wire(app.bound[proto][1]) as w:
            await w.greet(hello)
            replies = await w.transaction("a@outside.test", ["sales@example.com"], raw,
                                          lmtp=proto == "lmtp")
            assert replies[0].startswith("250 2.0.0")
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    [row] = await app.registry.recent(5)
    assert row["attempts"] == 2 and row["status"] == "delivered"
    cfg = write_config(tmp_path / "config.yaml", 0, 0, 0, routing=str(RULES / "*.yaml"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailrouter.cli", "registry", "-c", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert "'twice'" in out.decode() and "(received 2 times: retries)" in out.decode()


def test_hostile_limits_in_config_yaml(tmp_path):
    """The delays may be 0 (none); max_errors and soft_errors may not (an error would cut at once)."""
    from mailrouter.config import load_config
    from mailrouter.errors import ConfigErrors
    cfg = tmp_path / "config.yaml"
    cfg.write_text("limits: {greet_delay: 0, greet_delay_loopback: 0.5, error_delay: 0,"
                   " max_errors: 7}\n", encoding="utf-8")
    lim = load_config(cfg).limits
    assert (lim.greet_delay, lim.greet_delay_loopback, lim.error_delay, lim.max_errors) == (0, 0.5, 0, 7)
    cfg.write_text("limits: {max_errors: 0, soft_errors: -1}\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg)
    assert [e.message for e in info.value.errors] == [
        "'max_errors' must be a number >= 1, not 0", "'soft_errors' must be a number >= 1, not -1"]


@pytest.mark.parametrize("greet_delay", [0.0, 0.5], ids=["no-greet-delay", "greet-delay"])
@pytest.mark.parametrize("proto", ["smtp", "lmtp"])
async def test_a_client_gone_before_the_greeting_frees_its_session(make_app, proto, greet_delay):
    """A client that connects and closes at once (a port scanner, a TCP health check) must not
    keep its session: aiosmtpd cancels the session's task on EOF, and a task cancelled before
    it ran, or while the greeting waits, never closed the socket, so it stayed open (CLOSE-WAIT)
    and counted against max_connections until command_timeout (300 s): ten such connects
    greeted every real client 421."""
    app = await make_app(limits={"max_connections": 3, "greet_delay_loopback": greet_delay})
    port = app.bound[proto][1]
    for _ in range(10):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
    for _ in range(100):                 # the server sees them go on its own schedule
        if not app.sessions:
            break
        await asyncio.sleep(0.05)
    assert not app.sessions, f"{len(app.sessions)} sessions kept after their clients left"
    async with Wire(port) as w:
        assert (await w.line()).startswith("220")


@pytest.mark.parametrize("proto", ["smtp", "lmtp"])
async def test_one_address_cannot_hold_every_session(make_app, proto, caplog):
    """Past limits.max_connections_per_client (for the loopback peers of a test,
    max_connections_per_loopback_client) open sessions from one address, the next is
    greeted 421 4.7.0 and closed, and the log names the setting; a session freed makes
    room again. Before, one client could take all max_connections and lock everyone out."""
    app = await make_app(limits={"max_connections_per_loopback_client": 2})
    port = app.bound[proto][1]
    async with Wire(port) as a, Wire(port) as b:
        assert (await a.line()).startswith("220") and (await b.line()).startswith("220")
        async with Wire(port) as c:
            assert await c.line() == ("421 4.7.0 Too many connections from your address, "
                                      "try again later")
            assert await c.closed()
        assert "event=client_connection_limit peer=127.0.0.1 limit=2 " \
               "setting=limits.max_connections_per_loopback_client" in caplog.text
        assert (await a.cmd("QUIT")).startswith("221")
        for _ in range(100):             # the server sees it go on its own schedule
            if len(app.sessions) < 2:
                break
            await asyncio.sleep(0.05)
        async with Wire(port) as d:
            assert (await d.line()).startswith("220")
        assert (await b.cmd("NOOP")).startswith("250")


async def test_the_local_mta_is_not_limited_per_address_by_default(make_app):
    """By default a loopback peer (the MTA in front) may open as many sessions as it likes
    up to max_connections, as Postfix exempts its own networks; others 50 per worker."""
    app = await make_app()
    assert (app.config.limits.max_connections_per_client,
            app.config.limits.max_connections_per_loopback_client) == (50, 0)
    port = app.bound["smtp"][1]
    wires = [Wire(port) for _ in range(60)]
    try:
        for w in wires:
            await w.__aenter__()
        assert {(await w.line())[:3] for w in wires} == {"220"}
    finally:
        for w in wires:
            await w.__aexit__(None, None, None)


def test_connect_and_close_at_once_does_not_fill_the_daemon(daemon_process):
    """The same on the daemon as `mailrouter run` starts it (uvloop when installed): ten
    connect-and-close clients, then a real one is greeted 220, not 421 4.7.0."""
    d = daemon_process(extra="workers: 1\nlimits: {max_connections: 3}\n")
    for _ in range(10):
        socket.create_connection(("127.0.0.1", d.smtp), timeout=10).close()
    greeting = b""
    for _ in range(100):                 # the daemon sees them go on its own schedule
        with socket.create_connection(("127.0.0.1", d.smtp), timeout=10) as s:
            greeting = s.recv(100)
        if greeting.startswith(b"220"):
            break
        time.sleep(0.05)
    assert greeting.startswith(b"220"), greeting


async def test_a_subject_of_many_encoded_words_is_decoded_in_time(make_app, tmp_path):
    """A Subject of 300,000 one-letter RFC 2047 words (4 MB, under the size limit) took the
    stdlib's decode_header quadratic time (list.pop(0) per word), and joining them one by
    one more: minutes of one worker's CPU, past process_timeout, so 451 on every retry of
    the MTA, each retry burning the same minutes. It is decoded word by word, and stored."""
    n = 300_000
    app = await make_app(limits={"process_timeout": 60})
    subject = b" ".join([b"=?utf-8?q?a?="] * n)
    async with Wire(app.bound["smtp"][1], timeout=120) as w:   # process_timeout decides
        await w.greet()
        r = await w.transaction("client@outside.test", ["sales@example.com"],
                                b"Subject: " + subject + b"\r\n\r\nhi\r\n.\r\n")
    assert r[-1].startswith("250 2.0.0"), r
    [row] = await app.registry.recent(1)
    assert row["subject"].startswith("a" * 100) and set(row["subject"]) == {"a"}
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


@pytest.mark.parametrize("header", ["Delivered-To", "From", "To", "Cc", "Reply-To"])
async def test_an_address_header_of_nested_parentheses_is_taken(make_app, tmp_path, header):
    """The stdlib's address parser recurses once per nested '(': `Delivered-To:` and 1,200
    of them raised RecursionError out of the loop check, answered 451 on every retry of
    the MTA (the message could never be delivered). It is read as an address that names
    nothing, and the message is stored."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        r = await w.transaction("client@outside.test", ["sales@example.com"],
                                f"Subject: q\r\n{header}: ".encode() + b"(" * 1200
                                + b"x@outside.test\r\n\r\nhi\r\n.\r\n")
    assert r[-1].startswith("250 2.0.0"), r
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


async def test_chains_of_forwarded_messages_are_read_in_time(make_app, tmp_path):
    """20 chains of 900 forwarded messages each inside the next (message/rfc822, 1 MB):
    each forwarded message's size was counted by writing it again with all inside it, so
    each chain cost the square of its length (and every level past Python's recursion
    limit failed only at its bottom): minutes, past process_timeout, 451 on every retry.
    Sizes are counted five levels deep; the message is taken and every forward listed."""
    app = await make_app(limits={"process_timeout": 60})
    chain = (b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\nMIME-Version: 1.0\r\n" * 900
             + b"Content-Type: text/plain\r\n\r\nhello\r\n")
    raw = (b"Subject: forwards\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
           + b"".join(b"--B\r\n" + chain for _ in range(20)) + b"--B--\r\n.\r\n")
    async with Wire(app.bound["smtp"][1], timeout=120) as w:   # process_timeout decides
        await w.greet()
        r = await w.transaction("client@outside.test", ["sales@example.com"], raw)
    assert r[-1].startswith("250 2.0.0"), r
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


def test_a_forwarded_message_five_deep_has_its_size():
    """Inside five forwards a forwarded message still has the size of its bytes; the one
    inside it (six deep) is listed with size 0."""
    from mailrouter.message import MessageView
    raw, wrapped = b"Subject: last\r\n\r\nhello\r\n", {}
    for n in range(7):
        raw = (f"Subject: fwd{n}\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
               .encode() + raw)
        wrapped[f"fwd{n}.eml"] = len(raw)
    sizes = {a.filename: a.size for a in MessageView(raw).attachments}
    # fwd6 is the message itself (a message/rfc822 of its own), fwd5 the part it is
    assert sizes == {f"fwd{n}.eml": wrapped[f"fwd{n}.eml"] for n in range(5)} | {"last.eml": 0}

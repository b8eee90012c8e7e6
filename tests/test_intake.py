"""SMTP and LMTP intake against the real daemon on loopback, with real clients."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import smtplib

import aiosmtplib
import pytest

from mailrouter.values import (
    REPLY_CONTROL_CHAR,
    REPLY_DATA_TOO_SLOW,
    REPLY_DELIVERED,
    REPLY_INTERNAL_ERROR,
)
from tests.support.daemon import maildir_files
from tests.support.wire import Wire

pytestmark = pytest.mark.asyncio
TIMED_OUT = "421 4.4.2 mx.test Error: timeout exceeded"


def mail(subject: str = "Hello", body: str = "Just a test.", frm: str = "client@outside.test",
         to: str = "sales@example.com", extra: str = "") -> bytes:
    text = (f"From: Client <{frm}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((subject, body)))}@outside.test>\r\n{extra}\r\n{body}\r\n")
    return text.encode("utf-8")


def data(raw: bytes) -> bytes:
    """Dot-stuff and terminate, as a client must."""
    lines = raw.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines) + b".\r\n" \
        if raw.endswith(b"\r\n") else raw + b"\r\n.\r\n"


async def test_ehlo_advertises_extensions(make_app):
    """EHLO offers PIPELINING, ENHANCEDSTATUSCODES, 8BITMIME, SMTPUTF8 and SIZE with the limit."""
    app = await make_app(limits={"max_message_size": 123456})
    async with Wire(app.bound["smtp"][1]) as w:
        lines = await w.greet()
    text = "\n".join(lines)
    for ext in ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8", "SIZE 123456"):
        assert ext in text


async def test_smtplib_delivers_to_maildir_and_registry(make_app, tmp_path):
    """A message to sales@ lands in the sales Maildir and in the registry, with 250."""
    app = await make_app()
    raw = mail("Quote request")

    def send() -> tuple[int, bytes]:      # smtplib blocks: run it off the daemon's loop
        with smtplib.SMTP("127.0.0.1", app.bound["smtp"][1]) as s:
            s.ehlo()
            s.mail("client@outside.test")
            s.rcpt("sales@example.com")
            return s.data(raw)
    code, text = await asyncio.to_thread(send)
    assert code == 250 and text.startswith(b"2.0.0")
    files = maildir_files(tmp_path / "var" / "mail" / "sales")
    assert len(files) == 1
    stored = files[0].read_bytes()
    assert stored.endswith(raw)                      # raw bytes kept, trace headers prepended
    assert stored.startswith(b"Received: from ")
    assert b"\r\nDelivered-To: sales@example.com\r\n" in stored[: len(stored) - len(raw)]
    assert await app.registry.count_messages() == 1


async def test_folder_target_lands_in_maildirpp_folder(make_app, tmp_path):
    """product-a@ goes to the support mailbox, folder PRODUCT-A (Maildir++ .PRODUCT-A)."""
    app = await make_app()
    await aiosmtplib.send(mail(to="product-a@example.com"), hostname="127.0.0.1",
                          port=app.bound["smtp"][1], sender="c@outside.test",
                          recipients=["product-a@example.com"])
    files = maildir_files(tmp_path / "var" / "mail" / "support" / ".PRODUCT-A")
    assert len(files) == 1


async def test_swaks_delivers(make_app, tmp_path):
    """swaks (the Debian package) sends through the SMTP listener and gets 250."""
    app = await make_app()
    proc = await asyncio.create_subprocess_exec(
        "swaks", "-s", "127.0.0.1", "-p", str(app.bound["smtp"][1]), "-f", "a@outside.test",
        "-t", "support@example.com", "--h-Subject", "swaks", stdout=asyncio.subprocess.PIPE)
    out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
    assert proc.returncode == 0, out
    assert f"<-  {REPLY_DELIVERED}" in out
    assert len(maildir_files(tmp_path / "var" / "mail" / "support")) == 1


async def test_unknown_recipient_and_domain_refused(make_app):
    """RCPT for an unknown address or domain: 550 5.1.1 (never an open relay)."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250 2.1.0")
        assert (await w.cmd("RCPT TO:<nobody@example.com>")).startswith("550 5.1.1")
        assert (await w.cmd("RCPT TO:<victim@elsewhere.test>")).startswith("550 5.1.1")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250 2.1.5")


async def test_relay_tricks_refused_and_bare_postmaster_accepted(make_app, tmp_path):
    """The percent hack and a second @ are refused; <Postmaster> (RFC 5321 4.5.1) lands."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250 2.1.0")
        assert (await w.cmd("RCPT TO:<sales%victim.test@example.com>")).startswith("550 5.1.1")
        assert (await w.cmd("RCPT TO:<sales@example.com@victim.test>"))[:3] in ("550", "553")
        assert (await w.cmd("RCPT TO:<Postmaster>")).startswith("250 2.1.5")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: to the postmaster\r\n\r\nhi\r\n.\r\n")
        assert (await w.reply())[-1].startswith("250 2.0.0")
    got = [p for p in maildir_files(tmp_path / "var" / "mail" / "postmaster")
           if b"to the postmaster" in p.read_bytes()]
    assert len(got) == 1


async def test_help_lists_the_commands(make_app):
    """HELP names the commands (the guard around each command keeps its @syntax)."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        listing = await w.cmd("HELP")
        assert listing.startswith("214 2.0.0 ") and "MAIL" in listing and "RCPT" in listing
        # our own EHLO, HELO and DATA too (they keep aiosmtpd's @syntax); not AUTH or LHLO
        assert {"DATA", "EHLO", "HELO"} <= set(listing.split()) and "AUTH" not in listing
        assert "LHLO" not in listing
        assert (await w.cmd("HELP MAIL")).startswith("214 2.0.0 Syntax: MAIL FROM: <address>")
        assert await w.cmd("HELP DATA") == "214 2.0.0 Syntax: DATA"
        assert await w.cmd("HELP EHLO") == "214 2.0.0 Syntax: EHLO hostname"
        # RFC 5321 4.2.1: 504 for a topic that is not a command, and the topic never echoed
        assert await w.cmd("HELP <script>") == "504 5.5.4 No help for that topic; HELP alone lists the commands"
        # AUTH is not offered, and says so plainly (not aiosmtpd's 538 "encryption required")
        assert (await w.cmd("AUTH PLAIN AGFAAGI=")).startswith("502 5.5.1")
        # no TLS here at all: not aiosmtpd's 454 "not available", which a client reads as
        # "try again later" (Postfix without TLS says 502 too)
        assert "STARTTLS" not in await w.cmd("EHLO client.test")
        assert await w.cmd("STARTTLS") == '502 5.5.1 Error: command "STARTTLS" not implemented'
        assert (await w.cmd("NOOP")).startswith("250")
    async with Wire(app.bound["lmtp"][1]) as w:       # LMTP: LHLO and DATA, never EHLO/HELO
        await w.greet("LHLO")
        listing = set((await w.cmd("HELP")).split())
        assert {"DATA", "LHLO", "MAIL"} <= listing and not {"EHLO", "HELO"} & listing


@pytest.mark.parametrize("cmd", [b"EHLO evil\rX-Injected: yes", b"HELO a\x00b",
                                 b"MAIL FROM:<a\rb@outside.test>",
                                 b"RCPT TO:<sales+\rX-Injected: yes@example.com>",
                                 b"RCPT TO:<sales+x\x00y@example.com>", b"RCPT TO:<sales+\x01@example.com>",
                                 b"VRFY a\x7f"],
                         ids=["EHLO-CR", "HELO-NUL", "MAIL-CR", "RCPT-CR", "RCPT-NUL", "RCPT-SOH",
                              "VRFY-DEL"])
async def test_control_characters_in_commands_are_refused(make_app, tmp_path, cmd):
    """A control character in a command's argument is 501 5.5.2: a bare CR in EHLO or in a
    +detail would otherwise be written into our Received:/Delivered-To: lines (header
    injection) and into downstream commands. The session goes on; a clean mail still lands
    without any injected header."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        if cmd.startswith(b"RCPT"):
            assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250")
        await w.send(cmd + b"\r\n")
        assert await w.line() == str(REPLY_CONTROL_CHAR)
        assert (await w.cmd("RSET")).startswith("250")
        r = await w.transaction("a@outside.test", ["sales@example.com"], data(mail("clean")))
        assert r[-1].startswith("250 2.0.0")
    stored = [f.read_bytes() for f in maildir_files(tmp_path / "var" / "mail")]
    assert len(stored) == 1 and b"X-Injected" not in stored[0] and b"\x00" not in stored[0]
    head = stored[0].split(b"\r\n\r\n", 1)[0]
    assert head.count(b"\r") == head.count(b"\r\n")          # no bare CR in our headers


async def test_too_many_recipients(make_app):
    """The recipient past max_recipients gets 452 4.5.3; the earlier ones stay accepted."""
    app = await make_app(limits={"max_recipients": 2})
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        await w.cmd("MAIL FROM:<a@outside.test>")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("RCPT TO:<support@example.com>")).startswith("250")
        assert (await w.cmd("RCPT TO:<invoices@example.com>")).startswith("452 4.5.3")


async def test_size_declared_too_big(make_app):
    """MAIL FROM with SIZE over the limit: 552 5.3.4."""
    app = await make_app(limits={"max_message_size": 1000})
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<a@outside.test> SIZE=5000")).startswith("552 5.3.4")


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_size_that_is_not_ascii_digits_is_a_syntax_error(make_app, tmp_path, caplog,
                                                                  proto, hello):
    """RFC 1870: SIZE is ASCII digits. aiosmtpd checked it with str.isdigit(), which takes
    '²', '①' and '1¹', and then int() refused them: each such MAIL was a crash, 451 4.3.0 (try
    later, for a command that can never succeed) and a traceback at ERROR; the Arabic-Indic
    '١' was taken as SIZE=1. All are 501 5.5.4, and the session goes on."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        for size in ("\u00b2", "\u2460", "1\u00b9", "\u0661"):
            reply = await w.cmd(f"MAIL FROM:<a@outside.test> SIZE={size}")
            assert reply.startswith("501 5.5.4 Syntax: MAIL FROM:"), (size, reply)
        assert (await w.cmd("MAIL FROM:<a@outside.test> SIZE=100")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(data(mail("size")))
        assert (await w.line()).startswith("250")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_parameter_given_twice_is_a_syntax_error(make_app, tmp_path, proto, hello):
    """MAIL FROM:<a@b> SIZE=1 SIZE=2 (or BODY= twice, any case) was taken, aiosmtpd keeping
    the last value; now 501 5.5.4 naming the parameter, on MAIL and on RCPT, and the session
    goes on: the same transaction with each parameter once is delivered."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        for args in ("SIZE=1 SIZE=2", "BODY=7BIT body=8BITMIME", "SMTPUTF8 SIZE=10 SMTPUTF8"):
            name = args.split()[-1].partition("=")[0].upper()
            assert await w.cmd(f"MAIL FROM:<a@outside.test> {args}") == (
                f"501 5.5.4 Syntax error in parameters: {name} given twice")
        assert (await w.cmd("MAIL FROM:<a@outside.test> SIZE=100 BODY=8BITMIME")).startswith("250")
        assert await w.cmd("RCPT TO:<sales@example.com> NOTIFY=NEVER NOTIFY=SUCCESS") == (
            "501 5.5.4 Syntax error in parameters: NOTIFY given twice")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(data(mail("twice")))
        assert (await w.line()).startswith("250")
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_body_type_not_implemented_is_555(make_app, tmp_path, proto, hello):
    """MAIL FROM:<a@b> BODY=BINARYMIME got aiosmtpd's 501 5.5.4 (a syntax error); it is a
    parameter value we do not implement (BINARYMIME needs CHUNKING, RFC 3030 3, not
    offered): 555 5.5.4 as RFC 5321 4.1.1.11 says and Postfix answers, naming it; the
    session goes on and 8BITMIME is still taken."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        for body in ("BINARYMIME", "binarymime", "FOO"):
            assert await w.cmd(f"MAIL FROM:<a@outside.test> BODY={body}") == (
                f"555 5.5.4 Unsupported option: BODY={body.upper()}; 7BIT or 8BITMIME")
        assert (await w.cmd("MAIL FROM:<a@outside.test> BODY=8BITMIME")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(data(mail("body")))
        assert (await w.line()).startswith("250")
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


async def test_oversize_data_refused(make_app, tmp_path):
    """A message larger than the limit is read to the end and refused 552 5.3.4; nothing stored."""
    app = await make_app(limits={"max_message_size": 1000})
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        replies = await w.transaction("a@outside.test", ["sales@example.com"],
                                      data(mail(body="x" * 70 + "\r\n" * 0 + ("y" * 70 + "\r\n") * 30)))
        assert replies[0].startswith("552 5.3.4")
        assert (await w.cmd("NOOP")).startswith("250")     # session still usable
    assert maildir_files(tmp_path / "var" / "mail") == []


async def test_size_limit_counts_the_message_not_its_dot_stuffing(make_app, tmp_path):
    """RFC 1870: the size is the message's, without the doubled dots. A message under the
    limit whose stuffed lines carry it over (a quoted text of '.' lines) is taken; one byte
    more than the limit is not, stuffed or not."""
    app = await make_app(limits={"max_message_size": 1000})
    head = mail(body="")
    raw = head + b".\r\n" * ((1000 - len(head) - 10) // 3)
    raw += b"x" * (1000 - len(raw) - 2) + b"\r\n"
    assert len(raw) == 1000 and len(data(raw)) > 1200
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        replies = await w.transaction("a@outside.test", ["sales@example.com"], data(raw))
        assert replies[0].startswith("250 2.0.0"), replies
        over = raw[:-2] + b"x\r\n"
        replies = await w.transaction("a@outside.test", ["sales@example.com"], data(over))
        assert replies[0].startswith("552 5.3.4"), replies
    files = maildir_files(tmp_path / "var" / "mail")
    assert len(files) == 1 and files[0].read_bytes().endswith(raw)


async def test_data_held_at_once_is_bounded(make_app, tmp_path):
    """With 200 KB of DATA memory per process (two per byte): while one session holds 60 KB mid-DATA, a
    second 60 KB message is read to its end and answered 452 4.3.1 (SMTP) or one 452 per
    recipient (LMTP); once the first is done the room is back and the retry is delivered."""
    app = await make_app(limits={"max_data_in_flight": 200_000})   # 2 bytes per DATA byte
    body = ("z" * 78 + "\r\n") * 750                       # 60,000 bytes
    first = Wire(app.bound["smtp"][1])
    async with first:
        await first.greet()
        await first.cmd("MAIL FROM:<a@outside.test>")
        await first.cmd("RCPT TO:<sales@example.com>")
        assert (await first.cmd("DATA")).startswith("354")
        await first.send(b"Subject: first\r\n\r\n" + body.encode())   # no end yet
        await asyncio.sleep(0.5)
        async with Wire(app.bound["smtp"][1]) as w:
            await w.greet()
            r = await w.transaction("b@outside.test", ["sales@example.com"],
                                    data(mail("second", body=body)))
            assert r[-1].startswith("452 4.3.1")
            assert (await w.cmd("NOOP")).startswith("250")        # session still usable
        async with Wire(app.bound["lmtp"][1]) as w:
            await w.greet("LHLO")
            await w.send(b"MAIL FROM:<c@outside.test>\r\nRCPT TO:<sales@example.com>\r\n"
                         b"RCPT TO:<support@example.com>\r\nDATA\r\n")
            assert [(await w.line())[:3] for _ in range(4)] == ["250", "250", "250", "354"]
            await w.send(data(mail("third", body=body)))
            assert [(await w.line())[:9] for _ in range(2)] == ["452 4.3.1"] * 2
        await first.send(b".\r\n")
        assert (await first.line()).startswith("250 2.0.0")
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        r = await w.transaction("b@outside.test", ["sales@example.com"], data(mail("second", body=body)))
        assert r[-1].startswith("250 2.0.0")
    assert app.data_budget.used == 0
    assert len(maildir_files(tmp_path / "var" / "mail")) == 2


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_message_the_data_memory_can_never_hold_is_552_not_452(make_app, tmp_path,
                                                                      proto, hello):
    """limits.max_data_in_flight lowered below twice max_message_size (docs/install.md: lower
    it before MemoryMax): a message under the size limit but larger than the whole DATA memory
    could ever hold was answered 452 4.3.1 "try again later" with no other session running,
    and every retry the same until the sender's queue gave up days later. It is 552 5.3.4 (one
    per recipient for LMTP), as a message past max_message_size; one that fits still goes."""
    app = await make_app(limits={"max_message_size": 100_000, "max_data_in_flight": 100_000})
    body = ("z" * 78 + "\r\n") * 750                       # 60,000 bytes: 120,000 in memory
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        await w.send(b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<sales@example.com>\r\n"
                     b"RCPT TO:<support@example.com>\r\nDATA\r\n")
        assert [(await w.line())[:3] for _ in range(4)] == ["250", "250", "250", "354"]
        await w.send(data(mail("never fits", body=body)))
        n = 2 if proto == "lmtp" else 1
        assert [(await w.line())[:9] for _ in range(n)] == ["552 5.3.4"] * n
        r = await w.transaction("a@outside.test", ["sales@example.com"],
                                data(mail("fits", body="small\r\n")), lmtp=proto == "lmtp")
        assert r[-1].startswith("250 2.0.0")
    assert app.data_budget.used == 0
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


@pytest.mark.parametrize("bad", [b"bare\nLF", b"bare\rCR", b"nul\0byte"], ids=["LF", "CR", "NUL"])
async def test_bare_line_endings_and_nul_refused(make_app, tmp_path, bad):
    """Bare LF, bare CR and NUL in content: 550 5.6.0 after the final dot; nothing stored."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        body = b"Subject: x\r\n\r\n" + bad + b"\r\n.\r\n"
        assert (await w.transaction("a@outside.test", ["sales@example.com"], body))[0] \
            .startswith("550 5.6.0")
    assert maildir_files(tmp_path / "var" / "mail") == []


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r",
                                      b"\r\n.\r\r\n"],
                         ids=["LF.LF", "CR.CR", "LF.CRLF", "CRLF.LF", "CRLF.CR", "CRLF.CRCRLF"])
async def test_smtp_smuggling_is_not_end_of_data(make_app, tmp_path, fake_end):
    """Only CRLF.CRLF ends DATA: a smuggled second transaction is never executed."""
    app = await make_app()
    smuggled = (b"Subject: outer\r\n\r\nhello" + fake_end +
                b"MAIL FROM:<evil@outside.test>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        replies = await w.transaction("a@outside.test", ["sales@example.com"], smuggled)
        assert replies[0].startswith("550 5.6.0")
        assert (await w.cmd("NOOP")).startswith("250")      # no further replies were queued
    assert maildir_files(tmp_path / "var" / "mail") == []


async def test_pipelining_in_one_write(make_app, tmp_path):
    """MAIL, RCPTs and DATA sent in one write get their replies in order."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        await w.send(b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<sales@example.com>\r\n"
                     b"RCPT TO:<nobody@example.com>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n")
        got = [await w.line() for _ in range(5)]
        assert [g[:9] for g in got] == ["250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5", "354 End d"]
        await w.send(data(mail()) + b"QUIT\r\n")
        assert (await w.line()).startswith("250 2.0.0")
        assert (await w.line()).startswith("221 2.0.0")
    assert len(maildir_files(tmp_path / "var" / "mail")) == 2


async def test_every_reply_has_enhanced_code(make_app):
    """aiosmtpd's own replies (bad syntax, nested MAIL, no RCPT) carry enhanced codes too."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        assert (await w.cmd("DATA")).startswith("503 5.5.1")
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250 2.1.0")
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("503 5.5.1")
        assert (await w.cmd("RCPT TO:")).startswith("501 5.5.4")
        assert (await w.cmd("BOGUS")).startswith("500 5.5.2")
        assert (await w.cmd("RSET")).startswith("250 2.0.0")


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("smtp", "HELO"), ("lmtp", "LHLO")])
async def test_a_greeting_without_a_name_is_501_with_its_code_and_verb(make_app, proto, hello):
    """EHLO, HELO or LHLO with no name: 501 5.5.4 naming the verb sent, before and after a
    greeting that offered ENHANCEDSTATUSCODES (RFC 2034: every reply carries a code). It was
    aiosmtpd's "501 Syntax: EHLO hostname", no code (the greeting's reply lines skip
    the code filler), and LMTP's LHLO was told the syntax of EHLO."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        assert (await w.line()).startswith("220")
        assert await w.cmd(hello) == f"501 5.5.4 Syntax: {hello} hostname"
        assert (await w.cmd(f"{hello} client.test")).startswith("250 ")
        assert await w.cmd(f"{hello} ") == f"501 5.5.4 Syntax: {hello} hostname"


async def test_lmtp_one_reply_per_recipient_in_order(make_app, tmp_path):
    """LMTP: after DATA one reply per accepted recipient, in RCPT order."""
    app = await make_app()
    async with Wire(app.bound["lmtp"][1]) as w:
        lines = await w.greet("LHLO")
        assert any("PIPELINING" in l for l in lines) and any("ENHANCEDSTATUSCODES" in l for l in lines)
        replies = await w.transaction("a@outside.test",
                                      ["sales@example.com", "nobody@example.com", "support@example.com"],
                                      data(mail()), lmtp=True)
        assert len(replies) == 2 and all(r.startswith("250 2.0.0") for r in replies)
    assert len(maildir_files(tmp_path / "var" / "mail")) == 2


async def test_lmtp_refuses_ehlo_and_helo(make_app):
    """LMTP speaks LHLO only (RFC 2033 4.1), and a command before it is told to send LHLO
    (not aiosmtpd's 'send HELO first', which would get the 500 above)."""
    app = await make_app()
    async with Wire(app.bound["lmtp"][1]) as w:
        assert (await w.line()).startswith("220")
        assert (await w.cmd("EHLO x")).startswith("500 5.5.1")
        assert (await w.cmd("HELO x")).startswith("500 5.5.1")
        for cmd in ("MAIL FROM:<a@outside.test>", "RCPT TO:<sales@example.com>", "DATA"):
            assert await w.cmd(cmd) == "503 5.5.1 Error: send LHLO first"
    async with Wire(app.bound["smtp"][1]) as w:        # SMTP still asks for HELO
        assert (await w.line()).startswith("220")
        assert await w.cmd("MAIL FROM:<a@outside.test>") == "503 5.5.1 Error: send HELO first"


async def test_lmtp_errors_are_per_recipient(make_app):
    """LMTP oversize and bad bytes: one refusal per accepted recipient, not one in total."""
    app = await make_app(limits={"max_message_size": 500})
    async with Wire(app.bound["lmtp"][1]) as w:
        await w.greet("LHLO")
        replies = await w.transaction("a@outside.test", ["sales@example.com", "support@example.com"],
                                      data(mail(body="z" * 900)), lmtp=True)
        assert [r[:9] for r in replies] == ["552 5.3.4", "552 5.3.4"]
        replies = await w.transaction("a@outside.test", ["sales@example.com", "support@example.com"],
                                      b"Subject: x\r\n\r\nbare\nLF\r\n.\r\n", lmtp=True)
        assert [r[:9] for r in replies] == ["550 5.6.0", "550 5.6.0"]
        assert (await w.cmd("NOOP")).startswith("250")


async def test_internal_error_is_451_without_internals(make_app, monkeypatch):
    """A crash inside routing answers 451 4.3.0, never aiosmtpd's 500 with the exception text."""
    app = await make_app()

    def boom(*a, **k):
        raise RuntimeError("secret internal detail")
    monkeypatch.setattr(type(app.snapshot()), "decide", boom)
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        reply = (await w.transaction("a@outside.test", ["sales@example.com"], data(mail())))[0]
    assert reply == str(REPLY_INTERNAL_ERROR) and "secret" not in reply
    async with Wire(app.bound["lmtp"][1]) as w:
        await w.greet("LHLO")
        replies = await w.transaction("a@outside.test", ["sales@example.com", "support@example.com"],
                                      data(mail()), lmtp=True)
    assert replies == [str(REPLY_INTERNAL_ERROR)] * 2


async def test_retry_is_not_delivered_twice(make_app, tmp_path):
    """The same message sent twice (an MTA retry) gives one copy and one registry row."""
    app = await make_app()
    raw = mail("Retry me")
    for _ in range(2):
        async with Wire(app.bound["smtp"][1]) as w:
            await w.greet()
            r = await w.transaction("a@outside.test", ["sales@example.com", "team@example.com"], data(raw))
            assert r[0].startswith("250")
    assert len(maildir_files(tmp_path / "var" / "mail" / "sales")) == 1
    assert await app.registry.count_messages() == 1


async def test_idle_session_times_out(make_app, tmp_path):
    """A client that says nothing is told 421 4.4.2 and disconnected after command_timeout;
    one silent inside DATA the same after data_timeout, and nothing of its message is kept."""
    app = await make_app(limits={"command_timeout": 1, "data_timeout": 1})
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        assert await w.line() == TIMED_OUT
        assert await w.closed()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<idle@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: half\r\n\r\nhalf a message\r\n")
        assert await w.line() == TIMED_OUT
        assert await w.closed()
    assert maildir_files(tmp_path / "var" / "mail") == []
    assert await app.registry.count_messages() == 0


async def test_a_message_processed_longer_than_command_timeout_is_answered(make_app, tmp_path,
                                                                         monkeypatch):
    """The client waits for the reply to its final dot in silence: processing that takes longer
    than command_timeout (a slow disk, well inside process_timeout) is answered 250, not cut
    by the idle timer with the message stored and no answer given; the session goes on."""
    app = await make_app(limits={"command_timeout": 0.5, "process_timeout": 10})
    process = app.process

    async def slow(txn, routing=None):
        await asyncio.sleep(1.5)
        return await process(txn, routing)
    monkeypatch.setattr(app, "process", slow)
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        r = await w.transaction("a@outside.test", ["sales@example.com"], data(mail()))
        assert r[0].startswith("250 2.0.0")
        assert (await w.cmd("NOOP")).startswith("250")
    assert len(maildir_files(tmp_path / "var" / "mail" / "sales")) == 1


async def test_trickling_data_is_cut_at_the_deadline(make_app, tmp_path):
    """A client that keeps sending a line of DATA every 0.3 s, never idle long enough for
    data_timeout, is stopped at data_deadline: 421 4.4.2, closed, nothing delivered."""
    app = await make_app(limits={"data_timeout": 5, "data_deadline": 2})
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        await w.cmd("MAIL FROM:<slow@outside.test>")
        await w.cmd("RCPT TO:<sales@example.com>")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: trickle\r\n\r\n")
        reply = None
        for n in range(40):                      # up to 12 s of trickling
            try:
                await w.send(b"line %d\r\n" % n)
            except ConnectionError:
                break
            try:                                 # a reply within 0.3 s ends the trickle
                reply = await asyncio.wait_for(w.line(), 0.3)
                break
            except TimeoutError:
                continue
        assert reply == str(REPLY_DATA_TOO_SLOW)
        assert await w.closed()
    assert maildir_files(tmp_path / "var" / "mail") == []


async def test_endless_noop_is_cut_but_many_transactions_are_not(make_app, tmp_path):
    """100 NOOPs are answered, the 101st gets 421 and a hang-up; a session that carries 120
    transactions (as an MTA reusing its connection does) is never cut."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        replies = [await w.cmd("NOOP") for _ in range(101)]   # one by one: NOOP ends a group
        assert all(r.startswith("250") for r in replies[:100])
        assert replies[100].startswith("421 4.7.0") and await w.closed()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        for n in range(120):
            r = await w.transaction("mta@outside.test", ["sales@example.com"],
                                    b"Subject: %d\r\n\r\nx\r\n.\r\n" % n)
            assert r[-1].startswith("250"), (n, r)
            assert (await w.cmd("RSET")).startswith("250")
    assert len(maildir_files(tmp_path / "var" / "mail")) == 120


async def test_null_sender_accepted(make_app, tmp_path):
    """MAIL FROM:<> (a bounce) is accepted and delivered, and the null sender alone makes it
    a robot for the rules (the example rules tag robots)."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<>")).startswith("250")
        assert (await w.cmd("RCPT TO:<postmaster@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(data(mail("Undelivered Mail Returned to Sender")))
        assert (await w.line()).startswith("250 2.0.0")
        assert (await w.cmd("MAIL FROM:<client@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<postmaster@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(data(mail("The same words from a person")))
        assert (await w.line()).startswith("250 2.0.0")
    tags = {m["mail_from"]: m["decisions"][0]["tags"] for m in await app.registry.recent(2)}
    assert "robot" in tags["<>"] and "robot" not in tags["client@outside.test"]


async def test_connections_past_the_limit_get_421(make_app):
    """Past limits.max_connections a new session is greeted 421 4.7.0 and closed; once a
    session ends, a new one is served again."""
    app = await make_app(limits={"max_connections": 2})
    port = app.bound["smtp"][1]
    async with Wire(port) as a, Wire(port) as b:
        assert (await a.line()).startswith("220") and (await b.line()).startswith("220")
        async with Wire(port) as c:
            assert (await c.line()).startswith("421 4.7.0")
            assert await c.closed()
    for _ in range(50):     # the server sees a and b go away on its own schedule
        async with Wire(port) as d:
            if (await d.line()).startswith("220"):
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("never served again after sessions ended")


@pytest.mark.parametrize("body, stored", [
    (b".\r\n", b""),                                        # empty message
    (b"..\r\n.\r\n", b".\r\n"),                             # a lone dot, stuffed
    (b"a\r\n..b\r\n.c\r\n.\r\n", b"a\r\n.b\r\nc\r\n"),     # stuffed and unstuffed leading dots
    (b"x" * 999 + b"\r\n.\r\n", b"x" * 999 + b"\r\n"),    # the longest line aiosmtpd allows
], ids=["empty", "lone-dot", "leading-dots", "999-chars"])
async def test_data_transparency(make_app, tmp_path, body, stored):
    """Dot-stuffing is undone per RFC 5321 4.5.2 and the content is stored byte for byte."""
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        r = await w.transaction("a@outside.test", ["sales@example.com"], body)
        assert r[0].startswith("250")
    files = maildir_files(tmp_path / "var" / "mail" / "sales")
    assert len(files) == 1
    data = files[0].read_bytes()          # our trace headers, then exactly the received bytes
    assert data.endswith(stored)
    assert data[:len(data) - len(stored)].endswith(b"Delivered-To: sales@example.com\r\n")


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
@pytest.mark.parametrize("first", [b" , ceo@example.com", b"\tceo@example.com"], ids=["sp", "ht"])
async def test_a_first_line_folded_does_not_continue_our_trace_headers(make_app, tmp_path, proto,
                                                                        hello, first):
    """A message whose first line starts with white space: every copy starts with our trace
    headers, and that line continued the last of them, `Delivered-To: sales@example.com ,
    ceo@example.com` (our header, the client's words; a Sieve script or the next hop reads
    it). As Postfix's smtpd, an empty line goes first: our headers stay ours, the client's
    text is the body, byte for byte."""
    app = await make_app()
    sent = first + b"\r\nSubject: folded\r\n\r\nbody\r\n"
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        r = await w.transaction("a@outside.test", ["sales@example.com"], sent + b".\r\n",
                                lmtp=proto == "lmtp")
        assert r[0].startswith("250")
    [stored] = maildir_files(tmp_path / "var" / "mail" / "sales")
    data = stored.read_bytes()
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message.get_all("Delivered-To") == ["sales@example.com"]
    assert data.endswith(b"Delivered-To: sales@example.com\r\n\r\n" + sent)


async def test_lines_longer_than_998_are_accepted_as_received(make_app, tmp_path):
    """Lines of 1,000 and 100,000 characters (over RFC 5321's 998: unwrapped HTML from
    broken mailers) are accepted, as Postfix accepts them, and stored byte for byte."""
    app = await make_app()
    body = b"Subject: long\r\n\r\n" + b"y" * 1000 + b"\r\n" + b"<p>" * 33_333 + b"\r\n"
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        r = await w.transaction("a@outside.test", ["sales@example.com"], body + b".\r\n")
        assert r[0].startswith("250 2.0.0")
    stored = maildir_files(tmp_path / "var" / "mail")
    assert len(stored) == 1 and stored[0].read_bytes().endswith(body)


DETAIL_BOOK = """\
domains: [example.com]
mailboxes: {sales: {maildir: sales}}
people: {bob: {address: bob@example.com, name: Bob}}
aliases:
  orders@example.com: Bob+Orders@example.com
  desk@example.com: [bob, bob+desk@example.com, sales+desk@example.com]
  sales@example.com: mailbox:sales
rules: []
"""


async def test_an_alias_to_a_detail_address_delivers_to_the_person(make_app, tmp_path):
    """An alias whose target carries a +detail (orders@: bob+orders@) was refused at load;
    over real SMTP it now delivers where RCPT bob+orders@ does: to Bob's own Maildir (the
    person found), Delivered-To naming the recipient given; a group naming Bob twice, once
    with a detail, gives him one copy."""
    routing = tmp_path / "book.yaml"
    routing.write_text(DETAIL_BOOK, encoding="utf-8")
    app = await make_app(routing=(str(routing),))
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        for rcpt in ("orders@example.com", "desk@example.com"):
            reply = await w.transaction("client@outside.test", [rcpt], data(mail(rcpt)))
            assert reply == [str(REPLY_DELIVERED)], reply
    bob = maildir_files(tmp_path / "var" / "mail" / "people" / "bob")
    sales = maildir_files(tmp_path / "var" / "mail" / "sales")
    assert len(bob) == 2 and len(sales) == 1
    delivered_to = sorted(line for f in bob for line in f.read_bytes().split(b"\r\n")
                          if line.startswith(b"Delivered-To:"))
    assert delivered_to == [b"Delivered-To: desk@example.com", b"Delivered-To: orders@example.com"]


async def test_an_address_literal_helo_holding_non_ascii_is_recorded_with_question_marks(
        make_app, tmp_path):
    """EHLO [ж] (an address literal, which holds no non-ASCII, RFC 5321 4.1.3) went through
    the IDNA codec as if a domain name: our Received: line said `from xn--[]-qlc`, a name
    that looks real and is not the one given. Taken as Postfix takes any HELO name, and
    recorded as it records one not printable: each such character '?'. An IDN is still
    its A-label."""
    app = await make_app()
    helos = {"[ж]": b"[?]", "[IPv6:ж]": b"[IPv6:?]", "ж[x]": b"?[x]",
             "пример.рф": b"xn--e1afmkfd.xn--p1ai"}
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet("EHLO x.test")
        for n, helo in enumerate(helos):
            assert (await w.cmd(f"EHLO {helo}")).startswith("250")
            reply = await w.transaction("client@outside.test", ["sales@example.com"],
                                        data(mail(f"helo {n}")))
            assert reply[0].startswith("250"), reply
    got = sorted(line.partition(b" (127.0.0.1:")[0] for f in
                 maildir_files(tmp_path / "var" / "mail") for line in f.read_bytes().split(b"\r\n")
                 if line.startswith(b"Received: from "))
    assert got == sorted(b"Received: from " + want for want in helos.values())


async def test_a_message_of_too_many_parts_is_stored_whole_and_recorded_with_a_defect(
        make_app, tmp_path):
    """1,050 MIME parts (a message of 200,000 took a worker about 5 s of CPU, and its other
    sessions up to 0.5 s a reply): the rules read the first MAX_PARTS, and the message is
    taken (250), stored byte for byte and recorded with the defect that says so."""
    import sqlite3
    import json
    from mailrouter.message import MAX_PARTS
    raw = (b"From: Client <client@outside.test>\r\nTo: sales@example.com\r\nSubject: parts\r\n"
           b"Message-ID: <parts@outside.test>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
           + b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n" * (MAX_PARTS + 50) + b"--B--\r\n")
    app = await make_app()

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", app.bound["smtp"][1]) as s:
            s.sendmail("client@outside.test", ["sales@example.com"], raw)
    await asyncio.to_thread(send)
    stored = maildir_files(tmp_path / "var" / "mail")
    assert len(stored) == 1 and stored[0].read_bytes().endswith(raw)
    with sqlite3.connect(tmp_path / "var" / "registry.db") as db:
        (defects,) = db.execute("select defects from messages").fetchone()
    assert json.loads(defects) == [f"body: more than {MAX_PARTS} MIME parts: the rules read "
                                   f"the first {MAX_PARTS}"]


async def test_a_message_starting_with_a_bom_is_routed_by_its_headers_and_stored_as_sent(
        make_app, tmp_path):
    """A message whose first bytes are a UTF-8 BOM (EF BB BF) before its first header: the
    rules saw no header (the whole message read as body), so an invoice to invoices@ went to
    the finance Inbox, not its Finance folder, recorded without a subject. The rules read
    the headers after the BOM; the stored copy keeps every byte sent, the BOM included."""
    import sqlite3
    raw = b"\xef\xbb\xbf" + mail("\u0421\u0447\u0451\u0442 N 7", to="invoices@example.com")
    app = await make_app()

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", app.bound["smtp"][1]) as s:
            s.sendmail("client@outside.test", ["invoices@example.com"], raw)
    await asyncio.to_thread(send)
    stored = maildir_files(tmp_path / "var" / "mail" / "finance" / ".Finance")
    assert len(stored) == 1 and stored[0].read_bytes().endswith(b"\r\n" + raw)
    with sqlite3.connect(tmp_path / "var" / "registry.db") as db:
        (subject,) = db.execute("select subject from messages").fetchone()
    assert subject == "\u0421\u0447\u0451\u0442 N 7"

"""Sessions that end or misbehave around a transaction, seen from the outside with a raw
socket: a reset after the final dot, DATA with no recipient left, commands after QUIT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sqlite3
import struct

import pytest

from mailrouter.intake.protocol import Protocol, read_path
from mailrouter.values import REPLY_PROCESS_TIMEOUT
from tests.support.daemon import maildir_files
from tests.support.wire import Wire

RAW = b"Subject: reset after the dot\r\nMessage-ID: <reset@outside.test>\r\n\r\nbody\r\n.\r\n"


def reset(w: Wire) -> None:
    """Close with an RST, not a FIN (SO_LINGER 0): what a crashed or killed client sends."""
    sock = w.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.writer.transport.abort()


async def until(check, tries: int = 200) -> bool:
    """Poll an async condition the server reaches on its own schedule (no wall-clock assert)."""
    for _ in range(tries):
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_reset_after_the_final_dot_still_records_the_message_once(
        make_app, tmp_path, monkeypatch, caplog, proto, hello):
    """The client resets the connection while its message is being processed (after the final
    dot, before the reply). The session is cancelled; the message must still be stored and
    recorded, once: before, the cancel cut the pipeline between the Maildir copies and their
    record, leaving copies the registry did not know (and a second copy downstream on retry).
    Its DATA memory stays counted until it is done. The retry is then answered 250 and
    counted as a retry of the same row."""
    app = await make_app()
    record = app.registry.record
    release = await _reset_while_held(app, monkeypatch, app.registry, "record", proto, hello)
    port = app.bound[proto][1]
    assert app.data_budget.used > 0          # the message is still held: still counted
    release.set()
    monkeypatch.setattr(app.registry, "record", record)

    async def recorded() -> bool:
        return await app.registry.count_messages() == 1
    assert await until(recorded), "stored but never recorded"
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    assert await until(lambda: _budget_free(app))
    await _retried_once(app, tmp_path, port, proto, hello)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_reset_before_the_record_is_recorded_unanswered_not_delivered(
        make_app, tmp_path, monkeypatch, proto, hello):
    """The client resets the connection while its copies are being made (after the final
    dot): the message is stored and recorded, but it never got a 250, and the registry said
    `delivered` all the same (`mailrouter registry`, the web view). Now `unanswered`
    (stored, the sender got no answer: as a crash's copies are recorded); its retry is
    answered 250 "Already delivered", makes no second copy, and turns it `delivered`."""
    app = await make_app()
    deliver = app.deliverer.deliver
    release = await _reset_while_held(app, monkeypatch, app.deliverer, "deliver", proto, hello)
    port = app.bound[proto][1]
    monkeypatch.setattr(app.deliverer, "deliver", deliver)
    release.set()

    async def recorded() -> bool:
        return await app.registry.count_messages() == 1
    assert await until(recorded), "stored but never recorded"
    [row] = await app.registry.recent(5)
    assert row["status"] == "unanswered"
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    await _retried_once(app, tmp_path, port, proto, hello)


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_reset_while_the_record_commits_is_recorded_unanswered_not_delivered(
        make_app, tmp_path, monkeypatch, proto, hello):
    """The client resets the connection while its record commits (here: held by another
    process's write lock on the real SQLite file). The client-gone check runs before the
    record, so the row said `delivered` though the 250 reached nobody (its retry then said
    "Already delivered" to a sender that never had an answer). Now the pipeline sees the
    client gone once the commit is done and makes the row `unanswered`; the retry makes
    it `delivered`."""
    app = await make_app()
    port = app.bound[proto][1]
    with contextlib.closing(sqlite3.connect(tmp_path / "var" / "registry.db",
                                            isolation_level=None)) as locker:
        locker.execute("BEGIN EXCLUSIVE")    # WAL: the retry lookup still reads
        entered = asyncio.Event()
        real = app.registry.record

        async def spy(*args, **kwargs):   # the real record, blocked on the real lock
            entered.set()
            return await real(*args, **kwargs)
        monkeypatch.setattr(app.registry, "record", spy)
        async with Wire(port) as w:
            await w.greet(hello)
            for cmd in ("MAIL FROM:<reset@outside.test>", "RCPT TO:<sales@example.com>"):
                assert (await w.cmd(cmd)).startswith("250")
            assert (await w.cmd("DATA")).startswith("354")
            await w.send(RAW)
            await asyncio.wait_for(entered.wait(), 15)
            reset(w)
            assert await until(lambda: _no_sessions(app)), "the server never saw the reset"
        locker.execute("ROLLBACK")

    async def settled() -> bool:
        rows = await app.registry.recent(5)
        return bool(rows) and rows[0]["status"] != "delivered"
    await until(settled)
    [row] = await app.registry.recent(5)
    assert row["status"] == "unanswered"
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    monkeypatch.setattr(app.registry, "record", real)
    await _retried_once(app, tmp_path, port, proto, hello)


async def test_a_process_timeout_during_the_commit_is_recorded_unanswered_not_delivered(
        make_app, tmp_path, caplog):
    """process_timeout passes while the record waits for the real SQLite file's write lock
    (another process holds it): the client is answered 451, and the commit, already under
    way, goes through when the lock is let go. The row said `delivered` for a message whose
    sender got a 451 (and its retry "Already delivered"). Now `unanswered` (stored, no 250
    given); the retry is answered 250 with no second copy and makes it `delivered`."""
    app = await make_app(limits={"process_timeout": 1})
    port = app.bound["smtp"][1]
    with contextlib.closing(sqlite3.connect(tmp_path / "var" / "registry.db",
                                            isolation_level=None)) as locker:
        locker.execute("BEGIN EXCLUSIVE")
        async with Wire(port) as w:
            await w.greet("EHLO")
            r = await w.transaction("reset@outside.test", ["sales@example.com"], RAW)
        assert r == [str(REPLY_PROCESS_TIMEOUT)]
        locker.execute("ROLLBACK")

    async def recorded() -> bool:
        rows = await app.registry.recent(5)
        return bool(rows) and rows[0]["status"] == "unanswered"
    await until(recorded)
    [row] = await app.registry.recent(5)
    assert row["status"] == "unanswered", row["status"]
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    assert "event=record_unanswered" in caplog.text
    await _retried_once(app, tmp_path, port, "smtp", "EHLO")


async def _retried_once(app, tmp_path, port: int, proto: str, hello: str) -> None:
    """The MTA, never answered, sends the message again: 250, no second copy, and the
    registry's row counts two attempts and says delivered."""
    async with Wire(port) as w:
        await w.greet(hello)
        r = await w.transaction("reset@outside.test", ["sales@example.com"], RAW,
                                lmtp=proto == "lmtp")
        assert r[0].startswith("250 2.0.0"), r
    [row] = await app.registry.recent(5)
    assert row["attempts"] == 2 and row["status"] == "delivered"
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


async def _reset_while_held(app, monkeypatch, owner, name: str, proto: str,
                            hello: str) -> asyncio.Event:
    """`owner.name` (an async method of the pipeline's path) held once entered; a message
    sent after DATA and the connection reset while it is held. The event that releases it."""
    entered, release = asyncio.Event(), asyncio.Event()
    real = getattr(owner, name)

    async def held(*args, **kwargs):
        entered.set()
        await release.wait()
        return await real(*args, **kwargs)
    monkeypatch.setattr(owner, name, held)
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        for cmd in ("MAIL FROM:<reset@outside.test>", "RCPT TO:<sales@example.com>"):
            assert (await w.cmd(cmd)).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(RAW)
        await asyncio.wait_for(entered.wait(), 15)
        reset(w)
        assert await until(lambda: _no_sessions(app)), "the server never saw the reset"
    return release


async def _no_sessions(app) -> bool:
    return not app.sessions


async def _budget_free(app) -> bool:
    return app.data_budget.used == 0


@pytest.mark.parametrize("proto, hello, after_mail", [("smtp", "EHLO", "554 5.5.1"),
                                                      ("lmtp", "LHLO", "503 5.5.1")])
async def test_data_when_every_recipient_was_refused(make_app, tmp_path, proto, hello, after_mail):
    """MAIL, RCPTs all refused, DATA (pipelined, as an MTA sends them): SMTP answers Postfix's
    554 5.5.1 "no valid recipients" (RFC 5321 3.3), not 503 "need RCPT command", which
    told the client it had skipped a command; LMTP keeps 503 (RFC 2033 4.2). DATA with no
    MAIL at all is 503 on both. Nothing is read as message text or stored."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        await w.send(b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<nobody@example.com>\r\n"
                     b"RCPT TO:<>\r\nDATA\r\n")
        replies = [await w.line() for _ in range(4)]
        assert [r[:9] for r in replies] == ["250 2.1.0", "550 5.1.1", "501 5.1.3", after_mail]
        if proto == "smtp":
            assert replies[3] == "554 5.5.1 Error: no valid recipients"
        assert (await w.cmd("RSET")).startswith("250")
        assert await w.cmd("DATA") == "503 5.5.1 Error: need RCPT command"
        assert (await w.cmd("NOOP")).startswith("250")
    assert maildir_files(tmp_path / "var" / "mail") == []


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_nothing_after_quit_is_run(make_app, caplog, proto, hello):
    """QUIT ends the session (RFC 5321 4.1.1.10): what a sloppy client pipelines behind it is
    neither answered nor run. aiosmtpd went on running the buffered commands until a write
    noticed the close: a RCPT was looked up and logged as refused, each NOOP logged an
    improper-pipelining warning, though the client had said goodbye."""
    app = await make_app()
    caplog.set_level(logging.INFO)
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250")
        await w.send(b"QUIT\r\nRCPT TO:<nobody@example.com>\r\nNOOP\r\nNOOP\r\nRSET\r\n")
        assert (await w.line()).startswith("221 2.0.0")
        assert await w.closed()
    assert await until(lambda: _no_sessions(app))
    seen = [r.getMessage() for r in caplog.records if r.name.startswith("mailrouter")]
    assert not [m for m in seen if "rcpt_refused" in m or "improper_pipelining" in m], seen


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_message_quit_and_fin_there_before_data_reads_them_are_answered(
        make_app, tmp_path, monkeypatch, caplog, proto, hello):
    """The client's message, QUIT and FIN (`nc -N`, a script) are all in the reader when the
    DATA phase first reads, as when our 354 waited in the tarpit (error_delay) while they
    came. The bytes after the final dot went back to the reader with feed_data, which asserts
    after EOF: 451 4.3.0 and a traceback for a message sent whole. Now it is taken (250, one
    copy, one row), QUIT answered 221, the session closed."""
    app = await make_app()
    read_data = Protocol._read_data

    async def after_the_fin(self):
        async def eof() -> bool:
            return bool(self._reader._eof)
        assert await until(eof), "the client's FIN never reached the reader"
        return await read_data(self)
    monkeypatch.setattr(Protocol, "_read_data", after_the_fin)
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        assert (await w.cmd("MAIL FROM:<fin@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(RAW + b"QUIT\r\n")
        w.writer.write_eof()
        assert (await w.line()).startswith("250 2.0.0"), "a message sent whole was not taken"
        assert (await w.line()).startswith("221 2.0.0")
        assert await w.closed()
    assert await app.registry.count_messages() == 1
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_client_that_never_reads_is_dropped_at_the_timeout(make_app):
    """A client pipelines commands and never reads the replies (RSET is not limited): our
    writes fill the socket and the session waits in a write. command_timeout then fires,
    but closing a transport waits for its buffer to drain, which never happens: the session
    kept its max_connections slot as long as the client kept the socket open. Past the
    timeout it is now cut (RST), and the slot is free."""
    app = await make_app(limits={"command_timeout": 1})
    port = app.bound["smtp"][1]
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # a small window: fills fast
    client.settimeout(10)
    try:
        await asyncio.to_thread(client.connect, ("127.0.0.1", port))
        assert (await asyncio.to_thread(client.recv, 100)).startswith(b"220")
        [session] = app.sessions
        session.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await asyncio.to_thread(client.sendall, b"EHLO client.test\r\n")

        def flood() -> bool:            # until the server stops reading, blocked in its write
            client.settimeout(3)
            try:
                for _ in range(100):
                    client.sendall(b"RSET\r\n" * 10_000)
            except OSError:             # timed out (it stopped reading), or cut by the fix
                return True
            return False
        assert await asyncio.to_thread(flood), "the server read 6 MB of RSETs unanswered"
        assert await until(lambda: _no_sessions(app)), "the session kept its slot"
    finally:
        client.close()


MALFORMED = "553 5.1.3 Error: malformed address"


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_path_readable_only_by_repairing_it_is_refused(make_app, tmp_path, proto, hello):
    """An unquoted space in a local part or a missing '>' is a syntax error (Postfix: 501
    5.1.7 / 5.1.3). aiosmtpd's RFC 5322 parser repaired them: `<a b@outside.test>` was taken
    as the sender `"a b"@outside.test` (recorded, and autoreplies would go there), `<a@out
    side.test>` as `a@out`. Forms Postfix takes stay taken: comments, a space before '@', a
    quoted local part, a source route, a dot-atom's stray dot (real Japanese mobile senders)."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        for bad in ("<a b@outside.test>", "<a@outside.test", "<a@out side.test>"):
            assert await w.cmd(f"MAIL FROM:{bad}") == MALFORMED, bad
        for good in ("<taro.@docomo.ne.jp>", "<a(comment)@outside.test>", "<\"a b\"@outside.test>",
                     "<@relay.test:a@outside.test>"):
            assert (await w.cmd(f"MAIL FROM:{good}")).startswith("250 2.1.0"), good
            assert (await w.cmd("RSET")).startswith("250")
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250")
        for bad in ("<sal es@example.com>", "<sales@example.com"):
            assert await w.cmd(f"RCPT TO:{bad}") == MALFORMED, bad
        assert (await w.cmd("RCPT TO:<sales @example.com>")).startswith("250 2.1.5")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: repaired\r\n\r\nx\r\n.\r\n")
        assert (await w.line()).startswith("250 2.0.0")
    assert [m["mail_from"] for m in await app.registry.recent(5)] == ["a@outside.test"]
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_path_the_parser_chokes_on_is_malformed_not_an_internal_error(
        make_app, tmp_path, caplog, proto, hello):
    """Paths on which the RFC 5322 parser raises something other than HeaderParseError: an
    obsolete route cut off inside a comment (IndexError), an unclosed domain literal
    holding a quote (AttributeError reading the address), a bare path opening a domain
    literal followed by white space (UnboundLocalError). Each was a crash: 451 4.3.0 (try
    again later: the MTA retried a path that can never be read) and a traceback logged at
    ERROR per command. They are malformed paths, 553 5.1.3, and the session goes on."""
    app = await make_app()
    chokes = ("<@a,(b<>", '<a@[b:"@c>', '<+@[xb:"@outside.test>')
    # and one only a caller that does not strip the argument can pass (`mailrouter explain`)
    assert read_path("a@[ \u00a0") == (None, None)
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        for bad in chokes:
            assert await w.cmd(f"MAIL FROM:{bad}") == MALFORMED, bad
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250 2.1.0")
        for bad in chokes:
            assert await w.cmd(f"RCPT TO:{bad}") == MALFORMED, bad
        assert (await w.cmd("RCPT TO:<support@example.com>")).startswith("250 2.1.5")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: chokes\r\n\r\nx\r\n.\r\n")
        assert (await w.line()).startswith("250 2.0.0")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
@pytest.mark.parametrize("utf8", ["", " SMTPUTF8"])
async def test_a_path_holding_whitespace_that_is_not_ascii_is_refused(make_app, tmp_path, proto,
                                                                       hello, utf8):
    """The RFC 5322 parser takes a non-ASCII space (NO-BREAK SPACE, IDEOGRAPHIC SPACE, EM
    SPACE) for folding white space and drops it: `<sales@exa\u00a0mple.com>` and
    `<sales@example.com\u3000>` (an IME's trailing space) were sales@example.com, taken and
    delivered even without SMTPUTF8, the ASCII check seeing the address after the repair; the
    sender `<a@outside.test\u3000>` was recorded as a@outside.test. A path read only by
    dropping it is malformed, as `<sal es@example.com>` is."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        for bad in ("<a@outside.test\u3000>", "<a@out\u00a0side.test>", "<\u2003a@outside.test>"):
            assert await w.cmd(f"MAIL FROM:{bad}{utf8}") == MALFORMED, bad
        assert (await w.cmd(f"MAIL FROM:<a@outside.test>{utf8}")).startswith("250 2.1.0")
        for bad in ("<sales@exa\u00a0mple.com>", "<sales@example.com\u3000>",
                    "<\u00a0sales@example.com>", "<sa\u2009les@example.com>",
                    '<"sales\u00a0"@example.com>'):
            assert await w.cmd(f"RCPT TO:{bad}") == MALFORMED, bad
        assert (await w.cmd("RCPT TO:<support@example.com>")).startswith("250 2.1.5")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: wide space\r\n\r\nx\r\n.\r\n")
        assert (await w.line()).startswith("250 2.0.0")
    [message] = await app.registry.recent(5)
    assert message["mail_from"] == "a@outside.test"
    assert [p.parent.parent.name for p in maildir_files(tmp_path / "var" / "mail")] == ["support"]


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_an_encoded_word_in_a_quoted_local_part_is_refused_not_decoded(
        make_app, tmp_path, caplog, proto, hello):
    """The RFC 5322 parser decodes an RFC 2047 encoded word inside a quoted local part (RFC
    2047 5 forbids one there; no path holds one), and one in a word of an obsolete local part
    (`"a".=?..?=`). `<"=?utf-8?b?DQpYLUluamVjdGVkOiB5ZXM=?="@..>`
    was the sender "\r\nX-Injected: yes"@.., a CR LF past the control-character check: mail
    from it to a moved address crashed the autoreply (a traceback, 451 on every retry).
    `<"=?utf-8?b?c2FsZXM=?="@example.com>` was delivered to sales@. Both are 553 5.1.3, a
    path read only by changing it; the same text unquoted is an address like any other."""
    crlf = "=?utf-8?b?DQpYLUluamVjdGVkOiB5ZXM=?="           # "\r\nX-Injected: yes"
    sales = "=?utf-8?b?c2FsZXM=?="                           # "sales"
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        for bad in (f'<"{crlf}"@outside.test>', f'<"a {sales} b"@outside.test>',
                    f'<"a".{crlf}@outside.test>', f'<{sales}."a"@outside.test>'):
            assert await w.cmd(f"MAIL FROM:{bad}") == MALFORMED, bad
        assert (await w.cmd(f"MAIL FROM:<{sales}@outside.test>")).startswith("250 2.1.0")
        assert await w.cmd(f'RCPT TO:<"{sales}"@example.com>') == MALFORMED
        assert await w.cmd(f'RCPT TO:<"{crlf}"@example.com>') == MALFORMED
        assert (await w.cmd(f"RCPT TO:<{sales}@example.com>")).startswith("550 5.1.1")
        assert (await w.cmd("RCPT TO:<old-sales@example.com>")).startswith("250 2.1.5")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: encoded\r\nMessage-ID: <ew@outside.test>\r\n\r\nx\r\n.\r\n")
        assert (await w.line()).startswith("250 2.0.0")
    assert [m["mail_from"] for m in await app.registry.recent(5)] == [f"{sales}@outside.test"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_nothing_after_the_junk_command_limit_is_run(make_app, caplog, proto, hello):
    """The 101st HELP gets aiosmtpd's 421 4.7.0 and the connection is closed; what was
    pipelined behind it must not run (aiosmtpd's loop went on: a RCPT behind it
    was looked up and logged, though the client had been told goodbye)."""
    app = await make_app()
    caplog.set_level(logging.INFO)
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250")
        await w.send(b"HELP\r\n" * 101 + b"RCPT TO:<nobody@example.com>\r\n")
        replies = [await w.line() for _ in range(101)]
        assert replies[-1] == "421 4.7.0 HELP sent too many times", replies[-2:]
        assert await w.closed()
    assert await until(lambda: _no_sessions(app))
    seen = [r.getMessage() for r in caplog.records if r.name.startswith("mailrouter")]
    assert not [m for m in seen if "rcpt_refused" in m], seen


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_session_of_resets_without_mail_is_closed(make_app, tmp_path, proto, hello):
    """MAIL and RSET in a loop take no message and make no error: the session was held for
    ever. Past 100 RSETs since the last message taken it gets 421 and is closed (Postfix
    counts RSET as junk); a message taken starts the count again, so an MTA that resets
    between the messages of one connection is never cut."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        await w.send(b"MAIL FROM:<a@outside.test>\r\nRSET\r\n" * 60)
        assert [(await w.line())[:3] for _ in range(120)] == ["250"] * 120
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: taken\r\n\r\nbody\r\n.\r\n")
        assert (await w.line()).startswith("250")
        await w.send(b"RSET\r\n" * 100)
        assert [(await w.line())[:3] for _ in range(100)] == ["250"] * 100
        assert await w.cmd("RSET") == "421 4.7.0 RSET sent too many times"
        assert await w.closed()
    assert await until(lambda: _no_sessions(app))
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1


async def test_message_text_after_the_data_deadline_is_never_run_as_commands(make_app, caplog):
    """A client trickling DATA past data_deadline gets 421 4.4.2 and is closed. The 421 waited
    for the tarpit (this session had an error) while more message text arrived, and once
    DATA returned aiosmtpd's loop read that text as commands: a line 'RCPT TO:<...>' in
    the message was looked up and logged. The 421 now hangs up: nothing after it is read."""
    app = await make_app(limits={"data_timeout": 5, "data_deadline": 1, "soft_errors": 1,
                                 "error_delay": 0.5})
    caplog.set_level(logging.INFO)
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<slow@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<typo@example.com>")).startswith("550")    # one error
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        reply = None
        for _ in range(100):                     # a line every 0.1 s until the 421
            try:
                await w.send(b"RCPT TO:<smuggled@example.com>\r\n")
                reply = await asyncio.wait_for(w.line(), 0.1)
                break
            except TimeoutError:
                continue
            except ConnectionError:
                break
        assert reply is not None and reply.startswith("421 4.4.2"), reply
    assert await until(lambda: _no_sessions(app))
    seen = [r.getMessage() for r in caplog.records if r.name.startswith("mailrouter")]
    assert not [m for m in seen if "smuggled@" in m], seen


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
@pytest.mark.parametrize("bdat", [b"BDAT 86 LAST", b"bdat 86", b"BDAT 86 LAST\x00"])
async def test_bdat_chunk_is_never_run_as_commands(make_app, tmp_path, caplog, proto, hello, bdat):
    """CHUNKING is not offered; a client that sends BDAT anyway follows it with its chunk.
    aiosmtpd answered 500 and read the chunk as commands: a chunk holding RSET, MAIL, RCPT
    and DATA was run and a message from evil@ to support@ taken from it (what Postfix, which
    says 521 and hangs up, never does). Now: 521 5.5.1, the connection is closed, nothing in
    the chunk is run or stored, whatever the BDAT line looks like."""
    app = await make_app()
    caplog.set_level(logging.INFO)
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        await w.send(bdat + b"\r\nRSET\r\nMAIL FROM:<evil@outside.test>\r\n"
                     b"RCPT TO:<support@example.com>\r\nDATA\r\n")
        assert (await w.line()).startswith("521 5.5.1 Error: command \"BDAT\" not implemented")
        try:
            await w.send(b"Subject: smuggled\r\n\r\nx\r\n.\r\n")
        except ConnectionError:
            pass
        assert await w.closed()
    assert await until(lambda: _no_sessions(app))
    assert maildir_files(tmp_path / "var" / "mail") == []
    assert await app.registry.count_messages() == 0
    seen = [r.getMessage() for r in caplog.records if r.name.startswith("mailrouter")]
    assert not [m for m in seen if "evil@" in m or "support@" in m], seen


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_a_command_line_not_ended_by_crlf_is_not_run(make_app, tmp_path, proto, hello):
    """aiosmtpd read a command up to LF and stripped every CR and LF at its end, so commands
    ended by a bare LF or by CR CR LF were run, though DATA refuses the same bytes in a
    message (and Postfix with smtpd_forbid_bare_newline = reject refuses them). Each gets
    500 5.5.2 and is not run; the same commands with CRLF then work."""
    app = await make_app()
    async with Wire(app.bound[proto][1]) as w:
        assert (await w.line()).startswith("220")
        await w.send(hello.encode() + b" client.test\n")
        assert (await w.line()).startswith("500 5.5.2 Error: bare <CR> or <LF>")
        await w.send(hello.encode() + b" client.test\r\n")
        assert (await w.reply())[-1].startswith("250")
        for line in (b"MAIL FROM:<a@outside.test>\n", b"MAIL FROM:<a@outside.test>\r\r\n",
                     b"MAIL FROM:<a@outside.test>\n\r\n"):
            await w.send(line)
            assert (await w.line()).startswith("500 5.5.2"), line
            if line.endswith(b"\n\r\n"):          # the CRLF after the bare LF is an empty line
                assert (await w.line()).startswith("500 5.5.2"), line
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("503")   # no MAIL ran
        r = await w.transaction("a@outside.test", ["sales@example.com"],
                                b"Subject: ok\r\n\r\nok\r\n.\r\n", lmtp=proto == "lmtp")
        assert r[0].startswith("250 2.0.0"), r
    assert await app.registry.count_messages() == 1


RCPT_OVERSHOOT = 1000       # protocol.RCPT_OVERSHOOT, Postfix's smtpd_recipient_overshoot_limit


@pytest.mark.parametrize("proto, hello", [("smtp", "EHLO"), ("lmtp", "LHLO")])
async def test_rcpts_past_the_limit_do_not_hold_a_session_for_ever(make_app, tmp_path, proto, hello):
    """A RCPT past max_recipients gets 452 4.5.3, flow control and not an error, and it is a
    command that restarts the idle timer: a client that kept sending RCPT and never DATA held
    its session for ever. Past RCPT_OVERSHOOT of them since the last message taken each counts
    as an error (Postfix's smtpd_recipient_overshoot_limit), so max_errors closes it; a
    message taken starts the count again."""
    app = await make_app(limits={"max_recipients": 1, "max_errors": 5})
    async with Wire(app.bound[proto][1]) as w:
        await w.greet(hello)
        # an MTA that overshoots, then sends the message: no error counted, the count restarts
        await w.send(b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<sales@example.com>\r\n"
                     + b"RCPT TO:<support@example.com>\r\n" * RCPT_OVERSHOOT + b"DATA\r\n")
        replies = [(await w.line())[:9] for _ in range(RCPT_OVERSHOOT + 3)]
        assert replies == ["250 2.1.0", "250 2.1.5"] + ["452 4.5.3"] * RCPT_OVERSHOOT + ["354 End d"]
        await w.send(b"Subject: taken\r\n\r\nbody\r\n.\r\n")
        assert (await w.line()).startswith("250")
        # a client that only ever overshoots: cut at max_errors, what follows never run
        await w.send(b"MAIL FROM:<a@outside.test>\r\nRCPT TO:<sales@example.com>\r\n"
                     + b"RCPT TO:<support@example.com>\r\n" * (RCPT_OVERSHOOT + 5) + b"NOOP\r\n")
        replies = [(await w.line())[:9] for _ in range(RCPT_OVERSHOOT + 8)]
        assert replies == ["250 2.1.0", "250 2.1.5"] + ["452 4.5.3"] * (RCPT_OVERSHOOT + 5) \
            + ["421 4.7.0"], replies[-3:]
        assert await w.closed()
    assert await until(lambda: _no_sessions(app))
    assert len(maildir_files(tmp_path / "var" / "mail")) == 1

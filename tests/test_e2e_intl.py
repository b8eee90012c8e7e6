"""Internationalised mail through the chain a mail admin deploys: a real Postfix in front of
mailrouter and a real Postfix as the outbox's return relay (tests/support/postfix.py), SMTPUTF8
clients, and what the sender, the registry and the next hop see."""

from __future__ import annotations

import asyncio
import json
import smtplib
from typing import Any

import pytest

from email import message_from_bytes, policy

from mailrouter.config import DeliveryConfig, Downstream
from mailrouter.registry.queries import Scope, search
from tests.test_e2e_postfix import start_postfix, until
from tests.test_delivery_smtp import Sink
from tests.test_outbox import relay_to, rows, settled
from tests.test_report_exports import _cli

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]

ROUTING = """\
domains: [example.com, пример.рф]
mailboxes:
  sales: {maildir: sales}
  relay: {smtp: desk@downstream.test}
aliases:
  продажи@пример.рф: mailbox:sales
  отдел@пример.рф: mailbox:relay
moved:
  старый@пример.рф: {now: продажи@пример.рф, deliver: true, autoreply: moved}
autoreplies:
  moved:
    from: old
    subject: "Auto: {subject}"
    body: "Пишите на {new}"
"""


def _smtputf8(port: int, sender: str, rcpt: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(sender, [rcpt], raw, mail_options=["SMTPUTF8"])


async def _app(make_app: Any, tmp_path: Any, relay: int | None = None,
               downstream: int = 1) -> Any:
    """The daemon; `relay`: the outbox's, `downstream`: the SMTP mailbox's server."""
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING, encoding="utf-8")
    over = {"outbox": relay_to(relay)} if relay is not None else {}
    return await make_app(routing=(str(routing),), delivery=DeliveryConfig(
        tmp_path / "var" / "mail", smtp=Downstream("127.0.0.1", downstream, timeout=10)), **over)


def _config(tmp_path: Any) -> Any:
    """A config.yaml for the CLI on the daemon's registry."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"registry: {{url: 'sqlite+aiosqlite:///{tmp_path / 'var' / 'registry.db'}'}}\n"
                   f"routing: ['{tmp_path / 'routing.yaml'}']\n", encoding="utf-8")
    return cfg


async def test_a_recipient_is_found_in_either_idna_form_of_its_domain(make_app, postfix, tmp_path):
    """Postfix passes the RCPT as the client wrote it: one message to продажи@пример.рф, one
    to продажи@xn--e1afmkfd.xn--p1ai. `registry search --rcpt` and the web search find both
    by either form, in any case, and `--from` finds the sender by either form (each found
    only the form it was typed in)."""
    app = await _app(make_app, tmp_path)
    mta = await start_postfix(postfix, app.bound["smtp"][1])
    for n, rcpt in enumerate(("продажи@пример.рф", "продажи@xn--e1afmkfd.xn--p1ai")):
        await asyncio.to_thread(_smtputf8, mta.port, "иван@клиент.рф", rcpt,
                                f"Subject: s{n}\r\n\r\nbody\r\n".encode())
    await until(lambda: mta.maillog.count("status=sent") == 2, what=mta.maillog)
    cfg = _config(tmp_path)
    for who in ("продажи@пример.рф", "продажи@xn--e1afmkfd.xn--p1ai",
                "продажи@XN--E1AFMKFD.XN--P1AI"):
        code, out = await _cli("registry", "search", "--rcpt", who, "--json", "-c", str(cfg))
        assert code == 0, (who, out)
        assert sorted(m["subject"] for m in json.loads(out)) == ["s0", "s1"], who
        web = await app.registry.read("t", lambda c, who=who: search(
            c, Scope(everything=True), rcpt=who))
        assert sorted(m["subject"] for m in web.rows) == ["s0", "s1"], who
    for who in ("иван@клиент.рф", "иван@xn--e1affem4a.xn--p1ai"):     # and the sender
        code, out = await _cli("registry", "search", "--from", who, "--json", "-c", str(cfg))
        assert code == 0 and len(json.loads(out)) == 2, (who, out)


async def _answered(app: Any, sender: str, raw: bytes) -> dict[str, Any]:
    """`sender` writes to the moved старый@пример.рф (To: it, in front of `raw`); the outbox
    row of the answer, settled."""
    await asyncio.to_thread(_smtputf8, app.bound["smtp"][1], sender, "старый@пример.рф",
                            "To: старый@пример.рф\r\n".encode() + raw)
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while not (await rows(app) and await settled(app)):
        assert loop.time() < end, await rows(app)
        await asyncio.sleep(0.05)
    [row] = await rows(app)
    return row


async def test_an_answer_declares_8bitmime_on_a_new_connection(make_app, tmp_path):
    """The answer to иван@клиент.рф is UTF-8 (headers and body): the outbox's MAIL carries
    SMTPUTF8 and BODY=8BITMIME on the connection it has just opened (the extensions were
    read before EHLO: BODY=8BITMIME only went out on a reused connection)."""
    sink = Sink()
    await sink.start()
    try:
        app = await _app(make_app, tmp_path, sink.port)
        row = await _answered(app, "иван@клиент.рф", "Subject: вопрос\r\n\r\nтело\r\n".encode())
        assert row["state"] == "sent", row
        [env] = sink.envelopes
        assert env.rcpt_tos == ["иван@клиент.рф"]
        assert "BODY=8BITMIME" in env.mail_options and "SMTPUTF8" in env.mail_options
    finally:
        await sink.stop()


async def test_an_answer_from_a_unicode_address_to_an_ascii_sender_goes_as_smtputf8(
        make_app, postfix, tmp_path):
    """ivan@client.test writes to старый@пример.рф: the answer's envelope is ASCII but its
    From is старый@пример.рф as raw UTF-8 (RFC 6532), so the outbox declares SMTPUTF8 and
    Postfix takes it, and relays it, as such (it went without SMTPUTF8: Postfix passed a
    UTF-8 header to the next hop in a plain ESMTP transaction)."""
    sink = Sink()
    await sink.start()
    try:
        mta = await asyncio.to_thread(postfix, relay_port=sink.port)
        app = await _app(make_app, tmp_path, mta.port)
        row = await _answered(app, "ivan@client.test", b"Subject: q\r\n\r\nbody\r\n")
        assert row["state"] == "sent", row
        await until(lambda: sink.envelopes, what="Postfix relays the answer\n" + mta.maillog)
        [env] = sink.envelopes
        assert (env.mail_from, env.rcpt_tos) == ("<>", ["ivan@client.test"])
        assert "SMTPUTF8" in env.mail_options, env.mail_options
        head = env.content.split(b"\r\n\r\n", 1)[0].decode()
        assert "by upstream.example.test (Postfix) with UTF8SMTP" in head, head
        assert "From: старый@пример.рф" in head.splitlines()
    finally:
        await sink.stop()


async def test_an_answer_needing_smtputf8_to_a_relay_without_it_fails_once_saying_why(
        make_app, postfix, tmp_path):
    """The return Postfix has smtputf8_enable = no: the answer to иван@клиент.рф cannot go
    out. It fails at the first attempt, naming the relay and the setting that fixes it (it
    was retried as a relay outage until outbox.max_age, with aiosmtplib's words only)."""
    sink = Sink()
    await sink.start()
    try:
        mta = await asyncio.to_thread(postfix, relay_port=sink.port)
        await asyncio.to_thread(mta.postconf, "smtputf8_enable = no")
        await asyncio.to_thread(mta.reload)
        app = await _app(make_app, tmp_path, mta.port)
        row = await _answered(app, "иван@клиент.рф", b"Subject: q\r\n\r\nbody\r\n")
        assert (row["state"], row["attempts"]) == ("failed", 1), row
        assert f"relay 127.0.0.1:{mta.port} does not offer SMTPUTF8" in row["last_error"]
        assert "smtputf8_enable = yes" in row["last_error"]
        assert sink.envelopes == [] and await asyncio.to_thread(mta.queue_ids) == []
    finally:
        await sink.stop()


async def test_one_answer_per_period_whichever_idna_form_the_sender_is_written_in(
        make_app, postfix, tmp_path):
    """иван@клиент.рф writes twice to the moved старый@пример.рф through Postfix, the
    second time as иван@xn--e1affem4a.xn--p1ai (another client, the same mailbox): one
    answer in the period, the second decision says why not (each form had its own period
    and daily cap: two answers)."""
    sink = Sink()
    await sink.start()
    try:
        app = await _app(make_app, tmp_path, sink.port)
        mta = await start_postfix(postfix, app.bound["smtp"][1])
        for n, sender in enumerate(("иван@клиент.рф", "иван@xn--e1affem4a.xn--p1ai")):
            await asyncio.to_thread(_smtputf8, mta.port, sender, "старый@пример.рф",
                                    f"To: старый@пример.рф\r\nSubject: q{n}\r\n\r\nbody\r\n"
                                    .encode())
            await until(lambda n=n: mta.maillog.count("status=sent") == n + 1, what=mta.maillog)
        assert [r["rcpt"] for r in await rows(app)] == ["иван@клиент.рф"]
        code, out = await _cli("registry", "search", "--subject", "q1", "--json", "-c",
                               str(_config(tmp_path)))
        [second] = json.loads(out)
        assert "autoreply moved: not sent" in json.dumps(second, ensure_ascii=False), second
    finally:
        await sink.stop()


async def test_a_dsn_for_a_unicode_recipient_is_a_global_delivery_status(
        make_app, postfix, tmp_path):
    """иван@клиент.рф writes through Postfix to продажи@пример.рф (a Maildir) and отдел@пример.рф
    (an SMTP downstream without SMTPUTF8: refused 5.6.7). The DSN that goes back through the
    return Postfix is RFC 6533's: message/global-delivery-status with `Final-Recipient: utf-8;`
    and the original UTF-8 headers as message/global-headers, as Postfix writes its own
    (it was message/delivery-status and text/rfc822-headers with raw UTF-8 in them, which
    RFC 3464 and 6522 parsers read as ASCII)."""
    back, downstream = Sink(), Sink(smtputf8=False)
    await back.start()
    await downstream.start()
    try:
        ret = await asyncio.to_thread(postfix, relay_port=back.port)
        app = await _app(make_app, tmp_path, ret.port, downstream.port)
        mta = await start_postfix(postfix, app.bound["smtp"][1])
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as client:
            client.sendmail("иван@клиент.рф", ["продажи@пример.рф", "отдел@пример.рф"],
                            "From: Иван <иван@клиент.рф>\r\nSubject: Счёт\r\n\r\nтело\r\n"
                            .encode(), mail_options=["SMTPUTF8"])
        await until(lambda: back.envelopes, what="the DSN through Postfix\n" + ret.maillog)
        [env] = back.envelopes
        assert env.rcpt_tos == ["иван@клиент.рф"] and "SMTPUTF8" in env.mail_options
        dsn = message_from_bytes(env.content, policy=policy.SMTPUTF8)
        parts = {p.get_content_type(): p for p in dsn.iter_parts()}
        assert set(parts) == {"text/plain", "message/global-delivery-status",
                              "message/global-headers"}, list(parts)
        status = parts["message/global-delivery-status"].as_bytes().decode()
        assert "Final-Recipient: utf-8; отдел@пример.рф" in status, status
        assert "Status: 5.6.7" in status, status
        assert "Subject: Счёт" in parts["message/global-headers"].as_bytes().decode()
        assert parts["message/global-headers"]["Content-Transfer-Encoding"] == "8bit"
    finally:
        await back.stop()
        await downstream.stop()

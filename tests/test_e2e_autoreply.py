"""End to end: swaks -> mailrouter -> the autoreply through a real Postfix (the outbox's
submission relay, on loopback) -> an aiosmtpd sink Postfix relays to. What is asserted is
what the sender's side receives: one answer, envelope sender <>, RFC 3834 headers.

Also: the port where deploy/postfix/mailrouter-postfix.sh has Postfix take mail back from
mailrouter is the one config.example.yaml and the README give for outbox.relay.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from email import message_from_bytes, policy
from typing import Any

import pytest

from mailrouter.config import AutoreplyConfig
from tests.support.daemon import REPO
from tests.test_delivery_smtp import Sink
from tests.test_outbox import relay_to, rows, settled, until


async def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, ["swaks", "-s", "127.0.0.1", "-p", str(port), *args],
        capture_output=True, text=True, timeout=60)


@pytest.mark.e2e
async def test_reply_goes_out_through_postfix(make_app: Any, postfix: Any) -> None:
    """swaks writes to a moved address; the answer leaves through Postfix and reaches the
    sink once: to the envelope sender, from <>, Auto-Submitted, In-Reply-To, References."""
    sink = Sink()
    await sink.start()
    try:
        mta = await asyncio.to_thread(postfix, relay_port=sink.port)
        app = await make_app(outbox=relay_to(mta.port),
                             autoreply=AutoreplyConfig(dns_check=False))
        done = await swaks(app.bound["smtp"][1], "-f", "bounces-ann@client.example",
                           "-t", "old-sales@example.com",
                           "--header", "From: Ann <ann@client.example>",
                           "--header", "Subject: Invoice question",
                           "--header", "Message-Id: <e2e-1@client.example>",
                           "--header", "References: <e2e-0@client.example>",
                           "--body", "Where do invoices go now?")
        assert done.returncode == 0, done.stdout + done.stderr
        await until(lambda: settled(app), "the outbox to hand the answer to Postfix")
        [row] = await rows(app)
        assert row["state"] == "sent", row

        async def arrived() -> bool:
            return bool(sink.envelopes)
        await until(arrived, "Postfix to relay the answer to the sink\n" + mta.maillog, 60)
        await asyncio.sleep(1.0)       # a second copy would arrive here
        [env] = sink.envelopes
        assert (env.mail_from, env.rcpt_tos) == ("<>", ["bounces-ann@client.example"])
        m = message_from_bytes(env.content, policy=policy.default)
        assert m["Auto-Submitted"] == "auto-replied"
        assert m["In-Reply-To"] == "<e2e-1@client.example>"
        assert m["References"] == "<e2e-0@client.example> <e2e-1@client.example>"
        assert (m["To"], m["From"], m["Subject"]) == (
            "bounces-ann@client.example", "old-sales@example.com", "Auto: Invoice question")
        assert "by upstream.example.test (Postfix)" in str(m["Received"])   # it went through Postfix
        assert "sales@example.com" in m.get_body().get_content()           # type: ignore[union-attr]
        assert "status=sent" in mta.maillog
        assert await asyncio.to_thread(mta.queue_ids) == []
    finally:
        await sink.stop()


def test_postfix_return_port_is_the_outbox_relay_port() -> None:
    """The deploy script's RETURN_PORT (Postfix's loopback smtpd for mail from mailrouter),
    the outbox.relay example of config.example.yaml and the README's name one port."""
    script = (REPO / "deploy" / "postfix" / "mailrouter-postfix.sh").read_text(encoding="utf-8")
    [port] = re.findall(r"^RETURN_PORT=\$\{RETURN_PORT:-(\d+)\}", script, re.M)
    example = (REPO / "config.example.yaml").read_text(encoding="utf-8")
    [relay] = re.findall(r"^  relay: .*?127\.0\.0\.1:(\d+)", example, re.M)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    [told] = re.findall(r"`outbox\.relay` \(your MTA's\s+submission port: `127\.0\.0\.1:(\d+)`",
                        readme)
    assert port == relay == told, (port, relay, told)


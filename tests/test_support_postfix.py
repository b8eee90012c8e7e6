"""Smoke test of the `postfix` fixture: Postfix relays to an aiosmtpd sink on the relayhost port."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable

from tests.support.postfix import PostfixServer
from tests.test_delivery_smtp import SinkFactory, sink, until  # noqa: F401 (fixture)

MESSAGE = b"From: a@example.org\r\nTo: b@example.test\r\nSubject: smoke\r\n\r\n.dot line\r\n"


def _send(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail("a@example.org", ["b@example.test"], MESSAGE)


async def test_postfix_relays_to_sink(postfix: Callable[..., PostfixServer],
                                      sink: SinkFactory) -> None:  # noqa: F811 (fixture)
    """Mail sent to the private Postfix reaches the sink on its relayhost port."""
    s = await sink()
    mta = postfix(relay_port=s.port)
    await asyncio.to_thread(_send, mta.port)   # smtplib blocks: keep it off the loop
    try:
        await until(lambda: len(s.envelopes) == 1, tries=6000)
    except AssertionError:
        raise AssertionError(mta.maillog) from None
    env = s.envelopes[0]
    assert (env.mail_from, env.rcpt_tos) == ("a@example.org", ["b@example.test"])
    assert env.original_content.endswith(MESSAGE.split(b"\r\n\r\n", 1)[1])
    assert b"Subject: smoke" in env.original_content
    await until(lambda: "status=sent" in mta.maillog, tries=6000)
    assert await asyncio.to_thread(mta.queue_ids) == []

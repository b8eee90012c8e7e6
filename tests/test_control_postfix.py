"""The reply-tracking recipe with a real Postfix: `sender_bcc_maps` sends mailrouter a copy
of what the company sends, and the copy answers the request it replies to."""

from __future__ import annotations

import asyncio
import smtplib

import pytest
from sqlalchemy import select

from mailrouter.config import ControlConfig
from mailrouter.control.tables import requests
from tests.control_support import mail, write_routing
from tests.test_e2e_postfix import start_postfix

pytestmark = pytest.mark.asyncio


def smtp(port: int, raw: bytes, sender: str, rcpt: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, [rcpt], raw)


async def test_sender_bcc_maps_copy_answers_the_request(make_app, postfix, tmp_path):
    """customer -> Postfix -> mailrouter opens request #1; ivanov's reply goes out through the
    same Postfix, whose sender_bcc_maps (the README recipe) gives replies@ a copy; mailrouter
    matches it by In-Reply-To and the request is answered."""
    app = await make_app(routing=write_routing(tmp_path),
                         control=ControlConfig(replies=("replies@example.com",)))
    app.sla_task.cancel()
    mta = await start_postfix(postfix, app.bound["smtp"][1])
    await asyncio.to_thread(mta.postconf, "sender_bcc_maps = inline:{@example.com=replies@example.com}")
    await asyncio.to_thread(mta.reload)

    async def status() -> list[tuple[str, object]]:
        return await app.registry.read("t", lambda c: [tuple(r) for r in c.execute(
            select(requests.c.status, requests.c.first_response_at))])
    await asyncio.to_thread(smtp, mta.port, mail("client@bigco.example", "printer", "p1@bigco"),
                            "client@bigco.example", "support@example.com")
    await _wait(status, lambda got: got == [("open", None)], mta)
    reply = mail("ivanov@example.com", "Re: printer", "r1@example.com", "<p1@bigco>",
                 to="client@bigco.example")
    await asyncio.to_thread(smtp, mta.port, reply, "ivanov@example.com", "client@bigco.example")
    await _wait(status, lambda got: got[0][0] == "answered", mta)
    assert "to=<replies@example.com>" in mta.maillog and (await status())[0][1] is not None


async def _wait(get, pred, mta, within: float = 30.0) -> None:
    end = asyncio.get_running_loop().time() + within
    while not pred(await get()):
        if asyncio.get_running_loop().time() > end:
            raise AssertionError("not reached:\n" + mta.maillog)
        await asyncio.sleep(0.2)

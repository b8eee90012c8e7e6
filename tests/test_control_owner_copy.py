"""`copy_to_owner: true`: the request's owner also gets the message at their own address,
in the same delivery step as the other copies, so a retry neither loses nor repeats it.
Real daemon, real SMTP client, real Maildirs and SQLite/PostgreSQL registry."""

from __future__ import annotations

import email
from datetime import datetime, timezone
from pathlib import Path

import aiosmtplib
import pytest

from mailrouter.config import ControlConfig, RegistryConfig
from mailrouter.pipeline import message_key
from mailrouter.values import REPLY_DELIVERY_TEMPFAIL
from tests.control_support import ROUTING, mail
from tests.support.daemon import maildir_files

pytestmark = pytest.mark.asyncio
MONDAY = datetime(2027, 1, 11, 7, 0, tzinfo=timezone.utc)      # 10:00 in Moscow

# support@ copies to its owner; sales@ has an owner too but no copy for them
COPYING = ROUTING.replace(
    "  support: {maildir: support}\n", "  support: {maildir: support}\n  sales: {maildir: sales}\n"
).replace(
    "  support@example.com: mailbox:support\n",
    "  support@example.com: mailbox:support\n  sales@example.com: mailbox:sales\n",
).replace(
    "    then: {owner: duty, sla: {first_response: 4h, calendar: msk}}\n",
    "    then: {owner: duty, copy_to_owner: true, sla: {first_response: 4h, calendar: msk}}\n"
    "  - name: sales\n    when: {rcpt: sales@example.com}\n    then: {owner: smirnov}\n")


async def send(port: int, raw: bytes, sender: str, rcpt: str) -> str:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) as smtp:
        await smtp.mail(sender)
        await smtp.rcpt(rcpt)
        try:
            code, text = await smtp.data(raw)
        except aiosmtplib.SMTPResponseException as exc:
            code, text = exc.code, exc.message
        return f"{code} {text}"


def ids(root: Path) -> list[str]:
    return sorted(email.message_from_bytes(f.read_bytes())["Message-ID"]
                  for f in maildir_files(root))


async def test_owner_copy_delivered_once_across_a_retry(make_app, tmp_path, registry_url):
    """The owner's Maildir cannot be written: the support copy is stored, the client gets
    451 (the owner's copy is not dropped). Fixed, the MTA's retry gives 250 and the owner
    exactly one copy, support still one; a further retry adds nothing. The next request goes to the next member's mailbox, a follow-up to the sticky
    owner's again, and a rule without copy_to_owner copies to nobody."""
    path = tmp_path / "rules" / "company.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(COPYING, encoding="utf-8")
    app = await make_app(routing=(str(path),), registry=RegistryConfig(registry_url),
                         control=ControlConfig(replies=("replies@example.com",)))
    app.pipeline.clock = lambda: MONDAY
    port = app.bound["smtp"][1]
    mail_root = tmp_path / "var" / "mail"
    ivanov, petrova, smirnov = (mail_root / "people" / p for p in ("ivanov", "petrova", "smirnov"))
    ivanov.parent.mkdir(parents=True, exist_ok=True)
    ivanov.write_bytes(b"")          # a file where ivanov's Maildir should be: writes fail

    first = mail("client@bigco.example", "printer broken", "m1@bigco")
    assert await send(port, first, "client@bigco.example", "support@example.com") == \
        str(REPLY_DELIVERY_TEMPFAIL)
    assert ids(mail_root / "support") == ["<m1@bigco>"]

    ivanov.unlink()
    assert (await send(port, first, "client@bigco.example", "support@example.com")) \
        .startswith("250 2.0.0")
    assert (await send(port, first, "client@bigco.example", "support@example.com")) \
        .startswith("250 2.0.0")
    found = await app.registry.message(message_key("client@bigco.example", first))
    assert sorted((d["target"], d["state"]) for d in found["deliveries"]) == [
        ("person:ivanov", "delivered"), ("support", "delivered")]
    assert ids(mail_root / "support") == ["<m1@bigco>"]
    assert ids(ivanov) == ["<m1@bigco>"]
    copy = email.message_from_bytes(maildir_files(ivanov)[0].read_bytes())
    assert "ivanov@example.com" in copy["X-Mailrouter-Owner"]

    await send(port, mail("other@x.example", "question", "m2@x"), "other@x.example",
               "support@example.com")
    await send(port, mail("client@bigco.example", "Re: printer broken", "m3@bigco", "<m1@bigco>"),
               "client@bigco.example", "support@example.com")
    await send(port, mail("buyer@y.example", "price?", "m4@y"), "buyer@y.example",
               "sales@example.com")
    assert ids(ivanov) == ["<m1@bigco>", "<m3@bigco>"]
    assert ids(petrova) == ["<m2@x>"]
    assert not smirnov.exists()
    assert ids(mail_root / "sales") == ["<m4@y>"]

"""The whole chain a mail admin deploys: swaks -> Postfix -> (LMTP) mailrouter -> (LMTP)
Dovecot. A KOI8-R invoice lands in the user's Finance folder, a plain message in INBOX, an
unknown address bounces at Postfix, and every step is in Postfix's log and our registry."""

from __future__ import annotations

import asyncio
import base64
import email
import sqlite3

from mailrouter.config import DeliveryConfig, Downstream
from tests.test_e2e_postfix import log_lines, start_postfix, swaks, until

ROUTING = """\
domains: [example.com]
mailboxes:
  finance: {lmtp: user@example.test}
  support: {lmtp: bob@example.test}
aliases:
  invoices@example.com: mailbox:finance
  support@example.com:  mailbox:support
rules:
  - name: invoices
    when: {rcpt: invoices@example.com, subject: {contains: [счет, счёт, invoice]}}
    then: {mailbox: finance, folder: Finance, priority: high}
"""


async def test_postfix_mailrouter_dovecot_chain(make_app, postfix, dovecot, tmp_path):
    """Postfix hands three recipients to mailrouter over LMTP in one transaction; mailrouter
    routes invoices@ by the decoded KOI8-R subject into the Finance folder, support@ to the
    inbox of another user, and delivers both into Dovecot over LMTP. (Postfix here sends
    every domain to mailrouter, so its bounce to the outside sender bounces too; a real
    deployment routes only its own domains there.)"""
    dv = await asyncio.to_thread(dovecot, ["user@example.test", "bob@example.test"])
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING, encoding="utf-8")
    app = await make_app(routing=(str(routing),), delivery=DeliveryConfig(
        tmp_path / "var" / "mail", lmtp=Downstream("127.0.0.1", dv.port, timeout=10)))
    mta = await start_postfix(postfix, app.bound["lmtp"][1], lmtp=True)

    subject = "=?koi8-r?B?" + base64.b64encode("Счёт N 7".encode("koi8-r")).decode() + "?="
    out = await swaks(mta.port, "invoices@example.com,support@example.com,nobody@example.com",
                      subject=subject)
    assert out.returncode == 0, out.stdout

    finance = dv.maildir("user@example.test") / ".Finance" / "new"
    inbox = dv.maildir("bob@example.test") / "new"
    await until(lambda: finance.is_dir() and any(finance.iterdir()) and inbox.is_dir()
                and any(inbox.iterdir()), what="both copies in Dovecot")
    stored = email.message_from_bytes(next(finance.iterdir()).read_bytes())
    assert stored["X-Mailrouter-Loop"] and stored["Subject"] == subject
    await until(lambda: any("status=bounced" in l for l in log_lines(mta, "nobody@example.com")),
                what="unknown recipient bounced at Postfix")
    for rcpt in ("invoices@example.com", "support@example.com"):   # Postfix logs a bit later
        await until(lambda r=rcpt: any("status=sent" in l for l in log_lines(mta, r)),
                    what=f"Postfix logged {rcpt} as sent")
    rows = sqlite3.connect(tmp_path / "var" / "registry.db").execute(
        "select rcpt, mailbox, folder, priority from decisions order by rcpt").fetchall()
    assert rows == [("invoices@example.com", "finance", "Finance", "high"),
                    ("support@example.com", "support", None, None)]

"""The reminder or escalation mail of one SLA alert, built with the stdlib email package.

To the person (their name RFC 2047-encoded when not ASCII), From `control.sender` or
`mailrouter@<hostname>`, a subject carrying the request number (as `control.number`
spells it, so a reply to it joins the request's thread by number), a UTF-8 text body
naming the request, the counterparty, the subject, the owner, the due time in the
calendar's zone and the request's page (`web.url`), in `control.language`.
It is marked as machine mail: `Auto-Submitted: auto-generated` (RFC 3834 section 5)
and our trace header with `generated=sla`, so neither our autoreplies nor another
system's answer it, and when it comes back to mailrouter (the owner's address is
ours) it opens no request (robot mail).

Refused: nothing; header values lose CR/LF and other controls (header injection).
"""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid

from ..loops import TRACE_HEADER, header_text

__all__ = ["build_notice"]


def build_notice(*, sender: str, to: str, to_name: str | None, subject: str, body: str,
                 hostname: str, at: datetime) -> bytes:
    """The bytes of one notice, CRLF line ends, ready for the outbox."""
    utf8 = not (to.isascii() and sender.isascii())
    msg = EmailMessage(policy=SMTPUTF8 if utf8 else SMTP)
    msg["From"] = header_text(sender)
    local, _, domain = header_text(to).rpartition("@")
    msg["To"] = Address(header_text(to_name or ""), local, domain)
    msg["Subject"] = header_text(subject)
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = make_msgid(domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"
    msg[TRACE_HEADER] = f"{header_text(hostname)}; generated=sla"
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    return msg.as_bytes()

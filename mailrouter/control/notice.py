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

The assignment notice tells a person that a request was given to them by hand (the web
view's reassign): the request, the counterparty, the subject, the answer's due time and
its page. `Notices` holds what every notice shares (sender, language, the number's
spelling, the web view's address) and writes each kind's subject and body.

Refused: nothing; header values lose CR/LF and other controls (header injection).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid
from typing import Any

from sqlalchemy import Connection

from ..loops import TRACE_HEADER, header_text
from ..registry.models import outbox_insert

__all__ = ["Notices", "build_notice", "queue_notice"]

# The notices' words, by control.language
_WORDS: dict[str, dict[str, str]] = {
    "en": {"remind": "Reminder", "escalate": "Escalation", "no_first": "no first response yet",
           "wrote_again": "the customer wrote again", "no_answer": "Request #{n} has had no answer",
           "since": " since the customer wrote again", "from": "From", "subject": "Subject",
           "owner": "Owner", "nobody": "nobody", "first_due": "First response was due",
           "answer_due": "Answer {n} was due", "reminded": "Reminder sent to",
           "covering": "You get this for {who}, who is away.",
           "assigned": "Assigned to you", "yours": "Request #{n} is now yours: assigned by {who}.",
           "due": "Answer due", "reopened": "reopened by {who}",
           "since_reopened": " since {who} reopened it"},
    "ru": {"remind": "Напоминание", "escalate": "Эскалация", "no_first": "нет первого ответа",
           "wrote_again": "клиент написал снова", "no_answer": "Запрос №{n} остаётся без ответа",
           "since": " после нового письма клиента", "from": "От", "subject": "Тема",
           "owner": "Ответственный", "nobody": "не назначен", "first_due": "Срок первого ответа",
           "answer_due": "Срок ответа {n}", "reminded": "Напоминание отправлено",
           "covering": "Вы получили его вместо {who} (отсутствует).",
           "assigned": "Назначено вам", "yours": "Запрос №{n} теперь ваш: назначил {who}.",
           "due": "Срок ответа", "reopened": "переоткрыт ({who})",
           "since_reopened": " после переоткрытия ({who})"},
}


@dataclass(frozen=True, slots=True)
class Notices:
    """What every notice of this daemon shares; `r` below is a request's row."""

    sender: str                      # From and MAIL FROM
    hostname: str
    language: str = "en"             # control.language
    number: str | None = "[#{n}]"    # control.number
    web_url: str | None = None       # web.url: the request's page is WEB_URL/request/N

    @classmethod
    def of(cls, control: Any, hostname: str, web_url: str | None) -> "Notices":
        """From config.ControlConfig."""
        return cls(control.sender or f"mailrouter@{hostname}", hostname, control.language,
                   control.number, web_url)

    def _tag(self, n: int) -> str:
        return self.number.replace("{n}", str(n)) if self.number else f"#{n}"

    def _due(self, r: dict[str, Any], calendars: Any) -> str:
        due = r["response_due"]
        cal = calendars.get(r["sla_calendar"]) if r["sla_calendar"] else None
        if cal is None:
            return str(due.isoformat())
        return f"{cal.local(due):%Y-%m-%d %H:%M} ({cal.tz.key}) = {due.isoformat()}"

    def _end(self, n: int) -> str:
        return (f"\n{self.web_url}/request/{n}\n" if self.web_url else "") + \
            f"\nmailrouter request show {n}\n"

    def alert(self, r: dict[str, Any], stage: str, reminded: str | None,
              calendars: Any, reopened_by: str | None = None,
              to: str | None = None) -> tuple[str, str]:
        """The reminder's (stage "remind") or escalation's subject and body; `reopened_by`:
        the person who reopened the request by hand (else the customer wrote again); `to`:
        the person it goes to, told when a reminder reaches them for an absent owner."""
        w, first = _WORDS[self.language], r["response_round"] == 1
        what = (w["no_first"] if first else w["reopened"].format(who=reopened_by)
                if reopened_by else w["wrote_again"])
        since = ("" if first else w["since_reopened"].format(who=reopened_by)
                 if reopened_by else w["since"])
        subject = f"{self._tag(r['id'])} {w[stage]}: {what}: {r['subject']}"
        body = (w["no_answer"].format(n=r["id"]) + since + ".\n\n"
                f"{w['from']}: {r['counterparty']}\n{w['subject']}: {r['subject']}\n"
                f"{w['owner']}: {r['owner'] or w['nobody']}\n"
                + (w["covering"].format(who=r["owner"]) + "\n"
                   if stage == "remind" and to and r["owner"] and to != r["owner"] else "")
                + (w["first_due"] if first else w["answer_due"].format(n=r["response_round"]))
                + f": {self._due(r, calendars)}\n"
                + (f"{w['reminded']}: {reminded}\n" if stage == "escalate" else "")
                + self._end(r["id"]))
        return subject, body

    def assigned(self, r: dict[str, Any], by: str, calendars: Any) -> tuple[str, str]:
        """The subject and body telling the new owner that `by` gave them the request."""
        w = _WORDS[self.language]
        subject = f"{self._tag(r['id'])} {w['assigned']}: {r['subject']}"
        body = (w["yours"].format(n=r["id"], who=by) + "\n\n"
                f"{w['from']}: {r['counterparty']}\n{w['subject']}: {r['subject']}\n"
                + (f"{w['due']}: {self._due(r, calendars)}\n"
                   if r["status"] == "open" and r["response_due"] else "")
                + self._end(r["id"]))
        return subject, body


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


def queue_notice(conn: Connection, notices: Notices, dedupe: str, kind: str, message_key: str,
                 address: str, name: str | None, subject: str, body: str, at: datetime) -> None:
    """The notice's mail into the outbox, in the caller's transaction (once per `dedupe`).
    `at` is its Date; the outbox sends by the wall clock, which a scan's `at` may not be."""
    raw = build_notice(sender=notices.sender, to=address, to_name=name, subject=subject,
                       body=body, hostname=notices.hostname, at=at)
    real = datetime.now(timezone.utc)
    conn.execute(outbox_insert(conn.dialect.name), [{
        "dedupe": dedupe, "kind": kind, "message_key": message_key,
        "mail_from": notices.sender, "rcpt": address, "raw": raw, "state": "queued",
        "attempts": 0, "created_at": real, "next_try": real, "sent_at": None, "last_error": ""}])

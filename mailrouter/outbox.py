"""The outbox: mail mailrouter itself sends (autoreplies, DSNs), never lost, never twice.

Two halves. `Outgoing.plan` runs in the pipeline after delivery: it decides, per
recipient, whether an autoreply goes out (autoreply.verdict, with the sender's history
from the registry) and whether a DSN is due (RFC 3464: SMTP, some recipients accepted
and some refused after DATA, so the one 250 hides the refusal), builds the bytes, and
hands them to `Registry.record`, which writes them in the SAME transaction as the
message: a crash before that commit leaves neither (the MTA retries the message), a
crash after it leaves a queued row the worker sends after the restart.

`OutboxWorker` claims due rows (`Registry.outbox_claim`: a lease, and on PostgreSQL
FOR UPDATE SKIP LOCKED so instances never take one row together; on SQLite one process
runs the worker; a row's lease is renewed before it is sent, only while the claim is still
this worker's, and each send ends within it: a batch slower than its lease was sent by a
second instance too), sends each through the configured relay (`outbox.relay`, the MTA's
submission port) and marks it sent right after the relay's 250 for DATA. Refused for
good (5xx to MAIL, RCPT or DATA) -> 'failed'; a 4xx, a refused connection, a relay
refusing the session (5xx greeting or EHLO) or a timeout -> tried again after
`retry_min` doubling up to `retry_max`, until `max_age` ('failed'). An autoreply to a
domain with neither MX nor A/AAAA (or a null MX) is 'suppressed' (dnscheck.py, unless
`autoreply.dns.check` is off); when DNS does not answer, the row waits like a relay outage.

Never twice: the dedupe key is unique, so the MTA retrying the incoming message, or a
second instance answering the same sender in the same period, inserts nothing.
The one window left: the relay accepted the message and we die before our "sent" commit
lands (milliseconds); the row is claimed again after its lease and sent a second time.
A registry outage at that commit (locked, down) is waited out: the "sent" is written
once it is back, before the lease runs out for an outage shorter than the lease.

Refused here: a DSN to <> (RFC 3464 2.1 / RFC 5321 6.1: never answer a bounce), a DSN
on LMTP (every recipient got its own reply), a DSN when the transaction was deferred.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, make_msgid
from typing import Any

import aiosmtplib

from . import metrics
from .autoreply import (
    History,
    Policy,
    bare,
    build_reply,
    generated_trace,
    period_bucket,
    reason_kind,
    sender_key,
    verdict,
)
from .config import OutboxConfig
from .errors import RegistryError
from .values import Reply
from .loops import TRACE_HEADER
from .message import MessageView
from .registry.models import OutboxRecord
from .registry.store import Registry
from .values import Decision
from .routing.snapshot import Snapshot

__all__ = ["OutboxWorker", "Outgoing", "build_dsn"]

log = logging.getLogger("mailrouter.outbox")
DNSCheck = Callable[[str], Awaitable[str]]     # domain -> 'ok' | 'none' | 'unknown' (dnscheck.py)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What the pipeline needs to plan outgoing mail."""

    policy: Policy
    hostname: str
    dsn: bool = True

    async def plan(self, registry: Registry, snap: Snapshot, protocol: str, mail_from: str,
                   view: MessageView, decisions: Sequence[Decision], replies: Sequence[Reply],
                   key: str, now: datetime | None = None,
                   ) -> tuple[list[OutboxRecord], list[Decision]]:
        """(rows for the outbox, decisions with a reason line saying what was sent or why
        not). Raises RegistryError when the history cannot be read (the caller answers 4xx
        as for a failed record, so the MTA retries and nothing is lost)."""
        now = now or datetime.now(UTC)
        out: list[OutboxRecord] = []
        noted = list(decisions)
        history: History | None = None
        queued: set[str] = set()
        for i, (d, r) in enumerate(zip(decisions, replies, strict=True)):
            responder = snap.responders.get(d.autoreply or "")
            if responder is None:
                continue
            v = verdict(responder, view, mail_from, our_domains=snap.book.domains,
                        policy=self.policy, history=None, at=now, refused=not r.ok,
                        rcpt=d.rcpt)
            if v.send:
                if history is None:
                    history = await self._history(registry, snap, mail_from, now)
                v = verdict(responder, view, mail_from, our_domains=snap.book.domains,
                            policy=self.policy, history=history, at=now, rcpt=d.rcpt)
            if v.send and responder.name in queued:
                v = replace(v, send=False, reason="answered once for this message already")
            if v.send:
                try:
                    out.append(self._reply(snap, responder, view, mail_from, d, key, now))
                except Exception as exc:  # the message is stored: no answer, not a 451 for ever
                    log.exception("event=autoreply_not_built responder=%s", responder.name)
                    v = replace(v, send=False, reason=f"cannot write the answer: {_why(exc)}")
            metrics.AUTOREPLIES.labels(*(("queued", "") if v.send
                                         else ("suppressed", reason_kind(v.reason)))).inc()
            if v.send:
                queued.add(responder.name)
                if history is not None:
                    history = History(dict(history.last) | {responder.name: now},
                                      history.today + 1)
            noted[i] = replace(d, reasons=d.reasons + (v.describe(),))
        try:
            dsn = self._dsn(protocol, mail_from, view, decisions, replies, key, now)
        except Exception as exc:  # as for an autoreply: the DSN is lost, the message is not
            log.exception("event=dsn_not_built")
            dsn = None
            noted = [replace(d, reasons=d.reasons + (f"dsn: cannot write it: {_why(exc)}",))
                     if not r.ok else d for d, r in zip(noted, replies, strict=True)]
        if dsn is not None:
            out.append(dsn)
            noted = [replace(d, reasons=d.reasons + (f"dsn: queued to {mail_from}",))
                     if not r.ok else d for d, r in zip(noted, replies, strict=True)]
        return out, noted

    async def _history(self, registry: Registry, snap: Snapshot, mail_from: str,
                       now: datetime) -> History:
        longest = max((r.period for r in snap.responders.values()), default=timedelta(days=7))
        last, today = await registry.autoreply_history(sender_key(mail_from), now - longest,
                                                       now - timedelta(days=1))
        return History(last, today)

    def _reply(self, snap: Snapshot, responder: Any, view: MessageView, mail_from: str,
               d: Decision, key: str, now: datetime) -> OutboxRecord:
        res = snap.book.resolve(d.rcpt)
        old = res.address
        new = res.moved.now if res.moved is not None else old
        to = mail_from.strip().strip("<>")
        raw = build_reply(responder, view, to=to, old=old, new=new, hostname=self.hostname,
                          at=now)
        sender, bucket = sender_key(mail_from), period_bucket(now, responder.period)
        envelope = "" if self.policy.envelope_from == "<>" else self.policy.envelope_from
        return OutboxRecord(f"autoreply:{responder.name}:{sender}:{bucket}", "autoreply",
                            envelope, to, raw, responder.name, sender, bucket,
                            responder.period.total_seconds(), self.policy.daily_cap)

    def _dsn(self, protocol: str, mail_from: str, view: MessageView,
             decisions: Sequence[Decision], replies: Sequence[Reply], key: str,
             now: datetime) -> OutboxRecord | None:
        failed = [(d.rcpt, r) for d, r in zip(decisions, replies, strict=True)
                  if not r.ok and not r.temporary]
        if not failed:
            return None
        why = ("disabled" if not self.dsn else "lmtp" if protocol != "smtp"
               else "null_sender" if not bare(mail_from)
               else "deferred" if any(r.temporary for r in replies)
               else "all_refused" if not any(r.ok for r in replies) else "")
        metrics.DSNS.labels("suppressed" if why else "queued", why).inc()
        if why:
            return None
        to = mail_from.strip().strip("<>")
        raw = build_dsn(view, to=to, failed=failed, hostname=self.hostname, at=now)
        return OutboxRecord(f"dsn:{key}", "dsn", "", to, raw)


def _why(exc: Exception) -> str:
    """One line for a reason: the error's type and first line."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]


def _cte8(ascii_only: bool) -> str:
    """The header line a part of raw UTF-8 needs (RFC 6532 3.5), or nothing."""
    return "" if ascii_only else "Content-Transfer-Encoding: 8bit\r\n"


def build_dsn(view: MessageView, *, to: str, failed: Sequence[tuple[str, Reply]],
              hostname: str, at: datetime) -> bytes:
    """An RFC 3464 delivery status notification: multipart/report with a human part, a
    message/delivery-status part (one block per refused recipient) and the original
    headers (text/rfc822-headers, RFC 6522). When a refused address or the original
    headers are not ASCII: RFC 6533's message/global-delivery-status (`Final-Recipient:
    utf-8; отдел@пример.рф`) and message/global-headers, as Postfix writes its own."""
    boundary = f"=_mailrouter_{secrets.token_hex(12)}"
    human = (f"This is the mail system at host {hostname}.\r\n\r\n"
             "Your message was delivered to some of its recipients, but could not be\r\n"
             "delivered to the ones below. The reason is given after each address.\r\n\r\n"
             + "".join(f"<{rcpt}>: {reply}\r\n" for rcpt, reply in failed))
    status = f"Reporting-MTA: dns; {hostname}\r\nArrival-Date: {format_datetime(at)}\r\n"
    original = view.header_block.rstrip(b"\r\n") + b"\r\n"
    utf8 = not (original.isascii() and all(rcpt.isascii() for rcpt, _ in failed))
    for rcpt, reply in failed:
        kind = "rfc822" if rcpt.isascii() else "utf-8"
        status += (f"\r\nFinal-Recipient: {kind}; {rcpt}\r\nAction: failed\r\n"
                   f"Status: {reply.status}\r\nDiagnostic-Code: smtp; {reply}\r\n")
    head = (f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\nTo: {to}\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\n"
            f"Date: {format_datetime(at)}\r\nMessage-ID: {make_msgid(domain=hostname)}\r\n"
            "Auto-Submitted: auto-replied\r\n"
            f"{TRACE_HEADER}: {generated_trace(hostname, 'dsn')}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/report; report-type=delivery-status;\r\n"
            f" boundary=\"{boundary}\"\r\n\r\n")
    cte = "7bit" if human.isascii() else "8bit"
    status_type, headers_type = (("message/global-delivery-status", "message/global-headers")
                                 if utf8 else ("message/delivery-status", "text/rfc822-headers"))
    return (head.encode() + f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n{human}\r\n".encode()
            + f"--{boundary}\r\nContent-Type: {status_type}\r\n{_cte8(status.isascii())}\r\n"
            f"{status}\r\n".encode()
            + f"--{boundary}\r\nContent-Type: {headers_type}\r\n{_cte8(original.isascii())}\r\n"
            .encode()
            + original + f"\r\n--{boundary}--\r\n".encode())


class OutboxWorker:
    """Sends the queued rows through the relay; one task, started by the daemon."""

    def __init__(self, registry: Registry, config: OutboxConfig, hostname: str,
                 dns_check: DNSCheck | None = None, batch: int = 20) -> None:
        assert config.relay is not None
        self.registry, self.config, self.relay = registry, config, config.relay
        self.hostname, self.dns_check, self.batch = hostname, dns_check, batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.lease = max(60.0, 4 * config.timeout)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox")

    def wake(self) -> None:
        """New rows were committed: look now instead of at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """End the sending task. It is cancelled again until it ends: on Python 3.11 a
        cancellation can be lost, as asyncio.wait_for (aiosmtplib reads every reply of the
        relay with it) returns a result that came in the same turn and drops the cancel; the
        worker went on polling and the daemon's shutdown waited for it for ever."""
        task, self._task = self._task, None
        if task is None:
            return
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        if not task.cancelled() and task.exception() is not None:
            log.error("event=outbox_failed error=%r", task.exception())

    async def _run(self) -> None:
        poll = min(5.0, self.config.retry_min)
        while True:
            try:
                rows = await self.registry.outbox_claim(self.batch, self.lease)
            except RegistryError as exc:
                log.warning("event=outbox_claim_failed error=%r", str(exc))
                rows = []
            if rows:
                try:
                    await self.send_rows(rows)
                    continue
                except Exception:  # noqa: BLE001 (their lease brings the rows back)
                    # a bug in sending one row ended this task: nothing went out again,
                    # autoreplies and DSNs piled up `queued`, until a restart
                    log.exception("event=outbox_crashed rows=%d", len(rows))
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for took a stop's cancellation
            # that came with a wake for the event's result, and the stop waited forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._wake.wait()

    async def send_rows(self, rows: list[dict[str, Any]]) -> None:
        """Send `rows` (claimed together, one lease) in turn. A row whose lease is half
        gone is renewed first, and only while it is still this claim's: a slow relay (a
        content filter taking seconds a message) made a batch outlast its lease, and a
        second instance claimed and sent the rows still waiting in it, so they went out
        twice. Each send then ends before the lease does (`_left`)."""
        smtp: aiosmtplib.SMTP | None = None
        try:
            for row in rows:
                try:
                    held = await self._hold(row)
                except RegistryError as exc:   # the rest come back after their lease
                    log.warning("event=outbox_renew_failed id=%s error=%r", row["id"], str(exc))
                    return
                if not held:
                    log.info("event=outbox_claimed_elsewhere id=%s rcpt=%s", row["id"],
                             row["rcpt"])
                    continue
                smtp = await self._send_one(row, smtp)
        finally:
            if smtp is not None and smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()

    async def _hold(self, row: dict[str, Any]) -> bool:
        """Is `row` still this worker's, with half its lease or more left? Renewed when
        less is left; False when another worker has it now, or it was settled."""
        if self._left(row) >= self.lease / 2:
            return True
        until = await self.registry.outbox_renew(row["id"], row["next_try"], self.lease)
        if until is None:
            return False
        row["next_try"] = until
        return True

    def _left(self, row: dict[str, Any]) -> float:
        """Seconds until `row`'s lease runs out, less a tenth of a lease to settle it in."""
        until: datetime = row["next_try"]
        return (until - datetime.now(UTC)).total_seconds() - self.lease / 10

    async def _send_one(self, row: dict[str, Any],
                        smtp: aiosmtplib.SMTP | None) -> aiosmtplib.SMTP | None:
        if row["kind"] == "autoreply" and self.dns_check is not None:
            domain = row["rcpt"].rpartition("@")[2]
            found = await self.dns_check(domain)
            if found == "none":
                await self._settle(row, "suppressed", f"{domain} takes no mail: no MX nor "
                                                      "A/AAAA records, or a null MX (forged "
                                                      "sender?)")
                log.info("event=outbox_suppressed id=%s rcpt=%s why=no_mx", row["id"], row["rcpt"])
                return smtp
            if found != "ok":
                await self._retry(row, f"DNS did not answer for {domain}")
                return smtp
        try:
            # within the lease: a send still running when it ran out could be another
            # worker's too (each step has outbox.timeout, a whole send had no bound)
            async with asyncio.timeout(max(1.0, self._left(row))):
                if smtp is None or not smtp.is_connected:
                    smtp = aiosmtplib.SMTP(hostname=self.relay.host, port=self.relay.port,
                                           timeout=self.config.timeout, start_tls=False,
                                           local_hostname=self.hostname)
                    await smtp.connect()
                    await smtp.ehlo()  # the extensions are known only after EHLO: without
                    #                    it BODY=8BITMIME was never declared on a new connection
                raw = bytes(row["raw"])
                head = raw.split(b"\r\n\r\n", 1)[0]
                options: list[str] = []
                if not (row["rcpt"].isascii() and row["mail_from"].isascii()
                        and head.isascii()):
                    # RFC 6531 3.4: a non-ASCII address or a raw UTF-8 header (RFC 6532, the
                    # From of an answer from старый@пример.рф to an ASCII sender) needs SMTPUTF8
                    if not smtp.supports_extension("smtputf8"):
                        return await self._no_smtputf8(row, smtp)
                    options.append("SMTPUTF8")
                if not raw.isascii() and smtp.supports_extension("8bitmime"):
                    options.append("BODY=8BITMIME")
                await smtp.sendmail(row["mail_from"], [row["rcpt"]], raw, mail_options=options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return await self._refused(row, smtp, exc.recipients[0].code, str(exc.recipients[0]))
        except (aiosmtplib.SMTPConnectResponseError, aiosmtplib.SMTPHeloError) as exc:
            # The relay refused the session, not this mail (`554 Client host rejected: not in
            # mynetworks` as it greets, a 5xx to EHLO): every queued answer and DSN was
            # marked failed at its first attempt, lost to a relay's configuration, fixed a
            # minute later. Tried again like an outage, as Postfix's smtp_skip_5xx_greeting
            # defers such mail, until max_age.
            if smtp is not None:
                smtp.close()
            log.error("event=outbox_relay_refused_session relay=%s code=%s error=%r", self.relay,
                      exc.code, exc.message)
            await self._retry(row, f"relay {self.relay} refused the session: {exc.code} "
                                   f"{exc.message}")
            return None
        except aiosmtplib.SMTPResponseException as exc:
            return await self._refused(row, smtp, exc.code, f"{exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if smtp is not None:
                smtp.close()        # mid-command: of no further use
            await self._retry(row, f"relay {self.relay}: {type(exc).__name__}: {exc}")
            return None
        # Marked sent right after the relay's 250 for DATA: the only window for a second
        # copy is a crash between that 250 and this commit.
        await self._settle(row, "sent", "")
        log.info("event=outbox_sent id=%s kind=%s rcpt=%s", row["id"], row["kind"], row["rcpt"])
        return smtp

    async def _no_smtputf8(self, row: dict[str, Any],
                           smtp: aiosmtplib.SMTP) -> aiosmtplib.SMTP:
        """The relay does not offer SMTPUTF8 and this mail needs it: a permanent failure with
        the fix (it was retried until outbox.max_age with aiosmtplib's SMTPNotSupported)."""
        error = (f"relay {self.relay} does not offer SMTPUTF8, which this {row['kind']} to "
                 f"{row['rcpt']} needs (a non-ASCII address or header, RFC 6531): set "
                 f"smtputf8_enable = yes in the relay's Postfix main.cf (outbox.relay in "
                 f"config.yaml names the relay)")
        await self._settle(row, "failed", error)
        log.warning("event=outbox_no_smtputf8 id=%s kind=%s rcpt=%s error=%r", row["id"],
                    row["kind"],
                    row["rcpt"], error)
        return smtp

    async def _refused(self, row: dict[str, Any], smtp: aiosmtplib.SMTP | None, code: int,
                       text: str) -> aiosmtplib.SMTP | None:
        if 500 <= code < 600:
            await self._settle(row, "failed", text)
        else:
            await self._retry(row, text)
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.rset()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
                return None
        return smtp

    async def _retry(self, row: dict[str, Any], error: str) -> None:
        now = datetime.now(UTC)
        if now - row["created_at"] > timedelta(seconds=self.config.max_age):
            await self._settle(row, "failed", f"gave up after {row['attempts']} attempts: {error}")
            return
        delay = min(self.config.retry_max, self.config.retry_min * 2 ** max(0, row["attempts"] - 1))
        log.warning("event=outbox_retry id=%s rcpt=%s in=%.0fs error=%r", row["id"], row["rcpt"],
                    delay, error)
        await self._settle(row, "queued", error, now + timedelta(seconds=delay))

    async def _settle(self, row: dict[str, Any], state: str, error: str,
                      retry_at: datetime | None = None) -> None:
        metrics.OUTBOX_ATTEMPTS.labels(row["kind"], "retry" if retry_at is not None
                                       else state).inc()
        wait = 0.5
        while True:
            try:
                await self.registry.outbox_settle(row["id"], state, error, retry_at)
                return
            except RegistryError as exc:  # the lease brings the row back; say so
                log.error("event=outbox_settle_failed id=%s state=%s error=%r", row["id"],
                          state, str(exc))
                if state != "sent":
                    return        # tried again after the lease: nothing goes out twice
            # The relay has it: a row left to its lease went out a second time once the
            # lease ran out (a registry locked or down for a second at this commit, not only
            # a crash). Tried again until it lands; a stop cancels the wait. Nothing else
            # could be sent meanwhile anyway: the claims need the registry too.
            await asyncio.sleep(wait)
            wait = min(wait * 2, 5.0)

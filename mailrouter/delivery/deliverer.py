"""Deliver one message to its final targets, whatever backend each mailbox uses.

Each copy is our trace headers (Received, the loop-guard header, Delivered-To)
followed by the raw bytes exactly as received. Maildir targets are written one
copy each by `Maildir`. Downstream targets go in ONE transaction per message per
downstream: every `lmtp` target of the message is one RCPT in one LMTP transaction
(a folder as `user+Folder@`, for Dovecot's `lmtp_save_to_detail_mailbox`, or, for a
mailbox with `sieve_folders: true`, in an `X-Mailrouter-Folder` line for Sieve), every
`smtp` target one RCPT in one SMTP transaction; that copy carries a loop-guard and
a Delivered-To line per envelope recipient it is for, and a Received `for` clause
only when it is for one (RFC 5321 4.4). The clients cap their connections
(`delivery.max_connections_per_downstream`).

The result per target is a Reply, never an exception: a temporary fault is a 4xx
Reply, so the caller answers 4xx. A downstream's reply is never passed on: it is
mapped onto ours (`replies.ours`: 421 becomes 451, our text) and its original is
logged (`event=downstream_reply`).

A 5xx refusing a mailbox our configuration names (an unknown Dovecot user) is our
configuration's fault, not the sender's: it is held as `451 4.3.0` until the
message was first seen `delivery.hold_permanent_failures` ago (the registry keeps
the first attempt's time), logged at error level
(`event=downstream_refused_configured_mailbox`) and counted
(`mailrouter_downstream_refused_configured_mailbox_total`); then the mapped 5xx
is given. Refusals of the content (X.6.*, too big) are given at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .. import metrics
from ..addresses import Mailbox
from ..errors import DeliveryError, RegistryError
from ..loops import header_text, trace_headers
from ..values import REPLY_NO_DOWNSTREAM, Reply, Target
from .maildir import Maildir, Place, stored
from .replies import DELIVERED, HELD, ours, refuses_mailbox
from .smtp import LOCAL_REFUSALS, PartialDeliveryError, TransactionClient

if TYPE_CHECKING:
    from ..config import DeliveryConfig

__all__ = ["DELIVERED", "Copy", "Deliverer", "FirstSeen", "Received"]

log = logging.getLogger(__name__)

Received = Callable[[str | None], bytes]            # the Received: line, for one rcpt or several
FirstSeen = Callable[[], Awaitable[datetime | None]]  # when the message was first seen, if before


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy to make: where, for which envelope recipient, with which trace."""

    target: Target
    rcpt: str


@dataclass(frozen=True, slots=True)
class _Answer:
    """A downstream target's outcome: our reply, and the downstream's own when it answered."""

    reply: Reply
    downstream: Reply | None = None


_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


def quote_local(local: str) -> str:
    """A local part as RFC 5321 4.1.2 wants it: as is when it is a dot-atom, else a
    quoted string ("user+Clients VIP"), so a folder with a space or a bracket still makes
    a valid RCPT TO path."""
    if _DOT_ATOM.match(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Deliverer:
    def __init__(self, cfg: DeliveryConfig, hostname: str) -> None:
        self.cfg, self.hostname = cfg, hostname
        self._maildirs: dict[Path, Maildir] = {}
        self._roots: dict[str, Path] = {}          # mailbox.where -> its Maildir root
        self._date: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), "")  # a second -> its RFC 5322 date
        self._clients: dict[str, TransactionClient] = {}
        cap = cfg.max_connections_per_downstream
        if cfg.lmtp:
            from .lmtp import LMTPClient
            self._clients["lmtp"] = LMTPClient(replace(cfg.lmtp, helo=hostname), cap)
        if cfg.smtp:
            from .smtp import SMTPClient
            self._clients["smtp"] = SMTPClient(replace(cfg.smtp, helo=hostname), cap)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        for md in self._maildirs.values():
            md.close()
        self._maildirs.clear()

    def received(self, helo: str, peer: str, proto: str, qid: str, rcpt: str | None) -> bytes:
        """Our Received: line (RFC 5321 4.4); the `for` clause only for a single recipient."""
        helo = header_text(helo)   # the intake refuses controls too
        now = self._date_text(datetime.now(UTC))
        rcpt_for = f"\r\n\tfor <{header_text(rcpt)}>" if rcpt is not None else ""
        return (f"Received: from {helo} ({peer})\r\n\tby {self.hostname} (mailrouter) with {proto}"
                f" id {qid}{rcpt_for}; {now}\r\n").encode("utf-8", "surrogateescape")

    def _date_text(self, at: datetime) -> str:
        """format_datetime(at), made once per second (it shows no fraction of one)."""
        second = at.replace(microsecond=0)
        if self._date[0] != second:
            self._date = (second, format_datetime(second))
        return self._date[1]

    async def deliver(self, copies: Sequence[Copy], mailboxes: Mapping[str, Mailbox], raw: bytes,
                      mail_from: str, key: str, received: Received, smtputf8: bool = False,
                      first_seen: FirstSeen | None = None, qid: str = "-") -> dict[str, Reply]:
        """Make every copy; return Reply per target key."""
        local = [c for c in copies if mailboxes[c.target.mailbox].kind == "maildir"]
        remote: dict[str, list[Copy]] = {}
        for c in copies:
            kind = mailboxes[c.target.mailbox].kind
            if kind != "maildir":
                remote.setdefault(kind, []).append(c)

        async def one(c: Copy) -> dict[str, _Answer]:
            data = (received(c.rcpt) + trace_headers(self.hostname, c.rcpt), raw)  # no joined copy
            started = time.perf_counter()
            reply = await _guarded(c.target.key, self._maildir(c.target, mailboxes[c.target.mailbox],
                                                               data, key))
            metrics.child(metrics.DELIVERY_SECONDS, "maildir").observe(time.perf_counter() - started)
            _count("maildir", reply)
            return {c.target.key: _Answer(reply)}

        async def group(kind: str, group: list[Copy]) -> dict[str, _Answer]:
            return await self._downstream(kind, group, mailboxes, raw, mail_from, received,
                                          smtputf8, qid)
        work = [one(c) for c in local] + [group(k, g) for k, g in remote.items()]
        # one copy (most mail): awaited here, without a task of its own and its loop turn
        parts = [await work[0]] if len(work) == 1 else await asyncio.gather(*work)
        answers = {k: a for part in parts for k, a in part.items()}
        refused = {k: a for k, a in answers.items()
                   if a.downstream is not None and refuses_mailbox(a.downstream)}
        results = {k: a.reply for k, a in answers.items()}
        if refused:
            results.update(await self._hold(refused, first_seen, qid))
        return results

    async def _maildir(self, target: Target, mailbox: Mailbox, data: Sequence[bytes],
                       key: str) -> Reply:
        md = self._maildir_at(self._root(mailbox))
        await md.deliver(data, _copy_id(key, target), target.folder)
        return DELIVERED

    def _maildir_at(self, root: Path) -> Maildir:
        md = self._maildirs.get(root)
        if md is None:
            top = self.cfg.maildir_root if root.is_relative_to(self.cfg.maildir_root) \
                and root != self.cfg.maildir_root else None
            md = self._maildirs[root] = Maildir(root, self.hostname, top)
        return md

    def _root(self, mailbox: Mailbox) -> Path:
        root = self._roots.get(mailbox.where)
        if root is None:
            where = Path(mailbox.where)
            root = self._roots[mailbox.where] = (
                where if where.is_absolute() else self.cfg.maildir_root / where)
        return root

    def places(self, copies: Sequence[Copy], mailboxes: Mapping[str, Mailbox],
               key: str) -> list[Place]:
        """Where each Maildir copy of `copies` will be (intents.py); others are not listed."""
        out: list[Place] = []
        for c in copies:
            mailbox = mailboxes[c.target.mailbox]
            if mailbox.kind != "maildir":
                continue
            try:   # the directory the copy goes to, as its Maildir names it (made once)
                box = self._maildir_at(self._root(mailbox)).box(c.target.folder)
            except ValueError:
                continue             # refused by the Maildir too: no copy will exist
            out.append(Place(c.target.key, str(box), f"mr{_copy_id(key, c.target)}"))
        return out

    def stored(self, place: Place) -> bool:
        """The copy at `place` exists (intents.py's reconcile)."""
        return stored(Path(place.box), place.name, Maildir(Path(place.box), self.hostname).host)

    # Downstreams: one transaction per message per downstream

    async def _downstream(self, kind: str, copies: list[Copy], mailboxes: Mapping[str, Mailbox],
                          raw: bytes, mail_from: str, received: Received, smtputf8: bool,
                          qid: str) -> dict[str, _Answer]:
        client = self._clients.get(kind)
        if client is None:
            no = REPLY_NO_DOWNSTREAM.with_text(f"No {kind} downstream configured")
            return {c.target.key: _Answer(no) for c in copies}
        addrs = {c.target.key: self._address(c.target, mailboxes[c.target.mailbox]) for c in copies}
        rcpts = list(dict.fromkeys(c.rcpt for c in copies))
        data = (received(rcpts[0] if len(rcpts) == 1 else None)     # sent as if joined
                + b"".join(trace_headers(self.hostname, r) for r in rcpts)
                + sieve_folder_lines(copies, mailboxes), raw)
        fallback: Reply | None = None
        started = time.perf_counter()
        try:
            replies = await client.deliver(mail_from, list(dict.fromkeys(addrs.values())), data,
                                           smtputf8=smtputf8)
        except PartialDeliveryError as exc:   # LMTP: some recipients answered before the break
            log.warning("event=delivery_failed qid=%s backend=%s error=%r", qid, kind, str(exc))
            replies, fallback = exc.replies, exc.reply
        except DeliveryError as exc:
            log.warning("event=delivery_failed qid=%s backend=%s error=%r", qid, kind, str(exc))
            replies, fallback = {}, exc.reply
        except Exception:  # a bug in a backend must defer, never bounce or crash
            log.exception("event=delivery_crashed qid=%s backend=%s", qid, kind)
            replies, fallback = {}, DeliveryError.reply
        metrics.child(metrics.DELIVERY_SECONDS, kind).observe(time.perf_counter() - started)
        out: dict[str, _Answer] = {}
        for target, addr in addrs.items():
            got = replies.get(addr)
            if got is None:
                out[target] = _Answer(fallback or DeliveryError.reply)
            elif got in LOCAL_REFUSALS:       # refused by our own client, nothing was sent
                out[target] = _Answer(got)
            else:
                out[target] = _Answer(ours(got), got)
                level = logging.DEBUG if got.ok else logging.WARNING
                log.log(level, "event=downstream_reply qid=%s backend=%s target=%s downstream=%r "
                        "reply=%r", qid, kind, target, str(got), str(out[target].reply))
            metrics.child(metrics.DOWNSTREAM_REPLIES, kind, _result(out[target].reply)).inc()
            _count(kind, out[target].reply)
        return out

    def _address(self, target: Target, mailbox: Mailbox) -> str:
        addr = mailbox.where
        if mailbox.sieve_folders:      # the folder travels in X-Mailrouter-Folder
            return addr
        if target.folder and mailbox.kind == "lmtp":
            if target.folder.isascii():
                local, _, domain = addr.rpartition("@")
                addr = f"{quote_local(f'{local}+{target.folder}')}@{domain}"
            else:
                # Dovecot reads +detail as a UTF-8 name but offers no SMTPUTF8, so a
                # non-ASCII folder cannot travel; the inbox beats a bounce or a misfile.
                log.error("event=folder_dropped mailbox=%s folder=%r reason='non-ASCII folder "
                          "over LMTP'", target.mailbox, target.folder)
        return addr

    # Held refusals of configured mailboxes

    async def _hold(self, refused: dict[str, _Answer], first_seen: FirstSeen | None,
                    qid: str) -> dict[str, Reply]:
        """HELD while the message is younger than the hold, the mapped 5xx after it."""
        hold = self.cfg.hold_permanent_failures
        first: datetime | None = None
        if hold > 0 and first_seen is not None:
            try:
                first = await first_seen()
            except RegistryError as exc:     # cannot tell how long it was held: defer
                log.error("event=registry_unavailable qid=%s error=%r", qid, str(exc))
                return {k: exc.reply for k in refused}
        now = datetime.now(UTC)
        age = (now - first).total_seconds() if first is not None else 0.0
        held = age < hold
        out: dict[str, Reply] = {}
        for target, answer in refused.items():
            out[target] = HELD if held else answer.reply
            log.error("event=downstream_refused_configured_mailbox qid=%s target=%s downstream=%r "
                      "reply=%r first_seen=%s held_for=%ds hold=%ds", qid, target,
                      str(answer.downstream), str(out[target]),
                      (first or now).isoformat(timespec="seconds"), age, hold)
            metrics.REFUSED_CONFIGURED.labels("held" if held else "given_up").inc()
            if held:
                metrics.TEMPFAILS.labels("held").inc()
        return out


# Folders by Sieve: Dovecot 2.3's LMTP has no SMTPUTF8, so «Финансы» cannot travel as
# user+Финансы@. For an lmtp mailbox with sieve_folders the RCPT is the plain address and
# the folder goes in a header line naming that address; deploy/dovecot/mailrouter-folders.sieve
# (sieve_before) files by it. RFC 2047 encoded, since the header must stay 7-bit for a
# downstream without SMTPUTF8; Sieve compares decoded values (RFC 5228 2.7.2). INBOX is
# written too, so our line is always the first for its address and a forged one is ignored.
FOLDER_HEADER = "X-Mailrouter-Folder"


def folder_line(address: str, folder: str | None) -> bytes:
    """`X-Mailrouter-Folder: ADDRESS FOLDER` with the folder RFC 2047-encoded if need be."""
    name = header_text(folder or "") or "INBOX"
    if name.isascii() and "=?" not in name and name.isprintable():
        text = name
    else:
        text = Header(name, "utf-8").encode(linesep="\r\n")
    return f"{FOLDER_HEADER}: {header_text(address)} {text}\r\n".encode("ascii", "replace")


def sieve_folder_lines(copies: Sequence[Copy], mailboxes: Mapping[str, Mailbox]) -> bytes:
    """One line per sieve_folders mailbox of this transaction (the first folder wins when
    one message has two folders of the same mailbox: it is one RCPT, so one copy)."""
    lines: dict[str, bytes] = {}
    for c in copies:
        box = mailboxes[c.target.mailbox]
        if not box.sieve_folders:
            continue
        if box.where in lines:
            log.warning("event=folder_merged mailbox=%s folder=%r: one copy per sieve_folders "
                        "mailbox and message", c.target.mailbox, c.target.folder)
            continue
        lines[box.where] = folder_line(box.where, c.target.folder)
    return b"".join(lines.values())


async def _guarded(target: str, work: Awaitable[Reply]) -> Reply:
    """A backend's exception as the Reply the caller answers."""
    try:
        return await work
    except DeliveryError as exc:
        log.warning("event=delivery_failed target=%s error=%r", target, str(exc))
        return exc.reply
    except Exception:  # a bug in a backend must defer, never bounce or crash
        log.exception("event=delivery_crashed target=%s", target)
        return DeliveryError.reply


def _copy_id(key: str, target: Target) -> str:
    """A Maildir copy's id: its message and its target, nothing of the instance."""
    return hashlib.sha256(f"{key}\0{target.key}".encode()).hexdigest()[:40]


def _count(backend: str, reply: Reply) -> None:
    """One copy's outcome (a 5xx that _hold turns into 451 counts as `held` there)."""
    metrics.child(metrics.DELIVERIES, backend, _result(reply)).inc()
    if reply.temporary:
        metrics.child(metrics.TEMPFAILS, metrics.copy_tempfail_cause(backend, reply)).inc()


def _result(reply: Reply) -> str:
    return "ok" if reply.ok else "tempfail" if reply.temporary else "permfail"


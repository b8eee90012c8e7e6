"""Deliver one message to its final targets, whatever backend each mailbox uses.

Each target (mailbox + folder) gets one copy: our trace headers (Received,
the loop-guard header, Delivered-To) followed by the raw bytes exactly as
received. Maildir targets are written by `Maildir`; `lmtp` mailboxes go to the
configured downstream LMTP (a folder as `user+Folder@`, for Dovecot's
`lmtp_save_to_detail_mailbox`); `smtp` mailboxes to the downstream MTA.
Targets are delivered concurrently; the result per target is a Reply, never
an exception: a temporary fault is a 4xx Reply, so the caller answers 4xx.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass, replace
from email.utils import format_datetime
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from ..addresses import Mailbox
from ..errors import DeliveryError, Reply
from ..loops import header_text, trace_headers
from ..routing.decision import Target
from .maildir import Maildir

if TYPE_CHECKING:
    from ..config import DeliveryConfig

__all__ = ["Deliverer", "Copy", "DELIVERED"]

log = logging.getLogger(__name__)
DELIVERED = Reply(250, "2.0.0", "Delivered")


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy to make: where, for which envelope recipient, with which trace."""

    target: Target
    rcpt: str


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
        self._lmtp = self._smtp = None
        if cfg.lmtp:
            from .lmtp import LMTPClient
            self._lmtp = LMTPClient(replace(cfg.lmtp, helo=hostname))
        if cfg.smtp:
            from .smtp import SMTPClient
            self._smtp = SMTPClient(replace(cfg.smtp, helo=hostname))

    async def close(self) -> None:
        for client in (self._lmtp, self._smtp):
            if client is not None:
                await client.close()
        for md in self._maildirs.values():
            md.close()
        self._maildirs.clear()

    def received(self, helo: str, peer: str, proto: str, qid: str, rcpt: str) -> bytes:
        """Our Received: line (RFC 5321 4.4), one per copy."""
        helo, rcpt = header_text(helo), header_text(rcpt)   # the intake refuses controls too
        now = format_datetime(datetime.now(timezone.utc))
        return (f"Received: from {helo} ({peer})\r\n\tby {self.hostname} (mailrouter) with {proto}"
                f" id {qid}\r\n\tfor <{rcpt}>; {now}\r\n").encode("utf-8", "surrogateescape")

    async def deliver(self, copies: Sequence[Copy], mailboxes: Mapping[str, Mailbox], raw: bytes,
                      mail_from: str, key: str, received: Mapping[str, bytes],
                      smtputf8: bool = False) -> dict[str, Reply]:
        """Make every copy; return Reply per target key."""
        async def one(c: Copy) -> tuple[str, Reply]:
            data = received[c.rcpt] + trace_headers(self.hostname, c.rcpt) + raw
            try:
                reply = await self._deliver_one(c.target, mailboxes[c.target.mailbox], data,
                                                mail_from, key, smtputf8)
            except DeliveryError as exc:
                log.warning("event=delivery_failed target=%s error=%r", c.target.key, str(exc))
                reply = exc.reply
            except Exception:  # a bug in a backend must defer, never bounce or crash
                log.exception("event=delivery_crashed target=%s", c.target.key)
                reply = DeliveryError.reply
            return c.target.key, reply
        results = await asyncio.gather(*(one(c) for c in copies))
        return dict(results)

    async def _deliver_one(self, target: Target, mailbox: Mailbox, data: bytes, mail_from: str,
                           key: str, smtputf8: bool) -> Reply:
        kind, where = mailbox.kind, mailbox.where
        if kind == "maildir":
            root = Path(where) if Path(where).is_absolute() else self.cfg.maildir_root / where
            md = self._maildirs.get(root)
            if md is None:
                md = self._maildirs[root] = Maildir(root, self.hostname)
            copy_id = hashlib.sha256(f"{key}\0{target.key}".encode()).hexdigest()[:40]
            await md.deliver(data, copy_id, target.folder)
            return DELIVERED
        client = self._lmtp if kind == "lmtp" else self._smtp
        if client is None:
            return Reply(451, "4.3.5", f"No {kind} downstream configured")
        addr = where
        if target.folder and kind == "lmtp":
            if target.folder.isascii():
                local, _, domain = where.rpartition("@")
                addr = f"{quote_local(f'{local}+{target.folder}')}@{domain}"
            else:
                # Dovecot reads +detail as a UTF-8 name but offers no SMTPUTF8, so a
                # non-ASCII folder cannot travel; the inbox beats a bounce or a misfile.
                log.error("event=folder_dropped mailbox=%s folder=%r reason='non-ASCII folder "
                          "over LMTP'", target.mailbox, target.folder)
        replies = await client.deliver(mail_from, [addr], data, smtputf8=smtputf8)
        return replies[addr]

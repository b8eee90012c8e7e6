"""LMTP delivery (RFC 2033) to a downstream mail store such as Dovecot.

LMTP is SMTP with LHLO instead of EHLO and, after the final dot, one reply per
accepted recipient in RCPT order (RFC 2033 4.2): one recipient's mailbox can be
full (452) while another's took the message (250).  `deliver` returns exactly
one Reply per recipient: the RCPT refusal, or that recipient's reply after DATA.

The transaction engine, the connection pool, the timeouts, what is refused and
the known limits are shared with SMTP and documented in
`mailrouter.delivery.smtp`.  Specific to LMTP: when the connection breaks after
some per-recipient replies were read, PartialDeliveryError carries them, so the
caller can record who already has the message instead of delivering it twice.

Dovecot offers PIPELINING, ENHANCEDSTATUSCODES and 8BITMIME but no SMTPUTF8:
a non-ASCII recipient gets 550 5.6.7 without a round trip to Dovecot.
"""

from __future__ import annotations

from mailrouter.delivery.smtp import PartialDeliveryError, Session, TransactionClient, in_step
from mailrouter.values import Downstream, Reply

__all__ = ["Downstream", "LMTPClient", "PartialDeliveryError"]


class LMTPClient(TransactionClient):
    """LMTP client: one Reply per recipient, pooled connections."""

    greeting_verb = "LHLO"

    async def _data_replies(self, s: Session, accepted: list[str],
                            final: dict[str, Reply]) -> None:
        """RFC 2033 4.2: one reply per accepted recipient, in RCPT order."""
        for at, rcpt in enumerate(accepted):
            reply = final[rcpt] = in_step(await s.reply())
            if reply.code == 421:
                # the server is closing (RFC 5321 3.8): no more replies come, and waiting
                # for them held the copy until the timeout. The rest are deferred with it.
                final.update({r: reply for r in accepted[at + 1:]})
                return

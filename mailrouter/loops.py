"""Run-time loop defence, for loops that cross other systems.

The alias graph is refused at load time if it has a cycle (`addressbook`), but a
forward to an outside mailbox that forwards back, or two instances pointing at
each other, can only be seen on the message itself. Each copy we deliver carries
(`trace_headers`, prepended by delivery):

    X-Mailrouter-Loop: <hostname>; rcpt=<rcpt>
    Delivered-To: <rcpt>

and `detect_loop` checks an incoming message for one envelope recipient:

- our own trace header for (this hostname, this rcpt): the copy we delivered
  came back -> 554 5.4.6, conclusive (RFC 5321 section 6.3; RFC 3463 5.4.6);
- more than `max_received` Received headers -> 554 5.4.6 (the RFC 5321 6.3
  hop count; Postfix's hopcount_limit does the same);
- a Delivered-To equal to this rcpt but no trace header of ours for it ->
  554 5.4.6 (`REPLY_DELIVERED_TO`), as Postfix's local(8) refuses mail that
  already carries its own Delivered-To ("mail forwarding loop"). Delivered-To is
  written by many delivery agents and also survives on restored, re-imported or
  redirected mail, so it is weaker evidence than our trace header; but a 4xx
  (what we answered before) only left the message in the sender's queue for the
  queue lifetime (days) and then bounced it with a vague "delivery time expired",
  so the sender learned nothing for days. A 5xx now bounces at once with a
  reason a person can act on (remove the stale Delivered-To and resend).
- A Delivered-To or trace header for a *different* address (stale, from an earlier
  life of the message) is ignored, as is our trace header from another host
  (a sibling instance: the loop, if any, is caught when it reaches us again).

Addresses are compared with the domain in canonical Unicode form and the local
part lower-cased. Known limit: with `local_part_case: sensitive`, two addresses
differing only in case are treated as one here (a false 554 at worst).
"""

from __future__ import annotations

import re
from typing import Protocol

from .addressbook.canon import canonical_domain
from .values import REPLY_DELIVERED_TO, LoopEvidence, LoopKind

__all__ = ["TRACE_HEADER", "REPLY_DELIVERED_TO", "LoopEvidence", "trace_headers", "detect_loop",
           "header_text"]

TRACE_HEADER = "X-Mailrouter-Loop"


class HeaderView(Protocol):
    """What detect_loop reads of a `message.MessageView`."""

    @property
    def received_count(self) -> int: ...
    @property
    def delivered_to(self) -> list[str]: ...
    def headers(self, name: str) -> list[str]: ...


_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def header_text(text: str) -> str:
    """No CR, LF or other controls in a header we write (header injection)."""
    return _CONTROLS.sub("", text).strip()


def _norm(address: str) -> str:
    a = address.strip().strip("<>").strip()
    local, at, domain = a.rpartition("@")
    return f"{local.lower()}@{canonical_domain(domain)}" if at else a.lower()


def trace_headers(hostname: str, rcpt: str) -> bytes:
    """The header lines (CRLF) prepended to each copy delivered for `rcpt`."""
    host, addr = header_text(hostname), header_text(rcpt).strip("<>")
    return (f"{TRACE_HEADER}: {host}; rcpt={addr}\r\n"
            f"Delivered-To: {addr}\r\n").encode("utf-8")


def _parse_trace(value: str) -> tuple[str, str] | None:
    host, sep, rest = value.partition(";")
    if not sep:
        return None
    for param in rest.split(";"):
        name, eq, addr = param.strip().partition("=")
        if eq and name.strip().lower() == "rcpt":
            return host.strip().lower(), _norm(addr)
    return None


def detect_loop(view: HeaderView, rcpt: str, *, hostname: str,
                max_received: int) -> LoopEvidence | None:
    """The evidence when this message, for this recipient, looks like it has been here
    before; its `.reply` is 554 5.4.6 (REPLY_LOOP, or REPLY_DELIVERED_TO for a Delivered-To)."""
    me, host = _norm(rcpt), header_text(hostname).lower()
    for value in view.headers(TRACE_HEADER):
        parsed = _parse_trace(value)
        if parsed == (host, me):
            return LoopEvidence(LoopKind.TRACE, f"{TRACE_HEADER}: {value.strip()} "
                                                "(this copy was delivered here before)")
    count = view.received_count
    if count > max_received:
        return LoopEvidence(LoopKind.HOPS, f"{count} Received headers (limit {max_received})")
    if any(_norm(d) == me for d in view.delivered_to):
        return LoopEvidence(LoopKind.DELIVERED_TO, f"Delivered-To: {me} without our "
                                                   f"{TRACE_HEADER} (stale header or foreign loop)")
    return None

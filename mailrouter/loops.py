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

A header's address names the recipient when it is the same address of the book:
delivery writes the recipient as it was given (sales+Quotes@), while `detect_loop` is
asked about the canonical address the book resolved (sales@), so a forward loop through
sales+Quotes@ (an outside mailbox forwarding back to it) was never recognised by our own
trace header: each round was delivered again until the Received count ran out (50 copies).
Given the address book (`book=`), the header's address is resolved as an envelope
recipient is (`AddressBook.key_of`: the whole address first, then the part before the
detail separator), so c++@, an address of its own beside c@, is never c@: a copy delivered
to c++@ and passed on to c@ (a forward, a list) was refused with a false 554 5.4.6, and its
sender got a bounce for mail that never went round. Without the book the address is
compared with the domain in canonical Unicode form, the local part lower-cased and a
`+detail` dropped, but not a "detail" that is empty or begins with the separator (c+@,
c++@: a name, as far as anyone can tell without the book). Known limits without the book:
with `local_part_case: sensitive`, two addresses differing only in case are treated as one,
an alias of its own holding the separator mid-word (sales+eu@ beside sales@) is read as
sales@, and a loop through c++@ that the book reads as c@ is left to the Received count.
"""

from __future__ import annotations

import re
from typing import Protocol

from .addressbook.canon import canonical_domain
from .values import REPLY_DELIVERED_TO, LoopEvidence, LoopKind

__all__ = ["TRACE_HEADER", "REPLY_DELIVERED_TO", "AddressKeys", "LoopEvidence", "trace_headers",
           "detect_loop", "header_text"]

TRACE_HEADER = "X-Mailrouter-Loop"


class AddressKeys(Protocol):
    """What detect_loop asks of the address book (`addressbook.AddressBook`)."""

    def key_of(self, address: str) -> str | None: ...


class HeaderView(Protocol):
    """What detect_loop reads of a `message.MessageView`."""

    @property
    def received_count(self) -> int: ...
    @property
    def delivered_to(self) -> list[str]: ...
    def headers(self, name: str) -> list[str]: ...


_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
# TAB, a line end and the other white controls between two words: a space, not nothing (a
# subject folded before a TAB, "line one\r\n\tfolded", unfolds to "line one\tfolded", and
# read "line onefolded" in an SLA reminder's subject when the TAB was cut as a control)
_WHITE_CONTROLS = re.compile(r"[\t\r\n\v\f]+")
# The line ends str.splitlines() knows beyond C0: Python's email package refuses a header
# value holding one (ValueError), and a reader that splits as Python does breaks the line there
_LINE_SEPARATORS = re.compile("[\x85\u2028\u2029]")


def header_text(text: str) -> str:
    """No CR, LF or other controls in a header we write (header injection): a run of TAB,
    CR, LF, VT or FF becomes one space, the other controls go; NEL, LINE SEPARATOR and
    PARAGRAPH SEPARATOR (a customer's RFC 2047 Subject can decode to them) become spaces."""
    return _LINE_SEPARATORS.sub(" ", _CONTROLS.sub("", _WHITE_CONTROLS.sub(" ", text))).strip()


def _norm(address: str, detail_separator: str = "") -> str:
    a = address.strip().strip("<>").strip()
    local, at, domain = a.rpartition("@")
    if detail_separator:
        base, found, detail = local.partition(detail_separator)
        if found and base and detail and not detail.startswith(detail_separator):
            local = base
    return f"{local.lower()}@{canonical_domain(domain)}" if at else a.lower()


def _same(address: str, me: str, detail_separator: str, book: AddressKeys | None) -> bool:
    """`address` (a header's, maybe with a detail) names the recipient `me` (canonical)."""
    if book is not None:
        return book.key_of(address) == me
    norm = _norm(address)
    return norm == me or (bool(detail_separator) and _norm(address, detail_separator) == me)


def trace_headers(hostname: str, rcpt: str) -> bytes:
    """The header lines (CRLF) prepended to each copy delivered for `rcpt`."""
    host, addr = header_text(hostname), header_text(rcpt).strip("<>")
    return (f"{TRACE_HEADER}: {host}; rcpt={addr}\r\n"
            f"Delivered-To: {addr}\r\n").encode("utf-8")


def _parse_trace(value: str) -> tuple[str, str] | None:
    """(host, rcpt as written) of one of our trace headers."""
    host, sep, rest = value.partition(";")
    if not sep:
        return None
    for param in rest.split(";"):
        name, eq, addr = param.strip().partition("=")
        if eq and name.strip().lower() == "rcpt":
            return host.strip().lower(), addr
    return None


def detect_loop(view: HeaderView, rcpt: str, *, hostname: str, max_received: int,
                detail_separator: str = "+", book: AddressKeys | None = None
                ) -> LoopEvidence | None:
    """The evidence when this message, for this recipient, looks like it has been here
    before; its `.reply` is 554 5.4.6 (REPLY_LOOP, or REPLY_DELIVERED_TO for a Delivered-To).
    `rcpt` is the canonical address (the book's `Resolution.address`); a header naming it
    with a detail (`detail_separator`, the book's `address_options`) names it too. With
    `book`, a header's address names `rcpt` when the book resolves it to `rcpt`."""
    host = header_text(hostname).lower()
    me = (book.key_of(rcpt) if book is not None else None) or _norm(rcpt)
    for value in view.headers(TRACE_HEADER):
        parsed = _parse_trace(value)
        if parsed is not None and parsed[0] == host and _same(parsed[1], me, detail_separator,
                                                              book):
            return LoopEvidence(LoopKind.TRACE, f"{TRACE_HEADER}: {value.strip()} "
                                                "(this copy was delivered here before)")
    count = view.received_count
    if count > max_received:
        return LoopEvidence(LoopKind.HOPS, f"{count} Received headers (limit {max_received})")
    if any(_same(d, me, detail_separator, book) for d in view.delivered_to):
        return LoopEvidence(LoopKind.DELIVERED_TO, f"Delivered-To: {me} without our "
                                                   f"{TRACE_HEADER} (stale header or foreign loop)")
    return None

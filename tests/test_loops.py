"""Run-time loop defence: verdicts from real header bytes."""

from __future__ import annotations

from pathlib import Path

from mailrouter.addresses import AddressBook
from mailrouter.config import Limits
from mailrouter.explain import explain, format_text
from mailrouter.loops import TRACE_HEADER, detect_loop, header_text, trace_headers
from mailrouter.message import MessageView
from mailrouter.routing.snapshot import load_snapshot
from mailrouter.values import REPLY_DELIVERED_TO, REPLY_LOOP, LoopEvidence, LoopKind
from mailrouter.yamlsrc import loads

HOST = "mx1.example.com"
BODY = (b"Received: from out.example.org (out.example.org [192.0.2.7])\r\n\tby mx1.example.com;"
        b" Mon, 1 Dec 2026 10:00:00 +0300\r\nFrom: a@example.org\r\nTo: sales@example.com\r\n"
        b"Subject: test\r\nMessage-ID: <1@example.org>\r\n\r\nHello\r\n")


def verdict(raw: bytes, rcpt: str = "sales@example.com", max_received: int = 30,
            ) -> LoopEvidence | None:
    return detect_loop(MessageView(raw), rcpt, hostname=HOST, max_received=max_received)


def test_trace_headers_bytes() -> None:
    """Delivery prepends our trace header and Delivered-To, CRLF-terminated."""
    assert trace_headers(HOST, "sales@example.com") == (
        b"X-Mailrouter-Loop: mx1.example.com; rcpt=sales@example.com\r\n"
        b"Delivered-To: sales@example.com\r\n")


def test_trace_headers_cannot_inject() -> None:
    """CR/LF in a recipient cannot start a new header line."""
    out = trace_headers(HOST, "a@example.com\r\nBcc: x@evil.org")
    assert out.count(b"\r\n") == 2 and b"\r\nBcc" not in out


def test_fresh_message_passes() -> None:
    """A message with no trace of us is not a loop."""
    assert verdict(BODY) is None


def test_our_trace_header_for_this_rcpt_is_a_loop() -> None:
    """A copy we delivered came back through another system: 554 5.4.6."""
    raw = b"Received: from fwd.example.net\r\n" + trace_headers(HOST, "Sales@Example.com") + BODY
    v = verdict(raw)
    assert v is not None and v.reply == REPLY_LOOP and TRACE_HEADER in v.evidence
    assert v.kind is LoopKind.TRACE


def test_trace_header_is_case_insensitive_on_host_and_address() -> None:
    """Host and address compare without case; the same loop is not missed by a capital."""
    raw = b"X-Mailrouter-Loop: MX1.Example.COM; rcpt=SALES@example.com\r\n" + BODY
    assert verdict(raw) is not None


def test_trace_header_for_other_rcpt_or_host_is_ignored() -> None:
    """Our trace for a different address, or from a sibling host, proves nothing here."""
    raw = trace_headers(HOST, "support@example.com") + trace_headers("mx2.example.com",
                                                                      "sales@example.com")
    assert verdict(raw.replace(b"Delivered-To: sales@example.com\r\n", b"") + BODY) is None


def test_stale_delivered_to_for_another_address_is_ignored() -> None:
    """Re-imported mail with an old Delivered-To for someone else is delivered normally."""
    raw = b"Delivered-To: old.user@example.com\r\nDelivered-To: x@example.org\r\n" + BODY
    assert verdict(raw) is None


def test_delivered_to_without_our_trace_is_refused() -> None:
    """Delivered-To for this rcpt but no trace of ours: 554 5.4.6 as Postfix does, not a
    451 that keeps the mail in the sender's queue for days."""
    raw = b"Delivered-To: <Sales@EXAMPLE.com>\r\n" + BODY
    v = verdict(raw)
    assert v is not None and v.reply == REPLY_DELIVERED_TO and "Delivered-To" in v.evidence
    assert str(v.reply).startswith("554 5.4.6 ") and v.kind is LoopKind.DELIVERED_TO


def test_received_count_over_limit() -> None:
    """More Received headers than the limit: 554 5.4.6; exactly the limit passes."""
    hops = b"".join(b"Received: from h%d.example.net by h%d.example.net\r\n" % (i, i + 1)
                    for i in range(4))
    assert verdict(hops + BODY, max_received=5) is None
    v = verdict(hops + BODY, max_received=4)
    assert v is not None and v.reply == REPLY_LOOP and "5 Received headers (limit 4)" in v.evidence
    assert v.kind is LoopKind.HOPS


def test_idn_rcpt_matches_either_form() -> None:
    """A trace written for the A-label form matches the U-label recipient."""
    raw = trace_headers(HOST, "info@xn--e1afmkfd.xn--p1ai") + BODY
    assert verdict(raw, rcpt="info@пример.рф") is not None


def test_a_header_naming_the_rcpt_with_a_detail_names_it() -> None:
    """Delivery writes the recipient as given (Sales+Quotes@); the check is asked about the
    canonical sales@: our trace and a Delivered-To with the detail are this recipient's.
    Another address that merely starts the same (salesforce@, sales-team@) is not, nor is a
    detail when the book has none (`detail_separator: ""`)."""
    raw = trace_headers(HOST, "Sales+Quotes@example.com") + BODY
    v = verdict(raw)
    assert v is not None and v.kind is LoopKind.TRACE
    v = verdict(b"Delivered-To: sales+quotes@example.com\r\n" + BODY)
    assert v is not None and v.kind is LoopKind.DELIVERED_TO
    for other in ("salesforce@example.com", "sales-team@example.com", "+sales@example.com"):
        assert verdict(trace_headers(HOST, other) + BODY) is None, other
    assert detect_loop(MessageView(raw), "sales@example.com", hostname=HOST, max_received=30,
                       detail_separator="") is None
    assert detect_loop(MessageView(trace_headers(HOST, "sales-x@example.com") + BODY),
                       "sales@example.com", hostname=HOST, max_received=30,
                       detail_separator="-") is not None


def test_decision_carries_loop_evidence_as_a_value(tmp_path: Path) -> None:
    """The snapshot's decision holds the LoopEvidence itself (nothing to parse back out of
    a reason string); explain still shows it as the first reason, as before."""
    book = tmp_path / "book.yaml"
    book.write_text("domains: [example.com]\nmailboxes:\n  sales: {maildir: sales}\n"
                    "aliases:\n  sales@example.com: mailbox:sales\n", encoding="utf-8")
    snap = load_snapshot([str(book)], Limits(), HOST)
    raw = trace_headers(HOST, "sales@example.com") + BODY
    [d] = snap.decide(MessageView(raw), "a@example.org", ["sales@example.com"])
    assert d.reply == REPLY_LOOP and d.loop is not None and d.loop.kind is LoopKind.TRACE
    assert d.reasons == () and d.explained == (f"loop: {d.loop.evidence}",)
    report = explain(snap, raw, ["sales@example.com"], "a@example.org")
    [r] = report["recipients"]
    assert r["reasons"] == [f"loop: {d.loop.evidence}"]
    assert r["loop"] == {"kind": "trace", "evidence": d.loop.evidence}
    assert f"because:  loop: {TRACE_HEADER}: {HOST}" in format_text(report)
    [clean] = snap.decide(MessageView(BODY), "a@example.org", ["sales@example.com"])
    assert clean.loop is None and explain(snap, BODY, ["sales@example.com"], None)[
        "recipients"][0]["loop"] is None


def test_the_snapshot_asks_the_loop_check_with_the_books_detail_separator(tmp_path: Path) -> None:
    """A book with `detail_separator: "-"`: our trace naming sales-news@ is a loop of sales@
    (the snapshot asked with the default '+', and such a loop went round)."""
    book = tmp_path / "book.yaml"
    book.write_text("domains: [example.com]\naddress_options: {detail_separator: '-'}\n"
                    "mailboxes:\n  sales: {maildir: sales}\n"
                    "aliases:\n  sales@example.com: mailbox:sales\n", encoding="utf-8")
    snap = load_snapshot([str(book)], Limits(), HOST)
    raw = trace_headers(HOST, "sales-news@example.com") + BODY
    [d] = snap.decide(MessageView(raw), "a@example.org", ["sales-news@example.com"])
    assert d.reply == REPLY_LOOP and d.loop is not None and d.loop.kind is LoopKind.TRACE


def test_the_snapshot_asks_the_loop_check_with_the_book(tmp_path: Path) -> None:
    """sales+eu@ an address of its own beside sales@: a copy delivered to sales+eu@ (our
    trace) that reaches sales@ (a forward) is no loop of sales@, and one to sales+Quotes@
    (a detail of sales@) is one of sales@. The snapshot asked without the book: the first
    was a false 554 5.4.6, bounced to its sender."""
    book = tmp_path / "book.yaml"
    book.write_text("domains: [example.com]\nmailboxes:\n  sales: {maildir: sales}\n"
                    "  eu: {maildir: eu}\naliases:\n  sales@example.com: mailbox:sales\n"
                    "  sales+eu@example.com: mailbox:eu\n", encoding="utf-8")
    snap = load_snapshot([str(book)], Limits(), HOST)
    [d] = snap.decide(MessageView(trace_headers(HOST, "sales+eu@example.com") + BODY),
                      "a@example.org", ["sales@example.com"])
    assert d.loop is None and d.mailbox == "sales", d
    [d] = snap.decide(MessageView(trace_headers(HOST, "sales+Quotes@example.com") + BODY),
                      "a@example.org", ["sales@example.com"])
    assert d.reply == REPLY_LOOP and d.loop is not None


def test_an_address_holding_the_separator_is_not_another_ones_detail() -> None:
    """c++@ (or c+@) beside c@: a copy delivered to c++@ that reaches c@ (a forward, a list)
    was a 554 "loop" of c@, the '+' read as a detail separator, and its sender got a bounce
    for mail that never went round. Without the book, a "detail" that is empty or begins
    with the separator is taken as part of the name; a real detail still names the base."""
    for other in ("c++@example.com", "c+@example.com"):
        assert verdict(trace_headers(HOST, other) + BODY, rcpt="c@example.com") is None, other
        assert verdict(b"Delivered-To: %s\r\n" % other.encode() + BODY,
                       rcpt="c@example.com") is None, other
    assert verdict(trace_headers(HOST, "c+news@example.com") + BODY, rcpt="c@example.com")
    assert verdict(trace_headers(HOST, "c++@example.com") + BODY, rcpt="c++@example.com")


def test_with_the_book_a_header_names_the_rcpt_the_book_resolves_it_to() -> None:
    """Given the address book, a header's address is resolved as an envelope recipient is:
    sales+eu@, an alias of its own, is not sales@; sales+Quotes@ (no address of its own)
    is; c+x@ is c@ while c++@ is c++@; with local_part_case: sensitive, our trace for Sales@
    is not sales@'s."""
    book = AddressBook.build(loads(
        "domains: [example.com]\nmailboxes: {m: {maildir: m}}\naliases:\n"
        "  sales@example.com: mailbox:m\n  sales+eu@example.com: mailbox:m\n"
        "  c@example.com: mailbox:m\n  c++@example.com: mailbox:m\n", "t.yaml"))

    def loop(header: str, rcpt: str, b: AddressBook = book) -> bool:
        raw = trace_headers(HOST, header) + BODY
        return detect_loop(MessageView(raw), rcpt, hostname=HOST, max_received=30,
                           book=b) is not None
    assert not loop("sales+eu@example.com", "sales@example.com")
    assert loop("Sales+Quotes@example.com", "sales@example.com")
    assert loop("sales+EU@example.com", "sales+eu@example.com")
    assert loop("c+x@example.com", "c@example.com") and not loop("c++@example.com", "c@example.com")
    assert loop("c++@example.com", "c++@example.com")
    assert not loop("sales@other.example", "sales@example.com")
    strict = AddressBook.build(loads(
        "domains: [example.com]\naddress_options: {local_part_case: sensitive}\n"
        "mailboxes: {m: {maildir: m}}\naliases:\n  sales@example.com: mailbox:m\n"
        "  Sales@example.com: mailbox:m\n", "t.yaml"))
    ours = trace_headers(HOST, "Sales@example.com").split(b"\r\n")[0] + b"\r\n" + BODY
    assert detect_loop(MessageView(ours), "sales@example.com", hostname=HOST, max_received=30,
                       book=strict) is None      # (MessageView reads Delivered-To lower-cased)
    assert loop("sales+x@example.com", "sales@example.com", strict)


def test_header_text_reads_a_tab_or_line_end_as_a_space() -> None:
    """A subject folded before a TAB ("line one\\r\\n\\tfolded", unfolded by the reader to
    "line one\\tfolded") read "line onefolded" in an SLA reminder's Subject, a folder name
    or an owner header: header_text cut the TAB as a control for every caller. A run of
    TAB/CR/LF is one space now; no line end reaches the header."""
    assert header_text("line one\tfolded") == "line one folded"
    assert header_text("line one\r\n\tfolded") == "line one folded"
    assert header_text("a\x00b\x7fc") == "abc"
    from datetime import UTC, datetime
    from email import message_from_bytes

    from mailrouter.control.notice import build_notice
    raw = build_notice(sender="sla@example.com", to="owner@example.com", to_name=None,
                       subject="[#1] Reminder: line one\tfolded", body="x", hostname=HOST,
                       at=datetime(2027, 1, 11, tzinfo=UTC))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: [#1] Reminder: line one folded\r\n" in head and b"\t" not in head
    assert message_from_bytes(raw)["Subject"] == "[#1] Reminder: line one folded"


def test_a_raw_utf8_delivered_to_names_its_non_ascii_recipient() -> None:
    """An SMTPUTF8 hop writes Delivered-To raw in UTF-8. Read as latin-1 it named
    'straÃ\x9fe@example.com', nobody: a foreign loop through straße@ was not seen here (only
    our own trace header or the Received count would end it). Latin-1 bytes still read."""
    raw = "Delivered-To: Straße@example.com\r\nSubject: x\r\n\r\nbody\r\n".encode()
    assert MessageView(raw).delivered_to == ["straße@example.com"]
    found = detect_loop(MessageView(raw), "straße@example.com", hostname=HOST, max_received=30)
    assert found is not None and found.kind is LoopKind.DELIVERED_TO
    assert MessageView(b"Delivered-To: a\xe9@example.com\r\n\r\nx").delivered_to == ["a\xe9@example.com"]

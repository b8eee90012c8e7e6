"""The message view: a lazy, read-only decoded view of one message's raw bytes.

What it does: the intake keeps the bytes exactly as they arrived; rules read decoded values from
a ``MessageView`` built on them.  Nothing is parsed in ``__init__``.  The header block is parsed
by ``email.parser.BytesHeaderParser`` the first time a header is asked for; the whole MIME tree is
parsed by ``email.parser.BytesParser`` only when ``body_text``, ``attachments``, ``defects`` or
``charset_notes`` are read; the body text is then only inspected, a piece at a time
(``charsets.inspect_bytes``: its charset, what was guessed, what was wrong), and decoded
when ``body_text`` or ``body_pieces`` is read (the latter a piece at a time, never whole:
the reports and a word search cost no decoded copy of a large body).  Header values are
decoded by ``mailrouter.charsets`` (RFC 2047 words, RFC 2231 parameters, raw 8-bit KOI8-R /
windows-1251 / UTF-8 guessed and recorded, IBM866 / ISO-8859-5 on stricter terms; read in
the charset of the top Content-Type when that is a multi-byte one, gb2312, big5,
shift_jis..., and they decode in it; guessed with it when it is a Cyrillic single-byte one,
ibm866, iso-8859-5...).

What it refuses: it never raises and never re-serialises the bytes.  Whatever the parser or a
decoder objects to becomes a line in ``defects``; every guess becomes a line in ``charset_notes``
("Subject: raw 8-bit guessed koi8-r").  ``defects`` and ``charset_notes`` parse the body so that
their value never depends on which property was read first (``explain`` must see what the daemon
saw); ``header_defects`` is the cheap header-only part.  The reports cover Subject, From, To,
Cc, the body and attachment names; ``header(name)`` of any other header decodes without
recording, for the same reason.  Decoded header values never contain CR, LF or NUL.

The body text is every inline text/plain part, in order, each in its own charset (a
multipart/mixed shows them all: the text after an attachment, a list's footer part), else
the text of the HTML parts (also when the plain ones are blank), else other text;
``body_charset`` is the first part's.

Attachments are the parts that name a file or are not text, and every forwarded message
(``message/rfc822`` below the top): it is listed itself, named by its file name or else by its
decoded Subject + ``.eml``, before the files inside it, which are listed too. Files uuencoded
into a text/plain part without a transfer encoding are listed after it (their lines stay
in ``body_text``); the files inside Outlook's TNEF wrapper (``winmail.dat``,
``application/ms-tnef``: tnef.py) are listed after it.

A UTF-8 BOM before the first header (EF BB BF: a message saved by a Windows program) is
skipped: the headers are read after it (``header_block`` starts there), the raw bytes keep it.

Known limits (the stdlib parser's, kept on purpose):
- a header line without a colon ends the header block (``MissingHeaderBodySeparatorDefect``); the
  headers after it are read as body text;
- a multipart with no boundary parameter is read as one text/plain body, its MIME lines included;
- only the first ``MAX_PARTS`` (1,000) MIME parts are read: past them the body and attachments
  are those of the message cut before the next part's boundary line, and ``defects`` says so;
- an HTML body's charset comes from its Content-Type, never from ``<meta charset>``;
- ``body_charset`` and guessed charsets are Python codec names (``koi8-r``, ``cp1251``,
  ``cp866``, ``mac-cyrillic``, ``iso8859-2``, ``cp1250``, ``utf-8``; ``cp50220`` for
  iso-2022-jp is registered by ``mailrouter.charsets``).
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import re
from dataclasses import dataclass, field
from email import policy
from email.errors import InvalidMultipartContentTransferEncodingDefect
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Iterator, TypeVar

from mailrouter.mimewalk import (UNFOLDED, Leaf, decoded_payload, leaves, location_name,
                                 transfer_encoding, unfold)
from mailrouter.tnef import files as tnef_files
from mailrouter.charsets import (
    CYRILLIC_BODY_CANDIDATES,
    PIECE_BYTES,
    Decoded,
    decode_header_bytes,
    decode_header_value,
    decode_param_value,
    decode_pieces,
    inspect_bytes,
)

__all__ = ["LIST_MANAGER_HEADERS", "Attachment", "MessageView", "auto_submitted", "without_comments",
           "decode_header_value", "msg_ids"]

_HEADER_END = re.compile(rb"\A\r?\n|\n\r?\n")
_BOM = b"\xef\xbb\xbf"
# Precedence (or X-Precedence) values of automatic mail; auto_reply: set by cPanel's and
# BoxTrapper's responders instead of Auto-Submitted
_ROBOT_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_LINE_ENDS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"     # what str.splitlines splits at
_BOUNCE_SENDERS = {"mailer-daemon", "postmaster"}
# `From: MAILER-DAEMON <>`, `From: <>`: the null address, which only mail systems write in From
# (the DragonFly Mail Agent's and McAfee's bounces of sisimai's set-of-emails)
_NULL_ADDRESS = re.compile(r"<\s*>")
# What list managers put on every message besides or instead of RFC 2369's List-*: ezmlm-weed(1)
# names Mailing-List (ezmlm), X-Mailing-List (SmartList) and X-ML-Name; fml writes X-MLServer
# even on its own notices (sisimai set-of-emails lhost-fml-03, a "Loop Alert" from <ml>-admin).
# Mailman writes X-Mailman-Version on everything it sends, posts, digests and its notices; a
# Mailman 2.0 digest has no List-* header nor Precedence (CPython's test_email msg_02.txt).
LIST_MANAGER_HEADERS = ("Mailing-List", "X-Mailing-List", "X-ML-Name", "X-MLServer",
                        "X-Mailman-Version")
_LIST_MANAGER = frozenset(h.lower() for h in LIST_MANAGER_HEADERS)
# LISTSERV before 1.8e (2003) wrote no List-* header: its own hop in Received says a list sent
# it (`(LISTSERV-TCP/IP release 1.8c) with spool id 2458`: an RTO West list message of 2002 in
# imap_tools' test messages, with Sender the list and Return-Path its owner-*).
_LISTSERV_HOP = re.compile(rb"\(LISTSERV-TCP/IP release ", re.IGNORECASE)
# A DSN (RFC 3464) sent as the message itself, without the multipart/report around it (flanker's
# delayed-broken.eml: a Sendmail warning); RFC 6533's global one too.
_BARE_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
# Autoresponders that predate RFC 3834 mark their answers with these instead of Auto-Submitted
# (X-Autoreply: yes from Gmail's vacation responder and Exchange mailbox rules, beside
# Auto-Submitted; X-Autorespond from cPanel); any value but "no" counts. What Yandex's and
# Mail.ru's responders send is not confirmed by any sample we found.
_AUTOREPLY_MARKERS = ("X-Autoreply", "X-Autorespond", "X-AutoReply-From", "X-Mail-Autoreply")
# Other responders' own markers, a header and the values that mean an automatic answer (the
# list mail-handling code has copied for years: Alaveteli's, Invision's, Sisimai's RFC3834):
# CommuniGate Pro's X-Autogenerated, Mailtraq's X-POST-MessageClass, FirstClass's
# X-FC-MachineGenerated, qmail's autoresponder's Delivered-To, Apple iCloud's vacation
# X-Apple-Action. Domain Technologies Control writes X-AutoReply-From / X-Mail-Autoreply
# (above). Each came with a plain subject ("Re: Hello") and no Auto-Submitted: answered.
_VENDOR_MARKERS = (
    ("X-Autogenerated", re.compile(r"\s*(?:forward|group|letter|mirror|redirect|reply)\b", re.I)),
    ("X-POST-MessageClass", re.compile(r".*\bautoresponder\b", re.I)),
    ("X-FC-MachineGenerated", re.compile(r"\s*true\b", re.I)),
    ("Delivered-To", re.compile(r"\s*autoresponder\s*\Z", re.I)),
    ("X-Apple-Action", re.compile(r"\s*vacation\b", re.I)),
)
# The first words of bounce subjects that come without a DSN or a robot header (SpamAssassin's
# 20_vbounce.cf, sisimai's set-of-emails, flufl.bounce's test data): Exchange's "Undeliverable:"
# and its translations, Postfix, Exim, Sendmail, qmail, Gmail, Yandex, Mail.ru. Each names mail,
# a message or a DSN, so a customer's "Delivery failed for order 12" is still answered; and
# ends there (`:`, `(Failure)`, the end), so is "Mail delivery failed for our domain" (a mail
# host's customer: the rules, Control and the autoresponder all read this, MessageView.automatic).
_BOUNCE_SUBJECT = re.compile(
    r"(?:undeliverable(?:\s+(?:mail|message))?\s*(?:[:-]|$)|undelivered mail returned to sender"
    r"|returned mail\s*(?:[:-]|$)"
    r"|(?:mail delivery (?:failed|failure|warning)|message delivery failure"
    r"|delivery (?:status|failure) notification)\s*(?:[:(.-]|$)"
    r"|failure notice$|mail could not be delivered"
    r"|(?:sorry, )?your message could not be delivered|postmaster notify:"
    r"|(?:non remis|unzustellbar|onbestelbaar|non recapitabile|no se puede entregar|не доставлено"
    r"|nedoru[čc]iteln[ée]|nedoru[čc]ite[ľl]n[ée]|niedostarczalne)\s*:"
    r"|недоставленное сообщение|ваше сообщение не доставлено)", re.IGNORECASE)
# A whole subject that is only an MTA's words (flufl.bounce simple_36: Exchange 6.5's
# "Delivery Failure" from "System Administrator"@; Yahoo's "failure delivery"; AOL's "Mail
# Delivery Problem"). A person may write these too ("Delivery failure" of a parcel), so they
# count only with an MTA's wording at the start of the body (_MTA_BODY).
_BARE_BOUNCE_SUBJECT = re.compile(
    r"(?:permanent\s+)?delivery\s+(?:failure|failed|problem|report|status|notification)"
    r"|fail(?:ed|ure)\s+delivery|(?:undelivered|undeliverable|returned|failed)\s+mail"
    r"|mail\s+(?:not\s+delivered|error|failure|delivery\s+problem)"
    r"|non-?delivery(?:\s+(?:report|notification))?", re.IGNORECASE)
# What MTAs write at the top of such a bounce and people do not: an SMTP reply with an enhanced
# status code (RFC 3463), the remote server's words, the failed recipient named, software's
# "(s)" plurals, the returned message announced.
_MTA_BODY = re.compile(
    r"\b[45]\d\d[ -]#?[245]\.\d{1,3}\.\d{1,3}\b|\bremote (?:host|server|system|mta) said\b"
    r"|\b(?:failed|final)[ -]recipient\b|\bfollowing recipients?\b"
    r"|recipient\(s\)|address\(es\)|\boriginal message follows\b|\breturned mail follows\b"
    r"|\bbelow this line is a copy of the message\b", re.IGNORECASE)
_MTA_BODY_CHARS = 3000
# Out-of-office subjects of responders that set no header: Apple iCloud's "Auto reply:" (sisimai
# rfc3834-03), Outlook's "Automatic reply:" in English, German, French, Russian, Ukrainian, Czech,
# Slovak and Polish (php-mime-mail-parser's issue212: Exchange's "Automatyczna odpowiedź:" in
# windows-1250, no Auto-Submitted); the Czech and Slovak ones also without their accents.
# Lotus Notes/Domino's out-of-office agent writes "AUTO: <name> is out of the office (returning
# <date>)" and no header at all (Mail-DeliveryStatus-BounceParser's t/corpus/warning-6.msg);
# "Auto:" alone is RFC 3834's prefix for any answer, and German for a car, so it counts only
# with Notes' words after it.
_AUTOREPLY_SUBJECT = re.compile(
    r"(?:auto(?:matic)?[- ]?reply|out of (?:the )?office(?: auto-?reply)?|automatische antwort"
    r"|abwesenheitsnotiz|réponse automatique|автоматический ответ|автоответ"
    r"|автоматична відповідь|automatick[áa] odpov[ěe][ďd]|automatyczna odpowied[źz])\s*:"
    r"|auto:\s.{1,200}?\bis out of (?:the )?office\b",
    re.IGNORECASE)
# A DMARC aggregate report (RFC 7489 7.2.1.1: "Report Domain: <domain> Submitter: <org>
# Report-ID: <id>"), a zip of XML with no robot header; a Google group that receives them
# rewrites From to itself ("noreply-dmarc-support via <group>", Webklex/php-imap's
# mail_that_is_attachment.eml), so only the subject says it is a report.
_DMARC_SUBJECT = re.compile(r"report domain:\s*\S+\s+submitter:\s*\S+", re.IGNORECASE)
# Tags in brackets before a subject: Request Tracker's `[rtname #ticket]` on its AutoReply
# (notmuch's test corpus, threading/ghost-root), a list's `[name]`, a filter's `[SPAM]`.
_SUBJECT_TAGS = re.compile(r"\A(?:\[[^\[\]]{1,100}\]\s*)+")
# A complaint report names the complainer in this header of the message it returns: Hotmail's
# JMRP format, which predates ARF (RFC 5965) and is multipart/mixed (sisimai arf-22..24).
_HOTMAIL_COMPLAINT = "x-hmxmroriginalrecipient"
_HOTMAIL_LINE = re.compile(rb"(?:\A|\n)x-hmxmroriginalrecipient[ \t]*:", re.IGNORECASE)
_PARTS_PEEKED = 64 * 1024        # bytes of a body searched for a report's attached message
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_MSG_ID = re.compile(r"<([^<>]*)>")
_COMMENT = re.compile(r"\([^()]*\)")


def auto_submitted(value: str) -> str:
    """The keyword of an Auto-Submitted value, lower-cased, without its parameters and
    comments (RFC 3834 section 5: CFWS around the keyword; `No (sent by a person)` is
    `no`); '' when there is none."""
    return " ".join(without_comments(value).split(";", 1)[0].split()).lower()


def _address_of(value: str) -> str:
    """parseaddr's address, '' when it finds none or cannot read the value at all: the
    stdlib recurses once per nested '(' and raised RecursionError for `Delivered-To:`
    and 1,000 of them, out of the loop check, so 451 on every retry of that message."""
    try:
        return parseaddr(value)[1]
    except Exception:  # never raise: the parser is not ours
        return ""


_PAREN = re.compile(r"[()]")


def without_comments(value: str) -> str:
    """Each comment, nested ones whole, replaced by one space; a parenthesis that closes
    nothing, or is never closed, stays. One pass: taking the innermost comments out again
    and again, as before, took time quadratic in the nesting (an Auto-Submitted of 1 MB of
    '(' then ')' kept a worker busy past process_timeout, 451 on every retry)."""
    if "(" not in value:
        return value
    out: list[str] = []
    opened: list[int] = []              # where in `out` each comment still open began
    pos = 0
    for paren in _PAREN.finditer(value):
        out.append(value[pos:paren.start()])
        pos = paren.end()
        if paren.group() == "(":
            opened.append(len(out))
            out.append("(")
        elif opened:
            del out[opened.pop():]
            out.append(" ")
        else:
            out.append(")")
    out.append(value[pos:])
    return "".join(out)


def msg_ids(value: str) -> list[str]:
    """The Message-IDs a Message-ID, In-Reply-To or References value names, each written
    `<id>` as a follow-up names it: every `<...>` in it (blanks inside dropped, empty ones
    skipped), so `<id@host> (added by the gateway)` is `<id@host>`; a value with none that
    is one word with an `@` (`id@host`: scripts and some webmail write it so) is that word
    in brackets. Other text names nothing (`In-Reply-To: your message of Monday`)."""
    found = ["<" + "".join(m.split()) + ">" for m in _MSG_ID.findall(value) if m.strip()]
    if found:
        return found
    words = [w.strip("<>") for w in _COMMENT.sub(" ", value).split()]
    return [f"<{words[0]}>"] if len(words) == 1 and "@" in words[0] else []


_T = TypeVar("_T")

if TYPE_CHECKING:
    from functools import cached_property
else:
    class cached_property(Generic[_T]):
        """functools.cached_property without the lock Python 3.11 takes on each first read
        (3.12 dropped it): the value goes into the instance's __dict__ under the same name,
        where every later read finds it. A view is read by one thread at a time."""

        def __init__(self, func: Callable[[Any], _T]) -> None:
            self.func, self.attrname, self.__doc__ = func, func.__name__, func.__doc__

        def __set_name__(self, owner: type, name: str) -> None:
            self.attrname = name

        def __get__(self, instance: Any, owner: type | None = None) -> Any:
            if instance is None:
                return self
            value = instance.__dict__[self.attrname] = self.func(instance)
            return value


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str        # decoded; '' when the part names no file
    content_type: str    # lower-case type/subtype
    size: int            # bytes after Content-Transfer-Encoding is undone


# hashlib lets go of the GIL to hash 2048 bytes or more (HASHLIB_GIL_MINSIZE): for a short
# message the hash takes microseconds, and getting the GIL back from the writer and registry
# threads took ~80 us of the event loop's time per message (cProfile of the daemon, c=10).
_GIL_FREE_BELOW = 2048
_HASH_HELD_UP_TO = 64 * 1024      # larger: one call, and the other threads run meanwhile


def sha256_hex(data: bytes) -> str:
    """hashlib.sha256(data).hexdigest(); a short message is hashed in pieces under 2048
    bytes, so the event loop keeps the GIL (the same digest: SHA-256 is a stream)."""
    if len(data) > _HASH_HELD_UP_TO:
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    view = memoryview(data)
    for at in range(0, len(data), _GIL_FREE_BELOW - 1):
        digest.update(view[at:at + _GIL_FREE_BELOW - 1])
    return digest.hexdigest()


def _to_bytes(value: str) -> bytes:
    """Header strings from the compat32 parser carry 8-bit bytes as surrogates."""
    return value.encode("utf-8", "surrogateescape")


def _describe(defect: Exception) -> str:
    text = str(defect)
    return f"{type(defect).__name__}: {text}" if text else type(defect).__name__


class MessageView:
    """Decoded, read-only view of a message; see the module docstring."""

    def __init__(self, raw: bytes) -> None:
        self.raw: bytes = raw if isinstance(raw, bytes) else bytes(raw)
        self.size: int = len(self.raw)
        self._notes: dict[str, list[str]] = {}
        self._defects: dict[str, list[str]] = {}

    # Raw access

    @cached_property
    def content_hash(self) -> str:
        return sha256_hex(self.raw)

    @cached_property
    def _head_start(self) -> int:
        """Where the headers start: after a UTF-8 BOM some Windows programs write before the
        first header (read as a header line, the BOM turned the whole message into body)."""
        return len(_BOM) if self.raw.startswith(_BOM) else 0

    @cached_property
    def header_block(self) -> bytes:
        """Header bytes up to and including the blank line (all bytes if there is none);
        without a UTF-8 BOM before the first header (the raw bytes keep it)."""
        start = self._head_start
        match = _HEADER_END.search(memoryview(self.raw)[start:])
        return self.raw[start: start + match.end()] if match else self.raw[start:]

    @cached_property
    def _body_start(self) -> int:
        """Offset in ``raw`` of the body: after the BOM, if any, and the header block."""
        return self._head_start + len(self.header_block)

    @cached_property
    def _header_msg(self) -> Message:
        try:
            return BytesHeaderParser(policy=UNFOLDED).parsebytes(self.header_block)
        except Exception as exc:  # never raise: the parser is not ours
            msg = Message()
            msg.defects.append(exc)  # type: ignore[arg-type]
            return msg

    def raw_headers(self) -> list[tuple[str, bytes]]:
        """(name, raw value bytes) in order; folding kept, nothing decoded."""
        return [(name, _to_bytes(value)) for name, value in self._header_msg.raw_items()]

    @cached_property
    def _by_name(self) -> dict[str, list[bytes]]:
        found: dict[str, list[bytes]] = {}
        for name, value in self.raw_headers():
            found.setdefault(name.lower(), []).append(value)
        return found

    # Decoded headers

    @cached_property
    def _text_charset(self) -> str | None:
        """The charset parameter of the top Content-Type: raw 8-bit header bytes are read
        in it when it is a multi-byte one (charsets.decode_header_bytes)."""
        try:
            value = self._header_msg.get_param("charset")
        except Exception:  # never raise: the parser is not ours
            return None
        if isinstance(value, tuple):        # RFC 2231: (charset, language, value)
            value = value[2]
        return value if isinstance(value, str) else None

    def _header_bytes(self, value: bytes) -> Decoded:
        return decode_header_bytes(value, None if value.isascii() else self._text_charset)

    def _decode(self, name: str, value: bytes) -> Decoded:
        decoded = self._header_bytes(value)
        self._record(name, decoded)
        return decoded

    def _record(self, where: str, decoded: Decoded) -> None:
        if not decoded.notes and not decoded.defects:
            return      # nothing to add (each `where` is recorded by one read: its place holds)
        for store, found in ((self._notes, decoded.notes), (self._defects, decoded.defects)):
            lines = store.setdefault(where, [])
            lines += [f"{where}: {n}" for n in found if f"{where}: {n}" not in lines]

    def headers(self, name: str) -> list[str]:
        """Every occurrence of header ``name``, decoded and unfolded."""
        return [self._header_bytes(v).text for v in self._by_name.get(name.lower(), [])]

    def header(self, name: str) -> str | None:
        """First occurrence of header ``name``, decoded and unfolded; None if absent."""
        values = self._by_name.get(name.lower())
        return self._header_bytes(values[0]).text if values else None

    @cached_property
    def subject(self) -> str:
        # Only Subject, From, To and Cc feed charset_notes and defects: notes from headers a
        # rule happened to read would make the reports depend on the order of reads.
        values = self._by_name.get("subject")
        return self._decode("Subject", values[0]).text if values else ""

    @cached_property
    def message_id(self) -> str | None:
        """The first Message-ID header as `<id>` (`msg_ids`: a comment after it or missing
        brackets are not part of it, or a follow-up naming it would not match); its text
        as it is when that is not one id (and comments)."""
        values = self._by_name.get("message-id")
        if not values:
            return None
        text = unfold(values[0].decode("ascii", "replace")).strip()
        ids = msg_ids(text)
        rest = _COMMENT.sub("", _MSG_ID.sub("", text, count=1)) if "<" in text else ""
        return ids[0] if ids and not rest.strip() else text

    def _addresses(self, name: str) -> list[tuple[str, str]]:
        # Split on the encoded form (RFC 2047 section 5: words never hide a comma or a bracket),
        # then decode each display name; latin-1 keeps raw 8-bit bytes one char each.
        values = [unfold(v.decode("latin-1")) for v in self._by_name.get(name.lower(), [])]
        pairs: list[tuple[str, str]] = []
        if not values:
            return pairs        # no such header: nothing to parse
        try:
            parsed = getaddresses(values)
        except Exception as exc:  # never raise: the parser is not ours
            self._defects.setdefault(name, []).append(f"{name}: {_describe(exc)}")
            return pairs
        for display, addr in parsed:
            if display or addr:
                text = self._decode(name, display.encode("latin-1", "replace")).text
                addr_text = decode_header_bytes(addr.encode("latin-1", "replace")).text
                pairs.append((text, addr_text))
        return pairs

    @cached_property
    def _from(self) -> tuple[str, str]:
        """The From's (name, address). An unquoted '<' in the name (`<b>Sales</b>
        <ivan@x.ru>`, spam's `<script>...`) splits one mailbox into several for the parser,
        and the first "address" was `b` or `script`: the sender, and a request's
        counterparty, was a word. Then the first address with an '@' is the sender, and
        what the header says before it is the name."""
        pairs = self._addresses("From")
        if not pairs:
            return "", ""
        if "@" in pairs[0][1]:
            return pairs[0]
        addr = next((a for _, a in pairs if "@" in a), None)
        if addr is None:
            return pairs[0]
        text = self.header("From") or ""
        cut = text.rfind("<" + addr)
        return (text[:cut].strip() if cut > 0 else ""), addr

    @cached_property
    def from_name(self) -> str:
        return self._from[0]

    @cached_property
    def from_addr(self) -> str:
        return self._from[1]

    @cached_property
    def to(self) -> list[tuple[str, str]]:
        return self._addresses("To")

    @cached_property
    def cc(self) -> list[tuple[str, str]]:
        return self._addresses("Cc")

    @cached_property
    def received_count(self) -> int:
        return len(self._by_name.get("received", []))

    @cached_property
    def delivered_to(self) -> list[str]:
        """The Delivered-To addresses, lower case, decoded as the other headers are
        (charsets.decode_header_bytes: UTF-8 first). An SMTPUTF8 hop writes `Delivered-To:
        straße@…` raw, and read as latin-1 it was 'straÃ\x9fe@', which named nobody: a
        foreign loop through a non-ASCII address went round unseen."""
        values = [decode_header_bytes(v).text for v in self._by_name.get("delivered-to", [])]
        return [(_address_of(v) or v).lower() for v in values]

    # Robots (RFC 3834 section 2)

    @cached_property
    def robot(self) -> tuple[bool, str]:
        """(True, why) for bounces, auto-replies and list mail: mail nobody should answer
        (`automatic`), or a bounce by its From (MAILER-DAEMON@, postmaster@)."""
        why = self.automatic
        if why:
            return True, why
        local = self.from_addr.split("@", 1)[0].lower()
        if local in _BOUNCE_SENDERS:
            return True, f"a bounce (From {self.from_addr})"
        return False, ""

    @cached_property
    def automatic(self) -> str:
        """Why this message is automatic mail (a bounce, a report, an auto-reply, list or bulk
        mail) by what it says of itself: its headers, its subject, a bounce's wording at the
        start of its body. '' for a person's mail. The one definition the rules' `robot: true`
        (routing/facts.py), Control's plan and the autoresponder (autoreply.py, which adds
        its own reasons: senders, X-Loop, X-Auto-Response-Suppress, To/Cc) all read, so
        that a sign learnt by one is known to all three. Cheap on every message: header
        lookups, the subject, and the body's first 3,000 characters only under a subject
        that is an MTA's bare words."""
        return self.robot_headers or self._null_from_sign() or self._subject_sign()

    @cached_property
    def robot_headers(self) -> str:
        """The part of `automatic` its headers tell (Auto-Submitted, a responder's marker, a
        report's type, a list's or Precedence), without From and Subject: the autoresponder
        reads it before the senders' addresses and `automatic` after them."""
        for check in (self._auto_submitted_sign, self._autoreply_marker_sign, self._report_sign,
                      self._list_sign, self._precedence_sign):
            why = check()
            if why:
                return why
        return ""

    def _plain(self, name: str) -> str:
        values = self._by_name.get(name.lower())
        return unfold(values[0].decode("latin-1")).strip() if values else ""

    def _auto_submitted_sign(self) -> str:
        value = auto_submitted(self._plain("Auto-Submitted"))
        return f"Auto-Submitted: {value}" if value and value != "no" else ""

    def _autoreply_marker_sign(self) -> str:
        for name in _AUTOREPLY_MARKERS:
            if name.lower() in self._by_name:
                value = self.header(name) or ""
                if value.strip().lower() != "no":
                    return f"an auto-reply ({name}: {' '.join(value.split())[:80]})"
        for name, means in _VENDOR_MARKERS:
            for value in self.headers(name) if name.lower() in self._by_name else ():
                if means.match(value):
                    return f"an auto-reply ({name}: {' '.join(value.split())[:80]})"
        return ""

    def _report_sign(self) -> str:
        ctype = self._plain("Content-Type").split(";", 1)[0].strip().lower()
        if ctype == "multipart/report":
            return f"a report ({ctype}: a DSN or MDN)"
        if ctype in _BARE_DSN_TYPES:    # a DSN without its multipart/report (flanker's delayed-broken)
            return f"a report ({ctype}: a DSN)"
        return f"a report ({self.complaint})" if self.complaint else ""

    def _list_sign(self) -> str:
        # the names already split out (raw_headers() builds a new list: 10 us a message)
        if any(n.startswith("list-") or n in _LIST_MANAGER for n in self._by_name):
            name = next(n for n, _ in self.raw_headers()
                        if n.lower().startswith("list-") or n.lower() in _LIST_MANAGER)
            return f"mailing list ({name} present)"
        for value in self._by_name.get("received", ()):
            if _LISTSERV_HOP.search(value):
                return "mailing list (a LISTSERV Received line)"
        return ""

    def _precedence_sign(self) -> str:
        """Precedence, without a comment (`bulk (newsletter)`), and the X-Precedence that
        cPanel's and other responders write instead."""
        for name in ("Precedence", "X-Precedence"):
            value = " ".join(_COMMENT.sub(" ", self._plain(name)).split()).lower()
            if value in _ROBOT_PRECEDENCE:
                return f"Precedence: {value}" + ("" if name == "Precedence" else f" ({name})")
        return ""

    def _null_from_sign(self) -> str:
        """`From: <>` or `From: MAILER-DAEMON <>`: the null address, which only mail systems
        write (the DragonFly, McAfee and mFilter bounces of sisimai's set-of-emails)."""
        value = self._plain("From")
        if value and not self.from_addr and _NULL_ADDRESS.search(value):
            return f"null address in From: {' '.join(value.split())[:80]}"
        return ""

    def _subject_sign(self) -> str:
        """A subject that begins like a bounce, an out-of-office reply or a DMARC report; a
        `Re:` or `Fwd:` before it means a person wrote it, so only the start of the subject is
        tested, after the tags a helpdesk, a list or a filter puts first (`[support.example
        #33575] AutoReply:`, `[SPAM]`)."""
        if not self.subject:
            return ""
        subject = " ".join(self.subject.split())
        head = _SUBJECT_TAGS.sub("", subject, count=1)
        if _BOUNCE_SUBJECT.match(head):
            return f"a bounce (Subject: {subject[:80]})"
        if _BARE_BOUNCE_SUBJECT.fullmatch(head.rstrip(" .!:")):
            found = _MTA_BODY.search(self.body_head(_MTA_BODY_CHARS))
            if found is not None:
                return f"a bounce (Subject: {subject[:80]}; body: {' '.join(found[0].split())})"
        if _AUTOREPLY_SUBJECT.match(head):
            return f"an auto-reply (Subject: {subject[:80]})"
        if _DMARC_SUBJECT.match(head):
            return f"a report (a DMARC aggregate report, Subject: {subject[:80]})"
        return ""

    @cached_property
    def complaint(self) -> str:
        """What makes this a complaint (feedback) report that is not a top-level
        multipart/report: an ARF part (RFC 5965 message/feedback-report) inside another
        multipart, or Hotmail's older JMRP format, which returns the complained-of message as
        message/rfc822 with X-HmXmrOriginalRecipient in it. '' for anything else. Only the
        first two parts, in the first 64 KB of the body, are looked at, without a MIME walk:
        the samples have the returned message first, or an explanation and then the report."""
        if _HOTMAIL_COMPLAINT in self._by_name:
            return "Hotmail complaint: X-HmXmrOriginalRecipient"
        for ctype, attached in self._first_parts():
            if ctype == "message/feedback-report":
                return "complaint report: a message/feedback-report part"
            if _HOTMAIL_LINE.search(attached):
                return "Hotmail complaint: X-HmXmrOriginalRecipient in the attached message"
        return ""

    def _first_parts(self, most: int = 2) -> Iterator[tuple[str, bytes]]:
        """(content type, header block of the message it carries: b'' but for message/rfc822)
        of the first parts of a multipart message; a part that does not parse ends the search.
        Only a part whose headers name a message/* type is parsed (the rest cannot matter)."""
        value = self._plain("Content-Type")
        if not value.lower().startswith("multipart/"):
            return
        boundary = _param_message("Content-Type", value).get_boundary()
        start = self._body_start
        body = self.raw[start:start + _PARTS_PEEKED]
        if not boundary or not body:
            return
        sep = b"--" + boundary.encode("latin-1", "replace")

        def line_after(offset: int) -> int:     # the next boundary line's start, or -1
            hit = body.find(b"\n" + sep, offset)
            return hit + 1 if hit >= 0 else -1

        at = 0 if body.startswith(sep) else line_after(0)
        for count in range(most):
            if count:
                at = line_after(at)
            line_end = body.find(b"\n", at) if at >= 0 else -1
            if line_end < 0 or body[at + len(sep):line_end].strip():
                return                  # none, cut off, the closing boundary or another line
            head = _BLANK_LINE.search(body, line_end - 1)   # from the boundary line's own end
            if head is None:
                return
            block, ctype, attached = body[line_end + 1:head.end()], "text/plain", b""
            if b"message/" in block.lower():
                try:
                    ctype = BytesHeaderParser(policy=UNFOLDED).parsebytes(block).get_content_type()
                except Exception:  # never raise: the parser is not ours
                    return
            if ctype == "message/rfc822":
                inner = _BLANK_LINE.search(body, head.end())
                attached = body[head.end():inner.end() if inner is not None else len(body)]
            yield ctype, attached
            at = head.end() - 1

    # Body and attachments: parsed only when asked for

    @cached_property
    def _body(self) -> _Body:
        # A well-formed message is walked on its bytes (mimewalk.py): the feedparser would
        # hold every line, every payload as a string and every decoded attachment at once.
        cut = _parts_cut(self.raw, self._body_start)
        if cut is not None:     # the first MAX_PARTS parts, read by the stdlib (cut short)
            body = _parse_body(self.raw[self._head_start:cut])
            # the parts cut off took the closing boundary line with them: not the sender's
            body.defects = [d for d in body.defects if d != "CloseBoundaryNotFoundDefect"]
            body.defects.append(f"body: more than {MAX_PARTS} MIME parts: the rules read the "
                                f"first {MAX_PARTS}")
            return body
        found = leaves(self.raw, self._header_msg, self._body_start)
        if found is None:       # anything the walk does not vouch for: the stdlib decides
            return _parse_body(self.raw[self._head_start:] if self._head_start else self.raw)
        body = _Body()
        texts: _Texts = {}
        for leaf in found:
            try:
                _read_leaf(leaf.headers, body, texts, leaf)
            except Exception as exc:  # as in _parse_body
                body.defects.append(f"body part: {_describe(exc)}")
        _choose_text(body, texts)
        return body

    @cached_property
    def body_text(self) -> str:
        text = ""
        for piece in self._body.text_pieces():
            text += piece           # in place: no list of pieces beside the whole
        return text

    def body_head(self, chars: int) -> str:
        """The first `chars` characters of body_text, decoding no more than they need."""
        head = ""
        for piece in self.body_pieces():
            head += piece[:chars - len(head)]
            if len(head) >= chars:
                break
        return head

    def body_lines(self) -> Iterator[str]:
        """body_text.splitlines(), a line at a time, decoding as it goes."""
        rest = ""
        for piece in self.body_pieces():
            lines = (rest + piece).splitlines(keepends=True)
            rest = lines.pop() if lines and lines[-1].rstrip(_LINE_ENDS) == lines[-1] else ""
            yield from (line.rstrip(_LINE_ENDS) for line in lines)
        if rest:
            yield rest

    def body_pieces(self) -> Iterator[str]:
        """body_text in consecutive pieces (each but the last ending with a line end),
        decoded as they are read: a reader that needs no whole copy (the word form of
        `contains`) never holds one. The text itself when it was already read."""
        if "body_text" in self.__dict__ or self._body.html:
            yield self.body_text
        else:
            yield from self._body.text_pieces()

    @cached_property
    def body_charset(self) -> str | None:
        return self._body.charset

    @cached_property
    def attachments(self) -> list[Attachment]:
        if "_body" not in self.__dict__ and self._is_plain_single_part:
            return []          # what the MIME walk would find, without walking the body
        return list(self._body.attachments)

    @cached_property
    def _is_plain_single_part(self) -> bool:
        """True when the top-level headers alone show a single text part that is not an
        attachment (no multipart, no message/*, no filename or name, no disposition
        `attachment`) and holds no uuencoded file: most mail, and the whole body walk would
        only confirm it."""
        ctype = _part_header(self._header_msg, "Content-Type")
        if ctype is not None and (ctype.get_content_maintype() != "text"
                                  or ctype.get_param("name") is not None):
            return False
        disposition = _part_header(self._header_msg, "Content-Disposition")
        if disposition is not None and (
                disposition.get_content_disposition() == "attachment"
                or disposition.get_param("filename", header="content-disposition") is not None):
            return False
        return not (ctype is None or ctype.get_content_type() == "text/plain") or next(
            _uu_blocks(self._header_msg, self.raw, self._body_start, self.size), None) is None

    # Reports

    def _decode_common(self) -> None:
        """Decode the headers whose notes belong in every report, whatever was read before."""
        _ = (self.subject, self.to, self.cc, self.from_name)

    @cached_property
    def header_defects(self) -> list[str]:
        """Header parser defects and header decoding problems; does not parse the body."""
        self._decode_common()
        found = [_describe(d) for d in self._header_msg.defects]
        return found + [line for lines in self._defects.values() for line in lines]

    @cached_property
    def defects(self) -> list[str]:
        found = list(self.header_defects)
        return found + [d for d in self._body.defects if d not in found]

    @cached_property
    def charset_notes(self) -> list[str]:
        self._decode_common()
        notes = [line for lines in self._notes.values() for line in lines]
        return notes + self._body.notes


def _param_message(name: str, value: str) -> Message:
    """A one-header Message so the stdlib parses parameters (RFC 2045, RFC 2231) for us.

    ``value`` is latin-1 text: each raw byte stays one character, so 8-bit names survive
    ``get_param`` and can be decoded (or guessed) afterwards.
    """
    msg = Message()
    msg[name] = value
    return msg



# The body: one MIME walk, done the first time body text, attachments or a report is asked for

_SKIP_TAGS = {"script", "style", "title", "head"}
_BLOCK_TAGS = {"br", "p", "div", "tr", "li", "table", "blockquote", "hr", "pre",
               "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "dt", "dd", "caption",
               "thead", "tbody", "tfoot", "center", "address", "section", "article", "header",
               "footer", "nav", "aside", "main", "figure", "figcaption", "form", "fieldset",
               "legend", "details", "summary"}
# Table cells: each is set apart as a browser shows it, on its row's line. Generated mail writes
# them with nothing between (`<td>{id}</td><td>{title}</td>` of a shop's order notification,
# React Email's and other templating's minified tables): "17" and "Пицца" were one word
# "17Пицца", `Сумма` and `Дата` "СуммаДата", and a rule on either word missed.
_CELL_TAGS = {"td", "th"}


class _TextExtractor(HTMLParser):
    """Text of an HTML body: tags dropped, entities unescaped, blocks on their own lines,
    table cells apart."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        elif tag in _CELL_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        elif tag in _CELL_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str | Iterable[str]) -> str:
    """Visible text of an HTML document, one line per block, spaces collapsed; the markup
    may come in pieces (html.parser reads a stream)."""
    extractor = _TextExtractor()
    try:
        for piece in (markup,) if isinstance(markup, str) else markup:
            extractor.feed(piece)
        extractor.close()
    except Exception:  # html.parser is lenient; keep what was read if it still objects
        pass
    lines = (" ".join(line.split()) for line in "".join(extractor.parts).splitlines())
    return "\n".join(line for line in lines if line)


# The bytes of a text part as (bytes, start, end), fetched when needed: a range of the raw
# message when no transfer encoding is undone, else decoded again each time.
_Bytes = Callable[[], tuple[bytes, int, int]]
# The text parts found, per kind (text/plain, text/html, text, multipart), in order
_Texts = dict[str, list[tuple[_Bytes, str | None]]]
# the kinds whose every inline part is body text; of the others only the first is read
_EVERY_PART = frozenset({"text/plain", "text/html"})


@dataclass(frozen=True, slots=True)
class _Segment:
    """One text part of the body: its bytes, read as `charset`; `small` is its text, already
    decoded (a part of up to a piece)."""

    source: _Bytes
    charset: str
    small: str | None = None

    def lf_pieces(self) -> Iterator[str]:
        """CRLF and lone CR -> LF, a piece at a time (a CR ending a piece waits for the next)."""
        if self.small is not None:
            decoded: Iterable[str] = (self.small,)
        else:
            data, start, end = self.source()
            decoded = decode_pieces(data, self.charset, start, end, PIECE_BYTES)
        carry = ""
        for piece in decoded:
            if carry:
                piece, carry = carry + piece, ""
            if piece.endswith("\r"):
                piece, carry = piece[:-1], "\r"
            if piece:
                yield piece.replace("\r\n", "\n").replace("\r", "\n")
        if carry:
            yield "\n"


@dataclass
class _Body:
    charset: str | None = None        # the first text part's
    attachments: list[Attachment] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    segments: list[_Segment] = field(default_factory=list)   # the text parts, in order
    html: bool = False

    def record(self, where: str, decoded: Decoded) -> None:
        self.notes += [f"{where}: {n}" for n in decoded.notes]
        self.defects += [f"{where}: {d}" for d in decoded.defects]

    def record_once(self, where: str, decoded: Decoded) -> None:
        """As record, less what is already recorded: the body's text parts say once what
        several of them share (each part of a list digest guessed windows-1251)."""
        self.notes += [n for n in (f"{where}: {n}" for n in decoded.notes) if n not in self.notes]
        self.defects += [d for d in (f"{where}: {d}" for d in decoded.defects)
                         if d not in self.defects]

    @property
    def text(self) -> str:
        return "".join(self.text_pieces())

    def text_pieces(self) -> Iterator[str]:
        """The body text in pieces: decoded, line ends made LF, HTML made text (at once);
        each text part begins on a line of its own."""
        for n, segment in enumerate(self.segments):
            if n:
                yield "\n"
            if self.html:
                yield html_to_text(segment.lf_pieces())
            else:
                yield from segment.lf_pieces()


# MIME parts read of one message: a message of 200,000 one-line parts (7 MB) cost a worker
# about 5 s of CPU in the view (each part's header block parsed, each leaf read), and the
# other sessions of that worker up to 0.5 s per reply (the GIL). Past it, the rules see the
# first MAX_PARTS parts and a defect says so; the message is stored and recorded whole.
MAX_PARTS = 1000
_BOUNDARY_PARAM = re.compile(rb'boundary[ \t]*=[ \t]*(?:"([^"\r\n]+)"|([^\s;"]+))', re.I)
_DASH_LINE = re.compile(rb"\n--([^\r\n]*)")


def _parts_cut(raw: bytes, body_start: int) -> int | None:
    """Where the part after the first MAX_PARTS begins (the start of its boundary line),
    or None when the message has no more. A part begins at a line `--B` of a boundary B
    some Content-Type declares (boundary="B"); a closing `--B--` begins none. Counted only
    when the body has more than MAX_PARTS lines starting with `--` (one count() for the
    rest of mail)."""
    if raw.count(b"\n--", body_start) <= MAX_PARTS:
        return None
    declared = {m.group(1) or m.group(2) for m in _BOUNDARY_PARAM.finditer(raw)}
    seen = 0
    for line in _DASH_LINE.finditer(raw, body_start - 1 if body_start else 0):
        rest = line.group(1).rstrip(b" \t")
        if rest in declared:
            seen += 1
            if seen > MAX_PARTS:
                return line.start() + 1
    return None


def _parse_body(raw: bytes) -> _Body:
    body = _Body()
    try:
        msg = BytesParser(policy=UNFOLDED).parsebytes(raw)
        walked = list(_walk(msg))
        # the leaves, and the message/* parts below the top in walk order: a forwarded
        # message is listed as an attachment before the files inside it
        parts = [(p, depth) for p, depth in walked if not p.is_multipart()
                 or p is not msg and p.get_content_maintype() == "message"]
        for part, _ in walked:
            body.defects += [_describe(d) for d in part.defects if _describe(d) not in body.defects]
    except Exception as exc:  # never raise: the parser is not ours (deep nesting, odd bytes)
        body.defects.append(f"body: {_describe(exc)}")
        return body
    # the text of a forwarded message (a bounce's returned one) is the body only when the
    # message has no text of its own: an HTML bounce read as the returned text/plain
    texts: _Texts = {}
    forwarded_texts: _Texts = {}
    for part, depth in parts:
        try:
            if part.is_multipart() and part.get_content_type() != "message/rfc822":
                _read_report_part(part, body)
            elif part.is_multipart():
                _read_forwarded(part, body, depth)
            else:
                _read_leaf(part, body, forwarded_texts if depth else texts)
        except Exception as exc:  # one broken part must not hide the others
            body.defects.append(f"body part: {_describe(exc)}")
    _choose_text(body, texts or forwarded_texts)
    return body


def _walk(part: Message, depth: int = 0) -> Iterator[tuple[Message, int]]:
    """Message.walk, with how many forwarded messages (message/rfc822) each part is inside
    (0: none), but not inside a message/* part other than message/rfc822: the parser
    reads the header blocks of a message/delivery-status (message/rfc822-headers,
    message/disposition-notification) as parts of their own, and they took the text/plain
    place of a bounce whose human-readable part is HTML (body_text was '') and gave the
    defects of the returned headers' Content-Type (StartBoundaryNotFoundDefect)."""
    yield part, depth
    if part.get_content_type() == "message/rfc822" and transfer_encoding(part) == "base64":
        _parse_base64_message(part)
    if part.is_multipart() and (part.get_content_maintype() != "message"
                                or part.get_content_type() == "message/rfc822"):
        depth += part.get_content_maintype() == "message"
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _walk(sub, depth)


def _parse_base64_message(part: Message) -> None:
    """A forwarded message in base64 (RFC 2046 section 5.2.1 allows 7bit, 8bit and binary
    alone; mail readers decode it): the parser read the base64 lines as the body of a
    message without headers, and the rules read them as its text. Its decoded bytes are
    parsed instead, and the part keeps a defect."""
    inner = part.get_payload(0) if part.is_multipart() else None
    if not isinstance(inner, Message) or inner.keys() or inner.is_multipart():
        return
    encoded = Message()
    encoded["Content-Transfer-Encoding"] = "base64"
    encoded.set_payload(inner.get_payload())
    part.set_payload([BytesParser(policy=UNFOLDED).parsebytes(decoded_payload(encoded))])
    part.defects.append(InvalidMultipartContentTransferEncodingDefect())


def _read_report_part(part: Message, body: _Body) -> None:
    """A message/* part other than message/rfc822 (a bounce's message/delivery-status) is
    an attachment when it names a file (`filename="DSN57BAC498.txt"`), as mail readers show
    it; its size is that of its header blocks."""
    name = _file_name(_part_header(part, "Content-Type"),
                      _part_header(part, "Content-Disposition"), body)
    if name:
        blocks = [p for p in part.get_payload() if isinstance(p, Message)]
        size = sum(_flat_size(p) for p in blocks)
        body.attachments.append(Attachment(name, part.get_content_type(), size))


def _part_header(part: Message, name: str) -> Message | None:
    want = name.lower()
    for key, value in part.raw_items():
        if key.lower() == want:
            return _param_message(name, unfold(_to_bytes(value).decode("latin-1")))
    return None


def _file_name(ctype_msg: Message | None, disposition: Message | None, body: _Body) -> str:
    """The decoded file name a part gives (filename=, else name=), '' when none."""
    raw_name = None
    if disposition is not None:
        raw_name = _param(disposition, "filename", "content-disposition")
    if raw_name is None and ctype_msg:
        raw_name = _param(ctype_msg, "name", "content-type")
    name = decode_param_value(raw_name)
    body.record("Attachment name", name)
    return base_name(name.text)


def base_name(name: str) -> str:
    """A file name without the directories a sender's mailer left in it
    (`C:\\Мои документы\\Договор.pdf`, `/home/ivan/scan.pdf`): RFC 2183 2.3 tells readers to
    ignore them, readers save and show the last part, and a rule on `Договор*` meets that."""
    last = max(name.rfind("/"), name.rfind("\\"))
    return name[last + 1:] if 0 <= last < len(name) - 1 else name


def _param(msg: Message, name: str, header: str) -> str | tuple[str, str, str] | None:
    """The parameter `name`; its RFC 2231 form (`filename*=utf-8''...`) when the plain one
    is there too: mailers give a plain ASCII fallback for old readers beside it
    (`filename="____.pdf"; filename*=...`), and the stdlib's get_param returns the first."""
    values = [value for key, value in msg.get_params([], header=header) if key.lower() == name]
    return next((v for v in values if isinstance(v, tuple)), values[0] if values else None)


_CRLF = policy.compat32.clone(linesep="\r\n")     # the forwarded message as it travelled


class _Flattener(BytesGenerator):
    """BytesGenerator that writes a multipart left whole (no boundary: its payload is one
    string) as the text it is. The stdlib's _handle_multipart reads that string with
    get_payload(), which decodes its 8-bit bytes in the part's charset parameter, and on a
    charset it does not know (`charset="ж"`) as ASCII with U+FFFD, which the write then
    refused: UnicodeEncodeError. A named message/rfc822-headers (message/global, ...) part
    so made was dropped from the attachments (a defect "body part: UnicodeEncodeError"),
    and a forwarded message holding one was listed with size 0."""

    def _handle_multipart(self, msg: Message) -> None:
        if isinstance(msg._payload, str):                      # type: ignore[attr-defined]
            self._handle_text(msg)                             # type: ignore[attr-defined]
        else:
            super()._handle_multipart(msg)                     # type: ignore[misc]


def _flat_size(msg: Message) -> int:
    """len(msg.as_bytes(policy=_CRLF)): the message's bytes as parsed, written back."""
    out = io.BytesIO()
    _Flattener(out, mangle_from_=False, policy=_CRLF).flatten(msg)
    return len(out.getvalue())


# Forwarded messages inside others whose size is counted: one inside more is listed with
# size 0. Counting writes the message and all inside it again, so each level cost the
# whole of what it holds: 20 chains of 900 forwards (1 MB) took minutes, past
# process_timeout (451 on every retry of the MTA); now each byte is written at most this
# many times.
_SIZED_DEPTH = 5


def _read_forwarded(part: Message, body: _Body, depth: int = 0) -> None:
    """A forwarded message (message/rfc822) is an attachment too, beside the files inside it:
    named by the part's file name, else by its own decoded Subject + '.eml'; its size is its
    bytes as parsed (headers and body of the forwarded message), 0 when it is inside more
    than _SIZED_DEPTH others (`depth` of them)."""
    name = _file_name(_part_header(part, "Content-Type"),
                      _part_header(part, "Content-Disposition"), body)
    inner = part.get_payload(0)
    if not isinstance(inner, Message):
        inner = Message()
    if not name:
        subject = next((v for k, v in inner.raw_items() if k.lower() == "subject"), None)
        decoded = decode_header_bytes(_to_bytes(subject)) if subject is not None else None
        if decoded is not None:
            body.record("Attachment name", decoded)
        name = ((decoded.text.strip() if decoded else "") or "forwarded message") + ".eml"
    try:
        size = _flat_size(inner) if depth <= _SIZED_DEPTH else 0
    except Exception:  # noqa: BLE001 (a message the generator cannot write back: size unknown)
        size = 0
    body.attachments.append(Attachment(name, "message/rfc822", size))


def _read_leaf(part: Message, body: _Body, texts: _Texts,
               leaf: Leaf | None = None) -> None:
    """One leaf: an attachment (its decoded size) or a text part (its decoded bytes: every
    plain or HTML one, the first of the other kinds). `leaf` gives the payload as a range of the raw bytes (the walk);
    without it the payload is the parsed part's."""
    ctype_msg = _part_header(part, "Content-Type")
    disposition = _part_header(part, "Content-Disposition")
    ctype = ctype_msg.get_content_type() if ctype_msg else part.get_content_type()
    name = _file_name(ctype_msg, disposition, body)
    attached = bool(name) or bool(
        disposition is not None and disposition.get_content_disposition() == "attachment")
    if attached or ctype.split("/", 1)[0] not in ("text", "multipart"):
        # an attachment's size, counted without holding its decoded bytes when it can be
        size = leaf.decoded_size() if leaf is not None else len(_payload(part))
        name = name or base_name(location_name(part))    # Apple Mail's inline files
        body.attachments.append(Attachment(name, ctype, size))
        if ctype in TNEF_TYPES or name.lower() == "winmail.dat":
            _tnef_attachments(leaf.decoded() if leaf is not None else _payload(part), body)
        return
    # a multipart left whole (no boundary, or no first boundary line: a nested multipart
    # that reuses its parent's boundary, as Zimbra and Outlook Express wrote) is read as
    # text only when the message has no text part (the parent's parts follow it); other
    # text (text/calendar beside the HTML of an invitation) only when there is no HTML
    kind = ctype if ctype in ("text/plain", "text/html") else (
        "multipart" if ctype.startswith("multipart/") else "text")
    if kind == "text/plain":
        _uu_attachments(part, leaf.source() if leaf is not None else _whole(_payload(part)), body)
    if kind not in texts or kind in _EVERY_PART:
        charset = ctype_msg.get_param("charset") if ctype_msg else None
        label = charset[2] if isinstance(charset, tuple) else charset
        if leaf is not None:
            source: _Bytes = leaf.source
        else:
            payload = _payload(part)
            source = lambda: (payload, 0, len(payload))  # noqa: E731
        texts.setdefault(kind, []).append((source, str(label) if label else None))


# Outlook's wrapper: a reader other than Outlook shows winmail.dat alone; the files inside
# are attachments too, listed after it, so a rule on attachment names sees them (tnef.py)
TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})


def _tnef_attachments(data: bytes, body: _Body) -> None:
    for name, size in tnef_files(data):
        name = base_name(name)
        ctype = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
        body.attachments.append(Attachment(name, ctype, size))


def _payload(part: Message) -> bytes:
    return decoded_payload(part)


def _whole(data: bytes) -> tuple[bytes, int, int]:
    return data, 0, len(data)


# A file uuencoded inside a text part (`uuencode report.pdf report.pdf | mail`, Outlook
# Express, scanners): mail readers list it as an attachment. Looked for in text/plain parts
# without a transfer encoding, whose bytes are a range of the raw message (no copy).
_UU_BEGIN = re.compile(rb"^begin [0-7]{3,4} +([^\r\n]*[^\s])[ \t]*\r?$", re.M)
_UU_END = re.compile(rb"^end[ \t]*\r?$", re.M)


def _uu_blocks(part: Message, data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(file name, start, end) of each uuencoded block (`begin 644 NAME` to `end`)."""
    if transfer_encoding(part) not in ("", "7bit", "8bit", "binary") \
            or data.find(b"begin ", start, end) < 0:
        return
    while (begin := _UU_BEGIN.search(data, start, end)) is not None:
        stop = _UU_END.search(data, begin.end(), end)
        if stop is None:
            return
        yield begin.group(1), begin.start(), stop.end()
        start = stop.end()


def _uu_attachments(part: Message, source: tuple[bytes, int, int], body: _Body) -> None:
    """Each uuencoded file of a text part: an attachment named as its `begin` line names it,
    its type guessed from that name (as mail readers do), its size decoded by the stdlib."""
    for raw_name, start, end in _uu_blocks(part, *source):
        encoded = Message()
        encoded["Content-Transfer-Encoding"] = "x-uuencode"
        encoded.set_payload(source[0][start:end].decode("ascii", "surrogateescape"))
        name = decode_header_bytes(raw_name)
        body.record("Attachment name", name)
        file = base_name(name.text)
        ctype = mimetypes.guess_type(file, strict=False)[0] or "application/octet-stream"
        body.attachments.append(Attachment(file, ctype, len(decoded_payload(encoded))))


def _choose_text(body: _Body, texts: _Texts) -> None:
    """text/plain if there is one, else the text of the HTML part (RFC 2046 section 5.1.4:
    the plainest alternative carries the same content), else other text (text/calendar,
    text/enriched: what a reader shows as the body only when it is all there is), else a
    multipart left whole. Every inline part of the kind chosen is read, in order: a
    multipart/mixed shows each of its parts (RFC 2046 section 5.1.3), so the text after an
    attachment (Apple Mail's text, file, text) and a list's footer part are body text too.
    Each part's charset and what was guessed or wrong are found here, a piece at a time;
    the text is decoded when it is read. Plain parts that are blank (white space alone: the
    plain alternative Outlook Express and bulk mailers write beside an HTML body, rspamd's
    bad_message.eml, a Russian mail whose HTML alone holds its words) give way to the HTML:
    a reader shows the HTML, and a rule on the body saw nothing."""
    kind = next((k for k in ("text/plain", "text/html", "text", "multipart") if k in texts), "")
    if not kind:
        return
    segments, decodeds = _segments(texts.pop(kind))
    if kind == "text/plain" and "text/html" in texts \
            and all(s.small is not None and not s.small.strip() for s in segments):
        kind = "text/html"
        segments, decodeds = _segments(texts.pop(kind))
    texts.clear()                 # the other kind's bytes are not read: let them go now
    for decoded in decodeds:
        body.record_once("Body", decoded)
    body.segments += segments
    if body.segments:
        body.charset, body.html = body.segments[0].charset, kind == "text/html"


def _segments(chosen: list[tuple[_Bytes, str | None]]) -> tuple[list[_Segment], list[Decoded]]:
    """The text parts of one kind as segments, each read in its charset, and what was found
    of each charset (for the body's notes and defects)."""
    segments: list[_Segment] = []
    decodeds: list[Decoded] = []
    kept = 0                      # decoded text held: up to a piece in all, the rest decoded again
    for source, label in chosen:
        data, start, end = source()
        decoded = inspect_bytes(data, label, CYRILLIC_BODY_CANDIDATES, start, end, PIECE_BYTES)
        decodeds.append(decoded)
        if decoded.charset is None:
            continue
        small = decoded.text if kept + end - start <= PIECE_BYTES else None
        kept += len(small or "")
        segments.append(_Segment(source, decoded.charset, small))
    return segments, decodeds

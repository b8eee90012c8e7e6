"""What rules can look at in one message for one recipient, read lazily and once.

`Facts` wraps the lazy MessageView and the envelope. A field's values are read
from the view the first time a condition asks for them, normalised once and
cached, so a message whose rules only read the subject never decodes its body.
Fields are named as in the rule language (`subject`, `body`, `header:list-id`...).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence, cast

from .normalize import PIECE, normalize, normalize_address, normalize_subject, pieces
from .patterns import utf8
from .robots import DEFAULT_ROBOT_SENDERS, robot_sender

__all__ = ["Facts", "TEXT_FIELDS", "ADDR_FIELDS", "NUM_FIELDS", "FIELD_COST", "words_of",
           "normalize_of"]

_WORD = re.compile(r"\w+")
_NOT_WORD = re.compile(r"\W")
_SPACE = re.compile(" ")
_RUN_START = re.compile(r"(?<!\s)\s")   # as normalize cuts: before a whitespace run
_HEAD = 200            # characters of a body kept for explanations (conditions.SHOWN quotes 160)


def words_of(normalised: str) -> str:
    """' tok tok ' — the word form `contains` matches on (whole words, in order)."""
    if len(normalised) > 2 * PIECE:   # a body: one piece's word list at a time
        found = (" ".join(_WORD.findall(p)) for p in pieces(normalised, _NOT_WORD))
        return " " + " ".join(w for w in found if w) + " "
    return " " + " ".join(_WORD.findall(normalised)) + " "


def _tokens(words: str) -> set[str]:
    out: set[str] = set()
    for piece in pieces(words, _SPACE):
        out.update(piece.split())
    return out


def _pairs(items: Any) -> tuple[str, ...]:
    out: list[str] = []
    for name, addr in items or ():
        out.extend(v for v in (name, addr) if v)
    return tuple(out)


def _att(view: Any, attr: str) -> tuple[Any, ...]:
    return tuple(getattr(a, attr) for a in view.attachments if getattr(a, attr, None) is not None)


def _res_mailboxes(f: "Facts") -> tuple[str, ...]:
    return tuple(dict.fromkeys(t.mailbox for t in getattr(f.resolution, "targets", ()) or ()))


# Field name -> how to read its decoded values. Envelope fields never touch the view.
_READERS: dict[str, Callable[["Facts"], tuple[Any, ...]]] = {
    "mail_from": lambda f: (f.mail_from,),
    "rcpt": lambda f: (f.rcpt,),
    "rcpt_original": lambda f: (f.original or f.rcpt,),
    "rcpt_domain": lambda f: (f.rcpt.rpartition("@")[2],),
    "rcpt_resolved": lambda f: tuple(a for a in (getattr(f.resolution, "address", None),) if a),
    "resolved_mailbox": _res_mailboxes,
    "subject": lambda f: tuple(s for s in (f.view.subject,) if s),
    "from": lambda f: _pairs([(f.view.from_name, f.view.from_addr)]),
    "from_name": lambda f: tuple(s for s in (f.view.from_name,) if s),
    "from_addr": lambda f: tuple(s for s in (f.view.from_addr,) if s),
    "to": lambda f: _pairs(f.view.to),
    "cc": lambda f: _pairs(f.view.cc),
    "body": lambda f: tuple(s for s in (f.view.body_text,) if s),
    "attachment": lambda f: _att(f.view, "filename"),
    "attachment_type": lambda f: _att(f.view, "content_type"),
    "attachment_count": lambda f: (len(f.view.attachments),),
    "attachment_size": lambda f: _att(f.view, "size"),
    "size": lambda f: (f.view.size,),
}
ADDR_FIELDS = ("mail_from", "rcpt", "rcpt_domain", "rcpt_resolved", "resolved_mailbox", "from_addr",
               "rcpt_original")
TEXT_FIELDS = ADDR_FIELDS + ("subject", "from", "from_name", "to", "cc", "body", "attachment",
                             "attachment_type")
NUM_FIELDS = ("attachment_count", "attachment_size", "size")
# Cheaper fields are preferred as pre-filters: decoding a body costs more than a subject.
FIELD_COST = {"subject": 0, "from": 1, "from_name": 1, "from_addr": 1, "to": 2, "cc": 2,
              "attachment": 4, "attachment_type": 4, "body": 5}


def normalize_of(field: str) -> Callable[[str], str]:
    """How a field's values (and the needles compared with them) are normalised: a subject
    without its reply prefixes, an address with its accents, other text folded."""
    if field == "subject":
        return normalize_subject
    return normalize_address if field in ADDR_FIELDS else normalize


def _unrooted(address: str) -> str:
    """`sales@example.com.` as `sales@example.com`: the DNS root's dot, which MTAs (and the
    address book) accept on a domain; a rule naming the address or its domain missed it, and
    the message took the book's default."""
    if address.endswith(".") and not address.endswith("..") and "@" in address:
        return address[:-1]
    return address


class Facts:
    """The lazily read, cached values of one (message, recipient) pair."""

    __slots__ = ("view", "mail_from", "rcpt", "resolution", "at", "calendars", "_raw", "_norm",
                 "_words", "_tokens", "_utf8", "_wire", "_head", "original")

    # Declared here because the module-level _READERS above reads these before mypy
    # has seen __init__'s tuple assignments.
    view: Any
    mail_from: str
    rcpt: str
    resolution: Any
    at: datetime
    calendars: Mapping[str, Any]
    original: str | None

    def __init__(self, view: Any, mail_from: str, rcpt: str, resolution: Any, at: datetime,
                 calendars: Mapping[str, Any], original: str | None = None) -> None:
        self.view, self.mail_from, self.rcpt = view, _unrooted(mail_from or ""), _unrooted(rcpt or "")
        self.original = original        # the recipient as given, when rcpt is its new address
        self.resolution, self.at, self.calendars = resolution, at, calendars
        self._raw: dict[str, tuple[Any, ...]] = {}
        self._norm: dict[str, tuple[str, ...]] = {}
        self._words: dict[str, tuple[str, ...]] = {}
        self._tokens: dict[str, frozenset[str]] = {}
        self._utf8: dict[str, tuple[bytes, ...]] = {}
        self._wire: dict[str, tuple[bytes, ...]] = {}
        self._head: tuple[str, int] | None = None

    def raw(self, field: str) -> tuple[Any, ...]:
        """Decoded values as the message has them (regex and explanations use these)."""
        got = self._raw.get(field)
        if got is None:
            if field.startswith("header:"):
                got = tuple(v for v in self.view.headers(field[7:]) if v is not None)
            else:
                got = _READERS[field](self)
            self._raw[field] = got
        return got

    def utf8(self, field: str) -> tuple[bytes, ...]:
        """The raw values as RE2 reads them, encoded once however many regexes look."""
        got = self._utf8.get(field)
        if got is None:
            got = self._utf8[field] = tuple(utf8(str(v)) for v in self.raw(field))
        return got

    def norm(self, field: str) -> tuple[str, ...]:
        got = self._norm.get(field)
        if got is None:
            fn = normalize_of(field)
            got = self._norm[field] = tuple(fn(str(v)) for v in self.raw(field))
        return got

    def words(self, field: str) -> tuple[str, ...]:
        got = self._words.get(field)
        if got is None:
            if field == "body" and field not in self._raw:
                got = tuple(w.decode("utf-8", "surrogatepass") for w in self.words_utf8(field))
            else:
                got = tuple(words_of(v) for v in self.norm(field))
            self._words[field] = got
        return got

    def words_utf8(self, field: str) -> tuple[bytes, ...]:
        """The word form as `contains` and the phrase set read it: UTF-8, once. The body's
        is made a piece of its text at a time, without the whole text or its normal form."""
        got = self._wire.get(field)
        if got is None:
            if field == "body" and field not in self._raw:
                got = self._body_words()
            else:
                got = tuple(utf8(w) for w in self.words(field))
            self._wire[field] = got
        return got

    def _body_words(self) -> tuple[bytes, ...]:
        out, length, head = bytearray(b" "), 0, ""
        for piece in self.view.body_pieces():       # each ends at a line end, or the text
            length += len(piece)
            if len(head) < _HEAD:
                head += piece[:_HEAD - len(head)]
            for part in pieces(piece, _RUN_START):   # a list of words per 64 K characters
                found = " ".join(_WORD.findall(normalize(part)))
                if found:
                    out += utf8(found)
                    out += b" "
        if not length:
            return ()
        self._head = (head, length)
        # kept as the bytearray it was made in (bytes() would copy it): read, never changed
        return (cast(bytes, out) if len(out) > 1 else b"  ",)   # words_of("") is two spaces

    def head(self, field: str) -> tuple[str, int] | None:
        """(its first characters, its length) of a value read only in pieces (the body's,
        when nothing read it whole): what an explanation quotes."""
        return self._head if field == "body" and field not in self._raw else None

    def tokens(self, field: str) -> frozenset[str]:
        """Every normalised word of a field: the set the literal-word pre-filter looks up."""
        got = self._tokens.get(field)
        if got is None:
            if field == "body" and field not in self._raw:
                found: set[str] = set()
                for w in self.words_utf8(field):      # a piece at a time, cut at a space
                    at = 0
                    while at < len(w):
                        cut = w.find(b" ", at + PIECE)
                        stop = len(w) if cut < 0 else cut
                        found.update(w[at:stop].decode("utf-8", "surrogatepass").split())
                        at = stop
                got = frozenset(found)
            else:
                got = frozenset(t for w in self.words(field) for t in _tokens(w))
            self._tokens[field] = got
        return got

    def robot(self) -> tuple[bool, str]:
        return robot_of(self.view, self.mail_from)


def robot_of(view: Any, mail_from: str,
             patterns: Sequence[str] = DEFAULT_ROBOT_SENDERS,
             sender: tuple[str, str] | None = None) -> tuple[bool, str]:
    """(True, why) for mail nobody should answer: what the message says of itself (a bounce,
    a report, an auto-reply, list mail: `MessageView.robot`, the definition the autoresponder
    reads too, by headers, subject and a bounce's first body lines), else a null envelope
    sender, which only bounces and other notices use (RFC 5321 4.5.5, RFC 3834 2), else a
    robot's address in From (noreply@, mailer-daemon@, ...: robots.py, the autoresponder's
    list). Not the envelope sender nor Return-Path: a
    person's mail sent through a mailing service comes from bounces+...@ (as Control has it,
    which opens a request for it). `patterns`: config.yaml's autoreply.robot_senders where
    the caller has them (Control's plan), so a list narrowed there is the one read.
    `sender`: (what, lower-case address) matched instead of From (Control's plan: its
    sender, the envelope's when the message has no From)."""
    flag, reason = view.robot
    if flag:
        return True, str(reason)
    if mail_from.strip() == "<>":     # as the intake records MAIL FROM:<>; '' is "unknown"
        return True, "bounce: null envelope sender <>"
    why = robot_sender([sender or ("From", (view.from_addr or "").lower())], patterns)
    return (True, why) if why else (False, "")

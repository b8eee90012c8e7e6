"""The MIME leaves of a well-formed message, found on its raw bytes without copying them.

What it is for: `MessageView` needs each leaf's headers, the decoded size of every
attachment and the decoded bytes of the text parts. The stdlib feedparser gives
those by holding every line of the message as a string, every payload joined again, and
each attachment decoded in full: 7-9 times the message in memory for a 25 MB PDF. Here
a leaf is a range of the raw bytes; an attachment's decoded size is counted in 1 MB
pieces, and a text part is decoded only when the view reads it.

What it refuses: anything it cannot vouch for gives None, and the caller parses with the
stdlib as before, so a view never depends on which of the two read the message. It
walks only messages whose lines all end in CRLF (what the intake accepts), whose header
blocks parse without a defect, whose multiparts have a boundary, a first and a closing
boundary line and a 7bit/8bit/binary encoding, and which contain no message/* part and
no multipart/digest. Each leaf has what the feedparser would give it: the headers up to
the first blank line, the payload up to the CRLF in front of the next boundary line,
boundary lines as the feedparser matches them (`--B`, an optional `--`, spaces or tabs).
"""

from __future__ import annotations

import binascii
import email.message
import re
import urllib.parse
from dataclasses import dataclass
from email import errors, policy
from email.header import Header
from email.message import Message
from email.parser import BytesHeaderParser

__all__ = ["Leaf", "UNFOLDED", "decoded_payload", "leaves", "location_name", "transfer_encoding",
           "unfold"]

_PIECE = 1 << 18                              # bytes decoded or checked at a time
_MAX_DEPTH = 50                               # nested multiparts; deeper: the stdlib
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/\r\n"
_BOUNDARY_TAIL = re.compile(rb"(--)?[ \t]*(?:\r\n|\Z)")
_UU = ("x-uuencode", "uuencode", "uue", "x-uue")


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _parseparam(value: object) -> list[str]:
    """email.message._parseparam (the ';'-separated parameters of a Content-Type or
    Content-Disposition, a ';' inside quotes kept) in linear time, with the same result.
    The stdlib's (3.11 to 3.13.0) cuts the rest of the value off after each parameter and
    counts the quotes again from its start at each ';' it tries: quadratic, so one header
    `name="` followed by 1 MB of ';' kept a worker busy past process_timeout (451 on every
    retry). Installed in its place for every Message of the process (get_param,
    get_boundary, get_filename, get_content_type...)."""
    s = ";" + str(value)
    plist: list[str] = []
    start, n = 0, len(s)
    while start < n and s[start] == ";":
        start += 1
        end = s.find(";", start)
        quotes, counted = 0, start
        while end > start:      # the quotes of s[start:end] counted once: each ';' tried adds its piece
            quotes += s.count('"', counted, end) - s.count('\\"', counted, end)
            counted = end
            if quotes % 2 == 0:
                break
            end = s.find(";", end + 1)
        if end < 0:
            end = n
        f = s[start:end]
        if "=" in f:
            i = f.index("=")
            f = f[:i].strip().lower() + "=" + f[i + 1:].strip()
        plist.append(f.strip())
        start = end
    return plist


STDLIB_PARSEPARAM = email.message._parseparam  # type: ignore[attr-defined]
email.message._parseparam = _parseparam  # type: ignore[attr-defined]


def unfold(value: str) -> str:
    """A header value unfolded (RFC 5322 2.2.3: each line break before white space goes);
    most values are one line and skip the regex."""
    return _FOLD.sub("", value) if "\n" in value else value


class _Unfolded(policy.Compat32):
    """compat32, but a header value is unfolded when read (RFC 5322 section 2.2.3), as
    policy.default reads it: a boundary folded inside its quotes (RFC 2046's own sample
    message, `boundary="simple<CRLF> boundary"`) kept the line break and matched no
    boundary line, and the whole message was read as one text part."""

    def header_fetch_parse(  # type: ignore[override]  # as Compat32 (typeshed: Policy says str)
            self, name: str, value: str) -> str | Header:
        return super().header_fetch_parse(name, unfold(value) if isinstance(value, str) else value)


UNFOLDED = _Unfolded()


@dataclass(frozen=True, slots=True)
class Leaf:
    """One non-multipart part: its parsed headers and its payload as raw[start:end]."""

    headers: Message
    raw: bytes
    start: int
    end: int

    @property
    def cte(self) -> str:
        return transfer_encoding(self.headers)

    def decoded(self) -> bytes:
        """The payload with its transfer encoding undone, as get_payload(decode=True)."""
        data = self.raw[self.start:self.end]
        cte = self.cte
        if cte == "quoted-printable":
            return binascii.a2b_qp(data)
        if cte == "base64" and self._base64_size() is not None:
            return binascii.a2b_base64(data)       # clean: the strict decode's bytes
        if cte == "base64" or cte in _UU:
            return _stdlib_decode(self.headers, data)
        return data

    def source(self) -> tuple[bytes, int, int]:
        """(bytes, start, end) whose range is decoded(): the raw bytes themselves, not a
        copy, when there is no transfer encoding to undo."""
        cte = self.cte
        if cte == "quoted-printable" or cte == "base64" or cte in _UU:
            data = self.decoded()
            return data, 0, len(data)
        return self.raw, self.start, self.end

    def decoded_size(self) -> int:
        """len(self.decoded()), without holding the decoded bytes when it can."""
        cte = self.cte
        if cte == "base64":
            size = self._base64_size()
            return size if size is not None else len(self.decoded())
        if cte == "quoted-printable":
            total, at = 0, self.start
            while at < self.end:       # QP decodes line by line: cut after a line end
                cut = self.raw.find(b"\n", min(at + _PIECE, self.end), self.end)
                stop = self.end if cut < 0 else cut + 1
                total += len(binascii.a2b_qp(self.raw[at:stop]))
                at = stop
            return total
        if cte in _UU:
            return len(self.decoded())
        return self.end - self.start

    def _base64_size(self) -> int | None:
        """Decoded size of clean base64 (alphabet and line ends only, `=` padding at the end
        and a length that is a multiple of 4); None for anything the stdlib must decode."""
        raw, stop = self.raw, self.end
        while stop > self.start and raw[stop - 1] in b"\r\n":
            stop -= 1
        pad = 0
        while pad < 2 and stop > self.start and raw[stop - 1] == 0x3D:   # '='
            stop, pad = stop - 1, pad + 1
        chars = 0
        for at in range(self.start, stop, _PIECE):
            piece = raw[at:min(at + _PIECE, stop)]
            if piece.translate(None, _B64_ALPHABET):
                return None
            chars += len(piece) - piece.count(b"\r") - piece.count(b"\n")
        if (chars + pad) % 4:
            return None
        return (chars + pad) // 4 * 3 - pad


def transfer_encoding(headers: Message) -> str:
    """The Content-Transfer-Encoding as Message.get_payload reads it, less what some mailers
    write after the value: 'base64 ', 'Base64; charset=utf-8', 'quoted-printable (ok)' are
    base64 and quoted-printable to mail readers, and the stdlib left them encoded (the
    rules read the base64 text)."""
    value = str(headers.get("content-transfer-encoding", ""))
    return value.split(";", 1)[0].split("(", 1)[0].strip().lower()


def location_name(headers: Message) -> str:
    """The file name a part's Content-Location gives (RFC 2557: a URI, absolute or
    relative): the last segment of its path, %-escapes decoded as UTF-8, '' when it has
    none (`http://example.com/`). Apple Mail names the inline images and files of an HTML
    message only so (`Content-Location: file:///Users/ivan/Desktop/Invoice%2042.pdf`, no
    filename= nor name=): they were attachments without a name, which no `attachment:`
    rule could match. For a name only when no filename= or name= gives one."""
    value = headers.get("content-location")
    if value is None:
        return ""
    text = unfold(str(value)).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = "".join(text.split())                              # RFC 2557 4.3: spaces go
    try:
        path = urllib.parse.urlsplit(text).path
    except ValueError:
        # `http://[x/a.pdf` (no IPv6 address) raised out of the part's reading: the
        # message lost every attachment ("body part: ValueError: Invalid IPv6 URL")
        path = text.split("?", 1)[0].split("#", 1)[0]
    return urllib.parse.unquote(path.rpartition("/")[2], errors="replace")


def _stdlib_decode(headers: Message, data: bytes) -> bytes:
    part = Message()
    part._headers = headers._headers            # type: ignore[attr-defined]  # shared, not changed
    part.set_payload(data.decode("ascii", "surrogateescape"))
    return decoded_payload(part)


_NOT_B64 = re.compile(rb"[^A-Za-z0-9+/]")


def decoded_payload(part: Message) -> bytes:
    """part.get_payload(decode=True), except for base64 whose data characters are one more
    than a multiple of 4 (a message cut short in transit, a mangled line): the stdlib gives
    such base64 back undecoded (bpo-27397), so the rules would read the base64 text itself;
    it is decoded here up to its last whole byte, as mail readers show it. Lines of text
    among the base64 (_text_lines) are left out."""
    cte = transfer_encoding(part)
    if cte == "base64" and not part.is_multipart():
        kept = _text_lines(_payload_text(part))
        if kept is not None:
            try:
                return binascii.a2b_base64(kept)
            except binascii.Error:           # cut short
                return _whole_bytes(kept)
    if (cte in ("base64", "quoted-printable") and not part.is_multipart()
            and cte != str(part.get("content-transfer-encoding", "")).lower()):
        text = _payload_text(part)           # the stdlib would not undo this one: done here
        data = _text_bytes(text) if isinstance(text, str) else b""
        if cte == "quoted-printable":
            return binascii.a2b_qp(data)
        try:
            return binascii.a2b_base64(data)
        except binascii.Error:               # cut short
            return _whole_bytes(data)
    before = len(part.defects)
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return b""
    if any(isinstance(d, errors.InvalidBase64LengthDefect) for d in part.defects[before:]):
        return _whole_bytes(payload)
    return payload


# A line with a character base64 has not, other than white space ("_____", "Firma-list
# mailing list", a URL): text a list server or a gateway appended to a base64 body (a
# footer, a disclaimer). The stdlib decodes its letters as base64 too: after a body with no
# "=" padding they became bytes of no charset at its end, and a UTF-8 body so damaged was
# read as windows-1251 from its first letter ("РџСЂРѕС€Сѓ" for «Прошу»).
_BASE64_LINE = re.compile(rb"[A-Za-z0-9+/=]*")


def _payload_text(part: Message) -> object:
    """The payload as parsed, its 8-bit bytes as surrogates. get_payload() reads a payload
    holding 8-bit bytes in the part's charset instead: a base64 body with a footer in Russian
    (a list server's, in UTF-8 or KOI8-R) then failed its ASCII encoding, and the whole body
    read as empty text (a defect "body part: UnicodeEncodeError"), so no rule saw its words."""
    return part._payload                      # type: ignore[attr-defined]


def _text_bytes(text: str) -> bytes:
    """A payload's text as bytes: its 8-bit bytes (surrogates) as they came, any character a
    parser made of them (U+FFFD for a byte the stdlib read as ASCII, in a forwarded
    message's base64) as UTF-8. An ASCII encoding raised on those, and the whole body was
    lost ("body: UnicodeEncodeError"); such lines are no base64 and are left out anyway."""
    return text.encode("utf-8", "surrogateescape")


def _text_lines(payload: object) -> bytes | None:
    """The base64 lines of a payload that has lines of text too (those are left out);
    None when it has none (or is not text)."""
    if not isinstance(payload, str):
        return None
    data = _text_bytes(payload)
    lines = data.split(b"\n")
    kept = [line for line in lines if _BASE64_LINE.fullmatch(line.strip())]
    return b"\n".join(kept) if len(kept) < len(lines) else None


def _whole_bytes(b64: bytes) -> bytes:
    """Base64 cut short, decoded up to its last whole byte."""
    chars = _NOT_B64.sub(b"", b64.split(b"=", 1)[0])
    return binascii.a2b_base64(chars[:len(chars) // 4 * 4])


def leaves(raw: bytes, top: Message, body_start: int) -> list[Leaf] | None:
    """The leaves of `raw` in walk order, or None when the stdlib must parse it.
    `top` is the parsed header block, `body_start` the offset after it."""
    crlf = raw.count(b"\r\n")
    if top.defects or raw.count(b"\r") != crlf or raw.count(b"\n") != crlf:
        return None
    out: list[Leaf] = []
    return out if _part(raw, top, body_start, len(raw), out, 0) else None


def _part(raw: bytes, headers: Message, start: int, end: int, out: list[Leaf], depth: int) -> bool:
    ctype = headers.get_content_type()
    main = ctype.split("/", 1)[0]
    if main == "message" or ctype == "multipart/digest" or depth > _MAX_DEPTH:
        return False
    if main != "multipart":
        out.append(Leaf(headers, raw, start, end))
        return True
    boundary = headers.get_boundary()
    if not boundary or str(headers.get("content-transfer-encoding", "8bit")).lower() not in (
            "7bit", "8bit", "binary"):
        return False
    try:
        sep = b"--" + boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return False
    lines = _boundary_lines(raw, sep, start, end)
    if len(lines) < 2 or lines[0][2] or not lines[-1][2] or any(c for _, _, c in lines[:-1]):
        return False                   # no first or no closing boundary, or parts after it
    for (_, part_start, _), (next_line, _, _) in zip(lines, lines[1:]):
        if not _subpart(raw, part_start, next_line, out, depth):
            return False
    return True


def _boundary_lines(raw: bytes, sep: bytes, start: int, end: int) -> list[tuple[int, int, bool]]:
    """(line start, line end after its CRLF, closing?) of each boundary line, up to the first
    closing one."""
    found: list[tuple[int, int, bool]] = []
    at = start if raw.startswith(sep, start) and start + len(sep) <= end else -1
    search = start
    while True:
        if at < 0:
            hit = raw.find(b"\n" + sep, search, end)
            if hit < 0:
                return found
            at = hit + 1
        tail = _BOUNDARY_TAIL.match(raw, at + len(sep), end)
        if tail is not None:
            closing = tail.group(1) is not None
            found.append((at, tail.end(), closing))
            if closing:
                return found
        search, at = at, -1


def _subpart(raw: bytes, start: int, boundary_at: int, out: list[Leaf], depth: int) -> bool:
    """The part between a boundary line's end and the next boundary line at `boundary_at`."""
    if boundary_at - start < 2:
        return False
    if raw.startswith(b"\r\n", start):
        head_end = start + 2                  # no headers: the default text/plain part
    else:
        blank = raw.find(b"\r\n\r\n", start, boundary_at)
        if blank < 0:
            return False
        head_end = blank + 4
    try:
        headers = BytesHeaderParser(policy=UNFOLDED).parsebytes(raw[start:head_end])
    except Exception:  # noqa: BLE001 (the stdlib decides, and records what it objects to)
        return False
    if headers.defects:
        return False
    end = max(head_end, boundary_at - 2)      # the CRLF before a boundary line is the boundary's
    return _part(raw, headers, head_end, end, out, depth + 1)

"""The files inside a TNEF attachment (winmail.dat, application/ms-tnef), by name and size.

Outlook and Exchange send some mail with its attachments wrapped in one TNEF file
(MS-OXTNEF): a mail reader other than Outlook shows `winmail.dat` alone, and a rule on
attachment names saw only that name, never the `invoice.pdf` inside. `files(data)` reads
the names and sizes the way Outlook would show them, nothing else (the attachments' bytes are
not copied: sizes are counted).

The stream: a signature (0x223E9F78), a 2-byte key, then attributes, each a level byte
(1 message, 2 attachment), a 4-byte id (its type in the high word), a 4-byte length, the
data and a 2-byte checksum (not checked: Outlook does not check it either). An attachment
starts at attAttachRendData; its name is the MAPI long file name (PR_ATTACH_LONG_FILENAME in
attAttachment's property list) when there is one, else the MAPI short name, else
attAttachTitle, else the display name; its size is that of attAttachData or of the MAPI
PR_ATTACH_DATA_BIN / PR_ATTACH_DATA_OBJ value. A message attached to the message
(PR_ATTACH_METHOD 5, Outlook's "attach as item": a forwarded mail) is named as Outlook shows
it, by its display name (its subject), with `.eml` as a forwarded MIME message is named
(message.py), and its size is that of the object: its attAttachTitle is "Untitled
Attachment" and its attAttachData an 89-byte placeholder (MimeKit's christmas.tnef), so a
rule on attachment names never saw the forwarded mail's subject. 8-bit strings are in the message's OEM
code page (attOemCodepage), cp1252 when it names none or one Python does not know.

Refused: nothing raises. A stream that is not TNEF gives no files; one cut short or
malformed (a length past the end, an unknown MAPI type) gives the files read before the
damage. At most MAX_FILES files are listed.
"""

from __future__ import annotations

import codecs
import struct

__all__ = ["files", "SIGNATURE"]

SIGNATURE = b"\x78\x9f\x3e\x22"
MAX_FILES = 1000

# attribute ids (low word) in the TNEF stream
_ATTACH_DATA, _ATTACH_TITLE = 0x800F, 0x8010
_ATTACH_REND_DATA, _ATTACHMENT, _OEM_CODEPAGE = 0x9002, 0x9005, 0x9007
# MAPI property tags (PidTag...)
_DISPLAY_NAME, _DATA_BIN, _FILENAME, _LONG_FILENAME = 0x3001, 0x3701, 0x3704, 0x3707
_METHOD, _EMBEDDED_MESSAGE = 0x3705, 5          # PR_ATTACH_METHOD, ATTACH_EMBEDDED_MSG
# MAPI value types: fixed sizes, and the variable-length ones (a length before each value)
_FIXED = {0x0002: 2, 0x000B: 2, 0x0003: 4, 0x0004: 4, 0x000A: 4, 0x0005: 8, 0x0006: 8,
          0x0007: 8, 0x0014: 8, 0x0040: 8, 0x0048: 16, 0x0001: 0}
_STRING8, _UNICODE, _OBJECT, _BINARY = 0x001E, 0x001F, 0x000D, 0x0102
_VARIABLE = {_STRING8, _UNICODE, _OBJECT, _BINARY, 0x0000}
_MULTI, _NAMED = 0x1000, 0x8000

_u16, _u32 = struct.Struct("<H").unpack_from, struct.Struct("<I").unpack_from


class _Damaged(Exception):
    """The stream ends or contradicts itself here: keep what was read."""


class _File:
    __slots__ = ("title", "long", "short", "display", "size", "message_size")

    def __init__(self) -> None:
        self.title = self.long = self.short = self.display = ""
        self.size = 0
        self.message_size: int | None = None     # an attached message's object size

    def name(self) -> str:
        if self.message_size is not None and self.display.strip():
            # a subject's "/" ("Счёт 42/2026") is no folder: message.py keeps a file name's
            # last segment only, and the item was named "2026.eml"
            return self.display.strip().replace("/", "_").replace("\\", "_") + ".eml"
        return self.long or self.short or self.title or self.display

    def data_size(self) -> int:
        return self.size if self.message_size is None else self.message_size


def files(data: bytes) -> list[tuple[str, int]]:
    """(name, size) of each file in the TNEF stream `data`; [] when it is not TNEF."""
    if not data.startswith(SIGNATURE):
        return []
    view, found, codepage = memoryview(data), list[_File](), "cp1252"
    at = 6
    try:
        while at + 9 <= len(view) and len(found) <= MAX_FILES:
            level, attr, length = view[at], _u32(view, at + 1)[0] & 0xFFFF, _u32(view, at + 5)[0]
            start, at = at + 9, at + 9 + length + 2
            if at > len(view):
                raise _Damaged
            value = view[start:start + length]
            if attr == _OEM_CODEPAGE and length >= 4:
                codepage = _codepage(_u32(value, 0)[0])
            elif attr == _ATTACH_REND_DATA:
                found.append(_File())
            elif level == 2 and found:
                _attachment_attribute(found[-1], attr, value, codepage)
    except _Damaged:
        pass
    return [(f.name(), f.data_size()) for f in found[:MAX_FILES]]


def _codepage(number: int) -> str:
    try:
        return codecs.lookup(f"cp{number}").name
    except LookupError:
        return "cp1252"


def _attachment_attribute(file: _File, attr: int, value: memoryview, codepage: str) -> None:
    if attr == _ATTACH_DATA:
        file.size = len(value)
    elif attr == _ATTACH_TITLE:
        file.title = _text(value, codepage)
    elif attr == _ATTACHMENT:
        props = _properties(value)
        embedded = any(tag == _METHOD and kind == 0x0003 and _u32(item, 0)[0] == _EMBEDDED_MESSAGE
                       for tag, kind, item in props)
        for tag, kind, item in props:
            if tag == _LONG_FILENAME and kind in (_STRING8, _UNICODE):
                file.long = _string(item, kind, codepage)
            elif tag == _FILENAME and kind in (_STRING8, _UNICODE):
                file.short = _string(item, kind, codepage)
            elif tag == _DISPLAY_NAME and kind in (_STRING8, _UNICODE):
                file.display = _string(item, kind, codepage)
            elif tag == _DATA_BIN and kind in (_BINARY, _OBJECT) and embedded:
                file.message_size = max(0, len(item) - (16 if kind == _OBJECT else 0))
            elif tag == _DATA_BIN and kind in (_BINARY, _OBJECT) and not file.size:
                file.size = max(0, len(item) - (16 if kind == _OBJECT else 0))   # an object's IID


def _properties(data: memoryview) -> list[tuple[int, int, memoryview]]:
    """(tag, type, value) of each single value in a MAPI property list; stops at damage."""
    out: list[tuple[int, int, memoryview]] = []
    try:
        count, at = _u32(data, _need(data, 0, 4))[0], 4
        for _ in range(count):
            kind, tag = _u16(data, _need(data, at, 4))[0], _u16(data, at + 2)[0]
            at += 4
            if tag >= _NAMED:                      # a GUID, then a number or a name
                at += 20
                if _u32(data, _need(data, at - 4, 4))[0] == 1:
                    at += 4 + _padded(_u32(data, _need(data, at, 4))[0])
            values = 1
            if kind & _MULTI:
                kind &= ~_MULTI
                values, at = _u32(data, _need(data, at, 4))[0], at + 4
                # as many values as the bytes left can hold (a fixed-size value is not read
                # through _need): a count of 2**32 - 1 of 0 or 8 bytes each was that many
                # loops, each keeping a tuple, gigabytes for a 100-byte winmail.dat
                if kind in _FIXED and (_FIXED[kind] == 0 or values * _FIXED[kind] > len(data) - at):
                    raise _Damaged
            elif kind in _VARIABLE:
                at += 4                            # the count of a single value (always 1)
            for _ in range(values):
                if kind in _FIXED:
                    size = _FIXED[kind]
                    out.append((tag, kind, data[at:at + size]))
                    at += size
                elif kind in _VARIABLE:
                    size = _u32(data, _need(data, at, 4))[0]
                    _need(data, at + 4, size)
                    out.append((tag, kind, data[at + 4:at + 4 + size]))
                    at += 4 + _padded(size)
                else:
                    raise _Damaged                 # a type whose size is not known
            if kind in _FIXED and _FIXED[kind] == 2 and values % 2:
                at += 2                            # 16-bit values: padded to 4 in all
    except (_Damaged, struct.error):
        pass
    return out


def _need(data: memoryview, at: int, size: int) -> int:
    if at < 0 or at + size > len(data):
        raise _Damaged
    return at


def _padded(size: int) -> int:
    return (size + 3) & ~3


def _string(value: memoryview, kind: int, codepage: str) -> str:
    if kind == _UNICODE:
        return bytes(value).decode("utf-16-le", "replace").split("\x00", 1)[0]
    return _text(value, codepage)


def _text(value: memoryview, codepage: str) -> str:
    return bytes(value).split(b"\x00", 1)[0].decode(codepage, "replace")

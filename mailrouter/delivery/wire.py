"""A message's DATA as it goes on the wire, made from its parts a piece at a time.

What it is for: a downstream copy is our trace lines followed by the raw bytes. Joined,
then dot-stuffed and terminated, that was three more copies of the message (3.7 times a
25 MB message for one LMTP transaction). Here the copy stays a sequence of parts (trace
lines, raw bytes) and the SMTP/LMTP client writes it in pieces of about 1 MB, each cut just
after a CRLF, dot-stuffed on its own (RFC 5321 4.5.2).

The results are those of the joined bytes: `stuffed(parts)` joins to `stuff(b"".join(parts))`
(a CRLF added when the message does not end with one, every line that starts with a dot
given another, then `.` CRLF), `bare_eol(parts)` is true when the joined bytes hold a CR or
LF that is not part of a CRLF (a CRLF may span two parts).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = ["PIECE", "Parts", "as_parts", "bare_eol", "is_ascii", "size", "stuff", "stuffed"]

PIECE = 1 << 20
Parts = Sequence[bytes]


def as_parts(data: bytes | Parts) -> tuple[bytes, ...]:
    """The non-empty parts of a message given whole or in parts."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return (bytes(data),) if data else ()
    return tuple(p for p in data if p)


def size(parts: Parts) -> int:
    return sum(len(p) for p in parts)


def is_ascii(parts: Parts) -> bool:
    return all(p.isascii() for p in parts)


def bare_eol(parts: Parts) -> bool:
    """A CR or LF of the joined parts that is not part of a CRLF."""
    crlf = sum(p.count(b"\r\n") for p in parts)
    crlf += sum(1 for a, b in zip(parts, parts[1:]) if a.endswith(b"\r") and b.startswith(b"\n"))
    return (sum(p.count(b"\r") for p in parts) != crlf
            or sum(p.count(b"\n") for p in parts) != crlf)


def stuff(data: bytes) -> bytes:
    """The DATA payload of whole bytes: dot-stuffed lines and the final dot."""
    return b"".join(stuffed((data,)))


def stuffed(parts: Parts, piece: int = PIECE) -> Iterator[bytes]:
    """The DATA payload of the joined parts, in pieces of about `piece` bytes."""
    tail = b"\r\n"            # the last two bytes before the chunk; the start is a line start
    for part in parts:
        at = 0
        while at < len(part):
            cut = part.find(b"\r\n", at + piece) if at + piece < len(part) else -1
            stop = len(part) if cut < 0 else cut + 2
            chunk = part[at:stop]
            at = stop
            before, tail = tail, (tail + chunk[-2:])[-2:]
            if before == b"\r\n" and chunk.startswith(b"."):
                chunk = b"." + chunk
            elif before.endswith(b"\r") and chunk.startswith(b"\n."):   # CRLF across parts
                chunk = b"\n." + chunk[1:]
            yield chunk.replace(b"\r\n.", b"\r\n..")
    yield b".\r\n" if tail == b"\r\n" else b"\r\n.\r\n"

"""The DATA phase's bytes, apart from the session: what they cost in memory, and the
checks and un-stuffing of a message read whole (RFC 5321 4.5.2), in place and a piece
at a time. No I/O: the session (protocol.py) reads the socket."""

from __future__ import annotations

import io

from ..values import REPLY_BAD_BYTES

__all__ = ["BAD_BYTES", "MEMORY_PER_BYTE", "DataBudget", "content"]

BAD_BYTES = str(REPLY_BAD_BYTES)

# What one byte of DATA costs in memory until its transaction is answered: the bytes as
# read, in one buffer that becomes the message without a copy; then the message and what the
# rules derive from it. bench/bench_memory_message.py (tracemalloc peak / size, 25 MB): 2.0 for
# a text body under a rule that reads its words (their UTF-8 form is about as big as the
# text), 1.1 for header-only rules or a PDF attachment; smaller messages add a fixed cost
# under 1 MB (2.2 at 5 MB, 1.75 at 1 MB). The budget counts this, not the bytes alone.
MEMORY_PER_BYTE = 2


class DataBudget:
    """Memory held by the DATA of all sessions of one process, MEMORY_PER_BYTE per byte,
    against a limit (limits.max_data_in_flight): many large messages at once must not
    exhaust memory."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)


def content(body: io.BytesIO) -> tuple[str | None, bytes]:
    """Refuse bare CR/LF and NUL; undo dot-stuffing (RFC 5321 4.5.2); the bytes.

    Lines longer than RFC 5321's 998 octets are accepted and kept as they are: broken
    mailers send them (unwrapped HTML), Postfix accepts them too, and a 5xx here would
    bounce real mail; the size limit bounds them.

    Both passes read the message a piece at a time and the un-stuffing writes back in
    place: the content is the BytesIO's own bytes object, shrunk (getvalue does not copy
    a buffer nothing else shares), so the message is never held twice."""
    crlf = cr = lf = 0
    stuffed = False
    with body.getbuffer() as view:
        prev = b"\r\n"                     # the virtual CRLF: a first line may be stuffed
        for at in range(0, len(view), _PIECE):
            piece = bytes(view[at:at + _PIECE])
            if b"\0" in piece:
                return BAD_BYTES, b""
            crlf += piece.count(b"\r\n") + (prev.endswith(b"\r") and piece.startswith(b"\n"))
            cr, lf = cr + piece.count(b"\r"), lf + piece.count(b"\n")
            stuffed = stuffed or b"\r\n." in prev + piece[:1] or b"\r\n." in prev[-1:] + piece[:2] \
                or b"\r\n." in piece
            prev = (prev + piece[-2:])[-2:]
        if cr != crlf or lf != crlf:
            return BAD_BYTES, b""
        size = _unstuff(view) if stuffed else len(view)
    body.truncate(size)
    return None, body.getvalue()


_PIECE = 1 << 18                             # 256 KB: a fixed cost per message in flight


def _unstuff(view: memoryview) -> int:
    """CRLF '.' -> CRLF in place, a piece at a time; the new length. What is written never
    passes what is still to be read (each piece only shrinks); a CRLF '.' across two pieces
    is found with the last two bytes read before."""
    out, prev = 0, b"\r\n"                  # the virtual CRLF
    for at in range(0, len(view), _PIECE):
        piece = bytes(view[at:at + _PIECE])
        before = prev
        prev = (prev + piece[-2:])[-2:]
        if before == b"\r\n" and piece.startswith(b"."):
            piece = piece[1:]
        elif before.endswith(b"\r") and piece.startswith(b"\n."):
            piece = b"\n" + piece[2:]
        piece = piece.replace(b"\r\n.", b"\r\n")
        view[out:out + len(piece)] = piece
        out += len(piece)
    return out

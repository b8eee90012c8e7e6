"""The DATA reader keeps the message in one buffer that becomes its bytes (issue 15).

Whatever the reads look like, the content, the refusals and the bytes given back to the
reader must be those of the reference below (the reader as it was: the whole stream in a
bytearray, dot-stuffing undone by one replace), and the reader must hold the message once,
not twice, at the end of DATA.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter.intake import data
from mailrouter.intake.data import BAD_BYTES
from mailrouter.intake.protocol import Protocol


def reference(stream: bytes) -> tuple[str | None, bytes, bytes]:
    """(refusal, content, what follows the terminator) of a complete DATA stream."""
    buf = b"\r\n" + stream
    end = buf.find(b"\r\n.\r\n")
    rest, buf = buf[end + 5:], buf[:end + 2]
    crlf = buf.count(b"\r\n")
    if b"\0" in buf or buf.count(b"\n") != crlf or buf.count(b"\r") != crlf:
        return BAD_BYTES, b"", rest
    return None, buf.replace(b"\r\n.", b"\r\n")[2:], rest


class _Reader:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks, self.back = list(chunks), b""

    async def read(self, n: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def feed_data(self, data: bytes) -> None:
        self.back += data

    def at_eof(self) -> bool:     # the client's EOF is never seen before the terminator here
        return False


class _Session:
    """What Protocol._read_data reads of a session."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._reader = _Reader(chunks)
        self.data_size_limit: int | None = None
        self.loop = asyncio.get_running_loop()
        self.data_budget = None
        self.data_timeout, self.data_deadline, self._held, self.session = 60.0, 600.0, 0, None

    def _reset_timeout(self, *args: Any) -> None:
        pass


async def _read(chunks: list[bytes]) -> tuple[tuple[str | None, bytes], bytes]:
    s = _Session(chunks)
    got = await Protocol._read_data(s)  # type: ignore[arg-type]
    return got, s._reader.back + b"".join(s._reader.chunks)


PARTS = [b".", b"..", b"\r\n", b"\r", b"\n", b"a", b"\0", b"\r\n.\r\n", b"\r\n..", b"xyz"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PARTS), max_size=25), st.lists(st.integers(1, 12), max_size=8),
       st.integers(1, 16))
def test_any_reads_give_the_reference_message(parts: list[bytes], cuts: list[int],
                                              piece: int) -> None:
    stream = b"".join(parts) + b"\r\n.\r\nNOOP\r\n"
    chunks, at = [], 0
    for n in cuts:
        if at < len(stream):
            chunks.append(stream[at:at + n])
            at += n
    chunks.append(stream[at:])
    chunks = [c for c in chunks if c]
    old = data._PIECE
    data._PIECE = piece                  # many pieces in the checks and the un-stuffing
    try:
        (problem, content), back = asyncio.run(_read(chunks))
    finally:
        data._PIECE = old
    want = reference(stream)
    assert (problem, content, back) == want


@pytest.mark.asyncio
async def test_the_message_is_held_once_at_the_end_of_data() -> None:
    """Before: the bytearray and the bytes made of it, twice the message at that moment."""
    line = b"..a stuffed line, and more text to make it longer than a few bytes\r\n"
    chunks = [line * 1000 for _ in range(120)] + [b".\r\n"]      # about 8 MB
    size = sum(len(c) for c in chunks)
    gc.collect()
    tracemalloc.start()
    try:
        (problem, content), _ = await _read(chunks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problem is None and content.startswith(line[1:]) and len(content) < size
    del chunks
    assert peak < 1.4 * size, peak / size

"""A downstream copy is sent from its parts, never joined (issue 15, memory per message).

`wire.stuffed(parts)` must give exactly the DATA payload of the joined bytes, `bare_eol`
must judge the joined bytes (a CRLF may span two parts), and sending a large copy must not
hold whole duplicates of it (joined, stuffed, terminated: 3.7x before).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter.delivery import wire
from mailrouter.delivery.lmtp import LMTPClient
from mailrouter.values import Downstream


def _reference(data: bytes) -> bytes:
    """RFC 5321 4.5.2 on the whole bytes, as the client did before."""
    body = data if data.endswith(b"\r\n") or not data else data + b"\r\n"
    if body.startswith(b"."):
        body = b"." + body
    return body.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def _bare(data: bytes) -> bool:
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


CHUNKS = [b".", b"..", b"\r\n", b"\r", b"\n", b"a", b"line", b"\r\n.\r\n", b"x" * 7]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(st.sampled_from(CHUNKS), max_size=12), max_size=5), st.integers(1, 16))
def test_parts_go_out_as_the_joined_bytes_would(parts_of: list[list[bytes]], piece: int) -> None:
    parts = [b"".join(p) for p in parts_of]
    joined = b"".join(parts)
    assert b"".join(wire.stuffed(parts, piece)) == _reference(joined)
    assert wire.bare_eol(wire.as_parts(parts)) == _bare(joined)
    assert wire.size(parts) == len(joined) and wire.is_ascii(parts) == joined.isascii()


async def _sink(received: list[int], done: asyncio.Event) -> asyncio.Server:
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"LHLO":
                writer.write(b"250-sink\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
                await writer.drain()
                n = 0
                while (got := await reader.readline()) != b".\r\n":
                    n += len(got)
                received.append(n)
                writer.write(b"250 ok\r\n")
                done.set()
            elif verb == b"QUIT":
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()
    return await asyncio.start_server(session, "127.0.0.1", 0)


@pytest.mark.asyncio
async def test_a_large_copy_is_sent_without_whole_duplicates() -> None:
    raw = b"Subject: big\r\n\r\n" + b".dotted line that needs stuffing\r\n" * ((8 << 20) // 34)
    head = b"Received: by us\r\nDelivered-To: a@example.test\r\n"
    received: list[int] = []
    done = asyncio.Event()
    server = await _sink(received, done)
    port = server.sockets[0].getsockname()[1]
    client = LMTPClient(Downstream("127.0.0.1", port, timeout=30.0, helo="mx.test"))
    try:
        gc.collect()
        tracemalloc.start()
        try:
            replies = await client.deliver("s@example.org", ["a@example.test"], (head, raw))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        await client.close()
        server.close()
    assert replies["a@example.test"].ok
    assert received == [len(_reference(head + raw)) - 3]
    # the sink's reads are traced too; the client's own share was 3.7x the message
    assert peak < 0.5 * len(raw), peak / len(raw)

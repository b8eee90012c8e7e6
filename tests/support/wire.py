"""A raw-socket SMTP/LMTP client for tests where the exact bytes matter.

smtplib and aiosmtplib fix line endings and read one reply after DATA; this
client sends what it is told and reads replies as they come.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Wire:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def __aenter__(self) -> "Wire":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> list[str]:
        """One (possibly multi-line) reply, as its lines."""
        lines = []
        while True:
            async with asyncio.timeout(self.timeout):
                raw = await self.reader.readline()
            if not raw:
                raise ConnectionError(f"closed by server after {lines!r}")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines

    async def line(self) -> str:
        """The last line of the next reply ('250 2.0.0 Ok ...')."""
        return (await self.reply())[-1]

    async def cmd(self, text: str) -> str:
        await self.send(text.encode("utf-8") + b"\r\n")
        return await self.line()

    async def closed(self) -> bool:
        """True when the server has closed the connection (EOF)."""
        async with asyncio.timeout(self.timeout):
            return await self.reader.read(1) == b""

    async def greet(self, verb: str = "EHLO") -> list[str]:
        assert (await self.line()).startswith("220")
        await self.send(f"{verb} client.test\r\n".encode())
        return await self.reply()

    async def transaction(self, sender: str, rcpts: list[str], body: bytes,
                          lmtp: bool = False) -> list[str]:
        """MAIL, RCPTs, DATA, body (already dot-stuffed, ending CRLF.CRLF); replies after DATA."""
        assert (await self.cmd(f"MAIL FROM:<{sender}>")).startswith("250")
        accepted = sum([(await self.cmd(f"RCPT TO:<{r}>")).startswith("250") for r in rcpts])
        assert (await self.cmd("DATA")).startswith("354")
        await self.send(body)
        n = accepted if lmtp else 1
        return [await self.line() for _ in range(n)]

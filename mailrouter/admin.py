"""Admin HTTP endpoint: GET /metrics, GET /healthz, POST /-/reload.

A deliberately small HTTP/1.0 server on asyncio streams (one request per
connection), bound to loopback by default: it exposes reload and metrics, not
mail. Requests are capped at 8 KiB of headers and answered within 10 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST

from .metrics import exposition

__all__ = ["serve_admin"]

log = logging.getLogger(__name__)
Reloader = Callable[[], Awaitable[tuple[bool, str]]]


async def _respond(writer: asyncio.StreamWriter, status: str, body: bytes, ctype: str) -> None:
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    writer.write(head + body)
    await writer.drain()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  reload: Reloader, health: Callable[[], bool]) -> None:
    try:
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ") + ["", ""]
            if method == "GET" and path == "/metrics":
                await _respond(writer, "200 OK", exposition(), CONTENT_TYPE_LATEST)
            elif method == "GET" and path == "/healthz":
                ok = health()
                await _respond(writer, "200 OK" if ok else "503 Service Unavailable",
                               b"ok\n" if ok else b"draining\n", "text/plain")
            elif method == "POST" and path == "/-/reload":
                ok, detail = await reload()
                body = json.dumps({"ok": ok, "detail": detail}, ensure_ascii=False).encode()
                await _respond(writer, "200 OK" if ok else "400 Bad Request", body,
                               "application/json")
            else:
                await _respond(writer, "404 Not Found", b"not found\n", "text/plain")
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ConnectionError):
        pass
    finally:
        writer.close()


async def serve_admin(host: str, port: int, reload: Reloader,
                      health: Callable[[], bool]) -> asyncio.Server:
    return await asyncio.start_server(
        lambda r, w: _handle(r, w, reload, health), host, port, limit=8192)

"""Admin HTTP endpoint: GET /metrics, GET /healthz, GET /readyz, POST /-/reload.

POST /-/reload answers JSON `{"ok", "detail", "postfix_maps", "config"}`: ok and the new
rule set's hash (200), or the errors that kept the old one (400); `postfix_maps` is null, or
why Postfix's tables (postfix_maps.on_reload) were not rebuilt after a reload that
succeeded (`mailrouter reload` exits 3 then); `config` is null, or the keys of config.yaml
changed since the start (or its errors), which a reload does not apply (exit 4).

/healthz is liveness: 200 "ok" (or "draining") while the process answers at all.
/readyz is readiness (health.py): 200 when listeners, registry, rules and
downstreams are fine, else 503; one line per check with its cause. Before a
scrape, `refresh()` (when given) updates what is read from the registry at scrape
time (the outbox backlog, open requests: metrics.py's scrape-time families).

A deliberately small HTTP/1.0 server on asyncio streams (one request per
connection), bound to loopback by default: it exposes reload and metrics, not
mail. Requests are capped at 8 KiB of headers and answered within 10 s.

Refused, in this order:
- a request without one Host header (400), or whose Host is not the address we
  listen on: `HOST:PORT` as configured, or for a loopback listener `localhost`,
  `127.0.0.1` or `[::1]` with our port (421 Misdirected Request). A web page that
  points its own name at 127.0.0.1 (DNS rebinding) sends its own name as Host;
- a POST whose Origin is present and is not one of those addresses (403): a page
  in a browser on this host cannot make us reload;
- with a token configured (`admin.token` / `admin.token_file`; required by the
  config check unless the listener is loopback), /-/reload and /metrics without
  `Authorization: Bearer TOKEN` (401). Prometheus sends one with
  `authorization: {credentials_file: ...}` in its scrape config. /healthz stays
  open: it says "ok" or "draining" and nothing else. /readyz stays open too (a
  load balancer's probe carries no token), but without the token it names only
  the failing checks, not their causes (downstream addresses, driver errors).
A listener on a wildcard address (0.0.0.0, ::) cannot know its own names: any
Host with our port is taken there, the token being what guards it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Awaitable, Callable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST

from .config import is_loopback
from .health import Check
from .metrics import State, exposition

__all__ = ["serve_admin"]

log = logging.getLogger(__name__)
# (ok, the new hash or the errors, why Postfix's tables were not rebuilt or None)
Reloader = Callable[[], Awaitable[tuple[bool, str, str | None, str | None]]]
Ready = Callable[[], Awaitable[Sequence[Check]]]
Refresh = Callable[[], Awaitable[None]]
OPEN_PATHS = ("/healthz", "/readyz")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def _hosts(host: str, port: int) -> frozenset[str] | None:
    """The Host header values we answer to (lower case), or None for a wildcard bind."""
    bare = host.strip("[]")
    if bare in ("", "0.0.0.0", "::"):
        return None
    names = {f"[{bare}]" if ":" in bare else bare}
    if is_loopback(bare):
        names.update(LOOPBACK_NAMES)
    return frozenset(f"{n}:{port}".lower() for n in names) | (
        frozenset(n.lower() for n in names) if port == 80 else frozenset())


class _Request:
    __slots__ = ("headers", "method", "path")

    def __init__(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.method, self.path, *_ = lines[0].split(" ") + ["", ""]
        self.headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                self.headers.setdefault(name.strip().lower(), []).append(value.strip())

    def one(self, name: str) -> str | None:
        """The value of a header sent exactly once; None when absent or repeated."""
        values = self.headers.get(name, [])
        return values[0] if len(values) == 1 else None


class _Admin:
    def __init__(self, reload: Reloader, health: Callable[[], bool], token: str | None,
                 ready: Ready | None = None, refresh: Refresh | None = None,
                 state: State | None = None) -> None:
        self.reload, self.health, self.token = reload, health, token
        self.ready, self.refresh, self.state = ready, refresh, state
        self.hosts: frozenset[str] | None = frozenset()
        self.port = 0

    def refusal(self, req: _Request) -> tuple[str, str] | None:
        """(status, text) refusing the request, or None to serve it."""
        host = req.one("host")
        if host is None:
            return "400 Bad Request", "one Host header is required\n"
        if not self._ours(host):
            return "421 Misdirected Request", "this is not the address of the admin endpoint\n"
        if req.method == "POST" and "origin" in req.headers:
            origin = (req.one("origin") or "").lower()
            if not origin.startswith("http://") or not self._ours(origin[7:]):
                return "403 Forbidden", "cross-origin requests are refused\n"
        if req.path not in OPEN_PATHS and not self.authorized(req):
            return "401 Unauthorized", "a bearer token is required (admin.token_file)\n"
        return None

    def authorized(self, req: _Request) -> bool:
        """No token configured, or the request carries it."""
        if self.token is None:
            return True
        scheme, _, credentials = (req.one("authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self.token.encode())

    def _ours(self, host: str) -> bool:
        host = host.lower()
        if self.hosts is None:              # a wildcard bind: any name, our port
            return host.rpartition(":")[2] == str(self.port)
        return host in self.hosts

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10) as limit:
                req = _Request(await reader.readuntil(b"\r\n\r\n"))
                refused = self.refusal(req)
                if refused is not None:
                    log.warning("event=admin_refused status=%r path=%r", refused[0][:3], req.path[:80])
                    await _respond(writer, refused[0], refused[1].encode(), "text/plain",
                                   refused[0].startswith("401"))
                elif req.method == "GET" and req.path == "/metrics":
                    if self.refresh is not None:
                        await self.refresh()
                    await _respond(writer, "200 OK", exposition(self.state), CONTENT_TYPE_LATEST)
                elif req.method == "GET" and req.path == "/healthz":
                    # alive while we answer; draining is readiness's business (/readyz)
                    await _respond(writer, "200 OK", b"ok\n" if self.health() else b"draining\n",
                                   "text/plain")
                elif req.method == "GET" and req.path == "/readyz" and self.ready is not None:
                    await self._readyz(writer, self.authorized(req))
                elif req.method == "POST" and req.path == "/-/reload":
                    # as long as the load takes (and, with workers, the others' loads): the
                    # connection was closed after 10 s with no answer (mailrouter reload
                    # waits 60 s)
                    limit.reschedule(None)
                    ok, detail, maps_error, config = await self.reload()
                    limit.reschedule(asyncio.get_running_loop().time() + 10)
                    body = json.dumps({"ok": ok, "detail": detail, "postfix_maps": maps_error,
                                       "config": config}, ensure_ascii=False).encode()
                    await _respond(writer, "200 OK" if ok else "400 Bad Request", body,
                                   "application/json")
                else:
                    await _respond(writer, "404 Not Found", b"not found\n", "text/plain")
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        finally:
            writer.close()


    async def _readyz(self, writer: asyncio.StreamWriter, detailed: bool) -> None:
        assert self.ready is not None
        checks = await self.ready()
        ok = all(c.ok for c in checks)
        if detailed:
            body = "".join(c.line() + "\n" for c in checks)
        else:
            failed = [c.name for c in checks if not c.ok]
            body = "ready\n" if ok else f"not ready: {', '.join(failed)}\n"
        await _respond(writer, "200 OK" if ok else "503 Service Unavailable",
                       body.encode("utf-8", "replace"), "text/plain; charset=utf-8")


async def _respond(writer: asyncio.StreamWriter, status: str, body: bytes, ctype: str,
                   challenge: bool = False) -> None:
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            + ('WWW-Authenticate: Bearer realm="mailrouter"\r\n' if challenge else "")
            + "Connection: close\r\n\r\n").encode()
    writer.write(head + body)
    await writer.drain()


async def serve_admin(host: str, port: int, reload: Reloader, health: Callable[[], bool],
                      token: str | None = None, ready: Ready | None = None,
                      refresh: Refresh | None = None, state: State | None = None,
                      ) -> asyncio.Server:
    admin = _Admin(reload, health, token, ready, refresh, state)
    server = await asyncio.start_server(admin.handle, host, port, limit=8192)
    admin.port = server.sockets[0].getsockname()[1]     # the port asked may be 0
    admin.hosts = _hosts(host, admin.port)
    return server

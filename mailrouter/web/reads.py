"""The registry as the web view uses it: at most WEB_READS of its reads at a time.

A SQLite registry runs reads on a pool of four threads, shared with the daemon: the
retry look-up of each message's delivered copies and execution control's plan of each
request read there too. A report over years of requests (or many at once: a head
pressing reload) took every thread for seconds; an incoming message then waited behind
them, its reply late by as long and past the registry timeout a 451. A read that times
out is not stopped either: its thread goes on to the end, so the next page took another.

So a page's read waits here for a slot, and a slot is free again only when the read's
thread is done with it (or when a read still queued for a thread was given up: it will
never run). The daemon keeps the other threads. A page that waits longer than SLOT_WAIT
is a RegistryError (503, the error page). Writes pass through: they are short, and
the registry runs them one at a time anyway. On PostgreSQL the reads run on the event
loop's connection pool, which this bounds the same way.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import RegistryError
from ..registry import Registry

__all__ = ["WebRegistry", "WEB_READS", "SLOT_WAIT"]

T = TypeVar("T")
WEB_READS = 2           # of the registry's four read threads
SLOT_WAIT = 30.0        # seconds a page waits for a slot before it answers 503


class WebRegistry:
    """`read` limited to WEB_READS at a time (see the module's docstring), `write` as is."""

    def __init__(self, registry: Registry, most: int = WEB_READS, wait: float = SLOT_WAIT) -> None:
        self.registry, self.wait = registry, wait
        self._slots = threading.BoundedSemaphore(most)
        self._freed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _release(self) -> None:
        self._slots.release()
        loop, freed = self._loop, self._freed
        if loop is not None and freed is not None and not loop.is_closed():
            loop.call_soon_threadsafe(freed.set)

    async def _acquire(self, what: str) -> None:
        if self._freed is None:
            self._loop, self._freed = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with asyncio.timeout(self.wait):
                while not self._slots.acquire(blocking=False):
                    self._freed.clear()
                    if self._slots.acquire(blocking=False):     # freed before the clear
                        return
                    await self._freed.wait()
        except TimeoutError:
            raise RegistryError(f"registry {what}: the web view's reads are all busy") from None

    async def read(self, what: str, fn: Callable[[Any], T]) -> T:
        await self._acquire(what)
        lock = threading.Lock()
        state = {"started": False, "abandoned": False}

        def run(conn: Any) -> T:
            with lock:
                if state["abandoned"]:      # given up while queued: the slot is already free
                    raise RegistryError(f"registry {what}: given up")
                state["started"] = True
            try:
                return fn(conn)
            finally:
                self._release()
        try:
            return await self.registry.read(what, run)
        finally:
            with lock:
                if not state["started"]:    # never ran, and now never will
                    state["abandoned"] = True
                    self._release()

    async def write(self, what: str, fn: Callable[[Any], T], **kw: Any) -> T:
        return await self.registry.write(what, fn, **kw)

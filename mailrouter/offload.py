"""CPU work that must not run on the event loop: a few daemon threads fed from a queue.

Deciding a message (MIME parse, decoding, rules) is pure CPU. On the loop, a 21 MB
message or a large rule set stalled every session of the worker for as long as it
took, and `asyncio.timeout` could not interrupt it. `Offload.run` hands the call
to a thread and awaits it, so the loop keeps serving and the timeout around the
await really bounds the time to the reply.

Why not `asyncio.to_thread` or a `ThreadPoolExecutor`: their threads are joined at
exit (`asyncio.run` waits for the default executor, and concurrent.futures joins
its workers at interpreter exit), so SIGTERM would wait for a decision nobody
awaits any more. These threads are daemon threads; a job that is cancelled before
a thread takes it never runs. A running job cannot be stopped (Python has no way
to), but it only computes: its caller has gone, so its result is dropped and
nothing acts on it. Regex matching is RE2 (linear) so such a job ends soon anyway.

Threads start on first use, in the process that uses them (workers are forked).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["Offload"]

T = TypeVar("T")
_Job = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...]]


class Offload:
    """`await pool.run(fn, *args)`: fn(*args) on one of `threads` daemon threads."""

    def __init__(self, threads: int, name: str) -> None:
        self.threads, self.name = threads, name
        self._pid = 0
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def busy(self) -> int:
        """Jobs queued or running, cancelled ones included until a thread has dropped them."""
        return self._pending

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        self._start()
        fut: Future[T] = Future()
        with self._lock:
            self._pending += 1
        self._queue.put((fut, fn, args))
        return await asyncio.wrap_future(fut)

    def _start(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:                  # a fork inherits no threads: start them here
            if self._pid == os.getpid():
                return
            self._queue, self._pending = queue.SimpleQueue(), 0
            for i in range(self.threads):
                threading.Thread(target=self._work, args=(self._queue,), daemon=True,
                                 name=f"{self.name}-{i}").start()
            self._pid = os.getpid()

    def _work(self, jobs: queue.SimpleQueue[_Job]) -> None:
        while True:
            fut, fn, args = jobs.get()
            try:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn(*args))
                    except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                        fut.set_exception(exc)
            finally:
                with self._lock:
                    self._pending -= 1

"""Several worker processes on one set of listening sockets, to use every core.

One event loop is one core. With `workers: N` (or `auto`, one per core) the
parent process binds the listeners, migrates the registry schema once, forks N
workers that each run the whole daemon on the inherited sockets (the kernel
hands each new connection to one of them), and then only supervises:

- SIGTERM/SIGINT go to every worker; each drains as a single daemon would
  (421 4.3.2 to new work, transactions in flight finish) and the parent exits
  0 once all have exited 0;
- SIGHUP goes to every worker (each reloads its routing snapshot, coalescing
  a burst into at most two reloads); a reload asked of worker 0 through the
  admin endpoint is passed on the same way, before worker 0 starts its own;
- a worker that dies unexpectedly is logged and replaced (at most once a
  second); the parent's death kills the workers (PR_SET_PDEATHSIG), so a
  crashed supervisor never leaves orphans holding the ports.

Only worker 0 serves the admin endpoint; /metrics adds up every worker's
counters through prometheus_client's multiprocess mode.
Known limit: Linux only (fork, PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import time
from typing import Callable

from .config import Config
from .errors import ListenError

__all__ = ["bind", "supervise", "PARENT_RELOAD_SIGNAL", "HANDLED"]

log = logging.getLogger("mailrouter.workers")
PARENT_RELOAD_SIGNAL = signal.SIGUSR1      # worker 0 -> parent: "reload the others"
_PR_SET_PDEATHSIG = 1


def bind(host: str, port: int, what: str = "smtp") -> socket.socket:
    """A listening TCP socket, as asyncio would make it, to be shared by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError.of(what, host, port, exc) from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: orphans are possible, say so
        log.warning("event=no_pdeathsig workers may outlive a killed supervisor")


HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, PARENT_RELOAD_SIGNAL}


def _spawn(index: int, child: Callable[[int], int]) -> int:
    # A signal that reached the child before its event loop handles signals would run the
    # parent's inherited handler there (and be lost) or kill it half-started: keep them
    # blocked across the fork; the worker unblocks them once its loop handles them.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    pid = os.fork()
    if pid != 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    if pid == 0:
        code = 1
        try:
            _die_with_parent()
            for sig in HANDLED:
                signal.signal(sig, signal.SIG_DFL)
            code = child(index)
        except BaseException:  # a worker must never fall back into the parent's code
            log.exception("event=worker_crashed worker=%d", index)
        finally:
            logging.shutdown()
            os._exit(code)
    log.info("event=worker_started worker=%d pid=%d", index, pid)
    return pid


START_FAILED = 2    # a worker's exit code when it could not start: not worth a restart


def supervise(config: Config, child: Callable[[int], int],
              on_exit: Callable[[int], None] = lambda pid: None) -> int:
    """Fork `config.workers` children running `child(index)`; return the exit code."""
    workers: dict[int, int] = {}            # pid -> index
    stopping = False

    def forward(sig: int, only_others: bool = False) -> None:
        for pid, index in list(workers.items()):
            if not (only_others and index == 0):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def on_signal(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
            forward(signal.SIGTERM)
        elif sig == signal.SIGHUP:
            forward(signal.SIGHUP)
        elif sig == PARENT_RELOAD_SIGNAL:
            forward(signal.SIGHUP, only_others=True)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, PARENT_RELOAD_SIGNAL):
        signal.signal(sig, on_signal)
    def start(index: int) -> None:
        pid = _spawn(index, child)
        workers[pid] = index
        if stopping:   # the stop arrived while forking, before this pid was in the table
            os.kill(pid, signal.SIGTERM)

    for index in range(config.workers):
        if not stopping:
            start(index)
    code, last_restart = 0, 0.0
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in workers:
            continue
        index = workers.pop(pid)
        on_exit(pid)
        exit_code = os.waitstatus_to_exitcode(status)
        if stopping:
            code = max(code, abs(exit_code))
            continue
        if exit_code == START_FAILED:
            # It could not start (a port taken, the registry unreachable): its siblings and
            # its replacements would fail the same way, forever. Stop everything, say so.
            log.error("event=worker_start_failed worker=%d pid=%d; stopping", index, pid)
            stopping, code = True, START_FAILED
            forward(signal.SIGTERM)
            continue
        log.error("event=worker_died worker=%d pid=%d code=%d, restarting", index, pid, exit_code)
        time.sleep(max(0.0, last_restart + 1.0 - time.monotonic()))
        last_restart = time.monotonic()
        if not stopping:
            start(index)
    return code

#!/usr/bin/env python3
"""Faults injected under load, as an outside tester would: the real daemon, real clients.

    cd /work/wt/fault10 && sudo PYTHONPATH=$PWD python bench/chaos.py                 # SQLite
    PYTHONPATH=$PWD python bench/chaos.py --pg --seconds 120 --messages 3000 --seed 7  # PostgreSQL
    PYTHONPATH=$PWD python bench/chaos.py --faults kill-worker,kill-supervisor,stop-worker
    PYTHONPATH=$PWD python bench/chaos.py --workers 1 --var-tmpfs 24m --faults var-full,hup-broken

Runs `mailrouter run -c` (workers: 2) in a temp dir: the Maildir root on a small tmpfs of
its own, the registry in SQLite (or, --pg, a private PostgreSQL cluster from
/usr/lib/postgresql/*/bin), and an SMTP relay downstream played by this script (mailbox
`fwd`). `--clients` MTA-like aiosmtplib clients send `--messages` distinct messages (each
its own Message-ID; recipients: sales, sales+support, fwd, or sales+fwd), keep a session
open across messages, and retry every 4xx, dropped connection or timeout a little later,
as an MTA's queue does. For `--seconds`, faults are injected one at a time, at random:

  kill-worker       SIGKILL a worker (the supervisor replaces it)
  kill-supervisor   SIGKILL the supervisor (its workers die with it), then start again on
                    the same var/: every copy in the store must be in the registry within
                    --settle seconds of the restart
  stop-worker       SIGSTOP a worker for a few seconds, then SIGCONT
  maildir-ro        the Maildir root read-only (a read-only bind mount over it)
  maildir-remount-ro  the Maildir's tmpfs remounted read-only, then read-write
  maildir-full      the tmpfs filled to ENOSPC, then freed
  sqlite-lock       another process holds BEGIN EXCLUSIVE on the registry file (SQLite)
  pg-restart        the PostgreSQL cluster stopped, then started again (--pg)
  relay-refuse      the relay answers 451 to MAIL
  relay-reject      the relay answers 550 to RCPT (our configured mailbox: held as 451)
  relay-hang        the relay stops answering after the final dot
  relay-down        the relay's port refuses connections
  relay-reset       the relay cuts the connection after the final dot, without a reply
  pg-terminate      pg_terminate_backend on every connection of the daemon, again and
                    again (--pg)
  hup-broken        a routing file broken, SIGHUP (refused: the old rules keep running),
                    then the good file back and SIGHUP
  hup-good          good routing files (one more alias each time) and SIGHUP, a few times
  var-full          var/ (the SQLite registry and the intent journals) full (--var-tmpfs)
  var-ro            var/ read-only: a read-only bind mount over it, as a tmpfs with files
                    open for writing cannot be remounted read-only (--var-tmpfs)
  stop-supervisor   SIGSTOP the supervisor for a while, then SIGCONT
  term-supervisor   SIGTERM to the supervisor (it drains and exits 0), then a start again
  fd-limit          every daemon process out of file descriptors (its soft RLIMIT_NOFILE
                    lowered to the number it has open), then set back

--workers 1 runs the single-process daemon (kill-worker and stop-worker find no worker
then: kill-supervisor kills the one process). --min-hold 30 --hold 30 holds each fault
30 s (a registry locked by another process for 30 s: --faults sqlite-lock).

With --overlap P, two faults of different kinds run at the same time, with chance P
(a worker killed while the registry is locked, say). After each kill-worker every copy in
the store at the kill must be recorded within the fault's hold + --settle seconds.
With --give-up P a client never sends again, with chance P, a message that got a 4xx
(its sender gave up, or its queue bounced it days later).

Then the faults stop, the clients retry until every message has its 250 (--recover
seconds at most); while the daemon still runs every copy in the store must be in the
registry within --settle seconds; the supervisor is SIGKILLed and started once more, and
every message is checked against the invariant:

  - no reply ever a 5xx; no final-dot reply later than process_timeout + 5 s, but while a
    worker was stopped (SIGSTOP is not something a process can answer through);
  - a message that got 250: one copy per Maildir recipient, at least one at the relay
    (at-least-once, documented), and a registry row `delivered` with each target delivered;
  - every copy in the store (any message, answered or not) has its registry row and a
    `delivered` delivery for its mailbox, no (Message-ID, mailbox) twice;
  - every message ends with a 250 without manual action;
  - every fault window saw 4xx (or a drop), not 5xx.

It prints the findings (VIOLATION lines) and a summary per fault, and exits 1 when any
invariant broke. Needs root (mount). Leaves nothing mounted: everything started is stopped
in `finally`. The work dir is kept with --keep (daemon.log, the store, the registry).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiosmtplib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SENDER = "chaos@outside.test"
MSGID = re.compile(rb"^Message-ID: <(chaos-\d+)@outside\.test>\r?$", re.M | re.I)
RCPT_SETS = [["sales@example.com"], ["sales@example.com", "support@example.com"],
             ["fwd@example.com"], ["sales@example.com", "fwd@example.com"]]
MAILBOX = {"sales@example.com": "sales", "support@example.com": "support",
           "fwd@example.com": "fwd"}
ROUTING = """\
domains: [example.com]
mailboxes:
  sales:   {maildir: sales}
  support: {maildir: support}
  fwd:     {smtp: fwd@downstream.test}
aliases:
  sales@example.com:   mailbox:sales
  support@example.com: mailbox:support
  fwd@example.com:     mailbox:fwd
"""
PROCESS_TIMEOUT = 15
RESTARTS = ("kill-supervisor", "term-supervisor", "stop-supervisor")   # never two at once
ALL_FAULTS = ["kill-worker", "kill-supervisor", "stop-worker", "maildir-ro", "maildir-full",
              "sqlite-lock", "pg-restart", "relay-refuse", "relay-reject", "relay-hang",
              "relay-down", "relay-reset", "pg-terminate", "hup-broken", "hup-good",
              "var-full", "var-ro", "fd-limit",
              "term-supervisor", "stop-supervisor", "maildir-remount-ro",
              "relay-data-reset", "relay-dot-temp", "relay-dot-perm", "relay-slow", "pg-stop",
              "sqlite-delete", "sqlite-wal-delete", "sqlite-chmod", "maildir-chmod"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mail(i: int) -> bytes:
    return (f"From: Chaos <{SENDER}>\r\nTo: someone@example.com\r\nSubject: chaos {i}\r\n"
            f"Message-ID: <chaos-{i}@outside.test>\r\n\r\nmessage number {i}\r\n"
            + "a line of body text to give the message some weight.\r\n" * 8).encode()


# -- the relay downstream -----------------------------------------------------------------

class Relay:
    """A small SMTP server: counts the Message-IDs it accepted; `mode` says how it behaves."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.got: collections.Counter[str] = collections.Counter()
        self.server: asyncio.Server | None = None
        self.port = free_port()
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", self.port,
                                                 reuse_address=True)

    async def stop_listening(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.close()
            await self.server.wait_closed()
            self.server = None

    async def _session(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.writers.add(w)
        try:
            w.write(b"220 relay.test ESMTP\r\n")
            while True:
                line = await r.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    w.write(b"250-relay.test\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    w.write(b"451 4.3.0 relay says later\r\n" if self.mode == "refuse"
                            else b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    w.write(b"550 5.1.1 no such user\r\n" if self.mode == "reject"
                            else b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    w.write(b"354 go\r\n")
                    await w.drain()
                    body = bytearray()
                    while True:
                        chunk = await r.readline()
                        if not chunk:
                            return
                        if chunk == b".\r\n":
                            break
                        body += chunk
                        if self.mode == "data-reset" and len(body) > 200:   # cut mid-DATA
                            with contextlib.suppress(OSError):
                                w.transport.abort()
                            return
                    if self.mode in ("dot-451", "dot-554"):   # the data read, then refused
                        w.write(b"451 4.3.0 relay after dot: later\r\n" if self.mode == "dot-451"
                                else b"554 5.3.0 relay after dot: broken\r\n")
                        await w.drain()
                        continue
                    if self.mode == "slow":      # an answer after a while
                        await asyncio.sleep(random.uniform(0.5, 3))
                    if self.mode == "reset":     # the connection cut, no reply
                        with contextlib.suppress(OSError):
                            w.transport.abort()
                        return
                    if self.mode == "hang":
                        while self.mode == "hang":
                            await asyncio.sleep(0.2)
                        return                      # after a hang: drop, nothing kept
                    m = MSGID.search(bytes(body))
                    self.got[m.group(1).decode() if m else "?"] += 1
                    w.write(b"250 2.0.0 queued\r\n")
                elif verb == b"RSET" or verb == b"NOOP":
                    w.write(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    w.write(b"221 bye\r\n")
                    await w.drain()
                    return
                else:
                    w.write(b"502 5.5.2 what\r\n")
                await w.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self.writers.discard(w)
            w.close()


# -- the daemon -------------------------------------------------------------------------

class Daemon:
    def __init__(self, work: Path, url: str, relay_port: int, store: Path,
                 workers: str = "2") -> None:
        self.work, self.url = work, url
        self.smtp, self.admin = free_port(), free_port()
        routing = work / "routing.yaml"
        routing.write_text(ROUTING)
        self.config = work / "config.yaml"
        self.config.write_text(
            f"hostname: mx.test\n"
            f"listen: {{smtp: '127.0.0.1:{self.smtp}', lmtp: null, admin: '127.0.0.1:{self.admin}'}}\n"
            f"routing: ['{routing}']\n"
            f"registry: {{url: '{url}', timeout: 3}}\n"
            f"delivery: {{maildir_root: '{store}', hold_permanent_failures: 1d,\n"
            f"  smtp: {{host: 127.0.0.1, port: {relay_port}, timeout: 5, pool_size: 2}}}}\n"
            f"limits: {{process_timeout: {PROCESS_TIMEOUT}, command_timeout: 60}}\n"
            f"autoreply: {{dns: {{check: false}}}}\n"
            f"workers: {workers}\nshutdown_grace: 10\n")
        self.log = work / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start_as_systemd(self, tries: int = 30) -> float:
        """`start` again every 2 s while the start is refused, as the unit's
        Restart=on-failure RestartSec=2 does: a start during a fault (var/ read-only, the
        registry down) exits 2, by design; the seconds until it listened."""
        t0 = time.monotonic()
        for _ in range(tries - 1):
            try:
                self.start()
                return time.monotonic() - t0
            except RuntimeError as exc:
                print(f"  start refused ({exc}); again in 2 s, as systemd would", flush=True)
                time.sleep(2)
        self.start()
        return time.monotonic() - t0

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait until it listens; the seconds it took."""
        t0 = time.monotonic()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log, "ab") as log:
            log.write(f"\n==== start {self.starts} at {time.time():.3f}\n".encode())
            log.flush()
            # CHAOS_NO_DAC=1: root without CAP_DAC_OVERRIDE, so a chmod bites as it does
            # for the mailrouter user (root ignores file modes)
            nodac = (["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                      "--inh-caps=-dac_override,-dac_read_search"]
                     if os.environ.get("CHAOS_NO_DAC") else [])
            self.proc = subprocess.Popen(
                [*nodac, sys.executable, "-m", "mailrouter.cli", "run", "-c", str(self.config)],
                cwd=self.work, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.starts += 1
        while time.monotonic() < t0 + timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}; see {self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.smtp), timeout=0.2).close()
                return time.monotonic() - t0
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"daemon did not listen in {timeout} s; see {self.log}")

    def workers(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        pids = []
        for p in text.split():     # the supervisor forks only workers (and short children)
            with contextlib.suppress(OSError):
                if "mailrouter" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(p))
        return pids

    def kill(self) -> None:
        """SIGKILL the supervisor; wait for it and for its workers (PR_SET_PDEATHSIG)."""
        assert self.proc is not None
        workers = self.workers()
        self.proc.kill()
        self.proc.wait()
        for _ in range(200):
            if not any(Path(f"/proc/{p}").exists() and
                       "Z" not in _state(p) for p in workers):
                return
            time.sleep(0.05)
        print(f"VIOLATION workers {workers} outlived their supervisor", flush=True)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


# -- the registry, read from outside ------------------------------------------------------

class Registry:
    def __init__(self, url: str) -> None:
        self.url = url

    async def rows(self) -> tuple[dict[str, str], set[tuple[str, str]]]:
        """message_id -> status, and the (message_id, target) delivered."""
        if self.url.startswith("sqlite"):
            return await asyncio.to_thread(self._sqlite)
        import asyncpg
        dsn = self.url.replace("postgresql+asyncpg", "postgresql")
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            msgs = await conn.fetch("SELECT message_id, status FROM messages")
            dels = await conn.fetch("SELECT m.message_id, d.target FROM deliveries d JOIN "
                                    "messages m ON m.key = d.message_key WHERE d.state = 'delivered'")
        finally:
            await conn.close()
        return ({r[0]: r[1] for r in msgs}, {(r[0], r[1]) for r in dels})

    def _sqlite(self) -> tuple[dict[str, str], set[tuple[str, str]]]:
        path = self.url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            msgs = db.execute("SELECT message_id, status FROM messages").fetchall()
            dels = db.execute("SELECT m.message_id, d.target FROM deliveries d JOIN messages m "
                              "ON m.key = d.message_key WHERE d.state = 'delivered'").fetchall()
        return ({m: s for m, s in msgs}, {(m, t) for m, t in dels})


def store_copies(root: Path) -> collections.Counter[tuple[str, str]]:
    """(message id, mailbox) -> copies in new/ and cur/."""
    out: collections.Counter[tuple[str, str]] = collections.Counter()
    for box in root.iterdir() if root.exists() else ():
        for sub in ("new", "cur"):
            d = box / sub
            if not d.is_dir():
                continue
            for f in d.iterdir():
                try:
                    m = MSGID.search(f.read_bytes())
                except OSError:
                    continue
                out[(m.group(1).decode() if m else f"?{f.name}", box.name)] += 1
    return out


def unrecorded(copies: collections.Counter[tuple[str, str]], msgs: dict[str, str],
               dels: set[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((mid, box) for (mid, box) in copies
                  if (f"<{mid}@outside.test>", box) not in dels)


# -- the clients ------------------------------------------------------------------------

@dataclass
class Attempt:
    t0: float
    t1: float
    outcome: str              # "250", "4xx 451 ...", "5xx ...", "drop ...", "hang"


@dataclass
class Run:
    t_start: float = field(default_factory=time.monotonic)
    attempts: dict[int, list[Attempt]] = field(default_factory=lambda: collections.defaultdict(list))
    acked: set[int] = field(default_factory=set)
    windows: list[tuple[str, float, float, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    stopped: list[tuple[float, float]] = field(default_factory=list)   # SIGSTOP windows
    given_up: set[int] = field(default_factory=set)    # 4xx and never sent again

    def violation(self, text: str) -> None:
        self.violations.append(text)
        print(f"VIOLATION {text}", flush=True)


async def client(port: Callable[[], int], queue: asyncio.Queue[int], run: Run,
                 retry: list[int], give_up: float) -> None:
    smtp: aiosmtplib.SMTP | None = None
    while True:
        i = await queue.get()
        if i < 0:
            break
        raw, rcpts = mail(i), RCPT_SETS[i % len(RCPT_SETS)]
        t0 = time.monotonic()
        try:
            if smtp is None or not smtp.is_connected:
                smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port(), timeout=40)
                await smtp.connect()
            errors, _ = await smtp.sendmail(SENDER, rcpts, raw)
            outcome = "250" if not errors else f"4xx partial {errors}"
        except aiosmtplib.SMTPRecipientsRefused as exc:
            outcome = f"rcpt {exc.recipients[0].code} {exc.recipients[0].message}"
            outcome = ("4xx " if outcome[5] == "4" else "5xx ") + outcome
            smtp = await _reset(smtp)
        except aiosmtplib.SMTPResponseException as exc:
            outcome = f"{exc.code // 100}xx {exc.code} {exc.message}"
            smtp = await _reset(smtp)
        except aiosmtplib.SMTPTimeoutError as exc:
            outcome = f"hang {exc}"
            smtp = await _close(smtp)
        except (aiosmtplib.SMTPException, ConnectionError, OSError) as exc:
            outcome = f"drop {type(exc).__name__}"
            smtp = await _close(smtp)
        t1 = time.monotonic()
        run.attempts[i].append(Attempt(t0, t1, outcome))
        if outcome == "250":
            run.acked.add(i)
        elif outcome.startswith("5xx"):
            pass                          # a bounce: a violation, reported at the end
        elif random.random() < give_up:
            run.given_up.add(i)           # a sender that never comes back (bounced, gone)
        else:
            retry.append(i)               # an MTA's queue: tried again a little later
        queue.task_done()
    await _close(smtp)


async def _reset(smtp: aiosmtplib.SMTP | None) -> aiosmtplib.SMTP | None:
    if smtp is None or not smtp.is_connected:
        return None
    try:
        await smtp.rset()
        return smtp
    except (aiosmtplib.SMTPException, OSError):
        return await _close(smtp)


async def _close(smtp: aiosmtplib.SMTP | None) -> None:
    if smtp is not None:
        with contextlib.suppress(Exception):
            smtp.close()
    return None


# -- the faults ---------------------------------------------------------------------------

def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


async def _read_only_bind(path: str, hold: float) -> str | None:
    """`path` made read-only for `hold` seconds by a read-only bind mount over it (new
    opens fail; files already open write on); None when it was, else why not."""
    if sh("mount", "--bind", path, path).returncode != 0:
        return "bind mount failed"
    try:
        done = sh("mount", "-o", "remount,bind,ro", path)
        if done.returncode != 0:
            return f"remount failed: {done.stderr.strip()}"
        await asyncio.sleep(hold)
    finally:
        sh("umount", "-l", path)
    return None


class Faults:
    def __init__(self, daemon: Daemon, relay: Relay, store: Path, run: Run, registry: Registry,
                 pg: Any, settle: float) -> None:
        self.d, self.relay, self.store, self.run = daemon, relay, store, run
        self.registry, self.pg, self.settle = registry, pg, settle
        self.checks: list[asyncio.Task[int]] = []
        self.var: Path | None = None      # var/ on a tmpfs of its own (--var-tmpfs)

    async def inject(self, name: str, hold: float) -> str:
        """Apply `name` for about `hold` seconds, undo it; a note for the summary."""
        return await getattr(self, "f_" + name.replace("-", "_"))(hold)

    async def f_kill_worker(self, hold: float) -> str:
        workers = self.d.workers()
        if not workers:
            return "no worker"
        victim = random.choice(workers)
        os.kill(victim, signal.SIGKILL)
        await asyncio.sleep(0.2)
        before = await asyncio.to_thread(store_copies, self.store)
        self.checks.append(asyncio.create_task(self._recorded_after(
            before, hold + self.settle, f"kill-worker {victim}")))
        await asyncio.sleep(hold)
        return f"pid {victim}"

    async def _recorded_after(self, before: collections.Counter[tuple[str, str]], wait: float,
                              what: str) -> int:
        """Every copy of `before` recorded within `wait` s (the dead worker's journal is
        reconciled by its replacement; a live one records its own failed records)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                msgs, dels = await self.registry.rows()
            except Exception:  # noqa: BLE001 (PostgreSQL stopped by another fault)
                msgs, dels = {}, set()
            missing = unrecorded(before, msgs, dels)
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        if missing:
            self.run.violation(f"{what}: {len(missing)} copies unrecorded {wait:.0f} s "
                               f"after: {missing[:5]}")
        return len(missing)

    async def f_stop_worker(self, hold: float) -> str:
        workers = self.d.workers()
        if not workers:
            return "no worker"
        victim = random.choice(workers)
        t0 = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        try:
            await asyncio.sleep(hold)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
            self.run.stopped.append((t0, time.monotonic()))
        return f"pid {victim}"

    async def f_kill_supervisor(self, hold: float) -> str:
        await asyncio.to_thread(self.d.kill)
        await asyncio.sleep(hold / 2)
        before = await asyncio.to_thread(store_copies, self.store)
        took = await asyncio.to_thread(self.d.start_as_systemd)
        # every copy in the store when it started must be recorded within `settle` s
        missing = await self._recorded_after(before, self.settle, "kill-supervisor (restart)")
        return f"restart in {took:.1f} s, {sum(before.values())} copies, unrecorded {missing}"

    async def f_stop_supervisor(self, hold: float) -> str:
        """SIGSTOP the supervisor (a worker that dies meanwhile is not replaced, a SIGHUP
        waits), then SIGCONT: with kill-worker (--overlap), the live worker records the dead
        one's copies (its journal's lock is free) while no replacement can start."""
        if self.d.proc is None or self.d.proc.poll() is not None:
            return "no supervisor"
        os.kill(self.d.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(hold)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.d.proc.pid, signal.SIGCONT)
        return f"pid {self.d.proc.pid}"

    async def f_term_supervisor(self, hold: float) -> str:
        """SIGTERM (a restart by the init system) under load: the daemon drains (421 to new
        work, shutdown_grace for the transactions in flight) and exits 0, then starts again
        on the same var/: every copy in the store recorded within --settle seconds."""
        code = await asyncio.to_thread(self.d.stop)
        if code != 0:
            self.run.violation(f"term-supervisor: SIGTERM exit code {code}")
        before = await asyncio.to_thread(store_copies, self.store)
        took = await asyncio.to_thread(self.d.start_as_systemd)
        missing = await self._recorded_after(before, self.settle, "term-supervisor (restart)")
        return f"exit {code}, restart in {took:.1f} s, unrecorded {missing}"

    async def f_maildir_ro(self, hold: float) -> str:
        return await _read_only_bind(str(self.store), hold) or "ro"

    async def f_maildir_remount_ro(self, hold: float) -> str:
        """The Maildir's file system itself remounted read-only (no file is held open for
        writing there between copies, so the remount goes through), then read-write."""
        fs = str(self.store.parent)
        done = sh("mount", "-o", "remount,ro", fs)
        if done.returncode != 0:
            return f"remount failed: {done.stderr.strip()}"
        try:
            await asyncio.sleep(hold)
        finally:
            sh("mount", "-o", "remount,rw", fs)
        return "remounted ro"

    async def f_maildir_full(self, hold: float) -> str:
        return await self._fill(self.store.parent / "filler", hold)

    async def _fill(self, filler: Path, hold: float) -> str:
        def fill() -> int:
            n = 0
            try:
                f = open(filler, "wb", buffering=0)
            except OSError:         # read-only now (another fault): full enough
                return 0
            with f:
                try:
                    while True:
                        n += f.write(b"x" * 65536)
                except OSError:
                    pass
            return n
        n = await asyncio.to_thread(fill)
        try:
            await asyncio.sleep(hold)
        finally:
            for _ in range(60):     # read-only meanwhile (another fault): until it is not
                try:
                    filler.unlink(missing_ok=True)
                    break
                except OSError:
                    await asyncio.sleep(0.5)
        return f"{n >> 10} KiB filler"

    async def f_sqlite_lock(self, hold: float) -> str:
        if not self.registry.url.startswith("sqlite"):
            return "skipped (not SQLite)"
        path = self.registry.url.split(":///", 1)[1]
        code = ("import sqlite3, sys, time\n"
                f"db = sqlite3.connect({path!r}, timeout=30, isolation_level=None)\n"
                "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True)\n"
                f"time.sleep({hold}); db.execute('ROLLBACK')\n")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code,
                                                    stdout=subprocess.PIPE)
        assert proc.stdout is not None
        got = await asyncio.wait_for(proc.stdout.readline(), 60)
        await proc.wait()
        return got.decode().strip() or "lock not taken"

    async def f_pg_restart(self, hold: float) -> str:
        if self.pg is None:
            return "skipped (not PostgreSQL)"
        await asyncio.to_thread(self.pg.stop)
        try:
            await asyncio.sleep(hold)
        finally:
            await asyncio.to_thread(self.pg.start)
        return "stopped and started"

    async def f_relay_reset(self, hold: float) -> str:
        return await self._relay("reset", hold)

    async def f_pg_terminate(self, hold: float) -> str:
        """pg_terminate_backend on every connection of the daemon, again and again."""
        if self.pg is None:
            return "skipped (not PostgreSQL)"
        import asyncpg
        conn = await asyncpg.connect(self.registry.url.replace("postgresql+asyncpg",
                                                               "postgresql"), timeout=10)
        killed = 0
        try:
            end = time.monotonic() + hold
            while time.monotonic() < end:
                rows = await conn.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "pid <> pg_backend_pid() AND datname = current_database()")
                killed += sum(1 for r in rows if r[0])
                await asyncio.sleep(random.uniform(0.1, 0.6))
        finally:
            await conn.close()
        return f"{killed} backends terminated"

    async def f_fd_limit(self, hold: float) -> str:
        """Every daemon process out of file descriptors: its soft RLIMIT_NOFILE lowered to
        the number it has open (prlimit): no new one, then set back."""
        procs = ([self.d.proc.pid] if self.d.proc is not None else []) + self.d.workers()
        before: dict[int, tuple[int, int]] = {}
        for pid in procs:
            try:
                soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
                n = len(os.listdir(f"/proc/{pid}/fd"))
                # the soft limit only: a hard one lowered is raised again only with
                # CAP_SYS_RESOURCE, which a container's root may lack
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (n, hard))
                before[pid] = (soft, hard)
            except (OSError, ValueError):
                continue
        try:
            await asyncio.sleep(hold)
        finally:
            for pid, limits in before.items():
                with contextlib.suppress(OSError, ValueError):
                    resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        return f"{len(before)} processes"

    async def _hup(self) -> None:
        if self.d.proc is not None and self.d.proc.poll() is None:
            os.kill(self.d.proc.pid, signal.SIGHUP)

    async def f_hup_broken(self, hold: float) -> str:
        """A routing file broken by an edit, SIGHUP: refused, the old rules keep running;
        then the good file back, SIGHUP."""
        routing = self.d.work / "routing.yaml"
        routing.write_text(ROUTING + "aliases: [this is: {not valid\n")
        await self._hup()
        try:
            await asyncio.sleep(hold)
        finally:
            routing.write_text(ROUTING)
            await self._hup()
        return "broken, then good"

    async def f_hup_good(self, hold: float) -> str:
        """A good new routing file (one more alias), SIGHUP, a few times."""
        routing = self.d.work / "routing.yaml"
        end, n = time.monotonic() + hold, 0
        while time.monotonic() < end:
            n += 1
            routing.write_text(ROUTING + f"  extra{n}@example.com: mailbox:sales\n")
            await self._hup()
            await asyncio.sleep(random.uniform(0.2, 1.0))
        routing.write_text(ROUTING)
        await self._hup()
        return f"{n} reloads"

    async def f_var_full(self, hold: float) -> str:
        """The registry's and the intents' file system (var/, a tmpfs of its own) full."""
        if self.var is None:
            return "skipped (no --var-tmpfs)"
        return await self._fill(self.var / "filler", hold)

    async def f_var_ro(self, hold: float) -> str:
        if self.var is None:
            return "skipped (no --var-tmpfs)"
        # a file system with files open for writing cannot be remounted read-only (busy):
        # a read-only bind mount over it, as maildir-ro (new opens fail; open files write on)
        return await _read_only_bind(str(self.var), hold) or "ro (bind)"

    async def _relay(self, mode: str, hold: float) -> str:
        self.relay.mode = mode
        try:
            await asyncio.sleep(hold)
        finally:
            self.relay.mode = "ok"
        return mode

    async def f_relay_refuse(self, hold: float) -> str:
        return await self._relay("refuse", hold)

    async def f_relay_reject(self, hold: float) -> str:
        return await self._relay("reject", hold)

    async def f_relay_hang(self, hold: float) -> str:
        return await self._relay("hang", hold)

    async def f_relay_data_reset(self, hold: float) -> str:
        return await self._relay("data-reset", hold)

    async def f_relay_dot_temp(self, hold: float) -> str:
        return await self._relay("dot-451", hold)

    async def f_relay_dot_perm(self, hold: float) -> str:
        return await self._relay("dot-554", hold)

    async def f_relay_slow(self, hold: float) -> str:
        return await self._relay("slow", hold)

    async def f_pg_stop(self, hold: float) -> str:
        """Every process of the PostgreSQL cluster SIGSTOPped (a paused VM, a stuck disk),
        then SIGCONT."""
        if self.pg is None or self.pg.proc is None:
            return "skipped (not PostgreSQL)"
        pids = [self.pg.proc.pid]
        with contextlib.suppress(OSError):
            pids += [int(p) for p in Path(f"/proc/{self.pg.proc.pid}/task/{self.pg.proc.pid}"
                                          "/children").read_text().split()]
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(hold)
        finally:
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)
        return f"{len(pids)} processes stopped"

    async def f_sqlite_delete(self, hold: float) -> str:
        """The registry file (with its -wal and -shm) deleted under load."""
        if not self.registry.url.startswith("sqlite"):
            return "skipped (not SQLite)"
        path = self.registry.url.split(":///", 1)[1]
        gone = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
                gone += 1
        await asyncio.sleep(hold)
        return f"{gone} files deleted"

    async def f_sqlite_wal_delete(self, hold: float) -> str:
        if not self.registry.url.startswith("sqlite"):
            return "skipped (not SQLite)"
        path = self.registry.url.split(":///", 1)[1]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + "-wal")
        await asyncio.sleep(hold)
        return "wal deleted"

    async def f_sqlite_chmod(self, hold: float) -> str:
        """The registry file, its -wal and -shm made read-only (chmod 0444) for a while:
        bites only a daemon without CAP_DAC_OVERRIDE (CHAOS_NO_DAC=1)."""
        if not self.registry.url.startswith("sqlite"):
            return "skipped (not SQLite)"
        path = self.registry.url.split(":///", 1)[1]
        files = [path + s for s in ("", "-wal", "-shm") if os.path.exists(path + s)]
        modes = {f: os.stat(f).st_mode & 0o777 for f in files}
        for f in files:
            os.chmod(f, 0o444)
        try:
            await asyncio.sleep(hold)
        finally:
            for f, m in modes.items():
                with contextlib.suppress(OSError):
                    os.chmod(f, m)
        return f"{len(files)} files read-only"

    async def f_maildir_chmod(self, hold: float) -> str:
        """Every Maildir folder (new/, tmp/) made read-only for a while (CHAOS_NO_DAC=1)."""
        dirs = [d for d in self.store.rglob("*") if d.is_dir() and d.name in ("new", "tmp")]
        for d in dirs:
            os.chmod(d, 0o555)
        try:
            await asyncio.sleep(hold)
        finally:
            for d in dirs:
                with contextlib.suppress(OSError):
                    os.chmod(d, 0o755)
        return f"{len(dirs)} folders read-only"

    async def f_relay_down(self, hold: float) -> str:
        await self.relay.stop_listening()
        try:
            await asyncio.sleep(hold)
        finally:
            await self.relay.start()
        return "down"


# -- the run -------------------------------------------------------------------------------

async def main(args: argparse.Namespace) -> int:
    random.seed(args.seed)
    work = Path(tempfile.mkdtemp(prefix="chaos."))
    tmpfs = work / "tmpfs"
    tmpfs.mkdir()
    mounted = sh("mount", "-t", "tmpfs", "-o", f"size={args.tmpfs}", "tmpfs", str(tmpfs))
    if mounted.returncode != 0:
        print(f"cannot mount a tmpfs (root needed): {mounted.stderr}")
        return 2
    store = tmpfs / "mail"
    store.mkdir()
    pg = None
    relay = Relay()
    daemon: Daemon | None = None
    try:
        if args.pg:
            from tests.support.pg import PgCluster, pg_bin
            bindir = pg_bin()
            if bindir is None:
                print("no PostgreSQL server binaries")
                return 2
            pg = PgCluster(bindir)
            pg.init()
            pg.start(durable=True)
            url = pg.url
        else:
            url = f"sqlite+aiosqlite:///{work / 'var' / 'registry.db'}"
        if args.var_tmpfs:       # the registry (SQLite) and the intents on a tmpfs of their own
            (work / "var").mkdir()
            got = sh("mount", "-t", "tmpfs", "-o", f"size={args.var_tmpfs}", "tmpfs",
                     str(work / "var"))
            if got.returncode != 0:
                print(f"cannot mount var's tmpfs: {got.stderr}")
                return 2
        registry = Registry(url)
        await relay.start()
        daemon = Daemon(work, url, relay.port, store, args.workers)
        daemon.start()
        faults_on = [f for f in (args.faults.split(",") if args.faults else ALL_FAULTS)
                     if not (f == "pg-restart" and not args.pg)
                     and not (f == "pg-terminate" and not args.pg)
                     and not (f in ("var-full", "var-ro") and not args.var_tmpfs)
                     and not (f == "sqlite-lock" and args.pg)]
        print(f"work dir {work}; registry {url.split('://')[0]}; faults {','.join(faults_on)}",
              flush=True)
        run = Run()
        faults = Faults(daemon, relay, store, run, registry, pg, args.settle)
        faults.var = work / "var" if args.var_tmpfs else None
        queue: asyncio.Queue[int] = asyncio.Queue()
        retry: list[int] = []
        d = daemon
        clients = [asyncio.create_task(client(lambda: d.smtp, queue, run, retry, args.give_up))
                   for _ in range(args.clients)]
        todo = list(range(args.messages))
        stop_feeding = asyncio.Event()

        async def feed() -> None:
            """New messages at a steady rate, retries after a short wait, until stopped."""
            pace = args.seconds / max(1, args.messages)
            while not stop_feeding.is_set():
                if todo and queue.qsize() < args.clients * 2:
                    queue.put_nowait(todo.pop(0))
                if retry:
                    again = list(retry)
                    retry.clear()
                    await asyncio.sleep(random.uniform(0.3, 1.0))
                    for i in again:
                        queue.put_nowait(i)
                await asyncio.sleep(pace)

        feeder = asyncio.create_task(feed())
        end = time.monotonic() + args.seconds
        await asyncio.sleep(2)
        while time.monotonic() < end:
            names = [random.choice(faults_on)]
            if random.random() < args.overlap:       # two at once, different kinds
                names.append(random.choice([f for f in faults_on if f != names[0]
                                            and f not in RESTARTS] or names))
                names = sorted(set(names), key=lambda n: n in RESTARTS)

            async def one(name: str) -> None:
                hold = random.uniform(min(args.min_hold, args.hold), args.hold)
                t0 = time.monotonic()
                print(f"[{t0 - run.t_start:6.1f}] fault {name} for {hold:.1f} s", flush=True)
                try:
                    note = await faults.inject(name, hold)
                except Exception as exc:  # noqa: BLE001 (a harness failure: reported)
                    note = f"harness error {exc!r}"
                run.windows.append((name, t0, time.monotonic(), note))
                print(f"[{time.monotonic() - run.t_start:6.1f}]   {name}: {note}", flush=True)
            await asyncio.gather(*(one(n) for n in names))
            name = "+".join(names)
            if daemon.proc is not None and daemon.proc.poll() is not None:
                run.violation(f"the supervisor exited ({daemon.proc.returncode}) after {name}")
                daemon.start()
            await asyncio.sleep(random.uniform(1.0, 3.0))
        # recovery: no fault; every message must end with a 250
        print(f"[{time.monotonic() - run.t_start:6.1f}] faults over; recovering", flush=True)
        while todo:
            await asyncio.sleep(0.2)
        deadline = time.monotonic() + args.recover
        while time.monotonic() < deadline and \
                len(run.acked) + len(run.given_up) < args.messages:
            await asyncio.sleep(0.5)
        stop_feeding.set()
        await feeder
        for _ in clients:
            queue.put_nowait(-1)
        await asyncio.wait(clients, timeout=60)
        await asyncio.gather(*faults.checks)
        # the daemon running: every copy in the store recorded within `settle` s, those of
        # messages that got a 4xx and were never sent again included
        deadline = time.monotonic() + args.settle
        while True:
            before = await asyncio.to_thread(store_copies, store)
            msgs, dels = await registry.rows()
            missing = unrecorded(before, msgs, dels)
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        if missing:
            run.violation(f"running: {len(missing)} copies unrecorded {args.settle:.0f} s "
                          f"after the faults: {missing[:5]}")
        # one more crash: copies must all be recorded within `settle` s of the restart
        await asyncio.to_thread(daemon.kill)
        before = await asyncio.to_thread(store_copies, store)
        await asyncio.to_thread(daemon.start)
        await faults._recorded_after(before, args.settle, "final restart")
        code = daemon.stop()
        if code != 0:
            run.violation(f"SIGTERM exit code {code}")
        check(run, args.messages, await asyncio.to_thread(store_copies, store),
              await registry.rows(), relay.got)
        report(run)
        return 1 if run.violations else 0
    finally:
        if daemon is not None:
            daemon.stop()
        await relay.stop_listening()
        if pg is not None:
            pg.remove()
        sh("umount", "-l", str(store))        # a bind mount left by a failed fault
        sh("umount", "-l", str(tmpfs))
        if args.var_tmpfs:
            sh("umount", "-l", str(work / "var"))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


def check(run: Run, total: int, copies: collections.Counter[tuple[str, str]],
          rows: tuple[dict[str, str], set[tuple[str, str]]],
          relayed: collections.Counter[str]) -> None:
    msgs, dels = rows
    for (mid, box), n in copies.items():
        if n > 1:
            run.violation(f"{mid} has {n} copies in mailbox {box}")
    for mid, box in unrecorded(copies, msgs, dels):
        run.violation(f"{mid} stored in {box} and not recorded delivered")
    stopped = run.stopped
    for i in range(total):
        mid = f"chaos-{i}"
        tries = run.attempts.get(i, [])
        for a in tries:
            if a.outcome.startswith("5xx"):
                run.violation(f"{mid}: {a.outcome}")
            late = a.t1 - a.t0 > PROCESS_TIMEOUT + 5
            if late and not any(s0 - 1 <= a.t1 and a.t0 <= s1 + 1 for s0, s1 in stopped):
                run.violation(f"{mid}: a reply after {a.t1 - a.t0:.1f} s ({a.outcome})")
        if i not in run.acked and i in run.given_up:
            continue                      # checked with every copy in the store
        if i not in run.acked:
            run.violation(f"{mid}: no 250 after {len(tries)} tries: "
                          f"{[a.outcome for a in tries[-3:]]}")
            continue
        rcpts = RCPT_SETS[i % len(RCPT_SETS)]
        for r in rcpts:
            box = MAILBOX[r]
            if box == "fwd":
                if relayed[mid] < 1:
                    run.violation(f"{mid}: 250 and not at the relay")
            elif copies[(mid, box)] != 1:
                run.violation(f"{mid}: 250 and {copies[(mid, box)]} copies in {box}")
            if (f"<{mid}@outside.test>", box) not in dels:
                run.violation(f"{mid}: 250 and no delivered record for {box}")
        if msgs.get(f"<{mid}@outside.test>") != "delivered":
            run.violation(f"{mid}: 250 and registry status "
                          f"{msgs.get(f'<{mid}@outside.test>')!r}")


def report(run: Run) -> None:
    outcomes = collections.Counter(a.outcome.split(" ")[0] for t in run.attempts.values()
                                   for a in t)
    print(f"\nmessages {len(run.attempts)}, acked {len(run.acked)}, attempts "
          f"{sum(outcomes.values())}: {dict(outcomes)}")
    print("fault windows (attempts ending in the window + 2 s):")
    by_fault: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for name, t0, t1, _ in run.windows:
        for tries in run.attempts.values():
            for a in tries:
                if t0 <= a.t1 <= t1 + 2:
                    by_fault[name][a.outcome.split(" ")[0]] += 1
    for name, c in sorted(by_fault.items()):
        n = sum(1 for w in run.windows if w[0] == name)
        print(f"  {name:16} x{n:<3} {dict(c)}")
        if c["5xx"]:
            print(f"    VIOLATION {name}: 5xx during the fault")
    print(f"\n{len(run.violations)} violations")
    for v in run.violations[:50]:
        print("  " + v)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1500)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--seconds", type=float, default=90, help="how long faults are injected")
    p.add_argument("--hold", type=float, default=5, help="longest fault, seconds")
    p.add_argument("--min-hold", type=float, default=1.5, help="shortest fault, seconds")
    p.add_argument("--recover", type=float, default=120, help="seconds to get every 250 after")
    p.add_argument("--settle", type=float, default=10,
                   help="seconds after a restart for every stored copy to be recorded")
    p.add_argument("--faults", help=f"comma-separated subset of {','.join(ALL_FAULTS)}")
    p.add_argument("--pg", action="store_true", help="a private PostgreSQL cluster as registry")
    p.add_argument("--tmpfs", default="16m", help="size of the Maildir's tmpfs")
    p.add_argument("--var-tmpfs", help="var/ (SQLite registry, intents) on a tmpfs this size")
    p.add_argument("--workers", default="2", help="the daemon's `workers:` (1, 2, auto)")
    p.add_argument("--give-up", type=float, default=0.0,
                   help="chance that a client never sends again a message that got a 4xx")
    p.add_argument("--overlap", type=float, default=0.0,
                   help="chance that a second fault of another kind runs at the same time")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    sys.exit(asyncio.run(main(p.parse_args())))

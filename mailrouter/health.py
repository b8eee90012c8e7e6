"""Readiness: can this instance take mail now, and if not, why (GET /readyz).

Four checks, each one line of the /readyz body (`ok NAME: detail` or `FAIL NAME: cause`):

- listeners: every configured SMTP/LMTP listener is bound and serving (and we are
  not draining after SIGTERM);
- registry: `SELECT 1` answers within `timeout` (2 s): a registry that does not
  answer means every message would get 451 4.3.0;
- rules: a routing snapshot is loaded (its hash is named; a refused reload keeps
  the previous one, so this stays ok and `mailrouter_config_last_reload_successful`
  says so instead);
- downstreams: each configured LMTP/SMTP downstream answers a TCP connect with a
  2xx greeting within `timeout` (we then say QUIT). The result is kept `ttl` seconds
  (5 s), so a probe every second costs a downstream one connection every 5 s;
- store: the Maildir root and the intents' journal directory take a 4 KB file (made,
  written and removed; its free space is named): read-only, full or gone, every Maildir
  copy would get 451/452. Kept `ttl` seconds as well.
Liveness (/healthz) is separate and checks none of this: a process that answers is
alive; restarting it cures neither a database nor a Dovecot outage.

Known limits: for a SQLite registry the SELECT runs on a pooled connection, so it
catches a locked or broken database but not a file made unreadable after start
(the open descriptor still reads); a PostgreSQL outage is seen at once. With
`workers: N` the admin worker answers for its own listeners and connections.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .config import Config
from .values import Downstream

__all__ = ["Check", "Readiness", "probe_downstream", "unwritable"]


@dataclass(frozen=True, slots=True)
class Check:
    """The result of one readiness check."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL'} {self.name}: {self.detail}"


class Pingable(Protocol):
    async def ping(self, timeout: float) -> None: ...


class ReadyHost(Protocol):
    """What readiness reads of the running daemon (`daemon.App` has it)."""

    @property
    def draining(self) -> bool: ...
    @property
    def listeners(self) -> Mapping[str, asyncio.Server]: ...
    @property
    def expected_listeners(self) -> tuple[str, ...]: ...
    @property
    def registry(self) -> Pingable | None: ...
    @property
    def downstreams(self) -> Mapping[str, Downstream]: ...
    @property
    def stores(self) -> Mapping[str, Path]: ...
    def ruleset_hash(self) -> str | None: ...


async def probe_downstream(ds: Downstream, timeout: float) -> str:
    """'' when `ds` greets with 2xx within `timeout`; otherwise what went wrong."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(ds.host, ds.port)
            line = await reader.readline()
            while line[3:4] == b"-":            # a multi-line greeting: 220-... 220 ...
                line = await reader.readline()
            if not line.startswith(b"2"):
                text = line.decode("ascii", "replace").strip()[:120]
                return f"greeted {text!r}" if text else "closed without a greeting"
            writer.write(b"QUIT\r\n")
            await writer.drain()
            return ""
    except TimeoutError:
        return f"no greeting within {timeout:g}s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    finally:
        if writer is not None:
            writer.close()


PROBE_BYTES = 4096


def probe_store(directory: Path) -> str:
    """'' when `directory` takes a file of PROBE_BYTES (made, written, removed); otherwise
    what went wrong. Blocking: run it in a thread."""
    probe = directory / f".mailrouter-ready-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)     # as the writers make it
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return ""


def _may_write_sqlite(db: Path) -> tuple[str, bool]:
    """('', _) when this user may write each of the SQLite files that exist (the database,
    its WAL, shared memory, rollback journal); else (why, False). A registry made by root
    (`mailrouter db upgrade` run as root before the first start) passed the directory's
    test, and the daemon started and answered every message 451."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = db.with_name(db.name + suffix)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"{path}: {exc.strerror or type(exc).__name__}", True
        if not os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
            return (f"{path.name} is uid {st.st_uid}'s, mode {st.st_mode & 0o777:04o}: permission "
                    f"denied to uid {os.geteuid()}"), False
    return "", True


def _may_write(directory: Path) -> tuple[str, bool]:
    """('', _) when files could be made in `directory` or in the folders that would hold
    it, without making anything (`mailrouter check` creates nothing): the nearest existing
    one must be a directory this user may write, on a file system mounted read-write.
    Else (why, for_anyone): False when only this user's permissions are wanting."""
    here = directory
    while not os.path.exists(here) and here != here.parent:   # False on EACCES, unlike
        here = here.parent                                     # Path.exists (3.11)
    if not os.path.isdir(here):
        return f"{here} is not a directory", True
    if not os.access(here, os.W_OK | os.X_OK,
                     effective_ids=os.access in os.supports_effective_ids):
        try:
            read_only = bool(os.statvfs(here).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        if read_only:
            return f"{here}: read-only file system", True
        return f"{here}: permission denied to uid {os.geteuid()}", False
    return "", True


# Where deploy/mailrouter.service lets the daemon write, for the keys that differ
UNIT_FIX = {"postfix_maps.dir": "under /var/lib/mailrouter, such as /var/lib/mailrouter/postfix"}


def unwritable(cfg: Config, create: bool, others: list[str] | None = None) -> list[str]:
    """One line per directory the daemon writes in (Config.written_dirs) that it could not:
    made and probed with a 4 KB file when `create` (at start, as the writers would make
    it), else judged by its permissions only (`mailrouter check`). Each names the key,
    the path and the fix. With `others`, a directory only this user may not write goes
    there instead: `check` is also run by an admin who is not the daemon's user."""
    out: list[str] = []
    for key, directory in cfg.written_dirs().items():
        why, anyone = (probe_store(directory), True) if create else _may_write(directory)
        sqlite = cfg.sqlite_file() if key == "registry.url" else None
        if not why and sqlite is not None:
            why, anyone = _may_write_sqlite(sqlite)
            directory = sqlite if why else directory
        if why:
            where = f" in {cfg.path}" if cfg.path else ""
            unit = UNIT_FIX.get(key, "under /var/lib/mailrouter")
            if "No space left" in why or "Disk quota" in why:
                line = (f"{key} {directory} is full ({why}{_free(Path(directory))}): free space "
                        f"on its file system, or set {key}{where} to a directory on another")
            else:
                line = (f"{key} {directory} is not writable ({why}): make it writable by the "
                        f"user mailrouter runs as, or set {key}{where} to a directory that is "
                        f"(with deploy/mailrouter.service: {unit})")
            (out if anyone or others is None else others).append(line)
    return out


def _free(directory: Path) -> str:
    try:
        st = os.statvfs(directory)
    except OSError:
        return ""
    return f", {st.f_bavail * st.f_frsize / 2**30:.1f} GiB free"


class Readiness:
    def __init__(self, app: ReadyHost, timeout: float = 2.0, ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.timeout, self.ttl, self.clock = app, timeout, ttl, clock
        self._downstream: dict[str, tuple[float, Check]] = {}
        self._store: tuple[float, Check] | None = None

    async def checks(self) -> list[Check]:
        downstreams = await asyncio.gather(
            *(self._probe(k, d) for k, d in sorted(self.app.downstreams.items())))
        stores = [await self._stores()] if self.app.stores else []
        return [self._listeners(), await self._registry(), self._rules(), *downstreams, *stores]

    def _listeners(self) -> Check:
        if self.app.draining:
            return Check("listeners", False, "draining (SIGTERM): no new mail taken")
        missing = [n for n in self.app.expected_listeners
                   if n not in self.app.listeners or not self.app.listeners[n].is_serving()]
        if missing:
            return Check("listeners", False, f"not serving: {', '.join(missing)}")
        return Check("listeners", True, ", ".join(
            f"{n} {_addr(s)}" for n, s in sorted(self.app.listeners.items())) or "none configured")

    async def _registry(self) -> Check:
        reg = self.app.registry
        if reg is None:
            return Check("registry", False, "not open")
        try:
            await reg.ping(self.timeout)
        except Exception as exc:  # whatever the driver raises, the answer is "not ready"
            return Check("registry", False, str(exc) or type(exc).__name__)
        return Check("registry", True, "SELECT 1 answered")

    def _rules(self) -> Check:
        h = self.app.ruleset_hash()
        return Check("rules", h is not None, f"rule set {h}" if h else "no rule set loaded")

    async def _probe(self, kind: str, ds: Downstream) -> Check:
        now = self.clock()
        cached = self._downstream.get(kind)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        why = await probe_downstream(ds, self.timeout)
        where = f"{ds.host}:{ds.port}"
        check = Check(f"downstream {kind}", not why,
                      f"{where} greeted" if not why else f"{where} {why}")
        self._downstream[kind] = (now, check)
        return check


    async def _stores(self) -> Check:
        now = self.clock()
        if self._store is not None and now - self._store[0] < self.ttl:
            return self._store[1]

        def probe_all() -> Check:
            for name, directory in sorted(self.app.stores.items()):
                why = probe_store(directory)
                if why:
                    return Check("store", False, f"{name} {directory}: {why}")
            return Check("store", True, ", ".join(
                f"{n} writable{_free(d)}" for n, d in sorted(self.app.stores.items())))

        check = await asyncio.to_thread(probe_all)
        self._store = (now, check)
        return check


def _addr(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2] if server.sockets else ("-", 0)
    return f"{host}:{port}"

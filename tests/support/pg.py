"""pytest fixtures for a real PostgreSQL: ``pg_url`` (session) and ``registry_url``.

``pg_url`` uses MAILROUTER_TEST_PG_URL when set (CI starts a cluster, see
.ci/run); otherwise it starts a throw-away cluster as in RECIPES.md section 1:
initdb into a /tmp dir, ``postgres`` on a free 127.0.0.1 port with fsync off,
run as user ``postgres`` when we are root, stopped with SIGINT at session end.
It skips only when neither the variable nor the server binaries exist.

``registry_url`` is parametrized over sqlite and postgresql: a fresh SQLite
file under tmp_path, or a fresh ``t_<random>`` database dropped afterwards.

``PgCluster`` is public so a test can own a private cluster and stop and start
it (outage tests). Known limit: the free port is found by binding port 0 and
closing it, so another process could take it before postgres does.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from .ports import free_port

__all__ = ["PgCluster", "pg_bin", "pg_url", "registry_url"]

ENV = "MAILROUTER_TEST_PG_URL"


def pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding a server, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


class PgCluster:
    """One throw-away PostgreSQL cluster in a private /tmp dir, on 127.0.0.1."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="pgtest.", dir="/tmp"))  # short: socket path
        self.data = self.root / "data"
        self.port = free_port()
        self._started, self._tries = False, 0     # a first start may move to another port
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = "postgres" if os.geteuid() == 0 else None  # postgres refuses root
        if self.user:
            shutil.chown(self.root, self.user, self.user)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                       user=self.user, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def start(self, timeout: float = 60.0, *, durable: bool = False) -> None:
        """Start postgres; fsync and synchronous commit off unless ``durable`` (benches)."""
        fast = [] if durable else ["-c", "fsync=off", "-c", "full_page_writes=off",
                                   "-c", "synchronous_commit=off"]
        log = open(self.root / "pg.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", *fast],
            user=self.user, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while self._isready() != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                if not self._started and self._tries < 3 and \
                        "Address already in use" in self.log_tail():
                    # another test took the port free_port() chose (a CI run under -n 2):
                    # a first start, whose URL nobody has yet, moves to another port
                    self._tries += 1
                    self.port = free_port()
                    return self.start(timeout, durable=durable)
                raise RuntimeError(f"postgres did not start: {self.log_tail()}")
            time.sleep(0.05)
        self._started = True

    def _isready(self) -> int:
        return subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1",
                               "-p", str(self.port), "-U", "postgres"], check=False).returncode

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster); the data dir stays for start()."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        path = self.root / "pg.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


@pytest.fixture
def private_pg() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of the test's own, for tests that stop, crash or fill it; started
    as the suite's are (fsync, full_page_writes and synchronous_commit off)."""
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("needs PostgreSQL server binaries (Debian package postgresql)")
    cluster = PgCluster(bindir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL (postgresql+asyncpg://...) for the whole session."""
    if os.environ.get(ENV):
        yield os.environ[ENV]
        return
    bindir = pg_bin()
    if bindir is None:
        pytest.skip(f"no PostgreSQL: set {ENV} or install the Debian package postgresql "
                    "(server binaries in /usr/lib/postgresql/*/bin)")
    cluster = PgCluster(bindir)
    try:
        cluster.init()
        cluster.start()
        yield cluster.url
    finally:
        cluster.remove()


async def _admin(url: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]  # only the PostgreSQL half needs it

    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql")
                                 .render_as_string(hide_password=False), timeout=30)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _new_database(base: str, prefix: str) -> AsyncIterator[str]:
    """URL of a new, empty database on the cluster of `base`; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    await _admin(base, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pg_db(pg_url: str) -> AsyncIterator[str]:
    """URL of a new, empty database on the session's cluster; dropped afterwards."""
    async with _new_database(pg_url, "d") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def registry_url(request: pytest.FixtureRequest,
                       tmp_path: Path) -> AsyncIterator[str]:
    """A URL of a new, empty registry database: SQLite file, or PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'var' / 'registry.db'}"
        return
    async with _new_database(request.getfixturevalue("pg_url"), "t") as url:
        yield url

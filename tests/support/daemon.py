"""pytest fixtures that run the real daemon: in-process on the test's loop, or as a process.

`make_app(tmp_path, **overrides)` builds a Config on loopback port 0 with a
SQLite registry and Maildirs under tmp_path, starts `App` and returns it; the
fixture stops every app it started. `DaemonProcess` runs `mailrouter run -c`
in a subprocess (for SIGTERM/SIGKILL tests) on ports picked free.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from mailrouter.config import AutoreplyConfig, Config, Limits, Listener
from mailrouter.daemon import App
from mailrouter.routing.snapshot import load_snapshot
from .ports import free_port

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"


def test_config(tmp_path: Path, routing: tuple[str, ...] | None = None, **over: Any) -> Config:
    base = Config.embedded(tmp_path)
    cfg = dataclasses.replace(
        base, hostname="mx.test", smtp=Listener("127.0.0.1", 0), lmtp=Listener("127.0.0.1", 0),
        admin=Listener("127.0.0.1", 0), routing=routing or (str(RULES / "*.yaml"),),
        shutdown_grace=5.0, web=None)        # a test that wants the web view sets web=Listener
    # no tarpit in tests (they never wait on the clock); a test that wants one sets it
    limits = {"error_delay": 0.0} | (over.pop("limits", None) or {})
    cfg = dataclasses.replace(cfg, limits=dataclasses.replace(Limits(), **limits))
    # no outside DNS in tests: a test of the sender-domain check brings its own server
    over.setdefault("autoreply", AutoreplyConfig(dns_check=False))
    return dataclasses.replace(cfg, **over)


@pytest.fixture
async def make_app(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[App]]]:
    apps: list[App] = []

    async def make(worker: int | None = None, **over: Any) -> App:
        """`worker`: the App of that worker of `workers: N` (the parent migrated the
        registry: the worker opens it without create)."""
        cfg = test_config(tmp_path, **over)
        snap = load_snapshot(cfg.routing, cfg.limits, cfg.hostname)
        app = App(cfg, snap, worker=worker)
        await app.start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.request_stop()
        await app.wait_stopped()


def write_config(path: Path, smtp: int, lmtp: int, admin: int, extra: str = "",
                 routing: str | None = None, web: int | None = None) -> Path:
    web_listen = f", web: '127.0.0.1:{web}'" if web is not None else ""
    path.write_text(
        f"hostname: mx.test\n"
        f"listen: {{smtp: '127.0.0.1:{smtp}', lmtp: '127.0.0.1:{lmtp}', admin: '127.0.0.1:{admin}'"
        f"{web_listen}}}\n"
        f"routing: ['{routing or RULES / '*.yaml'}']\n"
        f"registry: {{url: 'sqlite+aiosqlite:///{path.parent / 'var' / 'registry.db'}'}}\n"
        f"delivery: {{maildir_root: '{path.parent / 'var' / 'mail'}'}}\n"
        f"shutdown_grace: 10\n" + extra, encoding="utf-8")
    return path


class DaemonProcess:
    """`mailrouter run -c FILE` as a child process, waited on until it listens."""

    def __init__(self, workdir: Path, extra: str = "", routing: str | None = None,
                 web: bool = False) -> None:
        self.workdir = workdir
        self.smtp, self.lmtp, self.admin = free_port(), free_port(), free_port()
        self.web = free_port() if web else None      # listen.web, off unless asked
        self.config = write_config(workdir / "config.yaml", self.smtp, self.lmtp, self.admin,
                                   extra, routing, self.web)
        self.log = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0,
              preexec_fn: Callable[[], None] | None = None) -> "DaemonProcess":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailrouter.cli", "run", "-c", str(self.config)],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.smtp), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"daemon did not listen in {timeout}s:\n{self.log.read_text()}")

    def start_refused(self, what: str) -> None:
        """`start()` must fail with exit 2 (a start refused before it listens); stopped
        either way. `what`: the start, for the message when it was not refused."""
        try:
            self.start()
        except RuntimeError as refused:
            assert "daemon exited 2" in str(refused), str(refused)
        else:
            raise AssertionError(f"{what} was not refused")
        finally:
            self.stop()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def daemon_process(tmp_path: Path) -> Any:
    procs: list[DaemonProcess] = []

    def make(preexec_fn: Callable[[], None] | None = None, **kw: Any) -> DaemonProcess:
        d = DaemonProcess(tmp_path, **kw)
        procs.append(d)
        return d.start(preexec_fn=preexec_fn)

    yield make
    for d in procs:
        d.stop()


def maildir_files(root: Path) -> list[Path]:
    """Every delivered message file under a Maildir tree (new/ and cur/)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.parent.name in ("new", "cur"))


def env_without_pg() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MAILROUTER_TEST_PG_URL"}


@pytest.fixture
async def make_app_cached(make_app: Callable[..., Awaitable[App]]) -> AsyncIterator[Callable[..., Awaitable[App]]]:
    """One app per test function even when hypothesis calls the test body many times."""
    holder: list[App] = []

    async def get() -> App:
        if not holder:
            holder.append(await make_app())
        return holder[0]

    yield get

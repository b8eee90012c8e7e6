"""The daemon's event loop: uvloop when it is installed (the `fast` extra), asyncio's own
without it or with MAILROUTER_LOOP=asyncio; mail is taken either way."""

from __future__ import annotations

import asyncio
import os
import smtplib
import sys
import time
from pathlib import Path

import pytest

from mailrouter.daemon import loop_factory, loop_name, run_loop
from tests.support.daemon import DaemonProcess

BLOCK_UVLOOP = '''
import sys

class _NoUvloop:
    """As if mailrouter had been installed without the fast extra."""
    def find_spec(self, name, path=None, target=None):
        if name == "uvloop" or name.startswith("uvloop."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoUvloop())
'''


async def _name() -> str:
    return loop_name()


def test_uvloop_is_the_loop_when_installed(monkeypatch):
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv("MAILROUTER_LOOP", raising=False)
    assert loop_factory() is uvloop.new_event_loop
    assert run_loop(_name()) == "uvloop"


def test_mailrouter_loop_asyncio_turns_uvloop_off(monkeypatch):
    monkeypatch.setenv("MAILROUTER_LOOP", "asyncio")
    assert loop_factory() is None
    assert run_loop(_name()) == "asyncio"


def test_without_uvloop_the_loop_is_asyncio(monkeypatch):
    monkeypatch.delenv("MAILROUTER_LOOP", raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)      # import uvloop raises ImportError
    assert loop_factory() is None
    assert run_loop(_name()) == "asyncio"
    assert isinstance(asyncio.new_event_loop(), asyncio.AbstractEventLoop)


def _started(proc: DaemonProcess) -> str:
    end = time.monotonic() + 20
    while time.monotonic() < end:
        for line in proc.log.read_text().splitlines():
            if "event=started" in line:
                return line
        time.sleep(0.05)
    raise AssertionError(proc.log.read_text())


@pytest.mark.parametrize("case", ["uvloop", "env-asyncio", "not-installed"])
def test_the_daemon_runs_and_takes_mail_on_each_loop(tmp_path: Path, monkeypatch, case):
    """`mailrouter run` names its loop in the started line and answers 250 on it."""
    env_path = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    monkeypatch.delenv("MAILROUTER_LOOP", raising=False)
    if case == "uvloop":
        pytest.importorskip("uvloop")
    elif case == "env-asyncio":
        monkeypatch.setenv("MAILROUTER_LOOP", "asyncio")
    else:
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK_UVLOOP, encoding="utf-8")
        env_path.insert(0, str(tmp_path / "site"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(env_path))
    proc = DaemonProcess(tmp_path, extra="workers: 1\n").start()
    try:
        line = _started(proc)
        assert f"loop={'uvloop' if case == 'uvloop' else 'asyncio'} " in line, line
        with smtplib.SMTP("127.0.0.1", proc.smtp, timeout=30) as s:
            s.ehlo("client.test")
            assert s.sendmail("a@client.test", ["sales@example.com"],
                              b"From: a@client.test\r\nSubject: hi\r\n\r\nbody\r\n") == {}
    finally:
        proc.stop()
    assert proc.proc is not None and proc.proc.returncode == 0

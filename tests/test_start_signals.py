"""A SIGTERM while `mailrouter run` starts: a clean stop (exit 0, logged), no child left.

The supervisor's start (the address book built in a child, the rules, the registry's
migrations, the copies a crash left) ran with SIGTERM's default action: an init system
or an admin stopping it then killed it outright (exit -15), half-way through its
migrations. No listener is open yet, so no mail is at stake: it stops before its next
step. The signal is sent from outside, to a real `mailrouter run`, at a moment seen from
outside: the book's child exists, or the log shows a migration running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import RULES, write_config
from tests.support.ports import free_port


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"       # a zombie of a process that has exited: not running


def _start(tmp_path: Path, workers: int, aliases: int = 0) -> tuple[subprocess.Popen[bytes], Path, int]:
    rules = tmp_path / "rules"
    rules.mkdir()
    for f in RULES.glob("*.yaml"):
        shutil.copy(f, rules / f.name)
    if aliases:     # a book that takes a while to build
        (rules / "zz-many.yaml").write_text("aliases:\n" + "".join(
            f"  a{i}@example.com: sales@example.com\n" for i in range(aliases)))
    smtp = free_port()
    cfg = write_config(tmp_path / "config.yaml", smtp, free_port(), free_port(),
                       f"workers: {workers}\n", routing=str(rules / "*.yaml"))
    log = tmp_path / "daemon.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailrouter.cli", "run", "-c", str(cfg)],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    return proc, log, smtp


def _until(what: str, ok: object, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not ok():      # type: ignore[operator]
        assert proc.poll() is None, f"exited {proc.returncode} before {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {what}:\n{log.read_text()}"
        time.sleep(0.005)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_while_the_address_book_is_built_stops_cleanly(tmp_path):
    """workers: 2 with a big book: SIGTERM while the child builds it. The supervisor kills
    and reaps the child, logs that it stopped during its start, and exits 0. It names its
    own step then: it migrates the registry and compiles the rules while the child builds."""
    proc, log, _ = _start(tmp_path, workers=2, aliases=60_000)
    builders: list[int] = []
    _until("address book child", lambda: builders.extend(_children(proc.pid)) or builders,
           proc, log)
    proc.send_signal(signal.SIGTERM)
    assert _stop(proc) == 0, log.read_text()
    text = log.read_text()
    steps = ("building the address book", "migrating the registry",
             "recording the copies a crash left")
    assert any(f"event=stopped_during_start step='{step}' signal=SIGTERM" in text
               for step in steps), text
    assert "event=supervising" not in text and "Traceback" not in text
    assert all(_gone(pid) for pid in builders)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_during_the_migrations_stops_cleanly(tmp_path, workers):
    """SIGTERM while a new registry's schema is made (the log shows a migration running):
    the start stops at its next step, exit 0, the stop logged, no process left."""
    proc, log, smtp = _start(tmp_path, workers=workers)
    _until("migration", lambda: "Running upgrade" in log.read_text(), proc, log)
    proc.send_signal(signal.SIGTERM)
    assert _stop(proc) == 0, log.read_text()
    text = log.read_text()
    assert "event=stopped_during_start step=" in text and "signal=SIGTERM" in text, text
    assert "Traceback" not in text
    import socket
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", smtp), timeout=1).close()
    assert os.path.exists(tmp_path / "var" / "registry.db")

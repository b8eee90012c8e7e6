"""pytest fixture `dovecot`: a private Dovecot LMTP server into Maildirs (RECIPES.md 3).

    def test_x(dovecot):
        server = dovecot(["user@example.test", "bob@example.test"])   # starts it
        server.add_user("late@example.test")      # passwd-file is re-read, works while running
        ... LMTP to 127.0.0.1:server.port ...
        server.maildir("user@example.test") / ".Finance" / "new"

The factory starts one server per call (usually one per test); every server is
stopped with SIGTERM by its own PID at teardown and its directory removed.
Addresses are `local@domain`; `local+Detail@domain` lands in the Maildir++
folder `.Detail` (lmtp_save_to_detail_mailbox).  Mail is owned by nobody.

Skips (never fails) only when the `dovecot` binary is missing.  Needs root, as
the recipe does: Dovecot drops to uid 65534 for delivery.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.proc import stop_process

__all__ = ["DovecotServer", "dovecot", "free_port"]

_CONF = """\
protocols = lmtp
listen = 127.0.0.1
ssl = no
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
mail_location = maildir:~/Maildir
recipient_delimiter = +
lmtp_save_to_detail_mailbox = yes
lda_mailbox_autocreate = yes
service lmtp {{
  inet_listener lmtp {{
    port = {port}
  }}
}}
"""


def _binary() -> str | None:
    found = shutil.which("dovecot")
    if found is None and Path("/usr/sbin/dovecot").exists():
        found = "/usr/sbin/dovecot"
    return found


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the usual small race is accepted)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_greeting(port: int, proc: subprocess.Popen[bytes], log: Path,
                      deadline: float = 15.0) -> None:
    """Poll until the server on `port` sends a 220 greeting, or fail with its log."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    pytest.fail(f"server on port {port} did not start (exit {proc.poll()}):\n{text[-2000:]}")


class DovecotServer:
    """One private Dovecot: `.port`, `.dir`, `.add_user()`, `.maildir()`, `.log`."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir()
        shutil.chown(root / "mail", "nobody", "nogroup")
        (root / "users").write_text("")
        (root / "dovecot.conf").write_text(_CONF.format(d=root, port=self.port))

    def add_user(self, address: str) -> None:
        """Add a mailbox user; Dovecot re-reads the passwd-file when it changes."""
        home = self.home(address)
        with (self.dir / "users").open("a") as users:
            users.write(f"{address}::65534:65534::{home}::\n")

    def home(self, address: str) -> Path:
        local, _, domain = address.partition("@")
        return self.dir / "mail" / domain / local

    def maildir(self, address: str) -> Path:
        """The Maildir root of a user (INBOX is `new/` here, folders are `.Name/`)."""
        return self.home(address) / "Maildir"

    @property
    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [_binary() or "dovecot", "-F", "-c", str(self.dir / "dovecot.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for_greeting(self.port, self.proc, self.dir / "dovecot.log")

    def stop(self) -> None:
        stop_process(self.proc, 15)


@pytest.fixture
def dovecot() -> Iterator[Callable[[list[str]], DovecotServer]]:
    """Factory: `dovecot(["user@example.test"])` -> a started DovecotServer."""
    if _binary() is None:
        pytest.skip("dovecot binary not found (apt-get install dovecot-core dovecot-lmtpd)")
    servers: list[DovecotServer] = []

    def start(users: list[str]) -> DovecotServer:
        root = Path(tempfile.mkdtemp(prefix="dovecot."))
        root.chmod(0o755)
        server = DovecotServer(root)
        servers.append(server)
        for user in users:
            server.add_user(user)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)

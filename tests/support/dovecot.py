"""pytest fixture `dovecot`: a private Dovecot LMTP server into Maildirs (RECIPES.md 3).

    def test_x(dovecot):
        server = dovecot(["user@example.test", "bob@example.test"])   # starts it
        server.add_user("late@example.test")      # passwd-file is re-read, works while running
        ... LMTP to 127.0.0.1:server.port ...
        server.maildir("user@example.test") / ".Finance" / "new"
        server = dovecot(["fin@example.test"], sieve=True, imap=True)  # Sieve + IMAP on .imap_port
        server.add_user("box@example.test", sieve_before=path)         # per-user sieve_before

The factory starts one server per call (usually one per test); every server is
stopped with SIGTERM by its own PID at teardown and its directory removed.
Every user's IMAP password is `secret` (plain text over loopback, tests only).
`sieve=True` loads Pigeonhole's sieve plugin for LMTP (Debian dovecot-sieve);
`imap=True` adds an IMAP listener (Debian dovecot-imapd); without the package
the test skips, saying which one to install.
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
from .ports import free_port

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
_SIEVE = """\
protocol lmtp {
  mail_plugins = $mail_plugins sieve
}
"""
_IMAP = """\
disable_plaintext_auth = no
auth_mechanisms = plain login
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def _binary() -> str | None:
    found = shutil.which("dovecot")
    if found is None and Path("/usr/sbin/dovecot").exists():
        found = "/usr/sbin/dovecot"
    return found


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

    def __init__(self, root: Path, sieve: bool = False, imap: bool = False) -> None:
        self.dir = root
        self.port = free_port()
        self.imap_port = free_port() if imap else 0
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir()
        shutil.chown(root / "mail", "nobody", "nogroup")
        (root / "users").write_text("")
        conf = _CONF.format(d=root, port=self.port)
        if imap:
            conf = conf.replace("protocols = lmtp", "protocols = lmtp imap")
            conf += _IMAP.format(port=self.imap_port)
        (root / "dovecot.conf").write_text(conf + (_SIEVE if sieve else ""))

    def add_user(self, address: str, sieve_before: Path | None = None) -> None:
        """Add a mailbox user (IMAP password `secret`), optionally with its own sieve_before
        (a userdb extra field, as deploy/dovecot documents); Dovecot re-reads the file."""
        home = self.home(address)
        # userdb_: the file is the passdb too, and a passdb hands on only userdb_ fields
        extra = f"userdb_sieve_before={sieve_before}" if sieve_before else ""
        with (self.dir / "users").open("a") as users:
            users.write(f"{address}:{{PLAIN}}secret:65534:65534::{home}::{extra}\n")

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


_PLUGINS = Path("/usr/lib/dovecot/modules")


@pytest.fixture
def dovecot() -> Iterator[Callable[..., DovecotServer]]:
    """Factory: `dovecot(["user@example.test"], sieve=False, imap=False)` -> a started
    DovecotServer."""
    if _binary() is None:
        pytest.skip("dovecot binary not found (apt-get install dovecot-core dovecot-lmtpd)")
    servers: list[DovecotServer] = []

    def start(users: list[str], sieve: bool = False, imap: bool = False) -> DovecotServer:
        if sieve and not (_PLUGINS / "lib90_sieve_plugin.so").exists():
            pytest.skip("Dovecot's sieve plugin not found (apt-get install dovecot-sieve)")
        if imap and not (_PLUGINS.parent / "imap").exists():
            pytest.skip("Dovecot's IMAP server not found (apt-get install dovecot-imapd)")
        root = Path(tempfile.mkdtemp(prefix="dovecot."))
        root.chmod(0o755)
        server = DovecotServer(root, sieve, imap)
        servers.append(server)
        for user in users:
            server.add_user(user)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)

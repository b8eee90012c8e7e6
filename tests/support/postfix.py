"""pytest fixture `postfix`: a private Postfix in front of a port the test owns (RECIPES.md 2).

    def test_x(postfix):
        mta = postfix(relay_port=sink_port)              # SMTP relayhost [127.0.0.1]:sink_port
        mta = postfix(relay_port=port, lmtp=True)        # lmtp:inet:127.0.0.1:port instead
        smtplib.SMTP("127.0.0.1", mta.port)  ...         # Postfix listens here
        mta.queue_ids(); mta.flush(); mta.maillog; mta.postconf("k = v"); mta.reload()

Each call starts one Postfix (master in the foreground, so its PID is ours)
with its own main.cf/master.cf under `.etc`, queue and data directories in a
temporary directory; everything is stopped by PID and removed at teardown.
All of `postconf`/`postqueue`/`postsuper` are run with `-c .etc`.

Skips (never fails) only when the `postfix` binary is missing.  Needs root,
as the recipe does (Postfix drops to its `postfix` user itself).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.proc import stop_process

from tests.support.dovecot import free_port, wait_for_greeting

__all__ = ["PostfixServer", "postfix"]

_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
myhostname = upstream.example.test
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8
mydestination =
alias_maps =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_dns_support_level = disabled
smtputf8_enable = yes
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 10s
"""
_MASTER = "/usr/lib/postfix/sbin/master"


def _binary() -> str | None:
    found = shutil.which("postfix")
    if found is None and Path("/usr/sbin/postfix").exists():
        found = "/usr/sbin/postfix"
    return found


def _master_cf(port: int) -> str:
    """Stock master.cf with smtpd only on 127.0.0.1:port and chroot off."""
    out = []
    for line in Path("/usr/share/postfix/master.cf.dist").read_text().splitlines():
        fields = line.split()
        if line.startswith("smtp ") and len(fields) > 1 and fields[1] == "inet":
            line = f"127.0.0.1:{port} inet n - n - - smtpd"
        elif line[:1].isalpha() and len(fields) >= 8:
            fields[4] = "n"
            line = " ".join(fields)
        out.append(line)
    return "\n".join(out) + "\n"


class PostfixServer:
    """One private Postfix: `.port`, `.etc`, `.queue_ids()`, `.flush()`, `.maillog`."""

    def __init__(self, root: Path, relay_port: int, lmtp: bool) -> None:
        self.dir, self.etc, self.port = root, root / "etc", free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("etc", "queue", "data"):
            (root / sub).mkdir()
        shutil.chown(root / "data", "postfix")
        next_hop = f"inet:127.0.0.1:{relay_port}"
        route = (f"default_transport = lmtp:{next_hop}\nrelay_transport = lmtp:{next_hop}\n"
                 if lmtp else f"relayhost = [127.0.0.1]:{relay_port}\n")
        (self.etc / "main.cf").write_text(_MAIN_CF.format(d=root) + route)
        (self.etc / "master.cf").write_text(_master_cf(self.port))

    def _run(self, tool: str, *args: str) -> str:
        done = subprocess.run([tool, "-c", str(self.etc), *args], capture_output=True,
                              text=True, timeout=60)
        if done.returncode != 0:
            pytest.fail(f"{tool} {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def start(self) -> None:
        """master -d on its port. Its early errors (before maillog exists) go to a file the
        failure shows: under -n 2 a start once exited 1 with "(no log)". A port another test
        took since free_port() chose it is given up for a new one (three tries)."""
        self._run(_binary() or "postfix", "check")   # creates the queue directories
        err = self.dir / "master.err"
        for attempt in range(3):
            with open(err, "wb") as out:
                self.proc = subprocess.Popen([_MASTER, "-d", "-c", str(self.etc)],
                                             stdout=subprocess.DEVNULL, stderr=out)
            try:
                self.proc.wait(0.3)
            except subprocess.TimeoutExpired:
                break                                 # running: it greets below
            if "in use" not in err.read_text(errors="replace") or attempt == 2:
                break
            self.port = free_port()
            (self.etc / "master.cf").write_text(_master_cf(self.port))
        if self.proc.poll() is not None and err.stat().st_size:
            pytest.fail(f"postfix master exited {self.proc.returncode}: "
                        f"{err.read_text(errors='replace')[-2000:]}")
        wait_for_greeting(self.port, self.proc, self.dir / "maillog")

    def stop(self) -> None:
        stop_process(self.proc, 20)

    def postconf(self, *settings: str) -> None:
        """Change main.cf (`"key = value"`); call reload() afterwards."""
        self._run("postconf", "-e", *settings)

    def reload(self) -> None:
        """`postfix reload`, returning once no smtpd of the old configuration is left: old
        processes exit "at their earliest convenience", and a client that reached one right
        after the reload would still be answered by the old tables."""
        old = self._smtpd_pids()
        self._run(_binary() or "postfix", "reload")
        deadline = time.monotonic() + 30
        while old & self._smtpd_pids() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _smtpd_pids(self) -> set[int]:
        """The smtpd children of this instance's master."""
        master = self.proc.pid if self.proc else -1
        pids = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == master and "(smtpd)" in stat.read_text():
                    pids.add(int(stat.parent.name))
            except (OSError, IndexError, ValueError):
                continue                     # the process ended while we looked
        return pids

    def queue_ids(self) -> list[str]:
        """Queue IDs of every message still in the queue."""
        out = self._run("postqueue", "-j")
        return [json.loads(line)["queue_id"] for line in out.splitlines() if line.strip()]

    def flush(self) -> None:
        """Try every deferred message now."""
        self._run("postqueue", "-f")

    def purge(self) -> None:
        self._run("postsuper", "-d", "ALL")

    @property
    def maillog(self) -> str:
        path = self.dir / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, needle: str, deadline: float = 20.0) -> str:
        """Block until `needle` shows in the maillog (for sync tests; no loop here)."""
        end = time.monotonic() + deadline
        while needle not in self.maillog and time.monotonic() < end:
            time.sleep(0.05)
        return self.maillog


@pytest.fixture
def postfix() -> Iterator[Callable[..., PostfixServer]]:
    """Factory: `postfix(relay_port=N, lmtp=False)` -> a started PostfixServer."""
    if _binary() is None or not Path(_MASTER).exists():
        pytest.skip("postfix binary not found (apt-get install postfix)")
    servers: list[PostfixServer] = []

    def start(relay_port: int, lmtp: bool = False) -> PostfixServer:
        root = Path(tempfile.mkdtemp(prefix="pfx."))
        root.chmod(0o755)
        server = PostfixServer(root, relay_port, lmtp)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)

"""A throw-away Debian machine under a real systemd: this machine's own root seen through an
overlay whose writes go to a tmpfs, booted with systemd-nspawn on a private network.

Nothing the booted systemd does reaches this machine: its files change only in the tmpfs,
its /dev and /tmp are its own, and it has no network but its loopback. `Machine.sh` runs a
shell script inside it (all namespaces of its PID 1, as `machinectl shell` would).
Needs root and systemd-nspawn (Debian's systemd-container); the test is skipped without them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

# Units of this machine's Debian packages that a booted copy must not start (they would
# only cost time; the test starts what it needs).
MASKED = ("postgresql.service", "prometheus.service", "prometheus-node-exporter.service",
          "cron.service", "ssh.service",
          "e2scrub_reap.service", "console-getty.service", "getty@.service")
# A root shell's environment on Debian (not this test's: its PATH may find a Python in /root)
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
        "LANG": "C.UTF-8"}
# The cgroups systemd-nspawn makes beside ours on a host without systemd (removed after)
CGROUPS = [Path("/sys/fs/cgroup") / h / d for h in ("unified", "systemd")
           for d in ("payload", "supervisor")]


@dataclass
class Machine:
    root: Path            # the machine's / as seen from here (write files there before boot)
    leader: int = 0       # its PID 1, as a PID of this machine
    log: Path | None = None

    def chroot(self, script: str, timeout: float = 600) -> str:
        """Run `script` with sh in the root before it boots, on this machine's network and
        /dev (bound in a mount namespace of its own, gone when it ends)."""
        r = str(self.root)
        done = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-ec",
             f'mount --bind /dev "{r}/dev"; mount -t proc proc "{r}/proc"; '
             f'exec chroot "{r}" sh -ec "$0"', script], env=_ENV,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
            check=False)
        assert done.returncode == 0, f"{script}\n-> exit {done.returncode}\n{done.stdout}"
        return done.stdout

    def sh(self, script: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `script` with sh inside the booted machine; stdout and stderr together."""
        return subprocess.run(["nsenter", "-t", str(self.leader), "-a", "sh", "-c", script], env=_ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, check=False, cwd="/")

    def ok(self, script: str, timeout: float = 300) -> str:
        done = self.sh(script, timeout)
        assert done.returncode == 0, f"{script}\n-> exit {done.returncode}\n{done.stdout}"
        return done.stdout


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    return out


def _find_init(nspawn: int) -> int:
    """The container's PID 1: the process under systemd-nspawn that runs systemd."""
    todo = [nspawn]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                return pid
        todo += _children(pid)
    return 0


@contextlib.contextmanager
def booted(base: Path, prepare: Callable[[Machine], None] | None = None) -> Iterator[Machine]:
    """A machine whose root is an overlay of / in a tmpfs on `base`; `prepare(machine)` runs
    before it boots (write files, chroot); yields it booted; powers off and unmounts after."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mount, systemd-nspawn)")
    if shutil.which("systemd-nspawn") is None or shutil.which("nsenter") is None:
        pytest.skip("systemd-nspawn not installed (apt-get install systemd-container)")
    base.mkdir(parents=True, exist_ok=True)
    made = [c for c in CGROUPS if not c.exists()]
    mounts: list[Path] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        res = _run("mount", "-t", "tmpfs", "-o", "size=4g,mode=0755", "tmpfs", str(base))
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
        mounts.append(base)
        for d in ("up", "work", "root"):
            (base / d).mkdir()
        root = base / "root"
        res = _run("mount", "-t", "overlay", "overlay", "-o",
                   f"lowerdir=/,upperdir={base / 'up'},workdir={base / 'work'}", str(root))
        if res.returncode != 0:
            pytest.skip(f"cannot mount an overlay of /: {res.stderr.strip()}")
        mounts.append(root)
        for unit in MASKED:
            link = root / "etc/systemd/system" / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        m = Machine(root, log=base / "boot.log")
        if prepare is not None:
            prepare(m)
        # nspawn wants an empty /dev to fill, not what the lower layer has there
        assert _run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(root / "dev")).returncode == 0
        mounts.append(root / "dev")
        with open(m.log, "wb") as log:
            proc = subprocess.Popen(
                ["systemd-nspawn", "-D", str(root), "--register=no", "--keep-unit",
                 "--private-network", "-b", "-M", f"mrtest{os.getpid()}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        end = time.monotonic() + 90
        while True:
            assert proc.poll() is None, m.log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < end, "the machine did not boot in 90 s:\n" + \
                m.log.read_text(errors="replace")[-3000:]
            m.leader = m.leader or _find_init(proc.pid)
            if m.leader:
                state = m.sh("systemctl is-system-running", timeout=30).stdout.strip()
                if state in ("running", "degraded"):
                    break
            time.sleep(0.3)
        yield m
    finally:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGTERM)     # nspawn: power the machine off
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        for mnt in reversed(mounts):
            if _run("umount", str(mnt)).returncode != 0:
                _run("umount", "-l", str(mnt))
        for cg in made:               # deepest first; only what was not there before
            if cg.exists():
                for d in sorted((p for p in cg.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        d.rmdir()
                with contextlib.suppress(OSError):
                    cg.rmdir()

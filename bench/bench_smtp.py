#!/usr/bin/env python3
"""SMTP throughput of the whole daemon next to smtp-sink (the limit), in one run.

    .venv/bin/python bench/bench_smtp.py                       # 1, 10, 50 conns, 2000 msgs each
    .venv/bin/python bench/bench_smtp.py -n 5000 -c 10 --postfix
    cd bench && unshare -n sh -c 'ip link set lo up; PYTHONPATH=$(cd .. && pwd) python bench_smtp.py \
        -n 1000 --postfix --workers 1 --idle 100 --old ../../old-checkout --asyncio-too --rounds 3'

For each connection count: Postfix's `smtp-source` sends N messages of 4 KB,
one new session per message (`-s C -m N -l 4096`, no -d), to
  1. `smtp-sink` (the limit: accepts and discards), then
  2. mailrouter (`mailrouter run -c` in a subprocess, temp config: SQLite
     registry + Maildir under a temp dir, the repo's rules, rcpt sales@example.com): `mr/W`,
     the embedded default, and `mr-relay/W`: every mailbox `{smtp: ...}` to the same
     smtp-sink, 1,000 aliases, 100 rules (--no-relay leaves it out); with --asyncio-too each
     also as `.../W:asyncio` (MAILROUTER_LOOP=asyncio: the pair shows what uvloop gives),
     with --old TREE each also as `old:...` run from that checkout (new/old ratios);
  3. optionally (--postfix) a private Postfix relaying to smtp-sink, docs/performance.md's peer
     (1,000 virtual aliases, 23 header checks), and (--bare) a stock aiosmtpd whose
     handler does nothing: the floor of any aiosmtpd-based server on this machine.
It prints msg/s, the ratio to smtp-sink, CPU per message of every process of each
server (Postfix: the master and every process it spawns during the level, exited ones
included), peak RSS (VmHWM of the main process), and p50/p99 latency of a probe
client that sends one message at a time (new session each) while the load runs.
Absolute figures on a shared box are noise; the ratio is the figure. --rounds N repeats
every level N times, rotating the order of the servers, and ends with a summary: best and
median msg/s, and the medians of the per-round ratios (to Postfix, new/old, uvloop/asyncio).
--idle N first sends N messages one at a time to each idle server (10 ms apart): p50/p99
from connect to the 250 of the final dot.

CPU: each server's processes are moved into a cgroup v2 of their own (under the
writable cgroup2 mount), whose cpu.stat counts exited processes too; without one,
the sum over the server's live processes of their own and their reaped children's
CPU (/proc/PID/stat utime+stime+cutime+cstime), which counts a process that exits
during a level through its parent. Postfix runs with its own config directory
(`-c`, tests/support/postfix.py); everything started is stopped on any failure
(process groups, the cgroup's kill, try/finally, SIGTERM and SIGINT included).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def slug(name: str) -> str:
    """A server's name as a file name ("old:mr/1" -> "old-mr-1")."""
    return re.sub(r"[^\w.-]+", "-", name)


def cpu_seconds(pids: list[int]) -> float:
    """Own CPU of each live process plus that of its children it has reaped."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])    # utime stime cutime cstime (14-17)
    return total / TICK


def _cgroup2_root() -> Path | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        dev, mnt, kind = line.split()[:3]
        if kind == "cgroup2" and os.access(mnt, os.W_OK):
            return Path(mnt)
    return None


class Server:
    """A server the bench started: its CPU (cgroup, or /proc), and how to stop all of it."""

    def __init__(self, name: str, pid: int, stop: "Callable[[], None]") -> None:
        self.name, self.pid, self._stop = name, pid, stop
        self.cgroup: Path | None = None
        root = _cgroup2_root()
        if root is not None:
            try:
                cg = root / f"mrbench-{os.getpid()}-{slug(name)}"
                cg.mkdir()
                self.cgroup = cg
                self.adopt()
            except OSError:
                self.cgroup = None

    def adopt(self) -> None:
        """Move every process of the server into its cgroup (later children are born there)."""
        if self.cgroup is None:
            return
        for _ in range(2):            # a second pass for children forked during the first
            for pid in descendants(self.pid):
                try:
                    (self.cgroup / "cgroup.procs").write_text(str(pid))
                except OSError:
                    pass

    def cpu(self) -> float:
        if self.cgroup is not None:
            for line in (self.cgroup / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        return cpu_seconds(descendants(self.pid))

    def stop(self) -> None:
        try:
            self._stop()
        finally:
            if self.cgroup is not None:
                kill = self.cgroup / "cgroup.kill"
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    try:
                        if not (self.cgroup / "cgroup.procs").read_text().split():
                            self.cgroup.rmdir()
                            break
                        if kill.exists():
                            kill.write_text("1")
                    except OSError:
                        pass
                    time.sleep(0.05)


def stop_group(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM `proc` (its own shutdown stops its workers), then SIGKILL what is left of its
    process group (it was started with start_new_session)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    out, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            kids = []
        out += map(int, kids)
        todo += map(int, kids)
    return out


class Probe(threading.Thread):
    """One message at a time, new session each, until stopped; records end-to-end latency."""

    def __init__(self, port: int, rcpt: str) -> None:
        super().__init__(daemon=True)
        self.port, self.rcpt, self.lat, self.errors = port, rcpt, [], 0
        self.stop = threading.Event()
        self.body = (b"From: probe@bench.test\r\nSubject: probe\r\n\r\n" + b"x" * 76 + b"\r\n") * 1

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            t0 = time.perf_counter()
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
                    s.sendmail("probe@bench.test", [self.rcpt],
                               self.body + f"n={i} t={time.time_ns()}\r\n".encode())
                self.lat.append(time.perf_counter() - t0)
            except (OSError, smtplib.SMTPException):
                self.errors += 1
            self.stop.wait(0.02)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def blast(port: int, conns: int, msgs: int, size: int, rcpt: str, srv: Server) -> dict:
    probe = Probe(port, rcpt)
    srv.adopt()
    cpu0 = srv.cpu()
    probe.start()
    t0 = time.perf_counter()
    done = subprocess.run([SMTP_SOURCE, "-s", str(conns), "-m", str(msgs), "-l", str(size),
                           "-f", "bench@source.test", "-t", rcpt, "-M", "source.test",
                           f"127.0.0.1:{port}"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    probe.stop.set()
    probe.join()
    cpu = srv.cpu() - cpu0
    return {"rate": msgs / wall, "wall": wall, "cpu_per_msg": cpu / (msgs + len(probe.lat)),
            "hwm_mb": hwm_kb(srv.pid) / 1024, "p50": pct(probe.lat, .5) * 1e3,
            "p99": pct(probe.lat, .99) * 1e3, "probes": len(probe.lat),
            "errors": probe.errors, "rc": done.returncode, "stderr": done.stderr.strip()[-300:]}


def idle(port: int, n: int, rcpt: str) -> dict:
    """n messages one after another on an idle server, a new session each, a short pause
    between: p50/p99 of the time from connect to the 250 of the final dot (QUIT after).
    Each body is new (a timestamp): the same bodies in a later round were answered from the
    registry as retries of delivered messages, with no copy written, and flattered the p50."""
    probe = Probe(port, rcpt)
    lat: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                s.sendmail("probe@bench.test", [rcpt],
                           probe.body + f"n={i} t={time.time_ns()}\r\n".encode())
                lat.append(time.perf_counter() - t0)
        except (OSError, smtplib.SMTPException):
            probe.errors += 1
        time.sleep(0.01)
    return {"p50": pct(lat, .5) * 1e3, "p99": pct(lat, .99) * 1e3, "errors": probe.errors}


def start_sink(port: int, started: list[Server]) -> Server:
    # -u: run as nobody when root; backlog 1024
    p = subprocess.Popen([SMTP_SINK, "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    srv = Server("smtp-sink", p.pid, lambda: stop_group(p))
    started.append(srv)
    wait_port(port, p)
    return srv


def start_mailrouter(tmp: Path, py: str, profile: str | None, workers: str,
                     started: list[Server], *, registry: str | None = None,
                     maildir_root: Path | None = None,
                     hostname: str = "mx.bench", routing: str | None = None,
                     smtp_downstream: int | None = None, env: dict[str, str] | None = None,
                     name: str | None = None) -> tuple[Server, int]:
    """`mailrouter run` on its own ports in `tmp`; by default its own SQLite registry and
    Maildir root under `tmp`, or the given ones (several instances sharing them).
    `routing`: a glob of routing files (the repo's rules by default); `smtp_downstream`: the
    port of delivery.smtp; `env`: the child's environment (another checkout's PYTHONPATH,
    MAILROUTER_LOOP)."""
    smtp, lmtp, admin = free_port(), free_port(), free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    registry = registry or f"sqlite+aiosqlite:///{tmp / 'var' / 'registry.db'}"
    maildir_root = maildir_root or tmp / "var" / "mail"
    downstream = (f", smtp: {{host: 127.0.0.1, port: {smtp_downstream}}}"
                  if smtp_downstream else "")
    cfg = tmp / "config.yaml"
    cfg.write_text(
        f"hostname: {hostname}\n"
        f"listen: {{smtp: '127.0.0.1:{smtp}', lmtp: '127.0.0.1:{lmtp}', admin: '127.0.0.1:{admin}'}}\n"
        f"routing: ['{routing or REPO / 'rules' / '*.yaml'}']\n"
        f"registry: {{url: '{registry}'}}\n"
        f"delivery: {{maildir_root: '{maildir_root}'{downstream}}}\n"
        f"limits: {{max_message_size: 10485760}}\n"
        f"log_level: WARNING\nworkers: {workers}\n")
    cmd = [py, "-m", "mailrouter.cli", "run", "-c", str(cfg)]
    if profile:
        cmd = [py, "-m", "cProfile", "-o", profile, "-m", "mailrouter.cli", "run", "-c", str(cfg)]
    with open(tmp / "daemon.log", "ab") as log:
        p = subprocess.Popen(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env)
    srv = Server(name or f"mailrouter-{hostname}-{workers}", p.pid, lambda: stop_group(p))
    started.append(srv)
    wait_port(smtp, p, 60)
    return srv, smtp


def relay_rules(tmp: Path, tree: Path = REPO) -> str:
    """The relay row's routing files: the example company of checkout `tree` with every
    mailbox `{smtp: ...}` (to the downstream, smtp-sink), 1,000 aliases, and 100 rules
    (bench_rules.rules_yaml: the example rules, then by recipient, by subject word, by
    header)."""
    import yaml
    from bench_rules import rules_yaml
    rules = tmp / ("relay-rules" if tree == REPO else f"relay-rules-{tree.name}")
    rules.mkdir(parents=True, exist_ok=True)
    company = yaml.safe_load((tree / "rules" / "company.yaml").read_text(encoding="utf-8"))
    company["mailboxes"] = {name: {"smtp": f"{name}@sink.test"} for name in company["mailboxes"]}
    boxes = sorted(company["mailboxes"])
    extra = 1000 - len(company["aliases"])
    company["aliases"].update({f"alias{n}@example.com": f"mailbox:{boxes[n % len(boxes)]}"
                               for n in range(extra)})
    (rules / "company.yaml").write_text(yaml.safe_dump(company, allow_unicode=True), encoding="utf-8")
    (rules / "routing.yaml").write_text(rules_yaml(100), encoding="utf-8")
    return str(rules / "*.yaml")


def start_postfix(tmp: Path, relay_port: int, rcpt: str, started: list[Server]) -> tuple[Server, int]:
    """A private Postfix relaying to smtp-sink, set up as docs/performance.md's reference peer:
    1,000 virtual aliases (the load's recipient among them) and 23 header checks. Every
    Postfix tool gets `-c` its own config directory: there may be no /etc/postfix."""
    sys.path.insert(0, str(REPO))
    from tests.support.postfix import PostfixServer   # same private Postfix as the tests
    root = tmp / "postfix"
    root.mkdir()
    root.chmod(0o755)
    tmp.chmod(0o755)                  # Postfix's own user walks down to its queue
    srv = PostfixServer(root, relay_port, lmtp=False)
    domain = rcpt.rpartition("@")[2]
    aliases = [f"alias{n}@{domain} dept{n % 10}@sink.test" for n in range(999)]
    (srv.etc / "virtual").write_text("\n".join(aliases + [f"{rcpt} sales@sink.test"]) + "\n")
    subprocess.run(["postmap", "-c", str(srv.etc), f"hash:{srv.etc / 'virtual'}"], check=True,
                   timeout=60)
    words = ["viagra", "casino", "lottery", "winner", "bitcoin", "wire transfer", "urgent reply",
             "inheritance", "pharmacy", "replica", "crypto", "loan", "weight loss", "dating",
             "prize", "unsubscribe now", "act now", "risk free", "100% free", "click here"]
    checks = [f"/^Subject:.*{w}/ INFO {w}" for w in words] + [
        "/^X-Mailer:.*Bulk/ INFO bulk mailer", "/^Content-Type:.*\\.(exe|scr|pif)/ REJECT exe",
        "/^Received:.*\\[10\\.66\\./ INFO internal relay"]
    (srv.etc / "header_checks").write_text("\n".join(checks) + "\n")    # 23 checks
    try:
        srv.start()
    finally:
        if srv.proc is not None:
            started.append(Server("postfix", srv.proc.pid, srv.stop))
    srv.postconf("default_process_limit = 200", "smtpd_client_connection_count_limit = 0",
                 "smtpd_client_connection_rate_limit = 0", "smtp_connection_cache_on_demand = yes",
                 f"virtual_alias_domains = {domain}",
                 f"virtual_alias_maps = hash:{srv.etc / 'virtual'}",
                 f"header_checks = regexp:{srv.etc / 'header_checks'}")
    srv.reload()
    time.sleep(1)
    wait_port(srv.port, None)
    return started[-1], srv.port


_BARE = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Handler:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
async def main():
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: SMTP(Handler(), hostname="bare"), "127.0.0.1",
                             int(sys.argv[1]), backlog=1024)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def start_bare(py: str, started: list[Server]) -> tuple[Server, int]:
    """Stock aiosmtpd with a handler that does nothing: the floor of any aiosmtpd design."""
    port = free_port()
    p = subprocess.Popen([py, "-c", _BARE, str(port)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    srv = Server("aiosmtpd-noop", p.pid, lambda: stop_group(p))
    started.append(srv)
    wait_port(port, p)
    return srv, port


def row(name: str, r: dict, limit: float | None) -> str:
    ratio = f"{r['rate'] / limit:6.3f}" if limit else "     -"
    return (f"  {name:<22} {r['rate']:9.0f} {ratio} {r['cpu_per_msg'] * 1e3:9.3f} "
            f"{r['hwm_mb']:8.1f} {r['p50']:8.1f} {r['p99']:8.1f} {r['probes']:6d}"
            + (f"  probe_errors={r['errors']}" if r["errors"] else "")
            + (f"  smtp-source rc={r['rc']}: {r['stderr']}" if r["rc"] else ""))


def start_all(a: argparse.Namespace, tmp: Path, started: list[Server],
              sink_port: int) -> list[tuple[str, Server, int]]:
    """Every server of the run, named: `mr/W` (embedded default: Maildir + SQLite) and
    `mr-relay/W` per workers setting, `:asyncio` for the paired run without uvloop,
    `old:` for the checkout given with --old; then postfix and aiosmtpd-noop."""
    trees = [("", REPO)] + ([("old:", Path(a.old).resolve())] if a.old else [])
    servers: list[tuple[str, Server, int]] = []
    for label, tree in trees:
        relay = relay_rules(tmp, tree) if a.relay else None
        loops = ["", ":asyncio"] if a.asyncio_too and not label else [""]
        for loop in loops:
            env = dict(os.environ, PYTHONPATH=str(tree))
            env.pop("MAILROUTER_LOOP", None)
            if loop:
                env["MAILROUTER_LOOP"] = "asyncio"
            for w in a.workers:
                # each checkout with its own example rules: an older one may not read the
                # newer files (a key added since: it would refuse to start)
                own = str(tree / "rules" / "*.yaml")
                kinds = [("mr", own, None)] + ([("mr-relay", relay, sink_port)] if relay else [])
                for kind, routing, down in kinds:
                    name = f"{label}{kind}/{w}{loop}"
                    if a.cur and kind == "mr":
                        fill_cur(tmp / slug(name) / "var" / "mail" / "sales" / ".Inbound", a.cur)
                    if a.registry:       # each row its own copy of the filled registry
                        (tmp / slug(name) / "var").mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(a.registry, tmp / slug(name) / "var" / "registry.db")
                    srv, port = start_mailrouter(tmp / slug(name), a.python,
                                                 a.profile, w, started, routing=routing,
                                                 smtp_downstream=down, env=env, name=name)
                    servers.append((name, srv, port))
    if a.postfix:
        pf, pf_port = start_postfix(tmp, sink_port, a.rcpt, started)
        servers.append(("postfix", pf, pf_port))
    if a.bare:
        bare, bare_port = start_bare(a.python, started)
        servers.append(("aiosmtpd-noop", bare, bare_port))
    return servers


def fill_cur(box: Path, n: int) -> None:
    """`n` messages a reader has seen, in the folder the repo's rules give sales@ (Inbound):
    a department folder after years of mail. Its mtime set an hour back, as a folder no one
    is reading at the moment."""
    cur = box / "cur"
    cur.mkdir(parents=True, exist_ok=True)
    for sub in ("new", "tmp"):
        (box / sub).mkdir(exist_ok=True)
    for i in range(n):
        (cur / f"{1700000000 + i}.M{i}P1.mx.old,S=4096,W=4180:2,S").touch()
    past = time.time() - 3600
    os.utime(cur, (past, past))


def median(values: list[float]) -> float:
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def pairs(names: list[str]) -> list[tuple[str, str, str]]:
    """(what, this, against): new against old, uvloop against asyncio, each row against Postfix."""
    out = []
    for n in names:
        if f"old:{n}" in names:
            out.append(("new/old", n, f"old:{n}"))
        if f"{n}:asyncio" in names:
            out.append(("uvloop/asyncio", n, f"{n}:asyncio"))
    return out


def run(a: argparse.Namespace, tmp: Path, started: list[Server]) -> None:
    sink_port = free_port()
    sink = start_sink(sink_port, started)
    servers = start_all(a, tmp, started, sink_port)
    names = [n for n, _, _ in servers]
    cg = "cgroup v2 cpu.stat" if sink.cgroup is not None else "/proc utime+stime+cutime+cstime"
    print(f"# {os.cpu_count()} CPUs, {a.messages} msgs of {a.size} B per level, new session per "
          f"message; smtp-source -s C -m {a.messages} -l {a.size}; CPU from {cg}; "
          f"{a.rounds} round(s), the order of the servers rotates each round")
    header = (f"  {'server':<22} {'msg/s':>9} {'ratio':>6} {'cpu ms/msg':>9} {'RSS MB':>8} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'probes':>6}")
    res: dict[tuple[int, str], list[dict]] = {}
    idles: dict[str, list[dict]] = {}
    for rnd in range(a.rounds):
        k = rnd % len(servers)
        order = servers[k:] + servers[:k]
        print(f"round {rnd + 1}")
        if a.idle:
            for name, _, port in order:
                got = idle(port, a.idle, a.rcpt)
                idles.setdefault(name, []).append(got)
                print(f"  idle {name:<22} p50 {got['p50']:6.2f} ms  p99 {got['p99']:6.2f} ms"
                      + (f"  errors={got['errors']}" if got["errors"] else ""), flush=True)
        print(header)
        for conns in a.conns:
            print(f" conns={conns}")
            lim = blast(sink_port, conns, a.messages, a.size, a.rcpt, sink)
            print(row("smtp-sink", lim, None), flush=True)
            for name, srv, port in order:
                r = blast(port, conns, a.messages, a.size, a.rcpt, srv)
                res.setdefault((conns, name), []).append(r)
                print(row(name, r, lim["rate"]), flush=True)
    summary(a, names, res, idles)
    for name, _, _ in servers:
        mail = tmp / slug(name) / "var" / "mail"
        if mail.exists():
            print(f"# {name} Maildir files: {sum(1 for _ in mail.rglob('new/*'))}")


def summary(a: argparse.Namespace, names: list[str], res: dict[tuple[int, str], list[dict]],
            idles: dict[str, list[dict]]) -> None:
    """Best-of and median over the rounds; ratios are medians of the per-round ratios."""
    pf = "postfix" if "postfix" in names else None
    print(f"\nsummary over {a.rounds} round(s): msg/s best and median; x postfix = median of the "
          f"per-round ratios (rate, CPU per message)")
    print(f"  {'server':<22} {'best':>7} {'median':>7} {'cpu ms':>7}"
          + (f" {'rate x pf':>9} {'cpu x pf':>8}" if pf else ""))
    for conns in a.conns:
        print(f" conns={conns}")
        for n in names:
            rs = res[(conns, n)]
            line = (f"  {n:<22} {max(r['rate'] for r in rs):7.0f} {median([r['rate'] for r in rs]):7.0f} "
                    f"{median([r['cpu_per_msg'] * 1e3 for r in rs]):7.3f}")
            if pf:
                ps = res[(conns, pf)]
                line += (f" {median([r['rate'] / p['rate'] for r, p in zip(rs, ps)]):9.2f}"
                         f" {median([r['cpu_per_msg'] / p['cpu_per_msg'] for r, p in zip(rs, ps)]):8.2f}")
            print(line)
        for what, x, y in pairs(names):
            xs, ys = res[(conns, x)], res[(conns, y)]
            each = " ".join(f"{p['rate'] / q['rate']:.2f}/{p['cpu_per_msg'] / q['cpu_per_msg']:.2f}"
                            for p, q in zip(xs, ys))
            print(f"  {what:<15} {x:<16} rate x{median([p['rate'] / q['rate'] for p, q in zip(xs, ys)]):5.2f}"
                  f"  cpu x{median([p['cpu_per_msg'] / q['cpu_per_msg'] for p, q in zip(xs, ys)]):5.2f}"
                  f"  (each round, rate/cpu: {each})")
    if idles:
        print(f" idle, {a.idle} messages one at a time per round: median of the rounds' p50 / p99 (ms)")
        for n in names:
            p50 = median([r["p50"] for r in idles[n]])
            ratio = f"  p50 x{p50 / median([r['p50'] for r in idles[pf]]):4.2f} of postfix" if pf else ""
            print(f"  {n:<22} p50 {p50:6.2f}  p99 {median([r['p99'] for r in idles[n]]):6.2f}{ratio}")


@contextlib.contextmanager
def stopping(prefix: str, keep: bool = False) -> Iterator[tuple[Path, list[Server]]]:
    """A temp dir and the list the run adds its servers to: on leaving, however it is left
    (SIGTERM ends the run as Ctrl-C does), every server is stopped, newest first, and the
    dir is removed unless `keep`."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    started: list[Server] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield tmp, started
    finally:
        for srv in reversed(started):
            try:
                srv.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"# could not stop {srv.name}: {exc!r}", file=sys.stderr)
        if keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=2000, help="messages per level (2000)")
    ap.add_argument("-c", "--conns", type=int, nargs="+", default=[1, 10, 50],
                    help="connection counts (1 10 50)")
    ap.add_argument("-l", "--size", type=int, default=4096, help="message size in bytes (4096)")
    ap.add_argument("--rcpt", default="sales@example.com")
    ap.add_argument("--postfix", action="store_true",
                    help="also a private Postfix relaying to smtp-sink (1,000 aliases, 23 header checks)")
    ap.add_argument("--bare", action="store_true",
                    help="also a stock aiosmtpd whose handler does nothing (the aiosmtpd floor)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs mailrouter")
    ap.add_argument("--profile", metavar="FILE", help="run mailrouter under cProfile, write FILE")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--workers", nargs="+", default=["1", "auto"],
                    help="mailrouter 'workers:' settings to run, each its own row (1 auto)")
    ap.add_argument("--no-relay", dest="relay", action="store_false",
                    help="leave out the mr-relay rows (every mailbox {smtp: ...} to smtp-sink, "
                         "1,000 aliases, 100 rules)")
    ap.add_argument("--idle", type=int, default=0, metavar="N",
                    help="also N messages one at a time on each idle server per round: p50/p99 to the 250")
    ap.add_argument("--old", metavar="TREE",
                    help="also run the mailrouter of another checkout (old:* rows, new/old ratios)")
    ap.add_argument("--asyncio-too", action="store_true",
                    help="each mailrouter row twice: on uvloop and with MAILROUTER_LOOP=asyncio")
    ap.add_argument("--cur", type=int, default=0, metavar="N",
                    help="first fill the cur/ of the folder the mr rows deliver to with N seen "
                         "messages (a department folder after years of mail)")
    ap.add_argument("--registry", metavar="FILE",
                    help="start each mailrouter row on a copy of this SQLite registry (a filled "
                         "one: bench_registry.py -n 1000000 --db FILE)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of every level; summary gives best-of and medians (1)")
    a = ap.parse_args()

    with stopping("mrbench.", a.keep) as (tmp, started):
        run(a, tmp, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

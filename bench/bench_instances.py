#!/usr/bin/env python3
"""One mailrouter instance or two on this machine, SQLite or PostgreSQL registry (issue 15).

    cd bench && unshare -n sh -c 'ip link set lo up; PYTHONPATH=$(cd .. && pwd) python bench_instances.py'

Three setups, each run in turn on the same load (smtp-source, 4 KB, one new session per
message, no probe client):
  a. one instance, SQLite registry (its own file), its own Maildir root;
  b. one instance, PostgreSQL registry (a throw-away cluster, tests/support/pg.py, with
     fsync on unless --pg-fast);
  c. two instances on different ports with different hostnames, the same PostgreSQL
     database and the same Maildir root; the load split over both ports (two smtp-source
     runs at once, each half the messages and half the connections).
It prints msg/s and CPU per message (all processes of every instance, cgroup v2 or /proc,
as bench_smtp.py counts them), each also as a ratio to (a), and checks that every message
was delivered (Maildir files counted). PostgreSQL's own CPU is printed apart: it is not in
a cgroup of ours. Everything started is stopped on any failure or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_smtp import (REPO, SMTP_SOURCE, Server, cpu_seconds, descendants, start_mailrouter,
                        stopping)

sys.path.insert(0, str(REPO))
from tests.support.pg import PgCluster, pg_bin  # noqa: E402 - needs the repo on the path


def split_blast(ports: list[int], servers: list[Server], conns: int, msgs: int, size: int,
                rcpt: str) -> dict[str, float]:
    """Send `msgs` messages over `conns` connections, split evenly over `ports` (one
    smtp-source per port, run at once); CPU summed over `servers`."""
    for srv in servers:
        srv.adopt()
    cpu0 = sum(srv.cpu() for srv in servers)
    k = len(ports)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([SMTP_SOURCE, "-s", str(max(1, conns // k)),
                               "-m", str(msgs // k + (i < msgs % k)), "-l", str(size),
                               "-f", "bench@source.test", "-t", rcpt, "-M", "source.test",
                               f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
             for i, port in enumerate(ports)]
    errors = [p.communicate()[1].strip()[-200:] for p in procs]
    wall = time.perf_counter() - t0
    cpu = sum(srv.cpu() for srv in servers) - cpu0
    bad = [f"rc={p.returncode}: {e}" for p, e in zip(procs, errors) if p.returncode]
    if bad:
        print(f"# smtp-source failed: {bad}", file=sys.stderr)
    return {"rate": msgs / wall, "cpu_per_msg": cpu / msgs, "wall": wall}


def delivered(root: Path) -> int:
    return sum(1 for _ in root.rglob("new/*"))


def run(a: argparse.Namespace, tmp: Path, started: list[Server], pg: PgCluster) -> None:
    pg.init()
    pg.start(durable=not a.pg_fast)
    assert pg.proc is not None
    pg_pid = pg.proc.pid
    py = a.python
    # (a) one instance, SQLite
    sa, pa = start_mailrouter(tmp / "a", py, None, a.workers, started, hostname="a.bench")
    # (b) one instance, PostgreSQL database "b"; (c) two instances on database "c"
    for db in ("b", "c"):
        subprocess.run([str(pg.bindir / "psql"), "-qh", "127.0.0.1", "-p", str(pg.port),
                        "-U", "postgres", "-c", f"CREATE DATABASE {db}"], check=True)
    url = pg.url.rsplit("/", 1)[0]
    sb, pb = start_mailrouter(tmp / "b", py, None, a.workers, started,
                              registry=f"{url}/b", hostname="b.bench")
    shared = tmp / "c" / "mail"
    # started one after the other: the first creates the schema (Alembic)
    sc1, pc1 = start_mailrouter(tmp / "c1", py, None, a.workers, started, registry=f"{url}/c",
                                maildir_root=shared, hostname="c1.bench")
    sc2, pc2 = start_mailrouter(tmp / "c2", py, None, a.workers, started, registry=f"{url}/c",
                                maildir_root=shared, hostname="c2.bench")
    setups = [("a 1 inst, SQLite", [pa], [sa], tmp / "a" / "var" / "mail", False),
              ("b 1 inst, PG", [pb], [sb], tmp / "b" / "var" / "mail", True),
              ("c 2 inst, PG", [pc1, pc2], [sc1, sc2], shared, True)]
    print(f"# {os.cpu_count()} CPUs, {a.messages} msgs of {a.size} B, {a.conns} conns, new "
          f"session per message, workers: {a.workers} per instance, rounds: {a.rounds}; "
          f"PostgreSQL {'fsync off' if a.pg_fast else 'fsync on'}")
    results: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in setups}
    for rnd in range(a.rounds):
        for name, ports, servers, root, on_pg in setups:
            before, pg0 = delivered(root), cpu_seconds(descendants(pg_pid))
            r = split_blast(ports, servers, a.conns, a.messages, a.size, a.rcpt)
            r["pg_cpu"] = (cpu_seconds(descendants(pg_pid)) - pg0) / a.messages if on_pg else 0.0
            time.sleep(0.5)
            got = delivered(root) - before
            if got != a.messages:
                print(f"# {name} round {rnd}: {got} of {a.messages} delivered", file=sys.stderr)
            results[name].append(r)
    base = max(results[setups[0][0]], key=lambda r: r["rate"])
    print(f"  {'setup':<18} {'msg/s':>7} {'x (a)':>6} {'cpu ms/msg':>10} {'x (a)':>6} "
          f"{'+PG ms/msg':>10}   (best of {a.rounds} by msg/s; all rounds' msg/s)")
    for name, *_ in setups:
        best = max(results[name], key=lambda r: r["rate"])
        print(f"  {name:<18} {best['rate']:7.0f} {best['rate'] / base['rate']:6.2f} "
              f"{best['cpu_per_msg'] * 1e3:10.2f} {best['cpu_per_msg'] / base['cpu_per_msg']:6.2f} "
              f"{best['pg_cpu'] * 1e3:10.2f}   "
              + " ".join(f"{r['rate']:.0f}" for r in results[name]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=1000, help="messages per setup (1000)")
    ap.add_argument("-c", "--conns", type=int, default=10, help="connections in all (10)")
    ap.add_argument("-l", "--size", type=int, default=4096, help="message size in bytes (4096)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (2)")
    ap.add_argument("--workers", default="1", help="'workers:' of each instance (1)")
    ap.add_argument("--rcpt", default="sales@example.com")
    ap.add_argument("--pg-fast", action="store_true", help="PostgreSQL with fsync off")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs mailrouter")
    a = ap.parse_args()
    bindir = pg_bin()
    if bindir is None:
        print("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin", file=sys.stderr)
        return 2
    pg = PgCluster(bindir)
    try:
        with stopping("mrinst.") as (tmp, started):
            tmp.chmod(0o755)
            run(a, tmp, started, pg)
    finally:
        pg.remove()         # after the servers that use it
    return 0


if __name__ == "__main__":
    sys.exit(main())

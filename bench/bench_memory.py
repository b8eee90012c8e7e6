#!/usr/bin/env python3
"""Memory of the whole daemon with 1,000 and 100,000 aliases, summed over all its processes.

    cd bench && PYTHONPATH=.. python bench_memory.py [--workers 2]

For each book size: a routing file with the repo's rules and mailboxes plus N aliases
(bench_addresses.sections), `mailrouter run -c` with `workers: W`, ten messages sent
so every worker has served mail, then PSS and USS (Private_Clean + Private_Dirty) from
/proc/PID/smaps_rollup of the supervisor and every worker, summed. PSS shares each
shared page among the processes that map it, so the sum is what the daemon costs the
machine. Prints the ratio of 100,000 to 1,000 aliases (issue 15 target: 1.3).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench_addresses import sections
from bench_smtp import REPO, descendants, free_port, stop_group, wait_port


def rollup(pid: int) -> tuple[int, int]:
    """(PSS, USS) in kB."""
    got = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        got[key] = int(value.split()[0])
    return got["Pss"], got["Private_Clean"] + got["Private_Dirty"]


def reloads_done(db: Path) -> int:
    """Reload attempts the registry recorded (one row per worker per reload)."""
    import sqlite3
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM reloads").fetchone()[0])


def send(port: int, n: int, tag: str) -> None:
    for i in range(n):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("m@bench.test", ["sales@example.com"],
                       f"Subject: {tag}{i}\r\n\r\nhello\r\n".encode())


def measure(tmp: Path, n_aliases: int, workers: str, py: str,
            reload: bool = False) -> tuple[int, int, int]:
    book = sections(n_aliases, max(10, n_aliases // 10))
    del book["domains"], book["mailboxes"]
    company = yaml.safe_load((REPO / "rules" / "company.yaml").read_text())
    for key in ("people", "aliases"):
        book[key] = {**company.get(key, {}), **book[key]}
    book["mailboxes"] = {**company["mailboxes"], **{f"m{i}": {"maildir": f"m{i}"} for i in range(50)}}
    book["domains"] = company["domains"]
    rules = tmp / "rules"
    rules.mkdir(parents=True)
    (rules / "company.yaml").write_text(yaml.safe_dump({**company, **book}, allow_unicode=True))
    shutil.copy(REPO / "rules" / "routing.yaml", rules / "routing.yaml")
    smtp, lmtp, admin = free_port(), free_port(), free_port()
    cfg = tmp / "config.yaml"
    cfg.write_text(
        f"hostname: mx.bench\n"
        f"listen: {{smtp: '127.0.0.1:{smtp}', lmtp: '127.0.0.1:{lmtp}', admin: '127.0.0.1:{admin}'}}\n"
        f"routing: ['{rules}/*.yaml']\n"
        f"registry: {{url: 'sqlite+aiosqlite:///{tmp / 'registry.db'}'}}\n"
        f"delivery: {{maildir_root: '{tmp / 'mail'}'}}\n"
        f"log_level: WARNING\nworkers: {workers}\n")
    with open(tmp / "daemon.log", "ab") as log:
        p = subprocess.Popen([py, "-m", "mailrouter.cli", "run", "-c", str(cfg)], cwd=tmp,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(smtp, p, 120)
        send(smtp, 10, "m")
        if reload:
            # a real change (one alias more): every worker loads the files again
            nworkers = len(descendants(p.pid)) - 1
            text = (rules / "company.yaml").read_text()
            (rules / "company.yaml").write_text(
                text.replace("aliases:\n", "aliases:\n  reloaded@example.com: mailbox:m1\n", 1))
            before = reloads_done(tmp / "registry.db")
            p.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 120
            while reloads_done(tmp / "registry.db") < before + nworkers:
                if time.monotonic() > deadline:
                    raise SystemExit("the workers did not all reload within 120 s")
                time.sleep(0.2)
            send(smtp, 10, "r")
        time.sleep(1)
        pids = descendants(p.pid)
        pss = uss = 0
        each = []
        for pid in pids:
            a, b = rollup(pid)
            pss, uss = pss + a, uss + b
            each.append(f"{a / 1024:.1f}/{b / 1024:.1f}")
        print(f"  aliases={n_aliases}: PSS/USS MB per process (supervisor first): {'  '.join(each)}",
              flush=True)
        return len(pids), pss, uss
    finally:
        stop_group(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="2")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--reload", action="store_true",
                    help="measure after a reload that changes the files (one alias added)")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    got = {}
    with tempfile.TemporaryDirectory(prefix="mrmem.") as tmp:
        for n in (1_000, 100_000):
            procs, pss, uss = measure(Path(tmp) / str(n), n, a.workers, a.python, a.reload)
            got[n] = pss
            print(f"aliases={n:>7} workers={a.workers} processes={procs}: PSS {pss / 1024:7.1f} MB  "
                  f"USS {uss / 1024:7.1f} MB  (summed)", flush=True)
    print(f"PSS 100,000 / 1,000 aliases: x{got[100_000] / got[1_000]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Seconds from exec of `mailrouter run` to the first 220, with big routing files (issue 15).

    cd bench && unshare -n sh -c 'ip link set lo up;
        PYTHONPATH=$(cd .. && pwd) python bench_start.py --old ../../old-checkout --runs 3'

The routing files are `bench_rules.py --only load`'s: 10,000 rules of the realistic mix and
100,000 aliases (with 10,000 people), written once to a temp dir. Each run starts the
daemon with `workers: 2` (SMTP only, a fresh SQLite registry and Maildir root), connects
to its SMTP port until the greeting comes, and stops it (SIGTERM, then the group is killed).
With --old TREE the same is run from that checkout, alternating with this one (new, old,
new, old, ...), so both see the same machine. It prints each run and the medians.

--reload N: instead of the start, the seconds of N reloads of changed files (a comment line
added to the rules' file, then POST /-/reload, what `mailrouter reload` asks) once both
workers are up: worker 0 reads the files, the workers all load them. With --edit book a
person is added to the address book's file instead: the book is built again (a change of
the rules alone keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


def write_files(tmp: Path, n_rules: int, n_aliases: int) -> str:
    import yaml
    from bench_addresses import sections
    from bench_rules import mix_yaml
    book = sections(n_aliases, n_aliases // 10)
    book["mailboxes"].update({"finance": {"maildir": "f"}, "sales": {"maildir": "s"},
                              "support": {"maildir": "u"}})
    book["people"].update({k: {"address": f"{k}@example.com"}
                           for k in ("finance-duty", "smirnov", "ivanov")})
    rules = tmp / "routing"
    rules.mkdir()
    (rules / "a.yaml").write_text(yaml.dump(book, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                                            allow_unicode=True), encoding="utf-8")
    (rules / "b.yaml").write_text(mix_yaml(n_rules), encoding="utf-8")
    return str(rules / "*.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reload_seconds(admin: int, routing: str, n: int, edit: str = "rules") -> list[float]:
    """Seconds each of `n` reloads of changed files took (POST /-/reload, as `mailrouter
    reload` asks). Before each, `edit` "rules": a comment line added to the rules' file
    (the workers keep the address book they run); "book": a person added to the address
    book's file (a new book is built)."""
    rules = Path(routing).parent / "b.yaml"
    book = Path(routing).parent / "a.yaml"
    took = []
    for k in range(n):
        with open(book if edit == "book" else rules, "a", encoding="utf-8") as out:
            now = time.time_ns()
            out.write(f"  edit{now}:\n    address: edit{now}@example.com\n"
                      if edit == "book" else f"# edit {k} {now}\n")
        req = urllib.request.Request(f"http://127.0.0.1:{admin}/-/reload", method="POST", data=b"")
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as r:
            ok = json.loads(r.read())["ok"]
        took.append(time.perf_counter() - t0)
        if not ok:
            raise SystemExit("the reload was refused")
    return took


def one_start(tree: Path, routing: str, tmp: Path, reloads: int = 0,
              edit: str = "rules") -> float | list[float]:
    """Seconds from exec to the first 220 of a daemon run from `tree`; with `reloads`, the
    seconds of that many reloads of changed files once it is up instead."""
    run = Path(tempfile.mkdtemp(dir=tmp))
    smtp, admin = free_port(), free_port()
    cfg = run / "config.yaml"
    cfg.write_text(f"hostname: mx.bench\nlisten: {{smtp: '127.0.0.1:{smtp}', lmtp: null, "
                   f"admin: '127.0.0.1:{admin}'}}\nrouting: ['{routing}']\n"
                   f"registry: {{url: 'sqlite+aiosqlite:///{run / 'registry.db'}'}}\n"
                   f"delivery: {{maildir_root: '{run / 'mail'}'}}\n"
                   f"log_level: {'INFO' if reloads else 'WARNING'}\nworkers: 2\n")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with open(run / "daemon.log", "wb") as log:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "mailrouter.cli", "run", "-c", str(cfg)],
                             cwd=run, stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        try:
            while True:
                if p.poll() is not None:
                    raise SystemExit(f"daemon exited {p.returncode}: {(run / 'daemon.log').read_text()}")
                try:
                    with socket.create_connection(("127.0.0.1", smtp), timeout=5) as s:
                        if s.recv(100).startswith(b"220"):
                            if not reloads:
                                return time.perf_counter() - t0
                            break
                except OSError:
                    time.sleep(0.005)
            while (run / "daemon.log").read_text().count("event=started loop=") < 2:
                time.sleep(0.05)       # both workers up
            return reload_seconds(admin, routing, reloads, edit)
        finally:
            if p.poll() is not None:        # it stopped by itself: say why, not only that
                print(f"daemon exited {p.returncode} during the run; its log's end:\n"
                      + (run / "daemon.log").read_text()[-3000:], file=sys.stderr)
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(20)
            except subprocess.TimeoutExpired:
                print("daemon did not stop within 20 s of SIGTERM: killed", file=sys.stderr)
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            except ProcessLookupError:      # the whole group was gone already
                p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, help="another checkout, run alternately with this one")
    ap.add_argument("--runs", type=int, default=3, help="starts of each tree (3)")
    ap.add_argument("--rules", type=int, default=10_000)
    ap.add_argument("--aliases", type=int, default=100_000)
    ap.add_argument("--reload", type=int, default=0, metavar="N",
                    help="time N reloads of changed files per run instead of the start")
    ap.add_argument("--edit", choices=("rules", "book"), default="rules",
                    help="with --reload, what is changed before each: a line of the rules' "
                         "file (rules, the default) or a person of the address book (book)")
    args = ap.parse_args()
    trees = {"new": REPO} | ({"old": args.old.resolve()} if args.old else {})
    got: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        routing = write_files(tmp, args.rules, args.aliases)
        for i in range(args.runs):
            for name, tree in trees.items():
                took = one_start(tree, routing, tmp, args.reload, args.edit)
                got[name] += took if isinstance(took, list) else [took]
                shown = took if isinstance(took, list) else [took]
                print(f"run {i + 1} {name}: {', '.join(f'{t:.2f}' for t in shown)} s", flush=True)
    for name, times in got.items():
        print(f"{name}: median {statistics.median(times):.2f} s (runs {', '.join(f'{t:.2f}' for t in times)})")
    if "old" in got:
        print(f"new/old: {statistics.median(got['new']) / statistics.median(got['old']):.2f}")


if __name__ == "__main__":
    main()

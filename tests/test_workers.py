"""Several worker processes on shared listeners (`workers: 2`): no mail lost or doubled,
counters added up, reloads reach every worker, crashes are contained."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from mailrouter.yamlsrc import files_hash
from tests.support.daemon import maildir_files


def _send(port: int, i: int) -> int:
    import smtplib
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo()
        s.mail("a@outside.test")
        s.rcpt("support@example.com")
        return s.data(f"Subject: w{i}\r\nMessage-ID: <w{i}@outside.test>\r\n\r\nbody {i}\r\n".encode())[0]


def _metric(port: int, series: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[1])
    raise AssertionError(f"{series} not served")


def _wait_log(proc, text: str, count: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = proc.log.read_text().count(text)
        if n >= count:
            return n
        time.sleep(0.1)
    return proc.log.read_text().count(text)


def test_two_workers_deliver_everything_once_and_add_up_metrics(daemon_process, tmp_path):
    """300 messages over 10 connections to 2 workers: all 250, each stored and recorded once,
    /metrics (served by worker 0) counts all 300, SIGTERM exits 0."""
    before = time.time()
    proc = daemon_process(extra="workers: 2\n")
    assert _wait_log(proc, "event=started", 2) == 2
    # the rule set's load time is the workers', not 0 from the supervisor's gauge (1970)
    assert _metric(proc.admin, "mailrouter_config_last_reload_success_timestamp_seconds") >= before
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda i: _send(proc.smtp, i), range(300)))
    assert codes == [250] * 300
    assert len(maildir_files(tmp_path / "var" / "mail" / "support")) == 300
    db = sqlite3.connect(tmp_path / "var" / "registry.db")
    assert db.execute("select count(*) from messages where status='delivered'").fetchone()[0] == 300
    assert _metric(proc.admin, 'mailrouter_messages_total{result="delivered"}') == 300
    assert _metric(proc.admin, "mailrouter_config_last_reload_successful") == 1
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


def test_reload_reaches_every_worker(daemon_process, tmp_path):
    """SIGHUP to the supervisor and POST /-/reload to worker 0 both have both workers run
    the changed files (worker 0 reads them, the other loads the bytes it read); files
    unchanged are no reload for the other worker."""
    from tests.support.daemon import RULES
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("company.yaml", "routing.yaml"):
        (rules / name).write_bytes((RULES / name).read_bytes())
    proc = daemon_process(extra="workers: 2\n", routing=str(rules / "*.yaml"))
    _wait_log(proc, "event=started", 2)
    start = _ruleset(proc.admin)
    proc.signal(signal.SIGHUP)
    assert _wait_log(proc, f"event=reloaded hash={start}", 1) == 1
    routing = rules / "routing.yaml"
    routing.write_text(routing.read_text() + "\n")
    changed = files_hash((str(p), p.read_bytes()) for p in sorted(rules.glob("*.yaml")))
    proc.signal(signal.SIGHUP)
    assert _wait_log(proc, f"event=reloaded hash={changed}", 2) == 2
    routing.write_text(routing.read_text() + "\n")
    posted = _reload(proc.admin)
    assert posted["ok"] is True and posted["detail"] not in (start, changed)
    assert _wait_log(proc, f"event=reloaded hash={posted['detail']}", 2) == 2
    assert proc.log.read_text().count("event=reloaded hash=") == 5


def test_dead_worker_is_replaced_and_dead_supervisor_takes_workers_along(daemon_process):
    """kill -9 of a worker: the supervisor starts another and mail keeps flowing; kill -9 of
    the supervisor: the workers die too (PR_SET_PDEATHSIG), so no orphan keeps the listeners.
    (Not asserted with a connect(): to a free ephemeral port that can self-connect.)"""
    proc = daemon_process(extra="workers: 2\n")
    _wait_log(proc, "event=started", 2)
    pids = [int(l.split("pid=")[1]) for l in proc.log.read_text().splitlines()
            if "event=worker_started" in l]
    os.kill(pids[1], signal.SIGKILL)
    assert _wait_log(proc, "event=worker_died", 1) == 1
    assert _wait_log(proc, "event=started", 3) == 3
    assert [_send(proc.smtp, i) for i in range(20)] == [250] * 20
    proc.signal(signal.SIGKILL)
    proc.wait()
    workers = [int(l.split("pid=")[1]) for l in proc.log.read_text().splitlines()
               if "event=worker_started" in l]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "workers outlived the supervisor"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (reaped by no one yet) holds no sockets; count it as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_single_process_mode(daemon_process, tmp_path):
    """workers: 1 runs the daemon in one process (no supervisor) and behaves the same."""
    proc = daemon_process(extra="workers: 1\n")
    assert _send(proc.smtp, 1) == 250
    text = proc.log.read_text()
    assert "event=supervising" not in text and text.count("event=started") == 1
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    assert len(maildir_files(tmp_path / "var" / "mail" / "support")) == 1


def test_default_is_one_worker_per_core(daemon_process):
    """With no 'workers:' key the daemon runs one worker per core (at most 8)."""
    proc = daemon_process()
    expected = max(1, min(8, os.cpu_count() or 1))
    assert _wait_log(proc, "event=started", expected) == expected


def test_sigterm_while_workers_start_is_a_clean_stop(tmp_path):
    """SIGTERM the moment the listeners exist (workers still starting): every worker still
    drains and exits 0, so the supervisor exits 0 and nothing is left on the port."""
    from tests.support.daemon import DaemonProcess
    for n in range(3):
        (tmp_path / f"run{n}").mkdir()
        d = DaemonProcess(tmp_path / f"run{n}", extra="workers: 2\n")
        d.start()
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.log.read_text()


def test_a_sigterm_once_the_listeners_exist_waits_for_the_supervisors_handlers(tmp_path,
                                                                               monkeypatch):
    """From the bind on, a client may connect, and so a SIGTERM may come before supervise
    has its handlers: it is noted and handed to supervise (it killed the supervisor
    outright, exit -15, in 1 of ~15 runs of the clean-stop test above). With a thread
    running, as one the registry left behind: it may take the signal."""
    import threading
    from mailrouter import daemon
    from mailrouter.config import load_config
    from tests.support.daemon import RULES
    seen: list[object] = []
    real_bind = daemon.bind
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()

    def bind_then_sigterm(*args):                    # type: ignore[no-untyped-def]
        sock = real_bind(*args)
        os.kill(os.getpid(), signal.SIGTERM)         # the moment the listener exists
        return sock

    def supervise(config, child, on_exit, early):    # type: ignore[no-untyped-def]
        seen.append(list(early))
        return 0

    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"hostname: mx.test\nlisten: {{smtp: '127.0.0.1:0', lmtp: null}}\n"
                   f"routing: ['{RULES / '*.yaml'}']\n"
                   f"registry: {{url: 'sqlite+aiosqlite:///{tmp_path / 'r.db'}'}}\n"
                   f"delivery: {{maildir_root: '{tmp_path / 'mail'}'}}\nworkers: 2\n")
    monkeypatch.setattr(daemon, "bind", bind_then_sigterm)
    monkeypatch.setattr(daemon, "supervise", supervise)
    before = {sig: signal.signal(sig, lambda *_: seen.append("too early"))
              for sig in daemon.HANDLED}
    try:
        assert daemon.run_workers(load_config(cfg)) == 0
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        stop.set()
    assert seen == [[signal.SIGTERM]]


def test_supervise_handles_the_early_signals_first(tmp_path):
    """A SIGTERM noted before supervise's handlers stops it before any worker starts."""
    import types
    from mailrouter.workers import supervise
    marker = tmp_path / "started"

    def child(index: int) -> int:
        marker.write_text(str(index))
        return 0

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT,
                                                       signal.SIGHUP, signal.SIGUSR1)}
    try:
        assert supervise(types.SimpleNamespace(workers=2), child,     # type: ignore[arg-type]
                         early=[signal.SIGTERM]) == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert not marker.exists()


def _reload(port: int) -> dict[str, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as refused:     # a failed reload: 4xx, its errors in JSON
        return dict(json.loads(refused.read()))


def _ruleset(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return next(line.split('"')[1] for line in r.read().decode().splitlines()
                    if line.startswith("mailrouter_ruleset_info{"))


def test_workers_killed_while_the_files_are_broken_start_on_the_last_good_rules(
        daemon_process, tmp_path):
    """A good reload (new@ added), a broken file (reload refused: the workers keep new@),
    then kill -9 of both workers, worker 0 (/metrics, reload) among them. The replacements
    start on the rules their siblings ran, the last that loaded, and say the files on the
    disk are not those, with the refused reload's file:line: /metrics answers with their
    hash, mail to new@ is delivered and recorded under it. They loaded the broken files,
    refused to start and were retried until an operator fixed them. Fixed, a reload
    reaches them. A new start with
    broken files is still refused (exit 2, file:line)."""
    from tests.support.daemon import RULES, DaemonProcess
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("company.yaml", "routing.yaml"):
        (rules / name).write_bytes((RULES / name).read_bytes())
    proc = daemon_process(extra="workers: 2\n", routing=str(rules / "*.yaml"))
    assert _wait_log(proc, "event=started", 2) == 2
    start = _ruleset(proc.admin)
    company = rules / "company.yaml"
    company.write_text(company.read_text().replace(
        "aliases:\n", "aliases:\n  new@example.com: mailbox:support\n", 1))
    good = _reload(proc.admin)
    assert good["ok"] is True and good["detail"] != start
    assert _wait_log(proc, "event=reloaded", 2) == 2
    routing = rules / "routing.yaml"
    fine = routing.read_text()
    routing.write_text(fine + "\n  - name: [broken\n")
    refused = _reload(proc.admin)
    assert refused["ok"] is False and "routing.yaml:" in str(refused["detail"])
    assert _wait_log(proc, "event=reload_failed", 1) == 1
    # worker 1 loaded the bytes beside worker 0 (staged before worker 0's own load: one
    # reload's time, not two), failed as it did, and went on with the set it ran
    [not_taken] = [l for l in proc.log.read_text().splitlines() if "event=reload_not_taken" in l]
    assert f"kept={good['detail']}" in not_taken and "error(s)" in not_taken
    assert _wait_log(proc, "event=reload_unstaged", 1) == 1
    pids = [int(l.split("pid=")[1]) for l in proc.log.read_text().splitlines()
            if "event=worker_started" in l]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert _wait_log(proc, "event=started_on_last_good", 2) == 2, proc.log.read_text()
    assert _wait_log(proc, "event=started loop=", 4) == 4, proc.log.read_text()
    [line] = {l.split(" mailrouter ", 1)[1] for l in proc.log.read_text().splitlines()
              if "event=started_on_last_good" in l}
    assert line.startswith(f"event=started_on_last_good hash={good['detail']}: ")
    assert f"which was refused: {routing}:" in line, line
    assert _ruleset(proc.admin) == good["detail"]
    assert _metric(proc.admin, "mailrouter_config_last_reload_successful") == 0
    codes = []
    for i in range(20):
        import smtplib
        with smtplib.SMTP("127.0.0.1", proc.smtp, timeout=30) as s:
            s.ehlo()
            s.mail("a@outside.test")
            s.rcpt("new@example.com")
            codes.append(s.data(f"Subject: n{i}\r\nMessage-ID: <n{i}@outside.test>\r\n\r\n"
                                f"body {i}\r\n".encode())[0])
    assert codes == [250] * 20
    db = sqlite3.connect(tmp_path / "var" / "registry.db")
    assert db.execute("select ruleset_hash, count(*) from messages group by ruleset_hash"
                      ).fetchall() == [(good["detail"], 20)]
    routing.write_text(fine + "\n")           # fixed (and changed: a new hash)
    fixed = _reload(proc.admin)
    assert fixed["ok"] is True and fixed["detail"] not in (start, good["detail"])
    assert _wait_log(proc, f"event=reloaded hash={fixed['detail']}", 2) == 2
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    routing.write_text(fine + "\n  - name: [broken\n")
    again = DaemonProcess(tmp_path, extra="workers: 2\n", routing=str(rules / "*.yaml"))
    again.start_refused("a start with broken routing files")
    assert "routing files have errors; not starting" in again.log.read_text()


def test_a_big_reload_builds_the_address_book_once_for_every_worker(daemon_process, tmp_path):
    """A reload of big routing files (over daemon.BUILD_APART_FROM) with two workers: worker 0
    builds the address book of the bytes it staged and shares it, and worker 1 takes it
    instead of building its own beside it (two builds of 100,000 aliases on two cores, beside
    the rules each compiles, took the reload from ~1.7 to 2.4 s, bench_start.py --reload). Both
    run the new set, and mail to an alias the reload added is delivered. A reload that
    changes only the rules keeps the book in every worker (`book_kept`)."""
    import smtplib

    from mailrouter.daemon import BUILD_APART_FROM
    from tests.support.daemon import RULES
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "routing.yaml").write_bytes((RULES / "routing.yaml").read_bytes())
    company = (RULES / "company.yaml").read_text()
    many = "".join(f"  bulk{i:06d}@example.com: mailbox:support\n" for i in range(30000))
    (rules / "company.yaml").write_text(company.replace("aliases:\n", "aliases:\n" + many, 1))
    assert sum(p.stat().st_size for p in rules.iterdir()) >= BUILD_APART_FROM
    proc = daemon_process(extra="workers: 2\n", routing=str(rules / "*.yaml"))
    assert _wait_log(proc, "event=started loop=", 2) == 2
    (rules / "company.yaml").write_text(company.replace(
        "aliases:\n", "aliases:\n  late@example.com: mailbox:support\n" + many, 1))
    got = _reload(proc.admin)
    assert got["ok"] is True, got
    assert _wait_log(proc, f"event=reloaded hash={got['detail']}", 2) == 2
    log = proc.log.read_text()
    assert log.count("event=book_taken seq=") == 1, log
    assert "event=book_not_taken" not in log and "event=new_process_failed" not in log
    assert _ruleset(proc.admin) == got["detail"]
    for to in ("late@example.com", "bulk029999@example.com"):
        with smtplib.SMTP("127.0.0.1", proc.smtp, timeout=30) as s:
            s.ehlo()
            s.mail("a@outside.test")
            s.rcpt(to)
            assert s.data(f"Subject: {to}\r\n\r\nbody\r\n".encode())[0] == 250
    assert len(maildir_files(tmp_path / "var" / "mail" / "support")) == 2
    # then only the rules edited: every worker keeps the book it runs, none is built
    routing = rules / "routing.yaml"
    routing.write_text(routing.read_text().replace(
        "then: {mailbox: support, tags: [support]}",
        "then: {mailbox: support, folder: Late, tags: [support]}", 1))
    again = _reload(proc.admin)
    assert again["ok"] is True and again["detail"] != got["detail"], again
    assert _wait_log(proc, f"event=reloaded hash={again['detail']}", 2) == 2
    log = proc.log.read_text()
    assert log.count("event=book_kept made_of=") == 2, log
    assert log.count("event=book_taken seq=") == 1, log
    with smtplib.SMTP("127.0.0.1", proc.smtp, timeout=30) as s:
        assert s.sendmail("a@outside.test", ["support@example.com"],
                          b"Subject: late\r\n\r\nbody\r\n") == {}
    assert len(maildir_files(tmp_path / "var" / "mail" / "support" / ".Late")) == 1
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


def test_the_shared_book_is_waited_for_only_while_its_builder_can_give_it(tmp_path):
    """LastGood.shared_book: the book the builder of that very set shared; None at once when
    the set names no builder, its builder is gone (a worker 0 killed mid-reload), a newer set
    was staged, or the file is torn: the worker then builds its own."""
    import subprocess
    import sys

    from mailrouter.workers import LastGood
    kept = LastGood(tmp_path)
    one = {"r/a.yaml": b"aliases: {}\n"}
    kept.put(one, files_hash(one.items()), builder=os.getpid())
    staged = kept.staged()
    assert staged is not None and staged.builder == os.getpid()
    kept.share_book(staged.seq, ("digest", "a book"))
    assert kept.shared_book(staged, 5) == ("digest", "a book")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    kept.put(one, files_hash(one.items()), builder=int(dead.stdout))
    gone = kept.staged()
    assert gone is not None and gone.builder == int(dead.stdout)
    assert kept.shared_book(gone, 3600) is None        # not waited for: its builder is gone
    kept.put(one, files_hash(one.items()))
    nobody = kept.staged()
    assert nobody is not None and nobody.builder is None and kept.shared_book(nobody, 3600) is None
    assert kept.shared_book(staged, 3600) is None      # seq 1: a newer set is staged
    kept.put(one, files_hash(one.items()), builder=os.getpid())
    torn = kept.staged()
    assert torn is not None
    (tmp_path / f"book-{torn.seq}").write_bytes(b"\x80\x05 torn")
    assert kept.shared_book(torn, 3600) is None
    kept.share_book(torn.seq, None)                   # the builder has none: built here
    assert kept.shared_book(torn, 3600) is None
    assert sorted(p.name for p in tmp_path.glob("book-*")) == [f"book-{torn.seq}"]


def test_last_good_keeps_only_the_bytes_that_loaded(tmp_path):
    """LastGood.save keeps files only while they hash as the load did: changed since (a
    save caught mid-way), the set kept before stays, and a replacement reads that one."""
    from mailrouter.workers import LastGood, Staged
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_bytes(b"aliases: {}\n")
    b.write_bytes(b"rules: []\n")
    kept = LastGood(tmp_path)
    assert kept.staged() is None
    loaded = files_hash([(str(a), a.read_bytes()), (str(b), b.read_bytes())])
    assert kept.save([str(a), str(b)], loaded)
    b.write_bytes(b"rules: [\n")                      # changed after the load read it
    assert not kept.save([str(a), str(b)], loaded)
    assert kept.staged() == Staged(1, loaded, {str(a): b"aliases: {}\n", str(b): b"rules: []\n"})
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(LastGood.NAME)] == [
        LastGood.NAME]


def test_a_worker_started_while_a_broken_set_is_staged_runs_the_set_before(tmp_path):
    """Worker 0 stages the bytes it read before loading them itself (App._stage), so the
    others load beside it; a worker replaced in those seconds, while a broken set is staged,
    starts on the set staged before it, the one the others run. Before, it took the
    supervisor's start set (older, after good reloads), or with none refused to start."""
    snap, kept, good = _replaced_while_staged(tmp_path, b"\n  - name: [broken\n")
    assert snap is not None and snap.hash == files_hash(good.items())
    assert kept.reported(1) == (2, snap.hash, None)      # worker 0 sees it did not take seq 2


def test_a_worker_started_while_a_set_check_refuses_is_staged_runs_the_set_before(tmp_path):
    """The same as above for a set whose files load but which config.yaml refuses (an lmtp:
    mailbox with no delivery.lmtp): worker 0 refuses it after staging it, and a worker
    replaced in those seconds started on it all the same (its load found no error in the
    files), the only worker running it. It now starts on the set staged before."""
    snap, _, good = _replaced_while_staged(
        tmp_path, b"\nmailboxes:\n  desk: {lmtp: desk@mail.internal}\n")
    assert snap is not None and snap.hash == files_hash(good.items())
    assert not any(m.kind == "lmtp" for m in snap.book.mailboxes.values())


def _replaced_while_staged(tmp_path, added: bytes):      # type: ignore[no-untyped-def]
    """A worker (1) starting while worker 0 has staged the repo's example files with `added`
    after routing.yaml, over the set of those files as they are: (its snapshot, the kept
    sets, the bytes of the set before)."""
    from mailrouter.config import load_config
    from mailrouter.daemon import _worker_snapshot
    from mailrouter.workers import LastGood
    from tests.support.daemon import RULES
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("company.yaml", "routing.yaml"):
        (rules / name).write_bytes((RULES / name).read_bytes())
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{rules}/*.yaml']\n"
                   f"delivery: {{maildir_root: '{tmp_path / 'mail'}'}}\n", encoding="utf-8")
    good = {str(rules / n): (rules / n).read_bytes() for n in ("company.yaml", "routing.yaml")}
    staged = dict(good)
    staged[str(rules / "routing.yaml")] += added
    kept = LastGood(tmp_path / "kept")
    (tmp_path / "kept").mkdir()
    kept.put(good, files_hash(good.items()))
    kept.put(staged, files_hash(staged.items()))
    return _worker_snapshot(load_config(cfg), kept, None, 1), kept, good


def test_the_kept_set_is_numbered_and_the_one_before_stays_readable(tmp_path):
    """Each set worker 0 keeps (`put`: the very bytes it loaded) is one more than the last;
    the set before stays readable (a reload one worker could not take goes back to it); a
    set named by its hash only has no bytes; the workers' reports are read back."""
    from mailrouter.workers import LastGood, Staged
    kept = LastGood(tmp_path)
    one = {"r/a.yaml": b"aliases: {}\n", "r/b.yaml": b"rules: []\n"}
    two = {"r/a.yaml": b"aliases: {}\n", "r/b.yaml": b"rules: [] # 2\n"}
    assert kept.put(one, files_hash(one.items())) == 1
    assert kept.put(two, files_hash(two.items())) == 2
    assert kept.staged() == Staged(2, files_hash(two.items()), two)
    assert kept.head() == (2, files_hash(two.items()))
    assert kept.before() == Staged(1, files_hash(one.items()), one)
    assert kept.put(None, "0123456789abcdef") == 3
    assert kept.staged() == Staged(3, "0123456789abcdef", None)   # named, its bytes not kept
    kept.report(1, 3, "0123456789abcdef")
    kept.report(2, 2, files_hash(two.items()), "worker-specific trouble")
    assert kept.reported(1) == (3, "0123456789abcdef", None)
    assert kept.reported(2) == (2, files_hash(two.items()), "worker-specific trouble")
    assert kept.reported(3) is None


def test_the_last_good_rules_directory_is_removed_by_the_next_start(daemon_process, tmp_path,
                                                                    monkeypatch):
    """The supervisor's private directory of the last good routing files: a clean stop
    removes it; one a SIGKILLed supervisor left is removed by the next start (not one of a
    live process)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    first = daemon_process(extra="workers: 2\n")
    assert _wait_log(first, "event=started loop=", 2) == 2
    [killed] = tmp.glob(f"mailrouter-routing.{first.proc.pid}.*")
    assert (killed / "routing-last-good").is_file()
    first.signal(signal.SIGKILL)
    first.wait()
    live = tmp / f"mailrouter-routing.{os.getpid()}.x"
    live.mkdir()
    second = daemon_process(extra="workers: 2\n")
    # its listener takes connections before the directory is made: wait for its workers
    # (the log is the first one's, appended to)
    assert _wait_log(second, "event=started loop=", 4) == 4
    assert not killed.exists() and live.is_dir()
    [own] = tmp.glob(f"mailrouter-routing.{second.proc.pid}.*")
    second.stop()
    assert second.proc.returncode == 0 and not own.exists()


def _rules_copy(tmp_path):
    from tests.support.daemon import RULES
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("company.yaml", "routing.yaml"):
        (rules / name).write_bytes((RULES / name).read_bytes())
    return rules


def _with_alias(text: str, address: str) -> str:
    return text.replace("aliases:\n", f"aliases:\n  {address}: mailbox:support\n", 1)


def _rcpt_codes(port: int, rcpt: str, n: int) -> list[int]:
    import smtplib
    codes = []
    for _ in range(n):             # new connections: the kernel spreads them over the workers
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo()
            s.mail("a@outside.test")
            codes.append(s.rcpt(rcpt)[0])
    return codes


def _worker_pids(proc) -> list[int]:
    return [int(l.split("pid=")[1]) for l in proc.log.read_text().splitlines()
            if "event=worker_started" in l]


def test_a_reload_gives_every_worker_the_bytes_worker_0_read(daemon_process, tmp_path):
    """Worker 1 is stopped while `mailrouter reload` runs; the file is saved again (new@
    gone) once worker 0 has read it, then worker 1 goes on. Every worker runs what worker 0
    read, and the reply names that hash: each worker read the files itself, so worker 1 ran
    the second save (new@ refused 550 on its connections) while the reply said the first."""
    import subprocess
    import sys
    rules = _rules_copy(tmp_path)
    proc = daemon_process(extra="workers: 2\n", routing=str(rules / "*.yaml"))
    assert _wait_log(proc, "event=started loop=", 2) == 2
    company = rules / "company.yaml"
    original = company.read_text()
    company.write_text(_with_alias(original, "new@example.com"))
    os.kill(_worker_pids(proc)[1], signal.SIGSTOP)
    try:
        reload = subprocess.Popen([sys.executable, "-m", "mailrouter.cli", "reload", "-c",
                                   str(proc.config)], stdout=subprocess.PIPE, text=True)
        # worker 0 has read the files (and staged them: it answers once all run them)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                e in proc.log.read_text() for e in ("event=reload_staged", "event=reloaded")):
            time.sleep(0.05)
        company.write_text(_with_alias(original, "other@example.com"))    # new@ gone
    finally:
        os.kill(_worker_pids(proc)[1], signal.SIGCONT)
    out, _ = reload.communicate(timeout=60)
    assert reload.returncode == 0, out
    digest = out.split("reloaded: ")[1].split()[0]
    assert _wait_log(proc, f"event=reloaded hash={digest}", 2) == 2, proc.log.read_text()
    assert proc.log.read_text().count("event=reloaded hash=") == 2
    assert _rcpt_codes(proc.smtp, "new@example.com", 20) == [250] * 20


def test_a_reload_one_worker_cannot_take_is_refused_and_none_takes_it(daemon_process,
                                                                      tmp_path, monkeypatch):
    """The set worker 0 loaded cannot be read by worker 1 (its kept copy damaged while
    worker 1 was stopped): worker 1 says so, worker 0 has it back on the set it ran and
    keeps that set itself, and `mailrouter reload` says the reload was refused (exit 1),
    naming the worker and why. It said "reloaded", and the workers ran different rules."""
    import subprocess
    import sys
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    rules = _rules_copy(tmp_path)
    proc = daemon_process(extra="workers: 2\n", routing=str(rules / "*.yaml"))
    assert _wait_log(proc, "event=started loop=", 2) == 2
    start = _ruleset(proc.admin)
    [kept] = tmp.glob(f"mailrouter-routing.{proc.proc.pid}.*/routing-last-good")
    company = rules / "company.yaml"
    company.write_text(_with_alias(company.read_text(), "new@example.com"))
    os.kill(_worker_pids(proc)[1], signal.SIGSTOP)
    try:
        reload = subprocess.Popen([sys.executable, "-m", "mailrouter.cli", "reload", "-c",
                                   str(proc.config)], stdout=subprocess.PIPE, text=True)
        assert _wait_log(proc, "event=reload_staged", 1) == 1, proc.log.read_text()
        data = bytearray(kept.read_bytes())
        data[-2] ^= 0x20                        # one byte of the set's files
        kept.write_bytes(bytes(data))
    finally:
        os.kill(_worker_pids(proc)[1], signal.SIGCONT)
    out, _ = reload.communicate(timeout=60)
    assert reload.returncode == 1, out
    assert out.startswith("reload refused, old rules kept:"), out
    assert "worker 1 runs" in out and "the staged routing set cannot be read" in out, out
    assert f"every worker kept {start}" in out, out
    assert _wait_log(proc, "event=reload_reverted", 1) == 1
    assert "event=reloaded" not in proc.log.read_text()
    assert _ruleset(proc.admin) == start
    assert _metric(proc.admin, "mailrouter_config_last_reload_successful") == 0
    assert _rcpt_codes(proc.smtp, "new@example.com", 20) == [550] * 20
    fixed = _reload(proc.admin)         # the same files again: every worker takes them
    assert fixed["ok"] is True and fixed["detail"] != start
    assert _wait_log(proc, f"event=reloaded hash={fixed['detail']}", 2) == 2
    assert _rcpt_codes(proc.smtp, "new@example.com", 20) == [250] * 20


def test_files_saved_while_worker_0_is_down_are_loaded_when_it_is_back(daemon_process, tmp_path):
    """Worker 0 alone watches the routing files. Killed, and the files saved (with a SIGHUP)
    before the supervisor replaced it: the new worker 0 started on the set the others run,
    took the disk's state as already seen, and never loaded the new files (the SIGHUP had
    gone to the dead process): new@ was refused 550 until the next edit. Now it reloads."""
    rules = _rules_copy(tmp_path)
    proc = daemon_process(extra="workers: 2\n", routing=str(rules / "*.yaml"))
    assert _wait_log(proc, "event=started loop=", 2) == 2
    company = rules / "company.yaml"
    os.kill(proc.proc.pid, signal.SIGSTOP)              # the supervisor: no replacement yet
    try:
        os.kill(_worker_pids(proc)[0], signal.SIGKILL)
        time.sleep(0.2)
        company.write_text(_with_alias(company.read_text(), "new@example.com"))
        os.kill(proc.proc.pid, signal.SIGHUP)           # pending: handled on SIGCONT
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)
    assert _wait_log(proc, "event=worker_started worker=0", 2) == 2
    assert _wait_log(proc, "event=reloaded hash=", 2, timeout=30) == 2, proc.log.read_text()
    assert _rcpt_codes(proc.smtp, "new@example.com", 20) == [250] * 20


def test_a_big_reload_that_opens_a_quote_in_the_rules_builds_the_book_again(
        daemon_process, tmp_path):
    """Big files, two workers, a book section below the rules (`moved:`, a comment with a
    quote after it). The reload leaves a rule's name's quote open: libyaml reads on over
    `moved:`, so the new files move nothing and mail to old@ is refused. Blanking the rules
    read `moved:` as before, the sections hashed the same, and both workers kept the book
    that still moved old@ to support@ (event=book_kept): mail went by a section the files no
    longer have."""
    import smtplib

    from mailrouter.daemon import BUILD_APART_FROM
    from tests.support.daemon import RULES
    rules = tmp_path / "rules"
    rules.mkdir()
    company = (RULES / "company.yaml").read_text()
    many = "".join(f"  bulk{i:06d}@example.com: mailbox:support\n" for i in range(30000))
    (rules / "company.yaml").write_text(company.replace("aliases:\n", "aliases:\n" + many, 1))
    routing = ("rules:\n  - when: {rcpt: support@example.com}\n    then: {mailbox: support}\n"
               "    name: support\n"
               "moved:\n  old@example.com: {now: support@example.com}  # \"\n")
    (rules / "routing.yaml").write_text(routing)
    assert sum(p.stat().st_size for p in rules.iterdir()) >= BUILD_APART_FROM
    proc = daemon_process(extra="workers: 2\n", routing=str(rules / "*.yaml"))
    assert _wait_log(proc, "event=started loop=", 2) == 2

    def old_accepted() -> bool:
        with smtplib.SMTP("127.0.0.1", proc.smtp, timeout=30) as s:
            s.ehlo()
            s.mail("a@outside.test")
            return s.rcpt("old@example.com")[0] == 250

    assert old_accepted()
    (rules / "routing.yaml").write_text(routing.replace("name: support", 'name: "support'))
    got = _reload(proc.admin)
    assert got["ok"] is True, got
    assert _wait_log(proc, f"event=reloaded hash={got['detail']}", 2) == 2
    assert "event=book_kept" not in proc.log.read_text()
    assert not old_accepted()
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0

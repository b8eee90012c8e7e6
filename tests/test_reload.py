"""Hot reload: atomic swaps under load, broken files refused, SIGHUP, file watch, admin endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import time
import urllib.request
from pathlib import Path


from tests.support.daemon import RULES, maildir_files
from tests.support.ports import wait_port
from tests.support.wire import Wire

RULE = """
rules:
  - name: ping
    when: {{subject: {{contains: ping}}}}
    then: {{mailbox: {mailbox}, folder: {folder}}}
"""
BROKEN = "rules:\n  - name: ping\n    when: {subjet: {contains: ping}}\n    then: {mailbox: nowhere}\n"


def routing_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    shutil.copy(RULES / "company.yaml", d / "company.yaml")
    (d / "ping.yaml").write_text(RULE.format(mailbox="finance", folder="A"), encoding="utf-8")
    return d


def mail(i: int) -> bytes:
    return (f"From: c@outside.test\r\nTo: sales@example.com\r\nSubject: ping {i}\r\n"
            f"Message-ID: <ping-{i}@outside.test>\r\n\r\nbody {i}\r\n.\r\n").encode()


async def test_reload_under_load_is_atomic_and_keeps_old_rules_on_error(make_app, tmp_path):
    """50 reloads (good A, broken, good B alternating) while a client sends: nothing lost,
    every message routed wholly by one valid rule set, broken files refused and recorded."""
    d = routing_dir(tmp_path)
    app = await make_app(routing=(str(d / "*.yaml"),))
    stop = asyncio.Event()
    replies: list[str] = []

    async def sender() -> None:
        i = 0
        async with Wire(app.bound["smtp"][1]) as w:
            await w.greet()
            while not stop.is_set():
                replies.extend(await w.transaction("c@outside.test", ["sales@example.com"], mail(i)))
                i += 1

    async def reloader() -> list[bool]:
        results = []
        for n in range(50):
            text = BROKEN if n % 3 == 1 else RULE.format(mailbox=("finance", "support")[n % 2],
                                                         folder=("A", "B")[n % 2])
            (d / "ping.yaml").write_text(text, encoding="utf-8")
            ok, _ = await app.reload()
            results.append(ok)
            await asyncio.sleep(0.01)
        stop.set()
        return results

    task = asyncio.create_task(sender())
    results = await reloader()
    await task
    assert results == [n % 3 != 1 for n in range(50)]
    assert replies and all(r.startswith("250 2.0.0") for r in replies)
    root = tmp_path / "var" / "mail"
    a = maildir_files(root / "finance" / ".A")
    b = maildir_files(root / "support" / ".B")
    assert len(a) + len(b) == len(replies)          # each in exactly one valid place
    assert maildir_files(root / "sales") == []       # never the unrouted default
    db = sqlite3.connect(tmp_path / "var" / "registry.db")
    assert db.execute("select count(*) from reloads where ok = 0").fetchone()[0] == \
        results.count(False)
    detail = db.execute("select detail from reloads where ok = 0").fetchone()[0]
    assert "unknown condition 'subjet'; did you mean 'subject'?" in detail and "ping.yaml:3" in detail


async def test_a_file_saved_while_a_reload_reads_it_gives_the_rules_its_hash_names(
        make_app, tmp_path, monkeypatch):
    """An editor saves ping.yaml (folder A -> B) the moment the reload has read it. The
    snapshot is of the bytes read, and its hash is theirs: the files were read once to hash
    them and again to parse them, so the rules of B ran under A's hash, and A saved back
    (an undo) was "unchanged": the reload kept B's rules running."""
    from mailrouter.yamlsrc import files_hash
    from tests.support.rules import route
    d = routing_dir(tmp_path)
    app = await make_app(routing=(str(d / "*.yaml"),))
    ping = d / "ping.yaml"
    a, b = RULE.format(mailbox="finance", folder="A"), RULE.format(mailbox="finance", folder="B")
    ping.write_text(a + "\n", encoding="utf-8")       # changed: the reload reads it
    real = Path.read_bytes
    saved: list[bytes] = []

    def read_then_save(self: Path) -> bytes:      # the editor's save, right after the read
        data = real(self)
        if self == ping and not saved:
            saved.append(data)
            ping.write_text(b, encoding="utf-8")
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_save)
    ok, digest = await app.reload()
    monkeypatch.undo()
    assert ok and saved
    company = str(d / "company.yaml")
    assert digest == files_hash([(company, (d / "company.yaml").read_bytes()),
                                 (str(ping), saved[0])])
    assert route(app.snapshot(), mail(1), "sales@example.com").folder == "A"
    ping.write_text(a + "\n", encoding="utf-8")       # the same bytes as loaded: unchanged
    assert await app.reload() == (True, digest)
    ping.write_text(b, encoding="utf-8")
    ok, other = await app.reload()
    assert ok and other != digest
    assert route(app.snapshot(), mail(2), "sales@example.com").folder == "B"


def _post_reload(port: int) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def _routed_to(tmp_path: Path, box: str, folder: str) -> int:
    return len(maildir_files(tmp_path / "var" / "mail" / box / f".{folder}"))


def _send(port: int, i: int) -> str:
    import smtplib
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.sendmail("c@outside.test", ["sales@example.com"], mail(i)[:-3])
    return "ok"


def test_sighup_file_watch_and_admin_reload(daemon_process, tmp_path):
    """SIGHUP, a saved file and POST /-/reload each apply new rules; a broken file is refused."""
    d = routing_dir(tmp_path)
    proc = daemon_process(routing=str(d / "*.yaml"))
    _send(proc.smtp, 1)
    assert _routed_to(tmp_path, "finance", "A") == 1

    (d / "ping.yaml").write_text(RULE.format(mailbox="support", folder="B"), encoding="utf-8")
    proc.signal(signal.SIGHUP)
    # the watcher may win the race; either applies it, in every worker (one per core by
    # default: worker 0 reads the files, the others load what it read, and the next
    # message may go to any of them)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (lambda log: log.count("event=reloaded")
                                           < log.count("event=started"))(proc.log.read_text()):
        time.sleep(0.1)
    _send(proc.smtp, 2)
    assert _routed_to(tmp_path, "support", "B") == 1

    (d / "ping.yaml").write_text(BROKEN, encoding="utf-8")
    reply = _post_reload(proc.admin)
    assert reply["ok"] is False and "unknown condition 'subjet'; did you mean 'subject'?" in reply["detail"]
    _send(proc.smtp, 3)
    assert _routed_to(tmp_path, "support", "B") == 2       # old rules kept running

    (d / "ping.yaml").write_text(RULE.format(mailbox="finance", folder="C"), encoding="utf-8")
    deadline = time.monotonic() + 20      # no signal: the file watcher picks it up
    while time.monotonic() < deadline and _post_metric(proc.admin) is None:
        time.sleep(0.1)
    while time.monotonic() < deadline:
        _send(proc.smtp, int(time.monotonic() * 1000))
        if _routed_to(tmp_path, "finance", "C"):
            break
        time.sleep(0.3)
    assert _routed_to(tmp_path, "finance", "C") >= 1


def _post_metric(port: int) -> str | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return text if "mailrouter_config_last_reload_successful 1.0" in text else None


# --- Reloads that cannot explode, and that coalesce (issues 9 and 10) -------------------

def _reloads() -> float:
    from mailrouter import metrics
    return sum(metrics.RELOADS.labels(r)._value.get() for r in ("ok", "failed"))


async def test_reload_requests_coalesce(make_app, tmp_path):
    """30 requests at once are one reload; 29 more while one runs are one more, and each
    requester gets the result of a reload that read the files after it asked."""
    d = routing_dir(tmp_path)
    app = await make_app(routing=(str(d / "*.yaml"),))
    before = _reloads()
    results = await asyncio.gather(*(app.reload() for _ in range(30)))
    assert _reloads() - before == 1 and all(r == results[0] for r in results)

    before, done = _reloads(), app._reloader
    first = asyncio.ensure_future(app.reload())
    while app._reloader is done or app._next_reload is not None:   # until it has started
        await asyncio.sleep(0)
    (d / "ping.yaml").write_text(BROKEN, encoding="utf-8")          # saved while it runs
    later = await asyncio.gather(*(app.reload() for _ in range(29)))
    await first
    assert _reloads() - before == 2
    assert all(ok is False and "ping.yaml:3:12" in detail for ok, detail in later)


async def test_reload_of_unchanged_files_keeps_the_shared_snapshot(make_app, tmp_path):
    """A reload that finds the routing files byte for byte as loaded (SIGHUP, touch, a tool
    rewriting them) keeps the snapshot object: in a worker it is the supervisor's copy shared
    copy-on-write, which a new load would replace by one copy per worker. A change is loaded."""
    d = routing_dir(tmp_path)
    app = await make_app(routing=(str(d / "*.yaml"),))
    first = app.snapshot()
    (d / "ping.yaml").write_text(RULE.format(mailbox="finance", folder="A"), encoding="utf-8")
    assert await app.reload() == (True, first.hash)
    assert app.snapshot() is first
    (d / "ping.yaml").write_text(RULE.format(mailbox="finance", folder="B"), encoding="utf-8")
    ok, new_hash = await app.reload()
    assert ok and new_hash != first.hash and app.snapshot() is not first
    assert app.snapshot().hash == new_hash


def _raw_post(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(f"POST /-/reload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n"
              "Connection: close\r\n\r\n".encode())
    return s


def test_burst_of_posts_and_sighups_is_at_most_two_reloads(daemon_process, tmp_path):
    """30 POST /-/reload and 30 SIGHUPs in one burst against a running daemon: every POST
    answered 200, and the requests that come while a reload runs share the next one (30
    POSTs made 63 reloads before, issue 10). The daemon is stopped (SIGSTOP) while the burst
    is sent, so that it is one burst however slowly a loaded machine sends it. On an idle
    machine that is 2 reloads; a loaded one reads the 30 connections over several reloads of
    unchanged files (~10 ms each), hence the bound of 10: still far from one per request."""
    d = routing_dir(tmp_path)
    proc = daemon_process(routing=str(d / "*.yaml"), extra="workers: 1\n")
    from tests.test_admin import admin_port
    port = admin_port(proc)
    proc.signal(signal.SIGSTOP)
    try:
        socks = [_raw_post(port) for _ in range(30)]     # the kernel queues them meanwhile
        for _ in range(30):
            proc.signal(signal.SIGHUP)
    finally:
        proc.signal(signal.SIGCONT)
    replies = []
    for s in socks:
        with s:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        replies.append(data)
    assert all(r.startswith(b"HTTP/1.0 200 OK") for r in replies)
    reloads = proc.log.read_text().count("event=reloaded")
    assert 1 <= reloads <= 10, proc.log.read_text()


def test_anchor_bomb_saved_while_running_is_refused(daemon_process, tmp_path):
    """The 9x9 anchor file saved into the routing directory of a running daemon: the
    watcher's reload refuses it with file:line, the old rules keep routing."""
    from tests.test_addresses import anchor_bomb
    d = routing_dir(tmp_path)
    proc = daemon_process(routing=str(d / "*.yaml"))
    _send(proc.smtp, 1)
    assert _routed_to(tmp_path, "finance", "A") == 1
    (d / "zz-bomb.yaml").write_text(anchor_bomb(leaf="mailbox:finance", name="bomb", head="aliases:\n"),
                                    encoding="utf-8")
    # the watcher may catch the file half written (refused for another reason, at another
    # line) and read it whole at its next pass: wait for the whole file's refusal
    refused = f"{d / 'zz-bomb.yaml'}:7:30: YAML aliases repeat more than 100000 values"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and refused not in proc.log.read_text():
        time.sleep(0.1)
    log = proc.log.read_text()
    assert refused in log
    assert "Traceback" not in log and "MemoryError" not in log
    _send(proc.smtp, 2)
    assert _routed_to(tmp_path, "finance", "A") == 2


async def test_a_routing_file_emptied_is_refused_and_the_rules_keep_routing(make_app, tmp_path):
    """`> rules/ping.yaml`, or the watcher catching an editor's save between truncate and
    write: an empty file loaded as "no rules" and mail went to the book's default (sales)
    until the next change. It is refused like any broken file; the ping rule still routes."""
    d = routing_dir(tmp_path)
    app = await make_app(routing=(str(d / "*.yaml"),))
    (d / "ping.yaml").write_text("", encoding="utf-8")
    ok, detail = await app.reload()
    assert (ok, detail) == (False, "ping.yaml:1:1: the routing file is empty; write its sections "
                            "(rules:, aliases: ...), or move it out of what 'routing:' matches")
    await asyncio.to_thread(_send, app.bound["smtp"][1], 1)
    assert _routed_to(tmp_path, "finance", "A") == 1
    assert maildir_files(tmp_path / "var" / "mail" / "sales") == []


async def test_the_address_book_file_removed_is_refused_and_mail_keeps_flowing(make_app, tmp_path):
    """company.yaml moved away (or left out of the glob) while the rules name no mailbox: the
    reload took an empty address book and every recipient got 550 5.1.1 (mail bounced). It
    is refused, saying what is missing; mail is still delivered by the old book."""
    d = routing_dir(tmp_path)
    (d / "ping.yaml").write_text("rules:\n  - name: ping\n    when: {subject: {contains: ping}}\n"
                                 "    then: {folder: A, tags: [ping]}\n", encoding="utf-8")
    app = await make_app(routing=(str(d / "*.yaml"),))
    await asyncio.to_thread(_send, app.bound["smtp"][1], 1)
    assert _routed_to(tmp_path, "sales", "A") == 1
    (d / "company.yaml").rename(tmp_path / "company.yaml")
    ok, detail = await app.reload()
    assert not ok
    assert "the routing files define no mailbox and no person" in detail
    assert "missing from the files read" in detail and "ping.yaml" in detail
    await asyncio.to_thread(_send, app.bound["smtp"][1], 2)
    assert _routed_to(tmp_path, "sales", "A") == 2


def _send_to(port: int, rcpt: str, i: int) -> None:
    import smtplib
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.sendmail("c@outside.test", [rcpt], mail(i)[:-3])


async def test_the_watcher_loads_a_file_only_once_it_has_stopped_changing(make_app, tmp_path):
    """company.yaml caught by the watcher mid-save, cut after its first alias: valid YAML
    without support@, which was loaded and refused 550 (mail bounced) until the next look.
    A change is loaded once a look finds the files as the one before did."""
    d = routing_dir(tmp_path)
    app = await make_app(routing=(str(d / "*.yaml"),))
    port = app.bound["smtp"][1]
    company = d / "company.yaml"
    whole = company.read_text(encoding="utf-8").replace(
        "aliases:\n", "aliases:\n  new@example.com: mailbox:support\n", 1)
    half = whole[:whole.index("  support@example.com:")]
    company.write_text(half, encoding="utf-8")
    assert await app.look_at_routing_files() is False     # seen changing: not loaded
    await asyncio.to_thread(_send_to, port, "support@example.com", 1)    # the old book
    company.write_text(whole, encoding="utf-8")           # the save completes
    st = company.stat()
    os.utime(company, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # a later save
    assert await app.look_at_routing_files() is False     # changed again since the last look
    assert await app.look_at_routing_files() is True      # unchanged since: loaded
    assert await app.look_at_routing_files() is False     # and only once
    await asyncio.to_thread(_send_to, port, "new@example.com", 2)
    await asyncio.to_thread(_send_to, port, "support@example.com", 3)
    assert _routed_to(tmp_path, "finance", "A") == 3     # by the ping rule, all three


def test_a_reload_refused_for_config_yaml_names_config_yaml(daemon_process, tmp_path):
    """The routing folder moved away: the reload is refused because of config.yaml's
    `routing:`. The log and the admin reply said "<config>: no routing files match ...",
    no file to open; they name config.yaml, as `check` and a refused start do (the reply by
    its name only: it shows no path of this machine outside the routing folder)."""
    d = routing_dir(tmp_path)
    proc = daemon_process(routing=str(d / "*.yaml"))
    deadline = time.monotonic() + 20      # started listens on SMTP; admin may follow
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", proc.admin), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    d.rename(tmp_path / "rules.off")
    reply = _post_reload(proc.admin)
    assert reply["ok"] is False
    line = next(n for n, text in enumerate(Path(proc.config).read_text().splitlines(), 1)
                if text.startswith("routing:"))      # the key to edit, named with its line
    assert reply["detail"].startswith(f"config.yaml:{line}:1: no routing files match "), reply
    log = proc.log.read_text()
    assert f"{proc.config}:{line}:1: no routing files match {d}/*.yaml" in log, log
    assert "<config>" not in log + reply["detail"]


async def test_a_routing_file_deleted_while_others_remain_is_said_in_the_log_and_the_reply(
        make_app, tmp_path, caplog):
    """One of several files under the glob deleted (or renamed out of it), the rest valid:
    the reload took effect with the file's rules and aliases gone and said nothing. It still
    takes effect (a file may be removed on purpose), and the log and `mailrouter reload`'s
    answer name the file no longer read, relative to the routing directory."""
    d = routing_dir(tmp_path)
    (d / "extra.yaml").write_text("aliases:\n  extra@example.com: mailbox:sales\n",
                                  encoding="utf-8")
    app = await make_app(routing=(str(d / "*.yaml"),))
    assert await app.reload() == (True, app.snapshot().hash)          # nothing gone: the hash
    (d / "extra.yaml").unlink()
    with caplog.at_level("WARNING", logger="mailrouter"):
        ok, detail = await app.reload()
    assert ok and detail == f"{app.snapshot().hash}; no longer read: extra.yaml"
    gone = [r.getMessage() for r in caplog.records if "routing_file_gone" in r.getMessage()]
    assert gone == [f"event=routing_file_gone file={d / 'extra.yaml'} hash={app.snapshot().hash}"]


def test_a_reload_says_what_of_an_edited_config_yaml_it_did_not_apply(daemon_process, tmp_path):
    """config.yaml edited (limits.max_recipients 2 -> 1, shutdown_grace) and `mailrouter
    reload` run, workers: 2: config.yaml is read only at start, and the reload answered
    "reloaded", exit 0, with the old limit still taking two recipients. It now exits 4
    naming the changed keys and the restart (the log says it once), and an edit that broke
    config.yaml is named with its file:line, as the start it would fail."""
    import smtplib
    import subprocess
    import sys
    proc = daemon_process(extra="workers: 2\nlimits: {max_recipients: 2}\n")
    wait_port(proc.admin)
    cli = [sys.executable, "-m", "mailrouter.cli", "reload", "-c", str(proc.config)]
    same = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert (same.returncode, same.stderr) == (0, ""), same
    started = proc.config.read_text()
    proc.config.write_text(started.replace("max_recipients: 2", "max_recipients: 1")
                           .replace("shutdown_grace: 10", "shutdown_grace: 5"), encoding="utf-8")
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert out.returncode == 4, out
    assert out.stdout.startswith("reloaded: "), out
    assert "limits.max_recipients, shutdown_grace changed" in out.stderr, out.stderr
    assert "restart it to apply them" in out.stderr, out.stderr
    with smtplib.SMTP("127.0.0.1", proc.smtp) as s:       # the running limit is still 2
        s.ehlo()
        s.mail("c@outside.test")
        assert s.rcpt("sales@example.com")[0] == 250
        assert s.rcpt("support@example.com")[0] == 250
    assert proc.log.read_text().count(
        "event=config_not_applied keys=limits.max_recipients,shutdown_grace") == 1
    proc.config.write_text(started + "limits_typo: 1\n", encoding="utf-8")
    reply = _post_reload(proc.admin)
    assert reply["ok"] is True and reply["config"] is not None, reply
    assert f"{proc.config}:9:1: unknown key 'limits_typo'" in reply["config"], reply
    assert "would not start again" in reply["config"], reply
    proc.config.write_text(started, encoding="utf-8")
    assert _post_reload(proc.admin)["config"] is None


BACKUPS = ("ping.yaml~", "#ping.yaml#", "ping.yaml.swp", "ping.yaml.orig",
           "company.yaml.dpkg-old", "company.yaml.dpkg-dist", "company.yaml.rpmnew")


def test_backup_files_a_routing_glob_matches_are_skipped(daemon_process, tmp_path):
    """`routing: [rules/*]` with an editor's backups and a package manager's leftovers beside
    the files: each defined every name a second time (or ran old rules beside the new) and
    the daemon refused to start. They are skipped, each logged at start and at a reload,
    as run-parts skips them; `check` names each with the config's line of the glob."""
    import subprocess
    import sys
    d = routing_dir(tmp_path)
    for name in BACKUPS + (".#ping.yaml",):     # Emacs' lock: a dot file, which * does not match
        source = d / ("company.yaml" if name.startswith("company") else "ping.yaml")
        (d / name).write_bytes(source.read_bytes())
    proc = daemon_process(routing=str(d / "*"), extra="workers: 1\n")
    _send(proc.smtp, 1)
    assert _routed_to(tmp_path, "finance", "A") == 1
    (d / "ping.yaml").write_text(RULE.format(mailbox="support", folder="B"), encoding="utf-8")
    reply = _post_reload(proc.admin)
    assert reply["ok"] is True, reply
    log = proc.log.read_text()
    for name in BACKUPS:
        assert log.count(f"event=routing_file_skipped file={d / name}:") == 2, (name, log)
    _send(proc.smtp, 2)
    assert _routed_to(tmp_path, "support", "B") == 1
    check = subprocess.run([sys.executable, "-m", "mailrouter.cli", "check", "-c",
                            str(proc.config)], capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    at = next(n for n, line in enumerate(proc.config.read_text().splitlines(), 1)
              if line.startswith("routing:"))
    warned = [line for line in check.stdout.splitlines() if "skipped" in line]
    assert warned == [
        f"warning: {d / name}: skipped: an editor's backup or a package manager's leftover, "
        f"as run-parts skips them; the glob 'rules/*' ({proc.config}:{at}) matches it; "
        "remove it, or rename it to load it" for name in sorted(BACKUPS)], check.stdout
    assert "routing files: rules/company.yaml, rules/ping.yaml" in check.stdout.splitlines()
    assert ".#ping.yaml" not in log + check.stdout


def test_each_reload_is_recorded_with_the_process_that_made_it(daemon_process, tmp_path):
    """Two workers, a broken file, SIGHUP: worker 0 reads the files for all (the others take
    what it loaded, or none does) and writes one row; `mailrouter registry reloads` names the
    row's process (host, pid, worker) as the log's `event=worker_started worker= pid=` does,
    so rows of instances sharing one registry are told apart. Before, rows had no process."""
    import re
    import subprocess
    import sys
    d = routing_dir(tmp_path)
    proc = daemon_process(routing=str(d / "*.yaml"), extra="workers: 2\n")
    (d / "ping.yaml").write_text(BROKEN, encoding="utf-8")
    proc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    db = sqlite3.connect(tmp_path / "var" / "registry.db")
    while time.monotonic() < deadline and db.execute(
            "select count(*) from reloads where ok = 0").fetchone()[0] < 1:
        time.sleep(0.1)
    time.sleep(0.5)                 # a second row, were one written, would be there by now
    pids = {int(w): int(p) for w, p in re.findall(r"event=worker_started worker=(\d+) pid=(\d+)",
                                                  proc.log.read_text())}
    out = subprocess.run([sys.executable, "-m", "mailrouter.cli", "registry", "reloads", "--json",
                          "-c", str(proc.config)], capture_output=True, text=True, check=True)
    rows = [r for r in json.loads(out.stdout) if not r["ok"]]
    assert [r["instance"] for r in rows] == [f"{socket.gethostname()} pid={pids[0]} worker=0"]
    assert "unknown condition 'subjet'" in rows[0]["detail"]
    text = subprocess.run([sys.executable, "-m", "mailrouter.cli", "registry", "reloads",
                           "-c", str(proc.config)], capture_output=True, text=True, check=True)
    assert sum("FAILED" in line and f"pid={pids[0]} worker=0" in line
               for line in text.stdout.splitlines()) == 1
    # an ok row names its hash once (its detail was the hash again)
    (d / "ping.yaml").write_text(RULE.format(mailbox="sales", folder="B"), encoding="utf-8")
    proc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and db.execute(
            "select count(*) from reloads where ok = 1").fetchone()[0] < 1:
        time.sleep(0.1)
    everything = json.loads(subprocess.run(
        [sys.executable, "-m", "mailrouter.cli", "registry", "reloads", "--json", "-c",
         str(proc.config)], capture_output=True, text=True, check=True).stdout)
    good = [r for r in everything if r["ok"]]
    assert len(good) == 1, everything
    [good] = good
    assert good["detail"] == "", good


def test_a_sighup_that_finds_worker_0_dead_reloads_its_replacement(daemon_process, tmp_path):
    """Two workers; worker 0 killed, and a SIGHUP reaches the supervisor before it has
    reaped it (the SIGHUP went to the zombie) or while it waits to replace it (no worker 0
    at all): the reload asked for never ran (the files unchanged, so the new worker 0's
    watcher had nothing to notice; no reload row, no rewrite of Postfix's tables). Now the
    replacement is sent the SIGHUP the dead one could not take: one reload, recorded."""
    d = routing_dir(tmp_path)
    proc = daemon_process(routing=str(d / "*.yaml"), extra="workers: 2\n")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.log.read_text().count("event=started loop=") < 2:
        time.sleep(0.1)
    db = sqlite3.connect(tmp_path / "var" / "registry.db")
    before = db.execute("select count(*) from reloads").fetchone()[0]
    first = [int(line.split("pid=")[1].split()[0]) for line in proc.log.read_text().splitlines()
             if "event=worker_started worker=0" in line][0]
    os.kill(proc.proc.pid, signal.SIGSTOP)              # the supervisor: no wait(), no restart
    try:
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and \
                Path(f"/proc/{first}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.05)
        os.kill(proc.proc.pid, signal.SIGHUP)           # pending: handled on SIGCONT
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and \
            db.execute("select count(*) from reloads").fetchone()[0] <= before:
        time.sleep(0.1)
    rows = db.execute("select ok, instance from reloads order by id").fetchall()[before:]
    assert [ok for ok, _ in rows] == [1], proc.log.read_text()
    assert "worker=0" in rows[0][1] and f"pid={first} " not in rows[0][1] + " "


async def test_a_reload_that_check_would_refuse_is_refused_and_the_old_rules_run(
        make_app, tmp_path):
    """Routing files edited to add an lmtp: mailbox while config.yaml has no delivery.lmtp:
    `mailrouter check` refused them, and a reload took them, every copy for that mailbox
    answered 451 4.3.5 until the sender gave up. The reload is refused like a broken file,
    naming config.yaml and the fix, and the rules it ran go on (support@ still delivered,
    the new alias unknown)."""
    d = routing_dir(tmp_path)
    app = await make_app(routing=(str(d / "*.yaml"),))
    before = app.snapshot().hash
    company = d / "company.yaml"
    company.write_text(_mailbox_added(company.read_text(encoding="utf-8"),
                                      "desk: {lmtp: desk@mail.internal}").replace(
        "aliases:\n", "aliases:\n  desk@example.com: mailbox:desk\n", 1), encoding="utf-8")
    ok, detail = await app.reload()
    assert ok is False
    assert "the routing files deliver to lmtp: mailboxes (desk), but there is no " \
           "delivery.lmtp" in detail and "set delivery: {lmtp:" in detail, detail
    assert app.snapshot().hash == before
    port = app.bound["smtp"][1]
    await asyncio.to_thread(_send_to, port, "support@example.com", 1)
    async with Wire(port) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250")
        reply = await w.cmd("RCPT TO:<desk@example.com>")
    assert reply.startswith("550"), reply


def _mailbox_added(text: str, line: str) -> str:
    head, sep, rest = text.partition("\nmailboxes:")
    assert sep, "no mailboxes: section"
    first, nl, after = rest.partition("\n")
    return f"{head}{sep}{first}{nl}  {line}\n{after}"


def test_a_start_that_check_would_refuse_is_refused_naming_config_yaml(tmp_path):
    """The same files at a start (with or without `check` before it): refused, exit 2, the
    error naming config.yaml and the fix, instead of a daemon whose /readyz said ok while
    every copy for the mailbox got 451."""
    from tests.support.daemon import DaemonProcess
    d = routing_dir(tmp_path)
    company = d / "company.yaml"
    company.write_text(_mailbox_added(company.read_text(encoding="utf-8"),
                                      "out: {smtp: orders@partner.example}"), encoding="utf-8")
    for workers in (1, 2):
        (tmp_path / f"w{workers}").mkdir()
        proc = DaemonProcess(tmp_path / f"w{workers}", extra=f"workers: {workers}\n",
                             routing=str(d / "*.yaml"))
        proc.start_refused("a start check refuses")
        log = proc.log.read_text()
        assert f"{proc.config}: the routing files deliver to smtp: mailboxes (out), but " \
               "there is no delivery.smtp" in log, log


def test_with_workers_no_worker_takes_a_reload_that_check_would_refuse(daemon_process, tmp_path):
    """workers: 2: worker 1 loads the bytes worker 0 staged beside it, and refuses them the
    same way (reload_not_taken), instead of running them until worker 0 refused the reload
    and had it go back."""
    from mailrouter.daemon import BUILD_APART_FROM
    d = routing_dir(tmp_path)
    company = d / "company.yaml"
    # files big enough for worker 0's load to take a while (its book built apart): worker 1
    # loads the staged set before worker 0 refuses it, as it would with a real company's
    many = "".join(f"  bulk{i:06d}@example.com: mailbox:support\n" for i in range(30000))
    company.write_text(company.read_text(encoding="utf-8").replace(
        "aliases:\n", "aliases:\n" + many, 1), encoding="utf-8")
    assert company.stat().st_size >= BUILD_APART_FROM
    proc = daemon_process(extra="workers: 2\n", routing=str(d / "*.yaml"))
    deadline = time.monotonic() + 30
    while proc.log.read_text().count("event=started loop=") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    company.write_text(_mailbox_added(company.read_text(encoding="utf-8"),
                                      "desk: {lmtp: desk@mail.internal}"), encoding="utf-8")
    reply = _post_reload(proc.admin)
    assert reply["ok"] is False and "no delivery.lmtp" in reply["detail"], reply
    deadline = time.monotonic() + 30
    while "event=reload_unstaged" not in proc.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = proc.log.read_text()
    assert "event=reload_not_taken" in log and "no delivery.lmtp" in log, log
    assert "event=reloaded" not in log, log


async def test_a_transaction_is_decided_by_the_rules_its_rcpt_was_answered_by(make_app,
                                                                              tmp_path):
    """RCPT TO:<sales@> answered 250 by the rules running, then a reload (the ping rule now
    to support/B) before the final dot: the message was decided by the new rules, so one
    transaction was answered by one set and routed by another (and an address the reload
    removed got 250 at RCPT and a DSN after). The whole transaction now keeps the set its
    first RCPT was checked against; the next one takes the new set."""
    d = routing_dir(tmp_path)
    app = await make_app(routing=(str(d / "*.yaml"),))
    old = app.snapshot().hash
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<c@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        (d / "ping.yaml").write_text(RULE.format(mailbox="support", folder="B"),
                                     encoding="utf-8")
        ok, new = await app.reload()
        assert ok and new != old
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(mail(1))
        assert (await w.line()).startswith("250")
        assert (await w.cmd("MAIL FROM:<c@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(mail(2))
        assert (await w.line()).startswith("250")
    assert (_routed_to(tmp_path, "finance", "A"), _routed_to(tmp_path, "support", "B")) == (1, 1)
    rows = await app.registry.recent(2)
    assert sorted(r["ruleset_hash"] for r in rows) == sorted([old, new])


def _wait_in_log(proc, text: str) -> str:
    deadline = time.monotonic() + 60       # only a hung daemon fails it
    while time.monotonic() < deadline and text not in proc.log.read_text():
        time.sleep(0.05)
    return proc.log.read_text()


def test_lint_warnings_are_logged_at_start_and_at_a_reload(daemon_process, tmp_path):
    """A rule set with warnings `mailrouter check` prints (two rules of one name, a rule on
    an address the book refuses) went live without a word in the log, at a start and at a
    reload. Each is logged as check prints it: file:line, what, the fix."""
    d = routing_dir(tmp_path)
    twice = RULE.format(mailbox="finance", folder="A") + \
        "  - name: ping\n    when: {subject: {contains: pong}}\n    then: {folder: B}\n"
    (d / "ping.yaml").write_text(twice, encoding="utf-8")
    proc = daemon_process(routing=str(d / "*.yaml"), extra="workers: 1\n")
    named = "event=routing_warning hash="
    dup = f"{d / 'ping.yaml'}:6: rule 'ping': the name is also used at {d / 'ping.yaml'}:3;"
    log = _wait_in_log(proc, dup)
    assert named in log and dup in log and "give this rule a name of its own" in log, log
    (d / "ping.yaml").write_text(twice + "  - name: typo\n    when: {rcpt: sale@example.com}\n"
                                 "    then: {folder: C}\n", encoding="utf-8")
    assert _post_reload(proc.admin)["ok"] is True
    typo = (f"{d / 'ping.yaml'}:9: rule 'typo': rcpt 'sale@example.com' is not an address of "
            "the address book: mail to it is refused at RCPT and never reaches the rules; "
            "did you mean 'sales@example.com'?")
    log = _wait_in_log(proc, typo)
    assert typo in log and log.count(dup) == 2, log


def test_a_start_or_reload_logs_the_first_warnings_then_their_count(tmp_path, caplog):
    """Thousands of warnings (bench_start.py's 10,000 rules name 7,000 addresses the book
    lacks) were as many log lines at each start and reload: the first LOGGED_WARNINGS are
    logged one by one, the rest counted, with `mailrouter check` named for them all."""
    import logging

    from mailrouter.config import Limits
    from mailrouter.config import load_config
    from mailrouter.daemon import LOGGED_WARNINGS, _log_warnings
    from mailrouter.routing.snapshot import load_snapshot
    d = routing_dir(tmp_path)
    extra = LOGGED_WARNINGS + 7
    (d / "typos.yaml").write_text("rules:\n" + "".join(
        f"  - {{name: t{i}, when: {{rcpt: nobody{i}@example.com}}, then: {{folder: X}}}}\n"
        for i in range(extra)), encoding="utf-8")
    snap = load_snapshot([str(d / "*.yaml")], Limits(), "mx.example.com")
    assert len(snap.warnings(False)) >= extra
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{d / '*.yaml'}']\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="mailrouter"):
        _log_warnings(snap, load_config(str(cfg)))
    lines = [r.getMessage() for r in caplog.records]
    one_by_one = [m for m in lines if m.startswith("event=routing_warning ")]
    more = [m for m in lines if m.startswith("event=routing_warnings_more ")]
    assert len(one_by_one) == LOGGED_WARNINGS, lines
    total = len(snap.warnings(False))
    assert more == [f"event=routing_warnings_more hash={snap.hash} count={total - LOGGED_WARNINGS}"
                    ": `mailrouter check` lists them all"], lines


async def test_the_lint_runs_after_the_set_settles_and_only_for_the_newest(make_app, tmp_path,
                                                                           caplog, monkeypatch):
    """The lint of the rule set that goes live (0.5 s of CPU at 10,000 rules) ran at once at
    a start and after each reload, and took the GIL from the reloads that followed (a
    reload 1.18 s instead of 0.78 in bench_start.py). It runs LINT_AFTER seconds later, for
    the newest set only: a set replaced meanwhile is not linted."""
    import logging

    import mailrouter.daemon as daemon
    monkeypatch.setattr(daemon, "LINT_AFTER", 0.5)
    caplog.set_level(logging.WARNING, logger="mailrouter")
    d = routing_dir(tmp_path)
    twice = "  - name: ping\n    when: {subject: {contains: pong}}\n    then: {folder: B}\n"
    (d / "ping.yaml").write_text(RULE.format(mailbox="finance", folder="A") + twice,
                                 encoding="utf-8")
    app = await make_app(routing=(str(d / "*.yaml"),))
    first = app.snapshot().hash
    (d / "ping.yaml").write_text(RULE.format(mailbox="finance", folder="C") + twice,
                                 encoding="utf-8")
    ok, second = await app.reload()
    assert ok and second != first
    assert "event=routing_warning" not in caplog.text        # not at once
    deadline = time.monotonic() + 30
    while f"event=routing_warning hash={second}" not in caplog.text \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert f"event=routing_warning hash={second}" in caplog.text, caplog.text
    assert f"hash={first}" not in caplog.text                # replaced before its lint

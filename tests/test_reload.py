"""Hot reload: atomic swaps under load, broken files refused, SIGHUP, file watch, admin endpoint."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path


from tests.support.daemon import RULES, maildir_files
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
    deadline = time.monotonic() + 20      # the watcher may win the race; either applies it
    while time.monotonic() < deadline and "event=reloaded" not in proc.log.read_text():
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

"""Routing files deleted or moved: refused at start and at a reload, never taken as "no rules".

The rules' file gone from a glob loaded as a rule set with no rules: every message took its
address book's default, and nothing told it from rules removed on purpose (`rules: []`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from mailrouter.config import Limits
from mailrouter.errors import ConfigErrors
from mailrouter.routing.snapshot import load_snapshot
from tests.support.daemon import maildir_files, write_config
from tests.test_reload import _routed_to, _send, routing_dir


def _errors(*patterns: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_snapshot([str(p) for p in patterns], Limits(), "mx.test")
    return [str(e) for e in info.value.errors]


def _no_rules(d: Path) -> str:
    return (f"{d}/*.yaml: no routing file has a 'rules:' section, so every message would take "
            f"its address-book default (the rules' file deleted or moved?); files read: "
            f"{d}/company.yaml; put the rules' file back; for no rules on purpose, write "
            "'rules: []' in one of these files")


def test_a_glob_whose_files_have_no_rules_is_refused_and_rules_empty_is_meant(tmp_path):
    """The rules' file gone from the glob is refused, naming the glob and the files read;
    `rules: []` says no rules on purpose; files named one by one are taken as they are."""
    d = routing_dir(tmp_path)
    assert [r.name for r in load_snapshot([str(d / "*.yaml")], Limits(), "x").rules.rules] == [
        "ping"]
    (d / "ping.yaml").unlink()
    assert _errors(d / "*.yaml") == [_no_rules(d)]
    (d / "none.yaml").write_text("rules: []\n", encoding="utf-8")
    assert load_snapshot([str(d / "*.yaml")], Limits(), "x").rules.rules == ()
    (d / "none.yaml").unlink()
    assert load_snapshot([str(d / "company.yaml")], Limits(), "x").rules.rules == ()


def test_start_is_refused_when_the_rules_file_is_gone(tmp_path):
    """`mailrouter check` (what `run` loads at start) exits 1 with the error."""
    d = routing_dir(tmp_path)
    (d / "ping.yaml").unlink()
    cfg = write_config(tmp_path / "config.yaml", 1, 2, 3, routing=str(d / "*.yaml"))
    out = subprocess.run([sys.executable, "-m", "mailrouter", "check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 1 and f"  {_no_rules(d)}" in out.stderr.splitlines(), out.stderr


async def test_a_reload_without_the_rules_file_keeps_the_rules(make_app, tmp_path):
    """rules/ping.yaml deleted while the daemon runs: the reload is refused and says why;
    mail is still routed by the ping rule, not by the address book's default (sales)."""
    d = routing_dir(tmp_path)
    app = await make_app(routing=(str(d / "*.yaml"),))
    (d / "ping.yaml").unlink()
    ok, detail = await app.reload()
    assert not ok and "no routing file has a 'rules:' section" in detail, detail
    assert "put the rules' file back" in detail
    await asyncio.to_thread(_send, app.bound["smtp"][1], 1)
    assert _routed_to(tmp_path, "finance", "A") == 1
    assert maildir_files(tmp_path / "var" / "mail" / "sales") == []
    (d / "none.yaml").write_text("rules: []\n", encoding="utf-8")
    ok, _ = await app.reload()
    assert ok
    await asyncio.to_thread(_send, app.bound["smtp"][1], 2)
    assert len(maildir_files(tmp_path / "var" / "mail" / "sales")) == 1



async def test_a_fifo_among_the_routing_files_is_refused_not_waited_on(make_app, tmp_path):
    """A FIFO (or a device) matched by the glob: the reload read it and waited for ever for a
    writer, and every later reload queued behind it. Now it is an error naming the file, the
    old rules keep running, and the next reload without it goes through."""
    import os
    d = routing_dir(tmp_path)
    app = await make_app(routing=(str(d / "*.yaml"),))
    os.mkfifo(d / "zz-pipe.yaml")
    try:
        ok, detail = await asyncio.wait_for(app.reload(), 30)
    finally:                # a reader still waiting: give it its end of file, let it go
        try:
            os.close(os.open(d / "zz-pipe.yaml", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert not ok and "zz-pipe.yaml: not a regular file (a FIFO, a socket or a device)" in detail
    await asyncio.to_thread(_send, app.bound["smtp"][1], 1)
    assert _routed_to(tmp_path, "finance", "A") == 1
    (d / "zz-pipe.yaml").unlink()
    ok, _ = await asyncio.wait_for(app.reload(), 60)
    assert ok


def test_check_names_a_symlink_loop_with_the_fix(tmp_path):
    d = routing_dir(tmp_path)
    (d / "zz.yaml").symlink_to(d / "zz.yaml")
    assert _errors(d / "*.yaml") == [f"{d}/zz.yaml: cannot read: Too many levels of symbolic "
                                     "links; a symlink that points, through others, back at "
                                     "itself: point it at the file"]

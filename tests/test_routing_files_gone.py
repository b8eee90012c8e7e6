"""Routing files deleted or moved: refused at start and at a reload, never taken as "no rules".

The rules' file gone from a glob loaded as a rule set with no rules: every message took its
address book's default, and nothing told it from rules removed on purpose (`rules: []`)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from mailrouter.config import Limits
from mailrouter.errors import ConfigErrors
from mailrouter.routing.files import routing_files
from mailrouter.routing.snapshot import load_snapshot
from tests.support.daemon import maildir_files, write_config
from tests.support.nobody import as_nobody
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


@contextlib.contextmanager
def _no_descriptors() -> Iterator[None]:
    """This process out of file descriptors (EMFILE) until the block ends."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    held: list[int] = []
    try:
        while True:
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_out_of_descriptors_the_rules_are_kept_and_the_cause_named(make_app, tmp_path,
                                                                         caplog):
    """glob.glob swallows EMFILE: the watcher read the routing folder as "no files", took
    that for a change, reloaded, logged `reload_failed ... no routing files match`, and
    reloaded again once descriptors were back. Now a look that cannot list the folder is no
    change (its cause logged once), a reload names the cause and keeps the rules, and the
    looks after it find the files unchanged."""
    d = routing_dir(tmp_path)
    app = await make_app(routing=(str(d / "*.yaml"),))
    hash_before = app.snapshot().hash
    caplog.set_level(logging.INFO, logger="mailrouter")
    with _no_descriptors():
        looks = [await app.look_at_routing_files() for _ in range(3)]
        ok, detail = await app.reload()
    assert looks == [False, False, False]
    assert not ok and "cannot list the folder" in detail and "Too many open files" in detail
    assert "no routing files match" not in caplog.text
    assert caplog.text.count("event=routing_files_unlisted") == 1
    assert [await app.look_at_routing_files() for _ in range(3)] == [False, False, False]
    assert app.snapshot().hash == hash_before
    await asyncio.to_thread(_send, app.bound["smtp"][1], 1)
    assert _routed_to(tmp_path, "finance", "A") == 1


def test_a_routing_folder_that_cannot_be_listed_is_no_empty_glob(tmp_path):
    """The folder of `rules/*.yaml` that this user may not list (EACCES) is an error naming
    it, not "no routing files match"; a folder that does not exist is still no files."""
    d = routing_dir(tmp_path)
    d.chmod(0o700)
    tmp_path.chmod(0o755)

    def files() -> list[str]:
        try:
            return routing_files([str(d / "*.yaml")])[0]
        except ConfigErrors as exc:
            return [str(e) for e in exc.errors]

    got = as_nobody(files, died=None)
    assert got is not None and len(got) == 1, got
    assert f"cannot list the folder {d} for {d}/*.yaml: Permission denied" in got[0], got
    assert routing_files([str(tmp_path / "none" / "*.yaml")]) == ([], [])
    assert routing_files([str(d / "*.yaml")])[0] == [str(d / "company.yaml"),
                                                      str(d / "ping.yaml")]


def test_a_set_whose_folder_cannot_be_listed_is_not_current_and_nothing_raises(tmp_path):
    """A worker that starts while the process is out of descriptors asks whether the disk
    still holds the set it runs (daemon._still_current, outside the start's error
    handling): since routing_files raises for a folder it cannot list, that question raised
    out of serve(). It is now "not current", and the load or the watcher's reload that
    follows names the cause."""
    from mailrouter.config import load_config
    from mailrouter.daemon import _still_current
    from mailrouter.routing.snapshot import load_snapshot
    d = routing_dir(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{d / '*.yaml'}']\n", encoding="utf-8")
    config = load_config(str(cfg))
    snap = load_snapshot(config.routing, config.limits, config.hostname)
    assert _still_current(snap, config) is True
    with _no_descriptors():
        current = _still_current(snap, config)
    assert current is False
    assert _still_current(snap, config) is True


def test_a_file_tried_without_the_books_domains_is_one_error_naming_the_cause(tmp_path):
    """A department's file (its mailbox, person and aliases) checked alone, `--routing
    legal.yaml`: the book's `domains:` is in company.yaml, not read, and each address was
    refused by itself ("address legal@example.com is not on one of our domains; add
    example.com under domains:"), three errors hiding the one cause. Now one error: no file
    read defines domains, the files read, the fix. The same file beside the book is fine."""
    legal = tmp_path / "legal.yaml"
    legal.write_text("mailboxes: {legal: {maildir: legal}}\n"
                     "people: {sidorova: {address: e.sidorova@example.com}}\n"
                     "aliases: {legal@example.com: mailbox:legal, contracts@example.com: "
                     "mailbox:legal}\nrules: []\n", encoding="utf-8")
    assert _errors(legal) == [
        "<config>: the routing files define no domains: every address in them (legal@example.com among "
        "them) is on no domain of ours, and every recipient would be refused (550 5.1.1); the "
        "file with the address book's 'domains:' is missing from the files read: "
        f"{legal}; or, for a new domain, write domains: [example.com] in one of them"]
    (tmp_path / "company.yaml").write_text("domains: [example.com]\naliases: "
                                           "{postmaster@example.com: mailbox:legal}\n",
                                           encoding="utf-8")
    snap = load_snapshot([str(tmp_path / "*.yaml")], Limits(), "mx.test")
    assert snap.book.resolve("legal@example.com").reply is None

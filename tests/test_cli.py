"""The command line, run as a user runs it: `python -m mailrouter.cli ...` in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mailrouter
from tests.support.daemon import RULES, maildir_files, write_config, free_port

CLI = [sys.executable, "-m", "mailrouter.cli"]


def mr(*args: str, cwd: Path | None = None, timeout: float = 60,
       env: dict[str, str] | None = None, stdin: str | None = None
       ) -> subprocess.CompletedProcess[str]:
    """Run the CLI; $MAILROUTER_CONFIG from the caller's shell is not passed on unless in `env`."""
    full = {k: v for k, v in os.environ.items() if k != "MAILROUTER_CONFIG"} | (env or {})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=full, input=stdin)


@pytest.mark.parametrize("cmd", [[], ["run"], ["check"], ["test"], ["explain"], ["reload"], ["db"], ["registry"]])
def test_help_on_every_command(cmd):
    """`--help` works on the program and on every command, and says what the command does."""
    out = mr(*cmd, "--help")
    assert out.returncode == 0
    assert "usage: mailrouter" in out.stdout and "-h, --help" in out.stdout


def test_check_refuses_lmtp_and_smtp_mailboxes_without_their_downstream(tmp_path):
    """Mailboxes {lmtp: ...} and {smtp: ...} with no delivery.lmtp / delivery.smtp in
    config.yaml: check said ok, the daemon started, /readyz said ok, and every copy for them
    was answered 451 4.3.5 "No lmtp downstream configured" until the sender's MTA gave up.
    check (the unit's ExecStartPre) now refuses it, exit 1, naming both and the fix."""
    (tmp_path / "book.yaml").write_text(
        "domains: [example.com]\nrules: []\nmailboxes:\n  desk: {lmtp: desk@mail.internal}\n"
        "  out: {smtp: orders@partner.example}\n  box: {maildir: box}\naliases:\n"
        "  desk@example.com: mailbox:desk\n  out@example.com: mailbox:out\n"
        "  postmaster@example.com: mailbox:box\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(f"routing: ['{tmp_path / 'book.yaml'}']\n", encoding="utf-8")
    out = mr("check", "-c", str(config))
    assert out.returncode == 1, out
    assert out.stderr.splitlines() == [
        "mailrouter: configuration has 2 error(s):",
        f"  {config}: the routing files deliver to lmtp: mailboxes (desk), but there is no "
        "delivery.lmtp: every copy for them would be answered 451 4.3.5; set delivery: {lmtp: "
        "{host: 127.0.0.1, port: 24}} (docs/install.md), or make them maildir: mailboxes",
        f"  {config}: the routing files deliver to smtp: mailboxes (out), but there is no "
        "delivery.smtp: every copy for them would be answered 451 4.3.5; set delivery: {smtp: "
        "{host: 127.0.0.1, port: 10027}} (docs/install.md), or make them maildir: mailboxes"]
    config.write_text(f"routing: ['{tmp_path / 'book.yaml'}']\ndelivery: {{lmtp: {{host: "
                      "127.0.0.1, port: 24}, smtp: {host: 127.0.0.1, port: 10027}}\n",
                      encoding="utf-8")
    ok = mr("check", "-c", str(config))
    assert ok.returncode == 0 and ok.stderr == "", ok


def test_check_warns_about_an_smtp_mailbox_on_our_own_domains(tmp_path):
    """A mailbox {smtp: ADDRESS} on one of our domains: delivery.smtp is the MTA in front,
    which sends that domain back to mailrouter, so the copy came back as new mail (refused
    550 5.1.1 and bounced, a loop refused 554 5.4.6, or routed twice); check said ok. Now a
    warning per mailbox, at its line, with what happens and the fix (any case, either form
    of an IDN domain); one outside our domains is fine. Exit 0: a downstream that hosts the
    domain's mailboxes itself may be meant."""
    (tmp_path / "book.yaml").write_text(
        "domains: [example.com, пример.рф]\nrules: []\nmailboxes:\n"
        "  sales: {maildir: sales}\n"
        "  fwd: {smtp: sales@example.com}\n"
        "  gone: {smtp: Other@EXAMPLE.com}\n"
        "  self: {smtp: self@xn--e1afmkfd.xn--p1ai}\n"
        "  partner: {smtp: orders@partner.example}\n"
        "aliases:\n  sales@example.com: mailbox:sales\n  postmaster@example.com: mailbox:sales\n"
        "  postmaster@пример.рф: mailbox:sales\n  fwd@example.com: mailbox:fwd\n"
        "  gone@example.com: mailbox:gone\n  self@пример.рф: mailbox:self\n"
        "  p@example.com: mailbox:partner\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text("routing: [book.yaml]\ndelivery: {smtp: {host: 127.0.0.1, port: 10027}}\n",
                      encoding="utf-8")
    out = mr("check", "-c", str(config), cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out
    warnings = [line for line in out.stdout.splitlines() if line.startswith("warning:")]
    book = tmp_path / "book.yaml"
    tail = "if delivery.smtp (127.0.0.1:10027) is the MTA that sends"
    own = ("deliver to our own mailboxes with {maildir: ...} or {lmtp: ...}; {smtp: ...} is "
           "for addresses outside our domains (fine if that downstream hosts the mailbox itself)")
    assert warnings == [
        f"warning: {book}:5: mailbox 'fwd' {{smtp: sales@example.com}} is on our own domain "
        f"example.com: {tail} example.com to mailrouter, it is taken again as new mail to that "
        "address (routed twice, two registry rows); point the aliases at sales@example.com (an "
        "alias may name another address of ours) instead of mailbox:fwd (fine if that "
        "downstream hosts the mailbox itself)",
        f"warning: {book}:6: mailbox 'gone' {{smtp: Other@EXAMPLE.com}} is on our own domain "
        f"EXAMPLE.com: {tail} EXAMPLE.com to mailrouter, mailrouter refuses it (550 5.1.1: not "
        f"an address of the address book) and the MTA bounces it to the sender; {own}",
        f"warning: {book}:7: mailbox 'self' {{smtp: self@xn--e1afmkfd.xn--p1ai}} is on our "
        f"own domain xn--e1afmkfd.xn--p1ai: {tail} xn--e1afmkfd.xn--p1ai to mailrouter, "
        "self@xn--e1afmkfd.xn--p1ai leads to this mailbox again: a mail loop, refused 554 5.4.6 "
        f"and bounced to the sender; {own}"], out.stdout


def test_reload_that_reaches_no_daemon_still_names_config_yamls_errors(tmp_path):
    """A broken config.yaml whose admin endpoint is readable is sent to the daemon, which
    names its errors; when no daemon answers there, `reload` names them itself beside
    "cannot reach", exit 2."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"listen: {{admin: '127.0.0.1:{port}'}}\nlog_format: x\n",
                      encoding="utf-8")
    out = mr("reload", "-c", str(config))
    assert out.returncode == 2, out
    assert out.stderr.splitlines() == [
        f"mailrouter reload: cannot reach http://127.0.0.1:{port}/-/reload: Connection "
        "refused; is the daemon running with this config (systemctl status mailrouter)?",
        f"mailrouter reload: and {config} has 1 error(s), which would stop the next start:",
        f"  {config}:2:13: 'log_format' must be kv or json, not 'x'; kv: key=value lines; "
        "json: one JSON object per line"], out.stderr


@pytest.mark.parametrize("cmd, code", [
    (["reload"], "4 reloaded but config.yaml changed"), (["check"], "1 errors in the config"),
    (["test"], "1 a case failed"), (["address"], "1 unknown"), (["run"], "2 could not start"),
    (["explain"], "0 decided"), (["postfix"], "2 they could not be"), (["db"], "0 the schema"),
    (["web"], "0 the password is set"), (["outbox"], "0 listed"),
    (["request"], "1 no such request"), (["registry"], "2 no registry"),
    (["registry", "search"], "2 a bad argument"), (["registry", "history"], "0 listed"),
    (["registry", "reloads"], "2 no registry"), (["report"], "2 a bad date")])
def test_each_commands_help_names_its_exit_codes(cmd, code):
    """Only the program's --help listed exit codes: `mailrouter reload --help` (systemctl
    reload runs it) did not say what 1, 3 or 4 mean, nor `address --help` what 1 does."""
    text = " ".join(mr(*cmd, "--help").stdout.split())
    assert "exit codes: 0 " in text and code in text, text


def test_python_dash_m_mailrouter_is_the_command():
    """`python -m mailrouter` (no script on PATH: a venv not activated) was "No module named
    mailrouter.__main__"; it is the same command line as the `mailrouter` script."""
    out = subprocess.run([sys.executable, "-m", "mailrouter", "check", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: mailrouter check")
    version = subprocess.run([sys.executable, "-m", "mailrouter", "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"mailrouter {mailrouter.__version__}"


def test_every_argument_of_every_command_has_help():
    """Each positional and option of every command and subcommand says what it is:
    `request --help` listed '{show,close,wait}' and 'N', `registry history --help`
    'ADDRESS|DOMAIN', `registry search --help` '--since DATE' with no word on them."""
    import argparse
    from mailrouter.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif action.help in (None, "") and action.dest != "help":
                yield f"{path}: {'/'.join(action.option_strings) or action.dest}"

    assert list(walk(build_parser(), "mailrouter")) == []


def test_check_reports_config_errors_with_file_line_and_fix(tmp_path):
    """A typo'd key and a bad listener: exit 1, every error named with file:line and a fix."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("hostname: mx.test\nlisen: {smtp: 127.0.0.1:2525}\nlimits:\n  max_message_size: -5\n"
                   "registry: {url: 'mysql://x', sync: sometimes}\nworkers: many\n", encoding="utf-8")
    out = mr("check", "-c", str(cfg))
    assert out.returncode == 1
    assert f"{cfg}:2:1: unknown key 'lisen'; did you mean 'listen'?" in out.stderr
    assert f"{cfg}:4:3: 'max_message_size' must be a number >= 1, not -5" in out.stderr
    assert f"{cfg}:5:17: unsupported registry url 'mysql://x'" in out.stderr
    assert f"{cfg}:5:36: registry 'sync' must be full or normal, not 'sometimes'" in out.stderr
    assert f"{cfg}:6:10: 'workers' must be a number from 1 to 64 or 'auto', not 'many'" in out.stderr


def test_check_reports_yaml_syntax_error(tmp_path):
    """Broken YAML names the line."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("listen:\n  smtp: [127.0.0.1:2525\n", encoding="utf-8")
    out = mr("check", "-c", str(cfg))
    assert out.returncode == 1 and f"{cfg}:3:1: YAML syntax" in out.stderr
    run = mr("run", "-c", str(cfg))      # the daemon refuses to start on it: exit 2
    assert run.returncode == 2 and f"{cfg}:3:1: YAML syntax" in run.stderr


def test_check_ok_on_example_config():
    """config.example.yaml is valid as shipped."""
    out = mr("check", "-c", str(RULES.parent / "config.example.yaml"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("ok: ")


def test_explain_json_contract(tmp_path):
    """explain --json has the documented keys, per recipient too, and says why."""
    out = mr("explain", "--json", "--rcpt", "invoices@example.com", "--rcpt", "nobody@example.com",
             str(RULES / "samples" / "invoice-koi8r.eml"), cwd=RULES.parent)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    for key in ("subject", "from", "message_id", "defects", "recipients", "attachments",
                "body_charset", "robot", "charset"):
        assert key in rep
    assert set(rep["from"]) == {"name", "addr"}
    ok, refused = rep["recipients"]
    for key in ("rcpt", "mailbox", "folder", "owner", "tags", "priority", "reasons", "path", "rules"):
        assert key in ok
    assert ok["mailbox"] == "finance" and ok["folder"] == "Finance"
    assert ok["rules"][0]["name"] == "invoices" and ok["rules"][0]["line"] > 0
    assert refused["action"] == "reject" and refused["reply"].startswith("550 5.1.1")


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("taken", ["smtp", "lmtp", "admin"])
def test_run_with_a_port_taken_says_which_and_exits_2(tmp_path, workers, taken):
    """A listener whose port another program holds: one log line naming the address, the
    listener and the config key, exit 2, no traceback (one process and with workers)."""
    ports = {"smtp": free_port(), "lmtp": free_port(), "admin": free_port()}
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", ports[taken]))
    blocker.listen()
    try:
        cfg = write_config(tmp_path / "config.yaml", ports["smtp"], ports["lmtp"], ports["admin"],
                           f"workers: {workers}\n")
        out = mr("run", "-c", str(cfg), timeout=60)
    finally:
        blocker.close()
    assert out.returncode == 2, out.stderr
    assert (f"cannot listen on 127.0.0.1:{ports[taken]} for {taken} (" in out.stderr
            and f"change listen.{taken} in the config" in out.stderr), out.stderr
    assert f" config='{cfg}'; not starting" in out.stderr, out.stderr     # which config
    assert "Traceback" not in out.stderr


def test_run_on_an_address_this_host_lacks_says_so(tmp_path):
    """listen.smtp on an address of no interface of this host (192.0.2.1, TEST-NET-1) was
    told "another program may hold it"; the reply names what is wrong. Exit 2."""
    smtp = free_port()
    cfg = write_config(tmp_path / "config.yaml", smtp, free_port(), free_port(), "workers: 1\n")
    cfg.write_text(cfg.read_text().replace(f"127.0.0.1:{smtp}", f"192.0.2.1:{smtp}"))
    out = mr("run", "-c", str(cfg), timeout=60)
    assert out.returncode == 2, out.stderr
    assert (f"cannot listen on 192.0.2.1:{smtp} for smtp (" in out.stderr
            and "this host has no address 192.0.2.1" in out.stderr
            and "may hold it" not in out.stderr), out.stderr
    assert "Traceback" not in out.stderr


def test_run_with_the_registry_or_the_mail_store_unusable_says_why_and_exits_2(tmp_path):
    """A PostgreSQL registry that refuses connections, or a Maildir root that cannot be
    created: the reason in one line, exit 2."""
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port(),
                       "workers: 1\n")
    cfg.write_text(cfg.read_text().replace(
        f"registry: {{url: 'sqlite+aiosqlite:///{tmp_path / 'var' / 'registry.db'}'}}",
        "registry: {url: 'postgresql+asyncpg://mr@127.0.0.1:1/mr', timeout: 3}"))
    out = mr("run", "-c", str(cfg), timeout=60)
    assert out.returncode == 2, out.stderr
    assert "registry open failed (ConnectionRefusedError" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    (tmp_path / "file").write_text("")                   # a Maildir root under a file
    cfg.write_text(cfg.read_text().replace(f"maildir_root: '{tmp_path / 'var' / 'mail'}'",
                                           f"maildir_root: '{tmp_path / 'file' / 'mail'}'"))
    out = mr("run", "-c", str(cfg), timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"delivery.maildir_root {tmp_path / 'file' / 'mail'} is not writable (" in out.stderr


def test_registry_commands_with_the_database_down_say_why_and_exit_2(tmp_path):
    """`mailrouter registry` and `db upgrade` against a PostgreSQL that refuses: one line
    each with the driver's reason, exit 2, no traceback; an empty registry says so."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("registry: {url: 'postgresql+asyncpg://mr:s3cret@127.0.0.1:1/mr', timeout: 3}\n")
    for cmd in (["registry"], ["db", "upgrade"]):
        out = mr(*cmd, "-c", str(cfg))
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.strip().splitlines() == [
            f"mailrouter {' '.join(cmd)}: postgresql+asyncpg://mr@127.0.0.1:1/mr: "
            f"registry {'open' if cmd == ['registry'] else 'upgrade'}"
            " failed (ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1))"
            + "; the database server cannot be reached (not running, or a wrong host or port)"
            + (f"; check registry.url in {cfg}" if cmd == ["registry"]
               else f" (registry.url in {cfg})")]
    sqlite = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port())
    assert mr("db", "upgrade", "-c", str(sqlite)).returncode == 0
    out = mr("registry", "-c", str(sqlite))
    assert out.returncode == 0 and out.stdout.startswith("no messages in the registry yet"), out


def test_registry_commands_name_the_registry_file_and_the_fix(tmp_path):
    """A registry.url naming a file that is not a database, one without the schema, or one
    that does not exist: each read command said "registry open failed (DatabaseError: file
    is not a database)" or "no registry at sqlite+aiosqlite:////...", naming no file (or the
    file in a URL). One line each: the file's path, the driver's error, what to do."""
    var = tmp_path / "var"
    var.mkdir()
    (var / "junk.db").write_text("not a database, a text file written by mistake\n" * 20)
    (var / "empty.db").write_bytes(b"")
    expected = {
        "junk.db": "registry open failed (DatabaseError: file is not a database); the file is "
                   "not a SQLite database; check registry.url in {cfg}",
        "empty.db": "registry {op} failed (OperationalError: no such table: {table}); its schema "
                    "is missing or not this version's: run `mailrouter db upgrade` with the "
                    "daemon's config; check registry.url in {cfg}",
    }
    for name, text in expected.items():
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"routing: ['{RULES / '*.yaml'}']\n"
                       f"registry: {{url: 'sqlite+aiosqlite:///{var / name}'}}\n")
        for cmd, op, table in ((["registry"], "recent", "messages"),
                               (["request", "show", "1"], "request show", "requests")):
            out = mr(*cmd, "-c", str(cfg))
            assert out.returncode == 2, out
            assert out.stderr.splitlines() == [
                f"mailrouter {' '.join(cmd[:2 if cmd[0] == 'request' else 1])}: {var / name}: "
                + text.format(cfg=cfg, op=op, table=table)], out.stderr
    cfg = tmp_path / "none.yaml"
    cfg.write_text(f"routing: ['{RULES / '*.yaml'}']\n"
                   f"registry: {{url: 'sqlite+aiosqlite:///{var / 'none.db'}'}}\n")
    out = mr("outbox", "-c", str(cfg))
    assert out.returncode == 2 and out.stderr.splitlines() == [
        f"mailrouter outbox: no registry at {var / 'none.db'} (registry.url in {cfg}); start the "
        "daemon first (it creates it), or give -c with the daemon's config"], out.stderr
    assert sorted(p.name for p in var.iterdir()) == ["empty.db", "junk.db"]


def test_a_registry_file_locked_by_another_process_is_named_with_the_fix(tmp_path):
    """Another process holds the registry in BEGIN EXCLUSIVE (as a sqlite3 shell would):
    `request close` and `web passwd` each exit 2 with one line naming the file, "database
    is locked" and the fix (`fuser FILE`, end its transaction), as the daemon's log does.
    Before, `request close` gave no fix, and `web passwd` no file and asked "is the schema
    current?"."""
    var = tmp_path / "var"
    var.mkdir()
    db = var / "registry.db"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{RULES / '*.yaml'}']\n"
                   f"registry: {{url: 'sqlite+aiosqlite:///{db}', timeout: 2}}\n")
    assert mr("db", "upgrade", "-c", str(cfg)).returncode == 0
    shell = sqlite3.connect(db, isolation_level=None)
    try:
        shell.execute("BEGIN EXCLUSIVE")
        shell.execute("INSERT INTO loops (detected_at, message_key, rcpt, evidence) "
                      "VALUES ('2027-01-11', 'k', 'r', 'e')")
        fix = (f"another process holds the SQLite registry's lock for longer than "
               f"registry.timeout (a sqlite3 shell or a backup in a transaction?); `fuser {db}` "
               "names it, end its transaction")
        for argv, what in ((("request", "close", "1"), "request close"),
                           (("web", "passwd", "petrova", "--password-stdin"), "web passwd")):
            out = mr(*argv, "-c", str(cfg), stdin="a long passphrase\n")
            assert out.returncode == 2 and out.stderr.splitlines() == [
                f"mailrouter {what}: {db}: registry {what} failed (OperationalError: database "
                f"is locked); {fix}; check registry.url in {cfg}"], out.stderr
    finally:
        shell.execute("ROLLBACK")
        shell.close()


def test_commands_refuse_a_registry_a_newer_release_migrated(tmp_path):
    """A downgrade: a newer release migrated the registry (revision 9999 here), then this
    one's commands open it. `run` and `db upgrade` refused it, but every other command read
    and wrote it as if its schema were this release's: `web passwd` set a password and
    `request close` closed a request (an older release's close, run so on a registry
    migrated past it, left the request closed with an answer still due, a state the newer
    release never makes). Each exits 2 with one line naming the revision and the fix, and
    the registry is left as it was."""
    var = tmp_path / "var"
    var.mkdir()
    db = var / "registry.db"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{RULES / '*.yaml'}']\n"
                   f"registry: {{url: 'sqlite+aiosqlite:///{db}'}}\n")
    assert mr("db", "upgrade", "-c", str(cfg)).returncode == 0
    with sqlite3.connect(db) as shell:
        shell.execute("UPDATE alembic_version SET version_num = '9999'")
    shell.close()
    from mailrouter.registry.store import head_revision
    advice = (f"its schema is at revision 9999, newer than this mailrouter knows (up to "
              f"{head_revision()}): an instance of a newer release migrated it; install that "
              f"release here too (docs/install.md, Upgrading); check registry.url in {cfg}")
    for argv, what in ((("web", "passwd", "petrova", "--password-stdin"), "web passwd"),
                       (("request", "close", "1"), "request close"),
                       (("registry",), "registry"), (("report",), "report")):
        out = mr(*argv, "-c", str(cfg), stdin="a long passphrase\n")
        assert out.returncode == 2 and out.stderr.splitlines() == [
            f"mailrouter {what}: {db}: registry open failed (unknown schema revision '9999'); "
            + advice], out.stderr
    with sqlite3.connect(db) as shell:
        assert shell.execute("SELECT count(*) FROM web_accounts").fetchone() == (0,)
    shell.close()


def test_a_look_at_a_registry_that_is_not_there_names_its_file(tmp_path):
    """Registry.open(create=False) on a missing SQLite file: the error names the file's
    path, not the URL it hides in, and what creates it."""
    import asyncio
    from mailrouter.errors import RegistryError
    from mailrouter.registry import Registry
    db = tmp_path / "var" / "registry.db"
    with pytest.raises(RegistryError) as raised:
        asyncio.run(Registry.open(f"sqlite+aiosqlite:///{db}", create=False))
    assert str(raised.value) == (f"no registry at {db}; start the daemon (it creates it) or "
                                 "`mailrouter db upgrade` first, or give -c with the daemon's config")
    assert not db.parent.exists()


def test_explain_names_the_address_a_refused_recipient_was_typed_for():
    """`explain --rcpt invoice@example.com` said only "reject (550 5.1.1 ...)": the admin
    trying a message on a typo'd address was not told which address exists. It names the
    one `mailrouter address` names (detail kept), in text and as did_you_mean in JSON;
    nothing for an address no known one is near, or one RCPT refuses before the book."""
    sample = str(RULES / "samples" / "invoice-koi8r.eml")
    out = mr("explain", "--rcpt", "invoice@example.com", "--rcpt", "<Suport+x@example.com>",
             "--rcpt", "nobody@example.com", "--rcpt", "a b@example.com", sample,
             cwd=RULES.parent)
    assert out.returncode == 0, out.stderr
    assert [line for line in out.stdout.splitlines() if "did you mean" in line] == [
        "  did you mean: invoices@example.com", "  did you mean: support+x@example.com"]
    js = json.loads(mr("explain", "--json", "--rcpt", "invoice@example.com", "--rcpt",
                       "nobody@example.com", "--rcpt", "invoices@example.com", sample,
                       cwd=RULES.parent).stdout)
    assert [r["did_you_mean"] for r in js["recipients"]] == ["invoices@example.com", None, None]


def test_explain_with_a_bad_time_exits_2():
    """`--at tomorrow` is a bad argument: exit 2 as the help promises ("1 check found errors
    or a rule test failed"), not 1, which a script would read as a failed check."""
    out = mr("explain", "--at", "tomorrow", str(RULES / "samples" / "newsletter.eml"),
             cwd=RULES.parent)
    assert out.returncode == 2, out
    assert out.stderr.strip() == ("mailrouter explain: --at 'tomorrow' is not an ISO time "
                                  "(e.g. 2026-11-23T10:30+03:00)")


def test_explain_at_a_day_alone_is_refused_as_in_rule_tests():
    """`--at 2027-01-11` was taken as 00:00 UTC (Sunday 03:00 in Moscow for a Monday
    meant), while a rule test's `at: 2027-01-11` is refused as a day without a time: the
    same message could be decided differently by the two. It is refused here too."""
    out = mr("explain", "--at", "2027-01-11", str(RULES / "samples" / "newsletter.eml"),
             cwd=RULES.parent)
    assert out.returncode == 2, out
    assert out.stderr.strip() == ("mailrouter explain: --at '2027-01-11' is a day without a "
                                  "time of day; write the time too, e.g. 2027-01-11T10:00+03:00")
    ok = mr("explain", "--at", "2027-01-11T10:00+03:00", "--rcpt", "support@example.com",
            str(RULES / "samples" / "newsletter.eml"), cwd=RULES.parent)
    assert ok.returncode == 0, ok


def test_explain_null_sender_is_a_robot():
    """--from '<>' (a bounce's envelope) makes the message a robot, with the reason; the same
    message from a person is not."""
    sample = str(RULES / "samples" / "sales-inquiry.eml")
    bounce = json.loads(mr("explain", "--json", "--from", "<>", "--rcpt", "sales@example.com",
                           sample, cwd=RULES.parent).stdout)
    person = json.loads(mr("explain", "--json", "--rcpt", "sales@example.com", sample,
                           cwd=RULES.parent).stdout)
    assert bounce["robot"] == {"robot": True, "reason": "bounce: null envelope sender <>"}
    assert "robot" in bounce["recipients"][0]["tags"]
    assert person["robot"]["robot"] is False and "robot" not in person["recipients"][0]["tags"]


@pytest.mark.parametrize("first", [b" , ceo@example.com\r\n", b"\tcontinued\n"],
                         ids=["space", "tab"])
def test_explain_reads_a_message_starting_with_white_space_as_the_daemon_stores_it(
        tmp_path, first):
    """A first line starting with white space continues no header: the daemon stores such a
    message after an empty line (intake.protocol, as Postfix's smtpd), so it is all body and
    its 'Subject: invoice 7' is no subject; a real daemon delivered it to sales by the rule
    'sales'. `explain` read the file's lines as headers: the invoices rule, to finance. It
    reads the file as the daemon stores it now, the size included."""
    raw = first + b"From: a@outside.test\r\nTo: sales@example.com\r\nSubject: invoice 7\r\n\r\nx\r\n"
    eml = tmp_path / "folded.eml"
    eml.write_bytes(raw)
    out = mr("explain", "--json", "--rcpt", "sales@example.com", str(eml), cwd=RULES.parent)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    (d,) = report["recipients"]
    assert (report["subject"], report["size"]) == ("", len(raw) + 2)
    assert (d["mailbox"], d["folder"]) == ("sales", "Inbound")
    assert [r.partition(" (")[0] for r in d["reasons"]] == ["address book", "rule 'sales'"]


@pytest.mark.parametrize("junk", [b"", b"\x00\xff\xfe garbage \r\n\r\n\x80",
                                  b"Subject: =?koi8-r?B?broken?=\r\nContent-Type: multipart/mixed\r\n\r\n--x"],
                         ids=["empty", "binary", "broken-mime"])
def test_explain_never_fails_on_broken_mail(tmp_path, junk):
    """explain prints a decision for any bytes, however broken."""
    f = tmp_path / "m.eml"
    f.write_bytes(junk)
    out = mr("explain", "--json", "--rcpt", "sales@example.com", str(f), cwd=RULES.parent)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["recipients"][0]["mailbox"] == "sales"


def test_output_into_a_closed_pipe_is_not_a_crash():
    """`mailrouter explain ... | head -0`: the reader is gone; no traceback, exit 0."""
    proc = subprocess.Popen([*CLI, "explain", "--rcpt", "sales@example.com",
                             str(RULES / "samples" / "invoice-koi8r.eml")], cwd=RULES.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()          # before the program has written anything
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_rule_tests_pass_and_a_failing_one_is_reported(tmp_path):
    """`mailrouter test` passes on the shipped rules; a wrong expectation gives one line and exit 1."""
    assert mr("test", cwd=RULES.parent).returncode == 0
    routing = tmp_path / "rules"
    shutil.copytree(RULES, routing)
    with open(routing / "zz-broken-test.yaml", "w", encoding="utf-8") as f:
        f.write("tests:\n  - name: wrong-expectation\n    headers: {Subject: hello}\n"
                "    rcpt: sales@example.com\n    expect: {mailbox: finance}\n")
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port(),
                       routing=str(routing / "*.yaml"))
    out = mr("test", "-c", str(cfg))
    assert out.returncode == 1
    lines = [l for l in out.stdout.splitlines() if "wrong-expectation" in l]
    assert len(lines) == 1 and "expected 'finance'" in lines[0] and "'sales'" in lines[0]


def test_rule_tests_none_at_all_is_not_a_pass(tmp_path):
    """Routing files with no `tests:` printed "0/0 rule tests passed" and exit 0: an ops
    team's CI step `mailrouter test` passed having tested nothing. Now exit 5 with the files
    named and the fix; `--allow-no-tests` (a rule set still being written) makes it exit 0,
    and says nothing was tested; `--help` lists the code."""
    (tmp_path / "book.yaml").write_text(
        "domains: [example.com]\nmailboxes: {sales: {maildir: sales}}\naliases:\n"
        "  sales@example.com: mailbox:sales\n  postmaster@example.com: mailbox:sales\n"
        "rules:\n  - name: all\n    then: {tags: [x]}\n", encoding="utf-8")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("routing: [book.yaml]\n", encoding="utf-8")
    out = mr("test", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 5, out
    assert out.stdout == "" and out.stderr.splitlines() == [
        "mailrouter test: no rule tests in the routing files (book.yaml): nothing was tested; "
        "add cases under 'tests:' (rules/README.md, \"Tests\"), or give --allow-no-tests if "
        "none is fine"]
    allowed = mr("test", "-c", str(cfg), "--allow-no-tests", cwd=tmp_path)
    assert allowed.returncode == 0 and allowed.stderr == "", allowed
    assert allowed.stdout == ("no rule tests in the routing files (book.yaml); nothing was "
                              "tested (--allow-no-tests)\n")
    # with a case, the flag changes nothing: a failure still fails
    with open(tmp_path / "book.yaml", "a", encoding="utf-8") as f:
        f.write("tests:\n  - name: t\n    headers: {Subject: hi}\n    rcpt: sales@example.com\n"
                "    expect: {tags: [y]}\n")
    failed = mr("test", "-c", str(cfg), "--allow-no-tests", cwd=tmp_path)
    assert failed.returncode == 1 and "0/1 rule tests passed" in failed.stdout, failed
    text = " ".join(mr("test", "--help").stdout.split())
    assert "5 the routing files have no rule test: nothing was tested" in text, text


def test_check_warns_about_a_rule_test_expecting_a_name_that_does_not_exist(tmp_path):
    """A rule test whose expect: names a mailbox, owner, rule, folder or priority no decision
    can give (a typo) only showed at `mailrouter test` ("expected 'salse', got 'sales'"); check
    warns, at the expect line, with the name meant. Names that exist give no warning."""
    routing = tmp_path / "rules"
    shutil.copytree(RULES, routing)
    (routing / "zz-typos.yaml").write_text(
        "tests:\n  - name: typos\n    headers: {Subject: hello}\n    rcpt: product-a@example.com\n"
        "    expect:\n      mailbox: salse\n      owner: smirnow\n      rule: sale\n"
        "      folder: PRODUCT-B\n      priority: hihg\n"
        "  - name: all known\n    headers: {Subject: hello}\n    rcpt: product-a@example.com\n"
        "    expect: {mailbox: support, owner: finance-duty, rule: sales, folder: PRODUCT-A,"
        " priority: high, action: reject}\n", encoding="utf-8")
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port(),
                       routing=str(routing / "*.yaml"))
    out = mr("check", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    warned = [l for l in out.stdout.splitlines() if "test " in l]
    at = f"warning: {routing / 'zz-typos.yaml'}"
    assert warned == [
        f"{at}:6: test typos: expect mailbox 'salse' is no mailbox of the address book, so the "
        "test can only fail; did you mean 'sales'?",
        f"{at}:7: test typos: expect owner 'smirnow' is no person (people:) or team (teams:) of "
        "the address book, so the test can only fail; did you mean 'smirnov'?",
        f"{at}:8: test typos: expect rule 'sale' is no rule of the routing files, so the test can "
        "only fail; did you mean 'sales'?",
        f"{at}:9: test typos: expect folder 'PRODUCT-B' is set by no rule and by no alias of "
        "product-a@example.com, so the test can only fail; did you mean 'PRODUCT-A'?",
        f"{at}:10: test typos: expect priority 'hihg' is not a priority (low, normal, high, "
        "urgent), so the test can only fail; did you mean 'high'?"], out.stdout


def test_db_upgrade_creates_schema(tmp_path):
    """`mailrouter db upgrade` creates the registry tables in a new SQLite file."""
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port())
    out = mr("db", "upgrade", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    tables = {r[0] for r in sqlite3.connect(tmp_path / "var" / "registry.db").execute(
        "select name from sqlite_master where type='table'")}
    assert {"messages", "decisions", "deliveries"} <= tables


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_run_on_embedded_default(tmp_path):
    """`mailrouter run` with no config at all: SMTP on 2525, Maildir and SQLite under ./var."""
    if SYSTEM_CONFIG.exists():       # it would run on that config, and deliver into its store
        pytest.skip(f"{SYSTEM_CONFIG} exists on this machine")
    if not all(_port_free(p) for p in (2525, 2524, 9125)):
        pytest.skip("ports 2525/2524/9125 are in use on this machine (is a mailrouter running?)")
    proc = subprocess.Popen([*CLI, "run"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", 2525), 0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                time.sleep(0.1)
        import smtplib
        with smtplib.SMTP("127.0.0.1", 2525) as s:
            s.sendmail("a@outside.test", ["sales@example.com"], b"Subject: hi\r\n\r\nhello\r\n")
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert len(maildir_files(tmp_path / "var" / "mail" / "sales")) == 1
    assert (tmp_path / "var" / "registry.db").exists()


def test_registry_command_lists_recorded_decisions(daemon_process, tmp_path):
    """After a delivery, `mailrouter registry` shows the message and where it went; the
    control characters of a Message-ID are written out (before, they reached the terminal)."""
    import smtplib
    proc = daemon_process()
    with smtplib.SMTP("127.0.0.1", proc.smtp) as s:
        s.sendmail("a@outside.test", ["invoices@example.com"],
                   "Subject: Счёт №7\r\n\r\nhello\r\n".encode())
        # ESC in a Message-ID (a byte no rule refuses) is written out, not sent to the terminal
        s.sendmail("b@outside.test", ["invoices@example.com"],
                   b"Message-ID: <\x1b]0;owned\x07\x1b[2J@outside.test>\r\nSubject: x\r\n\r\nhi\r\n")
    out = mr("registry", "-c", str(proc.config))
    assert out.returncode == 0, out.stderr
    assert "'Счёт №7'" in out.stdout
    assert "\x1b" not in out.stdout and "<\\x1b]0;owned\\x07\\x1b[2J@outside.test>" in out.stdout
    assert "invoices@example.com -> finance/Finance" in out.stdout and "250 2.0.0" in out.stdout


def test_explain_text_lists_every_copy_of_a_group(tmp_path):
    """A group recipient shows one line per copy with the alias path walked."""
    f = tmp_path / "m.eml"
    f.write_bytes(b"Subject: hi\r\n\r\nhello\r\n")
    out = mr("explain", "--rcpt", "team@example.com", str(f), cwd=RULES.parent)
    assert out.returncode == 0, out.stderr
    copies = [l for l in out.stdout.splitlines() if l.strip().startswith("copy to:")]
    assert len(copies) == 3 and all("team@example.com -> person:" in c for c in copies)


# -- which configuration a command uses, and what it leaves behind ---------------------

SYSTEM_CONFIG = Path("/etc/mailrouter/config.yaml")
PACKAGE_RULES = Path(mailrouter.__file__).resolve().parent / "defaults" / "rules"
no_system_config = pytest.mark.skipif(SYSTEM_CONFIG.exists(),
                                      reason=f"{SYSTEM_CONFIG} exists on this machine")


@no_system_config
@pytest.mark.parametrize("cmd", [["check"], ["test"], ["registry"], ["explain", "m.eml"],
                                 ["outbox"], ["report"]])
def test_commands_outside_a_project_folder_say_which_files_and_create_nothing(tmp_path, cmd):
    """In an empty folder with no config anywhere, each command says on stderr, in one line,
    that it uses the embedded default and which routing files, and leaves nothing behind:
    `registry` in particular does not create ./var/registry.db, it says there is none."""
    (tmp_path / "m.eml").write_bytes(b"Subject: hi\r\n\r\nhello\r\n")
    out = mr(*cmd, cwd=tmp_path)
    notes = [l for l in out.stderr.splitlines() if "embedded default" in l]
    assert len(notes) == 1, out.stderr
    assert notes[0].startswith("mailrouter: no -c FILE, $MAILROUTER_CONFIG or /etc/mailrouter/config.yaml")
    assert f"(routing files: {PACKAGE_RULES / '*.yaml'}; registry and mail under " in notes[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.eml"]
    if cmd[0] in ("registry", "outbox", "report"):
        where = tmp_path.resolve() / 'var' / 'registry.db'
        assert out.returncode == 2
        assert (f"mailrouter {cmd[0]}: no registry at {where}; start the daemon first (it "
                "creates it), or give -c with the daemon's config" in out.stderr.splitlines()), \
            out.stderr
    else:
        assert out.returncode == 0, out.stderr


@no_system_config
def test_a_config_yaml_in_the_current_folder_is_named_as_not_read(tmp_path):
    """README: "A config.yaml in the current folder is not picked up: give it with -c". A
    newcomer who wrote one and ran `mailrouter check` (or `run`) got the embedded default,
    with "config: the embedded default" the only hint, and warnings that spoke of
    "config.yaml". Each command now says on stderr that ./config.yaml is not read."""
    shutil.copytree(RULES, tmp_path / "rules")
    (tmp_path / "config.yaml").write_text("listen: {smtp: 127.0.0.1:1}\n", encoding="utf-8")
    out = mr("check", cwd=tmp_path)
    assert out.returncode == 0, out
    assert out.stderr.splitlines() == [
        "mailrouter: ./config.yaml is not read (no -c FILE, $MAILROUTER_CONFIG or "
        "/etc/mailrouter/config.yaml: the embedded default is used); give it with -c "
        "config.yaml"], out.stderr
    given = mr("check", "-c", "config.yaml", cwd=tmp_path)
    assert given.returncode == 0 and "not read" not in given.stderr, given


def test_commands_in_the_checkout_use_its_rules_quietly():
    """In the checkout (a ./rules folder), the embedded default reads ./rules and says nothing."""
    out = mr("check", cwd=RULES.parent)
    if SYSTEM_CONFIG.exists():
        pytest.skip(f"{SYSTEM_CONFIG} exists on this machine")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "config: the embedded default" in out.stdout.splitlines()
    assert "routing files: rules/company.yaml, rules/routing.yaml" in out.stdout.splitlines()


def test_check_names_the_files_it_validated(tmp_path):
    """`check -c FILE` prints the config file and every routing file it loaded."""
    cfg = write_config(tmp_path / "config.yaml", 1, 2, 3)
    out = mr("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "config: config.yaml" in lines
    assert f"routing files: {RULES / 'company.yaml'}, {RULES / 'routing.yaml'}" in lines
    assert "embedded default" not in out.stderr


def test_check_warns_about_a_routing_glob_that_matches_nothing(tmp_path):
    """`routing: [rules/*.yaml, extra/*.yaml]` with nothing in extra/ (a typo, a folder not
    copied): the glob was skipped without a word; check warns, naming it and its
    config.yaml:line (the warning named no file: the admin had to find it)."""
    cfg = write_config(tmp_path / "config.yaml", 1, 2, 3)
    text = cfg.read_text(encoding="utf-8")
    line = next(l for l in text.splitlines() if l.startswith("routing: "))
    cfg.write_text(text.replace(line, line[:-1] + ", 'extra/*.yaml']"), encoding="utf-8")
    out = mr("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    at = text.splitlines().index(line) + 1
    assert (f"warning: {cfg}:{at}: routing: 'extra/*.yaml' matches no file; its rules and "
            "addresses, if any, are not loaded") in out.stdout.splitlines(), out.stdout
    # written as a block list: the line of the item
    cfg.write_text(text.replace(line, f"routing:\n  - '{RULES / '*.yaml'}'\n  - extra/*.yaml"),
                   encoding="utf-8")
    out = mr("check", "-c", str(cfg), cwd=tmp_path)
    assert (f"warning: {cfg}:{at + 2}: routing: 'extra/*.yaml' matches no file; its rules and "
            "addresses, if any, are not loaded") in out.stdout.splitlines(), out.stdout


def test_config_comes_from_the_environment_unless_c_is_given(tmp_path):
    """$MAILROUTER_CONFIG names the config when there is no -c; -c wins over it; a file it
    names that does not exist is an error naming that file, not a silent default."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("hostname: mx.test\nlisen: {}\n", encoding="utf-8")
    good = write_config(tmp_path / "good.yaml", 1, 2, 3)
    out = mr("check", cwd=tmp_path, env={"MAILROUTER_CONFIG": str(bad)})
    assert out.returncode == 1 and f"{bad}:2:1: unknown key 'lisen'" in out.stderr, out.stderr
    out = mr("check", "-c", str(good), cwd=tmp_path, env={"MAILROUTER_CONFIG": str(bad)})
    assert out.returncode == 0 and "config: good.yaml" in out.stdout, out.stderr
    missing = tmp_path / "nowhere.yaml"
    out = mr("test", cwd=tmp_path, env={"MAILROUTER_CONFIG": str(missing)})
    assert out.returncode == 2 and f"{missing}: file not found" in out.stderr, out.stderr


def test_help_says_where_the_config_comes_from():
    """`--help` gives the discovery order: -c, $MAILROUTER_CONFIG, /etc, the embedded default."""
    text = " ".join(mr("--help").stdout.split())
    assert ("Without -c, the config is $MAILROUTER_CONFIG if set, else /etc/mailrouter/config.yaml "
            "if it exists, else the embedded default") in text
    assert "$MAILROUTER_CONFIG, else /etc/mailrouter/config.yaml" in " ".join(mr("check", "--help").stdout.split())


def test_check_warns_when_calendars_in_several_zones_have_no_default(tmp_path):
    """Calendars in Moscow and Yekaterinburg and none named `default`: away: dates and report
    days fall back to UTC, which `check` says at the first calendar's file:line (it named no
    place), naming the calendars and the fix; with a `default` calendar the warning goes."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    routing = rules / "routing.yaml"
    text = routing.read_text(encoding="utf-8")
    assert "calendars:\n" in text
    two = text.replace("calendars:\n", "calendars:\n  ekb: {timezone: Asia/Yekaterinburg, "
                                       "hours: \"Mon-Fri 09:00-18:00\"}\n", 1)
    routing.write_text(two, encoding="utf-8")
    cfg = write_config(tmp_path / "config.yaml", 1, 2, 3, routing=str(rules / "*.yaml"))
    out = mr("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    line = text.splitlines().index("calendars:") + 2     # ekb's, the first calendar written
    assert (f"warning: {routing}:{line}: calendars name 2 time zones (ekb: Asia/Yekaterinburg, "
            "msk: Europe/Moscow) "
            "and none is called 'default': away: dates and report days are read in UTC; add a "
            "calendar named 'default' in the company's zone") in out.stdout.splitlines()
    routing.write_text(two.replace("calendars:\n", "calendars:\n  default: {timezone: "
                                   "Europe/Moscow, hours: \"Mon-Fri 09:00-18:00\"}\n", 1),
                       encoding="utf-8")
    out = mr("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 0 and "time zones" not in out.stdout, out.stdout + out.stderr


def test_routing_option_tries_an_edited_copy_against_the_live_config(tmp_path):
    """An ops team edits a copy of the routing files and tries it before it goes live (the
    daemon watches its own files): `check`, `test` and `explain --routing GLOB` read the copy
    with the live config; the live files are not read, and a glob matching nothing says so."""
    cfg = write_config(tmp_path / "config.yaml", 1, 2, 3)       # live: the shipped rules
    copy = tmp_path / "rules.new"
    shutil.copytree(RULES, copy)
    routing = copy / "routing.yaml"
    # the edit: invoices go to sales now, which the copy's own rule tests catch
    text = routing.read_text(encoding="utf-8")
    assert "mailbox: finance" in text
    routing.write_text(text.replace("mailbox: finance", "mailbox: sales", 1), encoding="utf-8")

    live = mr("test", "-c", str(cfg), cwd=tmp_path)
    assert live.returncode == 0, live.stdout + live.stderr
    tried = mr("test", "-c", str(cfg), "--routing", "rules.new/*.yaml", cwd=tmp_path)
    assert tried.returncode == 1 and "expected 'finance'" in tried.stdout, tried.stdout

    explained = mr("explain", "-c", str(cfg), "--routing", "rules.new/*.yaml", "--json",
                   "--rcpt", "invoices@example.com", str(RULES / "samples" / "invoice-koi8r.eml"),
                   cwd=tmp_path)
    assert explained.returncode == 0, explained.stderr
    assert json.loads(explained.stdout)["recipients"][0]["mailbox"] == "sales"

    checked = mr("check", "-c", str(cfg), "--routing", "rules.new/*.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert ("routing files: rules.new/company.yaml, rules.new/routing.yaml"
            in checked.stdout.splitlines())
    routing.write_text("rules:\n  - name: broken\n    if: {subject: {contians: x}}\n",
                       encoding="utf-8")
    broken = mr("check", "-c", str(cfg), "--routing", "rules.new/*.yaml", cwd=tmp_path)
    assert broken.returncode == 1 and "rules.new/routing.yaml:3" in broken.stderr, broken.stderr

    missing = mr("check", "-c", str(cfg), "--routing", "nothing/*.yaml", cwd=tmp_path)
    assert missing.returncode == 1
    assert "--routing 'nothing/*.yaml' matches no file" in missing.stderr

    # the folder instead of its files: said so, with the glob to write ("cannot read: Is a
    # directory" was all)
    folder = mr("check", "-c", str(cfg), "--routing", "rules.new", cwd=tmp_path)
    assert folder.returncode == 1 and "Traceback" not in folder.stderr
    assert (f"{copy}: a directory, not a routing file; name its files with a glob: "
            f"{copy}/*.yaml") in folder.stderr, folder.stderr


def test_routing_option_errors_of_the_set_name_the_option_not_config_yaml(tmp_path):
    """`test --routing rules.new/routing.yaml` (the address book's file left out): the
    error of the set as a whole was named at config.yaml, whose `routing:` was not read at
    all; it names the --routing given. Without --routing it stays config.yaml's, at the
    line of its `routing:`."""
    copy = tmp_path / "rules.new"
    shutil.copytree(RULES, copy)
    cfg = tmp_path / "config.yaml"
    cfg.write_text("listen: {smtp: null}\nrouting: [rules.new/routing.yaml]\n", encoding="utf-8")
    why = ("the routing files define no mailbox and no person: every recipient would be "
           "refused (550 5.1.1)")
    for cmd in (["check"], ["test"], ["explain", str(RULES / "samples" / "product-a.eml")]):
        out = mr(*cmd, "-c", str(cfg), "--routing", "rules.new/routing.yaml", cwd=tmp_path)
        assert out.returncode in (1, 2), out
        assert f"  --routing 'rules.new/routing.yaml': {why}" in out.stderr.splitlines()[1], out
        assert str(cfg) not in out.stderr, out.stderr
    live = mr("check", "-c", str(cfg), cwd=tmp_path)
    assert live.stderr.splitlines()[1].startswith(f"  {cfg}:2:1: {why}"), live.stderr


MALFORMED_AND_NOT = ["a b@example.com", "sales@", "@example.com", "sales@@example.com",
                     "<sales@example.com", '"a b"@example.com', "no-at-sign", "<>",
                     "sales@example.com", "<sales@example.com>", "nobody@example.com"]


async def test_explain_answers_a_recipient_as_the_daemons_rcpt_does(make_app):
    """explain --rcpt says the reply the daemon gives that address at RCPT: 553 5.1.3 for
    a malformed path (explain said 550 5.1.1, the address book's answer to a string it was
    never given by the daemon), 501 for <>, and the book's answer for the rest."""
    from tests.support.wire import Wire
    app = await make_app()
    port = app.bound["smtp"][1]
    async with Wire(port) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<x@outside.test>")).startswith("250")
        daemon = [await w.cmd("RCPT TO:" + (a if a.startswith("<") else f"<{a}>"))
                  for a in MALFORMED_AND_NOT]
    args = [a for rcpt in MALFORMED_AND_NOT for a in ("--rcpt", rcpt)]
    out = mr("explain", "--json", *args, str(RULES / "samples" / "invoice-koi8r.eml"),
             cwd=RULES.parent)
    assert out.returncode == 0, out.stderr
    explained = [r["reply"] for r in json.loads(out.stdout)["recipients"]]
    assert explained == daemon
    assert explained[0] == daemon[0] == "553 5.1.3 Error: malformed address"


def test_registry_and_outbox_print_times_in_the_companys_zone(daemon_process, tmp_path):
    """`mailrouter registry` and `mailrouter outbox` print registry times as the company's
    wall clock with its offset (the example rules' one calendar is Moscow's), as `request
    show`, `registry history` and `registry search` do; they printed the bare UTC clock.
    Routing files with an error do not hide the registry: UTC then, and a note."""
    import re
    import smtplib
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    proc = daemon_process(extra="autoreply: {dns: {check: false}}\n",
                          routing=str(rules / "*.yaml"))
    with smtplib.SMTP("127.0.0.1", proc.smtp) as s:
        s.sendmail("ann@client.example", ["old-sales@example.com"],
                   b"From: ann@client.example\r\nTo: old-sales@example.com\r\nSubject: hello\r\n"
                   b"Message-ID: <z1@client>\r\n\r\nhi\r\n")
    out = mr("registry", "-c", str(proc.config))
    assert out.returncode == 0, out.stderr
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+03:00 delivered ", out.stdout), out.stdout
    out = mr("outbox", "-c", str(proc.config))
    assert out.returncode == 0, out.stderr
    assert re.search(r" autoreply +queued +ann@client.example  attempts=0 "
                     r"next=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+03:00", out.stdout), out.stdout
    (rules / "zz-broken.yaml").write_text("bogus_section: 1\n")
    out = mr("registry", "-c", str(proc.config))
    assert out.returncode == 0, out.stderr
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00 delivered ", out.stdout), out.stdout
    assert out.stderr.startswith("mailrouter registry: times in UTC: the routing files, which "
                                 "give the company's zone, have 1 error(s) (mailrouter check)")


def test_check_run_from_the_root_folder_names_absolute_paths(tmp_path):
    """From / (a provisioning tool, `cd /`), the files were named relative to it:
    'config: etc/mailrouter/config.yaml', a path that exists nowhere but in /."""
    cfg = write_config(tmp_path / "config.yaml", 1, 2, 3)
    out = mr("check", "-c", str(cfg), cwd="/")
    assert out.returncode == 0, out.stderr
    assert f"config: {cfg}" in out.stdout.splitlines(), out.stdout


def test_reload_with_a_config_yaml_broken_since_the_start_still_reloads_the_rules(
        daemon_process, tmp_path):
    """config.yaml edited with a mistake (`log_format: kvv`) beside a change of the routing
    files, then `mailrouter reload` (what `systemctl reload` runs): it exited 2 on the
    config's error and asked nothing, so the new address stayed refused, though README says
    exit 4 naming "the errors that would stop the next start". It now reaches the daemon
    (listen.admin and the admin token are readable), the rules are reloaded, and it exits 4
    with config.yaml's file:line:column and the fix."""
    import smtplib
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    proc = daemon_process(routing=str(rules / "*.yaml"),
                          extra="workers: 1\nadmin: {token: 0123456789abcdef0123}\n")
    (rules / "zz-new.yaml").write_text("aliases:\n  new@example.com: mailbox:sales\n",
                                       encoding="utf-8")
    proc.config.write_text(proc.config.read_text() + "log_format: kvv\n", encoding="utf-8")
    out = mr("reload", "-c", str(proc.config))
    assert out.returncode == 4, out
    assert out.stdout.startswith("reloaded: "), out
    line = proc.config.read_text().splitlines().index("log_format: kvv") + 1
    assert f"{proc.config}:{line}:13: 'log_format' must be kv or json, not 'kvv'" in out.stderr
    assert "would not start again until they are fixed" in out.stderr, out.stderr
    with smtplib.SMTP("127.0.0.1", proc.smtp) as s:
        s.ehlo()
        s.mail("c@outside.test")
        assert s.rcpt("new@example.com")[0] == 250
    # a config whose admin endpoint itself is broken cannot be reached: exit 2, its errors
    proc.config.write_text(proc.config.read_text().replace("admin: {token", "admin: {tokn"),
                           encoding="utf-8")
    out = mr("reload", "-c", str(proc.config))
    assert out.returncode == 2 and "unknown key 'tokn'" in out.stderr, out


def test_reload_names_the_routing_files_as_check_does(daemon_process, tmp_path):
    """A broken routing file and `mailrouter reload`: it printed "zz-bad.yaml:3:1: a tab
    ...", the daemon's reply, which names the files relative to their directory, and from
    the admin's folder that is no file to open (check names /etc/mailrouter/rules/...). Now
    the refusal, and the files no longer read after a good one, name them as check does."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    proc = daemon_process(routing=str(rules / "*.yaml"), extra="workers: 1\n")
    (rules / "zz-bad.yaml").write_text("rules:\n  - name: y\n\twhen: {subject: a}\n",
                                       encoding="utf-8")
    out = mr("reload", "-c", str(proc.config), cwd=tmp_path)
    assert out.returncode == 1, out
    assert out.stdout.splitlines() == [
        "reload refused, old rules kept:",
        f"{rules / 'zz-bad.yaml'}:3:1: a tab in the indentation; YAML indents with spaces only "
        "— replace the tab with spaces"], out.stdout
    check = mr("check", "-c", str(proc.config), cwd=tmp_path)
    assert out.stdout.splitlines()[1] in check.stderr, check.stderr
    # the files a good reload no longer reads (the watcher may take the change first, so
    # the reply's list is given here as the daemon writes it)
    from mailrouter.cli import _routing_paths
    assert _routing_paths("routing.yaml, sub/x.yaml", (str(rules / "*.yaml"),), gone=True) == (
        f"{rules / 'routing.yaml'}, {rules / 'sub' / 'x.yaml'}")


def test_reload_gives_the_iconv_line_that_works_where_the_admin_stands(daemon_process, tmp_path):
    """A routing file saved in windows-1251 and `mailrouter reload` from another folder: the
    refusal's hint is the iconv line that converts the file in place (yamlsrc), but the
    daemon's reply names files relative to the routing directory and the CLI gave only the
    line's first name its directory back: pasted, 'iconv: cannot open input file
    zz-cp.yaml' (and an empty zz-cp.yaml.new left there). Every name of the file in the
    line is given its directory; the pasted line converts the file."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    proc = daemon_process(routing=str(rules / "*.yaml"), extra="workers: 1\n")
    bad = rules / "zz-cp.yaml"
    bad.write_bytes("rules: []\n# Счёт на оплату\n".encode("windows-1251"))
    out = mr("reload", "-c", str(proc.config), cwd=tmp_path)
    assert out.returncode == 1, out
    fix = out.stdout.splitlines()[1].partition("; it looks like windows-1251: ")[2]
    assert fix.startswith("iconv "), out.stdout
    done = subprocess.run(fix, shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done
    assert bad.read_text(encoding="utf-8") == "rules: []\n# Счёт на оплату\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("zz")) == []
    # a name the hint quotes for the shell
    from mailrouter.cli import _routing_paths
    (rules / "my file.yaml").write_text("rules: []\n", encoding="utf-8")
    said = ("my file.yaml:1:1: not UTF-8 text; iconv -f UTF-16 -t UTF-8 'my file.yaml' > "
            "'my file.yaml'.new && mv 'my file.yaml'.new 'my file.yaml'")
    full = f"{rules}/my file.yaml"
    assert _routing_paths(said, (str(rules / "*.yaml"),)) == (
        f"{full}:1:1: not UTF-8 text; iconv -f UTF-16 -t UTF-8 '{full}' > '{full}'.new && "
        f"mv '{full}'.new '{full}'")


def test_explain_text_names_each_matched_rule_once(tmp_path):
    """A matched rule is one line of `explain`'s text: it was printed as `rule:` and again as
    `because:` (the decision's reasons, which the registry keeps, name it too); the address
    book's reason is still said."""
    out = mr("explain", "--rcpt", "support@example.com", str(RULES / "samples" / "key-customer.eml"),
             cwd=RULES.parent)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for name in ("key-customer", "support-urgent"):
        assert sum(f"'{name}'" in l or f" {name} (" in l for l in lines) == 1, out.stdout
    assert "  because:  address book" in lines


def test_check_warns_about_a_routing_file_saved_as_yml_beside_a_yaml_glob(tmp_path):
    """`extra.yml` (or `more.YAML`) beside `rules/*.yaml`: the glob does not match it, so its
    aliases and rules were not loaded and check said 'ok' without a word."""
    d = tmp_path / "rules"
    shutil.copytree(RULES, d)
    (d / "extra.yml").write_text("aliases:\n  extra@example.com: mailbox:sales\n", encoding="utf-8")
    (d / "notes.txt").write_text("not YAML\n", encoding="utf-8")
    cfg = write_config(tmp_path / "config.yaml", 1, 2, 3)
    out = mr("check", "-c", str(cfg), "--routing", str(d / "*.yaml"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    warned = [l for l in out.stdout.splitlines() if "not loaded" in l]
    assert warned == ["warning: rules/extra.yml: not loaded: the glob 'rules/*.yaml' "
                      "(--routing) does not match its suffix, so its rules and addresses are "
                      "not read; rename it to 'rules/extra.yaml' to load it, or move it away"]


def test_web_passwd_for_an_unknown_person_names_the_one_meant(tmp_path):
    """`web passwd` had a did-you-mean of its own (difflib), without the note the shared
    helper adds: `pеtrova` typed with a Cyrillic е got "did you mean 'petrova'?", which
    reads as nonsense, the two looking alike. It now uses addressbook.errs.did_you_mean."""
    for typed, hint in (("petrva", "did you mean 'petrova'?"),
                        ("p\u0435trova", "did you mean 'petrova'? ('p\u0435trova': \u0435 is "
                                         "Cyrillic; retype it)"),
                        ("zzz", "(give the key under people:)")):
        out = mr("web", "passwd", typed, "--password-stdin", cwd=RULES.parent,
                 stdin="a long passphrase\n")
        assert out.returncode == 2, out
        assert out.stderr.strip() == (f"mailrouter web passwd: {typed!r} is not a person of the "
                                      "address book" + (" " if hint.startswith("(") else "; ")
                                      + hint), out.stderr

"""What a mail admin meets first, run as they run it (`python -m mailrouter.cli` in a
subprocess): errors that name the file to open, start-up refusals in one line."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import RULES, free_port, maildir_files, write_config
from tests.support.nobody import as_nobody
from tests.test_cli import CLI, mr


def test_no_routing_files_names_the_config_file(tmp_path: Path) -> None:
    """`routing:` matching no file: check and run name the config file that says so; the
    message was "<config>: no routing files match ...", which named nothing to open; then
    "config.yaml: no routing ...", with no line: now the line of its `routing:` key."""
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port(),
                       "workers: 1\n", routing=str(tmp_path / "nothere" / "*.yaml"))
    line = next(n for n, text in enumerate(cfg.read_text().splitlines(), 1)
                if text.startswith("routing:"))
    want = f"{cfg}:{line}:1: no routing files match {tmp_path / 'nothere' / '*.yaml'}"
    check = mr("check", "-c", str(cfg))
    assert check.returncode == 1 and want in check.stderr, check.stderr
    run = mr("run", "-c", str(cfg))
    assert run.returncode == 2 and want in run.stderr, run.stderr
    assert "<config>" not in check.stderr + run.stderr


# -- directories the daemon writes in: refused at start and by check ----------------

@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """A tmpfs under tmp_path, filled by the test and then made read-only by calling
    the fixture's value: what ProtectSystem=strict makes of /etc, or a full-stop mount."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): {res.stderr.strip()}")

    def freeze() -> Path:
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        return mnt
    try:
        yield freeze
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("key", ["delivery.maildir_root", "registry.url", "postfix_maps.dir"])
def test_unwritable_store_or_registry_is_refused_by_check_and_run(tmp_path: Path, read_only,
                                                                   key: str) -> None:
    """A Maildir root, SQLite registry or the Postfix tables the daemon rewrites on each
    reload (postfix_maps.on_reload) on a read-only file system: `check` exits 1 and
    `run` exits 2, each naming the key, the path and the fix in one line. The daemon used
    to start and answer the first message 451 (Maildir), fail to open the registry with a
    stray aiosqlite traceback, or log postfix_maps_failed at each reload while Postfix kept
    tables that refuse every new address with 550."""
    place = read_only() / "sub"
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port(),
                       "workers: 1\n" + (f"postfix_maps: {{dir: '{place}', on_reload: true}}\n"
                                          if key == "postfix_maps.dir" else ""))
    old = {"delivery.maildir_root": f"maildir_root: '{tmp_path / 'var' / 'mail'}'",
           "registry.url": f"///{tmp_path / 'var' / 'registry.db'}'"}.get(key, "")
    new = {"delivery.maildir_root": f"maildir_root: '{place}'",
           "registry.url": f"///{place / 'registry.db'}'"}.get(key, "")
    cfg.write_text(cfg.read_text().replace(old, new))
    want = f"{key} {place} is not writable ("
    check = mr("check", "-c", str(cfg))
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"{want}{place.parent}: read-only file system): " in check.stderr, check.stderr
    assert f"set {key} in {cfg} to a directory that is" in check.stderr
    run = mr("run", "-c", str(cfg))
    assert run.returncode == 2, run.stderr
    assert f"{want}Read-only file system)" in run.stderr and "Traceback" not in run.stderr


def _smtp_send(port: int, rcpt: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("client@outside.test")
        s.rcpt(rcpt)
        return s.data(b"From: client@outside.test\r\nTo: " + rcpt.encode()
                      + b"\r\nSubject: ro etc\r\n\r\nhello\r\n")


def test_config_in_a_read_only_etc_needs_intents_dir(tmp_path: Path, read_only) -> None:
    """docs/install.md's layout under the unit's ProtectSystem=strict: config.yaml in a
    read-only /etc/mailrouter, registry and Maildirs under a writable state directory.
    The intent journals went to var/ beside the config file, so the daemon started and
    every Maildir copy got 451 (the intent could not be written). Now `run` refuses to
    start naming delivery.intents_dir; with it set under the state directory mail flows."""
    state = tmp_path / "state"
    etc = tmp_path / "ro"
    smtp = free_port()
    text = (f"hostname: mx.test\nworkers: 1\n"
            f"listen: {{smtp: '127.0.0.1:{smtp}', lmtp: null, admin: null}}\n"
            f"routing: ['{RULES / '*.yaml'}']\n"
            f"registry: {{url: 'sqlite+aiosqlite:///{state / 'registry.db'}'}}\n"
            f"shutdown_grace: 5\n")
    (etc / "config.yaml").write_text(text + f"delivery: {{maildir_root: '{state / 'mail'}'}}\n")
    (etc / "fixed.yaml").write_text(text + f"delivery: {{maildir_root: '{state / 'mail'}', "
                                    f"intents_dir: '{state / 'intents'}'}}\n")
    read_only()
    refused = mr("run", "-c", str(etc / "config.yaml"))
    assert refused.returncode == 2, refused.stderr
    assert f"delivery.intents_dir {etc / 'var' / 'intents'} is not writable (Read-only file " \
           f"system): " in refused.stderr
    assert f"set delivery.intents_dir in {etc / 'config.yaml'}" in refused.stderr
    assert mr("check", "-c", str(etc / "fixed.yaml")).returncode == 0
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CLI, "run", "-c", str(etc / "fixed.yaml")], cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", smtp), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        code, _ = _smtp_send(smtp, "sales@example.com")
        assert code == 250, log.read_text()
        assert len(maildir_files(state / "mail")) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _commands() -> list[str]:
    """Every command path of the parser ('check', 'registry search', ...)."""
    import argparse

    from mailrouter.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[str]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"{path} {name}".strip()
                    yield from walk(sub, f"{path} {name}".strip())
    return list(walk(build_parser(), ""))


@pytest.mark.parametrize("command", _commands())
def test_every_command_help_shows_an_example_that_parses(command: str) -> None:
    """`mailrouter COMMAND --help` says what it does, lists its options and ends with an
    example; each example is a command line this parser takes, for that very command
    (none had one: the admin had to guess how the options combine)."""
    import shlex

    from mailrouter.cli import build_parser
    out = mr(*command.split(), "--help")
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith(f"usage: mailrouter {command}") and "options:" in out.stdout
    assert "\nexample:\n" in out.stdout, out.stdout
    examples = out.stdout.split("\nexample:\n", 1)[1].strip().splitlines()
    assert examples
    for line in examples:
        words = shlex.split(line.split("&&")[0].split("#")[0].split("|")[-1])
        assert words[0] == "mailrouter", line
        args = build_parser().parse_args(words[1:])
        assert args._parser.prog == f"mailrouter {command}", line


def test_a_stray_argument_is_reported_by_its_command() -> None:
    """`mailrouter check --bogus` showed the program's usage ("COMMAND ...") as if no
    command had been given; it is the command's usage and name, exit 2, no traceback."""
    out = mr("check", "--bogus")
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["usage: mailrouter check [-h] [-c FILE] [--routing GLOB]",
                                       "mailrouter check: error: unrecognized arguments: --bogus"]
    out = mr("registry", "search", "--subject", "x", "extra")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.splitlines()[-1] == ("mailrouter registry search: error: unrecognized "
                                           "arguments: extra")


def test_reload_with_no_daemon_says_so_in_one_line(tmp_path: Path) -> None:
    """`mailrouter reload` with nothing on the admin port: one line with the reason and what
    to look at, exit 2 (it printed "<urlopen error [Errno 111] Connection refused>")."""
    admin = free_port()
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), admin)
    out = mr("reload", "-c", str(cfg))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"mailrouter reload: cannot reach http://127.0.0.1:{admin}/-/reload: Connection refused; "
        "is the daemon running with this config (systemctl status mailrouter)?"]


def test_check_as_another_user_warns_on_permissions_only(tmp_path: Path) -> None:
    """An admin who is not the daemon's user runs `check` (docs: check, test, then reload):
    a directory only the daemon's user may write is a warning for them, not an error
    (`run` still refuses it as the daemon's user); a read-only one stays an error. Run in
    a forked child with the euid of nobody: root may write anywhere."""
    import json
    import os

    from mailrouter.config import load_config
    from mailrouter.health import unwritable
    store = tmp_path / "store"
    store.mkdir(mode=0o755)                  # root's: nobody may not write in it
    path = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port())
    path.write_text(path.read_text().replace(
        f"maildir_root: '{tmp_path / 'var' / 'mail'}'",
        f"maildir_root: '{store / 'mail'}', intents_dir: '{store / 'intents'}'"))
    cfg = load_config(path)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                              # the child: say what check would, then leave
        try:
            os.setegid(65534)
            os.seteuid(65534)
            denied: list[str] = []
            errors = unwritable(cfg, create=False, others=denied)
            os.write(write, json.dumps([errors, denied]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as got:
        errors, denied = json.loads(got.read() or "[[], []]")
    os.waitpid(pid, 0)
    assert errors == []
    assert sorted(line.split(" ", 1)[0] for line in denied) == [
        "delivery.intents_dir", "delivery.maildir_root", "registry.url"]
    assert "permission denied to uid 65534" in denied[0]
    assert unwritable(cfg, create=False) == []        # root: nothing to say


def test_registry_made_by_root_is_refused_for_the_daemons_user() -> None:
    """docs/install.md, as root: `mailrouter db upgrade` before the first start makes
    /var/lib/mailrouter/registry.db root's, 0644. The directory test passed, so `check`
    said ok and the daemon (User=mailrouter) started, /readyz said ok, and every message
    got 451 "Registry temporarily unavailable". Now, as the daemon's user, `run` refuses
    to start naming the file (`check` warns: the daemon's user may be another)."""
    import shutil
    import tempfile

    from mailrouter.config import load_config
    from mailrouter.health import unwritable
    top = Path(tempfile.mkdtemp(prefix="mr-regroot."))     # tmp_path is 0700: nobody
    try:                                                    # could not reach the state dir
        top.chmod(0o755)
        state = top / "state"
        state.mkdir()
        shutil.chown(state, 65534, 65534)
        path = write_config(top / "config.yaml", free_port(), free_port(), free_port())
        path.write_text(path.read_text().replace(
            f"maildir_root: '{top / 'var' / 'mail'}'", f"maildir_root: '{top / 'var' / 'mail'}', "
            f"intents_dir: '{top / 'var' / 'intents'}'").replace(str(top / "var"), str(state)))
        upgrade = mr("db", "upgrade", "-c", str(path))
        assert upgrade.returncode == 0, upgrade.stderr
        db = state / "registry.db"
        assert db.stat().st_uid == 0
        mode = db.stat().st_mode & 0o777
        assert not mode & 0o007, oct(mode)          # 0640 & ~umask: no one else reads the mail
        cfg = load_config(path)

        def checks() -> list[list[str]]:
            denied: list[str] = []
            checked = unwritable(cfg, create=False, others=denied)
            return [unwritable(cfg, create=True), checked, denied]
        run, check, denied = as_nobody(checks, None)
        want = (f"registry.url {db} is not writable (registry.db is uid 0's, mode {mode:04o}: "
                f"permission denied to uid 65534): make it writable by the user")
        assert len(run) == 1 and run[0].startswith(want), run
        assert check == [] and len(denied) == 1 and denied[0].startswith(want), denied
        shutil.chown(db, 65534, 65534)                   # the fix the line names
        assert as_nobody(checks, None) == [[], [], []]   # (None: the child died)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_postfix_tables_in_an_impossible_directory_say_where_and_why(tmp_path: Path) -> None:
    """`mailrouter postfix --dir` under a file: one line naming the directory and the
    reason, exit 2 (it printed Python's "[Errno 20] Not a directory: '...'")."""
    (tmp_path / "file").write_text("")
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port())
    out = mr("postfix", "-c", str(cfg), "--dir", str(tmp_path / "file" / "maps"))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"mailrouter postfix: the tables were not written: {tmp_path / 'file' / 'maps'}: "
        "Not a directory; set postfix_maps.dir to a directory"]
    out = mr("postfix", "-c", str(cfg), "--dir", str(tmp_path / "file"))    # a file: the fix
    assert out.returncode == 2                                              # (was "File exists")
    assert out.stderr.splitlines() == [
        f"mailrouter postfix: the tables were not written: {tmp_path / 'file'}: "
        "File exists; set postfix_maps.dir to a directory"]


def test_a_missing_config_from_the_environment_says_where_it_came_from(tmp_path: Path) -> None:
    """$MAILROUTER_CONFIG naming a missing file: the error says the name came from there
    (an admin who typed no -c was told only "/x.yaml: file not found")."""
    missing = tmp_path / "nope.yaml"
    out = mr("check", env={"MAILROUTER_CONFIG": str(missing)})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [
        "mailrouter: configuration has 1 error(s):",
        f"  {missing}: file not found; check the path",
        "  (the file named by $MAILROUTER_CONFIG; give -c FILE or unset it)"]


def test_ctrl_c_at_the_password_prompt_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C at `web passwd`'s prompt: exit 130 and one line, not a KeyboardInterrupt
    traceback through getpass; no password is set."""
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port())
    assert mr("db", "upgrade", "-c", str(cfg)).returncode == 0
    # SIGINT back to its default in the child: a suite started in the background by a
    # non-interactive shell inherits it ignored, and the child then waited at its prompt
    # until the test's timeout
    proc = subprocess.Popen([*CLI, "web", "passwd", "petrova", "-c", str(cfg)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None and proc.stderr is not None
    prompt = b""
    while b"new password: " not in prompt:          # getpass without a tty: on stderr
        chunk = proc.stderr.read1(1024)
        assert chunk, prompt
        prompt += chunk
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read().decode()
    assert proc.wait(30) == 130
    assert "Traceback" not in rest
    assert rest.strip() == "mailrouter web: interrupted; nothing more done"


def test_the_install_guide_says_which_listeners_the_example_config_opens() -> None:
    """docs/install.md step 4 (the service starts with config.example.yaml as copied in
    step 3) names each listener the example opens, on loopback, the web view included:
    it was on at 127.0.0.1:9126 and the guide said nothing of it."""
    from mailrouter.config import load_config
    root = RULES.parent
    cfg = load_config(root / "config.example.yaml")
    guide = (root / "docs" / "install.md").read_text(encoding="utf-8")
    step4 = " ".join(guide.split("## 4.", 1)[1].split("## 5.", 1)[0].split())
    assert cfg.web is not None and cfg.web.host == "127.0.0.1"        # loopback, never 0.0.0.0
    for name, lst in (("smtp", cfg.smtp), ("lmtp", cfg.lmtp), ("admin", cfg.admin),
                      ("web", cfg.web)):
        assert lst is not None and lst.host == "127.0.0.1", name
        assert f":{lst.port}" in step4, (name, lst)
    assert f"{cfg.web.host}:{cfg.web.port}" in step4 and "web: null" in step4
    assert "mailrouter web passwd" in step4


def test_error_paths_a_new_admin_meets_name_the_file_and_the_fix(tmp_path: Path) -> None:
    """One line each, exit 2, no traceback: a negative -n (it listed everything, SQLite's
    LIMIT -1), `reload` with listen.admin: null (it named no file or key), `db upgrade` on
    a file that is no database (it did not say which), an empty address (": unknown")."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("listen: {smtp: 127.0.0.1:0, lmtp: null, admin: null, web: null}\n"
                   f"routing: ['{RULES / '*.yaml'}']\n"
                   f"registry: {{url: 'sqlite+aiosqlite:///{tmp_path / 'registry.db'}'}}\n")
    for cmd in (["registry", "-n", "-1"], ["outbox", "-n", "-3"], ["outbox", "-n", "x"]):
        out = mr(*cmd, "-c", str(cfg))
        assert out.returncode == 2 and "is not a count (0 or more; 0: all)" in out.stderr, cmd
    out = mr("reload", "-c", str(cfg), cwd=tmp_path)
    assert (out.returncode, out.stderr.splitlines()) == (2, [
        "mailrouter reload: config.yaml has no admin listener (listen.admin: null): send SIGHUP "
        "to the daemon (systemctl kill -s HUP mailrouter), or set listen.admin, e.g. "
        "127.0.0.1:9125"])
    (tmp_path / "registry.db").write_text("not a database\n")
    out = mr("db", "upgrade", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"mailrouter db upgrade: {tmp_path / 'registry.db'}: ")
    assert out.stderr.rstrip().endswith("(registry.url in config.yaml)")
    out = mr("address", "", "-c", str(cfg))
    assert (out.returncode, out.stdout) == (2, ""), out.stdout
    assert "give an address, e.g. sales@example.com, or 'export'" in out.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_a_start_refused_by_the_registry_names_it_and_the_fix(tmp_path: Path, workers: int) -> None:
    """`run` with a PostgreSQL that is down, or a SQLite registry.url naming a file that is
    no database: the one start_failed line said "registry open failed (ConnectionRefused...)"
    with no database named and nothing to do; it names the registry (the URL without its
    password), what is wrong, the key and the config file. Exit 2, no traceback."""
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port(),
                       f"workers: {workers}\n")
    sqlite = f"registry: {{url: 'sqlite+aiosqlite:///{tmp_path / 'var' / 'registry.db'}'}}"
    text = cfg.read_text()
    # workers: 1 opens the registry in serve(); more migrate it first, in the supervisor
    op = "open" if workers == 1 else "upgrade"
    cfg.write_text(text.replace(sqlite, "registry: {url: 'postgresql+asyncpg://mr:s3cret@"
                                        "127.0.0.1:1/mr', timeout: 3}"))
    out = mr("run", "-c", str(cfg), timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    failed = [line for line in out.stderr.splitlines() if "event=start_failed" in line]
    assert len(failed) == 1 and failed[0].endswith(
        f"error=\"postgresql+asyncpg://mr@127.0.0.1:1/mr: registry {op} failed "
        "(ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)); the "
        "database server cannot be reached (not running, or a wrong host or port); check "
        f"registry.url in {cfg}\" config='{cfg}'; not starting"), out.stderr
    assert "s3cret" not in out.stderr
    (tmp_path / "var").mkdir(exist_ok=True)
    (tmp_path / "var" / "registry.db").write_text("a text file, not a database\n" * 10)
    cfg.write_text(text)
    out = mr("run", "-c", str(cfg), timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    failed = [line for line in out.stderr.splitlines() if "event=start_failed" in line]
    assert len(failed) == 1 and failed[0].endswith(
        f"error='{tmp_path / 'var' / 'registry.db'}: registry {op} failed (DatabaseError: "
        f"file is not a database); the file is not a SQLite database; check registry.url in "
        f"{cfg}' config='{cfg}'; not starting"), out.stderr


def test_a_listener_on_a_name_that_does_not_resolve_says_so(tmp_path: Path) -> None:
    """listen.smtp on a host name that does not resolve (RFC 6761 .invalid): the fix given
    was "another program (a second mailrouter, an MTA) may hold it: stop it"; it says the
    name does not resolve and to use an address of this host. Exit 2, one line."""
    smtp = free_port()
    cfg = write_config(tmp_path / "config.yaml", smtp, free_port(), free_port(), "workers: 1\n")
    cfg.write_text(cfg.read_text().replace(f"127.0.0.1:{smtp}", f"mx.nowhere.invalid:{smtp}"))
    out = mr("run", "-c", str(cfg), timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    failed = [line for line in out.stderr.splitlines() if "event=start_failed" in line]
    assert len(failed) == 1, out.stderr
    assert (f"cannot listen on mx.nowhere.invalid:{smtp} for smtp (" in failed[0]
            and "; the name mx.nowhere.invalid does not resolve here: use one of this host's "
                "addresses (ip -br addr) or change listen.smtp in the config" in failed[0]
            and "may hold it" not in failed[0]), failed[0]


def test_a_full_maildir_disk_at_start_says_full_not_unwritable(tmp_path: Path) -> None:
    """A Maildir file system with no space left: `run` refuses to start (exit 2), as it
    does for one it cannot write. It said "is not writable (No space left on device): make
    it writable by the user mailrouter runs as", the wrong fix; it now says the file system
    is full, how much is free, and to free space there."""
    from tests.support.tmpfs import tmpfs_on
    from tests.test_faults import fill
    with tmpfs_on(tmp_path / "store", "256k") as store:
        fill(store / "filler")
        cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port(), "workers: 1\n")
        cfg.write_text(cfg.read_text().replace(f"maildir_root: '{tmp_path / 'var' / 'mail'}'",
                                               f"maildir_root: '{store / 'mail'}'"))
        run = mr("run", "-c", str(cfg))
    assert run.returncode == 2, run.stderr
    assert f"delivery.maildir_root {store / 'mail'} is full (No space left on device, 0.0 GiB free): " \
           f"free space on its file system, or set delivery.maildir_root in {cfg}" in run.stderr, run.stderr
    assert "make it writable" not in run.stderr and "Traceback" not in run.stderr


def test_ctrl_c_stops_the_daemon_cleanly_as_its_help_says(tmp_path: Path) -> None:
    """README's first command runs the daemon in the foreground and says Ctrl-C stops it;
    `run --help` named only SIGTERM, so a newcomer did not know whether Ctrl-C would lose
    the mail in flight. Ctrl-C (SIGINT to the terminal's whole process group, the supervisor
    and its workers alike) stops it as SIGTERM does: exit 0, `event=stopped`, no traceback;
    and `run --help` says so."""
    import os

    assert "Ctrl-C" in mr("run", "--help").stdout
    smtp = free_port()
    cfg = write_config(tmp_path / "config.yaml", smtp, free_port(), free_port(), "workers: 2\n")
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        # SIGINT at its default in the child, as under a terminal (a suite started in the
        # background by a non-interactive shell inherits it ignored)
        proc = subprocess.Popen([*CLI, "run", "-c", str(cfg)], cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", smtp), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        code, _ = _smtp_send(smtp, "sales@example.com")
        assert code == 250, log.read_text()
        while log.read_text().count("event=started loop=") < 2:   # both workers up
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    text = log.read_text()
    assert "event=stopped" in text and "Traceback" not in text, text
    assert "KeyboardInterrupt" not in text, text
    # worker 0's start line names the config and where the mail goes (a start without -c
    # that found /etc/mailrouter/config.yaml stored mail under /etc/mailrouter/var, and no
    # line said so); the other worker's does not repeat it
    started = [ln for ln in text.splitlines() if "event=started loop=" in ln]
    assert len(started) == 2, text
    assert sum(f"config={cfg} mail={tmp_path / 'var' / 'mail'}" in ln for ln in started) == 1, \
        started

"""The commands and files the install documents name, against the program and the tree.

README.md's and docs/install.md's shell blocks are what an admin pastes: every `mailrouter`
command in them (and in the systemd unit's Exec lines and the Postfix script) must parse
with the CLI's own parser, and every deploy/ or docs/ file they name must exist, so a
renamed option, subcommand or file fails here instead of on the admin's terminal.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from mailrouter.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/install.md"]


def _shell_commands(text: str) -> list[list[str]]:
    """Each simple command of each ```sh block (continuations joined, comments dropped)."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*", "", line)
            for part in re.split(r"&&|\|\||;|\|", line):
                if part.strip():
                    out.append(shlex.split(part))
    return out


def _mailrouter_args(words: list[str]) -> list[str] | None:
    """The arguments after the program, when `words` runs mailrouter (as itself, from a
    venv's bin/, or behind `runuser -u USER --`)."""
    for i, word in enumerate(words):
        if re.search(r"(^|/)bin/mailrouter$", word) or (word == "mailrouter" and i == 0):
            return words[i + 1:]
    return None


def _doc_commands() -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        for words in _shell_commands((REPO / doc).read_text(encoding="utf-8")):
            args = _mailrouter_args(words)
            if args is not None:
                found.append((doc, args))
    unit = (REPO / "deploy" / "mailrouter.service").read_text(encoding="utf-8")
    for line in re.findall(r"^Exec\w*=(.*)$", unit, re.M):
        found.append(("deploy/mailrouter.service", _mailrouter_args(shlex.split(line)) or ["?"]))
    script = (REPO / "deploy" / "postfix" / "mailrouter-postfix.sh").read_text(encoding="utf-8")
    for line in re.findall(r"^\s*\$MAILROUTER (.*?)(?:>.*)?$", script, re.M):
        found.append(("deploy/postfix/mailrouter-postfix.sh", shlex.split(line)))
    return found


COMMANDS = _doc_commands()


def test_the_documents_show_commands():
    """The walk finds what an admin runs: the tour's and install.md's, the unit's, the
    script's (a change to the block format must not leave the test checking nothing)."""
    docs = {doc for doc, _ in COMMANDS}
    assert docs == {*DOCS, "deploy/mailrouter.service", "deploy/postfix/mailrouter-postfix.sh"}
    assert {args[0] for _, args in COMMANDS} >= {"run", "check", "test", "explain", "registry",
                                                 "address", "postfix", "reload", "--version"}


@pytest.mark.parametrize("doc, args", COMMANDS, ids=[f"{d}:{' '.join(a)}" for d, a in COMMANDS])
def test_each_documented_command_parses(doc, args):
    """argparse takes the command as written: subcommand, options, their values."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(args)
    except SystemExit as exc:
        assert exc.code == 0, f"{doc}: mailrouter {' '.join(args)}: {err.getvalue()}"


@pytest.mark.parametrize("doc", DOCS + ["deploy/mailrouter.service", "deploy/Containerfile",
                                        "deploy/postfix/mailrouter-postfix.sh",
                                        "deploy/dovecot/mailrouter.conf"])
def test_each_repository_file_the_document_names_exists(doc):
    """deploy/..., docs/... and config.example.yaml as the documents name them, in prose or
    in commands (`cp deploy/dovecot/mailrouter.conf ...`)."""
    text = (REPO / doc).read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w/.])((?:deploy|docs)/[\w./-]*\w|config\.example\.yaml)", text))
    assert named or doc.startswith("deploy/"), doc
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert missing == [], f"{doc} names files that do not exist: {missing}"


RULES_README = REPO / "mailrouter" / "defaults" / "rules" / "README.md"


def _yaml_blocks(path: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_the_rules_readme_examples_load_and_pass(tmp_path):
    """rules/README.md's ```yaml blocks are what an ops person pastes into a routing file:
    the rule example with the example company's book and its test case (check clean, the
    case passes), the autoreply example and the address book example (check clean). The
    address book had no example at all; the rule example drew a 'use счет*' note."""
    import shutil
    import subprocess
    import sys

    blocks = _yaml_blocks(RULES_README)
    rules_block = next(b for b in blocks if b.startswith("calendars:"))
    tests_block = next(b for b in blocks if b.startswith("tests:"))
    replies_block = next(b for b in blocks if b.startswith("autoreplies:"))
    book_block = next(b for b in blocks if b.startswith("domains:"))
    defaults = RULES_README.parent
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(defaults / "company.yaml", one / "company.yaml")
    shutil.copytree(defaults / "samples", one / "samples")
    (one / "rules.yaml").write_text(rules_block + tests_block, encoding="utf-8")
    two = tmp_path / "two"
    two.mkdir()
    (two / "book.yaml").write_text(book_block, encoding="utf-8")
    (two / "replies.yaml").write_text(replies_block, encoding="utf-8")
    for folder in (one, two):
        config = tmp_path / f"{folder.name}-config.yaml"
        config.write_text(f"routing: ['{folder}/*.yaml']\ndelivery: {{lmtp: {{host: 127.0.0.1, "
                          "port: 24}, smtp: {host: 127.0.0.1, port: 10027}}\n", encoding="utf-8")
        for command in ("check", "test"):
            # the book alone has no rule test: `test` exits 5 on that unless told it is fine
            extra = ["--allow-no-tests"] if command == "test" and folder is two else []
            out = subprocess.run([sys.executable, "-m", "mailrouter.cli", command, "-c",
                                  str(config), *extra], capture_output=True, text=True, cwd=REPO,
                                 timeout=60, check=False)
            assert out.returncode == 0, (folder.name, command, out.stdout, out.stderr)
            assert "warning" not in out.stdout + out.stderr, (folder.name, command, out.stdout)
            assert "note:" not in out.stdout + out.stderr, (folder.name, command, out.stdout)


def test_the_rules_readme_failure_line_is_what_mailrouter_test_prints(tmp_path):
    """rules/README.md shows the line `mailrouter test` prints for a failing case; it is the
    shape an ops person looks for (file:line, the case, expected vs got, and why: the rule,
    its file:line, what it matched). The example company's sales@ case expecting the folder
    Finance must print exactly that line, with this copy's paths and lines."""
    import shutil
    import subprocess
    import sys

    documented = re.search(r"prints one line per failing case:\n`(.*?)`", RULES_README.read_text(
        encoding="utf-8"), re.S)
    assert documented, "the failure line example moved out of rules/README.md"
    shown = documented.group(1).replace("\n", " ")
    rules = tmp_path / "rules"
    shutil.copytree(RULES_README.parent, rules)
    routing = rules / "routing.yaml"
    text = routing.read_text(encoding="utf-8")
    routing.write_text(text + "\n  - name: NAME\n    headers: {From: a@b.example, Subject: x}\n"
                       "    rcpt: sales@example.com\n    expect: {folder: Finance}\n",
                       encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(f"routing: ['{rules}/*.yaml']\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "mailrouter.cli", "test", "-c", str(config)],
                         capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert out.returncode == 1, out
    [line] = [ln for ln in out.stdout.splitlines() if "test NAME:" in ln]
    case_line = len(text.splitlines()) + 2
    rule_line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln == "  - name: sales")
    assert line == (shown.replace("/etc/mailrouter/rules", str(rules))
                    .replace("routing.yaml:52:", f"routing.yaml:{case_line}:")
                    .replace("routing.yaml:39)", f"routing.yaml:{rule_line})")), (line, shown)


def test_the_readme_says_what_its_first_command_needs_before_it():
    """A newcomer on a bare Debian 12 runs the README's first command as soon as they see it:
    `python3 -m venv` stops there with "ensurepip is not available" until python3-venv is
    installed, and the line works only in the top folder of the checkout (pip installs `.`;
    elsewhere "does not appear to be a Python project"). The README named python3-venv only
    after the test suite's block, below the command that needed it, and named no folder."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```sh\n(.*?)```", text, re.S)
    assert first and first.group(1).startswith("python3 -m venv .venv"), "the first block moved"
    before = text[:first.start()]
    assert "apt-get install python3-venv" in before
    assert "top folder of your checkout" in before
    # the tour's paths (var/mail, rules/samples, .venv) are the checkout's too
    tour = text.index("```sh\nswaks ")
    assert "same checkout" in " ".join(text[tour - 200:tour].split())


def test_the_install_guide_says_where_its_relative_paths_are():
    """docs/install.md copies `config.example.yaml`, `rules/*.yaml` and `deploy/...` by
    relative paths (step 2 even `cp docs/install.md README.md`) but never said to run in the
    checkout: from root's home, a fresh root shell, `cp` said "No such file or directory"."""
    text = (REPO / "docs" / "install.md").read_text(encoding="utf-8")
    before = " ".join(text[:text.index("```sh")].split())
    assert "top folder of the mailrouter checkout" in before

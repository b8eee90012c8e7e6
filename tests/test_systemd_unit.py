"""docs/install.md followed on a Debian machine booted under a real systemd.

The machine is this one's own root through an overlay on a tmpfs, booted with systemd-nspawn on
a private network (tests/support/nspawn.py). The install document's shell blocks run there as
an admin pastes them (steps 1-6; apt-get lines dropped: the packages are this machine's), with
the config.yaml edits step 3 describes in words. Then the shipped unit, with its sandbox
(ProtectSystem=strict, SystemCallFilter, RestrictAddressFamilies, ...), must start, take mail
from Postfix and hand it to Dovecot's LMTP, reload (also Postfix's tables, postfix_maps), refuse
a broken reload while the old rules keep running, and stop cleanly.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tests.support.daemon import REPO
from tests.support.nspawn import Machine, booted

pytestmark = pytest.mark.e2e

INSTALL = REPO / "docs" / "install.md"
CONFIG = "/etc/mailrouter/config.yaml"
IGNORED = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".mypy_cache", ".ruff_cache",
                                 ".pytest_cache", "var", "*.egg-info", "build")


def install_blocks() -> dict[int, list[str]]:
    """The ```sh blocks of each numbered step of docs/install.md, apt-get lines dropped."""
    steps: dict[int, list[str]] = {}
    for head, body in re.findall(r"^## (\d+)\. [^\n]*\n(.*?)(?=^## |\Z)",
                                 INSTALL.read_text(encoding="utf-8"), re.M | re.S):
        steps[int(head)] = ["\n".join(l for l in block.splitlines()
                                      if not l.lstrip().startswith("apt-get "))
                            for block in re.findall(r"```sh\n(.*?)```", body, re.S)]
    return steps


def edited(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert old in text, f"config.example.yaml no longer has {old!r}"
        text = text.replace(old, new, 1)
    return text


def prepare(m: Machine) -> None:
    """Before the boot: the source tree in /opt/src, a Postfix and a Dovecot as a Debian
    install leaves them (main.cf, a certificate), then step 2 (the venv: needs PyPI)."""
    shutil.copytree(REPO, m.root / "opt" / "src", ignore=IGNORED)
    m.chroot("cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf\n"
             "[ -f /etc/postfix/master.cf ] || cp /usr/share/postfix/master.cf.dist /etc/postfix/master.cf\n"
             "postconf -e myhostname=mx.example.net mydestination=localhost "
             "inet_interfaces=loopback-only inet_protocols=ipv4 mynetworks=127.0.0.0/8 "
             "compatibility_level=3.6 maillog_file=/var/log/postfix.log\n"
             "mkdir -p /etc/dovecot/private\n"
             "openssl req -new -x509 -nodes -days 30 -subj /CN=mx.example.net "
             "-keyout /etc/dovecot/private/dovecot.key -out /etc/dovecot/private/dovecot.pem 2>/dev/null\n")
    [program] = install_blocks()[2]
    m.chroot("cd /opt/src\n" + program.replace("/path/to/mailrouter", "/opt/src"), timeout=900)


def smtp(m: Machine, rcpt: str, subject: str = "test") -> int:
    """swaks through Postfix on port 25 of the machine: its exit code (0: accepted)."""
    return m.sh(f"swaks -s 127.0.0.1 -p 25 -f client@outside.test -t {rcpt} "
                f"--h-Subject '{subject}' --silent 2", timeout=60).returncode


def test_install_md_under_a_real_systemd(tmp_path):
    steps = install_blocks()
    with booted(tmp_path / "machine", prepare) as m:
        m.ok(steps[1][0])
        m.ok("cd /opt/src\n" + steps[3][0])
        cfg = m.root / CONFIG.lstrip("/")
        cfg.write_text(edited(
            cfg.read_text(encoding="utf-8"),
            ("sqlite+aiosqlite:///var/registry.db", "sqlite+aiosqlite:////var/lib/mailrouter/registry.db"),
            ("maildir_root: var/mail ", "maildir_root: /var/lib/mailrouter/mail "),
            ("intents_dir: var/intents ", "intents_dir: /var/lib/mailrouter/intents "),
            ("  # lmtp: {host: 127.0.0.1, port: 24,", "  lmtp: {host: 127.0.0.1, port: 24,"),
            ("  # smtp: {host: 127.0.0.1, port: 10027,", "  smtp: {host: 127.0.0.1, port: 10027,"),
            ("  relay: null ", "  relay: 127.0.0.1:10027 ")), encoding="utf-8")
        out = m.ok(steps[3][1])
        assert "sales@example.com" in out
        # the invoices go to Dovecot (the recommended set-up), the rest to Maildirs
        company = m.root / "etc/mailrouter/rules/company.yaml"
        company.write_text(edited(company.read_text(encoding="utf-8"),
                                  ("finance:   {maildir: finance}",
                                   "finance:   {lmtp: finance@mail.internal}")), encoding="utf-8")
        out = m.ok("cd /opt/src\n" + steps[4][0])
        assert "Active: active (running)" in out
        m.ok("cd /opt/src\n" + steps[5][0])
        m.ok("cd /opt/src\n" + steps[6][0])
        m.ok("echo \"finance@mail.internal:$(doveadm pw -s SHA512-CRYPT -p secret):vmail:vmail::"
             "/var/mail/vmail/finance::userdb_sieve_before=/etc/dovecot/sieve/mailrouter-folders.sieve\""
             " > /etc/dovecot/mailrouter-users")
        # step 5's tables kept in step with the address book (postfix_maps, on_reload)
        # (in /var/lib/mailrouter, which the unit lets it write: the unit is not edited)
        with cfg.open("a", encoding="utf-8") as f:
            f.write('postfix_maps: {dir: /var/lib/mailrouter/postfix, '
                    'nexthop: "mailrouter:[127.0.0.1]:2525", postmap: true, on_reload: true}\n')
        m.ok("chown -R mailrouter: /var/lib/mailrouter/postfix "
             "&& systemctl restart mailrouter && systemctl is-active mailrouter")
        # Postfix's own check finds nothing wrong with them: in /etc/postfix, owned by
        # mailrouter, `postfix check` and every `postfix start` warned "not owned by root"
        m.ok("postfix check")
        assert "not owned by root" not in m.ok("cat /var/log/postfix.log")
        m.ok("for i in $(seq 100); do curl -sf 127.0.0.1:9125/readyz && exit 0; sleep 0.2; done; "
             "curl -s 127.0.0.1:9125/readyz; exit 1")

        # Postfix -> mailrouter -> Dovecot LMTP, in the folder the rules chose
        assert smtp(m, "invoices@example.com", "Счёт №42") == 0
        assert smtp(m, "nobody@example.com") != 0                  # refused by Postfix at RCPT
        # a 451 on the way is retried by Postfix, as in production: its queue is flushed
        # meanwhile (seen once: Dovecot's "Internal error occurred" while the host, whose root
        # the machine copies, had users vmail and mailrouter of its own)
        m.ok("for i in $(seq 150); do ls /var/mail/vmail/finance/Maildir/.Finance/new/* && exit 0; "
             "[ $((i % 25)) = 0 ] && postqueue -f; sleep 0.2; done; tail -20 /var/log/postfix.log; "
             "journalctl -u mailrouter -n 20; journalctl -u dovecot -n 30; exit 1")
        out = m.ok(f"/opt/mailrouter/bin/mailrouter registry -c {CONFIG} -n 1")
        assert "invoices@example.com -> finance/Finance" in out

        # a new address: the reload rebuilds Postfix's tables (postmap under the unit's
        # sandbox: it failed when RestrictAddressFamilies forbade AF_NETLINK) and Postfix takes it
        company.write_text(edited(company.read_text(encoding="utf-8"),
                                  ("  product-a@example.com: ",
                                   "  newbox@example.com: {mailbox: sales}\n  product-a@example.com: ")),
                           encoding="utf-8")
        m.ok("systemctl reload mailrouter")
        assert smtp(m, "newbox@example.com") == 0
        m.ok("for i in $(seq 150); do ls /var/lib/mailrouter/mail/sales/new/* && exit 0; "
             "sleep 0.2; done; exit 1")
        out = m.ok("stat -c '%a %U' /var/lib/mailrouter/mail/sales/new/* /var/lib/mailrouter/mail "
                   "/var/lib/mailrouter/registry.db")
        assert set(out.split("\n")[:-1]) == {"640 mailrouter", "750 mailrouter"}, out

        # a broken file: the reload fails, says where, and the old rules keep running
        routing = m.root / "etc/mailrouter/rules/routing.yaml"
        good = routing.read_text(encoding="utf-8")
        routing.write_text(good + "rules: [ {bad\n", encoding="utf-8")
        bad = m.sh("systemctl reload mailrouter")
        assert bad.returncode != 0
        assert m.ok("systemctl is-active mailrouter").strip() == "active"
        log = m.ok("journalctl -u mailrouter --no-pager -o cat")
        assert "routing.yaml:" in log and "reload refused, old rules kept" in log
        assert smtp(m, "invoices@example.com") == 0
        routing.write_text(good, encoding="utf-8")

        # step 8, upgrading, as an admin in the source tree of the new release pastes it
        [upgrade] = steps[8][:1]
        m.ok("cd /opt/src\n" + upgrade.replace("/path/to/mailrouter", "/opt/src"), timeout=900)
        assert m.ok("systemctl is-active mailrouter").strip() == "active"
        m.ok("for i in $(seq 100); do curl -sf 127.0.0.1:9125/readyz && exit 0; sleep 0.2; done; "
             "curl -s 127.0.0.1:9125/readyz; exit 1")
        assert smtp(m, "invoices@example.com", "after the upgrade") == 0

        # SIGTERM: a clean exit, no failure recorded
        m.ok("systemctl stop mailrouter")
        state = m.ok("systemctl show mailrouter -p Result -p ExecMainStatus")
        assert "Result=success" in state and "ExecMainStatus=0" in state, state
        # the unit's own settings logged nothing wrong while it ran
        assert "mode is different" not in m.ok("journalctl --no-pager -o cat")

"""deploy/: the systemd unit, the Postfix set-up script, the container files, worker count.

What an admin installs is tested as installed: `systemd-analyze verify` on the unit
(the program path pointed at a stand-in, the only thing a build box lacks), the
Postfix script run against a private Postfix that already has its own
transport_maps and relay_domains (they must survive), mail through the result.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from mailrouter.config import load_config, usable_cpus
from tests.support.daemon import REPO, RULES, maildir_files
from tests.support.ports import free_port
from tests.test_delivery_smtp import Sink

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "mailrouter.service"
SCRIPT = DEPLOY / "postfix" / "mailrouter-postfix.sh"


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_passes_systemd_analyze_verify(tmp_path):
    """`systemd-analyze verify` finds nothing: no unknown key, no bad value (it exits 0 even
    on those, so its stderr must be empty too). Only the program path is swapped for a
    stand-in, since /opt/mailrouter does not exist on the test box."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not found (apt-get install systemd)")
    fake = tmp_path / "opt" / "mailrouter" / "bin" / "mailrouter"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit = tmp_path / "mailrouter.service"
    unit.write_text(UNIT.read_text().replace("/opt/mailrouter/bin/mailrouter", str(fake)))
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_unit_config_directory_mode_is_the_one_install_md_makes():
    """ConfigurationDirectory= without a mode means 0755: on the 0750 directory install.md
    makes, systemd logged "already exists but the mode is different" at every start and
    reload (seen under a real systemd)."""
    made = re.search(r"install -d -o root -g mailrouter -m (\d+) /etc/mailrouter\b",
                     (REPO / "docs" / "install.md").read_text(encoding="utf-8"))
    assert made is not None
    s = unit_settings()
    assert s["ConfigurationDirectory"] == ["mailrouter"]
    assert s.get("ConfigurationDirectoryMode") == [made.group(1)]


def test_unit_user_umask_reload_memory_and_stop_timeout():
    """A fixed user (DynamicUser's random uid could not be given to Dovecot), UMask 0027,
    reload through `mailrouter reload` (non-zero when the rules are refused), MemoryMax,
    and a stop timeout longer than the shutdown grace of the example config."""
    s = unit_settings()
    assert "DynamicUser" not in s and s["User"] == ["mailrouter"] and s["UMask"] == ["0027"]
    assert s["ExecReload"] == ["/opt/mailrouter/bin/mailrouter reload -c /etc/mailrouter/config.yaml"]
    assert s["ExecStart"][0].startswith("/opt/mailrouter/bin/mailrouter run ")
    assert re.fullmatch(r"\d+[KMG]", s["MemoryMax"][0])
    grace = load_config(REPO / "config.example.yaml").shutdown_grace
    assert int(s["TimeoutStopSec"][0]) > grace


def test_one_return_port_everywhere():
    """The port mailrouter hands mail back to Postfix on is the same in config.example.yaml
    and in the Postfix script."""
    example = re.search(r"# smtp: \{host: 127\.0\.0\.1, port: (\d+)",
                        (REPO / "config.example.yaml").read_text())
    script = re.search(r"RETURN_PORT=\$\{RETURN_PORT:-(\d+)\}", SCRIPT.read_text())
    assert example and script and example.group(1) == script.group(1)
    assert "10026" not in SCRIPT.read_text()


def test_postfix_tables_live_where_the_unit_lets_the_daemon_write_and_not_in_etc_postfix():
    """The script's tables, and install.md's postfix_maps.dir for on_reload, are one
    directory, under the unit's StateDirectory. They were /etc/postfix/mailrouter, owned by
    mailrouter as step 5 said: `postfix check` (the script's own last step) and every
    `postfix start` then warned "not owned by root" for each file, and the unit needed a
    ReadWritePaths uncommented."""
    script = re.search(r"^MAPS=\$\{MAPS:-(\S+)\}$", SCRIPT.read_text(), re.M)
    step5 = (REPO / "docs" / "install.md").read_text(encoding="utf-8").split("## 5.", 1)[1]
    step5 = " ".join(step5.split("## 6.", 1)[0].split())
    doc = re.search(r"`postfix_maps: \{dir: (\S+),", step5)
    assert script and doc and script.group(1) == doc.group(1)
    maps = Path(doc.group(1))
    assert Path("/etc/postfix") not in maps.parents
    state = [Path("/var/lib") / d for line in unit_settings()["StateDirectory"] for d in line.split()]
    assert any(s in maps.parents for s in state), (maps, state)
    assert f"chown -R mailrouter: {maps}" in step5
    assert "ReadWritePaths=/etc/postfix" not in UNIT.read_text()


def test_example_postfix_maps_nexthop_is_the_set_up_scripts_transport():
    """The set-up script routes our domains through its `mailrouter` transport (its recipient
    limit, its log name) and install.md's postfix_maps says so; config.example.yaml's
    commented postfix_maps named smtp:[127.0.0.1]:2525, so the daemon, rewriting the
    transport table at each reload, moved the mail to Postfix's plain smtp transport."""
    example = re.search(r'^#\s+nexthop: "(\S+)"', (REPO / "config.example.yaml").read_text(), re.M)
    step5 = (REPO / "docs" / "install.md").read_text(encoding="utf-8").split("## 5.", 1)[1]
    doc = re.search(r'nexthop: "(\S+)"', step5)
    assert example and doc and example.group(1) == doc.group(1)
    assert "--transport mailrouter" in SCRIPT.read_text()
    assert doc.group(1).startswith("mailrouter:")


def test_container_ignore_files_keep_state_out():
    """.dockerignore and .containerignore exist, agree, and keep out the venv, var/ (stored
    mail, the registry) and .git; the Containerfile says how long a stop must wait."""
    docker, podman = (REPO / ".dockerignore").read_text(), (REPO / ".containerignore").read_text()
    assert docker == podman
    for entry in (".venv", "var", ".git"):
        assert entry in docker.splitlines()
    text = (DEPLOY / "Containerfile").read_text()
    assert "docker stop -t 45" in text and "--stop-timeout 45" in text


def test_usable_cpus_follows_affinity():
    """workers: auto counts the CPUs we may run on: under `taskset -c 0` it is 1."""
    if shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs taskset and two CPUs")
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                          "from mailrouter.config import auto_workers; print(auto_workers())"],
                         capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert out.stdout.strip() == "1", out.stderr


@pytest.mark.parametrize("v2, expect", [
    ({"cpu.max": "150000 100000"}, 2), ({"cpu.max": "max 100000"}, None),
    ({"cpu.max": "50000 100000", "parent": "300000 100000"}, 1),
    ({"parent": "100000 100000"}, 1)])
def test_usable_cpus_reads_the_tightest_cgroup_quota(tmp_path, v2, expect):
    """cgroup v2 cpu.max on our cgroup or any ancestor caps the count, rounded up; "max"
    is no limit. (docker --cpus=1.5 writes "150000 100000".)"""
    (tmp_path / "proc").write_text("0::/parent/me\n")
    me = tmp_path / "fs" / "parent" / "me"
    me.mkdir(parents=True)
    if "cpu.max" in v2:
        (me / "cpu.max").write_text(v2["cpu.max"] + "\n")
    if "parent" in v2:
        (me.parent / "cpu.max").write_text(v2["parent"] + "\n")
    cpus = len(os.sched_getaffinity(0))
    want = cpus if expect is None else min(cpus, expect)
    assert usable_cpus(tmp_path / "fs", tmp_path / "proc") == want


def test_usable_cpus_cgroup_v1(tmp_path):
    """cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us; -1 is no limit."""
    (tmp_path / "proc").write_text("4:cpu,cpuacct:/box\n")
    box = tmp_path / "fs" / "cpu,cpuacct" / "box"
    box.mkdir(parents=True)
    (box / "cpu.cfs_quota_us").write_text("100000\n")
    (box / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path / "fs", tmp_path / "proc") == 1
    (box / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpus(tmp_path / "fs", tmp_path / "proc") == len(os.sched_getaffinity(0))


@pytest.mark.e2e
async def test_postfix_script_adds_and_mail_flows(make_app, postfix, tmp_path):
    """The set-up script on a Postfix that already routes other.test through its own
    transport table: afterwards the old transport_maps and relay_domains entries are still
    there, ours are added, `postfix check` passes, an unknown address is refused at RCPT
    and sales@ reaches mailrouter through the new transport; and the return listener
    (outbox.relay, delivery.smtp) takes a bounce-style <> message from loopback for
    other.test and Postfix relays it on: before, the test only saw that port greet.

    other.test had no relay_recipient_maps: Postfix took any of its addresses. The script
    added ours and went on, and from then on Postfix refused every address of other.test
    ("550 5.1.1 User unknown in relay recipient table"). It now stops first, changing
    nothing, with the commands that give other.test a table; run, the script goes through
    and other.test's mail is taken as before.
    And a message Postfix took just under its message_size_limit comes back from mailrouter
    (an smtp: mailbox) with our headers on top: the return listener refused it "552 5.3.4
    message file too big" and Postfix bounced it. It has no size limit now (the main
    listener keeps message_size_limit)."""
    app = await make_app()
    mta = await asyncio.to_thread(postfix, relay_port=1)
    outside = Sink()       # the world beyond Postfix, for other.test
    await outside.start()
    other = mta.etc / "other_transport"
    other.write_text(f"other.test smtp:[127.0.0.1]:{outside.port}\n")
    await asyncio.to_thread(subprocess.run, ["postmap", "-c", str(mta.etc), f"hash:{other}"],
                            check=True)
    mta.postconf(f"transport_maps = hash:{other}", "relay_domains = other.test",
                 "message_size_limit = 100000")
    cfg = tmp_path / "config.yaml"
    # the transport goes to listen.smtp of the config (it went to 127.0.0.1:2525 whatever
    # the config said, unless TO_MR was set: an admin on another port had Postfix defer it all)
    cfg.write_text(f"routing: ['{REPO / 'rules' / '*.yaml'}']\n"
                   f"listen: {{smtp: '127.0.0.1:{app.bound['smtp'][1]}'}}\n", encoding="utf-8")
    ret = socket.socket()
    ret.bind(("127.0.0.1", 0))
    ret_port = ret.getsockname()[1]
    ret.close()
    env = dict(os.environ, MAIL_CONFIG=str(mta.etc), CONFIG=str(cfg), MAPS=str(tmp_path / "maps"),
               MAILROUTER=f"{sys.executable} -m mailrouter.cli", RETURN_PORT=str(ret_port),
               PYTHONPATH=str(REPO))
    env.pop("TO_MR", None)
    before = (mta.etc / "main.cf").read_text(), (mta.etc / "master.cf").read_text()
    refused = await asyncio.to_thread(subprocess.run, ["sh", str(SCRIPT)], env=env, cwd=REPO,
                                      capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "relay_domains already lists: other.test;" in refused.stderr, refused.stderr
    assert ((mta.etc / "main.cf").read_text(), (mta.etc / "master.cf").read_text()) == before
    fix = [line.strip() for line in refused.stderr.splitlines() if line.startswith("  ")]
    assert fix[0] == f"printf '@other.test OK\\n' > {mta.etc}/relay_recipients", fix
    for line in fix:                                 # as the admin pastes them
        await asyncio.to_thread(subprocess.run, ["sh", "-c", line], env=env, check=True)
    done = await asyncio.to_thread(subprocess.run, ["sh", str(SCRIPT)], env=env, cwd=REPO,
                                   capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # `mailrouter postfix` tells to add the tables with postconf -e, which the script has
    # done: an admin who ran those lines too (install.md step 5) listed each table twice
    assert "postconf -e" not in done.stdout and "add them to main.cf" not in done.stdout
    main_cf = (mta.etc / "main.cf").read_text()
    assert re.search(rf"transport_maps = hash:{other} hash:{tmp_path}/maps/transport", main_cf)
    assert re.search(rf"relay_domains = other.test hash:{tmp_path}/maps/domains", main_cf)
    assert re.search(rf"relay_recipient_maps = hash:{mta.etc}/relay_recipients "
                     rf"hash:{tmp_path}/maps/relay_recipients", main_cf)
    assert "minimal_backoff_time = 2s" in main_cf and "message_size_limit = 100000\n" in main_cf
    # run again (after a failed `postfix check`, say): main.cf names each table once, as
    # after one run; before, every run appended them all again
    again = await asyncio.to_thread(subprocess.run, ["sh", str(SCRIPT)], env=env, cwd=REPO,
                                    capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (mta.etc / "main.cf").read_text() == main_cf
    await asyncio.to_thread(mta.reload)

    big = b"Subject: back from mailrouter\r\n\r\n" + (b"x" * 76 + b"\r\n") * 1400  # > 100000

    def talk() -> tuple[int, ...]:
        with smtplib.SMTP("127.0.0.1", ret_port, timeout=30) as s:   # as the outbox does
            s.ehlo("mx.test")
            s.mail("<>")
            s.rcpt("someone@other.test")
            returned = s.data(b"Subject: autoreply via return port\r\n\r\nhi\r\n")[0]
            s.mail("client@outside.test")
            s.rcpt("big@other.test")
            returned_big = s.data(big)[0]
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as s:
            s.ehlo("client.test")
            s.mail("client@outside.test")
            unknown = s.rcpt("nobody@example.com")[0]
            known = s.rcpt("sales@example.com")[0]
            theirs = s.rcpt("anyone@other.test")[0]          # other.test's mail as before
            s.data(b"Subject: via script\r\n\r\nhi\r\n")
            s.mail("client@outside.test")
            s.rcpt("sales@example.com")
            too_big = s.data(big)[0]                        # the main listener's limit holds
        return unknown, known, theirs, too_big, returned, returned_big
    replies = await asyncio.to_thread(talk)
    assert replies == (550, 250, 250, 552, 250, 250), mta.maillog[-3000:]
    box = tmp_path / "var" / "mail" / "sales"
    end = asyncio.get_running_loop().time() + 30
    while not maildir_files(box):
        assert asyncio.get_running_loop().time() < end, mta.maillog[-3000:]
        await asyncio.sleep(0.05)
    assert "postfix/to-mailrouter" in await asyncio.to_thread(mta.wait_log, "to-mailrouter")
    while len(outside.envelopes) < 3:
        assert asyncio.get_running_loop().time() < end, mta.maillog[-3000:]
        await asyncio.sleep(0.05)
    got = {tuple(e.rcpt_tos): e for e in outside.envelopes}
    assert set(got) == {("someone@other.test",), ("big@other.test",), ("anyone@other.test",)}
    assert got[("someone@other.test",)].mail_from == "<>"                  # aiosmtpd keeps "<>"
    assert big.split(b"\r\n\r\n")[1] in got[("big@other.test",)].original_content
    assert "postfix/from-mailrouter" in mta.maillog
    await outside.stop()


def _run_script(etc: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """deploy/postfix's set-up script against the Postfix config directory `etc`, with the
    example rules, its tables under tmp_path/maps (it may stop with exit 1: checked by
    the caller)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{REPO / 'rules' / '*.yaml'}']\n", encoding="utf-8")
    env = dict(os.environ, MAIL_CONFIG=str(etc), CONFIG=str(cfg), MAPS=str(tmp_path / "maps"),
               MAILROUTER=f"{sys.executable} -m mailrouter.cli", PYTHONPATH=str(REPO),
               PATH=os.environ.get("PATH", "") + ":/usr/sbin")
    return subprocess.run(["sh", str(SCRIPT)], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300, check=False)


MOVED_BOOK = """\
domains: [example.com]
mailboxes: {sales: {maildir: sales}}
aliases: {sales@example.com: mailbox:sales}
moved: {old@example.com: {now: sales@example.com, deliver: false}}
rules: []
"""


async def test_postfix_script_refuses_a_moved_address_before_a_final_permit(postfix, tmp_path):
    """An existing Postfix whose smtpd_recipient_restrictions ends in `permit` (many guides
    write it so): the script appended check_recipient_access after it, where Postfix never
    looks. A moved address (deliver: false) was taken, then refused by mailrouter at RCPT
    and bounced by Postfix to the sender, often forged: the backscatter its table is there
    to avoid. The check now goes first, and Postfix answers 551 5.1.6 itself."""
    mta = await asyncio.to_thread(postfix, relay_port=1)
    mta.postconf("smtpd_recipient_restrictions = reject_unauth_destination, permit")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "book.yaml").write_text(MOVED_BOOK, encoding="utf-8")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{rules}/*.yaml']\n", encoding="utf-8")
    env = dict(os.environ, MAIL_CONFIG=str(mta.etc), CONFIG=str(cfg), MAPS=str(tmp_path / "maps"),
               MAILROUTER=f"{sys.executable} -m mailrouter.cli", PYTHONPATH=str(REPO),
               RETURN_PORT=str(free_port()))
    done = await asyncio.to_thread(subprocess.run, ["sh", str(SCRIPT)], env=env, cwd=REPO,
                                   capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    await asyncio.to_thread(mta.reload)

    def rcpt() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as s:
            s.ehlo("client.test")
            s.mail("client@outside.test")
            return s.rcpt("old@example.com")
    code, text = await asyncio.to_thread(rcpt)
    assert (code, text[:5]) == (551, b"5.1.6"), (code, text)

    def restrictions() -> list[str]:
        return subprocess.run(["postconf", "-c", str(mta.etc), "-h",
                               "smtpd_recipient_restrictions"], capture_output=True, text=True,
                              check=True).stdout.replace(",", " ").split()
    check = f"check_recipient_access hash:{tmp_path / 'maps'}/recipient_access"
    assert restrictions() == [*check.split(), "reject_unauth_destination", "permit"]
    # as an earlier version of the script left it: run again, the check is moved first
    mta.postconf(f"smtpd_recipient_restrictions = reject_unauth_destination, permit {check}")
    again = await asyncio.to_thread(subprocess.run, ["sh", str(SCRIPT)], env=env, cwd=REPO,
                                    capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert restrictions() == [*check.split(), "reject_unauth_destination", "permit"]


async def test_postfix_scripts_transport_ignores_the_sites_smtp_client_settings(make_app, postfix,
                                                                                tmp_path):
    """The script's `mailrouter` transport is Postfix's smtp client, so it took the site's
    settings for mail to the Internet: with `smtp_tls_security_level = encrypt` (mandatory
    TLS outbound) every message for mailrouter, which offers no STARTTLS, was deferred
    ("TLS is required, but was not offered by host 127.0.0.1"), for ever; smtp_generic_maps
    rewrote our recipients on their way to mailrouter; smtp_bind_address (a multi-homed MX)
    made Postfix connect from a public address, which mailrouter greets after
    limits.greet_delay and counts against max_connections_per_client. The transport now
    clears them."""
    app = await make_app()
    mta = await asyncio.to_thread(postfix, relay_port=1)
    generic = mta.etc / "generic"
    generic.write_text("sales@example.com someone@isp.test\n")
    await asyncio.to_thread(subprocess.run, ["postmap", "-c", str(mta.etc), f"hash:{generic}"],
                            check=True)
    mta.postconf("smtp_tls_security_level = encrypt", f"smtp_generic_maps = hash:{generic}")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{REPO / 'rules' / '*.yaml'}']\n"
                   f"listen: {{smtp: '127.0.0.1:{app.bound['smtp'][1]}'}}\n", encoding="utf-8")
    env = dict(os.environ, MAIL_CONFIG=str(mta.etc), CONFIG=str(cfg), MAPS=str(tmp_path / "maps"),
               MAILROUTER=f"{sys.executable} -m mailrouter.cli", PYTHONPATH=str(REPO),
               RETURN_PORT=str(free_port()))
    done = await asyncio.to_thread(subprocess.run, ["sh", str(SCRIPT)], env=env, cwd=REPO,
                                   capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    master = subprocess.run(["postconf", "-c", str(mta.etc), "-P", "mailrouter/unix"],
                            capture_output=True, text=True, check=True).stdout
    assert "mailrouter/unix/smtp_bind_address =" in master.splitlines(), master
    await asyncio.to_thread(mta.reload)

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as s:
            s.sendmail("client@outside.test", ["sales@example.com"],
                       b"Subject: through the site's Postfix\r\n\r\nhi\r\n")
    await asyncio.to_thread(send)
    box = tmp_path / "var" / "mail" / "sales"
    end = asyncio.get_running_loop().time() + 30
    while not maildir_files(box):
        assert asyncio.get_running_loop().time() < end, mta.maillog[-3000:]
        await asyncio.sleep(0.05)
    [copy] = maildir_files(box)
    assert b"for <sales@example.com>" in copy.read_bytes()


async def test_postfix_scripts_return_listener_takes_mailrouters_short_helo(postfix, tmp_path):
    """The return listener (outbox.relay, delivery.smtp) inherited main.cf's
    smtpd_helo_restrictions and smtpd_sender_restrictions. mailrouter says EHLO with its
    `hostname`, by default this host's name, often short (the Debian installer writes one):
    with `reject_non_fqdn_helo_hostname` there, each DSN, autoreply and forward got `504 5.5.2
    Helo command rejected: need fully-qualified hostname`, and mailrouter gave the DSNs up
    (5xx). The listener takes only loopback clients; it now has no HELO or sender checks."""
    mta = await asyncio.to_thread(postfix, relay_port=1)
    mta.postconf("smtpd_helo_required = yes",
                 "smtpd_helo_restrictions = reject_non_fqdn_helo_hostname",
                 "smtpd_sender_restrictions = reject_non_fqdn_sender")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{REPO / 'rules' / '*.yaml'}']\n", encoding="utf-8")
    ret = free_port()
    env = dict(os.environ, MAIL_CONFIG=str(mta.etc), CONFIG=str(cfg), MAPS=str(tmp_path / "maps"),
               MAILROUTER=f"{sys.executable} -m mailrouter.cli", PYTHONPATH=str(REPO),
               RETURN_PORT=str(ret))
    done = await asyncio.to_thread(subprocess.run, ["sh", str(SCRIPT)], env=env, cwd=REPO,
                                   capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    await asyncio.to_thread(mta.reload)

    def talk(port: int) -> tuple[int, int]:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("mailhost")
            s.mail("<>")
            dsn = s.rcpt("someone@other.test")[0]
            s.rset()
            s.mail("robot@mailhost")
            return dsn, s.rcpt("someone@other.test")[0]
    assert await asyncio.to_thread(talk, ret) == (250, 250), mta.maillog[-2000:]
    assert (await asyncio.to_thread(talk, mta.port))[0] == 504      # port 25's checks stay


def test_postfix_script_reads_relay_domains_default_as_no_domain(postfix, tmp_path):
    """relay_domains set to its own default (`postconf -e "relay_domains = $(postconf -h
    relay_domains) ..."` writes it so, on a main.cf that had none), and no
    relay_recipient_maps: the script stopped at its first check, saying relay_domains
    "already lists: ${{$compatibility_level} <level {2} ? {$mydestination} : {}}", and
    changed nothing. That expression is no domain: the script goes through."""
    mta = postfix(relay_port=1)
    default = subprocess.run(["postconf", "-c", str(mta.etc), "-dh", "relay_domains"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert "mydestination" in default, default
    mta.postconf(f"relay_domains = {default}")
    done = _run_script(mta.etc, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "already lists" not in done.stderr, done.stderr


def test_postfix_script_says_where_a_failed_check_explains_itself(tmp_path):
    """`postfix check` prints its reason only to a terminal: run by a provisioning tool the
    script stopped with exit 1 and no word. It now says that the check failed and where
    Postfix wrote why (here its maillog_file)."""
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        pytest.skip("postfix not installed (apt-get install postfix)")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(f"compatibility_level = 3.6\n"
                                 f"queue_directory = {tmp_path}/no-such-queue\n"
                                 f"data_directory = {tmp_path}\n"
                                 f"maillog_file = {tmp_path}/maillog\n"
                                 f"maillog_file_prefixes = {tmp_path}\n")
    shutil.copy("/usr/share/postfix/master.cf.dist", etc / "master.cf")
    done = _run_script(etc, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "postfix check failed" in done.stderr, done.stderr
    assert f"{tmp_path}/maillog" in done.stderr, done.stderr


@pytest.mark.parametrize("setting", ["mydestination = $myhostname, Example.com, localhost",
                                     "virtual_mailbox_domains = hash:{etc}/vdomains"])
def test_postfix_script_stops_on_a_domain_postfix_serves_itself(tmp_path, setting):
    """The Debian installer puts the mail name in mydestination: with example.com there (or in
    virtual_mailbox_domains), the script added it to relay_domains and transport_maps all the
    same, and Postfix, which keeps such a domain local, refused every address of it at RCPT
    ("550 5.1.1 <sales@example.com>: Recipient address rejected: User unknown in local
    recipient table", seen on a private Postfix). The script now stops before main.cf and
    master.cf are changed, naming the domain, the setting and the way out."""
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        pytest.skip("postfix not installed (apt-get install postfix)")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(f"compatibility_level = 3.6\nmyhostname = mx.example.net\n"
                                 f"{setting.format(etc=etc)}\n")
    (etc / "vdomains").write_text("example.com OK\n")
    subprocess.run(["postmap", "-c", str(etc), f"hash:{etc}/vdomains"], check=True)
    shutil.copy("/usr/share/postfix/master.cf.dist", etc / "master.cf")
    before = (etc / "main.cf").read_text(), (etc / "master.cf").read_text()
    done = _run_script(etc, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    key = setting.split()[0]
    assert done.stderr.startswith(f"example.com is in Postfix's {key} ("), done.stderr
    assert "Nothing was changed in main.cf or master.cf." in done.stderr
    assert "--mode virtual" in done.stderr
    assert ((etc / "main.cf").read_text(), (etc / "master.cf").read_text()) == before


def test_install_step_3_copies_what_the_rule_tests_read(tmp_path):
    """docs/install.md step 3 copies the routing files to /etc/mailrouter/rules; its `cp`
    lines, run with that path moved under tmp_path, leave a folder whose rule tests all pass
    (`mailrouter test`, the step's next command), so the sample messages they read came too."""
    text = (REPO / "docs" / "install.md").read_text(encoding="utf-8")
    step = text.split("## 3.", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    etc = tmp_path / "etc" / "mailrouter"
    (etc / "rules").mkdir(parents=True)
    copies = [line.split("#", 1)[0].replace("/etc/mailrouter", str(etc))
              for line in step.splitlines() if line.startswith("cp ")]
    assert copies, step
    for line in copies:
        subprocess.run(["sh", "-c", line], cwd=REPO, check=True, timeout=60)
    cfg = etc / "config.yaml"
    cfg.write_text("routing: [rules/*.yaml]\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "mailrouter.cli", "test", "-c", str(cfg)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stdout + done.stderr


def test_container_run_line_publishes_on_the_hosts_loopback_only():
    """The `podman run` line published mailrouter's ports as `-p 2525:2525`: on every address
    of the host (past its firewall: docker and podman write their own rules), so anyone could
    hand mail straight to mailrouter around the MTA, while the unit and config.example.yaml
    keep every listener on loopback."""
    text = (DEPLOY / "Containerfile").read_text()
    run = re.search(r"^# Run:(.*?)mailrouter\n", text, re.S | re.M)
    assert run is not None
    published = re.findall(r"-p (\S+)", re.sub(r"\\\n#\s*", " ", run.group(1)))
    assert published and all(p.startswith("127.0.0.1:") for p in published), published


def test_container_build_line_keeps_the_healthcheck_and_every_listener_is_exposed():
    """`podman build` as the Containerfile said (OCI format, podman's default) dropped its
    HEALTHCHECK with only a warning: `podman image inspect` showed none, and nothing probed
    /healthz. The web view config.example.yaml turns on (listen.web) was neither exposed nor
    published."""
    text = (DEPLOY / "Containerfile").read_text()
    build = re.search(r"^# Build:\s+(podman build [^\n(]*)", text, re.M)
    assert build is not None
    if re.search(r"^HEALTHCHECK ", text, re.M):
        assert "--format docker" in build.group(1), build.group(1)
    exposed = {int(p) for p in re.search(r"^EXPOSE (.*)$", text, re.M).group(1).split()}
    cfg = load_config(REPO / "config.example.yaml")
    listeners = {cfg.smtp, cfg.lmtp, cfg.admin, cfg.web} - {None}
    assert {lst.port for lst in listeners if lst is not None} <= exposed, exposed
    run = re.search(r"^# Run:(.*?)mailrouter\n", text, re.S | re.M)
    assert run is not None
    published = re.findall(r"-p 127\.0\.0\.1:(\d+):", re.sub(r"\\\n#\s*", " ", run.group(1)))
    assert {int(p) for p in published} == exposed, published


def test_container_run_line_mounts_the_routing_files_the_config_names():
    """The `podman run` line in the Containerfile mounts a config at /etc/mailrouter/config.yaml;
    the routing files config.example.yaml names, relative to that file, must be mounted too,
    else the container stops at "no routing files match /etc/mailrouter/rules/*.yaml"."""
    text = (DEPLOY / "Containerfile").read_text()
    run = re.search(r"^# Run:(.*?)mailrouter\n", text, re.S | re.M)
    assert run is not None
    line = re.sub(r"\\\n#\s*", " ", run.group(1))
    targets = [m.split(":")[1] for m in re.findall(r"-v (\S+)", line)]
    assert "/etc/mailrouter/config.yaml" in targets
    routing = load_config(REPO / "config.example.yaml").routing
    assert routing
    for pattern in routing:
        inside = "/etc/mailrouter/" + str(Path(pattern).relative_to(REPO))
        assert any(inside.startswith(t.rstrip("/") + "/") for t in targets), (inside, targets)


DOVECOT_CONF = DEPLOY / "dovecot" / "mailrouter.conf"
DOVECOT_ROUTING = """\
domains: [example.com]
mailboxes:
  fin: {lmtp: finance@mail.internal, sieve_folders: true}
aliases:
  finance@example.com: {mailbox: fin, folder: Finance}
  finansy@example.com: {mailbox: fin, folder: Финансы}
  fin@example.com:     mailbox:fin
"""


def _shipped_dovecot(dovecot: str, sievec: str, site_user: str | None = None
                     ) -> tuple[Path, subprocess.Popen[bytes], int]:
    """A private Dovecot that includes deploy/dovecot/mailrouter.conf as install.md step 6
    does (its port and users file moved), with one user in the format the file's comments
    give and the compiled Sieve script: (its directory, its process, its LMTP port).
    `site_user`: a user of the site's own, in a passdb/userdb of its own configured before
    the snippet (as Debian's conf.d/10-auth.conf comes before 99-mailrouter.conf), home
    <dir>/site/<local part>."""
    from tests.support.dovecot import free_port as dovecot_port, wait_for_greeting
    from tests.support.proc import stop_process
    d = Path(tempfile.mkdtemp(prefix="dovecot."))   # not under tmp_path (0700): Dovecot's
    d.chmod(0o755)                                     # auth runs as its own user
    for sub in ("run", "state", "vmail", "sieve"):
        (d / sub).mkdir()
    shutil.chown(d / "vmail", "nobody", "nogroup")
    port = dovecot_port()
    users = d / "mailrouter-users"
    snippet = DOVECOT_CONF.read_text()
    assert "port = 24\n" in snippet and "/etc/dovecot/mailrouter-users" in snippet
    (d / "99-mailrouter.conf").write_text(
        snippet.replace("port = 24\n", f"port = {port}\n")
        .replace("/etc/dovecot/mailrouter-users", str(users)))
    script = d / "sieve" / "mailrouter-folders.sieve"
    shutil.copy(DEPLOY / "dovecot" / "mailrouter-folders.sieve", script)
    subprocess.run([sievec, str(script)], check=True, timeout=60)
    script.with_suffix(".svbin").chmod(0o644)
    crypt = subprocess.run(["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", "secret"],
                           capture_output=True, text=True, check=True).stdout.strip()
    users.write_text(f"finance@mail.internal:{crypt}:nobody:nogroup::{d / 'vmail' / 'finance'}"
                     f"::userdb_sieve_before={script}\n")
    site = ""
    if site_user is not None:
        (d / "site").mkdir()
        shutil.chown(d / "site", "nobody", "nogroup")
        (d / "site-users").write_text(f"{site_user}:{crypt}:nobody:nogroup::"
                                      f"{d / 'site' / site_user.partition('@')[0]}::\n")
        site = (f"passdb {{\n  driver = passwd-file\n  args = {d}/site-users\n}}\n"
                f"userdb {{\n  driver = passwd-file\n  args = {d}/site-users\n}}\n"
                f"mail_location = maildir:~/Maildir\n")
    # the distribution's dovecot.conf, reduced to what a private instance needs (its
    # protocols.d turns LMTP on: the snippet does not add it again; and IMAP, whose fixed
    # port 143 two of these tests running at once both took: the second failed to start)
    (d / "dovecot.conf").write_text(
        f"protocols =\n!include_try /usr/share/dovecot/protocols.d/*.protocol\n"
        f"service imap-login {{\n  inet_listener imap {{\n    port = 0\n  }}\n"
        f"  inet_listener imaps {{\n    port = 0\n  }}\n}}\n"
        f"listen = 127.0.0.1\nssl = no\nbase_dir = {d}/run\n"
        f"state_dir = {d}/state\nlog_path = {d}/dovecot.log\n{site}"
        f"!include {d}/99-mailrouter.conf\n")
    proc = subprocess.Popen([dovecot, "-F", "-c", str(d / "dovecot.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_greeting(port, proc, d / "dovecot.log")
    except BaseException:          # pytest.fail: stop what we started, by its PID
        stop_process(proc, 15)
        shutil.rmtree(d, ignore_errors=True)
        raise
    return d, proc, port


async def test_dovecot_snippet_as_shipped_takes_mailrouters_lmtp(make_app, tmp_path):
    """deploy/dovecot/mailrouter.conf included as install.md step 6 does (only its port and
    the users file moved into a private instance), with a users line in the format its
    comments give (named uid/gid, SHA512-CRYPT password, userdb_sieve_before) and the
    compiled mailrouter-folders.sieve: mailrouter's LMTP copies land in INBOX, in .Finance
    (user+Finance@) and in «Финансы» (the Sieve header). The other e2e tests run Dovecot
    from a config of their own, so a broken line in the shipped file went unseen."""
    dovecot, sievec = shutil.which("dovecot"), shutil.which("sievec")
    if dovecot is None or sievec is None:
        pytest.skip("dovecot or sievec not found (apt-get install dovecot-lmtpd dovecot-sieve)")
    from mailrouter.config import DeliveryConfig, Downstream
    from tests.support.proc import stop_process
    d, proc, port = await asyncio.to_thread(_shipped_dovecot, dovecot, sievec)
    try:
        routing = tmp_path / "routing.yaml"
        routing.write_text(DOVECOT_ROUTING, encoding="utf-8")
        app = await make_app(routing=(str(routing),), delivery=DeliveryConfig(
            maildir_root=tmp_path / "var" / "mail", lmtp=Downstream("127.0.0.1", port, timeout=10)))

        def send(rcpt: str, subject: str) -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", app.bound["smtp"][1], timeout=30) as s:
                s.ehlo("client.test")
                s.mail("client@outside.test")
                s.rcpt(rcpt)
                return s.data(f"From: client@outside.test\r\nSubject: {subject}\r\n\r\nhi\r\n"
                              .encode())
        for rcpt, subject in (("finance@example.com", "one"), ("finansy@example.com", "two"),
                              ("fin@example.com", "three")):
            code, text = await asyncio.to_thread(send, rcpt, subject)
            assert code == 250, (text, (d / "dovecot.log").read_text()[-2000:])
        home = d / "vmail" / "finance" / "Maildir"
        got = {path.parent.parent.name: path.read_bytes() for path in maildir_files(home)}
        assert set(got) == {"Maildir", ".Finance", ".&BCQEOAQ9BDAEPQRBBEs-"}, got
        assert b"Subject: one" in got[".Finance"] and b"Subject: three" in got["Maildir"]
        assert b"Subject: two" in got[".&BCQEOAQ9BDAEPQRBBEs-"]
        # LMTP is listed once: the snippet adds nothing to what dovecot-lmtpd turns on
        protocols = subprocess.run(["doveconf", "-c", str(d / "dovecot.conf"), "-h", "protocols"],
                                   capture_output=True, text=True, check=True).stdout.split()
        assert protocols.count("lmtp") == 1, protocols
    finally:
        await asyncio.to_thread(stop_process, proc, 15)
        shutil.rmtree(d, ignore_errors=True)


def test_dovecot_snippet_creates_no_folders_for_the_sites_own_users():
    """deploy/dovecot/mailrouter.conf goes into an existing Dovecot. Its folder settings were
    global: with `lda_mailbox_autocreate = yes` in the main config, anyone could write to
    bob+anything@ of the site's own users and Dovecot created the folder «anything» in
    Bob's mailbox (before the snippet: his INBOX). Folders are created now for
    mailrouter's users only (the snippet's userdb); Bob's +detail mail lands in his INBOX,
    while finance+Newbox@ still gets its folder made."""
    dovecot, sievec = shutil.which("dovecot"), shutil.which("sievec")
    if dovecot is None or sievec is None:
        pytest.skip("dovecot or sievec not found (apt-get install dovecot-lmtpd dovecot-sieve)")
    from tests.support.proc import stop_process
    d, proc, port = _shipped_dovecot(dovecot, sievec, site_user="bob@site.test")
    try:
        with smtplib.LMTP("127.0.0.1", port, timeout=30) as s:
            for rcpt in ("bob+anything@site.test", "finance+Newbox@mail.internal"):
                refused = s.sendmail("client@outside.test", [rcpt],
                                     f"Subject: to {rcpt}\r\n\r\nhi\r\n".encode())
                assert refused == {}, refused
        bob = {p.parent.parent.name for p in maildir_files(d / "site" / "bob" / "Maildir")}
        assert bob == {"Maildir"}, (bob, (d / "dovecot.log").read_text()[-2000:])
        finance = {p.parent.parent.name
                   for p in maildir_files(d / "vmail" / "finance" / "Maildir")}
        assert finance == {".Newbox"}, finance
    finally:
        stop_process(proc, 15)
        shutil.rmtree(d, ignore_errors=True)


async def test_dovecot_reads_a_maildir_mailbox_as_its_example_line_says():
    """install.md step 1, Maildir mailboxes read by Dovecot: the users line the shipped
    mailrouter.conf gives for one (uid/gid mailrouter here nobody, home the Maildir
    mailrouter writes). Its userdb's default mail=maildir:~/Maildir made Dovecot read (and
    create) an empty <maildir>/Maildir beside mailrouter's copies: IMAP showed nothing."""
    dovecot, sievec = shutil.which("dovecot"), shutil.which("sievec")
    if dovecot is None or sievec is None:
        pytest.skip("dovecot or sievec not found (apt-get install dovecot-lmtpd dovecot-sieve)")
    from mailrouter.delivery.maildir import Maildir
    from tests.support.proc import stop_process
    [line] = [ln[1:].strip() for ln in DOVECOT_CONF.read_text().splitlines()
              if ln.startswith("#") and ":mailrouter:mailrouter::" in ln]
    d, proc, _ = await asyncio.to_thread(_shipped_dovecot, dovecot, sievec)
    try:
        user, _, rest = line.partition(":")
        home = d / "mailrouter" / "mail" / "archive"
        assert rest.split(":")[4] == "/var/lib/mailrouter/mail/archive", line
        crypt = (d / "mailrouter-users").read_text().split(":")[1]
        fields = rest.split(":")
        fields[0:5] = [crypt, "nobody", "nogroup", "", str(home)]
        with open(d / "mailrouter-users", "a") as users:
            users.write(f"{user}:{':'.join(fields)}\n")
        await Maildir(home, "mx.test").deliver(b"Subject: archived\r\n\r\nkept\r\n", "c1",
                                                "Archive")
        subprocess.run(["chown", "-R", "nobody:nogroup", str(d / "mailrouter")], check=True)
        got = await asyncio.to_thread(
            subprocess.run, ["doveadm", "-c", str(d / "dovecot.conf"), "fetch", "-u", user,
                             "hdr.subject", "mailbox", "Archive", "ALL"],
            capture_output=True, text=True, timeout=60, check=False)
        assert "archived" in got.stdout, got.stdout + got.stderr
        assert not (home / "Maildir").exists()
    finally:
        await asyncio.to_thread(stop_process, proc, 15)
        shutil.rmtree(d, ignore_errors=True)


def test_install_config_writes_only_where_the_unit_lets_it(tmp_path):
    """The settings docs/install.md step 3 puts in /etc/mailrouter/config.yaml: every
    directory the daemon writes in (Config.written_dirs) is under the unit's ReadWritePaths
    or StateDirectory, the only places ProtectSystem=strict leaves writable. The intent
    journal went to var/intents beside the config file, /etc/mailrouter/var/intents, and
    every Maildir copy got 4xx under the unit."""
    text = (DEPLOY.parent / "docs" / "install.md").read_text(encoding="utf-8")
    step3 = text.split("## 3.", 1)[1].split("## 4.", 1)[0].replace("\n", " ")
    settings = [m for m in re.findall(r"`([a-z_]+: [\[{].*?[\]}])`", step3)]
    keys = {s.split(":", 1)[0] for s in settings}
    assert {"routing", "registry", "delivery", "outbox"} <= keys, settings
    etc = tmp_path / "etc" / "mailrouter"          # as /etc/mailrouter: relative paths land here
    (etc / "rules").mkdir(parents=True)
    cfg = etc / "config.yaml"
    cfg.write_text("\n".join(settings) + "\n", encoding="utf-8")
    written = load_config(cfg).written_dirs()
    assert set(written) == {"delivery.maildir_root", "delivery.intents_dir", "registry.url"}
    unit = unit_settings()
    allowed = [Path(p) for line in unit.get("ReadWritePaths", []) for p in line.split()]
    allowed += [Path("/var/lib") / d for line in unit.get("StateDirectory", []) for d in line.split()]
    outside = {k: str(p) for k, p in written.items()
               if not any(p == a or a in p.parents for a in allowed)}
    assert outside == {}, f"the unit lets mailrouter write only in {allowed}"


def test_install_guide_upgrades_as_the_daemons_user():
    """docs/install.md had no upgrade step, and README's `mailrouter db upgrade` run as
    root made a SQLite registry root's, 0644: the daemon (User=mailrouter) then answered
    every message 451. The guide's upgrade step restarts the service (a reload keeps the
    old code and config.yaml), runs every `mailrouter db upgrade` and `check` after the
    service exists as the mailrouter user, and copies files that exist in the repository."""
    text = (DEPLOY.parent / "docs" / "install.md").read_text(encoding="utf-8")
    upgrade = text.split("## 8. Upgrading", 1)[1]
    block = upgrade.split("```sh\n", 1)[1].split("```", 1)[0]
    assert "systemctl restart mailrouter" in block
    copied = next(line for line in block.splitlines() if line.startswith("cp "))
    for name in copied.split()[1:-1]:
        assert (DEPLOY.parent / name).is_file(), name
    flat = " ".join(text.split("## 4.", 1)[1].split())          # after the unit is installed
    for cmd in re.findall(r"(\S+ \S+ \S+ \S+ /opt/mailrouter/bin/mailrouter (?:db upgrade|check))",
                          flat):
        assert cmd.lstrip("`").startswith("runuser -u mailrouter --"), cmd
    assert len(re.findall(r"runuser -u mailrouter -- /opt/mailrouter/bin/mailrouter db upgrade",
                          flat)) == 1
    step5 = " ".join(text.split("## 5.", 1)[1].split("## 6.", 1)[0].split())
    assert "systemctl restart mailrouter" in step5.split("postfix_maps:", 1)[1]



def _uncommented_control(example: str) -> str:
    """config.example.yaml with its `# control:` section turned on as an admin does: the
    `# ` before each of its lines removed."""
    head, tail = example.split("\n# control:\n", 1)
    lines = tail.splitlines()
    body = [line.replace("#   ", "  ", 1) for line in lines if line.startswith("#   ")]
    assert body, "config.example.yaml has no commented control: section"
    return head + "\ncontrol:\n" + "\n".join(body) + "\n"


def test_example_control_section_on_the_example_rules_names_the_fix(tmp_path):
    """README "Reply tracking": `check` refuses a control.replies address the address book
    lacks. config.example.yaml's control section turned on, beside the shipped example rules
    (which have no replies@): the one error names the fix, adding the alias. It said "did you
    mean 'sales@example.com'?": pointing reply tracking at the sales mailbox."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(_uncommented_control((REPO / "config.example.yaml").read_text("utf-8")),
                   encoding="utf-8")
    (tmp_path / "rules").symlink_to(REPO / "rules")
    done = subprocess.run([sys.executable, "-m", "mailrouter.cli", "check", "-c", str(cfg)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 1, done.stdout + done.stderr
    [error] = [line for line in done.stderr.splitlines() if "control.replies" in line]
    assert "'replies@example.com' is not an address of the address book" in error, error
    assert "did you mean" not in error and "add it under aliases:" in error, error


def _load_as_nobody(path: Path | None) -> str:
    """load_config(path) in a forked child with the euid of nobody: its error, or ''. With
    None, the file find_config picks without -c (any exception is said too)."""
    from mailrouter.config import find_config
    return _as_nobody(lambda: load_config(path or find_config(None, {})))


def _as_nobody(load: Any) -> str:
    """`load()` in a forked child with the euid of nobody: its first ConfigError, or ''."""
    from mailrouter.errors import ConfigErrors
    from tests.support.nobody import as_nobody

    def said() -> str:
        try:
            load()
        except ConfigErrors as exc:
            return str(exc.errors[0])
        except Exception as exc:                         # noqa: BLE001 (said to the parent)
            return f"raised {exc!r}"
        return ""
    return str(as_nobody(said, "child died"))


def test_a_config_the_user_may_not_read_names_what_and_the_fix(tmp_path, monkeypatch):
    """install.md step 3 makes /etc/mailrouter root:mailrouter 0750 and config.yaml 0640; an
    admin who runs `mailrouter check -c /etc/mailrouter/config.yaml` as someone else got
    "cannot read: Permission denied", and `-c /etc/mailrouter` "cannot read: Is a directory";
    without -c, every command died in a PermissionError traceback (Path.is_file on the
    /etc/mailrouter/config.yaml it could not see). Now each names the folder or file in the
    way, its owner and mode, and the fix."""
    import mailrouter.config
    if os.geteuid() != 0:
        pytest.skip("needs root, to read as nobody")
    top = Path(tempfile.mkdtemp(prefix="mr-etc."))       # tmp_path is 0700: nobody could
    try:                                                 # not reach anything under it
        top.chmod(0o755)
        etc = top / "etc" / "mailrouter"
        etc.mkdir(parents=True)
        etc.chmod(0o750)                                 # root's group: nobody is not in it
        cfg = etc / "config.yaml"
        cfg.write_text("workers: 1\n", encoding="utf-8")
        cfg.chmod(0o640)
        said = _load_as_nobody(cfg)
        assert said.startswith(f"{cfg}: cannot read: permission denied; {etc} is uid 0's, "
                               "gid 0's, mode 0750: uid 65534 may not enter it; run the command "
                               "as the user mailrouter runs as (runuser -u mailrouter --"), said
        monkeypatch.setattr(mailrouter.config, "SYSTEM_CONFIG", cfg)     # no -c: found, and
        assert _load_as_nobody(None) == said                           # the same said
        etc.chmod(0o755)
        said = _load_as_nobody(cfg)
        assert f"; {cfg} is uid 0's, gid 0's, mode 0640: uid 65534 may not read it;" in said
        cfg.chmod(0o644)
        assert _load_as_nobody(cfg) == ""
    finally:
        shutil.rmtree(top, ignore_errors=True)
    with pytest.raises(Exception) as info:
        load_config(tmp_path)
    assert str(info.value.errors[0]) == (                # type: ignore[attr-defined]
        f"{tmp_path}: a directory, not a config file; name the file: -c {tmp_path / 'config.yaml'}")


def test_a_routing_file_the_user_may_not_read_names_what_and_the_fix() -> None:
    """A routing file (or its folder) this user may not read said only "cannot read:
    Permission denied" at check, start and reload: it names what is in the way and the
    fix, as the config file's error does."""
    from mailrouter.config import Limits
    from mailrouter.routing.snapshot import load_snapshot
    if os.geteuid() != 0:
        pytest.skip("needs root, to read as nobody")
    top = Path(tempfile.mkdtemp(prefix="mr-rules."))
    try:
        top.chmod(0o755)
        rules = top / "rules"
        rules.mkdir()
        shutil.copy(RULES / "company.yaml", rules / "company.yaml")
        secret = rules / "routing.yaml"
        secret.write_text("rules: []\n", encoding="utf-8")
        secret.chmod(0o600)
        said = _as_nobody(lambda: load_snapshot([str(rules / "*.yaml")], Limits(), "mx.test"))
        assert said.startswith(f"{secret}: cannot read: permission denied; {secret} is uid "
                               "0's, gid 0's, mode 0600: uid 65534 may not read it; run the "
                               "command as the user mailrouter runs as"), said
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _container_run_commands() -> list[list[str]]:
    """The commands of the Containerfile's RUN instructions, each split into its words."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Containerfile").read_text())
    runs = re.findall(r"^RUN (.*)$", text, re.M)
    return [cmd.split() for run in runs for cmd in run.split("&&")]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                    reason="useradd --prefix needs root")
def test_the_containers_user_is_made_without_a_warning_and_with_its_own_group(tmp_path):
    """`useradd --system --uid 10025` in the image warned "uid 10025 is greater than
    SYS_UID_MAX 999" at every build, and gave the group mailrouter gid 999 (the system
    range), not 10025. The Containerfile's groupadd/useradd lines, run as written on a
    private root (`--prefix`, its own /etc: no user of this machine is made), say nothing
    and make uid 10025 with its group 10025."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    for name, line in (("shadow", "root:*:19000:0:99999:7:::\n"), ("gshadow", "root:*::\n")):
        (root / "etc" / name).write_text(line)
        (root / "etc" / name).chmod(0o600)
    if Path("/etc/login.defs").exists():      # the base image's is Debian's too
        shutil.copy("/etc/login.defs", root / "etc" / "login.defs")
    made = [cmd for cmd in _container_run_commands() if cmd[0] in ("groupadd", "useradd")]
    assert made and made[-1][0] == "useradd", made
    for cmd in made:
        done = subprocess.run([cmd[0], "--prefix", str(root), *cmd[1:]], capture_output=True,
                              text=True, timeout=60)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), cmd
    passwd = (root / "etc" / "passwd").read_text().splitlines()
    group = (root / "etc" / "group").read_text().splitlines()
    assert "mailrouter:x:10025:10025::/var/lib/mailrouter:/usr/sbin/nologin" in passwd
    assert "mailrouter:x:10025:" in group


def test_every_container_command_runs_under_umask_0027(tmp_path):
    """The unit has UMask=0027; the container had none (0022): the Maildirs, the registry
    and the intents were readable by every user of the container. Its ENTRYPOINT, run as
    written here with `sh -c` standing for a command, sets 0027 and execs the command: a
    directory it makes is 0750, and the command is the shell's own process (PID 1 in the
    container gets the stop signal)."""
    import json
    text = (DEPLOY / "Containerfile").read_text()
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert entry is not None
    argv = json.loads(entry.group(1))
    probe = "umask; mkdir d; stat -c %a d; echo $$"
    shell = subprocess.Popen([*argv, "sh", "-c", probe], cwd=tmp_path, stdout=subprocess.PIPE,
                             text=True)
    out = shell.communicate(timeout=60)[0].split()
    assert shell.returncode == 0 and out == ["0027", "750", str(shell.pid)], out
    assert re.search(r'^CMD \["mailrouter", "run"', text, re.M)

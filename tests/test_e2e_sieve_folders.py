"""End to end: a Cyrillic folder through Postfix, mailrouter and Dovecot, read back over IMAP.

swaks -> a private Postfix with the tables `mailrouter postfix` writes -> mailrouter
-> LMTP -> a private Dovecot with Pigeonhole Sieve, where the shipped
deploy/dovecot/mailrouter-folders.sieve runs as the user's sieve_before (a userdb
extra field, as docs/install.md says) -> IMAP (imaplib) lists «Финансы» and
fetches the message from it. Dovecot 2.3's LMTP has no SMTPUTF8, so the folder
cannot travel as user+Финансы@; for a mailbox with `sieve_folders: true` it
travels in an RFC 2047-encoded X-Mailrouter-Folder line instead.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailrouter.config import DeliveryConfig, Downstream
from tests.support.daemon import REPO

pytestmark = [pytest.mark.e2e]

SIEVE = REPO / "deploy" / "dovecot" / "mailrouter-folders.sieve"
CLI = [sys.executable, "-m", "mailrouter.cli"]

ROUTING = """\
domains: [example.com]
mailboxes:
  fin: {lmtp: fin@example.test, sieve_folders: true}
aliases:
  finansy@example.com: {mailbox: fin, folder: Финансы}
  finance@example.com: {mailbox: fin, folder: Finance}
  fin@example.com:     mailbox:fin
"""


def mutf7(name: str) -> str:
    """IMAP modified UTF-7 (RFC 3501 5.1.3), as a Dovecot 2.3 LIST shows a folder."""
    out, run = [], ""
    for ch in name + "\0":
        if ch != "\0" and not (" " <= ch <= "~"):
            run += ch
            continue
        if run:
            b64 = base64.b64encode(run.encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + b64.replace("/", ",") + "-")
            run = ""
        if ch != "\0":
            out.append("&-" if ch == "&" else ch)
    return "".join(out)


def imap_read(port: int, user: str) -> dict[str, list[bytes]]:
    """Every folder of `user` and the Subject lines of the messages in it, over IMAP."""
    box = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        box.login(user, "secret")
        typ, listing = box.list()
        assert typ == "OK", listing
        folders = [re.match(r'\(.*?\) (?:"[^"]*"|NIL) "?(.*?)"?$', line.decode()).group(1)
                   for line in listing if line]
        found: dict[str, list[bytes]] = {}
        for f in folders:
            typ, _ = box.select(f'"{f}"', readonly=True)
            assert typ == "OK", f
            typ, data = box.search(None, "ALL")
            subjects = []
            for num in data[0].split():
                typ, msg = box.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                subjects.append(msg[0][1].strip())
            found[f] = subjects
        return found
    finally:
        box.logout()


def swaks(port: int, rcpt: str, subject: str, extra: tuple[str, ...] = ()) -> None:
    done = subprocess.run(["swaks", "-s", "127.0.0.1", "-p", str(port), "-f",
                           "client@outside.test", "-t", rcpt, "--header", f"Subject: {subject}",
                           *extra, "--body", "hello"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_cyrillic_folder_through_postfix_and_dovecot_sieve_to_imap(make_app, postfix,
                                                                         dovecot, tmp_path):
    """«Финансы» and «Finance» land in those Dovecot folders (IMAP shows them, each with its
    message), mail without a folder in INBOX; a sender's forged X-Mailrouter-Folder moves
    nothing; Postfix refuses an unknown address at RCPT with the generated tables."""
    if shutil.which("sievec") is None:
        pytest.skip("sievec not found (apt-get install dovecot-sieve)")
    dv = await asyncio.to_thread(dovecot, [], sieve=True, imap=True)
    script = dv.dir / "mailrouter-folders.sieve"
    shutil.copy(SIEVE, script)
    compiled = await asyncio.to_thread(subprocess.run, ["sievec", str(script)],
                                       capture_output=True, text=True, check=False)
    assert compiled.returncode == 0, compiled.stderr
    os.chmod(script.with_suffix(".svbin"), 0o644)
    dv.add_user("fin@example.test", sieve_before=script)
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING, encoding="utf-8")
    app = await make_app(routing=(str(routing),),
                         delivery=DeliveryConfig(maildir_root=tmp_path / "var" / "mail",
                                                 lmtp=Downstream("127.0.0.1", dv.port, timeout=10)))
    port = app.bound["smtp"][1]
    mta = await asyncio.to_thread(postfix, relay_port=1)
    maps = tmp_path / "maps"
    out = await asyncio.to_thread(
        subprocess.run, [*CLI, "postfix", "--dir", str(maps), "--postmap", "--postfix-config",
                         str(mta.etc), "--nexthop", f"smtp:[127.0.0.1]:{port}", "-c",
                         str(write_config(tmp_path, routing))],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    env = dict(os.environ, MAIL_CONFIG=str(mta.etc))
    for line in out.stdout.splitlines():
        if line.strip().startswith("postconf"):
            await asyncio.to_thread(subprocess.run, ["bash", "-c", line.strip()], env=env,
                                    check=True)
    await asyncio.to_thread(mta.reload)

    await asyncio.to_thread(swaks, mta.port, "finansy@example.com", "schet-1")
    await asyncio.to_thread(swaks, mta.port, "finance@example.com", "invoice-2")
    await asyncio.to_thread(swaks, mta.port, "fin@example.com", "forged-3",
                            ("--add-header", "X-Mailrouter-Folder: fin@example.test Junk"))
    refused = await asyncio.to_thread(
        subprocess.run, ["swaks", "-s", "127.0.0.1", "-p", str(mta.port), "-f", "a@outside.test",
                         "-t", "nobody@example.com"], capture_output=True, text=True, check=False)
    assert "550 5.1.1" in refused.stdout, refused.stdout

    want = {"INBOX": [b"Subject: forged-3"], mutf7("Финансы"): [b"Subject: schet-1"],
            "Finance": [b"Subject: invoice-2"]}
    end = asyncio.get_running_loop().time() + 40
    while True:
        got = await asyncio.to_thread(imap_read, dv.imap_port, "fin@example.test")
        if got == want or asyncio.get_running_loop().time() > end:
            break
        await asyncio.sleep(0.2)
    assert got == want, (got, mta.maillog[-3000:], dv.log[-3000:])
    assert mutf7("Финансы") == "&BCQEOAQ9BDAEPQRBBEs-"
    assert (dv.maildir("fin@example.test") / ".&BCQEOAQ9BDAEPQRBBEs-").is_dir()


def write_config(tmp_path: Path, routing: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    # the LMTP mailboxes' downstream, which check requires of a config delivering to them
    cfg.write_text(f"routing: ['{routing}']\ndelivery: {{lmtp: {{host: 127.0.0.1, port: 24}}}}\n",
                   encoding="utf-8")
    return cfg


CHECK_ROUTING = """\
domains: [example.com]
mailboxes:
  plain: {lmtp: plain@example.test}
  sieved: {lmtp: sieved@example.test, sieve_folders: true}
aliases:
  a@example.com: {mailbox: plain, folder: Финансы}
  b@example.com: {mailbox: sieved, folder: Финансы}
  c@example.com: {mailbox: plain, folder: Finance}
  postmaster@example.com: mailbox:plain
rules:
  - name: cyr-folder
    when: {subject: счет}
    then: {folder: Счета}
  - name: sieved-rule
    when: {subject: акт}
    then: {mailbox: sieved, folder: Акты}
"""


async def test_check_warns_for_a_non_ascii_folder_an_lmtp_mailbox_cannot_reach(tmp_path):
    """`check`: a Cyrillic folder on an LMTP mailbox without sieve_folders is a warning (it
    would land in the inbox), naming the address and the fix; the same folder on a mailbox
    with sieve_folders, and an ASCII folder, are not; a rule setting only a Cyrillic folder
    is warned about with file:line. A rule naming the sieve mailbox loads (no error)."""
    routing = tmp_path / "routing.yaml"
    routing.write_text(CHECK_ROUTING, encoding="utf-8")
    out = await asyncio.to_thread(subprocess.run, [*CLI, "check", "-c",
                                                   str(write_config(tmp_path, routing))],
                                  capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    warnings = [l for l in out.stdout.splitlines() if l.startswith("warning:")]
    assert any(l.startswith("warning: a@example.com: folder 'Финансы' of LMTP mailbox 'plain' "
                            "goes to the inbox") and "sieve_folders: true" in l for l in warnings)
    assert any(f"{routing}:11: rule 'cyr-folder': folder 'Счета' goes to the inbox for LMTP "
               "mailboxes plain;" in l for l in warnings), warnings
    assert not any("b@example.com" in l or "c@example.com" in l or "Акты" in l for l in warnings)
    assert len(warnings) == 2, warnings


def test_folder_line_is_7bit_and_names_the_recipient():
    """The header line is ASCII (Dovecot's LMTP has no SMTPUTF8), RFC 2047 for a Cyrillic
    folder, plain for an ASCII one, INBOX without a folder; no CR/LF can be injected."""
    from mailrouter.delivery.deliverer import folder_line
    assert folder_line("fin@example.test", "Финансы") == (
        b"X-Mailrouter-Folder: fin@example.test =?utf-8?b?0KTQuNC90LDQvdGB0Ys=?=\r\n")
    assert folder_line("fin@example.test", "Finance") == b"X-Mailrouter-Folder: fin@example.test Finance\r\n"
    assert folder_line("fin@example.test", None).endswith(b" INBOX\r\n")
    evil = folder_line("fin@example.test", "A\r\nBcc: x@y")
    assert evil == b"X-Mailrouter-Folder: fin@example.test A Bcc: x@y\r\n"      # one line
    long = folder_line("fin@example.test", "Финансы " * 12).split(b"\r\n")
    assert long[-1] == b"" and all(l.startswith(b" =?utf-8?b?") for l in long[1:-1]), long


def test_sieve_folders_only_on_lmtp_and_only_a_boolean():
    """sieve_folders on a maildir mailbox, or not a boolean, is a load error naming it."""
    from mailrouter.addresses import AddressBook
    from mailrouter.errors import ConfigErrors
    for box in ({"maildir": "x", "sieve_folders": True}, {"lmtp": "x@y.test", "sieve_folders": "yes"}):
        with pytest.raises(ConfigErrors, match="sieve_folders must be true or false, and only"):
            AddressBook.build({"domains": ["example.com"], "mailboxes": {"m": box}})
    ok = AddressBook.build({"domains": ["example.com"],
                            "mailboxes": {"m": {"lmtp": "x@y.test", "sieve_folders": True}}})
    assert ok.mailboxes["m"].sieve_folders and ok.mailboxes["m"].where == "x@y.test"

"""`mailrouter postfix`: Postfix's tables from the address book, so Postfix refuses at RCPT.

The table contents are checked as values (pure `build_maps`); the end-to-end
tests write them with the real CLI, index them with the real `postmap`, add them
to a private Postfix with exactly the `postconf` lines the command prints, and
then ask Postfix over SMTP: an unknown address is refused in the session (no
backscatter), a known one (with a +detail) is relayed to mailrouter.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import subprocess
import time
import sys
from pathlib import Path

import pytest

from mailrouter.addresses import AddressBook
from mailrouter.postfixmaps import build_maps, postconf_lines, write_maps
from tests.support.daemon import REPO, maildir_files

CLI = [sys.executable, "-m", "mailrouter.cli"]

BOOK = {
    "domains": ["example.com", "пример.рф"],
    "mailboxes": {"sales": {"maildir": "sales"}},
    "aliases": {"sales@example.com": "mailbox:sales", "c++@example.com": "mailbox:sales",
                "Счета@пример.рф": "mailbox:sales"},
    "moved": {"old@example.com": {"now": "sales@example.com", "deliver": False},
              "older@example.com": {"now": "sales@example.com"}},
}


def table(text: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in text.splitlines() if line and line[0] != "#")


def test_relay_maps_list_every_address_and_route_each_domain():
    """relay mode: every known address (moved ones too, IDN in both forms, case folded) is
    OK in relay_recipients; transport routes each domain; a moved address that no longer
    delivers is refused by Postfix with our 551 5.1.6 naming the new address."""
    maps = build_maps(AddressBook.build(BOOK), "smtp:[127.0.0.1]:2525")
    rcpts = table(maps.files["relay_recipients"])
    assert set(rcpts) == {"sales@example.com", "c++@example.com", "old@example.com",
                          "older@example.com", "счета@пример.рф", "счета@xn--e1afmkfd.xn--p1ai"}
    assert set(rcpts.values()) == {"OK"}
    assert table(maps.files["transport"]) == {
        "example.com": "smtp:[127.0.0.1]:2525", "пример.рф": "smtp:[127.0.0.1]:2525",
        "xn--e1afmkfd.xn--p1ai": "smtp:[127.0.0.1]:2525"}
    assert set(table(maps.files["domains"])) == {"example.com", "пример.рф", "xn--e1afmkfd.xn--p1ai"}
    assert table(maps.files["recipient_access"]) == {
        "old@example.com": "551 5.1.6 Recipient has moved; please try <sales@example.com>"}
    assert "recipient_delimiter = +" in maps.files["transport"]


def test_virtual_maps_map_each_address_to_itself_and_route_it():
    """virtual mode: each address maps to itself (known to Postfix) and is routed one by one,
    so other addresses of a shared domain keep their own transport."""
    maps = build_maps(AddressBook.build(BOOK), "lmtp:inet:127.0.0.1:2524", "virtual")
    virtual = table(maps.files["virtual"])
    assert virtual["sales@example.com"] == "sales@example.com" and len(virtual) == 6
    assert table(maps.files["transport"])["c++@example.com"] == "lmtp:inet:127.0.0.1:2524"
    assert "relay_recipients" not in maps.files and "domains" not in maps.files


def test_without_detail_separator_the_tables_say_so():
    """detail_separator "" (no subaddressing): the header says Postfix must not strip one."""
    book = AddressBook.build(dict(BOOK, address_options={"detail_separator": ""}))
    maps = build_maps(book, "smtp:[127.0.0.1]:2525")
    assert "no recipient_delimiter" in maps.files["relay_recipients"]
    assert not any("recipient_delimiter" in l for l in postconf_lines(Path("/x"), "relay", ""))


def test_postconf_line_puts_the_recipient_access_check_first():
    """`mailrouter postfix` printed `smtpd_recipient_restrictions = $(postconf -h ...)
    check_recipient_access ...`: after a list ending in `permit` Postfix never reached it, took
    a moved address (deliver: false) and bounced it after mailrouter's 551. It goes first."""
    [line] = [line for line in postconf_lines(Path("/x"), "relay", "+")
              if "smtpd_recipient_restrictions" in line]
    assert line == ('postconf -e "smtpd_recipient_restrictions = check_recipient_access '
                    'hash:/x/recipient_access $(postconf -h smtpd_recipient_restrictions)"')
    now = {"smtpd_recipient_restrictions": "check_recipient_access hash:/x/recipient_access, permit"}
    assert not any("smtpd_recipient_restrictions" in line
                   for line in postconf_lines(Path("/x"), "relay", "+", current=now))


def test_quoted_local_part_is_a_quoted_key():
    """A quoted local part with a space is a key as written, quotes included (postmap reads
    it whole, smtpd looks it up so: test_postfix_finds_quoted_local_parts_in_the_tables);
    it was a comment, and Postfix refused the address with 550 5.1.1."""
    book = AddressBook.build(dict(BOOK, aliases={**BOOK["aliases"],
                                                 '"a b"@example.com': "mailbox:sales"}))
    maps = build_maps(book, "smtp:[127.0.0.1]:2525")
    assert table(maps.files["relay_recipients"])['"a b"@example.com'] == "OK"
    assert table(build_maps(book, "x", "virtual").files["virtual"])['"a b"@example.com'] \
        == '"a b"@example.com'
    # a control character: no RCPT names it, and a line break would end the line there
    book = AddressBook.build(dict(BOOK, aliases={**BOOK["aliases"],
                                                 '"a\nb"@example.com': "mailbox:sales"}))
    text = build_maps(book, "smtp:[127.0.0.1]:2525").files["relay_recipients"]
    assert '# left out (a control character in the local part): "a\\x0ab"@example.com\n' in text
    assert not any(line.startswith('b"') for line in text.splitlines())


def test_bad_mode_is_refused():
    """A mode that is neither relay nor virtual is a clear ValueError."""
    with pytest.raises(ValueError, match="relay, virtual"):
        build_maps(AddressBook.build(BOOK), "smtp:[127.0.0.1]:2525", "alias")


def test_write_maps_rewrites_only_what_changed(tmp_path):
    """A second run with the same book changes nothing (so postmap and Postfix's table
    reopen are not triggered for nothing); a changed book rewrites the changed tables."""
    maps = build_maps(AddressBook.build(BOOK), "smtp:[127.0.0.1]:2525")
    assert sorted(write_maps(maps, tmp_path).changed) == sorted(maps.files)
    assert write_maps(maps, tmp_path).changed == []
    book2 = AddressBook.build(dict(BOOK, aliases={"sales@example.com": "mailbox:sales",
                                                  "Счета@пример.рф": "mailbox:sales"}))
    changed = write_maps(build_maps(book2, "smtp:[127.0.0.1]:2525"), tmp_path).changed
    assert changed == ["relay_recipients"]
    assert "c++@example.com" not in (tmp_path / "relay_recipients").read_text()


def test_postmap_that_failed_is_run_again_next_time(tmp_path):
    """The daemon's reload wrote relay_recipients with a new address, then postmap failed
    (here: a postfix_config without main.cf; under the unit, a directory it cannot see).
    The next refresh found the table unchanged and its .db there, ran no postmap, and
    Postfix kept answering 550 5.1.1 for the new address until the book changed again."""
    postmap = "/usr/sbin/postmap"
    if not Path(postmap).exists():
        pytest.skip("postmap not found (apt-get install postfix)")
    etc = tmp_path / "etc"                                       # a Postfix config
    etc.mkdir()
    (etc / "main.cf").write_text("compatibility_level = 3.6\n")
    tables = tmp_path / "maps"
    maps = build_maps(AddressBook.build(BOOK), "smtp:[127.0.0.1]:2525")
    write_maps(maps, tables, postmap, str(etc))
    book2 = AddressBook.build(dict(BOOK, aliases={**BOOK["aliases"],
                                                  "new@example.com": "mailbox:sales"}))
    maps2 = build_maps(book2, "smtp:[127.0.0.1]:2525")
    with pytest.raises(RuntimeError, match="main.cf"):
        write_maps(maps2, tables, postmap, str(tmp_path / "nothere"))
    again = write_maps(maps2, tables, postmap, str(etc))
    assert again.changed == []                                   # the tables were written,
    assert again.indexed == ["relay_recipients"]                 # the stale index rebuilt
    assert again.summary() == "changed=none indexed=relay_recipients"   # the log says so
    found = subprocess.run([postmap, "-c", str(etc), "-q", "new@example.com",
                            f"hash:{tables / 'relay_recipients'}"],
                           capture_output=True, text=True, check=False)
    assert found.returncode == 0, found.stderr


POSTMAP = "/usr/sbin/postmap"
FOLD_BOOK = {
    "domains": ["example.com", "пример.рф", "sales.test"],
    "mailboxes": {"sales": {"maildir": "sales"}, "support": {"maildir": "support"}},
    "aliases": {"straße@example.com": "mailbox:sales", "ΟΔΥΣΣΕΥΣ@example.com": "mailbox:support",
                "ﬁnance@example.com": "mailbox:sales", "ꭰꭱ@example.com": "mailbox:support",
                "sales@example.com": "mailbox:sales", "Счета@пример.рф": "mailbox:sales",
                "a@sales.test": "mailbox:support", "postmaster@example.com": "mailbox:sales"},
    "moved": {"müller@example.com": {"now": "sales@example.com", "deliver": False}},
}


def _postmap_etc(tmp_path: Path) -> Path:
    if not Path(POSTMAP).exists():
        pytest.skip("postmap not found (apt-get install postfix)")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text("compatibility_level = 3.6\nsmtputf8_enable = yes\n")
    return etc


def postmap_finds(etc: Path, table_path: Path, keys: list[str]) -> dict[str, str]:
    """What Postfix's own lookup (`postmap -q -`, as smtpd asks a table) finds for each key."""
    done = subprocess.run([POSTMAP, "-c", str(etc), "-q", "-", f"hash:{table_path}"],
                          input="".join(k + "\n" for k in keys), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode in (0, 1), done.stderr
    return dict(line.split("\t", 1) for line in done.stdout.splitlines())


def _with_delimiter(etc: Path, table_path: Path, queries: list[str]) -> set[str]:
    """The queries a table takes as Postfix asks it with recipient_delimiter = +: the whole
    address, then without its +x."""
    whole = postmap_finds(etc, table_path, queries)
    bases = postmap_finds(etc, table_path, [q.replace("+x@", "@") for q in queries])
    return {q for q in queries if q in whole or q.replace("+x@", "@") in bases}


def _spellings(address: str) -> list[str]:
    local, _, domain = address.rpartition("@")
    ace = domain.encode("idna").decode("ascii")
    swaps = {"s": "\u017f", "fi": "\ufb01", "k": "\u212a", "ß": "ss", "ς": "σ", "σ": "ς"}
    forms = {local, local.upper(), local.casefold(), local.title(), local.swapcase()}
    forms |= {f.replace(a, b) for f in list(forms) for a, b in swaps.items()}
    forms |= {f + "+x" for f in list(forms)} | {f[:-1] for f in list(forms)}
    return [f"{f}@{d}" for f in sorted(forms) if f
            for d in {domain, domain.upper(), ace, ace.upper(), domain.replace("s", "\u017f")}]


def test_postfix_tables_and_the_book_take_exactly_the_same_spellings(tmp_path):
    """The tables `mailrouter postfix` writes, indexed and asked by the real postmap (which
    folds keys and queries with full Unicode case folding when smtputf8_enable = yes), take
    an address exactly when the book does, to the same key: STRASSE@ for straße@, ſales@ for
    sales@, finance@ for ﬁnance@, οδυσσευσ@ for οδυσσευς@. The book folded with str.lower,
    so Postfix took these and mailrouter refused them after Postfix's queue: a bounce. A
    moved address that no longer delivers is refused by both for the same spellings."""
    etc = _postmap_etc(tmp_path)
    book = AddressBook.build(FOLD_BOOK)
    maps = tmp_path / "maps"
    write_maps(build_maps(book, "smtp:[127.0.0.1]:2525"), maps, POSTMAP, str(etc))
    queries = sorted({q for a in sorted(book.addresses()) for q in _spellings(a)}
                     | {"strase@example.com", "nobody@example.com", "a@ſales.test",
                        "ſales@example.com"})
    took = _with_delimiter(etc, maps / "relay_recipients", queries)
    known = {q for q in queries if book.knows(q)}
    assert took == known, (sorted(took - known), sorted(known - took))
    assert {"STRASSE@example.com", "οδυσσευσ@example.com", "FINANCE@example.com",
            "ſales@example.com", "ᎠᎡ@example.com", "a@ſales.test"} <= known
    assert book.resolve("STRASSE+x@EXAMPLE.com").address == "straße@example.com"
    refused = _with_delimiter(etc, maps / "recipient_access", queries)
    moved = {q for q in queries if (r := book.resolve(q).reply) is not None and r.code == 551}
    assert refused == moved and "MÜLLER+x@example.com" in moved


def test_python_casefold_is_postfixs_fold_for_every_code_point(tmp_path):
    """The book folds with str.casefold because Postfix's tables fold with ICU's full case
    folding (util/casefold.c): a key per code point, written and dumped back by postmap,
    comes back folded exactly as Python folds it (the U+1FFFF below; surrogates, white space
    and the table's own syntax left out). A newer Unicode in one of the two shows here."""
    etc = _postmap_etc(tmp_path)
    lines = [f"x{chr(cp)}@{cp:x}.test\t{cp:x}\n" for cp in range(0x21, 0x20000)
             if not 0xD800 <= cp <= 0xDFFF and not chr(cp).isspace() and chr(cp) not in '#@"\x7f']
    (tmp_path / "all").write_text("".join(lines), encoding="utf-8")
    subprocess.run([POSTMAP, "-c", str(etc), f"hash:{tmp_path / 'all'}"], check=True, timeout=120)
    dump = subprocess.run([POSTMAP, "-c", str(etc), "-s", f"hash:{tmp_path / 'all'}"],
                          capture_output=True, text=True, check=True, timeout=120).stdout
    folded = {int(v, 16): k[1:k.rindex("@")] for k, v in (l.split("\t") for l in dump.splitlines())}
    assert len(folded) == len(lines)
    assert [cp for cp, f in folded.items() if f != chr(cp).casefold()] == []


def test_postfix_command_without_a_directory_says_so(tmp_path):
    """`mailrouter postfix` with neither --dir nor postfix_maps.dir: exit 2 and what to write."""
    if Path("/etc/mailrouter/config.yaml").exists():     # found without -c: it may name a dir
        pytest.skip("/etc/mailrouter/config.yaml exists on this machine")
    out = subprocess.run([*CLI, "postfix"], capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert out.returncode == 2 and "--dir DIR" in out.stderr


@pytest.mark.parametrize("main_cf, said", [
    ("relay_domains = other.test\n", ["relay_domains already lists other.test and "
                                        "relay_recipient_maps has no table of theirs"]),
    ("mydestination = $myhostname, Example.com, localhost\n",
     ["example.com is in Postfix's mydestination: Postfix serves it itself"]),
    ("virtual_alias_maps = hash:{etc}/virtual\n",       # virtual_alias_domains' default
     ["example.com is in Postfix's virtual_alias_domains"]),
    ("relay_domains = other.test\nrelay_recipient_maps = hash:{etc}/theirs\n", []),
    ("message_size_limit = 52428800\n",                 # above max_message_size's 25 MiB
     ["Postfix's message_size_limit (52428800) is above limits.max_message_size (26214400)"]),
    ("message_size_limit = 26214400\n", []),
    ("", [])])
def test_postfix_command_warns_of_main_cf_that_would_refuse_mail(tmp_path, main_cf, said):
    """README "Postfix in front": `mailrouter postfix` prints the postconf lines that add the
    tables. Run on a Postfix that relays other.test without relay_recipient_maps, they made
    Postfix refuse every address of other.test ("User unknown in relay recipient table");
    with example.com in mydestination (the Debian installer's mail name), every address of
    ours ("User unknown in local recipient table"). It says so now, before the lines, as
    the set-up script stops on the same; nothing when main.cf has neither. And a
    message_size_limit above limits.max_message_size: Postfix takes what we refuse (552)."""
    if not Path("/usr/sbin/postconf").exists():
        pytest.skip("postfix not installed (apt-get install postfix)")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text("compatibility_level = 3.6\nmyhostname = mx.example.net\n"
                                 + main_cf.format(etc=etc))
    (etc / "virtual").write_text("example.com anything\n")
    (etc / "theirs").write_text("@other.test OK\n")
    for name in ("virtual", "theirs"):
        subprocess.run(["/usr/sbin/postmap", "-c", str(etc), f"hash:{etc / name}"], check=True)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{REPO / 'rules' / '*.yaml'}']\n", encoding="utf-8")
    out = subprocess.run([*CLI, "postfix", "-c", str(cfg), "--dir", str(tmp_path / "maps"),
                          "--postfix-config", str(etc)], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if " warning: " in line]
    assert len(warnings) == len(said), out.stderr
    for line, start in zip(warnings, said):
        assert line.startswith(f"mailrouter postfix: warning: {start}"), line
    assert "postconf -e" in out.stdout


def test_postfix_command_after_the_set_up_script_warns_of_nothing(tmp_path):
    """On a Postfix that never set relay_domains (Debian's main.cf), the set-up script (and
    the postconf lines `mailrouter postfix` prints) write its default with our table after
    it: `relay_domains = ${{$compatibility_level} <level {2} ? {$mydestination} : {}}
    hash:.../domains`. Every later `mailrouter postfix` then warned that relay_domains
    "already lists ${{$compatibility_level} <level {2} ..." with no table of theirs: the
    default's words read as other domains. The default is no other domain."""
    if not Path("/usr/sbin/postconf").exists():
        pytest.skip("postfix not installed (apt-get install postfix)")
    etc, maps = tmp_path / "etc", tmp_path / "maps"
    etc.mkdir()
    default = subprocess.run(["/usr/sbin/postconf", "-c", str(etc), "-dh", "relay_domains"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert "mydestination" in default, default          # the expression, not a plain list
    (etc / "main.cf").write_text(f"compatibility_level = 3.6\nmyhostname = mx.example.net\n"
                                 f"relay_domains = {default} hash:{maps}/domains\n"
                                 f"relay_recipient_maps = hash:{maps}/relay_recipients\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{REPO / 'rules' / '*.yaml'}']\n", encoding="utf-8")
    out = subprocess.run([*CLI, "postfix", "-c", str(cfg), "--dir", str(maps),
                          "--postfix-config", str(etc)], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert " warning: " not in out.stderr, out.stderr
    (etc / "main.cf").write_text(f"compatibility_level = 3.6\nmyhostname = mx.example.net\n"
                                 f"relay_domains = {default} other.test hash:{maps}/domains\n"
                                 f"relay_recipient_maps = hash:{maps}/relay_recipients\n")
    out = subprocess.run([*CLI, "postfix", "-c", str(cfg), "--dir", str(maps),
                          "--postfix-config", str(etc)], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=False)
    assert "warning: relay_domains already lists other.test and" in out.stderr, out.stderr


def test_bad_postfix_maps_config_is_refused(tmp_path):
    """postfix_maps with a wrong mode and no dir: `check` names both, with file:line."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("postfix_maps: {mode: alias, postmap: yes please}\n", encoding="utf-8")
    out = subprocess.run([*CLI, "check", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 1
    assert "'postfix_maps' needs 'dir'" in out.stderr
    cfg.write_text("postfix_maps: {dir: maps, mode: alias}\n", encoding="utf-8")
    out = subprocess.run([*CLI, "check", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 1 and f"{cfg}:1:" in out.stderr
    assert "'postfix_maps.mode' must be relay or virtual, not 'alias'" in out.stderr


# -- end to end with a real Postfix ---------------------------------------------------------


def rcpt_replies(port: int, rcpts: list[str]) -> dict[str, tuple[int, str]]:
    """RCPT each address in one session to Postfix and return its reply to each."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("client@outside.test")
        out = {}
        for r in rcpts:
            code, text = s.rcpt(r)
            out[r] = (code, text.decode())
        s.rset()
    return out


def send(port: int, rcpt: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("client@outside.test", [rcpt],
                   f"From: client@outside.test\r\nTo: {rcpt}\r\nSubject: maps\r\n\r\nhi\r\n")


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["relay", "virtual"])
async def test_postfix_refuses_unknown_at_rcpt_and_relays_known(make_app, postfix, tmp_path,
                                                                mode):
    """Tables written by `mailrouter postfix --postmap`, added with the postconf lines it
    prints: Postfix itself refuses nobody@example.com at RCPT with 550 5.1.1 (nothing is
    queued, so nothing bounces), and relays sales+Quotes@example.com to mailrouter through
    the generated transport (relayhost points at a dead port, so only the table routes).
    virtual mode: the same in a domain Postfix shares with its own virtual mailboxes."""
    app = await make_app()
    port = app.bound["smtp"][1]
    mta = await asyncio.to_thread(postfix, relay_port=1)     # relayhost: nothing listens
    if mode == "virtual":    # example.com is shared: Postfix hosts a person's mailbox there
        mta.postconf("virtual_mailbox_domains = example.com",
                     "virtual_mailbox_maps = inline:{ person@example.com=example.com/person/ }")
    maps = tmp_path / "maps"
    out = await asyncio.to_thread(
        subprocess.run, [*CLI, "postfix", "--dir", str(maps), "--mode", mode, "--postmap",
                         "--postfix-config", str(mta.etc), "--nexthop", f"smtp:[127.0.0.1]:{port}"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert (maps / "transport.db").exists()
    lines = [l.strip() for l in out.stdout.splitlines() if l.strip().startswith("postconf")]
    assert lines, out.stdout
    env = dict(os.environ, MAIL_CONFIG=str(mta.etc))          # postconf edits this main.cf
    for line in lines:
        done = await asyncio.to_thread(subprocess.run, ["bash", "-c", line], env=env,
                                       capture_output=True, text=True, check=False)
        assert done.returncode == 0, (line, done.stderr)
    await asyncio.to_thread(mta.reload)
    main_cf = (mta.etc / "main.cf").read_text()
    assert f"hash:{maps}/transport" in main_cf
    # run again (after an edit of the book): the lines were printed again, and an admin who
    # ran them listed every table twice in main.cf
    again = await asyncio.to_thread(
        subprocess.run, [*CLI, "postfix", "--dir", str(maps), "--mode", mode, "--postmap",
                         "--postfix-config", str(mta.etc), "--nexthop", f"smtp:[127.0.0.1]:{port}"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert again.returncode == 0 and "postconf" not in again.stdout, again.stdout
    assert "main.cf already lists them: nothing to add" in again.stdout, again.stdout

    replies = await asyncio.to_thread(rcpt_replies, mta.port, [
        "nobody@example.com", "sales+Quotes@example.com", "SALES@example.com"])
    code, text = replies["nobody@example.com"]
    assert code == 550 and "5.1.1" in text, replies
    assert replies["sales+Quotes@example.com"][0] == 250, replies
    assert replies["SALES@example.com"][0] == 250, replies
    assert await asyncio.to_thread(mta.queue_ids) == []

    await asyncio.to_thread(send, mta.port, "sales+Quotes@example.com")
    box = tmp_path / "var" / "mail" / "sales"
    end = asyncio.get_running_loop().time() + 30
    while not maildir_files(box):
        assert asyncio.get_running_loop().time() < end, mta.maillog
        await asyncio.sleep(0.05)
    assert "status=sent" in await asyncio.to_thread(mta.wait_log, "status=sent")
    assert f"relay=127.0.0.1[127.0.0.1]:{port}" in mta.maillog


async def test_daemon_rewrites_tables_on_reload(make_app, tmp_path):
    """postfix_maps.on_reload: the daemon writes the tables at start and again after a
    reload that added an alias; a refused reload leaves them as they were."""
    from mailrouter.config import PostfixMapsConfig
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "book.yaml").write_text(
        "domains: [example.com]\nmailboxes: {sales: {maildir: sales}}\n"
        "aliases: {sales@example.com: mailbox:sales}\nrules: []\n", encoding="utf-8")
    out = tmp_path / "maps"
    app = await make_app(routing=(str(rules / "*.yaml"),),
                         postfix_maps=PostfixMapsConfig(out, on_reload=True))
    first = table((out / "relay_recipients").read_text())
    assert set(first) == {"sales@example.com"}
    assert table((out / "transport").read_text()) == {
        "example.com": f"smtp:[127.0.0.1]:{app.config.smtp.port}"}
    (rules / "book.yaml").write_text(
        "domains: [example.com]\nmailboxes: {sales: {maildir: sales}}\n"
        "aliases: {sales@example.com: mailbox:sales, quotes@example.com: sales@example.com}\n"
        "rules: []\n", encoding="utf-8")
    ok, _ = await app.reload()
    assert ok
    assert set(table((out / "relay_recipients").read_text())) == {"sales@example.com",
                                                                   "quotes@example.com"}
    (rules / "book.yaml").write_text("domains: [example.com]\naliases: {x@example.com: nobox}\n",
                                     encoding="utf-8")
    ok, _ = await app.reload()
    assert not ok
    assert "quotes@example.com" in (out / "relay_recipients").read_text()


def test_reload_says_when_postfix_tables_were_not_rebuilt(daemon_process, tmp_path):
    """`mailrouter reload` with postfix_maps.on_reload, when the tables cannot be written
    (here their directory became a file): the rules are reloaded, and the command says the
    tables were not, naming the place, the error and the fix, and exits 3. It said
    "reloaded" and exited 0, the failure only an ERROR line in the log, so `reload && ...`
    went on while Postfix refused the book's new addresses."""
    proc = daemon_process(extra="workers: 1\npostfix_maps: {dir: maps, on_reload: true}\n")
    maps = tmp_path / "maps"
    for _ in range(300):              # written at start, just after the listeners open
        if "event=postfix_maps dir=" in proc.log.read_text():
            break
        time.sleep(0.1)
    assert (maps / "relay_recipients").exists()
    for f in maps.iterdir():
        f.unlink()
    maps.rmdir()
    maps.write_text("not a directory\n")
    out = subprocess.run(CLI + ["reload", "-c", str(proc.config)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 3, (out.stdout, out.stderr)
    assert out.stdout.startswith("reloaded: ")
    assert "the rules were reloaded, but Postfix's tables were not rebuilt" in out.stderr
    assert f"{maps}: File exists; set postfix_maps.dir to a directory" in out.stderr
    maps.unlink()                                         # fixed: reload is quiet again
    out = subprocess.run(CLI + ["reload", "-c", str(proc.config)], capture_output=True,
                         text=True, check=False)
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    assert (maps / "relay_recipients").exists()
    assert "event=postfix_maps dir=" in proc.log.read_text()


@pytest.mark.e2e
async def test_postfix_takes_another_case_of_a_non_ascii_address_and_mailrouter_delivers_it(
        make_app, postfix, tmp_path):
    """A real Postfix in front with the tables of a book listing straße@example.com: Postfix
    (smtputf8_enable, full Unicode case folding) takes STRASSE@example.com and ſales@ and
    relays them; mailrouter answered 550 5.1.1 after Postfix's queue and Postfix bounced them
    to the sender (backscatter). Both are delivered now, and nothing is left to bounce."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "book.yaml").write_text(
        "domains: [example.com]\nmailboxes: {sales: {maildir: sales}, strasse: {maildir: strasse}}\n"
        "aliases: {straße@example.com: mailbox:strasse, sales@example.com: mailbox:sales,"
        " postmaster@example.com: mailbox:sales}\nrules: []\n", encoding="utf-8")
    app = await make_app(routing=(str(rules / "*.yaml"),))
    port = app.bound["smtp"][1]
    mta = await asyncio.to_thread(postfix, relay_port=1)     # relayhost: nothing listens
    maps = tmp_path / "maps"
    book = AddressBook.load(rules / "book.yaml")
    write_maps(build_maps(book, f"smtp:[127.0.0.1]:{port}"), maps, POSTMAP, str(mta.etc))
    env = dict(os.environ, MAIL_CONFIG=str(mta.etc))
    for line in postconf_lines(maps, "relay", "+"):
        done = await asyncio.to_thread(subprocess.run, ["bash", "-c", line.split("  #")[0]],
                                       env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, (line, done.stderr)
    await asyncio.to_thread(mta.reload)

    def deliver() -> dict[str, int]:
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as s:
            s.ehlo("client.test")
            codes = {}
            for rcpt in ("STRASSE@example.com", "ſales@example.com", "nobody@example.com"):
                s.mail("client@outside.test", ["SMTPUTF8"])
                codes[rcpt] = s.rcpt(rcpt)[0]
                if codes[rcpt] == 250:
                    s.data(b"From: c@outside.test\r\nSubject: fold\r\n\r\nhi\r\n")
                else:
                    s.rset()
            return codes
    assert await asyncio.to_thread(deliver) == {"STRASSE@example.com": 250,
                                                "ſales@example.com": 250,
                                                "nobody@example.com": 550}
    end = asyncio.get_running_loop().time() + 30
    boxes = [tmp_path / "var" / "mail" / "strasse", tmp_path / "var" / "mail" / "sales"]
    while not all(maildir_files(b) for b in boxes):
        assert asyncio.get_running_loop().time() < end, mta.maillog
        await asyncio.sleep(0.05)
    while mta.maillog.count("status=sent") < 2:        # Postfix logs after our 250
        assert asyncio.get_running_loop().time() < end, mta.maillog
        await asyncio.sleep(0.05)
    assert "status=bounced" not in mta.maillog, mta.maillog


@pytest.mark.e2e
def test_postfix_finds_quoted_local_parts_in_the_tables(postfix, tmp_path):
    """A moved address that no longer delivers, whose local part is quoted ('"old name"@'),
    in recipient_access as Postfix (3.5+) looks it up: the quoted (external) form, the key in
    postmap's double quotes (postmap(1), "Whitespace in lookup keys"). Asked by a real Postfix
    over SMTP, RCPT for each spelling gets our 551 naming the new address; an alias
    '"first last"@' is in relay_recipients the same way and taken (it was left out as a
    comment: 550 5.1.1 for an address the book delivers)."""
    book = AddressBook.build({
        "domains": ["example.com"], "mailboxes": {"sales": {"maildir": "sales"}},
        "aliases": {"sales@example.com": "mailbox:sales", '"first last"@example.com': "mailbox:sales"},
        "moved": {'"old name"@example.com': {"now": "sales@example.com", "deliver": False},
                  '"say \\"hi\\""@example.com': {"now": "sales@example.com", "deliver": False},
                  '"a\\\\b c"@example.com': {"now": "sales@example.com", "deliver": False}}})
    mta = postfix(relay_port=1)
    maps = tmp_path / "maps"
    write_maps(build_maps(book, "smtp:[127.0.0.1]:1"), maps, POSTMAP, str(mta.etc))
    mta.postconf("relay_domains = example.com", "smtputf8_enable = yes", "recipient_delimiter = +",
                 f"relay_recipient_maps = hash:{maps}/relay_recipients",
                 f"smtpd_recipient_restrictions = check_recipient_access hash:{maps}/"
                 "recipient_access permit_mynetworks reject_unauth_destination")
    mta.reload()
    rcpts = ['"old name"@example.com', '"OLD NAME"@example.com', '"old name+x"@example.com',
             '"say \\"hi\\""@example.com', '"a\\\\b c"@example.com', "nobody@example.com"]
    replies = rcpt_replies(mta.port, rcpts + ['"First Last"@example.com', '"first last+x"@example.com'])
    assert replies['"First Last"@example.com'][0] == 250, replies
    assert replies['"first last+x"@example.com'][0] == 250, replies
    for r in rcpts[:-1]:
        code, text = replies[r]
        assert code == 551 and "please try <sales@example.com>" in text, (r, replies, mta.maillog)
    assert replies["nobody@example.com"][0] == 550, replies

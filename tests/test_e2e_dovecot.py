"""End to end: mailrouter delivering through `delivery.lmtp` to a real Dovecot.

The routing file (written per test) maps example.com addresses to Dovecot users
on example.test: a plain mailbox, an ASCII folder (`user+Finance@`, Dovecot's
lmtp_save_to_detail_mailbox), a Cyrillic folder «Финансы», and a second user.

What Dovecot does with folder names (measured with Dovecot 2.3.19, see
tests below): the `+detail` is taken as a UTF-8 mailbox name, so
`+&BCQEOAQ9BDAEPQRBBEs-` (modified UTF-7) would create a folder literally named
"&BCQEOAQ9BDAEPQRBBEs-" - wrong; and a UTF-8 `+Финансы` cannot be sent at all,
because Dovecot's LMTP offers no SMTPUTF8. So a non-ASCII folder cannot be
reached through `user+Folder@`. Today mailrouter answers 550 5.6.7 after DATA
for such a recipient (the sending MTA bounces it); the test below asserts only
that it never gets 250 while sitting in a mis-named folder.
"""

from __future__ import annotations

import asyncio
import shutil
import smtplib
from pathlib import Path

import pytest

from mailrouter.config import DeliveryConfig, Downstream
from tests.support.daemon import maildir_files
from tests.support.dovecot import DovecotServer
from tests.support.wire import Wire

pytestmark = pytest.mark.asyncio

ROUTING = """\
domains: [example.com]
mailboxes:
  user: {lmtp: user@example.test}
  bob:  {lmtp: bob@example.test}
  local: {maildir: local}
aliases:
  plain@example.com:   mailbox:user
  finance@example.com: {mailbox: user, folder: Finance}
  finansy@example.com: {mailbox: user, folder: Финансы}
  vip@example.com:     {mailbox: user, folder: "Clients VIP"}
  deals@example.com:   {mailbox: user, folder: 'Deals (A&B), "big"'}
  bob@example.com:     mailbox:bob
  local@example.com:   mailbox:local
"""

MSG = b"From: Client <client@outside.test>\r\nSubject: %s\r\nMessage-ID: <%s@outside.test>\r\n\r\nbody\r\n"


async def start(make_app, dovecot_factory, tmp_path: Path) -> tuple[object, DovecotServer]:
    dv = await asyncio.to_thread(dovecot_factory, ["user@example.test", "bob@example.test"])
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING, encoding="utf-8")
    app = await make_app(
        routing=(str(routing),),
        delivery=DeliveryConfig(maildir_root=tmp_path / "var" / "mail",
                                lmtp=Downstream("127.0.0.1", dv.port, timeout=10, pool_size=2)))
    return app, dv


def smtp_send(port: int, rcpts: list[str], subject: bytes, mid: bytes = b"1") -> dict:
    """Send over SMTP; return {rcpt: (code, text)} for refusals, or {'data': (code, text)}."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo()
        s.mail("client@outside.test")
        out = {r: s.rcpt(r) for r in rcpts}
        ok = [r for r, (c, _) in out.items() if c == 250]
        if ok:
            out["data"] = s.data(MSG % (subject, mid))
        return out


def lmtp_send(port: int, rcpts: list[str], subject: bytes) -> dict:
    """LMTP per RECIPES.md: RCPT replies, then one DATA reply per accepted recipient."""
    with smtplib.LMTP("127.0.0.1", port) as lm:
        lm.ehlo()
        lm.mail("client@outside.test")
        rcpt = {r: lm.rcpt(r) for r in rcpts}
        ok = [r for r, (c, _) in rcpt.items() if c == 250]
        replies = dict(zip(ok, [lm.data(MSG % (subject, b"lmtp"))] + [lm.getreply() for _ in ok[1:]]))
        return {"rcpt": rcpt, "data": replies}


def new(dv: DovecotServer, addr: str, folder: str = "") -> list[Path]:
    box = dv.maildir(addr) / folder if folder else dv.maildir(addr)
    return sorted((box / "new").glob("*")) if (box / "new").is_dir() else []


async def test_plain_and_ascii_folder_land_in_dovecot(make_app, dovecot, tmp_path):
    """plain@ -> user's INBOX, finance@ -> user's .Finance folder (user+Finance@), both 250,
    both in the registry with a delivered LMTP target."""
    app, dv = await start(make_app, dovecot, tmp_path)
    port = app.bound["smtp"][1]
    r = await asyncio.to_thread(smtp_send, port, ["plain@example.com"], b"plain", b"p1")
    assert r["data"][0] == 250, r
    r = await asyncio.to_thread(smtp_send, port, ["finance@example.com"], b"invoice", b"f1")
    assert r["data"][0] == 250, r
    inbox = new(dv, "user@example.test")
    fin = new(dv, "user@example.test", ".Finance")
    assert len(inbox) == 1 and b"Subject: plain" in inbox[0].read_bytes(), dv.log
    assert len(fin) == 1 and b"Subject: invoice" in fin[0].read_bytes(), dv.log
    assert b"(mailrouter)" in fin[0].read_bytes()            # our trace header went along
    assert await app.registry.count_messages() == 2
    assert maildir_files(tmp_path / "var" / "mail") == []    # nothing fell back to local Maildir


async def test_folder_with_spaces_and_specials_lands_in_dovecot(make_app, dovecot, tmp_path):
    """A folder name with a space, brackets, '&', a comma and quotes needs a quoted local
    part in the LMTP RCPT ("user+Clients VIP"@...); Dovecot then files it under that name."""
    app, dv = await start(make_app, dovecot, tmp_path)
    port = app.bound["smtp"][1]
    for rcpt, subject in (("vip@example.com", b"vip"), ("deals@example.com", b"deals")):
        r = await asyncio.to_thread(smtp_send, port, [rcpt], subject, subject)
        assert r["data"][0] == 250, (r, dv.log)
    folders = sorted(p.name for p in dv.maildir("user@example.test").glob(".*") if p.is_dir())
    assert ".Clients VIP" in folders, (folders, dv.log)
    assert len(new(dv, "user@example.test", ".Clients VIP")) == 1
    assert new(dv, "user@example.test") == []                 # nothing fell into the inbox
    assert len(folders) == 2 and "Deals (A&-B), \"big\"" in folders[1], folders   # & is mUTF-7 &-


async def test_long_line_reaches_dovecot_unchanged(make_app, dovecot, tmp_path):
    """A 20,000-character line (unwrapped HTML) is accepted and Dovecot stores it whole."""
    app, dv = await start(make_app, dovecot, tmp_path)
    line = b"<td>" + b"x" * 20_000 + b"</td>"

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", app.bound["smtp"][1], timeout=30) as s:
            s.sendmail("client@outside.test", ["plain@example.com"],
                       b"Subject: wide\r\nMessage-ID: <wide@outside.test>\r\n\r\n" + line + b"\r\n")
    await asyncio.to_thread(send)
    got = new(dv, "user@example.test")
    assert len(got) == 1 and line in got[0].read_bytes(), dv.log


async def test_a_non_ascii_helo_name_reaches_dovecot_as_ascii(make_app, dovecot, tmp_path):
    """EHLO пример.рф (or any UTF-8 name) was copied raw into our Received: line: an 8-bit
    header in a message sent without SMTPUTF8. As Postfix, the name is taken and the line made
    safe: an IDN as its A-label, other non-ASCII and the characters that would change the
    line's syntax as '?'. Every header Dovecot stores is ASCII; the message is delivered."""
    app, dv = await start(make_app, dovecot, tmp_path)
    helos = {"пример.рф": b"from xn--e1afmkfd.xn--p1ai (127.0.0.1:",
             "Ünïcödé (by forged.example) <x>": b"from ?n?c?d???by?forged.example???x? (127.0.0.1:"}
    async with Wire(app.bound["smtp"][1]) as w:
        assert (await w.line()).startswith("220")
        for n, helo in enumerate(helos):
            assert (await w.cmd(f"EHLO {helo}")).startswith("250")
            reply = await w.transaction("client@outside.test", ["plain@example.com"],
                                        MSG % (b"helo", b"h%d" % n) + b".\r\n")
            assert reply[0].startswith("250"), (reply, dv.log)
    got = [f.read_bytes() for f in new(dv, "user@example.test")]
    assert len(got) == 2, dv.log
    for raw in got:
        head = raw.partition(b"\n\n")[0]
        assert head.isascii(), head
    ours = sorted(line for raw in got for line in raw.split(b"\n") if b"(127.0.0.1:" in line)
    assert [line.partition(b"(127.0.0.1:")[0] + b"(127.0.0.1:" for line in ours] == sorted(
        b"Received: " + want for want in helos.values())


async def test_non_ascii_folder_over_lmtp_lands_in_inbox(make_app, dovecot, tmp_path, caplog):
    """«Финансы» over LMTP: Dovecot takes no UTF-8 RCPT and would mis-name a modified-UTF-7
    detail, so the copy goes to the inbox (never a bounce, never a folder called '&BCQ…-'),
    and the log says the folder was dropped."""
    app, dv = await start(make_app, dovecot, tmp_path)
    r = await asyncio.to_thread(smtp_send, app.bound["smtp"][1], ["finansy@example.com"],
                                b"schet", b"n1")
    code = r["data"][0] if "data" in r else r["finansy@example.com"][0]
    assert code == 250, r
    folders = [p.name for p in dv.maildir("user@example.test").glob(".*") if p.is_dir()]
    assert not any("&" in f for f in folders), folders
    assert len(new(dv, "user@example.test")) == 1
    assert "event=folder_dropped" in caplog.text


async def test_dovecot_stopped_is_451_then_retry_delivers_once(make_app, dovecot, tmp_path):
    """Dovecot down: the SMTP client gets 451 (never 5xx, never 250). After Dovecot is back,
    the same message (same bytes, same envelope) gets 250 and lands exactly once."""
    app, dv = await start(make_app, dovecot, tmp_path)
    await asyncio.to_thread(dv.stop)
    r = await asyncio.to_thread(smtp_send, app.bound["smtp"][1], ["plain@example.com"],
                                b"retry", b"r1")
    code = r["data"][0] if "data" in r else r["plain@example.com"][0]
    assert code == 451, r
    assert new(dv, "user@example.test") == []
    await asyncio.to_thread(dv.start)
    r = await asyncio.to_thread(smtp_send, app.bound["smtp"][1], ["plain@example.com"],
                                b"retry", b"r1")
    assert r["data"][0] == 250, r
    r = await asyncio.to_thread(smtp_send, app.bound["smtp"][1], ["plain@example.com"],
                                b"retry", b"r1")                 # a second retry: no copy
    assert r["data"][0] == 250, r
    assert len(new(dv, "user@example.test")) == 1, dv.log
    assert await app.registry.count_messages() == 1


async def test_lmtp_to_lmtp_per_recipient(make_app, dovecot, tmp_path):
    """An LMTP client -> mailrouter LMTP -> Dovecot LMTP: unknown refused at RCPT (550 5.1.1),
    then one 250 per accepted recipient in order; each lands in its Dovecot mailbox/folder."""
    app, dv = await start(make_app, dovecot, tmp_path)
    rcpts = ["plain@example.com", "nobody@example.com", "finance@example.com", "bob@example.com"]
    out = await asyncio.to_thread(lmtp_send, app.bound["lmtp"][1], rcpts, b"multi")
    assert out["rcpt"]["nobody@example.com"][0] == 550
    assert out["rcpt"]["nobody@example.com"][1].startswith(b"5.1.1")
    assert list(out["data"]) == ["plain@example.com", "finance@example.com", "bob@example.com"]
    assert all(code == 250 for code, _ in out["data"].values()), out
    assert len(new(dv, "user@example.test")) == 1
    assert len(new(dv, "user@example.test", ".Finance")) == 1
    assert len(new(dv, "bob@example.test")) == 1


async def test_lmtp_to_lmtp_one_downstream_failure_is_per_recipient(make_app, dovecot, tmp_path):
    """Mixed LMTP transaction where one Dovecot user's delivery fails (its home is a file):
    that recipient gets 4xx, the others 250, in RCPT order; nothing is delivered twice when
    the client retries only the failed one after the fault is fixed."""
    app, dv = await start(make_app, dovecot, tmp_path)
    home = dv.home("bob@example.test")
    home.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(home.parent, "nobody", "nogroup")             # Dovecot delivers as nobody
    home.write_text("not a directory")                         # bob's mailbox cannot be created
    rcpts = ["plain@example.com", "bob@example.com"]
    out = await asyncio.to_thread(lmtp_send, app.bound["lmtp"][1], rcpts, b"half")
    codes = [out["data"][r][0] for r in rcpts]
    assert codes[0] == 250 and 400 <= codes[1] < 500, out
    home.unlink()
    out = await asyncio.to_thread(lmtp_send, app.bound["lmtp"][1], ["bob@example.com"], b"half")
    assert out["data"]["bob@example.com"][0] == 250, (out, dv.log)
    assert len(new(dv, "user@example.test")) == 1
    assert len(new(dv, "bob@example.test")) == 1

"""A mail loop through a second real mailrouter instance is stopped, not delivered endlessly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mailrouter.config import DeliveryConfig, Downstream, RegistryConfig
from mailrouter.values import REPLY_LOOP
from tests.support.daemon import free_port, maildir_files
from tests.support.wire import Wire

BOOK = """
domains: [{domain}]
mailboxes:
  fwd: {{smtp: {target}}}
  local: {{maildir: local}}
aliases:
  loop@{domain}: mailbox:fwd
  ok@{domain}: mailbox:local
"""


def instance(tmp_path: Path, name: str, domain: str, target: str, peer_port: int, port: int) -> dict:
    d = tmp_path / name
    d.mkdir()
    (d / "book.yaml").write_text(BOOK.format(domain=domain, target=target), encoding="utf-8")
    from mailrouter.config import Listener
    return dict(
        hostname=f"{name}.test", routing=(str(d / "book.yaml"),),
        smtp=Listener("127.0.0.1", port), lmtp=None, admin=None,
        registry=RegistryConfig(f"sqlite+aiosqlite:///{d / 'registry.db'}"),
        delivery=DeliveryConfig(d / "mail", smtp=Downstream("127.0.0.1", peer_port, timeout=20)))


async def test_loop_between_two_instances_is_refused_with_554(make_app, tmp_path):
    """A forwards loop@a to B, B forwards it back to A: A sees its own trace and answers
    554 5.4.6; the refusal travels back, nothing is stored, the loop is in A's registry."""
    pa, pb = free_port(), free_port()
    await make_app(**instance(tmp_path, "a", "a.example", "loop@b.example", pb, pa))
    await make_app(**instance(tmp_path, "b", "b.example", "loop@a.example", pa, pb))
    async with Wire(pa) as w:
        await w.greet()
        reply = await w.transaction("sender@outside.test", ["loop@a.example"],
                                    b"Subject: round and round\r\n\r\nhello\r\n.\r\n")
    assert reply[0] == str(REPLY_LOOP)
    assert maildir_files(tmp_path / "a" / "mail") == [] and maildir_files(tmp_path / "b" / "mail") == []
    loops = sqlite3.connect(tmp_path / "a" / "registry.db").execute(
        "select rcpt, evidence from loops").fetchall()
    assert len(loops) == 1 and loops[0][0] == "loop@a.example" and "a.test" in loops[0][1]
    # the refused round's decision row gives the loop evidence as its reason, as explain
    # does (the first round, delivered to B, says "address book")
    reasons = sorted(r for (r,) in sqlite3.connect(tmp_path / "a" / "registry.db").execute(
        "select reasons from decisions where rcpt = 'loop@a.example'"))
    assert reasons == ['["address book"]', f'["loop: {loops[0][1]}"]']
    # the pair still delivers ordinary mail
    async with Wire(pa) as w:
        await w.greet()
        reply = await w.transaction("sender@outside.test", ["ok@a.example"],
                                    b"Subject: fine\r\n\r\nhello\r\n.\r\n")
    assert reply[0].startswith("250") and len(maildir_files(tmp_path / "a" / "mail")) == 1


async def test_a_loop_through_a_detail_address_is_caught_at_the_second_round(make_app, tmp_path):
    """An outside mailbox that forwards back to loop+news@ (here: the instance's own SMTP
    port). Delivery writes the recipient as given in our trace header (rcpt=loop+news@),
    the loop check was asked about the canonical loop@: the trace never matched, and each
    round was forwarded again, 50 deep, until the Received count said 554. Now the second
    round sees the first's trace: one forward, one loop recorded, evidence our header."""
    port = free_port()
    await make_app(**instance(tmp_path, "a", "a.example", "LOOP+news@a.example", port, port))
    async with Wire(port) as w:
        await w.greet()
        reply = await w.transaction("sender@outside.test", ["loop+news@a.example"],
                                    b"Subject: round and round\r\n\r\nhello\r\n.\r\n")
    assert reply[0] == str(REPLY_LOOP)
    db = sqlite3.connect(tmp_path / "a" / "registry.db")
    loops = db.execute("select rcpt, evidence from loops").fetchall()
    assert len(loops) == 1 and loops[0][0] == "LOOP+news@a.example", loops
    assert "X-Mailrouter-Loop: a.test; rcpt=loop+news@a.example" in loops[0][1]
    assert db.execute("select count(*) from decisions").fetchone() == (2,)
    assert maildir_files(tmp_path / "a" / "mail") == []


async def test_a_forward_from_c_plus_plus_to_c_is_no_loop(make_app, tmp_path):
    """c++@ (an address of its own, forwarded by an outside mailbox: here the instance's own
    SMTP port) to c@: the copy carries our trace for c++@, and the '+' was read as a detail
    separator, so c@ answered 554 5.4.6 "loop" and the sender got a bounce for mail that
    never went round. Now it is delivered to c@, once, and no loop is recorded."""
    port = free_port()
    d = tmp_path / "a"
    d.mkdir()
    (d / "book.yaml").write_text(
        "domains: [a.example]\nmailboxes:\n  fwd: {smtp: c@a.example}\n  local: {maildir: local}\n"
        "aliases:\n  c++@a.example: mailbox:fwd\n  c@a.example: mailbox:local\n", encoding="utf-8")
    from mailrouter.config import Listener
    await make_app(hostname="a.test", routing=(str(d / "book.yaml"),),
                   smtp=Listener("127.0.0.1", port), lmtp=None, admin=None,
                   registry=RegistryConfig(f"sqlite+aiosqlite:///{d / 'registry.db'}"),
                   delivery=DeliveryConfig(d / "mail", smtp=Downstream("127.0.0.1", port, timeout=20)))
    async with Wire(port) as w:
        await w.greet()
        reply = await w.transaction("sender@outside.test", ["c++@a.example"],
                                    b"Subject: not a loop\r\n\r\nhello\r\n.\r\n")
    assert reply[0].startswith("250"), reply
    [copy] = maildir_files(d / "mail")
    assert b"X-Mailrouter-Loop: a.test; rcpt=c++@a.example\r\n" in copy.read_bytes()
    assert sqlite3.connect(d / "registry.db").execute("select count(*) from loops").fetchone() == (0,)

"""Shared bits of the execution-control tests: a small company's routing files, sending."""

from __future__ import annotations

import asyncio
import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Callable

import aiosmtplib

ROUTING = """\
domains: [example.com]
mailboxes:
  support: {maildir: support}
  replies: {maildir: replies}
people:
  ivanov:  {address: ivanov@example.com, name: Пётр Иванов, deputy: petrova,
            away: ["2027-01-13"]}
  petrova: {address: petrova@example.com, name: Анна Петрова}
  smirnov: {address: smirnov@example.com, name: Сергей Смирнов}
teams:
  duty: {members: [ivanov, petrova], pick: round-robin, head: smirnov}
aliases:
  support@example.com: mailbox:support
  replies@example.com: mailbox:replies
calendars:
  msk: {timezone: Europe/Moscow, hours: "Mon-Fri 09:00-18:00", holidays: [2027-01-15]}
rules:
  - name: support
    when: {rcpt: support@example.com}
    then: {owner: duty, sla: {first_response: 4h, calendar: msk}}
"""


def write_routing(tmp_path: Path, extra: str = "") -> tuple[str, ...]:
    """ROUTING, and `extra` after it, as tmp_path/rules/company.yaml."""
    path = tmp_path / "rules" / "company.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ROUTING + extra, encoding="utf-8")
    return (str(path),)


def mail(sender: str, subject: str, msgid: str, refs: str = "", to: str = "support@example.com",
         body: str = "hello") -> bytes:
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\n"
    if refs:
        head += f"In-Reply-To: {refs.split()[-1]}\r\nReferences: {refs}\r\n"
    return (head + f"\r\n{body}\r\n").encode()


def cli_on(tmp_path: Path, url: str) -> Callable[..., tuple[Any, str, str]]:
    """`mailrouter ARGV -c CONFIG` on the registry at `url` with the routing files under
    tmp_path/rules (write_routing's), as a function returning (exit code, stdout, stderr);
    a usage error's SystemExit gives its code."""
    from mailrouter.cli import main
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"registry: {{url: '{url}'}}\nrouting: ['{tmp_path}/rules/*.yaml']\n",
                   encoding="utf-8")

    def cli(*argv: str) -> tuple[Any, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code: Any = main([*argv, "-c", str(cfg)])
            except SystemExit as exc:
                code = exc.code
        return code, out.getvalue(), err.getvalue()
    return cli


async def send(port: int, raw: bytes, sender: str, rcpt: str = "support@example.com") -> None:
    await aiosmtplib.send(raw, sender=sender, recipients=[rcpt], hostname="127.0.0.1", port=port,
                          timeout=30)


async def sign_in(http: Any, app: Any, when: Any, person: str = "petrova") -> str:
    """Give `person` a web password (set at `when`) and sign them in to `app`'s web view
    through its login form (aiohttp session `http`, which keeps the cookie); its base URL."""
    from mailrouter.registry.accounts import hash_password, set_password
    password = "x" * 12
    await app.registry.write("pw", lambda c: set_password(c, person, hash_password(password), when))
    host, port = app.bound["web"]
    base = f"http://{host}:{port}"
    async with http.get(base + "/login") as r:
        token = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert token is not None
    async with http.post(base + "/login", data={"csrf": token[1], "person": person,
                                                "password": password, "next": "/"},
                         allow_redirects=False) as r:
        assert r.status == 303
    return base


async def until_pg_waiting(gate: Any, event: str, done: Any = None) -> None:
    """Poll until a session of `gate`'s database waits for a lock of that `wait_event`, or
    the future `done` is done (then nothing waits: the caller's asserts say so); 30 s at
    most, a hung test's bound, not a speed test."""
    for _ in range(600):
        if (done is not None and done.done()) or await pg_waiting(gate, event):
            return
        await asyncio.sleep(0.05)


async def pg_waiting(gate: Any, event: str) -> bool:
    """Whether a session of `gate`'s PostgreSQL database (an asyncpg connection) waits for
    a lock of that `wait_event` ('advisory', 'transactionid', 'tuple')."""
    return bool(await gate.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND wait_event = $1", event))

"""Execution control with two daemons on one PostgreSQL registry (scale-out, issue 10).

Two real `mailrouter run -c` processes share the registry and the Maildir root. For
each thread the original goes to one instance while, at the same moment, its reply
(In-Reply-To/References) goes to the other and the original again (an MTA's retry)
to the other too; afterwards two subject-only follow-ups ("Re: [#N] ...", no
references) go to both at once. Whatever order the transactions commit in, the
registry must hold one request per thread, holding each message once, with one owner
and its history in order. A 4xx is allowed (the test resends, as the MTA would).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import pytest

from tests.control_support import mail, write_routing
from tests.support.daemon import DaemonProcess
from tests.test_registry_pg_daemon import fetch, pg_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.asyncio

THREADS = 40


def _config(d: DaemonProcess, name: str, registry: str, mail_root: Path, routing: str) -> None:
    d.config.write_text(
        f"hostname: {name}\n"
        f"listen: {{smtp: '127.0.0.1:{d.smtp}', lmtp: '127.0.0.1:{d.lmtp}', "
        f"admin: '127.0.0.1:{d.admin}'}}\n"
        f"routing: ['{routing}']\n"
        f"registry: {{url: '{registry}'}}\n"
        f"delivery: {{maildir_root: '{mail_root}'}}\n"
        f"control: {{replies: replies@example.com}}\n"
        f"workers: 1\nshutdown_grace: 10\nlog_level: WARNING\n", encoding="utf-8")


async def _send(port: int, raw: bytes, sender: str) -> None:
    """Send until 250, as an MTA would; a 5xx fails the test."""
    for _ in range(20):
        try:
            await aiosmtplib.send(raw, sender=sender, recipients=["support@example.com"],
                                  hostname="127.0.0.1", port=port, timeout=60)
            return
        except aiosmtplib.SMTPResponseException as exc:
            assert exc.code // 100 == 4, exc
    raise AssertionError(f"never accepted: {raw[:80]!r}")


@pytest.fixture
async def two(pg_db, tmp_path):  # noqa: F811
    routing = write_routing(tmp_path)[0]
    daemons = []
    for name in ("mx-a.test", "mx-b.test"):
        (tmp_path / name).mkdir()
        d = DaemonProcess(tmp_path / name)
        _config(d, name, pg_db, tmp_path / "mail", routing)
        daemons.append(d)
    try:
        for d in daemons:        # one after the other: both would create the schema at once
            await asyncio.to_thread(d.start, 60.0)
        yield daemons
    finally:
        for d in daemons:
            await asyncio.to_thread(d.stop)


async def test_a_thread_sent_to_two_instances_at_once_is_one_request(two, pg_db, tmp_path):  # noqa: F811
    a, b = (d.smtp for d in two)

    async def thread(n: int) -> None:
        who = f"client{n}@bigco.example"
        first = mail(who, f"printer {n}", f"o{n}@bigco")
        reply = mail(who, f"Re: printer {n}", f"r{n}@bigco", f"<o{n}@bigco>")
        one, other = (a, b) if n % 2 else (b, a)
        await asyncio.gather(_send(one, first, who), _send(other, reply, who),
                             _send(other, first, who))

    await asyncio.gather(*(thread(n) for n in range(THREADS)))
    reqs = await fetch(pg_db, "SELECT id, counterparty, owner, subject FROM requests ORDER BY id")
    by_who: dict[str, list[int]] = {}
    for r in reqs:
        by_who.setdefault(r["counterparty"], []).append(r["id"])
    assert {w: ids for w, ids in by_who.items() if len(ids) > 1} == {}
    assert len(reqs) == THREADS

    async def subject_only(r: dict) -> None:     # "Re: [#N]" alone, twice at once to both
        who = r["counterparty"]
        again = mail(who, f"Re: [#{r['id']}] {r['subject']}", f"s{r['id']}@bigco")
        await asyncio.gather(_send(a, again, who), _send(b, again, who))
    await asyncio.gather(*(subject_only(r) for r in reqs))

    linked = await fetch(pg_db, "SELECT request_id, message_key, message_id FROM request_messages"
                                " ORDER BY id")
    per_req: dict[int, list[str]] = {}
    for m in linked:
        per_req.setdefault(m["request_id"], []).append(m["message_id"])
    assert len({m["message_key"] for m in linked}) == len(linked), "a message in two requests"
    for r in reqs:
        n = int(r["counterparty"][6:].partition("@")[0])
        assert sorted(per_req[r["id"]]) == sorted(
            [f"<o{n}@bigco>", f"<r{n}@bigco>", f"<s{r['id']}@bigco>"]), r
    events = await fetch(pg_db, "SELECT request_id, kind, detail FROM request_events ORDER BY id")
    kinds: dict[int, list[str]] = {}
    for e in events:
        kinds.setdefault(e["request_id"], []).append(e["kind"])
    for rid, ks in kinds.items():      # opened first, one owner, then the two follow-ups
        assert ks == ["opened", "owner", "joined", "joined"], (rid, ks)
    assert {r["owner"] for r in reqs} <= {"ivanov", "petrova"}

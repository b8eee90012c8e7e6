"""Reports and searches over a large generated registry (issue 12), SQLite and PostgreSQL.

Generates N messages (default 100,000; `-n 1000000` for the issue's million) over 90
days: 2,000 customers on 300 domains, 4 mailboxes, 3 rules, 6 owners; every message
one decision and one delivery; every third message opens a request, the others join
one; 70% of the requests answered, and closed 14 days later (the daemon's quiet close)
unless that is after the end. Then times each query `mailrouter report`,
`registry search`, `registry history` and `request show` run, and the web view's search by
sender and counterparty page (registry.queries); a sender is one the registry holds, asked
in upper case (the searches fold it). Run by hand:

    .venv/bin/python bench/bench_registry.py                 # SQLite, 100k messages
    .venv/bin/python bench/bench_registry.py -n 1000000 --pg postgresql+asyncpg://...

The generation itself is not timed; the schema is the real one (Alembic upgrade).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, func, insert, select

from mailrouter.calendars import build_calendars
from mailrouter.control.queries import (counterparty_threads, history, report, search,
                                       show_request)
from mailrouter.control.tables import request_messages, requests
from mailrouter.registry import Registry
from mailrouter.registry.models import decisions, deliveries, messages
from mailrouter.registry.queries import Scope, counterparty
from mailrouter.registry.queries import search as web_search
from mailrouter.registry.words import subject_words, word_rows

START = datetime(2027, 1, 1, tzinfo=timezone.utc)
END = START + timedelta(days=90)
QUIET = timedelta(days=14)
WORDS = ["счёт", "оплата", "договор", "invoice", "faktura", "заказ", "доставка", "вопрос",
         "printer", "ошибка", "акт", "сверка"]
MAILBOXES = ["sales", "support", "finance", "product-a"]
RULES = ["invoices", "support", "sales"]
OWNERS = ["ivanov", "petrova", "smirnov", "sidorov", "kuznetsova", "popov"]
CHUNK = 5000


def rows(n: int, seed: int = 1) -> Any:
    rnd = random.Random(seed)
    req_id = 0
    for i in range(n):
        at = START + timedelta(seconds=i * 90 * 86400 / n)
        dom = f"client{rnd.randrange(300)}.example"
        sender = f"user{rnd.randrange(2000)}@{dom}"
        key = f"{i:064x}"
        subject = " ".join(rnd.sample(WORDS, 3)) + f" {i}"
        msg = dict(key=key, received_at=at, updated_at=at, protocol="smtp", peer="127.0.0.1",
                   mail_from=sender, rcpts=["support@example.com"], message_id=f"<{i}@x>",
                   from_name="", from_addr=sender, subject=subject, size=2000,
                   content_hash=key, defects=[], ruleset_hash="x", status="delivered", attempts=1)
        box, rule, owner = rnd.choice(MAILBOXES), rnd.choice(RULES), rnd.choice(OWNERS)
        dec = dict(message_key=key, rcpt="support@example.com", action="deliver",
                   reply="250 2.0.0 Ok: delivered", mailbox=box, folder=None, owner=owner,
                   tags=[rule], priority=None, sla="first_response=4h calendar=msk", path=[],
                   reasons=[f"rule '{rule}'"], rules=[])
        dlv = dict(message_key=key, target=box, state="delivered", detail="250", updated_at=at)
        req = None
        if i % 3 == 0:
            req_id += 1
            answered = rnd.random() < 0.7
            first = at + timedelta(hours=rnd.uniform(0.2, 30)) if answered else None
            # as the daemon does (control.close_after, 14 days): answered and then quiet
            closed = first + QUIET if first is not None and first + QUIET < END else None
            req = dict(id=req_id, opened_at=at, message_key=key, counterparty=sender,
                       counterparty_domain=dom, mailbox=box, rule=rule, owner=owner,
                       status="closed" if closed else "answered" if answered else "open",
                       subject=subject, priority=None, tags=[], sla_calendar="msk",
                       first_response_due=at + timedelta(hours=8), first_response_at=first,
                       last_in_at=at, last_out_at=first, closed_at=closed)
        link = dict(request_id=req_id, message_key=key, message_id=f"<{i}@x>", direction="in",
                    at=at, sender=sender)
        yield msg, dec, dlv, req, link


def fill(conn: Connection, chunk: list[Any]) -> None:
    for table, idx in ((messages, 0), (decisions, 1), (deliveries, 2), (requests, 3),
                       (request_messages, 4)):
        batch = [c[idx] for c in chunk if c[idx] is not None]
        if batch:
            conn.execute(insert(table), batch)
    # the subject-word index, as the registry's store writes it with each message
    conn.execute(insert(subject_words), [w for c in chunk for w in word_rows(
        c[0]["key"], c[0]["received_at"], c[0]["subject"])])


async def bench(url: str, n: int) -> None:
    reg = await Registry.open(url, timeout=600)
    try:
        have = await reg.count_messages()
        if have:            # --db FILE kept from an earlier run: time the queries again
            print(f"{url.split(':')[0]}: {have:,} messages already there")
            n = have
            global END      # bench_web.py's data ends when it was generated
            END = await reg.read("end", lambda c: c.execute(
                select(func.max(messages.c.received_at))).scalar_one())
        else:
            await generate(reg, url, n)
        await time_queries(reg, n)
    finally:
        await reg.close()


async def generate(reg: Registry, url: str, n: int) -> None:
    t0 = time.perf_counter()
    chunk: list[Any] = []
    for row in rows(n):
        chunk.append(row)
        if len(chunk) == CHUNK:
            await reg.write("fill", lambda c, ch=chunk: fill(c, ch))
            chunk = []
    if chunk:
        await reg.write("fill", lambda c, ch=chunk: fill(c, ch))
    print(f"{url.split(':')[0]}: generated {n:,} messages in {time.perf_counter() - t0:.1f} s")
    if url.startswith("postgresql"):     # the statistics autovacuum gathers on a live registry
        await reg.write("analyze", lambda c: c.exec_driver_sql("ANALYZE"))


async def time_queries(reg: Registry, n: int) -> None:
    cals = build_calendars({"msk": {"timezone": "Europe/Moscow", "hours": "Mon-Fri 09:00-18:00"}})
    end = END
    month = (end - timedelta(days=30), end)
    day = (end - timedelta(days=1), end)
    # a sender with mail (the generator's user7@client7.example need not have any), as
    # someone would type it; and the same in a message the middle of the registry holds
    sender = await reg.read("sender", lambda c: c.execute(
        select(messages.c.from_addr).order_by(messages.c.key).offset(n // 2).limit(1)).scalar_one())
    who = sender.upper()
    every = Scope(everything=True)
    print(f"  (sender {who})")
    cases = [
        ("report, last 30 days", lambda c: report(c, *month, end, cals)),
        ("report, last day", lambda c: report(c, *day, end, cals)),
        ("search subject 'счет оплата', last day", lambda c: search(
            c, words="счет оплата", since=day[0], until=day[1], limit=50)),
        ("search subject word, all time, 50 newest", lambda c: search(c, words="акт", limit=50)),
        ("search subject word no message has, all time", lambda c: search(
            c, words="накладная", limit=50)),
        ("search sender, all its messages", lambda c: search(c, sender=who, limit=None)),
        ("search sender, 50 newest", lambda c: search(c, sender=who, limit=50)),
        ("search sender nobody is", lambda c: search(c, sender="nobody@client7.example")),
        ("search owner + status, 50 newest", lambda c: search(c, owner="popov", status="open")),
        ("history address", lambda c: history(c, who)),
        ("web search sender (100 a page)", lambda c: web_search(c, every, sender=who)),
        ("web counterparty address (101, and its requests)", lambda c: counterparty(
            c, every, who, 101, threads=counterparty_threads(who))),
        ("history domain (100 newest messages)", lambda c: history(c, "client7.example", 100)),
        ("request show", lambda c: show_request(c, n // 6)),
    ]
    for name, fn in cases:
        t0 = time.perf_counter()
        await reg.read(name, fn)
        print(f"  {name:45} {1000 * (time.perf_counter() - t0):9.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=100_000, help="messages to generate (default 100,000)")
    p.add_argument("--pg", metavar="URL", help="also an empty PostgreSQL database at URL")
    p.add_argument("--db", metavar="FILE", help="SQLite file to use and keep (generated only "
                   "when empty; a second run times the queries again)")
    args = p.parse_args()
    if args.db:
        asyncio.run(bench(f"sqlite+aiosqlite:///{args.db}", args.n))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(bench(f"sqlite+aiosqlite:///{tmp}/registry.db", args.n))
    if args.pg:
        asyncio.run(bench(args.pg, args.n))


if __name__ == "__main__":
    main()

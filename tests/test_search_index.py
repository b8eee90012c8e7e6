"""The subject-word index (registry/words.py, revision 0006): a message recorded through
the registry is found by its subject words as the rules normalise them (another case,
е for ё, after a reply prefix; `word*` for word forms), by `registry search` and by the
web's scoped search; the migration makes the words of messages recorded before it, in
batches, on an existing SQLite file; and the tables match the migration. Real SQLite and
PostgreSQL registries."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import create_engine, func, insert, select

from mailrouter.control.queries import search
from mailrouter.registry import DecisionRecord, MessageRecord, Registry
from mailrouter.registry import queries as webq
from mailrouter.registry.models import messages
from mailrouter.registry.store import _alembic_upgrade
from mailrouter.registry.words import subject_words

pytestmark = pytest.mark.asyncio
AT = datetime(2027, 1, 11, 9, 0, tzinfo=timezone.utc)
SUBJECTS = ["RE: Fwd: СЧЁТ №5 за Октябрь", "Счета за ноябрь", "счетчик воды", "Вопрос о цене",
            "Re: счет-фактура"]


def msg(i: int, subject: str) -> MessageRecord:
    return MessageRecord(
        key=f"{i:064x}", received_at=AT + timedelta(minutes=i), protocol="smtp",
        peer="127.0.0.1", mail_from="c@x.example", rcpts=("s@example.com",),
        message_id=f"<{i}@x>", from_name="", from_addr="c@x.example", subject=subject,
        size=10, content_hash="c" * 64, defects=(), ruleset_hash="r" * 64, status="delivered")


def dec(mailbox: str) -> DecisionRecord:
    return DecisionRecord(rcpt="s@example.com", action="deliver", reply="250 2.0.0 Ok",
                          mailbox=mailbox, folder=None, owner=None, tags=(), priority=None,
                          sla=None, path=(), reasons=(), rules=())


def ids(rows: list) -> list[int]:
    return [int(r["message_id"][1:-1].split("@")[0]) for r in rows]


async def test_words_found_in_another_case_with_e_for_yo_after_reply_prefix(registry_url):
    """'счет октябрь' finds «RE: Fwd: СЧЁТ №5 за Октябрь» (and in either order); whole
    words only ('счет' is not «Счета», «счетчик»); 'сче*' finds every word it begins,
    newest first; a retried message is indexed once; the web search sees only its scope."""
    reg = await Registry.open(registry_url)
    try:
        for i, s in enumerate(SUBJECTS):
            await reg.record(msg(i, s), [dec("finance" if i % 2 == 0 else "sales")], [])
        await reg.record(dataclasses.replace(msg(0, SUBJECTS[0]), received_at=AT + timedelta(days=1)),
                         [dec("finance")], [])                      # an MTA retry: same key
        got = await reg.read("s", lambda c: search(c, words="СЧЕТ октябрь", limit=None))
        assert ids(got) == [0]
        got = await reg.read("s", lambda c: search(c, words="Октябрь счёт", limit=None))
        assert ids(got) == [0]
        got = await reg.read("s", lambda c: search(c, words="счет", limit=None))
        assert ids(got) == [4, 0]                                    # «счет-фактура»: two words
        got = await reg.read("s", lambda c: search(c, words="СЧЕ*", limit=None))
        assert ids(got) == [4, 2, 1, 0]
        got = await reg.read("s", lambda c: search(c, words="счет* ноябрь", limit=None))
        assert ids(got) == [1]
        assert await reg.read("s", lambda c: search(c, words="накладная", limit=None)) == []
        n = await reg.read("n", lambda c: c.execute(select(func.count()).select_from(
            subject_words).where(subject_words.c.message_key == f"{0:064x}")).scalar_one())
        assert n == 4                                  # счет 5 (№ is a sign) за октябрь, once
        head = webq.Scope(mailboxes=frozenset({"sales"}))
        found = await reg.read("w", lambda c: webq.search(c, head, words="сче*"))
        assert [r["message_id"] for r in found.rows] == ["<1@x>"]
        found = await reg.read("w", lambda c: webq.search(c, webq.Scope(everything=True),
                                                          words="СЧЁТ", since=AT.date()))
        assert [r["message_id"] for r in found.rows] == ["<4@x>", "<0@x>"]
    finally:
        await reg.close()


# the messages table before revision 0012 (the folded senders): what older revisions hold
OLD_MESSAGES = sa.table("messages", *(sa.column(c.name, c.type) for c in messages.c
                                      if not c.name.endswith("_fold")))


async def test_migration_backfills_an_existing_sqlite_file(tmp_path: Path):
    """A registry at revision 0005 holding more messages than one backfill batch: opening it
    with this version makes every message's words, and a search finds the first and the last."""
    path = tmp_path / "registry.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        _alembic_upgrade(conn, "0005")
        conn.execute(insert(OLD_MESSAGES), [dict(
            dataclasses.asdict(msg(i, SUBJECTS[0] if i in (0, 5002) else f"привет {i}")),
            updated_at=AT, attempts=1) for i in range(5003)])
    engine.dispose()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name='subject_words'"
                          ).fetchone() == (0,)
    reg = await Registry.open(f"sqlite+aiosqlite:///{path}")
    try:
        got = await reg.read("s", lambda c: search(c, words="Счет ОКТЯБРЬ", limit=None))
        assert ids(got) == [5002, 0]
        got = await reg.read("s", lambda c: search(c, words="привет", limit=None))
        assert len(got) == 5001
        n = await reg.read("n", lambda c: c.execute(select(func.count(func.distinct(
            subject_words.c.message_key)))).scalar_one())
        assert n == 5003
    finally:
        await reg.close()


async def test_czech_words_found_without_accents_and_numbers_after_the_number_sign(registry_url):
    """'priloha' finds «Příloha smlouvy» and 'příloha' finds «Priloha» (typed without
    accents), as the rules compare them; '5', '№5' and '№ 5' find «Счёт №5»; й stays й;
    '发票' finds «关于发票的问题» (each ideograph a word)."""
    reg = await Registry.open(registry_url)
    try:
        subjects = ["Příloha smlouvy", "Priloha k fakture", "Счёт №5", "Счёт № 15", "Йод", "Иод",
                    "关于发票的问题"]
        for i, s in enumerate(subjects):
            await reg.record(msg(i, s), [dec("finance")], [])

        async def found(words: str) -> list[int]:
            return ids(await reg.read("s", lambda c: search(c, words=words, limit=None)))
        assert await found("priloha") == [1, 0]
        assert await found("PŘÍLOHA") == [1, 0]
        assert await found("faktuře") == [1]
        assert await found("5") == [2]
        assert await found("№5") == [2]
        assert await found("счет № 5") == [2]
        assert await found("йод") == [4]
        assert await found("发票") == [6]              # a word inside a run of ideographs
    finally:
        await reg.close()


async def test_revision_0009_makes_the_old_words_again_in_the_folded_form(tmp_path: Path):
    """A SQLite file at revision 0007 whose index holds the words as the code before wrote
    them (accents kept, №5 as 'no5') is found by the new queries once opened: the words of
    its non-ASCII subjects are made again; an ASCII subject keeps its rows."""
    path = tmp_path / "registry.db"
    engine = create_engine(f"sqlite:///{path}")
    old = {0: ("Příloha smlouvy", ["příloha", "smlouvy"]), 1: ("Счёт №5", ["счет", "no5"]),
           2: ("plain words", ["plain", "words"])}
    with engine.begin() as conn:
        _alembic_upgrade(conn, "0007")
        for i, (subject, words) in old.items():
            m = msg(i, subject)
            conn.execute(insert(OLD_MESSAGES), [dict(dataclasses.asdict(m), updated_at=AT, attempts=1)])
            conn.execute(insert(subject_words), [
                {"message_key": m.key, "word": w, "received_at": m.received_at} for w in words])
    engine.dispose()
    reg = await Registry.open(f"sqlite+aiosqlite:///{path}")
    try:
        async def found(words: str) -> list[int]:
            return ids(await reg.read("s", lambda c: search(c, words=words, limit=None)))
        assert await found("příloha") == [0]
        assert await found("priloha") == [0]
        assert await found("№5") == [1]
        assert await found("plain") == [2]
        rows = await reg.read("w", lambda c: c.execute(
            select(subject_words.c.word).order_by(subject_words.c.word)).scalars().all())
        assert rows == ["5", "plain", "priloha", "smlouvy", "words", "счет"]
    finally:
        await reg.close()


async def test_migration_matches_the_tables(registry_url):
    """Revisions 0006 and 0012 create the word table, the folded senders and the indexes
    the tables declare."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mailrouter.control import tables  # noqa: F401  (the request tables on metadata)
    from mailrouter.registry.models import metadata

    reg = await Registry.open(registry_url)
    try:
        def diff(conn):
            ctx = MigrationContext.configure(conn, opts={"compare_type": False})
            return [d for d in compare_metadata(ctx, metadata)
                    if any(t in repr(d) for t in ("subject_words", "decisions", "requests",
                                                  "messages"))]
        assert await reg.read("diff", diff) == []
    finally:
        await reg.close()


async def test_board_counts_and_pages_through_every_awaiting_request(registry_url):
    """Counts per owner and per mailbox (closed ones left out), and the list in pages of 2
    by (due, number), requests without a due time last: every one once, in order."""
    from mailrouter.control.queries import board
    from mailrouter.control.tables import requests

    def req(i: int, status: str, due: datetime | None, owner: str, box: str) -> dict:
        return dict(id=i, opened_at=AT, message_key=f"{i:064x}", counterparty="c@x.example",
                    counterparty_domain="x.example", mailbox=box, rule="r", owner=owner,
                    team=None, status=status, subject=f"s{i}", priority=None, tags=[],
                    sla_calendar=None, first_response_due=due, first_response_at=None,
                    response_due=due,
                    last_in_at=AT, last_out_at=None, closed_at=None)
    now = AT + timedelta(hours=5)
    due = [AT + timedelta(hours=h) for h in (3, 1, 3, 9)]
    rows = [req(1, "open", due[0], "ivanov", "sales"), req(2, "open", due[1], "petrova", "sales"),
            req(3, "open", due[2], "ivanov", "finance"), req(4, "open", due[3], "ivanov", "sales"),
            req(5, "open", None, "petrova", "finance"), req(6, "open", None, "ivanov", "sales"),
            req(7, "closed", due[1], "ivanov", "sales"), req(8, "answered", due[1], "popov", "sales")]
    reg = await Registry.open(registry_url)
    try:
        await reg.write("fill", lambda c: c.execute(insert(requests), rows))
        seen: list[int] = []
        after = None
        while True:
            b = await reg.read("b", lambda c, a=after: board(c, now, {}, limit=2, after=a))
            seen += [r["id"] for r in b["requests"]]
            if b["next"] is None:
                break
            after = b["next"]
        assert seen == [2, 1, 3, 4, 5, 6]
        assert {r["owner"]: (r["open"], r["awaiting"], r["overdue"]) for r in b["per_owner"]} == {
            "ivanov": (4, 4, 2), "petrova": (2, 2, 1), "popov": (1, 0, 0)}
        assert {r["mailbox"]: (r["open"], r["awaiting"], r["overdue"])
                for r in b["per_mailbox"]} == {"sales": (5, 4, 2), "finance": (2, 2, 1)}
    finally:
        await reg.close()


async def test_messages_an_older_release_wrote_without_folded_senders_are_found_after_a_start(
        registry_url):
    """Instances share one registry and one still runs a release older than revision 0012
    (an upgrade made one instance at a time): its messages have no folded senders (NULL),
    and `registry search --from`, `registry history` and the web view's sender pages never
    found them: 0012's backfill had run before they came. The next start of an instance of
    this release (the schema check every start makes) folds them."""
    reg = await Registry.open(registry_url)
    try:
        await reg.record(msg(1, "new release"), [dec("sales")], [])
        old = {"key": f"{2:064x}", "received_at": AT, "updated_at": AT, "protocol": "smtp",
               "peer": "127.0.0.1", "mail_from": "Ivan@Old.Example", "rcpts": ["s@example.com"],
               "message_id": "<2@x>", "from_name": "", "from_addr": "Иван@Old.Example",
               "subject": "old release", "size": 10, "content_hash": "c" * 64, "defects": [],
               "ruleset_hash": "r" * 64, "status": "delivered", "from_fold": None,
               "mail_from_fold": None}       # a pre-0012 release's insert names neither
        await reg.write("old", lambda c: c.execute(insert(messages).values(old)))
        found = await reg.read("s", lambda c: search(c, sender="иван@old.example", limit=None))
        assert found == []
    finally:
        await reg.close()
    reg = await Registry.open(registry_url)       # an instance of this release starts
    try:
        for who in ("иван@old.example", "ИВАН@OLD.EXAMPLE"):
            found = await reg.read("s", lambda c, who=who: search(c, sender=who, limit=None))
            assert ids(found) == [2], who
        found = await reg.read("s", lambda c: search(c, sender="c@x.example", limit=None))
        assert ids(found) == [1]
    finally:
        await reg.close()

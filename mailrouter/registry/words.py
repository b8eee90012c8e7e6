"""The subject-word index: the words of each message's subject, as the rules see them.

`subject_words` holds one row per (message, word): the `\\w+` words of the subject after
the rules' normalising (`normalize_subject`: reply prefixes stripped, NFKC, case-folded,
ё = е, Latin accents folded, № a sign, an ideograph a word), so "RE: СЧЁТ №5" is indexed
as `счет`, `5`, "Příloha" as `priloha` and "发票" as `发`, `票`. The store writes them in the
transaction of the message (store.py); revision 0006 made them for the messages before it,
0009 made them again in this form.

`newest` is the one walk every subject search uses (`registry search`, the web search):
messages newest first in keyset pages, narrowed by the words through the index. A query
word is a whole word; `счет*` (the rules' word-form syntax) is every word it begins. The
walk is driven by the query word with the fewest messages (counted up to `_CAP`); the
other words are checked by a primary-key lookup per candidate. When even the rarest word
is in `_CAP` messages or more, matches are dense and the walk goes down the messages by
time instead.

What it refuses: nothing; a query with no word (punctuation only) does not narrow.
Known limits: words are kept to their first MAX_WORD characters (a longer query word
matches any word sharing those); a word-form stem that begins more than `_CAP` postings
sorts them per page; `subject` is not re-indexed if a retry decodes it differently.
"""

from __future__ import annotations

import re
from functools import cache
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column, ColumnElement, Connection, Index, PrimaryKeyConstraint, Select, String, Table, Text,
    and_, exists, func, or_, select,
)
from sqlalchemy.dialects import postgresql, sqlite

from ..routing.normalize import normalize_subject
from .models import UTCDateTime, messages, metadata

__all__ = ["subject_words", "words_of_subject", "word_rows", "Word", "parse_words", "newest",
           "word_insert", "MAX_WORD"]

MAX_WORD = 64
_CAP = 20_000          # postings counted per query word to pick the rarest
_WORD = re.compile(r"\w+")
_STARRED = re.compile(r"\w+\*?")

subject_words = Table(
    "subject_words", metadata,
    Column("message_key", String(64), nullable=False),
    # byte order on PostgreSQL too, so a word form is an index range whatever the locale
    Column("word", Text().with_variant(Text(collation="C"), "postgresql"), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("message_key", "word"),
    Index(None, "word", "received_at", "message_key"),
    sqlite_with_rowid=False,
)


def words_of_subject(subject: str) -> list[str]:
    """The distinct index words of a subject, in order of first appearance."""
    return list(dict.fromkeys(w[:MAX_WORD] for w in _WORD.findall(normalize_subject(subject))))


def word_rows(key: str, received_at: datetime, subject: str) -> list[dict[str, Any]]:
    return [{"message_key": key, "word": w, "received_at": received_at}
            for w in words_of_subject(subject)]


@cache
def word_insert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: a retried message keeps its first rows (and the
    first received_at, as the message row does)."""
    ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return ins(subject_words).on_conflict_do_nothing(index_elements=["message_key", "word"])


@dataclass(frozen=True, slots=True)
class Word:
    """One query word: the whole word, or (prefix) every word it begins."""

    text: str
    prefix: bool = False

    def match(self, col: Any) -> ColumnElement[bool]:
        if not self.prefix:
            return col == self.text  # type: ignore[no-any-return]
        return and_(col >= self.text, col < self.text + "\U0010ffff")


def parse_words(text: str | None) -> list[Word]:
    """Query words normalised as subjects are (reply prefixes too: a pasted subject
    "Re: Счёт" finds the message, whose "re" the index never holds); a trailing `*`
    makes a word form."""
    found: dict[Word, None] = {}
    for tok in _STARRED.findall(normalize_subject(text or "")):
        star = tok.endswith("*")
        word = tok.rstrip("*")[:MAX_WORD]
        found[Word(word, star and len(word) < MAX_WORD)] = None
    return list(found)


def _count(conn: Connection, word: Word) -> int:
    sub = select(subject_words.c.message_key).where(word.match(subject_words.c.word)).limit(_CAP)
    return int(conn.execute(select(func.count()).select_from(sub.subquery())).scalar_one())


def _has(word: Word, key: Any) -> ColumnElement[bool]:
    return exists().where(subject_words.c.message_key == key, word.match(subject_words.c.word))


def newest(conn: Connection, q: Select[Any], words: Sequence[Word], *,
           since: datetime | None = None, until: datetime | None = None,
           page: int = 2000, before: tuple[datetime, str] | None = None) -> Iterator[Any]:
    """The rows of `q` (a select over `messages` with its filters, which must select
    messages.key and messages.received_at) newest first, keyset-paged, having every word;
    with `before` (received_at, key of the last row of a page shown) the rows after it."""
    counts = sorted(((_count(conn, w), n, w) for n, w in enumerate(words)),
                    key=lambda t: (t[0], t[2].prefix, t[1]))
    if counts and counts[0][0] == 0:
        return
    drive = next((w for c, _, w in counts if c < _CAP or not w.prefix), None) if counts else None
    if drive is None:
        at, key = messages.c.received_at, messages.c.key
        rest = [w for _, _, w in counts]
    else:
        sw = subject_words.alias("drive")
        at, key = sw.c.received_at, sw.c.message_key
        q = q.join(sw, sw.c.message_key == messages.c.key).where(drive.match(sw.c.word))
        rest = [w for _, _, w in counts if w is not drive]
    for w in rest:
        q = q.where(_has(w, messages.c.key))
    if since is not None:
        q = q.where(at >= since)
    if until is not None:
        q = q.where(at < until)
    q = q.add_columns(at.label("_at"), key.label("_key")).order_by(at.desc(), key.desc())
    after = before
    last = None     # a word form may find one message by two of its words: once
    while True:
        # each page starts below the last row of the one before (the `<=` is implied by
        # the OR, but only with it does SQLite seek the index)
        cur = q if after is None else q.where(
            at <= after[0], or_(at < after[0], key < after[1]))
        chunk = conn.execute(cur.limit(page)).all()
        for row in chunk:
            if row._key != last:
                yield row
            last = row._key
        if len(chunk) < page:
            return
        after = (chunk[-1]._at, chunk[-1]._key)

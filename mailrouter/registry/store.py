"""The registry store: group-committed writes of messages, decisions and deliveries.

``Registry.record`` enqueues one message with its decisions and deliveries and
waits for its own commit. One writer task takes everything pending (up to
``batch_max``) and writes it in ONE transaction, so a burst of N messages costs
far fewer than N fsyncs. Writes are upserts keyed on the message key (sha256 of
envelope sender and raw bytes), so an MTA retry updates the row instead of adding
one, and a delivery once 'delivered' is never downgraded (dedupe, docs/architecture.md).

Failures: an outage (an OSError, a database/driver error, a timeout, a full
disk) surfaces as ``RegistryError`` (``RegistryFullError`` for a full disk) with one
log line, no traceback: it is the database, not our code. Anything else (a
TypeError, a KeyError: a bug of ours) becomes ``RegistryBugError`` and is logged
once with its traceback. Both answer the client 4xx; details go to the log only.
When a batch fails on one bad record (integrity or data error), its records are
retried one by one so only that caller fails; when the database is unavailable
(locked, down, read-only) the whole batch fails at once. Every database await runs
under ``asyncio.timeout(timeout)``; SQLite's busy timeout is
half of it so a locked file answers before the deadline.

Known limits: a caller that times out may still see its record committed later
(harmless: the MTA retries and the upsert dedupes). Schema upgrade runs Alembic
on a private event loop in a worker thread (Alembic is synchronous and reads its
scripts from disk); a timed-out upgrade thread finishes on its own. An in-memory
SQLite URL gives each pooled connection its own database: use a file.
A SQLite file deleted or replaced while open is noticed before each commit (one stat) and
the file then at the path is opened instead (`_SqliteFile`); the old file's rows stay in it.
Each PostgreSQL session sets synchronous_commit and idle_in_transaction_session_timeout
when it connects (`_SESSION`); behind a PgBouncer in transaction mode those settings stay
on whichever server connection ran them: use session mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import importlib
import logging
import os
import re
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import (Connection, Engine, bindparam, create_engine, event, func, inspect,
                        select, text, update)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    DataError, DBAPIError, DisconnectionError, IntegrityError, StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailrouter.errors import RegistryBugError, RegistryError, RegistryFullError
from mailrouter.registry.models import (
    DecisionRecord, DeliveryRecord, MessageRecord, decision_upsert, decisions, deliveries,
    delivery_upsert, fold_address, loops, message_upsert, messages, reloads,
)
from mailrouter.registry.queries import Scope, message_story
from mailrouter.registry.words import subject_words, word_insert, word_rows
from mailrouter.registry.models import (
    OutboxRecord, autoreply_log, autoreply_log_insert, outbox, outbox_insert,
)
from mailrouter.values import autoreply_line

__all__ = ["Registry", "registry_advice", "registry_location", "upgrade"]

log = logging.getLogger(__name__)
T = TypeVar("T")
MIGRATIONS = Path(__file__).with_name("migrations")
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
            "postgres": "postgresql+asyncpg"}


# Engine setup

def _url(url: str) -> URL:
    parsed = make_url(url)
    parsed = parsed.set(drivername=_DRIVERS.get(parsed.drivername, parsed.drivername))
    if parsed.get_driver_name() == "asyncpg":
        _need_asyncpg(parsed)
    return parsed


def _need_asyncpg(url: URL) -> None:
    """PostgreSQL is an extra: without asyncpg say which install fixes it, in one line."""
    try:
        importlib.import_module("asyncpg")
    except ImportError:
        port = f":{url.port}" if url.port else ""
        where = f"{url.drivername}://{url.host or ''}{port}/{url.database or ''}"   # no credentials
        raise RegistryError(f"the registry {where} is PostgreSQL, which needs the asyncpg driver: "
                            "pip install 'mailrouter[postgresql]'") from None


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite registry named by its path; None for PostgreSQL, an in-memory
    database or a `file:` URI."""
    db = url.database or ""
    if url.get_backend_name() != "sqlite" or db in ("", ":memory:") or db.startswith("file:"):
        return None
    return Path(db).expanduser()


async def _prepare(url: URL) -> None:
    """Create a SQLite file's parent directory, and the file itself, off the event loop."""
    path = sqlite_file(url)
    if path is not None:
        await asyncio.to_thread(_make_file, path)


def _make_file(path: Path) -> None:
    """An empty file, 0640 & ~umask as a Maildir copy is, when there is none: SQLite made it
    0644 under the usual umask (and its -wal and -shm, which take the file's mode), so any
    local user read every subject, correspondent, outbox mail and password hash in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))


def registry_location(url: str | URL) -> str:
    """The registry as an admin finds it in messages: a SQLite file's path, else the URL
    without its password ("sqlite+aiosqlite:////var/lib/..." hid the path in a URL)."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except Exception:          # not a URL at all: config.py refuses it; say it as given
        return str(url).rpartition("@")[2]
    db = parsed.database or ""
    if parsed.get_backend_name() == "sqlite":
        return db if db not in ("", ":memory:") else str(url)
    return parsed._replace(password=None).render_as_string(hide_password=False)


def registry_advice(exc: BaseException, db: str = "") -> str:
    """What to do about a RegistryError, from the driver's error under it ('' when there is
    nothing to say beyond checking registry.url); `db` (registry_location) names the file
    in the fix (`fuser FILE`)."""
    inner = exc.__cause__ or exc.__context__ or exc    # `raise ... from None` keeps the context
    inner = getattr(inner, "orig", None) or inner
    text = str(inner)
    hint = sqlite_hint(text, db)
    if hint:
        return hint
    state = _sqlstate(inner)
    if "no such table" in text or "no such column" in text or type(inner).__name__ in (
            "UndefinedTableError", "UndefinedColumnError") or state in ("42P01", "42703"):
        return ("its schema is missing or not this version's: run `mailrouter db upgrade` "
                "with the daemon's config")
    newer = _UNKNOWN_REVISION.search(text)
    if newer:
        # an instance of a newer release migrated the shared registry: "check registry.url"
        # (all the start said) sent the admin looking at a URL that was right
        return (f"its schema is at revision {newer.group(1)}, newer than this mailrouter "
                f"knows (up to {head_revision()}): an instance of a newer release migrated "
                "it; install that release here too (docs/install.md, Upgrading)")
    if state == "53300":
        return ("PostgreSQL has no free connection (max_connections reached): end idle "
                "sessions (pg_stat_activity) or raise max_connections; each mailrouter "
                "process keeps up to 15")
    if state in ("57P03", "57P01"):
        return ("PostgreSQL is starting up, shutting down or in recovery; messages get 451 "
                "until it accepts connections")
    if isinstance(inner, TimeoutError) or type(inner).__name__ == "TimeoutError":
        # an OSError too: "not running, or a wrong host or port" for a server that is
        # running at the right address and does not answer
        return ("the database server did not answer within registry.timeout: it is "
                "overloaded or paused, the network drops packets, or another session holds "
                "a lock (pg_stat_activity names it)")
    if isinstance(inner, OSError):       # refused, no such host: PostgreSQL
        return "the database server cannot be reached (not running, or a wrong host or port)"
    return ""


# Alembic's words for a database at a revision none of our scripts has (`run`, `db
# upgrade`), and Registry.open's (every other command: _schema_revision)
_UNKNOWN_REVISION = re.compile(
    r"(?:Can't locate revision identified by|unknown schema revision) '([^']+)'")


def known_revisions() -> frozenset[str]:
    """The schema revisions this release has migration scripts for (their numbers)."""
    return frozenset(p.name.split("_", 1)[0]
                     for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def head_revision() -> str:
    """The newest schema revision this release has (its migration scripts' numbers)."""
    found = sorted(known_revisions())
    return found[-1] if found else "none"


def _schema_revision(conn: Connection) -> str | None:
    """The registry's schema revision (alembic_version), None without that table (a file
    with no schema at all: the command's own query says so, with the fix).

    A command that opens the registry without upgrading it (`request close`, `web passwd`,
    `report`, a worker the daemon's parent migrated) checks it: after a downgrade, a registry
    a newer release had migrated was read and written as if its schema were this
    release's, while `run` and `db upgrade` refused it. An older release's `request close`
    on a registry migrated past it left the request closed with an answer still due."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return str(found[0]) if len(found) == 1 else None


def _sqlstate(inner: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of a driver error (asyncpg's own, or SQLAlchemy's adapter of
    it), else None."""
    for e in (inner, inner.__cause__):
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def sqlite_missing(url: str | URL) -> bool:
    """A SQLite registry file that does not exist (opening it would create an empty one).
    The URL is only parsed: a PostgreSQL one without asyncpg is refused where it is opened."""
    path = sqlite_file(make_url(url) if isinstance(url, str) else url)
    return path is not None and not path.exists()


def _make_engine(url: URL, timeout: float, synchronous: str = "FULL") -> AsyncEngine:
    if url.get_backend_name() != "sqlite":
        engine = create_async_engine(
            url, pool_pre_ping=True,
            connect_args={"timeout": timeout, "command_timeout": timeout})
        event.listen(engine.sync_engine, "connect", _pg_session(timeout))
        return engine
    engine = create_async_engine(url)
    _sqlite_pragmas(engine.sync_engine, timeout, synchronous)
    return engine


# Settings of each PostgreSQL session, made when it connects (one round trip):
# - synchronous_commit: a server (role, database) set to `off` answers COMMIT before the
#   WAL is written, and a crash of PostgreSQL then loses records of messages already
#   answered 250 (their copies stay in the store with no row, their intents settled).
#   Ours commit synchronously; a stronger setting (remote_write, remote_apply) is kept.
# - idle_in_transaction_session_timeout: an instance that stalls in a transaction (paused
#   VM, SIGSTOP, a network cut TCP does not notice for hours) keeps its row locks, and a
#   sibling instance writing the same row (the MTA's retry of that message, the same
#   autoreply bucket) waits its registry timeout and answers 451 for its whole batch,
#   at every retry. No transaction of ours is idle for longer than the registry timeout
#   (every await runs under it), so the server ends one that is; a shorter setting is kept.
# - default_transaction_isolation: read committed, which the writes are made for (each
#   statement sees what committed before it began: a record waiting for a sibling's lock
#   on the same message row, or for the requests lock, control/store.py _one_at_a_time, then
#   sees and updates what the sibling wrote). A database or role set to `repeatable read`
#   or `serializable` (a DBA's default for reports) made every such wait end in "could not
#   serialize access due to concurrent update": 451 for the whole batch, at every MTA retry
#   that met another instance's write; with two instances a third of the attempts failed.
_SESSION = """SELECT set_config('synchronous_commit', 'on', false)
    WHERE current_setting('synchronous_commit') = 'off'
UNION ALL
SELECT set_config('idle_in_transaction_session_timeout', '{ms}', false)
    WHERE current_setting('idle_in_transaction_session_timeout')::interval
          NOT BETWEEN '1 ms' AND '{ms} ms'
UNION ALL
SELECT set_config('default_transaction_isolation', 'read committed', false)
    WHERE current_setting('default_transaction_isolation') <> 'read committed'"""


def _pg_session(timeout: float) -> Callable[[Any, Any], None]:
    sql = _SESSION.format(ms=max(1000, int(timeout * 1000)))

    def settings(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()
        dbapi_conn.commit()     # a SET is undone with its transaction: the driver opened one
    return settings


def _make_sync_engine(url: URL, timeout: float, synchronous: str) -> Engine | None:
    """SQLite only: the blocking driver, driven from worker threads.

    aiosqlite hops to its thread and back for every cursor call (a dozen per
    batch), each hop waiting its turn on a busy event loop; a whole batch or
    read as one call in a worker thread costs one hop. PostgreSQL keeps asyncpg.
    """
    if url.get_backend_name() != "sqlite":
        return None
    engine = create_engine(url.set(drivername="sqlite"), pool_size=8, max_overflow=8)
    _sqlite_pragmas(engine, timeout, synchronous)
    return engine


_SYNCED = ("FULL", "EXTRA")        # the settings that sync the WAL at each commit


def _asynchronous_commit(fn: Callable[[Connection], T], conn: Connection) -> T:
    """`fn` in a PostgreSQL transaction whose COMMIT does not wait for its WAL flush."""
    conn.exec_driver_sql("SET LOCAL synchronous_commit TO off")
    return fn(conn)


def instance_name(worker: int | None = None) -> str:
    """This process as the registry names it: "HOST pid=PID", and " worker=N" when a
    supervisor forked it (the keys the log lines use: `event=worker_started worker= pid=`)."""
    return f"{socket.gethostname()} pid={os.getpid()}" + (
        f" worker={worker}" if worker is not None else "")


def unicode_lower(value: Any) -> Any:
    """SQL lower() on SQLite as PostgreSQL's (a UTF-8 database) and Python's: every letter.
    SQLite's own folds A-Z only, so a search for иван@пример.рф or žofie@příklad.cz missed
    Иван@Пример.рф and Žofie@Příklad.cz there that PostgreSQL found."""
    if isinstance(value, str):
        return value.lower()
    return value if value is None or isinstance(value, bytes) else str(value).lower()


def _sqlite_pragmas(engine: Engine, timeout: float, synchronous: str) -> None:
    busy_ms = max(1, int(timeout * 500))  # half the deadline: SQLite answers first

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # every connection's lower(): no index or view uses it, so a sqlite3 shell's
        # ASCII lower() on the same file changes no stored value
        dbapi_conn.create_function("lower", 1, unicode_lower, deterministic=True)
        cursor = dbapi_conn.cursor()
        for pragma in (f"busy_timeout={busy_ms}", "journal_mode=WAL",
                       f"synchronous={synchronous}", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()


@dataclass(slots=True)
class _Pending:
    message: MessageRecord
    decisions: Sequence[DecisionRecord]
    deliveries: Sequence[DeliveryRecord]
    future: asyncio.Future[datetime] = field(repr=False)
    after: Callable[[Connection], None] | None = None   # more writes in the same transaction
    outgoing: Sequence[OutboxRecord] = ()     # autoreplies, DSNs: same transaction

    def rows(self, now: datetime) -> tuple[dict[str, Any], list[dict[str, Any]],
                                           list[dict[str, Any]]]:
        key = self.message.key
        m = self.message
        msg = _jsonable(m) | {"updated_at": now, "attempts": 1, "from_fold": fold_address(m.from_addr),
                              "mail_from_fold": fold_address(m.mail_from)}
        decs = {d.rcpt: _jsonable(d) | {"message_key": key} for d in self.decisions}
        dels: dict[str, dict[str, Any]] = {}
        for d in self.deliveries:  # one row per target; 'delivered' wins inside a record
            if dels.get(d.target, {}).get("state") != "delivered":
                dels[d.target] = _jsonable(d) | {"message_key": key, "updated_at": now}
        return msg, list(decs.values()), list(dels.values())


def _jsonable(record: Any) -> dict[str, Any]:
    """A record's fields as a row, tuples as lists (shallow: dataclasses.asdict deep-copies
    every value, a third of the registry's CPU per message)."""
    out = {}
    for name in record.__dataclass_fields__:
        value = getattr(record, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


# One answer check at a time per sender (pg_advisory_xact_lock(key, hash)): "mrAR". Per
# sender, not per sender and responder: the daily cap counts every responder's answers.
_ANSWER_LOCK = 0x6D724152
# The reason an answer dropped by the record gets in its decision (and in the log)
ANSWERED_ELSEWHERE = "answered within its period by another process"


@dataclass(frozen=True, slots=True)
class _Answer:
    """An autoreply of a batch whose record looks for an earlier answer (_answered_elsewhere)."""

    dedupe: str
    sender: str
    responder: str
    bucket: int
    period: float
    daily_cap: int = 0


def _outgoing_rows(batch: Sequence[_Pending], now: datetime) -> tuple[
        list[dict[str, Any]], dict[str, dict[str, Any]], list[_Answer], set[str]]:
    """Outbox rows, autoreply-log rows (by dedupe key), the answers to look again at, and
    the keys of the answers left out, of a batch, each key once (PostgreSQL refuses a key
    twice in one ON CONFLICT statement only for DO UPDATE, but once is enough), and one
    answer per sender and responder: two messages of one sender planned either side of a
    period bucket's end carry two keys (the second is left out)."""
    sends: dict[str, dict[str, Any]] = {}
    logs: dict[str, dict[str, Any]] = {}
    answers: dict[tuple[str, str], _Answer] = {}
    left: set[str] = set()
    for p in batch:
        for o in p.outgoing:
            if o.dedupe in sends:
                continue
            if o.responder is not None and o.sender is not None and o.bucket is not None:
                if o.period > 0:
                    if (o.sender, o.responder) in answers:
                        left.add(o.dedupe)
                        continue
                if o.period > 0 or o.daily_cap > 0:
                    # a responder without a period: one entry per key (its answers are each
                    # counted against the daily cap)
                    answers[(o.sender, o.responder if o.period > 0 else o.dedupe)] = _Answer(
                        o.dedupe, o.sender, o.responder, o.bucket, o.period, o.daily_cap)
                logs[o.dedupe] = {"sender": o.sender, "responder": o.responder,
                                  "bucket": o.bucket, "message_key": p.message.key,
                                  "sent_at": now}
            sends[o.dedupe] = {"dedupe": o.dedupe, "kind": o.kind, "message_key": p.message.key,
                               "mail_from": o.mail_from, "rcpt": o.rcpt, "raw": o.raw,
                               "state": "queued", "attempts": 0, "created_at": now,
                               "next_try": now, "sent_at": None, "last_error": ""}
    return list(sends.values()), logs, sorted(answers.values(),
                                              key=lambda a: (a.sender, a.responder)), left


def _answered_elsewhere(conn: Connection, answers: Sequence[_Answer], now: datetime
                        ) -> dict[str, str]:
    """The dedupe keys of `answers` not to send, each with why: its sender the responder
    answered within its period under another bucket's key, or the sender's answers of the
    last 24 hours (all responders) reach its daily cap, as committed by now (another
    instance or worker, whose history read came before this answer was recorded) and
    with the answers of this batch before it. On PostgreSQL each sender is locked first
    (in sorted order), so of two such records the second waits for the first's commit
    and, read committed, sees it. (The plan read the history without a lock: two
    responders of two instances, the sender one answer under its cap, both sent.)"""
    found: dict[str, str] = {}
    pg = conn.dialect.name == "postgresql"
    counted: dict[str, int] = {}        # the sender's answers in 24 h, this batch's included
    for a in answers:
        if a.sender not in counted:
            if pg:
                conn.execute(select(func.pg_advisory_xact_lock(
                    _ANSWER_LOCK, func.hashtext(a.sender))))
            counted[a.sender] = int(conn.execute(select(func.count()).where(
                autoreply_log.c.sender == a.sender,
                autoreply_log.c.sent_at > now - timedelta(days=1))).scalar_one())
        if conn.execute(select(autoreply_log.c.id).where(
                autoreply_log.c.sender == a.sender, autoreply_log.c.responder == a.responder,
                autoreply_log.c.bucket == a.bucket).limit(1)).first():
            # its own key is logged already (a retried record whose commit went through,
            # a sibling instance's answer in the same bucket): the insert adds nothing and
            # that answer is the one queued, already counted
            continue
        if a.period > 0 and conn.execute(select(autoreply_log.c.id).where(
                autoreply_log.c.sender == a.sender, autoreply_log.c.responder == a.responder,
                autoreply_log.c.bucket != a.bucket,
                autoreply_log.c.sent_at > now - timedelta(seconds=a.period)).limit(1)).first():
            found[a.dedupe] = ANSWERED_ELSEWHERE
        elif a.daily_cap and counted[a.sender] >= a.daily_cap:
            # the words of autoreply.verdict's reason (reason_kind reads 'daily_cap')
            found[a.dedupe] = (f"{a.sender} got {counted[a.sender]} answers in 24 h "
                               f"(daily_cap {a.daily_cap})")
        else:
            counted[a.sender] += 1
            continue
        log.info("event=autoreply_not_sent responder=%s reason=%r", a.responder, found[a.dedupe])
    return found


def _note_dropped(conn: Connection, batch: Sequence[_Pending], drop: dict[str, str]) -> None:
    """The decisions whose autoreply the record dropped (`drop`: dedupe key -> why) say so, in
    the same transaction: their reason line said `autoreply R: queued` (written with the
    message, before the answer was looked at again), and the registry, `request show`
    and the web view's message story showed an answer that never went."""
    for p in batch:
        for o in p.outgoing:
            if o.dedupe not in drop or o.responder is None:
                continue
            queued, dropped = autoreply_line(o.responder), autoreply_line(o.responder, drop[o.dedupe])
            for d in p.decisions:
                if queued in d.reasons:
                    conn.execute(decisions.update().where(
                        decisions.c.message_key == p.message.key, decisions.c.rcpt == d.rcpt
                    ).values(reasons=[dropped if r == queued else r for r in d.reasons]))


def _by_key(item: _Pending) -> str:
    return item.message.key


def _flat(groups: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for group in groups for row in group]


def _rounds(batch: list[_Pending]) -> list[list[_Pending]]:
    """Split a batch so no key repeats within one executemany (PostgreSQL refuses that)."""
    rounds: list[list[_Pending]] = []
    seen: list[set[str]] = []
    for item in batch:
        i = next((n for n, keys in enumerate(seen) if item.message.key not in keys), len(seen))
        if i == len(seen):
            rounds.append([])
            seen.append(set())
        rounds[i].append(item)
        seen[i].add(item.message.key)
    return rounds


def _is_bad_record(exc: BaseException) -> bool:
    """True when the data, not the database, is at fault: retrying others may work."""
    if isinstance(exc, (IntegrityError, DataError, TypeError, ValueError)):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def _describe(exc: BaseException) -> str:
    """The driver's own error, without SQL text or parameters (they hold addresses)."""
    inner = getattr(exc, "orig", None) or exc
    return f"{type(inner).__name__}: {str(inner).splitlines()[0] if str(inner) else ''}"[:300]


# What counts as "the registry is unavailable": the OS, the database and its drivers,
# the pool, time; alembic's CommandError (known by its module, below) is the database at a
# revision we do not know.
_OUTAGES: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, DBAPIError, PoolTimeoutError, DisconnectionError, sqlite3.Error)


def _is_outage(exc: BaseException) -> bool:
    """True for a database or I/O failure; False for a bug of ours (TypeError, KeyError...).
    asyncpg's own errors (raised unwrapped while connecting) and alembic's CommandError are
    known by their module: SQLite-only installs do not import asyncpg here, and alembic is
    imported by the upgrade alone (it took a third of a second of every command's start)."""
    for e in (exc, getattr(exc, "orig", None)):
        if isinstance(e, _OUTAGES) or (e is not None and (
                type(e).__module__.startswith("asyncpg.") or _alembic_error(e))):
            return True
    return False


def _alembic_error(exc: BaseException) -> bool:
    """Alembic's CommandError, when alembic was imported (only an upgrade raises it)."""
    util = sys.modules.get("alembic.util")
    return util is not None and isinstance(exc, util.CommandError)


def _metrics() -> Any:
    """mailrouter.metrics, imported on first use: `mailrouter` (cli) imports this module
    through control/ before `run` sets PROMETHEUS_MULTIPROC_DIR, and prometheus_client
    reads that variable once, when it is first imported (workers would not share)."""
    from mailrouter import metrics
    return metrics


_PG_DISK_FULL = "53100"     # PostgreSQL could not extend a file: its disk (tablespace) is full


# SQLite's errors name no file and no cause: what the admin should look at, by error text
# ({db}: the file). One table for the daemon's log line (_failure) and the commands' and
# the start's message (registry_advice).
_SQLITE_HINTS = (
    ("database is locked", "another process holds the SQLite registry's lock for longer "
     "than registry.timeout (a sqlite3 shell or a backup in a transaction?); `fuser {db}` "
     "names it, end its transaction"),
    ("database table is locked", "another process holds the SQLite registry's lock for "
     "longer than registry.timeout; `fuser {db}` names it, end its transaction"),
    ("file is not a database", "the file is not a SQLite database"),
    ("unable to open database file", "it cannot be opened (a folder, or no permission to "
     "read it or its folder): `ls -ld {db} {db}-wal {db}-shm`"),
    ("attempt to write a readonly database", "this user may not write it (the file, its "
     "-wal or -shm, or its folder owned by another user, or a read-only file system): "
     "`ls -ld {db} {db}-wal {db}-shm`; give them to the daemon's user"),
    ("database disk image is malformed", "the file is damaged: stop the daemon, keep a "
     "copy, then `sqlite3 {db} .recover` into a new file and put it in its place"),
    ("disk I/O error", "the file system under it failed (gone, read-only or full?): "
     "`df {db}`, `dmesg`"),
)


def sqlite_hint(text: str, db: str = "") -> str:
    """The fix for a SQLite error text ('' for another error), naming the file `db`."""
    return next((h.format(db=db or "FILE") for t, h in _SQLITE_HINTS if t in text), "")


def _failure(what: str, exc: BaseException, db: str = "") -> RegistryError:
    """The RegistryError for `exc`, logged once: one line for an outage, the traceback
    for anything else (a bug must not hide behind 'registry unavailable'). `db`: the
    registry (registry_location), named in the line; a SQLite file with the fix when
    another process holds its lock."""
    metrics = _metrics()
    if not _is_outage(exc):
        metrics.REGISTRY_ERRORS.labels(what, "bug").inc()
        log.error("event=registry_bug op=%s error=%r", what, _describe(exc), exc_info=exc)
        bug = RegistryBugError(f"registry {what} failed on an internal error ({_describe(exc)})")
        bug.__cause__ = exc
        return bug
    inner = getattr(exc, "orig", None) or exc
    hint = sqlite_hint(str(inner), db) if db else ""
    if hint:
        log.warning("event=registry_error op=%s error=%r file=%s: %s; messages get 451 until "
                    "then", what, _describe(exc), db, hint)
    else:       # `db` names which registry: a PostgreSQL outage said only "Connection refused"
        log.warning("event=registry_error op=%s error=%r%s", what, _describe(exc),
                    f" registry={db}" if db else "")
    full = (getattr(inner, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
            or "disk is full" in str(inner)         # SQLITE_FULL
            or getattr(inner, "sqlstate", None) == _PG_DISK_FULL)
    metrics.REGISTRY_ERRORS.labels(what, "full" if full else "outage").inc()
    err = (RegistryFullError if full else RegistryError)(
        f"registry {what} failed ({_describe(exc)})")
    err.__cause__ = exc
    return err


class FileMovedError(OSError):
    """The SQLite file at the registry's path is no longer the one its connections have
    open (deleted, or replaced by another file): a commit would go to an unlinked inode."""


class LogMovedError(FileMovedError):
    """The SQLite file's write-ahead log was deleted or replaced while open; its commits
    were copied into the file, the connections must open a new log."""


@dataclass(slots=True)
class _SqliteFile:
    """A SQLite registry's file as its connections opened it: path and (device, inode).

    Why: SQLite in WAL mode goes on committing to a file that was deleted or replaced
    while open, with no error; every record from then on is lost when the process exits,
    though each of those messages was answered 250. The writer compares before each
    commit (one stat(2)) and, when the file changed, opens the one now at the path
    (creating the schema, as a restart would) before it commits there."""

    url: URL
    synchronous: str
    ident: tuple[int, int] = (0, 0)
    generation: int = 0        # bumped at each reopen: older thread connections are let go
    where: str = ""            # the path as a str, made once: check() runs at every commit
    wal_ident: tuple[int, int] | None = None   # (device, inode) of the -wal file last seen

    @property
    def path(self) -> Path:
        return Path(self.url.database or "").expanduser()

    def take(self) -> None:
        """Remember the file now at the path as the one connections open from now on."""
        self.where = str(self.path)
        st = os.stat(self.where)
        self.ident = (st.st_dev, st.st_ino)
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(self.where + "-wal")
            self.wal_ident = (st.st_dev, st.st_ino)

    def check(self) -> None:
        try:
            st = os.stat(self.where)
        except FileNotFoundError:
            raise FileMovedError(errno.ENOENT, "registry file deleted while open") from None
        if (st.st_dev, st.st_ino) != self.ident:
            raise FileMovedError(errno.ESTALE, "registry file replaced while open")

    def check_log(self, dbapi_conn: Any) -> None:
        """The write-ahead log at `<file>-wal` is still the one our connections write to.

        Why: WAL mode commits go to the -wal file until a checkpoint copies them into the
        database file. One deleted while open (a cleanup of 'log files', a backup script)
        is written on with no error, and a crash or SIGKILL then loses every record since
        the last checkpoint, though each of those messages was answered 250 (and its intent
        settled, so no reconcile names its copies); a new reader meets 'disk I/O error'.
        One stat(2) per call; when the log at the path is not the one last seen and this
        process still holds that one open with no name left (`/proc/self/fd`), every
        commit in it is copied into the database file through `dbapi_conn` (which has it
        open) and LogMovedError has the connections opened afresh, on a new log. Otherwise
        SQLite itself removed it (every connection closed) and made a new one: taken."""
        wal = self.where + "-wal"
        try:
            st = os.stat(wal)
            now: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            now = None
        if now == self.wal_ident:
            return
        if self.wal_ident is None or not _open_unlinked(wal, self.wal_ident):
            self.wal_ident = now
            return
        busy, _frames, _copied = dbapi_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:     # not all copied: keep the connections on the old log, try at the next call
            raise OSError(errno.EBUSY, f"registry's write-ahead log {wal} was deleted while "
                          "open and its commits could not be copied into the file yet")
        raise LogMovedError(errno.ENOENT, f"write-ahead log {wal} deleted while open (its "
                            "commits were copied into the registry file)")


def _open_unlinked(path: str, ident: tuple[int, int]) -> bool:
    """Whether this process holds the file `ident` (device, inode), once at `path`, open
    although no name is left to it."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:            # no /proc: nothing to tell by
        return False
    for fd in fds:
        link = f"/proc/self/fd/{fd}"
        try:
            if not os.readlink(link).startswith(path):
                continue
            st = os.stat(link)
        except OSError:        # closed meanwhile
            continue
        if (st.st_dev, st.st_ino) == ident and st.st_nlink == 0:
            return True
    return False


def _refuse_read_only(conn: Connection, db: str) -> None:
    """A new connection to the SQLite file `db` whose file, -wal or -shm this process may
    not write (permissions, `chattr +i`, a read-only mount) is closed and refused.

    Why: SQLite opens such a file read-only without a word, and the connection stays
    read-only when the file is writable again; so does every other connection of the
    process to that file while any one of them is open (they share the -shm mapping it
    opened read-only). A worker replaced while the registry was unwritable kept those
    connections and answered every message 451 ("attempt to write a readonly database")
    until a restart, long after the files were given back. Refused, no connection is
    kept: the worker's start fails and is tried again (workers.py), a running one answers
    451, and the first connection made once the files are writable writes. Checked after
    the connection's pragmas, which opened the -wal and -shm."""
    for name in (db, db + "-wal", db + "-shm"):
        try:
            writable = os.access(name, os.W_OK)
        except OSError:
            writable = False
        if not writable and (name == db or os.path.exists(name)):
            conn.invalidate()
            conn.close()
            raise sqlite3.OperationalError(f"attempt to write a readonly database ({name} "
                                           "may not be written)")


# Reopens in one call: the old file's last connection, closing, removes the log at the
# path (SQLite deletes `<file>-wal` by name), which is by then the new file's: the next
# check finds the new file's log gone, copies it in and reopens once more.
_REOPENS = 3


def _pg_ctype(conn: Connection) -> str:
    """The LC_CTYPE of the PostgreSQL database `conn` is in (what its lower() folds by)."""
    return str(conn.execute(text("SELECT datctype FROM pg_database "
                                 "WHERE datname = current_database()")).scalar_one())


class Registry:
    """The message registry on one engine; create with ``await Registry.open(url)``."""

    def __init__(self, engine: AsyncEngine, *, batch_max: int, timeout: float,
                 sync_engine: Engine | None = None) -> None:
        self._engine = engine
        self._sync = sync_engine
        self._wexec = ThreadPoolExecutor(1, "registry-write") if sync_engine else None
        self._rexec = ThreadPoolExecutor(4, "registry-read") if sync_engine else None
        self._dialect = engine.dialect.name
        self._fast = _group_statements(sync_engine.dialect) if sync_engine is not None else None
        self._batch_max = max(1, batch_max)
        self._timeout = timeout
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._closed = False
        self._writer = asyncio.create_task(self._write_loop(), name="registry-writer")
        self._lookups: list[tuple[str, asyncio.Future[set[str]]]] = []
        self._lookup_task: asyncio.Task[None] | None = None
        self._local = threading.local()          # each worker thread's connection
        self._held: set[Connection] = set()      # all of them, for close()
        self._held_lock = threading.Lock()
        self._file: _SqliteFile | None = None   # SQLite file opened by `open`
        self._where = registry_location(engine.url)
        self._writable: str | None = None          # a SQLite file every connection must write
        self._reopening = asyncio.Lock()           # a reader and the writer may both find it
        self._down_since: float | None = None     # monotonic time of the first failure of an outage
        self._down_calls = 0                       # calls failed since
        self._unanswering: set[asyncio.Task[None]] = set()   # _unanswer_soon's, for close()

    @classmethod
    async def open(cls, url: str, *, batch_max: int = 256, timeout: float = 10.0,
                   create: bool = True, synchronous: str = "FULL",
                   follow: bool | None = None) -> Registry:
        """Open (and with ``create``, create or upgrade) the registry at ``url``. With
        ``follow`` (default: ``create``; a daemon's workers, which the parent migrated,
        pass it) a SQLite file deleted or replaced while open is reopened (_SqliteFile)."""
        parsed = _url(url)
        if not create and follow and sqlite_missing(parsed):
            # A daemon's worker whose parent made the registry at start: the file (or its
            # folder) was removed since. A running worker makes it again at its next call
            # (_SqliteFile); a worker replaced meanwhile (killed, OOM) refused to start, and
            # was tried again forever: with every worker replaced, connections hung unanswered
            # until a restart. Made here as the running one makes it.
            log.error("event=registry_reopened path=%s reason='registry file missing at a "
                      "worker start'", registry_location(parsed))
            create = True
        if not create and sqlite_missing(parsed):
            # Only `run` and `db upgrade` create a registry; a look must not leave one behind.
            raise RegistryError(f"no registry at {registry_location(parsed)}; start the daemon "
                                "(it creates it) or `mailrouter db upgrade` first, or give -c "
                                "with the daemon's config")
        try:
            if create:
                await _prepare(parsed)
                await _upgrade(parsed, timeout, synchronous)
        except Exception as exc:
            raise _failure("open", exc, registry_location(parsed)) from None
        engine = _make_engine(parsed, timeout, synchronous)
        registry = cls(engine, batch_max=batch_max, timeout=timeout,
                       sync_engine=_make_sync_engine(parsed, timeout, synchronous))
        path = sqlite_file(parsed)
        if (create if follow is None else follow) and registry._sync is not None \
                and path is not None:
            # a daemon's registry: it writes, every connection must be able to
            registry._writable = str(path)
        try:
            await registry._read("open", lambda conn: conn.execute(select(1)).all())
            if not create:      # `run` and `db upgrade` had Alembic say so (_UNKNOWN_REVISION)
                found = await registry._read("open", _schema_revision)
                if found is not None and found not in known_revisions():
                    raise RegistryError(f"registry open failed (unknown schema revision "
                                        f"'{found}')")
            if create and registry._dialect == "postgresql":
                ctype = await registry._read("open", _pg_ctype)
                if ctype in ("C", "POSIX"):
                    log.warning(
                        "event=registry_ascii_case registry=%s lc_ctype=%s: PostgreSQL folds "
                        "only A-Z in this database, so a search by recipient (--rcpt) finds "
                        "Иван@пример.рф or Žofie@ only as typed (senders are folded by "
                        "mailrouter itself; SQLite folds every letter); "
                        "create the registry's database with a UTF-8 LC_CTYPE (CREATE DATABASE "
                        "... TEMPLATE template0 LC_CTYPE 'C.UTF-8') and move the data there",
                        registry_location(parsed), ctype)
            if (create if follow is None else follow) and registry._sync is not None \
                    and not sqlite_missing(parsed):
                registry._file = _SqliteFile(parsed, synchronous)
                await asyncio.to_thread(registry._file.take)
        except RegistryError:
            await registry.close()
            raise
        except OSError as exc:
            await registry.close()
            raise _failure("open", exc, registry_location(parsed)) from None
        return registry

    async def ping(self, timeout: float) -> None:
        """`SELECT 1` within `timeout` seconds, for /readyz; RegistryError when it does not
        answer. Not logged: a probe every few seconds would fill the log during an outage."""
        try:
            async with asyncio.timeout(timeout):
                await self._run(lambda conn: conn.execute(select(1)).all(), write=False)
        except TimeoutError:
            raise RegistryError(f"registry did not answer SELECT 1 within {timeout:g}s") from None
        except Exception as exc:  # any driver/pool/OS error: not ready
            raise RegistryError(f"registry unreachable ({_describe(exc)})") from None

    @property
    def _db(self) -> str:
        """The registry for error lines: the SQLite file, a PostgreSQL URL without password."""
        return str(self._file.path) if self._file is not None else self._where

    @property
    def engine(self) -> AsyncEngine:
        """The engine, for event listeners in tests and metrics; do not write through it."""
        return self._engine

    @property
    def commit_engine(self) -> Engine:
        """The (sync) engine whose connections commit the group batches."""
        return self._sync or self._engine.sync_engine

    async def _run(self, fn: Callable[[Connection], T], write: bool, lazy: bool = False) -> T:
        """`_run_reopening`, noting an outage and, once a call gets through again, its end
        (`_recovered`)."""
        try:
            result = await self._run_reopening(fn, write, lazy)
        except Exception as exc:
            if _is_outage(exc):
                if self._down_since is None:
                    self._down_since = time.monotonic()
                self._down_calls += 1
            raise
        if self._down_since is not None:
            self._recovered()
        return result

    def _recovered(self) -> None:
        """One line when the registry answers again after an outage. Each failure had its
        `registry_error` line, and the end had none: after PostgreSQL came back the log
        (the last lines: errors) read as if the registry were still down."""
        assert self._down_since is not None
        log.warning("event=registry_recovered registry=%s down_for=%.1fs failed_calls=%d: "
                    "messages are recorded again", self._db,
                    time.monotonic() - self._down_since, self._down_calls)
        self._down_since, self._down_calls = None, 0

    async def _run_reopening(self, fn: Callable[[Connection], T], write: bool,
                             lazy: bool = False) -> T:
        """`_run_once`, again after reopening a SQLite file deleted or replaced under us
        (_SqliteFile): every read, write and /readyz ping meets it, not only the group
        commit (a ping that met it before anything else said 'unreachable' until a message
        came; before any read checked the file it read the deleted one and said ok)."""
        for _ in range(_REOPENS):
            generation = self._file.generation if self._file is not None else 0
            try:
                return await self._run_once(fn, write, lazy)
            except FileMovedError as exc:
                await self._reopen(exc, generation)
        return await self._run_once(fn, write, lazy)

    async def _run_once(self, fn: Callable[[Connection], T], write: bool, lazy: bool = False) -> T:
        """Run `fn(connection)` in a transaction (write) or a plain connection (read); a lazy
        write's commit is not waited onto the disk (see `write`)."""
        async with asyncio.timeout(self._timeout):
            if self._sync is not None:
                pool = self._wexec if write else self._rexec
                return await asyncio.get_running_loop().run_in_executor(
                    pool, self._run_sync, fn, write, lazy)
            if lazy and write:
                fn = functools.partial(_asynchronous_commit, fn)
            async with (self._engine.begin() if write else self._engine.connect()) as conn:
                return await conn.run_sync(fn)

    def _run_sync(self, fn: Callable[[Connection], T], write: bool, lazy: bool = False) -> T:
        """`fn` on this worker thread's own connection, kept between calls.

        A checkout and checkin of the pool per call (the Connection, its events, the
        reset) cost more of the GIL than the group commit's statements or the retry
        look-up themselves: py-spy --gil, c=10, ~6% of the process against ~1.5%. The
        pool held the same SQLite connections before; what goes is the ceremony. A write
        is one transaction as before; after a read, what the checkin's reset did (a
        rollback) is done here. On any failure the connection goes back to the pool, as
        it did, and the next call checks out another (an invalidated one is replaced)."""
        conn: Connection | None = getattr(self._local, "conn", None)
        generation = self._file.generation if self._file is not None else 0
        if conn is not None and self._local.generation != generation:
            self._let_go(conn)                   # it has the file we reopened away from
            conn = None
        if conn is None:
            assert self._sync is not None
            conn = self._sync.connect()
            if self._writable is not None:
                _refuse_read_only(conn, self._writable)
            self._local.conn = conn
            self._local.generation = generation
            with self._held_lock:
                self._held.add(conn)
        try:
            if self._file is not None:   # a read too: a new connection found no tables
                self._file.check()
                self._file.check_log(conn.connection.dbapi_connection)
            if write:
                relax = lazy and self._file is not None and self._file.synchronous.upper() in _SYNCED
                if relax:       # WAL: this commit is synced by the next FULL one's fsync
                    conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                        "PRAGMA synchronous=NORMAL")
                try:
                    with conn.begin():
                        return fn(conn)
                finally:
                    if relax:
                        assert self._file is not None
                        conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                            f"PRAGMA synchronous={self._file.synchronous}")
            try:
                return fn(conn)
            finally:
                if conn.in_transaction():
                    conn.rollback()
                else:
                    conn.connection.dbapi_connection.rollback()  # type: ignore[union-attr]
        except BaseException:
            self._let_go(conn)
            raise

    def _let_go(self, conn: Connection) -> None:
        """Return this thread's connection to the pool (after a failure, or at close)."""
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._held_lock:
            self._held.discard(conn)
        try:
            conn.close()
        except Exception as exc:  # noqa: BLE001 (already failing: the caller's error counts)
            log.debug("event=registry_connection_close_failed error=%r", _describe(exc))

    def _close_sync(self) -> None:
        """Let the worker threads finish what they were given, then close their
        connections and the pool (in a thread: SQLite's close may wait for the disk)."""
        for pool in (self._wexec, self._rexec):
            if pool is not None:
                pool.shutdown(wait=True)
        with self._held_lock:
            held, self._held = list(self._held), set()
        for conn in held:
            try:
                conn.close()
            except Exception as exc:  # noqa: BLE001 (closing: nothing more to do with it)
                log.debug("event=registry_connection_close_failed error=%r", _describe(exc))
        assert self._sync is not None
        self._sync.dispose()

    # Writes

    async def record(self, message: MessageRecord, decisions: Sequence[DecisionRecord],
                     deliveries: Sequence[DeliveryRecord],
                     after: Callable[[Connection], None] | None = None,
                     outgoing: Sequence[OutboxRecord] = ()) -> datetime:
        """Write one message with its decisions and deliveries; return once committed,
        with the time the commit wrote as its `updated_at` (for `unanswered`).

        `outgoing` (autoreplies, DSNs) goes into the outbox in the same transaction.

        `after(connection)` runs in the same transaction once the batch's rows are written
        (execution control opens or joins the message's request there).

        A caller that gives up (cancelled: process_timeout, a shutdown; or past `timeout`)
        answers no 250, yet a commit under way goes through: a `delivered` or `partial`
        row so written is then made `unanswered` (the writer sees the caller gone at the
        commit; `record` itself when the cancel came after it), in a write of its own,
        only then."""
        if self._closed:
            raise RegistryError("registry is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[datetime] = loop.create_future()
        self._queue.put_nowait(_Pending(message, decisions, deliveries, future, after, outgoing))
        # the deadline as one timer on the future (asyncio.timeout's context manager and
        # its task bookkeeping cost more, once per message); the writer skips a done future
        timer = loop.call_later(self._timeout, _expire, future)
        try:
            return await future
        except TimeoutError:
            raise _failure("record", TimeoutError("no commit within timeout"), self._db) from None
        except asyncio.CancelledError:
            # committed, and the cancel came before the caller could read it (a timeout
            # firing as the commit ended): no 250 for it either
            if future.done() and not future.cancelled() and future.exception() is None:
                self._unanswer_soon([(message.key, future.result())])
            raise
        finally:
            timer.cancel()

    async def unanswered(self, key: str, committed_at: datetime) -> bool:
        """Make the row `record` committed at `committed_at` `unanswered` if it says it was
        answered (`delivered`, `partial`): the 250 did not reach the client. A row written
        again since (a retry answered 250, here or by another process) is left as it is.
        True when a row was changed."""
        return await self._unanswer([(key, committed_at)]) > 0

    async def _unanswer(self, rows: Sequence[tuple[str, datetime]]) -> int:
        params = [{"k": k, "at": at, "now": _now()} for k, at in rows]

        def write(conn: Connection) -> int:
            return int(conn.execute(_UNANSWER, params).rowcount or 0)
        try:
            return await self._run(write, write=True)
        except Exception as exc:  # any driver/pool/OS error is a registry outage
            raise _failure("record", exc, self._db) from None   # the record's own write

    def _unanswer_soon(self, rows: Sequence[tuple[str, datetime]]) -> None:
        """`_unanswer` in a task of its own (the writer goes on; close() waits for it)."""
        async def run() -> None:
            keys = " ".join(k for k, _ in rows)
            try:
                n = await self._unanswer(rows)
            except RegistryError as exc:
                log.error("event=unanswered_not_recorded keys=%s error=%r", keys, str(exc))
                return
            log.warning("event=record_unanswered keys=%s changed=%d reason='committed after "
                        "its caller gave up: no 250'", keys, n)
        task = asyncio.get_running_loop().create_task(run(), name="registry-unanswered")
        self._unanswering.add(task)
        task.add_done_callback(self._unanswering.discard)

    async def record_loop(self, key: str, rcpt: str, evidence: str) -> None:
        """Note a mail loop caught at run time for message ``key`` and recipient ``rcpt``."""
        row = {"detected_at": _now(), "message_key": key, "rcpt": rcpt, "evidence": evidence}
        await self._write_one("record_loop", loops.insert().values(row))

    async def record_reload(self, ruleset_hash: str, ok: bool, detail: str,
                            worker: int | None = None) -> None:
        """Note one rule-set reload attempt and its result, and which process made it
        (`instance`: this host, pid and `worker`, as log lines name them: instances sharing
        one registry each write their own rows; with workers, worker 0's row stands for all)."""
        row = {"at": _now(), "ruleset_hash": ruleset_hash, "ok": ok, "detail": detail,
               "instance": instance_name(worker)}
        await self._write_one("record_reload", reloads.insert().values(row))

    async def reloads(self, limit: int | None = 20) -> list[dict[str, Any]]:
        """The newest reloads first: at, ruleset_hash, ok, detail, instance."""
        def fetch(conn: Connection) -> list[dict[str, Any]]:
            return [dict(r._mapping) for r in conn.execute(
                select(reloads).order_by(reloads.c.at.desc(), reloads.c.id.desc()).limit(limit))]
        return await self.read("reloads", fetch)

    async def _write_one(self, what: str, stmt: Any) -> None:
        try:
            await self._run(lambda conn: conn.execute(stmt), write=True)
        except Exception as exc:  # any driver/pool/OS error is a registry outage: 4xx
            raise _failure(what, exc, self._db) from None

    # Reads

    async def delivered_targets(self, key: str) -> set[str]:
        """Targets that already have message ``key`` (skip them on a retry).

        Every message asks this once, so concurrent asks share one query (the read
        side of the group commit): while a lookup is in flight the next keys gather,
        and the following lookup answers all of them with one `IN (...)`."""
        future: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._lookups.append((key, future))
        if self._lookup_task is None:
            self._lookup_task = asyncio.create_task(self._lookup_loop(), name="registry-lookup")
        return await future

    async def _lookup_loop(self) -> None:
        batch: list[tuple[str, asyncio.Future[set[str]]]] = []
        try:
            while self._lookups:
                batch = self._lookups[:_LOOKUP_MAX]
                del self._lookups[:_LOOKUP_MAX]
                keys = list({k for k, f in batch if not f.done()})
                if not keys:
                    continue

                def fetch(conn: Connection, keys: list[str] = keys) -> dict[str, set[str]]:
                    found: dict[str, set[str]] = {}
                    if self._fast is not None:    # SQLite: the driver's cursor, as records
                        for key, target in _delivered_targets(conn, keys):
                            found.setdefault(key, set()).add(target)
                        return found
                    for r in conn.execute(_DELIVERED_TARGETS, {"keys": keys}):
                        found.setdefault(r.message_key, set()).add(r.target)
                    return found
                try:
                    found = await self._read("delivered_targets", fetch)
                except RegistryError as exc:
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                for k, f in batch:
                    if not f.done():
                        f.set_result(found.get(k, set()))
        finally:
            self._lookup_task = None
            # cancelled (shutdown) or a bug: nobody may wait for an answer that never comes
            for _, f in batch + self._lookups:
                if not f.done():
                    f.set_exception(RegistryError("registry lookup stopped"))
            self._lookups.clear()

    async def first_seen(self, key: str) -> datetime | None:
        """When message ``key`` was first recorded (its first attempt), or None if never.

        The upsert keeps ``received_at`` of the first record, deferred attempts included,
        so a retry learns how long the message has been held (delivery.hold_permanent_failures)."""
        query = select(messages.c.received_at).where(messages.c.key == key)
        found: datetime | None = await self._read(
            "first_seen", lambda conn: conn.execute(query).scalar_one_or_none())
        return found

    async def message(self, key: str) -> dict[str, Any] | None:
        """The message row with lists of its decisions and deliveries, or None
        (registry.queries.message_story, all of it)."""
        return await self._read("message", lambda conn: message_story(
            conn, Scope(everything=True), key))

    async def recent(self, limit: int | None = 10) -> list[dict[str, Any]]:
        """The newest messages (by received_at), each with its decisions."""
        def fetch(conn: Connection) -> list[dict[str, Any]]:
            rows = [dict(r._mapping) for r in conn.execute(
                select(messages).order_by(messages.c.received_at.desc()).limit(limit))]
            by_key = {r["key"]: r | {"decisions": []} for r in rows}
            if by_key:
                for d in conn.execute(select(decisions).where(
                        decisions.c.message_key.in_(list(by_key))).order_by(decisions.c.id)):
                    by_key[d.message_key]["decisions"].append(dict(d._mapping))
            return list(by_key.values())
        return await self._read("recent", fetch)

    async def count_messages(self) -> int:
        """How many messages the registry holds."""
        query = select(func.count()).select_from(messages)
        return await self._read("count_messages",
                                lambda conn: int(conn.execute(query).scalar_one()))

    async def read(self, what: str, fn: Callable[[Connection], T]) -> T:
        """Run `fn(connection)` outside a write transaction; any failure is a RegistryError."""
        return await self._read(what, fn)

    async def write(self, what: str, fn: Callable[[Connection], T], *, lazy: bool = False) -> T:
        """Run `fn(connection)` in its own transaction; any failure is a RegistryError.

        `lazy`: the commit is visible to every other connection at once but not waited onto
        the disk (SQLite WAL: synchronous=NORMAL for this one transaction; PostgreSQL:
        synchronous_commit off for it). For what a later durable commit of the same message
        makes durable with it: a WAL is synced in order, so the record's fsync (before any
        250) covers this commit too, and a crash before that loses only a write whose
        message was never answered (the thread claim before delivery, control/store.py)."""
        try:
            return await self._run(fn, write=True, lazy=lazy)
        except Exception as exc:  # any driver/pool/OS error is a registry outage: 4xx
            raise _failure(what, exc, self._db) from None

    @property
    def dialect(self) -> str:
        return self._dialect

    async def _read(self, what: str, fn: Callable[[Connection], T]) -> T:
        try:
            return await self._run(fn, write=False)
        except Exception as exc:  # any driver/pool/OS error is a registry outage: 4xx
            raise _failure(what, exc, self._db) from None

    # The outbox (issue 11): history for the autoreply verdict, claim, settle, list.

    async def autoreply_history(self, sender: str, since: datetime,
                                day_ago: datetime) -> tuple[dict[str, datetime], int]:
        """(last answer per responder since ``since``, answers since ``day_ago``) for one
        canonical sender."""
        def fetch(conn: Connection) -> tuple[dict[str, datetime], int]:
            last: dict[str, datetime] = {}
            today = 0
            for r in conn.execute(select(autoreply_log.c.responder, autoreply_log.c.sent_at)
                                  .where(autoreply_log.c.sender == sender,
                                         autoreply_log.c.sent_at >= min(since, day_ago))):
                if r.sent_at >= since and (r.responder not in last or r.sent_at > last[r.responder]):
                    last[r.responder] = r.sent_at
                today += r.sent_at >= day_ago
            return last, today
        return await self._read("autoreply_history", fetch)

    async def outbox_claim(self, limit: int, lease: float) -> list[dict[str, Any]]:
        """Up to ``limit`` due rows, each pushed ``lease`` seconds into the future in the same
        transaction (a worker that dies mid-send leaves them to be tried again after it).
        PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so instances never claim one row twice."""
        def claim(conn: Connection) -> list[dict[str, Any]]:
            now = _now()
            ids = [r.id for r in conn.execute(
                select(outbox.c.id).where(outbox.c.state == "queued", outbox.c.next_try <= now)
                .order_by(outbox.c.next_try, outbox.c.id).limit(limit)
                .with_for_update(skip_locked=True))]
            if not ids:
                return []
            conn.execute(outbox.update().where(outbox.c.id.in_(ids)).values(
                next_try=now + timedelta(seconds=lease), attempts=outbox.c.attempts + 1))
            return [dict(r._mapping) for r in conn.execute(
                select(outbox).where(outbox.c.id.in_(ids)).order_by(outbox.c.id))]
        try:
            return await self._run(claim, write=True)
        except Exception as exc:  # any driver/pool/OS error is a registry outage
            raise _failure("outbox_claim", exc, self._db) from None

    async def outbox_renew(self, row_id: int, leased_until: datetime,
                           lease: float) -> datetime | None:
        """Push a claimed row's lease ``lease`` seconds from now, only when it is still the
        lease this worker's claim set (``leased_until``) and the row is still queued: the
        new lease's end, or None when another worker claimed it since (its lease ran out
        while this worker's batch was still being sent) or it was settled."""
        def renew(conn: Connection) -> datetime | None:
            until = _now() + timedelta(seconds=lease)
            done = conn.execute(outbox.update().where(
                outbox.c.id == row_id, outbox.c.state == "queued",
                outbox.c.next_try == leased_until).values(next_try=until))
            return until if done.rowcount else None
        try:
            return await self._run(renew, write=True)
        except Exception as exc:  # any driver/pool/OS error is a registry outage
            raise _failure("outbox_renew", exc, self._db) from None

    async def outbox_settle(self, row_id: int, state: str, error: str = "",
                            retry_at: datetime | None = None) -> None:
        """Mark a claimed row sent, failed or suppressed, or (``retry_at``) due again then."""
        values: dict[str, Any] = {"last_error": error[:2000]}
        if retry_at is not None:
            values |= {"state": "queued", "next_try": retry_at}
        else:
            values |= {"state": state}
            if state == "sent":
                values["sent_at"] = _now()
        await self._write_one("outbox_settle",
                              outbox.update().where(outbox.c.id == row_id).values(values))

    async def outbox_list(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest outbox rows (without their bytes), newest first."""
        cols = [c for c in outbox.c if c.name != "raw"]
        return await self._read("outbox_list", lambda conn: [dict(r._mapping) for r in conn.execute(
            select(*cols).order_by(outbox.c.id.desc()).limit(limit))])

    # Group commit

    async def _write_loop(self) -> None:
        """Take everything pending, up to batch_max, and commit it as one batch."""
        stopping = False
        while not stopping:
            first = await self._queue.get()
            batch: list[_Pending] = []
            item: _Pending | None = first
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= self._batch_max or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # skip callers that gave up
        if not live:
            return
        started, metrics = time.perf_counter(), _metrics()
        try:
            now = await self._write_batch(live)       # a moved file is reopened in _run
            metrics.REGISTRY_COMMIT.observe(time.perf_counter() - started)
            metrics.REGISTRY_BATCH.observe(len(live))
        except Exception as exc:  # the writer must survive anything a batch throws
            if len(live) == 1 or not _is_bad_record(exc):
                _settle(live, _failure("record", exc, self._db))
                return
            await self._commit_one_by_one(live)
        else:
            self._settled(live, now)

    def _settled(self, committed: list[_Pending], now: datetime) -> None:
        """Tell the callers of `committed` it is; those that gave up meanwhile (a cancel,
        the timeout) answered no 250: their answered rows are made `unanswered`."""
        gone = [(p.message.key, now) for p in committed if p.future.done()
                and p.message.status in _ANSWERED]
        _settle(committed, None, now)
        if gone:
            self._unanswer_soon(gone)

    async def _commit_one_by_one(self, live: list[_Pending]) -> None:
        for n, item in enumerate(live):
            try:
                now = await self._write_batch([item])
            except Exception as exc:  # see _commit
                error = _failure("record", exc, self._db)       # logged once, whoever shares it
                _settle([item], error)
                if not _is_bad_record(exc):  # the database went away: fail the rest now
                    _settle(live[n + 1:], error)
                    return
            else:
                self._settled([item], now)

    async def _write_batch(self, batch: list[_Pending]) -> datetime:
        """One transaction for `batch`. Every statement writes its rows in the order of
        their unique key (messages by key, and a message's own rows after it, which its
        message row's lock guards; outbox rows by dedupe key), so two instances' batches
        holding the same messages (a message split by recipients, an MTA's retry, both
        delivered at once to both) lock them in one order. In arrival order, one
        instance's [X, Y] and the other's [Y, X] deadlocked on PostgreSQL, and the batch
        it aborted answered 451 for every message in it."""
        now, dialect = _now(), self._dialect
        rounds = [tuple(zip(*(p.rows(now) for p in sorted(round_, key=_by_key))))
                  for round_ in _rounds(batch)]
        sends, logs, answers, left = _outgoing_rows(batch, now)
        sends.sort(key=lambda r: r["dedupe"])
        fast = self._fast

        def write(conn: Connection) -> None:
            for msgs, decs, dels in rounds:
                # the subject-word index (words.py); a retry's words are already there
                words = [w for m in msgs
                         for w in word_rows(m["key"], m["received_at"], m["subject"])]
                if fast is not None:      # SQLite: compiled once, the driver's executemany
                    fast.write(conn, msgs, words, _flat(decs), _flat(dels))
                    continue
                conn.execute(message_upsert(dialect), list(msgs))
                if words:
                    conn.execute(word_insert(dialect), words)
                for stmt, params in ((decision_upsert(dialect), _flat(decs)),
                                     (delivery_upsert(dialect), _flat(dels))):
                    if params:
                        conn.execute(stmt, params)
            for p in batch:
                if p.after is not None:
                    p.after(conn)
            # The outbox: ON CONFLICT DO NOTHING on the dedupe key (and on sender, responder,
            # period bucket in the log): a retried message or a sibling instance adds nothing;
            # an answer given meanwhile under the previous bucket's key drops this one.
            drop = _answered_elsewhere(conn, answers, now) if answers else {}
            if drop or left:
                _note_dropped(conn, batch, {k: ANSWERED_ELSEWHERE for k in left} | drop)
            logged = sorted((r for k, r in logs.items() if k not in drop),
                            key=lambda r: (r["sender"], r["responder"], r["bucket"]))
            for stmt, params in ((autoreply_log_insert(dialect), logged),
                                 (outbox_insert(dialect),
                                  [r for r in sends if r["dedupe"] not in drop])):
                if params:
                    conn.execute(stmt, params)
        await self._run(write, write=True)
        return now

    async def _reopen(self, why: FileMovedError, generation: int) -> None:
        """Open the SQLite file now at the registry's path (see _SqliteFile): create or
        upgrade its schema, then let every connection to the old file (or log) go."""
        assert self._file is not None and self._sync is not None
        async with self._reopening:
            if self._file.generation != generation:
                return                  # the writer or another read reopened it meanwhile
            try:
                await asyncio.to_thread(self._file.check)
                if not isinstance(why, LogMovedError):
                    return              # the file is back (a reopen of an older generation)
            except FileMovedError:
                pass
            log.error("event=registry_reopened path=%s reason=%r", self._file.path, why.strerror)
            await _prepare(self._file.url)
            await _upgrade(self._file.url, self._timeout, self._file.synchronous)
            await asyncio.to_thread(self._file.take)
            self._file.generation += 1
            await asyncio.to_thread(self._sync.dispose)   # pooled ones; threads drop their own

    async def close(self) -> None:
        """Commit whatever is pending, stop the writer and release the connections."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        try:
            await self._writer
            if self._unanswering:    # the writer's last commits' (`_settled`)
                await asyncio.wait(set(self._unanswering), timeout=self._timeout)
        finally:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._engine.dispose()
                    if self._sync is not None:
                        await asyncio.to_thread(self._close_sync)
            except TimeoutError:
                log.warning("event=registry_error op=close error='dispose timed out'")


class _Prepared:
    """One statement compiled once for a dialect, run with the driver's own executemany.

    SQLAlchemy's execute compiles (cached), builds a parameter dict per row and runs every
    value through its type's processor: in the group commit (SQLite, idle: one message per
    batch) that was half the writer thread's CPU. Here the SQL text, the parameter order and
    the processors (UTCDateTime, JSON) are taken from SQLAlchemy's compiled statement once,
    so rows are bound exactly as SQLAlchemy binds them; the statement runs on the cursor of
    the transaction's own connection (commit, events and the pool stay SQLAlchemy's).
    Driver errors are wrapped as SQLAlchemy would (IntegrityError and the like), so the
    batch's bad-record and outage rules are unchanged."""

    def __init__(self, stmt: Any, keys: Sequence[str], dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        order = list(compiled.positiontup or ())
        if order[:len(keys)] != list(keys) or set(order[len(keys):]) & set(keys):
            raise AssertionError(f"unexpected parameter order {order}")   # a bug: fail at open
        self.sql: str = compiled.string
        self.keys = tuple(keys)
        procs = compiled._bind_processors
        self.procs = [(i, procs[k]) for i, k in enumerate(keys) if k in procs]
        # constants of the statement itself (attempts + 1, state = 'delivered')
        consts = []
        for name in order[len(keys):]:
            value = compiled.binds[name].effective_value
            consts.append(procs[name](value) if name in procs else value)
        self.consts = tuple(consts)

    def params(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        keys, procs, consts = self.keys, self.procs, self.consts
        out = []
        for row in rows:
            values = [row[k] for k in keys]
            for i, fn in procs:
                values[i] = fn(values[i])
            out.append((*values, *consts))
        return out

    def run(self, cursor: Any, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            cursor.executemany(self.sql, self.params(rows))
        except sqlite3.Error as exc:
            raise DBAPIError.instance(self.sql, None, exc, sqlite3.Error,
                                      hide_parameters=True) from exc

    @staticmethod
    def group(dialect: Any) -> _GroupStatements:
        return _GroupStatements(dialect)


class _GroupStatements:
    """The group commit's four statements for SQLite, compiled once per registry."""

    def __init__(self, dialect: Any) -> None:
        def cols(table: Any) -> list[str]:
            return [c.name for c in table.c if not (c.primary_key and c.autoincrement is True)]
        self.messages = _Prepared(message_upsert("sqlite"), cols(messages), dialect)
        self.words = _Prepared(word_insert("sqlite"), cols(subject_words), dialect)
        self.decisions = _Prepared(decision_upsert("sqlite"), cols(decisions), dialect)
        self.deliveries = _Prepared(delivery_upsert("sqlite"), cols(deliveries), dialect)

    def write(self, conn: Connection, msgs: Sequence[dict[str, Any]],
              words: Sequence[dict[str, Any]], decs: Sequence[dict[str, Any]],
              dels: Sequence[dict[str, Any]]) -> None:
        cursor = conn.connection.cursor()
        try:
            for stmt, rows in ((self.messages, msgs), (self.words, words),
                               (self.decisions, decs), (self.deliveries, dels)):
                stmt.run(cursor, rows)
        finally:
            cursor.close()


def _group_statements(dialect: Any) -> _GroupStatements | None:
    """The compiled group-commit statements, or None (SQLAlchemy's own execute) when this
    SQLAlchemy compiles them in a way _Prepared does not know: it reads a private member
    (`_bind_processors`), and a release that changes it must cost speed, not the registry."""
    try:
        return _Prepared.group(dialect)
    except Exception as exc:  # noqa: BLE001 (any surprise in SQLAlchemy's internals)
        log.warning("event=registry_fast_path_off error=%r", str(exc))
        return None


# Built once: constructing the expression per message cost more than running it.
_DELIVERED_TARGETS = select(deliveries.c.message_key, deliveries.c.target).where(
    deliveries.c.message_key.in_(bindparam("keys", expanding=True)),
    deliveries.c.state == "delivered")
_LOOKUP_MAX = 200       # keys per dedupe query, well under SQLite's bound-parameter limit


@functools.cache
def _delivered_sql(n: int) -> str:
    return ("SELECT message_key, target FROM deliveries WHERE message_key IN "
            f"({', '.join('?' * n)}) AND state = 'delivered'")


def _delivered_targets(conn: Connection, keys: list[str]) -> list[Any]:
    """_DELIVERED_TARGETS on SQLite's own cursor (the text is the same query: the
    expanding IN and the result set-up cost more than the query, idle one key a time)."""
    sql = _delivered_sql(len(keys))
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, keys)
        return list(cursor.fetchall())
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error, hide_parameters=True) from exc
    finally:
        cursor.close()


def _expire(future: asyncio.Future[datetime]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


# A row committed for a caller that answered no 250 (Registry._unanswer): `unanswered` if it
# still is the row that commit wrote (updated_at) and says answered
_ANSWERED = ("delivered", "partial")
_UNANSWER = (update(messages)
             .where(messages.c.key == bindparam("k"), messages.c.updated_at == bindparam("at"),
                    messages.c.status.in_(_ANSWERED))
             .values(status="unanswered", updated_at=bindparam("now")))


def _settle(items: Sequence[_Pending], error: RegistryError | None,
            committed_at: datetime | None = None) -> None:
    for item in items:
        if item.future.done():
            continue
        if error is None:
            assert committed_at is not None
            item.future.set_result(committed_at)
        else:
            item.future.set_exception(error)


def _now() -> datetime:
    return datetime.now(timezone.utc)


# Schema

async def upgrade(url: str, *, timeout: float = 60.0) -> None:
    """Create the registry schema or migrate it to the newest revision (idempotent)."""
    parsed = _url(url)
    try:
        await _prepare(parsed)
        await _upgrade(parsed, timeout, "FULL")
    except Exception as exc:  # any driver/Alembic/OS error: report, never a traceback
        raise _failure("upgrade", exc, registry_location(parsed)) from None


async def _upgrade(url: URL, timeout: float, synchronous: str) -> None:
    # Alembic is synchronous and reads scripts from disk: give it its own loop
    # and engine in a worker thread (an engine belongs to one event loop).
    await asyncio.to_thread(_upgrade_alone, url, timeout, synchronous)


def _upgrade_alone(url: URL, timeout: float, synchronous: str) -> None:
    """_upgrade_here, one process at a time for a SQLite file (an flock on its folder):
    two that made a new file at once both created its tables, and the second failed
    ("table messages already exists": two workers replaced after the registry's folder
    was removed answered 451 until one won, two `mailrouter` commands on a new registry
    exited 2). The second now waits and finds the schema made. PostgreSQL's own lock
    serializes its migrations."""
    folder = None
    path = sqlite_file(url)
    if path is not None:
        try:
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(folder, fcntl.LOCK_EX)
        except OSError:     # the upgrade says what is wrong with the folder
            if folder is not None:
                os.close(folder)
            folder = None
    try:
        asyncio.run(_upgrade_here(url, timeout, synchronous))
    finally:
        if folder is not None:
            os.close(folder)        # and with it the lock


async def _upgrade_here(url: URL, timeout: float, synchronous: str) -> None:
    # Alembic imported here, in this thread, before the engine connects: a third of a second
    # on an idle box, seconds on a loaded one, not spent holding a connection.
    import alembic.command  # noqa: F401
    import alembic.config  # noqa: F401
    # `timeout` bounds each wait (the connection, a lock, one statement: the engine's
    # settings), not the whole migration: a revision that rewrites every message (0009,
    # 0012) takes minutes on a big registry, and under the deadline of one registry call it
    # failed every start ("registry open failed (TimeoutError)") and `db upgrade` too.
    engine = _make_engine(url, timeout, synchronous)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_alembic_upgrade)
            await conn.run_sync(_fill_folds)
    finally:
        await engine.dispose()


_FOLD_BATCH = 5000


def _fill_folds(conn: Connection) -> None:
    """Fold the senders of messages recorded without them (from_fold, mail_from_fold NULL),
    at each start that migrates, in the migration's transaction (and its lock).

    Why: every message this release records has both (models.py). A release older than
    revision 0012 still running beside a newer one on the shared PostgreSQL registry (an
    upgrade made one instance at a time, though docs/install.md says to stop them all)
    went on writing messages without them, and `registry search --from`, `registry
    history` and the web view's sender pages never found those messages: the revision's
    backfill had run before they came. The next start of any instance of this release
    folds them. None to fold: two index look-ups, not a scan (the senders' fold
    indexes hold NULL too: SQLite's plan is a MULTI-INDEX OR; PostgreSQL's B-trees answer
    IS NULL as well)."""
    fold = (messages.c.from_fold.is_(None)) | (messages.c.mail_from_fold.is_(None))
    while True:
        rows = conn.execute(select(messages.c.key, messages.c.from_addr, messages.c.mail_from)
                            .where(fold).limit(_FOLD_BATCH)).all()
        if not rows:
            return
        conn.execute(messages.update().where(messages.c.key == bindparam("k")).values(
            from_fold=bindparam("f"), mail_from_fold=bindparam("m")),
            [{"k": k, "f": fold_address(f or ""), "m": fold_address(m or "")}
             for k, f, m in rows])
        log.warning("event=registry_folds_filled count=%d: messages recorded without their "
                    "folded senders (by a release older than this one's registry schema) "
                    "are found by sender again", len(rows))
        if len(rows) < _FOLD_BATCH:
            return


def _alembic_upgrade(connection: Connection, revision: str = "head") -> None:
    """Alembic's upgrade on `connection` (tests stop at an older `revision`)."""
    from alembic import command
    from alembic.config import Config
    config = Config()
    config.set_main_option("script_location", os.fspath(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    command.upgrade(config, revision)

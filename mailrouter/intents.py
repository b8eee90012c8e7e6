"""Intents: a message's Maildir copies, written down before they are made.

Why: a crash, a kill or a cut session between the Maildir copies and the registry record
leaves copies users see and the registry does not know (their sender never got a 250; a
retry would find them, but none may come). So before the pipeline makes Maildir copies it
appends an intent to this process's journal, var/intents/PID.N.jrn: the message record it
will write and each copy's folder and file name (delivery/maildir.py names a copy by the
copy only). The intent is written by the Maildir writer thread in the same hop as the copies,
before any of them (`Intent`, a delivery.maildir.Prior): the intents of a batch's copies are
written and fdatasync'd together (one write and one sync per journal, as the registry's group
commit), so a copy is never on disk without its intent, and a message costs one thread
hand-off for both. After the record is committed a `done` line follows, not synced: a lost
one costs a registry look-up at the next reconcile, nothing else. An intent is numbered in
its process (`"n"`) and its done line names it (`D KEY N .`): one message may have several
intents, one per transaction when an MTA splits its recipients (the same sender and bytes,
the same key), and the open ones of a key are reconciled together.

Reconcile, at start before the listeners open and then every `interval` seconds: every
journal whose process is gone (its flock is free; a live process holds its own) is read;
each intent without a done line whose copies the registry does not list as delivered has
the copies that exist (new/NAME or cur/NAME:2,*, one folder each, never a whole store)
recorded: the message as `unanswered` (stored, no answer given), each copy found as
`delivered`. Then the journal is removed. A pass that met a registry outage (a journal
kept) is run again every `RETRY_OWN` seconds until one gets through, not `interval`
seconds later: a worker killed while the registry was locked had its copies recorded up
to 30 s after the lock went. A later retry of the message finds those copies
(dedupe), answers 250 and records the message as delivered.

A message of a process still running whose record failed (the registry locked or down:
its sender got 451) leaves copies too, and its sender may never come back (it gives up,
or its queue bounces the message days later): the process keeps such intents and records
them the same way, `unanswered`, from its own reconcile task, every `RETRY_OWN` seconds
while it has any (never while a transaction of the same message is in flight here), then
writes their done line. Before, they waited for the process to exit: a worker running for
weeks kept copies users saw and the registry did not know.

Refused: a journal line that does not parse is skipped and logged (a torn last line after a
crash); an intent that cannot be written (disk full) refuses each of its Maildir copies
with 4xx before any is made (a downstream copy of the same message may still go: those are
at-least-once, see below), and the part of its line a short write left is cut off again;
an intent starts a line of its own after a line cut short (a done line's short write on a
full disk): appended to that part, it could not be read.
A journal is kept when the registry is unavailable, and tried again.
Known limit: copies to LMTP/SMTP downstreams are not listed (nothing of theirs can be
looked at); they are at-least-once as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import itertools
import json
import logging
import operator
import os
import re
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from .delivery.maildir import Place, Prior, PriorError
from .errors import RegistryError
from .registry import DeliveryRecord, MessageRecord, Registry

__all__ = ["Intent", "Intents", "Place", "UNANSWERED"]

log = logging.getLogger(__name__)
UNANSWERED = "unanswered"          # messages.status: copies stored, the sender got no answer
ROTATE_AT = 1 << 20                # bytes: past this a new journal is started
RETRY_OWN = 2.0                    # seconds between passes over this process's failed records
OWN_MISSES = 3                     # passes finding no copy before one is let go (a restart's
                                   # reconcile still reads its journal line)
_run = itertools.count()
_serials = itertools.count(1)      # an intent's number in this process (its done line names it)


Stored = Callable[[Place], bool]      # does the copy exist (new/ or cur/)?
# dataclasses.astuple(place) without its deep copy (the values are strings)
_place_values = operator.attrgetter(*(f.name for f in dataclasses.fields(Place)))


class _File:
    def __init__(self, directory: Path) -> None:
        # Made under a name a reconcile does not read, locked, then named: a journal a
        # reconcile can see is locked by its live process from the start. Made as NAME.jrn
        # and locked after, another worker's reconcile could take the lock in between: our
        # flock failed (EAGAIN: 451 to the message) and it removed our new journal.
        self.path = directory / f"{os.getpid()}.{next(_run)}.{os.urandom(3).hex()}.jrn"
        making = self.path.with_name(self.path.name + ".new")
        self.fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)     # ours while we live
            os.rename(making, self.path)
        except OSError:
            os.close(self.fd)
            making.unlink(missing_ok=True)
            raise
        self.size, self.open_intents = 0, 0
        self.closed = False           # retired: its descriptor number may be another file's


_WRITING = threading.Lock()      # writer threads write intents one group at a time


class Intent:
    """One message's intent (delivery.maildir.Prior): its journal line, written and
    fdatasync'd by the Maildir writer thread before any of the message's copies, together
    with the other intents of the copies in the same batch (one write and one fdatasync per
    journal). A message's copies may be in two batches: whichever comes first writes it."""

    __slots__ = ("file", "key", "serial", "line", "written", "error", "record", "places")

    def __init__(self, f: _File, key: str, serial: int, line: bytes, record: MessageRecord,
                 places: Sequence[Place]) -> None:
        self.file, self.key, self.serial, self.line = f, key, serial, line
        self.record, self.places = record, list(places)
        self.written = False
        self.error: OSError | None = None

    def write_group(self, group: Sequence[Prior]) -> None:
        with _WRITING:
            todo = [i for i in group if isinstance(i, Intent) and not i.written and i.error is None]
            by_file: dict[_File, list[bytes]] = {}
            for i in todo:
                by_file.setdefault(i.file, []).append(i.line)
            try:
                _append_synced(by_file)
            except OSError as exc:   # no copy without its intent: each copy gets a 4xx
                journal = str(exc.filename)
                log.error("event=intent_failed journal=%s keys=%s error=%r: no Maildir copy is "
                          "made without its intent, so messages get 4xx until it can be "
                          "written; free space in delivery.intents_dir or give it another "
                          "disk", journal, ",".join(i.key[:12] for i in todo), exc.strerror)
                error = PriorError(exc.errno, exc.strerror, journal)
                for i in todo:
                    i.error = error
                return
            for i in todo:
                i.written = True

    def check(self) -> None:
        if self.error is not None:
            raise self.error
        if not self.written:         # not in a group yet (cannot happen: written first)
            raise OSError(errno.EIO, "intent not written")


class Intents:
    """This process's journal, and the reconcile of the journals of processes gone."""

    def __init__(self, directory: Path, stored: Stored, interval: float = 30.0) -> None:
        self.directory, self.stored, self.interval = directory, stored, interval
        self._file: _File | None = None
        self._task: asyncio.Task[None] | None = None
        self.passes = 0                # reconcile passes run (tests count them, not seconds)
        # this process's messages whose record failed after their intent was written:
        # key -> (its intents, passes that found none of their copies). One message may
        # have several: an MTA splits its recipients over transactions (same sender, same
        # bytes: same key), each with its own copies. Kept one per key, the last replaced
        # the others and their copies were never recorded.
        self._unrecorded: dict[str, tuple[list[Intent], int]] = {}
        self._busy: dict[str, int] = {}        # key -> transactions in flight here
        self._deferred = False         # a journal was kept for a registry outage: soon again

    # -- writing ---------------------------------------------------------------------------
    def _current(self) -> _File:
        f = self._file
        if f is None or f.size > ROTATE_AT or os.fstat(f.fd).st_nlink == 0:
            # A new journal also when this one has no name left (var/intents removed under
            # us): no reconcile would find its intents, and a crash would leave their copies
            # unrecorded.
            # The new journal first, the old one retired only once it exists: when the new
            # one cannot be made (var/ read-only, disk full) the old one stays current and
            # open. Retired first, its descriptor was closed again at every later try, which
            # closed whatever file had been given that number since (and failed with EBADF
            # for good once none had): intents refused long after var/ was writable again.
            self.directory.mkdir(parents=True, exist_ok=True)
            new = _File(self.directory)
            try:
                dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)      # the journal's name is durable before anything in it
                finally:
                    os.close(dfd)
            except OSError:
                os.close(new.fd)       # left empty and unlocked: a reconcile removes it
                raise
            if f is not None and f.open_intents == 0:
                self._retire(f)
            f = self._file = new
        return f

    def _retire(self, f: _File) -> None:
        """A full journal with nothing in flight: unlocked, so a reconcile settles it."""
        f.closed = True
        os.close(f.fd)

    def prepare(self, key: str, record: MessageRecord, places: Sequence[Place]) -> Intent:
        """The intent of a message's Maildir copies, to be written by the Maildir writer thread
        before the first of them (delivery.maildir.PRIOR); settle it once the message is
        answered. OSError when its journal cannot be opened."""
        serial = next(_serials)
        line = _ENCODE({"key": key, "n": serial, "record": _record_json(record),
                        "copies": [_place_values(p) for p in places]}).encode("utf-8", "surrogateescape")
        f = self._current()
        f.open_intents += 1
        f.size += len(line) + 3
        self._busy[key] = self._busy.get(key, 0) + 1
        return Intent(f, key, serial, b"I " + line + b"\n", record, places)

    def settle(self, token: object, key: str | None) -> None:
        """The message is answered: recorded (`key` given: a done line) or not (None: the
        intent stays open for a reconcile). Lets a rotated journal go when its last settles."""
        assert isinstance(token, Intent)
        f = token.file
        busy = self._busy.get(token.key, 1) - 1
        if busy:
            self._busy[token.key] = busy
        else:
            self._busy.pop(token.key, None)
        if key is not None and token.written:
            self._done(token)
        elif key is None and token.written:   # copies may exist: recorded by _record_own
            earlier = self._unrecorded.get(token.key, ([], 0))[0]
            self._unrecorded[token.key] = ([i for i in earlier if i is not token] + [token], 0)
        f.open_intents -= 1
        if f is not self._file and f.open_intents == 0:
            self._retire(f)

    @staticmethod
    def _done(intent: Intent) -> None:
        """Its done line, `D KEY SERIAL`: this intent only, not the others of its key."""
        f = intent.file
        if f.closed:                 # retired: a reconcile of its journal looks it up
            return
        try:                         # O_APPEND: one whole line
            os.write(f.fd, b"D %s %d .\n" % (intent.key.encode(), intent.serial))
        except OSError as exc:   # a reconcile will look the message up instead
            log.warning("event=intent_done_unwritten key=%s error=%r", intent.key, str(exc))

    # -- reconcile ---------------------------------------------------------------------------
    def start(self, registry: Registry) -> None:
        """Reconcile every `interval` seconds from now on (after the first pass at start)."""
        self._task = asyncio.get_running_loop().create_task(self._every(registry),
                                                            name="intents-reconcile")

    async def _every(self, registry: Registry) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.interval
        while True:
            await asyncio.sleep(min(RETRY_OWN, max(0.0, due - loop.time())))
            try:
                if loop.time() >= due or self._deferred:
                    due = loop.time() + self.interval
                    await self.reconcile(registry)
                elif self._unrecorded:
                    await self._record_own(registry)
            except Exception:  # noqa: BLE001 (logged; the next pass tries again)
                log.exception("event=reconcile_crashed")

    async def _record_own(self, registry: Registry) -> int:
        """Record the copies of this process's messages whose record failed (see the module
        docstring) as `unanswered`; returns the messages recorded. A registry still down
        leaves them for the next pass."""
        recorded = 0
        for key, entry in list(self._unrecorded.items()):
            intents, misses = entry
            if key in self._busy:
                continue                  # its retry is in flight here: that one records it
            record, places = _merged([(i.record, i.places) for i in intents])
            try:
                todo, found = await self._copies(registry, key, places)
                if key in self._busy or self._unrecorded.get(key) is not entry:
                    continue              # a retry started meanwhile
                if found:
                    await _record_unanswered(registry, record, found,
                                             f"{intents[-1].file.path.name} (own)")
                    recorded += 1
            except RegistryError as exc:
                log.error("event=reconcile_deferred key=%s error=%r", key[:12], str(exc))
                self._deferred = True
                return recorded
            if self._unrecorded.get(key) is not entry:
                continue
            if len(found) == len(todo):          # every copy they listed is recorded
                del self._unrecorded[key]
                for intent in intents:
                    self._done(intent)
            elif misses + 1 >= OWN_MISSES:       # never made; their journal lines stay open
                del self._unrecorded[key]
            else:
                self._unrecorded[key] = (intents, misses + 1)
        return recorded

    async def reconcile(self, registry: Registry) -> int:
        """One pass over the journals of processes gone, and over this process's messages
        whose record failed; returns the messages recorded."""
        self._deferred = False
        recorded = await self._record_own(registry)
        try:
            paths = sorted(self.directory.glob("*.jrn"))
        except OSError:
            paths = []
        for path in paths:
            if self._file is not None and path == self._file.path:
                continue
            recorded += await self._reconcile_file(path, registry)
        self.passes += 1
        return recorded

    async def _reconcile_file(self, path: Path, registry: Registry) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0                                 # another process settled it
        recorded = 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0                             # its process lives, or another reconciles
            intents = _read(path)
            for key, (record, places) in intents.items():
                _, found = await self._copies(registry, key, places)
                if not found:
                    continue          # nothing was stored: the sender's retry brings it
                await _record_unanswered(registry, record, found, path.name)
                recorded += 1
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except RegistryError as exc:     # tried again every RETRY_OWN s, not in `interval`
            log.error("event=reconcile_deferred journal=%s error=%r", path.name, str(exc))
            self._deferred = True
        finally:
            os.close(fd)
        return recorded

    async def _copies(self, registry: Registry, key: str,
                      places: Sequence[Place]) -> tuple[list[Place], list[Place]]:
        """The places of `key` the registry does not list as delivered, and those of them
        that hold a copy."""
        have = await registry.delivered_targets(key)
        todo = [p for p in places if p.target not in have]
        return todo, [p for p in todo if await asyncio.to_thread(self.stored, p)]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        f, self._file = self._file, None
        if f is not None:
            os.close(f.fd)
            # Its directory removed and a file made in its place (NotADirectoryError), or
            # unreadable: nothing to tidy. Raised, it ended the shutdown with a traceback
            # before the outbox and the registry were closed (exit 1).
            with contextlib.suppress(OSError):
                if f.open_intents == 0 and _read(f.path) == {}:
                    f.path.unlink(missing_ok=True)      # everything in it was recorded


def _append_synced(by_file: dict[_File, list[bytes]]) -> None:
    for f, lines in by_file.items():
        # A full disk takes part of a line (a short write: an intent's, then ENOSPC, or a
        # done line's, silently). The next intent appended to that part was on the same
        # line, and no reconcile could read it: a copy of that message made before a crash
        # was never recorded. So an intent starts a line of its own, and what a failed
        # write of intents left is cut off again.
        start = os.fstat(f.fd).st_size
        lead = [b"\n"] if start and os.pread(f.fd, 1, start - 1) != b"\n" else []
        view = memoryview(b"".join(lead + lines))
        try:
            while view:
                view = view[os.write(f.fd, view):]
            os.fdatasync(f.fd)
        except OSError as exc:
            with contextlib.suppress(OSError):      # else the next write's lead ends it
                os.ftruncate(f.fd, start)
            raise OSError(exc.errno, exc.strerror, str(f.path)) from exc


# json.dumps with these options builds a JSONEncoder per call; the same text from one
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


async def _record_unanswered(registry: Registry, record: MessageRecord, found: Sequence[Place],
                             journal: str) -> None:
    """The message stored at `found` with no answer given: recorded as `unanswered`."""
    await registry.record(
        dataclasses.replace(record, status=UNANSWERED), [],
        [DeliveryRecord(p.target, "delivered", "stored; the sender got no answer") for p in found],
        None, [])
    log.warning("event=copy_reconciled key=%s copies=%d journal=%s", record.key, len(found),
                journal)


def _record_json(record: MessageRecord) -> dict[str, object]:
    out = {name: getattr(record, name) for name in record.__dataclass_fields__}
    out["received_at"] = record.received_at.isoformat()
    return out


def _record_of(data: dict[str, object]) -> MessageRecord:
    values = {k: _text(v) for k, v in data.items()}
    values["received_at"] = datetime.fromisoformat(str(values["received_at"]))
    values["rcpts"] = tuple(map(_text, values["rcpts"]))      # type: ignore[call-overload]
    values["defects"] = tuple(map(_text, values["defects"]))  # type: ignore[call-overload]
    return MessageRecord(**values)  # type: ignore[arg-type]


_ESCAPED = re.compile("[\udc80-\udcff]")


def _text(value: object) -> object:
    """A string with the bytes that were not UTF-8 (kept as surrogateescape's U+DC80..U+DCFF
    when the intent was written) read as U+FFFD: the registry stores UTF-8 only, and a
    journal of an earlier version holding such a sender failed every reconcile pass."""
    if isinstance(value, str) and _ESCAPED.search(value):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def _merged(intents: Sequence[tuple[MessageRecord, Sequence[Place]]],
            ) -> tuple[MessageRecord, list[Place]]:
    """One message's open intents as one: the last record, with every transaction's
    recipients, and every copy any of them listed (once)."""
    record = intents[-1][0]
    if len(intents) > 1:
        rcpts = tuple(dict.fromkeys(r for rec, _ in intents for r in rec.rcpts))
        record = dataclasses.replace(record, rcpts=rcpts)
    return record, list(dict.fromkeys(p for _, places in intents for p in places))


def _read(path: Path) -> dict[str, tuple[MessageRecord, list[Place]]]:
    """The open intents of a journal: key -> (record, places), done ones left out; the open
    intents of one key (its transactions) merged. A done line `D KEY N .` closes intent N of
    the key; `D KEY` (an earlier version's, which wrote one intent per key) the intent
    without a number, that version's. A done line a full disk cut short (_append_synced)
    closes nothing: cut after the key ("D KEY ") it closed every intent of the key, and cut
    inside its number ("D KEY 1" of "D KEY 12 .") intent 1, another transaction's whose
    copies were never recorded; the final " ." tells a whole line from a cut one."""
    by_key: dict[str, dict[int | None, tuple[MessageRecord, list[Place]]]] = {}
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return {}
    for n, line in enumerate(lines, 1):
        if not line:
            # An empty line carries nothing. The writer thread may leave one: it starts an
            # intent with a newline when the journal's last byte is not one, and a done line
            # the event loop is appending at that moment can be seen half written (st_size
            # grows page by page); it was logged as an unreadable intent, which looked like
            # a copy that would never be recorded.
            continue
        try:
            if line.startswith(b"D "):
                key, *rest = line[2:].decode().split(" ")
                if not rest:        # an earlier version's: its unnumbered intent only
                    by_key.get(key, {}).pop(None, None)
                elif len(rest) == 2 and rest[1] == "." and key in by_key:
                    by_key[key].pop(int(rest[0]), None)
                # else cut short by a full disk: the intent stays open, looked up
            elif line.startswith(b"I "):
                item = json.loads(line[2:].decode("utf-8", "surrogateescape"))
                by_key.setdefault(item["key"], {})[item.get("n")] = (
                    _record_of(item["record"]), [Place(*c) for c in item["copies"]])
            else:
                raise ValueError("unknown line")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("event=intent_unreadable journal=%s line=%d error=%r", path.name, n,
                        str(exc))
    return {key: _merged(list(open_.values())) for key, open_ in by_key.items() if open_}

"""Maildir delivery: the embedded default mail store.

A copy is written to tmp/ with O_DSYNC (each write durable, data and size, like a
write followed by fdatasync), hard-linked into new/ (link(2), as qmail's own
Maildir protocol does), and the new/ directory is fsync'd, so that once `deliver`
returns the message survives a crash or power loss (the directory fsync is what
ext4/xfs need). A folder
removed while the daemon runs is created again on the next copy.
Folders are Maildir++ subdirectories `.Folder/`, nested with `.` (`Finance/2026`
becomes `.Finance.2026/`), their names in IMAP modified UTF-7 (RFC 3501 5.1.3)
as Dovecot and Courier expect, so «Финансы» shows as such in a mail client.

File names depend on the copy only (`mr<copy id>`, the id a hash of message key
and target), never on the instance: a retry - on this instance or on another one
sharing the mail store - finds the earlier copy in new/ or, once a reader such as
Dovecot moved it, in cur/ as `NAME:2,<flags>` (any flags), and is not written
twice. Two instances writing the same copy at the same moment each write their
own tmp/ file and hard-link it to new/NAME: link(2) fails with EEXIST for the
second (rename(2) would silently replace), so exactly one copy is stored; the
loser drops its tmp/ file and reports the copy as delivered. Copies written by
earlier versions (`mr<id>.<host>`) are recognised in cur/ and, for this
instance's own host name, in new/.
Cost: each new copy looks at its folder's cur/ in a worker thread: a listing (about 5 ms
per 10,000 files on ext4), or, for a big cur/ that has not changed since its last listing,
one stat(2) (`_CurNames`). Copies go to the writer threads in batches, as the registry's
commits do: the copies asked for while earlier batches are being written go together,
one thread hand-off and one fsync of each folder's new/ for the batch (bench/README.md).
Known limit: a reader that moves the other instance's copy from new/ to cur/
in the microseconds between our cur/ listing and our link lets a second copy in.

Refused: folder names that are empty, contain '..' segments or NUL/CR/LF.
Errors: ENOSPC/EDQUOT -> StorageFullError (452 4.3.1); any other OS error ->
TemporaryDeliveryError (451 4.3.0); a copy's intent not written (its `Prior`) ->
IntentsFullError / IntentError, the same codes with their own text. Blocking work runs
in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import errno
import functools
import itertools
import os
import time
from array import array
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import IntentError, IntentsFullError, StorageFullError, TemporaryDeliveryError
from ..values import folder_problem

__all__ = ["Maildir", "PRIOR", "Place", "Prior", "PriorError", "encode_mutf7", "folder_dirname", "stored"]

_FULL = {errno.ENOSPC, errno.EDQUOT}
# The writer threads: each takes a batch of copies (`_Batches`), at most IN_FLIGHT per loop.
_IO = ThreadPoolExecutor(8, "maildir")


class Prior(Protocol):
    """What must be on disk before a copy is made (intents.Intent: the copy's intent). The
    writer thread writes the priors of a batch's copies together, before any copy of it."""

    def write_group(self, group: Sequence["Prior"]) -> None:
        """Write `group` (self among them) durably, those not yet written; never raises."""

    def check(self) -> None:
        """Raise the OSError that kept this one from being written, if one did."""


class PriorError(OSError):
    """A copy's prior (its intent) could not be written, so the copy was not made: the
    fault is in the file named by `filename` (the intent journal), not in the Maildir."""


# Set by the pipeline around a message's delivery: every Maildir copy made in that context
# has this prior written first, in the same thread hop as the copy.
PRIOR: ContextVar[Prior | None] = ContextVar("maildir_prior", default=None)


def encode_mutf7(name: str) -> str:
    """IMAP modified UTF-7 (RFC 3501 section 5.1.3)."""
    out: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            raw = "".join(buf).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            buf.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def folder_dirname(folder: str) -> str:
    """'Finance/2026' -> '.Finance.2026' (Maildir++), each level in modified UTF-7.
    Made once per folder name (every copy and every intent asks)."""
    problem = folder_problem(folder)
    if problem is not None:
        raise ValueError(f"bad folder name {folder!r}: {problem}")
    return "." + ".".join(encode_mutf7(p) for p in folder.replace(".", "/").split("/"))


class Maildir:
    """One Maildir (a department mailbox), with its Maildir++ folders."""

    def __init__(self, root: Path, hostname: str, top: Path | None = None) -> None:
        self.root = root
        # the directory above which nothing is made for a copy (delivery.maildir_root, for
        # a mailbox under it, `team/sales` too): fsync'd up to it when a folder is first used
        self.top = top if top is not None else root.parent
        self.host = hostname.replace("/", "\\057").replace(":", "\\072")
        self._tmp_ids = itertools.count()     # tmp/ names unique per process and call
        self._made: dict[Path, int] = {}      # folder -> open descriptor of its new/
        self._boxes: dict[str | None, Path] = {}   # folder name -> its directory

    async def deliver(self, data: bytes | Sequence[bytes], copy_id: str,
                      folder: str | None = None) -> str:
        """Store one copy durably; return its path. Idempotent per copy_id. `data` may come
        in pieces (our headers, then the message as received): written with one writev,
        never joined into another copy of the message. Copies asked for together go to
        the writer thread together (`_Batches`)."""
        loop = asyncio.get_running_loop()
        try:
            return await _batches(loop).put(self, data, copy_id, folder, PRIOR.get())
        except OSError as exc:
            if isinstance(exc, PriorError):    # its own error: counted apart from the Maildir
                error = IntentsFullError if exc.errno in _FULL else IntentError
                raise error(f"intent journal {exc.filename} (delivery.intents_dir): "
                            f"{exc.strerror}") from exc
            where = f"maildir {self.root}"
            if exc.errno in _FULL:
                raise StorageFullError(f"{where}: {exc.strerror}") from exc
            raise TemporaryDeliveryError(f"{where}: {exc.strerror}") from exc

    def box(self, folder: str | None) -> Path:
        """The folder's directory (the root for None); ValueError for a bad folder name."""
        box = self._boxes.get(folder)
        if box is None:
            box = self._boxes[folder] = self.root / folder_dirname(folder) if folder else self.root
        return box

    def _dir(self, folder: str | None) -> tuple[Path, int]:
        """The folder's path and a descriptor of its new/ (kept open: fsync'd per copy)."""
        box = self.box(folder)
        dfd = self._made.get(box)
        if dfd is None:
            for sub in ("tmp", "new", "cur"):
                (box / sub).mkdir(parents=True, exist_ok=True)
            if folder:
                (box / "maildirfolder").touch(exist_ok=True)
            # the folder's directories durable before a copy in them counts as stored: a
            # copy's name fsync'd in new/ was lost with a new/ (or folder, or mailbox)
            # whose own name a power cut took (once per folder and process: nearly free)
            _sync_dirs(box, self.top)
            dfd = os.open(box / "new", os.O_RDONLY | os.O_DIRECTORY)
            if self._made.setdefault(box, dfd) != dfd:   # another thread was first
                os.close(dfd)
                dfd = self._made[box]
        return box, dfd

    def sync(self, folder: str | None, dfd: int) -> None:
        """fsync the folder's new/: the names of the copies just linked there durable.
        `dfd` is the descriptor kept since this process first used the folder, which may
        have been replaced since (an IMAP client deleted and re-created it through
        Dovecot, a restore moved a copy into place): the copies were linked by path into
        the new/ there now, and the old one's fsync left their names unsynced after a 250
        until a restart. Then the one there now is fsync'd, and kept. Gone (deleted after
        the link): FileNotFoundError, and the copies with it are refused."""
        os.fsync(dfd)
        box = self.box(folder)
        now, held = os.stat(os.path.join(box, "new")), os.fstat(dfd)
        if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return
        if self._made.get(box) == dfd:
            self._forget(folder)
        os.fsync(self._dir(folder)[1])

    def close(self) -> None:
        """Let go of the folders' descriptors (at shutdown, with no copy in flight)."""
        for dfd in self._made.values():
            os.close(dfd)
        self._made.clear()

    def _forget(self, folder: str | None) -> None:
        """The folder went away under us (removed or replaced): recreate it next time."""
        # Its old descriptor is left open, not closed: another thread may be fsyncing it
        # right now, and a closed number can be reused by an unrelated file.
        self._made.pop(self.box(folder), None)

    def _deliver(self, data: bytes | Sequence[bytes], copy_id: str,
                 folder: str | None) -> tuple[str, int]:
        try:
            return self._place(data, copy_id, folder)
        except FileNotFoundError:
            self._forget(folder)
            return self._place(data, copy_id, folder)

    def _place(self, data: bytes | Sequence[bytes], copy_id: str,
               folder: str | None) -> tuple[str, int]:
        """The copy written (O_DSYNC) and linked into new/; returns its path and the
        descriptor of the new/ to fsync before the copy counts as stored."""
        # Per copy, in the writer thread: stat, open, write, close, list cur/, link, unlink;
        # then fsync(new/), once per folder per batch. O_DSYNC makes each write durable
        # (data and size) without a separate fsync, and new/ stays open.
        # Paths as strings: the same names pathlib would make (box is one already made;
        # each part is one name), without building a Path object for each.
        path, dfd = self._dir(folder)
        box = os.fspath(path)
        name = f"mr{copy_id}"
        final = os.path.join(box, "new", name)
        for known in (final, os.path.join(box, "new", f"{name}.{self.host}")):
            if _exists(known):
                return known, dfd   # fsync'd: a crash may have come before the name was durable
        # tmp/ names are unique per writer: another instance (or thread) may write this copy now
        tmp = os.path.join(box, "tmp", f"{name}.{self.host}.{os.getpid()}.{next(self._tmp_ids)}")
        # 0640 under the unit's UMask=0027: the group (backups, docs/install.md) reads; never
        # more than that whatever the umask
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DSYNC, 0o640)
        try:
            try:
                _write_all(fd, [data] if isinstance(data, bytes) else data)
            finally:
                os.close(fd)
            # Listed after the slow write, right before the link: the narrowest window
            seen = _in_cur(os.path.join(box, "cur"), name)
            if seen is not None:
                return seen, dfd
            try:
                os.link(tmp, final)   # exclusive: EEXIST when another writer was first
            except FileExistsError:
                pass                  # its copy is the copy; ours is dropped below
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        return final, dfd


_Job = tuple[Maildir, "bytes | Sequence[bytes]", str, "str | None", "Prior | None"]


def _sync_dirs(box: Path, top: Path) -> None:
    """fsync `box` and each directory above it up to `top` (the Maildir root): their
    entries (a folder or mailbox just made) durable."""
    d = box
    while True:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if d == top or d.parent == d:
            return
        d = d.parent


def _write_batch(jobs: list[_Job]) -> list[str | BaseException]:
    """In the writer thread: the priors (intents) of the batch's copies written together,
    every copy of the batch written and linked, then each folder's new/ fsync'd once (the
    copies in it are stored when that returns). One outcome per job: its path, or the error
    that refused it (a prior not written refuses its copies, before they are made; an fsync
    error refuses every copy of its folder)."""
    out: list[str | BaseException] = []
    folders: dict[int, tuple[Maildir, str | None, list[int]]] = {}
    priors = list({id(j[4]): j[4] for j in jobs if j[4] is not None}.values())
    if priors:
        priors[0].write_group(priors)
    for md, data, copy_id, folder, prior in jobs:
        try:
            if prior is not None:
                prior.check()
            path, dfd = md._deliver(data, copy_id, folder)
        except Exception as exc:  # noqa: BLE001 - handed to the copy's awaiting task
            out.append(exc)
            continue
        folders.setdefault(dfd, (md, folder, []))[2].append(len(out))
        out.append(path)
    for dfd, (md, folder, which) in folders.items():
        try:
            md.sync(folder, dfd)      # concurrent fsyncs share the journal commit in the kernel
        except OSError as exc:
            for i in which:
                out[i] = exc
    return out


class _Batches:
    """The Maildir hand-off of one event loop, grouped as the registry's commits are: a copy
    asked for while `IN_FLIGHT` batches are in writer threads waits for the next batch, and
    goes with every other copy asked for meanwhile: one thread hop and one fsync per folder
    for the lot, instead of one of each per copy. Alone, a copy goes at once."""

    IN_FLIGHT = 2

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: list[tuple[_Job, asyncio.Future[str]]] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def put(self, md: Maildir, data: bytes | Sequence[bytes], copy_id: str,
            folder: str | None, prior: Prior | None = None) -> asyncio.Future[str]:
        fut: asyncio.Future[str] = self.loop.create_future()
        self._pending.append(((md, data, copy_id, folder, prior), fut))
        if self._running < self.IN_FLIGHT:
            self._running += 1
            task = self.loop.create_task(self._drain(), name="maildir-batch")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    got = await self.loop.run_in_executor(_IO, _write_batch, [j for j, _ in batch])
                except BaseException as exc:   # the loop is closing: nobody waits forever
                    batch, self._pending = batch + self._pending, []
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(OSError(errno.EIO, f"maildir writer: {exc!r}"))
                    raise
                for (_, fut), outcome in zip(batch, got):
                    if fut.done():             # its session went away: the copy is stored anyway
                        continue
                    if isinstance(outcome, BaseException):
                        fut.set_exception(outcome)
                    else:
                        fut.set_result(outcome)
        finally:
            self._running -= 1


_BY_LOOP: dict[asyncio.AbstractEventLoop, _Batches] = {}


def _batches(loop: asyncio.AbstractEventLoop) -> _Batches:
    found = _BY_LOOP.get(loop)
    if found is None:
        for old in [lp for lp in _BY_LOOP if lp.is_closed()]:
            del _BY_LOOP[old]
        found = _BY_LOOP[loop] = _Batches(loop)
    return found


@dataclass(frozen=True, slots=True)
class Place:
    """Where one copy goes: its target key, its folder (a Maildir) and its file name."""

    target: str
    box: str
    name: str


def stored(box: Path, name: str, host: str) -> bool:
    """The copy `name` is in this one folder: in new/ (or an earlier version's `NAME.HOST`),
    or in cur/ after a reader moved it. Lists cur/ of this folder only."""
    new = box / "new"
    if (new / name).exists() or (new / f"{name}.{host}").exists():
        return True
    try:
        return _in_cur(box / "cur", name) is not None
    except FileNotFoundError:
        return False


def _exists(path: str) -> bool:
    """Path(path).exists(): False for a name that is not there (ENOENT, ENOTDIR, EBADF,
    ELOOP, as pathlib ignores), any other error raised."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno not in _ABSENT:
            raise
        return False
    except ValueError:        # a name the OS cannot take (a NUL): pathlib says False too
        return False
    return True


_ABSENT = {errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP}


def _write_all(fd: int, pieces: Sequence[bytes]) -> None:
    """writev until every byte is written (a short write goes on where it stopped)."""
    views = [memoryview(p) for p in pieces if p]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if views:
            views[0] = views[0][n:]


def _in_cur(cur: str | Path, name: str) -> str | None:
    """The copy `name` after a reader moved it to cur/: `NAME:2,FLAGS` with any flags, or an
    earlier version's `NAME.HOST[:2,FLAGS]`.

    A big cur/ is not listed for every copy (`_CurNames`): listing 100,000 entries took
    ~50 ms of the writer thread and let go of the GIL once per entry, and a folder holding
    that much read mail took 31 messages a second instead of ~450 (bench/README.md)."""
    cur = os.fspath(cur)
    before = os.stat(cur)
    known = _CUR.get(cur)
    if known is not None and known.unchanged(before) and not known.may_hold(name):
        return None
    entries = os.listdir(cur)
    if len(entries) >= _CurNames.FROM:
        _CUR[cur] = _CurNames.of(cur, entries, before)
    else:
        _CUR.pop(cur, None)
    return _find(cur, entries, name)


def _find(cur: str, entries: list[str], name: str) -> str | None:
    # One C-level search over the joined listing: a Python loop per entry doubles the cost
    joined = "\0" + "\0".join(entries) + "\0"
    at = joined.find("\0" + name)
    while at >= 0:
        end = at + 1 + len(name)
        if joined[end] in "\0:.":
            return os.path.join(cur, joined[at + 1:joined.index("\0", end)])
        at = joined.find("\0" + name, end)
    return None


class _CurNames:
    """The names of our copies (`mr...`, up to the first '.' or ':') in one big cur/, as of the
    directory's modification time: while the directory has that same inode and mtime, no
    entry was added, removed or renamed in it, and a name not among them is not there. One
    stat(2) per copy instead of a listing, until a reader moves or deletes mail there.

    A listing made less than RACY_NS after the directory's mtime is not trusted: an entry
    moved in within the same timestamp tick leaves the mtime as it was (the racy-timestamp
    problem, as git's index has it). A tick is a few milliseconds on ext4 and xfs, a whole
    second or two on ext3 and FAT: an mtime of whole seconds takes RACY_COARSE_NS. Such a
    folder is listed again on the next copy, as every folder was before. Kept as a sorted
    array of the names' hashes (8 bytes each):
    a hash found is confirmed by a real listing, so a collision costs a listing, not a copy.
    Known limit: a Maildir on a network file system whose server's clock is behind ours
    by more than RACY_NS could have a move within one tick of our listing pass unseen
    (a second copy of a retried message at worst, never a lost one)."""

    FROM = 2000                 # entries: a smaller cur/ is listed each time (under 1 ms)
    RACY_NS = 100_000_000       # a listing this soon after the mtime is not kept (ten ticks)
    RACY_COARSE_NS = 2_000_000_000   # the same where mtimes are whole seconds (or FAT's two)

    __slots__ = ("ino", "mtime_ns", "hashes")

    def __init__(self, ino: int, mtime_ns: int, hashes: array[int]) -> None:
        self.ino, self.mtime_ns, self.hashes = ino, mtime_ns, hashes

    @classmethod
    def of(cls, cur: str, entries: list[str], before: os.stat_result) -> _CurNames | None:
        """The names of `entries`, a listing of `cur` made just now between `before` (its
        stat) and here; None when the listing may have missed a change: the directory
        changed while it was listed, or changed so recently that a change in the same
        timestamp tick would not show (racy)."""
        listed = time.time_ns()
        try:
            after = os.stat(cur)
        except OSError:
            return None
        coarse = after.st_mtime_ns % 1_000_000_000 == 0      # whole seconds: ext3, FAT, ...
        if ((after.st_ino, after.st_mtime_ns) != (before.st_ino, before.st_mtime_ns)
                or listed < after.st_mtime_ns + (cls.RACY_COARSE_NS if coarse else cls.RACY_NS)):
            return None
        ours = sorted({hash(_base(e)) for e in entries if e.startswith("mr")})
        return cls(after.st_ino, after.st_mtime_ns, array("q", ours))

    def unchanged(self, st: os.stat_result) -> bool:
        """The directory (`st`, its stat now) is the one listed, with nothing moved in or
        out since."""
        return (st.st_ino, st.st_mtime_ns) == (self.ino, self.mtime_ns)

    def may_hold(self, name: str) -> bool:
        """`name` was in the listing, or its hash collides with one that was."""
        h = hash(name)
        at = bisect.bisect_left(self.hashes, h)
        return at < len(self.hashes) and self.hashes[at] == h


def _base(entry: str) -> str:
    """`mrID` of `mrID:2,FLAGS`, `mrID.HOST` or `mrID.HOST:2,FLAGS`."""
    return entry.partition(":")[0].partition(".")[0]


# cur/ path -> its names, or None while a listing of it is racy. Per process; a cur/ whose
# listing falls under FROM entries is dropped. Written by the writer threads: one dict
# assignment each, and two threads listing one folder at once keep either listing.
_CUR: dict[str, _CurNames | None] = {}

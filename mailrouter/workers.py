"""Several worker processes on one set of listening sockets, to use every core.

One event loop is one core. With `workers: N` (or `auto`, one per core) the
parent process binds the listeners, migrates the registry schema once, forks N
workers that each run the whole daemon on the inherited sockets (the kernel
hands each new connection to one of them), and then only supervises:

- SIGTERM/SIGINT go to every worker; each drains as a single daemon would
  (421 4.3.2 to new work, transactions in flight finish) and the parent exits
  0 once all have exited 0;
- SIGHUP goes to worker 0, which reads the routing files once, loads them and
  has the others load those very bytes (`LastGood`): a reload is taken by every
  worker or by none. Worker 0 asks for the others' reload with SIGUSR1, which
  the supervisor passes to them as SIGHUP. A SIGHUP that finds worker 0 dead (a
  zombie not yet reaped, or not yet replaced) is sent to its replacement;
- a worker that dies unexpectedly is logged and replaced (at most once a
  second); a replacement that cannot start (the registry down) is tried
  again, a little later each time, where a first worker that cannot start
  stops them all; the parent's death kills the workers (PR_SET_PDEATHSIG), so a
  crashed supervisor never leaves orphans holding the ports; a replacement
  starts on the routing set its siblings run (`LastGood`), not on the files on
  the disk (changed or broken since the last reload).

Only worker 0 serves the admin endpoint; /metrics adds up every worker's
counters through prometheus_client's multiprocess mode.
Known limit: Linux only (fork, PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import pickle
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

from .config import Config
from .errors import ListenError
from .newprocess import die_with_parent
from .yamlsrc import FilesHash, files_hash

__all__ = ["bind", "supervise", "Child", "start_child", "in_child", "in_new_process",
           "PARENT_RELOAD_SIGNAL", "HANDLED", "STOPS", "Starting", "LastGood", "Staged",
           "private_dir"]

log = logging.getLogger("mailrouter.workers")
PARENT_RELOAD_SIGNAL = signal.SIGUSR1      # worker 0 -> parent: "reload the others"


def bind(host: str, port: int, what: str = "smtp") -> socket.socket:
    """A listening TCP socket, as asyncio would make it, to be shared by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError.of(what, host, port, exc) from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


T = TypeVar("T")


class Child(Generic[T]):
    """`work()` running in a forked child process (`start_child`); `result()` waits for it."""

    def __init__(self, pid: int, read: int) -> None:
        self.pid, self._read = pid, read
        self.taken = False                # result() or cancel() called
        self.reaped = False               # waited for: its pid may be another process's

    def result(self) -> T | None:
        """Its result; None when it raised, its result could not be pickled, or it died."""
        self.taken = True
        with os.fdopen(self._read, "rb") as got:
            data = got.read()
        _, status = os.waitpid(self.pid, 0)
        self.reaped = True
        if os.waitstatus_to_exitcode(status) != 0 or not data:
            return None
        try:
            result: T = pickle.loads(data)
        except Exception:  # noqa: BLE001 (as if the child had failed)
            return None
        return result

    def cancel(self) -> None:
        """Stop it and reap it (its result is not wanted)."""
        self.taken = True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(self._read)
        os.waitpid(self.pid, 0)
        self.reaped = True


def start_child(work: Callable[[], T]) -> Child[T] | None:
    """`work()` started in a forked child process, its result to be pickled back through a
    pipe (`Child.result`); None when it cannot fork. Fork only while no other thread runs
    (a lock another thread holds at the fork stays held forever in the child).

    For work that makes a few long-lived objects among very many short-lived ones: made
    here, they pinned one 1 MiB memory arena each once the others were freed; unpickled,
    they come packed together in fresh memory (run_workers: the address book). Started
    before the daemon's imports, the child builds while this process imports (cli.cmd_run)."""
    read, write = os.pipe()
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:
        os.close(read)
        code = 1
        try:
            die_with_parent(parent)
            for sig in HANDLED:      # not the parent's Starting: a SIGTERM to the group ends it
                signal.signal(sig, signal.SIG_DFL)
            data = pickle.dumps(work(), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write, "wb") as out:
                out.write(data)
            code = 0
        except BaseException:  # noqa: BLE001 (the parent does the work itself and says why)
            pass
        finally:
            os._exit(code)    # never back into the parent's code
    os.close(write)
    return Child(pid, read)


def in_child(work: Callable[[], T]) -> T | None:
    """`work()` run in a forked child process, its result pickled back through a pipe;
    None when it raised, its result could not be pickled, or the child died (start_child)."""
    child = start_child(work)
    return child.result() if child is not None else None


def in_new_process(work: Callable[..., T], *args: Any, timeout: float = 600.0) -> T | None:
    """`work(*args)` run in a new interpreter (`python -m mailrouter.newprocess`), its result
    pickled back; None when it raised, took longer than `timeout`, or could not start.

    in_child for a process that runs threads (a worker: its registry, Maildir and loop
    threads): a fork copies only the forking thread, and a lock another thread held at
    that moment stays held forever in the child. `work` must be a module-level function
    and its arguments picklable (they travel by name and by value)."""
    name = getattr(work, "__qualname__", repr(work))
    try:
        # The work is handed over in a file, not written into a pipe: the routing files'
        # bytes are megabytes, a write per 64 KiB the child read, each waiting for the GIL
        # while the caller's other thread compiles the rules (daemon._load): +0.3 s.
        with tempfile.TemporaryFile() as sent:
            pickle.dump((work, args), sent, protocol=pickle.HIGHEST_PROTOCOL)
            sent.seek(0)
            done = subprocess.run([sys.executable, "-m", "mailrouter.newprocess",
                                   str(os.getpid())], stdin=sent,
                                  capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError, pickle.PicklingError, AttributeError,
            TypeError) as exc:
        log.warning("event=new_process_failed work=%s error=%r", name, str(exc))
        return None
    if done.returncode != 0 or not done.stdout:
        log.warning("event=new_process_failed work=%s code=%d stderr=%r", name,
                    done.returncode, done.stderr[-2000:])
        return None
    try:
        result: T = pickle.loads(done.stdout)
    except Exception:  # noqa: BLE001 (as if the process had failed)
        return None
    return result


@dataclass(frozen=True)
class Staged:
    """The routing set every worker is to run (`LastGood.staged`): its number, hash and
    bytes by path in order (None: the set is named by its hash only, its bytes not kept)."""

    seq: int
    hash: str
    texts: dict[str, bytes] | None
    builder: int | None = None      # the PID of the worker that shares its book (share_book)


class LastGood:
    """The routing files every worker runs, kept (their bytes) in a directory private to
    this supervisor's run, with each worker's report of the set it runs.

    The workers run one set. Worker 0 alone reads the routing files (at a reload: SIGHUP,
    `mailrouter reload`, its watcher); it loads them, keeps their very bytes here (`put`,
    numbered one more than the set before) and has the others load exactly those bytes
    (daemon.App._agree): they read the files themselves, and a file saved between two
    workers' reads, or a load that failed in one of them, left the workers running different
    rules while `mailrouter reload` said "reloaded". Each of the others then writes the set
    it runs (`report`); worker 0 takes the new set only when every one runs it, and otherwise
    has them go back to the set kept before. A worker that starts (a replacement for one that
    died: a kill, OOM, a bug) runs the set kept here, not the files on the disk: those may
    have changed, or be broken, since the last reload.

    The supervisor keeps its own set at start (`save`: read again, kept only when they
    still hash as its load did). Format: one JSON line (seq, hash, paths, sizes), then the
    files' bytes in order; replaced whole (os.replace)."""

    NAME = "routing-last-good"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self.path = os.path.join(directory, self.NAME)

    def save(self, files: Sequence[str], digest: str) -> bool:
        """Keep `files` if they still hold what hashed as `digest` (a Snapshot's hash).
        Copied 64 KiB at a time: read whole, a 5 MB book file was 5 MB written to the heap
        a worker shares with the others (yamlsrc.FilesHash.add_file)."""
        tmp = f"{self.path}.{os.getpid()}"
        with contextlib.ExitStack() as stack:
            sources = [stack.enter_context(open(name, "rb")) for name in files]
            sizes = [os.fstat(src.fileno()).st_size for src in sources]
            hashed = FilesHash()
            with open(tmp, "wb") as out:
                out.write(self._head(digest, list(zip(files, sizes))))
                for name, src, size in zip(files, sources, sizes):
                    hashed.add_chunks(name, _copy(src, out, size))
            if hashed.hexdigest() != digest:     # changed since they loaded
                os.unlink(tmp)
                return False
            os.replace(tmp, self.path)
            return True

    def put(self, texts: Mapping[str, bytes] | None, digest: str, builder: int | None = None
            ) -> int:
        """Keep these bytes (they hash as `digest`) as the set every worker is to run; None:
        the set of that hash whose bytes are not at hand (the supervisor's snapshot, which
        every worker has). Its number, one more than the set kept before, which stays readable
        (`before`) until the next `put`. `builder`: the PID of the process that will share the
        address book it builds of them (`share_book`)."""
        tmp = f"{self.path}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path + ".before")
        with contextlib.suppress(FileNotFoundError):
            os.link(self.path, self.path + ".before")       # the same bytes: no copy
        with open(tmp, "wb") as out:
            out.write(self._head(digest, [(f, len(b)) for f, b in (texts or {}).items()],
                                 kept=texts is not None, builder=builder))
            for data in (texts or {}).values():
                out.write(data)
        os.replace(tmp, self.path)
        self._drop_books()
        return self._seq

    def _head(self, digest: str, files: list[tuple[str, int]], kept: bool = True,
              builder: int | None = None) -> bytes:
        before = self.head()
        self._seq = (before[0] if before is not None else 0) + 1
        return json.dumps({"seq": self._seq, "hash": digest, "kept": kept, "builder": builder,
                           "files": [list(p) for p in files]}).encode() + b"\n"

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the set every worker is to run, its bytes not read; None: none."""
        try:
            with open(self.path, "rb") as src:
                head = json.loads(src.readline())
            return int(head.get("seq", 0)), str(head["hash"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def before(self) -> Staged | None:
        """The set kept before the last `put` (a reload not every worker took goes back
        to it)."""
        return self.staged(self.path + ".before")

    def staged(self, path: str | None = None) -> Staged | None:
        """The set every worker is to run; None when none is kept, or it does not hash as
        it says."""
        try:
            with open(path or self.path, "rb") as src:
                head = json.loads(src.readline())
                texts = {str(f): src.read(int(size)) for f, size in head["files"]}
                seq, digest = int(head.get("seq", 0)), str(head["hash"])
                builder = int(head["builder"]) if head.get("builder") is not None else None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not head.get("kept", True):
            return Staged(seq, digest, None)
        return Staged(seq, digest, texts, builder) if files_hash(texts.items()) == digest else None

    def share_book(self, seq: int, built: Any) -> None:
        """The address book the builder of set `seq` built of its bytes (`load_book`'s
        result; None: it has none to give), for the other workers to take (`shared_book`)
        instead of each building its own: two builds of 100,000 aliases on two cores at a
        reload, beside the rules each compiles, took the reload from ~1.7 to 2.4 s."""
        path = os.path.join(self.directory, f"book-{seq}")
        with open(f"{path}.{os.getpid()}", "wb") as out:
            pickle.dump(built, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(f"{path}.{os.getpid()}", path)
        self._drop_books(but=path)

    def _drop_books(self, but: str = "") -> None:
        """The books shared for sets before (a torn one of a killed builder too)."""
        for old in glob.glob(os.path.join(glob.escape(self.directory), "book-*")):
            if old != but:
                with contextlib.suppress(OSError):
                    os.unlink(old)

    def shared_book(self, staged: Staged, wait: float) -> Any:
        """The book its builder shared for set `staged` (`share_book`), waited for up to `wait`
        seconds; None when it shared none, is gone, or a newer set was staged meanwhile (the
        caller then builds its own: any book is taken only when it hashes as the files do,
        load_snapshot's `built`)."""
        if staged.builder is None:
            return None
        path = os.path.join(self.directory, f"book-{staged.seq}")
        deadline = time.monotonic() + wait
        while True:
            try:
                with open(path, "rb") as src:
                    return pickle.load(src)
            except FileNotFoundError:
                pass
            except Exception:  # noqa: BLE001 (a torn or foreign file: built here instead)
                return None
            head = self.head()
            if head is None or head[0] != staged.seq or time.monotonic() > deadline \
                    or not _alive(staged.builder):
                return None
            time.sleep(0.01)


    def report(self, worker: int, seq: int, digest: str, error: str | None = None) -> None:
        """Worker `worker` runs the set `digest` since it took (or failed to take, `error`)
        the set numbered `seq`."""
        path = os.path.join(self.directory, f"worker-{worker}")
        with open(f"{path}.{os.getpid()}", "w", encoding="utf-8") as out:
            json.dump({"seq": seq, "hash": digest, "error": error}, out)
        os.replace(f"{path}.{os.getpid()}", path)

    def reported(self, worker: int) -> tuple[int, str, str | None] | None:
        """(seq, hash, error) of `worker`'s last report; None when it made none."""
        try:
            with open(os.path.join(self.directory, f"worker-{worker}"), encoding="utf-8") as f:
                got = json.load(f)
            return int(got["seq"]), str(got["hash"]), got.get("error")
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _copy(src: Any, out: Any, size: int) -> Iterator[bytes]:
    """Up to `size` bytes of `src` written to `out` 64 KiB at a time, each piece yielded."""
    while size and (chunk := src.read(min(size, 1 << 16))):
        out.write(chunk)
        size -= len(chunk)
        yield chunk


def private_dir(prefix: str) -> str:
    """A new directory of this process's own, PREFIX + PID.XXXX in the temp dir (mode 0700),
    for the workers: the metrics' (cli.metrics_dir), the last good routing files'
    (LastGood). Those of our earlier supervisors that died without removing theirs
    (SIGKILL, OOM) are removed first: their PID is gone."""
    tmp = tempfile.gettempdir()
    for old in glob.glob(os.path.join(glob.escape(tmp), glob.escape(prefix) + "*")):
        pid = os.path.basename(old)[len(prefix):].partition(".")[0]
        try:
            st = os.lstat(old)
            if not pid.isdigit() or st.st_uid != os.getuid() or not stat.S_ISDIR(st.st_mode):
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except OSError:         # gone meanwhile, or another user's process: alive
            continue
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.")


HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, PARENT_RELOAD_SIGNAL}
STOPS = (signal.SIGTERM, signal.SIGINT)


class Starting:
    """The signals that come while the daemon starts, before the handlers of its run
    (supervise's, or the event loop's) are in place: noted (`got`), never the default
    action. A SIGTERM then killed the supervisor outright (exit -15) in the middle of its
    migrations or of the address book's build, whose child was left to PR_SET_PDEATHSIG.
    A SIGTERM or SIGINT also kills `child` (the address book being built: no longer
    wanted), and the start stops at its next step (`stopping`; daemon.py logs
    event=stopped_during_start and exits 0). No mail is at stake: no listener is open
    before the last step, and from then on the signals are handed to the run's handlers.
    Install it first thing (`install`): a signal before that still has its default action."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self.child: Child[Any] | None = None
        self._before: dict[int, Any] = {}

    def install(self) -> Starting:
        self._before = {sig: signal.signal(sig, self._note) for sig in HANDLED}
        return self

    def restore(self) -> None:
        """The handlers there were before `install`."""
        for sig, handler in self._before.items():
            signal.signal(sig, handler)
        self._before = {}

    def _note(self, sig: int, _frame: object) -> None:
        self.got.append(sig)
        child = self.child
        if sig in STOPS and child is not None and not child.reaped:
            try:
                os.kill(child.pid, signal.SIGKILL)     # result() then sees it gone: None
            except ProcessLookupError:
                pass

    @property
    def stopping(self) -> bool:
        return any(sig in STOPS for sig in self.got)

    def signal_name(self) -> str:
        return next((signal.Signals(s).name for s in self.got if s in STOPS), "")


def _spawn(index: int, child: Callable[[int], int]) -> int:
    # A signal that reached the child before its event loop handles signals would run the
    # parent's inherited handler there (and be lost) or kill it half-started: keep them
    # blocked across the fork; the worker unblocks them once its loop handles them.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    parent = os.getpid()
    pid = os.fork()
    if pid != 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    if pid == 0:
        code = 1
        try:
            die_with_parent(parent)
            for sig in HANDLED:
                signal.signal(sig, signal.SIG_DFL)
            code = child(index)
        except BaseException:  # a worker must never fall back into the parent's code
            log.exception("event=worker_crashed worker=%d", index)
        finally:
            logging.shutdown()
            os._exit(code)
    log.info("event=worker_started worker=%d pid=%d", index, pid)
    return pid


def _alive(pid: int) -> bool:
    """Whether process `pid` runs: not exited (a zombie takes a signal and drops it).
    Without /proc it cannot be told: taken as running, as before."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return not os.path.isdir("/proc/self")


START_FAILED = 2    # a worker's exit code when it could not start: not worth a restart


def supervise(config: Config, child: Callable[[int], int],
              on_exit: Callable[[int], None] = lambda pid: None,
              early: list[int] | None = None) -> int:
    """Fork `config.workers` children running `child(index)`; return the exit code.
    `early`: signals that came before these handlers (run_workers notes them from the
    bind on), handled first."""
    workers: dict[int, int] = {}            # pid -> index
    stopping = False
    hup_owed = False     # a SIGHUP that found no live worker 0: sent to the next one
    hup_to = 0           # the worker 0 it was sent to (one that cannot start owes it on)

    def forward(sig: int, only_others: bool = False, only_first: bool = False) -> None:
        for pid, index in list(workers.items()):
            if not (only_others and index == 0) and not (only_first and index != 0):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def on_signal(sig: int, _frame: object) -> None:
        nonlocal stopping, hup_owed
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
            forward(signal.SIGTERM)
        elif sig == signal.SIGHUP:      # worker 0 reads the files; the others follow it
            # Worker 0 dead (a zombie not yet reaped, or reaped and not yet replaced: the
            # supervisor waits up to 5 s between restarts) took the signal with it: the
            # reload asked for never ran. Owed to its replacement instead.
            if not any(index == 0 and _alive(pid) for pid, index in workers.items()):
                hup_owed = True
            else:
                forward(signal.SIGHUP, only_first=True)
        elif sig == PARENT_RELOAD_SIGNAL:
            forward(signal.SIGHUP, only_others=True)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, PARENT_RELOAD_SIGNAL):
        signal.signal(sig, on_signal)
    for got in early or ():          # its handler is gone: the list no longer grows
        on_signal(got, None)
    def start(index: int) -> None:
        nonlocal hup_owed, hup_to
        pid = _spawn(index, child)
        workers[pid] = index
        if stopping:   # the stop arrived while forking, before this pid was in the table
            os.kill(pid, signal.SIGTERM)
        elif index == 0 and hup_owed:   # blocked in the child until its loop handles it
            hup_owed, hup_to = False, pid
            os.kill(pid, signal.SIGHUP)

    for index in range(config.workers):
        if not stopping:
            start(index)
    code, last_restart = 0, 0.0
    replaced: dict[int, int] = {}     # index -> replacements that could not start, in a row
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in workers:
            continue
        index = workers.pop(pid)
        on_exit(pid)
        exit_code = os.waitstatus_to_exitcode(status)
        if pid == hup_to and exit_code == START_FAILED:
            hup_owed = True           # it never ran its loop: the next worker 0 reloads
        if stopping:
            code = max(code, abs(exit_code))
            continue
        if exit_code == START_FAILED and index not in replaced:
            # A first worker could not start (a port taken, a broken file): its siblings
            # would fail the same way, forever. Stop everything, say so.
            log.error("event=worker_start_failed worker=%d pid=%d; stopping", index, pid)
            stopping, code = True, START_FAILED
            forward(signal.SIGTERM)
            continue
        # A replacement that cannot start met what the first workers did not (the registry
        # went down after they started, and one died meanwhile): the outage passes. Stopping
        # took every listener down with it, until an operator came; tried again instead,
        # waiting up to 5 s more each time, while its siblings answer 451.
        failed = replaced.get(index, -1) + 1 if exit_code == START_FAILED else 0
        replaced[index] = failed
        log.error("event=%s worker=%d pid=%d code=%d, restarting",
                  "worker_start_failed" if failed else "worker_died", index, pid, exit_code)
        time.sleep(max(0.0, last_restart + min(1.0 + failed, 5.0) - time.monotonic()))
        last_restart = time.monotonic()
        if not stopping:
            start(index)
    return code

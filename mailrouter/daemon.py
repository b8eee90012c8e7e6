"""The daemon: listeners, the current routing snapshot, reloads, shutdown.

`App` owns one event loop's worth of state: the config, the snapshot reference
(swapped atomically on reload; a transaction keeps the snapshot it started
with), the registry, the deliverer and the SMTP/LMTP/admin servers.

Reload (SIGHUP, a change of a routing file, POST /-/reload) loads, validates and
compiles the whole rule set in a worker thread, then swaps one reference (with
workers, once every worker has loaded the same bytes: App._agree); a bad
file keeps the old snapshot running, is logged with every error, sets
mailrouter_config_last_reload_successful to 0 and is recorded in the registry.
Reloads are coalesced: a request while one runs marks "reload again once", so a
burst of N requests costs at most two reloads, and every requester gets the
result of a reload that read the files after it asked. The admin reply names each
error with its file:line relative to the routing directory, and nothing else of
the machine (no config or Python paths: the full text goes to the log).

SIGTERM/SIGINT: stop taking new work (421 4.3.2 to new connections and to idle
sessions), let transactions in flight finish (up to `shutdown_grace` seconds; a session
still open then is told 421 4.3.2 before the close), flush the registry, close, exit 0.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from . import logs, metrics, postfixmaps, yamlsrc
from .addressbook import AddressBook
from .admin import serve_admin
from .config import Config, Limits, Listener, changed_keys, load_config, owned_errors
from .delivery.deliverer import Deliverer
from .dnscheck import DomainCheck
from .errors import ConfigError, ConfigErrors, ListenError, RegistryError
from .health import Readiness, unwritable
from .intake.handler import Handler, RcptChecker
from .intake.data import DataBudget
from .intake.protocol import COMMAND_LIMITS, LMTPProtocol, Protocol
from .autoreply import DEFAULT_ROBOT_SENDERS, Policy
from .outbox import OutboxWorker, Outgoing
from .control.checks import config_against_book
from .intents import Intents
from .pipeline import Pipeline
from .registry import Registry, upgrade
from .registry.store import registry_advice, registry_location
from .routing.files import _files, book_kept, load_book, read_files, routing_files
from .routing.snapshot import Snapshot, load_snapshot, prepare
from .values import Downstream, Reply, Transaction
from .web import start_web
from .workers import (HANDLED, PARENT_RELOAD_SIGNAL, START_FAILED, Child, LastGood, Staged,
                      Starting, bind, start_child, in_new_process, private_dir, supervise)

__all__ = ["App", "run", "loop_factory", "run_loop"]

log = logging.getLogger("mailrouter")
T = TypeVar("T")
# A reload's result: ok, the new hash or the errors (admin reply), why Postfix's tables
# (postfix_maps.on_reload) were not rebuilt after it, or None, and what of config.yaml
# changed since the start without being applied (a reload reads only the routing files), or None
Reloaded = tuple[bool, str, str | None, str | None]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (the `fast` extra), else asyncio's own (None).
    MAILROUTER_LOOP=asyncio keeps asyncio's loop with uvloop installed. Measured in
    bench/bench_smtp.py --asyncio-too: same work, less CPU per message (bench/README.md)."""
    if os.environ.get("MAILROUTER_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def loop_name() -> str:
    """'uvloop' or 'asyncio': the loop running now, for the started log line."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


class App:
    """The running daemon; the intake sees it as an `intake.handler.Host`."""

    def __init__(self, config: Config, snapshot: Snapshot,
                 sockets: dict[str, socket.socket] | None = None, worker: int | None = None,
                 kept: LastGood | None = None) -> None:
        self.config = config
        self.kept = kept                  # the last routing files that loaded (workers)
        self.sockets = sockets or {}      # pre-bound listeners shared by worker processes
        self.worker = worker              # None: the only process
        self._snapshot = snapshot
        # the supervisor's snapshot (workers): shared copy-on-write, kept to go back to
        self.inherited: Snapshot | None = None
        # (seq, hash) of a set worker 0 staged before its own load of it (App._stage)
        self._staged_early: tuple[int, str] | None = None
        self.draining = False
        self.sessions: set[Protocol] = set()
        self.in_flight = 0
        self.data_budget = DataBudget(config.limits.max_data_in_flight)   # shared by all sessions
        self.servers: list[asyncio.Server] = []
        self.web_runner: Any = None       # aiohttp's AppRunner of the web view, when it runs
        self.registry: Registry | None = None
        self.deliverer = Deliverer(config.delivery, config.hostname)
        self.pipeline: Pipeline | None = None
        self._next_reload: asyncio.Future[Reloaded] | None = None  # the one to run next
        self._reloader: asyncio.Task[None] | None = None     # runs reloads while any is asked
        self.sla_task: asyncio.Task[None] | None = None
        self.intents: Intents | None = None
        self.outbox: OutboxWorker | None = None
        self._stop = asyncio.Event()
        self._unlisted = ""    # why the routing files' folder could not be listed, logged
        self._mtimes = self._routing_mtimes()
        self._settling: dict[str, tuple[int, int]] | None = None   # changed, not yet loaded
        self.bound: dict[str, tuple[str, int]] = {}
        self.listeners: dict[str, asyncio.Server] = {}    # smtp, lmtp: for /readyz
        self.readiness = Readiness(self)
        self.state = metrics.State(snapshot.hash)          # scrape-time families (admin worker)
        self._zeros: asyncio.Future[None] | None = None      # _known_decisions at the start
        self._lint: asyncio.TimerHandle | None = None       # _log_warnings to come (_lint_later)

    def _lint_later(self, snap: Snapshot) -> None:
        """The warnings of `snap` logged (_log_warnings) in a thread LINT_AFTER seconds from
        now, by one process (worker 0), unless a newer set goes live meanwhile. The lint is
        0.5 s of CPU at 10,000 rules: run at once, it took the GIL from worker 0's own
        start, the reload just after it and every reload that followed within a second
        (bench_start.py: a reload 1.18 s against 0.78, one of the book 2.39 against 1.88)."""
        if self.worker not in (None, 0):
            return
        if self._lint is not None:
            self._lint.cancel()
        loop = asyncio.get_running_loop()
        self._lint = loop.call_later(LINT_AFTER, lambda: loop.run_in_executor(
            None, _log_warnings, snap, self.config))

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- what /readyz reads (health.ReadyHost) -------------------------------------------
    @property
    def expected_listeners(self) -> tuple[str, ...]:
        return tuple(n for n, lst in (("smtp", self.config.smtp), ("lmtp", self.config.lmtp))
                     if lst is not None)

    @property
    def downstreams(self) -> dict[str, Downstream]:
        d = self.config.delivery
        return {k: v for k, v in (("lmtp", d.lmtp), ("smtp", d.smtp)) if v is not None}

    @property
    def stores(self) -> dict[str, Path]:
        """Directories every Maildir copy writes to: the root, and the intents' journals."""
        if self.intents is None:
            return {}
        return {"maildir_root": Path(self.config.delivery.maildir_root),
                "intents": self.intents.directory}

    def ruleset_hash(self) -> str | None:
        return self._snapshot.hash if self._snapshot is not None else None

    @property
    def limits(self) -> Limits:
        return self.config.limits

    async def process(self, txn: Transaction, routing: RcptChecker | None = None
                      ) -> list[Reply]:
        """The transaction's replies; `routing`: the snapshot its RCPTs were answered by
        (intake.handler), which decides it, else the current one."""
        assert self.pipeline is not None
        self.in_flight += 1
        try:
            return await self.pipeline.process(
                txn, routing if isinstance(routing, Snapshot) else None)
        finally:
            self.in_flight -= 1

    # -- start and stop ----------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        self.registry = await Registry.open(cfg.registry.url, batch_max=cfg.registry.batch_max,
                                            timeout=cfg.registry.timeout,
                                            synchronous=cfg.registry.sync.upper(),
                                            create=self.worker is None,  # else: migrated by parent
                                            follow=True)
        control = None
        if cfg.control is not None:
            from .control.service import Control
            # the robots config.yaml names, as the autoresponder's (_outgoing): their mail
            # opens no request
            control = Control(cfg.control, self.registry,
                              cfg.autoreply.robot_senders or DEFAULT_ROBOT_SENDERS)
            if self.worker in (None, 0):       # one SLA scheduler per instance (stages are unique)
                from .control.sla import Scheduler
                self.sla_task = asyncio.get_running_loop().create_task(
                    Scheduler(self.registry, cfg.control, self.snapshot, hostname=cfg.hostname,
                              wake=self._wake_outbox, web_url=cfg.webui.url).run(self._stop),
                    name="sla-scheduler")
        # copies a crash left unrecorded are recorded before any new mail is taken (intents.py)
        self.intents = Intents(cfg.intents_dir, self.deliverer.stored)
        await self.intents.reconcile(self.registry)
        self.intents.start(self.registry)
        self.pipeline = Pipeline(self.snapshot, self.registry, self.deliverer, control,
                                 outgoing=self._outgoing(), wake_outbox=self._start_outbox(),
                                 intents=self.intents)
        for name, listener, cls in (("smtp", cfg.smtp, Protocol), ("lmtp", cfg.lmtp, LMTPProtocol)):
            if listener is not None:
                await self._listen(name, listener, cls)
        if cfg.admin is not None and self.worker in (None, 0):
            try:
                srv = await serve_admin(cfg.admin.host, cfg.admin.port, self.admin_reload,
                                        lambda: not self.draining, cfg.admin_token,
                                        ready=self.readiness.checks,
                                        refresh=self.refresh_metrics, state=self.state)
            except OSError as exc:
                raise ListenError.of("admin", cfg.admin.host, cfg.admin.port, exc) from None
            self.servers.append(srv)
            self.bound["admin"] = srv.sockets[0].getsockname()[:2]
        if cfg.web is not None and self.worker in (None, 0):     # one web view, as one admin
            from .control.notice import Notices
            notices = Notices.of(cfg.control, cfg.hostname, cfg.webui.url) if cfg.control else None
            try:
                self.web_runner, self.bound["web"] = await start_web(
                    cfg.web.host, cfg.web.port, self.registry, self.snapshot, cfg.webui,
                    notices)
            except OSError as exc:
                raise ListenError.of("web", cfg.web.host, cfg.web.port, exc) from None
        metrics.RELOAD_OK.set(1)   # per process: a forked worker starts with its own series
        metrics.RELOAD_TIME.set(time.time())
        await self.write_postfix_maps()
        if self.worker in (None, 0):   # one process's zeros show in the workers' sum
            # off the start, which it held 0.57 s at 10,000 rules and mailboxes (a scrape
            # waits for it, refresh_metrics); a count made meanwhile is kept, not zeroed
            self._zeros = asyncio.get_running_loop().run_in_executor(
                None, _known_decisions, self._snapshot)
        self._lint_later(self._snapshot)
        # which config and where the mail goes: a start without -c that found
        # /etc/mailrouter/config.yaml stored the tour's mail under /etc/mailrouter/var, and
        # no line of the log said so (the newcomer looked in ./var and found nothing)
        where = {"config": self.config.path or "embedded-default",
                 "mail": str(self.config.delivery.maildir_root)} \
            if self.worker in (None, 0) else {}
        log.info("event=started loop=%s %s", loop_name(),
                 " ".join(f"{k}={h}:{p}" for k, (h, p) in self.bound.items()),
                 extra={"fields": where})

    def _outgoing(self) -> Outgoing:
        ar = self.config.autoreply
        return Outgoing(Policy(ar.robot_senders or DEFAULT_ROBOT_SENDERS, ar.daily_cap,
                               ar.envelope_from), self.config.hostname)

    def _wake_outbox(self) -> None:
        if self.outbox is not None:        # started below, after the scheduler
            self.outbox.wake()

    def _start_outbox(self) -> Any:
        """The outbox worker (outbox.py): in every process on PostgreSQL (rows are claimed
        with SKIP LOCKED), in one on SQLite. Without a relay, mail waits; say so once."""
        cfg = self.config
        first = self.worker in (None, 0)
        if cfg.outbox.relay is None:
            if first:
                log.warning("event=outbox_no_relay: autoreplies and DSNs wait in the outbox "
                            "(see `mailrouter outbox`); set outbox.relay to the MTA's "
                            "submission port to send them")
            return None
        if not first and cfg.registry.url.startswith("sqlite"):
            return None
        ar = cfg.autoreply
        check = DomainCheck(ar.dns_resolver, ar.dns_timeout) if ar.dns_check else None
        self.outbox = OutboxWorker(self.registry, cfg.outbox, cfg.hostname,  # type: ignore[arg-type]
                                   dns_check=check)
        self.outbox.start()
        log.info("event=outbox_started relay=%s dns_check=%s", cfg.outbox.relay,
                 "off" if check is None else ar.dns_resolver or "system")
        return self.outbox.wake

    async def _listen(self, name: str, listener: Listener, cls: type[Protocol]) -> None:
        cfg, handler, loop = self.config, Handler(self, name), asyncio.get_running_loop()
        budget = self.data_budget

        def factory() -> Protocol:
            return cls(handler, data_size_limit=cfg.limits.max_message_size, enable_SMTPUTF8=True,
                       decode_data=False, hostname=cfg.hostname, ident="mailrouter",
                       timeout=cfg.limits.command_timeout, data_timeout=cfg.limits.data_timeout,
                       data_deadline=cfg.limits.data_deadline, command_call_limit=COMMAND_LIMITS,
                       data_budget=budget, limits=cfg.limits,
                       loop=loop)
        if name in self.sockets:
            srv = await loop.create_server(factory, sock=self.sockets[name])
        else:
            try:
                srv = await loop.create_server(factory, listener.host, listener.port,
                                               backlog=1024, reuse_address=True)
            except OSError as exc:
                raise ListenError.of(name, listener.host, listener.port, exc) from None
        for sock in srv.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.servers.append(srv)
        self.listeners[name] = srv
        self.bound[name] = srv.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        """Close what start() opened: listeners, sessions, downstreams, the registry. After
        a drain (wait_stopped), or at once when a start failed half-way."""
        if self._lint is not None:
            self._lint.cancel()
        if self.sla_task is not None:
            self.sla_task.cancel()
            await asyncio.gather(self.sla_task, return_exceptions=True)
        for srv in self.servers:
            srv.close()
        for proto in list(self.sessions):   # past shutdown_grace: told 421 4.3.2, then closed
            proto.shut_down()
        if self.web_runner is not None:
            await self.web_runner.cleanup()
        await self.deliverer.close()
        if self.intents is not None:
            await self.intents.close()
        if self.outbox is not None:
            await self.outbox.stop()
        if self.registry is not None:
            await self.registry.close()

    def request_stop(self) -> None:
        if not self.draining:
            log.info("event=stopping in_flight=%d sessions=%d", self.in_flight, len(self.sessions))
            self.draining = True
            self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()
        for proto in list(self.sessions):
            proto.close_if_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_grace
        while (self.in_flight or any(p.busy or p.in_transaction for p in self.sessions)) \
                and loop.time() < deadline:
            await asyncio.sleep(0.05)
            for proto in list(self.sessions):
                proto.close_if_idle()
        await self.close()
        log.info("event=stopped")

    # -- reload ------------------------------------------------------------------------
    def _routing_mtimes(self) -> dict[str, tuple[int, int]]:
        """Each routing file's (mtime, size); the last look's when their folder cannot be
        listed (out of descriptors, no permission: routing.files._glob), its cause logged
        once. Read as "no files", that was a change: the rules reloaded, were refused as
        "no routing files match", and reloaded again once the folder could be listed."""
        out: dict[str, tuple[int, int]] = {}
        try:
            files = _files(self.config.routing)
        except ConfigErrors as exc:
            if str(exc) != self._unlisted:
                self._unlisted = str(exc)
                log.error("event=routing_files_unlisted kept=%s %s", self._snapshot.hash,
                          "; ".join(f"{e.message}; {e.hint}" for e in exc.errors))
            return getattr(self, "_mtimes", {})
        if self._unlisted:
            self._unlisted = ""
            log.info("event=routing_files_listed files=%d", len(files))
        for f in files:
            try:
                st = os.stat(f)
                out[f] = (st.st_mtime_ns, st.st_size)
            except OSError:
                out[f] = (-1, -1)
        return out

    def request_reload(self) -> asyncio.Future[Reloaded]:
        """Ask for a reload (SIGHUP, the watcher, POST): the result of the next one to
        start. While one runs, every request joins the single one that follows it."""
        if self._next_reload is None:
            self._next_reload = asyncio.get_running_loop().create_future()
            if self._reloader is None or self._reloader.done():
                self._reloader = asyncio.get_running_loop().create_task(self._run_reloads())
        return self._next_reload

    async def reload(self) -> tuple[bool, str]:
        """(ok, the hash or the errors) of the next reload."""
        ok, public, _, _ = await self.reload_all()
        return ok, public

    async def reload_all(self) -> Reloaded:
        """(ok, the hash or the errors, why Postfix's tables were not rebuilt or None, what of
        config.yaml needs a restart or None)."""
        return await asyncio.shield(self.request_reload())   # a caller gone stops nothing

    async def _run_reloads(self) -> None:
        while self._next_reload is not None:
            waiting, self._next_reload = self._next_reload, None
            try:
                result = await self._reload_once()
            except BaseException:
                waiting.cancel()            # shutdown: nobody is left to answer
                raise
            waiting.set_result(result)

    @property
    def follower(self) -> bool:
        """A worker other than worker 0: it loads the set worker 0 staged, never the files."""
        return self.kept is not None and self.worker not in (None, 0)

    async def _reload_once(self) -> Reloaded:
        if self.follower:
            return await self._follow()
        cfg = self.config
        maps_error, changed = None, False
        self._mtimes = await asyncio.to_thread(self._routing_mtimes)   # the watcher's too
        try:
            # The same files byte for byte (a SIGHUP, a touch, a tool rewriting them): keep the
            # snapshot the supervisor built and the workers share; a load here would give each
            # worker its own copy (issue 15: 100,000 aliases at 2.6x the memory of 1,000).
            snap, texts = await asyncio.to_thread(_reload_snapshot, self._snapshot, cfg,
                                                  self.worker is not None,
                                                  self._stage if self.kept is not None else None)
            if self.kept is not None:        # workers: every one takes it, or none does
                await self._agree(snap, texts)
        except ConfigErrors as raised:
            if self._staged_early is not None:     # the others go on with the set they run
                await self._back(self._snapshot, "")
            # "no routing files match ..." is config.yaml's `routing:`: named so, as `check`
            # and a refused start name it (it was "<config>: ...", no file to open)
            exc = owned_errors(raised, cfg)
            ok, detail, public = False, str(exc), _public(exc, cfg.routing, cfg.path)
            log.error("event=reload_failed errors=%d kept=%s\n%s", len(exc.errors),
                      self._snapshot.hash, detail)
        except _Disagreed as exc:
            ok, detail = False, str(exc)
            public = _relative(detail, cfg.routing)
            log.error("event=reload_failed kept=%s %s", self._snapshot.hash, detail)
        except Exception as exc:  # a bug in loading must not take the daemon down
            if self._staged_early is not None:
                await self._back(self._snapshot, "")
            ok, detail = False, f"internal error: {exc!r}"
            public = "internal error while loading the routing files; see the daemon's log"
            log.exception("event=reload_crashed")
        else:
            # A routing file no longer read (deleted, renamed, moved out of the glob) takes its
            # aliases and rules with it, and the load of the rest can be valid: said in the log
            # and in `mailrouter reload`'s answer, where a whole file's addresses went quietly
            # (their mail refused 550 from then on).
            gone = sorted(set(self._snapshot.files) - set(snap.files))
            changed = snap.hash != self._snapshot.hash
            self._snapshot, ok, detail = snap, True, snap.hash
            public = detail
            if gone:
                public += "; no longer read: " + ", ".join(_shown_files(gone, cfg.routing))
            for name in gone:
                log.warning("event=routing_file_gone file=%s hash=%s", name, snap.hash)
            log.info("event=reloaded hash=%s files=%d", snap.hash, len(snap.files))
            if changed:
                self._lint_later(snap)
            maps_error = await self.write_postfix_maps()
        if self.kept is not None:     # for a worker that starts: the last reload's outcome
            await asyncio.to_thread(self._report, None if ok else detail)
        # One reload is counted once, by worker 0 (issue 14: 3 reloads over 2 workers showed
        # failed=6); the others' follow it (_follow). The gauges are per worker (livemin).
        if self.worker in (None, 0):
            metrics.RELOADS.labels("ok" if ok else "failed").inc()
        metrics.RELOAD_OK.set(1 if ok else 0)
        if ok and changed:   # the age of the rule set in use, as the followers keep it: the
            metrics.RELOAD_TIME.set(time.time())   # files unchanged, the rules are as old
        self.state.ruleset = self._snapshot.hash
        if ok and changed:        # off the loop and the reply (a scrape waits for it, as at
            # the start): 0.05 s for 10,000 rules and mailboxes made before, 0.6 s for new ones
            self._zeros = asyncio.get_running_loop().run_in_executor(
                None, _known_decisions, self._snapshot)
        if self.registry is not None:
            try:
                # an ok row's detail was its hash again, `registry reloads` showing it twice
                await self.registry.record_reload(self._snapshot.hash, ok,
                                                   "" if ok else detail[:4000],
                                                   worker=self.worker)
            except Exception as exc:
                log.warning("event=reload_not_recorded error=%r", str(exc))
        return ok, public, maps_error, await self.config_not_applied()

    def _report(self, error: str | None) -> None:
        assert self.kept is not None and self.worker is not None
        head = self.kept.head()
        try:
            self.kept.report(self.worker, head[0] if head is not None else 0,
                             self._snapshot.hash, error)
        except OSError as exc:
            log.warning("event=reload_not_reported error=%r", str(exc))

    async def _agree(self, snap: Snapshot, texts: dict[str, bytes] | None) -> None:
        """Worker 0's reload with workers: the other workers load the bytes `snap` was made
        of (staged in `kept`), and `snap` is taken (returns) only when every one of them runs
        it. A worker that could not load them, or did not answer in FOLLOW_TIMEOUT, has
        them all go back to the set they ran, and the reload is refused (_Disagreed)."""
        kept = self.kept
        assert kept is not None
        current = self._snapshot
        head = await asyncio.to_thread(kept.head)
        followers = range(1, self.config.workers)

        def all_run(seq: int, digest: str) -> bool:
            return all((got := kept.reported(i)) is not None and got[0] >= seq
                       and got[1] == digest for i in followers)

        if snap is current and head is not None and head[1] == snap.hash and \
                await asyncio.to_thread(all_run, head[0], snap.hash):
            return                      # unchanged, and every worker runs it
        early, self._staged_early = self._staged_early, None
        asked = early is not None and early[1] == snap.hash
        if early is not None and asked:
            seq = early[0]        # staged before this worker's load, which the others ran beside
        else:
            if texts is None and head is not None and head[1] == snap.hash:
                staged = await asyncio.to_thread(kept.staged)
                texts = staged.texts if staged is not None else None
            seq = await asyncio.to_thread(kept.put, texts, snap.hash)
            log.info("event=reload_staged hash=%s seq=%d workers=%d", snap.hash, seq,
                     len(followers))
        failed = await self._followers_at(seq, snap.hash, ask=not asked)
        if not failed:
            return
        why = "; ".join(failed)
        if snap is current:
            raise _Disagreed(f"not every worker runs the rule set {snap.hash}: {why}")
        log.error("event=reload_reverted hash=%s refused=%s: %s", current.hash, snap.hash, why)
        still = await self._back(current, snap.hash)
        if still:
            raise _Disagreed(
                f"the new rule set {snap.hash} was refused ({why}), and going back to "
                f"{current.hash} failed too ({'; '.join(still)}): the workers may run "
                "different rules; fix the cause and reload again, or restart the daemon")
        raise _Disagreed(f"the new rule set {snap.hash} loaded here but not in every worker "
                         f"({why}); every worker kept {current.hash}")

    def _stage(self, texts: dict[str, bytes], digest: str) -> Callable[[Any], None]:
        """In the reload's thread, worker 0 (`_reload_snapshot`'s `stage`): the bytes just
        read, which differ from the set running, staged for the others before this worker
        loads them, so all load at once. One after the other, a reload of 100,000 aliases
        and 10,000 rules with two workers took both loads' time (4.26 s against 2.40 s,
        bench_start.py --reload). The same bytes load the same everywhere: a set that fails
        here fails there too, and `_back` has them go on with the set they run (`_agree`: a
        worker that failed alone). A worker replaced within those seconds starts on the
        staged set, or when that fails to load, on the set staged before it, the one the
        others run (_worker_snapshot)."""
        kept = self.kept
        assert kept is not None
        seq = kept.put(texts, digest, builder=os.getpid())
        self._staged_early = (seq, digest)
        log.info("event=reload_staged hash=%s seq=%d workers=%d", digest, seq,
                 self.config.workers - 1)
        os.kill(os.getppid(), PARENT_RELOAD_SIGNAL)

        def share(built: Any) -> None:     # the book this worker builds, for the others
            try:
                kept.share_book(seq, built)
            except OSError as exc:          # the others build their own
                log.warning("event=book_not_shared seq=%d error=%r", seq, str(exc))
        return share

    async def _back(self, current: Snapshot, refused: str) -> list[str]:
        """Have the other workers go back to (or stay on) `current`, the set they all ran:
        its bytes when kept (else the supervisor's snapshot, when it is that set). What went
        wrong, per worker (empty: all of them run it)."""
        assert self.kept is not None
        self._staged_early = None
        before = await asyncio.to_thread(self.kept.before)
        back = before.texts if before is not None and before.hash == current.hash else None
        seq = await asyncio.to_thread(self.kept.put, back, current.hash)
        log.info("event=reload_unstaged hash=%s seq=%d refused=%s", current.hash, seq,
                 refused or "(did not load)")
        still = await self._followers_at(seq, current.hash)
        if still and not refused:       # (_agree says it with the reload's reply)
            log.error("event=reload_unstage_failed hash=%s: %s", current.hash, "; ".join(still))
        return still

    async def _followers_at(self, seq: int, digest: str, ask: bool = True) -> list[str]:
        """Have the other workers take set `seq` (SIGUSR1 to the supervisor, which sends
        them SIGHUP; `ask` False: already asked, `_stage`) and wait until each reports it
        runs `digest`; what went wrong, per worker (empty: all of them run it)."""
        assert self.kept is not None
        if ask:
            os.kill(os.getppid(), PARENT_RELOAD_SIGNAL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FOLLOW_TIMEOUT
        waiting = set(range(1, self.config.workers))
        failed: list[str] = []
        while waiting:
            for i in sorted(waiting):
                got = await asyncio.to_thread(self.kept.reported, i)
                if got is None or got[0] < seq:
                    continue
                waiting.discard(i)
                if got[2] is not None or got[1] != digest:
                    failed.append(f"worker {i} runs {got[1]}: {got[2] or 'another set'}")
            if not waiting or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        failed += [f"worker {i} did not answer in {FOLLOW_TIMEOUT:.0f} s" for i in sorted(waiting)]
        return failed

    async def _follow(self) -> Reloaded:
        """A follower's reload: take the set worker 0 staged (its bytes, not the files on
        the disk), or go back to the one run before; report what runs now."""
        assert self.kept is not None
        staged = await asyncio.to_thread(self.kept.staged)
        error = None
        refused = False           # the files' errors: worker 0's load finds and names them
        current = self._snapshot
        try:
            if staged is None:
                error = "the staged routing set cannot be read"
            elif staged.hash == current.hash:
                pass
            elif self.inherited is not None and self.inherited.hash == staged.hash and \
                    self.inherited.files == tuple(staged.texts or self.inherited.files):
                self._snapshot = self.inherited
            elif staged.texts is None:
                error = f"the routing set {staged.hash} is not kept"
            else:
                self._snapshot = await asyncio.to_thread(
                    _load, self.config, True, staged.texts,
                    from_builder=lambda: self._shared_book(staged), current=current)
        except ConfigErrors as exc:
            # staged before worker 0 loaded them (App._stage): the same bytes fail there,
            # and its reload refuses them, logs and answers their errors
            error, refused = f"{len(exc.errors)} error(s): {exc.errors[0]}", True
        except Exception as exc:  # noqa: BLE001 (reported to worker 0, which refuses the reload)
            log.exception("event=reload_crashed")
            error = f"internal error: {exc!r}"
        # the gauges before the report: worker 0 answers the reload once every report is in
        metrics.RELOAD_OK.set(0 if error is not None else 1)
        if error is None and self._snapshot is not current:
            metrics.RELOAD_TIME.set(time.time())
        head = await asyncio.to_thread(self.kept.head) if staged is None else None
        try:
            await asyncio.to_thread(self.kept.report, self.worker or 0,
                                    staged.seq if staged is not None else
                                    head[0] if head is not None else 0, self._snapshot.hash, error)
        except OSError as exc:
            log.warning("event=reload_not_reported error=%r", str(exc))
        if refused:
            log.info("event=reload_not_taken kept=%s error=%r", self._snapshot.hash, error)
        elif error is not None:
            log.error("event=reload_failed kept=%s error=%r", self._snapshot.hash, error)
        elif self._snapshot is not current:
            log.info("event=reloaded hash=%s files=%d", self._snapshot.hash,
                     len(self._snapshot.files))
        self.state.ruleset = self._snapshot.hash
        return error is None, error or self._snapshot.hash, None, None

    def _shared_book(self, staged: Staged) -> Any:
        """In a follower's load of a big staged set: the address book worker 0 builds of the
        same bytes (LastGood.share_book), or None (logged): this worker builds its own."""
        assert self.kept is not None
        got = self.kept.shared_book(staged, FOLLOW_TIMEOUT / 2)
        if got is not None:
            log.info("event=book_taken seq=%d from=%s", staged.seq, staged.builder)
        elif staged.builder is not None:
            log.info("event=book_not_taken seq=%d from=%s: building this worker's own",
                     staged.seq, staged.builder)
        return got

    async def config_not_applied(self) -> str | None:
        """What a reload leaves as it was: config.yaml is read only at start. An edited one
        was ignored without a word (`mailrouter reload` said "reloaded" and the old
        limits, listeners and delivery settings kept running); now its changed keys, or its
        errors (a restart would fail), are logged and returned for the reply. One process
        (the admin worker) says it: every worker runs the config it started with."""
        if not self.config.path or self.worker not in (None, 0):
            return None
        try:
            edited = await asyncio.to_thread(load_config, self.config.path)
        except ConfigErrors as exc:
            why = (f"{self.config.path} has errors; the daemon runs with the settings it started "
                   f"with, and would not start again until they are fixed "
                   f"(mailrouter check -c {self.config.path}):\n{exc}")
            log.error("event=config_not_applied errors=%d\n%s", len(exc.errors), exc)
            metrics.config_not_applied("errors")   # for an alert: exit 4 showed nowhere else
            return why
        changed = changed_keys(self.config, edited)
        metrics.config_not_applied("changed" if changed else None)
        if not changed:
            return None
        log.warning("event=config_not_applied keys=%s: config.yaml is read only at start; "
                    "restart to apply", ",".join(changed))
        return (f"{self.config.path}: {', '.join(changed)} changed, but config.yaml is read only "
                "at start (a reload reads the routing files): the daemon still runs with the "
                "values it started with; restart it to apply them (systemctl restart mailrouter)")

    async def refresh_metrics(self) -> None:
        """Before a scrape: the free space of the directories we write in (a file system
        that does not answer within 2 s keeps the last figures), the outbox backlog and
        open requests from the registry."""
        if self._zeros is not None:
            await asyncio.shield(self._zeros)
        try:
            self.state.stores = await asyncio.wait_for(asyncio.to_thread(
                metrics.disk_space, self.config.written_dirs()), 2)
        except TimeoutError:
            log.warning("event=metrics_disk_space_slow")
        if self.registry is not None:
            from .backlog import read_backlog
            await read_backlog(self.registry, self.state)

    async def write_postfix_maps(self) -> str | None:
        """postfix_maps.on_reload: Postfix's tables follow the address book (one process
        writes them). A failure is logged and returned, for the reply to `mailrouter
        reload`: the file, the error and the fix. Mail keeps flowing, Postfix keeps the old
        tables (and so refuses the book's new addresses with 550 until they are rebuilt)."""
        pm = self.config.postfix_maps
        if pm is None or not pm.on_reload or self.worker not in (None, 0):
            return None
        try:
            written = await asyncio.to_thread(postfixmaps.refresh, self.config, self._snapshot.book)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            why = postfixmaps.failure(exc, pm.dir)
            log.error("event=postfix_maps_failed dir=%s error=%r", pm.dir, why)
            metrics.POSTFIX_MAPS_FAILED.set(1)     # for an alert: exit 3 showed nowhere else
            return why
        log.info("event=postfix_maps dir=%s %s", pm.dir, written.summary())
        metrics.POSTFIX_MAPS_FAILED.set(0)
        return None

    async def admin_reload(self) -> Reloaded:
        """POST /-/reload: reload here; with workers (`kept`), worker 0's reload has the
        others take the set it loaded (`_agree`). A worker without that set has the
        supervisor reload the others first, so that all coalesce over the same burst."""
        if self.worker is not None and self.kept is None:
            os.kill(os.getppid(), PARENT_RELOAD_SIGNAL)
        return await self.reload_all()

    async def watch(self, interval: float = 1.0) -> None:
        while not self.draining:
            await asyncio.sleep(interval)
            await self.look_at_routing_files()

    async def look_at_routing_files(self) -> bool:
        """One look of the watcher: reload (True) when the routing files changed and have
        not changed since the last look. A file seen changing may be mid-save (an editor or
        `cp` writing it in place): cut at a line, it was valid YAML with half the aliases,
        loaded, and their mail refused 550 until the next look."""
        mtimes = await asyncio.to_thread(self._routing_mtimes)
        if mtimes == self._mtimes:
            self._settling = None
            return False
        if mtimes != self._settling:
            self._settling = mtimes
            return False
        self._settling = None
        self._mtimes = mtimes
        await self.reload()
        return True


async def serve(config: Config, ready: Any = None, sockets: dict[str, socket.socket] | None = None,
                worker: int | None = None, snapshot: Snapshot | None = None,
                starting: Starting | None = None, kept: LastGood | None = None) -> int:
    """Run until SIGTERM/SIGINT; return the exit code. A worker gets the `snapshot` its
    supervisor loaded before forking, shared copy-on-write; it is used while the routing
    files still hold what it was built from (a worker replaced after a change loads them).
    `starting`: the signals noted since `mailrouter run` began (the only process of
    `workers: 1`), acted on once the loop handles them. `kept`: the routing set every worker
    runs (workers.LastGood): a worker of several starts on it, not on the files on the disk."""
    if kept is not None:           # a worker of several: the set the others run
        snap = await asyncio.to_thread(_worker_snapshot, config, kept, snapshot, worker)
        if snap is None:
            return START_FAILED
    else:
        try:
            await asyncio.to_thread(_skipping, config)
            snap = _checked(config, snapshot) if snapshot is not None and \
                _still_current(snapshot, config) \
                else await asyncio.to_thread(_load, config, worker is not None)
        except ConfigErrors as exc:
            log.error("routing files have errors; not starting:\n%s", owned_errors(exc, config))
            return START_FAILED
    if starting is not None and starting.stopping:
        return _stopped_during_start(starting, "loading the routing files")
    app = App(config, snap, sockets, worker, kept)
    app.inherited = snapshot
    if worker == 0 and kept is not None and \
            not await asyncio.to_thread(_still_current, snap, config):
        # Worker 0 (re)started on the set the others run while the files on the disk differ:
        # saved while it was down (only it watches them) or with a SIGHUP that reached it
        # dead. Its watcher took the disk's state as seen and never loaded them: the first
        # look now finds them changed and reloads, as it would have.
        app._mtimes = {}
    try:
        await app.start()
    except (ListenError, RegistryError) as exc:
        await app.close()
        return _start_failed(_why(exc, config), config)
    last = kept.reported(0) if kept is not None else None
    if last is not None and last[2] is not None:     # as the others: their last reload failed
        metrics.RELOAD_OK.set(0)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, app.request_stop)
    loop.add_signal_handler(signal.SIGINT, app.request_stop)
    loop.add_signal_handler(signal.SIGHUP, app.request_reload)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)   # a worker is born with them blocked
    if starting is not None and starting.got:    # came during app.start(): the loop's now
        if starting.stopping:       # the listeners may have taken a session: drain it
            log.info("event=stopped_during_start step=starting signal=%s",
                     starting.signal_name())
            app.request_stop()
        elif signal.SIGHUP in starting.got:
            _ = app.request_reload()      # its result is logged; nobody waits for it
    # Everything loaded so far (rules, address book, SQLAlchemy, aiosmtpd) lives for the
    # whole run: move it out of the cyclic collector's sight, so full collections scan
    # only per-message garbage instead of the whole heap.
    gc.collect()
    gc.freeze()
    # worker 0 alone reads the files (App._agree): the others' reloads follow it
    watcher = loop.create_task(app.watch()) if not app.follower else None
    if ready is not None:
        ready(app)
    await app.wait_stopped()
    if watcher is not None:
        watcher.cancel()
    return 0


PUBLIC_ERRORS = 50      # errors named in a reload reply; the log has them all


def _routing_root(patterns: tuple[str, ...]) -> str:
    """The directory all the routing globs start in ("" when none)."""
    dirs = [os.path.dirname(re.split(r"[*?\[]", p, maxsplit=1)[0] + "x") for p in patterns]
    return os.path.commonpath(dirs) if dirs else ""


def _shown_files(files: list[str], patterns: tuple[str, ...]) -> list[str]:
    """Routing files for the admin reply: relative to the routing directory."""
    root = _routing_root(patterns)
    if not root.startswith("/") or root == "/":
        return files
    return [f.removeprefix(root + "/") for f in files]


def _public(exc: ConfigErrors, patterns: tuple[str, ...], config: str = "") -> str:
    """The errors of a failed reload for the admin reply: file:line relative to the
    routing directory, the config file by its name, and no other path of this machine."""
    lines = [str(ConfigError(e.message, os.path.basename(config), e.line, e.column, e.hint)
                 if config and e.path == config else e)
             for e in exc.errors[:PUBLIC_ERRORS]]
    if len(exc.errors) > PUBLIC_ERRORS:
        lines.append(f"... and {len(exc.errors) - PUBLIC_ERRORS} more (see the daemon's log)")
    return _relative("\n".join(lines), patterns)


def _relative(text: str, patterns: tuple[str, ...]) -> str:
    """`text` with the routing directory left out of the paths it names."""
    root = _routing_root(patterns)
    return text.replace(root + "/", "") if root.startswith("/") and root != "/" else text


def run(config: Config, book: Child[tuple[str, AddressBook] | None] | None = None,
        starting: Starting | None = None) -> int:
    """Run the daemon until it is stopped; its exit code. `book`: the address book of the
    routing files being built in a child since before this module was imported (cli.cmd_run,
    with workers), for run_workers. `starting`: the signals noted since then (cli.cmd_run
    installs it first thing); None: noted from here on. A SIGTERM at any moment of the
    start stops it: exit 0, event=stopped_during_start, the book's child reaped."""
    mine = starting is None
    starting = starting or Starting().install()
    if book is not None and not book.reaped:
        starting.child = book
    try:
        return _run(config, book, starting)
    finally:
        starting.child = None
        if book is not None and not book.taken:
            book.cancel()
        if mine:
            starting.restore()


def _run(config: Config, book: Child[tuple[str, AddressBook] | None] | None,
         starting: Starting) -> int:
    logs.setup(config.log_level, config.log_format)
    # A fatal signal in C code (SIGBUS: SQLite's -shm is memory-mapped, and a write to it on
    # a file made immutable or a disk remounted read-only after errors is a bus error) ended
    # the process with no line at all; now stderr has the error and each thread's stack
    # (the registry's among them), inherited by the workers. Such a death answers nothing
    # (the client retries); a supervisor or systemd's Restart= starts the process again.
    faulthandler.enable()
    logging.getLogger("mail.log").setLevel(logging.WARNING)   # aiosmtpd's per-command chatter
    # alembic's "setup plugin ..." (seven lines at every start); its "Running upgrade" stays
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    unusable = unwritable(config, create=True)
    if unusable:     # else the daemon started and every message got 451 (or the registry failed)
        return _start_failed("; and ".join(unusable), config)
    raise_fd_limit(config.limits.max_connections)
    if config.workers <= 1:
        return run_loop(serve(config, starting=starting))
    return run_workers(config, book, starting)


async def reconcile_intents(config: Config) -> None:
    """Record the Maildir copies a crash left without a registry row (intents.py), in the
    supervisor, before any worker takes mail."""
    cfg = config.registry
    registry = await Registry.open(cfg.url, batch_max=cfg.batch_max, timeout=cfg.timeout,
                                   synchronous=cfg.sync.upper(), create=False)
    deliverer = Deliverer(config.delivery, config.hostname)
    try:
        await Intents(config.intents_dir, deliverer.stored).reconcile(registry)
    finally:
        await deliverer.close()
        await registry.close()


def _stopped_during_start(starting: Starting, step: str) -> int:
    """A SIGTERM/SIGINT came while starting (workers.Starting): stop before the next step.
    Nothing listens yet, so no mail is at stake: a clean stop, exit 0."""
    log.info("event=stopped_during_start step=%r signal=%s; not starting", step,
             starting.signal_name())
    return 0


def _start_failed(why: str, config: Config) -> int:
    """One line: why, and the config file to change ("change listen.smtp in the config"
    named no file when -c was not given)."""
    log.error("event=start_failed error=%r config=%r; not starting", why,
              config.path or "embedded-default")
    return START_FAILED


def _why(exc: Exception, config: Config) -> str:
    """A start refused by the registry names it (its file, or its URL without the password)
    and what to do: it was "registry upgrade failed (ConnectionRefusedError: ...)", no
    database named, nothing to check."""
    if not isinstance(exc, RegistryError):
        return str(exc)
    where = registry_location(config.registry.url)
    advice = registry_advice(exc, where)
    return (f"{where}: {exc}; " + (f"{advice}; " if advice else "")
            + f"check registry.url in {config.path or 'the embedded default config (no -c FILE)'}")


def raise_fd_limit(max_connections: int) -> None:
    """Each connection is a descriptor, and so are the registry, the Maildir writes and the
    downstream pools: lift the soft RLIMIT_NOFILE (often 1,024 in a shell) towards the
    hard one, so max_connections is what limits a flood, not EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, 4 * max_connections + 1024)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        log.info("event=fd_limit soft=%d->%d hard=%s", soft, want, hard)
    if want < max_connections + 256:
        log.warning("event=fd_limit_low limit=%d max_connections=%d: raise LimitNOFILE / "
                    "ulimit -n, or lower limits.max_connections", want, max_connections)


def _still_current(snap: Snapshot, config: Config) -> bool:
    """True when the routing files are the ones `snap` was built from, byte for byte; False
    when their folder cannot be listed (out of descriptors: routing_files raises): a worker
    starting then ran out of serve() with the error, where its load, or the reload the
    watcher makes later, names the cause and keeps the set the others run."""
    try:
        files = tuple(_files(config.routing))
    except ConfigErrors:
        return False
    return files == snap.files and yamlsrc.hash_files(files) == snap.hash


def _keep(kept: LastGood, snap: Snapshot) -> None:
    """Keep the supervisor's `snap` files as the set every worker runs (workers.LastGood).
    Not kept when they changed since they were read: the workers then start on `snap`
    itself, and a reload that a worker cannot take goes back to it by its hash."""
    try:
        saved = kept.save(snap.files, snap.hash)
    except OSError as exc:
        log.warning("event=last_good_not_kept hash=%s error=%r", snap.hash, str(exc))
        saved = False
    if not saved:
        log.info("event=last_good_not_kept hash=%s: the files changed since they loaded",
                 snap.hash)
        kept.put(None, snap.hash)


def _known_decisions(snap: Snapshot) -> None:
    """The per-mailbox and per-rule decision series of this rule set, at 0 (metrics.py);
    made by the admin worker (or the only process) alone: with workers: N the sum over the
    workers' files shows its zeros, and N copies would cost every scrape N times as much."""
    metrics.known_decisions(snap.book.mailboxes, (r.name for r in snap.rules.rules))


def _worker_snapshot(config: Config, kept: LastGood, inherited: Snapshot | None,
                     worker: int | None) -> Snapshot | None:
    """A worker's start with several: the set the others run (`kept`: the supervisor's
    at start, worker 0's last reload that every worker took), not the files on the disk,
    which may have changed or broken since; `inherited` (the supervisor's, shared
    copy-on-write) when it is that set. None: it cannot start (logged)."""
    staged = kept.staged()
    snap = inherited
    if staged is not None and _not_inherited(staged, inherited):
        snap = _load_kept(config, staged)
        if snap is None:
            # staged by worker 0 before its own load (App._stage), which refuses it and
            # stages the set before again: that one is what the others run
            before = kept.before()
            snap = (_load_kept(config, before) if before is not None
                    and _not_inherited(before, inherited) else None) or inherited
    if snap is None:
        log.error("event=start_failed error='no routing set to run'; not starting")
        return None
    if worker not in (None, 0):
        try:
            kept.report(worker, staged.seq if staged is not None else 0, snap.hash)
        except OSError as exc:
            log.warning("event=reload_not_reported error=%r", str(exc))
    if not _still_current(snap, config):
        last = kept.reported(0)
        refused = (last[2] or "").strip().splitlines()[:1] if last is not None else []
        log.warning("event=started_on_last_good hash=%s: the routing files on the disk are "
                    "not the ones the other workers run (changed or broken since the last "
                    "reload%s), so this worker runs the set they run; fix them if need be and "
                    "reload (mailrouter reload)", snap.hash,
                    f", which was refused: {refused[0]}" if refused else "")
    return snap


def _not_inherited(got: Staged, inherited: Snapshot | None) -> bool:
    """A kept set with its bytes, other than the supervisor's snapshot."""
    return got.texts is not None and (inherited is None or inherited.hash != got.hash
                                      or inherited.files != tuple(got.texts))


def _load_kept(config: Config, got: Staged) -> Snapshot | None:
    """A kept set loaded from its bytes; None (logged) when it does not load."""
    try:
        return _load(config, True, got.texts)
    except (ConfigErrors, ValueError) as exc:
        log.error("event=last_good_failed hash=%s error=%r", got.hash, str(exc))
        return None


class _Disagreed(Exception):
    """Not every worker could take a reload's new routing set (App._agree)."""


# How long worker 0 waits for the others to load a reload's set (mailrouter reload waits 60 s)
FOLLOW_TIMEOUT = 45.0


ROUTING_DIR_PREFIX = "mailrouter-routing."     # LastGood's directory, PID.XXXX after it


# Routing files from this size on (about 20,000 aliases) are a book worth building apart
BUILD_APART_FROM = 1 << 20


def _load(config: Config, worker: bool, texts: dict[str, bytes] | None = None,
          share: Callable[[Any], None] | None = None,
          from_builder: Callable[[], Any] | None = None,
          current: Snapshot | None = None) -> Snapshot:
    """load_snapshot of the routing files (`texts`: of these bytes, read once). In a
    worker, with big files, the address book is
    built in a new process and sent back (workers.in_new_process), as the supervisor's is
    at start: built here, the book's temporaries (a million objects at 100,000 aliases)
    leave the worker's heap fragmented, ~30 MB more in each worker (bench_memory.py
    --reload: 1.84x the memory of 1,000 aliases, 1.26x apart). A small book is built here:
    a new interpreter costs more than it would save.

    At a reload with several workers one builds the book: worker 0 (`share`: called with
    it, or None) for the others (`from_builder`: it, or None when they must build their
    own). `current`: the snapshot a reload replaces, whose book is kept when the files'
    book sections did not change (`book_kept`: the rules' file edited). Raises
    ConfigErrors for the files' errors, and for what config.yaml names that they lack
    (`_checked`): every worker's load refuses alike a set `check` refuses (a reload, a
    follower's, a replacement worker's start on a kept set)."""
    size = sum(map(len, texts.values())) if texts is not None else _size(_files(config.routing))
    if not (worker and size >= BUILD_APART_FROM):
        if share is not None:
            share(None)
        return _checked(config, load_snapshot(config.routing, config.limits, config.hostname,
                                              texts=texts))
    # the rules' half of the load made here while the new process builds the book, as the
    # supervisor's start does: one after the other, a reload of 100,000 aliases and 10,000
    # rules took the sum of both (bench/README.md, sixteenth pass)
    with ThreadPoolExecutor(1, thread_name_prefix="book") as pool:
        book = pool.submit(_book, config, texts, share, from_builder, current)
        try:
            prepared = prepare(config.routing, texts)
        finally:
            built = book.result()
    return _checked(config, load_snapshot(config.routing, config.limits, config.hostname,
                                          built, prepared, texts=texts))


def _book(config: Config, texts: dict[str, bytes] | None, share: Callable[[Any], None] | None,
          from_builder: Callable[[], Any] | None, current: Snapshot | None
          ) -> tuple[str, AddressBook] | None:
    """_load's address book: `current`'s when the files' book sections did not change,
    else the one the builder shared, else built in a new process (and shared when
    asked)."""
    kept = book_kept(current.book, config.limits, texts) \
        if current is not None and texts is not None else None
    if kept is not None:
        log.info("event=book_kept made_of=%s", kept[1].made_of)
        if share is not None:       # for a worker that runs another book
            share(kept)
        return kept
    got = from_builder() if from_builder is not None else None
    if got is not None:
        return cast("tuple[str, AddressBook]", got)
    built = in_new_process(load_book, config.routing, config.limits, texts)
    if share is not None:
        share(built)
    return built


def _skipping(config: Config) -> list[str]:
    """The routing files, each backup file a glob matched (skipped) logged."""
    files, skipped = routing_files(config.routing)
    for name in skipped:
        log.warning("event=routing_file_skipped file=%s: an editor's backup or a package "
                    "manager's leftover, which a routing: glob matches, is not loaded (as "
                    "run-parts skips them); remove it, or rename it to load it", name)
    return files


def _reload_snapshot(current: Snapshot, config: Config, worker: bool,
                     stage: Callable[[dict[str, bytes], str], Callable[[Any], None]] | None = None
                     ) -> tuple[Snapshot, dict[str, bytes] | None]:
    """A reload's snapshot and the bytes it was made of: `current` when the files are still
    the ones it was made of (bytes None), else the files read once and loaded (`current`
    again when they hash as it does). Raises ConfigErrors. `stage(texts, hash)`: called with
    bytes that differ from `current`'s once they are read, before they are loaded here."""
    if _still_current(current, config):
        return current, None
    files = _skipping(config)
    errors: list[ConfigError] = []
    texts = read_files(files, errors)
    if errors or not files:        # the load names every file's problem, this one's too
        load_snapshot(config.routing, config.limits, config.hostname)
        raise ConfigErrors(errors or [ConfigError(
            f"no routing files match {', '.join(config.routing)}")])   # fixed meanwhile: again
    share = None
    if stage is not None and (digest := yamlsrc.files_hash(texts.items())) != current.hash:
        share = stage(texts, digest)
    snap = _load(config, worker, texts, share, current=current)
    if snap.hash == current.hash and snap.files == current.files:
        return current, texts
    return snap, texts


# The lint warnings a start or reload logs one by one; beyond, their count
LOGGED_WARNINGS = 50
# Seconds from a start or reload to the lint of its rule set (App._lint_later)
LINT_AFTER = 3.0


def _log_warnings(snap: Snapshot, config: Config) -> None:
    """The lint warnings of the rule set that goes live (`Snapshot.warnings`, as `mailrouter
    check` prints them: file:line, what, the fix), one `event=routing_warning` line each
    for the first LOGGED_WARNINGS, then their count: a reload of rules with two of one name
    went live without a word. Did-you-mean only for those lines and a book of a few thousand
    names: at 100,000 addresses `check`'s index of them took 4.3 s of worker 0's CPU at
    each start and reload (bench_start.py: a reload 2.1x as long).
    Never raises: a lint that fails must not stop a start or a reload."""
    try:
        warnings = snap.warnings(config.control is not None, suggest=LOGGED_WARNINGS)
    except Exception:       # noqa: BLE001 (logged; the rules themselves loaded fine)
        log.exception("event=routing_warnings_failed hash=%s", snap.hash)
        return
    for w in warnings[:LOGGED_WARNINGS]:
        log.warning("event=routing_warning hash=%s %s", snap.hash, w)
    if len(warnings) > LOGGED_WARNINGS:
        log.warning("event=routing_warnings_more hash=%s count=%d: `mailrouter check` lists "
                    "them all", snap.hash, len(warnings) - LOGGED_WARNINGS)


def _checked(config: Config, snap: Snapshot) -> Snapshot:
    """`snap`, when config.yaml's names and downstreams agree with its address book (what
    `mailrouter check` refuses, control.checks.config_against_book); else raises ConfigErrors,
    which the start and a reload refuse as the files' own errors."""
    crossed = config_against_book(config, snap.book)
    if crossed:
        raise ConfigErrors(crossed)
    return snap


def _size(files: list[str]) -> int:
    total = 0
    for f in files:
        try:
            total += os.stat(f).st_size
        except OSError:
            pass
    return total


def run_workers(config: Config, book: Child[tuple[str, AddressBook] | None] | None = None,
                starting: Starting | None = None) -> int:
    """Bind once, migrate once, then fork the workers (see workers.py).

    The routing snapshot is built here, once, and the workers inherit it: the address book
    and the rules are shared copy-on-write instead of one copy per worker (issue 15:
    100,000 aliases cost 522 MB over the workers, not 192). The heap is frozen out of the
    cyclic collector before the fork, so a collection in a worker does not write to, and so
    unshare, the pages holding it. The address book is built in a child process and sent
    back (workers.start_child): built here, its objects and the rules' sat among the load's
    million short-lived ones and pinned ~20 memory arenas that the workers then wrote into
    (bench/README.md, sixth pass); the child builds only the book (`load_book`), the rules
    are compiled here. Errors are found and reported by the load here as before. A reload
    that changes the files gives each worker its own snapshot, its book built once, in a new
    process of worker 0's, and shared with the others (`_load`, LastGood.share_book).
    `book`: that child, started before the daemon's imports (cli.cmd_run: it builds while
    this process imports), or None to start it here. Meanwhile this process
    reads the files and compiles the rules' conditions (routing.snapshot.prepare): waiting
    for the book it did nothing for ~1.2 s of a 2.5 s start (bench/README.md, eighth pass).

    Signals (`starting`, workers.Starting): from the start on a SIGTERM is noted, kills the
    book's child, and the start stops at the next step below (exit 0); arriving before, it
    killed the supervisor outright (exit -15). From the bind on, a client may connect: the
    signals are handed to supervise once it has its handlers, which drain the workers. A
    handler, not a blocked mask: a thread the registry left behind would take a signal the
    main thread blocks."""
    mine = starting is None
    starting = starting or Starting().install()
    started = _start_supervisor(config, book, starting)
    if not isinstance(started, tuple):      # stopped, or could not start
        if mine:
            starting.restore()
        return started
    snap, sockets = started
    from prometheus_client import multiprocess
    # This process only supervises: its live gauges (created at import, the reload time 0)
    # are no worker's, and counted in livemin they pinned the reload time at 0 (1970).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):     # set by `mailrouter run` (cli.py)
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
    log.info("event=supervising workers=%d %s", config.workers,
             " ".join(f"{n}={s.getsockname()[0]}:{s.getsockname()[1]}" for n, s in sockets.items()))
    # The routing set every worker runs (workers.LastGood): worker 0's reloads stage it
    # there, a worker that starts runs it. In a directory of this run's own, gone with it.
    private = private_dir(ROUTING_DIR_PREFIX)
    kept = LastGood(private)
    _keep(kept, snap)
    try:
        return supervise(config, lambda i: run_loop(serve(config, sockets=sockets, worker=i,
                                                          snapshot=snap, kept=kept)),
                         on_exit=lambda pid: multiprocess.mark_process_dead(pid),  # type: ignore[no-untyped-call]
                         early=starting.got)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _start_supervisor(config: Config, book: Child[tuple[str, AddressBook] | None] | None,
                      starting: Starting) -> int | tuple[Snapshot, dict[str, socket.socket]]:
    """run_workers' start: the snapshot and the bound listeners, or the exit code.

    While the child builds the address book (the longest step), this process migrates the
    registry, records the copies a crash left, then reads the files and compiles the rules'
    conditions: the registry's steps came after the load and added ~0.15 s to a big start,
    and run after `prepare` they cost three times that (alembic's imports set off full
    collections over the compiled rules). The heap is frozen out of the collector twice:
    the imports' before the rules are compiled, so the last collection, before the fork,
    scans only what the load made (bench/README.md, sixteenth pass)."""
    child = book
    try:
        child = child if child is not None else start_child(
            lambda: load_book(config.routing, config.limits))
        if child is not None and not child.reaped:
            starting.child = child       # a SIGTERM kills it: result() is None at once
        steps: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("migrating the registry", lambda: upgrade(config.registry.url)),
            # before the listeners: see intents.py
            ("recording the copies a crash left", lambda: reconcile_intents(config))]
        for step, work in steps:
            asyncio.run(work())
            if starting.stopping:
                return _stopped_during_start(starting, step)
        gc.collect()
        gc.freeze()
        # the rules' half of the load, made while the child builds the book
        prepared = prepare(config.routing) if child is not None else None
        built = child.result() if child is not None and not starting.stopping else None
        starting.child = None
        if starting.stopping:
            return _stopped_during_start(starting, "building the address book")
        _skipping(config)
        snap = _checked(config, load_snapshot(config.routing, config.limits, config.hostname,
                                              built, prepared))
        del prepared, built       # the files' YAML: not kept for the life of the supervisor
        if starting.stopping:
            return _stopped_during_start(starting, "loading the routing files")
    except ConfigErrors as exc:
        log.error("routing files have errors; not starting:\n%s", owned_errors(exc, config))
        return START_FAILED
    except RegistryError as exc:
        return _start_failed(_why(exc, config), config)
    finally:
        starting.child = None
        if child is not None and not child.taken:
            child.cancel()
    gc.collect()        # then frozen: a collection in a worker never writes to these pages
    gc.freeze()
    try:
        sockets = {name: bind(lst.host, lst.port, name)
                   for name, lst in (("smtp", config.smtp), ("lmtp", config.lmtp)) if lst is not None}
    except ListenError as exc:
        return _start_failed(_why(exc, config), config)
    if starting.stopping:      # supervise starts no worker: say why it stops
        log.info("event=stopped_during_start step='binding the listeners' signal=%s",
                 starting.signal_name())
    return snap, sockets

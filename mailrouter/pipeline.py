"""The path of one message after DATA: view, decide, deliver, record, reply.

`Pipeline.process` is the whole of docs/architecture.md's steps 2-8 for one transaction and
returns one Reply per envelope recipient (the SMTP intake folds them into one).
The order is what makes "no mail lost, nothing done twice" hold:

1. decide per recipient with the snapshot current at the start (pure);
2. ask the registry which targets already hold this message (a retry);
3. deliver the missing copies (each backend durable before it returns);
4. commit the record (message, decisions, deliveries) in the group commit;
5. only then 250; any fault on the way is a 4xx for the recipients it touches.

A crash between 3 and 4 leaves copies the registry does not know about;
Maildir copies carry deterministic names so the retry finds them, LMTP/SMTP
downstreams may get a second copy (at-least-once, never at-most-once).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import logging
import itertools
import random
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from .delivery.deliverer import Copy, Deliverer
from .errors import RegistryBugError, RegistryError
from .logs import upstream_id
from .message import MessageView
from .outbox import Outgoing
from .offload import Offload
from .registry import DecisionRecord, DeliveryRecord, MessageRecord, Registry
from .registry.models import OutboxRecord
from .delivery.maildir import PRIOR
from .intents import UNANSWERED, Intent, Intents
from .routing.snapshot import Snapshot
from .values import (
    REPLY_ALREADY_DELIVERED, REPLY_DELIVERED, REPLY_INTENT_FAILED, REPLY_INTENTS_FULL, REPLY_TEMPFAIL,
    Action, Decision, Reply, Transaction,
)
from . import metrics

if TYPE_CHECKING:
    from .control.service import Control

__all__ = ["Pipeline", "Transaction", "message_key", "REPLY_DELIVERED"]

log = logging.getLogger("mailrouter.decision")


def message_key(mail_from: str, raw: bytes) -> str:
    """Identity of a message for retry dedupe: same sender, same bytes."""
    return key_from_hash(mail_from, hashlib.sha256(raw).hexdigest())


def key_from_hash(mail_from: str, content_hash: str) -> str:
    """`message_key` from the content hash the view already has: hash the raw bytes once."""
    text = f"{mail_from}\0{content_hash}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(text).hexdigest()


# Deciding is CPU work (MIME parse, decoding, rules): off the event loop, so one big
# message or rule set never stalls the other sessions and process_timeout can answer.
# The hand-off costs ~0.1-0.2 ms of CPU per message, a third of deciding a 4 KB one
# (bench_rules.py --only offload), while a 64 KB message decides in ~1 ms: below both
# limits a message is decided on the loop, where that stall is smaller than the hand-off.
DECIDE = Offload(2, "decide")
INLINE_BELOW = 64 * 1024      # bytes of message
INLINE_RULES = 1000           # rules in the snapshot


def view_and_decide(snap: Snapshot, txn: Transaction,
                    at: datetime | None = None) -> tuple[MessageView, list[Decision]]:
    """The first parse of the message and its decisions, everything the record reads included."""
    view = MessageView(txn.raw)
    decisions = snap.decide(view, txn.mail_from, txn.rcpts, at)
    _ = view.content_hash, view.message_id, view.from_addr, view.subject, view.defects
    return view, decisions


_qids = itertools.count(random.getrandbits(24))


def new_qid() -> str:
    """A short queue id for log lines; unique per process run, not a secret."""
    return f"{next(_qids) & 0xFFFFFF:06X}{random.getrandbits(16):04X}"


class Pipeline:
    def __init__(self, snapshot: Callable[[], Snapshot], registry: Registry,
                 deliverer: Deliverer, control: Control | None = None,
                 clock: Callable[[], datetime] | None = None, outgoing: Outgoing | None = None,
                 wake_outbox: Callable[[], None] | None = None,
                 intents: Intents | None = None) -> None:
        self.snapshot, self.registry, self.deliverer = snapshot, registry, deliverer
        self.intents = intents                 # Maildir copies written down first (intents.py)
        self.control = control                 # execution control (requests), when configured
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.outgoing, self.wake_outbox = outgoing, wake_outbox   # autoreplies, DSNs

    async def process(self, txn: Transaction, snap: Snapshot | None = None) -> list[Reply]:
        """`snap`: the rules the transaction's RCPTs were answered by (else the current)."""
        qid = new_qid()
        snap = snap if snap is not None else self.snapshot()
        now = self.clock()
        if len(txn.raw) < INLINE_BELOW and len(snap.rules.rules) < INLINE_RULES:
            view, decisions = view_and_decide(snap, txn, now)
        else:   # a timeout cancels this await: nothing below runs, nothing is delivered
            view, decisions = await DECIDE.run(view_and_decide, snap, txn, now)
        metrics.observe_decisions(decisions)
        key = key_from_hash(txn.mail_from, view.content_hash)
        plan = None
        try:
            done = await self.registry.delivered_targets(key)
            if self.control is not None:
                plan = await self.control.plan(txn.mail_from, txn.rcpts, view, decisions, snap,
                                               key, now)
        except RegistryError as exc:
            # an outage is this one line; a bug was logged with its traceback by the store
            log.error("event=%s qid=%s error=%r", _registry_event(exc, "registry_unavailable"),
                      qid, str(exc))
            metrics.TEMPFAILS.labels("registry").inc(len(txn.rcpts))
            return [exc.reply] * len(txn.rcpts)
        # A rule's `action: defer` (451 4.7.1) is a 4xx of its own cause: counted only under
        # recipients "tempfail", the deferred-rate alert fired with every cause at 0
        deferred = sum(d.action is Action.DEFER for d in decisions)
        if deferred:
            metrics.child(metrics.TEMPFAILS, "rule").inc(deferred)
        if self.control is not None and plan is not None:   # copy_to_owner: one more target
            decisions = self.control.copy_to_owner(plan, decisions, snap)
        await self._record_loops(decisions, key, qid)
        head = self.control.header(plan, snap) if self.control and plan else b""
        copies = self._copies(decisions)
        token: Intent | None = None
        if self.intents is not None:
            places = self.deliverer.places([c for k, c in copies.items() if k not in done],
                                           snap.book.mailboxes, key)
            if places:    # written by the Maildir writer before the copies, in their hop
                try:
                    token = self.intents.prepare(
                        key, self._message_record(txn, view, snap, key, [], now), places)
                except OSError as exc:   # no copy without its intent: the MTA retries
                    log.error("event=intent_failed qid=%s error=%r", qid, str(exc))
                    if self.control is not None and plan is not None:
                        self.control.settle(plan)
                    # its own cause: this 451 was counted under none ("intents_full" on a
                    # full disk, which is a 452 as a full Maildir's)
                    reply = (REPLY_INTENTS_FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                             else REPLY_INTENT_FAILED)
                    metrics.child(metrics.TEMPFAILS, metrics.copy_tempfail_cause(
                        "maildir", reply)).inc(len(txn.rcpts))
                    return [reply] * len(txn.rcpts)
        recorded = [False]
        try:
            replies = await self._deliver_and_record(txn, view, snap, decisions, key, done, qid,
                                                     head, copies, plan, now, recorded, token)
        finally:     # a failed or cancelled record leaves the intent open for a reconcile
            if token is not None and self.intents is not None:
                self.intents.settle(token, key if recorded[0] else None)
            if self.control is not None and plan is not None:   # its thread may go on
                self.control.settle(plan)
        # the message and its recipients are counted by the caller (intake.handler), which
        # also sees the answers of a process_timeout or a crash
        return replies

    async def _deliver_and_record(self, txn: Transaction, view: MessageView, snap: Snapshot,
                                  decisions: list[Decision], key: str, done: set[str], qid: str,
                                  head: bytes, copies: dict[str, Copy], plan: Any,
                                  now: datetime, recorded: list[bool],
                                  intent: Intent | None = None) -> list[Reply]:
        results = await self._deliver(txn, snap, copies, key, done, qid, head, intent)
        replies = [self._reply(d, results) for d in decisions]
        try:
            outgoing: list[OutboxRecord] = []
            noted = decisions
            if self.outgoing is not None:     # same transaction as the record (outbox.py)
                outgoing, noted = await self.outgoing.plan(
                    self.registry, snap, txn.protocol, txn.mail_from, view, decisions, replies, key)
            # the request's write, told what we answer (an answer to our answer joins it)
            after = self.control.writer(plan, key, now, outgoing) if self.control and plan and \
                any(r.ok for r in replies) else None
            record = self._message_record(txn, view, snap, key, replies, now)
            if record.status in ("delivered", "partial") and txn.gone is not None and txn.gone():
                # The client reset the connection after its final dot: stored, but it will
                # never read our 250, so the registry must not say it was answered. Its
                # retry (dedupe: "Already delivered") records it as delivered.
                log.warning("event=client_gone qid=%s status=%s recorded=%s", qid,
                            record.status, UNANSWERED)
                record = dataclasses.replace(record, status=UNANSWERED)
            committed_at = await self.registry.record(
                record,
                [_decision_record(d, r) for d, r in zip(noted, replies)],
                [DeliveryRecord(t, "delivered" if r.ok else ("deferred" if r.temporary else "failed"),
                                str(r)) for t, r in results.items()], after, outgoing)
            recorded[0] = True
            if record.status in ("delivered", "partial") and txn.gone is not None and txn.gone():
                # The reset came while the record committed: the row says answered and the
                # 250 will reach nobody. Made `unanswered` in one more write, only now.
                log.warning("event=client_gone qid=%s status=%s recorded=%s after=commit", qid,
                            record.status, UNANSWERED)
                try:
                    await self.registry.unanswered(key, committed_at)
                except RegistryError as exc:    # stored and recorded: no 451 to count
                    log.error("event=unanswered_not_recorded qid=%s error=%r", qid, str(exc))
            if outgoing and self.wake_outbox is not None:
                self.wake_outbox()
        except RegistryError as exc:
            log.error("event=%s qid=%s error=%r", _registry_event(exc, "registry_failed"),
                      qid, str(exc))
            metrics.TEMPFAILS.labels("registry").inc(sum(r.ok for r in replies))
            replies = [exc.reply if r.ok else r for r in replies]
        if log.isEnabledFor(logging.INFO):   # the fields are made only for a line written
            log.info("event=message", extra={"fields": message_fields(qid, txn, view, decisions,
                                                                        replies)})
        return replies

    async def _record_loops(self, decisions: list[Decision], key: str, qid: str) -> None:
        """Count run-time loop detections in the registry, with their evidence."""
        for d in decisions:
            if d.loop is None:
                continue
            metrics.LOOPS.labels(d.loop.kind.value).inc()
            log.warning("event=loop qid=%s rcpt=%s reply=%r evidence=%r", qid, d.rcpt,
                        str(d.reply), d.loop.evidence)
            try:
                await self.registry.record_loop(key, d.rcpt, d.loop.evidence)
            except RegistryError as exc:   # the reply is already a refusal; keep going
                log.error("event=loop_not_recorded qid=%s error=%r", qid, str(exc))

    @staticmethod
    def _copies(decisions: list[Decision]) -> dict[str, Copy]:
        copies: dict[str, Copy] = {}
        for d in decisions:
            if d.action is Action.DELIVER:
                for t in d.targets:
                    copies.setdefault(t.key, Copy(t, d.rcpt))
        return copies

    async def _deliver(self, txn: Transaction, snap: Snapshot, copies: dict[str, Copy],
                       key: str, done: set[str], qid: str, head: bytes = b"",
                       intent: Intent | None = None) -> dict[str, Reply]:
        todo = [c for k, c in copies.items() if k not in done]
        received = functools.partial(self.deliverer.received, txn.helo, txn.peer,
                                     txn.protocol.upper(), qid)
        if head:        # the request's owner header, after our Received: line
            def received_with_owner(rcpt: str | None, base: Callable[[str | None], bytes] = received,
                                    ) -> bytes:
                return base(rcpt) + head
            received = received_with_owner  # type: ignore[assignment]
        prior = PRIOR.set(intent)      # each Maildir copy writes the intent first (intents.py)
        try:
            results = await self.deliverer.deliver(
                todo, snap.book.mailboxes, txn.raw, txn.mail_from, key, received, txn.smtputf8,
                first_seen=functools.partial(self.registry.first_seen, key), qid=qid) if todo else {}
        finally:
            PRIOR.reset(prior)
        results.update({k: REPLY_ALREADY_DELIVERED for k in copies if k in done})
        return results

    @staticmethod
    def _reply(d: Decision, results: dict[str, Reply]) -> Reply:
        if d.action is not Action.DELIVER:
            return d.reply
        if not d.targets:
            return REPLY_TEMPFAIL
        got = [results[t.key] for t in d.targets]
        temp = [r for r in got if r.temporary]
        if temp:
            return temp[0]
        perm = [r for r in got if not r.ok]
        return perm[0] if perm else REPLY_DELIVERED

    @staticmethod
    def _message_record(txn: Transaction, view: MessageView, snap: Snapshot, key: str,
                        replies: list[Reply], now: datetime | None = None) -> MessageRecord:
        ok = sum(r.ok for r in replies)
        status = ("delivered" if ok == len(replies) else "partial" if ok
                  else "deferred" if any(r.temporary for r in replies) else "rejected")
        return MessageRecord(
            key=key, received_at=now or datetime.now(timezone.utc), protocol=txn.protocol, peer=txn.peer,
            mail_from=txn.mail_from, rcpts=txn.rcpts, message_id=view.message_id,
            from_name=view.from_name, from_addr=view.from_addr, subject=view.subject,
            size=view.size, content_hash=view.content_hash, defects=tuple(view.defects),
            ruleset_hash=snap.hash, status=status)


def message_fields(qid: str, txn: Transaction, view: MessageView, decisions: list[Decision],
                   replies: list[Reply]) -> dict[str, object]:
    """The one log line per message (logs.py): our queue id, Postfix's, every recipient."""
    return {"qid": qid, "upstream_id": upstream_id(txn.raw), "sender": txn.mail_from,
            "message_id": view.message_id, "size": len(txn.raw), "rcpts": [
                {"rcpt": d.rcpt, "action": d.action.value, "mailbox": d.mailbox,
                 "folder": d.folder, "rule": d.rules[0].name if d.rules else None,
                 "reply": str(r)} for d, r in zip(decisions, replies)]}


def _registry_event(exc: RegistryError, outage: str) -> str:
    return "registry_bug_deferred" if isinstance(exc, RegistryBugError) else outage


def _decision_record(d: Decision, reply: Reply) -> DecisionRecord:
    return DecisionRecord(
        rcpt=d.rcpt, action=d.action.value, reply=str(reply), mailbox=d.mailbox, folder=d.folder,
        owner=d.owner, tags=d.tags, priority=d.priority, sla=d.sla, path=d.path,
        reasons=d.explained, rules=tuple(r.as_dict() for r in d.rules))

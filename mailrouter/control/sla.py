"""The SLA scheduler: reminders to the owner, then escalation, each stage once.

Every `control.scan_every` seconds (and whenever a test calls `tick(now)` with its
own clock) one write transaction:

- takes the open requests whose answer owed (`response_due`: the first response, or
  the next one after the customer, or a person, reopened the request) is past due and
  not yet escalated in that round, locked with `FOR UPDATE SKIP LOCKED` on PostgreSQL so a second
  instance scanning at the same moment skips them instead of waiting;
- `remind`: `control.remind_after` of working time (the request's SLA calendar;
  elapsed time without one) after the due time, a reminder to the owner, or the
  owner's deputy when the owner is away that day (address book `away:`, the day in
  the person's zone: control/owners.py Zones);
- `escalate`: `control.escalate_after` of working time after the reminder, to the
  owner's deputy (down the chain of those away), or when the deputy is the one who
  got the reminder, is away with every deputy after, or there is none, to the
  team's `head:`, else `control.head`;
- closes answered/waiting requests quiet for `control.close_after`.
- deletes thread claims (control/store.py claim_thread) of messages never recorded: the
  process died, or the registry failed, between the claim and the record. A retry of
  such a message (Postfix keeps it 5 days) should take the claimed owner, so a claim
  goes CLAIM_MAX_AGE (a week) after its `claimed_at` (revision 0008). Before, the week
  counted in this scheduler's memory from the first scan that saw the claim, and a
  restart started it again: a daemon restarted weekly kept every claim for ever.

Each stage is a row of `request_alerts`, unique per (request, round, stage): each
answer owed (`requests.response_round`, revision 0010) gets its own reminder and
escalation (before, a reopened request was never reminded again), inserted with
ON CONFLICT DO NOTHING: whatever restarts or instances do, only the insert that
wins creates the alert. The same transaction puts its mail (control/notice.py) into
the outbox (outbox.py sends it through the relay, retrying) under the dedupe key
`sla:<request>:<stage>` (`:<round>` added after the first), and marks the alert
`queued`; an alert whose recipient has no address is marked `no_address` and sent
nowhere. So each reminder is created, and
sent, once: a crash before the commit leaves neither row, after it both.

Refused: nothing; a request whose owner left the address book is reminded to the head.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, and_, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..config import ControlConfig
from ..errors import RegistryError
from ..registry import Registry
from ..registry.models import messages
from .notice import Notices, queue_notice
from .owners import Zones, on_duty
from .store import add_event, reopened_by
from .tables import request_alerts, request_events, requests, thread_claims

__all__ = ["Alert", "Scheduler"]

log = logging.getLogger("mailrouter.control")
_BATCH = 500            # requests per scan; the next scan takes the rest
CLAIM_MAX_AGE = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Alert:
    request: int
    stage: str              # remind | escalate
    at: datetime
    recipient: str | None   # person key
    address: str | None


def _utc() -> datetime:
    return datetime.now(timezone.utc)


class Scheduler:
    def __init__(self, registry: Registry, cfg: ControlConfig, snapshot: Callable[[], Any],
                 clock: Callable[[], datetime] = _utc, hostname: str = "localhost",
                 wake: Callable[[], None] | None = None, web_url: str | None = None) -> None:
        self.registry, self.cfg, self.snapshot, self.clock = registry, cfg, snapshot, clock
        self.notices = Notices.of(cfg, hostname, web_url)
        self.wake = wake            # the outbox worker's: new rows, send now

    async def run(self, stop: asyncio.Event) -> None:
        """Scan until `stop` is set; a registry outage is logged and retried next time, and
        so is any other failure of a scan (a bug, a calendar past its search limit): it ended
        this task, and no request was reminded or escalated again until a restart."""
        while not stop.is_set():
            try:
                await self.tick()
            except RegistryError as exc:
                log.error("event=sla_scan_failed error=%r", str(exc))
            except Exception:  # noqa: BLE001 (the next scan may get past it; each is logged)
                log.exception("event=sla_scan_crashed")
            try:
                await asyncio.wait_for(stop.wait(), self.cfg.scan_every)
            except TimeoutError:
                pass

    async def tick(self, now: datetime | None = None) -> list[Alert]:
        """One scan at `now`; the alerts THIS call created."""
        at = now or self.clock()
        snap = self.snapshot()
        made = await self.registry.write("sla_scan", lambda conn: self._scan(conn, at, snap))
        if self.wake is not None and any(a.address for a in made):
            self.wake()
        return made

    def _later(self, snap: Any, calendar: str | None, start: datetime, seconds: float) -> datetime:
        """`seconds` of working time after `start`; none (remind_after: 0) is `start` itself.
        The calendar's "0 hours after" a due time at the end of a span (12:00 before lunch,
        18:00) is the next span's start: the reminder came an hour, or a night, after the
        request fell due, while one due a minute earlier was reminded on time."""
        cal = snap.rules.calendars.get(calendar) if calendar else None
        if cal is None or seconds <= 0:
            return start + timedelta(seconds=seconds)
        due: datetime = cal.add_business_hours(start, seconds / 3600)
        return due.astimezone(timezone.utc)

    def _scan(self, conn: Connection, now: datetime, snap: Any) -> list[Alert]:
        """Up to _BATCH alerts. The overdue requests not yet escalated are read a batch at
        a time, soonest due first, on past those whose next stage is not due yet: before,
        one batch of requests reminded and waiting for their escalation (or due and waiting
        for remind_after) held back the reminder of every request due after them."""
        this_round = and_(request_alerts.c.request_id == requests.c.id,
                          request_alerts.c.round == requests.c.response_round)
        escalated = exists().where(this_round, request_alerts.c.stage == "escalate")
        due, rid = requests.c.response_due, requests.c.id
        made: list[Alert] = []
        after: tuple[datetime, int] | None = None
        while len(made) < _BATCH:
            query = select(requests).where(requests.c.status == "open", due <= now, ~escalated)
            if after is not None:
                query = query.where(or_(due > after[0], and_(due == after[0], rid > after[1])))
            query = query.order_by(due, rid).limit(_BATCH)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=requests)
            rows = [dict(r._mapping) for r in conn.execute(query)]
            made += self._stages(conn, now, snap, rows, _BATCH - len(made))
            if len(rows) < _BATCH:
                break
            after = (rows[-1]["response_due"], rows[-1]["id"])
        self._quiet_close(conn, now)
        self._purge_claims(conn, now)
        return made

    def _stages(self, conn: Connection, now: datetime, snap: Any, rows: list[dict[str, Any]],
                most: int) -> list[Alert]:
        """Up to `most` alerts due at `now` for `rows` (overdue, not escalated this round);
        the rest are the next scan's."""
        reminded = {(r.request_id, r.round): r for r in conn.execute(
            select(request_alerts.c.request_id, request_alerts.c.round, request_alerts.c.at,
                   request_alerts.c.recipient)
            .where(request_alerts.c.request_id.in_([r["id"] for r in rows]),
                   request_alerts.c.stage == "remind"))} if rows else {}
        made: list[Alert] = []
        for r in rows:
            if len(made) >= most:
                break
            done = reminded.get((r["id"], r["response_round"]))
            if done is None:
                if self._later(snap, r["sla_calendar"], r["response_due"],
                               self.cfg.remind_after) <= now:
                    made += self._alert(conn, snap, r, "remind", now, None)
            elif self._later(snap, r["sla_calendar"], done.at, self.cfg.escalate_after) <= now:
                made += self._alert(conn, snap, r, "escalate", now, done.recipient)
        return made

    def _recipient(self, snap: Any, r: dict[str, Any], stage: str, now: datetime,
                   reminded: str | None) -> str | None:
        """Remind: the owner, or the deputy on duty. Escalate: the owner's deputy on duty
        unless that one had the reminder or is away (the whole chain away: on_duty gives
        the first back), else the team's head or control.head; an away deputy only when
        there is no head at all."""
        people, owner = snap.book.people, r["owner"]
        zones = Zones.of(snap.book.teams, snap.rules.calendars)
        if stage == "remind" and owner in people:
            return on_duty(people, owner, now, zones)[0]
        deputy = people[owner].deputy if owner in people else None
        away = None
        if deputy is not None:
            deputy = on_duty(people, deputy, now, zones)[0]
            if deputy != reminded:
                if not zones.is_away(people[deputy], now):
                    return str(deputy)
                away = str(deputy)
        team = snap.book.teams.get(r["team"]) if r["team"] else None
        head = team.head if team is not None and team.head else self.cfg.head
        return head if head in people else away

    def _alert(self, conn: Connection, snap: Any, r: dict[str, Any], stage: str, now: datetime,
               reminded: str | None) -> list[Alert]:
        who = self._recipient(snap, r, stage, now, reminded)
        person = snap.book.people.get(who) if who else None
        address = person.address if person is not None else None
        by = reopened_by([dict(e._mapping) for e in conn.execute(
            select(request_events.c.kind, request_events.c.detail, request_events.c.actor)
            .where(request_events.c.request_id == r["id"], request_events.c.kind == "status")
            .order_by(request_events.c.id))]) if r["response_round"] > 1 else None
        subject, body = self.notices.alert(r, stage, reminded, snap.rules.calendars, by, who)
        ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(request_alerts)
        done = conn.execute(ins.values(request_id=r["id"], round=r["response_round"],
                                       stage=stage, at=now, recipient=who,
                                       address=address, subject=subject, body=body,
                                       state="queued" if address else "no_address")
                            .on_conflict_do_nothing())
        if not done.rowcount:           # another instance (or an earlier run) made it
            return []
        if address:
            self._enqueue(conn, r, stage, address, person.name if person else None, subject,
                          body, now)
        add_event(conn, r["id"], now, "reminder" if stage == "remind" else "escalation",
                  f"to {who or 'nobody (no deputy or head configured)'}")
        log.info("event=sla_%s request=%d recipient=%s", stage, r["id"], who)
        return [Alert(r["id"], stage, now, who, address)]

    def _enqueue(self, conn: Connection, r: dict[str, Any], stage: str, address: str,
                 name: str | None, subject: str, body: str, now: datetime) -> None:
        """The alert's mail into the outbox, in the scan's transaction. Its times are the
        wall clock's, not the scan's: the outbox worker sends by real time."""
        queue_notice(conn, self.notices, f"sla:{r['id']}:{stage}" + (
            f":{r['response_round']}" if r["response_round"] > 1 else ""), f"sla-{stage}",
            r["message_key"], address, name, subject, body, now)

    def _purge_claims(self, conn: Connection, now: datetime) -> None:
        """Delete the claims of messages still unrecorded CLAIM_MAX_AGE after the claim.
        A claim without a time (made by a daemon older than revision 0008 during an
        upgrade) gets this scan's: its week starts now."""
        conn.execute(update(thread_claims).where(thread_claims.c.claimed_at.is_(None))
                     .values(claimed_at=now))
        unrecorded = ~exists().where(messages.c.key == thread_claims.c.message_key)
        old = list(conn.execute(select(thread_claims.c.message_id).where(
            thread_claims.c.claimed_at <= now - CLAIM_MAX_AGE, unrecorded)
            .order_by(thread_claims.c.message_id).limit(_BATCH)).scalars())
        if old:
            conn.execute(thread_claims.delete().where(thread_claims.c.message_id.in_(old),
                                                      unrecorded))
            log.info("event=thread_claims_purged count=%d", len(old))

    def _quiet_close(self, conn: Connection, now: datetime) -> None:
        if self.cfg.close_after <= 0:
            return
        cutoff = now - timedelta(seconds=self.cfg.close_after)
        quiet = and_(requests.c.status.in_(("answered", "waiting")),
                     requests.c.last_in_at <= cutoff,
                     requests.c.last_out_at.is_(None) | (requests.c.last_out_at <= cutoff))
        # a quiet request another transaction holds (a record joining the customer's new
        # mail to it) is left to the next scan: waiting for it while this scan holds the
        # overdue requests it reminds, which that record may join next, deadlocked, and
        # PostgreSQL aborted the record's whole batch (451) or the scan
        found = select(requests.c.id).where(quiet).limit(_BATCH)
        if conn.dialect.name == "postgresql":
            found = found.with_for_update(skip_locked=True)
        ids = [i for (i,) in conn.execute(found)]
        if not ids:
            return
        closed = conn.execute(update(requests).where(requests.c.id.in_(ids), quiet)
                              .values(status="closed", closed_at=now).returning(requests.c.id))
        for (i,) in closed.all():      # only the rows this scan closed (not another instance)
            add_event(conn, i, now, "status", "-> closed: quiet for control.close_after")

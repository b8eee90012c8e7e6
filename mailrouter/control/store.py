"""Requests in the registry: plan a message's request (read), then write it (in the record).

`plan_message` runs before delivery, on a read connection: it finds the request a
message belongs to (a reply-tracking copy of our outgoing mail, a follow-up by
reference or by our number, or none: a new request with an owner chosen now, so
the owner header can go on the delivered copies). `apply_plan` runs inside the
registry's record transaction for the message, so a message and its request row
commit together or not at all.

Refused: a follow-up whose sender took no part in the request it names (see
threads.took_part) does not join it; the refusal is an event on that request
(`join_refused`) and the message opens a request of its own. Robot mail (bounces,
auto-replies, lists) neither opens nor reopens a request, nor, as a copy of our outgoing
mail, answers one (an out-of-office reply, a reminder copied by sender_bcc_maps). A follow-up
from one of ours (a person of the address book writing from our domains, not the request's
customer: the owner forwarding the thread to the team's address) joins without reopening it.

Messages arriving together: the plan is read before delivery and written after it, so
a second transaction of the very same message (an MTA splitting recipients), or a
follow-up naming a message whose request is not committed yet, may plan "open" too.
Within one process, Control.plan orders the messages of a thread in flight (a follow-up
waits for the message it names, or that message for a follow-up planned before it).
Across processes (workers, instances) `apply_plan` looks again inside the write, after
waiting for every other transaction writing requests (_one_at_a_time): the same message
already in a request adds nothing; an open whose references, or its own Message-ID, now
name a request it may join joins it. Every Message-ID a request's messages carry or name
is kept (`request_threads`), so an original recorded after its follow-up joins too.
Before delivery an open claims its thread's Message-IDs with the owner it planned
(`claim_thread`, `thread_claims`), so two instances planning one thread at the same
moment head its copies with one owner, and the team's turn moves once (a message without
a Message-ID claims its registry key instead, `key_claim`). A team's pick is
made in that same transaction, the team's turn taken in the registry (_team_turn), so
picks at any number of processes follow one cursor. A claim whose message is never
recorded stays a week (a row per Message-ID); a later message of its thread takes its owner.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..addressbook.model import Team
from ..registry.models import messages
from ..routing.sla_spec import parse_duration
from ..values import OPEN_REQUEST_STATUSES
from .owners import OwnerChoice, TeamState

from .tables import (request_events, request_messages, request_threads, requests, team_picks,
                     thread_claims)
from .threads import domain_of, took_part

__all__ = ["Plan", "DbTeamState", "find_by_refs", "participants", "apply_plan", "add_event",
           "claim_thread", "joining", "next_due", "reopened", "reopened_by", "CUSTOMER_WROTE"]

_REQUESTS_LOCK = 0x6D725251      # pg_advisory_xact_lock key of _one_at_a_time ("mrRQ")
_PICK_LOCK = 0x6D725450          # first key of _team_turn's lock, the team's hash second ("mrTP")
PENDING = timedelta(minutes=15)  # a claim of an unrecorded message counts as open this long


@dataclass(frozen=True, slots=True)
class Plan:
    """What the record transaction does for one message's request."""

    kind: str                                  # open | join | reply | known | none
    sender: str
    message_id: str | None
    request_id: int | None = None
    owner: str | None = None
    team: str | None = None
    picked: str | None = None                  # the team member picked (round-robin cursor)
    why: tuple[str, ...] = ()
    mailbox: str | None = None
    rule: str | None = None
    subject: str = ""
    priority: str | None = None
    tags: tuple[str, ...] = ()
    calendar: str | None = None
    due: datetime | None = None
    close: bool = False                        # a reply carrying the close marker
    wait: bool = False                         # a reply carrying the waiting marker
    refused: tuple[tuple[int, str], ...] = field(default=())   # (request, why) joins refused
    refs: tuple[str, ...] = ()                 # In-Reply-To/References, looked up again at write
    join: str = "address"                      # control.join, for that second look
    owner_key: str | None = None               # an open's rule's owner: person or team
    term: str | None = None                    # an open's SLA first_response ("4h")
    calendars: Any = field(default=None, compare=False)  # the snapshot's, for a reopen's due
    flight: Any = field(default=None, compare=False)   # Control.settle's token
    staff: str | None = None                   # a join's sender is this person of ours


def next_due(calendars: Mapping[str, Any] | None, calendar: str | None, term: str | None,
             at: datetime) -> datetime | None:
    """When an answer owed from `at` is due: the SLA `term` ("4h", "1d") on `calendar`'s
    working time (elapsed time without one, or when the routing files no longer name it);
    None without a term."""
    if not term:
        return None
    try:
        days, hours = parse_duration(term)
    except ValueError:
        return None
    cal = (calendars or {}).get(calendar) if calendar else None
    if cal is None:
        return at + timedelta(days=days, hours=hours)
    due: datetime = cal.add_business_hours(at, days * cal.day_hours + hours)
    return due


CUSTOMER_WROTE = "the customer wrote"     # the why of a reopen by the customer's mail


def reopened_by(events: Iterable[Mapping[str, Any]]) -> str | None:
    """Who reopened the request by hand for the answer owed now (the actor of its last
    reopen, in `events`: request_events rows in order), or None when the customer wrote.
    A reminder or `request show` said "the customer wrote again" after a head's reopen."""
    last = None
    for e in events:
        if e["kind"] == "status" and " -> open: " in (e["detail"] or ""):
            last = e
    if last is None or f" -> open: {CUSTOMER_WROTE}" in last["detail"]:
        return None
    return str(last["actor"] or "?")


def owner_change(detail: str | None) -> dict[str, Any] | None:
    """An owner event's detail (JSON: from, to, why, and team when it moved) as a dict, or
    None for one that is not (a row an older release or a hand wrote)."""
    try:
        change = json.loads(detail or "")
    except ValueError:
        return None
    return change if isinstance(change, dict) else None


def reopened(conn: Connection, rid: int, row: Mapping[str, Any], at: datetime,
             calendars: Mapping[str, Any] | None, why: str, actor: str | None) -> None:
    """Request `rid` (its `row`, not open) is open again: someone owes the customer an
    answer, due its SLA term from `at` (a new round: its own reminder and escalation).
    The customer's mail and a person's `reopen` alike."""
    due = next_due(calendars, row["sla_calendar"], row["sla_term"], at)
    conn.execute(update(requests).where(requests.c.id == rid).values(
        status="open", closed_at=None, response_due=due,
        response_round=requests.c.response_round + 1))
    add_event(conn, rid, at, "status", f"{row['status']} -> open: {why}; "
              + (f"answer due {due.isoformat()}" if due else "no SLA"), actor)


class DbTeamState:
    """TeamState from the registry: the last pick of `team`, open requests per person.

    Read by `claim_thread` under the team's turn lock, so the pick itself does no I/O and
    the next pick, at any instance, reads this one's cursor. An open count adds the claims
    of messages not recorded yet, made in the last PENDING (in delivery here or at another
    instance): two picks a moment apart see each other's load."""

    def __init__(self, conn: Connection, members: Iterable[str], team: str | None = None,
                 at: datetime | None = None) -> None:
        members = list(members)
        self.counts: dict[str, int] = {}
        if members:
            for owner, count in conn.execute(select(requests.c.owner, func.count()).where(
                    requests.c.owner.in_(members), requests.c.status.in_(OPEN_REQUEST_STATUSES))
                    .group_by(requests.c.owner)):
                self.counts[owner] = int(count)
            if at is not None:
                for owner, count in conn.execute(
                        select(thread_claims.c.owner,
                               func.count(thread_claims.c.message_key.distinct()))
                        .where(thread_claims.c.owner.in_(members),
                               thread_claims.c.claimed_at >= at - PENDING,
                               ~exists().where(messages.c.key == thread_claims.c.message_key))
                        .group_by(thread_claims.c.owner)):
                    self.counts[owner] = self.counts.get(owner, 0) + int(count)
        self.picks: dict[str, str] = {}
        if team is not None:
            member = conn.execute(select(team_picks.c.member).where(
                team_picks.c.team == team)).scalar_one_or_none()
            if member is not None:
                self.picks[team] = member

    def last_pick(self, team: str) -> str | None:
        return self.picks.get(team)

    def open_count(self, person: str) -> int:
        return self.counts.get(person, 0)


def find_by_refs(conn: Connection, refs: Sequence[str]) -> list[int]:
    """Requests holding any of the Message-IDs `refs`, in the order of `refs`: a request
    holding the message itself first, else one whose thread names it (request_threads)."""
    if not refs:
        return []
    by_id: dict[str, int] = {}
    for mid, rid in conn.execute(select(request_messages.c.message_id, request_messages.c.request_id)
                                 .where(request_messages.c.message_id.in_(list(refs)))
                                 .order_by(request_messages.c.id)):
        by_id.setdefault(mid, rid)
    rest = [r for r in refs if r not in by_id]
    if rest:
        by_id.update((m, r) for m, r in conn.execute(
            select(request_threads.c.message_id, request_threads.c.request_id)
            .where(request_threads.c.message_id.in_(rest))))
    return list(dict.fromkeys(by_id[r] for r in refs if r in by_id))


def request_row(conn: Connection, request_id: int) -> Mapping[str, Any] | None:
    row = conn.execute(select(requests).where(requests.c.id == request_id)).first()
    return dict(row._mapping) if row is not None else None


def participants(conn: Connection, request_id: int) -> set[str]:
    """Everyone who wrote in the request, and its counterparty."""
    found = {r[0] for r in conn.execute(select(request_messages.c.sender).where(
        request_messages.c.request_id == request_id))}
    row = request_row(conn, request_id)
    if row is not None:
        found.add(row["counterparty"])
    return {f.lower() for f in found if f}


def known_message(conn: Connection, key: str) -> int | None:
    """The request a message (by registry key) is already part of: a retry."""
    return conn.execute(select(request_messages.c.request_id).where(
        request_messages.c.message_key == key).limit(1)).scalar_one_or_none()


def add_event(conn: Connection, request_id: int, at: datetime, kind: str, detail: str,
              actor: str | None = None) -> None:
    conn.execute(insert(request_events).values(request_id=request_id, at=at, kind=kind,
                                               actor=actor, detail=detail))


def _link(conn: Connection, plan: Plan, request_id: int, key: str, direction: str,
          at: datetime) -> bool:
    """Add the message to the request; False when it already is there (a retry)."""
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(request_messages)
    done = conn.execute(ins.values(request_id=request_id, message_key=key,
                                   message_id=plan.message_id, direction=direction, at=at,
                                   sender=plan.sender).on_conflict_do_nothing())
    return bool(done.rowcount)


def apply_plan(conn: Connection, plan: Plan, key: str, at: datetime,
               answers: Sequence[str] = ()) -> int | None:
    """Write `plan` for message `key` (inside the record transaction); the request number.
    `answers`: the Message-IDs of the mail we send in answer to it (an autoreply): they
    name the request too, so the customer's answer to our answer joins it."""
    rid = _apply(conn, plan, key, at)
    if rid is not None and answers and plan.kind != "none":
        _claim(conn, rid, answers)
    return rid


def _apply(conn: Connection, plan: Plan, key: str, at: datetime) -> int | None:
    _one_at_a_time(conn)
    if plan.kind in ("open", "join"):
        late = _opened_meanwhile(conn, plan, key)
        if isinstance(late, int):
            return late
        plan = late or plan
    for rid, why in plan.refused:
        add_event(conn, rid, at, "join_refused", why, plan.sender)
    if plan.kind == "open":
        rid = _open(conn, plan, key, at)
        _claim(conn, rid, plan.refs + (plan.message_id,))
        return rid
    if plan.kind in ("join", "reply") and plan.request_id is not None:
        rid = plan.request_id
        if not _link(conn, plan, rid, key, "out" if plan.kind == "reply" else "in", at):
            return rid
        _claim(conn, rid, (plan.message_id,) + (plan.refs if plan.kind == "join" else ()))
        if plan.kind == "join":
            conn.execute(update(requests).where(requests.c.id == rid).values(last_in_at=at))
            add_event(conn, rid, at, "joined", f"follow-up {plan.message_id or key[:12]}",
                      plan.sender)
            row = request_row(conn, rid)        # as it is now, not as planned
            if row is not None and row["status"] != "open":
                if plan.staff is None or plan.sender == row["counterparty"]:
                    reopened(conn, rid, row, at, plan.calendars, CUSTOMER_WROTE, plan.sender)
                else:       # one of ours (a forward to the team's address): no answer owed
                    add_event(conn, rid, at, "status", f"stays {row['status']}: "
                              f"{plan.staff} is one of ours, not the customer", plan.sender)
        else:
            _reply(conn, plan, rid, at)
        return rid
    return plan.request_id


def _one_at_a_time(conn: Connection) -> None:
    """Wait until no other transaction is writing requests, so the looks below see what
    they committed (PostgreSQL, read committed: each statement sees every commit made
    before it began). Before, two instances recording an original and its follow-up, or
    one message twice, at the same moment each opened a request: neither saw the other.
    One lock for all threads, not one per thread: a batch holds many messages, and locks
    per thread taken in batch order by two instances deadlock. Released at commit or
    rollback. SQLite needs nothing: its writers take turns on the file, and a write
    transaction always reads the newest commit."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_REQUESTS_LOCK)))


def _claim(conn: Connection, rid: int, ids: Iterable[str | None]) -> None:
    """Note the Message-IDs `ids` as request `rid`'s thread; one already noted keeps its
    request (a stranger's reference does not move it)."""
    rows = [{"message_id": m, "request_id": rid} for m in dict.fromkeys(ids) if m]
    if rows:
        conn.execute(_insert(conn, request_threads).on_conflict_do_nothing(), rows)


def _insert(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def claim_thread(conn: Connection, plan: Plan, key: str, at: datetime,
                 choose: Callable[[TeamState], OwnerChoice], team: Team | None) -> Plan:
    """Before delivery, in a transaction of its own: the owner of `plan` (an open). Taken
    from another message's claim on its thread (another instance planned the thread at
    the same moment, or recorded it since, or this very message got 4xx before), else
    chosen now by `choose` (owners.choose_owner) with `team`'s turn read and moved here;
    then the thread's Message-IDs are claimed for that owner.

    Team picks take turns (_team_turn): each reads the cursor the previous one moved and
    committed, at whichever instance it ran. Before, each process read the cursor at
    plan time and laid its own uncommitted picks over it: two instances taking new
    messages at once gave both to one member, and one member got most of a burst.

    The claims go in before anything is read, in Message-ID order: a second claim of one
    ID waits for the first to commit (unique key), then sees it, and two claims never
    wait on each other in a circle (a transaction takes at most one team's turn, before
    any claim). On SQLite the first statement takes the file's write lock. The copies
    are delivered with the owner header before the record; without the claim, two
    instances planning an original and its follow-up together each picked an owner and
    one thread's copies named two people."""
    if team is not None:
        _team_turn(conn, team.key)
    ids = list(dict.fromkeys(m for m in plan.refs + (plan.message_id,) if m))
    if plan.message_id is None:
        # no Message-ID: the message claims its key. Before, such a message claimed
        # nothing (with no References either), and the same message at two instances
        # at once (the MTA's retry after a timeout) was picked at each: the team's turn
        # moved twice and the copy stored could name the member the request did not get
        ids.append(key_claim(key))
    mine: set[str] = set()
    if ids:
        mine = set(conn.execute(_insert(conn, thread_claims).values([
            {"message_id": m, "message_key": key, "sender": plan.sender, "owner": None,
             "team": None, "claimed_at": at} for m in sorted(ids)]).on_conflict_do_nothing()
            .returning(thread_claims.c.message_id)).scalars())
    theirs = [m for m in ids if m not in mine]       # none: nobody else claimed any
    found = list(conn.execute(select(thread_claims).where(
        thread_claims.c.message_id.in_(theirs)))) if theirs else []
    for r in sorted(found, key=lambda r: ids.index(r.message_id)):
        if r.owner is not None and took_part(plan.sender, [r.sender], plan.join):
            _own(conn, mine, r.owner, r.team)
            why = ("this message was given to it before (a retry)" if r.message_key == key else
                   f"the thread's message {r.message_id} was planned for {r.owner}")
            return replace(plan, owner=r.owner, team=r.team, picked=None,
                           why=(f"{why}: the same owner",))
    # the open counts only where they decide (least-open): two aggregates saved per pick
    counted = team.members if team is not None and team.pick == "least-open" else ()
    state = DbTeamState(conn, counted, team.key if team else None, at)
    choice = choose(state)
    if choice.team is not None and choice.member is not None:
        _set_pick(conn, choice.team, choice.member, at)
    _own(conn, mine, choice.owner, choice.team)
    return replace(plan, owner=choice.owner, team=choice.team, picked=choice.member,
                   why=choice.why)


def key_claim(key: str) -> str:
    """The thread_claims id of a message without a Message-ID: its registry key, in a form
    no Message-ID of ours or a sender's takes by chance (RFC 2606 .invalid)."""
    return f"<{key}@key.mailrouter.invalid>"


def _own(conn: Connection, mine: set[str], owner: str | None, team: str | None) -> None:
    if mine:
        conn.execute(update(thread_claims).where(thread_claims.c.message_id.in_(mine))
                     .values(owner=owner, team=team))


def _team_turn(conn: Connection, team: str) -> None:
    """Wait until no other transaction is picking from `team` (until its commit): the
    cursor and counts read next are the previous pick's. PostgreSQL: a transaction-level
    advisory lock per team. SQLite: a write (even of no row) takes the file's write lock,
    and a transaction whose first statement is a write reads the newest commit."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_PICK_LOCK, func.hashtext(team))))
    else:
        conn.execute(update(team_picks).where(team_picks.c.team == team)
                     .values(member=team_picks.c.member))


def _opened_meanwhile(conn: Connection, plan: Plan, key: str) -> int | Plan | None:
    """What committed since `plan` (an open or a join) was read: the request already holding
    this very message (its number); for an open, a join of the request its references or
    its own Message-ID (named by a follow-up recorded before it) now name (a Plan)."""
    rid = known_message(conn, key)
    if rid is not None:
        return rid
    if plan.kind != "open":
        return None
    for rid in find_by_refs(conn, plan.refs + ((plan.message_id,) if plan.message_id else ())):
        row = request_row(conn, rid)
        if row is not None and took_part(plan.sender, participants(conn, rid), plan.join):
            return joining(plan, rid, row)
    return None


def joining(plan: Plan, rid: int, row: Mapping[str, Any]) -> Plan:
    """`plan` made a join of request `rid` (its `row`): its owner and team. Whether it
    reopens the request is read when it is written (_apply), under the requests lock."""
    return replace(plan, kind="join", request_id=rid, owner=row["owner"], team=row["team"],
                   picked=None)


def _open(conn: Connection, plan: Plan, key: str, at: datetime) -> int:
    rid = int(conn.execute(insert(requests).values(
        opened_at=at, message_key=key, counterparty=plan.sender,
        counterparty_domain=domain_of(plan.sender), mailbox=plan.mailbox, rule=plan.rule,
        owner=plan.owner, team=plan.team, status="open", subject=plan.subject,
        priority=plan.priority, tags=list(plan.tags), sla_calendar=plan.calendar,
        first_response_due=plan.due, response_due=plan.due, sla_term=plan.term,
        last_in_at=at).returning(requests.c.id)).scalar_one())
    _link(conn, plan, rid, key, "in", at)
    add_event(conn, rid, at, "opened", f"rule {plan.rule}" if plan.rule else "opened", plan.sender)
    if plan.owner is not None or plan.why:     # a rule naming no owner: no "(nobody) -> (nobody)"
        add_event(conn, rid, at, "owner", json.dumps({"from": None, "to": plan.owner,
                                                      "why": list(plan.why)}, ensure_ascii=False))
    return rid


def _set_pick(conn: Connection, team: str, member: str, at: datetime) -> None:
    """Move `team`'s cursor to `member` (under the team's turn: the newest pick)."""
    conn.execute(_insert(conn, team_picks).values(team=team, member=member, at=at)
                 .on_conflict_do_update(index_elements=["team"],
                                        set_={"member": member, "at": at}))


def _reply(conn: Connection, plan: Plan, rid: int, at: datetime) -> None:
    row = request_row(conn, rid)
    if row is None:
        return
    values: dict[str, Any] = {"last_out_at": at}
    first = row["first_response_at"] is None
    if first:
        values["first_response_at"] = at
    new = ("closed" if plan.close else "waiting" if plan.wait
           else "answered" if row["status"] == "open" else row["status"])
    if new != row["status"]:
        values["status"] = new
        values["response_due"] = None       # the answer owed is given (or none is owed)
        if new == "closed":
            values["closed_at"] = at
    conn.execute(update(requests).where(requests.c.id == rid).values(values))
    add_event(conn, rid, at, "reply", ("first response" if first else "reply")
              + f" {plan.message_id or ''}".rstrip(), plan.sender)
    if new != row["status"]:
        add_event(conn, rid, at, "status", f"{row['status']} -> {new}"
                  + (": close marker in the reply" if plan.close else
                     ": waiting marker in the reply" if plan.wait else ": we replied"), plan.sender)

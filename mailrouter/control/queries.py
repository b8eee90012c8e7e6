"""Reports and searches over the registry: what `mailrouter report`, `registry search`,
`registry history` and `request show` print. Each is one function on a connection that
returns plain rows (dicts), so the CLI prints them as text, JSON or CSV.

Every query is bounded by an index: requests by opened_at, owner/status,
status/first_response_due, counterparty or its domain; messages by received_at (a
sender by the walk, below); subject words (normalised as the rules do: NFKC, case-folded, ё = е, č = c, reply
prefixes stripped) by the subject-word index (registry/words.py).

Addresses are matched in any case of any alphabet: a sender (From) through the folded
column the registry writes with each message (messages.from_fold, Python's casefold:
registry.models.fold_address) and its (from_fold, received_at) index, the same text on
SQLite and PostgreSQL; a recipient by lower() on both sides (Python's on SQLite,
registry.store.unicode_lower; PostgreSQL's in a UTF-8 locale).

Known limits: `history DOMAIN` finds messages by the From address's domain with a
LIKE suffix match on the folded From, which no index serves; requests by domain are indexed.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, exists, func, or_, select, true

from ..registry.models import decisions, deliveries, messages
from ..registry.queries import Scope, folded_forms, from_domain, idn_forms, local_midnight, theirs
from ..registry.words import newest, parse_words
from ..values import OPEN_REQUEST_STATUSES
from .threads import MAX_NUMBER
from .tables import request_alerts, request_events, request_messages, requests

__all__ = ["report", "search", "history", "show_request", "board", "sla_left", "request_of",
           "may_see_request", "requests_in", "through_requests", "counterparty_threads", "counterparty_requests",
           "owned_by"]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 2)


def requests_in(scope: Scope | None) -> ColumnElement[bool]:
    """The requests `scope` may see: of its mailboxes, owned by its person, or by someone
    away whom that person covers now as the deputy on duty (`scope.covers`), or that person
    was reminded of or had escalated to (all: None). The reminder of a request opened before
    its owner's absence goes to the deputy covering it, and an escalation to a team's head,
    each with a link to the request: that page was "not found" for them, as were its
    messages, since the request stays its owner's. And until that reminder (the due time),
    the deputy covering a week's absence saw none of the absent owner's open requests."""
    if scope is None or scope.everything:
        return true()
    cond: ColumnElement[bool] = requests.c.mailbox.in_(sorted(scope.mailboxes))
    if not scope.owner:
        return cond
    alerted = exists().where(request_alerts.c.request_id == requests.c.id,
                             request_alerts.c.recipient == scope.owner)
    mine: ColumnElement[bool] = requests.c.owner == scope.owner
    if scope.covers:
        mine = requests.c.owner.in_(sorted(scope.covers | {scope.owner}))
    return or_(cond, mine, alerted)


def through_requests(mailboxes: frozenset[str], person: str | None,
                     covers: frozenset[str] = frozenset()) -> Callable[[Any], ColumnElement[bool]]:
    """For registry.queries.Scope.owns: a message key of a request of `mailboxes`, or
    owned by `person` (or by those `person` covers) now (the requests a viewer with those
    rights sees: requests_in); with `mailbox` (a decision's), of such a request of that
    mailbox: the decision that belongs to the request, not another department's decision
    of the same message."""
    seen = requests_in(Scope(mailboxes=mailboxes, owner=person, covers=covers))

    def owns(key: Any, mailbox: Any = None) -> ColumnElement[bool]:
        cond = [request_messages.c.message_key == key,
                requests.c.id == request_messages.c.request_id, seen]
        if mailbox is not None:
            cond.append(requests.c.mailbox.is_not_distinct_from(mailbox))
        return exists().where(*cond)
    return owns


def owned_by(person: str) -> Callable[[Any], ColumnElement[bool]]:
    """For registry.queries.search's `owned`: a message key of a request `person` owns now
    (picked by a team, covering as a deputy, reassigned), as `search --owner` reads it."""
    def owns(key: Any) -> ColumnElement[bool]:
        return exists().where(request_messages.c.message_key == key,
                              requests.c.id == request_messages.c.request_id,
                              requests.c.owner == person)
    return owns


def _hours(calendars: Mapping[str, Any], cal: str | None, start: datetime, end: datetime) -> float:
    """Working hours from `start` to `end` on the request's calendar (elapsed without one)."""
    c = calendars.get(cal) if cal else None
    if c is not None:
        return float(c.business_hours_between(start, end))
    return max(0.0, (end - start).total_seconds() / 3600)


def _response(rows: list[Any], now: datetime) -> dict[str, Any]:
    """First response (median, p90 in business hours) and SLA kept of (first, due, hours to
    the first response or None, closed_at, paused). One closed unanswered before it fell
    due (spam, a misdirected mail closed by hand) owed no answer: neither kept nor missed.
    Before, it counted as missed from its due time on, and a head's share fell hours after
    the close. So is one set waiting for the customer (or closed) before its first response
    and before that fell due (`paused`, _PAUSED): from then on no answer was owed, and the
    SLA timers reminded and escalated nobody (response_due NULL; README, "The answer
    owed"); a later answer, after the customer wrote again, is the reopened round's, shown
    as overdue and in reminders. It counted as missed once the first due time passed."""
    hours, kept, missed = [], 0, 0
    for first, due, took, closed, paused in rows:
        if took is not None:
            hours.append(took)
        if first is None and closed is not None and due is not None and closed < due:
            continue
        if paused is not None and due is not None and paused < due and (
                first is None or paused < first):
            continue
        if due is not None and (first is not None or due <= now):
            if first is not None and first <= due:
                kept += 1
            else:
                missed += 1
    return {"requests": len(rows), "answered": len(hours), "median": _percentile(hours, 50),
            "p90": _percentile(hours, 90), "kept": kept, "missed": missed,
            "share_kept": round(kept / (kept + missed), 4) if kept + missed else None}


# The report's default period, `mailrouter report`'s and the web view's alike: the last
# REPORT_DAYS days of the company's zone (calendars.company_zone), today the last of them.
# The CLI took now minus 30 days in UTC, the web 30 local days: one month, two answers.
REPORT_DAYS = 30


def report_first_day(last: date) -> date:
    """The first of the REPORT_DAYS company days that end with `last` (held at date.min)."""
    back = timedelta(days=REPORT_DAYS - 1)
    return max(last, date.min + back) - back


def report_period(now: datetime, zone: tzinfo, since: datetime | None = None,
                  until: datetime | None = None) -> tuple[datetime, datetime]:
    """(start, end) of a report, the end not included: the ends given as they are; without
    `until`, the midnight after today in `zone`; without `since`, the midnight that begins
    the first of the REPORT_DAYS days ending with the period's last day (report_first_day).
    The web view's default (its days `today - 29` .. `today`) is the same period."""
    end = until if until is not None else local_midnight(now.astimezone(zone).date(), zone, 1)
    if since is not None:
        return since, end
    try:        # the day the period ends in: an end at midnight ends the day before
        last = (end - timedelta(microseconds=1)).astimezone(zone).date()
    except OverflowError:
        last = date.min if end.year == 1 else date.max
    return local_midnight(report_first_day(last), zone), end


# When a request first stopped owing an answer while `open` without one of ours: set
# waiting for the customer (`request wait`) or closed by hand; the status events those
# write ("open -> waiting: ...", "open -> closed: ..."). A reply (markers included) sets
# first_response_at itself. From the (request_id, at) index.
_PAUSED = select(func.min(request_events.c.at)).where(
    request_events.c.request_id == requests.c.id, request_events.c.kind == "status",
    or_(request_events.c.detail.like("open -> waiting%"),
        request_events.c.detail.like("open -> closed%"))).scalar_subquery()


def report(conn: Connection, since: datetime, until: datetime, now: datetime,
           calendars: Mapping[str, Any], scope: Scope | None = None,
           zone: tzinfo = timezone.utc) -> dict[str, Any]:
    """Volume per mailbox/rule/owner/day, first-response times and SLA kept (overall, per
    mailbox, per owner), open and overdue per owner; only the requests `scope` may see.
    A day is a date in `zone` (calendars.company_zone), counted here from the opening
    times read below, not by the database's date(): PostgreSQL's follows its TimeZone."""
    span = and_(requests.c.opened_at >= since, requests.c.opened_at < until, requests_in(scope))
    out: dict[str, Any] = {"since": since.isoformat(), "until": until.isoformat()}
    for name, col in (("mailbox", requests.c.mailbox), ("rule", requests.c.rule),
                      ("owner", requests.c.owner)):
        rows = conn.execute(select(col, func.count()).where(span).group_by(col).order_by(col))
        out[f"volume_per_{name}"] = [{name: str(k) if k is not None else None, "requests": int(n)}
                                     for k, n in rows]
    every: list[Any] = []
    per_box: dict[str | None, list[Any]] = {}
    per_owner: dict[str | None, list[Any]] = {}
    per_day: dict[str, int] = {}
    for opened, first, due, cal, box, owner, closed, paused in conn.execute(select(
            requests.c.opened_at, requests.c.first_response_at, requests.c.first_response_due,
            requests.c.sla_calendar, requests.c.mailbox, requests.c.owner,
            requests.c.closed_at, _PAUSED).where(span)):
        # the business hours once per request: every request is in three of the groups
        every.append((first, due, None if first is None else _hours(calendars, cal, opened, first),
                      closed, paused))
        per_box.setdefault(box, []).append(every[-1])
        per_owner.setdefault(owner, []).append(every[-1])
        day = opened.astimezone(zone).date().isoformat()
        per_day[day] = per_day.get(day, 0) + 1
    out["volume_per_day"] = [{"day": d, "requests": n} for d, n in sorted(per_day.items())]
    whole = _response(every, now)
    out["first_response_hours"] = {k: whole[k] for k in ("answered", "median", "p90")}
    out["sla"] = {k: whole[k] for k in ("kept", "missed", "share_kept")}
    out["response_per_mailbox"] = [{"mailbox": k} | _response(v, now)
                                   for k, v in sorted(per_box.items(), key=lambda i: str(i[0]))]
    out["response_per_owner"] = [{"owner": k} | _response(v, now)
                                 for k, v in sorted(per_owner.items(), key=lambda i: str(i[0]))]
    # "open" is every request not closed (answered and waiting too), as ever; "awaiting"
    # the status open, an answer owed, which the text and the board call awaiting an answer
    awaiting = requests.c.status == "open"
    overdue = and_(awaiting, requests.c.response_due <= now)
    per: dict[str | None, dict[str, Any]] = {}
    for owner, n, w, o in conn.execute(select(
            requests.c.owner, func.count(), func.count().filter(awaiting),
            func.count().filter(overdue)).where(
            requests.c.status != "closed", requests_in(scope)).group_by(requests.c.owner)):
        per[owner] = {"owner": owner, "open": int(n), "awaiting": int(w), "overdue": int(o)}
    out["open_per_owner"] = sorted(per.values(), key=lambda r: str(r["owner"]))
    return out


def sla_left(calendars: Mapping[str, Any], cal: str | None, due: datetime | None,
             now: datetime, cache: dict[Any, float] | None = None) -> float | None:
    """Business hours until `due` (the answer owed); negative when overdue by that much.

    `cache` (one dict per `now`) keeps the working hours from the midnight after a due day
    to `now`, so a board of many requests overdue since the same days walks each day once."""
    if due is None:
        return None
    if due >= now:
        return round(_hours(calendars, cal, now, due), 2)
    c = calendars.get(cal) if cal else None
    if c is None or cache is None:
        return -round(_hours(calendars, cal, due, now), 2)
    day = c.local(due).date()
    midnight = datetime.combine(day + timedelta(days=1), time(0), c.tz)
    if midnight >= now:
        return -round(_hours(calendars, cal, due, now), 2)
    if (cal, day) not in cache:
        cache[(cal, day)] = _hours(calendars, cal, midnight, now)
    return -round(_hours(calendars, cal, due, midnight) + cache[(cal, day)], 2)


def board(conn: Connection, now: datetime, calendars: Mapping[str, Any],
          scope: Scope | None = None, owner: str | None = None, mailbox: str | None = None,
          limit: int = 200, after: tuple[datetime | None, int] | None = None) -> dict[str, Any]:
    """Requests not closed, per owner and per mailbox (not closed, awaiting an answer,
    overdue), and the `limit` awaiting an answer soonest due (overdue first), each with its
    SLA time left in business hours; `owner`/`mailbox` narrow the list, `after` (the last
    row's response_due and id, `next` of the answer) gives the next page.

    Awaiting an answer is `open`: a new request (its first response) or one reopened by
    its customer or by hand (the next answer, `response_round` > 1), due `response_due`.
    Before, only requests without a first response were listed and counted overdue: a
    reopened one looked fine however long its customer waited.

    The counts are one GROUP BY in the order of the requests (status, mailbox, owner,
    response_due) index, read from the index alone."""
    live = and_(requests.c.status.in_(OPEN_REQUEST_STATUSES), requests_in(scope))
    waiting = requests.c.status == "open"
    late = and_(waiting, requests.c.response_due <= now)
    out: dict[str, Any] = {"now": now}
    per: dict[str, dict[Any, dict[str, Any]]] = {"owner": {}, "mailbox": {}}
    q = select(requests.c.status, requests.c.mailbox, requests.c.owner, func.count(),
               func.count().filter(waiting), func.count().filter(late)).where(live).group_by(
        requests.c.status, requests.c.mailbox, requests.c.owner)
    for _, box, who, n, w, o in conn.execute(q):
        for name, k in (("owner", who), ("mailbox", box)):
            row = per[name].setdefault(k, {name: k, "open": 0, "awaiting": 0, "overdue": 0})
            row["open"] += int(n)
            row["awaiting"] += int(w)
            row["overdue"] += int(o)
    for name, rows in per.items():
        out[f"per_{name}"] = sorted(rows.values(), key=lambda r: (-r["overdue"], str(r[name])))
    q = select(requests).where(live, waiting)
    if owner:
        q = q.where(requests.c.owner == owner)
    if mailbox:
        q = q.where(requests.c.mailbox == mailbox)
    due, rid = requests.c.response_due, requests.c.id
    if after is not None:           # keyset: below the last row, in (no due last, due, id)
        last_due, last_id = after
        q = q.where(or_(due.is_(None), due > last_due, and_(due == last_due, rid > last_id))
                    if last_due is not None else and_(due.is_(None), rid > last_id))
    q = q.order_by(due.is_(None), due, rid).limit(limit)
    cache: dict[Any, float] = {}
    out["requests"] = [dict(r._mapping) | {
        "left": sla_left(calendars, r.sla_calendar, r.response_due, now, cache),
        "overdue": r.response_due is not None and r.response_due <= now}
        for r in conn.execute(q)]
    last = out["requests"][-1] if len(out["requests"]) == limit else None
    out["next"] = (last["response_due"], last["id"]) if last else None
    return out


def request_of(conn: Connection, message_key: str) -> int | None:
    """The request a message (by registry key) belongs to, or None."""
    found: int | None = conn.execute(select(request_messages.c.request_id).where(
        request_messages.c.message_key == message_key).order_by(request_messages.c.id).limit(1)
        ).scalar_one_or_none()
    return found


def may_see_request(conn: Connection, number: int, scope: Scope | None) -> bool:
    """Whether `scope` may open request `number` (requests_in). A message is seen by the
    rule that named its viewer (a rule's `owner:` away, whose request a deputy took), a
    request by its mailbox or owner: the message page linked a request page that was
    "not found" for the same viewer."""
    return conn.execute(select(requests.c.id).where(requests.c.id == number,
                                                    requests_in(scope))).first() is not None


def _copies(conn: Connection, keys: list[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Decisions (every recipient, refused ones with their reply) and deliveries (every copy)."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {k: {"recipients": [], "copies": []}
                                                         for k in keys}
    if not keys:
        return found
    for d in conn.execute(select(decisions).where(decisions.c.message_key.in_(keys))
                          .order_by(decisions.c.id)):
        found[d.message_key]["recipients"].append(
            {"rcpt": d.rcpt, "action": d.action, "reply": d.reply, "mailbox": d.mailbox,
             "folder": d.folder, "owner": d.owner, "tags": d.tags, "reasons": d.reasons,
             "rules": d.rules, "priority": d.priority, "sla": d.sla, "path": d.path})
    for d in conn.execute(select(deliveries).where(deliveries.c.message_key.in_(keys))
                          .order_by(deliveries.c.id)):
        found[d.message_key]["copies"].append({"target": d.target, "state": d.state,
                                               "detail": d.detail})
    return found


def _message_rows(conn: Connection, rows: list[Any]) -> list[dict[str, Any]]:
    keys = [r.key for r in rows]
    extra = _copies(conn, keys)
    req = dict(conn.execute(select(request_messages.c.message_key, request_messages.c.request_id)
                            .where(request_messages.c.message_key.in_(keys))).all()) if keys else {}
    return [{"key": r.key, "received_at": r.received_at.isoformat(), "from": r.from_addr or r.mail_from,
             "subject": r.subject, "message_id": r.message_id, "status": r.status,
             "attempts": r.attempts, "request": req.get(r.key)} | extra[r.key] for r in rows]


def search(conn: Connection, *, sender: str | None = None, rcpt: str | None = None,
           words: str | None = None, since: datetime | None = None, until: datetime | None = None,
           tag: str | None = None, owner: str | None = None, status: str | None = None,
           limit: int | None = 50) -> list[dict[str, Any]]:
    """Messages, newest first, with every recipient's decision and every copy. `words`:
    every word in the subject (whole words; `счет*` for every word it begins), through
    the subject-word index (registry/words.py)."""
    # the walk reads the key and time only; the picked rows are read whole below
    q = select(messages.c.key, messages.c.received_at)
    if sender:
        # in any case (the folded From, indexed: lower(from_addr) was a walk of every
        # message newest first) and with its domain in the other IDNA form (the xn-- form
        # was not found by the Cyrillic one)
        q = q.where(messages.c.from_fold.in_(folded_forms(sender)))
    # Correlated EXISTS, not IN (subquery): walking messages newest first, each row is
    # checked by an index lookup and the walk stops at `limit`; an IN list would first
    # collect every message of the owner or status (a sixth of a million-message registry).
    def in_request(*where: Any) -> Any:
        return exists().where(request_messages.c.message_key == messages.c.key,
                              requests.c.id == request_messages.c.request_id, *where)

    def decided(*where: Any) -> Any:
        return exists().where(decisions.c.message_key == messages.c.key, *where)
    if rcpt:
        q = q.where(decided(func.lower(decisions.c.rcpt).in_(idn_forms(rcpt.strip().lower()))))
    if owner:       # the rule's owner (a person or team) or the request's (the team's pick)
        q = q.where(or_(decided(decisions.c.owner == owner), in_request(requests.c.owner == owner)))
    if status:
        q = q.where(in_request(requests.c.status == status))
    picked: list[str] = []
    walk = newest(conn, q, parse_words(words), since=since, until=until)
    while limit is None or len(picked) < limit:
        # with a tag, walk on until `limit` tagged ones: not the tagged among the first `limit`
        want = 500 if tag or limit is None else limit - len(picked)
        keys = [r.key for r in itertools.islice(walk, want)]
        if tag:
            picked += _tagged(conn, keys, tag)
        else:
            picked += keys
        if len(keys) < want:
            break
    return _message_rows(conn, _whole(conn, picked[:limit]))


def _tagged(conn: Connection, keys: list[str], tag: str) -> list[str]:
    """`keys`, in their order, of the messages a decision of which has `tag` (JSON tags:
    read here, the same on SQLite and PostgreSQL)."""
    has = {d.message_key for d in conn.execute(select(decisions.c.message_key, decisions.c.tags)
                                               .where(decisions.c.message_key.in_(keys)))
           if tag in (d.tags or [])} if keys else set()
    return [k for k in keys if k in has]


def _whole(conn: Connection, keys: list[str]) -> list[Any]:
    """The message rows of `keys`, in that order."""
    found: dict[str, Any] = {}
    for i in range(0, len(keys), 500):
        found.update((r.key, r) for r in conn.execute(
            select(messages).where(messages.c.key.in_(keys[i:i + 500]))))
    return [found[k] for k in keys]


def _counterparty(who: str) -> ColumnElement[bool]:
    """The requests of one counterparty: an address, or a domain (either IDNA form)."""
    forms = idn_forms(who.strip().lower().lstrip("@"))
    return (requests.c.counterparty.in_(forms) if "@" in forms[0]
            else requests.c.counterparty_domain.in_(forms))


def counterparty_threads(who: str) -> Select[Any]:
    """For registry.queries.counterparty: the message keys of `who`'s requests (through
    the counterparty's index, then each request's messages)."""
    return select(request_messages.c.message_key).where(
        request_messages.c.request_id.in_(select(requests.c.id).where(_counterparty(who))))


def counterparty_requests(conn: Connection, who: str, scope: Scope | None = None,
                          limit: int = 100) -> list[dict[str, Any]]:
    """The requests of one counterparty (an address, or a domain in either IDNA form) that
    `scope` may see, newest first, `limit` of them: the requests part of `history`, for the
    web view's counterparty page (it listed their messages only, where `registry history`
    starts with their requests, each with its status and owner)."""
    if not who.strip().lower().lstrip("@"):
        return []
    return [_plain(r) for r in conn.execute(select(requests).where(
        _counterparty(who), requests_in(scope)).order_by(requests.c.id.desc()).limit(limit))]


def history(conn: Connection, who: str, limit: int | None = None) -> dict[str, Any]:
    """Every request and message with one counterparty: an address, or a whole domain
    (either IDNA form of it). The messages are theirs (From) and every message of their
    requests: our replies (the copies to control.replies) and the rest of each thread.
    Before, only their own mail was listed: the history of a customer never showed an
    answer."""
    who = who.strip().lower().lstrip("@")
    forms = folded_forms(who)
    rq: ColumnElement[bool]
    mq: ColumnElement[bool]
    rq = _counterparty(who)
    if "@" in who:      # From in any case (Иван@Пример.рф for иван@пример.рф), as search
        mq = messages.c.from_fold.in_(forms)
    else:
        mq = from_domain(forms)
    reqs = [_plain(r) for r in conn.execute(select(requests).where(rq).order_by(requests.c.id))]
    msgs = list(conn.execute(select(messages).where(theirs(who, mq, counterparty_threads(who)))
                             .order_by(messages.c.received_at.desc()).limit(limit)).all())
    return {"counterparty": who, "requests": reqs, "messages": _message_rows(conn, msgs)}


def _plain(row: Any) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row._mapping.items()}


def show_request(conn: Connection, number: int, scope: Scope | None = None, skip: int = 0,
                 limit: int | None = None) -> dict[str, Any] | None:
    """A request with its messages (and each decision's explanation), history and alerts;
    None when there is no such request or `scope` may not see it. `skip`/`limit`: those
    of its messages, in order (the web view's pages of a long thread), and with a limit
    `message_count`, how many it has."""
    if not 0 < number <= MAX_NUMBER:       # PostgreSQL would fail the query, not find nothing
        return None
    row = conn.execute(select(requests).where(requests.c.id == number, requests_in(scope))).first()
    if row is None:
        return None
    mine = request_messages.c.request_id == number
    links = conn.execute(select(request_messages).where(mine).order_by(request_messages.c.id)
                         .offset(skip).limit(limit)).all()
    keys = [ln.message_key for ln in links]
    msgs = {m.key: m for m in conn.execute(select(messages).where(messages.c.key.in_(keys)))}
    extra = _copies(conn, keys)
    out = _plain(row)
    if limit is not None:
        out["message_count"] = (len(links) if not skip and len(links) < limit else
                                conn.execute(select(func.count()).where(mine)).scalar_one())
    out["messages"] = [{"direction": ln.direction, "at": ln.at.isoformat(), "from": ln.sender,
                        "message_id": ln.message_id, "key": ln.message_key}
                       | _message_facts(msgs.get(ln.message_key)) | extra[ln.message_key]
                       for ln in links]
    out["events"] = [_plain(e) for e in conn.execute(select(request_events).where(
        request_events.c.request_id == number).order_by(request_events.c.id))]
    out["alerts"] = [_plain(a) for a in conn.execute(select(request_alerts).where(
        request_alerts.c.request_id == number).order_by(request_alerts.c.id))]
    return out


def _message_facts(m: Any) -> dict[str, Any]:
    """What the registry holds of a message of a request: decoded subject and From, the
    rule set; attachment names are not recorded (None, not an empty list)."""
    if m is None:
        return {"subject": None, "from_name": None, "from_addr": None, "ruleset_hash": None,
                "attachments": None}
    return {"subject": m.subject, "from_name": m.from_name, "from_addr": m.from_addr,
            "ruleset_hash": m.ruleset_hash, "attachments": None}

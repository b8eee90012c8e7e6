"""Commands of execution control: report, registry search/history/reloads, request show/close/wait/reopen.

`mailrouter report [--since D] [--until D]`, `mailrouter registry search [filters]`,
`mailrouter registry history ADDRESS|DOMAIN`, `mailrouter registry reloads` (which process
made each reload), `mailrouter request show N`, `mailrouter
request close N`, `mailrouter request wait N` (waiting for the customer), `mailrouter request
reopen N` (a closed one: open, an answer due from now, as the web view's reopen). Each read
command prints text, or with `--json` one JSON document, or with `--csv` rows with a
header line. Exit codes: 0 done, 1 no such request or one the change does not apply to
(close: already closed; wait: closed or already waiting; reopen: not closed), 2 the
configuration or the
registry could not be read.

A date or time without an offset (`--since 2027-01-11`) is the company's
(calendars.company_zone), as the web report's days and `away:` dates are.
Times in text output are the company's too, with their offset; --json and --csv keep
the registry's UTC. In --csv a text cell that starts like a formula gets a leading `'`.

Refused with a clear message (exit 2): a date that is not ISO (`2027-01-11` or with a
time), an unknown status, a request number below 1 (or not a number), a `history` of no
address or domain (''), a negative -n. The registry is opened without creating or
migrating it; one that cannot be read is named (its file, or its URL without the
password) with what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

from ..calendars import company_time, company_times, company_zone
from ..errors import RegistryError
from ..values import OPEN_REQUEST_STATUSES, REQUEST_STATUSES, spreadsheet_cell, write_csv
from .threads import MAX_NUMBER

if TYPE_CHECKING:
    from sqlalchemy import Connection

# SQLAlchemy (and the registry's tables) are imported by the commands that read the registry:
# every `mailrouter` command builds this module's parsers, and `mailrouter --help`,
# `explain` or `address` took a second more to start importing them.

__all__ = ["add_commands", "ask_registry", "count", "printable", "spreadsheet_cell"]


def _when(text: str) -> datetime:
    """An ISO date or time; without an offset it stays naive until `_local` knows the zone."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date (e.g. 2027-01-11 or "
                                         "2027-01-11T10:00+03:00)") from None


def count(text: str) -> int:
    """-n N: a whole number, 0 or more (-1 listed everything, as SQLite's LIMIT -1 does)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 or more; 0: all)")
    return n


def _number(text: str) -> int:
    """A request's N: `request show -5` said "no request #-5", as if one might have been.
    A number past the last one (even past MAX_NUMBER) is a request that is not there: exit 1."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a request number (the N of [#N] in "
                                         "a subject: 1 or more)")
    return n


def _who(text: str) -> str:
    """An address or a domain: `registry history ''` printed nothing and exited 0, as if
    the registry had nothing with a counterparty never given."""
    bare = text.strip().lstrip("@")
    if not bare or any(c.isspace() for c in bare) or bare.endswith("@"):
        raise argparse.ArgumentTypeError(f"{text!r} is not an address or a domain (e.g. "
                                         "client@outside.test or outside.test)")
    return text


def _filter(text: str) -> str:
    """A search filter's value: `registry search --from ''` listed every message, as if no
    filter had been given; an empty or blank value is a usage error."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value filters nothing; give a value or "
                                         "leave the option out")
    return text


# The earliest and the latest instant a period may reach: a day inside datetime's range,
# so that the instant shown in any zone (up to 14 hours off UTC) is a datetime too.
_FIRST = (datetime.min + timedelta(days=1)).replace(tzinfo=timezone.utc)
_LAST = (datetime.max - timedelta(days=1)).replace(tzinfo=timezone.utc)


def _in_range(at: datetime | None) -> datetime | None:
    """`at` (aware), held within _FIRST.._LAST. `report --since 0001-01-01` in
    Moscow is 0000-12-31 21:00 UTC: the registry's UTC conversion raised OverflowError, and
    the command printed a traceback and "registry report failed on an internal error;
    check registry.url" (`registry search --until 9999-12-31T23:00-05:00` too)."""
    if at is None:
        return None
    try:
        utc = at.astimezone(timezone.utc)
    except OverflowError:
        return _FIRST if at.year == 1 else _LAST
    return _FIRST if utc < _FIRST else _LAST if utc > _LAST else at    # as given (--json echoes it)


def _local(args: argparse.Namespace, cfg: Any, what: str, now: datetime | None = None
           ) -> tuple[Any, datetime | None, datetime | None]:
    """(the snapshot, --since, --until), naive ones taken in the company's zone; a period
    that ends before it starts (`now` its end when only --since is given) exits 2 (_period);
    then in UTC, held within the instants a datetime holds in any zone (_in_range)."""
    snap = args.load_snapshot(cfg)
    zone = company_zone(snap.rules.calendars)
    since, until = ((at.replace(tzinfo=zone) if at is not None and at.tzinfo is None else at)
                    for at in (args.since, args.until))
    _period(what, since, until or (now if since else None))
    return snap, _in_range(since), _in_range(until)


def ask_registry(cfg: Any, what: str, ask: Callable[[Any], Awaitable[Any]]) -> Any:
    """`ask(registry)` on the existing registry (a look never creates one); on a registry
    error, one line on stderr, `mailrouter WHAT: FILE-OR-URL: the error; the fix`, and exit 2
    ("registry open failed (DatabaseError: file is not a database)" named no file)."""
    from ..registry import Registry
    from ..registry.store import registry_advice, registry_location, sqlite_missing

    url = cfg.registry.url
    where = registry_location(url)
    named = f"registry.url in {cfg.path}" if cfg.path else "registry.url of the config (-c FILE)"
    if sqlite_missing(url):
        print(f"mailrouter {what}: no registry at {where}" + (f" ({named})" if cfg.path else "")
              + "; start the daemon first (it creates it), or give -c with the daemon's config",
              file=sys.stderr)
        raise SystemExit(2)

    async def go() -> Any:
        # the config's registry.timeout (and sync), as the daemon opens it: the default 10 s
        # held a command against a paused server that long whatever config.yaml said
        reg = await Registry.open(url, create=False, timeout=cfg.registry.timeout,
                                  synchronous=cfg.registry.sync.upper())
        try:
            return await ask(reg)
        finally:
            await reg.close()
    try:
        return asyncio.run(go())
    except RegistryError as exc:
        advice = registry_advice(exc, where)
        print(f"mailrouter {what}: {where}: {exc}; " + (f"{advice}; " if advice else "")
              + f"check {named}", file=sys.stderr)
        raise SystemExit(2) from None



def _run(args: argparse.Namespace, what: str, fn: Callable[[Connection], Any],
         write: bool = False, cfg: Any = None) -> Any:
    return ask_registry(cfg or args.load_config(args.config), what,
                        lambda reg: reg.write(what, fn) if write else reg.read(what, fn))


def _emit(args: argparse.Namespace, doc: Any, rows: list[dict[str, Any]],
          text: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
    elif args.csv:
        write_csv(sys.stdout, rows, lineterminator="\n")
    else:
        text()


def _copy_rows(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One CSV row per recipient of each message (every copy, refused ones with their reply)."""
    out = []
    for m in msgs:
        base = {k: m[k] for k in ("received_at", "from", "subject", "message_id", "status", "request")}
        for d in m["recipients"] or [{}]:
            out.append(base | {k: d.get(k) for k in ("rcpt", "action", "reply", "mailbox",
                                                      "folder", "owner")})
    return out


def _print_messages(msgs: list[dict[str, Any]], zone: tzinfo) -> None:
    for m in msgs:
        req = f"  [#{m['request']}]" if m["request"] else ""
        print(f"{company_time(m['received_at'], zone, 'seconds')} {m['status']:9} "
              f"{printable(m['from'])}  {m['subject']!r}{req}")
        for d in m["recipients"]:
            where = (d["mailbox"] or "-") + (f"/{d['folder']}" if d["folder"] else "")
            print(f"    {printable(d['rcpt'])} -> {where}{' owner=' + d['owner'] if d['owner'] else ''}"
                  f"  [{d['reply']}]")
        for c in m["copies"]:
            print(f"      copy {c['target']}: {c['state']} {printable(c['detail'])}")


def printable(value: Any) -> str:
    """Text from mail (a subject, an address, a reason quoting a header) for a terminal:
    control characters written as escapes (`\\x1b`), so a customer's subject cannot clear
    the screen, hide lines or retitle the terminal of whoever runs the command;
    Cyrillic and other letters stay as they are."""
    text = str(value)
    return text if text.isprintable() else "".join(
        c if c.isprintable() else repr(c)[1:-1] for c in text)


def _or(value: Any, none: str = "-") -> Any:
    """`value`, or `none` in its place in text output: a person reads '-', not 'None'."""
    return none if value is None else value


def _period(what: str, since: datetime | None, until: datetime | None) -> None:
    """Exit 2 on a period that ends before it starts: it would print "nothing in the
    period" as if the registry had nothing, for what is a mistyped date."""
    if since is not None and until is not None and since >= until:
        print(f"mailrouter {what}: --since {since.isoformat()} is not before --until "
              f"{until.isoformat()} (--until is the end of the period, not included)",
              file=sys.stderr)
        raise SystemExit(2)


def cmd_report(args: argparse.Namespace) -> int:
    from .queries import report, report_period
    now = datetime.now(timezone.utc)
    cfg = args.load_config(args.config)
    snap, since_at, until_at = _local(args, cfg, "report", now)
    cals = snap.rules.calendars
    zone = company_zone(cals)
    # the web view's default period too: the last 30 days of the company's zone (it was
    # now minus 30 days, in UTC)
    since, until = report_period(now, zone, since_at, until_at)
    doc = _run(args, "report", lambda conn: report(conn, since, until, now, cals, zone=zone), cfg=cfg)
    rows = [{"section": k, **r} for k, v in doc.items() if isinstance(v, list) for r in v]
    rows += [{"section": k, **v} for k, v in doc.items() if isinstance(v, dict)]

    def text() -> None:
        # both ends on the company's clock, as every time printed: the default end (now)
        # was UTC cut to 16 characters, beside a start in local time
        print(f"requests opened {company_time(doc['since'], zone)} .. {company_time(doc['until'], zone)}")
        for k in ("mailbox", "rule", "owner", "day"):
            # no request in the period: '-' (the line ended in "per mailbox: " and a space)
            print(f"  per {k}: " + (", ".join(f"{_or(r[k], '(nobody)' if k == 'owner' else '-')}"
                                              f"={r['requests']}" for r in doc[f"volume_per_{k}"])
                                    or "-"))
        fr, sla = doc["first_response_hours"], doc["sla"]
        # nothing answered or due in the period: no figure, '-'
        print(f"  first response (business hours): {fr['answered']} answered, "
              f"median {_or(fr['median'])}, p90 {_or(fr['p90'])}")
        print(f"  SLA: kept {sla['kept']}, missed {sla['missed']}, share kept {_or(sla['share_kept'])}")
        # as the board's columns: "2 open" counted answered and waiting requests, while a
        # request's status `open` means an answer is owed
        for r in doc["open_per_owner"]:
            print(f"  {r['owner'] or '(nobody)'}: {r['open']} not closed, {r['awaiting']} "
                  f"awaiting an answer, {r['overdue']} overdue")
    _emit(args, doc, rows, text)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .queries import search
    cfg = args.load_config(args.config)
    snap, since, until = _local(args, cfg, "registry search")
    found = _run(args, "registry search", lambda conn: search(
        conn, sender=args.sender, rcpt=args.rcpt, words=args.subject, since=since,
        until=until, tag=args.tag, owner=args.owner, status=args.status,
        limit=args.n or None), cfg=cfg)
    zone = company_zone(snap.rules.calendars)

    def text() -> None:
        _print_messages(found, zone)
        _none_found(found, "registry search: no message matches")
    _emit(args, found, _copy_rows(found), text)
    return 0


def _none_found(found: Any, what: str) -> None:
    """In text output, an empty answer says so on stderr (stdout stays empty for scripts),
    where it printed nothing at all and looked like a command that did not run."""
    if not found:
        print(f"mailrouter {what}", file=sys.stderr)


def cmd_history(args: argparse.Namespace) -> int:
    from .queries import history
    cfg = args.load_config(args.config)
    zone = company_zone(args.load_snapshot(cfg).rules.calendars)
    doc = _run(args, "registry history", lambda conn: history(conn, args.who, args.n or None),
               cfg=cfg)

    def text() -> None:
        for r in doc["requests"]:
            print(f"#{r['id']} {company_time(r['opened_at'], zone)} {r['status']:8} owner={_or(r['owner'])}  "
                  f"{r['subject']!r}")
        _print_messages(doc["messages"], zone)
        _none_found(doc["requests"] or doc["messages"],
                    f"registry history: no request or message from {printable(args.who)!r}")
    _emit(args, doc, _copy_rows(doc["messages"]), text)
    return 0


def cmd_reloads(args: argparse.Namespace) -> int:
    """The newest routing reloads, each with the process that made it: worker 0 records
    each reload of its instance (naming a worker that could not take the files), and every
    instance on one PostgreSQL its own, so one that refused the files is told from the
    others that took them."""
    cfg = args.load_config(args.config)
    rows = ask_registry(cfg, "registry reloads", lambda reg: reg.reloads(args.n or None))
    doc = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()
            if k != "id"} for r in rows]

    def text() -> None:
        zone = args.company_zone(cfg, "registry reloads")
        for r in rows:
            # rows written by older versions had an ok reload's hash as its detail too
            detail = r["detail"].splitlines()[0] if r["detail"] and \
                r["detail"] != r["ruleset_hash"] else ""
            print(f"{company_time(r['at'], zone, 'seconds')} {'ok    ' if r['ok'] else 'FAILED'} "
                  f"{r['ruleset_hash']}  {_or(r['instance'])}  {printable(detail)}")
        if not rows:
            print("mailrouter registry reloads: no reload recorded yet (one is recorded at "
                  "each SIGHUP, `mailrouter reload` or changed routing file)", file=sys.stderr)
    _emit(args, doc, doc, text)
    return 0


def _set_status(args: argparse.Namespace, status: str) -> int:
    """`request close N` (any status but closed) or `request wait N` (open or answered)."""
    from sqlalchemy import select, update

    from .store import add_event
    from .tables import requests
    allowed = OPEN_REQUEST_STATUSES if status == "closed" else ("open", "answered")

    def change(conn: Connection) -> str | None:
        if not 0 < args.number <= MAX_NUMBER:   # PostgreSQL would fail the query
            return "missing"
        now = datetime.now(timezone.utc)
        # the row locked where its status is read (PostgreSQL), as control.actions does:
        # read before a change another instance was committing, the history line named
        # the status from before it ("open -> closed" of a request that was answered)
        before = conn.execute(select(requests.c.status).where(
            requests.c.id == args.number).with_for_update()).scalar_one_or_none()
        # no answer is owed once closed or waiting for the customer (as a reply with a
        # marker, and the web view's close): the due time stayed, and the web view's page
        # of the request closed here showed its "next answer due"
        done = conn.execute(update(requests).where(
            requests.c.id == args.number, requests.c.status.in_(allowed)).values(
            status=status, closed_at=now if status == "closed" else None, response_due=None))
        if not done.rowcount:
            return before or "missing"
        add_event(conn, args.number, now, "status",
                  f"{before} -> {status}: mailrouter request {args.action}", "cli")
        return None
    refused = _run(args, f"request {args.action}", change, write=True)
    if refused is not None:
        why = "no such request" if refused == "missing" else f"it is {refused}"
        print(f"mailrouter request {args.action}: request #{args.number} not changed: {why}",
              file=sys.stderr)
        return 1
    print(f"request #{args.number} {status}")
    return 0


def _reopen(args: argparse.Namespace) -> int:
    """`request reopen N`: a closed request back to `open`, owing the customer an answer
    due its SLA term from now on its calendar, as the web view's reopen (actions.reopen)."""
    from .actions import reopen
    cfg = args.load_config(args.config)
    calendars = args.load_snapshot(cfg).rules.calendars

    def change(conn: Connection) -> str | None:
        if not 0 < args.number <= MAX_NUMBER:   # PostgreSQL would fail the query
            return "no such request"
        try:
            reopen(conn, args.number, "cli", datetime.now(timezone.utc), "mailrouter request reopen",
                   calendars)
        except (LookupError, ValueError) as exc:
            return str(exc.args[0]) if exc.args else "no such request"
        return None
    refused = _run(args, "request reopen", change, write=True, cfg=cfg)
    if refused is not None:
        print(f"mailrouter request reopen: request #{args.number} not changed: {refused}",
              file=sys.stderr)
        return 1
    print(f"request #{args.number} open")
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    from .queries import show_request
    from .store import owner_change, reopened_by
    if args.action in ("close", "wait"):
        return _set_status(args, "closed" if args.action == "close" else "waiting")
    if args.action == "reopen":
        return _reopen(args)
    cfg = args.load_config(args.config)
    snap = args.load_snapshot(cfg)
    zone = company_zone(snap.rules.calendars)
    doc = _run(args, "request show", lambda conn: show_request(conn, args.number), cfg=cfg)
    if doc is None:
        print(f"mailrouter request show: no request #{args.number}", file=sys.stderr)
        return 1
    events = [{"at": e["at"], "what": e["kind"], "who": e["actor"], "detail": e["detail"]}
              for e in doc["events"]]
    timeline = sorted([{"at": m["at"], "what": f"message {m['direction']}", "who": m["from"],
                        "detail": m["subject"]} for m in doc["messages"]]
                      + events
                      + [{"at": a["at"], "what": a["stage"], "who": a["recipient"],
                          "detail": a["subject"]} for a in doc["alerts"]], key=lambda r: r["at"])

    def text() -> None:
        print(f"#{doc['id']} {doc['status']} owner={_or(doc['owner'])} team={_or(doc['team'])} "
              f"from {printable(doc['counterparty'])}  {doc['subject']!r}")
        due = doc["first_response_due"]
        print(f"  opened {company_time(doc['opened_at'], zone, 'seconds')}, first response due "
              f"{company_time(due, zone, 'seconds') if due else '- (no SLA)'}, "
              f"answered {company_time(doc['first_response_at'], zone, 'seconds')}")
        if doc.get("response_round", 1) > 1 and doc["status"] == "open" and doc.get("response_due"):
            by = reopened_by(doc["events"])
            print(f"  {f'reopened by {by}' if by else 'the customer wrote again'}: "
                  f"answer {doc['response_round']} due "
                  f"{company_time(doc['response_due'], zone, 'seconds')}")
        ours = {id(e) for e in events}     # times in an event's detail: the company's too
        for r in timeline:
            who, detail = r["who"], r["detail"]
            change = owner_change(detail) if id(r) in ours and r["what"] == "owner" else None
            if change is not None:
                # as the web view's history reads it (its JSON was printed as it is stored)
                who = _named(snap.book.people, who) if who else who
                detail = _owner_text(change, snap.book.people)
            detail = company_times(detail, zone) if id(r) in ours else detail
            print(f"  {company_time(r['at'], zone, 'seconds')} {r['what']:12} {printable(who or '-')}  "
                  f"{printable(detail)}")
        for m in doc["messages"]:
            for d in m["recipients"]:
                for why in d["reasons"]:
                    # a message without a Message-ID is named by its registry key's head
                    msg = m["message_id"] or f"(no Message-ID, key {str(m.get('key', ''))[:12]})"
                    print(f"  why {printable(msg)} {printable(d['rcpt'])}: {printable(why)}")
    _emit(args, doc, timeline, text)
    return 0


def _named(people: Any, key: str | None) -> str:
    """A person as the web view names one: their name, else the key; nobody '(nobody)'."""
    if not key:
        return "(nobody)"
    person = people.get(key)
    return str(person.name) if person is not None and person.name else str(key)


def _owner_text(change: dict[str, Any], people: Any) -> str:
    """An owner change as the web view's history shows it: from -> to, the team's change,
    why ("Пётр Иванов -> Анна Петрова · team - -> duty · reassigned by smirnov (web view)")."""
    parts = [f"{_named(people, change.get('from'))} -> {_named(people, change.get('to'))}"]
    team = change.get("team")
    if isinstance(team, dict):
        parts.append(f"team {team.get('from') or '-'} -> {team.get('to') or '-'}")
    why = change.get("why")
    if why:
        parts.append("; ".join(str(w) for w in why) if isinstance(why, list) else str(why))
    return " · ".join(parts)


def _formats(p: argparse.ArgumentParser, config: bool = False) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="one JSON document")
    g.add_argument("--csv", action="store_true", help="CSV rows with a header line")
    if config:      # a `registry` subcommand: -c may also come after it
        p.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="config file")


def add_commands(sub: Any, add: Callable[..., argparse.ArgumentParser],
                 registry: argparse.ArgumentParser, load_config: Callable[[str | None], Any],
                 load_snapshot: Callable[[Any], Any],
                 zone: Callable[[Any, str], tzinfo]) -> None:
    """Register report, registry search/history/reloads and request show/close on the CLI.

    `load_config`/`load_snapshot` are the CLI's own (errors printed, exit 2), `zone` its
    company zone that falls back to UTC on routing files with errors: this module sits
    below cli.py and does not import it."""
    loaders = {"load_config": load_config, "load_snapshot": load_snapshot, "company_zone": zone}
    registry.set_defaults(**loaders)
    rep = add("report", cmd_report, "requests per mailbox/rule/owner/day, response times, SLA")
    rep.add_argument("--since", type=_when, metavar="DATE", help="from (default: the start of "
                     "the 30th day, today the 1st, in the company's zone)")
    rep.add_argument("--until", type=_when, metavar="DATE", help="to, not included (default: "
                     "the end of today in the company's zone)")
    _formats(rep)
    rep.set_defaults(**loaders)
    rsub = registry.add_subparsers(dest="registry_command", metavar="[search|history|reloads]")
    s = rsub.add_parser("search", help="find messages", description="find messages; every "
                        "recipient and copy is shown, refused ones with their reply")
    s.set_defaults(func=cmd_search, **loaders)
    for flag, dest, what in (("--from", "sender", "sender address"), ("--rcpt", "rcpt", "recipient"),
                             ("--subject", "subject", "words in the subject (ё = е, any case)"),
                             ("--tag", "tag", "tag"), ("--owner", "owner", "owner (person or team)")):
        s.add_argument(flag, dest=dest, type=_filter, help=what)
    s.add_argument("--since", type=_when, metavar="DATE", help="received from (2027-01-11 or "
                   "2027-01-11T10:00+03:00)")
    s.add_argument("--until", type=_when, metavar="DATE", help="received before")
    s.add_argument("--status", choices=REQUEST_STATUSES, help="status of the message's request")
    s.add_argument("-n", type=count, default=50, metavar="N", help="at most N (0: all; default 50)")
    _formats(s, config=True)
    h = rsub.add_parser("history", help="everything with one address or domain",
                        description="every request and message with one counterparty")
    h.set_defaults(func=cmd_history, **loaders)
    h.add_argument("who", type=_who, metavar="ADDRESS|DOMAIN",
                   help="a counterparty's address (their mail, and every message of their "
                   "requests: our replies too), or a domain for all of its addresses")
    h.add_argument("-n", type=count, default=0, metavar="N", help="at most N messages (0: all, the default)")
    _formats(h, config=True)
    rl = rsub.add_parser("reloads", help="the newest routing reloads and which process made each",
                         description="the newest routing reloads: time, ok or FAILED, the rule "
                         "set's hash, the process (host, pid, worker) and the first error")
    rl.set_defaults(func=cmd_reloads, **loaders)
    rl.add_argument("-n", type=count, default=20, metavar="N", help="at most N (0: all; default 20)")
    _formats(rl, config=True)
    req = add("request", cmd_request, "show one request, close it, mark it waiting "
              "for the customer, or reopen it")
    req.add_argument("action", choices=["show", "close", "wait", "reopen"],
                     help="show: messages, owner changes, replies, reminders; close: close it; "
                     "wait: mark it waiting for the customer (their reply reopens it); "
                     "reopen: a closed request, an answer due its SLA term from now")
    req.add_argument("number", type=_number, metavar="N", help="the request number ([#N] in subjects)")
    _formats(req)
    req.set_defaults(**loaders)

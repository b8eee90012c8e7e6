"""Execution control as the pipeline sees it: plan a message's request, head it, write it.

`Control.plan` (before delivery, one registry read) decides whether the message is a
copy of our own outgoing reply (it was sent to a `control.replies` address), a
follow-up that joins a request, or a new request with an owner chosen now (then one
small write claims its thread for that owner, store.claim_thread);
`Control.header` is the `X-Mailrouter-Owner:` line prepended to every delivered copy;
`Control.writer` is what the registry runs inside the message's record transaction.
`Control.copy_to_owner` adds the owner's own address as one more target of the decisions
whose rule says `copy_to_owner: true`: the copy is made in the same delivery step as the
others, so it is in the registry's deliveries, a retry skips it once delivered, and a
temporary failure of it answers 4xx like any other copy.

Robot mail opens, joins and answers nothing (it is recorded and delivered as any other):
what the message says of itself (`MessageView.robot`: the autoresponder's definition of
automatic mail, headers and subject) and the null envelope sender (the rules' `robot:
true`), and a From address (the envelope sender without one) whose local part is a
robot's as the autoresponder reads it (autoreply.DEFAULT_ROBOT_SENDERS: noreply@, mailer-daemon@,
*-bounces@ ...; +detail cut off): nobody can answer a noreply@ notice, so a request for it
only stood overdue on the board and took a team member's turn. Only From is read there, not
the envelope sender or Return-Path as the autoresponder does: a person's mail sent through a
mailing service has a robot's envelope sender (bounces+123@) and must still open a request.

Refused: see store.py (joins by strangers, robots). A registry failure while
planning is a RegistryError: the pipeline answers 4xx as for any registry fault.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import formataddr
from functools import partial
from typing import Any

from sqlalchemy import Connection

from ..addressbook.canon import canonical, detail_split, on_our_domains
from ..addressbook.model import Options
from ..autoreply import DEFAULT_ROBOT_SENDERS
from ..config import ControlConfig
from ..loops import header_text
from ..message import msg_ids
from ..registry import Registry
from ..routing.facts import robot_of
from ..values import Action, Decision
from .owners import OwnerChoice, TeamState, choose_owner, owner_targets
from .store import (Plan, apply_plan, claim_thread, find_by_refs, joining, known_message,
                    participants, request_row)
from .threads import NumberTag, references, sla_due, sla_terms, took_part

__all__ = ["Control", "OWNER_HEADER"]

OWNER_HEADER = "X-Mailrouter-Owner"
_CHOSEN = 10_000        # team choices remembered per message key, for the MTA's retries
_THREAD_WAIT = 30.0     # seconds a message waits for another of its thread in flight


class Control:
    def __init__(self, cfg: ControlConfig, registry: Registry,
                 robot_senders: Sequence[str] = DEFAULT_ROBOT_SENDERS) -> None:
        """`robot_senders`: local-part globs of robot addresses (config.yaml's
        autoreply.robot_senders, else the autoresponder's defaults)."""
        self.cfg, self.registry = cfg, registry
        self.robot_senders = tuple(p.lower() for p in robot_senders)
        self.tag = NumberTag(cfg.number) if cfg.number else None
        # `_chosen`: the choice per message key, so the MTA's retry of a message without a
        # Message-ID that got 4xx (nothing recorded, nothing claimed) gets the same owner
        # again instead of the next member. A message with one finds its own claim.
        self._chosen: dict[str, OwnerChoice] = {}
        # control.replies as the current address book's options read them (a reload may
        # change the options: recomputed when they do)
        self._replies: tuple[Options | None, frozenset[str]] = (None, frozenset())
        # people's addresses -> person key, for the address book's people of the snapshot
        self._people: tuple[Any, dict[str, str]] = (None, {})
        # Message-ID -> (its references, done when its record is): see plan().
        self._flight: dict[str, tuple[tuple[str, ...], asyncio.Future[None]]] = {}

    async def plan(self, mail_from: str, rcpts: Sequence[str], view: Any,
                   decisions: Sequence[Decision], snap: Any, key: str, at: datetime) -> Plan:
        """The message's plan; call `settle(plan)` once its record is done (or failed).

        Messages of one thread in flight in this process at once are planned in order:
        one whose references name a message still in flight waits for it (then joins its
        request), and one that a follow-up planned before it names waits for that
        follow-up (then joins the request the follow-up opened): one request either way.
        Across processes a new request's thread is claimed in the registry before delivery
        (store.claim_thread): the owner another process planned for it is taken."""
        mid, refs = view.message_id, references(view)
        waits, follows = [], []
        for other, (their_refs, done) in list(self._flight.items()):
            if other in refs:
                waits.append(done)
            elif mid and mid in their_refs and other != mid:
                waits.append(done)
                follows.append(other)
        mine: asyncio.Future[None] | None = None
        if mid and mid not in self._flight:
            mine = asyncio.get_running_loop().create_future()
            self._flight[mid] = (refs, mine)
        try:
            if waits:
                await asyncio.wait(waits, timeout=_THREAD_WAIT)
            plan = await self.registry.read("plan_request", partial(
                self._plan, mail_from, rcpts, view, decisions, snap, key, at, tuple(follows)))
            plan = replace(plan, calendars=snap.rules.calendars)   # a reopen's due is counted on them
            if plan.kind == "open" and plan.owner_key is not None:
                team = snap.book.teams.get(plan.owner_key)
                plan = await self.registry.write(     # synced by the record's commit
                    "claim_thread", partial(claim_thread, plan=plan, key=key, at=at, team=team,
                                            choose=partial(self._choose, snap, plan, key, at)),
                    lazy=True)
        except BaseException:
            self._release(mid, mine)
            raise
        return replace(plan, flight=mine)

    def settle(self, plan: Plan) -> None:
        """The plan's message is recorded (or failed): messages waiting for it go on."""
        self._release(plan.message_id, plan.flight)

    def _release(self, mid: str | None, mine: Any) -> None:
        if mine is None or mid is None:
            return
        if self._flight.get(mid, (None, None))[1] is mine:
            del self._flight[mid]
        if not mine.done():
            mine.set_result(None)

    def _plan(self, mail_from: str, rcpts: Sequence[str], view: Any,
              decisions: Sequence[Decision], snap: Any, key: str, at: datetime,
              follows: tuple[str, ...], conn: Connection) -> Plan:
        sender = (view.from_addr or mail_from or "").strip().lower()
        base = Plan("none", sender, view.message_id)
        known = known_message(conn, key)
        if known is not None:                       # a retry of a message already recorded
            row = request_row(conn, known)
            return Plan("known", sender, view.message_id, known, row["owner"] if row else None)
        refs = references(view) + follows
        number = self.tag.find(view.subject) if self.tag else None
        # robot mail as the rules' `robot: true` reads it: what the message says, or the
        # null envelope sender of bounces and notices (an out-of-office reply without
        # Auto-Submitted: Exchange 2010's carries X-Auto-Response-Suppress alone); or a
        # robot's address (noreply@), which no one can answer: the sender's, From or, with
        # no From, the envelope's (From was matched twice, by robot_of and again here)
        robot = robot_of(view, mail_from, self.robot_senders, ("sender", sender))[0]
        to = next((r for r in rcpts if self._to_replies(r, snap.book.options)), None)
        if to is not None:
            if robot:               # an out-of-office of ours, a reminder: no one answered
                return base
            rid = next(iter(find_by_refs(conn, refs)), None)
            if rid is None and number is not None and request_row(conn, number) is not None:
                rid = number
            if rid is None:
                return base
            if not self._ours(mail_from, snap.book.domains):
                # anyone can write to replies@: an outsider's "[#5] [closed]" closed request 5
                return replace(base, refused=((rid, (
                    f"a copy to {to} from {mail_from or '<>'}: not counted as "
                    "our reply (its envelope sender is not an address of the address book's "
                    "domains)")),))
            return Plan("reply", sender, view.message_id, rid,
                        close=_marked(view, self.cfg.close_marker),
                        wait=_marked(view, self.cfg.waiting_marker))
        if robot:
            return base
        refused: list[tuple[int, str]] = []
        # its own Message-ID too: a follow-up another instance recorded first named it
        candidates = find_by_refs(conn, refs + ((view.message_id,) if view.message_id else ()))
        by_number = False
        if number is not None and number not in candidates and request_row(conn, number):
            candidates.append(number)
            by_number = True
        staff = self._staff(sender, mail_from, snap.book)
        for rid in candidates:
            if took_part(sender, participants(conn, rid), self.cfg.join):
                row = request_row(conn, rid)
                assert row is not None
                return joining(replace(base, refused=tuple(refused), refs=refs, staff=staff),
                               rid, row)
            how = "number" if by_number and rid == number else "reference"
            refused.append((rid, f"{sender or '<>'} took no part in request #{rid} "
                                 f"(join check: {self.cfg.join}); named it by {how}; "
                                 "opened a request of its own"))
        return self._open(conn, sender, view, decisions, snap, key, at, tuple(refused), refs)

    def _open(self, conn: Connection, sender: str, view: Any, decisions: Sequence[Decision],
              snap: Any, key: str, at: datetime, refused: tuple[tuple[int, str], ...],
              refs: tuple[str, ...]) -> Plan:
        d = next((d for d in decisions if d.action is Action.DELIVER and d.rules
                  and (d.owner or d.sla)), None)
        if d is None:
            return Plan("none", sender, view.message_id, refused=refused)
        return Plan("open", sender, view.message_id, None, None, None, None, (), d.mailbox,
                    d.rules[0].name, view.subject, d.priority, d.tags,
                    sla_terms(d.sla).get("calendar"), sla_due(d.sla), refused=refused,
                    refs=refs, join=self.cfg.join, owner_key=d.owner,
                    term=sla_terms(d.sla).get("first_response"))

    def _choose(self, snap: Any, plan: Plan, key: str, at: datetime,
                state: TeamState) -> OwnerChoice:
        """The owner of `plan` (an open) for its rule's owner key, with the team's state
        read under its turn (store.claim_thread). A choice remembered for this message
        key (a retry) is given again without moving the team's turn (member None)."""
        book = snap.book
        choice = self._chosen.get(key)
        if (choice is not None and choice.team == plan.owner_key
                and choice.owner in book.people):
            return replace(choice, member=None)
        choice = choose_owner(book.people, book.teams, snap.rules.calendars, plan.owner_key,
                              at, state)
        if choice.team is not None and choice.member is not None:
            if len(self._chosen) >= _CHOSEN:
                del self._chosen[next(iter(self._chosen))]     # the oldest
            self._chosen[key] = choice
        return choice

    @staticmethod
    def _ours(mail_from: str, domains: frozenset[str]) -> bool:
        """Is the envelope sender an address of our domains? Postfix's sender_bcc_maps copies
        the company's outgoing mail to replies@ under its sender's own address; the MTA keeps
        outsiders from sending as those (SPF, smtpd_sender_login_maps)."""
        return on_our_domains(mail_from, domains)

    def _staff(self, sender: str, mail_from: str, book: Any) -> str | None:
        """The person of the address book whose address `sender` (From) is, when the mail
        comes from our domains (the envelope sender, as for a reply's copy): one of ours
        writing in a request's thread (a forward to the team's address, a word to a
        colleague) is not its customer writing again (store._apply)."""
        if not sender or not self._ours(mail_from, book.domains):
            return None
        if self._people[0] is not book.people:
            self._people = (book.people, {p.address.casefold(): k
                                          for k, p in book.people.items() if p.address})
        # folded as the address book and Postfix fold (str.casefold): From STRASSE@ is the
        # person whose address is straße@; lower() made it strasse@, a customer
        return self._people[1].get(sender.casefold())

    def _to_replies(self, rcpt: str, options: Options) -> bool:
        """Is `rcpt` a `control.replies` address, as the address book reads addresses:
        `replies+detail@` and `Replies@` are `replies@` (they are delivered there too)."""
        if options != self._replies[0]:
            self._replies = (options, frozenset(b for r in self.cfg.replies
                                                if (b := _base(r, options))))
        return _base(rcpt, options) in self._replies[1]

    def copy_to_owner(self, plan: Plan, decisions: Sequence[Decision], snap: Any) -> list[Decision]:
        """`decisions`, those with `copy_to_owner` carrying the owner's copy as a target too."""
        out = list(decisions)
        for i, d in enumerate(out):
            if d.action is not Action.DELIVER or not d.copy_to_owner:
                continue
            if plan.owner is None:
                out[i] = replace(d, reasons=d.reasons + ("copy to owner: the message has no "
                                                         "owner (no request)",))
                continue
            have = {t.key for t in d.targets}
            extra = tuple(t for t in owner_targets(snap.book, plan.owner) if t.key not in have)
            where = ", ".join(t.key for t in extra) or "already among the targets"
            out[i] = replace(d, targets=d.targets + extra,
                             reasons=d.reasons + (f"copy to owner {plan.owner}: {where}",))
        return out

    def header(self, plan: Plan, snap: Any) -> bytes:
        """`X-Mailrouter-Owner: Name <address>` for the delivered copies (b'' without owner)."""
        if plan.owner is None:
            return b""
        person = snap.book.people.get(plan.owner)
        who = plan.owner
        if person is not None and person.address:
            # formataddr raises UnicodeEncodeError on a non-ASCII address (straße@, which
            # the book takes): each message of such an owner's request got 451, forever;
            # the name is encoded as before, the address written as it is (UTF-8)
            name = formataddr((person.name or plan.owner, "a@b"), charset="utf-8")[:-5]
            who = f"{name}<{person.address}>"
        return f"{OWNER_HEADER}: {header_text(who)}\r\n".encode("utf-8", "surrogateescape")

    def writer(self, plan: Plan, key: str, at: datetime,
               outgoing: Sequence[Any] = ()) -> Callable[[Connection], None] | None:
        """What the record transaction runs for the message's request. `outgoing`: the
        mail we send in answer to the message (autoreplies, DSNs; OutboxRecord): their
        Message-IDs join the request's thread, so the customer's answer to our autoreply,
        naming only its Message-ID (In-Reply-To), joins the request the message is in."""
        if plan.kind in ("none", "known") and not plan.refused:
            return None
        ours = tuple(m for o in outgoing for m in _message_ids(o.raw))

        def write(conn: Connection) -> None:
            apply_plan(conn, plan, key, at, ours)
        return write


def _marked(view: Any, marker: str | None) -> bool:
    """Does our reply carry `marker` (close, waiting) in its subject or first body line?"""
    if not marker:
        return False
    first = next((ln for ln in view.body_lines() if ln.strip()), "")   # read no further
    return marker.lower() in view.subject.lower() or marker.lower() in first.lower()


def _message_ids(raw: bytes) -> list[str]:
    """The Message-ID of mail we built (its header block only is read)."""
    head = BytesHeaderParser(policy=compat32).parsebytes(raw, headersonly=True)
    return msg_ids(str(head.get("Message-ID", "")))


def _base(address: str, options: Options) -> str | None:
    """`address` as the address book matches it: canonical (case, IDNA), detail dropped."""
    found = canonical(address, options)
    if found is None:
        return None
    local, _, domain = found.rpartition("@")
    split = detail_split(local, options)
    return f"{split[0] if split else local}@{domain}"

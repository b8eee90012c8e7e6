"""The routing snapshot: every routing file loaded, checked and compiled as a whole.

A Snapshot is immutable. The daemon holds one reference and swaps it on reload;
a message in flight keeps the snapshot it started with. `decide()` is the one
function that turns (message view, envelope, snapshot, clock) into Decisions:
the daemon, `mailrouter explain` and `mailrouter test` all call it.

Routing files are merged in file-name order: mappings (mailboxes, people, teams,
aliases, moved, calendars, autoreplies) by key, a key defined in two files is an
error naming both; lists (domains, rules, tests) are concatenated.
"""

from __future__ import annotations

import ctypes
import glob
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from .. import yamlsrc
from ..addressbook.departments import Department, parse_departments
from ..addressbook.canon import canonical
from ..addressbook.model import PERSON_MAILBOX_PREFIX
from ..addresses import AddressBook, Limits as BookLimits, Resolution
from ..config import Limits
from ..errors import ConfigError, ConfigErrors, place_prefix
from ..loops import detect_loop
from ..message import MessageView
from ..values import REPLY_OK, Action, Decision
from .files import (BARE_SECTIONS, _files, _merge, _read, read_files, read_merged,
                    routing_files)
from .responders import Responder, build_responders, check_responder_names
from .rules import Conditions, RuleSet

__all__ = ["Prepared", "Snapshot", "load_snapshot", "prepare", "envelope_sender"]



@dataclass(frozen=True)
class Snapshot:
    book: AddressBook
    rules: RuleSet
    hash: str
    files: tuple[str, ...]
    sections: dict[str, Any]      # only `tests:` (what `check`/`test` run); the rest is compiled
    hostname: str
    limits: Limits
    responders: Mapping[str, Responder] = field(default_factory=dict)
    departments: dict[str, Department] = field(default_factory=dict)   # the web view's rights
    # (file, line) of each of `domains:` (as the book has it), for `check`'s warnings
    domain_where: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    def warnings(self, control: bool, suggest: int | None = None) -> list[str]:
        """The lint warnings of these rules and this address book, each "FILE:LINE: ...:
        what and the fix" (`control`: config.yaml has `control:`). `mailrouter check` prints
        them (with its own of config.yaml and of the rule tests), and the daemon logs them
        at start and at each reload (`event=routing_warning`), so a set with warnings does
        not go live without a word. Pure, but not free (the shadowing lint): off the loop.
        `suggest`: how many did-you-mean look-ups to make at most (recipient_warnings)."""
        from ..calendars import zone_warnings
        from .folders import folder_warnings
        from .lint import control_warnings
        from .recipients import recipient_warnings
        out = self.rules.lint() + folder_warnings(self.book, self.rules.rules)
        out += recipient_warnings(self.book, self.rules.rules, suggest)
        for d in self.book.without_postmaster():
            at = place_prefix(*self.domain_where.get(d, ("", 0)))
            out.append(f"{at}domain {d}: RCPT TO:<postmaster@{d}> is refused, but RFC 5321 "
                       f"4.5.1 requires every mail domain to take mail for postmaster; add "
                       f"'postmaster@{d}: {self._postmaster_target()}' under aliases:")
        for group, member, path, line in self.book.dropped:
            now = self.book.moved[member].now
            out.append(f"{place_prefix(path, line)}alias {group}: its member {member} is a "
                       f"moved address with deliver: false, which the group drops without a "
                       f"word (no copy goes to {now}); list {now} instead, or remove {member}")
        out += control_warnings(self.rules.rules, control)
        out += zone_warnings(self.rules.calendars)
        return out

    def _postmaster_target(self) -> str:
        """What a missing postmaster@ could point at: another domain's postmaster, a mailbox
        named postmaster, else a person or mailbox to choose."""
        for d in sorted(self.book.domains):
            if not self.book.resolve(f"postmaster@{d}").reply:
                return f"postmaster@{d}"
        return ("mailbox:postmaster" if "postmaster" in self.book.mailboxes
                else "<a person or mailbox:NAME>")

    def check_rcpt(self, address: str) -> Resolution:
        """Resolution of one RCPT; `.reply` is set when the address is refused."""
        return self.book.resolve(address)

    def decide(self, view: MessageView, mail_from: str, rcpts: Sequence[str],
               at: datetime | None = None) -> list[Decision]:
        """One Decision per envelope recipient, in order. Pure."""
        at = at or datetime.now(timezone.utc)
        return [self._decide_one(view, mail_from, rcpt, at) for rcpt in rcpts]

    def _decide_one(self, view: MessageView, mail_from: str, rcpt: str, at: datetime) -> Decision:
        res = self.book.resolve(rcpt)
        if res.reply is not None:
            action = Action.DEFER if res.reply.temporary else Action.REJECT
            return Decision(rcpt, action, res.reply, reasons=(f"address: {res.reply.text}",))
        loop = detect_loop(view, res.address, hostname=self.hostname,
                           max_received=self.limits.max_received,
                           detail_separator=self.book.options.detail_separator, book=self.book)
        if loop is not None:
            action = Action.DEFER if loop.reply.temporary else Action.REJECT
            return Decision(rcpt, action, loop.reply, loop=loop)
        route_rcpt, route_res, moved_note = self._follow_moved(res)
        first = res.targets[0] if res.targets else None
        default = Decision(
            rcpt, Action.DELIVER, REPLY_OK, targets=res.targets,
            mailbox=first.mailbox if first else None, folder=first.folder if first else None,
            owner=res.person or (first.person if first and len(res.targets) == 1 else None),
            autoreply=res.moved.autoreply if res.moved else None,
            path=first.path if first else (), reasons=("address book",) + moved_note)
        decision = self.rules.apply(view, mail_from, route_rcpt or rcpt, route_res, default, at,
                                    original=rcpt)
        if decision.action is Action.DELIVER and not decision.targets:
            decision = replace(decision, targets=res.targets)
        return decision

    def _follow_moved(self, res: Resolution) -> tuple[str | None, Resolution, tuple[str, ...]]:
        """A moved address that delivers is routed as mail to its new address: the rules
        written for sales@ apply to old-sales@ (the original stays `rcpt_original`)."""
        moved, seen = res.moved, {res.address}
        route = res
        while moved is not None and moved.deliver and moved.now not in seen:
            nxt = self.book.resolve(moved.now)
            if nxt.reply is not None:
                break
            route, moved = nxt, nxt.moved
            seen.add(nxt.address)
        if route is res:
            return None, res, ()
        return route.address, route, (f"moved: {res.address} -> {route.address}; routed as "
                                      f"mail to {route.address}",)


def envelope_sender(given: str | None, view: MessageView) -> str:
    """The envelope sender a decision without an SMTP session uses (`explain`, rule tests).

    `given` (`--from`, a test's `mail_from:`) when it is set, '' included; otherwise the
    header From's address: a person's MTA sends MAIL FROM with that address, so rules on
    `mail_from` decide as they will for the real message. `<>` must be given explicitly.
    """
    if given is not None:
        return given
    try:
        return view.from_addr or ""
    except Exception:  # noqa: BLE001 (the view promises not to raise; a broken From: no sender)
        return ""


class _AnyName(dict[str, Any]):
    """Every name is known: after a file could not be read, its definitions are missing,
    and 'unknown mailbox' for each name it defined would bury the one real error."""

    def __contains__(self, key: object) -> bool:
        return True


@dataclass(frozen=True)
class _Names:
    """What RuleSet.build reads of an address book that could not be built: the names the
    routing files define (mailboxes, people with their own mailboxes, teams), so the rules
    are still checked and their errors reported with the book's in one load."""

    mailboxes: dict[str, Any]
    people: dict[str, Any]      # name -> None: no Person to ask for its address or name
    teams: dict[str, Any]

    def knows(self, address: str) -> bool:
        """No address is known: the aliases are what could not be built."""
        return False

    @classmethod
    def of(cls, merged: dict[str, Any], complete: bool) -> _Names:
        if not complete:
            return cls(_AnyName(), _AnyName(), _AnyName())
        boxes: dict[str, Any] = {str(k): None for k in merged["mailboxes"]}
        for key, spec in merged["people"].items():
            if not isinstance(spec, dict) or spec.get("mailbox") is None:
                boxes[PERSON_MAILBOX_PREFIX + str(key)] = None
        return cls(boxes, {str(k): None for k in merged["people"]},
                   {str(k): None for k in merged["teams"]})


def _check_schedules(teams: Any, calendars: Any) -> list[ConfigError]:
    """A team's `schedule: {member: CALENDAR}` must name calendars from `calendars:`."""
    errors = []
    for name, spec in teams.items():
        schedule = spec.get("schedule") if isinstance(spec, dict) else None
        for member, cal in (schedule.items() if isinstance(schedule, dict) else ()):
            if str(cal) not in calendars:
                path, line, col = yamlsrc.where(cal, schedule)
                known = ", ".join(calendars) or "none defined"
                errors.append(ConfigError(
                    f"team {str(name)!r}: schedule of {str(member)!r} names unknown calendar "
                    f"{str(cal)!r}", path, line, col, f"define it under 'calendars:' (known: {known})"))
    return errors


def load_snapshot(patterns: Sequence[str], limits: Limits, hostname: str,
                  built: tuple[str, AddressBook] | None = None,
                  prepared: Prepared | None = None,
                  texts: Mapping[str, bytes] | None = None) -> Snapshot:
    """Load, check and compile every routing file. Raises ConfigErrors listing all problems.

    Every file's problems are reported in one load: a file that cannot be read or parsed
    does not stop the others being checked, and rules are checked even when the address
    book has errors (against the names the files define, or, when a file could not be
    read, without checking the names they refer to).

    The loaded YAML (every value with its file:line) is dropped once compiled: only the
    `tests:` section is kept. The cyclic GC is off meanwhile: a big book is a million
    short-lived objects and no cycles, and each collection walked all of them (at 100,000
    aliases and 10,000 rules, a third of the load).

    The address book's big sections are loaded without positions (`BARE_SECTIONS`). A
    load that finds an error in the files or the book (it stops at the first) loads every
    file again with positions and reports what that finds. Errors found once the book is
    built (rules, autoreplies, departments, schedules) do not read the book's sections:
    they are the ones the load with positions would report, and are reported as they are.

    `built`: (hash, book) of an earlier load, taken as the address book when the files
    still hash the same and hold no error (daemon.run_workers: the book is built in a
    child process and sent back, see there); anything else builds the book as before.
    `prepared`: the rules' half of this load made while that child built the book
    (`prepare`), taken when it read the very files the book was made of.
    `texts`: the files' bytes, in their order, read from here and not from the disk (a
    replacement worker starting from the last routing files that loaded, daemon.serve):
    the snapshot names the files by their paths, as when they were read there.
    """
    try:
        with yamlsrc.no_gc():
            try:
                try:
                    return _load_snapshot(patterns, limits, hostname, BARE_SECTIONS, built,
                                          prepared, texts)
                except _NeedPositions:
                    pass
                return _load_snapshot(patterns, limits, hostname, (), built, texts=texts)
            except _NotSame:
                pass
            try:
                return _load_snapshot(patterns, limits, hostname, BARE_SECTIONS, texts=texts)
            except _NeedPositions:
                pass
            return _load_snapshot(patterns, limits, hostname, (), texts=texts)
    finally:
        _give_back_freed_memory()


@dataclass(frozen=True)
class Prepared:
    """The part of a load given a book (`load_snapshot(built=)`) that the book is not needed
    for: the files read without the book's sections, merged, and the rules' conditions
    compiled. daemon.run_workers makes it while the child builds the book (the supervisor
    would otherwise wait for it doing nothing, ~1.2 s at 100,000 aliases) and hands it to
    load_snapshot, which takes it only when the book hashes as these files did."""

    files: tuple[str, ...]
    docs: list[tuple[str, Any]]
    digest: str
    merged: dict[str, Any]
    conditions: Conditions


def prepare(patterns: Sequence[str], texts: Mapping[str, bytes] | None = None) -> Prepared | None:
    """The rules' half of a load of these files (`Prepared`); None when they have an error
    (the load then finds and reports it as always). `texts`: the files' bytes, as
    load_snapshot's."""
    with yamlsrc.no_gc():
        read = read_merged(patterns, BARE_SECTIONS, texts)
        if read is None:
            return None
        files, got, merged = read
        conditions = Conditions.of(merged["rules"], merged["calendars"])
        return (Prepared(tuple(files), got.docs, got.digest, merged, conditions)
                if conditions is not None else None)


def _give_back_freed_memory() -> None:
    """Return to the system what the C allocator holds free after a load (glibc only).

    The loaded YAML's big blocks (the tables of its mappings and lists) are freed in the
    middle of the heap, where glibc keeps them: at 100,000 aliases that was ~50 MB of the
    process, shared copy-on-write with every worker forked after it but counted once."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim(0)


# Files gone. A file named in `routing:` that is missing is "file not found" (_read), and
# a set with no files at all "no routing files match"; one glob of several that matches
# nothing is an empty drop-in folder or a typo (`check` warns). The rules' file deleted or
# moved from a glob loaded as "no rules": every message took its address-book default, at
# start or at a reload, as if the rules had been removed on purpose. So with a glob, files
# of which none has `rules:` are refused: no rules on purpose is `rules: []` in a file.
# (Files named one by one say what they are: a set of them without rules is meant so.)
# Known limit: one of several files with rules, deleted from a glob, is not told from one
# removed on purpose.

def _no_rules(patterns: Sequence[str], docs: list[tuple[str, Any]]) -> ConfigError:
    """Files of which none has `rules:`, reported when the load has no other error; named
    by the patterns (the daemon's reload log has no config file to name)."""
    return ConfigError(
        "no routing file has a 'rules:' section, so every message would take its "
        "address-book default (the rules' file deleted or moved?); files read: "
        + ", ".join(f for f, _ in docs), ", ".join(patterns),
        hint="put the rules' file back; for no rules on purpose, write 'rules: []' in "
             "one of these files")


class _NeedPositions(Exception):
    """A load without positions found an error that needs them to be reported."""


class _NotSame(Exception):
    """A load given a book skipped the book's sections, and the files were not the ones
    the book was made of, or have an error: to be loaded whole."""


def _load_snapshot(patterns: Sequence[str], limits: Limits, hostname: str,
                   bare: Sequence[str], built: tuple[str, AddressBook] | None = None,
                   prepared: Prepared | None = None,
                   texts: Mapping[str, bytes] | None = None) -> Snapshot:
    files = list(texts) if texts is not None else _files(patterns)
    errors: list[ConfigError] = []
    if not files:
        skipped = routing_files(patterns)[1]
        raise ConfigErrors([ConfigError(
            f"no routing files match {', '.join(patterns)}" + (
                f" (only backups, skipped: {', '.join(skipped)})" if skipped else ""),
            hint="set 'routing:' in config.yaml to your rules/*.yaml" + (
                "; rename a backup to load it" if skipped else ""))])
    conditions = None
    if (prepared is not None and built is not None and bare == BARE_SECTIONS
            and prepared.files == tuple(files) and prepared.digest == built[0]):
        # read, without the book's sections, from the files the book was made of
        skip: Sequence[str] = BARE_SECTIONS
        docs, digest, merged = prepared.docs, prepared.digest, prepared.merged
        conditions = prepared.conditions
    else:
        if built is not None and texts is None:     # read once: hashed, then parsed
            texts = read_files(files, errors)
        # the book's sections are not even read when the book is given for these very files
        # (their hash, the one _read would make again: texts are `files` in order, those
        # that could be read)
        given = yamlsrc.files_hash(texts.items()) if built is not None and texts is not None \
            else None
        skip = BARE_SECTIONS if built is not None and given == built[0] else ()
        got = _read(files, bare, skip, errors, texts, given)
        docs, digest = got.docs, got.digest
        merged = _merge(docs, errors, got.blank)
    same = built is not None and not errors and built[0] == digest
    if skip and not same:
        raise _NotSame
    if bare and errors:
        raise _NeedPositions
    if not errors and (not built[1].mailboxes if skip and built is not None
                       else not merged["mailboxes"] and not merged["people"]):
        # The address book's file deleted, moved or left out of --routing: every recipient
        # would be refused 550 5.1.1 (mail bounced), or, when rules name mailboxes, each
        # name was reported unknown ("known mailboxes: " and nothing) and the cause hidden.
        errors.append(ConfigError(
            "the routing files define no mailbox and no person: every recipient would be "
            "refused (550 5.1.1)", hint="the file with the address book (mailboxes:, people:, "
            "aliases:) is missing from the files read: " + ", ".join(files)))
    elif not errors and not skip and not merged["domains"] and (
            first := _an_address(merged)) is not None:
        # The file with `domains:` left out of --routing (a rule file tried alone, or with
        # a file of its own mailboxes and aliases): each address was "not on one of our
        # domains; add example.com under domains:", one error per address, and the cause
        # (the address book's file not read) unsaid.
        raise ConfigErrors([ConfigError(
            f"the routing files define no domains: every address in them ({first} among "
            "them) is on no domain of ours, and every recipient would be refused (550 5.1.1)",
            hint="the file with the address book's 'domains:' is missing from the files read: "
            + ", ".join(files) + f"; or, for a new domain, write domains: "
            f"[{first.rpartition('@')[2]}] in one of them")])
    complete = not errors           # every file read, every section where it belongs
    book = rules = None
    try:
        if built is not None and same:
            book = built[1]
        else:
            book = AddressBook.build(merged, BookLimits(limits.max_alias_depth,
                                                        limits.max_alias_width),
                                     fail_fast=bool(bare))
    except ConfigErrors as exc:
        if bare:
            raise _NeedPositions from None
        errors.extend(exc.errors)
    responders = build_responders(merged["autoreplies"], errors)
    if complete:
        check_responder_names(merged["moved"], responders, merged["autoreplies"], errors)
    names: Any = book if book is not None and complete else _Names.of(merged, complete)
    try:
        rules = RuleSet.build(merged["rules"], names, merged["calendars"],
                              responders=tuple(merged["autoreplies"]) if complete else None,
                              prepared=conditions)
    except ConfigErrors as exc:
        errors.extend(exc.errors)
    if book is not None and rules is not None:
        errors.extend(_check_schedules(merged["teams"], rules.calendars))
    departments: dict[str, Department] = {}
    if book is not None:
        try:
            departments = parse_departments(merged["departments"], book.people, book.mailboxes)
        except ConfigErrors as exc:
            errors.extend(exc.errors)
    if not errors and any(glob.has_magic(p) for p in patterns) and not any(
            isinstance(doc, Mapping) and "rules" in doc for _, doc in docs):
        errors.append(_no_rules(patterns, docs))
    if skip and errors:
        raise _NotSame
    if errors or book is None or rules is None:
        raise ConfigErrors(errors)
    return Snapshot(book, rules, digest, tuple(files), {"tests": merged["tests"]},
                    hostname, limits, responders, departments,
                    _domain_where(merged["domains"], book))


def _an_address(merged: Mapping[str, Any]) -> str | None:
    """The first address the merged sections hold (an alias, a moved address, a person's)."""
    for section in ("aliases", "moved"):
        for key in merged[section] or ():
            if isinstance(key, str) and "@" in key:
                return key
    for person in (merged["people"] or {}).values():
        address = person.get("address") if isinstance(person, Mapping) else None
        if isinstance(address, str) and "@" in address:
            return address
    return None


def _domain_where(domains: Any, book: AddressBook) -> dict[str, tuple[str, int]]:
    """Where each domain of the book is written (the first place, in file order)."""
    where: dict[str, tuple[str, int]] = {}
    for item, (path, line, _) in zip(domains, getattr(domains, "item_where", ())):
        if isinstance(item, str):
            dom = (canonical("x@" + item, book.options) or "").partition("@")[2]
            where.setdefault(dom, (path, line))
    return where

"""The rules engine: compiled routing rules applied to one message for one recipient.

    rules:
      - name: invoices
        when: {subject: {contains: [счёт, invoice]}}
        then: {mailbox: finance, folder: Finance, owner: finance-duty, priority: high,
               sla: {first_response: 4h, calendar: msk}}
        continue: false

`RuleSet.build` parses and checks every rule as a whole (unknown keys with a
did-you-mean, unknown mailbox/person/team/calendar, bad regexes and durations)
and raises one ConfigErrors with all of them. `apply` is pure: the first rule
that matches decides; `continue: true` lets later rules add to the outcome
(fields an earlier rule set are kept, unset ones are filled, tags accumulate).
No match returns the address book's default unchanged: mail never goes nowhere.
A recipient the address book refused (reject/defer) is not routed by rules.

The conditions live in conditions.py, the candidate index in index.py, SLA
durations and due times in sla_spec.py, lint warnings in lint.py.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from datetime import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from ..calendars import Calendar, build_calendars
from ..errors import ConfigError, ConfigErrors
from ..values import (
    REPLY_RULE_DEFER,
    REPLY_RULE_REJECT,
    Action,
    Decision,
    RuleMatch,
    Target,
    written_folder_problem,
)
from ..yamlsrc import as_written, letters_note, where
from .conditions import Node, did_you_mean, parse_condition
from .facts import Facts
from .index import RuleIndex
from .normalize import normalize
from .sla_spec import Sla, parse_sla

__all__ = ["Conditions", "Rule", "Then", "RuleSet", "REPLY_RULE_REJECT", "REPLY_RULE_DEFER"]

RULE_KEYS = ("name", "when", "then", "continue")
THEN_KEYS = ("mailbox", "folder", "owner", "tags", "priority", "sla", "action", "autoreply",
             "copy_to_owner")
PRIORITIES = ("low", "normal", "high", "urgent")
# The `then:` keys that name one thing, with an example for the error that gets a list
ONE_VALUE = {"mailbox": "finance", "folder": "Finance", "owner": "ivanov", "priority": "high",
             "action": "reject", "autoreply": "closed"}
ACTIONS = ("deliver", "reject", "defer")
# What other filters call a rule's parts (difflib made 'condition' into 'continue')
RULE_SYNONYMS = {"if": "when", "condition": "when", "conditions": "when", "match": "when",
                 "do": "then", "actions": "then", "action": "then", "title": "name",
                 "id": "name", "stop": "continue", "final": "continue", "last": "continue"}
# Other filters' words for an action or a priority (`choice`'s hint)
CHOICE_SYNONYMS = {"bounce": "reject", "refuse": "reject", "deny": "reject",
                   "tempfail": "defer", "retry": "defer", "later": "defer",
                   "accept": "deliver", "keep": "deliver", "critical": "urgent",
                   "medium": "normal", "highest": "urgent", "lowest": "low"}
THEN_SYNONYMS = {"assign": "owner", "assignee": "owner", "assign_to": "owner",
                 "fileinto": "folder", "move_to": "folder", "move": "folder",
                 "deliver_to": "mailbox", "to": "mailbox", "label": "tags", "labels": "tags",
                 "reject": "action: reject", "defer": "action: defer",
                 "reply": "autoreply", "vacation": "autoreply", "due": "sla"}


@dataclass(frozen=True, slots=True)
class Then:
    mailbox: str | None = None
    folder: str | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()
    priority: str | None = None
    sla: Sla | None = None
    action: str | None = None
    autoreply: str | None = None       # a responder of `autoreplies:` (responders.py)
    copy_to_owner: bool | None = None  # also a copy to the request owner's own address


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    file: str
    line: int
    position: int
    when: Node | None          # None: always matches
    then: Then
    cont: bool


class _Builder:
    """Checks and compiles the `rules:` items; collects every error."""

    def __init__(self, book: Any, calendars: Mapping[str, Calendar],
                 responders: Sequence[str] | None = None,
                 whens: Sequence[Node | None] | None = None) -> None:
        self.book, self.calendars = book, calendars
        self.responders = responders       # None: names not checked (tests of rules alone)
        self.whens = whens                 # each rule's condition, compiled (Conditions)
        self.errors: list[ConfigError] = []

    def err(self, msg: str, node: Any, parent: Any = None, hint: str = "") -> None:
        path, line, col = where(node, parent)
        self.errors.append(ConfigError(msg, path, line, col, hint))

    def rule(self, spec: Any, pos: int, parent: Any, at: tuple[str, int, int] | None = None) -> Rule | None:
        """`at`: where the item is, for one that carries no position (a number, null)."""
        if not isinstance(spec, Mapping):
            msg, hint = ("a rule must be a mapping with name, when, then",
                         "write '- name: ...' with when: and then: under it")
            if at is not None and not getattr(spec, "line", 0):
                self.errors.append(ConfigError(msg, *at, hint))
            else:
                self.err(msg, spec, parent, hint)
            return None
        raw_name = spec.get("name")
        name = str(as_written(raw_name) if _is_text(raw_name) else f"#{pos + 1}")
        if "name" in spec and not _is_text(raw_name):
            self.err(f"rule {name!r}: 'name' must be text, not {raw_name!r}", raw_name, spec,
                     "write e.g. name: invoices (explanations and the registry cite it)")
        for key in spec:
            if key not in RULE_KEYS:
                self.err(f"rule {name!r}: unknown key '{key}'", key, spec,
                         _suggest(str(key), RULE_KEYS, RULE_SYNONYMS))
        if "name" not in spec:
            self.err(f"rule {name!r} has no name", spec, parent, "add 'name:' so explanations can cite it")
        if "when" in spec and spec["when"] is None:
            # `when:` left with nothing under it (an edit half done) matched every message,
            # went live at the next save, and took all mail from the rules after it
            self.err(f"rule {name!r}: 'when' is empty", next(k for k in spec if k == "when"), spec,
                     "write its conditions under it, or remove the 'when:' line for a rule "
                     "that matches every message")
        when = None
        if self.whens is not None:
            when = self.whens[pos]
        elif spec.get("when") is not None:
            when = parse_condition(spec["when"], self.errors, self.calendars, name, spec)
        then = self.then(name, spec.get("then"), spec)
        cont = spec.get("continue", False)
        if not isinstance(cont, bool):
            self.err(f"rule {name!r}: 'continue' takes true or false", cont, spec,
                     "write continue: true (later rules add to this one), or leave it out")
        path, line, _ = where(spec, parent)
        return Rule(name, path, line, pos, when, then or Then(), bool(cont))

    def then(self, name: str, spec: Any, parent: Any) -> Then | None:
        if not isinstance(spec, Mapping) or not spec:
            self.err(f"rule {name!r}: 'then' must be a non-empty mapping", spec, parent,
                     "write e.g. then: {mailbox: finance, folder: Finance}")
            return None
        for key in spec:
            if key in ("continue", "when", "name"):
                # `then: {..., continue: true}`: "known keys: mailbox, ..." did not say where
                self.err(f"rule {name!r}: '{key}' is a key of the rule, not an action", key,
                         spec, f"move it out of then:, beside it ('{key}:' at the indentation "
                         "of 'then:')")
            elif key not in THEN_KEYS:
                self.err(f"rule {name!r}: unknown action '{key}'", key, spec,
                         _suggest(str(key), THEN_KEYS, THEN_SYNONYMS))
        for key, example in ONE_VALUE.items():
            value = spec.get(key)
            if isinstance(value, (Mapping, list)):
                self.err(f"rule {name!r}: '{key}' takes one value, not a "
                         f"{'list' if isinstance(value, list) else 'mapping'}", value, spec,
                         f"write e.g. {key}: {example}")
        mailbox = self.ref(name, spec, "mailbox", self.book.mailboxes, "mailboxes")
        owner = _one(spec, "owner")
        if owner is not None and owner not in self.book.people and owner not in self.book.teams:
            known = list(self.book.people) + list(self.book.teams)
            hint = did_you_mean(str(owner), known).replace("known keys", "known people and teams")
            if owner in self.book.mailboxes:
                # `owner: sales` meant the sales desk: said what an owner is, not "did you mean"
                hint = (f"{owner!r} is a mailbox; an owner is a person (people:) or a team "
                        f"(teams:), and the mailbox goes in 'mailbox: {owner}'; {hint}")
            whose = self.person_by(str(owner))
            if whose is not None:
                # the address or the name as a mail client shows the person: among 300 people
                # "known people and teams: ..." did not say which key was meant
                hint = f"{whose[1]}; an owner is written by its key: owner: {whose[0]}"
            self.err(f"rule {name!r}: unknown owner {owner!r}", owner, spec, hint)
        raw_tags = spec.get("tags")
        raw_tags = [] if raw_tags is None else raw_tags if isinstance(raw_tags, list) else [raw_tags]
        for t in raw_tags:
            if isinstance(t, bool):
                self.err(f"rule {name!r}: a tag must be text, but YAML read this one as "
                         f"{str(t).lower()} (no, yes, on, off, y, n are booleans to YAML)", t, spec,
                         "put the tag in quotes as written: tags: ['on', 'NO']")
            elif not _is_text(t):
                self.err(f"rule {name!r}: a tag must be text, not {t!r}", t, spec,
                         "write e.g. tags: [invoice, urgent]")
        tags = tuple(str(as_written(t)) for t in raw_tags)
        priority = self.choice(name, spec, "priority", PRIORITIES)
        action = self.choice(name, spec, "action", ACTIONS)
        sla = None
        if spec.get("sla") is not None:
            sla = parse_sla(spec["sla"], self.calendars, f"rule {name!r}", self.errors, spec)
        folder = as_written(_one(spec, "folder"))        # 00123, not 83
        if isinstance(folder, bool):
            # `folder: Off` was the folder 'False', `folder: No` the folder 'False' too
            self.err(f"rule {name!r}: folder takes text, but YAML read this value as "
                     f"{str(folder).lower()} (no, yes, on, off, y, n are booleans to YAML)",
                     folder, spec, "put the folder in quotes as written: folder: 'Off'")
            folder = None
        problem = written_folder_problem(str(folder)) if folder is not None else None
        if problem is not None:
            self.err(f"rule {name!r}: folder {str(folder)!r} has {problem}", folder, spec,
                     "fix the folder name")
        box = self.book.mailboxes.get(mailbox) if mailbox else None
        if (folder is not None and box is not None and box.kind == "lmtp"
                and not box.sieve_folders and not str(folder).isascii()):
            self.err(f"rule {name!r}: folder {str(folder)!r} cannot be sent to LMTP mailbox "
                     f"{mailbox!r} (Dovecot takes +detail folders in ASCII only)", folder, spec,
                     "set sieve_folders: true on the mailbox (deploy/dovecot), use an ASCII "
                     "folder name here, or a maildir mailbox")
        return Then(mailbox, str(folder) if folder is not None else None,
                    str(owner) if owner is not None else None, tags, priority, sla, action,
                    self.responder(name, spec), self.flag(name, spec, "copy_to_owner"))

    def responder(self, name: str, spec: Mapping[str, Any]) -> str | None:
        value = _one(spec, "autoreply")
        if value is None:
            return None
        if self.responders is not None and str(value) not in self.responders:
            self.err(f"rule {name!r}: unknown autoreply {value!r}", value, spec,
                     did_you_mean(str(value), list(self.responders)).replace(
                         "known keys", "known autoreplies") + " (define it under 'autoreplies:')")
        return str(value)

    def ref(self, name: str, spec: Mapping[str, Any], key: str, known: Any, section: str) -> str | None:
        value = _one(spec, key)
        if value is None:
            return None
        if value not in known:
            hint = (did_you_mean(str(value), list(known)).replace("known keys", f"known {section}")
                    + f" (define it under '{section}:')")
            boxes = self.mailboxes_of(str(value)) if key == "mailbox" else []
            if len(boxes) == 1:
                # `mailbox: support@example.com`: the address, not the mailbox it leads to
                hint = (f"{str(value)!r} is an address, which leads to mailbox {boxes[0]!r}; "
                        f"write mailbox: {boxes[0]}")
            self.err(f"rule {name!r}: unknown {key} {value!r}", value, spec, hint)
        return str(value)

    def person_by(self, text: str) -> tuple[str, str] | None:
        """(key, why) of the one person whose address or name `text` is, if any."""
        folded = normalize(text.strip().strip("<>"))      # Петр is Пётр, case folded
        found = {(k, f"{text!r} is the {'address' if '@' in folded else 'name'} of person {k!r}")
                 for k, p in self.book.people.items()
                 # p is None when the book could not be built (snapshot._Names: names only)
                 if p is not None
                 and folded in (normalize(p.address or ""), normalize(p.name or ""))}
        return found.pop() if len(found) == 1 else None

    def mailboxes_of(self, address: str) -> list[str]:
        """The mailboxes mail to `address` goes to, when the book knows the address."""
        if "@" not in address or not self.book.knows(address):
            return []
        return sorted({t.mailbox for t in self.book.resolve(address).targets})

    def flag(self, name: str, spec: Mapping[str, Any], key: str) -> bool | None:
        value = spec.get(key)
        if value is not None and not isinstance(value, bool):
            self.err(f"rule {name!r}: {key} takes true or false, not {value!r}", value, spec,
                     f"write {key}: true to also deliver to the owner's own address")
            return None
        return value

    def choice(self, name: str, spec: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
        value = _one(spec, key)
        if value is not None and value not in allowed:
            # `action: rejekt` named the three values and left the ops person to spot the
            # typo; a near one (or another filter's word: bounce, tempfail) is now named
            same = CHOICE_SYNONYMS.get(str(value).lower())
            close = [same] if same in allowed else difflib.get_close_matches(
                str(value).lower(), list(allowed), n=1)
            self.err(f"rule {name!r}: {key} must be one of {', '.join(allowed)}, not {value!r}",
                     value, spec, f"did you mean '{close[0]}'?" + letters_note(value) if close
                     else "")
            return None
        return str(value) if value is not None else None


def _suggest(key: str, known: tuple[str, ...], synonyms: Mapping[str, str]) -> str:
    if synonyms.get(key.lower()) == "continue":    # first match stops unless continue: true
        return "a matching rule stops the others already; 'continue: true' lets later ones add"
    return did_you_mean(key, known, synonyms)


def _is_text(value: Any) -> bool:
    """A name or label as written: a string (not empty) or a number, never a list, a
    mapping, null or true/false (str() of those made rule names like "['a', 'b']")."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _one(spec: Mapping[str, Any], key: str) -> Any:
    """spec[key], or None when missing or a list or mapping (reported once, in `then`)."""
    value = spec.get(key)
    return None if isinstance(value, (Mapping, list)) else value


@dataclass(frozen=True)
class Conditions:
    """The `when:` of every rule in `rules` compiled, with the calendars they name: the part
    of RuleSet.build that needs no address book (daemon.run_workers compiles it while a child
    builds the book). Only made when every rule is a mapping and no condition has an error;
    RuleSet.build reports those as before."""

    rules: Sequence[Any]
    calendars: Mapping[str, Calendar]
    whens: tuple[Node | None, ...]

    @classmethod
    def of(cls, rules: Sequence[Any], calendars: Mapping[str, Any] | None) -> Conditions | None:
        errors: list[ConfigError] = []
        try:
            cals = build_calendars(calendars)
        except ConfigErrors:
            return None
        whens: list[Node | None] = []
        for pos, spec in enumerate(rules or ()):
            if not isinstance(spec, Mapping):
                return None
            when = None
            if spec.get("when") is not None:
                name = str(as_written(spec.get("name")) or f"#{pos + 1}")
                when = parse_condition(spec["when"], errors, cals, name, spec)
                if errors:
                    return None
            whens.append(when)
        return cls(rules, cals, tuple(whens))


class RuleSet:
    """The compiled rules of all routing files, in file order. Immutable once built."""

    def __init__(self, rules: Sequence[Rule], calendars: Mapping[str, Calendar]) -> None:
        self.rules = tuple(rules)
        self.calendars = dict(calendars)
        self.index = RuleIndex(self.rules)

    @classmethod
    def build(cls, rules: Sequence[Any], book: Any,
              calendars: Mapping[str, Any] | None = None,
              responders: Sequence[str] | None = None,
              prepared: Conditions | None = None) -> "RuleSet":
        """`prepared`: the conditions of these very `rules` compiled beforehand (`Conditions.of`:
        they need no address book, so they compile while a child process builds it)."""
        errors: list[ConfigError] = []
        whens = None
        if prepared is not None and prepared.rules is rules:
            cals, whens = prepared.calendars, prepared.whens
        else:
            try:
                cals = build_calendars(calendars)
            except ConfigErrors as exc:
                errors.extend(exc.errors)
                # a calendar with an error is still defined: rules naming it are not told
                # "unknown calendar 'msk' (known: none defined)" as well (never used: errors)
                defined: dict[str, Any] = dict.fromkeys(map(str, calendars or {}))
                cals = defined
        b = _Builder(book, cals, responders, whens)
        marks = getattr(rules, "item_marks", None)
        spots = getattr(rules, "item_where", None)     # the merged list of all files
        compiled = []
        for pos, spec in enumerate(rules or ()):
            rule = b.rule(spec, pos, rules, spots[pos] if spots else None)
            if rule is not None and marks and not getattr(spec, "line", 0):
                rule = replace(rule, line=marks[pos][0], file=getattr(rules, "path", rule.file))
            if rule is not None:
                compiled.append(rule)
        errors.extend(b.errors)
        if errors:
            raise ConfigErrors(errors)
        return cls(compiled, cals)

    def apply(self, view: Any, mail_from: str, rcpt: str, resolution: Any, default: Decision,
              at: datetime, original: str | None = None) -> Decision:
        """The decision for one recipient: `default` refined by the rules that match. Pure.
        `original`: the recipient as given when `rcpt` is the new address of a moved one."""
        if default.action is not Action.DELIVER:
            return default
        facts = Facts(view, mail_from, rcpt, resolution, at, self.calendars, original)
        matched: list[tuple[Rule, str]] = []
        for rule in self.index.candidates(facts):
            why = rule.when.test(facts) if rule.when is not None else "always"
            if why is None:
                continue
            matched.append((rule, why))
            if not rule.cont:
                break
        if not matched:
            return default
        return _decide(default, matched, at, self.calendars)

    def lint(self) -> list[str]:
        from .lint import lint_rules
        return lint_rules(self.rules)


def _decide(default: Decision, matched: list[tuple[Rule, str]], at: datetime,
            calendars: Mapping[str, Calendar]) -> Decision:
    """Fold the matched rules' `then` into the default decision (earlier rules win)."""
    acc: dict[str, Any] = {}
    tags = list(default.tags)
    for rule, _ in matched:
        for key in ("mailbox", "folder", "owner", "priority", "sla", "action", "autoreply",
                    "copy_to_owner"):
            value = getattr(rule.then, key)
            if value is not None and key not in acc:
                acc[key] = value
        tags.extend(t for t in rule.then.tags if t not in tags)
    # every field the rules change, then one copy of the default (replace() is not cheap)
    changes: dict[str, Any] = dict(
        tags=tuple(tags), autoreply=acc.get("autoreply", default.autoreply),
        copy_to_owner=acc.get("copy_to_owner", default.copy_to_owner),
        owner=acc.get("owner", default.owner), priority=acc.get("priority", default.priority),
        rules=default.rules + tuple(RuleMatch(r.name, r.file, r.line, w) for r, w in matched),
        reasons=default.reasons + tuple(f"rule {r.name!r} ({r.file}:{r.line}): {w}"
                                        for r, w in matched))
    if "mailbox" in acc:
        folder = acc.get("folder")
        changes.update(mailbox=acc["mailbox"], folder=folder,
                       targets=(Target(acc["mailbox"], folder, None, default.path),))
    elif "folder" in acc:
        changes.update(folder=acc["folder"], targets=tuple(
            replace(t, folder=acc["folder"]) for t in default.targets))
    if "sla" in acc:
        changes["sla"] = acc["sla"].describe(at, calendars)
    action = acc.get("action")
    if action == "reject":
        changes.update(action=Action.REJECT, reply=REPLY_RULE_REJECT, targets=())
    elif action == "defer":
        changes.update(action=Action.DEFER, reply=REPLY_RULE_DEFER, targets=())
    return replace(default, **changes)

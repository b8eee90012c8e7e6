"""Rule tests: the cases that routing files carry beside their rules (`mailrouter test`).

    tests:
      - name: invoice in KOI8-R
        message: samples/invoice-koi8r.eml      # relative to this routing file
        mail_from: billing@vendor.example
        rcpt: invoices@example.com               # or a list
        at: 2027-01-11T10:00:00+03:00            # optional (now); naive times are UTC; a day
                                                 # alone (2027-01-11) is refused
        expect: {mailbox: finance, folder: Finance, owner: finance-duty, priority: high}

Without `mail_from:` the envelope sender is the message's From address, as in
`mailrouter explain` without `--from` (snapshot.envelope_sender): the same message
gets the same decision from both. Write `mail_from: "<>"` for a bounce.

Instead of `message:` a case may give `headers: {Subject: ..., From: ...}` and
`body: "..."`; the runner builds the message (RFC 2047 for non-ASCII headers).
`expect` may name mailbox, folder, owner, tags (the exact set), priority, action,
sla (a substring of the decision's SLA string) and rule (the first rule that
matched, or null for none). The runner calls the daemon's own decide function,
so a test exercises exactly what the daemon would do. It never raises: a case
that cannot run (missing file, unknown key) is a failure line too. One line per
failing case and recipient: "file:line: test NAME: folder expected 'X', got 'Y'; why:
rule 'R' (file:line) matched: subject contains 'y' (value: 'Y 5')" (or "no rule matched").

`check_rule_tests`, given the snapshot's names (`Names.of`), also warns about an
`expect:` no decision can give: a mailbox the address book does not define, an owner
that is no person or team, a rule no file defines, a folder that no rule sets and
the case's recipients' aliases do not give, a priority or action outside their sets.
Such a case can only fail `mailrouter test`; `check` says so with the did-you-mean.
So can a case whose `rcpt:` the book refuses at RCPT (unless it expects an `action:`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..addressquery import meant
from ..values import Decision, as_stored
from ..yamlsrc import NotRegularFile, as_written, must_be_regular, where
from .conditions import did_you_mean
from .rules import ACTIONS, PRIORITIES, Rule
from .snapshot import envelope_sender

__all__ = ["check_rule_tests", "run_rule_tests", "Names", "TEST_KEYS", "EXPECT_KEYS"]

TEST_KEYS = ("name", "message", "headers", "body", "mail_from", "rcpt", "at", "expect")
EXPECT_KEYS = ("mailbox", "folder", "owner", "tags", "priority", "action", "sla", "rule")
Decide = Callable[[Any, str, list[str], "datetime | None"], list[Decision]]


class _CaseError(Exception):
    """What is wrong with a case; `at`: the value or key it is about, to name its line."""

    def __init__(self, text: str, at: Any = None) -> None:
        super().__init__(text)
        self.at = at


@dataclass(frozen=True, slots=True)
class _Spot:
    path: str
    line: int
    column: int = 0


def _key(mapping: Mapping[str, Any], key: Any) -> _Spot | None:
    """Where `key` of a loaded mapping is written (its line), or None when not known."""
    mark = (getattr(mapping, "key_marks", None) or {}).get(key)
    return _Spot(where(mapping)[0], mark[0]) if mark and mark[0] else None


def _build_message(case: Mapping[str, Any]) -> bytes:
    msg = EmailMessage(policy=SMTP)
    for name, value in (case.get("headers") or {}).items():
        msg[str(name)] = str(as_written(value))     # Subject: 00123, not 83
    msg.set_content(str(case.get("body") or ""))
    return msg.as_bytes()


def _raw(case: Mapping[str, Any], base: Path) -> bytes:
    if case.get("message") is not None:
        path = base / str(case["message"])
        try:
            # a FIFO or a device (message: /dev/stdin, /dev/zero): reading it waited for
            # ever, and `check` and `test` with it
            must_be_regular(path)
            return as_stored(path.read_bytes())        # as the daemon stores it
        except NotRegularFile:
            raise _CaseError(f"message {str(path)!r} is not a regular file; give a saved "
                             ".eml file", _key(case, "message")) from None
        except OSError as exc:
            raise _CaseError(f"cannot read message {str(path)!r}: {exc.strerror}; a message: "
                             "path is relative to this routing file's folder",
                             _key(case, "message")) from None
    if case.get("headers") is None and case.get("body") is None:
        raise _CaseError("needs 'message: FILE.eml' or 'headers:'/'body:'")
    return _build_message(case)


def _at(value: Any, spot: Any = None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, date) or re.fullmatch(r"\s*\d{4}-\d\d-\d\d\s*", str(value)):
        # taken as 00:00 UTC: a business-hours rule tested "on Monday" never matched
        raise _CaseError(f"'at: {value}' is a day without a time of day; write the time too, "
                         f"e.g. {str(value).strip()}T10:00:00+03:00", spot)
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise _CaseError(f"cannot read time {value!r}; write e.g. 2027-01-11T10:00:00+03:00",
                         spot) from None


def _actual(d: Decision, key: str) -> Any:
    if key == "action":
        return d.action.value
    if key == "tags":
        return sorted(d.tags)
    if key == "rule":
        return d.rules[0].name if d.rules else None
    return getattr(d, key)


def _compare(d: Decision, expect: Mapping[str, Any]) -> list[str]:
    out = []
    for key, want in expect.items():
        got = _actual(d, str(key))
        if key == "tags":       # null: none (it was the tag 'None')
            want = sorted(str(as_written(t)) for t in (want if isinstance(want, list) else
                                           [] if want is None else [want]))
            ok = want == got
        elif key == "sla":
            ok = want is None and got is None or want is not None and str(want) in (got or "")
        else:
            # the rule's name and folder are text as written; a mailbox or owner is a key,
            # read as YAML reads the key it names (both 83 for 00123)
            want = None if want is None else str(as_written(want) if key in _TEXT else want)
            ok = want == got
        if not ok:
            out.append(f"{key} expected {want!r}, got {got!r}")
    return out


_RULE_KEYS = ("when", "then", "continue")


def _validate(case: Any) -> tuple[Mapping[str, Any], list[str]]:
    """(expect, rcpts) of a well-formed case; _CaseError naming what is wrong otherwise."""
    if not isinstance(case, Mapping):
        raise _CaseError("a test must be a mapping with message/headers, rcpt and expect")
    bad = [k for k in case if k not in TEST_KEYS]
    if bad:
        if any(k in _RULE_KEYS for k in bad):
            raise _CaseError(f"unknown key '{bad[0]}': this looks like a rule; rules go under "
                             "'rules:', this entry is under 'tests:'")
        raise _CaseError(f"unknown key '{bad[0]}'; {did_you_mean(str(bad[0]), TEST_KEYS)}",
                         _key(case, bad[0]))
    expect = case.get("expect")
    if not isinstance(expect, Mapping) or not expect:
        raise _CaseError("needs 'expect:' with at least one of " + ", ".join(EXPECT_KEYS))
    bad = [k for k in expect if k not in EXPECT_KEYS]
    if bad:
        raise _CaseError(f"unknown expect key '{bad[0]}'; "
                         f"{did_you_mean(str(bad[0]), EXPECT_KEYS)}", _key(expect, bad[0]))
    rcpts = case.get("rcpt")
    rcpts = rcpts if isinstance(rcpts, list) else [rcpts] if rcpts else []
    if not rcpts:
        raise _CaseError("needs 'rcpt:'; write the envelope recipient, e.g. rcpt: "
                         "sales@example.com (or a list)")
    if any(not isinstance(r, str) for r in rcpts):
        raise _CaseError("'rcpt' must be an address or a list of addresses, not "
                         f"{case.get('rcpt')!r}", _key(case, "rcpt"))
    if case.get("headers") is not None and not isinstance(case["headers"], Mapping):
        # a list here crashed the case with "AttributeError: 'LocList' object has no attribute"
        raise _CaseError("'headers' must be a mapping of header names to values; write e.g. "
                         "headers: {From: a@b.example, Subject: Invoice}", _key(case, "headers"))
    if case.get("message") is not None and (case.get("headers") is not None
                                            or case.get("body") is not None):
        # the sample was read and `headers:`/`body:` dropped without a word: a case written
        # to try the sample with another Subject passed or failed on the sample's own
        given = "headers" if case.get("headers") is not None else "body"
        raise _CaseError(f"gives both 'message:' and '{given}:', and a case is built from "
                         "one of them; keep 'message: FILE.eml', or 'headers:'/'body:' for a "
                         "message written here (a copy of the .eml for a changed one)",
                         _key(case, given))
    for name, value in (case.get("headers") or {}).items():
        if isinstance(value, (list, Mapping)) or value is None:
            # `Subject: [a, b]` was the subject "['a', 'b']", `From: {a: b}` "{'a': 'b'}"
            raise _CaseError(f"header {str(name)!r} must be text, not "
                             f"{'nothing' if value is None else repr(value)}; write e.g. "
                             f"{name}: 'the text' (quote it if it holds ': ', or starts with "
                             f"[ or {{; {name}: '' for an empty one)", _key(case["headers"], name))
    if isinstance(case.get("body"), (list, Mapping)):
        raise _CaseError(f"'body' must be text, not {case['body']!r}; write e.g. body: "
                         "'the text' (or body: | and the lines below it)", _key(case, "body"))
    return expect, [str(r) for r in rcpts]


def _run_case(case: Any, decide: Decide, base: Path, at: datetime | None = None) -> list[str]:
    """Mismatch texts per recipient: [(rcpt, text)] flattened into lines by the caller.
    `at`: decide at this time instead of the case's `at:` (or now)."""
    expect, rcpts = _validate(case)
    from ..message import MessageView
    view = MessageView(_raw(case, base))
    given = case.get("mail_from")
    sender = envelope_sender(None if given is None else str(given), view)
    decisions = decide(view, sender, rcpts, at or _at(case.get("at"), _key(case, "at")))
    lines = []
    for rcpt, d in zip(rcpts, decisions):
        diffs = _compare(d, expect)
        if diffs and d.action.value != "deliver" and "action" not in expect:
            # "mailbox expected 'sales', got None" alone hid why: an unknown address, a loop
            diffs.append(f"the recipient was answered {d.reply} (action {d.action.value})")
        if diffs and (d.rules or d.action.value == "deliver"):
            # "mailbox expected 'finance', got 'legal'" did not say which rule took the
            # message (one of another file, earlier in name order): the rule, where, on what
            diffs.append(_why(d))
        if diffs:
            lines.append((f"rcpt {rcpt}: " if len(rcpts) > 1 else "") + "; ".join(diffs))
    return lines


def _why(d: Decision) -> str:
    """The rules that decided, each with its file:line and what it matched, or none."""
    if not d.rules:
        return "why: no rule matched, so the address book's default applies"
    return "why: " + ", then ".join(
        f"rule '{m.name}' ({m.file}:{m.line})" + (f" matched: {m.matched}" if m.matched else
                                                  " matched: it has no 'when:'")
        for m in d.rules)


def _head(tests: Sequence[Any], i: int, case: Any, base_dir: str | Path) -> tuple[str, Path]:
    """'file:line: test NAME: ' for case number i, and the directory its files are under."""
    path, line, _ = where(case, tests)
    if not line and (spots := getattr(tests, "item_where", None)):
        path, line, _ = spots[i]           # the merged list of all files: a `- 5` item
    elif not line and (marks := getattr(tests, "item_marks", None)):
        line = marks[i][0]
    base = Path(path).parent if path and not path.startswith("<") else Path(base_dir)
    return f"{path or base_dir}:{line}: {_label(case, i)}", base


def _at_line(exc: _CaseError, case: Any, i: int, head: str) -> str:
    """'file:line: test NAME: ' at the line of what `exc` is about ('expct:' three lines
    below the case's '- name:'), or `head`."""
    path, line, _ = where(exc.at)
    return f"{path}:{line}: {_label(case, i)}" if line and path else head


def _label(case: Any, i: int) -> str:
    name = str(as_written(case.get("name")) or f"#{i + 1}") if isinstance(case, Mapping) else f"#{i + 1}"
    return f"test {name}: "


@dataclass(frozen=True, slots=True)
class Names:
    """What an `expect:` may name: the snapshot's mailboxes, owners, rules and the folders
    its rules set; `folders_of` gives those an address's aliases give (None: unknown)."""
    mailboxes: frozenset[str]
    owners: frozenset[str]
    rules: frozenset[str]
    folders: frozenset[str]
    folders_of: Callable[[str], "frozenset[str] | None"]
    # the reply refusing an address at RCPT, with the known address it was likely typed
    # for ("550 5.1.1 ...; did you mean 'sales@example.com'?"), or None when it is taken
    refused: Callable[[str], "str | None"] = lambda rcpt: None

    @classmethod
    def of(cls, book: Any, rules: Sequence[Rule]) -> "Names":
        def folders_of(rcpt: str) -> frozenset[str] | None:
            res = book.resolve(rcpt)
            if res.reply is not None:
                return frozenset()
            found = {t.folder for t in res.targets if t.folder is not None}
            while res.moved is not None and res.moved.deliver:   # routed as mail to `now`
                res = book.resolve(res.moved.now)
                if res.reply is not None or res.address == rcpt:
                    break
                found |= {t.folder for t in res.targets if t.folder is not None}
            return frozenset(found)

        def refused(rcpt: str) -> str | None:
            res = book.resolve(rcpt)
            if res.reply is None or res.moved is not None:   # moved: refused on purpose
                return None
            near = meant(book, rcpt, res.address)
            return str(res.reply) + (f"; did you mean '{near}'?" if near else "")
        return cls(frozenset(book.mailboxes), frozenset(book.people) | frozenset(book.teams),
                   frozenset(r.name for r in rules),
                   frozenset(r.then.folder for r in rules if r.then.folder is not None),
                   folders_of, refused)


_TEXT = ("rule", "folder")      # expect keys that are text as written (and tags)
_NAMED = {"mailbox": ("mailboxes", "is no mailbox of the address book"),
          "owner": ("owners", "is no person (people:) or team (teams:) of the address book"),
          "rule": ("rules", "is no rule of the routing files")}


def _unknown_names(expect: Mapping[str, Any], rcpts: list[str],
                   names: Names) -> list[tuple[Any, str]]:
    """(value, text) per name in `expect` that no decision can give, with the closest known."""
    out = []
    for key, want in expect.items():
        if want is None or isinstance(want, (list, Mapping)):
            continue
        text = str(as_written(want) if key in _TEXT else want)
        if key in _NAMED:
            field, why = _NAMED[str(key)]
            known: Any = getattr(names, field)
        elif key == "folder":
            known = set(names.folders)
            for rcpt in rcpts:
                known |= names.folders_of(rcpt) or set()
            why = "is set by no rule and by no alias of " + ", ".join(rcpts)
        elif key in ("priority", "action"):
            known = PRIORITIES if key == "priority" else ACTIONS
            why = f"is not a {key} ({', '.join(known)})"
        else:
            continue
        if text in known:
            continue
        near = difflib.get_close_matches(text, sorted(known), n=1)
        out.append((want, f"expect {key} {text!r} {why}, so the test can only fail"
                   + (f"; did you mean '{near[0]}'?" if near else
                      f"; known: {', '.join(sorted(known)[:8])}{', ...' if len(known) > 8 else ''}"
                      if known else "")))
    return out


def check_rule_tests(tests: Sequence[Any], base_dir: str | Path = ".",
                     names: Names | None = None, decide: Decide | None = None) -> list[str]:
    """One line per test case that could not run (its shape, not its outcome), and, with
    `names`, per expected name no decision can give, with `decide`, per case without `at:`
    that passes now and fails at another time of the week: for check."""
    problems: list[str] = []
    named: dict[str, str] = {}          # a test's name -> where the first of that name is
    for i, case in enumerate(tests or ()):
        head, base = _head(tests, i, case, base_dir)
        name = case.get("name") if isinstance(case, Mapping) else None
        if isinstance(name, str) and name:
            if name in named:           # a failure names the case: two could not be told apart
                problems.append(head + f"the name is also the test's at {named[name]}; give "
                                "each test a name of its own")
            else:
                named[name] = head.rsplit(": test ", 1)[0]
        try:
            expect, rcpts = _validate(case)
            _at(case.get("at"), _key(case, "at"))   # `test` would fail it: `check` says so first
            if case.get("message") is not None:
                _raw(case, base)     # a missing .eml: `check` says so, not only `test`
        except _CaseError as exc:
            problems.append(_at_line(exc, case, i, head) + str(exc))
            continue
        if names is not None and "action" not in expect:
            # `rcpt: sale@example.com`: refused at RCPT, no rule ever sees it, and the case
            # failed `test` with "mailbox expected 'sales', got None" while `check` said ok
            given = case.get("rcpt")
            for item in given if isinstance(given, list) else [given]:
                rcpt = str(item)
                reply = names.refused(rcpt)
                path, line, _ = where(item)       # the rcpt line, or the list's
                if not line:
                    path, line, _ = where(given)
                at = f"{path}:{line}: {_label(case, i)}" if line else head
                if reply is not None:
                    problems.append(at + f"rcpt {rcpt!r} is refused at RCPT ({reply}): no "
                                    "rule decides for it, so the test can only fail (expect "
                                    "action: reject if the refusal is what it tests)")
        for value, text in _unknown_names(expect, rcpts, names) if names is not None else ():
            path, line, _ = where(value)      # the expect line, when the case spans several
            problems.append((f"{path}:{line}: {_label(case, i)}" if line else head) + text)
        if decide is not None and case.get("at") is None:
            problems.extend(head + text for text in _clock_bound(case, decide, base))
    return problems


def _clock_bound(case: Any, decide: Decide, base: Path) -> list[str]:
    """The warning for a case without `at:` that passes now and fails at another time."""
    try:
        if _run_case(case, decide, base):
            return []           # failing now: `test` says so, with a time it passes at
        when = next((at for at in _WEEK if _run_case(case, decide, base, at)), None)
    except Exception:   # noqa: BLE001 (a case that cannot run is reported by `test`)
        return []
    if when is None:
        return []
    return [f"passes now but fails with at: {when.isoformat()}: a rule reads the time, and a "
            "case without 'at:' is decided at the present one (a test run at night or at the "
            "weekend fails); give the case the at: it was written for"]


# A case without `at:` is decided now, so where a rule reads business hours its outcome
# follows the clock: written at 11:00, it failed at night with "rule expected 'support', got
# None" and no word of why. A failing one is tried at every third hour of a week (UTC).
_WEEK = tuple(datetime(2027, 1, 11, tzinfo=timezone.utc) + timedelta(hours=3 * i)
              for i in range(56))


def _passes_at(case: Any, decide: Decide, base: Path) -> datetime | None:
    """A time of the probe week at which a case without `at:` passes, if any."""
    return next((at for at in _WEEK if not _run_case(case, decide, base, at)), None)


def run_rule_tests(tests: Sequence[Any], decide: Decide, base_dir: str | Path = ".") -> list[str]:
    """Run every case; return one failure line per failing case (and recipient)."""
    failures: list[str] = []
    for i, case in enumerate(tests or ()):
        head, base = _head(tests, i, case, base_dir)
        try:
            lines = _run_case(case, decide, base)
            if lines and case.get("at") is None and (when := _passes_at(case, decide, base)):
                lines[-1] += (f"; with at: {when.isoformat()} it passes: a rule reads the time, "
                              "and a case without 'at:' is decided at the present one; give "
                              "the case an at:")
            failures.extend(head + text for text in lines)
        except _CaseError as exc:
            failures.append(_at_line(exc, case, i, head) + str(exc))
        except Exception as exc:   # a crash in one case must not hide the others
            failures.append(head + f"crashed: {type(exc).__name__}: {exc}")
    return failures

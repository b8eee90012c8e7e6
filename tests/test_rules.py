"""The rules engine through the daemon's decision path: first match, continue, default,
explanations, build errors, index. Every case loads a real snapshot from YAML text
(tests/support/rules.py) and asks `Snapshot.decide`."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailrouter.errors import ConfigErrors
from mailrouter.message import MessageView
from mailrouter.routing.facts import Facts
from mailrouter.values import Action
from tests.support.automatic_mail import AUTOMATIC, PERSONS, raw
from tests.support.rules import (
    MONDAY_10_MSK,
    ROOT,
    load,
    mail,
    route,
    routing_file,
    snapshot,
)

__all__ = ["MONDAY_10_MSK", "ROOT", "mail", "route", "ruleset"]

# The name tests/test_rule_operators.py imports: a real snapshot of one routing file.
ruleset = snapshot


RULES = """\
rules:
  - name: robots
    when: {robot: true}
    then: {tags: [robot]}
    continue: true
  - name: invoices
    when: {subject: {contains: [счёт, invoice]}}
    then: {mailbox: finance, folder: Finance, owner: finance-duty, priority: high, tags: [invoice]}
  - name: product-a
    when: {rcpt: product-a@example.com}
    then: {tags: [product-a]}
  - name: sales
    when: {rcpt: sales@example.com}
    then: {mailbox: sales, folder: Inbound}
"""


@pytest.mark.parametrize("eml, rcpt, expected", [
    # (message, recipient) -> (mailbox, folder, owner, priority, tags, first rule)
    ("invoice-koi8r.eml", "invoices@example.com",
     ("finance", "Finance", "finance-duty", "high", ("invoice",), "invoices")),
    ("invoice-koi8r.eml", "sales@example.com",
     ("finance", "Finance", "finance-duty", "high", ("invoice",), "invoices")),
    ("product-a.eml", "product-a@example.com",
     ("support", "PRODUCT-A", None, None, ("product-a",), "product-a")),
    ("sales-inquiry.eml", "sales@example.com", ("sales", "Inbound", None, None, (), "sales")),
    ("sales-inquiry.eml", "support@example.com", ("support", None, None, None, (), None)),
    ("newsletter.eml", "sales@example.com", ("sales", "Inbound", None, None, ("robot",), "robots")),
])
def test_decision_table(eml: str, rcpt: str, expected: tuple[Any, ...]) -> None:
    """Each (message, recipient) gets the expected decision fields from the first matching rule."""
    d = route(ruleset(RULES), eml, rcpt)
    first = d.rules[0].name if d.rules else None
    assert (d.mailbox, d.folder, d.owner, d.priority, d.tags, first) == expected


def test_targets_follow_the_rule() -> None:
    """A rule naming a mailbox replaces the targets; a folder-only rule keeps the mailbox."""
    d = route(ruleset(RULES), "invoice-koi8r.eml", "sales@example.com")
    assert [(t.mailbox, t.folder) for t in d.targets] == [("finance", "Finance")]
    rs = ruleset("rules:\n  - name: f\n    when: {rcpt: support@example.com}\n"
                 "    then: {folder: Web}\n")
    d = route(rs, "sales-inquiry.eml", "support@example.com")
    assert [(t.mailbox, t.folder) for t in d.targets] == [("support", "Web")]


def test_first_match_wins_and_stops() -> None:
    """Two rules match; only the first one decides and is reported."""
    rs = ruleset("""\
rules:
  - {name: one, when: {subject: {contains: invoice}}, then: {folder: A, tags: [a]}}
  - {name: two, when: {subject: {contains: invoice}}, then: {folder: B, tags: [b]}}
""")
    d = route(rs, mail("Invoice 5"), "support@example.com")
    assert (d.folder, d.tags, [r.name for r in d.rules]) == ("A", ("a",), ["one"])


def test_continue_adds_tags_and_fills_unset_fields() -> None:
    """With continue, later rules add tags and set what earlier ones left unset."""
    rs = ruleset("""\
rules:
  - {name: tag, when: {subject: {contains: invoice}}, then: {tags: [x], priority: high}, continue: true}
  - {name: route, when: {rcpt: support@example.com}, then: {folder: B, priority: low, tags: [y]}}
  - {name: never, when: {rcpt: support@example.com}, then: {tags: [z]}}
""")
    d = route(rs, mail("Invoice 5"), "support@example.com")
    assert (d.folder, d.priority, d.tags) == ("B", "high", ("x", "y"))
    assert [r.name for r in d.rules] == ["tag", "route"]
    assert len(d.reasons) == 3          # address book + two rules


def test_no_match_returns_default_unchanged() -> None:
    """A message no rule matches keeps the address book's default decision, unchanged."""
    d = route(ruleset(RULES), mail("Lunch"), "team@example.com", "x@y")
    assert d == route(load(), mail("Lunch"), "team@example.com", "x@y")    # the book alone
    assert (d.rules, d.reasons, len(d.targets)) == ((), ("address book",), 3)


def test_refused_recipient_is_not_routed() -> None:
    """A recipient the address book refused keeps its refusal; rules never deliver it."""
    rs = ruleset("rules:\n  - {name: all, then: {mailbox: sales}}\n")
    d = route(rs, mail(), "nobody@example.com", "")
    assert (d.action, str(d.reply), d.targets, d.rules) == (
        Action.REJECT, str(rs.book.resolve("nobody@example.com").reply), (), ())
    assert d.reply is not None and d.reply.code == 550


def test_rule_match_names_file_line_and_decoded_value() -> None:
    """RuleMatch carries the rule's file:line and the decoded value it matched on."""
    path = routing_file(RULES, "rules/r.yaml")
    d = route(load(path), "invoice-koi8r.eml", "invoices@example.com")
    m = d.rules[0]
    assert (m.name, m.file, m.line) == ("invoices", str(path), 6)
    assert m.matched == "subject contains 'счёт' (value: 'Счёт N 1234 за январь')"
    assert d.reasons[-1] == (f"rule 'invoices' ({path}:6): "
                             "subject contains 'счёт' (value: 'Счёт N 1234 за январь')")


def test_sla_due_time_on_calendar() -> None:
    """sla with a calendar: the decision names the terms and the business-time due moment."""
    rs = ruleset("""\
calendars:
  msk: {timezone: Europe/Moscow, hours: "Mon-Fri 09:00-18:00"}
rules:
  - name: inv
    when: {subject: {contains: invoice}}
    then: {sla: {first_response: 4h, resolve: 2d, calendar: msk}}
""")
    friday_17 = datetime(2027, 1, 15, 14, 0, tzinfo=timezone.utc)
    d = route(rs, mail("invoice"), "sales@example.com", at=friday_17)
    assert d.sla == ("first_response=4h resolve=2d calendar=msk "
                     "first_response_due=2027-01-18T12:00:00+03:00 "
                     "resolve_due=2027-01-19T17:00:00+03:00")


def test_sla_without_calendar_is_elapsed_time() -> None:
    """sla without a calendar counts plain elapsed time from the arrival."""
    rs = ruleset("rules:\n  - {name: s, then: {sla: {first_response: 1h30m}}}\n")
    d = route(rs, mail(), "sales@example.com", at=datetime(2027, 1, 16, 23, 0, tzinfo=timezone.utc))
    assert d.sla == "first_response=1h30m first_response_due=2027-01-17T00:30:00+00:00"


def test_an_sla_longer_than_a_year_is_a_load_error() -> None:
    """A term whose due time cannot be computed (999999999d: past datetime's range; on a
    calendar, beyond the years add_business_hours searches) passed `check` and then
    failed every message the rule matched; now it is refused at load. A year is fine."""
    head = "calendars: {msk: {timezone: Europe/Moscow}}\nrules:\n"
    path = routing_file(head + "  - {name: a, then: {sla: {first_response: 999999999d}}}\n"
                        "  - {name: b, then: {sla: {resolve: 261d, calendar: msk}}}\n", "r.yaml")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    assert [str(e) for e in info.value.errors] == [
        f"{path}:3:44: rule 'a': first_response 999999999d is more than a year; "
        "an SLA term is at most a year; write a shorter one, e.g. 30d",
        f"{path}:4:37: rule 'b': resolve 261d is more than a year of working time on calendar "
        "'msk'; an SLA term is at most a year; write a shorter one, e.g. 30d"]
    ok = ruleset(head + "  - {name: a, then: {sla: {first_response: 366d}}}\n"
                 "  - {name: b, when: {subject: x}, then: {sla: {resolve: 260d, calendar: msk}}}\n")
    assert route(ok, mail(), "sales@example.com").sla == (
        "first_response=366d first_response_due=2028-01-12T07:00:00+00:00")


def test_an_sla_that_is_not_a_number_is_a_load_error() -> None:
    """YAML's `.nan` passed `<= 0` and the year limit, so `check` said ok and every message
    the rule matched failed when its due time was computed (ValueError: cannot convert float
    NaN to integer); `.inf` was refused as "more than a year". Both are bad durations."""
    path = routing_file("calendars: {msk: {timezone: Europe/Moscow}}\nrules:\n"
                        "  - {name: a, then: {sla: {first_response: .nan, calendar: msk}}}\n"
                        "  - {name: b, then: {sla: {resolve: .inf}}}\n", "r.yaml")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    assert [str(e) for e in info.value.errors] == [
        f"{path}:3:27: rule 'a': bad duration nan for first_response; write e.g. 30m, 4h, 2d or 1d4h",
        f"{path}:4:27: rule 'b': bad duration inf for resolve; write e.g. 30m, 4h, 2d or 1d4h"]


def test_reject_and_defer_actions() -> None:
    """action: reject / defer turn the decision into a refusal with a named reply."""
    rs = ruleset("""\
rules:
  - {name: spam, when: {subject: {contains: viagra}}, then: {action: reject}}
  - {name: later, when: {subject: {contains: maintenance}}, then: {action: defer}}
""")
    d = route(rs, mail("Cheap viagra"), "sales@example.com")
    assert (d.action, d.reply.code, d.targets) == (Action.REJECT, 550, ())
    d = route(rs, mail("maintenance window"), "sales@example.com")
    assert (d.action, d.reply.code) == (Action.DEFER, 451)


BAD = """\
rules:
  - name: a
    when: {subjet: {contains: x}}
    then: {mailbox: finanse}
  - name: b
    when: {subject: {regex: "(unclosed"}, size: {gt: lots}}
    then: {owner: nobody, priority: extreme, sla: {first_response: soon, calendar: spb}}
  - name: c
    when: {subject: {contans: x}}
    then: {folder: X, copy_to_owner: maybe}
    contine: true
"""


def test_build_reports_every_error_with_position_and_hint() -> None:
    """One build reports every error of every rule, each with file:line:column and a fix."""
    path = routing_file(BAD, "r.yaml")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    assert [str(e) for e in info.value.errors] == [f"{path}:{e}" for e in [
        "3:12: rule 'a': unknown condition 'subjet'; did you mean 'subject'?",
        "4:21: rule 'a': unknown mailbox 'finanse'; did you mean 'finance'? "
        "(define it under 'mailboxes:')",
        "6:29: rule 'b': bad regex '(unclosed': missing ) at position 0; "
        "fix the pattern (RE2 syntax, see rules/README.md)",
        "6:54: rule 'b': 'gt' needs a number or a size like 10MB, not 'lots'; units: k or KB, "
        "M or MB, G or GB (1024-based; KiB, MiB, GiB mean the same)",
        "7:19: rule 'b': unknown owner 'nobody'; known people and teams: ivanov, petrova, "
        "smirnov, finance-duty",
        "7:37: rule 'b': priority must be one of low, normal, high, urgent, not 'extreme'",
        "7:68: rule 'b': bad duration 'soon' for first_response; write e.g. 30m, 4h, 2d or 1d4h",
        "7:84: rule 'b': unknown calendar 'spb'; define it under 'calendars:' "
        "(known: none defined)",
        "11:5: rule 'c': unknown key 'contine'; did you mean 'continue'?",
        "9:22: rule 'c': unknown operator 'contans' for 'subject'; did you mean 'contains'?",
        "10:38: rule 'c': copy_to_owner takes true or false, not 'maybe'; write "
        "copy_to_owner: true to also deliver to the owner's own address",
    ]]


def test_a_mistyped_action_or_priority_is_named() -> None:
    """`action: rejekt` (or `bounce`, another filter's word) was refused naming the three
    values only, and the reload's reply left the ops person to spot the typo: the value
    meant is now named, as for keys and operators."""
    path = routing_file("""\
rules:
  - name: a
    then: {action: rejekt, priority: hihg}
  - name: b
    then: {action: bounce, priority: critical}
""", "r.yaml")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    assert [str(e) for e in info.value.errors] == [f"{path}:{e}" for e in [
        "3:38: rule 'a': priority must be one of low, normal, high, urgent, not 'hihg'; "
        "did you mean 'high'?",
        "3:20: rule 'a': action must be one of deliver, reject, defer, not 'rejekt'; "
        "did you mean 'reject'?",
        "5:38: rule 'b': priority must be one of low, normal, high, urgent, not 'critical'; "
        "did you mean 'urgent'?",
        "5:20: rule 'b': action must be one of deliver, reject, defer, not 'bounce'; "
        "did you mean 'reject'?",
    ]]


SHAPES = """\
rules:
  - 5
  -
  - name: [a, b]
    when: {subject: null, size: null}
    then: {mailbox: sales, tags: [{a: 1}, ok]}
  - name: x
    then: {owner: [smirnov], folder: {a: 1}, autoreply: [moved]}
"""


def test_values_of_the_wrong_shape_are_load_errors_at_their_place() -> None:
    """A list or mapping where one name goes (the owner check crashed with 'unhashable
    type', a folder or rule name became the text "['a', 'b']"), and items and shorthands
    with no position of their own (a number, null): each an error with file:line:column."""
    path = routing_file(SHAPES, "r.yaml")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    assert [str(e) for e in info.value.errors] == [f"{path}:{e}" for e in [
        "2:5: a rule must be a mapping with name, when, then; "
        "write '- name: ...' with when: and then: under it",
        "3:4: a rule must be a mapping with name, when, then; "
        "write '- name: ...' with when: and then: under it",
        "4:11: rule '#3': 'name' must be text, not ['a', 'b']; "
        "write e.g. name: invoices (explanations and the registry cite it)",
        "5:12: rule '#3': 'contains' takes a string or a list of strings",
        "5:27: rule '#3': 'equals' needs a number or a size like 10MB, not None",
        "6:35: rule '#3': a tag must be text, not {'a': 1}; write e.g. tags: [invoice, urgent]",
        "8:38: rule 'x': 'folder' takes one value, not a mapping; write e.g. folder: Finance",
        "8:19: rule 'x': 'owner' takes one value, not a list; write e.g. owner: ivanov",
        "8:57: rule 'x': 'autoreply' takes one value, not a list; write e.g. autoreply: closed",
    ]]


@pytest.mark.parametrize("when, hint", [
    # names from other filters that difflib turned into another field or operator
    ("{sender: a@b.example}", "unknown condition 'sender'; did you mean 'mail_from'?"),
    ("{to_addr: a@b.example}", "unknown condition 'to_addr'; did you mean 'to'?"),
    ("{subject: {match: '^x'}}", "unknown operator 'match' for 'subject'; did you mean 'regex'?"),
    ("{size: {gte: 10MB}}", "unknown operator 'gte' for 'size'; did you mean 'ge'?"),
    # 'contains' for 'not_contains' would have matched exactly the mail it was to skip
    ("{subject: {not_contains: x}}", "unknown operator 'not_contains' for 'subject'; "
     "to negate, wrap the condition: not: {subject: {contains: ...}}"),
    ("{header: {List-Id: {not_exists: true}}}", "unknown operator 'not_exists' for 'list-id'; "
     "to negate, wrap the condition: not: {header: {list-id: {exists: ...}}}"),
    ("{subject: {foo: x}}", "unknown operator 'foo' for 'subject'; known operators: equals, "
     "contains, starts_with, ends_with, glob, regex, exists"),
    # a header name as written in the message ('Subject:') or with a space never matched
    ("{header: {'Subject:': x}}", "'Subject:' is not a header name; write the name without "
     "':' or spaces, e.g. header: {Subject: ...}"),
    ("{header: {List Id: {exists: true}}}", "'List Id' is not a header name; write the name "
     "without ':' or spaces, e.g. header: {List-Id: ...}"),
    # a value of the wrong kind: said so, not "unknown calendar True; known keys: ..." or
    # "a condition must be a non-empty mapping"
    ("{business_hours: true}", "'business_hours' takes the name of a calendar, not True; "
     "write e.g. business_hours: msk (known calendars: none defined under 'calendars:')"),
    # a key of the rule indented one level too deep
    ("{subject: x, continue: true}", "'continue' is a key of the rule, not a condition; move "
     "it out of when:, beside it ('continue:' at the indentation of 'when:')"),
    ("{not: [{subject: x}, {subject: y}]}", "'not' takes one condition, not a list; write "
     "not: {any: [...]} for none of several, not: {all: [...]} for not all of them"),
    # `any:` given a mapping: was "'any' takes a non-empty list of conditions" and no example
    ("{any: {subject: x, body: y}}", "'any' takes a non-empty list of conditions; write each "
     "condition as a '- ' item under 'any:', e.g. any: [{subject: invoice}, {attachment: "
     "{glob: '*.pdf'}}] (one of them holds)"),
    ("{all: []}", "'all' takes a non-empty list of conditions; write each condition as a '- ' "
     "item under 'all:', e.g. all: [{subject: invoice}, {attachment: {glob: '*.pdf'}}] (all "
     "of them hold)"),
    # conditions as '- ' items: all or any of them? (was "must be a non-empty mapping")
    ("[{subject: x}, {subject: y}]", "a condition must be a mapping, not a list; for every "
     "one of these write all: [...] (or the keys in one mapping), for one of them any: [...]"),
    # YAML 1.1 booleans: `X-Country: NO` looked for the text 'false' and never matched
    ("{header: {X-Country: NO}}", "'contains' takes text, but YAML read this value as false "
     "(no, yes, on, off, y, n are booleans to YAML); put the text in quotes as written: 'NO', "
     "'yes', 'on'"),
    ("{subject: {equals: [ok, On]}}", "'equals' takes text, but YAML read this value as true "
     "(no, yes, on, off, y, n are booleans to YAML); put the text in quotes as written: 'NO', "
     "'yes', 'on'"),
])
def test_unknown_names_suggest_what_was_meant(when: str, hint: str) -> None:
    """An unknown field or operator gets the suggestion an admin coming from Sieve or
    Exchange rules needs, never the opposite of what they wrote."""
    path = routing_file(f"rules:\n  - {{name: r, when: {when}, then: {{folder: X}}}}\n", "r.yaml")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    assert [e.message + "; " + e.hint for e in info.value.errors] == [f"rule 'r': {hint}"]


def _refused(text: str) -> tuple[Path, list[str]]:
    """The routing file `text` (as r.yaml) and the errors its load is refused with."""
    path = routing_file(text, "r.yaml")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    return path, [str(e) for e in info.value.errors]


def test_an_empty_when_is_refused_not_taken_for_every_message() -> None:
    """`when:` with nothing under it (its conditions not yet written) loaded as a rule for
    every message: saved, it went live and the rules after it never fired again."""
    path, errors = _refused("rules:\n  - name: r\n    when:\n    then: {folder: X}\n"
                            "  - name: all\n    then: {folder: Y}\n")
    assert errors == [
        f"{path}:3:5: rule 'r': 'when' is empty; write its conditions under it, or remove the "
        "'when:' line for a rule that matches every message"]


def test_continue_inside_then_says_where_it_goes() -> None:
    """`then: {folder: X, continue: true}` was "unknown action 'continue'; known keys:
    mailbox, folder, ..." as if continue did not exist."""
    path, errors = _refused("rules:\n  - name: r\n    when: {subject: x}\n"
                            "    then: {folder: X, continue: true}\n")
    assert errors == [
        f"{path}:4:23: rule 'r': 'continue' is a key of the rule, not an action; move it out "
        "of then:, beside it ('continue:' at the indentation of 'then:')"]


def test_an_owner_that_is_a_mailbox_says_what_an_owner_is() -> None:
    """`owner: sales` (the sales desk) was "unknown owner 'sales'; known people and teams:
    ..." without saying sales is a mailbox and where a mailbox goes."""
    path, errors = _refused("rules:\n  - {name: r, when: {subject: x}, then: {owner: sales}}\n")
    assert errors == [
        f"{path}:2:49: rule 'r': unknown owner 'sales'; 'sales' is a mailbox; an owner is a "
        "person (people:) or a team (teams:), and the mailbox goes in 'mailbox: sales'; known "
        "people and teams: ivanov, petrova, smirnov, finance-duty"]


def test_an_owner_or_mailbox_written_as_an_address_or_a_name_names_the_key() -> None:
    """`owner: s.smirnov@example.com`, `owner: Сергей Смирнов` and `mailbox:
    support@example.com`, as a mail client shows them, got "known people and teams: ..." and
    "known mailboxes: ..." (hundreds of keys in a real book), never the key meant."""
    path, errors = _refused("""\
rules:
  - {name: a, when: {subject: a}, then: {owner: S.Smirnov@example.com}}
  - {name: b, when: {subject: b}, then: {owner: Петр Иванов}}
  - {name: c, when: {subject: c}, then: {mailbox: support@example.com}}
  - {name: d, when: {subject: d}, then: {mailbox: team@example.com}}
""")
    assert errors[:3] == [
        f"{path}:2:49: rule 'a': unknown owner 'S.Smirnov@example.com'; 'S.Smirnov@example.com' "
        "is the address of person 'smirnov'; an owner is written by its key: owner: smirnov",
        f"{path}:3:49: rule 'b': unknown owner 'Петр Иванов'; 'Петр Иванов' is the name of "
        "person 'ivanov'; an owner is written by its key: owner: ivanov",
        f"{path}:4:51: rule 'c': unknown mailbox 'support@example.com'; 'support@example.com' is "
        "an address, which leads to mailbox 'support'; write mailbox: support"]
    # team@ leads to three people's mailboxes: no one of them is meant
    assert errors[3].endswith("(define it under 'mailboxes:')")


def test_unknown_rule_and_action_keys_suggest_what_was_meant() -> None:
    """'condition:' was "did you mean 'continue'?" (difflib); the names of other filters
    ('if', 'assignee', 'fileinto', 'reject' as a key) get our name for the same thing."""
    path = routing_file("rules:\n  - name: r\n    condition: {subject: x}\n"
                        "    then: {assignee: ivanov, fileinto: X, reject: yes}\n", "r.yaml")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    assert [e.message + "; " + e.hint for e in info.value.errors] == [
        "rule 'r': unknown key 'condition'; did you mean 'when'?",
        "rule 'r': unknown action 'assignee'; did you mean 'owner'?",
        "rule 'r': unknown action 'fileinto'; did you mean 'folder'?",
        "rule 'r': unknown action 'reject'; did you mean 'action: reject'?"]


def test_conditions_nested_too_deep_are_a_load_error() -> None:
    """400 nested `not:` (YAML takes up to 1000 levels) made `check` die with RecursionError;
    32 levels load and decide, one more is an error at the rule's condition."""
    def rule(levels: int) -> str:
        return ("rules:\n  - name: deep\n    when: " + "{not: " * levels + "{subject: x}"
                + "}" * levels + "\n    then: {folder: X}\n")
    assert route(ruleset(rule(31)), mail("hello"), "sales@example.com").folder == "X"
    for levels in (32, 400):
        path = routing_file(rule(levels), "r.yaml")
        with pytest.raises(ConfigErrors) as info:
            load(path)
        assert [str(e) for e in info.value.errors] == [
            f"{path}:3:203: rule 'deep': conditions nest deeper than 32 levels; flatten them: "
            "any: and all: take lists, not: {not: X} is X"]


def test_compiled_rules_keep_none_of_the_loaded_yaml() -> None:
    """The loaded rules (every value with its position: at 10,000 rules 300,000 objects that
    the cyclic collector walks and that pin memory) are dropped once compiled."""
    import gc
    import weakref

    from mailrouter.routing.rules import RuleSet
    from mailrouter.routing.snapshot import _AnyName, _Names
    from mailrouter.yamlsrc import loads

    doc = loads(RULES, "r.yaml")
    specs = [weakref.ref(spec) for spec in doc["rules"]]
    rules = RuleSet.build(doc["rules"], _Names(_AnyName(), _AnyName(), _AnyName()), {})
    del doc
    gc.collect()
    assert rules.rules and all(ref() is None for ref in specs)


def test_index_skips_rules_for_other_recipients() -> None:
    """Rules indexed by recipient or word are not even tested for other messages."""
    lines = ["rules:"]
    for i in range(200):
        lines.append(f"  - {{name: r{i}, when: {{rcpt: a{i}@example.com}}, then: {{folder: F{i}}}}}")
        lines.append(f"  - {{name: w{i}, when: {{subject: {{contains: word{i}}}}}, then: {{folder: W{i}}}}}")
    rs = ruleset("\n".join(lines) + "\n")
    stats = rs.rules.index.stats()
    assert stats == {"rules": 400, "always": 0, "word_gated": 200, "pattern_gated": 0,
                     "by_recipient": 200}
    facts = Facts(MessageView(mail("about word150 and word7")), "", "sales@example.com",
                  rs.book.resolve("sales@example.com"), MONDAY_10_MSK, {})
    assert [r.name for r in rs.rules.index.candidates(facts)] == ["w7", "w150"]
    assert route(rs, mail("about word150 and word7"), "sales@example.com", "").folder == "W7"


class _CountingView(MessageView):
    body_reads = 0

    @property
    def body_text(self) -> str:  # type: ignore[override]
        type(self).body_reads += 1
        return super().body_text

    def body_pieces(self) -> Iterator[str]:
        type(self).body_reads += 1
        return super().body_pieces()


def test_body_is_not_decoded_when_an_earlier_rule_decides() -> None:
    """The body is decoded only when a rule that reads it could still decide."""
    rs = ruleset("""\
rules:
  - {name: s, when: {subject: {contains: invoice}}, then: {folder: S}}
  - {name: b, when: {body: {contains: invoice}}, then: {folder: B}}
""")
    _CountingView.body_reads = 0
    [d] = rs.decide(_CountingView(mail("invoice", "invoice")), "", ["sales@example.com"],
                    MONDAY_10_MSK)
    assert (d.folder, _CountingView.body_reads) == ("S", 0)
    [d] = rs.decide(_CountingView(mail("hello", "your invoice")), "", ["sales@example.com"],
                    MONDAY_10_MSK)
    assert (d.folder, _CountingView.body_reads) == ("B", 1)


def test_non_ascii_folder_on_lmtp_mailbox_is_a_load_error() -> None:
    """Dovecot LMTP cannot take a UTF-8 +detail: a rule naming one is refused with file:line."""
    book = routing_file("domains: [example.com]\nmailboxes:\n  fin: {lmtp: fin@mail.internal}\n"
                        "aliases:\n  invoices@example.com: mailbox:fin\n", "book.yaml")
    rules = routing_file("rules:\n  - name: r\n    then: {mailbox: fin, folder: Финансы}\n", "r.yaml")
    with pytest.raises(ConfigErrors) as exc:
        load(book, rules, book=None)
    assert f"{rules}:3:" in str(exc.value) and "folder 'Финансы' cannot be sent to LMTP mailbox 'fin'" \
        in str(exc.value)


@pytest.mark.parametrize("folder", ["Sales..Q1", "../../etc", "Archive/", ".Hidden"])
def test_folder_that_no_maildir_can_hold_is_a_load_error(folder: str) -> None:
    """A folder the Maildir store refuses was loaded and checked 'ok', and then every
    message the rule took got 451 4.3.0 and a traceback (delivery_crashed), for ever. It is
    refused where it is written, with file:line, by check and by a reload alike."""
    book = routing_file("domains: [example.com]\nmailboxes:\n  fin: {maildir: fin}\n"
                        "aliases:\n  invoices@example.com: mailbox:fin\n", "book.yaml")
    rules = routing_file(f"rules:\n  - name: r\n    then: {{mailbox: fin, folder: '{folder}'}}\n",
                         "r.yaml")
    with pytest.raises(ConfigErrors) as exc:
        load(book, rules, book=None)
    assert f"{rules}:3:" in str(exc.value) and f"folder {folder!r} has an empty level" \
        in str(exc.value)


WORD_FORMS = [
    # (needle, subject, matches?): a word ending in * matches every word it begins
    ("договор*", "Договор №5", True),
    ("договор*", "Проект договора", True),
    ("договор*", "Список договоров на подпись", True),
    ("договор", "Проект договора", False),           # no star: the whole word only
    ("договор*", "Переговоры", False),               # a word it does not begin
    ("договор*", "Субдоговор", False),
    ("счет*", "Счёт №42", True),                     # ё = е, in the message and in the needle
    ("счет*", "Счета за май", True),
    ("счёт*", "Оплата счетов", True),
    ("счет", "Счета за май", False),
    ("счет*", "Пересчёт", False),
    ("faktur*", "Faktura 2027/15", True),
    ("faktur*", "Zaslání faktury", True),
    ("faktur*", "Prosím o fakturu", True),
    ("faktura", "Zaslání faktury", False),
    ("faktur*", "Platba fakturách", True),
    ("faktur*", "Nová e-faktura", True),
    ("faktur*", "Manufaktura", False),
    ("счет* на оплат*", "Счета на оплату", True),    # several words, in order
    ("счет* на оплат*", "Оплату на счета", False),
    ("на оплат*", "Счёт на оплату", True),           # a plain first word, a starred last one
]


@pytest.mark.parametrize("needle, subject, hit", WORD_FORMS,
                         ids=[f"{n}|{s}" for n, s, _ in WORD_FORMS])
def test_word_forms(needle: str, subject: str, hit: bool) -> None:
    """`contains` with a trailing * matches the word's forms, through the daemon's decide."""
    rs = ruleset(f"rules:\n  - {{name: r, when: {{subject: {{contains: '{needle}'}}}}, "
                 "then: {tags: [hit]}}\n")
    d = route(rs, mail(subject), "sales@example.com")
    assert ("hit" in d.tags) is hit, d.reasons
    if hit:
        assert d.rules[0].matched == f"subject contains {needle!r} (value: {subject!r})"


@pytest.mark.parametrize("needle, eml", [("договор*", "invoice-cp1251.eml"),
                                         ("faktur*", "faktura-cz.eml"),
                                         ("счет*", "invoice-koi8r.eml")])
def test_word_forms_on_real_mail(needle: str, eml: str) -> None:
    """Word forms on the decoded subjects of real windows-1251, ISO-8859-2 and KOI8-R mail."""
    rs = ruleset(f"rules:\n  - {{name: r, when: {{subject: '{needle}'}}, then: {{tags: [hit]}}}}\n")
    assert "hit" in route(rs, eml, "sales@example.com").tags


def test_index_finds_word_form_rules_by_prefix() -> None:
    """A rule on `договор*` is word-gated, and a message is offered it exactly when one of its
    words begins with the stem (prefixes of several lengths in one table)."""
    rs = ruleset("""\
rules:
  - {name: inv, when: {subject: invoice}, then: {folder: I}}
  - {name: dog, when: {subject: договор*}, then: {folder: D}}
  - {name: fak, when: {subject: [fakt*, zaslani]}, then: {folder: F}}
  - {name: two, when: {subject: 'новый договор*'}, then: {folder: N}}
""")
    # 'новый договор*' is a phrase: its field's RE2 Set finds it, not the word tables
    assert rs.rules.index.stats() == {"rules": 4, "always": 0, "word_gated": 3, "pattern_gated": 1,
                                      "by_recipient": 0}

    def candidates(subject: str) -> list[str]:
        facts = Facts(MessageView(mail(subject)), "", "sales@example.com",
                      rs.book.resolve("sales@example.com"), MONDAY_10_MSK, {})
        return [r.name for r in rs.rules.index.candidates(facts)]

    assert candidates("Проект договора") == ["dog"]
    assert candidates("Новый договор и faktury") == ["dog", "fak", "two"]
    assert candidates("Переговоры") == []
    assert candidates("до") == []
    assert route(rs, mail("Faktury za květen"), "sales@example.com").folder == "F"
    assert route(rs, mail("Новые договоры"), "sales@example.com").folder == "D"


def test_forwarded_message_is_an_attachment_for_rules_and_explain() -> None:
    """A forwarded invoice (message/rfc822) matches attachment rules by its own name and type,
    and explain lists it beside the PDF inside it."""
    from mailrouter.explain import explain
    raw = (ROOT / "tests" / "corpus" / "forwarded_as_attachment.eml").read_bytes()
    rs = ruleset("""\
rules:
  - {name: fwd, when: {attachment_type: message/rfc822, attachment: {glob: '*.eml'}},
     then: {tags: [forwarded]}, continue: true}
  - {name: two, when: {attachment_count: 2, attachment: 'счет* 145 от 12 03 eml'}, then: {folder: F}}
""")
    d = route(rs, raw, "invoices@example.com")
    assert (d.tags, d.folder, [r.name for r in d.rules]) == (("forwarded",), "F", ["fwd", "two"])
    report = explain(rs, raw, ["invoices@example.com"], None)
    assert report["attachments"] == ["Счёт 145 от 12.03.eml", "Счёт 145.pdf"]


def test_an_address_with_the_roots_dot_matches_the_rules_naming_it() -> None:
    """RCPT TO:<sales@example.com.> (the DNS root's dot: MTAs and the address book accept
    it) missed the rule `rcpt: sales@example.com`, and the message took the book's default
    (a second copy in sales/ beside sales/.Inbound/). The rules read it without the dot,
    the sender too; a domain ending in two dots is left as it is."""
    from mailrouter.config import Limits
    from mailrouter.routing.snapshot import load_snapshot
    from tests.support.daemon import RULES as REPO_RULES
    snap = load_snapshot([str(REPO_RULES / "*.yaml")], Limits(), "mx.test")
    raw = MessageView(b"From: c@outside.test\r\nSubject: hello\r\n\r\nhi\r\n")
    plain, rooted = (snap.decide(raw, "c@outside.test", [r])[0]
                     for r in ("sales@example.com", "sales@example.com."))
    assert [m.name for m in rooted.rules] == [m.name for m in plain.rules] == ["sales"]
    assert (rooted.mailbox, rooted.folder) == (plain.mailbox, plain.folder) == ("sales", "Inbound")
    at = datetime(2027, 1, 11, 9, tzinfo=timezone.utc)
    f = Facts(raw, "boss@x.example.", "sales@example.com.", None, at, {})
    assert (f.raw("mail_from"), f.raw("rcpt"), f.raw("rcpt_domain")) == (
        ("boss@x.example",), ("sales@example.com",), ("example.com",))
    assert Facts(raw, "", "a@b..", None, at, {}).raw("rcpt") == ("a@b..",)


@pytest.mark.parametrize("folder,why", [
    (" Inbound", "a space at an end of the level ' Inbound'"),
    ("Inbound\u00a0", "a space at an end of the level 'Inbound\\xa0'"),
    ("Finance/ 2026", "a space at an end of the level ' 2026'"),
    ("Inbound\u200b", "an invisible character U+200B in the level"),
])
def test_a_folder_with_a_space_at_an_end_or_an_invisible_character_is_a_load_error(
        folder: str, why: str) -> None:
    """`folder: "\u00a0Inbound\u00a0"` (a no-break space pasted from a web page) was loaded and
    checked 'ok': the mail went to a Maildir folder of its own, which a mail client shows as
    'Inbound' beside the real one. Refused where it is written, in a rule and in an alias."""
    book = routing_file("domains: [example.com]\nmailboxes:\n  fin: {maildir: fin}\n"
                        "aliases:\n  invoices@example.com: mailbox:fin\n", "book.yaml")
    rules = routing_file(f'rules:\n  - name: r\n    then: {{mailbox: fin, folder: "{folder}"}}\n',
                         "r.yaml")
    with pytest.raises(ConfigErrors) as exc:
        load(book, rules, book=None)
    assert f"{rules}:3:" in str(exc.value) and why in str(exc.value), str(exc.value)
    book = routing_file("domains: [example.com]\nmailboxes:\n  fin: {maildir: fin}\n"
                        f'aliases:\n  invoices@example.com: {{mailbox: fin, folder: "{folder}"}}\n'
                        "rules: []\n", "book.yaml")
    with pytest.raises(ConfigErrors) as exc:
        load(book, book=None)
    assert f"{book}:5:" in str(exc.value) and why in str(exc.value), str(exc.value)


def test_a_folder_with_spaces_inside_its_levels_is_taken() -> None:
    book = routing_file("domains: [example.com]\nmailboxes:\n  fin: {maildir: fin}\n"
                        "aliases:\n  invoices@example.com: {mailbox: fin, folder: 'Счета 2026'}\n",
                        "book.yaml")
    rules = routing_file("rules:\n  - name: r\n    then: {mailbox: fin, folder: 'Входящие счета/Май'}\n",
                         "r.yaml")
    load(book, rules, book=None)


def test_a_name_typed_with_a_cyrillic_letter_is_told_from_the_one_it_looks_like() -> None:
    """`subjeсt` with a Cyrillic с (the keyboard layout switched mid-word) was "unknown
    condition 'subjeсt'; did you mean 'subject'?": two words that look alike, and no cause.
    The note names the letter, for a section, a rule's key, a condition, an action, a
    mailbox, and an alias's address that lost its indentation is said to be one."""
    rules = routing_file("m\u0430ilboxes: {}\n"
                         "x@example.com: mailbox:sales\n"
                         "rules:\n"
                         "  - n\u0430me: a\n"
                         "    then: {folder: X}\n"
                         "  - name: b\n"
                         "    when: {subje\u0441t: x}\n"
                         "    then: {mailb\u043ex: sales}\n", "r.yaml")
    with pytest.raises(ConfigErrors) as exc:
        load(rules)
    text = str(exc.value)
    with pytest.raises(ConfigErrors) as exc:
        load(routing_file("rules:\n  - name: c\n    then: {mailbox: s\u0430les, owner: petr\u043eva, "
                          "priority: hi\u0433h}\n", "r.yaml"))
    text += str(exc.value)
    for typed, meant, letter in [("m\u0430ilboxes", "mailboxes", "\u0430"),
                                 ("petr\u043eva", "petrova", "\u043e"), ("hi\u0433h", "high", "\u0433"),
                                 ("n\u0430me", "name", "\u0430"),
                                 ("subje\u0441t", "subject", "\u0441"),
                                 ("mailb\u043ex", "mailbox", "\u043e"),
                                 ("s\u0430les", "sales", "\u0430")]:
        assert f"did you mean '{meant}'? ('{typed}': {letter} is Cyrillic; retype it)" in text, text
    assert (f"{rules}:2:1: unknown section 'x@example.com'; an address at the start of a line is "
            "read as a section: indent it as the addresses under 'aliases:' (or 'moved:') above "
            "it are") in text


def test_a_folder_or_a_tag_that_yaml_reads_as_a_boolean_is_a_load_error() -> None:
    """YAML 1.1 reads Off, No, on, yes as booleans: `folder: Off` in a rule stored the mail
    in the folder 'False', `{mailbox: support, folder: No}` in an alias stored it in no
    folder at all, and `tags: [on]` was refused as "not True", with no cause. Each is named
    with the fix, quotes."""
    book = routing_file("domains: [example.com]\nmailboxes:\n  fin: {maildir: fin}\n"
                        "aliases:\n  invoices@example.com: {mailbox: fin, folder: No}\n"
                        "  sales@example.com: {mailbox: fin, folder: 'No'}\n", "book.yaml")
    rules = routing_file("rules:\n  - name: r\n    then: {mailbox: fin, folder: Off, tags: [on]}\n",
                         "r.yaml")
    with pytest.raises(ConfigErrors) as exc:
        load(book, rules, book=None)
    assert [str(e) for e in exc.value.errors] == [
        f"{book}:5:25: alias invoices@example.com: folder takes text, but YAML read this value "
        "as false (no, yes, on, off, y, n are booleans to YAML); put the folder in quotes as "
        "written: folder: 'No'",
        f"{rules}:3:11: rule 'r': a tag must be text, but YAML read this one as true (no, yes, "
        "on, off, y, n are booleans to YAML); put the tag in quotes as written: tags: ['on', 'NO']",
        f"{rules}:3:11: rule 'r': folder takes text, but YAML read this value as false (no, "
        "yes, on, off, y, n are booleans to YAML); put the folder in quotes as written: "
        "folder: 'Off'"]
    ok = routing_file("rules:\n  - name: r\n    then: {mailbox: fin, folder: 'Off', tags: ['on']}\n",
                      "r.yaml")
    book = routing_file("domains: [example.com]\nmailboxes:\n  fin: {maildir: fin}\n"
                        "aliases:\n  invoices@example.com: {mailbox: fin, folder: 'No'}\n",
                        "book.yaml")
    [d] = load(book, ok, book=None).decide(MessageView(mail("x", "y")), "", ["invoices@example.com"],
                                             MONDAY_10_MSK)
    assert (d.folder, d.tags) == ("Off", ("on",))


@pytest.mark.parametrize("then", ["{owner: p.ivanov@example.com}", "{owner: nobody}",
                                  "{mailbox: sales@example.com}"])
def test_a_rule_error_beside_an_address_book_error_is_reported_not_a_crash(then: str) -> None:
    """An address book with an error (here an alias to an unknown mailbox) and a rule whose
    owner is unknown: the owner's hint looked for a person of that address or name among the
    book's names (None each, the book not built) and `check` died with AttributeError; a
    reload was an internal error. Both errors are reported."""
    book = routing_file("domains: [example.com]\nmailboxes:\n  sales: {maildir: sales}\n"
                        "people:\n  ivanov: {address: p.ivanov@example.com}\n"
                        "aliases:\n  a@example.com: mailbox:nope\n", "book.yaml")
    rules = routing_file(f"rules:\n  - name: r\n    then: {then}\n", "r.yaml")
    with pytest.raises(ConfigErrors) as exc:
        load(book, rules, book=None)
    text = str(exc.value)
    assert f"{book}:7:" in text and "unknown mailbox 'nope'" in text
    assert f"{rules}:3:" in text, text


@pytest.mark.parametrize("rule, hint", [
    ("{name: r, then: {folder: X}, continue: 'yes please'}",
     "'continue' takes true or false; write continue: true (later rules add to this one), or "
     "leave it out"),
    ("{name: r, then: {sla: {calendar: msk}}}",
     "'sla' needs first_response or resolve; write e.g. sla: {first_response: 4h, resolve: 2d, "
     "calendar: msk}"),
    ("{name: r, when: {robot: 'sometimes'}, then: {folder: X}}",
     "'robot' takes true or false; write robot: true (lists, bounces, auto-replies) or robot: false"),
    ("{name: r, when: {subject: {exists: 'maybe'}}, then: {folder: X}}",
     "'exists' takes true or false; write exists: true (the field is there) or exists: false"),
])
def test_errors_that_named_no_fix_name_one(rule: str, hint: str) -> None:
    """Found by mutating the example files at random: these errors said what was wrong and
    not what to write."""
    rules = routing_file("calendars:\n  msk: {timezone: Europe/Moscow}\nrules:\n  - " + rule + "\n",
                         "r.yaml")
    with pytest.raises(ConfigErrors) as exc:
        load(rules)
    assert hint in str(exc.value), str(exc.value)


@pytest.mark.parametrize(("headers", "subject", "why"), [s[1:] for s in AUTOMATIC],
                         ids=[s[0] for s in AUTOMATIC])
def test_robot_true_knows_what_the_autoresponder_knows(headers, subject, why) -> None:
    """The example rules' `robots` rule (`robot: true`) tags the automatic mail the
    autoresponder alone recognised before (tests/support/automatic_mail.py): a CommuniGate
    auto-reply, a Lotus Notes out-of-office, a DMARC report, a bare DSN, LISTSERV list
    mail... were routed as a person's mail, untagged, at normal priority. The envelope
    sender is a forwarder's, a person's address: only the message says it is a robot's."""
    d = route(ruleset(RULES), raw(headers, subject, to="sales@example.com"), "sales@example.com",
              "fwd@relay.example")
    assert (d.tags, d.rules[0].name) == (("robot",), "robots")
    assert any(why in r for r in d.reasons), d.reasons


@pytest.mark.parametrize(("headers", "subject"), [s[1:] for s in PERSONS],
                         ids=[s[0] for s in PERSONS])
def test_robot_true_leaves_a_persons_mail_alike(headers, subject) -> None:
    d = route(ruleset(RULES), raw(headers, subject, to="sales@example.com"), "sales@example.com",
              "ann@client.example")
    assert (d.tags, [r.name for r in d.rules]) == ((), ["sales"])

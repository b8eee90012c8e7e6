"""The rules engine: first match, continue, default, explanations, build errors, index."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from mailrouter import yamlsrc
from mailrouter.addresses import AddressBook
from mailrouter.errors import ConfigErrors
from mailrouter.message import MessageView
from mailrouter.routing.decision import REPLY_OK, Action, Decision
from mailrouter.routing.rules import RuleSet

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "rules" / "samples"
BOOK = AddressBook.load(ROOT / "rules" / "company.yaml")
MONDAY_10_MSK = datetime(2027, 1, 11, 7, 0, tzinfo=timezone.utc)


def ruleset(text: str, source: str = "t.yaml") -> RuleSet:
    doc = yamlsrc.loads(text, source)
    return RuleSet.build(doc.get("rules") or yamlsrc.LocList(), BOOK, doc.get("calendars"))


def default_for(rcpt: str) -> Any:
    res = BOOK.resolve(rcpt)
    first = res.targets[0] if res.targets else None
    return res, Decision(rcpt, Action.DELIVER, REPLY_OK, targets=res.targets,
                         mailbox=first.mailbox if first else None,
                         folder=first.folder if first else None,
                         owner=res.person, path=res.path, reasons=("address book",))


def decide_with(rs: RuleSet) -> Any:
    """A small stand-in for Snapshot.decide: address book default, then the rules."""
    def decide(view: MessageView, mail_from: str, rcpts: list[str],
               at: datetime | None = None) -> list[Decision]:
        out = []
        for rcpt in rcpts:
            res, default = default_for(rcpt)
            out.append(rs.apply(view, mail_from, rcpt, res, default, at or MONDAY_10_MSK))
        return out
    return decide


def route(rs: RuleSet, eml: str | bytes, rcpt: str, mail_from: str = "someone@outside.example",
          at: datetime = MONDAY_10_MSK) -> Decision:
    raw = eml if isinstance(eml, bytes) else (SAMPLES / eml).read_bytes()
    return decide_with(rs)(MessageView(raw), mail_from, [rcpt], at)[0]


def mail(subject: str = "Hello", body: str = "text", **headers: str) -> bytes:
    head = {"From": "A <a@outside.example>", "To": "x@example.com", "Subject": subject, **headers}
    lines = [f"{k.replace('_', '-')}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + body + "\r\n").encode("utf-8")


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
    """A message no rule matches keeps the address book's default decision, identical."""
    res, default = default_for("team@example.com")
    d = ruleset(RULES).apply(MessageView(mail("Lunch")), "x@y", "team@example.com", res, default,
                             MONDAY_10_MSK)
    assert d is default
    assert len(d.targets) == 3


def test_refused_recipient_is_not_routed() -> None:
    """A recipient the address book refused keeps its refusal; rules never deliver it."""
    res = BOOK.resolve("nobody@example.com")
    refused = Decision("nobody@example.com", Action.REJECT, res.reply)
    rs = ruleset("rules:\n  - {name: all, then: {mailbox: sales}}\n")
    assert rs.apply(MessageView(mail()), "", "nobody@example.com", res, refused, MONDAY_10_MSK) is refused


def test_rule_match_names_file_line_and_decoded_value() -> None:
    """RuleMatch carries the rule's file:line and the decoded value it matched on."""
    d = route(ruleset(RULES, "rules/r.yaml"), "invoice-koi8r.eml", "invoices@example.com")
    m = d.rules[0]
    assert (m.name, m.file, m.line) == ("invoices", "rules/r.yaml", 6)
    assert m.matched == "subject contains 'счёт' (value: 'Счёт N 1234 за январь')"
    assert d.reasons[-1] == ("rule 'invoices' (rules/r.yaml:6): "
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
    then: {folder: X}
    contine: true
"""


def test_build_reports_every_error_with_position_and_hint() -> None:
    """One build reports every error of every rule, each with file:line:column and a fix."""
    with pytest.raises(ConfigErrors) as info:
        ruleset(BAD, "r.yaml")
    assert [str(e) for e in info.value.errors] == [
        "r.yaml:3:12: rule 'a': unknown condition 'subjet'; did you mean 'subject'?",
        "r.yaml:4:21: rule 'a': unknown mailbox 'finanse'; did you mean 'finance'? "
        "(define it under 'mailboxes:')",
        "r.yaml:6:29: rule 'b': bad regex '(unclosed': missing ), unterminated subpattern "
        "at position 0; fix the pattern (Python re syntax)",
        "r.yaml:6:54: rule 'b': 'gt' needs a number or a size like 10MB, not 'lots'",
        "r.yaml:7:19: rule 'b': unknown owner 'nobody'; known people and teams: ivanov, petrova, "
        "smirnov, finance-duty",
        "r.yaml:7:37: rule 'b': priority must be one of low, normal, high, urgent, not 'extreme'",
        "r.yaml:7:68: rule 'b': bad duration 'soon' for first_response; write e.g. 30m, 4h, 2d or 1d4h",
        "r.yaml:7:84: rule 'b': unknown calendar 'spb'; define it under 'calendars:' "
        "(known: none defined)",
        "r.yaml:11:5: rule 'c': unknown key 'contine'; did you mean 'continue'?",
        "r.yaml:9:22: rule 'c': unknown operator 'contans' for 'subject'; did you mean 'contains'?",
    ]


def test_hash_changes_with_rules_only() -> None:
    """The rule-set hash is stable for the same rules and changes when a rule changes."""
    assert ruleset(RULES).hash == ruleset(RULES).hash
    assert ruleset(RULES).hash != ruleset(RULES.replace("Inbound", "In")).hash


def test_index_skips_rules_for_other_recipients() -> None:
    """Rules indexed by recipient or word are not even tested for other messages."""
    lines = ["rules:"]
    for i in range(200):
        lines.append(f"  - {{name: r{i}, when: {{rcpt: a{i}@example.com}}, then: {{folder: F{i}}}}}")
        lines.append(f"  - {{name: w{i}, when: {{subject: {{contains: word{i}}}}}, then: {{folder: W{i}}}}}")
    rs = ruleset("\n".join(lines) + "\n")
    stats = rs.index.stats()
    assert stats == {"rules": 400, "always": 0, "word_gated": 200, "by_recipient": 200}
    res, default = default_for("sales@example.com")
    from mailrouter.routing.facts import Facts
    facts = Facts(MessageView(mail("about word150 and word7")), "", "sales@example.com", res,
                  MONDAY_10_MSK, {})
    assert [r.name for r in rs.index.candidates(facts)] == ["w7", "w150"]
    d = rs.apply(MessageView(mail("about word150 and word7")), "", "sales@example.com", res,
                 default, MONDAY_10_MSK)
    assert d.folder == "W7"


class _CountingView(MessageView):
    body_reads = 0

    @property
    def body_text(self) -> str:  # type: ignore[override]
        type(self).body_reads += 1
        return super().body_text


def test_body_is_not_decoded_when_an_earlier_rule_decides() -> None:
    """The body is decoded only when a rule that reads it could still decide."""
    rs = ruleset("""\
rules:
  - {name: s, when: {subject: {contains: invoice}}, then: {folder: S}}
  - {name: b, when: {body: {contains: invoice}}, then: {folder: B}}
""")
    res, default = default_for("sales@example.com")
    _CountingView.body_reads = 0
    d = rs.apply(_CountingView(mail("invoice", "invoice")), "", "sales@example.com", res, default,
                 MONDAY_10_MSK)
    assert (d.folder, _CountingView.body_reads) == ("S", 0)
    d = rs.apply(_CountingView(mail("hello", "your invoice")), "", "sales@example.com", res, default,
                 MONDAY_10_MSK)
    assert (d.folder, _CountingView.body_reads) == ("B", 1)


def test_non_ascii_folder_on_lmtp_mailbox_is_a_load_error() -> None:
    """Dovecot LMTP cannot take a UTF-8 +detail: a rule naming one is refused with file:line."""
    book_doc = yamlsrc.loads("domains: [example.com]\nmailboxes:\n  fin: {lmtp: fin@mail.internal}\n"
                             "aliases:\n  invoices@example.com: mailbox:fin\n", "book.yaml")
    book = AddressBook.build(book_doc)
    rules = yamlsrc.loads("rules:\n  - name: r\n    then: {mailbox: fin, folder: Финансы}\n", "r.yaml")
    with pytest.raises(ConfigErrors) as exc:
        RuleSet.build(rules["rules"], book)
    assert "r.yaml:3:" in str(exc.value) and "folder 'Финансы' cannot be sent to LMTP mailbox 'fin'" \
        in str(exc.value)

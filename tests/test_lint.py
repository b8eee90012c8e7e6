"""`mailrouter check` warnings: shadowed rules, conditions that cannot match, typos."""

from __future__ import annotations

import pytest

from mailrouter.errors import ConfigErrors
from tests.test_rules import ruleset


def test_rule_after_catch_all_is_shadowed() -> None:
    """A rule with no `when` and no continue hides every later rule."""
    rs = ruleset("""\
rules:
  - {name: all, then: {folder: X}}
  - {name: later, when: {subject: invoice}, then: {folder: Y}}
""", "r.yaml")
    assert rs.lint() == [
        "r.yaml:3: rule 'later': never matches: rule 'all' (r.yaml:2) matches every message it "
        "matches and stops; move it above or add 'continue: true' to the earlier rule"]


def test_narrower_rule_after_broader_is_shadowed() -> None:
    """An earlier rule whose conditions are a subset (needle lists covering) shadows."""
    rs = ruleset("""\
rules:
  - {name: broad, when: {subject: [счёт, invoice]}, then: {folder: X}}
  - {name: narrow, when: {subject: invoice, rcpt: sales@example.com}, then: {folder: Y}}
  - {name: other, when: {subject: faktura}, then: {folder: Z}}
  - {name: tagger, when: {rcpt: sales@example.com}, then: {tags: [t]}, continue: true}
  - {name: fine, when: {rcpt: sales@example.com, subject: hello}, then: {folder: W}}
""", "r.yaml")
    warnings = rs.lint()
    assert len(warnings) == 1
    assert warnings[0].startswith("r.yaml:3: rule 'narrow': never matches: rule 'broad' (r.yaml:2)")


def test_any_branch_shadowing() -> None:
    """A later rule implied by one branch of an earlier `any` is shadowed."""
    rs = ruleset("""\
rules:
  - {name: a, when: {any: [{subject: invoice}, {attachment: {glob: '*.pdf'}}]}, then: {folder: X}}
  - {name: b, when: {attachment: {glob: '*.pdf'}}, then: {folder: Y}}
""", "r.yaml")
    assert [w.split(":")[1] for w in rs.lint()] == ["3"]


@pytest.mark.parametrize("cond, warning", [
    ("{subject: {contains: '!!!'}}",
     "subject contains '!!!' can never match: 'contains' matches whole words and this has no "
     "letters or digits; use glob or regex"),
    ("{subject: {starts_with: 'Re: order'}}",
     "subject starts_with 'Re: order' can never match: subjects are matched without reply "
     "prefixes; write 'order'"),
    ("{subject: {equals: 'Fwd: price'}}",
     "subject equals 'Fwd: price' can never match: subjects are matched without reply prefixes; "
     "write 'price'"),
    ("{rcpt: sales@example.com, all: [{rcpt: support@example.com}]}", None),
    ("{all: [{rcpt: sales@example.com}, {rcpt: support@example.com}]}",
     "requires two different recipients at once and can never match"),
])
def test_unmatchable_conditions(cond: str, warning: str | None) -> None:
    """Conditions that can never match the normalised text are reported with a fix."""
    rs = ruleset(f"rules:\n  - name: r\n    when: {cond}\n    then: {{folder: X}}\n", "r.yaml")
    assert rs.lint() == ([f"r.yaml:2: rule 'r': {warning}"] if warning else [])


def test_duplicate_rule_names() -> None:
    """Two rules with one name are reported: explanations would be ambiguous."""
    rs = ruleset("rules:\n  - {name: a, when: {subject: x}, then: {folder: X}}\n"
                 "  - {name: a, when: {subject: y}, then: {folder: Y}}\n", "r.yaml")
    assert rs.lint() == ["r.yaml:3: rule 'a': the name is also used at r.yaml:2; "
                         "explanations would be ambiguous"]


def test_unknown_key_typo_is_an_error_with_did_you_mean() -> None:
    """Typos in keys are refused at load, with the closest known key."""
    with pytest.raises(ConfigErrors) as info:
        ruleset("rules:\n  - name: r\n    when: {subjet: invoice}\n    thne: {folder: X}\n", "r.yaml")
    assert [str(e) for e in info.value.errors] == [
        "r.yaml:4:5: rule 'r': unknown key 'thne'; did you mean 'then'?",
        "r.yaml:3:12: rule 'r': unknown condition 'subjet'; did you mean 'subject'?",
        "r.yaml:2:5: rule 'r': 'then' must be a non-empty mapping; "
        "write e.g. then: {mailbox: finance, folder: Finance}",
    ]


def test_example_rules_lint_clean() -> None:
    """The shipped example rules produce no warnings."""
    from pathlib import Path

    from mailrouter import yamlsrc
    from mailrouter.routing.rules import RuleSet
    from tests.test_rules import BOOK
    doc = yamlsrc.load(Path(__file__).resolve().parent.parent / "rules" / "routing.yaml")
    assert RuleSet.build(doc["rules"], BOOK, doc["calendars"]).lint() == []

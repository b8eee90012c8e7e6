"""`mailrouter check` warnings: shadowed rules, conditions that cannot match, typos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter.errors import ConfigErrors
from mailrouter.routing import lint as lint_module
from mailrouter.message import MessageView
from mailrouter.routing.facts import Facts
from tests.support.rules import COMPANY, MONDAY_10_MSK, load, mail, routing_file


def lint(text: str) -> tuple[str, list[str]]:
    """(the routing file, `check`'s warnings for it) of one routing file with this text."""
    path = routing_file(text, "r.yaml")
    return str(path), load(path).rules.lint()


def test_rule_after_catch_all_is_shadowed() -> None:
    """A rule with no `when` and no continue hides every later rule."""
    path, warnings = lint("""\
rules:
  - {name: all, then: {folder: X}}
  - {name: later, when: {subject: invoice}, then: {folder: Y}}
""")
    assert warnings == [
        f"{path}:3: rule 'later': never matches: rule 'all' ({path}:2) matches every message it "
        "matches and stops; move it above or add 'continue: true' to the earlier rule"]


def test_narrower_rule_after_broader_is_shadowed() -> None:
    """An earlier rule whose conditions are a subset (needle lists covering) shadows."""
    path, warnings = lint("""\
rules:
  - {name: broad, when: {subject: [счёт, invoice]}, then: {folder: X}}
  - {name: narrow, when: {subject: invoice, rcpt: sales@example.com}, then: {folder: Y}}
  - {name: other, when: {subject: faktura}, then: {folder: Z}}
  - {name: tagger, when: {rcpt: sales@example.com}, then: {tags: [t]}, continue: true}
  - {name: fine, when: {rcpt: sales@example.com, subject: hello}, then: {folder: W}}
""")
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{path}:3: rule 'narrow': never matches: rule 'broad' ({path}:2)")


def test_a_rule_on_a_domain_shadows_a_later_rule_on_an_address_in_it() -> None:
    """Mail to team@example.com is mail to example.com: a rule on the recipient after one on
    its domain never fired, and check said nothing."""
    path, warnings = lint("""\
rules:
  - {name: domain, when: {rcpt_domain: EXAMPLE.com}, then: {folder: X}}
  - {name: team, when: {rcpt: team@example.com}, then: {folder: Y}}
  - {name: two, when: {rcpt: [sales@example.com, a@other.example]}, then: {folder: Z}}
""")
    assert warnings == [
        f"{path}:3: rule 'team': never matches: rule 'domain' ({path}:2) matches every message it "
        "matches and stops; move it above or add 'continue: true' to the earlier rule"]


def test_a_rule_within_the_words_or_ends_of_an_earlier_one_is_shadowed() -> None:
    """A general rule above a narrower one is the usual way a rule stops firing: `contains:
    invoice` takes every subject `contains: 'invoice overdue'` wants, `счет* на оплат*` every
    «счета на оплату», `ends_with: '@bigclient.example'` the boss's address. Only the same
    needle counted, and check said nothing."""
    path, warnings = lint("""\
rules:
  - {name: invoice, when: {subject: {contains: invoice}}, then: {folder: A}}
  - {name: overdue, when: {subject: {contains: 'Invoice overdue'}}, then: {folder: B}}
  - {name: exact, when: {subject: {equals: 'Срочно: invoice №5'}}, then: {folder: B}}
  - {name: forms, when: {body: {contains: 'счёт* на оплат*'}}, then: {folder: C}}
  - {name: spelled, when: {body: {contains: ['выставить счета на оплату', 'счетов* на оплату']}},
     then: {folder: D}}
  - {name: client, when: {mail_from: {ends_with: '@bigclient.example'}}, then: {folder: E}}
  - {name: boss, when: {mail_from: ceo@bigclient.example}, then: {folder: F}}
  - {name: prefix, when: {from_name: {starts_with: 'ООО Ромашка'}}, then: {folder: G}}
  - {name: fine1, when: {subject: {contains: invoices}}, then: {folder: H}}
  - {name: fine2, when: {body: {contains: ['счет* за услуги', 'на оплату счета']}}, then: {folder: I}}
  - {name: fine3, when: {from_name: {starts_with: ООО}}, then: {folder: J}}
  - {name: fine4, when: {body: {contains: 'сче* на оплату'}}, then: {folder: K}}
""")
    assert [(w.split("rule '")[1].split("'")[0], w.split("never matches: rule '")[1].split("'")[0])
            for w in warnings] == [("overdue", "invoice"), ("exact", "invoice"),
                                   ("spelled", "forms"), ("boss", "client")]
    assert warnings[0] == (
        f"{path}:3: rule 'overdue': never matches: rule 'invoice' ({path}:2) matches every message "
        "it matches and stops; move it above or add 'continue: true' to the earlier rule")


_PHRASES = ["invoice", "Invoice overdue", "overdue invoice", "inv*", "invoice*", "счёт*",
            "счета на оплату", "счет* на оплат*", "на оплату", "счет", "*"]
_TEXTS = ["Invoice", "invoice overdue", "Overdue invoice", "invoices", "Re: invoice 5",
          "Счёт на оплату", "счета на оплату", "счет", "пересчёт на оплату", "inv", "in voice", "",
          "на оплату счет"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["contains", "equals", "starts_with", "ends_with"]), st.sampled_from(_PHRASES),
       st.sampled_from(["contains", "equals", "starts_with", "ends_with"]), st.sampled_from(_PHRASES))
def test_a_shadow_warning_is_never_wrong(a_op: str, a: str, b_op: str, b: str) -> None:
    """Whenever check says rule b is within rule a, every subject b matches a matches."""
    rules = load(routing_file(f"""\
rules:
  - {{name: a, when: {{subject: {{{a_op}: '{a}'}}}}, then: {{folder: A}}}}
  - {{name: b, when: {{subject: {{{b_op}: '{b}'}}}}, then: {{folder: B}}}}
""", "r.yaml")).rules.rules
    if not lint_module._shadows(rules[0], rules[1]):
        return
    for text in _TEXTS:
        facts = Facts(MessageView(mail(text)), "", "sales@example.com", None, MONDAY_10_MSK, {})
        if rules[1].when.test(facts) is not None:
            assert rules[0].when.test(facts) is not None, text


def test_any_branch_shadowing() -> None:
    """A later rule implied by one branch of an earlier `any` is shadowed."""
    path, warnings = lint("""\
rules:
  - {name: a, when: {any: [{subject: invoice}, {attachment: {glob: '*.pdf'}}]}, then: {folder: X}}
  - {name: b, when: {attachment: {glob: '*.pdf'}}, then: {folder: Y}}
""")
    assert [w[len(path):].split(":")[1] for w in warnings] == ["3"]


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
    ("{subject: {contains: 'Re: договор'}}",
     "subject contains 'Re: договор' can never match a reply: subjects are matched without "
     "reply prefixes; write 'договор'"),
    ("{subject: [счет, 'Пересл: счет']}",
     "subject contains 'Пересл: счет' can never match a reply: subjects are matched without "
     "reply prefixes; write 'счет'"),
    ("{subject: {contains: 'договор Re: x'}}", None),     # not at the start: no reply prefix
    # a word typed half in the other keyboard layout: a Latin c in «счёт», a Cyrillic о in
    # «invoice»; check said nothing and the rule never matched the mail it was written for
    ("{subject: {contains: 'c\u0447\u0451т*'}}",
     "subject contains 'cчёт*' matches no word written in one alphabet: its word 'cчёт' mixes "
     "Latin and Cyrillic letters (c is Latin); retype the word with one keyboard layout"),
    ("{body: {equals: ['ok', 'inv\u043eice 5']}}",
     "body equals 'invоice 5' matches no word written in one alphabet: its word 'invоice' mixes "
     "Latin and Cyrillic letters (о is Cyrillic); retype the word with one keyboard layout"),
    ("{subject: {contains: 'iPhone-чехол, Wi-Fi роутер 5G'}, from_addr: 'ivan@пример.рф'}", None),
    # a space around a needle (a no-break one pasted from a web page) is no reply prefix: it
    # was warned about as one ("can never match a reply; write 'срочно'"), and it matches
    ("{subject: {contains: ['срочно\u00a0', ' urgent ']}}", None),
    ("{subject: {equals: 'order ', starts_with: ' order'}}", None),
    ("{header: {Subject: {contains: 'Re: x'}}}", None),  # the raw header keeps its prefixes
    ("{subject: {contains: '*договор'}}",
     "subject contains '*договор': a * works only at the end of a word (word forms: "
     "'договор*'); this one is ignored; use glob or regex"),
    ("{subject: {contains: 'с*'}}",
     "subject contains 'с*': 'с*' matches every word beginning with 'с'; give more of the word"),
    ("{subject: {starts_with: 'договор*'}}",
     "subject starts_with 'договор*': '*' is a word-form marker only in contains; here it is a "
     "literal star; use glob for a wildcard"),
    ("{subject: {contains: 'договор* на подпись'}}", None),
    # a set left open: fnmatch takes the '[' literally, so '*[12.pdf' matched no invoice_1.pdf
    ("{attachment: {glob: '*[12.pdf'}}",
     "attachment glob '*[12.pdf': a '[' that no ']' closes is a literal '[', not a set; close "
     "the set ('[abc]'), or write '[[]' for a literal '['"),
    ("{attachment: {glob: ['*[12].pdf', '[]]x', '[!]]x', '[[]x', 'a]b']}}", None),
    # a range written high to low: fnmatch (and the rules) take it as no character at all
    ("{attachment: {glob: '*_[9-0].pdf'}}",
     "attachment glob '*_[9-0].pdf': the range '9-0' runs backwards, and a glob takes it as no "
     "character at all; write it low to high ('0-9')"),
    ("{subject: {glob: ['[а-я]*', '[!a-z0-9-]x', '[]-a]', '[a-Z]*']}}", None),   # a-Z: a-z folded
    ("{subject: {glob: '[Я-А]*'}}",
     "subject glob '[Я-А]*': the range 'я-а' runs backwards, and a glob takes it as no "
     "character at all; write it low to high ('а-я')"),
    # one recipient cannot be two: whether the second is written in an `all` or beside it
    ("{rcpt: sales@example.com, all: [{rcpt: support@example.com}]}",
     "requires two different recipients at once and can never match"),
    ("{rcpt: sales@example.com, all: [{rcpt: [support@example.com, sales@example.com]}]}", None),
    ("{rcpt: sales@example.com, any: [{rcpt: support@example.com}, {subject: x}]}", None),
    ("{all: [{rcpt: sales@example.com}, {rcpt: support@example.com}]}",
     "requires two different recipients at once and can never match"),
    # an attachment bigger than its message: the bounds were meant the other way round
    ("{attachment_size: {gt: 10MB}, size: {lt: 1MB}}",
     "attachment_size gt 10MB with size lt 1MB can never match: an attachment is part of the "
     "message, so no attachment is larger than the message; check which bound is meant"),
    ("{all: [{size: {le: 100k, gt: 1k}}, {all: [{attachment_size: {ge: 200k}}, {subject: x}]}]}",
     "attachment_size ge 200k with size le 100k can never match: an attachment is part of the "
     "message, so no attachment is larger than the message; check which bound is meant"),
    ("{size: 1000, attachment_size: {ge: 1001}}",
     "attachment_size ge 1001 with size equals 1000 can never match: an attachment is part of "
     "the message, so no attachment is larger than the message; check which bound is meant"),
    ("{size: {lt: 1MB}, any: [{attachment_size: {gt: 10MB}}, {subject: x}]}", None),
    ("{attachment_size: {gt: 1MB}, size: {lt: 10MB}}", None),
    ("{attachment_size: {gt: 1000}, size: {le: 1001}}", None),
    ("{attachment_size: {gt: 1000}, size: {lt: 1001}}",
     "attachment_size gt 1000 with size lt 1001 can never match: an attachment is part of the "
     "message, so no attachment is larger than the message; check which bound is meant"),
    ("{not: {attachment_size: {gt: 10MB}}, size: {lt: 1MB}}", None),
    # the sender as a mail client shows it: the fields hold the bare address
    ("{mail_from: 'Boss <boss@bigclient.example>'}",
     "mail_from equals 'Boss <boss@bigclient.example>' can never match: mail_from is the bare "
     "address, without a name or <>; write 'boss@bigclient.example'"),
    ("{from_addr: [ok@x.example, '<boss@x.example>']}",
     "from_addr equals '<boss@x.example>' can never match: from_addr is the bare address, "
     "without a name or <>; write 'boss@x.example'"),
    ("{mail_from: {ends_with: '@bigclient.example>'}}",
     "mail_from ends_with '@bigclient.example>' can never match: mail_from is the bare address, "
     "without a name or <>; write '@bigclient.example'"),
    ("{mail_from: '< >'}",
     "mail_from equals '< >' can never match: mail_from is the bare address, without a name or "
     "<>; write '<>' for a bounce's null sender"),
    ("{mail_from: '<>', from_addr: {starts_with: 'boss '}}", None),
    ("{mail_from: '\"john doe\"@x.example'}", None),
])
def test_unmatchable_conditions(cond: str, warning: str | None) -> None:
    """Conditions that can never match the normalised text are reported with a fix."""
    path, warnings = lint(f"rules:\n  - name: r\n    when: {cond}\n    then: {{folder: X}}\n")
    assert warnings == ([f"{path}:2: rule 'r': {warning}"] if warning else [])


def test_duplicate_rule_names() -> None:
    """Two rules with one name are reported, with the fix ("explanations would be
    ambiguous" said what goes wrong, not what to do)."""
    path, warnings = lint("rules:\n  - {name: a, when: {subject: x}, then: {folder: X}}\n"
                          "  - {name: a, when: {subject: y}, then: {folder: Y}}\n")
    assert warnings == [f"{path}:3: rule 'a': the name is also used at {path}:2; "
                        "explanations, the registry, the metrics and rule tests' 'rule:' "
                        "could not tell the two apart: give this rule a name of its own"]


def test_unknown_key_typo_is_an_error_with_did_you_mean() -> None:
    """Typos in keys are refused at load, with the closest known key."""
    with pytest.raises(ConfigErrors) as info:
        lint("rules:\n  - name: r\n    when: {subjet: invoice}\n    thne: {folder: X}\n")
    path = info.value.errors[0].path
    assert [str(e) for e in info.value.errors] == [
        f"{path}:4:5: rule 'r': unknown key 'thne'; did you mean 'then'?",
        f"{path}:3:12: rule 'r': unknown condition 'subjet'; did you mean 'subject'?",
        f"{path}:2:5: rule 'r': 'then' must be a non-empty mapping; "
        "write e.g. then: {mailbox: finance, folder: Finance}",
    ]


def test_example_rules_lint_clean() -> None:
    """The shipped example rules produce no warnings and no notes (they use word forms)."""
    from mailrouter.routing.lint import lint_notes
    from tests.support.rules import ROOT
    snap = load(ROOT / "rules" / "routing.yaml")
    assert (snap.rules.lint(), lint_notes(snap.rules.rules)) == ([], [])


def _broken_copy(tmp_path: Path, company: tuple[str, str], routing: tuple[str, str]) -> Path:
    """rules/*.yaml copied with one replacement in company.yaml and one in routing.yaml."""
    import shutil

    from tests.support.rules import ROOT
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    for name, (old, new) in (("company.yaml", company), ("routing.yaml", routing)):
        p = tmp_path / "rules" / name
        text = p.read_text(encoding="utf-8")
        assert old in text
        p.write_text(text.replace(old, new, 1), encoding="utf-8")
    return tmp_path / "rules"


def _line(path: Path, needle: str) -> int:
    """The line of `needle` in `path`, so the expectations follow edits to the example files."""
    text = path.read_text(encoding="utf-8")
    return text[:text.index(needle)].count("\n") + 1


def test_errors_in_two_files_are_reported_together(tmp_path: Path) -> None:
    """An address-book error in company.yaml does not hide a rule error in routing.yaml:
    one load (one `mailrouter check`) names both, and nothing else."""
    d = _broken_copy(tmp_path, ("mailbox:finance", "mailbox:finanse"),
                     ("then: {mailbox: sales,", "then: {mailbox: salez,"))
    with pytest.raises(ConfigErrors) as info:
        load(*sorted(d.glob("*.yaml")), book=None)
    assert [str(e) for e in info.value.errors] == [
        f"{d / 'company.yaml'}:{_line(d / 'company.yaml', 'finanse')}:27: unknown mailbox "
        "'finanse'; did you mean 'finance'? (define it under 'mailboxes:')",
        f"{d / 'routing.yaml'}:{_line(d / 'routing.yaml', 'salez')}:21: rule 'sales': unknown "
        "mailbox 'salez'; did you mean "
        "'sales'? (define it under 'mailboxes:')"]


def test_a_file_that_cannot_be_parsed_does_not_hide_the_others(tmp_path: Path) -> None:
    """A YAML syntax error in company.yaml and a bad regex in routing.yaml: both reported;
    the mailboxes the unreadable file defined are not reported as unknown in the rules."""
    d = _broken_copy(tmp_path, ("mailboxes:  ", "mailboxes: [ "),
                     ("subject: {contains: [срочно", "subject: {regex: '(', contains: [срочно"))
    with pytest.raises(ConfigErrors) as info:
        load(*sorted(d.glob("*.yaml")), book=None)
    assert [str(e).split(": ")[0:2] for e in info.value.errors] == [
        [f"{d / 'company.yaml'}:8:3", "YAML syntax"],     # where the parser notices
        [f"{d / 'routing.yaml'}:{_line(d / 'routing.yaml', 'regex: ')}:56", "rule 'support-urgent'"]]
    assert "bad regex '('" in str(info.value.errors[1])


def test_check_prints_every_files_errors(tmp_path: Path) -> None:
    """`mailrouter check` exits 1 and prints the errors of both broken files."""
    import subprocess
    import sys
    d = _broken_copy(tmp_path, ("mailbox:finance", "mailbox:finanse"),
                     ("then: {mailbox: sales,", "then: {mailbox: salez,"))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{d}/*.yaml']\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "mailrouter.cli", "check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert "routing files have 2 error(s)" in out.stderr
    assert f"{d / 'company.yaml'}:{_line(d / 'company.yaml', 'finanse')}:27: unknown mailbox " \
        "'finanse'" in out.stderr
    assert f"{d / 'routing.yaml'}:{_line(d / 'routing.yaml', 'salez')}:21: rule 'sales': " \
        "unknown mailbox 'salez'" in out.stderr


@pytest.mark.parametrize("prefix", ["Re", "RE", "Fwd", "Fw", "AW", "WG", "SV", "Отв", "Ответ",
                                    "Пересл", "Переслано", "Re[2]"])
def test_every_reply_prefix_in_a_subject_needle_is_reported(prefix: str) -> None:
    """Each prefix normalize.py strips from subjects is reported in contains/equals/starts_with."""
    for op in ("contains", "equals", "starts_with"):
        _, warnings = lint(f"rules:\n  - name: r\n    when: {{subject: {{{op}: '{prefix}: счет'}}}}\n"
                           "    then: {folder: X}\n")
        assert len(warnings) == 1 and "write 'счет'" in warnings[0], (op, warnings)


def notes(text: str) -> tuple[str, list[str]]:
    from mailrouter.routing.lint import lint_notes
    path = routing_file(text, "r.yaml")
    return str(path), lint_notes(load(path).rules.rules)


def test_needles_spelling_out_word_forms_get_a_note() -> None:
    """[счёт, счета] and [faktura, fakturu]: a note suggests счет* and faktur*; unrelated words
    and words sharing a short beginning get none."""
    path, got = notes("""\
rules:
  - {name: inv, when: {subject: [счёт, счета, invoice, faktura, fakturu]}, then: {folder: F}}
  - {name: other, when: {subject: [счёт, срочно, заказ, запрос]}, then: {folder: G}}
""")
    assert got == [f"{path}:2: rule 'inv': subject contains forms of one word (счет, счета -> "
                   "счет*; faktura, fakturu -> faktur*): a word ending in * matches all its "
                   "forms; see 'Word forms' in rules/README.md"]


def test_a_cyrillic_or_czech_contains_word_gets_one_note() -> None:
    """`contains: договор` does not match «договора»: check says so once, at the first such
    rule, pointing to договор*; not at all once any rule uses *, nor for Latin-only words."""
    text = """\
rules:
  - {name: en, when: {subject: invoice}, then: {folder: E}}
  - {name: ru, when: {subject: договор}, then: {folder: R}}
  - {name: cz, when: {body: 'zaplaťte fakturu'}, then: {folder: C}}
"""
    path, got = notes(text)
    assert got == [f"{path}:3: rule 'ru': subject contains 'договор' matches the whole word only, "
                   "not its other forms; to match them, end the word with *: 'договор*'; see "
                   "'Word forms' in rules/README.md (this note is shown once)"]
    _, got = notes(text.replace("subject: договор}", "subject: x}"))
    assert len(got) == 1 and "body contains 'zaplaťte fakturu'" in got[0] and "'fakturu*'" in got[0]
    assert notes(text.replace("invoice}", "invoice*}"))[1] == []
    assert notes("rules:\n  - {name: en, when: {subject: invoice}, then: {folder: E}}\n")[1] == []


def test_check_prints_notes_apart_from_warnings(tmp_path: Path) -> None:
    """`mailrouter check` prints the note with file:line and does not count it as a warning."""
    import subprocess
    import sys

    from tests.support.rules import COMPANY
    rules = tmp_path / "r.yaml"
    rules.write_text("rules:\n  - {name: ru, when: {subject: договор}, then: {folder: R}}\n",
                     encoding="utf-8")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{COMPANY}', '{rules}']\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "mailrouter.cli", "check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"note: {rules}:2: rule 'ru': subject contains 'договор' matches")
    assert lines[1].startswith("ok: 2 routing file(s)") and "warning" not in out.stdout


# The shadow search tries only the earlier rules a later one could be implied by (an index of
# their conditions' signatures). It must warn exactly where trying every earlier rule does.

_CONDS = [
    "{subject: invoice}", "{subject: [invoice, счёт]}", "{subject: {equals: invoice}}",
    "{subject: {contains: [счёт, faktura]}}", "{rcpt: sales@example.com}",
    "{rcpt: support@example.com}", "{rcpt: [sales@example.com, support@example.com]}",
    "{attachment: {glob: '*.pdf'}}", "{header: {X-Mailer: {regex: '^bulk'}}}",
    "{from_name: {glob: '*отдел*'}}", "{not: {subject: invoice}}", "{not: {rcpt: sales@example.com}}",
    "{subject: 'invoice overdue'}", "{subject: {contains: 'счёт* на оплат*'}}",
    "{subject: 'счета на оплату'}", "{subject: {equals: 'invoice 5'}}",
    "{from_name: {starts_with: отдел}}", "{from_name: {starts_with: 'отдел продаж'}}",
    "{mail_from: {ends_with: '@bigclient.example'}}", "{mail_from: ceo@bigclient.example}",
]


def _cond(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.sampled_from(["leaf", "leaf", "any", "all"] if depth < 2 else ["leaf"]))
    if kind == "leaf":
        return draw(st.sampled_from(_CONDS))
    parts = [_cond(draw, depth + 1) for _ in range(draw(st.integers(1, 3)))]
    return "{%s: [%s]}" % (kind, ", ".join(parts))


@st.composite
def _rule_sets(draw: st.DrawFn) -> str:
    lines = ["rules:"]
    for n in range(draw(st.integers(2, 7))):
        when = "" if draw(st.integers(0, 9)) == 0 else f"when: {_cond(draw)}, "
        cont = ", continue: true" if draw(st.integers(0, 4)) == 0 else ""
        lines.append(f"  - {{name: r{n}, {when}then: {{folder: F{n}}}{cont}}}")
    return "\n".join(lines) + "\n"


@settings(max_examples=80, deadline=None)
@given(_rule_sets())
def test_the_indexed_shadow_search_warns_where_trying_every_pair_does(text: str) -> None:
    rules = load(routing_file(text, "r.yaml")).rules.rules
    every_pair = []
    for i, rule in enumerate(rules):
        earlier = next((e for e in rules[:i] if lint_module._shadows(e, rule)), None)
        if earlier is not None:
            every_pair.append((rule.name, earlier.name))
    found = [(w.split("rule '")[1].split("'")[0], w.split("never matches: rule '")[1].split("'")[0])
             for w in lint_module.lint_rules(rules) if "never matches" in w]
    assert found == every_pair


def test_check_does_not_try_every_pair_of_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mailrouter check` on 10,000 rules took 115 s: each rule was tried against every
    earlier one (50 million pairs). Rules on distinct recipients and subjects are now tried
    only against the few earlier rules they share a signature with."""
    lines = ["rules:"] + [
        f"  - {{name: r{n}, when: {{subject: {{contains: topic{n}}}}}, then: {{folder: F{n}}}}}"
        for n in range(3000)]
    lines.append("  - {name: late, when: {subject: [topic7, other]}, then: {folder: L}}")
    lines.append("  - {name: later, when: {subject: topic9}, then: {folder: M}}")
    rules, warnings, calls = _shadow_lint_counted(lines, monkeypatch)
    # 'late' also takes 'other': r7 does not cover it; r9 covers 'later'
    assert [w.split(": rule ")[1].split(":")[0] for w in warnings] == ["'later'"]
    assert "rule 'r9'" in warnings[0]
    assert 0 < len(calls) <= 2 * len(rules)


def _shadow_lint_counted(lines: list[str], monkeypatch: pytest.MonkeyPatch
                         ) -> tuple[Any, list[str], list[int]]:
    """(the rules of `lines`, lint's never-matches warnings, one entry per pair tried)."""
    rules = load(routing_file("\n".join(lines) + "\n", "r.yaml")).rules.rules
    calls: list[int] = []
    real = lint_module._shadows

    def counted(earlier: object, later: object) -> bool:
        calls.append(1)
        return real(earlier, later)
    monkeypatch.setattr(lint_module, "_shadows", counted)
    return rules, [w for w in lint_module.lint_rules(rules) if "never matches" in w], calls


def test_rules_sharing_a_word_are_not_tried_against_each_other(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule within the words of an earlier one is shadowed: the search looks an earlier
    rule up by one of its words, the rarest; by the first, 'invoice' in 3,000 rules made
    every rule try every earlier one (check ran for minutes)."""
    lines = ["rules:"] + [
        f"  - {{name: r{n}, when: {{subject: {{contains: 'invoice topic{n}'}}}}, then: {{folder: F}}}}"
        for n in range(3000)]
    lines.append("  - {name: later, when: {subject: 'invoice topic9 overdue'}, then: {folder: M}}")
    rules, warnings, calls = _shadow_lint_counted(lines, monkeypatch)
    assert len(warnings) == 1 and "rule 'later'" in warnings[0] and "rule 'r9'" in warnings[0]
    assert 0 < len(calls) <= 2 * len(rules)


def test_folder_warnings_resolve_no_address_when_no_mailbox_can_lose_a_folder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an LMTP mailbox without sieve_folders loses a non-ASCII folder: with none in the
    book, `check` no longer resolves every alias (2.5 s of 5 for 100,000 aliases)."""
    from mailrouter.addresses import AddressBook
    from mailrouter.routing.folders import folder_warnings
    snap = load(routing_file("rules:\n  - {name: f, then: {folder: Финансы}}\n", "r.yaml"))
    assert not any(b.kind == "lmtp" for b in snap.book.mailboxes.values())
    calls = []
    real = AddressBook.resolve

    def counted(self: AddressBook, address: str) -> object:
        calls.append(address)
        return real(self, address)
    monkeypatch.setattr(AddressBook, "resolve", counted)
    assert folder_warnings(snap.book, snap.rules.rules) == []
    assert calls == []


def test_check_warns_about_a_folder_with_a_slash_on_an_lmtp_mailbox() -> None:
    """Dovecot's Maildir++ layout (deploy/dovecot, docs/install.md) refuses a folder name
    with '/': `Clients/VIP` on an LMTP mailbox lands in the INBOX, answered 250, while the
    registry records folder Clients/VIP. `check` said nothing; it now warns, with the
    rule's file:line (the alias's address) and the fix, 'Clients.VIP'. The same folder on a
    maildir mailbox (a level of our own Maildir) and a dotted one are not warned about."""
    path = routing_file("""\
domains: [example.com]
mailboxes:
  plain: {lmtp: plain@example.test}
  sieved: {lmtp: sieved@example.test, sieve_folders: true}
  local: {maildir: local}
aliases:
  a@example.com: {mailbox: plain, folder: Clients/VIP}
  b@example.com: {mailbox: local, folder: Clients/VIP}
  c@example.com: {mailbox: plain, folder: Clients.VIP}
  postmaster@example.com: mailbox:local
rules:
  - {name: any-box, when: {subject: bill}, then: {folder: Bills/2026}}
  - {name: lmtp-box, when: {subject: act}, then: {mailbox: sieved, folder: Acts/2026}}
  - {name: own-box, when: {subject: own}, then: {mailbox: local, folder: Own/2026}}
  - {name: dotted, when: {subject: dot}, then: {mailbox: plain, folder: Acts.2026}}
""", "r.yaml")
    snap = load(path, book=None)
    warnings = snap.warnings(False)
    slash = [w for w in warnings if "'/'" in w]
    assert slash == [
        "a@example.com: folder 'Clients/VIP' of LMTP mailbox 'plain' goes to the INBOX under "
        "Dovecot's Maildir++ layout, which refuses '/' in a folder name, while the registry "
        "records folder 'Clients/VIP'; write the levels with Dovecot's Maildir++ separator "
        "'.' ('Clients.VIP'), or use a maildir mailbox",
        f"{path}:12: rule 'any-box': folder 'Bills/2026' (for LMTP mailboxes plain, sieved) "
        "goes to the INBOX under Dovecot's Maildir++ layout, which refuses '/' in a folder "
        "name, while the registry records folder 'Bills/2026'; write the levels with "
        "Dovecot's Maildir++ separator '.' ('Bills.2026'), or use a maildir mailbox",
        f"{path}:13: rule 'lmtp-box': folder 'Acts/2026' of LMTP mailbox 'sieved' goes to the "
        "INBOX under Dovecot's Maildir++ layout, which refuses '/' in a folder name, while "
        "the registry records folder 'Acts/2026'; write the levels with Dovecot's Maildir++ "
        "separator '.' ('Acts.2026'), or use a maildir mailbox"], warnings


def test_check_warns_about_a_rule_on_a_recipient_the_book_refuses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rcpt: suport@example.com` (a typo) loaded and never matched: mail to an address the
    book does not know is refused at RCPT. `check` now says so, with the address meant;
    an address of another domain, one under `not:` and a known one are not warned about;
    nor is a mailbox the book defines (`resolved_mailbox: salse` is)."""
    rules = routing_file("""\
rules:
  - {name: typo, when: {rcpt: suport@example.com}, then: {folder: X}}
  - {name: dom, when: {rcpt_domain: [exmaple.com, Example.COM]}, then: {folder: X}}
  - {name: fine, when: {rcpt: [Sales@example.com, x@other.example], not: {rcpt: no@example.com}},
     then: {folder: X}}
  - {name: box, when: {resolved_mailbox: [salse, Finance, person:ivanov]}, then: {folder: X}}
""", "r.yaml")
    warnings = _check_warnings(tmp_path, capsys, rules)
    assert warnings == [
        f"warning: {rules}:2: rule 'typo': rcpt 'suport@example.com' is not an address of the "
        "address book: mail to it is refused at RCPT and never reaches the rules; did you mean "
        "'support@example.com'?",
        f"warning: {rules}:3: rule 'dom': rcpt_domain 'exmaple.com' is not one of our domains "
        "(domains: example.com): mail to it is refused at RCPT and never reaches the rules",
        # a mailbox no recipient resolves to (it loaded and never matched)
        f"warning: {rules}:6: rule 'box': resolved_mailbox 'salse' is no mailbox of the address "
        "book: no recipient resolves to it, the condition never holds; did you mean 'sales'?"]


def test_a_recipient_typed_with_a_cyrillic_letter_is_told_from_the_one_it_looks_like(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rcpt: sаles@example.com` with a Cyrillic а: "did you mean 'sales@example.com'?" named
    an address that looks the same as the one written; the letter is named."""
    rules = routing_file("rules:\n  - {name: cyr, when: {rcpt: s\u0430les@example.com, "
                         "resolved_mailbox: supp\u043ert}, then: {folder: X}}\n", "r.yaml")
    warnings = _check_warnings(tmp_path, capsys, rules)
    assert warnings == [
        f"warning: {rules}:2: rule 'cyr': rcpt 's\u0430les@example.com' is not an address of the "
        "address book: mail to it is refused at RCPT and never reaches the rules; did you mean "
        "'sales@example.com'? ('s\u0430les': \u0430 is Cyrillic; retype it)",
        f"warning: {rules}:2: rule 'cyr': resolved_mailbox 'supp\u043ert' is no mailbox of the "
        "address book: no recipient resolves to it, the condition never holds; did you mean "
        "'support'? ('supp\u043ert': \u043e is Cyrillic; retype it)"]


@pytest.mark.parametrize("typo, meant", [
    ("suport@example.com", "support@example.com"), ("supoprt@example.com", "support@example.com"),
    ("supporrt@example.com", "support@example.com"), ("sipport@example.com", "support@example.com"),
    ("support@exampel.com", "support@example.com"), ("zzzz@example.com", None)])
def test_a_typo_among_many_addresses_is_named_as_difflib_names_it_without_scanning_all(
        typo: str, meant: str | None) -> None:
    """With thousands of addresses the did-you-mean looks only at those one deletion away
    (a letter left out, added, changed, two swapped): difflib over all of them, for each
    unknown rcpt of bench_start's 10,000 rules, took minutes of `check`, and of the daemon,
    which logs these warnings at each start and reload. It names what difflib names."""
    import difflib
    from mailrouter.addressbook.errs import SCAN_ALL, Near
    names = sorted({f"user{i}@example.com" for i in range(SCAN_ALL * 2)}
                   | {"support@example.com", "sales@example.com"})
    near = Near(names)
    assert near.index is not None                  # the many-names way
    assert near(typo) == ([meant] if meant else [])
    assert near(typo) == difflib.get_close_matches(typo, names, n=1) or meant is None


def test_checks_did_you_mean_of_an_address_is_mailrouter_addresss(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two did-you-means of addresses disagreed: `check`'s warning on `rcpt: nobody@` named
    'abuse@example.com' (the domain they share made them close), which `mailrouter address
    nobody@example.com`, `explain` and the rule tests (addressbook.errs.near_address) refuse
    to name: a hint to the wrong mailbox. Both are addressbook.errs.Near now."""
    from mailrouter.addressbook.errs import near_address
    from mailrouter.cli import main
    rules = routing_file("""\
rules:
  - {name: a, when: {rcpt: nobody@example.com}, then: {folder: X}}
  - {name: b, when: {rcpt: invoice@example.com}, then: {folder: X}}
""", "r.yaml")
    warnings = _check_warnings(tmp_path, capsys, rules)
    assert [w.partition("; did you mean ")[2] for w in warnings] == ["", "'invoices@example.com'?"]
    book = load(rules).book
    assert [near_address(a, book.addresses()) for a in ("nobody@example.com",
                                                        "invoice@example.com")] == [
        None, "invoices@example.com"]
    cfg = tmp_path / "config.yaml"
    assert main(["address", "-c", str(cfg), "nobody@example.com"]) == 1
    assert "did you mean" not in capsys.readouterr().out


def test_near_address_among_many_addresses_reads_few_of_them(monkeypatch: Any) -> None:
    """near_address compared the typo with every known address, each time: 6.5 s for one
    refused recipient of a rule test on a book of 100,000. It looks among those one deletion
    away, from an index made once for the book's addresses."""
    import difflib
    from mailrouter.addressbook import errs
    many = frozenset({f"user{i}@example.com" for i in range(errs.SCAN_ALL * 2)}
                     | {"support@example.com", "sales@example.com"})
    read: list[int] = []
    real = difflib.get_close_matches

    def counted(word: str, possibilities: Any, *args: Any, **kw: Any) -> list[str]:
        read.append(len(possibilities))
        return real(word, possibilities, *args, **kw)
    monkeypatch.setattr(difflib, "get_close_matches", counted)
    made = errs._near_of.cache_info().misses
    assert errs.near_address("suport@example.com", many) == "support@example.com"
    assert errs.near_address("sale@example.com", set(many)) == "sales@example.com"
    assert errs.near_address("zzzz@example.com", many) is None
    assert read and max(read) <= 2 and errs._near_of.cache_info().misses == made + 1


def test_controls_check_of_a_replies_typo_keeps_no_index_of_a_big_book() -> None:
    """Every worker of the daemon checks control.replies against the book at each reload
    (control.checks.check_control). A typo there among 100,000 addresses made each worker
    build near_address's index of one-deletion neighbours (430 MB) and keep it in its cache
    after the reload was refused (MemoryMax=2G: a few workers at once). The hint is the
    same; the memory a pass over the names takes, and none of it is kept."""
    import tracemalloc
    from types import SimpleNamespace
    from mailrouter.addressbook import errs
    from mailrouter.config import ControlConfig
    from mailrouter.control.checks import check_control
    many = frozenset({f"user{i}@example.com" for i in range(errs.SCAN_ALL * 5)}
                     | {"replies@example.com"})
    book = SimpleNamespace(people={}, knows=lambda a: a in many, addresses=lambda: many)
    errs._near_of.cache_clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        errors = check_control(ControlConfig(replies=("replis@example.com",)), book)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [e.hint for e in errors] == ["did you mean 'replies@example.com'?"]
    # the names sorted once (a list of 10,001: 80 KB) and their deletions one at a time;
    # the index of 10,000 addresses is some 20 MB
    assert peak - before < 2_000_000, peak - before
    assert kept - before < 100_000, kept - before
    assert errs._near_of.cache_info().currsize == 0


def test_the_daemons_did_you_mean_is_a_few_look_ups_among_few_names() -> None:
    """The daemon logs the warnings at each start and reload (daemon._log_warnings), with a
    budget of look-ups: `check`'s index of 100,000 addresses took 4.3 s of worker 0's CPU
    each time (bench_start.py's reloads 2.1x as long). Among few names it names the typo,
    up to its budget; among many it builds no index and names none."""
    from mailrouter.addressbook.errs import SCAN_ALL, Near as _Near
    few = ["sales@example.com", "support@example.com"]
    near = _Near(few, budget=1)
    assert near("sale@example.com") == ["sales@example.com"]
    assert near("suport@example.com") == []                 # the budget is spent
    many = sorted({f"user{i}@example.com" for i in range(SCAN_ALL * 2)} | set(few))
    budgeted = _Near(many, budget=50)
    assert budgeted.index is None and budgeted("sale@example.com") == []
    assert _Near(many)("sale@example.com") == ["sales@example.com"]       # check's way


def test_check_warns_about_copy_to_owner_without_control(tmp_path: Path) -> None:
    """The owner's copy is made by execution control only: with no `control:` in config.yaml
    a rule's `copy_to_owner: true` gave no copy, and check, the daemon and the log said nothing."""
    import subprocess
    import sys
    rules = routing_file("""\
rules:
  - {name: sales, when: {rcpt: sales@example.com},
     then: {mailbox: sales, owner: smirnov, copy_to_owner: true}}
  - {name: plain, when: {rcpt: support@example.com}, then: {mailbox: support, copy_to_owner: false}}
""", "r.yaml")
    cfg = tmp_path / "config.yaml"
    outs = []
    for extra in ("", "control: {}\n"):
        cfg.write_text(f"routing: ['{COMPANY}', '{rules}']\n" + extra, encoding="utf-8")
        outs.append(subprocess.run([sys.executable, "-m", "mailrouter.cli", "check", "-c", str(cfg)],
                                   capture_output=True, text=True, timeout=60, check=False))
    assert outs[0].returncode == 0, outs[0].stderr
    assert [line for line in outs[0].stdout.splitlines() if line.startswith("warning:")] == [
        f"warning: {rules}:2: rule 'sales': copy_to_owner: true does nothing: config.yaml has no "
        "'control:' section, and only execution control makes the owner's copy; add control: "
        "(README, Execution control) or remove copy_to_owner"]
    assert outs[1].returncode == 0, outs[1].stderr
    assert "warning" not in outs[1].stdout


def _check_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str], rules: object
                    ) -> list[str]:
    """`mailrouter check` (exit 0) of the example company's book and the rule file `rules`:
    its warning lines."""
    from mailrouter.cli import main
    from tests.support.rules import COMPANY
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{COMPANY}', '{rules}']\n", encoding="utf-8")
    assert main(["check", "-c", str(cfg)]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]


def test_check_warns_about_a_group_member_moved_without_delivery(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A group listing a moved address with `deliver: false` drops that member: no copy,
    no bounce (the group's other members take the mail), and `check` said nothing. It
    warns now, naming the group, the member and the new address; the daemon's book, built
    in another process and sent back (load_book, pickled), carries it too. A group member
    moved with delivery (it follows `now:`) is no warning."""
    import pickle

    from mailrouter.config import Limits
    from mailrouter.routing.files import load_book
    from mailrouter.routing.snapshot import load_snapshot
    rules = routing_file("""\
moved:
  gone@example.com: {now: sales@example.com, deliver: false}
  kept@example.com: {now: sales@example.com}
aliases:
  crew@example.com: [mailbox:support, Gone@example.com, kept@example.com]
""", "r.yaml")
    want = ("alias crew@example.com: its member gone@example.com is a moved address with "
            "deliver: false, which the group drops without a word (no copy goes to "
            "sales@example.com); list sales@example.com instead, or remove gone@example.com")
    assert [w for w in _check_warnings(tmp_path, capsys, rules) if "moved" in w] == [
        "warning: " + want]
    patterns = [str(COMPANY), str(rules)]
    built = load_book(patterns, Limits())
    assert built is not None
    given = pickle.loads(pickle.dumps(built))
    snap = load_snapshot(patterns, Limits(), "mx.test", built=given)
    assert snap.book is given[1] and want in snap.warnings(False, suggest=50)

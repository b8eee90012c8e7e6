"""Every condition field and operator, on real .eml files (rules/samples and small built ones)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from mailrouter.errors import ConfigErrors
from tests.support.rules import load, routing_file
from tests.test_rules import MONDAY_10_MSK, mail, route, ruleset

CAL = 'calendars:\n  msk: {timezone: Europe/Moscow, hours: "Mon-Fri 09:00-18:00", holidays: [2027-01-07]}\n'

MULTI = (b"From: =?utf-8?B?0JzQsNGA0LjRjw==?= <maria@shop.example>\r\n"
         b"To: Sales <sales@example.com>, =?koi8-r?B?79TExcwg0NLPxMHW?= <otdel@client.example>\r\n"
         b"Cc: Boss <boss@client.example>\r\n"
         b"Subject: Fwd: Re: Order 42\r\n"
         b"X-Priority: 1 (Highest)\r\n"
         b"MIME-Version: 1.0\r\n"
         b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n'
         b"--zz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see the order.\r\n"
         b"--zz\r\nContent-Type: application/vnd.ms-excel\r\n"
         b'Content-Disposition: attachment; filename="=?utf-8?B?0LfQsNC60LDQty54bHM=?="\r\n'
         b"Content-Transfer-Encoding: base64\r\n\r\nAAAAAAAAAAAAAAAA\r\n"
         b"--zz\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=logo.png\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--zz--\r\n")



def _from(addr: str, extra: str = "") -> bytes:
    return (f"{extra}From: {addr}\r\nTo: support@example.com\r\nSubject: Your order\r\n"
            "Message-ID: <o1@shop.example>\r\n\r\nThanks\r\n").encode()


# (condition, message, rcpt, mail_from, matches?)
TABLE = [
    # equals: whole normalised value; case and ё do not matter; lists are any-of
    ("{mail_from: BUH@Romashka.example}", "invoice-koi8r.eml", "sales@example.com", "buh@romashka.example", True),
    ("{mail_from: {equals: [a@b.c, buh@romashka.example]}}", "invoice-koi8r.eml", "sales@example.com", "buh@romashka.example", True),
    ("{subject: {equals: счет n 1234 за январь}}", "invoice-koi8r.eml", "sales@example.com", "", True),
    ("{subject: {equals: счет}}", "invoice-koi8r.eml", "sales@example.com", "", False),
    # contains: whole words, in order, on the decoded KOI8-R / cp1251 / ISO-8859-2 text
    ("{subject: {contains: СЧЕТ}}", "invoice-koi8r.eml", "sales@example.com", "", True),
    ("{subject: {contains: 'за январь'}}", "invoice-koi8r.eml", "sales@example.com", "", True),
    ("{subject: {contains: 'январь за'}}", "invoice-koi8r.eml", "sales@example.com", "", False),
    ("{subject: {contains: сче}}", "invoice-koi8r.eml", "sales@example.com", "", False),
    ("{subject: договору}", "invoice-cp1251.eml", "sales@example.com", "", True),
    ("{subject: {contains: [nothing, č]}}", "faktura-cz.eml", "sales@example.com", "", True),
    ("{subject: {contains: [срочно, urgent]}}", "key-customer.eml", "support@example.com", "", True),
    # starts_with / ends_with, subjects without reply prefixes
    ("{subject: {starts_with: product a}}", "product-a.eml", "sales@example.com", "", True),
    ("{subject: {starts_with: 're: product'}}", "product-a.eml", "sales@example.com", "", False),
    ("{from_addr: {ends_with: '@bigclient.example'}}", "key-customer.eml", "support@example.com", "", True),
    ("{from_addr: {ends_with: '@client.example'}}", "key-customer.eml", "support@example.com", "", False),
    # glob on the whole normalised value
    ("{attachment: {glob: '*счет*.pdf'}}", "invoice-cp1251.eml", "sales@example.com", "", True),
    ("{attachment: {glob: '*.PDF'}}", "invoice-cp1251.eml", "sales@example.com", "", True),
    ("{attachment: {glob: '*.doc'}}", "invoice-cp1251.eml", "sales@example.com", "", False),
    ("{subject: {glob: 'faktura ?. *'}}", "faktura-cz.eml", "sales@example.com", "", True),
    # regex on the decoded text, as written (not normalised)
    ("{subject: {regex: 'Счёт N \\d+'}}", "invoice-koi8r.eml", "sales@example.com", "", True),
    ("{subject: {regex: 'счёт'}}", "invoice-koi8r.eml", "sales@example.com", "", False),
    ("{subject: {regex: '(?i)счёт'}}", "invoice-koi8r.eml", "sales@example.com", "", True),
    ("{subject: {regex: '^Re: '}}", "product-a.eml", "sales@example.com", "", True),
    ("{body: {regex: 'оплат[уа]'}}", "invoice-koi8r.eml", "sales@example.com", "", True),
    # exists
    ("{header: {List-Id: {exists: true}}}", "newsletter.eml", "support@example.com", "", True),
    ("{header: {List-Id: {exists: false}}}", "newsletter.eml", "support@example.com", "", False),
    ("{header: {list-id: {exists: false}}}", "product-a.eml", "support@example.com", "", True),
    ("{attachment: {exists: true}}", "product-a.eml", "support@example.com", "", False),
    # any header, decoded
    ("{header: {X-Priority: {starts_with: '1'}}}", MULTI, "sales@example.com", "", True),
    ("{header: {Precedence: list}}", "newsletter.eml", "support@example.com", "", True),
    # From / To / Cc names and addresses, decoded
    ("{from_name: {equals: бухгалтерия ооо ромашка}}", "invoice-koi8r.eml", "sales@example.com", "", True),
    ("{from: мария}", MULTI, "sales@example.com", "", True),
    ("{to: {contains: отдел продаж}}", MULTI, "sales@example.com", "", True),
    ("{to: {equals: otdel@client.example}}", MULTI, "sales@example.com", "", True),
    ("{cc: {equals: boss@client.example}}", MULTI, "sales@example.com", "", True),
    ("{cc: {equals: otdel@client.example}}", MULTI, "sales@example.com", "", False),
    # body text: text/plain, and text extracted from text/html
    ("{body: {contains: вложении}}", "invoice-cp1251.eml", "sales@example.com", "", True),
    ("{body: {contains: release notes}}", "newsletter.eml", "support@example.com", "", True),
    ("{body: {contains: '<b>'}}", "newsletter.eml", "support@example.com", "", False),
    # attachments: names (RFC 2231, RFC 2047), count, size, type
    ("{attachment: заказ.xls}", MULTI, "sales@example.com", "", True),
    ("{attachment_count: 2}", MULTI, "sales@example.com", "", True),
    ("{attachment_count: {ge: 3}}", MULTI, "sales@example.com", "", False),
    ("{attachment_size: {gt: 10}}", MULTI, "sales@example.com", "", True),
    ("{attachment_size: {gt: 1k}}", MULTI, "sales@example.com", "", False),
    ("{attachment_type: {glob: 'image/*'}}", MULTI, "sales@example.com", "", True),
    ("{attachment_type: application/pdf}", "invoice-cp1251.eml", "sales@example.com", "", True),
    # message size
    ("{size: {lt: 10KB}}", "product-a.eml", "sales@example.com", "", True),
    ("{size: {gt: 1MB}}", "product-a.eml", "sales@example.com", "", False),
    # IEC units mean what the 1024-based ones do (10MiB was refused as not a size)
    ("{size: {lt: 10KiB}}", "product-a.eml", "sales@example.com", "", True),
    ("{size: {gt: 1 MiB}}", "product-a.eml", "sales@example.com", "", False),
    ("{size: {gt: 100, lt: 10k}}", "product-a.eml", "sales@example.com", "", True),
    ("{attachment_count: {le: 0}}", "product-a.eml", "sales@example.com", "", True),
    # envelope recipient: original, domain, resolved address and mailbox
    ("{rcpt: Sales@Example.com}", "product-a.eml", "sales@example.com", "", True),
    ("{rcpt: {ends_with: '@example.com'}}", "product-a.eml", "sales@example.com", "", True),
    ("{rcpt_domain: example.com}", "product-a.eml", "sales@example.com", "", True),
    # a moved address that delivers is routed as mail to its new address (issue 11)
    ("{rcpt_resolved: sales@example.com}", "product-a.eml", "old-sales@example.com", "", True),
    ("{rcpt: sales@example.com}", "product-a.eml", "old-sales@example.com", "", True),
    ("{rcpt: old-sales@example.com}", "product-a.eml", "old-sales@example.com", "", False),
    ("{rcpt_original: old-sales@example.com}", "product-a.eml", "old-sales@example.com", "", True),
    ("{rcpt_original: sales@example.com}", "product-a.eml", "sales@example.com", "", True),
    ("{resolved_mailbox: sales}", "product-a.eml", "old-sales@example.com", "", True),
    ("{resolved_mailbox: support}", "product-a.eml", "product-a@example.com", "", True),
    # robot
    ("{robot: true}", "newsletter.eml", "support@example.com", "", True),
    ("{robot: false}", "newsletter.eml", "support@example.com", "", False),
    ("{robot: false}", "product-a.eml", "support@example.com", "", True),
    # a no-reply From is a robot, as the autoresponder has it (routing/robots.py); a person
    # whose name only begins so is not, nor one mailing through a service's bounces+...@
    ("{robot: true}", _from("Shop <noreply@shop.example>"), "support@example.com", "", True),
    ("{robot: true}", _from("<No-Reply@Shop.example>"), "support@example.com", "", True),
    ("{robot: true}", _from("alerts <mailer-daemon@mx.example>"), "support@example.com", "", True),
    ("{robot: true}", _from("Shop <do-not-reply+orders@shop.example>"), "support@example.com", "", True),
    ("{robot: true}", _from("Ivan <ivan@client.example>"), "support@example.com",
     "bounces+ivan=client.example@esp.example", False),
    ("{robot: true}", _from("Fan <noreplyfan@shop.example>"), "support@example.com", "", False),
    # any / all / not, and several keys in one mapping (all)
    ("{any: [{subject: nothing}, {from_addr: cto@bigclient.example}]}", "key-customer.eml", "support@example.com", "", True),
    ("{all: [{subject: срочно}, {from_addr: nobody@x.example}]}", "key-customer.eml", "support@example.com", "", False),
    ("{subject: срочно, rcpt: support@example.com}", "key-customer.eml", "support@example.com", "", True),
    ("{subject: срочно, rcpt: sales@example.com}", "key-customer.eml", "support@example.com", "", False),
    ("{not: {robot: true}}", "newsletter.eml", "support@example.com", "", False),
    ("{not: {subject: invoice}}", "product-a.eml", "support@example.com", "", True),
    ("{subject: {contains: product, ends_with: question}}", "product-a.eml", "support@example.com", "", True),
]


@pytest.mark.parametrize("cond, eml, rcpt, mail_from, hit", TABLE,
                         ids=[f"{i}:{t[0][:40]}" for i, t in enumerate(TABLE)])
def test_operator(cond: str, eml: str | bytes, rcpt: str, mail_from: str, hit: bool) -> None:
    """One condition on one real message: it matches exactly when expected."""
    rs = ruleset(f"rules:\n  - name: r\n    when: {cond}\n    then: {{tags: [hit]}}\n")
    d = route(rs, eml, rcpt, mail_from or "x@outside.example")
    assert ("hit" in d.tags) is hit, d.reasons


@pytest.mark.parametrize("at, hit", [
    (datetime(2027, 1, 11, 6, 0, tzinfo=timezone.utc), True),      # Mon 09:00 MSK
    (datetime(2027, 1, 11, 5, 59, tzinfo=timezone.utc), False),    # Mon 08:59 MSK
    (datetime(2027, 1, 11, 15, 0, tzinfo=timezone.utc), False),    # Mon 18:00 MSK
    (datetime(2027, 1, 7, 8, 0, tzinfo=timezone.utc), False),      # Thu, holiday
    (datetime(2027, 1, 9, 8, 0, tzinfo=timezone.utc), False),      # Saturday
])
def test_business_hours_condition(at: datetime, hit: bool) -> None:
    """business_hours: CAL holds inside the calendar's working hours, in its time zone."""
    rs = ruleset(CAL + "rules:\n  - {name: r, when: {business_hours: msk}, then: {tags: [hit]}}\n")
    assert ("hit" in route(rs, "product-a.eml", "sales@example.com", at=at).tags) is hit


@pytest.mark.parametrize("cond, matched", [
    ("{subject: [счета, счет]}", "subject contains 'счет' (value: 'Счёт N 1234 за январь')"),
    ("{subject: {regex: 'N (\\d+)'}}", "subject regex 'N (\\\\d+)' (value: 'Счёт N 1234 за январь')"),
    ("{header: {Content-Type: {exists: true}}}", "header content-type exists (value: 'text/plain; charset=koi8-r')"),
    ("{all: [{size: {gt: 10}}, {not: {robot: true}}]}", "size gt 10 (value: 388) and not (robot: True)"),
])
def test_matched_explains_condition_and_value(cond: str, matched: str) -> None:
    """RuleMatch.matched names the condition and the decoded value it matched on."""
    rs = ruleset(f"rules:\n  - name: r\n    when: {cond}\n    then: {{tags: [hit]}}\n")
    assert route(rs, "invoice-koi8r.eml", "sales@example.com").rules[0].matched == matched


@pytest.mark.parametrize("needle, subject", [
    ("00123", "Order 00123"), ("0x1F", "code 0x1F"), ("1_000", "1_000 pcs"),
    ("10:30", "call at 10:30"), ("1.50", "price 1.50"), ("2027-01-11", "on 2027-01-11")])
def test_a_needle_yaml_reads_as_a_number_is_the_text_as_written(needle: str, subject: str) -> None:
    """`contains: 00123` is the text 00123: YAML 1.1 reads it as the number 83, and the rule
    matched 'Order 83' and not 'Order 00123', with no word from check."""
    for cond in (f"{{subject: {{contains: {needle}}}}}", f"{{subject: {needle}}}",
                 f"{{subject: {{equals: [{needle}]}}}}", f"{{header: {{X-Ref: {{glob: {needle}}}}}}}"):
        rs = ruleset(f"rules:\n  - name: r\n    when: {cond}\n    then: {{tags: [hit]}}\n")
        d = route(rs, mail(needle if "equals" in cond else subject, X_Ref=needle),
                  "sales@example.com")
        assert "hit" in d.tags, (cond, d.reasons)
        assert f"'{needle}'" in d.rules[0].matched
        assert "hit" not in route(rs, mail("83", X_Ref="83"), "sales@example.com").tags


def test_rule_name_tags_and_folder_yaml_reads_as_numbers_are_as_written() -> None:
    """A rule's name, tags and folder written as 00123 are '00123', not '83'."""
    rs = ruleset("rules:\n  - {name: 007, when: {subject: x}, then: {tags: [0x1F], folder: 00123}}\n")
    d = route(rs, mail("x"), "sales@example.com")
    assert (d.rules[0].name, d.tags, d.folder) == ("007", ("0x1F",), "00123")


def test_a_date_and_time_as_a_text_needle_is_refused_with_the_quotes_to_write() -> None:
    """YAML reads 2027-01-11 10:00:00 as a date and time, whose text it does not keep."""
    path = routing_file("rules:\n  - name: r\n    when: {subject: 2027-01-11 10:00:00}\n"
                        "    then: {tags: [x]}\n", "r.yaml")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    assert [str(e) for e in info.value.errors] == [
        f"{path}:3:12: rule 'r': 'contains' takes text, but YAML read this value as a date and "
        "time (2027-01-11T10:00:00); put the text in quotes as written: '2027-01-11T10:00:00'"]


def test_shorthand_string_is_contains_on_text_and_equals_on_addresses() -> None:
    """A bare string is `contains` on text fields and `equals` on address fields."""
    rs = ruleset("rules:\n  - {name: r, when: {from_addr: bigclient.example}, then: {tags: [hit]}}\n")
    assert "hit" not in route(rs, "key-customer.eml", "support@example.com").tags
    rs = ruleset("rules:\n  - {name: r, when: {from_name: cto}, then: {tags: [hit]}}\n")
    assert "hit" in route(rs, "key-customer.eml", "support@example.com").tags


def test_inline_built_message_with_ё() -> None:
    """ё and е match each other both ways."""
    rs = ruleset("rules:\n  - {name: r, when: {subject: счет}, then: {tags: [hit]}}\n")
    assert "hit" in route(rs, mail("Ваш СЧЁТ готов"), "sales@example.com", at=MONDAY_10_MSK).tags


# Regexes and globs run on RE2 (routing/patterns.py): the patterns Python's re also takes
# mean what they meant there, text as written, Unicode classes included.
DIALECT = [
    (r"^\w+ №\d+$", "Счёт №5"), (r"^\w+$", "Счёт"), (r"\d", "٣"), (r"\s", "a\u00a0b"),
    (r"\s", "a\x0bb"), (r"\S+\s\S+", "Счёт N"), (r"[\w-]+@", "ящик-1@x"), (r"x$", "x\n"),
    (r"x$", "x\ny"), (r"(?m)^y$", "x\ny\n"), (r"(?i)счёт", "СЧЁТ"), (r"счёт", "СЧЁТ"),
    (r"a\Z", "a\n"), (r"\u0451", "ё"), (r"a.b", "a\nb"), (r"(?s)a.b", "a\nb"),
    (r"\bINV-\d+\b", "see INV-42."), (r"[^\d\s]", "12 3"), (r"\W", "счёт"), (r"\D+$", "№"),
    (r"(?P<n>a+)b", "aab"), (r"a{2,3}", "aa"), ("(a+)+$", "a" * 40 + "!"),
]


@pytest.mark.parametrize("pattern, text", DIALECT, ids=[f"{i}:{p}" for i, (p, _) in enumerate(DIALECT)])
def test_regex_means_what_it_meant_under_python_re(pattern: str, text: str) -> None:
    """RE2 with our rewriting answers as Python's re does (Unicode \\w \\d \\s, $, \\Z...)."""
    import re

    from mailrouter.routing.patterns import compile_regex
    expected = re.search(pattern, text) is not None if "(a+)+" not in pattern else False
    assert compile_regex(pattern).search(text) is expected


# RE2's POSIX classes are ASCII-only there: `[[:alpha:]]+` matched no Cyrillic word, though
# rules/README.md lists them among the extras that work and \w beside them is Unicode.
POSIX = [
    ("^[[:alpha:]]+$", "Счёт", True), ("^[[:alpha:]]+$", "příloha", True), ("[[:alpha:]]", "5", False),
    ("^[[:alnum:]]+$", "Счёт5", True), ("[[:digit:]]", "٣", True), ("^[[:upper:]]", "Ж", True),
    ("^[[:upper:]]", "ж", False), ("^[[:lower:]]+$", "счёт", True), ("^[[:word:]]+$", "ящик_1", True),
    ("a[[:space:]]b", "a\u00a0b", True), ("[[:punct:]]", "«", True), ("[[:punct:]]", "ж", False),
    ("[[:^alpha:]]", "Ж", False), ("[[:^alpha:]]", "5", True), ("^[[:xdigit:]]+$", "ab12", True),
    ("^[[:xdigit:]]+$", "Ф", False), ("[^[:alpha:]]", "Счёт", False),
]


@pytest.mark.parametrize("pattern, text, hit", POSIX, ids=[f"{p}:{t}" for p, t, _ in POSIX])
def test_posix_classes_have_the_unicode_meaning_w_has(pattern: str, text: str, hit: bool) -> None:
    from mailrouter.routing.patterns import compile_regex
    assert compile_regex(pattern).search(text) is hit


def test_a_posix_class_rule_matches_a_cyrillic_subject() -> None:
    rs = ruleset("rules:\n  - {name: r, when: {subject: {regex: '^[[:alpha:]]+ №'}}, "
                 "then: {tags: [hit]}}\n")
    assert "hit" in route(rs, mail("Счёт №5"), "sales@example.com", at=MONDAY_10_MSK).tags


REFUSED = [
    ("[[:^alnum:]]", "RE2 cannot put [:^alnum:] inside [...] with its Unicode meaning at position 1"),
    ("(a)\\1", "RE2 has no backreferences at position 3"),
    ("(?P<x>a)(?P=x)", "RE2 has no backreferences at position 8"),
    ("foo(?=bar)", "RE2 has no lookahead or lookbehind at position 3"),
    ("(?<!re: )x", "RE2 has no lookahead or lookbehind at position 0"),
    ("(?>a+)b", "RE2 has no atomic groups at position 0"),
    ("a++b", "RE2 has no possessive quantifiers at position 1"),
    ("(a)?(?(1)b|c)", "RE2 has no conditionals at position 4"),
    ("(?x) a b", "RE2 knows only the flags i, m, s and U at position 0"),
    ("a{1001}", "RE2 repeats at most 1000 times, nested repeats multiplied at position 1"),
    ("[\\W\\d]", "RE2 cannot put \\W inside [...] at position 1"),
    ("\\bсчёт\\b", "RE2's \\b and \\B know only ASCII letters and digits"),
    ("(unclosed", "missing ) at position 0"),
    # RE2 names no offset; Python's re does (it said position 0: RE2 names the whole pattern)
    ("foo(bar", "missing ) at position 3"),
    ("foo)bar", "unexpected ) at position 3"),
    ("\\p{Greek}+ foo(", "missing ) at position 14"),     # not at the \p re does not know
    ("x{2,1}", "invalid repetition size at position 2"),     # not "RE2 repeats at most 1000"
]


@pytest.mark.parametrize("pattern, why", REFUSED, ids=[p for p, _ in REFUSED])
def test_regex_re2_cannot_take_is_refused_with_file_line_and_why(pattern: str, why: str) -> None:
    """A pattern RE2 cannot take (or not with its Python meaning) fails the load, with
    file:line:column, the position in the pattern and why."""
    from mailrouter.errors import ConfigErrors
    from tests.support.rules import load, routing_file
    path = routing_file(
        f"rules:\n  - name: r\n    when: {{subject: {{regex: '{pattern}'}}}}\n    then: {{tags: [x]}}\n")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    [err] = info.value.errors
    assert str(err).startswith(f"{path}:3:29: rule 'r': bad regex {pattern!r}: {why}"), str(err)
    assert "see rules/README.md" in str(err)


@pytest.mark.parametrize("pattern, instead", [
    ("(a)\\1", "write the repeated text out, or test each part in its own condition under 'all:'"),
    ("(?<!re: )order", "match the text around in the pattern itself, or put what must not be "
     "there in its own condition under 'not:'"),
    ("(?>a+)b", "write the group without '?>'"),
    ("a++b", "drop the second '+' (a++ is a+)"),
    ("(?#note)a", "delete the comment"),
])
def test_a_construct_re2_lacks_is_told_what_to_write_instead(pattern: str, instead: str) -> None:
    """A lookbehind, a backreference... was refused with "see rules/README.md", whose
    section lists what RE2 refuses but not what to write: the error now says it."""
    from mailrouter.errors import ConfigErrors
    from tests.support.rules import load, routing_file
    path = routing_file(
        f"rules:\n  - name: r\n    when: {{subject: {{regex: '{pattern}'}}}}\n    then: {{tags: [x]}}\n")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    [err] = info.value.errors
    assert f"; {instead}" in str(err), str(err)


GLOBS = ["*.pdf", "*счет*", "faktura ?. *", "[!a-c]x", "[]]", "[!]]", "[z-a]x", "[!z-a]x",
         "*a*b*", "[a-]", "[--0]", "a[", "[!]", "\\*", "[\\]", "a[b-d-f]", "*[.]*", "[^a]",
         "[[:alpha:]]", "ab\n*", "*"]
VALUES = ["report.pdf", "report.pdf.exe", "мой счет 5.xls", "faktura 1. leden", "dx", "ax",
          "]", "a", "-", "/", "a[", "", "\\", "*", "ae", "a-", "x.y", "^", ":", "ab\ncd", "b"]


@pytest.mark.parametrize("glob", GLOBS)
def test_glob_matches_as_fnmatch_does(glob: str) -> None:
    """The RE2 glob agrees with fnmatch.fnmatchcase on every value (on normalised text)."""
    import fnmatch

    from mailrouter.routing.patterns import compile_glob
    g = compile_glob(glob)
    assert [v for v in VALUES if g.match(v)] == [v for v in VALUES if fnmatch.fnmatchcase(v, glob)]


def test_a_long_matched_value_is_quoted_short() -> None:
    """A body rule that matches a 1 MB body quotes the start of it and its length, not the
    whole body: the explanation is logged, printed and stored with each decision (30 such
    rules over a 20 MB body once made the registry refuse the record: 'string too big')."""
    body = "строка тела письма 0123456789\r\n" * 35_000 + "хвост\r\n"
    rs = ruleset("rules:\n  - {name: r, when: {body: {regex: 'хвост'}}, then: {tags: [hit]}}\n")
    matched = route(rs, mail("Большое письмо", body=body), "sales@example.com").rules[0].matched
    assert matched.startswith("body regex 'хвост' (value: 'строка тела письма 0123456789")
    assert re.search(r"'… \(\d{6,} characters\)\)$", matched), matched[-80:]
    assert len(matched) < 300


@pytest.mark.parametrize("cond, error", [
    # a needle below zero: gt/ge held for every message, lt/le/equals for none
    ("{size: {gt: -5}}", "3:19: rule 'r': 'gt: -5' is below zero: size is never negative, "
     "so it holds for every message; remove the condition"),
    ("{attachment_size: {lt: -1k}}", "3:34: rule 'r': 'lt: -1k' is below zero: attachment_size "
     "is never negative, so it holds for no message; write e.g. lt: 1MB"),
    ("{size: -1}", "3:12: rule 'r': 'equals: -1' is below zero: size is never negative, so it "
     "holds for no message; write e.g. equals: 1MB"),
    ("{size: {lt: 0}}", "3:12: rule 'r': 'size: {lt: 0}' holds for no message: size is never "
     "below 0; remove the condition"),
    ("{attachment_count: {lt: 0}}", "3:12: rule 'r': 'attachment_count: {lt: 0}' holds for no "
     "message: attachment_count is never below 0; write equals: 0 for none at all"),
    # bounds the wrong way round, or meeting at no value
    ("{size: {gt: 10MB, lt: 1MB}}", "3:12: rule 'r': 'size: {gt: 10MB, lt: 1MB}' holds for no "
     "message: no size is all of these at once (every operator under one field must hold); "
     "swap the bounds if they are the wrong way round; for either one, write "
     "any: [{size: {lt: ...}}, {size: {gt: ...}}]"),
    ("{size: {gt: 10k, le: 10k}}", "3:12: rule 'r': 'size: {gt: 10k, le: 10k}' holds for no "
     "message: no size is all of these at once (every operator under one field must hold); "
     "swap the bounds if they are the wrong way round; for either one, write "
     "any: [{size: {lt: ...}}, {size: {gt: ...}}]"),
    ("{attachment_count: {equals: 1, ge: 2}}", "3:12: rule 'r': 'attachment_count: {equals: 1, "
     "ge: 2}' holds for no message: no attachment_count is all of these at once (every "
     "operator under one field must hold); swap the bounds if they are the wrong way round; "
     "for either one, write any: [{attachment_count: {lt: ...}}, {attachment_count: {gt: ...}}]"),
    # a unit that is none of ours, and a unit on a count
    ("{size: {gt: 10 MBs}}", "3:23: rule 'r': 'gt' needs a number or a size like 10MB, not "
     "'10 MBs'; units: k or KB, M or MB, G or GB (1024-based; KiB, MiB, GiB mean the same)"),
    ("{attachment_count: {gt: 1MB}}", "3:35: rule 'r': 'attachment_count' is a number of "
     "attachments, not a size: '1MB'; write a whole number, e.g. gt: 2 (a size is "
     "attachment_size)"),
    ("{attachment_count: {gt: 1.5}}", "3:31: rule 'r': 'gt' needs a whole number, not 1.5; "
     "write e.g. gt: 2"),
])
def test_a_number_no_size_or_count_can_meet_is_a_load_error(cond: str, error: str) -> None:
    """A size or count condition that holds for every message or for none (a negative
    needle, lt: 0, an empty range) was taken at load; it is refused at its file:line:column
    with the fix."""
    from mailrouter.errors import ConfigErrors
    from tests.support.rules import load, routing_file

    path = routing_file(f"rules:\n  - name: r\n    when: {cond}\n    then: {{tags: [hit]}}\n",
                        "r.yaml")
    with pytest.raises(ConfigErrors) as info:
        load(path)
    assert [str(e) for e in info.value.errors] == [f"{path}:{error}"]

"""`mailrouter test`: the rule tests in routing files, run through a decide function."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mailrouter import yamlsrc
from mailrouter.config import Limits
from mailrouter.routing.ruletests import check_rule_tests, run_rule_tests
from mailrouter.routing.snapshot import load_snapshot
from tests.support.rules import ROOT, load

RULES = """\
rules:
  - {name: product-a, when: {rcpt: product-a@example.com}, then: {tags: [a]}}
  - {name: inv, when: {subject: счет}, then: {mailbox: finance, folder: Finance, priority: high}}
"""


def run(tests_yaml: str, tmp_path: Path) -> list[str]:
    (tmp_path / "samples").mkdir(exist_ok=True)
    shutil.copy(ROOT / "rules" / "samples" / "invoice-koi8r.eml", tmp_path / "samples")
    path = tmp_path / "routing.yaml"
    path.write_text(RULES + tests_yaml, encoding="utf-8")
    snap = load(path)
    return run_rule_tests(snap.sections["tests"], snap.decide, tmp_path)


def test_passing_cases_give_no_lines(tmp_path: Path) -> None:
    """A .eml case (relative path) and an inline headers/body case both pass."""
    assert run("""\
tests:
  - name: koi8
    message: samples/invoice-koi8r.eml
    rcpt: invoices@example.com
    expect: {mailbox: finance, folder: Finance, priority: high, rule: inv}
  - name: inline
    headers: {Subject: "Вопрос по продукту", From: "Иван <i@x.example>"}
    body: "Здравствуйте"
    rcpt: [product-a@example.com, sales@example.com]
    expect: {mailbox: null}
""".replace("mailbox: null", "rule: null, tags: []").replace(
        "rcpt: [product-a@example.com, sales@example.com]", "rcpt: sales@example.com"),
        tmp_path) == []


def test_a_message_file_starting_with_white_space_is_read_as_the_daemon_stores_it(
        tmp_path: Path) -> None:
    """The daemon stores a message whose first line starts with white space after an empty
    line (intake.protocol): all body, no subject, so the rule on its subject never takes
    it. `mailrouter test` read the file's lines as headers, and the case expecting what
    the daemon does failed (rule 'inv' matched)."""
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "folded.eml").write_bytes(
        " , ceo@example.com\r\nSubject: счет 7\r\n\r\nx\r\n".encode())
    assert run("""\
tests:
  - name: folded
    message: samples/folded.eml
    rcpt: invoices@example.com
    expect: {rule: null}
""", tmp_path) == []


def test_failing_case_is_exactly_one_line_with_expected_and_actual(tmp_path: Path) -> None:
    """One wrong expectation produces one line: file:line, test name, expected vs actual."""
    lines = run("""\
tests:
  - name: wrong folder
    message: samples/invoice-koi8r.eml
    rcpt: invoices@example.com
    expect: {folder: Invoices, mailbox: finance}
""", tmp_path)
    path = tmp_path / 'routing.yaml'
    assert lines == [f"{path}:5: test wrong folder: folder expected 'Invoices', got 'Finance'; "
                     f"why: rule 'inv' ({path}:3) matched: subject contains 'счет' "
                     "(value: 'Счёт N 1234 за январь')"]


def test_a_failing_case_says_which_rule_decided_and_on_what(tmp_path: Path) -> None:
    """A rule of another file, earlier in name order, took the message: the line said
    "mailbox expected 'finance', got 'legal'" and nothing of which rule did it or why, so
    the ops person had to rerun the case through `explain`. Now it names the rules that
    matched, their file:line and what they matched on; or that no rule matched."""
    (tmp_path / "a-legal.yaml").write_text("""\
mailboxes: {legal: {maildir: legal}}
rules:
  - name: contracts
    when: {body: "претензи*"}
    then: {mailbox: legal, tags: [legal]}
    continue: true
""", encoding="utf-8")
    path = tmp_path / "routing.yaml"
    path.write_text(RULES + """\
tests:
  - name: invoice with a claim
    headers: {Subject: "Счет 5"}
    body: "Направляем претензию"
    rcpt: invoices@example.com
    expect: {mailbox: finance, tags: []}
  - name: no rule
    headers: {Subject: "Hello"}
    rcpt: invoices@example.com
    expect: {folder: Finance}
""", encoding="utf-8")
    legal, routing = tmp_path / "a-legal.yaml", path
    snap = load(legal, path)
    lines = run_rule_tests(snap.sections["tests"], snap.decide, tmp_path)
    assert lines == [
        f"{routing}:5: test invoice with a claim: mailbox expected 'finance', got 'legal'; "
        "tags expected [], got ['legal']; why: rule "
        f"'contracts' ({legal}:3) matched: body contains 'претензи*' (value: 'Направляем "
        f"претензию\\n'), then rule 'inv' ({routing}:3) matched: subject contains 'счет' "
        "(value: 'Счет 5')",
        f"{routing}:10: test no rule: folder expected 'Finance', got None; why: no rule "
        "matched, so the address book's default applies"]


def test_several_mismatches_and_recipients(tmp_path: Path) -> None:
    """Mismatches of one case join on one line per recipient."""
    lines = run("""\
tests:
  - name: two
    headers: {Subject: "hello"}
    rcpt: [product-a@example.com, sales@example.com]
    expect: {folder: PRODUCT-A, tags: [a]}
""", tmp_path)
    assert [ln.split(": ", 2)[2] for ln in lines] == [
        "rcpt sales@example.com: folder expected 'PRODUCT-A', got None; "
        "tags expected ['a'], got []; why: no rule matched, so the address book's default "
        "applies"]


def test_tags_null_expects_no_tags(tmp_path: Path) -> None:
    """`tags: null` reads as `folder: null` does: none. It expected the tag 'None', so a case
    saying "no tags" failed ("tags expected ['None'], got []") and one with a tag passed no
    better."""
    lines = run("""\
tests:
  - {name: none, headers: {Subject: hello}, rcpt: sales@example.com, expect: {tags: null}}
  - {name: one, headers: {Subject: hello}, rcpt: product-a@example.com, expect: {tags: null}}
""", tmp_path)
    assert [ln.split(": ", 2)[1:] for ln in lines] == [["test one", "tags expected [], got ['a']; "
                                                        f"why: rule 'product-a' ({tmp_path}/"
                                                        "routing.yaml:2) matched: rcpt equals "
                                                        "'product-a@example.com' (value: "
                                                        "'product-a@example.com')"]]


def test_expected_rule_tags_and_folder_read_as_numbers_are_as_written(tmp_path: Path) -> None:
    """A case's headers and its expected rule name, tags and folder written as 00123 are the
    text 00123, as the rules' are (YAML 1.1 reads 00123 as 83: the case sent 'Subject: 83'
    and expected the folder '83')."""
    (tmp_path / "more.yaml").write_text(
        "rules:\n  - {name: '007', when: {subject: '00123'}, then: {tags: ['0x1F'], folder: '00123'}}\n"
        "tests:\n  - {name: n, headers: {Subject: 00123}, rcpt: sales@example.com,\n"
        "     expect: {rule: 007, tags: [0x1F], folder: 00123}}\n", encoding="utf-8")
    snap = load(tmp_path / "more.yaml")
    assert run_rule_tests(snap.sections["tests"], snap.decide, tmp_path) == []


def test_a_day_without_a_time_is_refused(tmp_path: Path) -> None:
    """`at: 2027-01-11` (YAML's date, or the text) was taken as 00:00 UTC, so a case meant for
    Monday's working hours ran at 03:00 Moscow time and failed or passed for that reason."""
    for at in ("2027-01-11", "'2027-01-11'"):
        lines = run(f"""\
tests:
  - {{name: monday, headers: {{Subject: hello}}, rcpt: sales@example.com, at: {at},
     expect: {{rule: null}}}}
""", tmp_path)
        assert [ln.split(": ", 2)[2] for ln in lines] == [
            "'at: 2027-01-11' is a day without a time of day; write the time too, e.g. "
            "2027-01-11T10:00:00+03:00"]
    assert run("""\
tests:
  - {name: monday, headers: {Subject: hello}, rcpt: sales@example.com,
     at: 2027-01-11T10:00:00+03:00, expect: {rule: null}}
  - {name: naive, headers: {Subject: hello}, rcpt: sales@example.com, at: '2027-01-11 10:00',
     expect: {rule: null}}
""", tmp_path) == []


def test_broken_cases_are_failure_lines_not_crashes(tmp_path: Path) -> None:
    """A missing file, an unknown key and a bad time each give one line; the run goes on."""
    lines = run("""\
tests:
  - name: missing
    message: samples/nope.eml
    rcpt: sales@example.com
    expect: {folder: X}
  - name: typo
    headers: {Subject: x}
    rcpt: sales@example.com
    expcet: {folder: X}
  - name: time
    headers: {Subject: x}
    rcpt: sales@example.com
    at: yesterday
    expect: {folder: X}
  - name: bad expect
    headers: {Subject: x}
    rcpt: sales@example.com
    expect: {fodler: X}
""", tmp_path)
    assert [ln.split(": ", 2)[2] for ln in lines] == [
        f"cannot read message '{tmp_path / 'samples/nope.eml'}': No such file or directory; a "
        "message: path is relative to this routing file's folder",
        "unknown key 'expcet'; did you mean 'expect'?",
        "cannot read time 'yesterday'; write e.g. 2027-01-11T10:00:00+03:00",
        "unknown expect key 'fodler'; did you mean 'folder'?",
    ]


def test_cases_of_the_wrong_shape_say_what_is_wrong_and_where(tmp_path: Path) -> None:
    """`headers:` as a list crashed its case ("AttributeError: 'LocList' object has no
    attribute 'items'"), a mapping in `rcpt:` was decided as the address "{'a': 1}", an
    item that is not a mapping was named at '<dir>:0', and a case whose recipient the
    address book refuses said only "mailbox expected 'finance', got None"."""
    lines = run("""\
tests:
  - 5
  - name: headers
    headers: [Subject, x]
    rcpt: sales@example.com
    expect: {folder: X}
  - name: rcpt
    headers: {Subject: x}
    rcpt: [{a: 1}]
    expect: {folder: X}
  - name: refused
    headers: {Subject: счет}
    rcpt: nobody@example.com
    expect: {mailbox: finance}
""", tmp_path)
    path = tmp_path / "routing.yaml"
    assert lines == [
        f"{path}:5: test #1: a test must be a mapping with message/headers, rcpt and expect",
        f"{path}:7: test headers: 'headers' must be a mapping of header names to values; "
        "write e.g. headers: {From: a@b.example, Subject: Invoice}",
        f"{path}:12: test rcpt: 'rcpt' must be an address or a list of addresses, not [{{'a': 1}}]",
        f"{path}:14: test refused: mailbox expected 'finance', got None; the recipient was "
        "answered 550 5.1.1 Recipient address rejected: no such address here (action reject)",
    ]


def test_check_names_malformed_cases_and_rules_filed_under_tests(tmp_path: Path) -> None:
    """`check` (without running anything) names each case that cannot run, with its line:
    the line of what is wrong (`message:`, `at:`; it was the case's `- name:` line, three
    lines above); a rule pasted under `tests:` is called what it is."""
    path = tmp_path / "routing.yaml"
    path.write_text(RULES + """tests:
  - name: fine
    headers: {Subject: x}
    rcpt: sales@example.com
    expect: {folder: X}
  - name: pasted rule
    when: {rcpt: sales@example.com}
    then: {folder: X}
  - name: no rcpt
    headers: {Subject: x}
    expect: {folder: X}
  - name: sample kept
    message: samples/kept.eml
    rcpt: sales@example.com
    expect: {folder: X}
  - name: sample gone
    message: samples/gone.eml
    rcpt: sales@example.com
    expect: {folder: X}
  - name: no such time
    headers: {Subject: x}
    rcpt: sales@example.com
    at: next monday
    expect: {folder: X}
""", encoding="utf-8")
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "kept.eml").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    lines = check_rule_tests(yamlsrc.load(path)["tests"], tmp_path)
    assert lines == [
        f"{path}:9: test pasted rule: unknown key 'when': this looks like a rule; rules go "
        "under 'rules:', this entry is under 'tests:'",
        f"{path}:12: test no rcpt: needs 'rcpt:'; write the envelope recipient, e.g. rcpt: "
        "sales@example.com (or a list)",
        f"{path}:20: test sample gone: cannot read message "
        f"{str(tmp_path / 'samples' / 'gone.eml')!r}: No such file or directory; a message: "
        "path is relative to this routing file's folder",
        f"{path}:26: test no such time: cannot read time 'next monday'; "
        "write e.g. 2027-01-11T10:00:00+03:00",
    ]


_HOURS = """\
calendars:
  msk: {timezone: Europe/Moscow}
rules:
  - {name: office, when: {rcpt: sales@example.com, business_hours: msk}, then: {folder: Office}}
tests:
  - {name: written at 11:00, headers: {Subject: x}, rcpt: sales@example.com, expect: {rule: office}}
  - {name: written at night, headers: {Subject: x}, rcpt: sales@example.com, expect: {rule: null}}
  - {name: no clock, headers: {Subject: x}, rcpt: support@example.com, expect: {rule: null}}
  - {name: pinned, headers: {Subject: x}, rcpt: sales@example.com, at: 2027-01-16T12:00:00+03:00,
     expect: {rule: null}}
"""
SUNDAY_NIGHT = datetime(2027, 1, 17, 0, 30, tzinfo=timezone.utc)    # 03:30 in Moscow


def _at_sunday_night(path: Path) -> tuple[Any, Any]:
    """(the tests, the snapshot's decide with "now" at SUNDAY_NIGHT): the present time fixed."""
    snap = load(path)

    def decide(view: Any, sender: str, rcpts: list[str], at: datetime | None) -> Any:
        return snap.decide(view, sender, rcpts, at or SUNDAY_NIGHT)
    return snap.sections["tests"], decide


def test_a_case_that_fails_for_the_time_it_runs_at_says_so(tmp_path: Path) -> None:
    """A case without `at:` is decided now: written at 11:00 for a business-hours rule, it
    failed at night with "rule expected 'office', got None" and no word of why."""
    path = tmp_path / "routing.yaml"
    path.write_text(_HOURS, encoding="utf-8")
    tests, decide = _at_sunday_night(path)
    assert run_rule_tests(tests, decide, tmp_path) == [
        f"{path}:6: test written at 11:00: rule expected 'office', got None; why: no rule "
        "matched, so the address book's default applies; with at: "
        "2027-01-11T06:00:00+00:00 it passes: a rule reads the time, and a case without 'at:' "
        "is decided at the present one; give the case an at:"]


def test_check_warns_about_a_case_that_passes_only_at_the_time_it_runs(tmp_path: Path) -> None:
    """A case without `at:` that passes when written and fails in the morning's CI run."""
    path = tmp_path / "routing.yaml"
    path.write_text(_HOURS, encoding="utf-8")
    tests, decide = _at_sunday_night(path)
    assert check_rule_tests(tests, tmp_path, None, decide) == [
        f"{path}:7: test written at night: passes now but fails with at: "
        "2027-01-11T06:00:00+00:00: a rule reads the time, and a case without 'at:' is decided "
        "at the present one (a test run at night or at the weekend fails); give the case the "
        "at: it was written for"]


def test_example_rules_pass_through_the_daemons_decide() -> None:
    """rules/*.yaml: every shipped case passes through Snapshot.decide, as `mailrouter test` runs it."""
    snap = load_snapshot([str(ROOT / "rules" / "*.yaml")], Limits(), "mx.example.com")
    assert len(snap.sections["tests"]) >= 10
    assert run_rule_tests(snap.sections["tests"], snap.decide, ROOT / "rules") == []


def test_example_rules_catch_a_broken_rule(tmp_path: Path) -> None:
    """Changing a rule makes its example test fail with one precise line."""
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    p = tmp_path / "rules" / "routing.yaml"
    p.write_text(p.read_text(encoding="utf-8").replace(
        "then: {mailbox: sales, folder: Inbound, tags: [sales]}",
        "then: {mailbox: sales, folder: Leads, tags: [sales]}"), encoding="utf-8")
    snap = load_snapshot([str(tmp_path / "rules" / "*.yaml")], Limits(), "mx.example.com")
    lines = run_rule_tests(snap.sections["tests"], snap.decide, tmp_path / "rules")
    assert len(lines) == 1 and lines[0].split(": ", 1)[1].startswith(
        "test sales@ channel: folder expected 'Inbound', got 'Leads'; why: rule 'sales' ("), lines


def test_explain_and_a_rule_test_decide_alike_without_a_sender(tmp_path: Path) -> None:
    """Without --from / mail_from:, explain and a rule test both take the From address as the
    envelope sender: a rule on mail_from (key-customer) decides the same in both."""
    from mailrouter.explain import explain
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    raw = (ROOT / "rules" / "samples" / "key-customer.eml").read_bytes()
    snap = load(*sorted((tmp_path / "rules").glob("*.yaml")), book=None)
    report = explain(snap, raw, ["support@example.com"], None)
    got = report["recipients"][0]
    assert (report["envelope"]["from"], got["owner"], got["rules"][0]["name"]) == (
        "cto@bigclient.example", "smirnov", "key-customer")
    path = tmp_path / "rules" / "zz-same.yaml"
    path.write_text(f"""\
tests:
  - name: same as explain
    message: samples/key-customer.eml
    rcpt: support@example.com
    expect: {{mailbox: {got['mailbox']}, folder: {got['folder']}, owner: {got['owner']},
             priority: {got['priority']}, tags: [{', '.join(got['tags'])}], rule: key-customer}}
""", encoding="utf-8")
    snap = load(*sorted((tmp_path / "rules").glob("*.yaml")), book=None)
    case = [c for c in snap.sections["tests"] if c["name"] == "same as explain"]
    assert run_rule_tests(case, snap.decide, tmp_path / "rules") == []


def test_a_case_whose_message_parts_would_be_dropped_or_garbled_is_refused(tmp_path: Path) -> None:
    """`message:` and `headers:` in one case: the sample was read and the headers dropped
    without a word (a case meant to try the sample with another Subject tested the sample's
    own); `Subject: [a, b]` was the subject "['a', 'b']", `body: [a, b]` the body
    "['a', 'b']", `Cc:` with no value the header "None". Each is named at its line, with
    the fix, by `check` and `test` alike."""
    (tmp_path / "samples").mkdir()
    shutil.copy(ROOT / "rules" / "samples" / "invoice-koi8r.eml", tmp_path / "samples")
    path = tmp_path / "routing.yaml"
    path.write_text(RULES + """tests:
  - name: both
    message: samples/invoice-koi8r.eml
    headers: {Subject: hello}
    rcpt: invoices@example.com
    expect: {rule: null}
  - name: list subject
    headers:
      From: a@b.example
      Subject: [a, b]
    rcpt: sales@example.com
    expect: {rule: null}
  - name: list body
    headers: {Subject: x}
    body: [a, b]
    rcpt: sales@example.com
    expect: {rule: null}
  - name: empty cc
    headers: {Subject: x, Cc: }
    rcpt: sales@example.com
    expect: {rule: null}
""", encoding="utf-8")
    want = [
        f"{path}:7: test both: gives both 'message:' and 'headers:', and a case is built from "
        "one of them; keep 'message: FILE.eml', or 'headers:'/'body:' for a message written "
        "here (a copy of the .eml for a changed one)",
        f"{path}:13: test list subject: header 'Subject' must be text, not ['a', 'b']; write "
        "e.g. Subject: 'the text' (quote it if it holds ': ', or starts with [ or {; "
        "Subject: '' for an empty one)",
        f"{path}:18: test list body: 'body' must be text, not ['a', 'b']; write e.g. body: "
        "'the text' (or body: | and the lines below it)",
        f"{path}:22: test empty cc: header 'Cc' must be text, not nothing; write e.g. Cc: "
        "'the text' (quote it if it holds ': ', or starts with [ or {; Cc: '' for an empty "
        "one)"]
    assert check_rule_tests(yamlsrc.load(path)["tests"], tmp_path) == want
    snap = load(path)
    assert run_rule_tests(snap.sections["tests"], snap.decide, tmp_path) == want


def test_a_wrong_key_of_a_case_is_named_at_its_own_line(tmp_path: Path) -> None:
    """`expct:` and `ownr:` were named at the case's `- name:` line, several lines above the
    typo (a rule's unknown key is named at its own line and column)."""
    path = tmp_path / "routing.yaml"
    path.write_text(RULES + """tests:
  - name: typo
    headers: {Subject: x}
    rcpt: sales@example.com
    expct: {folder: X}
  - name: typo in expect
    headers: {Subject: x}
    rcpt: sales@example.com
    expect:
      folder: X
      ownr: x
""", encoding="utf-8")
    want = [f"{path}:8: test typo: unknown key 'expct'; did you mean 'expect'?",
            f"{path}:14: test typo in expect: unknown expect key 'ownr'; did you mean 'owner'?"]
    assert check_rule_tests(yamlsrc.load(path)["tests"], tmp_path) == want
    snap = load(path)
    assert run_rule_tests(snap.sections["tests"], snap.decide, tmp_path) == want


def test_two_tests_of_one_name_are_a_warning(tmp_path: Path) -> None:
    """Two rule tests under one name: a failure names the case, so which of the two failed
    could not be told; check says so, naming where the first is."""
    path = tmp_path / "routing.yaml"
    path.write_text(RULES + """\
tests:
  - name: invoice
    headers: {Subject: счет}
    rcpt: sales@example.com
    expect: {rule: inv}
  - name: invoice
    headers: {Subject: счет 2}
    rcpt: sales@example.com
    expect: {rule: inv}
  - name: other
    headers: {Subject: x}
    rcpt: sales@example.com
    expect: {rule: null}
""", encoding="utf-8")
    assert check_rule_tests(yamlsrc.load(path)["tests"], tmp_path) == [
        f"{path}:9: test invoice: the name is also the test's at {path}:5; give each test "
        "a name of its own"]


def test_a_case_whose_message_is_a_fifo_is_a_failure_line_not_a_hang(tmp_path: Path) -> None:
    """`message:` naming a FIFO (or /dev/stdin, /dev/zero) was read to its end: `mailrouter
    test` and `check` waited for ever. It is one failure line, and the run goes on."""
    import os
    import threading
    fifo = tmp_path / "samples" / "pipe.eml"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    out: list[list[str]] = []
    t = threading.Thread(target=lambda: out.append(run("""\
tests:
  - name: pipe
    message: samples/pipe.eml
    rcpt: sales@example.com
    expect: {folder: X}
""", tmp_path)), daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():            # let the reader go: open the other end and close it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert out, "the run waited on the FIFO"
    assert [ln.split(": ", 2)[2] for ln in out[0]] == [
        f"message '{fifo}' is not a regular file; give a saved .eml file"]


def test_check_warns_about_a_case_whose_rcpt_the_book_refuses(tmp_path: Path) -> None:
    """`rcpt: sale@example.com` in a case: refused at RCPT, so no rule decides for it and
    `test` failed it with "mailbox expected 'sales', got None" while `check` said ok. check
    warns at the rcpt's line, with the reply and the address meant; a case that expects the
    refusal (action:) and a moved address refused on purpose are left alone."""
    from mailrouter.routing.ruletests import Names
    path = tmp_path / "routing.yaml"
    path.write_text(RULES + """\
tests:
  - name: typo
    headers: {Subject: x}
    rcpt: sale@example.com
    expect: {mailbox: sales}
  - name: one of two
    headers: {Subject: x}
    rcpt:
      - sales@example.com
      - invoice+q@example.com
    expect: {rule: null}
  - name: refusal on purpose
    headers: {Subject: x}
    rcpt: nobody@example.com
    expect: {action: reject}
  - name: fine
    headers: {Subject: x}
    rcpt: sales@example.com
    expect: {mailbox: sales}
""", encoding="utf-8")
    snap = load(path)
    names = Names.of(snap.book, snap.rules.rules)
    reply = "550 5.1.1 Recipient address rejected: no such address here"
    tail = ("no rule decides for it, so the test can only fail (expect action: reject if the "
            "refusal is what it tests)")
    assert check_rule_tests(snap.sections["tests"], tmp_path, names) == [
        f"{path}:7: test typo: rcpt 'sale@example.com' is refused at RCPT ({reply}; did you "
        f"mean 'sales@example.com'?): {tail}",
        f"{path}:13: test one of two: rcpt 'invoice+q@example.com' is refused at RCPT "
        f"({reply}; did you mean 'invoices+q@example.com'?): {tail}"]

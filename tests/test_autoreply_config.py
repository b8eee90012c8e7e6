"""Responders in the routing files: parsing, `check` errors with file:line, the moved
address routed as its new address, and `autoreply:` as a rule action."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailrouter.cli import main
from mailrouter.config import Limits
from mailrouter.errors import ConfigErrors
from mailrouter.message import MessageView
from mailrouter.routing.snapshot import Snapshot, load_snapshot

BOOK = """\
domains: [example.com]
mailboxes: {sales: {maildir: sales}, support: {maildir: support}}
aliases:
  sales@example.com: mailbox:sales
  support@example.com: mailbox:support
moved:
  old-sales@example.com: {now: sales@example.com, deliver: true, autoreply: moved}
calendars:
  msk: {timezone: Europe/Moscow, hours: "Mon-Fri 09:00-18:00"}
"""
RESPONDERS = """\
autoreplies:
  moved:
    body:
      en: "{old} is no longer used; write to {new}. Re: {subject}"
      ru: "Адрес {old} больше не используется, пишите на {new}."
  closed:
    from: info@example.com
    subject: "We are closed: {subject}"
    period: 2d
    language: ru
    body: {ru: "Мы не работаем.", en: "We are closed."}
"""
RULES = """\
rules:
  - name: sales
    when: {rcpt: sales@example.com}
    then: {folder: Inbound, tags: [sales]}
  - name: old-sales-seen
    when: {rcpt_original: old-sales@example.com}
    then: {tags: [via-old]}
  - name: after-hours
    when: {rcpt: support@example.com, not: {business_hours: msk}}
    then: {autoreply: closed}
"""
MSG = b"From: a@client.example\r\nSubject: hello\r\n\r\nbody\r\n"
MONDAY_NOON = datetime(2027, 1, 11, 9, 0, tzinfo=UTC)      # 12:00 in Moscow
SUNDAY = datetime(2027, 1, 10, 9, 0, tzinfo=UTC)


def snap_of(tmp_path: Path, *docs: str) -> Snapshot:
    for n, doc in enumerate(docs):
        (tmp_path / f"r{n}.yaml").write_text(doc, encoding="utf-8")
    return load_snapshot([str(tmp_path / "*.yaml")], Limits(), "mx.test")


def errors_of(tmp_path: Path, *docs: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        snap_of(tmp_path, *docs)
    return [str(e) for e in info.value.errors]


def test_responders_parsed_with_defaults(tmp_path: Path) -> None:
    """A responder gets `Auto: {subject}`, 7 days, its first body's language by default."""
    snap = snap_of(tmp_path, BOOK + RESPONDERS + "rules: []\n")     # no rules, on purpose
    moved, closed = snap.responders["moved"], snap.responders["closed"]
    assert (moved.sender, moved.subject, moved.period, moved.language) == (
        None, "Auto: {subject}", timedelta(days=7), "en")
    assert moved.languages == ("en", "ru")
    assert (closed.sender, closed.period, closed.language) == (
        "info@example.com", timedelta(days=2), "ru")
    assert closed.body("de") == "Мы не работаем."      # unknown language: the default


def test_subject_per_language(tmp_path: Path) -> None:
    """`subject:` may be given per language, as `body:` is: a Russian answer gets a Russian
    subject; a language without its own gets the default language's; errors name the language."""
    doc = BOOK + textwrap.dedent("""\
        autoreplies:
          moved:
            subject: {en: "Auto: {subject}", ru: "Автоответ: {subject}"}
            body: {en: "Write to {new}.", ru: "Пишите на {new}.", de: "Schreiben Sie an {new}."}
        rules: []
        """)
    moved = snap_of(tmp_path, doc).responders["moved"]
    assert [moved.subject_for(lang) for lang in ("ru", "en", "de")] == [
        "Автоответ: {subject}", "Auto: {subject}", "Auto: {subject}"]
    bad = doc.replace('ru: "Автоответ: {subject}"', 'ru: "Ответ: {subjekt}"')
    errs = errors_of(tmp_path, bad)
    assert len(errs) == 1 and "autoreply 'moved' subject ru: unknown placeholder {subjekt}" in errs[0]


def test_unknown_placeholder_is_an_error_with_line(tmp_path: Path) -> None:
    """`check` names file:line for an unknown placeholder and suggests the close one."""
    bad = BOOK + textwrap.dedent("""\
        autoreplies:
          moved:
            subject: "Auto: {subjct}"
            body: {en: "write to {new_address}"}
        """)
    errs = errors_of(tmp_path, bad)
    f = tmp_path / "r0.yaml"
    assert errs == [
        (f"{f}:12:14: autoreply 'moved' subject: unknown placeholder {{subjct}}; "
        "did you mean 'subject'?"),
        (f"{f}:13:16: autoreply 'moved' body en: unknown placeholder {{new_address}}; "
        "known placeholders: old, new, subject, sender")]


@pytest.mark.parametrize("spec, message", [
    ("{period: 12h, body: {en: x}}", "period '12h' is under one day; RFC 5230"),
    # a week meant: said how the bare number was read, and what to write
    ("{period: 7, body: {en: x}}", "period 7 is under one day (a number alone is hours: 7h); "
     "write period: 7d for 7 days; RFC 5230 asks"),
    ("{period: soon, body: {en: x}}", "period 'soon' is not a duration"),
    # the outbox looks back one period: past datetime's range every answer failed
    ("{period: 999999999d, body: {en: x}}", "period '999999999d' is more than a year"),
    ("{body: {en: '{old!r}'}}", "placeholder {old} takes no format or conversion"),
    ("{body: {en: 'a { b'}}", "write a literal brace as {{ or }}"),
    ("{body: {}}", "needs body:"),
    ("{from: 'not an address', body: {en: x}}", "from must be 'old' or an address"),
    ("{language: de, body: {en: x}}", "default language 'de' has no body"),
    ("{bodyy: {en: x}}", "unknown key 'bodyy'"),
])
def test_bad_responder(tmp_path: Path, spec: str, message: str) -> None:
    """Each broken responder is refused with a message naming the problem and its line."""
    errs = errors_of(tmp_path, BOOK + f"autoreplies:\n  moved: {spec}\n")
    assert any(message in e and f"{tmp_path / 'r0.yaml'}:" in e for e in errs), errs


def test_unknown_responder_names(tmp_path: Path) -> None:
    """A moved address or a rule naming no responder is an error at its line."""
    doc = BOOK.replace("autoreply: moved", "autoreply: mooved") + textwrap.dedent("""\
        autoreplies:
          moved: {body: {en: x}}
        rules:
          - name: r
            then: {autoreply: nope}
        """)
    f = tmp_path / "r0.yaml"
    assert errors_of(tmp_path, doc) == [
        (f"{f}:7:77: moved address old-sales@example.com: unknown autoreply 'mooved'; "
        "did you mean 'moved'? (define it under 'autoreplies:')"),
        f"{f}:14:23: rule 'r': unknown autoreply 'nope'; known keys: moved "
        "(define it under 'autoreplies:')".replace("known keys", "known autoreplies")]


def test_check_command_reports_responder_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mailrouter check` exits 1 and prints the placeholder error with file:line."""
    (tmp_path / "r.yaml").write_text(BOOK + "autoreplies:\n  moved: {body: {en: '{nope}'}}\n",
                                     encoding="utf-8")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{tmp_path / 'r.yaml'}']\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["check", "-c", str(cfg)])
    assert info.value.code == 1
    assert f"{tmp_path / 'r.yaml'}:11:" in capsys.readouterr().err


def test_moved_address_follows_rules_of_new_address(tmp_path: Path) -> None:
    """Mail to old-sales@ is routed as mail to sales@ (the `sales` rule puts it in Inbound),
    rules still see the original recipient, and the decision keeps it and names the move."""
    snap = snap_of(tmp_path, BOOK + RESPONDERS + RULES.replace(
        "then: {folder: Inbound, tags: [sales]}", "then: {folder: Inbound, tags: [sales]}\n"
        "    continue: true"))
    [d] = snap.decide(MessageView(MSG), "a@client.example", ["old-sales@example.com"], MONDAY_NOON)
    assert d.rcpt == "old-sales@example.com"
    assert (d.folder, d.tags, d.autoreply) == ("Inbound", ("sales", "via-old"), "moved")
    assert [r.name for r in d.rules] == ["sales", "old-sales-seen"]
    assert any("moved: old-sales@example.com -> sales@example.com" in r for r in d.reasons)
    [direct] = snap.decide(MessageView(MSG), "a@client.example", ["sales@example.com"], MONDAY_NOON)
    assert direct.tags == ("sales",) and direct.autoreply is None


def test_rule_action_autoreply_with_calendar(tmp_path: Path) -> None:
    """`then: {autoreply: closed}` outside business hours names the responder; inside, none."""
    snap = snap_of(tmp_path, BOOK + RESPONDERS + RULES)
    [sunday] = snap.decide(MessageView(MSG), "a@client.example", ["support@example.com"], SUNDAY)
    [monday] = snap.decide(MessageView(MSG), "a@client.example", ["support@example.com"],
                           MONDAY_NOON)
    assert (sunday.autoreply, monday.autoreply) == ("closed", None)


def test_example_rules_define_the_moved_responder() -> None:
    """The example company's `moved` responder exists and answers in Russian and English."""
    rules = Path(__file__).resolve().parent.parent / "rules"
    snap = load_snapshot([str(rules / "*.yaml")], Limits(), "mx.test")
    assert set(snap.responders["moved"].languages) >= {"ru", "en"}

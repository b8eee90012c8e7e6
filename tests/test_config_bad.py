"""Each broken address book in tests/config/bad/addr-*.yaml is refused with exactly
the messages its trailing `# expect:` lines give ({file} stands for its path); so is
each config.yaml in tests/config/bad/control-*.yaml and config-*.yaml by `mailrouter check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrouter.addresses import AddressBook
from mailrouter.config import Limits
from mailrouter import yamlsrc
from mailrouter.errors import ConfigErrors
from mailrouter.routing import snapshot
from mailrouter.routing.snapshot import load_snapshot

BAD = Path(__file__).parent / "config" / "bad"
CASES = sorted(BAD.glob("addr-*.yaml"))
CONTROL_CASES = sorted(BAD.glob("control-*.yaml")) + sorted(BAD.glob("config-*.yaml"))


def expected(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.removeprefix("# expect: ").replace("{file}", str(path))
            for line in lines if line.startswith("# expect: ")]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_address_book(path: Path) -> None:
    """The load is refused, and every problem in the file is reported with file:line."""
    want = expected(path)
    assert want, f"{path.name} has no # expect: lines"
    with pytest.raises(ConfigErrors) as info:
        AddressBook.load(path)
    assert [str(e) for e in info.value.errors] == want


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_address_book_through_the_snapshot(path: Path) -> None:
    """What `check` and a reload do: the book's sections are first loaded without positions;
    the errors are still reported with file:line:column, the same as the book alone gives."""
    with pytest.raises(ConfigErrors) as info:
        load_snapshot((str(path),), Limits(), "mx.test")
    assert [str(e) for e in info.value.errors] == expected(path)


def test_errors_after_the_book_are_found_in_one_load(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule's error once the book is built: reported from the load without positions in
    the book (it reads none of the book's sections), the rules compiled once."""
    from mailrouter.routing import rules as rules_module

    routing = tmp_path / "r.yaml"
    routing.write_text("domains: [example.com]\nmailboxes: {s: {maildir: s}}\n"
                       "aliases:\n  a@example.com: mailbox:s\n"
                       "rules:\n  - {name: x, when: {subject: a}, then: {mailbox: nosuch}}\n",
                       encoding="utf-8")
    built = []
    real = rules_module.RuleSet.build.__func__     # type: ignore[attr-defined]
    monkeypatch.setattr(rules_module.RuleSet, "build",
                        classmethod(lambda cls, *a, **k: built.append(1) or real(cls, *a, **k)))
    with pytest.raises(ConfigErrors) as info:
        load_snapshot((str(routing),), Limits(), "mx.test")
    assert [str(e) for e in info.value.errors] == [
        f"{routing}:6:51: rule 'x': unknown mailbox 'nosuch'; known mailboxes: s "
        "(define it under 'mailboxes:')"]
    assert built == [1]
    with pytest.raises(ConfigErrors) as positions:   # the load with positions everywhere
        snapshot._load_snapshot((str(routing),), Limits(), "mx.test", ())
    assert [str(e) for e in positions.value.errors] == [str(e) for e in info.value.errors]


def test_a_book_that_will_be_loaded_again_stops_at_its_first_error() -> None:
    """`fail_fast` (the load without positions): the first error, at once."""
    path = BAD / "addr-keys.yaml"
    with pytest.raises(ConfigErrors) as info:
        AddressBook.build(yamlsrc.load(path), fail_fast=True)
    assert len(info.value.errors) == 1 and len(expected(path)) > 1


def test_defined_twice_across_files(tmp_path: Path) -> None:
    """The same address in two routing files is refused, naming both places."""
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("domains: [example.com]\nmailboxes: {s: {maildir: s}}\n"
                 "aliases:\n  sales@example.com: mailbox:s\n", encoding="utf-8")
    b.write_text("aliases:\n  Sales@example.com: mailbox:s\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        AddressBook.load(a, b)
    assert [str(e) for e in info.value.errors] == [
        f"{b}:2:3: address sales@example.com is defined twice (an alias; first at {a}:4); "
        "keep one definition"]


def test_example_company_loads() -> None:
    """rules/company.yaml, the example company's book, loads and knows its addresses."""
    book = AddressBook.load(Path(__file__).parent.parent / "rules" / "company.yaml")
    for rcpt in ("sales@example.com", "support@example.com", "invoices@example.com",
                 "product-a@example.com", "postmaster@example.com", "abuse@example.com"):
        assert book.resolve(rcpt).targets, rcpt


@pytest.mark.parametrize("path", CONTROL_CASES, ids=[p.stem for p in CONTROL_CASES])
def test_bad_control_names(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mailrouter check` refuses a control: section naming a head or a replies address the
    address book lacks, exit 1, every problem with config.yaml's file:line:column."""
    from mailrouter.cli import main
    want = expected(path)
    assert want, f"{path.name} has no # expect: lines"
    try:
        code = main(["check", "-c", str(path)])
    except SystemExit as exc:       # errors of config.yaml itself end `check` there
        code = exc.code
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"mailrouter: configuration has {len(want)} error(s):"] + [f"  {w}" for w in want]


def test_control_names_the_book_defines_pass(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The same control: section with names the address book has: check says ok."""
    from mailrouter.cli import main
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{BAD / 'control' / 'company.yaml'}']\n"
                   "control: {replies: Replies@example.com, head: smirnov}\n", encoding="utf-8")
    assert main(["check", "-c", str(cfg)]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 routing file(s)")


def test_one_domain_written_without_brackets_is_one_error(tmp_path: Path) -> None:
    """`domains: example.com` (no list): refused, and that is all; every address on it was
    also "not on one of our domains; add example.com under domains:" (17 lines for the
    example book), hiding the one mistake under advice to do what the file already did."""
    routing = tmp_path / "r.yaml"
    routing.write_text("domains: example.com\nmailboxes: {s: {maildir: s}}\n"
                       "aliases:\n  a@example.com: mailbox:s\n  b@example.com: a@example.com\n",
                       encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_snapshot((str(routing),), Limits(), "mx.test")
    assert [str(e) for e in info.value.errors] == [
        f"{routing}:1:10: 'domains' must be a list; write each entry on its own '- ' line "
        "under 'domains:', or 'domains: [example.com]'"]


def test_a_routing_file_of_only_comments_is_not_called_empty(tmp_path: Path) -> None:
    """A file whose every line is commented out was refused as "the routing file is empty",
    which the admin looking at its 40 lines could not square; it says what it holds."""
    book = tmp_path / "a.yaml"
    book.write_text("domains: [example.com]\nmailboxes: {s: {maildir: s}}\n", encoding="utf-8")
    off = tmp_path / "b.yaml"
    off.write_text("# rules:\n#   - name: x\n\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_snapshot((str(tmp_path / "*.yaml"),), Limits(), "mx.test")
    assert [str(e) for e in info.value.errors] == [
        f"{off}:1:1: the routing file holds only comments, no section; write its sections "
        "(rules:, aliases: ...), or move it out of what 'routing:' matches"]


def test_a_routing_file_that_is_a_dangling_symlink_says_so(tmp_path: Path) -> None:
    """rules/aliases.yaml -> /srv/shared/aliases.yaml after the share moved: "cannot read:
    No such file or directory" of a file the admin sees in `ls`; it names the link's target."""
    book = tmp_path / "a.yaml"
    book.write_text("domains: [example.com]\nmailboxes: {s: {maildir: s}}\n", encoding="utf-8")
    link = tmp_path / "b.yaml"
    link.symlink_to(tmp_path / "gone" / "aliases.yaml")
    with pytest.raises(ConfigErrors) as info:
        load_snapshot((str(tmp_path / "*.yaml"),), Limits(), "mx.test")
    assert [str(e) for e in info.value.errors] == [
        f"{link}: a symlink to {tmp_path / 'gone' / 'aliases.yaml'}, which does not exist; "
        "point it at the file, or remove it"]


def test_control_language_is_en_or_ru(tmp_path):
    """Any other control.language is refused at its line, naming the two."""
    from mailrouter.config import load_config
    cfg = tmp_path / "config.yaml"
    cfg.write_text("control:\n  language: ru\n", encoding="utf-8")
    assert load_config(cfg).control.language == "ru"
    cfg.write_text("control:\n  language: de\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg)
    assert [str(e) for e in info.value.errors] == [
        f"{cfg}:2:13: 'control.language' must be en or ru, not 'de'; the language of reminders "
        "and escalations, for example 'language: ru'"]

"""The supervisor's address book made in a child process and sent back (issue 15, memory
over all workers): a book pickles and reads as before, `in_child` runs its work elsewhere,
and a load takes a book made earlier only for the very same files without errors."""

from __future__ import annotations

import operator
import os
import pickle
import shutil
import threading
import time
from pathlib import Path

import pytest

from mailrouter import daemon
from mailrouter.addresses import AddressBook
from mailrouter.config import Limits, load_config
from mailrouter.errors import ConfigErrors
from mailrouter.routing import snapshot as snapshot_module
from mailrouter.routing.files import load_book
from mailrouter.routing.snapshot import load_snapshot, prepare
from mailrouter.workers import in_child, in_new_process, start_child
from mailrouter.yamlsrc import loads, where as yamlsrc_where

REPO_RULES = Path(__file__).resolve().parents[1] / "rules"

BOOK = """
domains: [example.com]
mailboxes:
  sales: {maildir: sales}
  desk: {lmtp: '127.0.0.1:24', sieve_folders: true}
people:
  zoe: {address: Zoe@Example.com, name: Зоя, away: ['2027-01-05..2027-01-09', 2027-02-01]}
  ann: {address: ann@example.com, mailbox: sales, deputy: zoe}
teams:
  help: {members: [zoe, ann]}
aliases:
  team@example.com: [zoe, ann]
  all@example.com: [team@example.com, mailbox:desk]
  chain@example.com: all@example.com
moved:
  old@example.com: {now: ann@example.com}
"""

ASKED = ["team@example.com", "all@example.com", "chain+x@example.com", "zoe@example.com",
         "ann@example.com", "old@example.com", "nobody@example.com", "a@elsewhere.test",
         "Postmaster"]


def _book() -> AddressBook:
    return AddressBook.build(loads(BOOK))


def test_a_book_pickles_and_reads_as_before_without_its_caches() -> None:
    book = _book()
    fresh = pickle.dumps(book)
    copy = pickle.loads(fresh)
    assert [copy.resolve(a) for a in ASKED] == [book.resolve(a) for a in ASKED]
    assert [copy.knows(a) for a in ASKED] == [book.knows(a) for a in ASKED]
    assert copy.addresses() == book.addresses()
    assert dict(copy.people) == dict(book.people)
    assert dict(copy.mailboxes) == dict(book.mailboxes)
    assert dict(copy.teams) == dict(book.teams) and dict(copy.moved) == dict(book.moved)
    assert (copy.domains, copy.options, copy.limits) == (book.domains, book.options, book.limits)
    with pytest.raises(TypeError):                 # still read-only
        copy.teams["x"] = None                     # type: ignore[index]
    assert pickle.dumps(book) == fresh             # what was resolved is not sent along


def test_in_child_runs_the_work_in_another_process() -> None:
    assert in_child(os.getpid) not in (None, os.getpid())
    assert in_child(lambda: [1, "two"]) == [1, "two"]
    assert in_child(lambda: 1 // 0) is None        # raised: the caller does the work itself
    assert in_child(lambda: lambda: 1) is None     # cannot be pickled


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_started_child_is_waited_for_or_cancelled() -> None:
    """start_child: the work runs while the caller goes on (cli.cmd_run imports the daemon
    meanwhile); result() reaps it, cancel() stops and reaps it."""
    child = start_child(os.getpid)
    assert child is not None and not child.taken
    assert child.result() == child.pid != os.getpid()
    assert child.taken and _gone(child.pid)
    slow = start_child(lambda: time.sleep(60))
    assert slow is not None
    slow.cancel()
    assert slow.taken and _gone(slow.pid)


def test_the_daemon_takes_the_book_started_before_it(tmp_path: Path, monkeypatch) -> None:
    """cmd_run starts the book's child before the daemon's imports; run_workers takes that
    book instead of building another, and a start that fails first still reaps the child."""
    rules = _rules(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"hostname: mx.test\nrouting: ['{rules}/*.yaml']\n"
                   f"registry: {{url: 'sqlite+aiosqlite:///{tmp_path / 'r.db'}'}}\n"
                   f"delivery: {{maildir_root: '{tmp_path / 'mail'}'}}\nworkers: 2\n")
    config = load_config(cfg)
    seen: list[object] = []

    def load(patterns, limits, hostname, built=None, prepared=None):  # type: ignore[no-untyped-def]
        seen.append(built)
        raise _Stop

    def no_second_child(work):                           # type: ignore[no-untyped-def]
        raise AssertionError("a second child built the book")

    monkeypatch.setattr(daemon, "load_snapshot", load)
    monkeypatch.setattr(daemon, "start_child", no_second_child)
    child = start_child(lambda: load_book(config.routing, config.limits))
    assert child is not None
    with pytest.raises(_Stop):
        daemon.run(config, child)
    ((digest, book),) = seen                              # type: ignore[misc]
    assert child.taken and _gone(child.pid)
    assert isinstance(book, AddressBook) and digest == load_book(config.routing, config.limits)[0]

    (tmp_path / "file").write_text("")                     # the Maildir root cannot be made
    cfg.write_text(cfg.read_text().replace(str(tmp_path / "mail"), str(tmp_path / "file" / "mail")))
    slow = start_child(lambda: time.sleep(60))
    assert slow is not None
    assert daemon.run(load_config(cfg), slow) == daemon.START_FAILED  # type: ignore[arg-type]
    assert slow.taken and _gone(slow.pid)


def test_in_new_process_runs_the_work_in_a_new_interpreter() -> None:
    """For a worker, which runs threads: no fork, a new `python -m mailrouter.workers`."""
    assert in_new_process(os.getpid) not in (None, os.getpid())
    assert in_new_process(os.getppid) == os.getpid()
    assert in_new_process(divmod, 7, 2) == (3, 1)
    assert in_new_process(operator.truediv, 1, 0) is None     # raised: the caller loads
    assert in_new_process(lambda: 1) is None                  # not sendable by name


def test_load_book_makes_the_book_and_hash_a_whole_load_would(tmp_path: Path,
                                                              monkeypatch) -> None:
    rules = _rules(tmp_path)
    pattern = [str(rules / "*.yaml")]
    whole = load_snapshot(pattern, Limits(), "mx.test")
    asked = ["sales@example.com", "support@example.com", "nobody@example.com",
             *sorted(whole.book.addresses())[:20]]
    with monkeypatch.context() as m:                  # the rules are not compiled
        m.setattr(snapshot_module.RuleSet, "build", None)
        got = load_book(pattern, Limits())
    assert got is not None
    digest, book = got
    assert digest == whole.hash
    assert [book.resolve(a) for a in asked] == [whole.book.resolve(a) for a in asked]
    (rules / "zz.yaml").write_text("aliases:\n  x@example.com: nobody-here\n")
    assert load_book(pattern, Limits()) is None       # an error: load_snapshot reports it
    (rules / "zz.yaml").write_text("aliases: [unclosed\n")
    assert load_book(pattern, Limits()) is None
    assert load_book([str(tmp_path / "none" / "*.yaml")], Limits()) is None


def test_a_worker_loads_changed_files_with_the_book_made_in_a_new_process(
        tmp_path: Path, monkeypatch) -> None:
    """A worker's reload of changed big files (and a replaced worker's start) takes the book
    a new process made: built in the worker, its temporaries would stay in the worker's heap,
    one copy per worker (bench_memory.py --reload: 100,000 aliases at 1.84x the memory of
    1,000, 1.26x with it). A single process builds its own."""
    rules = _rules(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"hostname: mx.test\nrouting: ['{rules}/*.yaml']\n"
                   f"delivery: {{maildir_root: '{tmp_path / 'mail'}'}}\n")
    config = load_config(cfg)
    sent: list[tuple[object, object]] = []

    def spy(work, *args):                            # type: ignore[no-untyped-def]
        got = in_new_process(work, *args)
        sent.append((work, got))
        return got

    monkeypatch.setattr(daemon, "in_new_process", spy)
    small = daemon._load(config, True)             # the example files: under the size
    assert sent == [] and small.book is not None
    monkeypatch.setattr(daemon, "BUILD_APART_FROM", 1000)
    snap = daemon._load(config, True)
    assert len(sent) == 1 and sent[0][0] is load_book
    made = sent[0][1]
    assert isinstance(made, tuple) and snap.book is made[1] and snap.hash == made[0]
    alone = daemon._load(config, False)
    assert len(sent) == 1 and alone.hash == snap.hash == small.hash


def test_a_worker_compiles_the_rules_while_the_new_process_builds_the_book(
        tmp_path: Path, monkeypatch) -> None:
    """The rules' half of a worker's big reload (`prepare`, of the very bytes staged) is made
    while the new process builds the book, and taken by the load: one after the other, a
    reload of 100,000 aliases and 10,000 rules took the sum of both."""
    rules = _rules(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"hostname: mx.test\nrouting: ['{rules}/*.yaml']\n"
                   f"delivery: {{maildir_root: '{tmp_path / 'mail'}'}}\n")
    config = load_config(cfg)
    texts = {str(f): f.read_bytes() for f in sorted(rules.glob("*.yaml"))}
    prepared_done = threading.Event()
    overlapped: list[bool] = []
    made: list[object] = []

    def book_apart(work, *args):                     # type: ignore[no-untyped-def]
        got = in_new_process(work, *args)
        overlapped.append(prepared_done.wait(20))    # prepare ran meanwhile, not after
        return got

    def spy_prepare(patterns, given=None):           # type: ignore[no-untyped-def]
        got = prepare(patterns, given)
        assert given is texts
        made.append(got)
        prepared_done.set()
        return got

    monkeypatch.setattr(daemon, "in_new_process", book_apart)
    monkeypatch.setattr(daemon, "prepare", spy_prepare)
    monkeypatch.setattr(daemon, "BUILD_APART_FROM", 1000)
    snap = daemon._load(config, True, texts)
    assert overlapped == [True]
    (prepared,) = made
    assert isinstance(prepared, snapshot_module.Prepared)
    assert all(r.when is w for r, w in zip(snap.rules.rules, prepared.conditions.whens,
                                            strict=True))
    assert snap.hash == load_snapshot([str(rules / "*.yaml")], Limits(), "mx.test").hash


def _rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("company.yaml", "routing.yaml"):
        shutil.copy(REPO_RULES / name, rules / name)
    return rules


def test_a_load_takes_a_book_made_earlier_only_for_the_same_files(tmp_path: Path) -> None:
    rules = _rules(tmp_path)
    pattern = [str(rules / "*.yaml")]
    first = load_snapshot(pattern, Limits(), "mx.test")
    made = pickle.loads(pickle.dumps(first.book))
    again = load_snapshot(pattern, Limits(), "mx.test", (first.hash, made))
    assert again.book is made and again.hash == first.hash
    assert load_snapshot(pattern, Limits(), "mx.test", ("0" * 16, made)).book is not made
    routing = rules / "routing.yaml"
    routing.write_text(routing.read_text() + "\nbogus_section: 1\n")
    with pytest.raises(ConfigErrors) as without:
        load_snapshot(pattern, Limits(), "mx.test")
    with pytest.raises(ConfigErrors) as given:           # the files changed since: as before
        load_snapshot(pattern, Limits(), "mx.test", (first.hash, made))
    assert str(given.value) == str(without.value)


class _Stop(Exception):
    pass


def test_a_load_takes_the_prepared_rules_only_for_the_files_the_book_was_made_of(
        tmp_path: Path) -> None:
    """`prepare` reads the files and compiles the rules' conditions while a child builds the
    book; the load takes them when the book was made of the very same files, and reads
    the files again when they changed in between (or when they have an error)."""
    rules = _rules(tmp_path)
    pattern = [str(rules / "*.yaml")]
    prepared = prepare(pattern)
    assert prepared is not None
    snap = load_snapshot(pattern, Limits(), "mx.test", load_book(pattern, Limits()), prepared)
    plain = load_snapshot(pattern, Limits(), "mx.test")
    assert snap.hash == plain.hash
    assert [r.name for r in snap.rules.rules] == [r.name for r in plain.rules.rules]
    assert all(r.when is w for r, w in zip(snap.rules.rules, prepared.conditions.whens,
                                            strict=True))

    def late(name: str, subject: str) -> None:
        (rules / "z.yaml").write_text(f"rules:\n  - {{name: {name}, when: {{subject: {subject}}}, "
                                      "then: {folder: Late}}\n")

    late("late", "zzz")                              # a file more than were prepared
    changed = load_snapshot(pattern, Limits(), "mx.test", load_book(pattern, Limits()), prepared)
    assert changed.hash == load_snapshot(pattern, Limits(), "mx.test").hash != plain.hash
    assert changed.rules.rules[-1].name == "late"
    stale = prepare(pattern)
    assert stale is not None
    late("later", "yyy")                             # the same files, one changed
    changed = load_snapshot(pattern, Limits(), "mx.test", load_book(pattern, Limits()), stale)
    assert changed.hash == load_snapshot(pattern, Limits(), "mx.test").hash != stale.digest
    assert changed.rules.rules[-1].name == "later"
    assert not any(r.when is w for r, w in zip(changed.rules.rules, stale.conditions.whens))

    (rules / "z.yaml").write_text("rules:\n  - {name: bad, when: {subjekt: x}, "
                                  "then: {folder: Bad}}\n")
    assert prepare(pattern) is None
    with pytest.raises(ConfigErrors, match="subjekt"):
        load_snapshot(pattern, Limits(), "mx.test", load_book(pattern, Limits()), stale)


def test_the_supervisor_takes_the_book_made_in_a_child(tmp_path: Path, monkeypatch) -> None:
    """run_workers builds no address book itself: the snapshot its workers are forked with
    holds the one a child process made and sent back."""
    parent = os.getpid()
    built_here: list[int] = []
    real_build = AddressBook.build.__func__          # type: ignore[attr-defined]

    def build(cls, *args, **kwargs):                 # type: ignore[no-untyped-def]
        if os.getpid() == parent:
            built_here.append(1)
        return real_build(cls, *args, **kwargs)

    seen = []
    real_load = daemon.load_snapshot

    def load(*args):                                 # type: ignore[no-untyped-def]
        snap = real_load(*args)
        if os.getpid() == parent:
            seen.append((args[3:], snap))
        return snap

    def stop(host: str, port: int, name: str) -> None:
        raise _Stop

    monkeypatch.setattr(AddressBook, "build", classmethod(build))
    monkeypatch.setattr(daemon, "load_snapshot", load)
    monkeypatch.setattr(daemon, "bind", stop)           # right after the load
    rules = _rules(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"hostname: mx.test\nrouting: ['{rules}/*.yaml']\n"
                   f"registry: {{url: 'sqlite+aiosqlite:///{tmp_path / 'r.db'}'}}\n"
                   f"delivery: {{maildir_root: '{tmp_path / 'mail'}'}}\nworkers: 2\n")
    with pytest.raises(_Stop):
        daemon.run_workers(load_config(cfg))
    assert len(seen) == 1
    (built, prepared), snap = seen[0]
    assert built is not None and snap.book is built[1] and built[0] == snap.hash
    assert built_here == []
    # the rules' conditions were compiled while the child built the book, and taken
    whens = [r.when for r in snap.rules.rules]
    assert any(w is not None for w in whens)
    assert all(a is b for a, b in zip(whens, prepared.conditions.whens, strict=True))


DOC = """\
domains: [example.com]
aliases:
  a@example.com: mailbox:sales
  # a comment
  b@example.com:
    - a@example.com
    - "quoted: text"
rules:
  - name: r1
    when: {subject: hello}
people: {ann: {address: ann@example.com}}
mailboxes:
  sales: {maildir: sales}
"""


def test_skipped_sections_are_not_read_and_the_rest_keeps_its_positions() -> None:
    got = loads(DOC, "f.yaml", skip=("aliases", "people", "mailboxes"))
    whole = loads(DOC, "f.yaml")
    assert got["aliases"] is None and got["mailboxes"] is None
    assert got["people"] == whole["people"]          # a flow mapping on the key's line: read
    assert got["rules"] == whole["rules"] and got["domains"] == whole["domains"]
    rule = got["rules"][0]
    assert yamlsrc_where(rule["name"]) == yamlsrc_where(whole["rules"][0]["name"]) == ("f.yaml", 9, 11)


def test_a_section_whose_end_the_rest_does_not_confirm_is_read_whole() -> None:
    # `aliases:` at column 1 inside a quoted scalar: no key of the root mapping
    text = 'domains: ["a,\naliases:\n  b"]\nrules: []\n'
    whole = loads(text, "f.yaml")
    assert whole["domains"] == ["a, aliases: b"]
    assert loads(text, "f.yaml", skip=("aliases",)) == whole


def test_a_load_given_the_hash_of_files_with_errors_reports_them_as_before(tmp_path: Path) -> None:
    from mailrouter.routing.files import _files
    from mailrouter.yamlsrc import hash_files
    rules = _rules(tmp_path)
    pattern = [str(rules / "*.yaml")]
    made = load_snapshot(pattern, Limits(), "mx.test").book
    routing = rules / "routing.yaml"
    routing.write_text(routing.read_text().replace("rules:", "rules:\n  - {name: x, bogus: 1}", 1))
    with pytest.raises(ConfigErrors) as without:
        load_snapshot(pattern, Limits(), "mx.test")
    digest = hash_files(_files(pattern))
    assert digest is not None
    with pytest.raises(ConfigErrors) as given:
        load_snapshot(pattern, Limits(), "mx.test", (digest, made))
    assert str(given.value) == str(without.value)


def test_the_book_is_built_without_reading_the_rules(tmp_path: Path) -> None:
    """`load_book` (the process that builds the address book, at a big start and reload)
    does not parse the rules and tests sections: a third of the parse at 10,000 rules, of no
    use to the book (bench: load_book of 100,000 aliases and 10,000 rules 1.29 -> 1.13 s). A
    rules section that does not even parse leaves the book as it is; the whole load reports
    it, as before."""
    rules = _rules(tmp_path)
    pattern = [str(rules / "*.yaml")]
    whole = load_snapshot(pattern, Limits(), "mx.test")
    (rules / "zz.yaml").write_text("rules:\n  - name: broken\n    when: {subject: [unclosed\n"
                                   "tests:\n  - {rcpt: [unclosed\n", encoding="utf-8")
    got = load_book(pattern, Limits())
    assert got is not None
    _, book = got
    assert book.resolve("sales@example.com") == whole.book.resolve("sales@example.com")
    with pytest.raises(ConfigErrors) as refused:
        load_snapshot(pattern, Limits(), "mx.test", got)
    assert "zz.yaml:" in str(refused.value)


def _texts(rules: Path) -> dict[str, bytes]:
    return {str(f): f.read_bytes() for f in sorted(rules.glob("*.yaml"))}


def test_a_reload_keeps_the_book_only_when_its_sections_did_not_change(tmp_path: Path) -> None:
    """book_kept: a reload of big files that changed only the rules or tests (a rule added
    moves the line of `tests:`) keeps the book it runs, as load_book would build it again;
    anything that changes what the book is made of builds a new one."""
    from mailrouter.routing.files import book_kept
    rules = _rules(tmp_path)
    pattern = [str(rules / "*.yaml")]
    made = load_book(pattern, Limits(), _texts(rules))
    assert made is not None and made[1].made_of is not None
    book = made[1]
    assert pickle.loads(pickle.dumps(book)).made_of == book.made_of
    routing, company = rules / "routing.yaml", rules / "company.yaml"
    original = routing.read_text(encoding="utf-8")
    routing.write_text(original.replace(
        "then: {mailbox: support, tags: [support]}",
        "then: {mailbox: support, tags: [support]}\n"
        "  - name: late\n    when: {rcpt: sales@example.com}\n    then: {mailbox: sales}", 1)
        + "# edited\n", encoding="utf-8")
    texts = _texts(rules)
    kept = book_kept(book, Limits(), texts)
    assert kept is not None and kept[1] is book
    snap = load_snapshot(pattern, Limits(), "mx.test", kept, texts=texts)
    assert snap.book is book and snap.hash == load_snapshot(pattern, Limits(), "mx.test").hash
    assert [r.name for r in snap.rules.rules][-1] == "late"
    assert book_kept(book, Limits(max_alias_depth=5), texts) is None
    # a book section changed, or moved down by the rules above it: built again
    company.write_text(company.read_text(encoding="utf-8").replace(
        "aliases:\n", "aliases:\n  late@example.com: mailbox:sales\n", 1), encoding="utf-8")
    assert book_kept(book, Limits(), _texts(rules)) is None
    company.write_bytes(texts[str(company)])
    routing.write_text(original + "aliases:\n  late@example.com: mailbox:sales\n",
                       encoding="utf-8")
    below = load_book(pattern, Limits(), _texts(rules))
    assert below is not None and below[1].made_of is not None
    routing.write_text(original.replace("rules:\n", "rules:\n  # one more line\n", 1)
                       + "aliases:\n  late@example.com: mailbox:sales\n", encoding="utf-8")
    assert book_kept(below[1], Limits(), _texts(rules)) is None


def test_the_sections_hash_says_nothing_of_a_parse_that_did_not_skip_them() -> None:
    """yamlsrc.sections_hash: None for a file not UTF-8, and with `docs`, for one whose parse
    read the whole text (the rest did not confirm where the skipped section ends): the
    hash would describe a text the parse never read."""
    from mailrouter.yamlsrc import sections_hash
    skip = ("rules", "tests")
    plain = b"domains: [example.com]\nrules:\n  - name: a\ntests:\n  - name: t\n"
    assert sections_hash([("f.yaml", plain)], skip, [loads(plain.decode(), "f.yaml", (), skip)])
    assert sections_hash([("f.yaml", b"rules:\n  - \xff\n")], skip) is None
    # `rules:` at column 1 inside a flow sequence: blanking its lines changes `aliases`
    flow = b"aliases: [\nrules:\n  a,\n  b]\n"
    doc = loads(flow.decode(), "f.yaml", (), skip)
    assert doc == {"aliases": [{"rules": "a"}, "b"]}         # read whole, not blanked
    assert sections_hash([("f.yaml", flow)], skip, [doc]) is None
    # the same text but the tail of skipped sections: equal
    assert sections_hash([("f.yaml", plain)], skip) == sections_hash(
        [("f.yaml", plain.replace(b"  - name: a\n", b"  - name: a\n  - name: b\n\n# x\n"))], skip)
    assert sections_hash([("f.yaml", plain)], skip) != sections_hash([("g.yaml", plain)], skip)


ORPHAN = """
import os, sys, time
from mailrouter.newprocess import die_with_parent
told = int(sys.argv[1])
parent = os.getpid()
if os.fork() == 0:
    while os.getppid() == parent:       # the parent killed between the fork and the prctl
        time.sleep(0.01)
    die_with_parent(parent)
    os.write(told, b"an orphan ran its work")
    os._exit(0)
os._exit(0)
"""


def test_a_child_whose_parent_died_before_its_prctl_exits_at_once() -> None:
    """PR_SET_PDEATHSIG set after the parent is gone never fires: a supervisor SIGKILLed
    right after forking a worker left an orphan worker serving mail on the ports (seen 1 time
    in 5). die_with_parent compares the parent's PID with the one taken before the fork and
    exits when it changed; the pipe closes with nothing written."""
    import select
    import subprocess
    import sys
    read, write = os.pipe()
    try:
        subprocess.run([sys.executable, "-c", ORPHAN, str(write)], pass_fds=(write,),
                       check=True, timeout=30)
        os.close(write)
        write = -1
        got = b""
        while True:
            ready, _, _ = select.select([read], [], [], 30)
            assert ready, "the orphan neither exited nor wrote"
            chunk = os.read(read, 100)
            if not chunk:
                break
            got += chunk
        assert got == b""
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


SKIPPED_BOOK = ("mailboxes:\n  sales: {maildir: sales}\n  desk: {maildir: desk}\n"
                "domains: [example.com]\n")


@pytest.mark.parametrize("layout", [
    # YAML breaks lines at U+2028, U+2029 and U+0085 as well: `people:` is a section
    "rules:\n  - {name: r, when: {rcpt: sales@example.com}, then: {mailbox: sales}}"
    "\u2028people:\u2028  zoe: {address: zoe@example.com, mailbox: OLD}\n",
    "rules:\n  - {name: r, when: {rcpt: sales@example.com}, then: {mailbox: sales}}"
    "\x85people:\x85  zoe: {address: zoe@example.com, mailbox: OLD}\n",
    # a flow mapping as the root: its indented lines hold its entries, not only rules'
    "{mailboxes: {sales: {maildir: sales}, desk: {maildir: desk}}, domains: [example.com],\n"
    "rules:\n  [{name: r, when: {rcpt: sales@example.com}, then: {mailbox: sales}}],\n"
    "  people: {zoe: {address: zoe@example.com, mailbox: OLD}}\n}\n",
])
def test_a_book_section_on_the_lines_of_the_rules_is_in_the_book_and_its_edit_seen(
        tmp_path: Path, layout: str) -> None:
    """A section that YAML reads on lines `_blank` took for the rules' (after a U+2028 line
    break, or among the entries of a flow mapping at the root): load_book built the book
    without it (zoe unknown), and an edit of it was a reload of "only the rules" that kept
    the book with the old one."""
    from mailrouter.routing.files import book_kept
    path = tmp_path / "f.yaml"
    head = "" if layout.startswith("{") else SKIPPED_BOOK
    old = {str(path): (head + layout.replace("OLD", "sales")).encode()}
    new = {str(path): (head + layout.replace("OLD", "desk")).encode()}
    made = load_book([str(path)], Limits(), old)
    assert made is not None
    whole = load_snapshot([str(path)], Limits(), "mx.test", texts=old)
    assert repr(made[1].resolve("zoe@example.com")) == repr(whole.book.resolve("zoe@example.com"))
    assert made[1].knows("zoe@example.com")
    assert book_kept(made[1], Limits(), new) is None


def test_a_quote_left_open_in_the_rules_takes_the_book_section_after_them(tmp_path: Path) -> None:
    """libyaml reads a quoted scalar on over a line at column 1: with `name: "r` the
    `people:` line below the rules is part of the rule's name, and the files define no zoe.
    The blanked text read it as the section people: load_book's book knew zoe, and the
    edit that opened the quote was a reload of "only the rules" that kept the book with
    zoe in it. A block followed by other sections is blanked only when it parses alone."""
    from mailrouter.routing.files import book_kept
    path = str(tmp_path / "f.yaml")
    text = (SKIPPED_BOOK + "rules:\n  - when: {rcpt: sales@example.com}\n    then: {mailbox: sales}\n"
            "    name: r\npeople: {zoe: {address: zoe@example.com, mailbox: sales}} # \"\n")
    old, new = {path: text.encode()}, {path: text.replace("name: r", 'name: "r').encode()}
    made = load_book([path], Limits(), old)
    assert made is not None and made[1].knows("zoe@example.com")
    assert made[1].made_of is not None
    whole = load_snapshot([path], Limits(), "mx.test", texts=new)
    assert not whole.book.knows("zoe@example.com")
    fresh = load_book([path], Limits(), new)
    assert fresh is not None and not fresh[1].knows("zoe@example.com")
    assert book_kept(made[1], Limits(), new) is None
    # the same open quote in the rules that end the file: nothing but them follows it
    tail = SKIPPED_BOOK + "rules:\n  - {name: r, when: {rcpt: sales@example.com}, then: {mailbox: sales}}\n"
    kept = load_book([path], Limits(), {path: (tail + "tests:\n  - x\n").encode()})
    assert kept is not None
    assert book_kept(kept[1], Limits(), {path: (tail + '  - {name: "s,\ntests:\n  x"}\n').encode()})


def test_an_anchor_in_the_rules_named_again_in_the_book_is_refused_as_check_refuses(
        tmp_path: Path) -> None:
    """`&x` in the aliases, `&x` again in a rule, `*x` in moved: below: a file `check`
    refuses (an anchor defined twice). The big load's two parses each saw one of the two
    (load_book the rules blanked, prepare the aliases), so the reload that added the
    rule's anchor kept the book and loaded: moved old@ by the aliases' anchor."""
    from mailrouter.routing.files import book_kept
    path = str(tmp_path / "f.yaml")
    text = (SKIPPED_BOOK + "aliases:\n  a@example.com: mailbox:sales\n  e@example.com: &x a@example.com\n"
            "rules:\n  - {name: r, when: {rcpt: RCPT}, then: {mailbox: sales}}\n"
            "moved:\n  old@example.com: {now: *x}\n")
    old = {path: text.replace("RCPT", "sales@example.com").encode()}
    new = {path: text.replace("RCPT", "&x sales@example.com").encode()}
    made = load_book([path], Limits(), old)
    assert made is not None
    assert book_kept(made[1], Limits(), new) is None
    assert load_book([path], Limits(), new) is None
    assert prepare([path], new) is None
    with pytest.raises(ConfigErrors, match="second occurrence"):
        load_snapshot([path], Limits(), "mx.test", made, texts=new)

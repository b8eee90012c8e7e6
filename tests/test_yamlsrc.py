"""yamlsrc builds LocStr/LocMap/LocList straight from the parser's events (the fast path)
and falls back to PyYAML's node tree for tags and merge keys (the node path). Both must
give what `yaml.load(text, Loader=yaml.SafeLoader)` gives, with the same types, and the
same positions and errors as each other."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter import yamlsrc
from mailrouter.errors import ConfigError
from mailrouter.yamlsrc import LocFloat, LocInt, LocList, LocMap, LocStr, loads, where


def nodes(text: str, source: str = "<string>") -> Any:
    """`loads` forced onto the node path (the implementation before the fast path)."""
    real = yamlsrc._load_events

    def fallback(text: str, source: str) -> Any:
        raise yamlsrc._Fallback

    yamlsrc._load_events = fallback
    try:
        return loads(text, source)
    finally:
        yamlsrc._load_events = real


def fast(text: str, source: str = "<string>") -> Any:
    """The fast path alone: must not fall back."""
    return yamlsrc._load_events(text, source)


NUMBER: dict[type, type] = {int: LocInt, float: LocFloat}


def same_as_safe(got: Any, want: Any) -> None:
    """Equal values with the types SafeLoader gives (str/dict/list as LocStr/LocMap/LocList)."""
    if isinstance(want, str):
        assert type(got) is LocStr and got == want, (got, want)
    elif isinstance(want, dict):
        assert type(got) is LocMap and list(got) == list(want), (got, want)
        for (gk, gv), (wk, wv) in zip(got.items(), want.items()):
            same_as_safe(gk, wk)
            same_as_safe(gv, wv)
    elif isinstance(want, list):
        assert type(got) is LocList and len(got) == len(want), (got, want)
        for g, w in zip(got, want):
            same_as_safe(g, w)
    elif isinstance(want, float) and want != want:
        assert type(got) is float and got != got
    elif type(want) in (int, float):    # a number keeps its text as written
        assert type(got) is NUMBER[type(want)] and got == want and got.text, (got, want)
    else:
        assert type(got) is type(want) and got == want, (got, want)


def same_positions(a: Any, b: Any) -> None:
    """Same values, types and positions on every string, mapping, key and list item."""
    assert type(a) is type(b) and a == b or (a != a and b != b)
    if isinstance(a, (LocStr, LocMap, LocList)):
        assert (a.path, a.line, a.column) == (b.path, b.line, b.column)
    if isinstance(a, (LocInt, LocFloat)):
        assert a.text == b.text
    if isinstance(a, LocMap):
        assert a.key_marks == b.key_marks
        for (ak, av), (bk, bv) in zip(a.items(), b.items()):
            same_positions(ak, bk)
            same_positions(av, bv)
    elif isinstance(a, LocList):
        assert a.item_marks == b.item_marks
        for x, y in zip(a, b):
            same_positions(x, y)


def error(load: Any, text: str) -> str:
    try:
        load(text, "f.yaml")
    except ConfigError as exc:
        return f"ConfigError: {exc}"
    except Exception as exc:    # anything else escaped (a bug: check names no file)
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(f"no error for {text!r}")


SNIPPETS = [
    "", "---\n", "~\n", "a\n", "'quoted'\n", "12\n", "[]\n", "{}\n", "a:\n", "a: ~\n", "a: null\n",
    "a: Null\n", "a: NULL\n", "a: ''\n", "a: 'null'\n", "a: \"12\"\n", "a: '0x1F'\n",
    # ints, YAML 1.1: sign, underscores, 0b/0x/0o-less octal, sexagesimal
    "[0, -1, +2, 1_000, 0x1F, 0x_1f, 017, 0b101, 0o17, 190:20:30, -0, 00, 09, 1__2]\n",
    # floats
    "[1.5, -1.5, .5, 1e3, 1.0e+3, 6.8523015e+5, 685.230_15e+03, 190:20:30.15, .inf, -.Inf, "
    "+.INF, .nan, .NaN, 1., 0.]\n",
    # bools, YAML 1.1
    "[yes, Yes, YES, no, No, NO, true, True, TRUE, false, False, FALSE, on, On, ON, off, Off, OFF, "
    "y, n, Y, N, yEs, nope, tru]\n",
    # timestamps and dates
    "[2001-12-14, 2001-12-14t21:59:43.10-05:00, 2001-12-14 21:59:43.10, 2001-12-15T02:59:43.1Z, "
    "2002-12-14 21:59:43.1 -5, 2001-1-1, 20011214]\n",
    # strings that only look like something else
    "[a1@example.com, mailbox:m1, 'yes', \"1\", ~x, n/a, 1.2.3, 12:30, 0x, 1e, -, +, ., 0xZZ, "
    "127.0.0.1:2525, 'a: b', \"\\u00e9\", Финансы, <x>, '<<', '=']\n",
    "a: |\n  line one\n  line two\nb: >\n  folded\n  text\nc: |-\n  12\n",
    "a: plain\n  continued\nb: 'single\n  quoted'\n",
    "? complex\n: value\n",
    "{a: 1, b: [x, {c: d}], e: {}}\n",
    "- a\n- - b\n  - c\n- d: e\n  f: g\n",
    "1: one\n2.5: two\nfalse: three\n~: four\n",
    "a: &x {k: v}\nb: *x\nc: &s str\nd: [*s, *s]\ne: &n ~\nf: *n\n",
    "a: &l [1, 2]\nb: *l\n",
    # merge keys and tags (node path)
    "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  z: 3\n",
    "a: &a {x: 1}\nb: &b {y: 2}\nc: {<<: [*a, *b], z: 3}\n",
    "c: {<<: {x: 1}, z: 3}\n",
    # a key of the mapping overrides a merged one, an earlier merged mapping a later one
    "x: &a {k: 1, j: 1}\ny: {<<: *a, k: 2}\n",
    "x: &a {k: 1}\ny: &b {k: 2, j: 2}\nz: {<<: [*a, *b], j: 3}\n",
    "=: 1\n",
    "a: !!str 12\nb: !!int '12'\nc: !!float '1'\nd: !!binary aGVsbG8=\ne: ! 12\n",
    "s: !!set {a, b}\n",
    "a: !!seq [1]\nb: !!map {c: d}\n",
]


@pytest.mark.parametrize("text", SNIPPETS)
def test_values_as_safe_loader(text: str) -> None:
    want = yaml.load(text, Loader=yaml.SafeLoader)
    same_as_safe(loads(text), want)
    same_positions(loads(text, "f.yaml"), nodes(text, "f.yaml"))


FAST = [t for t in SNIPPETS if "!" not in t and "<<:" not in t and not t.startswith("=")]


@pytest.mark.parametrize("text", FAST)
def test_plain_documents_stay_on_the_fast_path(text: str) -> None:
    """Only tags, merge keys and '=' keys need the node path."""
    same_positions(fast(text, "f.yaml"), nodes(text, "f.yaml"))


def test_ordered_maps_and_pairs_as_before() -> None:
    """!!omap and !!pairs: SafeConstructor's lists of tuples, keys with positions."""
    text = "o: !!omap [a: 1, b: 2]\np: !!pairs [a: 1, a: 2]\n"
    doc = loads(text, "f.yaml")
    assert doc == yaml.load(text, Loader=yaml.SafeLoader)
    assert where(doc["o"][1][0]) == ("f.yaml", 1, 18)


def test_positions() -> None:
    text = ("domains: [example.com]\n"
            "aliases:\n"
            "  sales@example.com: &s mailbox:sales\n"
            "  group@example.com:\n"
            "    - 'p1'\n"
            "    - *s\n"
            "    - 7\n")
    doc = loads(text, "book.yaml")
    assert (doc.path, doc.line, doc.column) == ("book.yaml", 1, 1)
    assert doc.key_marks == {"domains": (1, 1), "aliases": (2, 1)}
    assert where(doc["domains"]) == ("book.yaml", 1, 10)
    assert where(doc["domains"][0]) == ("book.yaml", 1, 11)
    aliases = doc["aliases"]
    assert aliases.key_line("group@example.com") == 4 and aliases.key_line("nope") == 3
    key = next(iter(aliases))
    assert where(key) == ("book.yaml", 3, 3)
    assert where(aliases["sales@example.com"]) == ("book.yaml", 3, 22)
    group = aliases["group@example.com"]
    assert where(group) == ("book.yaml", 5, 5)
    # an alias is the anchored object itself, with the anchor's position
    assert group[1] is aliases["sales@example.com"]
    assert group.item_marks == [(5, 7), (3, 22), (7, 7)]
    assert where(7, group) == ("book.yaml", 5, 5)


def test_types_of_plain_scalars() -> None:
    doc = loads("a: 2024-03-01\nb: 2024-03-01 10:00:00\nc: 0o17\nd: 017\ne: 1_0\n")
    assert doc == {"a": datetime.date(2024, 3, 1), "b": datetime.datetime(2024, 3, 1, 10),
                   "c": "0o17", "d": 15, "e": 10}   # 0o is not YAML 1.1: a string, as SafeLoader


@pytest.mark.parametrize("bare", [(), ("a",)])
def test_a_number_keeps_its_text_as_written(bare: tuple[str, ...]) -> None:
    """YAML 1.1 reads 00123 as 83, 0x1F as 31, 1_000 as 1000 and 10:30 as 630: the number
    keeps the text it was written as, for the places that take text. Before, nothing was
    left of '00123' but 83."""
    doc = loads("a:\n  k: [00123, 0x1F, 1_000, 10:30, 1.50, 7]\nb: !!int 017\n", bare=bare)
    got = doc["a"]["k"]
    assert got == [83, 31, 1000, 630, 1.5, 7]
    assert [yamlsrc.as_written(v) for v in got] == ["00123", "0x1F", "1_000", "10:30", "1.50", "7"]
    assert (doc["b"], yamlsrc.as_written(doc["b"])) == (15, "017")      # the node path
    assert yamlsrc.as_written(True) is True and yamlsrc.as_written("x") == "x"


BROKEN = [
    "a: {b: 1, b: 2}\n",
    "a: 1\nb: 2\na: 3\n",
    "1: x\ntrue: y\n",                               # 1 == True
    "? [1]\n: 2\n",
    "? {a: b}\n: 2\n",
    "a: &m {x: 1}\n? *m\n: 2\n",
    "a: &x 1\nb: &x 2\nc: *x\n",
    "a: *y\n",
    "a: &r [*r]\n",
    "a: &r {b: *r}\n",
    "a: 1\n---\nb: 2\n",
    "a: 1\n--- [\n",
    "listen:\n  smtp: [127.0.0.1:2525\n",
    "a: 'x\n",
    "a: b: c\n",
    "a:\n  - b\n c: d\n",
    "a: <<\n",
    "a: =\n",
    "a: !foo 1\n",
    "a: 2023-02-30\n",
    "a: 0b_\n",
    "a: \x01\n",
    "x: &a {k: 1}\ny: {<<: *a, k: 2, k: 3}\n",
    "y: {<<: 3}\n",
    # an error while building, then a syntax error later: the syntax error is reported
    "a: {b: 1, b: 2}\nc: [\n",
    "a: 2023-02-30\nb: *nowhere\n",
    "a: &r [*r]\nb: &r 2\n",
    "a: {b: 1, b: 2}\n---\nc: 1\n",
    "a: {b: 1, b: 2}\nc: !foo x\n",
    "a: {b: 1, b: 2}\nc: {<<: {d: 1}}\n",
    "? [1]\n: 2\n? [3]\n: [\n",
    "a: {b: 1, b: 2}\nc: {d: 1, d: 2}\n",
]


@pytest.mark.parametrize("text", BROKEN)
def test_errors_as_the_node_path(text: str) -> None:
    assert error(loads, text) == error(nodes, text)


def test_error_texts() -> None:
    assert error(loads, "a: {b: 1, b: 2}\n") == (
        "ConfigError: f.yaml:1:11: key 'b' is defined twice (first on line 1); keep one definition")
    assert error(loads, "? [1]\n: 2\n") == (
        "ConfigError: f.yaml:1:3: a mapping key must be a plain value; write the key as a name "
        "or an address (quote it if it holds ': ' or starts with [ or {)")
    assert error(loads, "listen:\n  smtp: [127.0.0.1:2525\n") == (
        "ConfigError: f.yaml:3:1: YAML syntax: did not find expected ',' or ']'; the '[' "
        "opened on line 2, column 9 is never closed: put its ']' after its last entry, "
        "before the end of the file")
    assert error(loads, "a: {b: 1, b: 2}\nc: [\n").startswith("ConfigError: f.yaml:3:1: YAML syntax")


TAB = "a tab in the indentation; YAML indents with spaces only — replace the tab with spaces"


@pytest.mark.parametrize("text, line, col", [
    ("rules:\n\t- name: x\n", 2, 1),                # "found character that cannot start any token"
    ("a:\n\tb: 1\n", 2, 1),
    ("a:\n  b: 1\n\tc: 2\n", 3, 1),                 # "a tab character that violates indentation"
    ("a:\n  b:\n  \t- 1\n", 3, 3),                  # spaces, then a tab
    ("x: 1\n \tc: 2\n", 2, 2),                       # "mapping values are not allowed"
    ("a: |\n\tx\n", 2, 1),                           # in a block scalar's indentation
    ("rules:\r\n\t- name: x\r\n", 2, 1),             # CRLF file
    ("rules:\n  -\tname: x\n    then: {}\n", 2, 4),   # after the dash: "cannot start any token"
    ("a:\n  - - \tb: 1\n    - c\n", 2, 7),
])
def test_tab_in_indentation_is_named(text: str, line: int, col: int) -> None:
    """A tab in the indentation is called what it is, at its line and column, with the fix."""
    assert error(loads, text) == f"ConfigError: f.yaml:{line}:{col}: {TAB}"
    assert error(nodes, text) == f"ConfigError: f.yaml:{line}:{col}: {TAB}"


def test_tab_in_a_routing_file_through_load(tmp_path: Any) -> None:
    """Through `load` (what check and run use): the file's path, line and column."""
    p = tmp_path / "routing.yaml"
    p.write_text("rules:\n  - name: x\n\t  then: {folder: X}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        yamlsrc.load(p)
    assert str(info.value) == f"{p}:3:1: {TAB}"


@pytest.mark.parametrize("text, line, col", [
    ("rules:\n  - name: \"a\x00b\"\n", 2, 13),
    ("# Счёт, фактура\nrules:\n  - name: \"Счёт\x01\"\n", 3, 16),   # libyaml counts bytes
    ("a: \ufffe\n", 1, 4),
])
def test_a_character_yaml_refuses_is_named_with_its_line(text: str, line: int, col: int) -> None:
    """A NUL or other control character (a binary paste, a bad editor) was 'YAML:
    unacceptable character #x0000 ... position 4716', with no line to look at."""
    char = next(c for c in text if c in "\x00\x01\ufffe")
    want = (f"ConfigError: f.yaml:{line}:{col}: character #x{ord(char):04x} is not allowed in "
            "YAML; delete it: routing files are plain text")
    assert error(loads, text) == want
    assert error(nodes, text) == want


def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path: Any) -> None:
    """A routing file saved as windows-1251 or latin-1: the line and column of its first
    byte that is not UTF-8, not only its offset in bytes."""
    p = tmp_path / "routing.yaml"
    p.write_bytes("rules:\n  - name: Счёт\n".encode("utf-8") + "# café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        yamlsrc.load(p)
    assert str(info.value) == (f"{p}:3:6: not UTF-8 text (byte 0xe9: invalid continuation "
                               "byte); save the file as UTF-8")


@pytest.mark.parametrize("encoding", ["windows-1251", "KOI8-R"])
def test_a_file_in_a_russian_8bit_charset_gets_the_command_to_convert_it(
        tmp_path: Any, encoding: str) -> None:
    """The usual mistake of a Russian office: the file saved by an editor in windows-1251 or
    KOI8-R. The hint names the charset and the iconv line (which charset it was, the admin
    could not tell from "save the file as UTF-8")."""
    p = tmp_path / "company.yaml"
    p.write_bytes("people:\n  ivanov: {address: p.ivanov@example.com, name: Пётр Иванов}\n"
                  .encode(encoding))
    with pytest.raises(ConfigError) as info:
        yamlsrc.load(p)
    assert str(info.value).endswith(f"; save the file as UTF-8; it looks like {encoding}: "
                                    f"iconv -f {encoding} -t UTF-8 {p} > {p}.new && mv {p}.new {p}")
    _paste_the_fix(str(info.value), tmp_path)
    assert yamlsrc.load(p)["people"]["ivanov"]["name"] == "Пётр Иванов"


def _paste_the_fix(error: str, elsewhere: Any) -> None:
    """Run the iconv line of the hint as an admin pastes it, from another folder: it named
    the file without its folder ('iconv ... company.yaml > company.yaml.new'), no file from
    where the admin stood, and left the converted copy beside it to be moved by hand."""
    import subprocess
    command = error.split(": iconv ", 1)[1]
    folder = elsewhere / "elsewhere"
    folder.mkdir()
    subprocess.run("iconv " + command, shell=True, cwd=folder, check=True, timeout=30)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_file_saved_as_utf16_is_said_so(tmp_path: Any, encoding: str) -> None:
    """Windows Notepad's "Unicode" (UTF-16 with its byte-order mark): "invalid start byte"
    at line 1 and "save the file as UTF-8" did not say what the file was, nor how to convert."""
    p = tmp_path / "company.yaml"
    p.write_bytes("\ufeffrules: []\naliases: {a@example.com: mailbox:s}\n".encode(encoding))
    with pytest.raises(ConfigError) as info:
        yamlsrc.load(p)
    assert str(info.value).startswith(f"{p}:1:1: not UTF-8 text (byte 0x")
    assert str(info.value).endswith("; save the file as UTF-8; it is UTF-16: "
                                    f"iconv -f UTF-16 -t UTF-8 {p} > {p}.new && mv {p}.new {p}")
    _paste_the_fix(str(info.value), tmp_path)
    assert yamlsrc.load(p) == {"rules": [], "aliases": {"a@example.com": "mailbox:s"}}


@pytest.mark.parametrize("text, want", [
    ("aliases:\n  new@example.com: mailbox: sales\n",
     "f.yaml:2:27: YAML syntax: mapping values are not allowed in this context; a ': ' inside a "
     "value starts a mapping: quote the value (subject: 'Re: invoice') or drop the space "
     "(mailbox:sales)"),
    ("rules:\n  - {name: t, when: {subject: Re: invoice}}\n",
     "f.yaml:2:33: YAML syntax: did not find expected ',' or '}'; in {...}, put a value holding "
     "': ' in quotes ({subject: 'Re: invoice'}) and separate the entries with ','"),
])
def test_a_colon_inside_a_value_gets_the_quotes_to_write(text: str, want: str) -> None:
    """`mailbox: sales` for mailbox:sales, `subject: Re: invoice` unquoted: the commonest
    YAML slip of an ops edit was told only "check indentation and quoting on that line"."""
    assert error(loads, text) == f"ConfigError: {want}"


@pytest.mark.parametrize("text, want", [
    # the `}` of `then:` forgotten: YAML stops at the next rule, which the hint sent to quoting
    ("rules:\n  - name: y\n    then: {tags: [a]\n  - name: z\n    then: {tags: [b]}\n",
     "f.yaml:4:3: YAML syntax: did not find expected ',' or '}'; the '{' opened on line 3, "
     "column 11 is never closed: put its '}' after its last entry, before line 4"),
    # ... in a mapping written over two lines
    ("rules:\n  - name: y\n    then: {tags: [a],\n           folder: X\n  - name: z\n",
     "f.yaml:5:9: YAML syntax: did not find expected ',' or '}'; the '{' opened on line 3, "
     "column 11 is never closed: put its '}' after its last entry, before line 5"),
    # a list's `]` forgotten: it said "check indentation and quoting on that line"
    ("rules:\n  - name: y\n    then:\n      tags: [a, b\n      folder: X\n",
     "f.yaml:5:13: YAML syntax: did not find expected ',' or ']'; the '[' opened on line 4, "
     "column 13 is never closed: put its ']' after its last entry, before line 5"),
    # closed with the other bracket
    ("rules:\n  - name: y\n    then: {tags: [a}\n",
     "f.yaml:3:20: YAML syntax: did not find expected ',' or ']'; the '[' opened on line 3, "
     "column 18 is closed here with '}': write ']'"),
    ("rules:\n  - name: y\n    when: {subject: a]\n",
     "f.yaml:3:22: YAML syntax: did not find expected ',' or '}'; the '{' opened on line 3, "
     "column 11 is closed here with ']': write '}'"),
    # a comma missing inside a mapping that goes on: not taken for a bracket left open
    ("rules:\n  - name: y\n    then: {tags: [a],\n           folder: X\n           priority: h}\n",
     "f.yaml:5:20: YAML syntax: did not find expected ',' or '}'; in {...}, put a value holding "
     "': ' in quotes ({subject: 'Re: invoice'}) and separate the entries with ','"),
    ("tags: [\"a\" b]\n",
     "f.yaml:1:12: YAML syntax: did not find expected ',' or ']'; in [...], separate the "
     "entries with ',' and put an entry holding ', ' or ': ' in quotes"),
])
def test_a_bracket_left_open_or_closed_with_the_other_names_where_it_opened(text: str,
                                                                             want: str) -> None:
    """`then: {tags: [a]` with the next rule below: the error named the next rule's line,
    told to quote a value holding ': ', and nothing of the `{` left open a line above."""
    assert error(loads, text) == f"ConfigError: {want}"


@pytest.mark.parametrize("text, want", [
    # `owner:` dedented by an edit: YAML reads the next line as the rest of its value
    ("rules:\n  - name: i\n    then:\n      folder: F\n    owner: duty\n      tags: [x]\n",
     "f.yaml:6:11: YAML syntax: mapping values are not allowed in this context; line 5 is "
     "indented 4 spaces where the lines around it have 6: give it the same indentation as "
     "they have"),
    # a key indented deeper than the `key: value` above it (a blank line between is skipped)
    ("rules:\n  - name: i\n    continue: true\n\n      owner: duty\n",
     "f.yaml:5:12: YAML syntax: mapping values are not allowed in this context; this line is "
     "indented 6 spaces, deeper than line 3 above it (4), so YAML reads it as the rest of that "
     "line's value: indent it as line 3, or end line 3 at its ':' to open a mapping"),
    # under a list item's first key
    ("rules:\n  - name: i\n      when: {robot: true}\n",
     "f.yaml:3:11: YAML syntax: mapping values are not allowed in this context; this line is "
     "indented 6 spaces, deeper than line 2 above it (4), so YAML reads it as the rest of that "
     "line's value: indent it as line 2, or end line 2 at its ':' to open a mapping"),
])
def test_a_key_indented_deeper_than_the_value_above_names_the_line(text: str, want: str) -> None:
    """An edit that moved one line of a mapping two spaces left (or right) was told "a ': '
    inside a value starts a mapping: quote the value", which sent the admin to quote a value
    that was fine; the hint now names the line out of place and the indentation to give it."""
    assert error(loads, text) == f"ConfigError: {want}"


@pytest.mark.parametrize("text, want", [
    # one space short in a mapping
    ("listen:\n  smtp: 127.0.0.1:2525\n lmtp: 127.0.0.1:2524\n",
     "f.yaml:3:2: YAML syntax: did not find expected key; this line is indented 1 space and "
     "line 2 above it 2: the keys of one mapping line up; indent it as line 2, or as the key it "
     "belongs to further up"),
    # a rule's key at the list's level (continue: under the rule, two spaces short)
    ("rules:\n  - name: k\n    then: {owner: x}\n  continue: true\n\n  - name: p\n",
     "f.yaml:4:3: YAML syntax: did not find expected '-' indicator; this line is indented 2 "
     "spaces and line 3 above it 4: the keys of one mapping line up; indent it as line 3, or as "
     "the key it belongs to further up"),
    ("rules:\n  - name: s\n    when: {rcpt: s@example.com}\n   then: {folder: X}\n",
     "f.yaml:4:4: YAML syntax: did not find expected '-' indicator; this line is indented 3 "
     "spaces and line 3 above it 4: the keys of one mapping line up; indent it as line 3, or as "
     "the key it belongs to further up"),
])
def test_a_key_off_the_line_above_says_by_how_much(text: str, want: str) -> None:
    """A key one or two spaces off its mapping's column was "did not find expected key;
    check indentation and quoting on that line": the hint now gives both indentations."""
    assert error(loads, text) == f"ConfigError: {want}"


def test_tabs_that_are_not_indentation_are_fine() -> None:
    """Tabs inside a line or a flow collection are valid YAML and load as before."""
    assert loads("a: b\t# c\nd: [1,\n\t2]\n") == {"a": "b", "d": [1, 2]}
    assert error(loads, "a: [\n") == ("ConfigError: f.yaml:2:1: YAML syntax: did not find "
                                       "expected node content; check indentation and quoting on "
                                       "that line")


# --- generated documents ----------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
           | st.floats(allow_nan=False, width=64)
           | st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
           | st.sampled_from(["yes", "No", "on", "~", "null", "0x1f", "017", "1_000", "2024-01-02",
                              "1.5e3", ".inf", "<<", "=", "a: b", "- x", "#", "'", '"', "12:30",
                              "2001-12-14 21:59:43.10 -5", "mailbox:m1", "a1@example.com"])
           | st.dates())
keys = (st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)
        | st.integers(-1000, 1000) | st.booleans() | st.none())
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                         | st.dictionaries(keys, inner, max_size=5), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from([None, False, True]), st.booleans())
def test_generated_documents(data: Any, flow: bool | None, canonical: bool) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True, sort_keys=False,
                          canonical=canonical)
    want = yaml.load(text, Loader=yaml.SafeLoader)
    got = loads(text, "g.yaml")
    same_as_safe(got, want)
    if not canonical:               # canonical output tags everything: the node path
        same_positions(fast(text, "g.yaml"), got)
    same_positions(got, nodes(text, "g.yaml"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6),
       st.lists(st.sampled_from(["&x ", "&y ", "*x", "*y", "1", "[", "]", "{k: ", "}", "q"]),
                max_size=8))
def test_generated_anchors_and_errors(names: list[str], parts: list[str]) -> None:
    """Documents, many broken, with anchors, aliases, duplicate keys and stray brackets:
    the fast path and the node path agree on the value or on the error."""
    text = "".join(f"{n}: {p}\n" for n, p in zip(names, parts + ["v"] * len(names)))
    try:
        want: Any = nodes(text, "f.yaml")
    except ConfigError as exc:
        assert error(loads, text) == f"ConfigError: {exc}"
    else:
        same_positions(loads(text, "f.yaml"), want)


# --- alias bombs (issue 9) --------------------------------------------------------------

def laughs(levels: int, refs: int = 9, merge: bool = False) -> str:
    """A "billion laughs": each anchor a list (or with merge, a mapping merging) `refs`
    aliases of the one before, under a rules condition, where no alias list is expected."""
    if merge:
        body = "".join(f"  m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * refs)}], k{i}: {i}}}\n"
                       for i in range(1, levels + 1))
        return "x:\n  m0: &m0 {a: 1, b: 2}\n" + body
    body = "".join(f"      - &l{i} {{any: [{', '.join([f'*l{i - 1}'] * refs)}]}}\n"
                   for i in range(1, levels + 1))
    return ("rules:\n  - name: lol\n    when:\n      - &l0 {subject: {contains: lol}}\n"
            + body + "    then: {mailbox: sales}\n")


@pytest.mark.parametrize("load", [loads, nodes], ids=["fast", "nodes"])
def test_alias_bomb_refused_in_any_section(load: Any) -> None:
    """Nested anchors in a rule's conditions: refused at the alias crossing the budget,
    on both paths, before anything walks the 9**9 conditions."""
    with pytest.raises(ConfigError) as info:
        load(laughs(9), "r.yaml")
    text = str(info.value)
    assert text.startswith("r.yaml:9:") and "YAML aliases repeat more than 100000 values" in text


def test_alias_bomb_through_merge_keys() -> None:
    """`<<: [*m, *m, ...]` copies the merged mapping each time: counted the same way."""
    with pytest.raises(ConfigError) as info:
        loads(laughs(9, merge=True), "m.yaml")
    assert str(info.value).startswith("m.yaml:7:16: YAML aliases repeat more than 100000 values")


@pytest.mark.parametrize("load", [loads, nodes], ids=["fast", "nodes"])
def test_aliases_under_the_budget_load(load: Any) -> None:
    """Reuse a real file needs is loaded as before: 4 levels of 9 repeat 8,200 values."""
    doc = load(laughs(4), "r.yaml")
    inner = doc["rules"][0]["when"]
    assert inner[4]["any"][0] is inner[3] and len(inner) == 5
    assert yamlsrc.ALIAS_BUDGET == 100_000


# --- sections without positions (`bare`: the address book's big sections) --------------

def same_bare(got: Any, want: Any) -> None:
    """Equal values; every string, mapping and list a plain str, dict and list."""
    assert got == want or (got != got and want != want)
    assert type(got) in (str, dict, list) or type(got) is NUMBER.get(type(want), type(want)), \
        (got, want)
    if type(got) in (LocInt, LocFloat):     # its text
        assert got.text
    if isinstance(got, dict):
        assert type(got) is dict
        assert all(type(k) is not LocStr for k in got)
        for k in got:
            same_bare(got[k], want[k])
    elif isinstance(got, list):
        assert type(got) is list
        for g, w in zip(got, want):
            same_bare(g, w)
    elif isinstance(got, str):
        assert type(got) is str


def test_bare_sections_have_no_positions() -> None:
    text = ("domains: [example.com]\n"
            "aliases:\n"
            "  sales@example.com: mailbox:sales\n"
            "  group@example.com:\n"
            "  - p1\n"
            "  - 7\n"
            "  - {mailbox: m, folder: 2024-01-02}\n"
            "rules:\n"
            "  - {name: r}\n")
    doc = loads(text, "book.yaml", bare=("aliases",))
    same_bare(doc["aliases"], yaml.safe_load(text)["aliases"])
    same_positions(doc["rules"], loads(text, "book.yaml")["rules"])
    assert where(doc["domains"][0]) == ("book.yaml", 1, 11)
    assert doc.key_marks == {"domains": (1, 1), "aliases": (2, 1), "rules": (8, 1)}


@pytest.mark.parametrize("text", [
    "aliases: {a: &x b, c: *x}\n",             # an anchor or an alias: walked with positions
    "aliases: &x {a: b}\nrules: *x\n",
    "rules: &x [a]\naliases: {a: *x}\n",
    "aliases: {a: [&x b], c: 1}\n",
    "aliases: {a: b, a: c}\n",                 # errors: reported as without `bare`
    "aliases: {? [1] : 2}\n",
    "aliases: {a: 2023-02-30}\n",
    "aliases: {a: [b, \n",
])
def test_bare_sections_that_need_positions(text: str) -> None:
    try:
        want = loads(text, "f.yaml")
    except Exception:   # noqa: BLE001 (the error is what is compared)
        assert error(lambda t, s: loads(t, s, bare=("aliases",)), text) == error(loads, text)
        return
    same_positions(loads(text, "f.yaml", bare=("aliases",)), want)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["aliases", "people", "rules"]), documents, max_size=3),
       st.sampled_from([None, False]))
def test_generated_bare_sections(data: Any, flow: bool | None) -> None:
    """A bare section: the same values as with positions, as plain types; the others with
    the same positions."""
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True, sort_keys=False)
    want = loads(text, "g.yaml")
    got = loads(text, "g.yaml", bare=("aliases", "people"))
    if not isinstance(want, dict):
        same_positions(got, want)
        return
    assert list(got) == list(want) and got.key_marks == want.key_marks
    for key in want:
        if key in ("aliases", "people") and isinstance(want[key], (dict, list)):
            same_bare(got[key], want[key])
        else:
            same_positions(got[key], want[key])


# --- bare sections read by a regular expression (yamlsrc._load_bare) ---------------------

def walked(text: str, source: str, bare: tuple[str, ...]) -> Any:
    """`loads` with the regular expression path off: what the event walk gives."""
    real = yamlsrc._load_bare
    yamlsrc._load_bare = lambda *args: yamlsrc._MISSING
    try:
        return loads(text, source, bare=bare)
    finally:
        yamlsrc._load_bare = real


def same_deep(a: Any, b: Any) -> None:
    """Same values and types all the way down (True is not 1), positions where there are."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for (ak, av), (bk, bv) in zip(a.items(), b.items()):
            same_deep(ak, bk)
            same_deep(av, bv)
        if isinstance(a, LocMap):
            assert a.key_marks == b.key_marks and where(a) == where(b)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same_deep(x, y)
        if isinstance(a, LocList):
            assert a.item_marks == b.item_marks and where(a) == where(b)
    else:
        assert a == b or (a != a and b != b), (a, b)
        if isinstance(a, LocStr):
            assert where(a) == where(b)


def same_either_way(text: str, bare: tuple[str, ...] = ("aliases", "people")) -> None:
    try:
        want = walked(text, "f.yaml", bare)
    except Exception:   # noqa: BLE001 (the error is what is compared)
        assert error(lambda t, s: loads(t, s, bare=bare), text) == \
            error(lambda t, s: walked(t, s, bare), text)
        return
    same_deep(loads(text, "f.yaml", bare=bare), want)


def test_a_machine_written_book_is_read_by_the_expression() -> None:
    text = ("domains: [example.com]\n"
            "aliases:\n"
            "  a@example.com: mailbox:m0\n"
            "  b@example.com:\n"
            "  - p1\n"
            "  - a@example.com\n"
            "  c@example.com: 12\n"
            "  d@example.com: yes\n"
            "  e.f+g@example.com:   ~   # nothing\n"
            "\n"
            "# the rest\n"
            "  g@example.com:\n"
            "    - x=1\n"
            "    - 2024-01-02\n"
            "  h@example.com:\n"
            "    mailbox: m1  # a folder\n"
            "    folder: 1\n"
            "rules:\n"
            "  - {name: r}\n")
    fast = yamlsrc._load_bare(text, "f.yaml", frozenset({"aliases"}))
    assert fast is not yamlsrc._MISSING
    assert fast["aliases"] == {"a@example.com": "mailbox:m0",
                               "b@example.com": ["p1", "a@example.com"],
                               "c@example.com": 12, "d@example.com": True,
                               "e.f+g@example.com": None,
                               "g@example.com": ["x=1", datetime.date(2024, 1, 2)],
                               "h@example.com": {"mailbox": "m1", "folder": 1}}
    same_deep(fast, walked(text, "f.yaml", ("aliases",)))
    assert where(fast["rules"][0]) == ("f.yaml", 19, 5)


@pytest.mark.parametrize("text", [
    "aliases:\n  a: b\n  a: c\n",                   # defined twice: the walk's error
    "aliases:\n  a: b\n    c\n",                    # a value continued on the next line
    "aliases:\n  a: b\n  - c\n",
    "aliases:\n  a:\n    - b\n  - c\n",
    "aliases:\n  a: 2023-02-30\n",
    "aliases:\n  a: <<\n", "aliases:\n  a: =\n", "aliases:\n  2024-01-02: a\n",
    "aliases:\n  1: a\n  true: b\n",
    "aliases:\n  a: b#c\n", "aliases:\n  a: b # c\n", "aliases:\n  a: b\t# c\n",
    "aliases:\n  a: b\r\n", "aliases:\n  a: b",
    "aliases:\n  a: b:\n", "aliases:\n  a: b: c\n", "aliases:\n  a:b: c\n",
    "rules: [a,\naliases:\n  a: b]\n",              # inside a flow sequence
    "rules: 'a\naliases:\n  a: b'\n",               # inside a quoted scalar
    "aliases:\n  a: b\naliases:\n  c: d\n",
    "- aliases:\n  a: b\n",
    "x: 1\naliases:\n  a: b\n---\ny: 2\n",
    "aliases: &x\n  a: b\n",
    "aliases:\n  a: [b]\n", "aliases:\n  a: {b: c}\n", "aliases:\n  a: 'b'\n",
    "aliases:\n  a: \x85b\n", "aliases:\n  a: b  #\x01\n",
    "aliases:\n   a: b\n  c: d\n",
    "aliases:\n  a:\n    b: c\n    b: d\n", "aliases:\n  a:\n    b: c\n  - d\n",
    "aliases:\n  a:\n    b: c\n   d: e\n", "aliases:\n  a:\n    1: c\n    true: d\n",
    "aliases:\n  a:\n    b: c\n    - d\n", "aliases:\n  a:\n    b:\n    - d\n",
])
def test_bare_sections_the_expression_leaves_to_the_walk(text: str) -> None:
    same_either_way(text)


WORDS = ["a", "é1_", "a@b.c", "mailbox:m0", "x=1", "~", "null", "yes", "No", "1", "-1", "0x1f",
         "1.5", ".inf", "2024-01-02", "2023-02-30", "12:30", "<<", "=", ":", "a:", ":a", "-a",
         "a b", "#x", "'q'", "&x", "*x", "!x", "?x", "[x]", "{x}", "a,b", "%x", "|", ">", "@x",
         "a#b", "a\tb", "Ё"]
LINE = st.one_of(
    st.tuples(st.sampled_from(WORDS), st.sampled_from(WORDS)).map(lambda kv: f"{kv[0]}: {kv[1]}"),
    st.sampled_from(WORDS).map(lambda k: f"{k}:"),
    st.sampled_from(WORDS).map(lambda v: f"- {v}"),
    st.sampled_from(["", "# note", "  # note", "x: 1  # note", "- a # note", "  "]))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 2, 2, 2, 4, 3]), LINE), max_size=10),
       st.sampled_from(["aliases:", "aliases:  # big", "people:"]),
       st.sampled_from(["", "rules:\n  - {name: r}\n", "zz: 1\n"]))
def test_generated_bare_sections_by_the_expression(lines: list[tuple[int, str]], head: str,
                                                   tail: str) -> None:
    """Hand-written section lines, many not YAML: the expression gives what the walk gives,
    value and type of every scalar, or the same error."""
    body = "".join(" " * indent + line + "\n" for indent, line in lines)
    same_either_way(f"domains: [x]\n{head}\n{body}{tail}")


SAFE = ["a", "é1_", "a@b.c", "mailbox:m0", "x=1", "~", "null", "yes", "No", "on", "1", "+1", "0x1f",
        "0b101", "017", "1_000", "1.5", ".inf", ".NaN", "2024-01-02", "2024-01-02t10:00:00Z", "12:30",
        "1:2:3.5", "a.b/c+d", "Ёж", "_", "p117", "a-b", "a~b", "٣"]


@st.composite
def book_sections(draw: Any) -> str:
    """Sections in the machine-written layout, their words mostly ones the expression reads,
    sometimes with a comment, a blank line, a stray line or a word it does not."""
    words = st.sampled_from(SAFE) | st.sampled_from(WORDS) if draw(st.integers(0, 3)) == 0 \
        else st.sampled_from(SAFE)
    indent = " " * draw(st.sampled_from([2, 2, 1, 4]))
    out = []
    keys = words if draw(st.integers(0, 3)) == 0 else st.sampled_from([w for w in SAFE if ":" not in w])
    for key in draw(st.lists(keys, min_size=1, max_size=6, unique=draw(st.integers(0, 5)) > 0)):
        note = draw(st.sampled_from(["", "", "", "", "  # n", " #n", "#n"]))
        kind = draw(st.integers(0, 2))
        if kind == 0:
            out.append(f"{indent}{key}: {draw(words)}{note}\n")
        elif kind == 1:
            deeper = indent + draw(st.sampled_from(["  ", "  ", " ", ""]))
            out.append(f"{indent}{key}:{note}\n" + "".join(
                f"{deeper}{k}: {v}\n" for k, v in draw(st.lists(st.tuples(keys, words),
                                                                 min_size=1, max_size=3))))
        else:
            deeper = indent + draw(st.sampled_from(["", "  ", "", "  ", " "]))
            out.append(f"{indent}{key}:{note}\n" + "".join(
                f"{deeper}- {w}\n" for w in draw(st.lists(words, min_size=1, max_size=3))))
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(st.sampled_from(["\n", "  \n", "# c\n", "    # c\n"])))
    if draw(st.integers(0, 6)) == 0:
        out.insert(draw(st.integers(0, len(out))), " " * draw(st.integers(0, 5)) + draw(LINE) + "\n")
    return "".join(out)


@settings(max_examples=400, deadline=None)
@given(book_sections(), st.sampled_from(["aliases:", "aliases:  # big", "people:"]),
       st.sampled_from(["", "rules:\n  - {name: r}\n", "zz: 1\n"]))
def test_generated_book_sections_by_the_expression(body: str, head: str, tail: str) -> None:
    same_either_way(f"domains: [x]\n{head}\n{body}{tail}")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(WORDS), st.sampled_from(WORDS)
                       | st.lists(st.sampled_from(WORDS), min_size=1, max_size=3), max_size=6))
def test_dumped_bare_sections_by_the_expression(aliases: dict[str, Any]) -> None:
    same_either_way(yaml.safe_dump({"aliases": aliases, "rules": [{"name": "r"}]},
                                   allow_unicode=True, sort_keys=False))


def test_a_skipped_section_of_many_lines_costs_no_memory_to_pass_over() -> None:
    """A worker reloading its rules skips the book's sections (their lines become blank),
    then reads the rest. The blank lines were matched by a backtracking pattern that took
    57 MB for 200,000 of them (issue 15: 100,000 aliases after a reload)."""
    import tracemalloc
    text = ("domains: [example.com]\naliases:\n"
            + "".join(f"  a{i}@example.com: mailbox:sales\n" for i in range(200_000))
            + "rules: []\n")
    tracemalloc.start()
    try:
        got = loads(text, "f.yaml", bare=("aliases",), skip=("aliases",))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got["aliases"] is None and got["rules"] == [] and got["domains"] == ["example.com"]
    assert peak < len(text)            # less than the text itself: no copy per line
    # the same text read whole still gets every alias
    assert len(loads(text, "f.yaml", bare=("aliases",))["aliases"]) == 200_000


@pytest.mark.parametrize("text, line, col, value", [
    ("holidays: [2027-01-01, 2027-02-30]\n", 1, 24, "2027-02-30"),
    ("tests:\n  - at: 2027-01-11T25:00:00\n", 2, 9, "2027-01-11T25:00:00"),
    ("a: {b: 2027-13-01}\n", 1, 8, "2027-13-01"),
])
def test_a_date_the_calendar_lacks_is_named_with_its_line(text: str, line: int, col: int,
                                                          value: str) -> None:
    """A plain scalar shaped as a date but not one (Feb 30, hour 25) is a ConfigError at its
    line and column on every path, not PyYAML's bare ValueError (a traceback in `check`)."""
    head = f"ConfigError: f.yaml:{line}:{col}: no such date or time '{value}'"
    assert error(loads, text).startswith(head)
    assert error(nodes, text).startswith(head)
    assert error(lambda t, s: loads(t, s, bare=("holidays", "tests", "a")), text).startswith(
        "ConfigError: f.yaml:")


def test_a_merge_key_overridden_is_no_key_defined_twice() -> None:
    """`<<: *base` and then a key of its own is what merge keys are for (YAML's merge type:
    the mapping's own keys override): it was refused as "key 'k' is defined twice"."""
    got = loads("base: &b {folder: A, tags: [x]}\nrule:\n  <<: *b\n  folder: B\n", "f.yaml")
    assert got["rule"] == {"folder": "B", "tags": ["x"]}
    assert got["rule"].key_line("folder") == 4
    assert error(loads, "b: &b {k: 1}\nr: {<<: *b, k: 2, k: 3}\n") == (
        "ConfigError: f.yaml:2:19: key 'k' is defined twice (first on line 2); keep one definition")


def test_a_quote_left_open_is_named_where_it_opens() -> None:
    """An unclosed quote: the error came at the end of the file ("found unexpected end of
    stream") or at the next quote, lines below; it now names the quote, or says where it
    opened. A '---' second document is said to be one."""
    text = "a:\n  x: 'open\n  y: b\n  z: c\n"
    assert error(loads, text) == (
        "ConfigError: f.yaml:2:6: this quote is never closed: the value runs to the end of the "
        "file; close the quote on its line, or remove it")
    text = 'a:\n  x: "open\n  y: b\n  z: "c"\n'
    assert error(loads, text) == (
        "ConfigError: f.yaml:4:7: YAML syntax: did not find expected key; the quote opened on "
        "line 2, column 6 is closed only here: close it on its own line")
    assert error(loads, "a: 1\n---\nb: 2\n") == (
        "ConfigError: f.yaml:2:1: a second YAML document ('---') in a routing file; one file "
        "holds one document: remove the '---' line, or move what follows it into a file of its own")
    # a quoted value over several lines that is fine stays fine
    assert loads('a: "one\n  two"\nb: c\n') == {"a": "one two", "b": "c"}


def test_the_files_hash_is_over_each_files_name_length_and_bytes() -> None:
    """A routing set's hash changes whenever a file's bytes, its name or where one file ends
    and the next begins change: over the bytes alone, renaming a file, or moving a line from
    the end of one file to the start of the next, hashed as before. 00123 and 83 parse to
    the same number (YAML 1.1 octal) but are other bytes."""
    from mailrouter.yamlsrc import files_hash
    a, b = "rules/10-a.yaml", "rules/20-b.yaml"
    base = files_hash([(a, b"x: 00123\n"), (b, b"y: 1\n")])
    assert loads("x: 00123\n") == loads("x: 83\n")
    assert files_hash([(a, b"x: 83\n"), (b, b"y: 1\n")]) != base
    assert files_hash([(a, b"x: 00123\ny"), (b, b": 1\n")]) != base          # boundary moved
    assert files_hash([(a, b"x: 00123\n"), ("rules/30-b.yaml", b"y: 1\n")]) != base   # renamed
    assert files_hash([(b, b"y: 1\n"), (a, b"x: 00123\n")]) != base          # other order
    assert files_hash([(a, b"x: 00123\n"), (b, b"y: 1\n")]) == base


def test_files_hash_read_from_the_disk_or_in_pieces_is_the_same(tmp_path: Any) -> None:
    """hash_files (read 64 KiB at a time: a worker's check) and FilesHash.add_chunks give
    what files_hash of the same bytes gives: one hash, whoever computes it."""
    from mailrouter.yamlsrc import FilesHash, files_hash, hash_files
    big, small = tmp_path / "big.yaml", tmp_path / "small.yaml"
    big.write_bytes(b"aliases:\n" + b"".join(b"  a%d@x: b\n" % i for i in range(20000)))
    small.write_bytes(b"rules: []\n")
    paths = [str(big), str(small)]
    want = files_hash([(p, open(p, "rb").read()) for p in paths])
    assert hash_files(paths) == want
    pieces = FilesHash()
    for p in paths:
        data = open(p, "rb").read()
        pieces.add_chunks(p, iter([data[:7], data[7:70000], data[70000:]]))
    assert pieces.hexdigest() == want
    assert hash_files([str(big), str(tmp_path / "gone.yaml")]) is None


def test_load_bytes_reads_as_load_does(tmp_path: Any) -> None:
    """load_bytes (the bytes a caller hashed) parses as load (the file) does: universal
    newlines, and bytes that are not UTF-8 named by line with the charset they look like."""
    from mailrouter.yamlsrc import load, load_bytes
    f = tmp_path / "r.yaml"
    for raw in (b"a: 1\r\nb: [x,\r y]\r\n", "name: Счёт\n".encode("cp1251")):
        f.write_bytes(raw)
        try:
            want: Any = load(f)
        except ConfigError as exc:
            want = str(exc)
        try:
            got: Any = load_bytes(raw, str(f))
        except ConfigError as exc:
            got = str(exc)
        assert got == want


NBSP_FIX = ("where YAML wants a plain space; retype it as a plain space (a text pasted from a "
            "web page or a mail keeps such spaces)")


@pytest.mark.parametrize("text, line, col, char", [
    # a rule's line indented with a no-break space: PyYAML named line 5, "did not find expected key"
    ("rules:\n  - name: s\n    when: {rcpt: s@example.com}\n\u00a0   then: {folder: X}\n\n"
     "  - name: t\n", 4, 1, "U+00A0 (no-break space)"),
    # after the key's colon: "mapping values are not allowed", with the hint to quote the value
    ("aliases:\n  sales@example.com:\u00a0mailbox:sales\n  x@example.com: mailbox:sales\n",
     2, 21, "U+00A0 (no-break space)"),
    ("rules:\n  -\u2003name: x\n    then: {folder: X}\n", 2, 4, "U+2003 (em space)"),
])
def test_an_odd_space_where_yaml_wants_a_space_is_named(text: str, line: int, col: int,
                                                        char: str) -> None:
    """A no-break space (a routing file pasted from a wiki or a mail) in the indentation or
    after `key:`: the error named another line and no cause; now its own line and column."""
    want = f"ConfigError: f.yaml:{line}:{col}: a {char} {NBSP_FIX}"
    assert error(loads, text) == want
    assert error(nodes, text) == want


def test_a_byte_order_mark_inside_a_file_is_named() -> None:
    """`cat company.yaml rules.yaml > all.yaml` with rules.yaml saved with a BOM: the BOM
    begins a line inside the file, and the error named the line after the next."""
    text = "aliases:\n  a@example.com: mailbox:sales\n\ufeffrules:\n  - name: x\n    then: {folder: X}\n"
    want = ("ConfigError: f.yaml:3:1: an invisible U+FEFF (zero width no-break space) in the "
            "indentation; delete it (a byte order mark is left where a file saved with one was "
            "joined to another)")
    assert error(loads, text) == want
    assert error(nodes, text) == want


def test_a_no_break_space_inside_a_value_is_not_blamed_for_another_error() -> None:
    """A value may hold one (a person's name): a syntax error below it is named as before."""
    text = "people:\n  ivanov: {name: \"Пётр -\u00a0Иванов\"}\n  x: [1\n"
    assert "YAML syntax" in error(loads, text)
    assert loads("people:\n  ivanov: {name: Пётр -\u00a0Иванов}\n", "f.yaml") is not None


@pytest.mark.parametrize("text, line, col, name", [
    ("rules:\n  - name: s\n    then: {<<: *common, folder: X}\n", 3, 16, "common"),
    ("aliases:\n  a@example.com: *group\ngroup: &group [x]\n", 2, 18, "group"),   # below it
])
def test_an_alias_of_no_anchor_names_it_and_where_anchors_reach(text: str, line: int, col: int,
                                                                name: str) -> None:
    """`<<: *common` with `&common` in the other routing file was "YAML syntax: found
    undefined alias; check indentation and quoting on that line": no name, no cause."""
    want = (f"ConfigError: f.yaml:{line}:{col}: *{name} names no anchor defined above it in this "
            f"file; define &{name} above this line in the same file (an anchor does not reach "
            "into another routing file), or write the values out")
    assert error(loads, text) == want
    assert error(nodes, text) == want


@pytest.mark.parametrize("raw", [True, False])
def test_a_skipped_block_that_leaves_a_quote_or_a_bracket_open_is_not_blanked(
        monkeypatch: pytest.MonkeyPatch, raw: bool) -> None:
    """libyaml reads an open quote or flow collection on over the next line at column 1
    (`aliases:` below is then part of a rule): a block followed by other sections is
    blanked only when it parses alone (libyaml's raw_parse, or yaml.parse without it)."""
    from mailrouter import yamlsrc
    if not raw:
        monkeypatch.setattr(yamlsrc, "_RawParser", None)
    after = "aliases:\n  a@example.com: b@example.com  # \" ]\n"
    for rule in ('name: "r', "name: 'r", "tags: [r,", "then: {mailbox: r,"):
        text = f"rules:\n  - {rule}\n{after}"
        assert yamlsrc._blank(text, ("rules",)) == (text, {})
    closed = f"rules:\n  - {{name: 'r', tags: [r]}}\n{after}"
    assert yamlsrc._blank(closed, ("rules",))[1] == {"rules": (1, None)}
    assert loads(closed, "f.yaml", skip=("rules",)) == {
        "rules": None, "aliases": {"a@example.com": "b@example.com"}}

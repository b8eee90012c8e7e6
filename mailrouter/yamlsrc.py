"""YAML with source positions, so every configuration error can name file:line.

`load(path)` returns plain Python containers whose strings, mappings and lists
remember where they came from: `LocStr`, `LocMap` and `LocList` carry `.path`,
`.line` and `.column` (1-based); a `LocMap` also knows the position of each key
(`key_line(key)`). Only `config.py`, `addresses.py` and `routing/` see these.

Refused: a tab in the indentation (YAML indents with spaces only; the error says so
rather than PyYAML's "found character that cannot start any token"), duplicate keys
in one mapping (PyYAML silently keeps the last one, which hides a typo'd second
definition of an alias; a key that overrides one merged in by `<<: *base` is none, that
is what merge keys are for), YAML tags that construct objects, and alias bombs: a
document whose aliases (`*name`, and `<<: *name` merges) would repeat more than
`ALIAS_BUDGET` values in all. An alias is the anchored object itself, not a copy,
so loading stays small; but whoever walks the result (the address book flattening
a group, the rule compiler) meets the anchor's whole value once per alias, and
anchors that alias anchors multiply: 9 lists of 9 aliases each are 9**9 values from
600 bytes ("billion laughs"). The count is kept while loading, each anchor's size
once, and the file is refused at the alias that crosses the budget, whatever section
it is in. Written-out values do not count, only repetitions.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import re
import shlex
import stat
import unicodedata
from functools import lru_cache
from pathlib import Path
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable, TYPE_CHECKING

import yaml

from .errors import ConfigError

__all__ = ["LocStr", "LocInt", "LocFloat", "LocMap", "LocList", "load", "loads", "load_bytes",
           "where", "as_written", "ALIAS_BUDGET", "FilesHash", "files_hash", "sections_hash",
           "hash_files", "NotRegularFile", "open_regular", "must_be_regular",
           "mixed_letters", "letters_note", "no_gc"]

# Values that aliases may repeat in one document, all aliases together (an alias of a
# 500-address group used in 20 places repeats 10,000). Far above what a hand-written
# file needs, far below what makes walking the loaded document slow or large.
ALIAS_BUDGET = 100_000


# A key that is a list or a mapping (`[a, b]: x`, `? {a: 1}`, a '{' or '[' that lost its
# closing pair and took the ': ' after it): what to write instead
_KEY_HINT = "write the key as a name or an address (quote it if it holds ': ' or starts with [ or {)"


class LocStr(str):
    path: str = ""
    line: int = 0
    column: int = 0


class LocInt(int):
    """A number read from a plain scalar, with its `text` as written: YAML 1.1 reads 00123
    as 83, 0x1F as 31, 1_000 as 1000 and 10:30 as 630 (base 60)."""
    text: str = ""


class LocFloat(float):
    """A float read from a plain scalar (1.50, .5, 1e+3), with its `text` as LocInt."""
    text: str = ""


class LocMap(dict[Any, Any]):
    path: str = ""
    line: int = 0
    column: int = 0
    key_marks: dict[Any, tuple[int, int]]

    def key_line(self, key: Any) -> int:
        return self.key_marks.get(key, (self.line, 0))[0]


class LocList(list[Any]):
    path: str = ""
    line: int = 0
    column: int = 0
    item_marks: list[tuple[int, int]]
    item_where: list[tuple[str, int, int]]      # a merged list: each item's file, line, column


def where(value: Any, default: Any = None) -> tuple[str, int, int]:
    """(path, line, column) of a loaded value, or of `default` when it has none."""
    for v in (value, default):
        if getattr(v, "line", 0):
            return v.path, v.line, v.column
    return getattr(default, "path", ""), 0, 0


def as_written(value: Any) -> Any:
    """A number as the file wrote it, for a place that takes text: `contains: 00123` is the
    text '00123', not '83' (a str: its position is the key's). Any other value as it is."""
    if isinstance(value, (LocInt, LocFloat)) and value.text:
        return value.text
    return value


def _number(value: Any, text: str) -> Any:
    """An int or float that keeps its text (a bool is an int too: kept as is; NaN stays
    SafeConstructor's one object, the only NaN equal to itself as a key). Its position is
    not kept: an error about a number names the key it is under, as before."""
    t = type(value)
    if t is int:
        value = LocInt(value)
    elif t is float and value == value:
        value = LocFloat(value)
    else:
        return value
    value.__dict__ = {"text": text}
    return value


# libyaml's parser (None without libyaml), whose raw_parse() reads a text's events
# without making them Python objects
_RawParser: Any = getattr(getattr(yaml, "cyaml", None), "CParser", None)

# CSafeLoader exists only when PyYAML was built with libyaml; mypy checks against
# SafeLoader, whose constructor API is the same.
if TYPE_CHECKING:
    _BaseLoader = yaml.SafeLoader
else:
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster


# --- The fast path: objects straight from the parser's event stream -------------------------
#
# PyYAML's own way is events -> node tree (the composer) -> objects (the constructor, one
# Python call chain per node). Here the events are turned into LocStr/LocMap/LocList in one
# loop, which at 100k aliases takes the load from ~2.4 s to ~1 s. It gives exactly what the
# node path below gives, errors and their order included: a plain scalar goes through the
# same implicit resolvers and SafeConstructor methods; an anchor maps to the object built for
# it, so an alias is that same object with the anchor's position, as the node path memoises
# nodes; an error found while building (a key defined twice, an alias inside its own anchor,
# a bad date) is reported only after the rest of the document has been read without error,
# because the node path composes the whole document before it constructs anything. What the
# loop does not handle is rare in configuration and left to the node path (_Fallback): any
# explicit tag (`!!str`, `!foo`, `!`), merge keys (`<<`, whose flattening puts merged pairs
# first and can fail in its own ways) and the `=` value key.

class _Fallback(Exception):
    """The document needs the node path."""


class _Positions(Exception):
    """A section asked for without positions needs them after all (an anchor, an alias, a
    key defined twice): the document is read again with positions everywhere."""


_STR = "tag:yaml.org,2002:str"
_SAFE = yaml.constructor.SafeConstructor()
_SCALARS = {tag: fn for tag, fn in yaml.constructor.SafeConstructor.yaml_constructors.items()
            if tag in ("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                       "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")}


def _resolvers() -> tuple[dict[str, tuple[tuple[str, Any], ...]], tuple[tuple[str, Any], ...]]:
    """The implicit resolvers of the loader, by first character ('' for the empty scalar);
    a plain scalar whose first character has none is a string without trying anything."""
    table: dict[Any, list[tuple[str, Any]]] = _BaseLoader.yaml_implicit_resolvers
    wildcard = tuple(table.get(None, ()))
    return {k: tuple(v) + wildcard for k, v in table.items() if k is not None}, wildcard


_BY_FIRST, _WILDCARD = _resolvers()
_NOKEY: Any = object()      # a mapping waiting for its next key
_OPEN: Any = object()       # an anchored collection not yet complete


def _plain(value: str, resolvers: tuple[tuple[str, Any], ...], mark: Any,
           source: str, line: int, column: int) -> Any:
    """A plain scalar that may not be a string: the first resolver that matches decides.
    `line` 0: a string is returned as a str, without its position. A number keeps its
    text as written (LocInt, LocFloat: see `as_written`), with or without `line`."""
    for tag, regexp in resolvers:  # noqa: B007 (tag is read after the loop)
        if regexp.match(value):
            break
    else:
        tag = _STR
    if tag == _STR:
        if not line:
            return value
        s = LocStr(value)
        s.__dict__ = {"path": source, "line": line, "column": column}
        return s
    construct = _SCALARS.get(tag)
    if construct is None:       # '<<' (merge), '=' (value)
        raise _Fallback
    try:
        obj = construct(_SAFE, yaml.ScalarNode(tag, value, mark, mark))
    except ValueError as exc:
        raise _bad_scalar(tag, value, exc, source, mark) from None
    return _number(obj, value)


def _bad_scalar(tag: str, value: str, exc: ValueError, source: str, mark: Any) -> ConfigError:
    """A plain scalar the resolver took for a date, a time or a number that is none
    (`2027-02-30`, `T25:00`, `0b_`): PyYAML raises a bare ValueError, which named no file."""
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    if tag.endswith(":timestamp"):
        return ConfigError(f"no such date or time {value!r} ({exc})", source, line, col,
                           "write a real date as YYYY-MM-DD (a time as YYYY-MM-DDTHH:MM:SS+03:00), "
                           "or quote the value to keep it text")
    return ConfigError(f"cannot read {value!r} as a number ({exc})", source, line, col,
                       "write the number out, or quote the value to keep it text")


def _anchor(anchors: dict[str, Any], name: str, entry: Any, mark: Any) -> None:
    """Register an anchor as the composer does, refusing a second one of the same name."""
    if name in anchors:
        raise yaml.composer.ComposerError("found duplicate anchor; first occurrence",
                                          anchors[name][3], "second occurrence", mark)
    anchors[name] = entry


def _alias_bomb(source: str, line: int, column: int) -> ConfigError:
    return ConfigError(f"YAML aliases repeat more than {ALIAS_BUDGET} values in this file "
                       "(an alias bomb: anchors that alias anchors multiply)", source, line, column,
                       "alias nothing that holds aliases itself; a group of addresses used in "
                       "many places is better an address of its own, listed by that address")


def _walk(get: Any, source: str, anchors: dict[str, Any],
          bare: frozenset[str] = frozenset()) -> tuple[Any, Any]:
    """Build the root of the document whose DocumentStartEvent was just read;
    return it and its start mark. Counts the values aliases repeat (ALIAS_BUDGET):
    `size` is the values in the open collection so far, each alias counted whole.

    The collection under a key of the root mapping named in `bare` is built of plain
    str, dict and list, without positions (a LocStr is a str and a dict; at 100,000
    aliases the positions were a third of the load); anything there that would need one
    or that the walk reports itself (an anchor, an alias, a key defined twice or not a
    plain value) raises _Positions."""
    Scalar, Alias = yaml.ScalarEvent, yaml.AliasEvent
    MapStart, MapEnd = yaml.MappingStartEvent, yaml.MappingEndEvent
    SeqStart, SeqEnd = yaml.SequenceStartEvent, yaml.SequenceEndEvent
    by_first, wildcard, Str = _BY_FIRST.get, _WILDCARD, LocStr
    stack: list[tuple[Any, ...]] = []
    cur: Any = None              # the open collection, None before the root
    marks: Any = None            # its key_marks (dict) or item_marks (list)
    ismap: bool | None = None    # None: the value built is the root
    key: Any = _NOKEY            # in a mapping: the key waiting for its value
    kline = kcol = 0
    canchor: str | None = None   # the anchor of `cur`
    root_mark: Any = None
    size = 0                     # values in `cur`, itself included, aliases counted whole
    sizes: dict[str, int] = {}   # anchor -> values in its value
    repeated = 0                 # values repeated by aliases so far
    plain = False                # inside a `bare` section
    while True:
        ev = get()
        t = type(ev)
        if t is Scalar and plain:
            if ev.tag is not None:
                raise _Fallback
            if ev.anchor is not None:
                raise _Positions
            value = ev.value
            if ev.implicit[0] and (res := by_first(value[:1], wildcard)):
                obj = _plain(value, res, ev.start_mark, source, 0, 0)
            else:
                obj = value
            weight, line, col = 1, 0, 0
        elif t is Scalar:
            if ev.tag is not None:
                raise _Fallback
            value = ev.value
            m = ev.start_mark
            line, col = m.line + 1, m.column + 1
            if ev.anchor is not None:
                _anchor(anchors, ev.anchor, (None, line, col, m), m)
            if ev.implicit[0] and (res := by_first(value[:1], wildcard)):
                obj = _plain(value, res, m, source, line, col)
            else:
                obj = Str(value)
                obj.__dict__ = {"path": source, "line": line, "column": col}
            if ev.anchor is not None:
                anchors[ev.anchor] = (obj, line, col, m)
                sizes[ev.anchor] = 1
            if root_mark is None:
                root_mark = m
            weight = 1
        elif t is MapStart or t is SeqStart:
            if ev.tag is not None:
                raise _Fallback
            if plain or (bare and ismap and len(stack) == 1 and key is not _NOKEY and key in bare):
                if ev.anchor is not None:
                    raise _Positions
                stack.append((cur, marks, ismap, key, kline, kcol, canchor, size, plain))
                canchor, size, plain, marks = None, 1, True, None
                if t is MapStart:
                    cur, ismap, key = {}, True, _NOKEY
                else:
                    cur, ismap = [], False
                continue
            m = ev.start_mark
            line, col = m.line + 1, m.column + 1
            if root_mark is None:
                root_mark = m
            stack.append((cur, marks, ismap, key, kline, kcol, canchor, size, plain))
            canchor, size = ev.anchor, 1
            if canchor is not None:
                _anchor(anchors, canchor, (_OPEN, line, col, m), m)
            if t is MapStart:
                cur, marks, ismap, key = LocMap(), {}, True, _NOKEY
                cur.__dict__ = {"path": source, "line": line, "column": col, "key_marks": marks}
            else:
                cur, marks, ismap = LocList(), [], False
                cur.__dict__ = {"path": source, "line": line, "column": col, "item_marks": marks}
            continue
        elif t is MapEnd or t is SeqEnd:
            obj, weight = cur, size
            if plain:
                line = col = 0
            else:
                line, col = obj.line, obj.column
            if canchor is not None:
                anchors[canchor] = (obj, line, col, anchors[canchor][3])
                sizes[canchor] = weight
            cur, marks, ismap, key, kline, kcol, canchor, size, plain = stack.pop()
        elif t is Alias:
            if plain:
                raise _Positions
            entry = anchors.get(ev.anchor)
            if entry is None:
                raise yaml.composer.ComposerError(None, None, "found undefined alias", ev.start_mark)
            obj, line, col, m = entry
            if obj is _OPEN:
                raise yaml.constructor.ConstructorError(
                    None, None, "found unconstructable recursive node", m)
            weight = sizes[ev.anchor]
            repeated += weight
            if repeated > ALIAS_BUDGET:
                am = ev.start_mark
                raise _alias_bomb(source, am.line + 1, am.column + 1)
        else:
            raise yaml.composer.ComposerError(None, None, f"unexpected {t.__name__}", ev.start_mark)
        # `obj`, which starts at (line, col), is complete: put it into `cur`
        size += weight
        if plain:
            if ismap:
                if key is _NOKEY:
                    if type(obj) is not str and not isinstance(obj, (int, float, bool)) \
                            and obj is not None or obj in cur:
                        raise _Positions        # the error is reported with its position
                    key = obj
                else:
                    cur[key] = obj
                    key = _NOKEY
            else:
                cur.append(obj)
        elif ismap:
            if key is _NOKEY:
                if type(obj) is not Str and not isinstance(obj, (str, int, float, bool)) \
                        and obj is not None:
                    raise ConfigError("a mapping key must be a plain value", source, line, col,
                                      _KEY_HINT)
                if obj in cur:
                    first = cur.key_line(obj)
                    raise ConfigError(f"key {obj!r} is defined twice (first on line {first})",
                                      source, line, col, "keep one definition")
                key, kline, kcol = obj, line, col
            else:
                cur[key] = obj
                marks[key] = (kline, kcol)
                key = _NOKEY
        elif ismap is not None:
            cur.append(obj)
            marks.append((line, col))
        else:
            return obj, root_mark


def _drain(get: Any, anchors: dict[str, Any]) -> None:
    """Read the rest of the document as the composer would (it composes all of it before the
    constructor sees any of it), so that a syntax error after a building error still wins."""
    Scalar, Alias, DocEnd = yaml.ScalarEvent, yaml.AliasEvent, yaml.DocumentEndEvent
    while True:
        ev = get()
        t = type(ev)
        if t is DocEnd:
            return
        if t is Alias:
            if ev.anchor not in anchors:
                raise yaml.composer.ComposerError(None, None, "found undefined alias", ev.start_mark)
        elif t is Scalar or t is yaml.MappingStartEvent or t is yaml.SequenceStartEvent:
            if ev.tag is not None:
                raise _Fallback         # the node path may construct in another order
            if t is Scalar and ev.implicit[0]:
                for tag, regexp in _BY_FIRST.get(ev.value[:1], _WILDCARD):
                    if regexp.match(ev.value):
                        if tag != _STR and tag not in _SCALARS:
                            raise _Fallback
                        break
            if ev.anchor is not None:
                _anchor(anchors, ev.anchor, (None, 0, 0, ev.start_mark), ev.start_mark)


def _load_events(text: str, source: str, bare: frozenset[str] = frozenset()) -> Any:
    parser = _BaseLoader(text)
    get: Callable[[], Any] = parser.get_event
    try:
        get()                                   # StreamStartEvent
        if type(get()) is yaml.StreamEndEvent:  # else DocumentStartEvent
            return None
        anchors: dict[str, Any] = {}
        failed: BaseException | None = None
        try:
            root, root_mark = _walk(get, source, anchors, bare)
            get()                               # DocumentEndEvent
        except (_Fallback, _Positions, yaml.composer.ComposerError, yaml.parser.ParserError,
                yaml.scanner.ScannerError, yaml.reader.ReaderError):
            raise
        except Exception as exc:                # an error of the constructor's, not the composer's
            failed, root_mark = exc, None
            _drain(get, anchors)
        ev = get()
        if type(ev) is not yaml.StreamEndEvent:
            raise yaml.composer.ComposerError("expected a single document in the stream", root_mark,
                                              "but found another document", ev.start_mark)
        if failed is not None:
            raise failed
        return root
    finally:
        parser.dispose()


# --- The node path: PyYAML's composer and constructor, with LocStr/LocMap/LocList ----------

class _Loader(_BaseLoader):
    source = ""


def _mark(obj: Any, node: yaml.Node, source: str) -> Any:
    obj.path, obj.line, obj.column = source, node.start_mark.line + 1, node.start_mark.column + 1
    return obj


def _construct_str(loader: _Loader, node: yaml.ScalarNode) -> LocStr:
    result: LocStr = _mark(LocStr(loader.construct_scalar(node)), node, loader.source)
    return result


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LocMap:
    result: LocMap = _mark(LocMap(), node, loader.source)
    result.key_marks = {}
    own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    # flatten_mapping puts the merged pairs first, in the order that lets a later one win
    # (the mapping's own keys override merged ones, an earlier merged mapping a later one):
    # what `<<:` is for. Only a key written twice in the mapping itself is refused.
    merged, from_merge = len(node.value) - own, set()
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise ConfigError("a mapping key must be a plain value", loader.source,
                              key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                              _KEY_HINT)
        if key in result and key not in from_merge:
            first = result.key_line(key)
            raise ConfigError(f"key {key!r} is defined twice (first on line {first})", loader.source,
                              key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                              "keep one definition")
        if i < merged:
            from_merge.add(key)
        else:
            from_merge.discard(key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_marks[key] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    return result


def _construct_list(loader: _Loader, node: yaml.SequenceNode) -> LocList:
    result: LocList = _mark(LocList(), node, loader.source)
    result.item_marks = []
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result.item_marks.append((item.start_mark.line + 1, item.start_mark.column + 1))
    return result


def _construct_checked(loader: _Loader, node: yaml.ScalarNode) -> Any:
    """A date, time or number as SafeConstructor makes it, or a ConfigError at its mark."""
    try:
        obj = yaml.constructor.SafeConstructor.yaml_constructors[node.tag](loader, node)
    except ValueError as exc:
        raise _bad_scalar(node.tag, node.value, exc, loader.source, node.start_mark) from None
    return _number(obj, node.value)


_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)
for _tag in ("int", "float", "timestamp"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _construct_checked)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_list)


def _count_repeats(root: yaml.Node, source: str) -> None:
    """ALIAS_BUDGET on a composed document, before the constructor (whose merge-key
    flattening copies too) sees it: a node met again in document order is an alias.
    Iterative: a deep document must not hit the recursion limit here."""
    sizes: dict[int, int] = {id(root): 0}        # 0 while open (an alias inside its anchor)
    repeated = 0

    def kids(node: yaml.Node) -> Iterator[tuple[yaml.Node, yaml.Node]]:
        """(child, where to report it): a mapping value at its key."""
        if isinstance(node, yaml.SequenceNode):
            return ((item, node) for item in node.value)
        if isinstance(node, yaml.MappingNode):
            return (x for k, v in node.value for x in ((k, node), (v, k)))
        return iter(())

    stack = [(root, kids(root), [1])]
    while stack:
        node, todo, size = stack[-1]
        for kid, at in todo:
            seen = sizes.get(id(kid))
            if seen is None and isinstance(kid, yaml.ScalarNode):
                sizes[id(kid)] = 1
                size[0] += 1
                continue
            if seen is None:
                sizes[id(kid)] = 0
                stack.append((kid, kids(kid), [1]))
                break
            repeated += seen
            size[0] += seen
            if repeated > ALIAS_BUDGET:
                raise _alias_bomb(source, at.start_mark.line + 1, at.start_mark.column + 1)
        else:
            stack.pop()
            sizes[id(node)] = size[0]
            if stack:
                stack[-1][2][0] += size[0]


def _load_nodes(text: str, source: str) -> Any:
    loader = _Loader(text)
    loader.source = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count_repeats(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


# The indentation of a line: spaces, tabs and the `- ` of block sequences (`-\tname: x`
# indents `name` with a tab as much as `\t- name: x` does).
_INDENT = re.compile(r"[ \t]*(?:-[ \t]+)*")


def _tab_in_indent(text: str, line: int) -> int:
    """The 1-based column of the first tab in the indentation of `line`, or 0."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return 0
    row = lines[line - 1]
    indent = _INDENT.match(row)
    return indent.group().find("\t") + 1 if indent else 0


# Spaces that look like one and are none to YAML: a no-break space (a routing file pasted
# from a wiki or a mail keeps it), the other Unicode spaces, a zero-width space, a byte
# order mark inside the text. In a value they are text; where YAML wants a space (the
# indentation, after `- ` or `key:`), PyYAML's error named a later line ("did not find
# expected key") or called it a ': ' in a value.
_ODD_SPACE = "\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000\ufeff"
_ZERO_WIDTH = "\u200b\ufeff"     # to delete, not to retype: a BOM of a file joined to another
_ODD_SPACE_AT = re.compile(rf"^[ \t]*(?:-[ \t]*)*[{_ODD_SPACE}]|[:\-][{_ODD_SPACE}]")


def _odd_space_before(text: str, line: int) -> tuple[int, int, str] | None:
    """(line, column, character) of the nearest odd space where YAML wants a space, on
    `line` or above it, or None."""
    lines = text.split("\n")
    for n in range(min(line, len(lines)), max(line - 20, 0), -1):
        m = _ODD_SPACE_AT.search(lines[n - 1])
        if m and _parses_further(lines, n, m.end() - 1, line):
            return n, m.end(), m.group()[-1]
    return None


def _parses_further(lines: list[str], n: int, index: int, line: int) -> bool:
    """Whether the text with that one character a plain space parses, or fails only below
    `line`: the odd space is the cause, not a value's text that happens to hold one."""
    row = lines[n - 1]
    instead = "" if row[index] in _ZERO_WIDTH else " "
    fixed = "\n".join(lines[:n - 1] + [row[:index] + instead + row[index + 1:]] + lines[n:])
    try:
        yaml.compose(fixed, Loader=_BaseLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return mark is not None and mark.line + 1 > line
    except yaml.YAMLError:
        return False
    return True


# --- Faster still: a bare section of one-word scalars, read by a regular expression -------
#
# A machine-written alias file is 100,000s of lines `  key: value`, `  key:` and then
# `  - value` or `    key: value`. A bare section (the indented lines after a `key:` line at
# column 1, up to the next line that starts at column 1) made only of such lines (one
# indentation for the keys, one for each key's lines), blank lines and comments, each scalar one
# plain word of letters, digits and `_ . / + ~ @ = - :` (never first: `@ = - :`, never last:
# `:`; no `:` in a key), is read by a regular expression, 3-4x faster than libyaml's events;
# each scalar is resolved as the walk resolves it (`yes` is True, `12` an int). The file is
# then parsed with the section's lines blank (every other line and column unchanged), and
# the result taken only if its root mapping has the section's key on that line, column 1,
# with an empty value: then the text before the section ends a key of the root mapping the
# same way in both texts, the section's lines are its value, and the parse resumes at the
# next line at column 1 in the same state. Anything else (another layout, a key defined
# twice or not plain, a value that does not resolve, an error anywhere) reads the file as
# before.

_COMMENT = r"#[^\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]*"   # what libyaml reads there
_EOL = rf"(?:[ ]+(?:{_COMMENT})?)?\n"
_SKIP = rf"(?:[ ]*(?:{_COMMENT})?\n)*+"   # possessive: a long run of blank lines is no
# backtracking stack (a skipped section's 225,000 blank lines took 70 MB with `*`)
_KEY = r"[\w./+~][\w./+~@=-]*"
_VALUE = r"[\w./+~][\w./+~@=:-]*(?<!:)"
_ITEM = re.compile(rf"^[ ]*-[ ]+({_VALUE})", re.M)
_PAIR = re.compile(rf"^[ ]*({_KEY}):[ ]+({_VALUE})", re.M)
_SKIP_ALL = re.compile(_SKIP)
_FIRST = re.compile(rf"{_SKIP}([ ]+)[^ #\n]")
_BLOCK_END = re.compile(r"\n[^ #\n]")
_OTHER_BREAKS = "\x85\u2028\u2029"     # line breaks to YAML besides \n, \r (str.find: no regex)
_RESOLVED = frozenset(k for k, v in _BY_FIRST.items() if v) if not _WILDCARD else None
_MISSING: Any = object()


@lru_cache(maxsize=16)
def _entries(indent: int, skips: bool) -> re.Pattern[str]:
    """One entry of a section indented `indent`: `key: value`, or `key:` and its `- value`
    lines (at the key's indentation or two more) or its `key: value` lines (two more);
    with `skips`, blank and comment lines before each line (a pattern without is ~2x
    faster, for files that have none)."""
    at, deeper, skip = " " * indent, " " * (indent + 2), _SKIP if skips else ""
    item = rf"-[ ]+{_VALUE}{_EOL}"
    pair = rf"{_KEY}:[ ]+{_VALUE}{_EOL}"
    return re.compile(rf"{skip}{at}({_KEY}):(?:[ ]+({_VALUE}){_EOL}|{_EOL}"
                      rf"(?:((?:{skip}{at}{item})+|(?:{skip}{deeper}{item})+)"
                      rf"|((?:{skip}{deeper}{pair})+)))")


def _word(text: str) -> Any:
    """A plain scalar as the walk resolves it (bare: a str without position)."""
    res = _BY_FIRST.get(text[:1], _WILDCARD)
    return _plain(text, res, None, "", 0, 0) if res else text


def _bare_block(block: str) -> dict[Any, Any] | None:
    """The value of a section whose lines are `block`, or None if it is not that simple."""
    first = _FIRST.match(block)
    if first is None:
        return None
    indent = len(first.group(1))
    got = _bare_entries(block, _entries(indent, False))
    if got is None:
        got = _bare_entries(block, _entries(indent, True))
    return got


def _bare_entries(block: str, entries: re.Pattern[str]) -> dict[Any, Any] | None:
    out: dict[Any, Any] = {}
    pos, word, items, resolved = 0, _word, _ITEM.findall, _RESOLVED
    if resolved is None:            # a resolver for every first character: never here
        return None
    for m in entries.finditer(block):
        if m.start() != pos:
            return None
        pos = m.end()
        k, v, group, pairs = m.groups()
        key = word(k) if k[:1] in resolved else k
        if type(key) is not str and not isinstance(key, (int, float, bool)) and key is not None \
                or key in out:
            return None
        if v is not None:
            out[key] = word(v) if v[:1] in resolved else v
        elif group is not None:
            out[key] = [word(x) if x[:1] in resolved else x for x in items(group)]
        else:
            inner: dict[Any, Any] = {}
            for k, v in _PAIR.findall(pairs):
                key2 = word(k) if k[:1] in resolved else k
                if type(key2) is not str and not isinstance(key2, (int, float, bool)) \
                        and key2 is not None or key2 in inner:
                    return None
                inner[key2] = word(v) if v[:1] in resolved else v
            out[key] = inner
    if not out or _SKIP_ALL.fullmatch(block, pos) is None:
        return None
    return out


def _load_bare(text: str, source: str, bare: frozenset[str]) -> Any:
    """The document with the bare sections `_bare_block` can read read so; _MISSING when
    none can or the parse of the rest does not confirm them (see above)."""
    text, found = _blank(text, bare, _bare_block)
    if not found:
        return _MISSING
    try:
        root = _load_events(text, source, bare)
    except Exception:           # noqa: BLE001 (reported by the parse of the whole text)
        return _MISSING
    if not _confirms(root, found):
        return _MISSING
    for key, (_, value) in found.items():
        root[key] = value
    return root


def _blank(text: str, keys: Collection[str], read: Callable[[str], Any] | None = None,
           ) -> tuple[str, dict[str, tuple[int, Any]]]:
    """`text` with the lines of each `keys` section written as a block (`key:` alone at
    column 1, then the lines up to the next one at column 1) blank, and for each key so
    blanked its line and `read(block)` (None without `read`; a section `read` cannot read,
    None or an error, is left as it is): every other line and column is unchanged, and
    the key's value in the blanked text is None. Left as it is too, where YAML may read
    the block's lines otherwise (the parse of the whole text then decides): a text with
    line breaks other than \n, a block followed by a line going on a flow collection, one
    that leaves a quote or a bracket open before other sections (`_closed`), one holding an
    anchor beside another anchor or an alias."""
    if "\r" in text or not text.isascii() and any(c in text for c in _OTHER_BREAKS):
        # YAML breaks a line at U+0085, U+2028 and U+2029 too: a "line" of the block that
        # holds one can hold a key at column 1 (`  - r<U+2028>people:`), blanked with it
        return text, {}
    found: list[tuple[int, int, int, str, Any]] = []     # (head, start, stop, key, value)
    for key in keys:
        at = 0 if text.startswith(f"{key}:") else text.find(f"\n{key}:") + 1
        if at == 0 and not text.startswith(f"{key}:"):
            continue
        head = re.compile(rf"{re.escape(key)}:{_EOL}").match(text, at)
        if head is None:
            continue
        end = _BLOCK_END.search(text, head.end() - 1)
        stop = end.start() + 1 if end is not None else len(text)
        if not text.endswith("\n", 0, stop) or text.startswith((",", "}", "]"), stop):
            # a line that goes on a flow collection after the block: the key is one of a
            # flow mapping (`{aliases: {..},` then `rules:`), whose entries the indented
            # lines may hold as well (`  people: {..}`), not only the key's value
            continue
        value = None
        if read is not None:
            try:
                value = read(text[head.end():stop])
            except Exception:   # noqa: BLE001 (a scalar that does not resolve: the walk says why)
                value = None
            if value is None:
                continue
        found.append((head.start(), head.end(), stop, key, value))
    # A quote or a flow collection left open in a block goes on over the line at column 1
    # after it (libyaml reads `  name: "r` / `people: {..} # "` as one name): what follows is
    # not what the blanked text says. Harmless when only blanked sections follow (their
    # keys and lines are all the blanked text has there); else the block must parse alone.
    blanked: dict[str, tuple[int, Any]] = {}
    spans: list[tuple[int, int]] = []    # (start, stop) of the lines to blank
    follows = len(text)                  # where the blanked sections that end the text begin
    for head_at, start, stop, key, value in sorted(found, reverse=True):
        if text.find("&", start, stop) >= 0 and any(
                text.find(c, 0, head_at) >= 0 or text.find(c, stop) >= 0 for c in "&*"):
            # an anchor in the block beside another anchor or an alias: `*x` after the block
            # named an `&x` before it, where the whole text has two (refused, `check`), and
            # each of the two parses of a big reload saw one
            follows = -1
            continue
        if stop != follows and not _closed(text, start, stop):
            follows = -1
            continue
        follows = head_at if stop == follows else -1
        blanked[key] = (text.count("\n", 0, head_at) + 1, value)
        spans.append((start, stop))
    if not spans:
        return text, blanked
    # one new text, not a copy per section (a 5 MB book made three of each)
    pieces: list[str] = []
    at = 0
    for start, stop in sorted(spans):
        pieces += (text[at:start], "\n" * text.count("\n", start, stop))
        at = stop
    pieces.append(text[at:])
    return "".join(pieces), blanked


def _closed(text: str, start: int, stop: int) -> bool:
    """The lines of a section's block (`text[start:stop]`) parse on their own: no quote,
    no flow collection left open at its end (a block with no quote and no bracket has none
    to leave open; looked for in place, the block not copied)."""
    if all(text.find(c, start, stop) < 0 for c in "\"'[{"):    # str.find: ~30x a regex's speed
        return True
    try:
        if _RawParser is not None:      # ~6x faster than yaml.parse
            _RawParser("k:\n" + text[start:stop]).raw_parse()
        else:
            for _ in yaml.parse("k:\n" + text[start:stop], Loader=_BaseLoader):
                pass
    except yaml.YAMLError:
        return False
    return True


def _confirms(root: Any, blanked: dict[str, tuple[int, Any]]) -> bool:
    """The parse of a blanked text has each blanked key on its line, column 1, with no
    value: then the text before a section ends a key of the root mapping as in the whole
    text, and the section's lines are that key's value."""
    return type(root) is LocMap and all(
        root.get(k, _MISSING) is None and root.key_marks.get(k) == (line, 1)
        for k, (line, _) in blanked.items())


@contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic collector off meanwhile (and back on after, if it was): a big routing
    set is a million new objects and no reference cycles, and each collection walked all
    of them (a 100,000-alias build 1.7x slower, a third of a whole load)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def loads(text: str, source: str = "<string>", bare: Collection[str] = (),
          skip: Collection[str] = ()) -> Any:
    """Parse YAML text; syntax errors become ConfigError with the line.

    `bare`: sections (keys of the root mapping) wanted without positions, as plain str,
    dict and list, when they can be (see `_walk`); a caller that reports an error in
    them must load the file again without `bare` to name its line.
    `skip`: sections not wanted, not even read when written as a block (their value is
    then None): for a caller that has what they make already (the supervisor's address
    book, see routing/snapshot.py). The text is parsed whole when the rest does not
    confirm where a section ends (its key on its line, column 1, with no value)."""
    if skip:
        blank, blanked = _blank(text, skip)
        if blanked:
            try:
                root = loads(blank, source, bare)
            except ConfigError:
                root = None
            if _confirms(root, blanked):
                return root
    collecting = gc.isenabled()
    gc.disable()      # a big address book is a million new objects and no garbage:
    try:              # without this the cyclic collector runs ~100 times over them
        try:
            if bare:
                root = _load_bare(text, source, frozenset(bare))
                if root is not _MISSING:
                    return root
                try:
                    return _load_events(text, source, frozenset(bare))
                except _Positions:
                    pass
            return _load_events(text, source)
        except _Fallback:
            return _load_nodes(text, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        tab = _tab_in_indent(text, line)
        if tab:
            raise ConfigError("a tab in the indentation", source, line, tab,
                              "YAML indents with spaces only — replace the tab with spaces") from None
        odd = _odd_space_before(text, line)
        if odd is not None:
            if odd[2] in _ZERO_WIDTH:
                raise ConfigError(f"an invisible U+{ord(odd[2]):04X} ({_space_name(odd[2])}) "
                                  "in the indentation", source, odd[0], odd[1],
                                  "delete it (a byte order mark is left where a file saved with "
                                  "one was joined to another)") from None
            raise ConfigError(f"a U+{ord(odd[2]):04X} ({_space_name(odd[2])}) where YAML wants a "
                              "plain space", source, odd[0], odd[1],
                              "retype it as a plain space (a text pasted from a web page or a "
                              "mail keeps such spaces)") from None
        if exc.context == "while scanning a quoted scalar" and exc.context_mark is not None:
            # "found unexpected end of stream" named the last line of the file
            m = exc.context_mark
            raise ConfigError("this quote is never closed: the value runs to the end of the file",
                              source, m.line + 1, m.column + 1,
                              "close the quote on its line, or remove it") from None
        if exc.problem == "but found another document":
            raise ConfigError("a second YAML document ('---') in a routing file", source, line,
                              col, "one file holds one document: remove the '---' line, or "
                              "move what follows it into a file of its own") from None
        hint = "check indentation and quoting on that line"
        problem = exc.problem or ""
        if problem.startswith("found undefined alias"):
            # `<<: *common` with `&common` in another routing file, or below this line
            name = re.match(r"\*([^\s,\]}]+)", _line_at(text, line)[col - 1:] or "")
            alias = f"*{name.group(1)}" if name else "this alias"
            raise ConfigError(f"{alias} names no anchor defined above it in this file", source,
                              line, col, f"define &{alias.lstrip('*')} above this line in the same "
                              "file (an anchor does not reach into another routing file), or "
                              "write the values out" if name else "define its anchor above it "
                              "in the same file") from None
        deeper = _deeper_than_above(text, line, col) if problem.startswith(
            "mapping values are not allowed") else None
        if deeper is not None:
            # a key indented deeper than the `key: value` line above it: YAML reads it as
            # the rest of that value, and the quoting hint sent the admin the wrong way
            above, gap, here, out_of_place = deeper
            hint = (f"line {above} is indented {_spaces(gap)} where the lines around it have "
                    f"{here}: give it the same indentation as they have" if out_of_place else
                    f"this line is indented {_spaces(here)}, deeper than line {above} above it "
                    f"({gap}), so YAML reads it as the rest of that line's value: indent it "
                    f"as line {above}, or end line {above} at its ':' to open a mapping")
        elif problem.startswith(("did not find expected key",
                                 "did not find expected '-' indicator")) and (
                off := _off_the_line_above(text, line)) is not None:
            # ` lmtp: ...` one space left of `  smtp: ...`: "check indentation" said where,
            # not how far
            above, gap, here = off
            hint = (f"this line is indented {_spaces(here)} and line {above} above it {gap}: "
                    f"the keys of one mapping line up; indent it as line {above}, or as the "
                    "key it belongs to further up")
        elif problem.startswith("mapping values are not allowed"):
            # `new@x: mailbox: sales`, `subject: Re: invoice`: a ': ' inside a plain value
            hint = ("a ': ' inside a value starts a mapping: quote the value "
                    "(subject: 'Re: invoice') or drop the space (mailbox:sales)")
        elif problem.startswith("did not find expected ',' or '}'"):
            hint = ("in {...}, put a value holding ': ' in quotes ({subject: 'Re: invoice'}) "
                    "and separate the entries with ','")
        elif problem.startswith("did not find expected ',' or ']'"):
            hint = ("in [...], separate the entries with ',' and put an entry holding ', ' "
                    "or ': ' in quotes")
        opener = _unclosed_flow(text, exc, line) if problem.startswith(
            ("did not find expected ',' or '}'", "did not find expected ',' or ']'")) else None
        if opener is not None:
            # `then: {tags: [a]` and the next rule below it: the error named the next line
            # ("- name: z") with the quoting hint, not the bracket left open above it
            hint = (f"the '{opener[2]}' opened on line {opener[0]}, column {opener[1]} is "
                    f"never closed: put its '{_CLOSE[opener[2]]}' after its last entry, "
                    + ("before the end of the file" if not "".join(
                        text.split("\n")[line - 1:]).strip() else f"before line {line}"))
        wrong = _line_at(text, line)[col - 1:col]
        mark = exc.context_mark
        if opener is None and mark is not None and wrong in ("}", "]"):
            # `tags: [a}`: the other bracket closes it
            shut = _CLOSE.get(_line_at(text, mark.line + 1)[mark.column:mark.column + 1], "")
            if shut and shut != wrong:
                hint = (f"the '{_line_at(text, mark.line + 1)[mark.column]}' opened on line "
                        f"{mark.line + 1}, column {mark.column + 1} is closed here with "
                        f"'{wrong}': write '{shut}'")
        opened = _quote_ending_at(text, line)
        if opened is not None:
            hint = (f"the quote opened on line {opened[0]}, column {opened[1]} is closed only "
                    "here: close it on its own line")
        raise ConfigError(f"YAML syntax: {exc.problem or exc.context}", source, line, col,
                          hint) from None
    except yaml.reader.ReaderError as exc:     # a character YAML refuses: no mark, a position
        at = exc.position          # libyaml counts UTF-8 bytes, PyYAML's own reader characters
        if exc.encoding != "unicode":
            at = len(text.encode("utf-8", "surrogatepass")[:at].decode("utf-8", "ignore"))
        line, col = _line_col(text, at)
        raise ConfigError(f"character #x{exc.character:04x} is not allowed in YAML"
                          if isinstance(exc.character, int) else f"YAML: {exc.reason}",
                          source, line, col, "delete it: routing files are plain text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML: {exc}", source) from None
    finally:
        if collecting:
            gc.enable()


_CLOSE = {"{": "}", "[": "]"}


def _unclosed_flow(text: str, exc: yaml.MarkedYAMLError, line: int) -> tuple[int, int, str] | None:
    """(line, column, bracket) of a `{` or `[` left open on an earlier line, when the line
    YAML stopped at is no continuation of it (indented no deeper than the bracket's line:
    a key or a list entry of the block around it); None for a comma missing inside it."""
    mark = exc.context_mark
    if mark is None or mark.line + 1 >= line:
        return None
    opened, here = _line_at(text, mark.line + 1), _line_at(text, line)
    bracket = opened[mark.column:mark.column + 1]
    if bracket not in _CLOSE:
        return None
    if here.strip() and (len(here) - len(here.lstrip(" "))
                         > len(opened) - len(opened.lstrip(" "))):
        return None
    return mark.line + 1, mark.column + 1, bracket


def _key_indent(text: str) -> int:
    """Where a line's key starts: its spaces and any `- ` list markers before it."""
    m = re.match(r"(?:[ ]*-[ ]+)*[ ]*", text)
    return m.end() if m else 0


def _deeper_than_above(text: str, line: int, col: int) -> tuple[int, int, int, bool] | None:
    """(the line above, its indentation, this line's, whether the line above is the odd one
    out) when the ': ' YAML refused at `line`:`col` is this line's first and the line is
    indented deeper than the `key: value` line above it (blank and comment lines skipped):

        folder: Finance
      owner: finance-duty     <- the line out of place
        tags: [invoice]       <- "mapping values are not allowed" here

    The line above is the odd one when the line before it has this line's indentation."""
    lines = text.split("\n")
    here = _line_at(text, line)
    if here.find(":") != col - 1:       # a ': ' later in the line: a value to quote
        return None
    got = _above(lines, line, here, ": ")
    if got is None:
        return None
    meaningful, gap, indent = got
    if indent <= gap:
        return None
    odd = len(meaningful) > 1 and _key_indent(lines[meaningful[1] - 1]) == indent
    return meaningful[0], gap, indent, odd


def _above(lines: list[str], line: int, here: str, colon: str
           ) -> tuple[list[int], int, int] | None:
    """(the numbers of the lines above `line` that hold something, nearest first (blank and
    comment lines skipped), the key indentation of the nearest, this line's) when the
    nearest is a `key{colon}value` line; None otherwise (it opens a mapping or a list)."""
    meaningful = [n for n in range(line - 1, 0, -1)
                  if lines[n - 1].strip() and not lines[n - 1].lstrip().startswith("#")]
    if not meaningful:
        return None
    text_above = lines[meaningful[0] - 1]
    gap = _key_indent(text_above)
    _, sep, value = text_above[gap:].partition(colon)
    if not sep or not value.split("#")[0].strip():
        return None
    return meaningful, gap, _key_indent(here)


def _spaces(n: int) -> str:
    return "1 space" if n == 1 else f"{n} spaces"


def _off_the_line_above(text: str, line: int) -> tuple[int, int, int] | None:
    """(the line above, its key's indentation, this line's) when this line holds a key
    (`name:`) indented otherwise than the `key: value` line above it (blank and comment
    lines skipped; a line above that opens a mapping or list is no measure)."""
    lines = text.split("\n")
    here = _line_at(text, line)
    if not re.match(r"[ ]*(?:-[ ]+)*[^\s#:-][^:]*:(\s|$)", here):
        return None
    got = _above(lines, line, here, ":")
    if got is None or got[2] == got[1]:
        return None
    meaningful, gap, indent = got
    return meaningful[0], gap, indent


def _line_at(text: str, line: int) -> str:
    lines = text.split("\n")
    return lines[line - 1] if 1 <= line <= len(lines) else ""


def _space_name(char: str) -> str:
    return unicodedata.name(char, "a space").lower()


def _quote_ending_at(text: str, line: int) -> tuple[int, int] | None:
    """(line, column) where a quoted value that runs over several lines and ends on `line`
    begins, or None: a quote left open on one line is closed by the next quote in the file,
    and the syntax error comes there, far from the mistake."""
    found = None
    try:
        for tok in yaml.scan(text, Loader=_BaseLoader):
            start, end = tok.start_mark.line + 1, tok.end_mark.line + 1
            if start > line:
                break
            if (type(tok) is yaml.ScalarToken and tok.style in ("'", '"') and start < end
                    and end == line):
                found = (start, tok.start_mark.column + 1)
    except yaml.YAMLError:
        pass
    return found


def _line_col(text: str | bytes, at: int) -> tuple[int, int]:
    """1-based line and column of offset `at` in `text`."""
    nl = "\n" if isinstance(text, str) else b"\n"
    start = text.rfind(nl, 0, at) + 1      # type: ignore[arg-type]
    return text.count(nl, 0, at) + 1, at - start + 1      # type: ignore[arg-type]


def _cyrillic_8bit(raw: bytes) -> str | None:
    """'windows-1251' or 'KOI8-R' when the 8-bit bytes of `raw` read as Russian text in it
    (Cyrillic letters are 0xC0-0xFF in both; lower case, most of any text, is 0xE0-0xFF in
    windows-1251 and 0xC0-0xDF in KOI8-R), else None. Russian words are runs of such
    bytes; the accented letters of Latin-1 or windows-1250 text mostly stand alone."""
    high = sum(1 for b in raw if b >= 0x80)
    words = b"".join(re.findall(rb"[\xa3\xa8\xb3\xb8\xc0-\xff]{3,}", raw))    # with ё, Ё
    letters = [b for b in words if b >= 0xC0]
    if len(words) < 0.7 * high or not letters:
        return None
    upper_half = sum(1 for b in letters if b >= 0xE0)
    return "windows-1251" if upper_half * 2 >= len(letters) else "KOI8-R"


def _script(char: str) -> str | None:
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    return "Latin" if name.startswith("LATIN") else "Cyrillic" if name.startswith("CYRILLIC") \
        else None


def mixed_letters(text: str) -> tuple[str, str] | None:
    """(a word, which of its letters are the odd ones: "c is Latin") of a word of `text`
    written with Latin and Cyrillic letters together: `cчёт` with a Latin c, `mаilboxes` with
    a Cyrillic а (the keyboard layout switched mid-word), which look like the word meant and
    are another; None when every word keeps to one alphabet."""
    for word in re.findall(r"[^\W\d_]+", text):
        scripts = [_script(c) for c in word]
        latin = [c for c, s in zip(word, scripts) if s == "Latin"]
        cyrillic = [c for c, s in zip(word, scripts) if s == "Cyrillic"]
        if latin and cyrillic:
            odd, which = (latin, "Latin") if len(latin) <= len(cyrillic) else (cyrillic, "Cyrillic")
            letters = list(dict.fromkeys(odd))
            return word, f"{', '.join(letters)} {'is' if len(letters) == 1 else 'are'} {which}"
    return None


def letters_note(word: object) -> str:
    """" ('mаilboxes': а is Cyrillic)" for a name that mixes the alphabets, else "": said
    beside "unknown key 'mаilboxes'; did you mean 'mailboxes'?", which otherwise reads as
    nonsense, the two looking alike."""
    mixed = mixed_letters(str(word))
    return f" ({mixed[0]!r}: {mixed[1]}; retype it)" if mixed else ""


class NotRegularFile(OSError):
    """A FIFO, a socket or a device where a file was to be read."""


def open_regular(path: str | Path) -> Any:
    """`path` opened to read in binary, when it is a regular file (or a symlink to one);
    NotRegularFile when it is a FIFO or a device, whose read waited for ever (a FIFO
    without a writer, /dev/stdin) or never ended (/dev/zero): with it `check` hung, and a
    reload, and every reload after it. Opened without waiting, then asked what it is."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file (a FIFO, a socket or a device)",
                                 str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def must_be_regular(path: str | Path) -> None:
    """NotRegularFile when `path` is a FIFO, a socket or a device (see `open_regular`); a
    file that is missing or a directory is left to the read that follows."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise NotRegularFile(errno.EINVAL, "not a regular file (a FIFO, a socket or a device)",
                             str(path))


def load(path: str | Path, bare: Collection[str] = (), skip: Collection[str] = ()) -> Any:
    """Read and parse one YAML file (`bare`, `skip`: see `loads`)."""
    p = Path(path)
    try:
        raw = p.read_bytes()     # config.yaml may be a pipe: check -c <(sed ... config.yaml)
    except FileNotFoundError:
        raise ConfigError("file not found", str(p), hint="check the path") from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", str(p)) from None
    return load_bytes(raw, str(p), bare, skip)


def load_bytes(raw: bytes, path: str, bare: Collection[str] = (),
               skip: Collection[str] = ()) -> Any:
    """Parse a file's bytes, read by the caller (`bare`, `skip`: see `loads`): decoded as
    `load` reads a file (UTF-8, universal newlines), an undecodable byte a ConfigError
    naming its line and the charset it looks like. For a caller that hashes the bytes it
    parses (routing.snapshot: a Snapshot's hash describes the rules that run)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # the file as given (`company.yaml` alone was no file from the admin's folder), and
        # the converted copy moved over it, so the line does the whole fix when pasted
        name = shlex.quote(path)
        convert = f"-t UTF-8 {name} > {name}.new && mv {name}.new {name}"
        line, col = _line_col(exc.object, exc.start)
        hint = "save the file as UTF-8"
        legacy = _cyrillic_8bit(exc.object)
        if exc.object.startswith((b"\xff\xfe", b"\xfe\xff")):
            # Windows Notepad's "Unicode": its line and column are of no use (line 1 or a
            # NUL byte's count of newlines), the charset is what to say
            line, col = 1, 1
            hint += f"; it is UTF-16: iconv -f UTF-16 {convert}"
        elif legacy is not None:
            hint += f"; it looks like {legacy}: iconv -f {legacy} {convert}"
        raise ConfigError(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x}: {exc.reason})",
                          path, line, col, hint) from None
    if "\r" in text:       # as read_text: universal newlines
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return loads(text, path, bare, skip)


# --- The hash of a set of files -----------------------------------------------------------
#
# A routing snapshot's hash names the files it was made of: the registry records it with
# each message, /metrics shows it, a reload of files with the same hash keeps the running
# snapshot, and the workers check they all run one set by it. It is over every file's name,
# length and bytes, in order: over the bytes alone, one file's content moved into the next
# (or a file renamed) hashed as before. Each file's bytes are hashed on their own first
# (sha256), so a file can be hashed as it is read, its length known only at the end.

class FilesHash:
    """The hash of files added in order (`add`, or `add_file` reading one from the disk)."""

    def __init__(self, kind: bytes = b"files") -> None:
        self._outer = hashlib.sha256(b"mailrouter routing " + kind + b" 1\n")

    def _entry(self, path: str, size: int, content: bytes) -> None:
        name = path.encode("utf-8", "surrogateescape")
        self._outer.update(len(name).to_bytes(8, "big") + name + size.to_bytes(8, "big")
                           + content)

    def add(self, path: str, data: bytes) -> None:
        self._entry(path, len(data), hashlib.sha256(data).digest())

    def add_chunks(self, path: str, chunks: Iterator[bytes]) -> None:
        """A file's bytes in pieces (what `add` of their concatenation gives)."""
        inner, size = hashlib.sha256(), 0
        for chunk in chunks:
            inner.update(chunk)
            size += len(chunk)
        self._entry(path, size, inner.digest())

    def add_file(self, path: str) -> None:
        """`path` read from the disk 64 KiB at a time; OSError when it cannot be read. In
        pieces: a worker checking a 5 MB book file with `read_bytes` wrote 5 MB of the heap
        it shares with the others (glibc serves it from the heap once bigger blocks were
        freed)."""
        with open_regular(path) as src:
            self.add_chunks(path, iter(lambda: src.read(1 << 16), b""))

    def hexdigest(self) -> str:
        return self._outer.hexdigest()[:16]


def files_hash(items: Iterable[tuple[str, bytes]]) -> str:
    """The hash of files given as (path, bytes), in order."""
    digest = FilesHash()
    for path, data in items:
        digest.add(path, data)
    return digest.hexdigest()


def sections_hash(items: Iterable[tuple[str, bytes]], skip: Collection[str],
                  docs: Sequence[Any] | None = None) -> str | None:
    """The hash of files given as (path, bytes), in order, as `load_bytes(skip=)` parses
    them: each file's text with its `skip` sections blanked (`_blank`), and where each of
    those was. Files whose hashes are equal parse alike but for those sections: what is
    made of the rest of them (routing.files.load_book's address book) is the same.
    Skipped sections that end a file (`rules:` then `tests:`) count by their names only:
    a rule added moves the line of `tests:` and nothing else.
    `docs`: the files' parse by `load_bytes(skip=)`, one a file; a file whose parse was
    not of its blanked text (the rest did not confirm where a section ends, `loads`) gives
    None, as a file that is not UTF-8 does: no hash then says what the parse read."""
    digest = FilesHash(b"sections")
    heads_of = [(f"{k}:".encode(), f"\n{k}:".encode()) for k in skip]
    for i, (path, raw) in enumerate(items):
        if not any(raw.startswith(head) or line in raw for head, line in heads_of):
            # nothing to skip (the address book's file): hashed as its bytes, not decoded
            # and copied (100,000 aliases: ~40 ms of a start's book, in the child)
            digest.add(path, b"\0" + raw)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if "\r" in text:       # as load_bytes
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        blank, blanked = _blank(text, skip)
        if docs is not None and blanked and not _confirms(docs[i], blanked):
            return None
        heads = {line: key for key, (line, _) in blanked.items()}
        # the tail from the first of the last keys (keys and blank lines), walked back
        line = cut = blank.count("\n") + 1
        end = cut_at = len(blank)
        while line > 0:
            start = blank.rfind("\n", 0, end) + 1
            if line in heads:
                cut, cut_at = line - 1, max(start - 1, 0)
            elif blank[start:end].strip():
                break
            end, line = start - 1, line - 1
        where = ",".join(f"{key}:{at}" if at <= cut else key for at, key in sorted(heads.items()))
        digest.add(path, f"{where}\n{blank[:cut_at]}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def hash_files(paths: Iterable[str]) -> str | None:
    """The hash of these files as they are on the disk now; None when one cannot be read."""
    digest = FilesHash()
    try:
        for path in paths:
            digest.add_file(path)
    except OSError:
        return None
    return digest.hexdigest()

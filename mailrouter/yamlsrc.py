"""YAML with source positions, so every configuration error can name file:line.

`load(path)` returns plain Python containers whose strings, mappings and lists
remember where they came from: `LocStr`, `LocMap` and `LocList` carry `.path`,
`.line` and `.column` (1-based); a `LocMap` also knows the position of each key
(`key_line(key)`). Only `config.py`, `addresses.py` and `routing/` see these.

Refused: duplicate keys in one mapping (PyYAML silently keeps the last one, which
hides a typo'd second definition of an alias), YAML tags that construct objects.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import ConfigError

__all__ = ["LocStr", "LocMap", "LocList", "load", "loads", "where"]


class LocStr(str):
    path: str = ""
    line: int = 0
    column: int = 0


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


def where(value: Any, default: Any = None) -> tuple[str, int, int]:
    """(path, line, column) of a loaded value, or of `default` when it has none."""
    for v in (value, default):
        if getattr(v, "line", 0):
            return v.path, v.line, v.column
    return getattr(default, "path", ""), 0, 0


# CSafeLoader exists only when PyYAML was built with libyaml; mypy checks against
# SafeLoader, whose constructor API is the same.
if TYPE_CHECKING:
    _BaseLoader = yaml.SafeLoader
else:
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster


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
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise ConfigError("a mapping key must be a plain value", loader.source,
                              key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        if key in result:
            first = result.key_line(key)
            raise ConfigError(f"key {key!r} is defined twice (first on line {first})", loader.source,
                              key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                              "keep one definition")
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


_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_list)


def loads(text: str, source: str = "<string>") -> Any:
    """Parse YAML text; syntax errors become ConfigError with the line."""
    loader = _Loader(text)
    loader.source = source
    collecting = gc.isenabled()
    gc.disable()      # a big address book is a million new objects and no garbage:
    try:              # without this the cyclic collector runs ~100 times over them
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise ConfigError(f"YAML syntax: {exc.problem or exc.context}", source, line, col,
                          "check indentation and quoting on that line") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML: {exc}", source) from None
    finally:
        if collecting:
            gc.enable()
        loader.dispose()


def load(path: str | Path) -> Any:
    """Read and parse one YAML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", str(p), hint="check the path") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", str(p),
                          hint="save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", str(p)) from None
    return loads(text, str(p))

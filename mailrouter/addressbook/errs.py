"""Collecting every configuration error of one load, with positions and hints."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError, ConfigErrors
from ..yamlsrc import letters_note, where

__all__ = ["Collector", "did_you_mean", "near_address", "at_line"]


def did_you_mean(word: str, choices: Iterable[str], what: str, listing: bool = True) -> str:
    """A hint naming the closest known name, or listing what is allowed (if `listing`)."""
    names = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    if close:   # 'sаles' (a Cyrillic а) and 'sales' look alike: the note says which letter
        return f"did you mean {close[0]!r}?" + letters_note(word)
    if not listing:
        return ""
    if not names:
        return f"none of the {what} is defined"
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"known {what}: {shown}"


def near_address(address: str, known: Iterable[str]) -> str | None:
    """The known address a typo'd `address` most likely meant: close as a whole and in its
    local part, else None. The domain they share made 'sales@example.com' "close" to
    'replies@example.com' (and 'nobody@' to 'abuse@'): a hint that sends the admin to the
    wrong mailbox is worse than none."""
    local = address.partition("@")[0]
    for candidate in difflib.get_close_matches(address, sorted(known), n=5):
        if difflib.SequenceMatcher(None, local, candidate.partition("@")[0]).ratio() >= 0.75:
            return candidate
    return None


def at_line(value: Any, default: Any = None) -> str:
    """`file:line` of a loaded value, for messages that name several places."""
    path, line, _ = where(value, default)
    return f"{path or '<config>'}:{line}"


class Collector:
    """Gathers ConfigErrors; `raise_if_any` raises them all at once, sorted by place."""

    def __init__(self, fail_fast: bool = False) -> None:
        self.errors: list[ConfigError] = []
        self._said: set[tuple[str, str, int, int]] = set()
        self.fail_fast = fail_fast      # raise at the first error (a load that will be redone)
        self.entry: Any = None          # the alias key being read: where a null in it is named

    def add(self, message: str, at: Any, hint: str = "", default: Any = None) -> None:
        """Record one error; the same message at the same place again is dropped (a value
        a YAML alias repeats, met once for each group that lists it). A value without a
        position of its own (a number: `{mailbox: 2026}`) is named at the alias being read:
        it was named at no line, and at config.yaml, not the routing file."""
        path, line, column = where(at, default if default is not None else self.entry)
        if (message, path, line, column) not in self._said:
            self._said.add((message, path, line, column))
            self.errors.append(ConfigError(message, path, line, column, hint))
            if self.fail_fast:
                raise ConfigErrors(self.errors)

    def unknown_keys(self, entry: Any, allowed: Iterable[str], what: str) -> None:
        allowed = list(allowed)
        for key in entry:
            if key not in allowed:
                self.add(f"unknown key {str(key)!r} in {what}", key,
                         did_you_mean(str(key), allowed, "keys"), entry)

    def raise_if_any(self) -> None:
        if self.errors:
            self.errors.sort(key=lambda e: (e.path, e.line, e.column))
            raise ConfigErrors(self.errors)

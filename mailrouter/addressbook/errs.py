"""Collecting every configuration error of one load, with positions and hints."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import ConfigError, ConfigErrors
from ..yamlsrc import letters_note, where

__all__ = ["SCAN_ALL", "Collector", "Near", "did_you_mean", "near_address", "at_line"]


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


# Up to this many names, a did-you-mean is difflib's over all of them; beyond, over those
# within one deletion of the needle either way (Near): difflib against 11,000 addresses for
# each of 7,000 unknown `rcpt:` needles (bench_start's files) took minutes, which the daemon
# spends at each start and reload, when it logs the warnings (Snapshot.warnings); one
# near_address over 100,000 addresses 6.5 s, once per refused recipient of the rule tests.
SCAN_ALL = 2000


class Near:
    """The known name likeliest meant for a needle, as difflib.get_close_matches finds it
    (its ratio, its cutoff), but among few candidates when the names are many: those equal
    to the needle with one character deleted from either (a typo: a letter left out, added,
    changed or two swapped). `budget`: at most that many look-ups, each among at most
    SCAN_ALL names, and no index (the daemon's; None: every one, indexed when many).
    `addresses`: the names are addresses, and the one named must be close in its local
    part too (near_address). The one did-you-mean of addresses for `check`'s warnings,
    `mailrouter address`, `explain`, the rule tests and control's checks: they named
    different addresses for one typo."""

    def __init__(self, names: Sequence[str], budget: int | None = None, *,
                 addresses: bool = False) -> None:
        self.names = names
        self.budget = budget
        self.addresses = addresses
        self.index: dict[str, list[str]] | None = None
        if budget is None and len(names) > SCAN_ALL:
            self.index = {}
            for name in names:
                for key in _deletions(name):
                    self.index.setdefault(key, []).append(name)

    def __call__(self, needle: str) -> list[str]:
        """[the name meant], or [] for none."""
        if self.budget is not None:         # a few look-ups among few names, or none
            if self.budget <= 0 or len(self.names) > SCAN_ALL:
                return []
            self.budget -= 1
        if self.index is None:
            names: Sequence[str] = self.names
        else:
            names = sorted({name for key in _deletions(needle) for name in self.index.get(key, ())})
        if not self.addresses:
            return difflib.get_close_matches(needle, names, n=1)
        # The domain they share made 'sales@example.com' "close" to 'replies@example.com'
        # (and 'nobody@' to 'abuse@'): a hint that sends the admin to the wrong mailbox is
        # worse than none.
        local = needle.partition("@")[0]
        for candidate in difflib.get_close_matches(needle, names, n=5):
            if difflib.SequenceMatcher(None, local, candidate.partition("@")[0]).ratio() >= 0.75:
                return [candidate]
        return []


def _deletions(word: str) -> set[str]:
    return {word, *(word[:i] + word[i + 1:] for i in range(len(word)))}


def near_address(address: str, known: Iterable[str], *, index: bool = True) -> str | None:
    """The known address a typo'd `address` most likely meant: close as a whole and in its
    local part, else None (Near, `addresses`). The Near of the last set of addresses asked
    about is kept: a rule test of many refused recipients indexes the book once.

    `index=False`, for a look-up or two in a long-lived process (control's checks, which
    every worker of the daemon runs at each reload): the same answer from one pass over
    the addresses, with no index made or kept. The index of 100,000 addresses took 430 MB
    in each worker that read a typo'd `control.replies`, held by the cache for good."""
    if index:
        found = _near_of(known if isinstance(known, frozenset) else frozenset(known))(address)
    else:
        names = sorted(set(known))
        if len(names) > SCAN_ALL:        # those Near's index would give: one deletion away
            keys = _deletions(address)
            names = [n for n in names if abs(len(n) - len(address)) <= 1
                     and not keys.isdisjoint(_deletions(n))]
        found = Near(names, addresses=True)(address)
    return found[0] if found else None


@functools.lru_cache(maxsize=1)
def _near_of(known: frozenset[str]) -> Near:
    return Near(sorted(known), addresses=True)


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

"""A read-only mapping kept in a few big objects: the address book's people and mailboxes.

`CompactMap(items, encode, decode)` holds every key (UTF-8) in one `bytes` and every value
encoded as a text (JSON for records) in one str, with `array('i')` offsets; a sorted permutation finds a
key by binary search. Iteration is in the order the items were given, as a dict's is. A value
is decoded on its first use and kept in a per-process cache of at most `CACHE_LIMIT` values.

Why: 10,000 people were 60,000 small objects (Person, its key and address, its implicit
Mailbox and the Maildir path) made among the million objects of the loaded YAML; when those
died, each survivor pinned a 1 MiB memory arena of the process (bench/bench_memory.py: ~20
arenas at 100,000 aliases and 10,000 people). Here they are five objects whatever the size.
Refuses nothing: the values were checked before they got here.
"""

from __future__ import annotations

import datetime as dt
import json
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import accumulate
from typing import Any, Generic, TypeVar

from .model import Mailbox, Person

__all__ = ["CompactMap", "people_map", "mailbox_map", "text_map", "CACHE_LIMIT"]

CACHE_LIMIT = 20_000      # decoded values a process keeps, per mapping

V = TypeVar("V")


def _offsets(sizes: Iterable[int]) -> array[int]:
    return array("i", accumulate(sizes, initial=0))


class CompactMap(Mapping[str, V], Generic[V]):
    """An immutable str -> V mapping stored as bytes, one str and integer arrays."""

    __slots__ = ("_keys", "_key_starts", "_sorted", "_values", "_value_starts", "_decode",
                 "_cache")

    def __init__(self, items: Iterable[tuple[str, V]], encode: Callable[[V], str],
                 decode: Callable[[str], V]) -> None:
        keys: list[bytes] = []
        texts: list[str] = []
        for key, value in items:
            keys.append(key.encode("utf-8", "surrogatepass"))
            texts.append(encode(value))
        self._keys = b"".join(keys)
        self._key_starts = _offsets(map(len, keys))
        self._sorted = array("i", sorted(range(len(keys)), key=keys.__getitem__))
        del keys
        self._values = "".join(texts)
        self._value_starts = _offsets(map(len, texts))
        del texts
        self._decode = decode
        self._cache: dict[str, V] = {}

    def __getstate__(self) -> tuple[Any, ...]:
        """Pickled without the cache of decoded values (see AddressBook.__getstate__)."""
        return (self._keys, self._key_starts, self._sorted, self._values, self._value_starts,
                self._decode)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self._keys, self._key_starts, self._sorted, self._values, self._value_starts,
         self._decode) = state
        self._cache = {}

    def _key(self, n: int) -> bytes:
        return self._keys[self._key_starts[n]:self._key_starts[n + 1]]

    def _find(self, key: str) -> int:
        """The record number of `key`, -1 when absent."""
        want = key.encode("utf-8", "surrogatepass")
        order, lo, hi = self._sorted, 0, len(self._sorted)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._key(order[mid]) < want:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(order) and self._key(order[lo]) == want:
            return order[lo]
        return -1

    def _value(self, n: int) -> V:
        starts = self._value_starts
        return self._decode(self._values[starts[n]:starts[n + 1]])

    def __getitem__(self, key: str) -> V:
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        n = self._find(key) if isinstance(key, str) else -1
        if n < 0:
            raise KeyError(key)
        return self._keep(key, n)

    def _keep(self, key: str, n: int) -> V:
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        value = self._cache[key] = self._value(n)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """`self[key]`, or `default` when absent (without raising and catching KeyError)."""
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        n = self._find(key) if isinstance(key, str) else -1
        return default if n < 0 else self._keep(key, n)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self._cache or self._find(key) >= 0)

    def __iter__(self) -> Iterator[str]:
        """The keys in the order they were given."""
        keys, starts = self._keys, self._key_starts
        return (keys[starts[n]:starts[n + 1]].decode("utf-8", "surrogatepass")
                for n in range(len(starts) - 1))

    def __len__(self) -> int:
        return len(self._key_starts) - 1

    def __repr__(self) -> str:
        return f"CompactMap({len(self)} items)"


def _day(text: str) -> dt.date:
    """A date, or a datetime (YAML gives one for `away: 2027-01-05 10:00`), from isoformat."""
    return dt.datetime.fromisoformat(text) if "T" in text else dt.date.fromisoformat(text)


_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode   # made once


def _encode_person(p: Person) -> str:
    return _json([p.key, p.address, p.name, p.deputy,
                  [[a.isoformat(), b.isoformat()] for a, b in p.away], p.mailbox])


def _decode_person(text: str) -> Person:
    key, address, name, deputy, away, mailbox = json.loads(text)
    return Person(key, address, name, deputy, tuple((_day(a), _day(b)) for a, b in away), mailbox)


def people_map(people: Mapping[str, Person]) -> CompactMap[Person]:
    return CompactMap(people.items(), _encode_person, _decode_person)


def _encode_mailbox(b: Mailbox) -> str:
    return _json([b.name, b.kind, b.where, b.sieve_folders])


def _decode_mailbox(text: str) -> Mailbox:
    return Mailbox(*json.loads(text))


def mailbox_map(mailboxes: Mapping[str, Mailbox]) -> CompactMap[Mailbox]:
    return CompactMap(mailboxes.items(), _encode_mailbox, _decode_mailbox)


def text_map(texts: Mapping[str, str]) -> CompactMap[str]:
    """str -> str: the values stored as they are."""
    return CompactMap(texts.items(), str, str)

"""Canonical form of an address, so that equal addresses compare equal.

`local@domain`: the domain lower-cased and in Unicode (an A-label `xn--...` is
decoded, a U-label goes through IDNA 2003 nameprep, both via the stdlib
`encodings.idna`); the local part lower-cased unless `local_part_case: sensitive`;
the `+detail` split off and returned separately.

Known limits: quoted local parts (`"a b"@x`) are kept as written, quotes included;
IDNA 2003, not 2008 (the stdlib has no 2008 codec): the few labels the two
disagree on (ß, ς, ZWJ) map as 2003 does. A domain the codec refuses is only
lower-cased, so such an address is simply unknown, never a crash.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (registers the "idna" codec)
from collections.abc import Callable
from functools import lru_cache

from .model import Options

__all__ = ["canonical_domain", "split_address", "canonical", "canonicaliser"]


@lru_cache(maxsize=4096)
def canonical_domain(domain: str) -> str:
    """The domain in lower-case Unicode labels; A-labels and U-labels meet here."""
    d = domain.strip().rstrip(".").lower()
    if d.isascii() and "xn--" not in d:
        return d
    try:
        return d.encode("idna").decode("idna").lower()
    except UnicodeError:
        return d


def _local_domain(address: str, options: Options) -> tuple[str, str] | None:
    """(canonical local part, canonical domain), or None when it is not local@domain."""
    a = address.strip()
    if a[:1] == "<" and a[-1:] == ">":
        a = a[1:-1]
    local, at, domain = a.rpartition("@")
    if not at or not local or not domain:
        return None
    if options.local_part_case == "insensitive":
        local = local.lower()
    return local, canonical_domain(domain)


def split_address(address: str, options: Options) -> tuple[str, str, str | None] | None:
    """(local, domain, detail) in canonical form, or None when it is not local@domain."""
    parts = _local_domain(address, options)
    return None if parts is None else (parts[0], parts[1], None)


def canonical(address: str, options: Options) -> str | None:
    """`local@domain` in canonical form, detail included; None when malformed.
    Called once per alias and per alias target (100,000s at build); the domain goes
    through the `canonical_domain` cache."""
    parts = _local_domain(address, options)
    return None if parts is None else f"{parts[0]}@{parts[1]}"


def canonicaliser(options: Options) -> Callable[[str], str | None]:
    """`canonical(text, options)` for the 100,000s of addresses of one build: an address
    written as usual (nothing to strip, no `<...>`) skips the general path's steps, and
    each domain text goes through `canonical_domain` once. Same results as `canonical`."""
    fold = options.fold_local
    domains: dict[str, str] = {}

    def canon(text: str) -> str | None:
        local, _, domain = text.rpartition("@")
        if not local or not domain or local[0] == "<" or local[0].isspace() \
                or domain[-1].isspace():
            return canonical(text, options)
        d = domains.get(domain)
        if d is None:
            d = domains[domain] = canonical_domain(domain)
        return f"{local.lower() if fold else local}@{d}"

    return canon


def detail_split(local: str, options: Options) -> tuple[str, str] | None:
    """(base, detail) when the local part carries a detail, else None."""
    sep = options.detail_separator
    if not sep:
        return None
    base, found, detail = local.partition(sep)
    if not found or not base:
        return None
    return base, detail

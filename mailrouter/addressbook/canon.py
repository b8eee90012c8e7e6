"""Canonical form of an address, so that equal addresses compare equal.

`local@domain`: the domain lower-cased and in Unicode (an A-label `xn--...` is
decoded, a U-label goes through IDNA 2003 nameprep, both via the stdlib
`encodings.idna`); the local part lower-cased unless `local_part_case: sensitive`;
the `+detail` split off and returned separately.

A quoted local part means its content (RFC 5321 4.1.2), as RCPT reads it: `"info"@x` is
`info@x`, `"a\\ b"@x` is `"a b"@x` (`local_form`: quoted only when the content needs it,
escapes written only for `"` and `\\`). The book's keys were kept as written, quotes
included, while RCPT unquoted: an alias '"a b"@x' was accepted and never reached (550 5.1.1).

Case: Unicode full case folding (`str.casefold`), as Postfix's table lookups fold with
`smtputf8_enable = yes` (ICU's u_strFoldCase, U_FOLD_CASE_DEFAULT: util/casefold.c; the same
result as Python's for every code point, checked against postmap): `STRASSE@` is `straße@`,
`οδυσσευσ@` is `οδυσσευς@`, `ſales@` is `sales@`, `finance@` is `ﬁnance@`. Postfix takes mail for
every such spelling of a listed address (`mailrouter postfix`), so the book must too, or it
refuses after Postfix has queued the mail: a bounce to a forged sender. The book's keys keep
the `str.lower` form (as written, lower-cased: `straße@`, `οδυσσευς@`, shown as such); their
folded forms are looked up in `fold_index`, which also refuses two keys one fold makes one
address. A domain is folded the same way before IDNA (`ﬁsh.test` is `fish.test`, as Postfix's
tables read it). ASCII is folded exactly as before (A-Z to a-z).

Known limits: IDNA 2003, not 2008 (the stdlib has no 2008 codec): the few labels the two
disagree on (ß, ς) map as 2003 does. A domain the codec refuses is only
lower-cased, so such an address is simply unknown, never a crash.

Not mapped, though IDNA 2003's nameprep would (`domain_problem` says why): an invisible
character (U+200B ZERO WIDTH SPACE, U+00AD SOFT HYPHEN, U+FEFF, a joiner, a variation
selector: nameprep maps them to nothing), a compatibility character that case folding leaves
as it is (full-width `ｅｘａｍｐｌｅ`; not `ſ`, `µ` or `ﬁ`, which fold to s, μ, fi), a '.'
look-alike (U+3002, U+FF0E, U+FF61), an empty label (`example.com..`).
`sales@example.com<U+200B>` was sales@example.com: delivered to sales while a rule naming
`rcpt: sales@example.com` did not see it, and a sender learned nothing of the typo.
IDNA 2008 (RFC 5891 5.4) refuses all of these in a U-label, as an SMTPUTF8 domain must be
(RFC 6531 3.2); such a domain is left unmapped, so it is none of ours, and RCPT says what
is wrong with it (501 5.1.3); Postfix's tables, which only case-fold, do not take it either.
One trailing '.' (the root) is dropped.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (registers the "idna" codec)
import re
import stringprep
import unicodedata
from collections.abc import Callable, Collection
from functools import lru_cache

from .model import Options

__all__ = ["canonical_domain", "domain_problem", "split_address", "canonical", "canonicaliser",
           "on_our_domains", "a_label", "unquote_local", "local_form", "fold_index"]

_DOT_LIKE = frozenset("\u3002\uff0e\uff61")      # IDNA 2003 reads each as a '.'


# What a local part cannot hold unquoted without being read as something else: white space,
# a control, '"', '\\', '@'. Other specials (`=sum(1+1)@`) are kept as written, as before.
_NEEDS_QUOTES = re.compile(r'[\s\x00-\x1f\x7f"\\@]')
_ESCAPED = re.compile(r"\\(.)")


def unquote_local(local: str) -> str:
    """The content of a quoted local part (backslash escapes undone); any other as it is."""
    if len(local) > 1 and local[0] == local[-1] == '"':
        return _ESCAPED.sub(r"\1", local[1:-1])
    return local


def local_form(content: str) -> str:
    """The one written form of a local part's content: as it is unless it holds what
    `_NEEDS_QUOTES` finds (or is empty), else quoted, with only `"` and `\\` escaped.
    `unquote_local` undoes it."""
    if content and _NEEDS_QUOTES.search(content) is None:
        return content
    return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _root_dot(domain: str) -> str:
    d = domain.strip()
    return d[:-1] if d.endswith(".") else d


def domain_problem(domain: str) -> str | None:
    """Why `domain` is not a domain name as written (ASCII text for a reply), or None.

    An empty label, or a character IDNA 2003 would silently map to another one or to
    nothing (module docstring); a character the codec refuses outright is no problem
    here: the domain simply matches none of ours."""
    d = _root_dot(domain)
    if not d or "" in d.split("."):
        return "an empty label in the domain"
    if d.isascii():
        return None
    for ch in d:
        folded = ch.casefold()
        if folded != ch and not any(_odd(f) for f in folded):
            continue        # ſ, µ, ﬁ: case folding (Postfix's too) makes them s, μ, fi
        name = f"U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')})"
        if ch in _DOT_LIKE:
            return f"{name} in the domain where a '.' belongs"
        if stringprep.in_table_b1(ch) or unicodedata.category(ch) == "Cf":
            return f"the invisible character {name} in the domain"
        if unicodedata.normalize("NFKC", ch) != ch:
            return (f"the compatibility character {name} in the domain, for "
                    f"{unicodedata.normalize('NFKC', ch).encode('ascii', 'backslashreplace').decode()!r}")
    return None


def _odd(ch: str) -> bool:
    """A character `domain_problem` names (the checks of its loop, as one test)."""
    return (ch in _DOT_LIKE or stringprep.in_table_b1(ch) or unicodedata.category(ch) == "Cf"
            or unicodedata.normalize("NFKC", ch) != ch)


@lru_cache(maxsize=4096)
def canonical_domain(domain: str) -> str:
    """The domain in lower-case Unicode labels; A-labels and U-labels meet here. A
    non-ASCII domain is case-folded first (module docstring: `ſales.test` is `sales.test`,
    as Postfix's tables read it). A domain with a `domain_problem` is only folded (so it is
    none of ours)."""
    d = _root_dot(domain)
    d = d.lower() if d.isascii() else d.casefold()
    if d.isascii() and "xn--" not in d:
        return d
    if domain_problem(d) is not None:
        return d
    try:
        return d.encode("idna").decode("idna").lower()
    except UnicodeError:
        return d


def a_label(domain: str) -> str | None:
    """The A-label (xn--) form of a domain, the domain itself when ASCII; None when IDNA
    cannot encode it (what stands where a domain's DNS name must: Postfix's tables, our
    Received: line)."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def on_our_domains(address: str, domains: Collection[str]) -> bool:
    """Is `address` (bare or in <>) local@domain on one of `domains` (the book's, canonical)?
    Its domain is read as the book reads domains: upper case, an A-label (xn--) and the
    Unicode form of one domain are that domain. The one test of "our own address": the
    autoresponder's (never answer ourselves) and control's (a reply of ours) were two, and
    the autoresponder's, comparing the domain as written, answered a@xn--e1afmkfd.xn--p1ai
    though пример.рф is ours."""
    local, at, domain = address.strip().strip("<>").strip().rpartition("@")
    return bool(at and local) and canonical_domain(domain) in domains


def _local_domain(address: str, options: Options) -> tuple[str, str] | None:
    """(canonical local part, canonical domain), or None when it is not local@domain."""
    a = address.strip()
    if a[:1] == "<" and a[-1:] == ">":
        a = a[1:-1]
    local, at, domain = a.rpartition("@")
    if not at or not local or not domain or ("@" in local and local[0] != '"'):
        return None     # a@b@example.com: an unquoted '@' in the local part is no address
    if local[0] == '"' or _NEEDS_QUOTES.search(local) is not None:
        local = local_form(unquote_local(local))
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
                or domain[-1].isspace() or "@" in local or local[0] == '"' \
                or _NEEDS_QUOTES.search(local) is not None:
            return canonical(text, options)
        d = domains.get(domain)
        if d is None:
            d = domains[domain] = canonical_domain(domain)
        return f"{local.lower() if fold else local}@{d}"

    return canon


def detail_split(local: str, options: Options) -> tuple[str, str] | None:
    """(base, detail) when the local part carries a detail, else None; a quoted local part
    is split in its content (`"a b+x"` is `"a b"` with detail `x`)."""
    sep = options.detail_separator
    if not sep:
        return None
    content = unquote_local(local)
    base, found, detail = content.partition(sep)
    if not found or not base:
        return None
    return (base if content is local else local_form(base)), detail


def fold_index(keys: Collection[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """({folded form: key}, [(key, other key) pairs one fold makes one address]) for the
    book's canonical keys (module docstring, "Case"). Only keys whose `str.casefold` is not
    their own (`str.lower`) form are listed (`straße@`, `ﬁnance@`, `οδυσσευς@`): any other key
    is its own folded form. An ASCII key is one (the 100,000 keys of a big book cost one
    `isascii` each). A pair: `strasse@` and `straße@`, which Postfix's tables cannot tell
    apart (nor RCPT `STRASSE@`)."""
    index: dict[str, str] = {}
    clashes: list[tuple[str, str]] = []
    for key in keys:
        if key.isascii():
            continue
        local, _, domain = key.rpartition("@")
        folded = local.casefold()
        if folded == local:
            continue
        form = f"{folded}@{domain}"
        first = index.setdefault(form, key)
        if first != key:
            clashes.append((first, key))
        elif form in keys:
            clashes.append((form, key))
    return index, clashes

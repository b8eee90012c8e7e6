"""The routing files read, parsed and merged, and the address book built of them alone.

What a process that builds only the book imports (`load_book`: the supervisor's child at a
big start, a worker's new interpreter at a big reload, workers.in_new_process): no rules
engine, no message parsing. routing/snapshot.py loads the whole snapshot of the same files
with these helpers.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from .. import yamlsrc
from ..addresses import AddressBook, Limits as BookLimits
from ..config import Limits, unknown_keys, unreadable
from ..errors import ConfigError, ConfigErrors

__all__ = ["SECTIONS", "MAP_SECTIONS", "LIST_SECTIONS", "BARE_SECTIONS", "BOOK_SKIPS",
           "routing_files", "is_backup", "read_files", "load_book", "book_kept"]

MAP_SECTIONS = ("mailboxes", "people", "teams", "aliases", "moved", "calendars", "autoreplies",
                "address_options", "departments")
LIST_SECTIONS = ("domains", "rules", "tests")
SECTIONS = MAP_SECTIONS + LIST_SECTIONS
# The big sections whose file:line only errors name: loaded without positions (yamlsrc's
# `bare`), and all the files loaded again with positions when the load finds an error.
BARE_SECTIONS = ("mailboxes", "people", "aliases")
# What the address book is not made of: not read by `load_book` (the rules of a big set
# are a third of the parse, and the process that builds the book has no use for them)
BOOK_SKIPS = ("rules", "tests")


# What editors and package managers leave beside a file they change: loaded by a glob like
# `rules/*`, a backup defined every name twice (refused) or, a file renamed, old rules beside
# the new. Skipped when a glob matches them, as run-parts and systemd skip them (`check`
# warns, the daemon logs event=routing_file_skipped); a file named on its own is loaded.
BACKUP_SUFFIXES = ("~", ".bak", ".orig", ".rej", ".swp", ".swo", ".swx", ".tmp", ",v",
                   ".dpkg-old", ".dpkg-dist", ".dpkg-new", ".dpkg-tmp", ".dpkg-bak",
                   ".ucf-old", ".ucf-dist", ".ucf-new", ".rpmnew", ".rpmsave", ".rpmorig",
                   ".cfsaved")


def is_backup(path: str) -> bool:
    """An editor's backup, swap, lock or autosave file, or a package manager's leftover:
    foo.yaml~, .#foo.yaml, #foo.yaml#, foo.yaml.swp, foo.yaml.orig, foo.yaml.dpkg-old ..."""
    name = os.path.basename(path)
    return (name.startswith(".#") or (len(name) > 1 and name.startswith("#") and name.endswith("#"))
            or name.endswith(BACKUP_SUFFIXES))


def routing_files(patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the files the patterns name, in order; the backups their globs matched, skipped).
    Raises ConfigErrors when a folder a glob must list cannot be (`_glob`)."""
    found: list[str] = []
    skipped: list[str] = []
    for pattern in patterns:
        if not glob.has_magic(pattern):
            if pattern not in found:
                found.append(pattern)
            continue
        for m in sorted(_glob(pattern)):
            if is_backup(m):
                if m not in skipped:
                    skipped.append(m)
            elif m not in found:
                found.append(m)
    return found, [m for m in skipped if m not in found]


def _glob(pattern: str) -> list[str]:
    """glob.glob(pattern), raising ConfigErrors where glob.glob returns nothing: a folder
    of the pattern that exists and cannot be listed (EMFILE or ENFILE out of descriptors,
    EACCES, EIO). glob.glob swallows every OSError, so a daemon out of file descriptors
    read its routing files as "no routing files match", logged that and reloaded again
    once the descriptors were back. A folder that does not exist (ENOENT, ENOTDIR) is no
    file, as it is to glob.glob. Same matches otherwise: a name starting with "." only for
    a pattern part starting with "."; no `**` recursion (not asked of glob.glob)."""
    head, tail = os.path.split(pattern)
    if not glob.has_magic(pattern):
        return [pattern] if os.path.lexists(pattern) else []
    if not tail:                           # "rules/*/": the folders only, as glob.glob
        return [os.path.join(d, "") for d in _glob(head) if os.path.isdir(d)]
    dirs = _glob(head) if head and head != pattern and glob.has_magic(head) else [head]
    out: list[str] = []
    for d in dirs:
        if not glob.has_magic(tail):
            if os.path.lexists(os.path.join(d, tail)):
                out.append(os.path.join(d, tail))
            continue
        try:
            with os.scandir(d or os.curdir) as it:
                names = [e.name for e in it]
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise ConfigErrors([ConfigError(
                f"cannot list the folder {d or os.curdir} for {pattern}: "
                f"{exc.strerror or exc} (errno {errno.errorcode.get(exc.errno or 0, exc.errno)})",
                hint=("out of file descriptors: raise LimitNOFILE / ulimit -n, or lower "
                      "limits.max_connections; the rules running are kept"
                      if exc.errno in (errno.EMFILE, errno.ENFILE) else
                      "let the user mailrouter runs as read and enter it"
                      if exc.errno == errno.EACCES else ""))]) from exc
        if not tail.startswith("."):
            names = [n for n in names if not n.startswith(".")]
        out.extend(os.path.join(d, n) for n in fnmatch.filter(names, tail))
    return out


def _files(patterns: Sequence[str]) -> list[str]:
    return routing_files(patterns)[0]


def _merge(docs: list[tuple[str, Any]], errors: list[ConfigError],
           blank: Collection[str] = ()) -> dict[str, Any]:
    merged: dict[str, Any] = {k: yamlsrc.LocMap() for k in MAP_SECTIONS}
    for k in MAP_SECTIONS:
        merged[k].key_marks = {}
    merged.update({k: yamlsrc.LocList() for k in LIST_SECTIONS})
    for k in LIST_SECTIONS:     # (file, line, column) of each item, from whichever file
        merged[k].item_where = []
    for path, doc in docs:
        if doc is None:
            # A file emptied by mistake, or caught by the watcher mid-save (truncated, not
            # yet written): it loaded as "no rules", and mail went by the book's defaults
            errors.append(ConfigError("the routing file is empty" if path in blank else
                                      "the routing file holds only comments, no section", path, 1,
                                      1, "write its sections (rules:, aliases: ...), or move it "
                                      "out of what 'routing:' matches"))
            continue
        if not isinstance(doc, dict):
            errors.append(ConfigError("a routing file must be a mapping of sections", path, 1, 1,
                                      "start with e.g. 'aliases:'"))
            continue
        for key, hint in unknown_keys(doc, SECTIONS):
            _, line, col = yamlsrc.where(key)
            if "@" in str(key):     # an alias's line that lost its indentation
                hint = ("an address at the start of a line is read as a section: indent it "
                        "as the addresses under 'aliases:' (or 'moved:') above it are")
            errors.append(ConfigError(f"unknown section '{key}'", path, line, col, hint))
        for key in MAP_SECTIONS:
            _merge_map(merged[key], doc.get(key), key, path, errors)
        for key in LIST_SECTIONS:
            value = doc.get(key)
            if value is None:
                continue
            if not isinstance(value, list):
                _, line, col = yamlsrc.where(value, doc)
                errors.append(ConfigError(f"'{key}' must be a list", path, line, col,
                                          f"write each entry on its own '- ' line under '{key}:'"
                                          + (f", or '{key}: [{value}]'" if key == "domains"
                                             and isinstance(value, str) else "")))
                if key == "domains" and isinstance(value, str):
                    # meant as one domain: taken as such, or every address on it was
                    # "not on one of our domains; add it under domains:" as well
                    merged[key].append(value)
                    merged[key].item_where.append((path, line, col))
                continue
            merged[key].extend(value)
            marks = getattr(value, "item_marks", None) or [(0, 0)] * len(value)
            merged[key].item_where.extend((path, line, col) for line, col in marks)
    return merged


def _merge_map(into: Any, value: Any, key: str, path: str, errors: list[ConfigError]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        _, line, col = yamlsrc.where(value)
        errors.append(ConfigError(f"'{key}' must be a mapping", path, line, col,
                                  f"write 'name: value' entries under '{key}:'"))
        return
    if not into:                # the section's first file: its keys cannot clash
        into.update(value)
        marks = getattr(value, "key_marks", None)
        # a section loaded without positions (BARE_SECTIONS) is a plain dict: no key has any
        into.key_marks.update(marks if marks is not None else dict.fromkeys(value, (0, 0)))
        return
    for k, v in value.items():
        if k in into:
            first = next(x for x in into if x == k)
            _, line, col = yamlsrc.where(k)
            errors.append(ConfigError(
                f"{key} entry '{k}' is defined twice (first at {getattr(first, 'path', '?')}:"
                f"{getattr(first, 'line', '?')})", path, line, col, "keep one definition"))
            continue
        into[k] = v
        into.key_marks[k] = (getattr(k, "line", 0), getattr(k, "column", 0))


def read_files(files: Sequence[str], errors: list[ConfigError]) -> dict[str, bytes]:
    """Each file's bytes, read once: what is hashed is what is parsed (`_read`). A file
    that cannot be read is an error in `errors` and is left out."""
    raws: dict[str, bytes] = {}
    for f in files:
        raw = _read_one(f, errors)
        if raw is not None:
            raws[f] = raw
    return raws


def _read_one(f: str, errors: list[ConfigError]) -> bytes | None:
    try:
        yamlsrc.must_be_regular(f)
        return Path(f).read_bytes()
    except yamlsrc.NotRegularFile as exc:
        errors.append(ConfigError(str(exc.strerror), f, hint="routing files are files saved on the "
                                  "disk: remove it, or move it out of what 'routing:' matches"))
    except FileNotFoundError:
        target = Path(f).readlink() if Path(f).is_symlink() else None
        errors.append(ConfigError(
            "file not found" if target is None else
            f"a symlink to {target}, which does not exist", f,
            hint="check the path" if target is None else "point it at the file, or remove it"))
    except IsADirectoryError:
        errors.append(ConfigError("a directory, not a routing file", f,
                                  hint=f"name its files with a glob: {f.rstrip('/')}/*.yaml"))
    except PermissionError as exc:
        # said only "cannot read: Permission denied": what is in the way, and the fix
        errors.append(unreadable(Path(f)) or ConfigError(f"cannot read: {exc.strerror}", f))
    except OSError as exc:
        errors.append(ConfigError(f"cannot read: {exc.strerror}", f, hint=(
            "a symlink that points, through others, back at itself: point it at the file"
            if exc.errno == errno.ELOOP else "")))
    return None


@dataclass
class _Read:
    docs: list[tuple[str, Any]]
    digest: str
    blank: frozenset[str]        # files with nothing but white space
    raws: dict[str, bytes]       # the bytes of those in `docs` and of those that did not parse


def _read(files: Sequence[str], bare: Sequence[str], skip: Sequence[str],
          errors: list[ConfigError], texts: Mapping[str, bytes] | None = None,
          digest: str | None = None) -> _Read:
    """Each file read once and parsed (yamlsrc.load_bytes' `bare` and `skip`), and the hash
    of the very bytes parsed (yamlsrc.files_hash): read twice, a file saved between the
    reads gave a snapshot whose hash was not of the rules that ran, and a later reload of
    these bytes was kept as "unchanged". A file that cannot be read or parsed is an error
    in `errors`, the others are read. `texts`: the files' bytes (load_snapshot), not read
    from the disk; `digest`: their files_hash, when the caller has it already."""
    raws: dict[str, bytes] = {}
    docs = []
    for f in files:
        raw = texts.get(f) if texts is not None else _read_one(f, errors)
        if raw is None:
            continue
        raws[f] = raw
        try:
            docs.append((f, yamlsrc.load_bytes(raw, f, bare, skip)))
        except ConfigError as exc:
            errors.append(exc)
    return _Read(docs, digest if digest is not None else yamlsrc.files_hash(raws.items()),
                 frozenset(f for f, raw in raws.items() if not raw.strip()), raws)


def read_merged(patterns: Sequence[str], skip: Sequence[str],
                texts: Mapping[str, bytes] | None = None
                ) -> tuple[list[str], _Read, dict[str, Any]] | None:
    """The files (`texts`, else those `patterns` name) read with the book's big sections
    bare (BARE_SECTIONS) and without the `skip` sections, and merged: (the files, what was
    read, the merged sections); None when there are none or they have an error (a whole
    load then finds and reports it). load_book's and snapshot.prepare's first half."""
    files = list(texts) if texts is not None else _files(patterns)
    errors: list[ConfigError] = []
    got = _read(files, BARE_SECTIONS, skip, errors, texts)
    merged = _merge(got.docs, errors, got.blank)
    return (files, got, merged) if files and not errors else None


def load_book(patterns: Sequence[str], limits: Limits, texts: Mapping[str, bytes] | None = None
              ) -> tuple[str, AddressBook] | None:
    """Only the address book of the routing files, and the hash a Snapshot of them would
    have: `load_snapshot(..., built=)`'s `built`. None when the files cannot be read or the
    book's load finds an error: `load_snapshot` then loads them whole and reports it.

    For a process that builds the book to send it to another (daemon: the supervisor's
    child at start, a new process at a worker's reload): the rules are not compiled.
    `texts`: the files' bytes, as load_snapshot's."""
    with yamlsrc.no_gc():
        read = read_merged(patterns, BOOK_SKIPS, texts)
        if read is None:
            return None
        _, got, merged = read
        try:
            book = AddressBook.build(merged, BookLimits(limits.max_alias_depth,
                                                        limits.max_alias_width), fail_fast=True)
        except ConfigErrors:
            return None
        book.made_of = yamlsrc.sections_hash(got.raws.items(), BOOK_SKIPS,
                                             [doc for _, doc in got.docs])
        return got.digest, book


def book_kept(book: AddressBook, limits: Limits, texts: Mapping[str, bytes]
              ) -> tuple[str, AddressBook] | None:
    """`book` as `load_book` of `texts` would build it again, when their address book's
    sections are those it was built of, in the same files at the same lines (only the
    rules or tests changed, `yamlsrc.sections_hash`), and the limits are the same; else
    None. For a reload of big files: the rules' file edited, a new book of 100,000 aliases
    was built in a new process (about 1.4 s of the 2 s the reload took)."""
    if book.made_of is None or book.limits != BookLimits(limits.max_alias_depth,
                                                         limits.max_alias_width):
        return None
    if yamlsrc.sections_hash(texts.items(), BOOK_SKIPS) != book.made_of:
        return None
    return yamlsrc.files_hash(texts.items()), book

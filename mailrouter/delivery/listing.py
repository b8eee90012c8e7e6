"""The names in a Maildir folder's cur/, listed again only when cur/ has changed.

Every new copy searches its folder's cur/ for an earlier copy a reader moved there
(maildir.py), and a listing costs in proportion to what the folder holds: at 10,000
messages in cur/ the daemon's CPU per message went from 1.9 to 5.2 ms (bench/README.md).
A directory's mtime moves with every name added to, removed from or renamed in it, so
while cur/'s device, inode and mtime are what stat() gave just before a listing, that
listing is still what cur/ holds, and it is used again.

The timestamp is coarse (a clock tick; whole seconds on some file systems): a rename in the
same tick as the change before a listing would leave the mtime where it was. So a listing
is kept only when cur/ had not changed for `SETTLED_NS` before the stat: any later rename
gets a later mtime. Known limit: a file system whose stat() answers from a cache (NFS
attribute caching) can show an old mtime; its directory listings come from a cache as well.

Kept: listings of `KEEP_FROM` names or more (a small directory lists faster than it is
looked up), at most `KEEP_CHARS` characters over all folders, the least recently used
dropped first. A folder is stat'ed only once it has been seen that big.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict

__all__ = ["joined_names"]

SETTLED_NS = 2_000_000_000          # cur/ unchanged this long before the stat: keep the listing
KEEP_FROM = 256                     # names; fewer are listed each time
KEEP_CHARS = 16 * 1024 * 1024       # characters of kept listings, all folders together

_Key = tuple[int, int, int]         # st_dev, st_ino, st_mtime_ns


class _Listings:
    def __init__(self) -> None:
        self._kept: OrderedDict[str, tuple[_Key, str]] = OrderedDict()
        self._big: set[str] = set()      # folders whose last listing had KEEP_FROM names or more
        self._chars = 0
        self._lock = threading.Lock()    # the Maildir writer threads share it

    def joined(self, cur: str) -> str:
        """`"\\0" + "\\0".join(os.listdir(cur)) + "\\0"`, from the kept listing when cur/ has
        not changed since it was made."""
        key: _Key | None = None
        settled = False
        if cur in self._big:
            started = time.time_ns()
            st = os.stat(cur)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns)
            with self._lock:
                got = self._kept.get(cur)
                if got is not None and got[0] == key:
                    self._kept.move_to_end(cur)
                    return got[1]
            settled = started - st.st_mtime_ns >= SETTLED_NS
        names = os.listdir(cur)
        joined = "\0" + "\0".join(names) + "\0"
        with self._lock:
            self._drop(cur)
            if len(names) < KEEP_FROM:
                self._big.discard(cur)
            else:
                self._big.add(cur)
                if key is not None and settled and len(joined) <= KEEP_CHARS:
                    self._kept[cur] = (key, joined)
                    self._chars += len(joined)
                    while self._chars > KEEP_CHARS:
                        self._drop(next(iter(self._kept)))
        return joined

    def _drop(self, cur: str) -> None:
        got = self._kept.pop(cur, None)
        if got is not None:
            self._chars -= len(got[1])


_LISTINGS = _Listings()


def joined_names(cur: str) -> str:
    """The names in directory `cur`, each between NUL characters (see the module docstring)."""
    return _LISTINGS.joined(cur)

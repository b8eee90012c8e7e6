"""delivery/listing.py: a folder's cur/ listed again only when it has changed, on real
directories; and through Maildir, a copy a reader moved into a big cur/ is still found."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailrouter.delivery import listing
from mailrouter.delivery.maildir import Maildir

MSG = b"Subject: a\r\n\r\nx\r\n"


def _big_cur(path: Path, n: int = listing.KEEP_FROM + 10) -> str:
    path.mkdir(parents=True)
    for i in range(n):
        (path / f"old{i}:2,S").touch()
    return str(path)


def _age(cur: str, seconds: float = 60) -> None:
    """cur/ last changed `seconds` ago, as a folder nobody has touched lately."""
    st = os.stat(cur)
    os.utime(cur, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = os.listdir

    def listdir(path: str) -> list[str]:
        calls.append(path)
        return real(path)
    monkeypatch.setattr(listing.os, "listdir", listdir)
    return calls


def test_a_settled_big_cur_is_listed_once_and_a_rename_into_it_is_seen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cur = _big_cur(tmp_path / "cur")
    _age(cur)
    calls = _counting(monkeypatch)
    names = _Names()
    first = names(cur)
    assert names(cur) == names(cur) == first and "\0old3:2,S\0" in first
    assert len(calls) == 2          # seen big, then listed and kept, then reused
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "mrfeed").touch()
    os.rename(tmp_path / "new" / "mrfeed", tmp_path / "cur" / "mrfeed:2,S")   # a reader
    assert "\0mrfeed:2,S\0" in names(cur)
    assert len(calls) == 3


def test_a_cur_changed_just_now_is_listed_every_time(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A change in the same clock tick as the last one would leave the mtime as it was:
    a listing of a folder that changed within SETTLED_NS is not kept. Here the second
    change is made to keep the first one's mtime exactly."""
    cur = _big_cur(tmp_path / "cur")
    calls = _counting(monkeypatch)
    names = _Names()
    names(cur)
    names(cur)
    st = os.stat(cur)
    (tmp_path / "cur" / "mrfeed:2,S").touch()
    os.utime(cur, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "\0mrfeed:2,S\0" in names(cur)
    assert len(calls) == 3


def test_small_folders_are_not_kept_and_the_kept_total_is_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "small"
    small.mkdir()
    (small / "a:2,S").touch()
    _age(str(small))
    calls = _counting(monkeypatch)
    names = _Names()
    for _ in range(3):
        assert names(str(small)) == "\0a:2,S\0"
    assert len(calls) == 3
    monkeypatch.setattr(listing, "KEEP_CHARS", 3 * len(names(_aged_big(tmp_path / "b0"))))
    for i in range(1, 6):
        names(_aged_big(tmp_path / f"b{i}"))
        names(str(tmp_path / f"b{i}"))
    assert 0 < names.kept_chars() <= listing.KEEP_CHARS


async def test_a_copy_moved_into_a_big_settled_cur_is_not_written_twice(tmp_path: Path) -> None:
    md = Maildir(tmp_path / "box", "mx.test")
    first = await md.deliver(MSG, "c0ffee", None)
    cur = str(tmp_path / "box" / "cur")
    _fill(cur)
    for n in range(3):        # seen big, kept, reused: each time the copy is in new/
        assert await md.deliver(MSG, "c0ffee", None) == first
        assert await md.deliver(MSG, f"other{n}", None) != first
    moved = os.path.join(cur, "mrc0ffee:2,S")
    os.rename(first, moved)
    assert await md.deliver(MSG, "c0ffee", None) == moved
    assert not _exists(first)


def _fill(cur: str) -> None:
    for i in range(listing.KEEP_FROM + 10):
        Path(cur, f"old{i}:2,S").touch()
    _age(cur)


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _aged_big(path: Path) -> str:
    cur = _big_cur(path)
    _age(cur)
    return cur


class _Names:
    """A listing cache of the test's own (the module's one is shared by the process)."""

    def __init__(self) -> None:
        self._listings = listing._Listings()

    def __call__(self, cur: str) -> str:
        return self._listings.joined(cur)

    def kept_chars(self) -> int:
        return self._listings._chars

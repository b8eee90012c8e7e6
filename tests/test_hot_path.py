"""The message's hot path (issue 15): shortcuts that must give what the long way gives."""

from __future__ import annotations

import errno
import os
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter import charsets, metrics
from mailrouter.charsets import decode_header_bytes
from mailrouter.delivery.maildir import Maildir, _exists, _in_cur
from mailrouter.loops import header_text
from mailrouter.message import MessageView

ASCII_HEADER = st.binary(max_size=60).map(lambda b: bytes(c & 0x7F for c in b)) | st.text(
    alphabet="ab =?\t\r\n\0Qq_xyz", max_size=40).map(str.encode)


def _fields(d: charsets.Decoded) -> tuple[object, ...]:
    return d.text, d.charset, d.notes, d.defects


@settings(max_examples=400, deadline=None)
@given(ASCII_HEADER)
def test_plain_ascii_shortcut_decodes_as_the_words_do(data):
    """An ASCII value without '=?' skips the RFC 2047 split and the guess: same text, same
    (no) notes and defects as the long way, NUL and folding included."""
    short = _fields(decode_header_bytes(data))
    long_way = pytest.MonkeyPatch()
    long_way.setattr(charsets, "_plain_ascii", lambda _: False)
    try:
        assert _fields(decode_header_bytes(data)) == short
    finally:
        long_way.undo()


def test_plain_ascii_is_not_taken_for_words_or_8bit():
    assert charsets._plain_ascii(b"Re: hello")
    assert not charsets._plain_ascii(b"=?utf-8?q?x?=")
    assert not charsets._plain_ascii("Счёт".encode("koi8-r"))
    assert decode_header_bytes(b"=?utf-8?q?=D0=A1?=").text == "С"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_header_text_drops_the_controls_it_dropped(text):
    """The regex removes exactly what the character loop removed: below space, and DEL,
    but for a run of TAB, CR, LF, VT, FF, which is one space; the line separators of
    str.splitlines() beyond those become spaces."""
    white = re.sub(r"[\t\r\n\v\f]+", " ", text)
    assert header_text(text) == "".join(" " if ch in "\x85\u2028\u2029" else ch for ch in white
                                        if ch >= " " and ch != "\x7f").strip()


def test_view_reads_each_property_once_and_stores_it():
    """The lock-free cached_property keeps its value in the instance's __dict__."""
    view = MessageView(b"From: A <a@example.com>\r\nSubject: hi\r\n\r\nbody\r\n")
    assert "subject" not in view.__dict__
    assert view.subject == "hi"
    assert view.__dict__["subject"] == "hi"
    view.__dict__["subject"] = "changed"          # later reads come from the instance
    assert view.subject == "changed"


def test_metrics_child_is_the_labelled_series():
    child = metrics.child(metrics.DELIVERIES, "maildir", "ok")
    assert child is metrics.DELIVERIES.labels("maildir", "ok")
    assert metrics.child(metrics.DELIVERIES, "maildir", "ok") is child
    before = child._value.get()
    metrics.child(metrics.DELIVERIES, "maildir", "ok").inc()
    assert metrics.DELIVERIES.labels("maildir", "ok")._value.get() == before + 1


def test_received_date_is_the_second_it_was_made():
    from mailrouter.config import DeliveryConfig
    from mailrouter.delivery.deliverer import Deliverer

    d = Deliverer(DeliveryConfig(maildir_root=Path("/nonexistent")), "mx.test")
    a = datetime(2026, 12, 5, 11, 0, 1, 999_999, tzinfo=UTC)
    b = datetime(2026, 12, 5, 11, 0, 2, 1, tzinfo=UTC)
    assert d._date_text(a) == format_datetime(a)
    assert d._date_text(a.replace(microsecond=5)) == format_datetime(a)
    assert d._date_text(b) == format_datetime(b) != format_datetime(a)


def test_exists_is_pathlib_exists(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for name in ("f", "missing", "f/under-a-file", "loop", "a\0b"):
        assert _exists(os.path.join(tmp_path, name)) == (tmp_path / name).exists(), name


def test_exists_raises_what_pathlib_raises(monkeypatch, tmp_path):
    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "denied", path)
    monkeypatch.setattr(os, "stat", denied)
    with pytest.raises(PermissionError):
        _exists(str(tmp_path / "x"))
    with pytest.raises(PermissionError):
        (tmp_path / "x").exists()


async def test_copy_paths_are_the_names_pathlib_made(tmp_path):
    """The path a copy reports (new/, or cur/ after a reader moved it) is the string the
    Path objects gave."""
    md = Maildir(tmp_path / "box", "mx.test")
    got = await md.deliver(b"Subject: a\r\n\r\nx\r\n", "c0ffee", "Финансы")
    assert got == str(tmp_path / "box" / ".&BCQEOAQ9BDAEPQRBBEs-" / "new" / "mrc0ffee")
    moved = Path(got).parent.parent / "cur" / "mrc0ffee:2,S"
    os.rename(got, moved)
    assert await md.deliver(b"Subject: a\r\n\r\nx\r\n", "c0ffee", "Финансы") == str(moved)
    assert _in_cur(moved.parent, "mrc0ffee") == str(moved)


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4095, 4096, 65536, 65537, 300_000])
def test_content_hash_is_sha256_of_the_bytes(size):
    """Hashed in pieces under 2048 bytes (the GIL stays with the loop): the same digest."""
    import hashlib
    raw = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert MessageView(raw).content_hash == hashlib.sha256(raw).hexdigest()


def test_short_message_is_hashed_without_letting_go_of_the_gil(monkeypatch):
    """Every piece handed to hashlib is under HASHLIB_GIL_MINSIZE (2048) up to 64 KB."""
    import hashlib

    from mailrouter import message
    sizes: list[int] = []
    real = hashlib.sha256

    class Spy:
        def __init__(self) -> None:
            self.inner = real()

        def update(self, data: bytes) -> None:
            sizes.append(len(data))
            self.inner.update(data)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setattr(message.hashlib, "sha256", lambda *a: Spy())
    message.sha256_hex(b"y" * 60_000)
    assert sizes and max(sizes) < 2048 and sum(sizes) == 60_000

"""The files inside Outlook's TNEF wrapper (winmail.dat): tnef.files on real streams from
another project's corpus (tests/corpus/README.md), on every cut and on damaged bytes, and
through MessageView and the rules: a rule on attachment names sees the files inside it."""

from __future__ import annotations

import base64
import random
import struct

import pytest

from mailrouter.message import MessageView
from mailrouter.tnef import SIGNATURE, files
from tests.support.rules import route, snapshot
from tests.test_rules import ROOT

CORPUS = ROOT / "tests" / "corpus" / "tnef"

# the names tnefparse's own tests expect of these streams, and the sizes of their data
EXPECTED = {
    "two-files": [("AUTHORS", 244), ("README", 893)],
    "long-filename": [("allproductsmar2000.dat", 279)],
    "unicode-mapi-attr": [("example.dat", 1024)],
    "data-before-name": [("AUTOEXEC.BAT", 0), ("CONFIG.SYS", 0), ("boot.ini", 289)],
    "umlaut": [("TBZ PARIV GmbH.jpg", 44764), ("image003.jpg", 1001), ("UmlautAnhang-äüö.txt", 14)],
    "garbage-at-end": [],
    "multi-name-property": [],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_streams_give_their_files(name: str) -> None:
    assert files((CORPUS / f"{name}.tnef").read_bytes()) == EXPECTED[name]


def test_a_stream_cut_anywhere_gives_the_files_read_before_the_cut() -> None:
    data = (CORPUS / "two-files.tnef").read_bytes()
    whole = files(data)
    for end in range(len(data)):
        got = files(data[:end])
        done = max(len(got) - 1, 0)          # the last one may be cut in its name or data
        assert len(got) <= len(whole), end
        assert [n for n, _ in got[:done]] == [n for n, _ in whole[:done]], end
    assert files(data[:-2]) == whole          # the last checksum is not needed


def test_damaged_bytes_never_raise() -> None:
    data = bytearray((CORPUS / "umlaut.tnef").read_bytes())
    rng = random.Random(2027)
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(6, len(damaged))] = rng.randrange(256)
        assert isinstance(files(bytes(damaged)), list)
    assert files(b"") == files(b"not tnef at all") == files(b"\x78\x9f\x3e\x22") == []


def _with_winmail(stream: bytes, ctype: str = "application/ms-tnef") -> bytes:
    encoded = base64.encodebytes(stream).replace(b"\n", b"\r\n")
    return (b"From: Outlook User <user@corp.example>\r\nTo: invoices@example.com\r\n"
            b"Subject: documents\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            b"--b\r\nContent-Type: " + ctype.encode() + b'; name="winmail.dat"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="winmail.dat"\r\n\r\n'
            + encoded + b"--b--\r\n")


@pytest.mark.parametrize("ctype", ["application/ms-tnef", "application/octet-stream"])
def test_the_files_inside_winmail_dat_are_attachments_after_it(ctype: str) -> None:
    view = MessageView(_with_winmail((CORPUS / "umlaut.tnef").read_bytes(), ctype))
    got = [(a.filename, a.content_type, a.size) for a in view.attachments]
    assert got == [("winmail.dat", ctype, 60314),
                   ("TBZ PARIV GmbH.jpg", "image/jpeg", 44764),
                   ("image003.jpg", "image/jpeg", 1001),
                   ("UmlautAnhang-äüö.txt", "text/plain", 14)]


def test_a_rule_on_attachment_names_sees_the_files_inside_winmail_dat() -> None:
    snap = snapshot("""\
rules:
  - {name: txt, when: {attachment: {glob: '*anhang*.txt'}, attachment_count: 4}, then: {folder: Attached}}
""")
    raw = _with_winmail((CORPUS / "umlaut.tnef").read_bytes())
    assert route(snap, raw, "sales@example.com").folder == "Attached"
    plain = _with_winmail(b"\x78\x9f\x3e\x22 cut short")
    assert route(snap, plain, "sales@example.com").folder != "Attached"


def _attribute(level: int, attr: int, data: bytes) -> bytes:
    return bytes([level]) + struct.pack("<II", attr, len(data)) + data + b"\0\0"


@pytest.mark.parametrize("kind", [0x1001, 0x1003, 0x1014], ids=["MV_NULL", "MV_LONG", "MV_I8"])
def test_a_multi_value_count_past_the_stream_is_damage(kind: int) -> None:
    """A MAPI multi-valued property of a fixed-size type whose count says 2**32 - 1 in a
    100-byte winmail.dat: its values were read without looking at the bytes left (0 bytes
    each for PT_NULL), one loop and one kept tuple per value, gigabytes of memory and
    minutes per message, each retry of the MTA again. It is damage: the files read before
    it are listed, with the title they had."""
    props = struct.pack("<IHHI", 1, kind, 0x0001, 0xFFFFFFFF)
    stream = (SIGNATURE + b"\x01\x00" + _attribute(2, 0x00069002, b"\x01\x00")
              + _attribute(2, 0x00018010, b"invoice.pdf\0") + _attribute(2, 0x00069005, props))
    assert files(stream) == [("invoice.pdf", 0)]
    view = MessageView(_with_winmail(stream))
    assert [a.filename for a in view.attachments] == ["winmail.dat", "invoice.pdf"]


def _mapi(tag: int, kind: int, value: bytes) -> bytes:
    if kind == 0x0003:
        return struct.pack("<HH", kind, tag) + value
    padded = value + b"\0" * (-len(value) % 4)
    return struct.pack("<HHII", kind, tag, 1, len(value)) + padded


def test_a_message_attached_as_an_item_is_named_by_its_subject() -> None:
    """Outlook's "attach as item" (PR_ATTACH_METHOD 5) in MimeKit's christmas.tnef
    (jstedfast/MimeKit UnitTests/TestData/tnef, MIT; 821 KB, not kept: its layout is
    rebuilt here): attAttachTitle "Untitled Attachment", an 89-byte attAttachData, the
    subject in PR_DISPLAY_NAME and the message in PR_ATTACH_DATA_OBJ (16-byte IID first).
    Both forwarded invoices were "Untitled Attachment", 89 bytes: no rule saw their subject."""
    inner = SIGNATURE + b"\x01\x00" + b"x" * 6492
    props = (struct.pack("<I", 3) + _mapi(0x3001, 0x001E, "Счёт №42\0".encode("cp1251"))
             + _mapi(0x3701, 0x000D, b"\x07\x03\x02\x00" + b"\0" * 12 + inner)
             + _mapi(0x3705, 0x0003, struct.pack("<I", 5)))
    stream = (SIGNATURE + b"\x01\x00" + _attribute(1, 0x00069007, struct.pack("<II", 1251, 0))
              + _attribute(2, 0x00069002, b"\x01\x00") + _attribute(2, 0x00018010, b"Untitled Attachment\0")
              + _attribute(2, 0x0006800F, b"\0" * 89) + _attribute(2, 0x00069005, props)
              # a file beside it keeps its own name and size
              + _attribute(2, 0x00069002, b"\x01\x00") + _attribute(2, 0x00018010, b"scan.pdf\0")
              + _attribute(2, 0x0006800F, b"%PDF" * 10))
    assert files(stream) == [("Счёт №42.eml", len(inner)), ("scan.pdf", 40)]
    snap = snapshot("""\
rules:
  - {name: inv, when: {attachment: {glob: '*счет*'}}, then: {folder: Finance}}
""")
    assert route(snap, _with_winmail(stream), "sales@example.com").folder == "Finance"


def test_an_attached_items_subject_with_a_slash_keeps_its_words() -> None:
    """An item whose subject holds a '/' ("Счёт 42/2026", as invoices are numbered) was
    listed as "2026.eml": the name's last segment, as for a file sent with its folders,
    and a rule on `*счет*` missed it. The '/' is written '_' instead."""
    props = (struct.pack("<I", 3) + _mapi(0x3001, 0x001E, "Счёт 42/2026\\b\0".encode("cp1251"))
             + _mapi(0x3701, 0x000D, b"\x07\x03\x02\x00" + b"\0" * 12 + b"x" * 50)
             + _mapi(0x3705, 0x0003, struct.pack("<I", 5)))
    stream = (SIGNATURE + b"\x01\x00" + _attribute(1, 0x00069007, struct.pack("<II", 1251, 0))
              + _attribute(2, 0x00069002, b"\x01\x00") + _attribute(2, 0x00069005, props))
    assert files(stream) == [("Счёт 42_2026_b.eml", 50)]
    assert [a.filename for a in MessageView(_with_winmail(stream)).attachments] == [
        "winmail.dat", "Счёт 42_2026_b.eml"]
    snap = snapshot("""\
rules:
  - {name: inv, when: {attachment: {glob: '*счет*'}}, then: {folder: Finance}}
""")
    assert route(snap, _with_winmail(stream), "sales@example.com").folder == "Finance"

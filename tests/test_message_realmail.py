"""MessageView on real mail from other projects' test corpora: what a reader of it sees.

The samples are copied byte for byte into tests/corpus/ (``real_*.eml``); tests/corpus/README.md
names each one's origin, commit and licence.
"""

from __future__ import annotations

from pathlib import Path

from mailrouter.charsets import decode_bytes
from mailrouter.message import MessageView

CORPUS = Path(__file__).parent / "corpus"


def view(name: str) -> MessageView:
    return MessageView((CORPUS / name).read_bytes())


def test_pound_prices_under_iso_8859_1() -> None:
    """A price list labelled iso-8859-1 (SpamAssassin's ryanairmail.com): 38 pound signs
    and nothing else 8-bit were read as windows-1250 ('Fares from Ł 6.25'), £ being scored a
    rare sign and Ł a common Polish letter. A price sign glued to a letter stays rare:
    ISO-8859-2 'Łódź' under iso-8859-1 is still read as Polish."""
    v = view("real_latin1_pound_prices.eml")
    assert "Fares from £ 6.25 one way" in v.body_text
    assert (v.body_charset, v.charset_notes) == ("iso8859-1", [])
    lodz = decode_bytes("Łódź, ul. Piotrkowska".encode("iso8859-2"), "iso-8859-1")
    assert (lodz.text, lodz.notes) == ("Łódź, ul. Piotrkowska",
                                       ["declared iso-8859-1 but bytes are iso8859-2"])


def test_spanish_under_an_unknown_charset() -> None:
    """'=?INVALID?Q?=A1Hola,_se=F1or!?=' (mail-mime-parser's headers/invalid-charset) was
    guessed ISO-8859-2, 'ĄHola, seńor!': ¡ opening a word counted as a sign glued to it.
    The other words of the sample (koi8-r, UTF-7, UTF-8 split over folded lines) read right."""
    v = view("real_unknown_charset_spanish.eml")
    assert v.subject == "TEST ¡Hola, señor!"
    assert v.charset_notes == ["Subject: guessed cp1252 for unknown charset 'invalid'"]
    assert v.header("Test") == "Технические работы (ERP Галактика и Отчеты ТД)"
    assert v.header("Subject-X") == "FAMILY eCarsharing GAUTING STA-CL51E - Buchung geändert Text"
    assert v.to == [("Müller Müzner", "muzner@example.com")]
    assert v.cc == [("Andreas Müzner", "andreas.muzner@example.com")]


def test_norwegian_under_iso_8859_1() -> None:
    """'=?iso-8859-1?Q?J=F8rn_St=F8ylen?=' and the same name in the iso-8859-1 body (the mail
    gem's header_fields_with_empty_values.eml) were read as windows-1250, 'Jřrn Střylen':
    ø was a letter of no language in the tables, Czech ř a common one."""
    v = view("real_norwegian_iso8859_1.eml")
    assert v.from_name == "Jørn Støylen"
    assert "Jørn Støylen -- http://www.prikkprikkprikk.no" in v.body_text
    assert (v.body_charset, v.charset_notes) == ("iso8859-1", [])
    for text in ("Møte på fredag", "Blåbærsyltetøy", "Kære Søren"):     # unlabelled
        assert decode_bytes(text.encode("cp1252"), None).text == text

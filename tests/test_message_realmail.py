"""MessageView on real mail from other projects' test corpora: what a reader of it sees.

The samples are copied byte for byte into tests/corpus/ (``real_*.eml``); tests/corpus/README.md
names each one's origin, commit and licence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrouter.charsets import CYRILLIC_BODY_CANDIDATES, decode_bytes, guess_decode, inspect_bytes
from mailrouter.explain import explain
from mailrouter.message import MessageView
from mailrouter.routing.snapshot import Snapshot
from tests.support.rules import ROOT, load, route, snapshot
from tests.test_message import RU_SUBJECTS

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


def test_words_of_latin_letters_alone_are_not_cyrillic() -> None:
    """Words of 8-bit bytes alone, which looks_cyrillic counts, in Latin text: a file name
    'attachment.äöü' in ISO-8859-1 (james-mime4j's attachment-filename-encoding-Latin1.msg)
    was 'attachment.дць', a Finnish raw 8-bit Subject and us-ascii body (SpamAssassin's
    fp-bug4352-att2882) read 'tдssд on jotain skandeja ццц', and a newsletter's border
    (SpamAssassin's welcomelists/linuxplanet) '·ёё·ґЇ`'."""
    latin1 = view("real_latin1_filename_umlauts.eml")
    assert ([a.filename for a in latin1.attachments], latin1.charset_notes) == (
        ["attachment.äöü"], [])
    finnish = view("real_finnish_raw_8bit.eml")
    assert finnish.subject == "tässä on jotain skandeja ööö"
    assert "öäöäöäöäöä ruåtsalainen åå." in finnish.body_text
    assert finnish.charset_notes == ["Subject: raw 8-bit guessed cp1252",
                                     "Body: declared us-ascii but bytes are cp1252"]
    border = view("real_latin1_decorations.eml")
    assert "P L A N E T\n·¸¸·´¯`·¸¸·´¯`" in border.body_text
    assert border.body_charset == "cp1252"


def test_short_cyrillic_still_reads_cyrillic() -> None:
    """The Latin reading competes and loses on short Cyrillic: capitals in the body-only
    charsets, Ukrainian and Bulgarian, under no label and under Western ones."""
    body = ("koi8-r", "cp1251", "cp866", "mac-cyrillic")
    for text, codec in (("УФНС", "cp866"), ("Уже", "mac-cyrillic"), ("Рахунок", "cp1251"),
                        ("Здравейте, изпращам фактурата.", "koi8-r"), ("Щит", "koi8-r")):
        data = text.encode(codec)
        assert decode_bytes(data, None, body).text == text
        assert decode_bytes(data, "us-ascii", body).text == text
    assert decode_bytes("Счет на оплату".encode("cp1251"), "iso-8859-1").text == "Счет на оплату"


def test_raw_cjk_headers_are_read_in_the_message_charset() -> None:
    """Raw 8-bit Chinese Subject and From of messages whose text is labelled gb2312 or big5
    (SpamAssassin's t/data/nice/cjk/gb2312.1 and big5-base64.1) were guessed in a
    single-byte charset: 'х╚пбт╜в╟╫Ь©зё╛' (KOI8-R), '[SLAT-talk] šdĂű6¤ë17' (ISO-8859-2)."""
    gb = view("real_gb2312_raw_headers.eml")
    assert gb.subject == "全新原装进口，送货上门，货到付款－台湾鑫龙商贸集团公司向您拜年!"
    assert gb.from_name == "台湾鑫龙商贸集团公司"
    assert gb.header("Subject") == gb.subject
    assert gb.charset_notes == ["Subject: raw 8-bit read as gb18030, the message's charset",
                                "From: raw 8-bit read as gb18030, the message's charset"]
    big5 = view("real_big5_raw_subject.eml")
    assert big5.subject.startswith("[SLAT-talk] 鉅靡6月17日新片又到.如有重複寄發.敬請原諒!")


def test_a_single_byte_message_charset_leaves_the_guess_alone() -> None:
    """Only a multi-byte charset is tried for raw header bytes: a raw windows-1251 Subject of
    a koi8-r message is still guessed (and a raw UTF-8 one is UTF-8 under gb2312)."""
    raw = "Subject: Счет на оплату\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\nx\r\n"
    v = MessageView(raw.encode("cp1251"))
    assert (v.subject, v.charset_notes) == ("Счет на оплату", ["Subject: raw 8-bit guessed cp1251"])
    utf8 = MessageView("Subject: 你好\r\nContent-Type: text/plain; charset=gb2312\r\n\r\nx\r\n".encode())
    assert (utf8.subject, utf8.charset_notes) == ("你好", ["Subject: raw 8-bit guessed utf-8"])


def test_eight_bit_japanese_under_a_7_bit_label() -> None:
    """ISO-2022-JP is 7-bit; EUC-JP (sisimai's lhost-ezweb-02.eml, a bounce) and Shift_JIS
    (SpamAssassin's fp_bug6149_thomas_4480) under its label were replacement characters
    from end to end. A 7-bit ISO-2022-JP text keeps its label, and one stray 8-bit byte is
    not taken for a character (the mail gem's 'Dij\\x8aat.' under iso-2022-jp)."""
    euc = view("real_eucjp_under_iso2022jp.eml")
    assert euc.body_text.startswith("次のあて先へのメッセージはエラーのため送信できませんでした。")
    assert euc.body_charset == "euc_jp"
    assert "Body: declared iso-2022-jp but bytes are euc_jp" in euc.charset_notes
    sjis = view("real_sjis_under_iso2022jp.eml")
    assert sjis.body_text.startswith("●お名前\nテスト by Interwave\n")
    assert (sjis.body_charset, sjis.charset_notes) == (
        "cp932", ["Body: declared ISO-2022-JP but bytes are cp932"])
    body = sjis.body_text.encode("euc_jp", "replace") * 300        # read a piece at a time
    assert inspect_bytes(body, "iso-2022-jp", size=4096).charset == "euc_jp"
    jis = decode_bytes("お名前 テスト".encode("iso2022_jp"), "iso-2022-jp")
    assert (jis.text, jis.charset, jis.notes) == ("お名前 テスト", "cp50220", [])
    stray = decode_bytes(b"01 Quien Te Dij\x8aat. Pitbull.mp3", "iso-2022-jp")
    assert stray.text == "01 Quien Te Dij\ufffdat. Pitbull.mp3"


def test_japanese_without_a_usable_label() -> None:
    """Shift_JIS text under us-ascii (SpamAssassin's t/data/spam/008) was guessed
    windows-1252 ('“dŽqƒ�[ƒ‹�L��ŽÐ'): the guess knew no Japanese. Kana tell it, two bad
    pairs in a thousand characters notwithstanding; Russian text never reads as kana."""
    v = view("real_sjis_under_us_ascii.eml")
    assert "電子メール広告社\n\n今後、広告をご希望されない方はここへ" in v.body_text
    assert v.charset_notes == ["Body: declared us-ascii but bytes are cp932"]
    body = v.body_text.encode("cp932", "replace") * 100                 # a piece at a time
    assert inspect_bytes(body, None, CYRILLIC_BODY_CANDIDATES, size=4096).charset == "cp932"
    assert guess_decode("今後、広告をご希望".encode("euc_jp")) == ("今後、広告をご希望", "euc_jp")
    prose = " ".join(RU_SUBJECTS)
    for codec in CYRILLIC_BODY_CANDIDATES:
        assert guess_decode(prose.encode(codec), CYRILLIC_BODY_CANDIDATES)[1] == codec


@pytest.fixture(scope="module")
def example_rules() -> Snapshot:
    return load(ROOT / "rules" / "routing.yaml")


@pytest.mark.parametrize("path", sorted(CORPUS.glob("real_*.eml")), ids=lambda p: p.name)
def test_explain_and_routing_read_every_real_sample(path: Path, example_rules: Snapshot) -> None:
    """`mailrouter explain` on the example rules decides for every real sample, reading every
    property without a failure of its own ('cannot decode' in its defects)."""
    report = explain(example_rules, path.read_bytes(), ["support@example.com"], None)
    assert len(report["recipients"]) == 1
    assert not [d for d in report["defects"] if "cannot decode" in d]


def test_both_text_parts_of_rfc2046s_sample() -> None:
    """RFC 2046 section 5.1.1's sample multipart/mixed (MIME-tools' multi-simple.msg, via
    james-mime4j): two text parts, both shown by a reader; the second was not body text."""
    v = view("real_rfc2046_two_text_parts.eml")
    assert v.body_text == ("This is implicitly typed plain ASCII text.\n"
                           "It does NOT end with a linebreak.\n"
                           "This is explicitly typed plain ASCII text.\n"
                           "It DOES end with a linebreak.\n")
    assert "preamble" not in v.body_text and "epilogue" not in v.body_text


def test_a_bounce_from_the_null_address_is_a_robot(example_rules: Snapshot) -> None:
    """The DragonFly Mail Agent's bounce (sisimai lhost-dragonfly-02) says `From: MAILER-DAEMON
    <>` and carries no DSN: only a mail system writes the null address in From. Forwarded to
    us with the forwarder's envelope sender, it was a person's mail to the rules (robot false:
    the example rules' `robots` rule did not tag it), while the autoresponder already knew it
    for a bounce. A name with a real address stays a person."""
    v = view("real_dragonfly_null_from_bounce.eml")
    assert v.robot == (True, "null address in From: MAILER-DAEMON <>")
    report = explain(example_rules, v.raw, ["support@example.com"], "fwd@relay.example")
    assert report["robot"] == {"robot": True, "reason": v.robot[1]}
    assert "robot" in report["recipients"][0]["tags"]
    person = MessageView(b"From: MAILER-DAEMON fan <ann@client.example>\r\nSubject: hi\r\n\r\nhi\r\n")
    assert person.robot == (False, "")


def test_a_blank_plain_alternative_gives_way_to_the_html() -> None:
    """rspamd's empty_part.eml: a multipart/alternative whose text/plain part is one blank
    line and whose HTML holds the words (the shape Outlook Express and bulk mailers write,
    and imap_tools' Yandex double_fields.eml after its unclosed last boundary). The body was
    '', so a rule on the body never matched what every reader shows; it is the HTML's text.
    A plain part with words in it still wins over the HTML."""
    v = view("real_blank_plain_beside_html.eml")
    assert v.body_text == "HTML part only. The previous part makes the controller process crash"
    assert v.body_charset == "iso8859-1"
    snap = load_text_rule()
    raw = (CORPUS / "real_blank_plain_beside_html.eml").read_bytes()
    assert route(snap, raw, "sales@example.com").folder == "Crash"
    worded = raw.replace(b"7bit\n\n\n", b"7bit\n\nplain words\n")
    assert MessageView(worded).body_text.strip() == "plain words"
    assert route(snap, worded, "sales@example.com").folder != "Crash"


def load_text_rule() -> Snapshot:
    return snapshot("""\
rules:
  - {name: crash, when: {body: {contains: controller}}, then: {folder: Crash}}
""")


def test_a_mailman_digest_without_list_headers_is_list_mail() -> None:
    """CPython's Lib/test/test_email/data/msg_02.txt: a Mailman 2.0.4 digest with no List-*
    header and no Precedence, only X-Mailman-Version (which Mailman writes on all it sends).
    A rule's `robot: true` missed it; the autoresponder was kept off only by its From
    (ppp-request@), and the same digest from a list named otherwise was answered."""
    raw = (CORPUS / "real_mailman_digest_no_list_headers.eml").read_bytes()
    assert MessageView(raw).robot == (True, "mailing list (X-Mailman-Version present)")
    renamed = raw.replace(b"ppp-request@zzz.org", b"ppp@zzz.org")
    assert MessageView(renamed).robot == (True, "mailing list (X-Mailman-Version present)")

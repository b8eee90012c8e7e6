"""The same Russian and Czech message in every form mailers write it: the same rules match.

One message (subject, a body phrase, an attachment name, a From name) is built in each
charset (KOI8-R, windows-1251, IBM866, ISO-8859-5, UTF-8; ISO-8859-2, windows-1250, UTF-8),
transfer encoding (8bit, quoted-printable, base64), subject form (RFC 2047 B and Q, split
into several words, a character split across two, folded, raw 8-bit), file-name form (RFC
2231 with and without language and continuations, RFC 2047 in a quoted filename=, name=
only, raw 8-bit), From form, body form (HTML only, with entities, an alternative) and label
spelling (case, aliases, a space in the quotes). A reader shows each the same; each must
match the four rules of its language through a real snapshot, as the daemon decides.
Forms that cannot be told apart (an unlabelled ISO-8859-5 body, read as windows-1251) are
left out: see README.md, "Charsets".
"""

from __future__ import annotations

import base64
import quopri
import urllib.parse
from typing import Any

import pytest

from mailrouter.message import MessageView
from mailrouter.routing.snapshot import Snapshot
from tests.support.rules import mail, route, snapshot

RULES = """
rules:
""" + "".join(f"""
  - name: {name}
    when: {{{when}}}
    then: {{tags: [{name}]}}
    continue: true
""" for name, when in [
    ("ru_subject", 'subject: {contains: "счёт на оплату"}'),
    ("ru_body", 'body: {contains: "просим оплатить до пятницы"}'),
    ("ru_att", 'attachment: {glob: "договор поставки*.pdf"}'),
    ("ru_from", 'from_name: {glob: "*бухгалтерия*"}'),
    ("cz_subject", 'subject: {contains: "žádost o fakturu č. 7"}'),
    ("cz_body", 'body: {contains: "prosíme o zaplacení"}'),
    ("cz_att", 'attachment: {glob: "smlouva o dílo*.pdf"}'),
    ("cz_from", 'from_name: {glob: "*účtárna*"}'),
    ("starts", 'subject: {starts_with: "счёт на оплату"}'),
])

TEXT = {
    "ru": {"subject": "Счёт на оплату №42", "frm": "Бухгалтерия ООО Ромашка",
           "body": "Добрый день! Просим оплатить до пятницы.\nС уважением, Ирина",
           "name": "Договор поставки.pdf"},
    "cz": {"subject": "Žádost o fakturu č. 7", "frm": "Účtárna Novák s.r.o.",
           "body": "Dobrý den, prosíme o zaplacení do pátku.\nS pozdravem, Jana",
           "name": "Smlouva o dílo.pdf"},
}
LABELS = {"koi8-r": "koi8-r", "cp1251": "windows-1251", "cp866": "ibm866",
          "iso8859-5": "iso-8859-5", "utf-8": "utf-8", "iso8859-2": "iso-8859-2",
          "cp1250": "windows-1250"}
CHARSETS = [("ru", c) for c in ("koi8-r", "cp1251", "cp866", "iso8859-5", "utf-8")] + [
    ("cz", c) for c in ("iso8859-2", "cp1250", "utf-8")]
WANT = {lang: {f"{lang}_{k}" for k in ("subject", "body", "att", "from")} for lang in TEXT}


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    return snapshot(RULES)


def encode(text: str, codec: str) -> bytes:
    """KOI8-R has no №: its mailers write N."""
    return text.replace("№", "N").encode(codec) if codec == "koi8-r" else text.encode(codec)


def words(text: str, codec: str, label: str, kind: str = "B", chunk: int = 0) -> list[str]:
    """RFC 2047 encoded-words of `chunk` bytes each (0: one word); a chunk may end inside a
    character, as mailers split them."""
    data = encode(text, codec)
    out = []
    for piece in [data[i:i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]:
        if kind == "B":
            out.append(f"=?{label}?B?{base64.b64encode(piece).decode()}?=")
        else:
            q = "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else
                        "_" if b == 32 else f"={b:02X}" for b in piece)
            out.append(f"=?{label}?Q?{q}?=")
    return out


def text_part(text: str, ctype: str, codec: str, label: str | None, cte: str) -> bytes:
    data = text.encode(codec, "xmlcharrefreplace").replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        data = quopri.encodestring(data).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    elif cte == "base64":
        data = base64.encodebytes(data).replace(b"\n", b"\r\n")
    params = f"; charset={label}" if label else ""
    return (f"Content-Type: {ctype}{params}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode()
            + data + b"\r\n")


def build(lang: str, codec: str, *, label: str | None = None, subject: str = "B", chunk: int = 0,
          fold: bool = False, name: str = "2231", sender: str = "B", cte: str = "8bit",
          body: str = "plain", body_label: str | None = "") -> bytes:
    """The message of `lang` in `codec`, in the form the keywords say."""
    t, label = TEXT[lang], label or LABELS[codec]
    if sender == "raw":
        head = [b'From: "' + encode(t["frm"], codec) + b'" <acc@client.example>']
    else:
        word = words(t["frm"], codec, label, sender.strip('"'))[0]
        quote = '"' if sender.startswith('"') else ""
        head = [f"From: {quote}{word}{quote} <acc@client.example>".encode()]
    head.append(b"To: sales@example.com")
    if subject == "raw":
        head.append(b"Subject: " + encode(t["subject"], codec))
    else:
        head.append(("Subject: " + ("\r\n " if fold else " ").join(
            words(t["subject"], codec, label, subject, chunk))).encode())
    head += [b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="MIX"']
    blabel = label if body_label == "" else body_label
    html = "<html><body><p>" + t["body"].replace("\n", "<br>") + "</p></body></html>"
    if body == "plain":
        part = text_part(t["body"], "text/plain", codec, blabel, cte)
    elif body == "html":
        part = text_part(html, "text/html", codec, blabel, cte)
    elif body == "entities":            # every letter as &#1057; (any label, even us-ascii)
        part = text_part("".join(c if c.isascii() else f"&#{ord(c)};" for c in html),
                         "text/html", codec, blabel, cte)
    else:                               # multipart/alternative: plain and HTML
        part = (b'Content-Type: multipart/alternative; boundary="ALT"\r\n\r\n--ALT\r\n'
                + text_part(t["body"], "text/plain", codec, blabel, cte) + b"--ALT\r\n"
                + text_part(html, "text/html", codec, blabel, cte) + b"--ALT--\r\n")
    pct = urllib.parse.quote(encode(t["name"], codec), safe="")
    half = next(i for i in range(len(pct) // 2, len(pct)) if "%" not in pct[i - 2:i])
    ctype, disposition = "application/pdf", {
        "2231": f"attachment; filename*={label}''{pct}",
        "2231-language": f"attachment; filename*={label}'{lang}'{pct}",
        "2231-continued": f"attachment;\r\n filename*0*={label}''{pct[:half]};\r\n"
                          f" filename*1*={pct[half:]}",
        "2231-fallback": f"attachment; filename=\"____.pdf\"; filename*={label}''{pct}",
        "2047-quoted": f'attachment; filename="{words(t["name"], codec, label)[0]}"',
        "2047-split": 'attachment;\r\n filename="'
                      + "\r\n ".join(words(t["name"], codec, label, "B", 9)) + '"',
        "name-only": "attachment",
        "raw": "",
    }[name]
    if name == "name-only":
        ctype += f'; name="{words(t["name"], codec, label)[0]}"'
    att = f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n".encode()
    att += (b'Content-Disposition: attachment; filename="' + encode(t["name"], codec) + b'"'
            if name == "raw" else f"Content-Disposition: {disposition}".encode())
    return (b"\r\n".join(head) + b"\r\n\r\n--MIX\r\n" + part + b"--MIX\r\n" + att
            + b"\r\n\r\nJVBERi0xLjQK\r\n--MIX--\r\n")


# (name, keywords): each form of the message, built in every charset of CHARSETS
FORMS: list[tuple[str, dict[str, Any]]] = [
    ("base", {}),
    ("qp", {"cte": "quoted-printable"}),
    ("base64", {"cte": "base64"}),
    ("subject-Q", {"subject": "Q"}),
    *[(f"subject-{k}-{n}-bytes{'-folded' if f else ''}", {"subject": k, "chunk": n, "fold": f})
      for k in ("B", "Q") for n in (3, 5) for f in (False, True)],
    ("name-2231-language", {"name": "2231-language"}),
    ("name-2231-continued", {"name": "2231-continued"}),
    ("name-2231-with-fallback", {"name": "2231-fallback"}),
    ("name-2047-quoted", {"name": "2047-quoted"}),
    ("name-2047-split-folded", {"name": "2047-split"}),
    ("name-only-in-content-type", {"name": "name-only"}),
    ("from-Q", {"sender": "Q"}),
    ("from-2047-in-quotes", {"sender": '"B"'}),
    *[(f"body-{b}-{c}", {"body": b, "cte": c}) for b in ("html", "entities", "alternative")
      for c in ("8bit", "base64")],
    ("body-entities-us-ascii", {"body": "entities", "body_label": "us-ascii"}),
    ("body-unlabelled", {"body_label": None}),     # not ISO-8859-5: see _cases
]


def _cases() -> list[Any]:
    # unlabelled ISO-8859-5 is read as windows-1251, as Thunderbird reads it with its
    # Cyrillic default: the guess knows KOI8-R, windows-1251, IBM866 and x-mac-cyrillic
    out = [pytest.param(lang, codec, kw, id=f"{lang}-{codec}-{name}")
           for lang, codec in CHARSETS for name, kw in FORMS
           if not (codec == "iso8859-5" and name == "body-unlabelled")]
    for lang, codec in CHARSETS:
        label = LABELS[codec]
        for spelling in (label.upper(), f'"{label} "'):
            out.append(pytest.param(lang, codec, {"body_label": spelling},
                                    id=f"{lang}-{codec}-body-label-{spelling.strip(chr(34))}"))
    aliases = {"cp1251": ["cp1251", "win-1251", "x-cp1251", "Windows-1251"],
               "koi8-r": ["koi8r", "KOI8-R", "x-koi8-r", "csKOI8R"],
               "cp866": ["cp866", "IBM866", "866"], "iso8859-5": ["ISO_8859-5", "cyrillic"],
               "utf-8": ["UTF8", "utf-8*ru"], "cp1250": ["win-1250", "x-cp1250", "CP1250"],
               "iso8859-2": ["latin2", "l2", "iso_8859-2", "csISOLatin2"]}
    for lang, codec in CHARSETS:
        out += [pytest.param(lang, codec, {"label": a}, id=f"{lang}-{codec}-label-{a}")
                for a in aliases[codec]]
    # raw 8-bit headers with no charset anywhere: decided by the guess, which knows these
    # (IBM866 and ISO-8859-5 since they were read as windows-1251: «‘зсв \xad\xa0 ®Ї«\xa0вг»)
    out += [pytest.param(lang, codec, {field: "raw"}, id=f"{lang}-{codec}-raw-{field}")
            for lang, codec in CHARSETS for field in ("subject", "sender", "name")]
    return out


@pytest.mark.parametrize(("lang", "codec", "kw"), _cases())
def test_every_form_of_the_message_matches_the_same_rules(snap: Snapshot, lang: str, codec: str,
                                                          kw: dict[str, Any]) -> None:
    raw = build(lang, codec, **kw)
    tags = set(route(snap, raw, "sales@example.com", "acc@client.example").tags) - {"starts"}
    view = MessageView(raw)
    assert tags == WANT[lang], (view.subject, view.from_name,
                                [a.filename for a in view.attachments], view.body_text[:60])


# A message whose text is declared in a Cyrillic charset other than KOI8-R and
# windows-1251 (a DOS mailer's IBM866, an ISO-8859-5 one), with its Subject and From in that
# charset, raw: the guess, among KOI8-R and windows-1251 alone, read them as windows-1251
# ("‘зсв \xad\xa0 ®Ї«\xa0вг" for «Счёт на оплату»); a reader reads them in the message's
# charset (Thunderbird), and so do we now.
def single_part(lang: str, codec: str, label: str, ctype: str = "text/plain") -> bytes:
    t = TEXT[lang]
    body = t["body"] if ctype == "text/plain" else f"<p>{t['body']}</p>"
    return (b'From: "' + encode(t["frm"], codec) + b'" <acc@client.example>\r\n'
            b"To: sales@example.com\r\nSubject: " + encode(t["subject"], codec)
            + f"\r\nMIME-Version: 1.0\r\nContent-Type: {ctype}; charset={label}\r\n"
              "Content-Transfer-Encoding: 8bit\r\n\r\n".encode()
            + body.replace("\n", "\r\n").encode(codec) + b"\r\n")


@pytest.mark.parametrize("ctype", ["text/plain", "text/html"])
@pytest.mark.parametrize(("lang", "codec", "label"), [
    ("ru", "cp866", "ibm866"), ("ru", "cp866", "cp866"), ("ru", "iso8859-5", "iso-8859-5"),
    ("ru", "koi8-r", "koi8-r"), ("ru", "cp1251", "windows-1251"), ("ru", "utf-8", "utf-8"),
    ("ru", "koi8-r", "windows-1251"),     # the other one under the label: still read as it is
    ("cz", "cp1250", "windows-1250"), ("cz", "iso8859-2", "iso-8859-2"),
])
def test_raw_headers_are_read_in_the_declared_cyrillic_charset(
        snap: Snapshot, lang: str, codec: str, label: str, ctype: str) -> None:
    raw = single_part(lang, codec, label, ctype)
    view = MessageView(raw)
    assert view.subject == encode(TEXT[lang]["subject"], codec).decode(codec)
    assert view.from_name == TEXT[lang]["frm"]
    tags = set(route(snap, raw, "sales@example.com", "acc@client.example").tags)
    assert tags == WANT[lang] - {f"{lang}_att"} | ({"starts"} if lang == "ru" else set())


# Characters a reader shows as nothing (soft hyphen, zero-width space and joiners, word
# joiner, direction marks, byte order mark) cut the word they were in: "опла\u00adтить" was
# "опла" and "тить", and a subject after a BOM did not start with its first word.
@pytest.mark.parametrize("ch", ["\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\u200e",
                                "\u202a", "\ufeff"])
def test_invisible_characters_do_not_cut_words(snap: Snapshot, ch: str) -> None:
    raw = mail(f"{ch}Re: {ch}Счёт на оп{ch}лату №42", f"Просим опла{ch}тить до пят{ch}ницы")
    raw = raw.replace(b"Content-Type: text/plain; charset=utf-8\r\n",
                      b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
                      b"Content-Type: text/plain; charset=utf-8\r\n")
    name = f"До{ch}говор по{ch}ставки.pdf".encode()
    raw += (b"--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''"
            + urllib.parse.quote(name, safe="").encode() + b"\r\n\r\nJVBERi0xLjQK\r\n--B--\r\n")
    tags = set(route(snap, raw, "sales@example.com").tags)
    assert tags == {"ru_subject", "ru_body", "ru_att", "starts"}


# windows-1251 text whose only capital is Э (and with no я) read as x-mac-cyrillic, «Ёто
# тест.»: Ё scores a little better than Э; a Mac Cyrillic text must now show itself.
@pytest.mark.parametrize("label", [None, "utf-8", "koi8-r"])     # unlabelled, or a label it contradicts
@pytest.mark.parametrize(("text", "codec"), [
    ("Это тест.", "cp1251"),
    ("Это сообщение отправлено автоматически, отвечать на него не нужно.", "cp1251"),
    ("Эх, ладно.\r\n" * 400, "cp1251"),          # over a piece: read a piece at a time
    ("Я рад. Это тест.", "cp1251"),              # Я is a byte of Mac's own (я), yet
    ("Привет, это тест Мака.", "mac-cyrillic"),  # its capitals still tell a Mac text
    ("Это Мак, мягкий и ясный.", "mac-cyrillic"),
])
def test_windows_1251_with_only_e_capitals_is_not_mac_cyrillic(text: str, codec: str,
                                                               label: str | None) -> None:
    head = "Content-Type: text/plain" + (f"; charset={label}" if label else "")
    raw = (f"From: a@b.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n{head}\r\n\r\n".encode()
           + text.encode(codec) + b"\r\n")
    view = MessageView(raw)
    expected = text.replace("\r\n", "\n").rstrip("\n")
    assert (view.body_charset, view.body_text.rstrip("\n")) == (codec, expected)


# An abbreviation before lower-case words, raw 8-bit: KOI8-R and windows-1251 swap the cases,
# and the other charset's reading («щдн ОНДЙКЧВЕМН», «ьдп РПДЛМАЮЕОП») scored as well or
# better on its letters alone.
@pytest.mark.parametrize("codec", ["koi8-r", "cp1251"])
@pytest.mark.parametrize("subject", ["ЭДО подключено", "ЭЦП продление", "ЭДО",
                                     "ТТН и УПД", "СРОЧНО: оплата", "Счёт от ООО Ромашка",
                                     "ОПЛАТА ПО СЧЕТУ 15 от ООО Вектор", "Ответ: ваш ЗАПРОС"])
def test_raw_subjects_with_abbreviations_read_in_their_charset(subject: str, codec: str) -> None:
    raw = b"From: a@b.example\r\nSubject: " + subject.encode(codec) + b"\r\n\r\nx\r\n"
    assert MessageView(raw).subject == subject
    long_body = (subject + "\r\n").encode(codec) * 3000        # read a piece at a time
    assert MessageView(b"From: a@b.example\r\n\r\n" + long_body).body_text.split("\n")[0] == subject


def test_many_encoded_words_decode_as_few_do(monkeypatch):
    """Past _MANY_WORDS encoded-words a header is decoded word by word (the stdlib's
    decode_header is quadratic in their number); the text is the one the stdlib gives:
    adjacent words joined without the space between, a split UTF-8 character rejoined,
    plain text and its spaces kept."""
    import random

    from mailrouter import charsets
    words = [b"=?utf-8?b?0KHRh9GR0YI=?=", b"=?koi8-r?q?=F3=DE=C5=D4?=", b"plain", b"=?UTF-8?Q?a_b?=",
             b"=?utf-8?q?=D0?=", b"=?utf-8?q?=A1?=", b"(x)", b"=?iso-8859-1?q?caf=E9?="]
    rnd = random.Random(7)
    for _ in range(200):
        seq = [rnd.choice(words) for _ in range(rnd.randint(1, 40))]
        data = seq[0] + b"".join(rnd.choice([b" ", b"  ", b"\t", b" - "]) + w for w in seq[1:])
        few = charsets.decode_header_bytes(data)
        monkeypatch.setattr(charsets, "_MANY_WORDS", 0)
        many = charsets.decode_header_bytes(data)
        monkeypatch.undo()
        assert (many.text, many.notes, many.defects) == (few.text, few.notes, few.defects), data

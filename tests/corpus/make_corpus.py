"""Writes the sample mails of tests/corpus/ byte for byte (CRLF, raw 8-bit where real mail has it).

Run ``python tests/corpus/make_corpus.py`` after changing a case; the .eml files are committed so
the tests read bytes, not this script.
"""

from __future__ import annotations

import base64
import quopri
from pathlib import Path
from urllib.parse import quote_from_bytes

HERE = Path(__file__).parent


def b64(text: str, charset: str) -> str:
    return base64.b64encode(text.encode(charset)).decode("ascii")


def mail(*lines: bytes | str, body: bytes | str = b"") -> bytes:
    head = [line.encode("ascii") if isinstance(line, str) else line for line in lines]
    data = body.encode("ascii") if isinstance(body, str) else body
    return b"\r\n".join(head) + b"\r\n\r\n" + data


COMMON = ("Date: Tue, 03 Mar 2026 10:15:00 +0300", "To: invoices@example.com",
          "MIME-Version: 1.0")
TEXT_KOI8 = "Content-Type: text/plain; charset=koi8-r"


def cases() -> dict[str, bytes]:
    utf8_subject = "Привет, мир".encode("utf-8")   # split inside "и" (2 bytes: d0 b8)
    split = utf8_subject.index("и".encode()) + 1
    attachment_koi8 = quote_from_bytes("Счёт 145 от 12.03.pdf".encode("koi8-r"), safe="")
    czech = "Příliš žluťoučký kůň úpěl ďábelské ódy"
    return {
        "koi8r_raw_subject.eml": mail(
            b"From: =?koi8-r?B?" + b64("Бухгалтерия", "koi8-r").encode() + b"?= <buh@example.ru>",
            *COMMON, b"Subject: " + "Счёт на оплату 145".encode("koi8-r"),
            "Message-ID: <koi8-1@example.ru>", TEXT_KOI8, "Content-Transfer-Encoding: 8bit",
            body="Оплатите, пожалуйста.\r\n".encode("koi8-r")),
        "cp1251_raw_subject.eml": mail(
            b"From: " + "Пётр Иванов".encode("cp1251") + b" <p.ivanov@example.ru>",
            *COMMON, b"Subject: " + "Акт сверки за март".encode("cp1251"),
            "Content-Type: text/plain", body="Акт во вложении.\r\n".encode("cp1251")),
        "utf8_raw_subject.eml": mail(
            "From: shop@example.org", *COMMON,
            b"Subject: " + "Заявка на доставку ✓".encode("utf-8"),
            "Content-Type: text/plain; charset=utf-8", body="Ёлки зелёные\r\n".encode()),
        "rfc2047_split.eml": mail(
            "From: =?UTF-8?Q?=D0=90=D0=BD=D0=BD=D0=B0?= <anna@example.ru>", *COMMON,
            b"Cc: =?UTF-8*ru?B?" + base64.b64encode("Отдел продаж".encode()) + b"?= <sales@example.com>,"
            b" bob@example.com",
            b"Subject: =?UTF-8?B?" + base64.b64encode(utf8_subject[:split]) + b"?=\r\n =?utf-8?B?"
            + base64.b64encode(utf8_subject[split:]) + b"?= =?UTF-8?Q?_=E2=80=94_ok?=",
            "Message-ID:  <split@example.ru> ", "Content-Type: text/plain; charset=UTF-8",
            body="ok\r\n"),
        "rfc2231_koi8_filename.eml": mail(
            "From: buh@example.ru", *COMMON, "Subject: invoice",
            'Content-Type: multipart/mixed; boundary="=_b1"', "",
            "--=_b1", "Content-Type: text/plain; charset=us-ascii", "", "See attached.",
            "--=_b1", "Content-Type: application/pdf",
            "Content-Disposition: attachment;",
            f" filename*0*=koi8-r''{attachment_koi8[:30]};",
            f" filename*1*={attachment_koi8[30:]}",
            "Content-Transfer-Encoding: base64", "", "JVBERi0xLjQK",
            "--=_b1--", ""),
        "rfc2047_filename.eml": mail(
            "From: legal@example.ru", *COMMON, "Subject: contract",
            'Content-Type: multipart/mixed; boundary="b2"', "",
            "--b2", "Content-Type: text/plain; charset=utf-8", "", "Draft.",
            "--b2", "Content-Type: application/vnd.openxmlformats-officedocument"
            ".wordprocessingml.document;",
            f' name="=?UTF-8?B?{b64("Договор поставки.docx", "utf-8")}?="',
            "Content-Disposition: attachment;",
            f' filename="=?UTF-8?B?{b64("Договор поставки.docx", "utf-8")}?="',
            "Content-Transfer-Encoding: base64", "", "UEsDBBQ=", "--b2--", ""),
        "raw8bit_filename.eml": mail(
            "From: sales@example.ru", *COMMON, "Subject: price",
            'Content-Type: multipart/mixed; boundary="b3"', "",
            "--b3", "Content-Type: text/plain; charset=windows-1251", "",
            "Прайс во вложении".encode("cp1251"),
            "--b3", "Content-Type: application/vnd.ms-excel",
            b'Content-Disposition: attachment; filename="' + "Прайс-лист.xls".encode("cp1251") + b'"',
            "Content-Transfer-Encoding: base64", "", "0M8R4KGxGuE=", "--b3--", ""),
        "ibm866_body.eml": mail(
            "From: dos@example.ru", *COMMON, "Subject: DOS", "Content-Type: text/plain; charset=ibm866",
            "Content-Transfer-Encoding: 8bit",
            body="Привет из DOS\r\nВторая строка\r\n".encode("cp866")),
        "mac_cyrillic_body.eml": mail(
            "From: mac@example.ru", *COMMON, "Subject: Mac",
            "Content-Type: text/plain; charset=x-mac-cyrillic",
            "Content-Transfer-Encoding: quoted-printable",
            body=quopri.encodestring("Эй, Жора! Ёж\r\n".encode("mac_cyrillic"))),
        "czech_iso88592.eml": mail(
            "From: praha@example.cz", *COMMON,
            "Subject: =?iso-8859-2?Q?" + quopri.encodestring(czech.encode("iso-8859-2"), header=True)
            .decode() + "?=",
            "Content-Type: text/plain; charset=ISO-8859-2", "Content-Transfer-Encoding: quoted-printable",
            body=quopri.encodestring((czech + "\r\n").encode("iso-8859-2"))),
        "czech_cp1250.eml": mail(
            "From: brno@example.cz", *COMMON, "Subject: Faktura",
            "Content-Type: text/plain; charset=windows-1250", "Content-Transfer-Encoding: 8bit",
            body=(czech + "\r\n").encode("cp1250")),
        "mislabelled.eml": mail(
            "From: old@example.ru", *COMMON,
            "Subject: =?iso-8859-1?Q?" + quopri.encodestring("Счет на оплату".encode("cp1251"),
                                                             header=True).decode() + "?=",
            "Content-Type: text/plain; charset=us-ascii",
            body="Просим оплатить счет\r\n".encode("koi8-r")),
        "unknown_charset.eml": mail(
            "From: odd@example.ru", *COMMON,
            "Subject: =?foo-bar?B?" + b64("Накладная", "koi8-r") + "?=",
            "Content-Type: text/plain; charset=foo-bar",
            body="Накладная во вложении\r\n".encode("cp1251")),
        "broken_no_boundary.eml": mail(
            "From: broken@example.com", *COMMON, "Subject: no boundary",
            "Content-Type: multipart/mixed", body="--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n"),
        "broken_truncated.eml": mail(
            "From: broken@example.com", *COMMON, "Subject: truncated",
            'Content-Type: multipart/mixed; boundary="t"', "",
            "--t", "Content-Type: text/plain", "", "first part",
            "--t", "Content-Type: application/pdf", 'Content-Disposition: attachment; filename="a.pdf"',
            "Content-Transfer-Encoding: base64", "", "JVBERi0xLj"),
        "broken_no_colon.eml": mail(
            "From: broken@example.com", "Subject: colon missing below", "This line has no colon",
            "X-After: lost", body="body\r\n"),
        "binary_junk.eml": bytes(range(1, 256)) * 3 + bytes(range(255, 0, -7)),
        "bounce.eml": mail(
            "From: MAILER-DAEMON@mx.example.com (Mail Delivery System)", "To: sales@example.com",
            "Subject: Undelivered Mail Returned to Sender", "MIME-Version: 1.0",
            'Content-Type: multipart/report; report-type=delivery-status; boundary="r"', "",
            "--r", "Content-Type: text/plain", "", "I'm sorry to have to inform you...",
            "--r", "Content-Type: message/delivery-status", "",
            "Reporting-MTA: dns; mx.example.com", "", "Final-Recipient: rfc822; nobody@example.org",
            "Action: failed", "Status: 5.1.1", "",
            "--r", "Content-Type: text/rfc822-headers", "", "Subject: hello", "--r--", ""),
        "list.eml": mail(
            "Received: from a by b; Tue, 03 Mar 2026 10:00:00 +0300",
            "Received: from c by a; Tue, 03 Mar 2026 09:59:00 +0300",
            "Delivered-To: Support@Example.com", "Delivered-To: <sales@example.com>",
            "From: news@lists.example.org", "To: support@example.com",
            "Subject: [news] Weekly digest", "List-Id: News <news.lists.example.org>",
            "List-Unsubscribe: <mailto:unsubscribe@lists.example.org>", "Precedence: list",
            body="digest\r\n"),
        "autoreply.eml": mail(
            "From: =?utf-8?B?" + b64("Иван Петров", "utf-8") + "?= <i.petrov@example.org>",
            "To: support@example.com", "Auto-Submitted: auto-replied",
            "Subject: =?utf-8?B?" + b64("Автоответ: Re: Заказ 12345", "utf-8") + "?=",
            "Content-Type: text/plain; charset=utf-8", body="Я в отпуске до 10 марта.\r\n".encode()),
        "html_only.eml": mail(
            "From: promo@example.ru", *COMMON, "Subject: html",
            "Content-Type: text/html; charset=windows-1251",
            body=("<html><head><title>T</title><style>p{}</style></head><body>"
                  "<p>&laquo;Скидки&raquo; &amp; акции</p><script>alert(1)</script>"
                  "<div>Цена:&nbsp;100&#160;₽<br>до 31.03</div></body></html>\r\n"
                  ).encode("cp1251", "xmlcharrefreplace")),
    }


if __name__ == "__main__":
    for name, data in cases().items():
        (HERE / name).write_bytes(data)
        print(name, len(data))

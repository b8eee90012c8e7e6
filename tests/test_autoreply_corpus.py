"""Robots from public corpora that used to get an answer, and people who must still get one.

Each robot row is the header lines that decide, cut from a real sample (the rest of the
sample is left out); the envelope sender is a forwarder's, as when a mailbox or an alias
forwards a bounce and rewrites MAIL FROM, so only the message itself can tell.
Sources: sisimai/set-of-emails (BSD 2-Clause, github.com/sisimai/set-of-emails,
maildir/bsd/), flufl.bounce 6.0.0 tests/data (Apache 2.0, pip download flufl.bounce).
The measurement over the whole corpora (746 robots, 271 mixed samples) is in the commit message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailrouter.autoreply import Policy, reason_kind, verdict
from mailrouter.message import MessageView
from mailrouter.routing.responders import Responder

AT = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
MOVED = Responder("moved", None, "Auto: {subject}", timedelta(days=7), "en",
                  (("en", "moved"), ("ru", "переехал")))
FORWARDER = "fwd@relay.example"


def view(*headers: str, body: str = "Hello") -> MessageView:
    head = ["To: old-sales@example.com", "Message-ID: <c1@client.example>",
            "Content-Type: text/plain; charset=utf-8", *headers]
    return MessageView(("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode())


def answer(v: MessageView, mail_from: str = FORWARDER) -> tuple[bool, str]:
    got = verdict(MOVED, v, mail_from, our_domains=frozenset({"example.com"}), policy=Policy(),
                  history=None, at=AT)
    return got.send, got.reason


# (sample it comes from, header lines, reason fragment, metric kind)
ROBOTS = [
    ("sisimai lhost-dragonfly-01: From: MAILER-DAEMON <>",
     ("From: MAILER-DAEMON <>", "Subject: Mail delivery failed"),
     "null address in From: MAILER-DAEMON <>", "null_sender"),
    ("sisimai lhost-mfilter-03: From: <>", ("From: <>", "Subject: failure notice"),
     "null address in From: <>", "null_sender"),
    ("sisimai lhost-sendmail-53: a robot local part without a domain",
     ("From: Mail Delivery Subsystem <MAILER-DAEMON>",
      "Subject: Returned mail: see transcript for details"),
     "From mailer-daemon matches 'mailer-daemon'", "robot_sender"),
    ("sisimai lhost-verizon-02: Verizon's post_master", ("From: post_master@vtext.com",
                                                       "Subject: Re:Nyaan"),
     "matches 'post_master'", "robot_sender"),
    ("flufl.bounce simple_43: Exim's subject, From ndr@",
     ("From: ndr@some.domain", "Subject: Mail delivery failed: returning message to sender"),
     "a bounce (Subject: Mail delivery failed", "report"),
    ("flufl.bounce simple_15: Trend Micro IMSS", ("From: imss@kviv.be",
                                                 "Subject: Mail could not be delivered"),
     "a bounce", "report"),
    ("flufl.bounce bounce_02", ("From: E500_SMTP_Mail_Service@example.org",
                                "Subject: Returned Mail - Error During Delivery"),
     "a bounce", "report"),
    ("flufl.bounce simple_22: Symantec, RFC 2047 subject",
     ("From: Symantec_AntiVirus_for_SMTP_Gateways@csri.org",
      "Subject: =?utf-8?B?RGVsaXZlcnkgZmFpbHVyZSBub3RpZmljYXRpb25=?="),
     "a bounce (Subject: Delivery failure notification)", "report"),
    ("sisimai lhost-verizon-01", ("From: MMSC NDR Administrator <sysadmin@m01.vzwpix.com>",
                                  "Subject: Undeliverable Message"), "a bounce", "report"),
    ("sisimai lhost-opensmtpd-05 (From anonymised to poostmaster@)",
     ("From: Mailer Daemon <poostmaster@example.co.jp>",
      "Subject: Delivery status notification: error"), "a bounce", "report"),
    ("sisimai rfc3834-03: Apple iCloud vacation, no robot header",
     ("From: kijitora@apple.example.com", "Subject: Auto reply: Nyaan",
      "In-Reply-To: <25203A4E-F90F-4A14-BF51-3E7B9D39BE8E@libsisimai.org>",
      "X-Apple-Action: VACATION"), "an auto-reply (X-Apple-Action: VACATION)", "auto_submitted"),
    ("sisimai rfc3834-03 without its X-Apple-Action: the subject alone",
     ("From: kijitora@apple.example.com", "Subject: Auto reply: Nyaan"),
     "an auto-reply (Subject: Auto reply: Nyaan)", "auto_submitted"),
    # the subjects of the Russian providers' bounces; their From (mailer-daemon@) is replaced
    # by a postmaster-less one, as the relay of flufl.bounce simple_43 writes ndr@
    ("sisimai lhost-yandex-01: Yandex's subject", ("From: ndr@yandex.example",
                                                   "Subject: Недоставленное сообщение"),
     "a bounce (Subject: Недоставленное сообщение)", "report"),
    ("sisimai lhost-mailru-01: Mail.ru's RFC 2047 subject",
     ("From: ndr@corp.mail.example", "Subject: =?UTF-8?B?0JLQsNGI0LUg0YHQvtC+0LHRidC10L3QuNC1"
      "INC90LUg0LTQvtGB0YLQsNCy0LvQtdC90L4=?=. Mail failure."),
     "a bounce (Subject: Ваше сообщение не доставлено", "report"),
    ("sisimai lhost-exchange2007-06: Exchange in French",
     ("From: ndr@ville-saumur.example", "Subject: =?iso-8859-1?Q?Non_remis_:_Votre_deuxi=E8me"
      "_paire_de_chaussures_=E0_5_eur?="), "a bounce (Subject: Non remis :", "report"),
    ("sisimai lhost-powermta-01's original: Mailchimp without its List-* headers",
     ('From: "shironeko" <shironeko@example.org>', "Subject: Nyaaan",
      "X-Mailer: MailChimp Mailer - **CID19457665f39d65e762ff**",
      "X-Campaign: mailchimp68b329da9893e34099c7d8ad5.19457665f3"),
     "bulk mail (X-Campaign present)", "list"),
    ("sisimai lhost-fml-03: fml's Loop Alert, From <ml>-admin", (
        "From: neko-admin@example.co.jp", "Subject: Loop Alert: Duplicated Message-ID (neko ML)",
        "X-MLServer: fml [fml 4.0.3 release (20011202/4.0.3)]"),
     "mailing list (X-MLServer present)", "list"),
    ("CPython test_email msg_02.txt: a Mailman 2.0.4 digest, no List-* (From renamed)", (
        "From: ppp@zzz.example", "Subject: Ppp digest, Vol 1 #2 - 5 msgs",
        "X-Mailman-Version: 2.0.4"),
     "mailing list (X-Mailman-Version present)", "list"),
    ("ezmlm-weed(1)'s list sign: Mailing-List", (
        "From: Ann <ann@client.example>", "Subject: Re: the meeting",
        "Mailing-List: contact team-help@lists.client.example; run by ezmlm"),
     "mailing list (Mailing-List present)", "list"),
    ("php-mime-mail-parser issue212: Exchange's Polish out-of-office, windows-1250 subject",
     ("Subject: =?windows-1250?Q?Automatyczna_odpowied=9F:_Piotrze,_test_z_6_miesi=EAcy_na?=\r\n"
      " =?windows-1250?Q?uki_ci=B9gle_na_Ciebie_czeka?=", "Content-Language: ru-RU"),
     "an auto-reply (Subject: Automatyczna odpowiedź: Piotrze", "auto_submitted"),
    ("Mail-DeliveryStatus-BounceParser warning-6.msg: Lotus Domino 7's out-of-office, no header",
     ("From: John.Smith@b.c", "Subject: AUTO: Smith, John is out of the office. (returning "
      "05/01/2010)", "X-MIMETrack: Serialize by Router on EURMAIL02/Servers/XONE(Release "
      "7.0.2FP3|December 13, 2007) at"), "an auto-reply (Subject: AUTO: Smith, John is out",
     "auto_submitted"),
    ("open-mpi's list archive: Notes' out-of-office behind the list's tag",
     ("From: Wen Hao Wang <wangwhao@cn.ibm.example>",
      "Subject: [MTT users] AUTO: Wen Hao Wang is out of the office (returning 2013/10/14)"),
     "an auto-reply (Subject: [MTT users] AUTO: Wen Hao Wang", "auto_submitted"),
    ("notmuch test/corpora/broken/empty-part: FreeBSD's mlmmj refusing a post, no List-*",
     ("From: freebsd-hackers+owner@FreeBSD.org",
      "Subject: =?utf-8?q?Post_to_freebsd-hackers=40FreeBSD.org_denied:_Re:_rcd=288=29_-_new"
      "_service_manager_daemon?=", "Reply-To: freebsd-hackers+subrelease-0d41b2c07ac29c45@FreeBSD.org"),
     "From freebsd-hackers+owner@freebsd.org matches '*+owner'", "robot_sender"),
]


@pytest.mark.parametrize("what, headers, reason, kind", ROBOTS, ids=[r[0] for r in ROBOTS])
def test_robots_from_corpora_get_no_answer(what: str, headers: tuple[str, ...], reason: str,
                                           kind: str) -> None:
    """Each sample was answered before; now it is not, and the reason names the sign."""
    send, why = answer(view(*headers))
    assert not send and reason in why, why
    assert reason_kind(why) == kind


def test_a_real_polish_out_of_office_gets_no_answer() -> None:
    """The whole sample (tests/corpus, byte for byte): no Auto-Submitted, no X-Autoreply, no
    Precedence; only its subject, in windows-1250, says it is Exchange's out-of-office. A
    daemon with a moved address queued an answer to it (the envelope a forwarder's)."""
    raw = (Path(__file__).parent / "corpus" / "real_polish_exchange_autoreply_cp1250.eml").read_bytes()
    send, why = answer(MessageView(raw), "piotr@client.example")
    assert not send and why.startswith("an auto-reply (Subject: Automatyczna odpowiedź:"), why


def test_a_dmarc_report_through_a_google_group_gets_no_answer() -> None:
    """Webklex/php-imap's mail_that_is_attachment.eml (tests/corpus, byte for byte): Google's
    DMARC aggregate report as a Google group passes it on, From rewritten to the group
    ('noreply-dmarc-support via xxx <xxx@yyy.cz>'), no robot header, a zip. It was answered
    (the envelope the group's); only RFC 7489's subject says what it is. A person's subject
    that merely mentions a report domain is still answered."""
    raw = (Path(__file__).parent / "corpus" / "real_dmarc_report_via_google_group.eml").read_bytes()
    send, why = answer(MessageView(raw), "xxx+bncBAABBQ@yyy.cz")
    assert not send and why.startswith("a report (a DMARC aggregate report, Subject: Report "
                                       "domain: yyy.cz Submitter: google.com"), why
    assert reason_kind(why) == "report"
    person = view("From: Ann <ann@client.example>", "Subject: Re: Report domain: yyy.cz Submitter: google.com")
    assert answer(person, "ann@client.example") == (True, "")
    question = view("From: Ann <ann@client.example>", "Subject: Which report domain should I use?")
    assert answer(question, "ann@client.example") == (True, "")


def test_a_newsletters_verp_return_path_gets_no_answer() -> None:
    """SpamAssassin's welcomelists/infoworld (and networkworld): Lyris ListManager newsletters
    of 2002 with no List-* header and no Precedence; only their return path,
    bounce-<list>-<id>@, says a list manager sent them. A person at bounce@ stays a robot as
    before, and a local part merely containing the word is a person."""
    v = view("From: Cringely@bdcimail.com", "Subject: ROBERT X. CRINGELY(R): \"Notes from the "
             "Field\" from InfoWorld.com, Monday, August 12, 2002",
             "Return-Path: <bounce-rcringely-0000000@mailcontrol.bellevuedata.com>")
    send, why = answer(v)
    assert not send and "bounce-rcringely-0000000@mailcontrol.bellevuedata.com matches 'bounce-*'" in why
    person = view("From: Ann <ann.bounceback@client.example>", "Subject: Question")
    assert answer(person, "ann.bounceback@client.example") == (True, "")


TAGGED = [
    ("notmuch threading/ghost-root: Request Tracker 4.2's AutoReply (header lines as kept there)",
     "[support.xxxxxxxxxxx-xxxxxxxxx-xxxxxxxxx.de #33575] AutoReply: FYI: xxxx  xxxxxxx", "an auto-reply"),
    ("a spam filter's tag on a bounce", "[SPAM] Undelivered Mail Returned to Sender", "a bounce"),
    ("a list's tag and a filter's on Outlook's Czech out-of-office",
     "[SPAM] [obchod] Automatická odpověď: Faktura 12", "an auto-reply"),
]


@pytest.mark.parametrize("what, subject, reason", TAGGED, ids=[t[0] for t in TAGGED])
def test_robot_subjects_behind_tags(what: str, subject: str, reason: str) -> None:
    """A helpdesk's ticket tag, a list's name or a filter's mark before the words: the start
    of the subject was the tag, and RT's autoreply got an answer. A person's reply (`Re:`
    after the tag) is still answered."""
    v = view('From: " via RT" <rt-xxx@rt.client.example>', f"Subject: {subject}",
             "In-Reply-To: <87bmc6lp3h.fsf@len.workgroup>")
    send, why = answer(v)
    assert not send and why.startswith(f"{reason} (Subject: {subject[:40]}"), why
    tag, _, rest = subject.rpartition("] ")
    person = view("From: Ann <ann@client.example>", f"Subject: {tag}] Re: {rest}")
    assert answer(person, "ann@client.example") == (True, "")


def test_mlmmj_bounce_address_as_envelope_sender() -> None:
    """mlmmj sends its notices from list+bounces-...@ (the same sample's Return-Path): the
    +detail was cut off before matching, and `freebsd-hackers` is a person's local part."""
    v = view("From: Ann <ann@client.example>", "Subject: Post to freebsd-hackers denied")
    send, why = answer(v, "freebsd-hackers+bounces-help@FreeBSD.org")
    assert not send and "matches '*+bounces-*'" in why, why
    assert answer(v, "freebsd-hackers@FreeBSD.org") == (True, "")


# Outlook's out-of-office and non-delivery subjects in Czech, Slovak and Ukrainian (no sample
# in the corpora: Outlook's own words, and the Czech ones as mailers strip their accents).
OUTLOOK_SUBJECTS = ["Automatická odpověď: Faktura 2027/12", "Automaticka odpoved: Faktura",
                    "Automatická odpoveď: Objednávka 7", "Автоматична відповідь: Рахунок 12",
                    "Nedoručitelné: Faktura 2027/12", "Nedoručiteľné: Objednávka 7",
                    "Niedostarczalne: Faktura 12"]


@pytest.mark.parametrize("subject", OUTLOOK_SUBJECTS)
def test_outlook_subjects_in_czech_slovak_polish_ukrainian(subject: str) -> None:
    v = view("From: Jana <jana@firma.example>", f"Subject: {subject}")
    send, why = answer(v, "jana@firma.example")
    assert not send and subject[:12] in why, why
    person = view("From: Jana <jana@firma.example>", f"Subject: Re: {subject}")
    assert answer(person, "jana@firma.example") == (True, "")


# People: each must be answered. Shapes of everyday mail, and the near misses of the
# robot tests above (a reply or forward of a robot's subject, a robot word in a name).
PEOPLE = [
    ("Russian, plain", ("From: Иван Петров <ivan@client.example>",
                        "Subject: Вопрос по счёту №12"), "Здравствуйте! Когда оплата?"),
    ("English reply", ("From: Ann <ann@client.example>", "Subject: Re: Invoice 12",
                       "In-Reply-To: <x1@example.com>"), "Thanks, see below."),
    ("a person replying to an out-of-office", ("From: Ann <ann@client.example>",
                                               "Subject: RE: Automatic reply: Invoice 12"), "Hi"),
    ("sisimai lhost-sendmail-14: a person forwarding a bounce",
     ('From: "Shironeko, Nyanko" <shironeko@example.jp>',
      "Subject: Fwd: Returned mail: see transcript for details"), "Why did this bounce?"),
    ("a customer's undelivered order", ("From: Ann <ann@client.example>",
                                        "Subject: Delivery failed for order 12"), "Where is it?"),
    ("a Russian customer's undelivered order", ("From: Иван <ivan@client.example>",
                                                "Subject: Не доставлен заказ 12"), "Где заказ?"),
    ("a question about an autoresponder", ("From: Иван <ivan@client.example>",
                                           "Subject: Автоответчик не работает"), "Почему?"),
    ("Auto as a word", ("From: Ann <ann@client.example>", "Subject: Auto parts: a quote"), "Hi"),
    ("Auto: as RFC 3834's prefix, German for a car", ("From: Jörg <joerg@client.example>",
                                                      "Subject: Auto: Angebot für den Golf"), "Hallo"),
    ("a person asking who is out of the office", ("From: Ann <ann@client.example>",
                                                  "Subject: Who is out of the office today?"), "Hi"),
    ("a person at info@", ("From: Shop Owner <info@shop.example>", "Subject: Order"), "Hi"),
    ("noreply in the display name only", ('From: "Ann (noreply Mon-Fri)" <ann@client.example>',
                                          "Subject: Question"), "Hi"),
    ("Amazon WorkMail: X-SES-Outgoing on a person's mail (sisimai lhost-amazonworkmail-02)",
     ("From: =?utf-8?Q?shironeko?= <shironeko@nyaan.example.awsapps.com>", "Subject: Nyaaaan",
      "X-Mailer: Amazon WorkMail", "X-Ses-Outgoing: 2016.01.14-54.240.27.80"), "Hi"),
    ("flufl.bounce groupwise_03: a person's Outlook reply that asks for a read receipt",
     ('From: "Ivette" <reservas@yyyyy.example>', "Subject: RE: Vuille  - (PO28169) - IND",
      "X-Mailer: Microsoft Office Outlook, Build 11.0.5510",
      'Disposition-Notification-To: "Ivette" <reservas@yyyyy.example>'), "Solicitudes de Reservas"),
    ("an empty display name in angle brackets", ("From: <ann@client.example>",
                                                 "Subject: Question"), "Hi"),
]


@pytest.mark.parametrize("what, headers, body", PEOPLE, ids=[p[0] for p in PEOPLE])
def test_people_are_answered(what: str, headers: tuple[str, ...], body: str) -> None:
    """No robot test refuses a person: the sender's own address as the envelope."""
    v = view(*headers, body=body)
    assert answer(v, v.from_addr) == (True, "")

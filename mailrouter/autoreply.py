"""Autoreplies per RFC 3834: whether to answer one message, and the answer itself.

Pure: no I/O. `verdict` takes the message view, the envelope sender, the responder a
decision names, our domains, the policy from config.yaml and what the registry knows
of this sender (`History`; None for `explain`, which has no history), and says
whether to answer and, if not, why. `build_reply` (reply.py's part, below) makes the
answer's bytes. The daemon records every verdict with the decision; the outbox sends.

When not to answer (RFC 3834 section 2 and 3.1; the order is the order of the checks,
so the first reason found is the one recorded):
- no responder named; the recipient was refused;
- a null reverse-path `<>` (bounces, notices: RFC 5321 4.5.5), or none at all, also when
  the first `Return-Path: <>` header says so (a bounce forwarded by a mailbox);
- mail we generated (our trace header `X-Mailrouter-Loop: HOST; generated=...`);
- what the message says of itself, headers first (`MessageView.robot_headers`, message.py:
  the one definition of automatic mail, which the rules' `robot: true` and Control's plan
  read too): `Auto-Submitted:` anything but `no` (RFC 3834 5); the older markers
  `X-Autoreply:`, `X-Autorespond:`, `X-AutoReply-From:`, `X-Mail-Autoreply:` (anything but
  `no`); other responders' own (CommuniGate Pro, Mailtraq, FirstClass, qmail, Apple iCloud);
  `multipart/report` (DSN RFC 3464, MDN RFC 8098), a DSN sent without it (a top-level
  `message/delivery-status`), a complaint report that is not one (an ARF part inside another
  multipart, Hotmail's older format: `MessageView.complaint`); any `List-*` header (RFC
  2369, RFC 2919), a list manager's own (`Mailing-List`, `X-Mailing-List`, `X-ML-Name`,
  fml's `X-MLServer`, `X-Mailman-Version`), LISTSERV 1.8's hop in Received (no List-* before
  2003); `Precedence: bulk | junk | list | auto_reply` (a comment after it too; or as
  X-Precedence);
- the autoresponder's own: `X-Loop:` (procmail responders and lists, OTRS and Zammad:
  `X-Loop: yes`; a helpdesk agent's answer carries it too, so it is no robot sign for the
  rules); a bulk sender's campaign header (Mailchimp's X-MC-User, X-Campaign; Mail.ru's
  X-Mailru-Msgtype); `X-Auto-Response-Suppress: All | OOF | AutoReply` (Microsoft's
  [MS-OXCMAIL] 2.2.3.2.14);
- a robot sender, envelope, From, Return-Path or Errors-To local part, matched against
  `robot_senders`
  (MAILER-DAEMON, postmaster, LISTSERV, majordomo, owner-*, *-request, noreply, mlmmj's
  *+owner... ; configurable; the local part is matched with and without its +detail; a bare
  `MAILER-DAEMON` without a domain counts);
- the rest of `MessageView.automatic`: the null address in From (`From: MAILER-DAEMON <>`:
  only MTAs write it); a subject that starts the way bounces, out-of-office replies and
  DMARC aggregate reports do (`Undeliverable:`, `Mail delivery failed`, `Недоставленное
  сообщение`, `Automatic reply:`, `Automatyczna odpowiedź:`, Lotus Notes' `AUTO: ... is out
  of the office`, `Report Domain: ... Submitter: ...`): for bounces that carry no robot
  header and reach us with a forwarder's envelope sender; a subject that is only an MTA's
  words (`Delivery Failure`, `Mail Error`) when the body's start also reads like an MTA's
  (an SMTP reply code, `Remote host said`, `Failed Recipient:`, `Original message follows`);
- a sender on one of our own domains, in any form the book reads as it (xn--, Unicode,
  any case: addressbook.canon.on_our_domains; two responders would answer each other);
- this responder already answered this sender within its period (RFC 3834 2, RFC
  5230 4.1), or this sender got `daily_cap` answers in the last 24 hours. The sender is
  `sender_key`'s: a forwarder's SRS address and a gateway's BATV signature, which change
  from day to day or message to message, count as the address they wrap, and a `+detail`
  is cut off (ann+shop@ is ann@).
The sender's domain without MX or A/AAAA is checked by the outbox (dnscheck.py),
which needs the network; the registry's unique (sender, responder, period bucket)
makes the period hold across restarts and instances.

Known limits: Feedback-ID and X-SES-Outgoing are not robot signs: Amazon WorkMail puts
X-SES-Outgoing on a person's mail (sisimai's set-of-emails, lhost-amazonworkmail-*), and
SES's own Feedback-ID is on mail of every kind it relays; nor are Yandex's X-Yandex-* trace
headers, which are on a person's mail too (imap_tools' test messages). What Yandex's and
Mail.ru's own out-of-office responders send is not known here: the public corpora hold
their bounces, not their auto-replies. A subject test misses bounces in other languages
and wording, and never looks past a `Re:`/`Fwd:` (a person forwarding a bounce is answered).
The robot patterns (routing/robots.py, shared with the rules' `robot: true`) are shell
globs on the local part, case-insensitive;
the language is guessed from Content-Language, then the body's charset, then the
letters of the subject and the text (Cyrillic or Latin), then the responder's default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any, Protocol

from .addressbook.canon import canonical_domain, on_our_domains
from .loops import TRACE_HEADER, header_text
from .routing.responders import Responder
from .routing.robots import DEFAULT_ROBOT_SENDERS, robot_pattern, robot_sender
from .values import autoreply_line

__all__ = ["DEFAULT_ROBOT_SENDERS", "robot_pattern", "History", "Policy", "Verdict", "build_reply",
           "choose_language", "generated_trace", "period_bucket", "reason_kind", "sender_key",
           "verdict"]

_SUPPRESS = frozenset({"all", "oof", "autoreply"})
# X-Loop (any value): what procmail responders and lists (SmartList) and helpdesks (OTRS,
# Zammad: `X-Loop: yes`) put on what they send, so that no responder answers it; those
# helpdesks answer no mail that carries it either.
_LOOP_MARKER = "X-Loop"
# Headers that only bulk senders set: Mailchimp's account and campaign ids; Mail.ru's
# postmaster asks mass mailers for X-Mailru-Msgtype (X-Postmaster-Msgtype goes with it).
_BULK_HEADERS = ("X-MC-User", "X-Campaign", "X-CampaignID", "X-Mailru-Msgtype",
                 "X-Postmaster-Msgtype")
_CYRILLIC_CHARSETS = frozenset({"koi8-r", "koi8-u", "cp1251", "windows-1251", "cp866",
                                "mac-cyrillic", "iso8859-5", "iso-8859-5"})


class View(Protocol):
    """What the checks read of a `message.MessageView`."""

    @property
    def subject(self) -> str: ...
    @property
    def from_addr(self) -> str: ...
    @property
    def robot_headers(self) -> str: ...
    @property
    def automatic(self) -> str: ...
    @property
    def body_text(self) -> str: ...
    @property
    def body_charset(self) -> str | None: ...
    def body_head(self, chars: int) -> str: ...
    @property
    def message_id(self) -> str | None: ...
    def header(self, name: str) -> str | None: ...
    def headers(self, name: str) -> list[str]: ...
    def raw_headers(self) -> list[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class Policy:
    """The `autoreply:` section of config.yaml (the per-responder period is in the rules)."""

    robot_senders: tuple[str, ...] = DEFAULT_ROBOT_SENDERS
    daily_cap: int = 3               # answers to one sender in 24 h, over all responders
    envelope_from: str = "<>"        # MAIL FROM of our answers (README: the SPF/DKIM trade-off)


@dataclass(frozen=True, slots=True)
class History:
    """What the registry knows of one sender: the last answer per responder, and how
    many answers it got in the 24 hours before now."""

    last: Mapping[str, datetime]
    today: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    responder: str | None
    send: bool
    reason: str                      # '' when sending

    def as_dict(self) -> dict[str, Any]:
        """The `autoreply` object of `explain --json`."""
        return {"responder": self.responder, "send": self.send, "reason": self.reason or None}

    def describe(self) -> str:
        """The decision-reason line the registry keeps."""
        if self.responder is None:
            return ""
        return autoreply_line(self.responder, "" if self.send else self.reason)


def bare(address: str) -> str:
    """`<A@B>` -> `a@b` (lower-cased: only for comparisons and registry keys)."""
    return address.strip().strip("<>").strip().lower()


# BATV (draft-levine-smtp-batv: `prvs=TAG=local@domain`, the tag a key digit, a day and a
# hash; Barracuda's `btv1==TAG==local@domain`): gateways sign every message's envelope
# sender anew, so one person's address differs from message to message.
_BATV = re.compile(r"\A(?:prvs=[0-9a-z]+=|btv1==[0-9a-z]+==)(?=[^@=]+@)")
# SRS (the Sender Rewriting Scheme of libsrs2 and postsrsd, which forwarders use so that SPF
# passes: kernel.org's `SRS0=Dqjb=IN=linuxfoundation.org=gregkh@kernel.org`, Cloudflare
# Email Routing's): `SRS0=HASH=TT=domain=local@forwarder`, a second forwarder's
# `SRS1=HASH=forwarder1==HASH=TT=domain=local@forwarder2` (`+` or `-` may stand for the `=`
# after SRS0/SRS1). TT is the day and HASH changes with it, so one person forwarded on
# two days had two addresses, and an answer each day of a 7-day period.
_SRS = re.compile(r"\A(?:srs0[=+-]|srs1[=+-][^=@]+=[^=@]+=[=+-])[^=@]+=[^=@]{2}"
                  r"=([^=@]+)=([^@]+)@[^@]+\Z")


def sender_key(address: str) -> str:
    """The sender an answer's period and daily cap count for: `bare`, the original
    address of an SRS one (`srs0=hash=tt=client.example=ann@fwd.example` is
    ann@client.example), without a BATV signature (`prvs=0123abcdef=ann@x` is ann@x), without
    a `+detail` (ann+shop@x and ann+news@x are ann@x's mailbox, and a sender putting a tag or
    a counter there, `orders+8812@shop.example`, changes it with every message: each form had
    its own period and its own daily cap), the domain in Unicode as the book reads it
    (иван@xn--e1affem4a.xn--p1ai is иван@клиент.рф: each form had its own period). The answer
    still goes to the address as given: the gateway accepts mail only for its signed
    addresses, the forwarder passes the answer back to the SRS address's original."""
    local, at, domain = unwrapped(address).rpartition("@")
    base, plus, detail = local.partition("+")
    # `+x@` and `x+@` are names, not a detail; so is `c++@` (the book's own example of a
    # name holding the separator: cut, it was c@, another person's period and daily cap),
    # and a quoted local part is left whole (`"a b+c"@` was cut to `"a b@`)
    if plus and base and detail and detail[0] != "+" and base[0] != '"':
        local = base
    return f"{local}{at}{domain}" if at else domain


def unwrapped(address: str) -> str:
    """`sender_key` with its +detail: the address an SRS or BATV form wraps, the domain in
    Unicode. The robot check reads this one (mlmmj's list+bounces-...@ and list+owner@ are
    robots by their detail; list@ is a person's)."""
    plain = bare(address)
    srs = _SRS.match(plain)
    if srs is not None:
        plain = f"{srs[2]}@{srs[1]}"
    local, at, domain = _BATV.sub("", plain).rpartition("@")
    return f"{local}{at}{canonical_domain(domain)}" if at else domain


def period_bucket(at: datetime, period: timedelta) -> int:
    """The period a time falls in: (sender, responder, bucket) is unique in the registry,
    so two instances racing on one sender insert one answer, not two."""
    return int(at.timestamp() // max(1, int(period.total_seconds())))


def verdict(responder: Responder | None, view: View, mail_from: str, *,
            our_domains: frozenset[str], policy: Policy, history: History | None,
            at: datetime, refused: bool = False, rcpt: str | None = None) -> Verdict:
    """Whether to answer one message for one recipient, and why not (RFC 3834). `rcpt`:
    that recipient as the sender's MTA gave it (RCPT TO), which the message's To or Cc
    must name (`_not_addressed`); None: not checked."""
    if responder is None:
        return Verdict(None, False, "no autoreply for this recipient")
    reason = ("the message was refused for this recipient" if refused
              else _robot_reason(view, mail_from, our_domains, policy)
              or (_not_addressed(view, rcpt) if rcpt is not None else "")
              or _history_reason(responder, sender_key(mail_from), history, at, policy))
    return Verdict(responder.name, not reason, reason)


_ADDRESSED_IN = ("To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc")


def _not_addressed(view: View, rcpt: str) -> str:
    """RFC 3834 section 2: no answer unless the recipient is named in a recipient field of
    the message. Mail to a list or a group the address is a member of (with no list
    headers: a CRM's "undisclosed recipients", a colleague's distribution list), or a
    Bcc, was not written to this address: its sender would be told that an address they
    never used has moved. The address is compared lower-cased, its domain in ASCII."""
    wanted = _comparable(rcpt)
    named = _named([v for name in _ADDRESSED_IN for v in view.headers(name)])
    if any(_comparable(address) == wanted for address in named):
        return ""
    return f"not addressed to {bare(rcpt)} in To or Cc (a list, a group or a Bcc)"


# What separates the bare addresses of a value the parser failed on: each run between
# them holding an '@' (not at its ends) is one. A split, not a search for `X@Y`: that
# search tried every start of a long run without '@' to its end, time growing with the
# square of the run (a To of 1,000 ':' and then 100,000 letters on one line: 15 s, on the
# event loop; a line of a megabyte: hours).
_ADDR_SPLIT = re.compile(r"[\s<>,;:\"()\[\]]+")


def _named(values: list[str]) -> list[str]:
    """The addresses of recipient fields, each value parsed alone. The stdlib's parser
    recurses once per ':' it reads as a group's start: a To with 1,000 broken encoded words
    holding times (`date=3E2017-08-20T10:08:28`, MimeKit's stack-overflow.txt) raised
    RecursionError out of the verdict, and the daemon answered 451 on every retry. Such a
    value is searched for bare addresses instead."""
    out: list[str] = []
    for value in values:
        try:
            out += [address for _, address in getaddresses([value]) if address]
        except Exception:  # never raise: the parser is not ours
            out += [run for run in _ADDR_SPLIT.split(value) if "@" in run[1:-1]]
    return out


def _comparable(address: str) -> str:
    local, at, domain = bare(address).rpartition("@")
    if not at:
        return domain
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return f"{local}@{domain}"


# The kind of each reason above, for a metric label (metrics.AUTOREPLY_REASONS): the
# reasons are sentences with addresses in them, the kinds a fixed set.
_KINDS = (("the message was refused", "refused"), ("null reverse-path", "null_sender"),
          ("mail we generated", "generated"), ("Auto-Submitted", "auto_submitted"),
          ("an auto-reply", "auto_submitted"),
          ("a report", "report"), ("a bounce", "report"), ("null address in From", "null_sender"),
          ("mailing list", "list"), ("bulk mail", "list"), ("Precedence", "precedence"),
          ("X-Auto-Response-Suppress", "suppress_header"), ("robot sender", "robot_sender"),
          ("our own address", "own_domain"), ("answered once for this message", "duplicate"),
          ("not addressed to", "not_addressed"))


def reason_kind(reason: str) -> str:
    """The fixed-set kind of a verdict's reason (`period`, `robot_sender`, ...)."""
    for prefix, kind in _KINDS:
        if reason.startswith(prefix):
            return kind
    if " already answered by " in reason:
        return "period"
    return "daily_cap" if "(daily_cap " in reason else "other"


def _robot_reason(view: View, mail_from: str, our_domains: frozenset[str],
                  policy: Policy) -> str:
    sender = bare(mail_from)
    if not sender:
        return "null reverse-path <> (bounces and notices are never answered)"
    if bare(view.header("Return-Path") or "x") == "":
        # a bounce delivered to a mailbox and forwarded from there: the forwarder's envelope
        return "null reverse-path <> in Return-Path (a bounce, forwarded)"
    # what the message says of itself (message.py: the one definition of automatic mail, which
    # the rules' `robot: true` and Control read too), then the autoresponder's own signs
    why = _generated(view) or view.robot_headers
    for checks in (_loop, _bulk_sender, _suppress):
        why = why or checks(view)
    if why:
        return why
    # Return-Path: the envelope sender of the delivery before a forward (a list's owner-*);
    # Errors-To: where a list manager wants errors sent, from before Return-Path was kept
    # (Mailman 2's -bounces, Majordomo's owner-*), on list mail forwarded with a new envelope
    why = robot_sender((("envelope sender", unwrapped(sender)),
                        ("From", bare(view.from_addr or "")),
                        ("Return-Path", unwrapped(view.header("Return-Path") or "")),
                        ("Errors-To", unwrapped(next(iter(_named(view.headers("Errors-To"))),
                                                     "")))),
                       policy.robot_senders)
    why = why or view.automatic               # the null address in From, the subject
    if why:
        return why
    if on_our_domains(sender, our_domains):     # xn--, upper case and Unicode alike
        return f"our own address {sender}"
    return ""


def _generated(view: View) -> str:
    for value in view.headers(TRACE_HEADER):
        if "generated=" in value:
            return f"mail we generated ({TRACE_HEADER}: {value.strip()})"
    return ""


def _loop(view: View) -> str:
    value = view.header(_LOOP_MARKER)
    if value is not None:
        return f"an auto-reply or list ({_LOOP_MARKER}: {' '.join(value.split())[:80]})"
    return ""


def _bulk_sender(view: View) -> str:
    for name in _BULK_HEADERS:
        if view.header(name) is not None:
            return f"bulk mail ({name} present)"
    return ""


def _suppress(view: View) -> str:
    for value in view.headers("X-Auto-Response-Suppress"):
        if {t.strip().lower() for t in value.split(",")} & _SUPPRESS:
            return f"X-Auto-Response-Suppress: {value.strip()}"
    return ""


def _history_reason(responder: Responder, sender: str, history: History | None, at: datetime,
                    policy: Policy) -> str:
    if history is None:
        return ""
    last = history.last.get(responder.name)
    if last is not None and at - last < responder.period:
        return (f"{sender} already answered by {responder.name} at {last:%Y-%m-%d %H:%M} UTC "
                f"(one answer per {_days(responder.period)})")
    if history.today >= policy.daily_cap:
        return f"{sender} got {history.today} answers in 24 h (daily_cap {policy.daily_cap})"
    return ""


def _days(period: timedelta) -> str:
    days = period.total_seconds() / 86400
    return f"{days:g} day" + ("" if days == 1 else "s")


def choose_language(view: View, languages: Sequence[str], default: str) -> str:
    """The responder language for this message: Content-Language, else the body's charset,
    else the script of its subject and text, else the default."""
    for tag in (view.header("Content-Language") or "").split(","):
        primary = tag.strip().split("-", 1)[0].lower()
        if primary in languages:
            return primary
    if "ru" in languages and (view.body_charset or "").lower() in _CYRILLIC_CHARSETS:
        return "ru"
    text = (view.subject or "") + " " + view.body_head(4000)    # not the whole body
    cyrillic = sum(1 for ch in text if "\u0400" <= ch <= "\u04ff")
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    if cyrillic and cyrillic >= latin / 4 and "ru" in languages:
        return "ru"
    if latin and not cyrillic and "en" in languages:
        return "en"
    return default


# The answer (RFC 3834 section 3)

_MSGID = re.compile(r"<[^<>\s]+@[^<>\s]+>")


# The original subject as the answer quotes it, in its Subject and body: a subject of
# 200,000 characters (one header line of 380 KB) was answered with 1.1 MB, the subject
# twice, to a sender nobody verified; and Postfix cuts a header over header_size_limit
# (100 KB) in the middle of an encoded word. Longer ones end in "...".
SUBJECT_QUOTE_MAX = 300


def _quoted_subject(subject: str) -> str:
    if len(subject) <= SUBJECT_QUOTE_MAX:
        return subject
    return subject[:SUBJECT_QUOTE_MAX - 1].rstrip() + "\u2026"


def generated_trace(hostname: str, what: str) -> str:
    """Our trace header's value on mail we generate: `verdict` never answers it."""
    return f"{hostname}; generated={what}"


def build_reply(responder: Responder, view: View, *, to: str, old: str, new: str,
                hostname: str, at: datetime, message_id: str | None = None) -> bytes:
    """The answer to one message: To the envelope sender (RFC 3834 4: not From or
    Reply-To), `Auto-Submitted: auto-replied` (5), In-Reply-To and References (3.1.5), a
    fresh Message-ID and Date, `X-Auto-Response-Suppress: All`, our trace header, a UTF-8
    body; the subject RFC 2047-encoded when it is not ASCII (policy SMTP). An address that
    is not ASCII needs SMTPUTF8 (RFC 6531): then the headers go as UTF-8."""
    language = choose_language(view, responder.languages, responder.language)
    values = {"old": old, "new": new, "subject": _quoted_subject(view.subject or ""),
              "sender": to.strip("<>")}
    sender = responder.sender or old
    utf8 = not (sender.isascii() and to.isascii())
    msg = EmailMessage(policy=email_policy.SMTPUTF8 if utf8 else email_policy.SMTP)
    msg["From"] = sender
    msg["To"] = to.strip("<>")
    # a customer's U+2028; a tab or line end between words is a space (header_text): a
    # subject folded before a tab (`Invoice\r\n\tquestion`) read "Auto: Invoicequestion"
    msg["Subject"] = header_text(responder.subject_for(language).format(**values))
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = message_id or make_msgid(domain=hostname)
    original = _MSGID.search(view.message_id or "")
    if original is not None:
        msg["In-Reply-To"] = original[0]
        # RFC 5322 3.6.4: without References, a parent's In-Reply-To naming one message
        # stands for them (a reply from a mailer that writes no References: the thread
        # was cut at our answer)
        parents = _MSGID.findall(view.header("References") or "")
        if not parents:
            replied = _MSGID.findall(view.header("In-Reply-To") or "")
            parents = replied if len(replied) == 1 else []
        refs = [r for r in parents if r != original[0]]
        if len(refs) > 20:      # trimmed as RFC 5322 3.6.4 trims: the thread's root stays
            refs = refs[:1] + refs[-19:]
        msg["References"] = " ".join(refs + [original[0]])
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg[TRACE_HEADER] = generated_trace(hostname, f"autoreply; responder={responder.name}")
    msg.set_content(responder.body(language).format(**values), charset="utf-8")
    msg["Content-Language"] = language       # after set_content, which drops Content-*
    return msg.as_bytes()

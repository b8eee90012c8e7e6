"""The names in config.yaml's `control:` against the address book of the routing files.

The two files load apart (config.yaml first, then the routing files it names), so
neither load can check names across them; `mailrouter check` calls `check_control`
once both are loaded, and refuses, with config.yaml's file:line:column:

- `control.head` that is not a person of the address book (escalations would have
  nobody to go to: the scheduler records them as sent to nobody);
- an address in `control.replies` the address book does not know (the MTA would get
  550 5.1.1 for every reply-tracking copy, and no request would ever be answered);
- a `web.admins` key that is not a person (`check_web`: a typo there silently left the
  admin with the rights of anyone else).

- a mailbox `{lmtp: ...}` or `{smtp: ...}` with no `delivery.lmtp` (`delivery.smtp`)
  for it (`downstreams_missing`).

and warns (`smtp_back_to_us`) about a mailbox `{smtp: ADDRESS}` on one of our own domains:
the MTA behind delivery.smtp sends that domain to mailrouter again.

The daemon runs the same checks (`config_against_book`) at start, which it refuses, and at
each reload, which it refuses keeping the rules it runs: a reload of routing files that
dropped the head, or added an lmtp mailbox, was taken, and `check` refused the same files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..addressbook.canon import on_our_domains
from ..addressbook.errs import did_you_mean, near_address
from ..config import Config, ControlConfig, WebConfig
from ..errors import ConfigError, place_prefix
from ..yamlsrc import where

__all__ = ["check_control", "check_web", "config_against_book", "downstreams_missing",
           "smtp_back_to_us"]


def check_control(cfg: ControlConfig | None, book: Any, path: str = "") -> list[ConfigError]:
    """Every name in `cfg` that `book` (an AddressBook) does not define, with its position."""
    if cfg is None:
        return []
    errors: list[ConfigError] = []

    def err(value: str, message: str, hint: str) -> None:
        file, line, col = where(value)
        errors.append(ConfigError(message, file or path, line, col, hint))
    if cfg.head is not None and cfg.head not in book.people:
        err(cfg.head, f"control.head {cfg.head!r} is not a person of the address book",
            did_you_mean(cfg.head, book.people, "people")
            + "; people are defined under 'people:' in the routing files")
    for address in cfg.replies:
        if not book.knows(address):
            close = near_address(address, book.addresses(), index=False)   # the daemon's too
            err(address, f"control.replies {address!r} is not an address of the address book",
                f"did you mean '{close}'?" if close else
                "add it under aliases: (e.g. 'replies@example.com: mailbox:replies') so the "
                "MTA can deliver the copies of outgoing mail to mailrouter")
    return sorted(errors, key=lambda e: (e.line, e.column))


def check_web(cfg: WebConfig | None, book: Any, path: str = "") -> list[ConfigError]:
    """Every `web.admins` key that is not a person of `book`, with its position."""
    errors = []
    for admin in cfg.admins if cfg is not None else ():
        if admin not in book.people:
            file, line, col = where(admin)
            errors.append(ConfigError(
                f"web.admins {admin!r} is not a person of the address book", file or path, line,
                col, did_you_mean(admin, book.people, "people")
                + "; people are defined under 'people:' in the routing files"))
    return errors


def config_against_book(cfg: Config, book: Any) -> list[ConfigError]:
    """Every name of config.yaml that the routing files' address book `book` does not define,
    and every kind of mailbox it has that config.yaml gives no downstream."""
    return (check_control(cfg.control, book, cfg.path) + check_web(cfg.webui, book, cfg.path)
            + downstreams_missing(cfg, book))


def downstreams_missing(cfg: Config, book: Any) -> list[ConfigError]:
    """A mailbox `{lmtp: ...}` or `{smtp: ...}` of the routing files with no `delivery.lmtp`
    (`delivery.smtp`) in config.yaml: `check` said ok, the daemon started and /readyz said
    ok, and every copy for that mailbox was answered 451 4.3.5 until the sender's MTA gave
    up days later."""
    out = []
    for kind in ("lmtp", "smtp"):
        if getattr(cfg.delivery, kind) is not None:
            continue
        names = sorted(m.name for m in book.mailboxes.values() if m.kind == kind)
        if names:
            example = "{host: 127.0.0.1, port: 24}" if kind == "lmtp" else \
                "{host: 127.0.0.1, port: 10027}"
            out.append(ConfigError(
                f"the routing files deliver to {kind}: mailboxes ({', '.join(names)}), but "
                f"there is no delivery.{kind}: every copy for them would be answered 451 4.3.5",
                cfg.path or "the embedded default config (no -c FILE)", 0, 0,
                f"set delivery: {{{kind}: {example}}} (docs/install.md), or make them maildir: "
                "mailboxes"))
    return out


def smtp_back_to_us(cfg: Config, book: Any,
                    lines: Mapping[str, tuple[str, int]] = {}) -> list[str]:
    """A warning per mailbox `{smtp: ADDRESS}` whose address is on one of our own domains
    (`lines`: each mailbox's file and line). delivery.smtp is mostly the MTA in front (its
    return port), whose transport sends our domains to mailrouter: the copy comes back as
    new mail to ADDRESS, refused (550 5.1.1, or 554 5.4.6 when ADDRESS leads to this very
    mailbox) and bounced by the MTA, or routed a second time. `check` said ok. A warning,
    not an error: a downstream that hosts the domain's mailboxes itself takes it."""
    out = []
    downstream = (f"delivery.smtp ({cfg.delivery.smtp.host}:{cfg.delivery.smtp.port})"
                  if cfg.delivery.smtp is not None else "delivery.smtp")
    for box in sorted(book.mailboxes.values(), key=lambda m: (*lines.get(m.name, ("", 0)), m.name)):
        if box.kind != "smtp" or not on_our_domains(box.where, book.domains):
            continue
        at = place_prefix(*lines.get(box.name, ("", 0)))
        domain = box.where.rpartition("@")[2]
        res = book.resolve(box.where)
        if res.reply is not None:
            fate = (f"mailrouter refuses it ({res.reply.code} {res.reply.status}: not an "
                    "address of the address book) and the MTA bounces it to the sender")
            fix = ("deliver to our own mailboxes with {maildir: ...} or {lmtp: ...}; "
                   "{smtp: ...} is for addresses outside our domains")
        elif box.name in {t.mailbox for t in res.targets}:
            fate = (f"{box.where} leads to this mailbox again: a mail loop, refused 554 5.4.6 "
                    "and bounced to the sender")
            fix = ("deliver to our own mailboxes with {maildir: ...} or {lmtp: ...}; "
                   "{smtp: ...} is for addresses outside our domains")
        else:
            fate = ("it is taken again as new mail to that address (routed twice, two "
                    "registry rows)")
            fix = (f"point the aliases at {box.where} (an alias may name another address "
                   f"of ours) instead of mailbox:{box.name}")
        out.append(f"{at}mailbox {box.name!r} {{smtp: {box.where}}} is on our own domain "
                   f"{domain}: if {downstream} is the MTA that sends {domain} to mailrouter, "
                   f"{fate}; {fix} (fine if that downstream hosts the mailbox itself)")
    return out

"""Which senders are robots: the local parts of mail systems, lists and no-reply senders.

One definition for the rules' `robot: true` (routing/facts.py) and the autoresponder's
RFC 3834 check (autoreply.py, which takes `autoreply.robot_senders` from config.yaml instead
when it is set): before, `robot: true` knew only MAILER-DAEMON and postmaster, so a rule
tagging robots let noreply@, no-reply@ and bounce-*@ through as people's mail while the
autoresponder would not answer them.

What a message says of itself (Auto-Submitted, a responder's marker, a report, list headers,
a bounce's or out-of-office subject) is the other half of "automatic mail", and is defined
once too, in message.py (`MessageView.automatic`), which the rules, Control's plan and
the autoresponder all read.

Patterns are shell globs on the local part, case-insensitive; a +detail is cut off before
matching, and the whole local part is matched too.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

__all__ = ["DEFAULT_ROBOT_SENDERS", "robot_pattern", "robot_sender"]

# "postmaster": the From of most non-DSN bounces (Exchange, GroupWise, SMTP32), which reach
# us with a non-null envelope sender when a forwarder rewrote it. The noreply family also
# as a word of a longer local part (gmail-noreply@google.com, noreply.alerts@), not
# inside one (noreplyfan@ is a person); a +detail is cut off before matching, and the whole
# local part is matched too: mlmmj's list+owner@ and list+bounces-...@ (FreeBSD's lists: a
# "Post to ... denied" notice without List-* headers, in notmuch's test corpus). bounce-*: a
# list manager's per-message (VERP) return path, bounce-<list>-<id>@ (Lyris ListManager's
# newsletters in SpamAssassin's welcomelists, with no List-* header nor Precedence).
# Each spelling of no-reply and do-not-reply also as a word (Apple's do_not_reply@apple.com
# and no_reply@email.apple.com, shops' do-not-reply.orders@: were answered).
# "no reply" in Czech (neodpovidat@, neodpovidejte@, ČEZ's upominani_neodpovidat@: Czech
# senders' code in public repositories) and French (ne-pas-repondre@: a TYPO3 form mailer's
# mail in imap_tools' test messages, which was answered), as a word the same way.
DEFAULT_ROBOT_SENDERS = ("mailer-daemon", "postmaster", "listserv", "majordomo", "owner-*",
                         "*-request", "noreply", "no-reply", "no_reply", "donotreply",
                         "do-not-reply", "do_not_reply", "*[-_.]noreply", "noreply[-_.]*",
                         "*[-_.]no-reply", "no-reply[-_.]*", "*[-_.]no_reply", "no_reply[-_.]*",
                         "*[-_.]donotreply", "donotreply[-_.]*", "*[-_.]do-not-reply",
                         "do-not-reply[-_.]*", "*[-_.]do_not_reply", "do_not_reply[-_.]*",
                         "*-bounces", "bounce", "bounces", "bounce-*", "post_master", "*+owner",
                         "*+bounces-*", "neodpovidat", "*[-_.]neodpovidat", "neodpovidat[-_.]*",
                         "neodpovidejte", "*[-_.]neodpovidejte", "neodpovidejte[-_.]*",
                         "ne-pas-repondre", "nepasrepondre", "ne_pas_repondre")


def robot_pattern(address: str, patterns: Sequence[str]) -> str | None:
    """The `robot_senders` glob that the local part of `address` (lower case; a bare
    `mailer-daemon` too) matches, with or without its +detail; None for a person's."""
    local = address.rpartition("@")[0] if "@" in address else address
    if not local:
        return None
    parts = {local, local.split("+", 1)[0]}
    if not any(map(_any_of(tuple(patterns)), parts)):    # a person's: one match per part
        return None
    return next((p for p in patterns for part in parts
                 if fnmatch.fnmatchcase(part, p.lower())), None)


@lru_cache(maxsize=8)
def _any_of(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """One regex for all the globs (fnmatch.translate): a person's address, the common
    case, is told by one match instead of one fnmatchcase per glob (15 us a message for
    the rules' `robot: true` and Control's plan, each)."""
    return re.compile("|".join(fnmatch.translate(p.lower()) for p in patterns)).fullmatch


def robot_sender(addresses: Iterable[tuple[str, str]],
                 patterns: Sequence[str] = DEFAULT_ROBOT_SENDERS) -> str:
    """'robot sender: WHO ADDRESS matches PATTERN' for the first (who, address) whose
    address (bare, lower case) is a robot's; '' when none is."""
    for who, address in addresses:
        hit = robot_pattern(address, patterns)
        if hit is not None:
            return f"robot sender: {who} {address} matches {hit!r}"
    return ""

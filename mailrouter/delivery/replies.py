"""What our client hears when a downstream answers: our replies, never the downstream's.

A downstream's reply belongs to the connection between us and it: its text names its
host and software (`421 4.3.2 vm Shutting down`), and its code can mean something
only on that connection (421 is "I am closing this channel", RFC 5321 3.8). Passed on
verbatim it tells the upstream client something false about *our* session. So each
downstream reply is mapped onto one of ours:

  - the class is kept: 2xx delivered, 4xx deferred, 5xx refused;
  - the code is one we would give ourselves: 250; 452 for a full mailbox or store,
    else 451 (so 421 becomes 451); 552 for size and quota, 554 for content and
    policy, else 550;
  - the RFC 3463 enhanced code is kept when it says something about the recipient or
    the message (X.1.* address, X.2.* mailbox, X.6.* content, X.7.* policy, X.3.1 store
    full, X.3.4 too big, X.4.6 mail loop), with our class digit; otherwise (X.0.0, and X.3/4/5.*: the
    downstream's own system, network or protocol) it becomes X.3.0;
  - the text is ours.

The deliverer logs the downstream's original next to what we answered.

`refuses_mailbox` says whether a 5xx refuses the mailbox itself (unknown user,
mailbox disabled, relay denied: anything but the message's own content, its size or a
mail loop):
for a mailbox our own configuration names, that is our configuration's fault, so
the deliverer holds it as 4xx for `delivery.hold_permanent_failures` first.
"""

from __future__ import annotations

from ..values import REPLY_COPY_DELIVERED, REPLY_MAILBOX_HELD, Reply

__all__ = ["DELIVERED", "HELD", "ours", "refuses_mailbox"]

DELIVERED = REPLY_COPY_DELIVERED
HELD = REPLY_MAILBOX_HELD

_KEPT_SUBJECTS = {"1", "2", "6", "7"}
_KEPT_CODES = {"3.1", "3.4", "4.6"}
_CONTENT = {"2.3", "3.4", "4.6"}             # too big (for the mailbox, the system); a mail loop
_TEXT = {
    "4.2.2": "Mailbox full, try again later",
    "4.3.1": "Insufficient system storage, try again later",
    "5.2.2": "Mailbox full",
    "5.2.3": "Message too big for the mailbox",
    "5.3.4": "Message too big",
    "5.4.6": "Mail loop detected",
}


def _subject_detail(reply: Reply) -> str:
    """'1.1' from '5.1.1'; '' when the reply carries no (well-formed) enhanced code."""
    parts = reply.status.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return ""
    return f"{int(parts[1])}.{int(parts[2])}"


def ours(reply: Reply) -> Reply:
    """The reply we give for a downstream's `reply` (see the module docstring)."""
    if reply.ok:
        return DELIVERED
    cls = "4" if reply.temporary else "5"
    sd = _subject_detail(reply)
    kept = sd.split(".")[0] in _KEPT_SUBJECTS or sd in _KEPT_CODES
    status = f"{cls}.{sd}" if kept else f"{cls}.3.0"
    if cls == "4":
        code = 452 if status in ("4.2.2", "4.3.1") else 451
        text = _TEXT.get(status, "Delivery deferred by the mail store, try again later")
    else:
        code = (552 if status in ("5.2.2", "5.2.3", "5.3.4")
                else 554 if status[2] in "67" or status == "5.4.6" else 550)
        text = _TEXT.get(status, "Delivery refused by the mail store")
    return Reply(code, status, text)


def refuses_mailbox(reply: Reply) -> bool:
    """A 5xx about the mailbox (or about us), not about this message's content or size."""
    if not 500 <= reply.code < 600:
        return False
    sd = _subject_detail(reply)
    return not (sd.startswith("6.") or sd in _CONTENT)

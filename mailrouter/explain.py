"""`mailrouter explain`: the decision for one message, from the daemon's own code.

`explain()` never fails on a message, however broken: every property of the
view is read defensively and a failure to read one becomes a defect line. The
JSON keys are a contract: later versions add keys, never rename them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Callable, Sequence

from .addressquery import meant
from .autoreply import Policy, verdict
from .intake.handler import rcpt_path
from .message import MessageView
from .values import Action, Decision, Reply, as_stored
from .routing.facts import robot_of
from .routing.snapshot import Snapshot, envelope_sender

__all__ = ["explain", "format_text"]

log = logging.getLogger(__name__)


def _safe(defects: list[str], what: str, get: Callable[[], Any], default: Any) -> Any:
    try:
        return get()
    except Exception as exc:  # the view promises not to raise; if it does, say so, go on
        defects.append(f"{what}: cannot decode ({type(exc).__name__})")
        return default


def _autoreply(defects: list[str], snap: Snapshot, view: MessageView, sender: str,
               d: Decision, at: datetime | None, policy: Policy) -> dict[str, Any]:
    """`{responder, send, reason}`: the daemon's own verdict without history or DNS."""
    def get() -> dict[str, Any]:
        return verdict(snap.responders.get(d.autoreply or ""), view, sender,
                       our_domains=snap.book.domains, policy=policy, history=None,
                       at=at or datetime.now(UTC),
                       refused=d.action is not Action.DELIVER, rcpt=d.rcpt).as_dict()
    out: dict[str, Any] = _safe(defects, "autoreply", get,
                                {"responder": d.autoreply, "send": False, "reason": "error"})
    return out


def explain(snap: Snapshot, raw: bytes, rcpts: Sequence[str], sender: str | None,
            at: datetime | None = None, policy: Policy | None = None) -> dict[str, Any]:
    # as the daemon stores it: read as headers, a file ' , x' + 'Subject: invoice 7' took
    # the invoices rule here, and the daemon's rules saw no subject
    view = MessageView(as_stored(raw))
    defects: list[str] = list(_safe([], "defects", lambda: view.defects, []))
    from_addr = _safe(defects, "From", lambda: view.from_addr, "")
    if not rcpts:
        rcpts = [a for _, a in _safe(defects, "To", lambda: view.to + view.cc, []) if a]
    envelope_from = envelope_sender(sender, view)   # the From address unless --from
    decisions = _decide(snap, view, envelope_from, rcpts, at)
    robot = _safe(defects, "robot", lambda: robot_of(view, envelope_from), (False, ""))
    return {
        "subject": _safe(defects, "Subject", lambda: view.subject, ""),
        "from": {"name": _safe(defects, "From", lambda: view.from_name, ""), "addr": from_addr},
        "message_id": _safe(defects, "Message-ID", lambda: view.message_id, None),
        "size": view.size,
        "envelope": {"from": envelope_from, "rcpts": list(rcpts)},
        "recipients": [d.as_dict() | {"autoreply": _autoreply(defects, snap, view, envelope_from,
                                                              d, at, policy or Policy()),
                                      "did_you_mean": _meant(snap, d)}
                       for d in decisions],
        "attachments": [a.filename for a in _safe(defects, "attachments", lambda: view.attachments, [])],
        "body_charset": _safe(defects, "body", lambda: view.body_charset, None),
        "robot": {"robot": bool(robot[0]), "reason": robot[1]},
        "charset": list(_safe(defects, "charset", lambda: view.charset_notes, [])),
        "defects": defects,
        "ruleset": snap.hash,
    }


def _decide(snap: Snapshot, view: MessageView, sender: str, rcpts: Sequence[str],
            at: datetime | None) -> list[Decision]:
    """The daemon's decisions: a path its RCPT refuses before asking the address book (553
    5.1.3 for `a b@example.com`) is refused here as there; the others go to the snapshot as
    the daemon reads them (`<sales@example.com>` is sales@example.com)."""
    paths = [rcpt_path(r) for r in rcpts]
    decided = iter(snap.decide(view, sender, [a for a, refused in paths if refused is None], at))
    return [next(decided) if refused is None else _refused(given, refused)
            for given, (_, refused) in zip(rcpts, paths)]


def _meant(snap: Snapshot, d: Decision) -> str | None:
    """The known address a recipient the address book refuses was likely typed for (as
    `mailrouter address` names it): `--rcpt invoice@example.com` said only 550 5.1.1."""
    if d.action is not Action.REJECT or rcpt_path(d.rcpt)[1] is not None:
        return None
    res = snap.book.resolve(rcpt_path(d.rcpt)[0])
    if res.reply is None or res.moved is not None:
        return None
    return meant(snap.book, d.rcpt, res.address)


def _refused(rcpt: str, reply: Reply) -> Decision:
    return Decision(rcpt, Action.REJECT, reply,
                    reasons=(f"RCPT: {reply.text} (refused before the address book is asked)",))


def format_text(report: dict[str, Any]) -> str:
    lines = [f"Subject:    {report['subject']}",
             f"From:       {report['from']['name']} <{report['from']['addr']}>",
             f"Message-ID: {report['message_id']}"]
    if report["attachments"]:
        lines.append("Attachments: " + ", ".join(report["attachments"]))
    if report["robot"]["robot"]:
        lines.append(f"Robot:      {report['robot']['reason']}")
    for note in report["charset"]:
        lines.append(f"Charset:    {note}")
    for d in report["defects"]:
        lines.append(f"Defect:     {d}")
    if not report["recipients"]:
        lines.append("No recipients: give --rcpt ADDR")
    for r in report["recipients"]:
        lines.append("")
        lines.append(f"{r['rcpt']}: {r['action']} ({r['reply']})")
        where = r["mailbox"] + (f" / {r['folder']}" if r["folder"] else "") if r["mailbox"] else "-"
        lines.append(f"  mailbox:  {where}")
        if r.get("did_you_mean"):
            lines.append(f"  did you mean: {r['did_you_mean']}")
        for key in ("owner", "priority", "sla"):
            if r.get(key):
                lines.append(f"  {key + ':':9} {r[key]}")
        auto = r.get("autoreply") or {}
        if auto.get("responder"):
            lines.append(f"  autoreply: {auto['responder']}: " + (
                "would be sent (if not sent within its period, and the sender's domain "
                "has MX or A)" if auto["send"] else f"not sent: {auto['reason']}"))
        if r["tags"]:
            lines.append(f"  tags:     {', '.join(r['tags'])}")
        if len(r["targets"]) > 1:
            for t in r["targets"]:
                place = t["mailbox"] + (f" / {t['folder']}" if t["folder"] else "")
                lines.append(f"  copy to:  {place}  (via {' -> '.join(t['path'])})")
        elif r["path"]:
            lines.append(f"  path:     {' -> '.join(r['path'])}")
        shown = set()
        for rule in r["rules"]:
            lines.append(f"  rule:     {rule['name']} ({rule['file']}:{rule['line']}) {rule['matched']}")
            shown.add(f"rule {rule['name']!r} ({rule['file']}:{rule['line']}): {rule['matched']}")
        # a matched rule is also among the reasons (the registry keeps those): said once here
        for reason in r["reasons"]:
            if reason not in shown:
                lines.append(f"  because:  {reason}")
    return "\n".join(lines)

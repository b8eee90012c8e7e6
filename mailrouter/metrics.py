"""Prometheus metrics. Label values come from fixed sets, never from addresses.

Collectors live in one CollectorRegistry (`REGISTRY`) that the admin endpoint
serves; every labelled series of a fixed set is created at import so zeros show on
dashboards. Labels named after the routing files (mailbox, folder, rule, owner,
responder) take only names written there, never an address or a subject.

Three kinds of family:
- counted where it happens (messages, decisions, deliveries, registry commits,
  temporary failures, loops, autoreplies, DSNs, outbox attempts); with `workers: N`
  every worker writes its own files and /metrics adds them up (multiprocess mode);
- reloads: every worker takes each reload (worker 0 reads the files, the others load its
  bytes), but only worker 0 (or the only process) counts `mailrouter_config_reloads_total`, so one reload
  is one count; the per-worker gauges (last result, last success time) aggregate
  with `livemin`: one worker left on old rules shows;
- read at scrape time by the admin worker (`State`, below): build and rule-set info,
  the outbox backlog and the open/overdue requests, from the registry; the free and total
  bytes of the file system of each directory the daemon writes in (`disk_space`), by the
  config key that names it (delivery.maildir_root, delivery.intents_dir, registry.url for
  a SQLite file, postfix_maps.dir), for the disk alerts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .values import REPLY_INTENT_FAILED, REPLY_INTENTS_FULL, Action, Decision, LoopKind, Reply

__all__ = ["REGISTRY", "MESSAGES", "RECIPIENTS", "RCPT_REFUSED", "MAIL_REFUSED", "LATENCY",
           "RELOADS", "RELOAD_OK", "RELOAD_TIME", "POSTFIX_MAPS_FAILED", "CONFIG_NOT_APPLIED",
           "SESSIONS", "DOWNSTREAM_REPLIES", "REFUSED_CONFIGURED",
           "DECISIONS", "MAILBOX_DECISIONS", "RULE_DECISIONS", "DELIVERIES", "DELIVERY_SECONDS",
           "REGISTRY_COMMIT", "REGISTRY_BATCH",
           "REGISTRY_ERRORS", "TEMPFAILS", "LOOPS", "AUTOREPLIES", "DSNS", "OUTBOX_ATTEMPTS",
           "State", "observe_message", "observe_decisions", "exposition", "child",
           "copy_tempfail_cause", "disk_space", "known_decisions", "config_not_applied",
           "mail_refused", "rcpt_refused"]

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES = Counter("mailrouter_messages_total", "Messages after DATA, by outcome",
                   ["result"], registry=REGISTRY)
RECIPIENTS = Counter("mailrouter_recipients_total", "Recipient replies after DATA, by class",
                     ["result"], registry=REGISTRY)
RCPT_REFUSED = Counter("mailrouter_rcpt_refused_total", "RCPT commands refused, by reason: "
                       "unknown, moved, too_many, syntax (501, 500), malformed (553 5.1.3 path), "
                       "parameter (555), sequence (503: no HELO/MAIL), smtputf8 (553 5.6.7), "
                       "other; a loop is found after DATA: mailrouter_loops_total",
                       ["reason"], registry=REGISTRY)
MAIL_REFUSED = Counter("mailrouter_mail_refused_total", "MAIL FROM commands refused, by reason: "
                       "syntax (501, 500), malformed (553 5.1.3 path), parameter (555), "
                       "sequence (503: no HELO, a MAIL inside a transaction), too_big (552: "
                       "SIZE= over limits.max_message_size), smtputf8 (553 5.6.7), other",
                       ["reason"], registry=REGISTRY)
# The slow end of both latency histograms reaches limits.process_timeout (300 s): a downstream
# that does not answer holds a message for its timeout (30 s per wait) or until that cut, and
# with 10 s as the last bucket the dashboard's p99 said "10 s" of replies that took 300
LATENCY = Histogram("mailrouter_message_seconds", "Time from end of DATA to reply",
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30,
                             60, 120, 300),
                    registry=REGISTRY)
RELOADS = Counter("mailrouter_config_reloads_total", "Routing reloads, by result",
                  ["result"], registry=REGISTRY)
RELOAD_OK = Gauge("mailrouter_config_last_reload_successful",
                  "1 if the last routing reload succeeded", registry=REGISTRY,
                  multiprocess_mode="livemin")
DOWNSTREAM_REPLIES = Counter("mailrouter_downstream_replies_total",
                             "LMTP/SMTP downstream outcomes per recipient, by backend and class",
                             ["backend", "result"], registry=REGISTRY)
REFUSED_CONFIGURED = Counter("mailrouter_downstream_refused_configured_mailbox_total",
                             "Configured mailboxes refused 5xx by our own downstream, by answer "
                             "(held: 451 while delivery.hold_permanent_failures runs; given_up: 5xx)",
                             ["outcome"], registry=REGISTRY)
SESSIONS = Gauge("mailrouter_sessions", "Open SMTP/LMTP sessions", registry=REGISTRY,
                 multiprocess_mode="livesum")
RELOAD_TIME = Gauge("mailrouter_config_last_reload_success_timestamp_seconds",
                    "When the rule set in use was taken (at start, or by the last reload "
                    "that changed it); the oldest worker's", registry=REGISTRY, multiprocess_mode="livemin")
# What a reload took but could not finish, set by the one process that does it (the admin
# worker; the others stay at 0, hence livemax). Neither showed in any metric: a reload that
# took the routing files but left Postfix's tables old (`mailrouter reload` exit 3: Postfix
# refuses the new addresses with 550), or found config.yaml edited and not applied (exit 4)
POSTFIX_MAPS_FAILED = Gauge("mailrouter_postfix_maps_failed",
                            "1 when Postfix's tables (postfix_maps.on_reload) could not be "
                            "rebuilt at the start or the last reload: Postfix answers from the "
                            "old ones (mailrouter reload exits 3); 0 when rebuilt or not asked",
                            registry=REGISTRY, multiprocess_mode="livemax")
CONFIG_NOT_APPLIED = Gauge("mailrouter_config_not_applied",
                           "1 when the last reload found config.yaml changed since the start "
                           "(reason changed) or broken (reason errors): the daemon runs the "
                           "settings it started with (mailrouter reload exits 4)",
                           ["reason"], registry=REGISTRY, multiprocess_mode="livemax")

DECISIONS = Counter("mailrouter_decisions_total",
                    "Recipient decisions by action, mailbox, folder, first matching rule and "
                    "owner (names from the routing files; '-' for none)",
                    ["action", "mailbox", "folder", "rule", "owner"], registry=REGISTRY)
# The same decisions by one name each, every series known when the rule set loads and made
# at 0 then (known_decisions), so rate() sees a mailbox's or a rule's first decision:
# mailrouter_decisions_total's combinations are not known before they happen, and each was
# born at its first count, which Prometheus never sees as an increase
MAILBOX_DECISIONS = Counter("mailrouter_mailbox_decisions_total",
                            "Recipient decisions by action and mailbox (a mailbox of the "
                            "routing files, '-' for none)", ["mailbox", "action"],
                            registry=REGISTRY)
RULE_DECISIONS = Counter("mailrouter_rule_decisions_total",
                         "Recipient decisions by the first matching rule ('-' for none)",
                         ["rule"], registry=REGISTRY)
DELIVERIES = Counter("mailrouter_deliveries_total",
                     "Copies stored (maildir) or handed downstream (lmtp, smtp), by result",
                     ["backend", "result"], registry=REGISTRY)
DELIVERY_SECONDS = Histogram("mailrouter_delivery_seconds",
                             "Time to store one Maildir copy or run one downstream transaction",
                             ["backend"], registry=REGISTRY,
                             buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5,
                                      10, 30, 60, 120, 300))
REGISTRY_COMMIT = Histogram("mailrouter_registry_commit_seconds",
                            "Time to commit one group batch of message records",
                            registry=REGISTRY,
                            buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5,
                                     5, 10))
REGISTRY_BATCH = Histogram("mailrouter_registry_batch_size", "Message records per group commit",
                           registry=REGISTRY, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
REGISTRY_ERRORS = Counter("mailrouter_registry_errors_total",
                          "Registry operations failed, by operation and kind (outage, full, bug)",
                          ["op", "kind"], registry=REGISTRY)
TEMPFAILS = Counter("mailrouter_tempfails_total",
                    "4xx answers after DATA by cause: per recipient (registry, timeout, "
                    "internal, rule: a rule's action defer; intents, intents_full: a "
                    "journal that could not be opened; data_in_flight: DATA memory full; "
                    "data_deadline, data_timeout: a DATA phase cut with 421; shutdown: "
                    "shutdown_grace over) or per copy (maildir, downstream, held; intents, "
                    "intents_full: the copy's intent not written)",
                    ["cause"], registry=REGISTRY)
LOOPS = Counter("mailrouter_loops_total", "Mail loops refused at run time, by kind",
                ["kind"], registry=REGISTRY)
AUTOREPLIES = Counter("mailrouter_autoreplies_total",
                      "Autoreply verdicts: queued, or suppressed with the reason's kind",
                      ["result", "reason"], registry=REGISTRY)
DSNS = Counter("mailrouter_dsns_total",
               "DSNs for recipients refused after DATA: queued, or suppressed by reason",
               ["result", "reason"], registry=REGISTRY)
OUTBOX_ATTEMPTS = Counter("mailrouter_outbox_attempts_total",
                          "Outbox send attempts by kind (autoreply, dsn, sla-remind, "
                          "sla-escalate, assign) and result (sent, retry, failed, suppressed)",
                          ["kind", "result"], registry=REGISTRY)

# Every reason of mailrouter_rcpt_refused_total: the address book's and the handler's (unknown,
# moved, too_many, syntax, smtputf8), and the protocol's refusals before the handler is asked
# (intake/protocol.py: malformed path, syntax, parameter, sequence, other), which went uncounted:
# a client hammering us with bad RCPTs showed nothing on the dashboard
RCPT_REASONS = ("unknown", "moved", "too_many", "syntax", "malformed", "parameter", "sequence",
                "smtputf8", "other")
# Every reason of mailrouter_mail_refused_total, told apart by the reply (mail_refused): a
# client sending bad MAIL FROMs (a size over the limit, a broken path) showed in no metric
MAIL_REASONS = ("syntax", "malformed", "parameter", "sequence", "too_big", "smtputf8", "other")
_MAIL_REFUSED = {b"501": "syntax", b"500": "syntax", b"553": "malformed", b"555": "parameter",
                 b"503": "sequence", b"552": "too_big"}
# The reason of a RCPT refused before the handler is asked (the handler counts its own:
# unknown, moved, too_many, smtputf8): aiosmtpd's 553 5.1.3 malformed path, 501 syntax (ours
# too: control characters, bytes not UTF-8, a parameter twice), 555 parameters, 503 no
# HELO/MAIL, and our 500 for a line not ended by CRLF. Uncounted, a client hammering us with
# bad RCPTs showed nothing on the dashboard.
_RCPT_REFUSED = {b"553": "malformed", b"501": "syntax", b"500": "syntax", b"555": "parameter",
                 b"503": "sequence"}
TEMPFAIL_CAUSES = ("registry", "maildir", "downstream", "held", "timeout", "internal", "rule",
                   "intents", "intents_full", "data_in_flight", "data_deadline", "data_timeout",
                   "shutdown")
AUTOREPLY_REASONS = ("refused", "null_sender", "generated", "auto_submitted", "report", "list",
                     "precedence", "suppress_header", "robot_sender", "own_domain", "period",
                     "daily_cap", "duplicate", "not_addressed", "other")
DSN_REASONS = ("disabled", "lmtp", "null_sender", "deferred", "all_refused")
# The registry operations the daemon runs (the `what` of registry/store.py's calls, and of
# Registry.read/write by its callers), so that each one's first failure is seen by rate();
# the commands' own (message, recent, outbox_list, upgrade...) run in no daemon
REGISTRY_OPS = ("open", "record", "delivered_targets", "first_seen", "autoreply_history",
                "record_loop", "record_reload", "outbox_claim", "outbox_renew", "outbox_settle",
                "metrics_backlog", "plan_request", "claim_thread", "sla_scan", "web board",
                "web counterparty", "web message", "web report", "web request", "web search",
                "web session", "web sign-in", "web sign-out",
                # the actions on a request (web/requests.py ACTION_OPS)
                "web owner", "web close", "web reopen", "web note")
# Every kind of outbox row: autoreplies and DSNs (outbox.py), SLA reminders and escalations
# (control/sla.py: "sla-" + stage), a request given to someone in the web view (web/requests.py)
OUTBOX_KINDS = ("autoreply", "dsn", "sla-remind", "sla-escalate", "assign")

for _r in ("delivered", "partial", "deferred", "rejected"):
    MESSAGES.labels(_r)
for _r in ("ok", "tempfail", "permfail"):
    RECIPIENTS.labels(_r)
for _r in RCPT_REASONS:
    RCPT_REFUSED.labels(_r)
for _r in MAIL_REASONS:
    MAIL_REFUSED.labels(_r)
for _r in ("ok", "failed"):
    RELOADS.labels(_r)
for _r in ("changed", "errors"):
    CONFIG_NOT_APPLIED.labels(_r)
for _b in ("lmtp", "smtp"):
    for _r in ("ok", "tempfail", "permfail"):
        DOWNSTREAM_REPLIES.labels(_b, _r)
for _r in ("held", "given_up"):
    REFUSED_CONFIGURED.labels(_r)
for _b in ("maildir", "lmtp", "smtp"):
    DELIVERY_SECONDS.labels(_b)
    for _r in ("ok", "tempfail", "permfail"):
        DELIVERIES.labels(_b, _r)
for _r in TEMPFAIL_CAUSES:
    TEMPFAILS.labels(_r)
for _lk in LoopKind:
    LOOPS.labels(_lk.value)
AUTOREPLIES.labels("queued", "")
for _r in AUTOREPLY_REASONS:
    AUTOREPLIES.labels("suppressed", _r)
DSNS.labels("queued", "")
for _r in DSN_REASONS:
    DSNS.labels("suppressed", _r)
for _k in OUTBOX_KINDS:
    for _r in ("sent", "retry", "failed", "suppressed"):
        OUTBOX_ATTEMPTS.labels(_k, _r)
for _o in REGISTRY_OPS:
    for _r in ("outage", "full", "bug"):
        REGISTRY_ERRORS.labels(_o, _r)
RELOAD_OK.set(1)


class State(Collector):
    """Families read at scrape time by the admin worker: build and rule-set info (from the
    running daemon), the outbox backlog and open/overdue requests (set by `refresh` in the
    daemon from the registry just before the scrape)."""

    def __init__(self, ruleset: str = "") -> None:
        self.ruleset = ruleset
        self.outbox: dict[str, tuple[int, float]] = {}              # kind -> (pending, oldest age)
        self.requests: dict[tuple[str, str], tuple[int, int]] = {}  # (mailbox, owner) -> open, overdue
        self.error = 0.0                                            # 1 when the last read failed
        self.stores: dict[str, tuple[float, float]] = {}            # config key -> free, size

    def collect(self) -> Iterable[Metric]:
        build = InfoMetricFamily("mailrouter_build", "Version of the running mailrouter")
        build.add_metric([], {"version": __version__, "python": sys.version.split()[0]})
        rules = InfoMetricFamily("mailrouter_ruleset", "Hash of the rule set in use (as "
                                 "`mailrouter check` prints it)")
        rules.add_metric([], {"hash": self.ruleset})
        pending = GaugeMetricFamily("mailrouter_outbox_pending",
                                    "Outgoing mail queued, not yet sent (autoreplies, DSNs, "
                                    "SLA reminders and escalations, assignment notices)",
                                    labels=["kind"])
        oldest = GaugeMetricFamily("mailrouter_outbox_oldest_age_seconds",
                                   "Age of the oldest queued outgoing mail of each kind",
                                   labels=["kind"])
        for kind in sorted(set(OUTBOX_KINDS) | set(self.outbox)):
            n, age = self.outbox.get(kind, (0, 0.0))
            pending.add_metric([kind], n)
            oldest.add_metric([kind], age)
        open_ = GaugeMetricFamily("mailrouter_requests_open",
                                  "Requests not closed, per mailbox and owner ('-' for none)",
                                  labels=["mailbox", "owner"])
        overdue = GaugeMetricFamily("mailrouter_requests_overdue",
                                    "Open requests past the due time of the answer owed "
                                    "(first or next), per mailbox and owner", labels=["mailbox", "owner"])
        for (mailbox, owner), (n_open, n_overdue) in sorted(self.requests.items()):
            open_.add_metric([mailbox, owner], n_open)
            overdue.add_metric([mailbox, owner], n_overdue)
        failed = GaugeMetricFamily("mailrouter_scrape_registry_error",
                                   "1 when the outbox and request figures could not be read "
                                   "from the registry at this scrape (they are the last known)")
        failed.add_metric([], self.error)
        free = GaugeMetricFamily("mailrouter_store_free_bytes",
                                 "Bytes free (to the daemon's user) on the file system of each "
                                 "directory the daemon writes in, by the config key naming it",
                                 labels=["store"])
        size = GaugeMetricFamily("mailrouter_store_size_bytes",
                                 "Size in bytes of the file system of each directory the daemon "
                                 "writes in, by the config key naming it", labels=["store"])
        for store, (n_free, n_size) in sorted(self.stores.items()):
            free.add_metric([store], n_free)
            size.add_metric([store], n_size)
        return [build, rules, pending, oldest, open_, overdue, failed, free, size]


def disk_space(directories: Mapping[str, Path]) -> dict[str, tuple[float, float]]:
    """(bytes free to an unprivileged user, file system size) of each directory's file
    system; a directory that cannot be read (gone, not yet made) is left out."""
    out: dict[str, tuple[float, float]] = {}
    for key, directory in directories.items():
        try:
            st = os.statvfs(directory)
        except OSError:
            continue
        out[key] = (float(st.f_bavail * st.f_frsize), float(st.f_blocks * st.f_frsize))
    return out


def exposition(state: State | None = None) -> bytes:
    """The /metrics body: this process's collectors, or with several worker processes
    (PROMETHEUS_MULTIPROC_DIR set) every live worker's, added up; then `state`."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        body = generate_latest(merged)
    else:
        body = generate_latest(REGISTRY)
    if state is not None:
        extra = CollectorRegistry(auto_describe=False)
        extra.register(state)
        body += generate_latest(extra)
    return body


_M = TypeVar("_M", Counter, Gauge, Histogram)
_CHILDREN: dict[tuple[object, tuple[str, ...]], Any] = {}


def child(metric: _M, *values: str) -> _M:
    """`metric.labels(*values)`, looked up in a plain dict after the first time: the series
    object is the one labels() returns (prometheus_client keeps it for the metric's life;
    nothing here removes series), without its checks and lock on every message."""
    key = (metric, values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return cast(_M, found)


def observe_decisions(decisions: Sequence[Decision]) -> None:
    for d in decisions:
        rule = d.rules[0].name if d.rules else "-"
        child(DECISIONS, d.action.value, d.mailbox or "-", d.folder or "-", rule,
              d.owner or "-").inc()
        child(MAILBOX_DECISIONS, d.mailbox or "-", d.action.value).inc()
        child(RULE_DECISIONS, rule).inc()


def mail_refused(reply: bytes) -> None:
    """One MAIL FROM refused with `reply` (the bytes sent: code, enhanced code, text),
    counted by its reason. The intake calls it for the first reply to a MAIL command when
    that reply is a 4xx or 5xx other than 421 (a session closed is no refusal)."""
    child(MAIL_REFUSED, _reason(reply, _MAIL_REFUSED)).inc()


def rcpt_refused(reply: bytes) -> None:
    """One RCPT refused with `reply` before the intake's handler was asked about it (its own
    refusals the handler counts), counted by its reason; as mail_refused."""
    child(RCPT_REFUSED, _reason(reply, _RCPT_REFUSED)).inc()


def _reason(reply: bytes, codes: Mapping[bytes, str]) -> str:
    """A refusal's reason: smtputf8 for 5.6.7 (RFC 6531), else by its code in `codes`."""
    return "smtputf8" if reply[4:9] == b"5.6.7" else codes.get(reply[:3], "other")


def known_decisions(mailboxes: Iterable[str], rules: Iterable[str]) -> None:
    """Make the per-mailbox (each action) and per-rule decision series of a rule set at 0,
    at its load: a series born at its first count hides that count from rate()."""
    for mailbox in ("-", *mailboxes):
        for action in Action:
            child(MAILBOX_DECISIONS, mailbox, action.value)
    for rule in ("-", *rules):
        child(RULE_DECISIONS, rule)


def observe_message(replies: Sequence[Reply], seconds: float | None) -> None:
    """One message answered after DATA: its outcome, each recipient's reply class, and the
    time from the end of DATA to the reply. Counted where every answer passes (the intake's
    DATA handler: delivered, deferred by a fault, cut by process_timeout, crashed), so the
    dashboard's and the deferred-rate alert's figures are every answer the clients got.
    `seconds` None: refused by the protocol before processing (too big: no latency)."""
    ok = sum(r.ok for r in replies)
    temp = sum(r.temporary for r in replies)
    for label, n in (("ok", ok), ("tempfail", temp), ("permfail", len(replies) - ok - temp)):
        if n:
            child(RECIPIENTS, label).inc(n)
    result = ("delivered" if ok == len(replies) else "partial" if ok
              else "deferred" if temp else "rejected")
    child(MESSAGES, result).inc()
    if seconds is not None:
        LATENCY.observe(seconds)


# A copy refused because its intent (intents.py) could not be written is that journal's
# disk's fault, not the Maildir's: counted under "maildir", the admin freed the wrong disk
_INTENT_CAUSES = {REPLY_INTENT_FAILED: "intents", REPLY_INTENTS_FULL: "intents_full"}


def copy_tempfail_cause(backend: str, reply: Reply) -> str:
    """The `mailrouter_tempfails_total` cause of one copy's 4xx from `backend`."""
    return _INTENT_CAUSES.get(reply) or ("maildir" if backend == "maildir" else "downstream")


def config_not_applied(reason: str | None) -> None:
    """A reload's finding about config.yaml: None (as started), "changed" or "errors"."""
    for label in ("changed", "errors"):
        child(CONFIG_NOT_APPLIED, label).set(1 if label == reason else 0)

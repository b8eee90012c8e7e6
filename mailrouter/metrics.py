"""Prometheus metrics. Label values come from fixed sets, never from addresses.

Collectors live in one CollectorRegistry (`REGISTRY`) that the admin endpoint
serves; every labelled series is created at import so zeros show on dashboards.
"""

from __future__ import annotations

import os

from typing import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .values import Reply

__all__ = ["REGISTRY", "MESSAGES", "RECIPIENTS", "RCPT_REFUSED", "LATENCY", "RELOADS",
           "RELOAD_OK", "SESSIONS", "DOWNSTREAM_REPLIES", "REFUSED_CONFIGURED", "observe_message"]

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES = Counter("mailrouter_messages_total", "Messages after DATA, by outcome",
                   ["result"], registry=REGISTRY)
RECIPIENTS = Counter("mailrouter_recipients_total", "Recipient replies after DATA, by class",
                     ["result"], registry=REGISTRY)
RCPT_REFUSED = Counter("mailrouter_rcpt_refused_total", "RCPT commands refused, by reason",
                       ["reason"], registry=REGISTRY)
LATENCY = Histogram("mailrouter_message_seconds", "Time from end of DATA to reply",
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
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

for _r in ("delivered", "partial", "deferred", "rejected"):
    MESSAGES.labels(_r)
for _r in ("ok", "tempfail", "permfail"):
    RECIPIENTS.labels(_r)
for _r in ("unknown", "too_many", "loop"):
    RCPT_REFUSED.labels(_r)
for _r in ("ok", "failed"):
    RELOADS.labels(_r)
for _b in ("lmtp", "smtp"):
    for _r in ("ok", "tempfail", "permfail"):
        DOWNSTREAM_REPLIES.labels(_b, _r)
for _r in ("held", "given_up"):
    REFUSED_CONFIGURED.labels(_r)
RELOAD_OK.set(1)


def exposition() -> bytes:
    """The /metrics body: this process's collectors, or with several worker processes
    (PROMETHEUS_MULTIPROC_DIR set) every live worker's, added up."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
    return generate_latest(REGISTRY)


def observe_message(replies: Sequence[Reply], seconds: float) -> None:
    ok = sum(r.ok for r in replies)
    temp = sum(r.temporary for r in replies)
    for label, n in (("ok", ok), ("tempfail", temp), ("permfail", len(replies) - ok - temp)):
        if n:
            RECIPIENTS.labels(label).inc(n)
    result = ("delivered" if ok == len(replies) else "partial" if ok
              else "deferred" if temp else "rejected")
    MESSAGES.labels(result).inc()
    LATENCY.observe(seconds)

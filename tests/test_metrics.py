"""The admin endpoint serves metrics that count real traffic, and the dashboard uses real names."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.control_support import ROUTING as CONTROL_ROUTING
from tests.support.daemon import RULES
from tests.support.wire import Wire



def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _value(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} ([0-9.e+]+)$", text, re.M)
    assert m, f"{series} not in metrics"
    return float(m.group(1))


async def test_metrics_count_traffic(make_app):
    """A delivered message and a refused RCPT move their counters (the dashboard's names:
    test_alerts.py)."""
    app = await make_app()
    port = app.bound["admin"][1]
    before = await asyncio.to_thread(_get, port, "/metrics")
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        await w.cmd("MAIL FROM:<a@outside.test>")
        assert (await w.cmd("RCPT TO:<nobody@example.com>")).startswith("550")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        await w.cmd("DATA")
        await w.send(b"Subject: m\r\n\r\nx\r\n.\r\n")
        assert (await w.line()).startswith("250")
    status, after = await asyncio.to_thread(_get, port, "/metrics")
    assert status == 200
    for series in ('mailrouter_messages_total{result="delivered"}',
                   'mailrouter_rcpt_refused_total{reason="unknown"}'):
        assert _value(after, series) == _value(before[1], series) + 1


async def test_rcpt_refused_before_the_handler_is_counted_by_reason(make_app):
    """A RCPT aiosmtpd (or our protocol) refuses before the handler is asked, and a non-ASCII
    one without SMTPUTF8, counts in mailrouter_rcpt_refused_total with a fixed reason: they
    counted nowhere, and a client hammering us with bad RCPTs showed nothing."""
    app = await make_app(limits={"max_errors": 100, "max_recipients": 1})
    port = app.bound["admin"][1]
    _, before = await asyncio.to_thread(_get, port, "/metrics")
    # each reason is served before its first refusal (the counters are the process's: an
    # earlier test in this process may have moved them, so what grew is compared below)
    for reason in ("malformed", "parameter", "sequence", "smtputf8", "other"):
        assert _value(before, f'mailrouter_rcpt_refused_total{{reason="{reason}"}}') >= 0
    async with Wire(app.bound["smtp"][1]) as w:
        assert (await w.line()).startswith("220")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("503")   # no EHLO
        await w.send(b"EHLO client.test\r\n")
        await w.reply()
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("503")   # no MAIL
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250")
        sent = {"malformed": ["RCPT TO:<a b@example.com>", "RCPT TO:<a@b@example.com>"],
                "syntax": ["RCPT TO:", "RCPT TO sales@example.com",
                           "RCPT TO:<sales@example.com> SIZE=1 SIZE=2",
                           "RCPT TO:<a\x01@example.com>"],
                "parameter": ["RCPT TO:<sales@example.com> FOO=BAR"],
                "smtputf8": ["RCPT TO:<\u00e9@example.com>"]}
        for lines in sent.values():
            for line in lines:
                assert (await w.cmd(line))[:1] == "5", line
        await w.send(b"RCPT TO:<sales@example.com>\n")          # bare LF: 500, not run
        assert (await w.line()).startswith("500")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
        assert (await w.cmd("RCPT TO:<support@example.com>")).startswith("452")  # the handler's
        assert (await w.cmd("QUIT")).startswith("221")
    _, after = await asyncio.to_thread(_get, port, "/metrics")

    def grew(reason: str) -> float:
        series = f'mailrouter_rcpt_refused_total{{reason="{reason}"}}'
        return _value(after, series) - _value(before, series)
    assert {r: grew(r) for r in ("malformed", "syntax", "parameter", "sequence", "smtputf8",
                                 "too_many", "unknown", "other")} == {
        "malformed": 2, "syntax": 5, "parameter": 1, "sequence": 2, "smtputf8": 1,
        "too_many": 1, "unknown": 0, "other": 0}
    assert "@" not in "".join(re.findall(r"^mailrouter_rcpt_refused_total\{.*$", after, re.M))


async def test_mail_from_refused_is_counted_by_reason(make_app):
    """A MAIL FROM refused (a broken path, SIZE over the limit, a parameter we do not know,
    before EHLO or inside a transaction, a non-ASCII sender without SMTPUTF8) counts in
    mailrouter_mail_refused_total with a fixed reason: RCPT refusals were counted, MAIL
    refusals in no metric. A MAIL taken, and a 421, count nothing."""
    app = await make_app(limits={"max_errors": 100, "max_message_size": 1000})
    port = app.bound["admin"][1]
    _, before = await asyncio.to_thread(_get, port, "/metrics")
    async with Wire(app.bound["smtp"][1]) as w:
        assert (await w.line()).startswith("220")
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("503")   # no EHLO
        await w.send(b"EHLO client.test\r\n")
        await w.reply()
        sent = {"malformed": ["MAIL FROM:<a b@outside.test>"],
                "syntax": ["MAIL FROM:", "MAIL FROM a@outside.test", "MAIL FROM:<a\x01@x.test>",
                           "MAIL FROM:<a@outside.test> SIZE=1 SIZE=2"],
                "parameter": ["MAIL FROM:<a@outside.test> FOO=BAR"],
                "too_big": ["MAIL FROM:<a@outside.test> SIZE=1001"],
                "smtputf8": ["MAIL FROM:<\u00e9@outside.test>"]}
        for lines in sent.values():
            for line in lines:
                assert (await w.cmd(line))[:1] == "5", line
        await w.send(b"MAIL FROM:<a@outside.test>\n")          # bare LF: 500, not run
        assert (await w.line()).startswith("500")
        assert (await w.cmd("MAIL FROM:<a@outside.test> SIZE=1000")).startswith("250")
        assert (await w.cmd("MAIL FROM:<b@outside.test>")).startswith("503")   # nested
        assert (await w.cmd("RCPT TO:<nobody@example.com>")).startswith("550")
        assert (await w.cmd("QUIT")).startswith("221")
    _, after = await asyncio.to_thread(_get, port, "/metrics")

    def grew(reason: str) -> float:
        series = f'mailrouter_mail_refused_total{{reason="{reason}"}}'
        return _value(after, series) - _value(before, series)
    assert {r: grew(r) for r in ("malformed", "syntax", "parameter", "sequence", "too_big",
                                 "smtputf8", "other")} == {
        "malformed": 1, "syntax": 5, "parameter": 1, "sequence": 2, "too_big": 1,
        "smtputf8": 1, "other": 0}


async def test_an_accepted_mail_from_runs_through_no_extra_coroutine(make_app, monkeypatch):
    """The MAIL refusal count costs an accepted MAIL no coroutine layer: its handler hook
    runs one frame less deep than RCPT's, which alone has the layer of its pre-handler
    count (a wrapper for MAIL as RCPT has would make them as deep)."""
    import sys
    from mailrouter.intake.handler import Handler

    depths: dict[str, int] = {}

    def depth() -> int:
        f, n = sys._getframe(2), 0
        while f is not None and f.f_code.co_name != "_handle_client":
            f, n = f.f_back, n + 1
        assert f is not None, "not run under the session's task"
        return n

    for verb in ("MAIL", "RCPT"):
        original = getattr(Handler, f"handle_{verb}")

        async def hook(self, *args, _verb=verb, _original=original):
            depths[_verb] = depth()
            return await _original(self, *args)
        monkeypatch.setattr(Handler, f"handle_{verb}", hook)
    app = await make_app()
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        assert (await w.cmd("MAIL FROM:<a@outside.test>")).startswith("250")
        assert (await w.cmd("RCPT TO:<sales@example.com>")).startswith("250")
    assert depths["MAIL"] == depths["RCPT"] - 1, depths


async def test_healthz(make_app):
    """/healthz is 200 while serving."""
    app = await make_app()
    status, body = await asyncio.to_thread(_get, app.bound["admin"][1], "/healthz")
    assert (status, body) == (200, "ok\n")


# -- Every family on a real daemon with two workers ---------------------------------------

FAMILIES = {
    "mailrouter_messages_total", "mailrouter_recipients_total", "mailrouter_rcpt_refused_total",
    "mailrouter_mail_refused_total",
    "mailrouter_message_seconds", "mailrouter_sessions", "mailrouter_config_reloads_total",
    "mailrouter_config_last_reload_successful",
    "mailrouter_config_last_reload_success_timestamp_seconds", "mailrouter_ruleset_info",
    "mailrouter_build_info", "mailrouter_decisions_total", "mailrouter_deliveries_total",
    "mailrouter_delivery_seconds", "mailrouter_downstream_replies_total",
    "mailrouter_downstream_refused_configured_mailbox_total",
    "mailrouter_registry_commit_seconds", "mailrouter_registry_batch_size",
    "mailrouter_registry_errors_total", "mailrouter_tempfails_total", "mailrouter_loops_total",
    "mailrouter_autoreplies_total", "mailrouter_dsns_total", "mailrouter_outbox_attempts_total",
    "mailrouter_outbox_pending", "mailrouter_outbox_oldest_age_seconds",
    "mailrouter_requests_open", "mailrouter_requests_overdue", "mailrouter_scrape_registry_error",
    "mailrouter_store_free_bytes", "mailrouter_store_size_bytes",
    "mailrouter_mailbox_decisions_total", "mailrouter_rule_decisions_total",
    "mailrouter_postfix_maps_failed", "mailrouter_config_not_applied",
}


def _families(text: str) -> set[str]:
    """Family names as the exposition declares them (`# TYPE name kind`), info and counters
    under the name a query uses (`_info`, `_total` samples)."""
    names = set()
    for m in re.finditer(r"^# TYPE (\w+) (\w+)$", text, re.M):
        name, kind = m.groups()
        names.add(name + {"info": "_info", "counter": "_total"}.get(kind, "")
                  if not name.endswith(("_total", "_info")) else name)
    return names


def _post(port: int, path: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def _wait_log(proc, text: str, count: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.log.read_text().count(text) < count:
        time.sleep(0.1)
    return proc.log.read_text().count(text)


def _sum(text: str, family: str, **labels: str) -> float:
    total = 0.0
    for m in re.finditer(rf"^{family}\{{([^}}]*)\}} ([0-9.e+-]+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_every_family_on_two_workers_and_a_reload_counted_once(daemon_process, tmp_path):
    """workers: 2, execution control on: after traffic /metrics has every family, the
    decisions carry the routing files' names, the requests per mailbox and owner show,
    and 3 refused reloads count failed=3 (each worker counted its own: failed=6)."""
    routing = tmp_path / "rules" / "company.yaml"
    routing.parent.mkdir()
    routing.write_text(CONTROL_ROUTING, encoding="utf-8")
    proc = daemon_process(extra="workers: 2\ncontrol: {replies: [replies@example.com]}\n",
                          routing=str(routing))
    assert _wait_log(proc, "event=started", 2) == 2
    for i in range(6):
        with smtplib.SMTP("127.0.0.1", proc.smtp, timeout=30) as s:
            s.ehlo()
            s.mail(f"client{i}@outside.test")
            assert s.rcpt("nobody@example.com")[0] == 550
            s.rcpt("support@example.com")
            assert s.data(f"Subject: m{i}\r\nMessage-ID: <m{i}@outside.test>\r\n\r\nx\r\n")[0] == 250
    status, text = _get(proc.admin, "/metrics")
    assert status == 200
    assert FAMILIES <= _families(text), FAMILIES - _families(text)
    assert _sum(text, "mailrouter_decisions_total", mailbox="support", rule="support",
                owner="duty", action="deliver") == 6
    assert _sum(text, "mailrouter_deliveries_total", backend="maildir", result="ok") == 6
    assert _value(text, "mailrouter_registry_batch_size_sum") >= 6
    assert _sum(text, "mailrouter_requests_open", mailbox="support") == 6
    assert 'mailrouter_build_info{python="' in text and 'version="' in text
    assert "nobody@example.com" not in text and "client0" not in text   # never an address

    good = routing.read_text(encoding="utf-8")
    routing.write_text(good + "rules: [oops\n", encoding="utf-8")    # refused: no worker takes it
    assert _wait_log(proc, "event=reload_failed", 1) >= 1              # worker 0's watcher saw it
    time.sleep(1.5)                    # let each watcher settle on the new mtime
    _, text = _get(proc.admin, "/metrics")
    failed_before = _value(text, 'mailrouter_config_reloads_total{result="failed"}')
    logged = proc.log.read_text().count("event=reload_failed")
    for _ in range(3):
        assert _post(proc.admin, "/-/reload")["ok"] is False
    # worker 0 alone reads the files, once per request; the other is asked to load
    # nothing (it follows worker 0's loads that succeed)
    assert _wait_log(proc, "event=reload_failed", logged + 3) == logged + 3
    _, text = _get(proc.admin, "/metrics")
    assert _value(text, 'mailrouter_config_reloads_total{result="failed"}') == failed_before + 3
    assert _value(text, "mailrouter_config_last_reload_successful") == 0
    routing.write_text(good, encoding="utf-8")
    assert _post(proc.admin, "/-/reload")["ok"] is True
    _wait_log(proc, "event=reloaded", 2)
    _, text = _get(proc.admin, "/metrics")
    assert _value(text, "mailrouter_config_last_reload_successful") == 1


def test_a_reload_that_left_postfix_tables_or_config_yaml_behind_shows_in_gauges(
        daemon_process, tmp_path):
    """`mailrouter reload` exits 3 (the rules taken, Postfix's tables not rebuilt) or 4
    (config.yaml edited, not applied) on a 2-worker daemon: neither showed in any metric,
    so no alert could say Postfix refuses the new addresses or a restart is owed. Now
    mailrouter_postfix_maps_failed and mailrouter_config_not_applied{reason} say it (the
    other worker, which writes neither, stays at 0 under livemax), and a clean reload
    clears them."""
    proc = daemon_process(extra="workers: 2\npostfix_maps: {dir: maps, on_reload: true}\n")
    assert _wait_log(proc, "event=started", 2) == 2
    maps = tmp_path / "maps"
    assert _wait_log(proc, "event=postfix_maps dir=", 1) == 1

    def reload() -> int:
        return subprocess.run([sys.executable, "-m", "mailrouter.cli", "reload", "-c",
                               str(proc.config)], capture_output=True, check=False).returncode

    def gauges() -> tuple[float, float, float]:
        _, text = _get(proc.admin, "/metrics")
        return (_value(text, "mailrouter_postfix_maps_failed"),
                _value(text, 'mailrouter_config_not_applied{reason="changed"}'),
                _value(text, 'mailrouter_config_not_applied{reason="errors"}'))
    assert gauges() == (0, 0, 0)
    shutil.rmtree(maps)
    maps.write_text("not a directory\n")
    assert reload() == 3
    assert gauges() == (1, 0, 0)
    maps.unlink()
    assert reload() == 0
    assert gauges() == (0, 0, 0)
    good = proc.config.read_text(encoding="utf-8")
    proc.config.write_text(good.replace("shutdown_grace: 10", "shutdown_grace: 11"),
                           encoding="utf-8")
    assert reload() == 4
    assert gauges() == (0, 1, 0)
    proc.config.write_text(good + "log_format: kvv\n", encoding="utf-8")
    assert reload() == 4
    assert gauges() == (0, 0, 1)
    proc.config.write_text(good, encoding="utf-8")
    assert reload() == 0
    assert gauges() == (0, 0, 0)


def test_a_killed_supervisors_counter_dir_is_removed_at_the_next_start(daemon_process, tmp_path,
                                                                        monkeypatch):
    """With workers > 1 the counters live in a temp dir named after the supervisor; one killed
    by SIGKILL could not remove its own. The next start removes it (its PID is gone) and
    leaves a live process's and a name that is not ours alone; a clean stop removes its own."""
    import os
    import signal
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    first = daemon_process(extra="workers: 2\n")
    # both workers up first: the port answers once the supervisor has bound it, before it
    # forks; a SIGKILL between a fork and the worker's PR_SET_PDEATHSIG left that worker
    # running on as an orphan, holding the ports, after the test (1 run in 5)
    assert _wait_log(first, "event=started", 2) == 2
    [killed] = tmp.glob(f"mailrouter-metrics.{first.proc.pid}.*")
    first.signal(signal.SIGKILL)
    first.wait()
    assert killed.is_dir()
    live = tmp / f"mailrouter-metrics.{os.getpid()}.x"
    other = tmp / "mailrouter-metrics.notapid"
    live.mkdir()
    other.mkdir()
    second = daemon_process(extra="workers: 2\n")
    assert not killed.exists() and live.is_dir() and other.is_dir()
    [own] = tmp.glob(f"mailrouter-metrics.{second.proc.pid}.*")
    second.stop()
    assert second.proc.returncode == 0 and not own.exists()


def test_cli_import_leaves_prometheus_client_alone():
    """`mailrouter run` sets PROMETHEUS_MULTIPROC_DIR after importing the CLI; prometheus_client
    reads it once, at its import, so nothing the CLI imports may import it (a registry
    importing metrics at the top left every worker's counters out of /metrics)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, mailrouter.cli; "
                          "print('prometheus_client' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_autoreply_verdicts_counted_by_reason_kind(make_app):
    """Mail to a moved address: a list message is suppressed as `list`, a person's queued;
    the label is the reason's kind, never the sentence with the sender in it."""
    app = await make_app()
    port = app.bound["admin"][1]
    _, before = await asyncio.to_thread(_get, port, "/metrics")
    for sender, extra in (("list@outside.test", "List-Id: <l.outside.test>\r\n"),
                          ("person@outside.test", "")):
        async with Wire(app.bound["smtp"][1]) as w:
            await w.greet()
            await w.cmd(f"MAIL FROM:<{sender}>")
            assert (await w.cmd("RCPT TO:<old-sales@example.com>")).startswith("250")
            await w.cmd("DATA")
            await w.send(f"From: {sender}\r\nTo: old-sales@example.com\r\n{extra}Subject: q\r\n"
                         "\r\nx\r\n.\r\n".encode())
            assert (await w.line()).startswith("250")
    _, after = await asyncio.to_thread(_get, port, "/metrics")
    for series in ('mailrouter_autoreplies_total{reason="list",result="suppressed"}',
                   'mailrouter_autoreplies_total{reason="",result="queued"}'):
        assert _value(after, series) == _value(before, series) + 1, series
    assert "outside.test" not in after


# Labels that would carry one series per sender, recipient or message: unbounded.
PER_MESSAGE_LABELS = {"sender", "from", "mail_from", "rcpt", "recipient", "to", "address",
                      "subject", "message_id", "qid", "client", "peer", "helo"}


async def test_dashboard_and_alerts_match_metrics_after_mail_with_bounded_labels(make_app):
    """After real mail (to a folder, to a +detail, refused at RCPT, a loop), every series the
    Grafana dashboard and the alert rules group or match by has those labels and values on
    /metrics; the label check without mail skipped series with no samples yet (decisions
    per mailbox and rule). And no family has a per-message label: no label named after a
    sender/recipient/subject and no value with an '@' (each would be a series per address)."""
    import yaml

    from tests.test_alerts import DASHBOARD, RULES, _label_uses, exposed_labels
    app = await make_app()
    for rcpt, headers in (("invoices@example.com", b"Subject: invoice 1\r\n"),
                          ("sales+Zq9x7@example.com", b"Subject: hello Wq4k\r\n"),
                          ("sales@example.com", b"Received: x\r\n" * 60 + b"Subject: loop\r\n")):
        async with Wire(app.bound["smtp"][1]) as w:
            await w.greet()
            await w.cmd("MAIL FROM:<client@outside.test>")
            await w.cmd("RCPT TO:<nobody@example.com>")
            assert (await w.cmd(f"RCPT TO:<{rcpt}>")).startswith("250")
            await w.cmd("DATA")
            await w.send(headers + b"\r\nx\r\n.\r\n")
            await w.line()
    status, text = await asyncio.to_thread(_get, app.bound["admin"][1], "/metrics")
    assert status == 200
    rules = [r["expr"] for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
             for r in g["rules"]]
    dashboard = [t["expr"] for p in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
                 for t in p["targets"]]
    labels = exposed_labels(text)
    assert {"mailbox", "rule", "action"} <= set(labels["mailrouter_decisions_total"]), labels
    missing = []
    for expr in rules + dashboard:
        matchers, grouped, series = _label_uses(expr)
        have = {k for s in series for k in labels.get(s, {})} | {"le", "instance", "job"}
        if series & set(labels) and not grouped <= have:
            missing.append(f"by {sorted(grouped - have)} in {expr!r}")
    assert missing == []
    per_message = {(name, key) for name, keys in labels.items() for key in keys
                   if key in PER_MESSAGE_LABELS}
    addresses = {(name, key, v) for name, keys in labels.items() for key, values in keys.items()
                 for v in values if "@" in v}
    assert per_message == set() and addresses == set()
    assert not re.search(r"Zq9x7|Wq4k|outside\.test", text)    # +detail, subject, sender


DEFER_RULES = """
rules:
  - name: hold-quotes
    when: {subject: {contains: quote}}
    then: {action: defer}
"""


def test_recipients_deferred_by_a_rule_have_a_tempfail_cause(daemon_process, tmp_path):
    """workers: 2; 6 messages taken, 4 deferred by a rule's `action: defer` (451 4.7.1),
    3 rejected by it (RCPT 550): the counters add up to what the clients were answered, over
    both workers. The deferred ones were counted as recipients "tempfail" but under no cause
    of mailrouter_tempfails_total, the family the dashboard's panel and the
    MailrouterDeferredRateHigh alert send the admin to: they count as cause "rule"."""
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES / "company.yaml", rules / "company.yaml")
    (rules / "hold.yaml").write_text(DEFER_RULES, encoding="utf-8")
    proc = daemon_process(extra="workers: 2\n", routing=str(rules / "*.yaml"))
    assert _wait_log(proc, "event=started", 2) == 2
    _, before = _get(proc.admin, "/metrics")
    answers: list[int] = []
    for i, subject in enumerate(["hello"] * 6 + ["a quote please"] * 4):
        with smtplib.SMTP("127.0.0.1", proc.smtp, timeout=30) as s:    # a session each: both workers
            s.ehlo()
            s.mail(f"client{i}@outside.test")
            if i < 3:
                assert s.rcpt(f"nobody{i}@example.com")[0] == 550
            assert s.rcpt("sales@example.com")[0] == 250
            answers.append(s.data(f"Subject: {subject}\r\nMessage-ID: <d{i}@outside.test>\r\n"
                                  "\r\nx\r\n")[0])
    assert answers == [250] * 6 + [451] * 4
    _, after = _get(proc.admin, "/metrics")

    def moved(series: str) -> float:
        return _value(after, series) - _value(before, series)
    assert moved('mailrouter_messages_total{result="delivered"}') == 6
    assert moved('mailrouter_messages_total{result="deferred"}') == 4
    assert moved('mailrouter_recipients_total{result="tempfail"}') == 4
    assert moved('mailrouter_rcpt_refused_total{reason="unknown"}') == 3
    assert moved("mailrouter_message_seconds_count") == 10
    assert moved('mailrouter_message_seconds_bucket{le="+Inf"}') == 10
    assert moved('mailrouter_tempfails_total{cause="rule"}') == 4
    assert _sum(after, "mailrouter_tempfails_total") - _sum(before, "mailrouter_tempfails_total") == 4


HOLD_SUPPORT = """
rules:
  - name: hold-support
    when: {rcpt: support@example.com}
    then: {action: defer}
"""


async def test_an_smtp_message_deferred_for_one_recipient_counts_every_recipient_deferred(
        make_app, tmp_path):
    """SMTP answers a message once: one recipient deferred (a rule's defer, a downstream's
    451) gives the whole message 451 4.x and the MTA retries every recipient. It was counted
    per recipient: "partial", 1 ok and 1 tempfail, so with one of ten recipients deferred
    every message stayed in Postfix's queue while MailrouterDeferredRateHigh saw 10%. LMTP
    answers each recipient: there the message is partial, one ok and one deferred."""
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES / "company.yaml", rules / "company.yaml")
    (rules / "hold.yaml").write_text(HOLD_SUPPORT, encoding="utf-8")
    app = await make_app(routing=(str(rules / "*.yaml"),))
    port = app.bound["admin"][1]
    rcpts = ["sales@example.com", "support@example.com"]
    counted = []
    for lmtp in (False, True):
        _, before = await asyncio.to_thread(_get, port, "/metrics")
        async with Wire(app.bound["lmtp" if lmtp else "smtp"][1]) as w:
            await w.greet("LHLO" if lmtp else "EHLO")
            replies = await w.transaction("a@outside.test", rcpts,
                                          f"Subject: s{lmtp}\r\n\r\nx\r\n.\r\n".encode(),
                                          lmtp=lmtp)
        _, after = await asyncio.to_thread(_get, port, "/metrics")
        counted.append(([r[:3] for r in replies],) + tuple(
            _value(after, s) - _value(before, s) for s in (
                'mailrouter_messages_total{result="deferred"}',
                'mailrouter_messages_total{result="partial"}',
                'mailrouter_recipients_total{result="ok"}',
                'mailrouter_recipients_total{result="tempfail"}')))
    assert counted == [(["451"], 1, 0, 0, 2),            # SMTP: one 451 for both
                       (["250", "451"], 0, 1, 1, 1)]     # LMTP: one answer each


async def test_every_answer_after_data_is_counted(make_app, tmp_path):
    """Messages answered after DATA without the pipeline's own count: one too big (552 to
    its two recipients, read to the end then refused by the protocol) and one whose
    downstream hangs past limits.process_timeout (451). Both were on no panel: messages_total
    and recipients_total did not move, so "Messages per second by result" and the
    MailrouterDeferredRateHigh alert (recipients tempfail over all) missed a hung downstream
    altogether, and the latency histogram lacked exactly its slowest replies."""

    from mailrouter.config import DeliveryConfig, Downstream
    from tests.support.ports import silent_listener
    silent = silent_listener()             # accepts (kernel backlog), never greets
    book = tmp_path / "book.yaml"
    book.write_text("domains: [example.com]\nmailboxes:\n  box: {maildir: box}\n"
                    "  fwd: {smtp: x@downstream.test}\naliases:\n  ok@example.com: mailbox:box\n"
                    "  ok2@example.com: mailbox:box\n  hang@example.com: mailbox:fwd\n",
                    encoding="utf-8")
    try:
        app = await make_app(
            routing=(str(book),), limits={"process_timeout": 1, "max_message_size": 2000},
            delivery=DeliveryConfig(tmp_path / "mail", smtp=Downstream(
                "127.0.0.1", silent.getsockname()[1], timeout=30)))
        port = app.bound["admin"][1]
        _, before = await asyncio.to_thread(_get, port, "/metrics")
        replies = []
        for rcpts, body in ((["ok@example.com"], b"Subject: s\r\n\r\nx\r\n.\r\n"),
                            (["ok@example.com", "ok2@example.com"],
                             b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 100 + b".\r\n"),
                            (["hang@example.com"], b"Subject: h\r\n\r\nx\r\n.\r\n")):
            async with Wire(app.bound["smtp"][1]) as w:
                await w.greet()
                replies += await w.transaction("a@outside.test", rcpts, body)
        _, after = await asyncio.to_thread(_get, port, "/metrics")
    finally:
        silent.close()
    assert [r[:3] for r in replies] == ["250", "552", "451"], replies

    def moved(series: str) -> float:
        return _value(after, series) - _value(before, series)
    assert moved('mailrouter_messages_total{result="delivered"}') == 1
    assert moved('mailrouter_messages_total{result="rejected"}') == 1
    assert moved('mailrouter_messages_total{result="deferred"}') == 1
    assert moved('mailrouter_recipients_total{result="ok"}') == 1
    assert moved('mailrouter_recipients_total{result="permfail"}') == 2
    assert moved('mailrouter_recipients_total{result="tempfail"}') == 1
    assert moved('mailrouter_tempfails_total{cause="timeout"}') == 1
    # the latency of what was processed: the delivered one and the one cut at 1 s
    assert moved("mailrouter_message_seconds_count") == 2
    assert moved("mailrouter_message_seconds_sum") >= 1



@pytest.mark.parametrize("workers", [1, 2])
def test_the_rules_age_is_the_rule_sets_with_one_worker_or_two(daemon_process, tmp_path, workers):
    """mailrouter_config_last_reload_success_timestamp_seconds (the dashboard's "rules
    loaded (s ago)", the oldest worker's) is when the rule set in use was taken, the same
    with workers: 1 and 2. A reload of unchanged files moved it with workers: 1 (and on
    worker 0) but not on worker 1, so the panel told a different age for the same rules; and
    worker 1 set its gauges after telling worker 0, so the reply could come before them."""
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES / "company.yaml", rules / "company.yaml")
    (rules / "none.yaml").write_text("rules: []\n", encoding="utf-8")
    proc = daemon_process(extra=f"workers: {workers}\n", routing=str(rules / "*.yaml"))
    assert _wait_log(proc, "event=started", workers) == workers
    series = "mailrouter_config_last_reload_success_timestamp_seconds"
    started = _value(_get(proc.admin, "/metrics")[1], series)
    assert _post(proc.admin, "/-/reload")["ok"] is True            # the same files
    assert _value(_get(proc.admin, "/metrics")[1], series) == started
    (rules / "hold.yaml").write_text(DEFER_RULES, encoding="utf-8")
    asked = time.time()
    assert _post(proc.admin, "/-/reload")["ok"] is True            # a new rule set
    _, text = _get(proc.admin, "/metrics")
    assert _value(text, series) >= asked
    assert _value(text, "mailrouter_config_last_reload_successful") == 1


async def test_a_loop_found_after_data_is_no_rcpt_refusal(make_app):
    """A message with 60 Received: headers: RCPT was answered 250, the loop is found after
    DATA (554 5.4.6). It counts as a loop, a rejected message and a permfail recipient, not
    under mailrouter_rcpt_refused_total (the "RCPT refused by reason" panel showed a
    `loop` for a RCPT that was accepted, and no RCPT refuses a loop)."""
    app = await make_app()
    port = app.bound["admin"][1]
    _, before = await asyncio.to_thread(_get, port, "/metrics")
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        [reply] = await w.transaction("a@outside.test", ["sales@example.com"],
                                      b"Received: x\r\n" * 60 + b"Subject: l\r\n\r\nx\r\n.\r\n")
    assert reply.startswith("554 5.4.6")
    _, after = await asyncio.to_thread(_get, port, "/metrics")
    assert _sum(after, "mailrouter_rcpt_refused_total") == _sum(before, "mailrouter_rcpt_refused_total")
    assert 'reason="loop"' not in after
    for series in ('mailrouter_loops_total{kind="hops"}', 'mailrouter_messages_total{result="rejected"}',
                   'mailrouter_recipients_total{result="permfail"}'):
        assert _value(after, series) == _value(before, series) + 1, series


async def test_a_copy_refused_for_its_intent_has_the_intents_cause(make_app, tmp_path):
    """The intent journal (delivery.intents_dir) cannot take a message's intent, so no
    Maildir copy is made and the sender gets 4xx. On a full disk (452 4.3.1) that was
    counted as cause "maildir", and the admin looked at the wrong disk; when no journal
    could be opened at all (its directory removed and a file in its place: 451) it was
    under no cause, and the deferred-rate alert pointed at a panel with every cause at 0.
    Now "intents_full" and "intents", and "maildir" does not move."""
    import shutil as _shutil

    from mailrouter.config import DeliveryConfig
    from tests.support.tmpfs import tmpfs_on
    from tests.test_faults_sweep import fill

    def send(smtp: int, n: str) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as s:
            s.ehlo()
            s.mail("a@outside.test")
            assert s.rcpt("sales@example.com")[0] == 250
            try:
                return s.data(f"Subject: {n}\r\nMessage-ID: <{n}@outside.test>\r\n\r\nx\r\n")
            except smtplib.SMTPDataError as e:
                return e.smtp_code, e.smtp_error

    async def counted(app, n: str) -> tuple[int, bytes, dict[str, float]]:
        port = app.bound["admin"][1]
        _, before = await asyncio.to_thread(_get, port, "/metrics")
        code, text = await asyncio.to_thread(send, app.bound["smtp"][1], n)
        _, after = await asyncio.to_thread(_get, port, "/metrics")
        causes = {c: _sum(after, "mailrouter_tempfails_total", cause=c)
                  - _sum(before, "mailrouter_tempfails_total", cause=c)
                  for c in re.findall(r'^mailrouter_tempfails_total\{cause="(\w+)"\}', after, re.M)}
        return code, text, {c: v for c, v in causes.items() if v}

    with tmpfs_on(tmp_path / "intents", "256k") as intents:
        app = await make_app(delivery=DeliveryConfig(tmp_path / "mail", intents_dir=intents))
        filler = fill(intents)
        code, text, causes = await counted(app, "full")
        filler.unlink()
    assert (code, text[:5]) == (452, b"4.3.1"), text
    assert causes == {"intents_full": 1}

    journal = tmp_path / "journal"
    app = await make_app(delivery=DeliveryConfig(tmp_path / "mail", intents_dir=journal))
    assert (await asyncio.to_thread(send, app.bound["smtp"][1], "second"))[0] == 250
    _shutil.rmtree(journal)                       # the journal's directory gone...
    journal.write_text("not a directory\n")       # ...and a file in its place
    code, text, causes = await counted(app, "unopened")
    assert (code, text[:5]) == (451, b"4.3.0"), text
    assert causes == {"intents": 1}


def _causes(before: str, after: str) -> dict[str, float]:
    """mailrouter_tempfails_total causes that moved between two scrapes, by how much."""
    causes = set(re.findall(r'^mailrouter_tempfails_total\{cause="(\w+)"\}', after, re.M))
    moved = {c: _sum(after, "mailrouter_tempfails_total", cause=c)
             - _sum(before, "mailrouter_tempfails_total", cause=c) for c in causes}
    return {c: v for c, v in moved.items() if v}


async def test_a_data_phase_we_cut_with_421_is_counted(make_app):
    """Three DATA phases ended by us before an answer: one trickled past limits.data_deadline
    (421 4.4.2 "DATA took too long", to a message of two recipients), one silent past
    data_timeout inside DATA (421 4.4.2 timeout), one refused 452 4.3.1 because the DATA
    memory of all sessions was spoken for (limits.max_data_in_flight). The first two were in
    no metric at all, the third was a recipient "tempfail" under no cause: each is now a
    message deferred, its recipients tempfail, and its own cause."""
    app = await make_app(limits={"data_timeout": 3, "data_deadline": 2,
                                 "max_data_in_flight": 200_000})
    port, smtp = app.bound["admin"][1], app.bound["smtp"][1]
    _, start = await asyncio.to_thread(_get, port, "/metrics")

    async with Wire(smtp) as w:                   # the trickle
        await w.greet()
        await w.cmd("MAIL FROM:<slow@outside.test>")
        await w.cmd("RCPT TO:<sales@example.com>")
        await w.cmd("RCPT TO:<support@example.com>")
        assert (await w.cmd("DATA")).startswith("354")
        reply = None
        for n in range(100):                      # a line every 0.2 s, never 1 s idle
            await w.send(b"line %d\r\n" % n)
            try:
                reply = await asyncio.wait_for(w.line(), 0.2)
                break
            except TimeoutError:
                continue
        assert reply is not None and reply.startswith("421 4.4.2 DATA took too long")
    _, trickled = await asyncio.to_thread(_get, port, "/metrics")
    assert _causes(start, trickled) == {"data_deadline": 2}

    async with Wire(smtp) as w:                   # silent inside DATA
        await w.greet()
        await w.cmd("MAIL FROM:<quiet@outside.test>")
        await w.cmd("RCPT TO:<sales@example.com>")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: then nothing\r\n")
        assert (await w.line()).startswith("421 4.4.2")
        assert await w.closed()
    _, silent = await asyncio.to_thread(_get, port, "/metrics")
    assert _causes(trickled, silent) == {"data_timeout": 1}

    body = ("z" * 78 + "\r\n").encode() * 750        # 60,000 bytes: 120,000 of the 200,000
    async with Wire(smtp) as first, Wire(smtp) as second:
        await first.greet()
        await first.cmd("MAIL FROM:<a@outside.test>")
        await first.cmd("RCPT TO:<sales@example.com>")
        assert (await first.cmd("DATA")).startswith("354")
        await first.send(b"Subject: first\r\n\r\n" + body)      # held, no end yet
        loop = asyncio.get_running_loop()
        end = loop.time() + 30                                  # only to fail a hung test
        while app.data_budget.used < len(body) and loop.time() < end:
            await asyncio.sleep(0.01)
        await second.greet()
        replies = await second.transaction("b@outside.test", ["sales@example.com"],
                                           b"Subject: second\r\n\r\n" + body + b".\r\n")
        assert replies[0].startswith("452 4.3.1")
        _, full = await asyncio.to_thread(_get, port, "/metrics")
        await first.send(b".\r\n")
        assert (await first.line()).startswith("250")
    assert _causes(silent, full) == {"data_in_flight": 1}

    def moved(series: str) -> float:
        return _value(full, series) - _value(start, series)
    assert moved('mailrouter_messages_total{result="deferred"}') == 3
    assert moved('mailrouter_recipients_total{result="tempfail"}') == 4


async def test_a_data_phase_cut_by_the_end_of_shutdown_grace_is_counted(make_app):
    """SIGTERM's drain (App.request_stop) waits shutdown_grace for a client still sending
    its message, then says 421 4.3.2 and closes (tests/test_shutdown.py): that message (two
    recipients) is counted as deferred, under cause "shutdown"."""
    from mailrouter import metrics

    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0
    app = await make_app(shutdown_grace=0.5)
    before = (sample("mailrouter_tempfails_total", cause="shutdown"),
              sample("mailrouter_recipients_total", result="tempfail"))
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        await w.cmd("MAIL FROM:<a@outside.test>")
        await w.cmd("RCPT TO:<sales@example.com>")
        await w.cmd("RCPT TO:<support@example.com>")
        assert (await w.cmd("DATA")).startswith("354")
        await w.send(b"Subject: never ends\r\n\r\nhalf a message\r\n")
        app.request_stop()
        await app.wait_stopped()
        assert (await w.line()).startswith("421 4.3.2")
        assert await w.closed()
    after = (sample("mailrouter_tempfails_total", cause="shutdown"),
             sample("mailrouter_recipients_total", result="tempfail"))
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)


def test_every_outbox_kind_is_served_at_zero_by_a_fresh_process():
    """Every kind of outgoing mail (metrics.OUTBOX_KINDS: autoreply, dsn, the SLA reminders
    and escalations, assignment notices) is on /metrics at 0 before its first send: only
    autoreply and dsn were, so an SLA reminder's first attempt was born at 1, which rate()
    and increase() never see, and its backlog's gauges came and went with its rows."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys\nfrom mailrouter.metrics import "
                          "State, exposition\nsys.stdout.write(exposition(State()).decode())"],
                         capture_output=True, text=True, check=True, env={
                             k: v for k, v in os.environ.items()
                             if k != "PROMETHEUS_MULTIPROC_DIR"}).stdout
    for kind in ("autoreply", "dsn", "sla-remind", "sla-escalate", "assign"):
        for result in ("sent", "retry", "failed", "suppressed"):
            assert _value(out, f'mailrouter_outbox_attempts_total{{kind="{kind}",'
                               f'result="{result}"}}') == 0
        assert _value(out, f'mailrouter_outbox_pending{{kind="{kind}"}}') == 0
        assert _value(out, f'mailrouter_outbox_oldest_age_seconds{{kind="{kind}"}}') == 0


async def test_an_sla_reminder_sent_is_counted_under_a_served_kind(make_app, tmp_path):
    """A real SLA reminder through the outbox to a relay sink: its send is counted under
    kind "sla-remind", a kind served at 0 before it (above), and every kind the registry's
    outbox holds is one of metrics.OUTBOX_KINDS; once sent, its backlog shows 0, not nothing."""
    from sqlalchemy import select

    from mailrouter.config import ControlConfig, Listener, OutboxConfig
    from mailrouter.control.sla import Scheduler
    from mailrouter.metrics import OUTBOX_KINDS
    from mailrouter.registry.models import outbox
    from tests.control_support import mail, send, write_routing
    from tests.test_control_sla import msk
    from tests.test_delivery_smtp import Sink

    control = ControlConfig(replies=("replies@example.com",), remind_after=0,
                            escalate_after=7200)
    sink = Sink()
    await sink.start()
    try:
        app = await make_app(routing=write_routing(tmp_path), control=control,
                             outbox=OutboxConfig(Listener("127.0.0.1", sink.port), timeout=5.0,
                                                 retry_min=0.05, retry_max=0.2))
        app.sla_task.cancel()          # ticked on the simulated clock below
        sched = Scheduler(app.registry, control, app.snapshot, hostname="mx.test",
                          wake=app.outbox.wake)
        port = app.bound["admin"][1]
        app.pipeline.clock = lambda: msk(11, 10)
        await send(app.bound["smtp"][1], mail("c@client.example", "printer", "p1@client"),
                   "c@client.example")
        _, before = await asyncio.to_thread(_get, port, "/metrics")
        [alert] = await sched.tick(msk(11, 14))
        assert alert.stage == "remind"
        loop = asyncio.get_running_loop()
        end = loop.time() + 30          # only to fail a hung test
        while not sink.envelopes or any(r["state"] == "queued"
                                        for r in await app.registry.outbox_list()):
            assert loop.time() < end, "the reminder never reached the relay"
            await asyncio.sleep(0.02)
        _, after = await asyncio.to_thread(_get, port, "/metrics")
        kinds = await app.registry.read("kinds", lambda c: {
            k for (k,) in c.execute(select(outbox.c.kind).distinct())})
    finally:
        await sink.stop()
    sent = 'mailrouter_outbox_attempts_total{kind="sla-remind",result="sent"}'
    assert (_value(before, sent), _value(after, sent)) == (_value(before, sent),
                                                           _value(before, sent) + 1)
    assert _value(after, 'mailrouter_outbox_pending{kind="sla-remind"}') == 0
    assert kinds == {"sla-remind"} and kinds <= set(OUTBOX_KINDS)


def test_latency_buckets_reach_the_slowest_answer_the_daemon_gives():
    """A downstream that greets and then says nothing holds a message for its timeout (30 s a
    wait by default; a real daemon with a 5 s timeout: message_seconds +5.0 in one reply),
    and limits.process_timeout (300 s) answers the slowest. The reply latency's last finite
    bucket was 10 s: every such reply fell in +Inf, and histogram_quantile, which answers
    the last finite bound for those, drew the dashboard's p99 at "10 s" through a 300 s
    outage. Both latency histograms now reach process_timeout, read from a real scrape."""
    import subprocess
    import sys

    from mailrouter.config import Limits
    from mailrouter.values import Downstream
    out = subprocess.run([sys.executable, "-c", "import sys\nfrom mailrouter.metrics import "
                          "exposition\nsys.stdout.write(exposition().decode())"],
                         capture_output=True, text=True, check=True, env={
                             k: v for k, v in os.environ.items()
                             if k != "PROMETHEUS_MULTIPROC_DIR"}).stdout
    for family in ("mailrouter_message_seconds", "mailrouter_delivery_seconds"):
        bounds = [float(b) for b in re.findall(rf'^{family}_bucket\{{[^}}]*le="([0-9.e+]+)"',
                                               out, re.M)]
        assert bounds, family
        assert max(bounds) >= Limits().process_timeout >= Downstream("h", 1).timeout, family


def _registry_ops_named_in_the_code() -> set[str]:
    """The `what` of every registry call written with a literal: Registry.read/write, the
    store's own _read/_write_one, and _failure."""
    import ast
    from pathlib import Path

    import mailrouter
    found = set()
    for path in Path(mailrouter.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and node.args
                    and isinstance(node.func, (ast.Attribute, ast.Name))
                    and (node.func.attr if isinstance(node.func, ast.Attribute)
                         else node.func.id) in ("read", "write", "_read", "_write_one",
                                                "_failure")):
                what = node.args[0]
                # an op built at run time (the web view's f"web {what}") escaped this list,
                # and its series with it: name each op in a literal
                assert not isinstance(what, ast.JoinedStr), f"{path}:{node.lineno}: an f-string op"
                if isinstance(what, ast.Constant) and isinstance(what.value, str):
                    found.add(what.value)
    from mailrouter.web.requests import ACTION_OPS
    return found | set(ACTION_OPS.values())


# registry operations that only the commands run (mailrouter registry, outbox, db upgrade,
# web passwd): no daemon counts them
COMMAND_OPS = {"message", "recent", "count_messages", "outbox_list", "upgrade", "reloads",
               "web passwd"}


def test_every_web_action_has_its_registry_errors_served_at_zero():
    """The web view's actions on a request (POST /request/N/owner|close|reopen|note) write
    the registry as op "web ACTION"; their mailrouter_registry_errors_total series were not
    made at 0 (the op was an f-string the list of operations missed), so a registry outage
    met first by a head closing a request was born at 1, unseen by rate()."""
    from pathlib import Path
    source = (Path(__file__).resolve().parents[1] / "mailrouter" / "web" / "app.py").read_text()
    actions = re.search(r"\{action:([a-z|]+)\}", source)      # the route aiohttp serves
    assert actions is not None
    out = subprocess.run([sys.executable, "-c", "import sys\nfrom mailrouter.metrics import "
                          "exposition\nsys.stdout.write(exposition().decode())"],
                         capture_output=True, text=True, check=True, env={
                             k: v for k, v in os.environ.items()
                             if k != "PROMETHEUS_MULTIPROC_DIR"}).stdout
    for action in actions.group(1).split("|"):
        for kind in ("outage", "full", "bug"):
            assert _value(out, f'mailrouter_registry_errors_total{{kind="{kind}",op="web {action}"}}') == 0, action


def test_every_registry_operation_of_the_daemon_is_served_at_zero():
    """mailrouter_registry_errors_total{op,kind} was made at 0 for record and
    delivered_targets only: the first outage of any other operation (the outbox's claim,
    the SLA scan, the scrape's own backlog read, a web page's) was born at 1, unseen by
    the rate() of MailrouterRegistryDown and the dashboard. Every operation the daemon
    runs is now listed (metrics.REGISTRY_OPS, checked against the code's calls) and served
    at 0 for each kind by a fresh process."""
    import subprocess
    import sys

    from mailrouter.metrics import REGISTRY_OPS
    assert _registry_ops_named_in_the_code() - COMMAND_OPS == set(REGISTRY_OPS)
    out = subprocess.run([sys.executable, "-c", "import sys\nfrom mailrouter.metrics import "
                          "exposition\nsys.stdout.write(exposition().decode())"],
                         capture_output=True, text=True, check=True, env={
                             k: v for k, v in os.environ.items()
                             if k != "PROMETHEUS_MULTIPROC_DIR"}).stdout
    for op in REGISTRY_OPS:
        for kind in ("outage", "full", "bug"):
            assert _value(out, f'mailrouter_registry_errors_total{{kind="{kind}",op="{op}"}}') == 0


MOVED_BOOK = """
domains: [example.com]
mailboxes:
  box: {maildir: box}
aliases:
  box@example.com: mailbox:box
moved:
  left@example.com: {now: box@example.com, deliver: false}
"""


async def test_a_moved_address_refused_at_rcpt_is_counted_as_moved(make_app, tmp_path):
    """A moved address that takes no more mail (deliver: false) gets 551 5.1.6 at RCPT; it
    was counted as reason "unknown", with the addresses that do not exist, so the RCPT
    panel blamed senders for what the book says on purpose. An unknown one stays unknown."""
    book = tmp_path / "book.yaml"
    book.write_text(MOVED_BOOK, encoding="utf-8")
    app = await make_app(routing=(str(book),))
    port = app.bound["admin"][1]
    _, before = await asyncio.to_thread(_get, port, "/metrics")
    async with Wire(app.bound["smtp"][1]) as w:
        await w.greet()
        await w.cmd("MAIL FROM:<a@outside.test>")
        assert (await w.cmd("RCPT TO:<left@example.com>")).startswith("551 5.1.6")
        assert (await w.cmd("RCPT TO:<nobody@example.com>")).startswith("550 5.1.1")
    _, after = await asyncio.to_thread(_get, port, "/metrics")
    assert [_value(after, f'mailrouter_rcpt_refused_total{{reason="{r}"}}')
            - _value(before, f'mailrouter_rcpt_refused_total{{reason="{r}"}}')
            for r in ("moved", "unknown")] == [1, 1]


async def test_requests_of_an_owner_all_closed_are_served_at_zero(tmp_path) -> None:
    """mailrouter_requests_open / _overdue per (mailbox, owner) come from the registry at each
    scrape: the pair whose last request closed vanished from /metrics, and a panel or the
    overdue alert kept its last value. It is served at 0 from then on."""
    from datetime import UTC, datetime, timedelta

    from mailrouter.backlog import read_backlog
    from mailrouter.control.tables import requests
    from mailrouter.metrics import State
    from mailrouter.registry import Registry

    reg = await Registry.open(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}")
    try:
        past = datetime.now(UTC) - timedelta(hours=2)
        rid = await reg.write("a request", lambda conn: conn.execute(
            requests.insert().values(
                opened_at=past, message_key="k" * 64, counterparty="ann@client.example",
                counterparty_domain="client.example", owner="ivanov", mailbox="support",
                status="open", subject="printer", tags=[], sla_term="1h",
                response_due=past + timedelta(hours=1), last_in_at=past, response_round=1)
            .returning(requests.c.id)).scalar_one())
        state = State("r" * 16)
        await read_backlog(reg, state)
        assert state.requests == {("support", "ivanov"): (1, 1)}
        await reg.write("close", lambda conn: conn.execute(
            requests.update().where(requests.c.id == rid).values(status="closed")))
        await read_backlog(reg, state)
        assert state.requests == {("support", "ivanov"): (0, 0)}
        text = "".join(f"{m.name} {s.labels} {s.value}\n" for m in state.collect()
                       for s in m.samples if m.name.startswith("mailrouter_requests"))
        assert "mailrouter_requests_overdue {'mailbox': 'support', 'owner': 'ivanov'} 0" in text
    finally:
        await reg.close()

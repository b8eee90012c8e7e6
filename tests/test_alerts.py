"""The alert rules pass promtool (syntax and their unit tests), and every metric name, label
and label value the rules and the Grafana dashboard query is served by a real daemon's /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.wire import Wire
from tests.test_faults import tmpfs  # noqa: F401 (fixture)
from tests.test_metrics import _get

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "mailrouter-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "mailrouter-rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "mailrouter.json"
PROMTOOL = shutil.which("promtool")
# .ci/run installs Debian's prometheus (promtool, and the server of the real-scrape tests):
# there a missing one fails these tests instead of skipping them unseen
IN_CI = os.environ.get("CI") == "true"
needs_promtool = pytest.mark.skipif(PROMTOOL is None and not IN_CI, reason="promtool (Debian "
                                    "package prometheus) is not installed")


def _promtool() -> str:
    assert PROMTOOL is not None, "promtool is missing: apt-get install prometheus (.ci/run does)"
    return PROMTOOL


@needs_promtool
def test_rules_pass_promtool_check():
    """`promtool check rules` accepts the file and finds every alert."""
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 13 rules found" in out.stdout


@needs_promtool
def test_rules_unit_tests_pass_promtool():
    """`promtool test rules`: each alert fires on the series it is meant for, and the reload
    alert does not fire while the last reload succeeded."""
    out = subprocess.run([_promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_tested_firing_and_silent():
    """The promtool unit tests (run above) hold, for every alert, a case where it fires and
    one where it stays silent: MailrouterDown had neither, the deferred rate, outbox and
    registry alerts no silent case (a rule that always fires passed)."""
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
              for r in g["rules"]}
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
             for c in t.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert len(alerts) == 13
    assert (alerts - firing, alerts - silent) == (set(), set())


@needs_promtool
def test_dashboard_queries_parse(tmp_path):
    """Every dashboard panel's PromQL parses: each is given to `promtool check rules` as a
    recording rule (a panel's typo showed only as an empty graph; only the alerts were checked)."""
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": e} for i, e in enumerate(exprs)]}]}),
        encoding="utf-8")
    out = subprocess.run([_promtool(), "check", "rules", str(rules)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in out.stdout


def exposed_names(text: str) -> set[str]:
    """Every series name a query may use: the samples, and for a family without samples
    yet (no open request) its declared name with the suffixes its type gives it."""
    names = set(re.findall(r"^(mailrouter_\w+)[{ ]", text, re.M))
    for name, kind in re.findall(r"^# TYPE (mailrouter_\w+) (\w+)$", text, re.M):
        names |= {name} | ({f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                           if kind == "histogram" else set())
    return names


def _queried(exprs: list[str]) -> set[str]:
    return set(re.findall(r"mailrouter_\w+", " ".join(exprs)))


async def _metrics_and_queries(make_app) -> tuple[str, list[str], list[str]]:
    """A fresh daemon's /metrics text, the alert rules' expressions, the dashboard's."""
    app = await make_app()
    status, text = await asyncio.to_thread(_get, app.bound["admin"][1], "/metrics")
    assert status == 200
    rules = [r["expr"] for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
             for r in g["rules"]]
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return text, rules, [t["expr"] for p in panels for t in p["targets"]]


async def test_rules_and_dashboard_query_real_names(make_app):
    """Every `mailrouter_*` name in an alert expression or a dashboard panel is on /metrics
    (a renamed family would leave a silent alert or an empty panel)."""
    text, rules, dashboard = await _metrics_and_queries(make_app)
    names = exposed_names(text)
    for what, used in (("rules", _queried(rules)), ("dashboard", _queried(dashboard))):
        assert len(used) >= 7, (what, used)
        assert used <= names, (what, used - names)


async def test_every_metric_family_is_on_the_dashboard(make_app):
    """The reverse: each `mailrouter_*` family on /metrics is queried by a dashboard panel,
    so what the daemon counts can be seen. mailrouter_downstream_replies_total (LMTP/SMTP
    downstream answers per recipient) was on none."""
    text, _, dashboard = await _metrics_and_queries(make_app)
    families = {f for f in re.findall(r"^# TYPE (mailrouter_\w+) \w+$", text, re.M)
                if not f.endswith("_created")}      # prometheus_client's creation times
    # a counter's family is declared without _total; a histogram is queried by its _bucket
    used = {re.sub(r"_(total|bucket|sum|count|info)$", "", n) for n in _queried(dashboard)}
    assert len(families) >= 20
    assert {re.sub(r"_(total|info)$", "", f) for f in families} - used == set()


def exposed_labels(text: str) -> dict[str, dict[str, set[str]]]:
    """For each series name with samples on /metrics: label name -> the values it takes."""
    out: dict[str, dict[str, set[str]]] = {}
    for name, labels in re.findall(r"^(mailrouter_\w+)\{([^}]*)\}", text, re.M):
        for key, value in re.findall(r'(\w+)="([^"]*)"', labels):
            out.setdefault(name, {}).setdefault(key, set()).add(value)
    return out


TARGET_LABELS = {"instance", "job"}


def _label_uses(expr: str) -> tuple[list[tuple[str, str, str]], set[str], set[str]]:
    """(series, label, value) of each `label="v"` or `label=~"a|b"` matcher, the labels of
    every `by (...)` clause, and the series named in the expression."""
    matchers = [(name, key, value)
                for name, body in re.findall(r"(mailrouter_\w+)\{([^}]*)\}", expr)
                for key, op, alts in re.findall(r'(\w+)\s*(=~|=)\s*"([^"]*)"', body)
                if key not in TARGET_LABELS      # Prometheus's, and the $instance variable
                for value in (alts.split("|") if op == "=~" else [alts])]
    grouped = {g.strip() for clause in re.findall(r"\bby \(([^)]*)\)", expr)
               for g in clause.split(",")}
    return matchers, grouped, set(re.findall(r"mailrouter_\w+", expr))


async def test_rules_and_dashboard_use_real_labels_and_values(make_app):
    """A label an alert or panel matches on (`result="tempfail"`, `kind=~"outage|full"`) takes
    that value on /metrics, and a `by (...)` label is one of its series' labels: a renamed
    label or value would leave a silent alert or an empty panel as a renamed family would.
    Series without samples yet (no open request) are checked by name only, above."""
    text, rules, dashboard = await _metrics_and_queries(make_app)
    labels = exposed_labels(text)
    wrong: list[str] = []
    matched = 0
    for expr in rules + dashboard:
        matchers, grouped, series = _label_uses(expr)
        for name, key, value in matchers:
            matched += 1
            if value not in labels.get(name, {}).get(key, set()):
                wrong.append(f"{name}{{{key}={value!r}}} in {expr!r}")
        known = {k for s in series for k in labels.get(s, {})} | {"instance", "job"}
        if series and all(s in labels for s in series) and not grouped <= known:
            wrong.append(f"by {sorted(grouped - known)} in {expr!r}")
    assert matched >= 3
    assert wrong == []


def _panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]


def _unit(panel: dict, ref: str) -> str:
    """The unit Grafana shows a query's values in: the panel's, or an override by its refId."""
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    for o in panel["fieldConfig"].get("overrides", []):
        if o["matcher"] == {"id": "byFrameRefID", "options": ref}:
            unit = next((p["value"] for p in o["properties"] if p["id"] == "unit"), unit)
    return unit


def _measures(expr: str) -> str:
    """What a query's values are: seconds (a latency quantile, an age, a time ago), a rate
    per second (a counter's rate), or a plain number (a gauge, a ratio, an increase)."""
    if "_seconds" in expr and ("histogram_quantile" in expr or "time() -" in expr
                               or "age_seconds" in expr):
        return "seconds"
    if "_bytes" in expr and "rate(" not in expr and " / " not in expr:
        return "bytes"
    if "rate(" in expr and " / " not in expr:
        return "per second"
    return "number"


def test_dashboard_units_match_what_each_query_measures():
    """A query's values are shown in the unit of what they are: "Registry commit latency p99
    and mean batch size" showed a batch of 1 record as "1 s"; the outbox's oldest age and
    the rules' age (seconds) as plain numbers ("3.60 K"), the registry-read flag (0/1) as
    requests per second."""
    units = {"seconds": {"s"}, "bytes": {"bytes", "decbytes"},
             "per second": {"reqps", "ops", "cps"},
             "number": {"short", "none", "bool", ""}}
    wrong = [(p["title"], t["refId"], _measures(t["expr"]), _unit(p, t["refId"]))
             for p in _panels() for t in p["targets"]
             if _unit(p, t["refId"]) not in units[_measures(t["expr"])]]
    assert wrong == []


def test_dashboard_imports_with_a_datasource_variable_and_filters_by_instance():
    """The JSON is a dashboard Grafana takes by import, by its HTTP API and by file
    provisioning alike: every panel and query names the data source through the dashboard's
    own `datasource` variable (`${DS_PROMETHEUS}` resolved only in the import page: through
    the API or provisioning every panel said "data source not found"); panel ids are unique;
    and with several instances (README "Several instances") every series is filtered by the
    `instance` variable, so one instance's failed reload or rule set can be told apart."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["allValue"] == ".*" and variables["instance"]["includeAll"]
    ds = {"type": "prometheus", "uid": "${datasource}"}
    assert variables["instance"]["datasource"] == ds
    assert "${DS_" not in DASHBOARD.read_text(encoding="utf-8")
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(isinstance(p["id"], int) for p in panels)
    unfiltered = []
    for p in panels:
        assert p["datasource"] == ds, p["title"]
        for t in p["targets"]:
            assert t.get("datasource", ds) == ds, p["title"]
            for name, body in re.findall(r"(mailrouter_\w+)(?:\{([^}]*)\})?", t["expr"]):
                if 'instance=~"$instance"' not in body:
                    unfiltered.append((p["title"], name))
    assert unfiltered == []


PROMETHEUS = shutil.which("prometheus")


def _grafana(expr: str) -> str:
    """A panel's query as Grafana sends it with every instance selected."""
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")



async def _until(what: str, check) -> None:      # type: ignore[no-untyped-def]
    """Poll `check()` until it is true (60 s: only fails a hung test)."""
    import time
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} never came")


async def _prometheus(tmp_path: Path, admin: int, hosts: tuple[str, ...] = ("127.0.0.1",)
                      ) -> tuple[asyncio.subprocess.Process, int]:
    """A real Prometheus scraping the admin port every second (rules evaluated as often),
    its data under tmp_path; (the process, its port). The caller terminates it. With
    several `hosts` it scrapes the one daemon as that many instances (one per name)."""
    from tests.support.ports import free_port
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "mailrouter", "static_configs": [
            {"targets": [f"{host}:{admin}" for host in hosts]}]}]}), encoding="utf-8")
    assert PROMETHEUS is not None, "prometheus is missing: apt-get install prometheus"
    prom = await asyncio.create_subprocess_exec(
        PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return prom, port

def _query(port: int, expr: str) -> list[dict]:
    import urllib.parse
    import urllib.request
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.skipif(PROMETHEUS is None and not IN_CI,
                    reason="prometheus (Debian package) is not installed")
async def test_every_panel_shows_the_mail_sent_in_a_real_prometheus(make_app, tmp_path):
    """A real Prometheus scrapes a daemon every second; after mail delivered, refused at
    RCPT, a loop, too big, and one to a moved address (an autoreply), each dashboard
    query, as Grafana sends it, answers from that Prometheus; and the panels show what was
    sent, by the labels their legends name (each one on every series it names: a queued
    autoreply has no `reason`, and Grafana showed "autoreply queued reason")."""
    import time

    app = await make_app(limits={"max_message_size": 2000, "error_delay": 0.0})
    prom, port = await _prometheus(tmp_path, app.bound['admin'][1])

    async def until(expr: str, want: float) -> None:
        """Wait for Prometheus to have scraped `expr` at `want` (a deadline, no figure)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                got = await asyncio.to_thread(_query, port, expr)
                if got and float(got[0]["value"][1]) >= want:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"{expr} never reached {want}")

    try:
        await until('count(mailrouter_messages_total{job="mailrouter"})', 1)   # the zeros first
        # the counters of this test process's earlier daemons (one registry per process):
        # waiting for "5 messages" was met before any of this test's mail was scraped
        base = float((await asyncio.to_thread(_query, port, "sum(mailrouter_messages_total)"))[0]
                     ["value"][1])
        sent = [(["sales@example.com", "nobody@example.com"], b"Subject: a\r\n\r\nx\r\n"),
                (["invoices@example.com"], b"Subject: invoice 7\r\n\r\nx\r\n"),
                (["old-sales@example.com"],
                 b"From: p@outside.test\r\nTo: old-sales@example.com\r\nSubject: q\r\n\r\nx\r\n"),
                (["sales@example.com"], b"Received: x\r\n" * 60 + b"Subject: l\r\n\r\nx\r\n"),
                (["sales@example.com"], b"Subject: big\r\n\r\n" + b"y" * 70 * 60 + b"\r\n")]
        replies = []
        for rcpts, body in sent:
            async with Wire(app.bound["smtp"][1]) as w:
                await w.greet()
                replies += await w.transaction("p@outside.test", rcpts, body + b".\r\n")
        assert [r[:3] for r in replies] == ["250", "250", "250", "554", "552"]
        await until("sum(mailrouter_messages_total)", base + 5)
        # A decision's series (per mailbox, folder, rule, owner: not a fixed set) is born
        # with its first count, which rate() cannot see; from the second on it shows
        # (README "Metrics"). One more of each, once the first were scraped.
        await until("count(mailrouter_decisions_total)", 3)
        for rcpts, body in sent[:2]:
            async with Wire(app.bound["smtp"][1]) as w:
                await w.greet()
                replies += await w.transaction("p@outside.test", rcpts, body + b".\r\n")
        await until("sum(mailrouter_messages_total)", base + 7)
        results: dict = {}
        unnamed: list = []
        for p in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]:
            for t in p["targets"]:
                rows = await asyncio.to_thread(_query, port, _grafana(t["expr"]))
                legend = re.findall(r"\{\{(\w+)\}\}", t.get("legendFormat", ""))
                # Grafana writes a label a series lacks as its name: "autoreply queued reason"
                unnamed += [(p["title"], t["refId"], k) for r in rows for k in legend
                            if k not in r["metric"]]
                results[(p["title"], t["refId"])] = {
                    " ".join(r["metric"].get(k, "") for k in legend): float(r["value"][1])
                    for r in rows}
    finally:
        prom.terminate()
        await asyncio.wait_for(prom.wait(), 30)
    assert unnamed == []
    empty = [k for k, v in results.items() if not v]
    # no request was opened (no control section), no outbox row was sent: nothing to show
    assert empty == [("Requests open and overdue per owner", "A"),
                     ("Requests open and overdue per owner", "B")], empty
    r = results
    assert r[("Messages per second by result", "A")]["delivered"] > 0
    assert r[("Messages per second by result", "A")]["rejected"] > 0       # the loop, too big
    assert r[("Recipients per second by reply class", "A")]["permfail"] > 0
    assert r[("RCPT and MAIL FROM refused by reason", "A")]["unknown"] > 0
    assert r[("Loops refused by kind (per hour)", "A")]["hops"] > 0
    assert r[("Reply latency after DATA (p50, p99)", "A")][""] > 0
    assert r[("Deliveries by backend and result", "A")]["maildir ok"] > 0
    assert r[("Autoreplies and DSNs by result and reason (per hour)", "A")]["queued -"] > 0
    assert r[("Outbox: pending and oldest age", "A")]["autoreply"] == 1
    assert r[("Last routing reload successful", "A")] == {f"127.0.0.1:{app.bound['admin'][1]}": 1}
    assert r[("Registry commit latency p99 and mean batch size", "B")][""] >= 1
    assert r[("Decisions per mailbox", "A")]["sales deliver"] > 0
    assert r[("Decisions per mailbox", "A")]["finance deliver"] > 0
    assert r[("Decisions per rule (top 10)", "A")]["invoices"] > 0
    assert set(r[("Version, rule set, age of the rules", "B")]) == {app.snapshot().hash}


@pytest.mark.skipif(PROMETHEUS is None and not IN_CI,
                    reason="prometheus (Debian package) is not installed")
async def test_registry_figures_are_not_added_up_over_instances_sharing_the_registry(
        make_app, tmp_path):
    """Instances share one registry (README "Several instances"), and each serves the
    registry's open requests and outbox backlog as it reads them: the panels added them up
    over the instances selected ("All", the default), so two instances showed each owner's
    open requests and each queued autoreply twice. A real Prometheus scrapes one daemon as
    two instances (127.0.0.1:PORT and localhost:PORT, one registry behind both); the panels
    show one request open and one autoreply pending, as `mailrouter request show` and
    `mailrouter outbox` count them."""
    import time

    from mailrouter.config import ControlConfig
    app = await make_app(control=ControlConfig())
    admin = app.bound["admin"][1]
    prom, port = await _prometheus(tmp_path, admin, hosts=("127.0.0.1", "localhost"))
    panels = {t["legendFormat"]: t["expr"] for p in _panels() for t in p["targets"]
              if re.search(r"mailrouter_(requests_open|requests_overdue|outbox_pending)\b", t["expr"])}
    assert set(panels) == {"{{owner}} open", "{{owner}} overdue", "{{kind}} pending"}, panels
    try:
        for rcpt, body in (("invoices@example.com", b"Subject: invoice 7\r\n\r\nx\r\n"),
                           ("old-sales@example.com", b"From: p@outside.test\r\n"
                            b"To: old-sales@example.com\r\nSubject: q\r\n\r\nx\r\n")):
            async with Wire(app.bound["smtp"][1]) as w:
                await w.greet()
                assert [r[:3] for r in await w.transaction("p@outside.test", [rcpt],
                                                           body + b".\r\n")] == ["250"]
        want = 'count(mailrouter_requests_open{job="mailrouter"} > 0) == 2 and ' \
               'count(mailrouter_outbox_pending{job="mailrouter",kind="autoreply"} > 0) == 2'
        deadline = time.monotonic() + 60        # only fails a hung test
        while not await asyncio.to_thread(_query_or_none, port, want):
            assert time.monotonic() < deadline, "both instances never scraped with the mail"
            await asyncio.sleep(0.2)
        shown = {legend: {tuple(sorted(r["metric"].items())): float(r["value"][1])
                          for r in await asyncio.to_thread(_query, port, _grafana(expr))}
                 for legend, expr in panels.items()}
    finally:
        prom.terminate()
        await asyncio.wait_for(prom.wait(), 30)
    open_ = {k: v for k, v in shown["{{owner}} open"].items() if v}
    assert list(open_.values()) == [1], shown
    assert shown["{{kind}} pending"][(("kind", "autoreply"),)] == 1, shown


def _query_or_none(port: int, expr: str) -> list[dict] | None:
    try:
        return _query(port, expr) or None
    except OSError:         # Prometheus still starting
        return None


def test_the_deferred_rate_alert_names_every_tempfail_cause():
    """MailrouterDeferredRateHigh sends the admin to mailrouter_tempfails_total by cause and
    lists the causes: every one the daemon counts (metrics.TEMPFAIL_CAUSES) is named there,
    so a cause added (intents, data_deadline...) is not one the alert keeps quiet about."""
    from mailrouter.metrics import TEMPFAIL_CAUSES
    rule = next(r for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
                for r in g["rules"] if r.get("alert") == "MailrouterDeferredRateHigh")
    listed = re.search(r"by cause \(([^)]*)\)", rule["annotations"]["description"])
    assert listed is not None
    assert set(TEMPFAIL_CAUSES) == {c.strip() for c in listed.group(1).split(",")}


def _alert_expr(name: str) -> str:
    return next(r["expr"] for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
                for r in g["rules"] if r.get("alert") == name)


@pytest.mark.skipif(PROMETHEUS is None and not IN_CI,
                    reason="prometheus (Debian package) is not installed")
async def test_the_disk_alerts_fire_on_a_real_full_maildir_disk(make_app, tmpfs, tmp_path):  # noqa: F811
    """The Maildir root on a real 256 KiB tmpfs: /metrics serves its free and total bytes
    as statvfs gives them, under the config key (store="delivery.maildir_root"); filled,
    mail to it gets 452 4.3.1, and the expressions of MailrouterDiskFull and
    MailrouterDiskFilling, as a real Prometheus scraping the daemon evaluates them, name
    that store, where before they named none. There was no disk metric and no disk alert:
    a filling mail store showed only once mail was deferred."""
    import os
    import time

    from mailrouter.config import DeliveryConfig
    from tests.test_faults import fill
    app = await make_app(delivery=DeliveryConfig(maildir_root=tmpfs))
    admin = app.bound["admin"][1]
    _, text = await asyncio.to_thread(_get, admin, "/metrics")
    st = os.statvfs(tmpfs)
    store = 'store="delivery.maildir_root"'
    assert f"mailrouter_store_free_bytes{{{store}}} {float(st.f_bavail * st.f_frsize)}" in text
    assert f"mailrouter_store_size_bytes{{{store}}} {float(st.f_blocks * st.f_frsize)}" in text
    prom, port = await _prometheus(tmp_path, admin)

    async def stores(alert: str) -> set[str]:
        rows = await asyncio.to_thread(_query, port, _alert_expr(alert))
        return {r["metric"].get("store", "") for r in rows}

    async def until_scraped(expr: str) -> None:
        deadline = time.monotonic() + 60      # only fails a hung test
        while time.monotonic() < deadline:
            try:
                if await asyncio.to_thread(_query, port, expr):
                    return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"{expr} never answered")

    try:
        await until_scraped(f"mailrouter_store_free_bytes{{{store}}}")
        assert "delivery.maildir_root" not in await stores("MailrouterDiskFull")
        assert "delivery.maildir_root" not in await stores("MailrouterDiskFilling")
        await asyncio.to_thread(fill, tmpfs / "filler")
        async with Wire(app.bound["smtp"][1]) as w:
            await w.greet()
            [reply] = await w.transaction("a@outside.test", ["sales@example.com"],
                                          b"Subject: s\r\n\r\nx\r\n.\r\n")
        assert reply.startswith("452 4.3.1"), reply
        await until_scraped(f"mailrouter_store_free_bytes{{{store}}} < 16384")
        assert "delivery.maildir_root" in await stores("MailrouterDiskFull")
        assert "delivery.maildir_root" in await stores("MailrouterDiskFilling")
    finally:
        prom.terminate()
        await asyncio.wait_for(prom.wait(), 30)


FIRST_BOOK = """
domains: [example.com]
mailboxes:
  firstbox: {maildir: firstbox}
aliases:
  first@example.com: mailbox:firstbox
  postmaster@example.com: mailbox:firstbox
rules:
  - name: first-rule
    when: {rcpt: first@example.com}
    then: {folder: F}
"""


@pytest.mark.skipif(PROMETHEUS is None and not IN_CI,
                    reason="prometheus (Debian package) is not installed")
async def test_the_first_decision_of_a_rule_and_a_mailbox_shows_in_increase(make_app, tmp_path):
    """One message to a mailbox by a rule: a real Prometheus scraping the daemon sees it in
    increase() of the per-rule and per-mailbox decisions (the dashboard's two decision
    panels). Their series are made at 0 when the rule set loads, a rule added by a reload
    too (before any mail matched it); mailrouter_decisions_total's series, one per
    combination, was born at 1 with the first decision, so those panels missed every
    mailbox's and every rule's first message (and a rule that matched once, ever)."""
    import time

    book = tmp_path / "book.yaml"
    book.write_text(FIRST_BOOK, encoding="utf-8")
    app = await make_app(routing=(str(book),))
    admin = app.bound["admin"][1]
    _, text = await asyncio.to_thread(_get, admin, "/metrics")
    assert 'mailrouter_rule_decisions_total{rule="first-rule"} 0.0' in text
    assert 'mailrouter_mailbox_decisions_total{action="deliver",mailbox="firstbox"} 0.0' in text
    prom, port = await _prometheus(tmp_path, admin)

    async def value(expr: str) -> float | None:
        try:
            rows = await asyncio.to_thread(_query, port, expr)
        except OSError:
            return None
        return float(rows[0]["value"][1]) if rows else None

    async def until(expr: str, want: float) -> None:
        deadline = time.monotonic() + 60      # only fails a hung test
        while time.monotonic() < deadline:
            got = await value(expr)
            if got is not None and got >= want:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{expr} never reached {want}")

    rule = 'mailrouter_rule_decisions_total{rule="first-rule"}'
    mailbox = 'mailrouter_mailbox_decisions_total{mailbox="firstbox",action="deliver"}'
    try:
        await until(f"count({rule} == 0)", 1)                # scraped at 0 before the mail
        async with Wire(app.bound["smtp"][1]) as w:
            await w.greet()
            [reply] = await w.transaction("a@outside.test", ["first@example.com"],
                                          b"Subject: s\r\n\r\nx\r\n.\r\n")
        assert reply.startswith("250")
        await until(rule, 1)
        await until(mailbox, 1)
        assert await value(f"increase({rule}[1m])") > 0
        assert await value(f"increase({mailbox}[1m])") > 0
        book.write_text(FIRST_BOOK + "  - name: added-rule\n    when: {subject: {contains: "
                        "zebra}}\n    then: {folder: Z}\n", encoding="utf-8")
        ok, _ = await app.reload()
        assert ok
        await until('count(mailrouter_rule_decisions_total{rule="added-rule"} == 0)', 1)
    finally:
        prom.terminate()
        await asyncio.wait_for(prom.wait(), 30)


FAULT_ROUTING = """\
domains: [example.com]
mailboxes:
  support: {maildir: support}
  replies: {maildir: replies}
  held: {lmtp: held@down.test}
  busy: {lmtp: busy@down.test}
people:
  ivanov:  {address: ivanov@example.com}
  petrova: {address: petrova@example.com}
teams:
  duty: {members: [ivanov, petrova], pick: round-robin}
aliases:
  support@example.com: mailbox:support
  replies@example.com: mailbox:replies
  held@example.com: mailbox:held
  busy@example.com: mailbox:busy
calendars:
  msk: {timezone: Europe/Moscow, hours: "Mon-Fri 09:00-18:00"}
rules:
  - name: support
    when: {rcpt: support@example.com}
    then: {owner: duty, sla: {first_response: 4h, calendar: msk}}
"""


@pytest.mark.skipif(PROMETHEUS is None and not IN_CI,
                    reason="prometheus (Debian package) is not installed")
async def test_each_alert_expression_fires_on_its_real_fault(make_app, tmp_path):
    """A real Prometheus scrapes a daemon; each alert's expression (its `for:` is
    promtool's business, above) answers nothing before the faults and names the instance
    after its own (the overdue requests, a registry-wide figure: their mailbox): an LMTP downstream answering 451 (deferred rate), one refusing a
    configured mailbox 550 (held), the SQLite registry locked past registry.timeout
    (registry down), a broken routing file reloaded (reload failed), a request past its
    first-response due (overdue), the daemon stopped (down). The disk alerts: above."""
    import sqlite3
    import threading
    from datetime import datetime, timezone

    from mailrouter.config import ControlConfig, DeliveryConfig, RegistryConfig
    from tests.control_support import mail, send
    from tests.test_delivery_smtp import Sink

    sink = Sink(lmtp=True)
    sink.data_replies = {"busy@down.test": "451 4.3.0 busy", "held@down.test": "550 5.1.1 no user"}
    await sink.start()
    routing = tmp_path / "company.yaml"
    routing.write_text(FAULT_ROUTING, encoding="utf-8")
    db = tmp_path / "registry.db"
    app = await make_app(routing=(str(routing),),
                         control=ControlConfig(replies=("replies@example.com",)),
                         delivery=DeliveryConfig(tmp_path / "mail", lmtp=sink.downstream()),
                         registry=RegistryConfig(f"sqlite+aiosqlite:///{db}", timeout=1.0,
                                                 sync="normal"))
    admin, smtp = app.bound["admin"][1], app.bound["smtp"][1]
    prom, port = await _prometheus(tmp_path, admin)
    alerts = {r["alert"]: r["expr"]
              for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
              for r in g["rules"]}
    faults = ["MailrouterDeferredRateHigh", "MailrouterDownstreamRefusalsHeld",
              "MailrouterRegistryDown", "MailrouterReloadFailed", "MailrouterRequestsOverdue"]

    async def answers(expr: str) -> list[dict]:
        try:
            return await asyncio.to_thread(_query, port, expr)
        except OSError:                           # not listening yet
            return []

    async def firing(alert: str) -> bool:
        if alert == "MailrouterRequestsOverdue":
            # a figure of the registry every instance shares: one alert for them all, by the
            # mailbox of the overdue request, naming no instance
            return any(r["metric"].get("mailbox") == "support" and "instance" not in r["metric"]
                       for r in await answers(alerts[alert]))
        return any(r["metric"].get("instance") == f"127.0.0.1:{admin}"
                   for r in await answers(alerts[alert]))

    async def plain(rcpt: str) -> list[str]:
        async with Wire(smtp) as w:
            await w.greet()
            return await w.transaction("a@outside.test", [rcpt], b"Subject: s\r\n\r\nx\r\n.\r\n")

    try:
        await _until("the first scrape", lambda: answers('up{job="mailrouter"} == 1'))
        await asyncio.sleep(1.5)                  # a second scrape: rate() has two samples
        # silent before (the disk alerts read this host's disk: not here)
        assert [a for a in faults + ["MailrouterDown"] if await firing(a)] == []
        # a downstream deferring, another refusing a configured mailbox (held as 451); the
        # deferred-rate alert wants some traffic: over 0.01 recipients a second in 15 minutes
        assert [(await plain(r))[0][:3] for r in ["busy@example.com"] * 12
                + ["held@example.com"]] == ["451"] * 13
        # a request whose first response was due on a past Monday at 14:00 (MSK)
        app.pipeline.clock = lambda: datetime(2026, 11, 2, 7, 0, tzinfo=timezone.utc)
        await send(smtp, mail("c@client.example", "printer", "p1@client"), "c@client.example")
        # a broken routing file reloaded: refused, the old rules kept
        routing.write_text(FAULT_ROUTING + "  - name: broken\n    when: {no_such: 1}\n",
                           encoding="utf-8")
        assert (await app.reload())[0] is False
        # the registry locked by another process past registry.timeout: 451
        locked, release = threading.Event(), threading.Event()

        def hold() -> None:
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(30)
            conn.close()
        holder = threading.Thread(target=hold)
        holder.start()
        try:
            await asyncio.to_thread(locked.wait, 10)
            assert (await plain("support@example.com"))[0].startswith("451")
        finally:
            release.set()
            holder.join()
        for alert in faults:
            await _until(alert, lambda alert=alert: firing(alert))
        app.request_stop()
        await app.wait_stopped()
        await _until("MailrouterDown", lambda: firing("MailrouterDown"))
    finally:
        prom.terminate()
        await asyncio.wait_for(prom.wait(), 30)
        await sink.stop()


@pytest.mark.skipif(PROMETHEUS is None and not IN_CI,
                    reason="prometheus (Debian package) is not installed")
async def test_the_reload_leftover_alerts_fire_on_their_real_faults(make_app, tmp_path):
    """A real Prometheus scrapes a daemon with postfix_maps.on_reload and a config.yaml:
    MailrouterPostfixMapsStale's and MailrouterConfigNotApplied's expressions answer nothing
    after a clean start, and name the instance once a reload could not rebuild Postfix's
    tables (their directory became a file: `mailrouter reload` exit 3) and found config.yaml
    other than the running one (exit 4); a reload with the tables fixed silences the first
    alone."""
    import dataclasses

    from mailrouter.config import PostfixMapsConfig

    maps = tmp_path / "maps"
    config = tmp_path / "config.yaml"
    app = await make_app(postfix_maps=PostfixMapsConfig(maps, on_reload=True))
    admin = app.bound["admin"][1]
    # the config.yaml this daemon reads at a reload: one it did not start with (changed keys)
    config.write_text(f"hostname: other.test\nlisten: {{admin: '127.0.0.1:{admin}'}}\n"
                      f"routing: ['{tmp_path / 'none' / '*.yaml'}']\n", encoding="utf-8")
    app.config = dataclasses.replace(app.config, path=str(config))
    prom, port = await _prometheus(tmp_path, admin)
    alerts = {r["alert"]: r["expr"]
              for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
              for r in g["rules"]}
    new = ("MailrouterPostfixMapsStale", "MailrouterConfigNotApplied")

    async def firing(alert: str) -> bool:
        try:
            found = await asyncio.to_thread(_query, port, alerts[alert])
        except OSError:                           # not listening yet
            return False
        return any(r["metric"].get("instance") == f"127.0.0.1:{admin}" for r in found)

    async def scraped() -> bool:
        try:
            return bool(await asyncio.to_thread(_query, port, "mailrouter_postfix_maps_failed"))
        except OSError:
            return False

    try:
        await _until("the first scrape", scraped)
        assert [a for a in new if await firing(a)] == []
        shutil.rmtree(maps)
        maps.write_text("not a directory\n", encoding="utf-8")
        ok, _, maps_error, not_applied = await app.reload_all()
        assert ok and maps_error and not_applied
        for alert in new:
            await _until(alert, lambda alert=alert: firing(alert))
        maps.unlink()                   # the tables fixed; config.yaml still not the one running
        ok, _, maps_error, not_applied = await app.reload_all()
        assert ok and maps_error is None and not_applied

        async def only_config() -> bool:
            return not await firing(new[0]) and await firing(new[1])
        await _until("MailrouterPostfixMapsStale silent", only_config)
    finally:
        prom.terminate()
        await asyncio.wait_for(prom.wait(), 30)

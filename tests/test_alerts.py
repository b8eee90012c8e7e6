"""The alert rules pass promtool (syntax and their unit tests), and every metric name the
rules and the Grafana dashboard query is served by a real daemon's /metrics."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_metrics import _get

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "mailrouter-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "mailrouter-rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "mailrouter.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package "
                                    "prometheus) is not installed")


@needs_promtool
def test_rules_pass_promtool_check():
    """`promtool check rules` accepts the file and finds every alert."""
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout


@needs_promtool
def test_rules_unit_tests_pass_promtool():
    """`promtool test rules`: each alert fires on the series it is meant for, and the reload
    alert does not fire while the last reload succeeded."""
    out = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


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


async def test_rules_and_dashboard_query_real_names(make_app):
    """Every `mailrouter_*` name in an alert expression or a dashboard panel is on /metrics
    (a renamed family would leave a silent alert or an empty panel)."""
    app = await make_app()
    status, text = await asyncio.to_thread(_get, app.bound["admin"][1], "/metrics")
    assert status == 200
    names = exposed_names(text)
    rules = [r["expr"] for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
             for r in g["rules"]]
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    dashboard = [t["expr"] for p in panels for t in p["targets"]]
    for what, used in (("rules", _queried(rules)), ("dashboard", _queried(dashboard))):
        assert len(used) >= 7, (what, used)
        assert used <= names, (what, used - names)

"""The admin endpoint serves metrics that count real traffic, and the dashboard uses real names."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

from tests.support.wire import Wire

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "mailrouter.json"


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


async def test_metrics_count_traffic_and_dashboard_names_exist(make_app):
    """A delivered message and a refused RCPT move their counters; every dashboard metric exists."""
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
    names = set(re.findall(r"^(mailrouter_\w+)", after, re.M))
    exprs = " ".join(t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"])
    used = set(re.findall(r"mailrouter_\w+", exprs))
    assert used and used <= names, used - names


async def test_healthz(make_app):
    """/healthz is 200 while serving."""
    app = await make_app()
    status, body = await asyncio.to_thread(_get, app.bound["admin"][1], "/healthz")
    assert (status, body) == (200, "ok\n")

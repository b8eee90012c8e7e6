"""The report page: messages per day, and requests' first response and SLA kept.

Two queries, both scoped by the viewer's rights: `registry.queries.volume` (messages per
day, mailbox and owner) and `control.queries.report`, the very function `mailrouter
report` prints: first-response time (median and 90th percentile, in business hours of
each request's calendar) and the share answered within SLA, per mailbox and per owner,
for the requests opened in the period. Charts are SVG drawn here (charts.py); the CSV
download is `?format=csv` (messages per day, mailbox, owner) or `?format=csv&part=response`
(one row per mailbox and per owner, the columns of the tables).

Days are the company's (calendars.company_zone, the zone `away:` dates are read in): a
period runs from local midnight to local midnight and a message counts on its local
date, on SQLite and PostgreSQL alike; "today" is today there.

Refused: a date that is not YYYY-MM-DD (400 naming the field), a period that ends
before it starts (400).
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from ..calendars import company_zone
from ..control.queries import report, report_first_day
from ..registry.queries import local_midnight, volume, volume_totals
from ..values import write_csv
from .auth import REGISTRY
from .charts import bar_chart
from .common import BadInput, bad, day, lang_of, render, snap, viewer
from .i18n import translate

__all__ = ["report_page", "RESPONSE_FIELDS"]

RESPONSE_FIELDS = ["section", "name", "requests", "answered", "median", "p90", "kept", "missed",
                   "share_kept"]


async def report_page(request: web.Request) -> web.StreamResponse:
    s = snap(request)
    zone = company_zone(s.rules.calendars)
    today = datetime.now(zone).date()
    try:
        until = day(request, "until", today) or today
        # the default period of `mailrouter report` too (control.queries.report_period)
        since = day(request, "since", report_first_day(until)) or today
    except BadInput as exc:
        return bad(request, str(exc))
    if until < since:
        return bad(request, f"until={until} is before since={since}")
    scope = viewer(request).scope
    now = datetime.now(timezone.utc)

    csv = request.query.get("format") == "csv"

    def read(conn: Any) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        return volume(conn, scope, since, until, zone), report(
            conn, local_midnight(since, zone), local_midnight(until, zone, 1), now,
            s.rules.calendars, scope, zone), (
            {} if csv else volume_totals(conn, scope, since, until, zone))
    rows, doc, totals = await request.app[REGISTRY].read("web report", read)
    name = f"mailrouter-{since}-{until}"
    if csv:
        if request.query.get("part") == "response":
            return _csv(_response_rows(doc), RESPONSE_FIELDS, f"{name}-response.csv")
        return _csv(rows, ["day", "mailbox", "owner", "messages", "trouble"], f"{name}.csv")
    # each message once a day, a mailbox (a message to two mailboxes is in each) and an
    # owner: volume_totals (the CSV's rows, added up, counted it once per row)
    per_day: dict[str, int] = totals["per_day"]
    per_box = {k or "-": n for k, n in totals["per_mailbox"].items()}
    per_owner = {k or "-": n for k, n in totals["per_owner"].items()}
    # the chart shows 92 days at most; until - 91 days of a period in year 1 is before
    # date.min (OverflowError: a 500 for /report?since=0001-01-01&until=0001-01-02)
    first = until - timedelta(days=min(91, (until - since).days))
    days = [(first + timedelta(days=i)).isoformat() for i in range((until - first).days + 1)]
    lang = lang_of(request)
    people, teams = s.book.people, s.book.teams

    def who(key: str | None) -> str:
        """A person by name, a team as a team (a rule naming a team owns its messages
        until a member is picked: `duty` read like a person's key), anyone else by key."""
        p = people.get(key) if key else None
        if p is None and key in teams:
            return translate(lang, "team_of").format(team=key)
        return (p.name or str(key)) if p is not None else (key or "-")
    charts = {
        "per_day": bar_chart([(d[5:], per_day.get(d, 0)) for d in days], translate(lang, "per_day")),
        "median_box": bar_chart([(r["mailbox"] or "-", r["median"]) for r in doc["response_per_mailbox"]
                                 if r["median"] is not None], translate(lang, "median_box"), unit="h"),
        "median_owner": bar_chart([(who(r["owner"]), r["median"]) for r in doc["response_per_owner"]
                                   if r["median"] is not None], translate(lang, "median_owner"),
                                  unit="h"),
        "share_box": bar_chart([(r["mailbox"] or "-", round(100 * r["share_kept"], 1))
                                for r in doc["response_per_mailbox"] if r["share_kept"] is not None],
                               translate(lang, "share_box"), unit="%"),
    }
    return render(request, "report.html", since=since.isoformat(), until=until.isoformat(),
                  charts=charts, per_box=sorted(per_box.items()), per_owner=sorted(per_owner.items()),
                  doc=doc, who=who, csv_link=f"/report?since={since}&until={until}&format=csv",
                  csv_response=f"/report?since={since}&until={until}&format=csv&part=response")


def _response_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for section in ("mailbox", "owner"):
        for r in doc[f"response_per_{section}"]:
            out.append({"section": section, "name": r[section]}
                       | {k: r[k] for k in RESPONSE_FIELDS[2:]})
    return out


def _csv(rows: list[dict[str, Any]], fields: list[str], name: str) -> web.Response:
    out = io.StringIO()
    write_csv(out, rows, fields)      # as the CLI's --csv: no cell opens as a formula
    return web.Response(body=out.getvalue().encode("utf-8"), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

"""What is waiting, read from the registry for /metrics: the outbox and the requests.

`read_backlog` runs two grouped queries (each bounded by an index: outbox by
state, requests by status) just before a scrape, in the worker that serves the
admin endpoint, and fills `metrics.State`. A failure keeps the last figures and
sets `mailrouter_scrape_registry_error` to 1; the scrape itself never fails on it.

Labels: the outbox by kind (autoreply, dsn); requests by mailbox and owner, both
names from the routing files ('-' when unset). Never a counterparty or a subject.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import Connection, and_, func, select

from .control.tables import requests
from .errors import RegistryError
from .metrics import State
from .registry import Registry
from .registry.models import outbox

__all__ = ["read_backlog"]

log = logging.getLogger(__name__)


def _fetch(conn: Connection) -> tuple[dict[str, tuple[int, float]],
                                      dict[tuple[str, str], tuple[int, int]]]:
    now = datetime.now(UTC)
    queued: dict[str, tuple[int, float]] = {}
    for kind, n, oldest in conn.execute(
            select(outbox.c.kind, func.count(), func.min(outbox.c.created_at))
            .where(outbox.c.state == "queued").group_by(outbox.c.kind)):
        if isinstance(oldest, str):            # SQLite without the column type's help
            oldest = datetime.fromisoformat(oldest)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        queued[kind] = (int(n), max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
    per: dict[tuple[str, str], tuple[int, int]] = {}
    overdue = and_(requests.c.status == "open", requests.c.response_due <= now)
    key = (requests.c.mailbox, requests.c.owner)
    for mailbox, owner, n in conn.execute(select(*key, func.count()).where(
            requests.c.status != "closed").group_by(*key)):
        per[(mailbox or "-", owner or "-")] = (int(n), 0)
    for mailbox, owner, n in conn.execute(select(*key, func.count()).where(overdue)
                                          .group_by(*key)):
        k = (mailbox or "-", owner or "-")
        per[k] = (per.get(k, (0, 0))[0], int(n))
    return queued, per


async def read_backlog(registry: Registry, state: State) -> None:
    """Fill `state` with the outbox backlog and the open/overdue requests. A (mailbox,
    owner) seen before and now without open requests is served at 0: its series vanished,
    and a panel or an alert kept its last value (1 overdue) instead of the drop to none."""
    try:
        state.outbox, per = await registry.read("metrics_backlog", _fetch)
        state.requests = dict.fromkeys(state.requests, (0, 0)) | per
        state.error = 0.0
    except RegistryError as exc:
        state.error = 1.0
        log.warning("event=metrics_backlog_failed error=%r", str(exc))

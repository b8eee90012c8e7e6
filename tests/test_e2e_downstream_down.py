"""End to end: mailrouter's downstream down. A private Postfix in front of mailrouter in
front of an LMTP sink that is not listening: mailrouter answers 4xx, Postfix keeps the mail
queued; the sink comes back, `postqueue -f` delivers it exactly once. Our log line for the
message names Postfix's queue id (upstream_id), so one grep finds it in both logs."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from mailrouter.config import DeliveryConfig
from tests.support.postfix import PostfixServer  # noqa: F401 (the fixture's type)
from tests.test_delivery_smtp import Sink, sink  # noqa: F401 (fixture)
from tests.test_e2e_postfix import log_lines, start_postfix, swaks, until
from tests.test_health import get

ROUTING = """\
domains: [example.com]
mailboxes:
  alice: {lmtp: alice@store.test}
aliases:
  alice@example.com: mailbox:alice
"""


async def test_downstream_down_postfix_keeps_mail_then_delivers_once(make_app, postfix, sink,  # noqa: F811
                                                                     tmp_path, caplog):
    """LMTP sink down: 4xx, Postfix defers and keeps the mail, /readyz names the downstream;
    sink back and a flush: delivered once, the queue empty, a second flush sends nothing."""
    caplog.set_level(logging.INFO, logger="mailrouter")
    s: Sink = await sink(lmtp=True)
    ds = s.downstream()
    await s.stop()                                   # the port is known, nothing listens
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING, encoding="utf-8")
    app = await make_app(routing=(str(routing),),
                         delivery=DeliveryConfig(maildir_root=tmp_path / "mail", lmtp=ds))
    mta = await start_postfix(postfix, app.bound["smtp"][1])
    mta.postconf("minimal_backoff_time = 300s", "maximal_backoff_time = 300s",
                 "queue_run_delay = 300s")           # only our flush retries it
    await asyncio.to_thread(mta.reload)

    done = await swaks(mta.port, "alice@example.com", subject="While Dovecot sleeps")
    assert done.returncode == 0, done.stdout + done.stderr
    await until(lambda: "status=deferred" in mta.maillog, what="deferral\n" + mta.maillog)
    deferred = log_lines(mta, "alice@example.com")
    assert any(re.search(r"said: 451 4\.\d\.\d", line) for line in deferred), deferred
    assert not any("status=bounced" in line or "status=sent" in line for line in deferred)
    (queue_id,) = await asyncio.to_thread(mta.queue_ids)
    assert s.envelopes == []
    status, body = await get(app.bound["admin"][1], "/readyz")
    assert status == 503 and f"FAIL downstream lmtp: 127.0.0.1:{ds.port}" in body, body
    ours = [r for r in caplog.records if getattr(r, "fields", None) and r.getMessage() ==
            "event=message"]
    assert ours and ours[-1].fields["upstream_id"] == queue_id
    assert ours[-1].fields["rcpts"][0]["reply"].startswith("451 ")

    await s.start()                                  # Dovecot is back, same port
    await asyncio.to_thread(mta.flush)
    await until(lambda: "status=sent" in mta.maillog, what="sent after flush\n" + mta.maillog)
    await until(lambda: mta.queue_ids() == [], what="empty queue")
    await until(lambda: len(s.envelopes) == 1, what="one copy at the sink")
    assert s.envelopes[0].rcpt_tos == ["alice@store.test"]
    assert b"Subject: While Dovecot sleeps" in s.envelopes[0].original_content
    await asyncio.to_thread(mta.flush)               # nothing left to send again
    await asyncio.sleep(0.5)
    assert len(s.envelopes) == 1
    assert len([ln for ln in log_lines(mta, "alice@example.com") if "status=sent" in ln]) == 1
    assert await app.registry.count_messages() == 1
    (first, last) = [r for r in caplog.records if getattr(r, "fields", None)
                     and r.getMessage() == "event=message"][-2:]
    assert first.fields["upstream_id"] == last.fields["upstream_id"] == queue_id
    assert last.fields["rcpts"][0]["reply"].startswith("250 ")


pytestmark = pytest.mark.asyncio

"""/healthz says alive, /readyz says whether mail can flow and names the cause when not:
a real daemon, a real PostgreSQL stopped and started, a real LMTP sink down and up."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request


from mailrouter.config import DeliveryConfig, RegistryConfig
from tests.test_delivery_smtp import Sink, sink  # noqa: F401 (fixture)
from tests.test_faults import fill, tmpfs  # noqa: F401 (fixture)


def _get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    return await asyncio.to_thread(_get, port, path, token)


async def test_ready_with_every_check_named(make_app):
    """A healthy daemon: /readyz 200 with one ok line per check; /healthz 200 ok."""
    app = await make_app()
    port = app.bound["admin"][1]
    status, body = await get(port, "/readyz")
    assert status == 200, body
    names = [line.split(":")[0] for line in body.splitlines()]
    assert names == ["ok listeners", "ok registry", "ok rules", "ok store"], body
    assert "maildir_root writable" in body and "intents writable" in body
    assert f"rule set {app.snapshot().hash}" in body
    assert await get(port, "/healthz") == (200, "ok\n")


async def test_readyz_503_while_postgresql_is_down_and_200_after(make_app, private_pg, tmp_path):
    """PostgreSQL stopped: /readyz 503 naming the registry, /healthz still 200 (a restart
    cures nothing); PostgreSQL back: /readyz 200 again, without restarting the daemon."""
    app = await make_app(registry=RegistryConfig(private_pg.url, timeout=3.0))
    port = app.bound["admin"][1]
    assert (await get(port, "/readyz"))[0] == 200
    await asyncio.to_thread(private_pg.stop)
    status, body = await get(port, "/readyz")
    assert status == 503, body
    assert "FAIL registry: registry unreachable" in body, body
    assert "ok listeners" in body and "ok rules" in body
    assert (await get(port, "/healthz"))[0] == 200
    await asyncio.to_thread(private_pg.start)
    status, body = await get(port, "/readyz")
    assert status == 200, body


async def test_readyz_names_the_downstream_that_is_down(make_app, tmp_path, sink):  # noqa: F811
    """The LMTP downstream not listening: 503 naming `downstream lmtp` and its address;
    listening again: 200 (the probe's cache is set to 0 s here)."""
    s: Sink = await sink(lmtp=True)
    ds = s.downstream()
    await s.stop()
    cfg = DeliveryConfig(maildir_root=tmp_path / "var" / "mail", lmtp=ds)
    app = await make_app(delivery=cfg)
    app.readiness.ttl = 0.0
    port = app.bound["admin"][1]
    status, body = await get(port, "/readyz")
    assert status == 503, body
    assert f"FAIL downstream lmtp: 127.0.0.1:{ds.port} " in body, body
    await s.start()
    status, body = await get(port, "/readyz")
    assert status == 200, body
    assert f"ok downstream lmtp: 127.0.0.1:{ds.port} greeted" in body


async def test_readyz_without_token_names_checks_not_causes(make_app, tmp_path, sink):  # noqa: F811
    """With an admin token, /readyz stays open for probes but only the token shows causes."""
    s: Sink = await sink(lmtp=True)
    ds = s.downstream()
    await s.stop()
    cfg = DeliveryConfig(maildir_root=tmp_path / "var" / "mail", lmtp=ds)
    token = "t" * 32
    app = await make_app(delivery=cfg, admin_token=token)
    port = app.bound["admin"][1]
    assert await get(port, "/readyz") == (503, "not ready: downstream lmtp\n")
    status, body = await get(port, "/readyz", token)
    assert status == 503 and f"127.0.0.1:{ds.port}" in body


async def test_readyz_503_while_draining(make_app):
    """After SIGTERM's drain starts, /readyz says so (a balancer stops sending mail)."""
    app = await make_app()
    app.draining = True
    status, body = await get(app.bound["admin"][1], "/readyz")
    app.draining = False
    assert status == 503 and "FAIL listeners: draining" in body



async def test_readyz_names_a_full_or_read_only_store(make_app, tmpfs):  # noqa: F811
    """The Maildir root on a real tmpfs: full, /readyz is 503 naming it and the cause (every
    copy would get 452); read-only, the same with 451's cause; writable again, 200."""
    import subprocess
    app = await make_app(delivery=DeliveryConfig(maildir_root=tmpfs))
    app.readiness.ttl = 0                  # every probe looks again (no waiting on the clock)
    port = app.bound["admin"][1]
    assert (await get(port, "/readyz"))[0] == 200
    await asyncio.to_thread(fill, tmpfs / "filler")
    status, body = await get(port, "/readyz")
    assert status == 503 and f"FAIL store: maildir_root {tmpfs}: No space left on device" in body
    (tmpfs / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        status, body = await get(port, "/readyz")
        assert status == 503 and f"FAIL store: maildir_root {tmpfs}: Read-only file system" in body
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    status, body = await get(port, "/readyz")
    assert status == 200 and "maildir_root writable" in body, body
    assert not [p for p in tmpfs.iterdir() if p.name.startswith(".mailrouter-ready")]

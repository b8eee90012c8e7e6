"""The web view's board, search, request page and report over HTTP on a generated registry.

The registry is bench_registry.py's (N messages over 90 days ending now, every third
opening a request, 70% of those answered, so about 10% of the messages are requests
still awaiting a first response, nearly all overdue), on SQLite. The web application
(`mailrouter.web.make_app`, the example company's routing files: ivanov heads finance)
is served by aiohttp on loopback and asked with a real HTTP client holding a session
cookie; each page is asked `--repeat` times and the median wall time is printed, for
the admin (everything) and for a head of department (one mailbox of four). Run by hand:

    PYTHONPATH=$PWD .venv/bin/python bench/bench_web.py -n 1000000

The generation itself is not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_registry  # noqa: E402

from mailrouter.config import Config, WebConfig  # noqa: E402
from mailrouter.registry import Registry  # noqa: E402
from mailrouter.registry.accounts import open_session  # noqa: E402
from mailrouter.routing.snapshot import load_snapshot  # noqa: E402
from mailrouter.web import make_app  # noqa: E402
from mailrouter.web.auth import COOKIE  # noqa: E402

RULES = Path(__file__).resolve().parents[1] / "mailrouter" / "defaults" / "rules"


async def fill(reg: Registry, n: int) -> None:
    chunk: list[Any] = []
    for row in bench_registry.rows(n):
        chunk.append(row)
        if len(chunk) == bench_registry.CHUNK:
            await reg.write("fill", lambda c, ch=chunk: bench_registry.fill(c, ch))
            chunk = []
    if chunk:
        await reg.write("fill", lambda c, ch=chunk: bench_registry.fill(c, ch))


async def bench(url: str, n: int, repeat: int) -> None:
    now = datetime.now(timezone.utc)
    bench_registry.START = now - timedelta(days=90)      # the data ends now: overdue is real
    reg = await Registry.open(url, timeout=600)
    runner = None
    try:
        have = await reg.count_messages()
        if have:        # --db FILE kept from an earlier run (its data ended then)
            print(f"{have:,} messages already there")
            n = have
        else:
            t0 = time.perf_counter()
            await fill(reg, n)
            print(f"generated {n:,} messages in {time.perf_counter() - t0:.1f} s")
        cfg = Config.embedded(Path(tempfile.gettempdir()))
        snap = load_snapshot((str(RULES / "*.yaml"),), cfg.limits, "mx.test")
        runner = web.AppRunner(make_app(reg, lambda: snap, WebConfig(admins=("petrova",))))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        rid = n // 6
        day = (now - timedelta(days=1)).date().isoformat()
        pages = [
            ("board", "/board"),
            ("board, one owner", "/board?owner=popov"),
            ("search subject word, 100 newest", "/search?words=" + quote("СЧЕТ")),
            ("search 3 words (1 in 220 matches)", "/search?words=" + quote("акт сверка договор")),
            ("search 2 words, last day", f"/search?words={quote('счет оплата')}&since={day}"),
            ("search sender", "/search?sender=user7%40client7.example"),
            ("request page", f"/request/{rid}"),
            ("report, last 30 days", "/report"),
        ]
        for person, who in (("petrova", "admin"), ("ivanov", "head of finance")):
            token, _ = await reg.write("session", lambda c, p=person: open_session(c, p, now, 3600))
            async with aiohttp.ClientSession(cookies={COOKIE: token}) as http:
                print(f"  as {who}:")
                for name, path in pages:
                    times = []
                    for _ in range(repeat):
                        t0 = time.perf_counter()
                        async with http.get(base + path, allow_redirects=False) as r:
                            body = await r.read()
                        times.append(time.perf_counter() - t0)
                    status = r.status
                    print(f"    {name:40} {1000 * statistics.median(times):8.1f} ms  "
                          f"(HTTP {status}, {len(body) // 1024} KiB)")
    finally:
        if runner is not None:
            await runner.cleanup()
        await reg.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=100_000, help="messages to generate (default 100,000)")
    p.add_argument("--repeat", type=int, default=3, help="asks per page (median printed)")
    p.add_argument("--db", metavar="FILE", help="SQLite file to use and keep (generated only "
                   "when empty); bench_registry.py --db FILE times its queries on it too")
    args = p.parse_args()
    if args.db:
        asyncio.run(bench(f"sqlite+aiosqlite:///{args.db}", args.n, args.repeat))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(f"sqlite+aiosqlite:///{tmp}/registry.db", args.n, args.repeat))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Memory one message costs on its way through the daemon: peak traced bytes / message size.

    cd bench && PYTHONPATH=.. python bench_memory_message.py [--sizes 1,5,25]

In one process: the real `App` (aiosmtpd intake on 127.0.0.1 port 0, SQLite registry,
Maildir with fsync) and a client in a thread on a blocking socket (sendall of bytes built
before the measure, so the client adds nothing). For each case tracemalloc's peak over the
whole transaction (DATA read, view, rules, dedupe, delivery, record), minus what was traced
before it, divided by the message size. Cases: 1 / 5 / 25 MB, a text-only message and one
with a PDF attachment (base64), under rules that read headers only and rules that read the
attachments and the body. Issue 15's target: about 2 (a message in flight costs at most
about twice its size). In brackets: the growth of the process's resident peak (VmHWM, reset
through /proc/self/clear_refs) over the same transaction, the message built before it
included in neither; run it with MALLOC_MMAP_THRESHOLD_=131072 too (glibc otherwise raises its
mmap threshold after each large free and keeps freed heap, so RSS need not follow).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import gc
import os
import re
import socket
import sys
import tempfile
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailrouter.config import Config, Limits, Listener  # noqa: E402
from mailrouter.daemon import App  # noqa: E402
from mailrouter.routing.snapshot import load_snapshot  # noqa: E402

HEADERS_ONLY = """rules:
  - name: hello
    when: {rcpt: sales@example.com, subject: {contains: [nomatch-word]}}
    then: {mailbox: support}
  - name: sales
    when: {rcpt: sales@example.com}
    then: {mailbox: sales}
"""
BODY_AND_ATTACHMENTS = """rules:
  - name: invoices
    when:
      any:
        - attachment: {glob: ["*invoice*"]}
        - body: {contains: ["nomatch phrase"]}
    then: {mailbox: finance}
  - name: sales
    when: {rcpt: sales@example.com}
    then: {mailbox: sales}
"""


def message(size: int, kind: str) -> bytes:
    head = (b"From: Bench <b@outside.test>\r\nTo: sales@example.com\r\nSubject: memory\r\n"
            b"Message-ID: <mem@outside.test>\r\nMIME-Version: 1.0\r\n")
    line = b"The quick brown fox jumps over the lazy dog, line after line of text.\r\n"
    if kind == "text":
        return (head + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                + line * (size // len(line)))
    blob = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    return (head + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + line * 20 + b"--b1\r\n"
            b'Content-Type: application/pdf; name="report.pdf"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="report.pdf"\r\n\r\n'
            + blob + b"--b1--\r\n")


def wire(mail: bytes) -> bytes:
    """The DATA text as it travels: dot-stuffed, with the final dot."""
    return mail.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def client(port: int, text: bytes, out: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO bench\r\n")
        while f.readline()[3:4] == b"-":
            pass
        for cmd in (b"MAIL FROM:<b@outside.test>\r\n", b"RCPT TO:<sales@example.com>\r\n",
                    b"DATA\r\n"):
            s.sendall(cmd)
            f.readline()
        s.sendall(text)
        out.append(f.readline())


def _status(field: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read())[1]) * 1024  # type: ignore[index]


def _reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")     # VmHWM starts again from VmRSS


async def one(app: App, mail: bytes) -> tuple[float, float, bytes]:
    """(traced peak / size, resident peak / size, the reply). The resident figure is the
    process's high-water mark (reset through /proc/self/clear_refs) over its RSS before."""
    text = wire(mail)
    out: list[bytes] = []
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    rss = _status("VmRSS")
    _reset_hwm()
    await asyncio.to_thread(client, app.bound["smtp"][1], text, out)
    peak = tracemalloc.get_traced_memory()[1] - base
    resident = _status("VmHWM") - rss
    return peak / len(mail), resident / len(mail), out[0] if out else b"(no reply)"


async def run(sizes: list[int], tmp: Path) -> None:
    company = (REPO / "rules" / "company.yaml").read_text()
    print(f"# peak traced bytes during one transaction / message size (python {sys.version.split()[0]});"
          f" in brackets the resident peak's growth / size (MALLOC_MMAP_THRESHOLD_="
          f"{os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')})")
    print(f"{'rules':<12}{'message':<10}" + "".join(f"{s // 2**20:>13} MB" for s in sizes))
    for label, rules in (("headers", HEADERS_ONLY), ("body+attach", BODY_AND_ATTACHMENTS)):
        work = tmp / label
        (work / "rules").mkdir(parents=True)
        (work / "rules" / "company.yaml").write_text(company)
        (work / "rules" / "routing.yaml").write_text(rules)
        cfg = Config.embedded(work)
        cfg = dataclasses.replace(
            cfg, hostname="mx.bench", smtp=Listener("127.0.0.1", 0), lmtp=Listener("127.0.0.1", 0),
            admin=Listener("127.0.0.1", 0), routing=(str(work / "rules" / "*.yaml"),), web=None,
            limits=dataclasses.replace(Limits(), error_delay=0.0, greet_delay=0.0,
                                       greet_delay_loopback=0.0, max_message_size=64 * 2**20))
        app = App(cfg, load_snapshot(cfg.routing, cfg.limits, cfg.hostname))
        await app.start()
        try:
            await one(app, message(2**16, "text"))          # warm up: imports, pools, tables
            for kind in ("text", "pdf"):
                figures = []
                for size in sizes:
                    ratio, resident, reply = await one(app, message(size, kind))
                    if not reply.startswith(b"250"):
                        raise SystemExit(f"{label} {kind} {size}: {reply!r}")
                    figures.append(f"{ratio:.2f} [{resident:.2f}]")
                print(f"{label:<12}{kind:<10}" + "".join(f"{r:>16}" for r in figures), flush=True)
        finally:
            app.request_stop()
            await app.wait_stopped()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,5,25", help="message sizes in MB")
    a = ap.parse_args()
    sizes = [int(float(s) * 2**20) for s in a.sizes.split(",")]
    tracemalloc.start()
    with tempfile.TemporaryDirectory(prefix="mrmsg.") as tmp:
        asyncio.run(run(sizes, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

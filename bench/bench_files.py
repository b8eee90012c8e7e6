#!/usr/bin/env python3
"""The routing files' cost through the running daemon (issue 15: "cost flat in the routing files").

    cd bench && unshare -n sh -c 'ip link set lo up; PYTHONPATH=$(cd .. && pwd) python bench_files.py \
        --rounds 3'

One run, four routing setups per `workers:` setting (auto and 1), each its own
`mailrouter run` relaying every mailbox `{smtp: ...}` to one smtp-sink (bench_smtp's
machinery: a cgroup per server, CPU over every process of it):

  base      10 rules of bench_rules.mix_yaml, 1,000 aliases  (the baseline)
  r1k       1,000 mix rules, 1,000 aliases
  r10k      10,000 mix rules, 1,000 aliases
  a100k     10 mix rules, 100,000 aliases (10,000 people)

Aliases and people come from bench_addresses.sections (as bench_memory), merged into the
example company; no mailbox is a Maildir, so what is measured is SMTP in, the routing files,
the registry, and SMTP out. Messages go to sales@example.com; no mix rule matches them, so
each message meets every rule (none decided early, none skipped unrealistically).

Two kinds of message, each sent to every server at each level:
  plain   smtp-source's own 4 KB message (-l 4096): no Subject, ASCII body
  body    a 4 KB text/plain UTF-8 base64 message (built with the email package, sent with
          smtp-source -F) with a Cyrillic subject and From name, an X-Mailer and a
          List-Id, and a Cyrillic body: the subject regexes, From-name globs, body phrases
          and header regexes all run.

For each round the order of the servers rotates; each server first gets an unmeasured
warm-up. Printed per row: msg/s, CPU ms per message (cgroup cpu.stat over all the server's
processes, probe messages counted) and its ratio to `base` of the same workers setting; the
memory of all the server's processes summed: RSS, VmHWM (peak) and PSS (smaps_rollup: shared
pages split between the processes that map them, what the machine pays), and the ratio of
each to `base`. The summary gives medians of the per-round ratios. Targets (issue 15):
r10k CPU within 1.3x of base; a100k memory within 1.3x of base.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import yaml

from bench_addresses import sections
from bench_rules import mix_yaml
from bench_smtp import (REPO, SMTP_SOURCE, Probe, Server, descendants, free_port, median, pct,
                        slug, start_mailrouter, start_sink, stopping)

RCPT = "sales@example.com"
SETUPS = {"base": (10, 1_000), "r1k": (1_000, 1_000), "r10k": (10_000, 1_000),
          "a100k": (10, 100_000)}


def routing_files(tmp: Path, n_rules: int, n_aliases: int) -> str:
    """The example company with every mailbox `{smtp: ...}`, n_aliases aliases (and a tenth
    as many people) from bench_addresses.sections, and n_rules rules of bench_rules' mix."""
    tmp.mkdir(parents=True, exist_ok=True)
    company = yaml.safe_load((REPO / "rules" / "company.yaml").read_text(encoding="utf-8"))
    book = sections(n_aliases, max(10, n_aliases // 10))
    company["mailboxes"].update(book["mailboxes"])
    company["mailboxes"] = {name: {"smtp": f"{name}@sink.test"} for name in company["mailboxes"]}
    company["people"] = {**company["people"], **book["people"]}
    company["aliases"] = {**company["aliases"], **book["aliases"]}
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    (tmp / "company.yaml").write_text(yaml.dump(company, Dumper=dumper, allow_unicode=True),
                                      encoding="utf-8")
    (tmp / "routing.yaml").write_text(mix_yaml(n_rules), encoding="utf-8")
    return str(tmp / "*.yaml")


def body_message(path: Path, size: int = 4096) -> Path:
    """A 4 KB UTF-8 letter (base64) with a Cyrillic subject, From name and body, matching no mix rule
    (no number after the phrases the rules look for, an X-Mailer of three words)."""
    msg = EmailMessage()
    msg["From"] = Address("Ирина Соколова", "i.sokolova", "client.test")
    msg["To"] = RCPT
    msg["Subject"] = "Счёт на оплату по договору поставки, вопрос по срокам"
    msg["Date"] = "Mon, 11 Jan 2027 07:00:00 +0000"
    msg["Message-ID"] = "<bench-files@client.test>"
    msg["X-Mailer"] = "Microsoft Outlook 16.0"
    msg["List-Id"] = "<clients.client.test>"
    para = ("Добрый день! Просим подтвердить получение счёта и сообщить ожидаемую дату "
            "оплаты. Условия поставки и оплаты остаются прежними, документы во вложении "
            "придут отдельным письмом.\n")
    n = 1
    while True:                          # base64 body, about `size` bytes on the wire
        msg.set_content(para * n, cte="base64")
        raw = msg.as_bytes(policy=SMTP.clone(linesep="\n"))   # -F adds the CRs
        if len(raw) >= size:
            break
        n += 1
    path.write_bytes(raw)
    return path


def proc_mem(pids: list[int]) -> dict[str, float]:
    """RSS, VmHWM and PSS in MB, summed over the processes."""
    rss = hwm = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return {"rss": rss / 1024, "hwm": hwm / 1024, "pss": pss / 1024}


def blast(port: int, conns: int, msgs: int, srv: Server, source: list[str]) -> dict:
    """bench_smtp.blast with the message given: `source` is smtp-source's message options."""
    probe = Probe(port, RCPT)
    srv.adopt()
    cpu0 = srv.cpu()
    probe.start()
    t0 = time.perf_counter()
    done = subprocess.run([SMTP_SOURCE, "-s", str(conns), "-m", str(msgs), *source,
                           "-f", "bench@source.test", "-t", RCPT, "-M", "source.test",
                           f"127.0.0.1:{port}"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    probe.stop.set()
    probe.join()
    cpu = srv.cpu() - cpu0
    return {"rate": msgs / wall, "cpu": cpu / (msgs + len(probe.lat)), "p50": pct(probe.lat, .5) * 1e3,
            "errors": probe.errors, "rc": done.returncode, "stderr": done.stderr.strip()[-300:],
            **proc_mem(descendants(srv.pid))}


def run(a: argparse.Namespace, tmp: Path, started: list[Server]) -> None:
    sink_port = free_port()
    start_sink(sink_port, started)
    variants = {"plain": ["-l", "4096"], "body": ["-F", str(body_message(tmp / "body.eml"))]}
    variants = {k: v for k, v in variants.items() if k in a.variants}
    servers: list[tuple[str, str, Server, int]] = []          # (workers, setup, server, port)
    # Written once: rewriting a running server's files would make its workers reload (each
    # then builds its own snapshot, unshared).
    routing = {setup: routing_files(tmp / "files" / setup, *SETUPS[setup]) for setup in a.setups}
    for w in a.workers:
        for setup in a.setups:
            name = f"{setup}/{w}"
            t0 = time.perf_counter()
            srv, port = start_mailrouter(tmp / slug(name), a.python, None, w, started,
                                         routing=routing[setup], smtp_downstream=sink_port,
                                         name=name)
            print(f"# started {name}: {SETUPS[setup][0]:,} rules, {SETUPS[setup][1]:,} aliases, "
                  f"{len(descendants(srv.pid))} processes, listening after {time.perf_counter() - t0:.1f} s; "
                  + " ".join(f"{k} {v:.0f} MB" for k, v in proc_mem(descendants(srv.pid)).items()),
                  flush=True)
            servers.append((w, setup, srv, port))
    if a.rewrite:             # the same bytes again: each server's file watch sees new mtimes
        time.sleep(1.1)
        routing = {setup: routing_files(tmp / "files" / setup, *SETUPS[setup]) for setup in a.setups}
        time.sleep(3)
        print("# rewrote every setup's routing files, byte for byte the same", flush=True)
    for w, setup, srv, port in servers:                       # unmeasured: caches, first compiles
        for source in variants.values():
            blast(port, a.conns, a.warmup, srv, source)
        print(f"# warmed {setup}/{w}: " + " ".join(f"{k} {v:.0f} MB" for k, v in
                                                   proc_mem(descendants(srv.pid)).items()), flush=True)
    print(f"# c={a.conns}, {a.messages} msgs per row, new session per message, rcpt {RCPT}; "
          f"{a.rounds} round(s), the order of the servers rotates each round; memory summed "
          f"over every process of the server")
    res: dict[tuple[str, str, str], list[dict]] = {}
    for rnd in range(a.rounds):
        k = rnd % len(servers)
        order = servers[k:] + servers[:k]
        for variant, source in variants.items():
            print(f"round {rnd + 1} {variant}\n  {'server':<12} {'msg/s':>7} {'cpu ms':>7} "
                  f"{'RSS MB':>7} {'HWM MB':>7} {'PSS MB':>7} {'p50 ms':>7}")
            for w, setup, srv, port in order:
                r = blast(port, a.conns, a.messages, srv, source)
                res.setdefault((variant, w, setup), []).append(r)
                print(f"  {setup + '/' + w:<12} {r['rate']:7.0f} {r['cpu'] * 1e3:7.3f} {r['rss']:7.1f} "
                      f"{r['hwm']:7.1f} {r['pss']:7.1f} {r['p50']:7.1f}"
                      + (f"  probe_errors={r['errors']}" if r["errors"] else "")
                      + (f"  smtp-source rc={r['rc']}: {r['stderr']}" if r["rc"] else ""), flush=True)
    summary(a, variants, res)


def summary(a: argparse.Namespace, variants: dict, res: dict[tuple[str, str, str], list[dict]]) -> None:
    print(f"\nsummary over {a.rounds} round(s): medians; x base = median of the per-round ratios "
          f"to base (10 rules, 1,000 aliases) of the same workers setting")
    print(f"  {'server':<12} {'msg/s':>7} {'cpu ms':>7} {'cpu x':>6} {'RSS MB':>7} {'RSS x':>6} "
          f"{'HWM MB':>7} {'HWM x':>6} {'PSS MB':>7} {'PSS x':>6}")
    for variant in variants:
        print(f" {variant}")
        for w in a.workers:
            base = res.get((variant, w, "base"))
            for setup in a.setups:
                rs = res[(variant, w, setup)]
                line = f"  {setup + '/' + w:<12} {median([r['rate'] for r in rs]):7.0f}"
                for key, scale, fmt in (("cpu", 1e3, "7.3f"), ("rss", 1, "7.1f"), ("hwm", 1, "7.1f"),
                                        ("pss", 1, "7.1f")):
                    ratio = (median([r[key] / b[key] for r, b in zip(rs, base)]) if base
                             else float("nan"))
                    line += f" {median([r[key] * scale for r in rs]):{fmt}} {ratio:6.2f}"
                print(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=2000, help="messages per row (2000)")
    ap.add_argument("-c", "--conns", type=int, default=10, help="connections (10)")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured messages per server first (200)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the summary gives medians (3)")
    ap.add_argument("--workers", nargs="+", default=["auto", "1"], help="'workers:' settings (auto 1)")
    ap.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS),
                    help="routing setups (base r1k r10k a100k); base is the ratios' reference")
    ap.add_argument("--variants", nargs="+", default=["plain", "body"], choices=["plain", "body"])
    ap.add_argument("--rewrite", action="store_true",
                    help="rewrite the routing files unchanged after the start (a no-op reload)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs mailrouter")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    a = ap.parse_args()
    with stopping("mrfiles.", a.keep) as (tmp, started):
        run(a, tmp, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

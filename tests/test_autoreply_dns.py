"""The sender-domain check (dnscheck.py) against a real DNS server on a loopback UDP port,
alone and in the daemon: no answer to a domain that takes no mail, and an answer that
waits, not vanishes, while DNS is silent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailrouter.config import AutoreplyConfig, Listener, load_config
from mailrouter.dnscheck import MAX_TTL, MIN_TTL, DomainCheck
from mailrouter.errors import ConfigErrors
from tests.support.daemon import RULES
from tests import test_outbox
from tests.test_outbox import mail, relay_to, rows, send, settled, until

relay = test_outbox.relay             # the relay-sink fixture

ZONE = {
    "mx.example": ["MX 10 mail.mx.example"],
    "a-only.example": ["A 192.0.2.1"],
    "aaaa-only.example": ["AAAA 2001:db8::1"],
    "txt-only.example": ["TXT \"v=spf1 -all\""],        # exists, takes no mail
    "null-mx.example": ["MX 0 .", "A 192.0.2.2"],       # RFC 7505: takes no mail
    "mail.mx.example": ["A 192.0.2.3"],
    "slow.example": ["MX 10 mail.mx.example"],         # when it is not silent
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("domain, found", [
    ("mx.example", "ok"),
    ("MX.Example.", "ok"),
    ("a-only.example", "ok"),
    ("aaaa-only.example", "ok"),
    ("[192.0.2.9]", "ok"),                 # an address literal: nothing to ask
    ("nothing.example", "none"),           # NXDOMAIN
    ("txt-only.example", "none"),          # neither MX nor A nor AAAA
    ("null-mx.example", "none"),           # MX 0 .
    ("bad..example", "none"),              # an empty label cannot exist in DNS
    ("broken.example", "unknown"),         # SERVFAIL
    ("slow.example", "unknown"),           # no answer: timeout
])
async def test_domain_check(dns_server: Any, domain: str, found: str) -> None:
    """Each kind of DNS answer gives its verdict: ok, none (no mail taken), unknown."""
    server = await dns_server(ZONE, silent={"slow.example"}, servfail={"broken.example"})
    check = DomainCheck(Listener("127.0.0.1", server.port), timeout=0.3)
    assert await check(domain) == found


async def test_cache_keeps_answers_for_their_ttl(dns_server: Any) -> None:
    """Positive and negative answers are cached for their TTL (bounded); 'unknown' is not."""
    server = await dns_server(ZONE, silent={"slow.example"}, ttl=10 * int(MAX_TTL))
    clock = Clock()
    check = DomainCheck(Listener("127.0.0.1", server.port), timeout=0.3, clock=clock)
    for domain, found in (("mx.example", "ok"), ("nothing.example", "none"),
                          ("txt-only.example", "none")):
        assert await check(domain) == found
        asked = len(server.asked)
        assert await check(domain) == found
        assert len(server.asked) == asked, f"{domain}: the cache was not used"
    assert await check("slow.example") == "unknown"
    asked = len(server.asked)
    assert await check("slow.example") == "unknown"
    assert len(server.asked) > asked, "an 'unknown' must be asked again"
    clock.now += MAX_TTL + 1            # the TTL of 10 hours was bounded to MAX_TTL
    asked = len(server.asked)
    assert await check("mx.example") == "ok"
    assert len(server.asked) == asked + 1


async def test_zero_ttl_is_cached_for_the_minimum(dns_server: Any) -> None:
    """A TTL of 0 does not send a query for every answer: MIN_TTL at least."""
    server = await dns_server(ZONE, ttl=0)
    clock = Clock()
    check = DomainCheck(Listener("127.0.0.1", server.port), timeout=0.3, clock=clock)
    await check("mx.example")
    clock.now += MIN_TTL - 1
    asked = len(server.asked)
    await check("mx.example")
    assert len(server.asked) == asked
    clock.now += 2
    await check("mx.example")
    assert len(server.asked) == asked + 1


async def test_daemon_answers_only_domains_that_take_mail(make_app: Any, relay: Any,
                                                          dns_server: Any) -> None:
    """Through the daemon and a relay sink: MX -> sent, A only -> sent, NXDOMAIN ->
    suppressed with the reason recorded, DNS silent -> waits, then sent once DNS answers."""
    server = await dns_server(ZONE, silent={"slow.example"})
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port), autoreply=AutoreplyConfig(
        dns_resolver=Listener("127.0.0.1", server.port), dns_timeout=0.3))
    for sender in ("ann@mx.example", "bob@a-only.example", "eve@nothing.example",
                   "sam@slow.example"):
        await send(app, sender, ["old-sales@example.com"], mail(msgid=sender))

    async def waiting() -> bool:
        by = {r["rcpt"]: r for r in await rows(app)}
        slow = by.get("sam@slow.example")
        return (len(by) == 4 and slow is not None and slow["attempts"] >= 2
                and all(r["state"] != "queued" for k, r in by.items() if k != "sam@slow.example"))
    await until(waiting, "three settled rows and a waiting one")
    by = {r["rcpt"]: r for r in await rows(app)}
    assert by["sam@slow.example"]["state"] == "queued"
    assert "DNS did not answer for slow.example" in by["sam@slow.example"]["last_error"]
    assert by["eve@nothing.example"]["state"] == "suppressed"
    assert "nothing.example takes no mail" in by["eve@nothing.example"]["last_error"]
    assert sorted(e.rcpt_tos[0] for e in sink.envelopes) == ["ann@mx.example", "bob@a-only.example"]

    server.silent.discard("slow.example")
    await until(lambda: settled(app), "the waiting answer to go")
    assert sorted(e.rcpt_tos[0] for e in sink.envelopes) == [
        "ann@mx.example", "bob@a-only.example", "sam@slow.example"]
    assert (await rows(app))[0]["state"] == "sent"


async def test_check_off_answers_without_asking(make_app: Any, relay: Any,
                                                dns_server: Any) -> None:
    """autoreply.dns.check: false sends the answer and asks DNS nothing."""
    server = await dns_server(ZONE)
    sink = await relay()
    app = await make_app(outbox=relay_to(sink.port), autoreply=AutoreplyConfig(
        dns_check=False, dns_resolver=Listener("127.0.0.1", server.port)))
    await send(app, "eve@nothing.example", ["old-sales@example.com"], mail())
    await until(lambda: settled(app), "the outbox to settle")
    assert [e.rcpt_tos for e in sink.envelopes] == [["eve@nothing.example"]]
    assert server.asked == []


@pytest.mark.parametrize("dns, message", [
    ("{resolver: 'ns.example'}", "'resolver' must be HOST:PORT, not 'ns.example'"),
    ("{timeout: 0}", "timeout"),
    ("{tiemout: 5}", "unknown key 'tiemout' in 'autoreply.dns'"),
    ("[127.0.0.1]", "'autoreply.dns' must be a mapping"),
])
def test_bad_dns_config(tmp_path: Path, dns: str, message: str) -> None:
    """A bad autoreply.dns is refused with its line, not started with a check that cannot work."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{RULES}/*.yaml']\nautoreply:\n  dns: {dns}\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(cfg)
    [error] = info.value.errors
    assert message in str(error) and f"{cfg}:3" in str(error)


def test_dns_config_parsed(tmp_path: Path) -> None:
    """resolver and timeout reach the config the daemon wires into the outbox."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{RULES}/*.yaml']\n"
                   "autoreply: {dns: {resolver: '[::1]:5353', timeout: 2}}\n", encoding="utf-8")
    ar = load_config(cfg).autoreply
    assert (ar.dns_check, ar.dns_resolver, ar.dns_timeout) == (True, Listener("::1", 5353), 2.0)

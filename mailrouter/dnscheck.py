"""Does the sender's domain take mail at all? The outbox asks before it sends an autoreply.

An autoreply goes to the envelope sender, and a forged sender on a domain that does not
exist turns every answer into backscatter sitting in our MTA's queue for days. So before
sending, `DomainCheck(domain)` asks DNS (dnspython's async resolver, against
`autoreply.dns.resolver` or, when unset, the system's /etc/resolv.conf) and says:

- 'ok'      the domain has MX records (RFC 5321 5.1), or no MX but A or AAAA (the
            implicit MX), or it is an address literal (`[192.0.2.1]`, nothing to ask);
- 'none'    NXDOMAIN; or neither MX nor A nor AAAA (NoAnswer for all three); or a null
            MX (RFC 7505: `MX 0 .`, "this domain takes no mail"); or a name that cannot
            exist in DNS (bad IDNA, an empty or over-long label). The outbox suppresses
            the answer and records why;
- 'unknown' DNS did not answer: a timeout, SERVFAIL or REFUSED from every resolver
            (NoNameservers), a network error, no resolver configured. The outbox keeps
            the answer and tries again later, as for a relay outage: never dropped for
            a fault that is not the sender's.

Each query waits `autoreply.dns.timeout` seconds at most (so one check takes up to three
times that: MX, then A, then AAAA). Answers are cached per domain, positive and negative
alike, for their DNS TTL bounded to [MIN_TTL, MAX_TTL] (negative: the SOA's negative TTL,
RFC 2308, bounded to [MIN_TTL, MAX_NEGATIVE_TTL]); 'unknown' is never cached. At most
CACHE_SIZE domains are kept, the oldest dropped first.

Known limits: one resolver address (HOST:PORT) or the system's list; no DNSSEC
validation (a forged NXDOMAIN can only suppress an answer, never send one).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from .config import Listener

__all__ = ["CACHE_SIZE", "DomainCheck", "Found", "MAX_NEGATIVE_TTL", "MAX_TTL", "MIN_TTL"]

log = logging.getLogger("mailrouter.dnscheck")

Found = Literal["ok", "none", "unknown"]
MIN_TTL = 60.0                 # seconds; a TTL of 0 would ask DNS for every answer
MAX_TTL = 3600.0               # a domain that gains or loses its MX is seen within an hour
MAX_NEGATIVE_TTL = 900.0       # a domain registered a moment ago is answered within 15 min
DEFAULT_NEGATIVE_TTL = 300.0   # a negative answer without an SOA to say how long
CACHE_SIZE = 10_000


class DomainCheck:
    """`await check("example.com")` -> 'ok' | 'none' | 'unknown' (module docstring)."""

    def __init__(self, resolver: Listener | None, timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server, self.timeout, self.clock = resolver, timeout, clock
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._cache: OrderedDict[str, tuple[Found, float]] = OrderedDict()
        self.queries = 0                 # DNS questions asked (the cache saves the rest)

    async def __call__(self, domain: str) -> Found:
        key = domain.strip().rstrip(".").lower()
        if key.startswith("[") and key.endswith("]"):
            return "ok"                  # an address literal: no name to look up
        hit = self._cache.get(key)
        if hit is not None and hit[1] > self.clock():
            self._cache.move_to_end(key)
            return hit[0]
        found, ttl = await self._lookup(key)
        if found != "unknown":
            self._cache[key] = (found, self.clock() + ttl)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return found

    def resolver(self) -> dns.asyncresolver.Resolver:
        """The configured server, or the system's; raises NoResolverConfiguration."""
        if self._resolver is None:
            if self.server is None:
                r = dns.asyncresolver.Resolver()
            else:
                r = dns.asyncresolver.Resolver(configure=False)
                r.nameservers = [self.server.host]
                r.port = self.server.port
            r.timeout = r.lifetime = self.timeout
            self._resolver = r
        return self._resolver

    async def _lookup(self, domain: str) -> tuple[Found, float]:
        """The verdict for one domain and how long it may be cached."""
        try:
            name = dns.name.from_text(domain)
        except (dns.exception.DNSException, UnicodeError) as exc:
            log.info("event=dns_check domain=%r found=none why=%r", domain, str(exc))
            return "none", MAX_NEGATIVE_TTL          # cannot exist in DNS
        if not domain or len(name.labels) < 2:
            return "none", MAX_NEGATIVE_TTL
        ttls: list[float] = []
        for rdtype in (dns.rdatatype.MX, dns.rdatatype.A, dns.rdatatype.AAAA):
            state, ttl, answer = await self._ask(name, rdtype)
            if state == "unknown":
                return "unknown", 0.0
            ttls.append(ttl)
            if state == "nxdomain":
                return "none", min(ttls)
            if answer is None:
                continue
            if rdtype == dns.rdatatype.MX and all(
                    rd.exchange == dns.name.root for rd in answer):   # RFC 7505 null MX
                return "none", _bounded(ttl, MAX_NEGATIVE_TTL)
            return "ok", ttl
        return "none", min(ttls)

    async def _ask(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
                   ) -> tuple[str, float, dns.resolver.Answer | None]:
        """('found' | 'nodata' | 'nxdomain' | 'unknown', cache seconds, the answer)."""
        self.queries += 1
        try:
            answer = await self.resolver().resolve(name, rdtype, raise_on_no_answer=False,
                                                   lifetime=self.timeout)
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.responses()  # type: ignore[no-untyped-call]
            return "nxdomain", _negative_ttl(responses.get(name)), None
        except (dns.exception.DNSException, OSError) as exc:
            # Timeout, NoNameservers (SERVFAIL, REFUSED), NoResolverConfiguration, a
            # network error: not the sender's fault, so the answer waits.
            log.warning("event=dns_check_failed domain=%s type=%s error=%r", name,
                        dns.rdatatype.to_text(rdtype), f"{type(exc).__name__}: {exc}")
            return "unknown", 0.0, None
        if answer.rrset is None:
            return "nodata", _negative_ttl(answer.response), None
        return "found", _bounded(answer.rrset.ttl, MAX_TTL), answer


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308 5: the SOA's TTL and MINIMUM field, the smaller, bounded."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return _bounded(min(rrset.ttl, rrset[0].minimum), MAX_NEGATIVE_TTL)
    return DEFAULT_NEGATIVE_TTL


def _bounded(ttl: float, upper: float) -> float:
    return max(MIN_TTL, min(float(ttl), upper))

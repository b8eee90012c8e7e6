"""Sign-in throttling: failed attempts per person and per client address lock them a while.

A failed sign-in counts against the person signing in (by key or by address alike: both
lock the person), or against the name typed (case-folded) when it is nobody's, so the lock
comes alike whether or not such a person exists; and against the client's IP address
(behind a reverse proxy on this host, the last X-Forwarded-For entry: app.client_address;
an IPv6 address counts as its /64, which one host may fill with addresses of its own).
After `per_person` failures of one name, or `per_ip` failures from one address, within
`window` seconds, that name or address is locked for `lock` seconds from the last failure:
sign-in answers 429 with Retry-After without even checking the password, so guessing
costs an attacker `lock` seconds per few tries. A successful sign-in forgets the name's
failures (not the address's: one right password must not unlock a guesser's address).
Sign-in counts each try as a failure before it checks the password and takes it back when
the password was right or could not be checked (registry unavailable), so tries sent at
once cannot all pass `wait` before the first is counted.

Known limits: the counts live in the serving process's memory (the web view runs in one
process: worker 0), so a restart forgets them and two instances count separately; at
most `max_keys` names and addresses are kept, the oldest dropped first.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Throttle"]


def _network(ip: str) -> str:
    """What failures from `ip` count against: the address, or for IPv6 its /64. One host
    is given a whole /64 (SLAAC, privacy addresses): per address, it had 2**64 fresh
    addresses of 20 tries each."""
    try:
        addr = ipaddress.ip_address(ip.strip("[]").split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


@dataclass
class Throttle:
    per_person: int = 5
    per_ip: int = 20
    window: float = 15 * 60.0
    lock: float = 15 * 60.0
    max_keys: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _fails: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)

    def _keys(self, person: str, ip: str) -> tuple[tuple[str, int], tuple[str, int]]:
        return (("p:" + person.strip().casefold(), self.per_person), ("ip:" + _network(ip), self.per_ip))

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._fails.get(key, ()) if now - t < max(self.window, self.lock)]
        if times:
            self._fails[key] = times
        else:
            self._fails.pop(key, None)
        return times

    def wait(self, person: str, ip: str) -> float:
        """Seconds until `person` from `ip` may try again; 0 when they may now."""
        now = self.clock()
        longest = 0.0
        for key, limit in self._keys(person, ip):
            times = self._recent(key, now)
            if len(times) >= limit and times[-1] - times[-limit] < self.window:
                longest = max(longest, times[-1] + self.lock - now)
        return max(0.0, longest)

    def failed(self, person: str, ip: str) -> float:
        """Count a failure now; the time it was counted at, for `succeeded`."""
        now = self.clock()
        for key, _ in self._keys(person, ip):
            self._fails.setdefault(key, []).append(now)
            self._fails.move_to_end(key)
            del self._fails[key][:-max(self.per_person, self.per_ip)]
        while len(self._fails) > self.max_keys:
            self._fails.popitem(last=False)
        return now

    def succeeded(self, person: str, ip: str = "", at: float | None = None) -> None:
        """Forget the name's failures, and take back the address's failure counted `at`
        (sign-in counts each try as failed before it checks the password)."""
        keys = self._keys(person, ip)
        self._fails.pop(keys[0][0], None)
        if at is not None:
            self._take_back(keys[1][0], at)

    def unknown(self, person: str, ip: str, at: float) -> None:
        """Take back the failure counted `at`: the try could not be checked (the registry
        was unavailable), which says nothing about the password."""
        for key, _ in self._keys(person, ip):
            self._take_back(key, at)

    def _take_back(self, key: str, at: float) -> None:
        times = self._fails.get(key)
        if times is not None and at in times:
            times.remove(at)

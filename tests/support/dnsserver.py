"""pytest fixture `dns_server`: a tiny authoritative DNS server on a loopback UDP port.

    async def test_x(dns_server):
        server = await dns_server({"mx.example": ["MX 10 mail.mx.example"],
                                   "a-only.example": ["A 192.0.2.1"]},
                                  silent={"slow.example"})
        server.port, server.asked, server.silent.discard("slow.example")

A name in `records` answers its records (a type it lacks: NOERROR with no answer, an SOA
in the authority section as RFC 2308 says); a name it does not know: NXDOMAIN with the
SOA; a name in `silent`: no answer at all (the client times out); a name in `servfail`:
SERVFAIL. `asked` lists (name, type) of every question received. Real dnspython
messages on a real socket: only the outside DNS is replaced, as the style guide allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

SOA = "ns.test. hostmaster.test. 1 3600 600 86400 300"


@dataclass
class DNSServer(asyncio.DatagramProtocol):
    records: dict[str, list[str]]
    silent: set[str] = field(default_factory=set)
    servfail: set[str] = field(default_factory=set)
    ttl: int = 300
    asked: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        q = query.question[0]
        name, rdtype = q.name.to_text().rstrip(".").lower(), dns.rdatatype.to_text(q.rdtype)
        self.asked.append((name, rdtype))
        if name in self.silent:
            return
        response = dns.message.make_response(query)
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(dns.rrset.from_text(q.name, self.ttl, "IN", "SOA", SOA))
        else:
            rdatas = [r.split(None, 1)[1] for r in self.records[name]
                      if r.split(None, 1)[0] == rdtype]
            if rdatas:
                response.answer.append(dns.rrset.from_text_list(
                    q.name, self.ttl, "IN", rdtype, rdatas, origin=dns.name.root, relativize=False))
            else:
                response.authority.append(dns.rrset.from_text(q.name, self.ttl, "IN", "SOA", SOA))
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[Callable[..., Awaitable[DNSServer]]]:
    started: list[DNSServer] = []

    async def start(records: dict[str, list[str]], **kw: Any) -> DNSServer:
        server = DNSServer(records, **kw)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: server, local_addr=("127.0.0.1", 0))
        server.port = transport.get_extra_info("sockname")[1]
        started.append(server)
        return server

    yield start
    for server in started:
        if server.transport is not None:
            server.transport.close()

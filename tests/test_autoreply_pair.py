"""Two mailrouter instances whose moved addresses write to each other, each one's outbox
relaying into the other's SMTP listener: each answers the outside message once, and the
answers are not answered (RFC 3834: `<>`, our trace header, Auto-Submitted), so nothing
loops. Real daemons on loopback, real SMTP between them, two SQLite registries."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest

from mailrouter.config import AutoreplyConfig, Listener, RegistryConfig
from mailrouter.daemon import App
from tests.support.daemon import RULES, free_port
from tests.test_outbox import mail, relay_to, rows, send, settled, until

A_MOVED, B_MOVED = "old-sales@example.com", "old-support@other.example"


def other_company(tmp_path: Path) -> str:
    """The example company's routing files with its domain renamed to other.example."""
    dest = tmp_path / "b-rules"
    shutil.copytree(RULES, dest)
    for f in dest.glob("*.yaml"):
        f.write_text(f.read_text(encoding="utf-8").replace("example.com", "other.example"),
                     encoding="utf-8")
    return str(dest / "*.yaml")


async def decisions(app: App) -> list[tuple[str, str, list[str]]]:
    """(envelope sender, recipient, autoreply reasons) of every message the app recorded."""
    assert app.registry is not None
    out = []
    for m in await app.registry.recent(50):
        for d in m["decisions"]:
            out.append((m["mail_from"], d["rcpt"],
                        [r for r in d["reasons"] if r.startswith("autoreply")]))
    return out


@pytest.mark.parametrize("envelope", ["<>", "postmaster"])
async def test_two_instances_answer_each_other_once(make_app: Any, tmp_path: Path,
                                                    envelope: str) -> None:
    """A's moved address writes to B's and B's to A's: one answer each, none to an answer."""
    pa, pb = free_port(), free_port()
    common: dict[str, Any] = {"smtp": None}

    def answers(domain: str) -> AutoreplyConfig:
        return AutoreplyConfig(envelope_from="<>" if envelope == "<>" else f"{envelope}@{domain}",
                               dns_check=False)
    a = await make_app(**common | {"smtp": Listener("127.0.0.1", pa), "outbox": relay_to(pb),
                                   "autoreply": answers("example.com")})
    b = await make_app(**common | {
        "smtp": Listener("127.0.0.1", pb), "outbox": relay_to(pa), "hostname": "mx-b.test",
        "autoreply": answers("other.example"), "routing": (other_company(tmp_path),),
        "registry": RegistryConfig(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"),
        "delivery": dataclasses.replace(a.config.delivery, maildir_root=tmp_path / "b-mail")})

    await asyncio.gather(
        send(a, B_MOVED, [A_MOVED], mail("Hello A", "x1", sender=B_MOVED, to=A_MOVED)),
        send(b, A_MOVED, [B_MOVED], mail("Hello B", "x2", sender=A_MOVED, to=B_MOVED)))

    async def quiet() -> bool:          # both answers sent and each received by the other
        return (await settled(a) and await settled(b) and len(await rows(a)) == 1
                and len(await rows(b)) == 1 and len(await decisions(a)) == 2
                and len(await decisions(b)) == 2)
    await until(quiet, "both answers to cross")
    await asyncio.sleep(1.0)            # an answer to an answer would be queued by now
    for app, moved, peer in ((a, A_MOVED, B_MOVED), (b, B_MOVED, A_MOVED)):
        [row] = await rows(app)
        assert (row["kind"], row["state"], row["rcpt"]) == ("autoreply", "sent", peer)
        seen = await decisions(app)
        assert len(seen) == 2, seen
        answered = [reasons for _, rcpt, reasons in seen if reasons == ["autoreply moved: queued"]]
        assert len(answered) == 1, seen
        [(sender, rcpt, reasons)] = [s for s in seen if s[2] != ["autoreply moved: queued"]]
        peer_domain = peer.rpartition("@")[2]
        assert rcpt == moved and sender == ("<>" if envelope == "<>" else f"{envelope}@{peer_domain}")
        assert len(reasons) == 1 and "autoreply moved: not sent:" in reasons[0]
        if envelope == "<>":
            assert "null reverse-path" in reasons[0]
        else:
            assert "mail we generated" in reasons[0]

"""The admin endpoint against a real daemon on loopback, with real HTTP requests (raw
sockets, so the Host and Origin headers are exactly what a browser or an attacker sends):
bearer token, Host and Origin checks, what a failed reload's reply reveals (issue 10)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.daemon import free_port, write_config
from tests.test_reload import BROKEN, routing_dir

TOKEN = "3f1c9a7e5b2d4c6e8a0b1d3f5e7c9a2b"


def http(port: int, method: str, path: str, headers: dict[str, str] | None = None,
         host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request; (status, headers with lower-case names, body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}",
             "Content-Length: 0", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *fields = head.decode("latin-1").split("\r\n")
    return (int(status.split()[1]),
            {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}, body)


def admin_port(proc) -> int:
    """The daemon's admin port once it accepts (worker 0 may start it after SMTP)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", proc.admin), timeout=1).close()
            return int(proc.admin)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_host_and_origin(daemon_process, tmp_path):
    """With admin.token_file: no token 401, wrong token 401, a wrong Host 421 even with the
    token, a foreign Origin 403, the right token 200; /metrics needs it too, /healthz not;
    `mailrouter reload` sends it."""
    (tmp_path / "admin.token").write_text(TOKEN + "\n", encoding="utf-8")
    d = routing_dir(tmp_path)
    proc = daemon_process(routing=str(d / "*.yaml"),
                          extra="workers: 1\nadmin: {token_file: admin.token}\n")
    port = admin_port(proc)

    status, headers, _ = http(port, "POST", "/-/reload")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert http(port, "POST", "/-/reload", bearer("wrong" * 8))[0] == 401
    assert http(port, "POST", "/-/reload", {"Authorization": TOKEN})[0] == 401   # no scheme
    assert http(port, "POST", "/-/reload", bearer(), host=f"rebound.example:{port}")[0] == 421
    assert http(port, "POST", "/-/reload", bearer(), host=f"127.0.0.1:{port + 1}")[0] == 421
    assert http(port, "POST", "/-/reload", {**bearer(), "Origin": "http://evil.example"})[0] == 403
    assert http(port, "POST", "/-/reload", {**bearer(), "Origin": "null"})[0] == 403

    status, _, body = http(port, "POST", "/-/reload", bearer())
    assert status == 200 and json.loads(body)["ok"] is True
    status, _, body = http(port, "POST", "/-/reload",
                           {**bearer(), "Origin": f"http://localhost:{port}"}, host=f"localhost:{port}")
    assert status == 200 and json.loads(body)["ok"] is True

    assert http(port, "GET", "/metrics")[0] == 401
    status, _, body = http(port, "GET", "/metrics", bearer())
    assert status == 200 and b'mailrouter_config_reloads_total{result="ok"}' in body
    status, _, body = http(port, "GET", "/healthz")
    assert (status, body) == (200, b"ok\n")

    out = subprocess.run([sys.executable, "-m", "mailrouter.cli", "reload", "-c", str(proc.config)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.startswith("reloaded: "), out.stderr


def test_without_token_host_and_origin_still_checked(daemon_process, tmp_path):
    """On loopback without a token, a page in a browser cannot reload: its rebound name in
    Host gets 421, its Origin 403. A failed reload names the error and its file:line, and
    no path of this machine outside the routing directory."""
    d = routing_dir(tmp_path)
    proc = daemon_process(routing=str(d / "*.yaml"))
    port = admin_port(proc)
    assert http(port, "POST", "/-/reload", host=f"attacker.example:{port}")[0] == 421
    assert http(port, "GET", "/metrics", host=f"attacker.example:{port}")[0] == 421
    assert http(port, "POST", "/-/reload", {"Origin": "http://attacker.example"})[0] == 403
    assert http(port, "GET", "/metrics")[0] == 200

    (d / "ping.yaml").write_text(BROKEN, encoding="utf-8")
    status, _, body = http(port, "POST", "/-/reload")
    reply = json.loads(body)
    assert status == 400 and reply["ok"] is False
    assert reply["detail"].startswith(
        "ping.yaml:3:12: rule 'ping': unknown condition 'subjet'; did you mean 'subject'?")
    assert str(tmp_path) not in reply["detail"] and ".py" not in reply["detail"]


def test_check_wants_a_token_off_loopback(tmp_path):
    """An admin listener anyone can reach needs a token: `check` says so with file:line;
    a token too short or a token file missing are errors too."""
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port())
    text = cfg.read_text(encoding="utf-8").replace("admin: '127.0.0.1:", "admin: '0.0.0.0:")
    cfg.write_text(text, encoding="utf-8")

    def check(extra: str = "") -> subprocess.CompletedProcess[str]:
        cfg.write_text(text + extra, encoding="utf-8")
        return subprocess.run([sys.executable, "-m", "mailrouter.cli", "check", "-c", str(cfg)],
                              capture_output=True, text=True, timeout=60, check=False)

    out = check()
    assert out.returncode == 1
    assert f"{cfg}:2:" in out.stderr and "the admin listener 0.0.0.0:" in out.stderr
    assert "is not on loopback" in out.stderr and "token_file" in out.stderr
    out = check("admin: {token: short}\n")
    assert out.returncode == 1 and f"{cfg}:7:16: the admin token must be at least 16" in out.stderr
    out = check("admin: {token_file: nowhere.token}\n")
    assert out.returncode == 1 and f"{cfg}:7:21: cannot read 'admin.token_file'" in out.stderr
    Path(tmp_path / "ok.token").write_text(TOKEN, encoding="utf-8")
    out = check("admin: {token_file: ok.token}\n")
    assert out.returncode == 0, out.stderr

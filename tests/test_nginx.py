"""deploy/nginx/mailrouter-web.conf in front of the web view, with a real nginx.

The shipped server block is used as it is, with only this machine's paths and ports put in
(certificate, htpasswd, the secret's include, the web view's port): nginx signs people in
with HTTP basic auth and names them in X-Remote-User; what a client sends in that header is
replaced; the forms work through it (their Origin check sees nginx's Host and port) and the
session cookie is marked Secure (X-Forwarded-Proto).
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mailrouter.config import Listener, WebConfig
from tests.support.daemon import REPO
from tests.support.ports import free_port, wait_port

pytestmark = pytest.mark.e2e

SHIPPED = REPO / "deploy" / "nginx" / "mailrouter-web.conf"
SECRET = "0b9e4c1d7a2f5e8c3b6a9d0e"
NAME = "mail-control.example.com"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def placed(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert old in text, f"{SHIPPED.name} no longer has {old!r}"
        text = text.replace(old, new)
    return text


def start_nginx(tmp: Path, port: int, web_port: int) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx not installed (apt-get install nginx)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={NAME}", "-keyout", str(tmp / "key.pem"),
                    "-out", str(tmp / "cert.pem")], check=True, capture_output=True)
    hashed = subprocess.run(["openssl", "passwd", "-apr1", "s3cret-pass"], check=True,
                            capture_output=True, text=True).stdout.strip()
    (tmp / "htpasswd").write_text(f"petrova:{hashed}\n")
    (tmp / "secret.conf").write_text(f'proxy_set_header X-Mailrouter-Proxy-Secret "{SECRET}";\n')
    server = placed(SHIPPED.read_text(encoding="utf-8"),
                    ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                    ("/etc/ssl/certs/mail-control.pem", str(tmp / "cert.pem")),
                    ("/etc/ssl/private/mail-control.key", str(tmp / "key.pem")),
                    ("/etc/nginx/mailrouter.htpasswd", str(tmp / "htpasswd")),
                    ("include /etc/nginx/mailrouter-secret.conf;", f"include {tmp / 'secret.conf'};"),
                    ("http://127.0.0.1:9126;", f"http://127.0.0.1:{web_port};"))
    (tmp / "server.conf").write_text(server, encoding="utf-8")
    temp = "".join(f"    {k}_temp_path {tmp / k};\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp / "nginx.conf").write_text(
        f"user root root;\ndaemon off;\nworker_processes 1;\npid {tmp / 'nginx.pid'};\n"
        f"error_log {tmp / 'error.log'} info;\nevents {{}}\nhttp {{\n"
        f"    access_log {tmp / 'access.log'};\n{temp}    include {tmp / 'server.conf'};\n}}\n")
    proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port)
    except Exception:
        proc.kill()
        raise AssertionError(proc.communicate()[1].decode(errors="replace")) from None
    return proc


async def test_the_shipped_nginx_block_signs_people_in_for_the_web_view(make_app: Any,
                                                                     tmp_path: Path) -> None:
    port = free_port()
    host = f"{NAME}:{port}"
    app = await make_app(web=Listener("127.0.0.1", 0),
                         webui=WebConfig(trusted_header="X-Remote-User", proxy_secret=SECRET,
                                         hosts=(host,), admins=("petrova",)))
    proc = await asyncio.to_thread(start_nginx, tmp_path, port, app.bound["web"][1])
    tls = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    tls.check_hostname = False            # the name is not in DNS: we connect to 127.0.0.1
    base = f"https://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async def get(path: str, auth: dict[str, str], **hdrs: str) -> tuple[int, str, Any]:
                async with http.get(base + path, ssl=tls, allow_redirects=False,
                                    headers={"Host": host} | auth | hdrs) as r:
                    return r.status, await r.text(), r.headers

            # no password, a wrong one: nginx refuses; mailrouter gives no session
            assert (await get("/search", {}))[0] == 401
            assert (await get("/search", basic("petrova", "wrong")))[0] == 401
            assert len(http.cookie_jar) == 0
            # signed in by nginx; the X-Remote-User the client sends is replaced
            me = basic("petrova", "s3cret-pass")
            status, page, hdrs = await get("/search", me, **{"X-Remote-User": "ivanov"})
            assert status == 200 and "Signed in as Анна Петрова" in page, page[:1500]
            cookie = hdrs.get("Set-Cookie", "")
            assert "Secure" in cookie and "HttpOnly" in cookie, cookie
            # a form through nginx: the Origin the browser sends is nginx's scheme, host, port
            token = re.search(r'name="csrf" value="([^"]+)"', page)
            assert token is not None
            async with http.post(base + "/logout", data={"csrf": token.group(1)}, ssl=tls,
                                 allow_redirects=False,
                                 headers={"Host": host, "Origin": f"https://{host}"} | me) as r:
                assert r.status == 303, await r.text()
            # another site's page posting through the same nginx is refused
            status, page, _ = await get("/search", me)
            token = re.search(r'name="csrf" value="([^"]+)"', page)
            assert token is not None
            async with http.post(base + "/logout", data={"csrf": token.group(1)}, ssl=tls,
                                 allow_redirects=False,
                                 headers={"Host": host, "Origin": "https://evil.example"} | me) as r:
                assert r.status == 403
        log = (tmp_path / "access.log").read_text()
        assert log.count(" 401 ") == 2 and " 303 " in log
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)

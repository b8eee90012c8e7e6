"""`free_port()`: a TCP port free on 127.0.0.1, for a server a test starts.

Found by binding port 0 and closing the socket, so another process may take it before the
server binds it (the usual small race, accepted). What is not accepted: the kernel may hand
the same port out again at once, and a daemon given it for two listeners refused to start
("listen.lmtp ... is the port of listen.smtp"). A port is never handed out twice in one
test process.
"""

from __future__ import annotations

import socket

__all__ = ["free_port"]

_given: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _given:
            _given.add(port)
            return port

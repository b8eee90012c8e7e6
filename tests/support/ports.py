"""`free_port()`: a TCP port free on 127.0.0.1, for a server a test starts;
`wait_port(port)`: until something listens there; `silent_listener()`: a downstream that
hangs.

Found by binding port 0 and closing the socket, so another process may take it before the
server binds it (the usual small race, accepted). What is not accepted: the kernel may hand
the same port out again at once, and a daemon given it for two listeners refused to start
("listen.lmtp ... is the port of listen.smtp"). A port is never handed out twice in one
test process.
"""

from __future__ import annotations

import socket
import time

__all__ = ["free_port", "wait_port", "silent_listener"]

_given: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _given:
            _given.add(port)
            return port


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Until something accepts on 127.0.0.1:`port` (a daemon's listener that may open after
    the one the test waited for); AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def silent_listener() -> socket.socket:
    """A socket listening on a free 127.0.0.1 port that accepts connections (the kernel's
    backlog) and never answers: a downstream that hangs before its greeting. The caller
    closes it."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    return silent

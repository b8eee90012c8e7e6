"""Run a function as the user nobody (uid and gid 65534), in a forked child.

Tests of what a user other than the file's owner meets (a config or a registry made by
root) need the real permission checks of the kernel, which root bypasses: the child drops
to nobody's effective ids, runs the function and sends its result back as JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

NOBODY = 65534


def as_nobody(fn: Callable[[], Any], died: Any) -> Any:
    """`fn()` run in a forked child as nobody: its result (JSON-able), or `died` when the
    child wrote nothing (it crashed before)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setegid(NOBODY)
            os.seteuid(NOBODY)
            os.write(write, json.dumps(fn()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as got:
        text = got.read()
    os.waitpid(pid, 0)
    return json.loads(text) if text else died

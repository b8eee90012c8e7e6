"""Helpers for the outside servers the tests start (Dovecot, Postfix)."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM a still-running server, wait up to `timeout`, then SIGKILL it."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

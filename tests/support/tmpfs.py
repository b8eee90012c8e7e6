"""A tmpfs of a given size mounted on a test's directory: a disk that fills up for real."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def tmpfs_on(mnt: Path, size: str) -> Iterator[Path]:
    """`mnt` (made if missing) as a tmpfs of `size` ("256k", "1m"), lazily unmounted after;
    the test is skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mnt.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)

"""aiosmtpd's per-connection and per-command bookkeeping, done once per class.

aiosmtpd's SMTP.__init__ walks the protocol and the handler with `inspect` and `dir()` for
every connection, and its `_handle_client` builds log lines for every command before the
logger looks at its level. None of the answers change while the daemon runs: importing this
module (protocol.py does) replaces the three module globals aiosmtpd calls with versions
that compute them once. tests/test_aiosmtpd_contract.py checks they stay in place and give
aiosmtpd what it asked for.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import aiosmtpd.smtp as _aiosmtpd_smtp

__all__: list[str] = []


class _CachedInspect:
    """aiosmtpd's SMTP.__init__ runs `inspect.getmembers` on the protocol and the handler
    and `inspect.signature` on the EHLO hook for every connection (about 0.2 ms, a third
    of a short session's setup). The answers depend only on the classes, so look the
    names up once per class and bind them per object: the same (name, member) pairs,
    for the `auth_*` names aiosmtpd filters for."""

    def __init__(self) -> None:
        self._names: dict[type, list[str]] = {}
        self._sigs: dict[Any, inspect.Signature] = {}

    def getmembers(self, obj: Any) -> list[tuple[str, Any]]:
        names = self._names.get(type(obj))
        if names is None:
            names = self._names[type(obj)] = [n for n in dir(obj) if n.startswith("auth_")]
        return [(n, getattr(obj, n)) for n in names]

    def signature(self, fn: Any) -> inspect.Signature:
        key = getattr(fn, "__func__", None)
        if key is None:
            return inspect.signature(fn)
        sig = self._sigs.get(key)
        if sig is None:
            sig = self._sigs[key] = inspect.signature(fn)
        return sig

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)


_aiosmtpd_smtp.inspect = _CachedInspect()  # type: ignore[assignment, attr-defined]


_DIR_NAMES: dict[type, list[str]] = {}


def _cached_dir(obj: Any) -> list[str]:
    """SMTP.__init__ also calls `dir()` on the protocol and the handler for every
    connection to find their smtp_* and handle_* methods (a sorted walk of the whole
    MRO each time). Those names come from the classes only: compute them once per class."""
    cls = type(obj)
    names = _DIR_NAMES.get(cls)
    if names is None:
        names = _DIR_NAMES[cls] = [n for n in dir(obj) if n.startswith(("smtp_", "handle_"))]
    return names


_aiosmtpd_smtp.dir = _cached_dir  # type: ignore[attr-defined]


_SANITIZED_LOG = _aiosmtpd_smtp.sanitized_log
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}


def _sanitized_log(func: Any, msg: Any, *args: Any, **kwargs: Any) -> None:
    """aiosmtpd's `_handle_client` calls `sanitized_log(log.debug, ...)` and
    `sanitized_log(log.info, ...)` for every command line, and each builds a list and runs
    its AUTH regex over the line before the logger looks at its level (the daemon keeps
    aiosmtpd's `mail.log` at WARNING: nothing is written). Ask the logger first; when the
    level is on, aiosmtpd's own function logs the line as it did."""
    logger = getattr(func, "__self__", None)
    level = _LEVELS.get(getattr(func, "__name__", ""))
    if level is not None and isinstance(logger, logging.Logger) and not logger.isEnabledFor(level):
        return
    _SANITIZED_LOG(func, msg, *args, **kwargs)


_aiosmtpd_smtp.sanitized_log = _sanitized_log

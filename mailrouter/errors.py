"""The one exception tree of mailrouter, and the SMTP reply each error maps to.

    MailrouterError
      ConfigError                 path, line, column, hint; many per load
      AddressError
        AliasLoopError            554 5.4.6
      DeliveryError
        TemporaryDeliveryError    451 4.3.0 (452 4.3.1 when storage is full)
          IntentError             451 4.3.0 (452 4.3.1 when full): a copy's intent unwritten
        PermanentDeliveryError    550 5.x.x from the downstream
      RegistryError               451 4.3.0 (the database is unavailable)
        RegistryFullError         452 4.3.1 (its disk is full)
        RegistryBugError          451 4.3.0 (not an outage: a bug, logged with its traceback)

Each error's `.reply` is a constant of the reply table in `values`.
Anything not in this tree that escapes a handler is also answered 451 4.3.0:
an internal fault must make the sending MTA retry, never bounce the mail.
"""

from __future__ import annotations

import errno
import socket

from .values import (
    REPLY_DELIVERY_TEMPFAIL,
    REPLY_DOWNSTREAM_REFUSED,
    REPLY_INTENT_FAILED,
    REPLY_INTENTS_FULL,
    REPLY_INTERNAL_ERROR,
    REPLY_LOOP,
    REPLY_REGISTRY_UNAVAILABLE,
    REPLY_STORAGE_FULL,
    Reply,
)

__all__ = [
    "MailrouterError", "ConfigError", "ConfigErrors", "AddressError", "AliasLoopError",
    "DeliveryError", "TemporaryDeliveryError", "PermanentDeliveryError",
    "StorageFullError", "IntentError", "IntentsFullError", "RegistryError", "RegistryFullError", "RegistryBugError",
    "Reply",   # re-exported from values, where it lives
    "place_prefix",
]


class MailrouterError(Exception):
    """Base of every error mailrouter raises on purpose."""


class ConfigError(MailrouterError):
    """One problem in a configuration or routing file, with where and how to fix it."""

    def __init__(self, message: str, path: str = "", line: int = 0,
                 column: int = 0, hint: str = "") -> None:
        self.message, self.path, self.line, self.column, self.hint = message, path, line, column, hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "<config>"
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        text = f"{where}: {self.message}"
        return f"{text}; {self.hint}" if self.hint else text


def place_prefix(path: str, line: int = 0) -> str:
    """'FILE:LINE: ' before a warning, as a ConfigError begins ('FILE: ' without the line,
    '' when the file is unknown too)."""
    return f"{path}:{line}: " if path and line else f"{path}: " if path else ""


class ConfigErrors(MailrouterError):
    """Every problem found in one load; a load reports all, not only the first."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class ListenError(MailrouterError):
    """A listener could not be opened at start (port taken, no permission, bad address)."""

    @classmethod
    def of(cls, what: str, host: str, port: int, exc: OSError) -> "ListenError":
        """The fix depends on the errno: 'another program may hold it' was said for an
        address this host does not have (EADDRNOTAVAIL), a host name that does not resolve
        and a port below 1024 too."""
        if isinstance(exc, socket.gaierror):      # a name: "another program may hold it" was said
            why = f"the name {host} does not resolve here: use one of this host's addresses (ip -br addr)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = f"this host has no address {host}: use one of its own (ip -br addr)"
        elif exc.errno == errno.EACCES:
            why = (f"port {port} needs privileges: use a port from 1024, or give the service "
                   "CAP_NET_BIND_SERVICE (AmbientCapabilities= in the systemd unit)")
        else:
            why = "another program (a second mailrouter, an MTA) may hold it: stop it"
        return cls(f"cannot listen on {host}:{port} for {what} ({exc.strerror or exc}); "
                   f"{why} or change listen.{what} in the config")


class AddressError(MailrouterError):
    """An address cannot be resolved."""


class AliasLoopError(AddressError):
    """Expansion revisits an address, or mail came back to us (RFC 5321 6.3)."""

    reply = REPLY_LOOP


class DeliveryError(MailrouterError):
    """A delivery backend could not take the message."""

    reply = REPLY_DELIVERY_TEMPFAIL


class TemporaryDeliveryError(DeliveryError):
    """Try again later: the downstream or the disk is not available now."""


class StorageFullError(TemporaryDeliveryError):
    """The mail store has no room (ENOSPC, EDQUOT)."""

    reply = REPLY_STORAGE_FULL


class IntentError(TemporaryDeliveryError):
    """A Maildir copy's intent (intents.py) could not be written, so the copy was not made:
    the fault is the intent journal's disk (delivery.intents_dir), not the Maildir's."""

    reply = REPLY_INTENT_FAILED


class IntentsFullError(IntentError):
    """The intent journal's disk is full (ENOSPC, EDQUOT)."""

    reply = REPLY_INTENTS_FULL


class PermanentDeliveryError(DeliveryError):
    """The downstream refused the recipient for good."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply or REPLY_DOWNSTREAM_REFUSED


class RegistryError(MailrouterError):
    """The registry database could not record the message."""

    reply = REPLY_REGISTRY_UNAVAILABLE


class RegistryFullError(RegistryError):
    """The registry's disk is full (SQLite: 'database or disk is full')."""

    reply = REPLY_STORAGE_FULL


class RegistryBugError(RegistryError):
    """The registry code failed on something that is not an outage (a TypeError, a
    KeyError: a bug). The store logs it once with its traceback; the client still gets
    a 4xx, so the sending MTA keeps the mail."""

    reply = REPLY_INTERNAL_ERROR

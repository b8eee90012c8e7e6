"""The one exception tree of mailrouter, and the SMTP reply each error maps to.

    MailrouterError
      ConfigError                 path, line, column, hint; many per load
      AddressError
        AliasLoopError            554 5.4.6
      DeliveryError
        TemporaryDeliveryError    451 4.3.0 (452 4.3.1 when storage is full)
        PermanentDeliveryError    550 5.x.x from the downstream
      RegistryError               451 4.3.0
        RegistryFullError         452 4.3.1 (its disk is full)

Anything not in this tree that escapes a handler is also answered 451 4.3.0:
an internal fault must make the sending MTA retry, never bounce the mail.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MailrouterError", "ConfigError", "ConfigErrors", "AddressError", "AliasLoopError",
    "DeliveryError", "TemporaryDeliveryError", "PermanentDeliveryError",
    "StorageFullError", "RegistryError", "RegistryFullError", "Reply",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: basic code, enhanced code (RFC 3463) and text."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


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


class ConfigErrors(MailrouterError):
    """Every problem found in one load; a load reports all, not only the first."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class ListenError(MailrouterError):
    """A listener could not be opened at start (port taken, no permission, bad address)."""

    @classmethod
    def of(cls, what: str, host: str, port: int, exc: OSError) -> "ListenError":
        return cls(f"cannot listen on {host}:{port} for {what} ({exc.strerror or exc}); "
                   f"another program (a second mailrouter, an MTA) may hold it: stop it or "
                   f"change listen.{what} in the config")


class AddressError(MailrouterError):
    """An address cannot be resolved."""


class AliasLoopError(AddressError):
    """Expansion revisits an address, or mail came back to us (RFC 5321 6.3)."""

    reply = Reply(554, "5.4.6", "Mail loop detected")


class DeliveryError(MailrouterError):
    """A delivery backend could not take the message."""

    reply = Reply(451, "4.3.0", "Delivery temporarily failed, try again later")


class TemporaryDeliveryError(DeliveryError):
    """Try again later: the downstream or the disk is not available now."""


class StorageFullError(TemporaryDeliveryError):
    """The mail store has no room (ENOSPC, EDQUOT)."""

    reply = Reply(452, "4.3.1", "Insufficient system storage, try again later")


class PermanentDeliveryError(DeliveryError):
    """The downstream refused the recipient for good."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply or Reply(550, "5.0.0", "Delivery refused downstream")


class RegistryError(MailrouterError):
    """The registry database could not record the message."""

    reply = Reply(451, "4.3.0", "Registry temporarily unavailable, try again later")


class RegistryFullError(RegistryError):
    """The registry's disk is full (SQLite: 'database or disk is full')."""

    reply = Reply(452, "4.3.1", "Insufficient system storage, try again later")

"""The names in config.yaml's `control:` against the address book of the routing files.

The two files load apart (config.yaml first, then the routing files it names), so
neither load can check names across them; `mailrouter check` calls `check_control`
once both are loaded, and refuses, with config.yaml's file:line:column:

- `control.head` that is not a person of the address book (escalations would have
  nobody to go to: the scheduler records them as sent to nobody);
- an address in `control.replies` the address book does not know (the MTA would get
  550 5.1.1 for every reply-tracking copy, and no request would ever be answered);
- a `web.admins` key that is not a person (`check_web`: a typo there silently left the
  admin with the rights of anyone else).

Known limit: the daemon does not run this check at start or reload; a head removed
from the address book later is reported by the next `mailrouter check`.
"""

from __future__ import annotations

import difflib
from typing import Any

from ..config import ControlConfig, WebConfig
from ..errors import ConfigError
from ..yamlsrc import where

__all__ = ["check_control", "check_web"]


def _near(word: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"known {what}: {', '.join(sorted(known)) or 'none defined'}"


def _near_address(address: str, known: list[str]) -> str | None:
    """A typo's intended address: close as a whole and in its local part. The domain they
    share made 'sales@example.com' "close" to 'replies@example.com', and the hint sent the
    admin to point reply tracking at the sales mailbox instead of adding the alias."""
    local = address.partition("@")[0]
    for candidate in difflib.get_close_matches(address, known, n=5):
        if difflib.SequenceMatcher(None, local, candidate.partition("@")[0]).ratio() >= 0.75:
            return candidate
    return None


def check_control(cfg: ControlConfig | None, book: Any, path: str = "") -> list[ConfigError]:
    """Every name in `cfg` that `book` (an AddressBook) does not define, with its position."""
    if cfg is None:
        return []
    errors: list[ConfigError] = []

    def err(value: str, message: str, hint: str) -> None:
        file, line, col = where(value)
        errors.append(ConfigError(message, file or path, line, col, hint))
    if cfg.head is not None and cfg.head not in book.people:
        err(cfg.head, f"control.head {cfg.head!r} is not a person of the address book",
            _near(cfg.head, list(book.people), "people")
            + "; people are defined under 'people:' in the routing files")
    for address in cfg.replies:
        if not book.knows(address):
            close = _near_address(address, sorted(book.addresses()))
            err(address, f"control.replies {address!r} is not an address of the address book",
                f"did you mean '{close}'?" if close else
                "add it under aliases: (e.g. 'replies@example.com: mailbox:replies') so the "
                "MTA can deliver the copies of outgoing mail to mailrouter")
    return sorted(errors, key=lambda e: (e.line, e.column))


def check_web(cfg: WebConfig | None, book: Any, path: str = "") -> list[ConfigError]:
    """Every `web.admins` key that is not a person of `book`, with its position."""
    errors = []
    for admin in cfg.admins if cfg is not None else ():
        if admin not in book.people:
            file, line, col = where(admin)
            errors.append(ConfigError(
                f"web.admins {admin!r} is not a person of the address book", file or path, line,
                col, _near(admin, list(book.people), "people")
                + "; people are defined under 'people:' in the routing files"))
    return errors

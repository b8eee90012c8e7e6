"""Departments of the address book: who heads which mailboxes (for the web view's rights).

A routing file may hold a section

    departments:
      finance: {head: ivanov, mailboxes: [finance]}
      sales:   {head: smirnov, mailboxes: [sales, support]}

The head of a department sees the mail of its mailboxes in the web view; other people
see their own (the mail whose owner they are, or in their own mailbox).

Refused, with file:line: a department that is not a mapping, an unknown key, a missing
or unknown head, an unknown mailbox, an empty mailbox list.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .. import yamlsrc
from ..errors import ConfigError, ConfigErrors
from .errs import did_you_mean

__all__ = ["Department", "parse_departments"]

KEYS = ("head", "mailboxes")


@dataclass(frozen=True, slots=True)
class Department:
    key: str
    head: str                      # a person key
    mailboxes: tuple[str, ...]     # mailbox names


def parse_departments(section: Mapping[Any, Any] | None, people: Collection[str],
                      mailboxes: Collection[str]) -> dict[str, Department]:
    """The departments of the merged `departments:` section; ConfigErrors names every problem."""
    errors: list[ConfigError] = []
    found: dict[str, Department] = {}

    def error(value: Any, parent: Any, message: str, hint: str) -> None:
        path, line, col = yamlsrc.where(value, parent)
        errors.append(ConfigError(message, path, line, col, hint))

    for key, spec in (section or {}).items():
        if not isinstance(spec, dict):
            error(spec, key, f"department {key!r} must be a mapping",
                  "for example '{head: ivanov, mailboxes: [finance]}'")
            continue
        for unknown in (k for k in spec if k not in KEYS):
            error(unknown, spec, f"unknown key {str(unknown)!r} in department {key!r}",
                  did_you_mean(str(unknown), KEYS, "keys"))
        head = spec.get("head")
        if head is None or str(head) not in people:
            error(head, spec, f"department {key!r} names " + (
                f"unknown head {str(head)!r}" if head is not None else "no head"),
                did_you_mean(str(head), people, "people") if head is not None
                else "add 'head: PERSON' (a key under people:)")
        boxes = spec.get("mailboxes")
        if not isinstance(boxes, list) or not boxes:
            error(boxes, spec, f"department {key!r} needs a list of mailboxes",
                  "for example 'mailboxes: [finance]'")
            boxes = []
        for box in boxes:
            if str(box) not in mailboxes:
                error(box, spec, f"department {key!r} names unknown mailbox {str(box)!r}",
                      did_you_mean(str(box), mailboxes, "mailboxes")
                      + " (define it under 'mailboxes:')")
        found[str(key)] = Department(str(key), str(head), tuple(str(b) for b in boxes))
    if errors:
        raise ConfigErrors(errors)
    return found

"""Address book, alias expansion and load-time loop refusal: see `mailrouter.addressbook`.

This module keeps the name docs/architecture.md gives the stage; the code lives in the
`addressbook` package (it outgrew one file). Run-time loop defence is `loops.py`.
"""

from __future__ import annotations

from .addressbook import (REPLY_MOVED, AddressBook, Limits, Mailbox, Moved, Options, Person,
                          Resolution, Target, Team)

__all__ = ["AddressBook", "Limits", "Mailbox", "Moved", "Options", "Person", "Resolution",
           "Team", "Target", "REPLY_MOVED"]

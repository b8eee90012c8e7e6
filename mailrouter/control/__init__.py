"""Execution control: requests (conversations) with one owner, reply tracking, SLA reminders.

Pure parts: `owners` (who owns a request: team picks, absence and deputies) and
`threads` (follow-up matching, the request number in subjects, who may join).
The registry side is `tables` and `store`; the SLA scheduler is `sla`.
"""

from mailrouter.control.owners import OwnerChoice, TeamState, choose_owner, on_duty, pick_member
from mailrouter.control.threads import NumberTag, references, took_part

__all__ = ["NumberTag", "OwnerChoice", "TeamState", "choose_owner", "on_duty", "pick_member",
           "references", "took_part"]

"""Routing: the compiled snapshot (address book + rules) and the Decision it produces. No I/O."""

from mailrouter.values import Action, Decision, RuleMatch, Target
from mailrouter.routing.normalize import normalize, normalize_subject, strip_reply_prefixes

__all__ = ["Action", "Decision", "RuleMatch", "Target", "normalize", "normalize_subject",
           "strip_reply_prefixes"]

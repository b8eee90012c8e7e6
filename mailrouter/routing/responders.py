"""Responders: the automatic answers of the routing files (`autoreplies:`), checked.

    autoreplies:
      moved:
        from: old                      # the address written to (default), or an address
        subject: "Auto: {subject}"     # the default; or per language, as body
        period: 7d                     # one answer per sender per period; at least 1d
        language: en                   # the default language (else the first body's)
        body:
          ru: "Адрес {old} больше не используется, пишите на {new}."
          en: "The address {old} is no longer in use; please write to {new}."

Placeholders in `subject` and `body`: {old} (the address written to), {new} (where
its mail goes now: a moved address's `now:`, else the address itself), {subject}
(the incoming subject, decoded), {sender} (the envelope sender). `{{` and `}}` are
literal braces. A responder is attached to a moved address (`autoreply: NAME`) or
named by a rule (`then: {autoreply: NAME}`).

Refused at load (all at once, with file:line): unknown keys, unknown placeholders,
format specs and conversions (`{old!r}`, `{old:>10}`), a period under one day (RFC
5230 section 4.1 recommends at least a day), an empty or missing body, a `from`
that is neither `old` nor an address, a default language without a body. Names
used by moved addresses and rules are checked by `check_responder_names`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..errors import ConfigError
from ..yamlsrc import where
from .conditions import did_you_mean
from .sla_spec import parse_duration

__all__ = ["DEFAULT_PERIOD", "DEFAULT_SUBJECT", "MIN_PERIOD", "PLACEHOLDERS", "Responder",
           "build_responders", "check_responder_names"]

RESPONDER_KEYS = ("from", "subject", "period", "language", "body")
PLACEHOLDERS = ("old", "new", "subject", "sender")
DEFAULT_SUBJECT = "Auto: {subject}"
DEFAULT_PERIOD = timedelta(days=7)
MIN_PERIOD = timedelta(days=1)
# The outbox looks back `period` for the last answer: 999999999d went past datetime's range
# (OverflowError for every message to a moved address)
MAX_PERIOD = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class Responder:
    name: str
    sender: str | None                   # None: the address written to ("old")
    subject: str
    period: timedelta
    language: str                        # the default language, a key of `bodies`
    bodies: tuple[tuple[str, str], ...]  # (language, template), in file order
    file: str = ""
    line: int = 0
    subjects: tuple[tuple[str, str], ...] = ()   # (language, template) when given per language

    def body(self, language: str) -> str:
        return dict(self.bodies).get(language) or dict(self.bodies)[self.language]

    def subject_for(self, language: str) -> str:
        """The subject template for a reply in `language`: its own, else `subject`."""
        return dict(self.subjects).get(language) or self.subject

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(lang for lang, _ in self.bodies)


class _Checker:
    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors

    def err(self, msg: str, node: Any, parent: Any = None, hint: str = "") -> None:
        path, line, col = where(node, parent)
        self.errors.append(ConfigError(msg, path, line, col, hint))

    def template(self, what: str, text: Any, parent: Any) -> str | None:
        if not isinstance(text, str) or not text.strip():
            self.err(f"{what} must be a non-empty text", text, parent,
                     "write the text in quotes, or as a `|` block")
            return None
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            self.err(f"{what}: {exc}", text, parent, "write a literal brace as {{ or }}")
            return None
        ok = True
        for _, field, spec, conv in parts:
            if field is None:
                continue
            if field not in PLACEHOLDERS:
                self.err(f"{what}: unknown placeholder {{{field}}}", text, parent,
                         did_you_mean(field, list(PLACEHOLDERS)).replace("known keys",
                                                                         "known placeholders"))
                ok = False
            elif spec or conv:
                self.err(f"{what}: placeholder {{{field}}} takes no format or conversion",
                         text, parent, f"write {{{field}}}")
                ok = False
        return text if ok else None

    def responder(self, name: str, spec: Any, key: Any) -> Responder | None:
        if not isinstance(spec, Mapping):
            self.err(f"autoreply {name!r} must be a mapping with body:", spec, key,
                     f"write {name}: {{body: {{en: \"...\"}}}}")
            return None
        for k in spec:
            if k not in RESPONDER_KEYS:
                self.err(f"autoreply {name!r}: unknown key '{k}'", k, spec,
                         did_you_mean(str(k), list(RESPONDER_KEYS)))
        sender = self.sender(name, spec)
        given = spec.get("subject", DEFAULT_SUBJECT)
        subjects: list[tuple[str, str]] = []
        subject: str | None = None
        if isinstance(given, Mapping):      # per language, as body: (Russian mail, Russian subject)
            ok = bool(given)
            if not ok:
                self.err(f"autoreply {name!r}: subject is empty", given, spec,
                         'write subject: "Auto: {subject}" or {en: ..., ru: ...}')
            for lang, text in given.items():
                one = self.subject_line(f"autoreply {name!r} subject {lang}", text, given)
                ok = ok and one is not None
                if one is not None:
                    subjects.append((str(lang), one))
        else:
            subject = self.subject_line(f"autoreply {name!r} subject", given, spec)
        period = self.period(name, spec)
        bodies = self.bodies(name, spec)
        language = str(spec.get("language") or (bodies[0][0] if bodies else ""))
        if isinstance(given, Mapping):
            # a language without its own subject gets the default language's, else the default
            subject = dict(subjects).get(language, DEFAULT_SUBJECT) if ok else None
        if bodies and language not in dict(bodies):
            self.err(f"autoreply {name!r}: default language {language!r} has no body",
                     spec.get("language"), spec,
                     f"add body: {{{language}: ...}} or choose one of {', '.join(dict(bodies))}")
            return None
        if not (sender is None or isinstance(sender, str)) or subject is None \
                or period is None or not bodies:
            return None
        path, line, _ = where(key, spec)
        return Responder(name, sender, subject, period, language, bodies, path, line,
                         tuple(subjects))

    def subject_line(self, what: str, text: Any, parent: Any) -> str | None:
        subject = self.template(what, text, parent)
        if subject is not None and ("\n" in subject.strip() or "\r" in subject):
            self.err(f"{what} must be one line", text, parent, "write it in quotes on one line")
            return None
        return subject.strip() if subject is not None else None

    def sender(self, name: str, spec: Mapping[str, Any]) -> str | None | bool:
        """The From address; None for "old" (the address written to); False when bad."""
        value = spec.get("from", "old")
        text = str(value).strip()
        if text == "old":
            return None
        local, at, domain = text.strip("<>").rpartition("@")
        if not at or not local or not domain or " " in text:
            self.err(f"autoreply {name!r}: from must be 'old' or an address, not {value!r}",
                     value, spec, "write from: old (the address written to) or from: info@...")
            return False
        return text.strip("<>")

    def period(self, name: str, spec: Mapping[str, Any]) -> timedelta | None:
        value = spec.get("period")
        if value is None:
            return DEFAULT_PERIOD
        try:
            days, hours = parse_duration(value)
        except ValueError:
            self.err(f"autoreply {name!r}: period {value!r} is not a duration", value, spec,
                     "write e.g. period: 7d")
            return None
        period = timedelta(days=days, hours=hours)
        if period < MIN_PERIOD:
            # `period: 7` meant a week: "7 is under one day" did not say it was read as hours
            bare = isinstance(value, (int, float)) and not isinstance(value, bool)
            self.err(f"autoreply {name!r}: period {value!r} is under one day"
                     + (f" (a number alone is hours: {value}h)" if bare else ""), value, spec,
                     (f"write period: {value}d for {value} days; " if bare else "")
                     + "RFC 5230 asks for at least 1d between answers to one sender; write 1d "
                     "or more")
            return None
        if period > MAX_PERIOD:
            self.err(f"autoreply {name!r}: period {value!r} is more than a year", value, spec,
                     "write 366d or less")
            return None
        return period

    def bodies(self, name: str, spec: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        body = spec.get("body")
        if isinstance(body, str):
            body = {"en": body}
        if not isinstance(body, Mapping) or not body:
            self.err(f"autoreply {name!r} needs body: {{LANGUAGE: TEXT, ...}}", body, spec,
                     'write body: {en: "...", ru: "..."}')
            return ()
        out = []
        for lang, text in body.items():
            checked = self.template(f"autoreply {name!r} body {lang}", text, body)
            if checked is not None:
                out.append((str(lang).lower(), checked))
        return tuple(out) if len(out) == len(body) else ()


def build_responders(section: Mapping[str, Any] | None,
                     errors: list[ConfigError]) -> dict[str, Responder]:
    """The `autoreplies:` section (merged over the routing files) -> checked responders."""
    c = _Checker(errors)
    out: dict[str, Responder] = {}
    for key, spec in (section or {}).items():
        r = c.responder(str(key), spec, key)
        if r is not None:
            out[r.name] = r
    return out


def check_responder_names(moved_section: Mapping[str, Any] | None, known: Iterable[str],
                          defined: Iterable[str], errors: list[ConfigError]) -> None:
    """`autoreply: NAME` of every moved address must name a responder. `defined` are the
    names written under autoreplies: (a broken one is reported there, not again here)."""
    names = set(known) | set(defined)
    for _old, spec in (moved_section or {}).items():
        if not isinstance(spec, Mapping) or spec.get("autoreply") is None:
            continue
        name = spec["autoreply"]
        if str(name) not in names:
            path, line, col = where(name, spec)
            errors.append(ConfigError(
                f"moved address {_old}: unknown autoreply {str(name)!r}", path, line, col,
                did_you_mean(str(name), sorted(names)).replace("known keys", "known autoreplies")
                + " (define it under 'autoreplies:')"))

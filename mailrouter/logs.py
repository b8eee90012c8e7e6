"""Log lines: one line per record, key=value or JSON, syslog priorities under journald.

`setup(level, fmt)` installs one handler on the root logger (stderr). Every record is
ONE line, whatever its message holds (a newline becomes `\\n`, other control characters
`\\uXXXX`: a client's bytes logged by aiosmtpd cannot forge a line or send a terminal escape):

- `log_format: kv` (the default): `TIME LEVEL [PID] LOGGER MESSAGE k=v ...`, where
  `k=v` are the record's structured fields (`extra={"fields": {...}}`), values quoted
  as JSON strings when they hold a space, a quote or `=`; a list of records (the
  recipients of a message) is written `rcpt.0=... reply.0=... rcpt.1=...`;
- `log_format: json`: one JSON object per line: `ts`, `level`, `pid`, `logger`, the
  message's own `key=value` pairs parsed into fields (`event`, `qid`, ...; Python
  reprs in them decoded), any text before them as `msg`, and the structured fields
  as they are (the recipients as a list of objects).

Exceptions: the record's line ends with `error_ref=REF exc="TypeError: ..."`; the
traceback follows as a second line `event=traceback error_ref=REF traceback="..."`
(escaped, one line), so `grep REF` finds both. In JSON the object carries `error_ref`,
`exc` and `traceback` fields instead.

Under systemd (JOURNAL_STREAM names our stderr, sd-daemon(3)) each line starts with its
syslog priority, `<3>` error ... `<7>` debug, so `journalctl -p err` works.

`upstream_id(raw)` reads the queue id Postfix wrote in the top `Received:` header
(`... with ESMTP id 4Xyz...`) so one grep finds a message in both logs.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import secrets
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["Formatter", "setup", "upstream_id", "journal_stream"]

PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
            logging.DEBUG: 7}
# A pair starts the message or follows a space: a client's text that aiosmtpd logs as sent
# ("unrecognised: X<TAB>EVENT=MESSAGE<TAB>QID=FORGED") made fields of its own in JSON
_KV = re.compile(r"""(?<![^ ])([A-Za-z_][\w.]*)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S*)""")
_PLAIN = re.compile(r"[^\s\"'=\\]+\Z")


def _value(v: Any) -> str:
    """A field value as kv writes it: bare when it is one plain word, else a JSON string."""
    if v is None:
        return "-"
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) \
        if isinstance(v, (list, dict)) else str(v)
    return text if _PLAIN.match(text) and text.isprintable() else json.dumps(text, ensure_ascii=False)


def _kv(fields: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for k, v in fields.items():
        if isinstance(v, (list, tuple)) and all(isinstance(i, Mapping) for i in v):
            for n, item in enumerate(v):
                parts.extend(f"{ik}.{n}={_value(iv)}" for ik, iv in item.items())
        else:
            parts.append(f"{k}={_value(v)}")
    return " ".join(parts)


def parse_message(message: str) -> dict[str, Any]:
    """`event=x qid=y reply='250 ok'` as fields; text before the first pair as `msg`."""
    out: dict[str, Any] = {}
    first = _KV.search(message)
    head = message[:first.start()] if first else message
    if head.strip():
        out["msg"] = head.strip()
    rest_start = first.start() if first else len(message)
    pos = rest_start
    for m in _KV.finditer(message, rest_start):
        if message[pos:m.start()].strip():        # free text between pairs: keep it
            out["msg"] = (out.get("msg", "") + " " + message[pos:m.start()].strip()).strip()
        key, raw = m.groups()
        if raw[:1] in ("'", '"'):
            try:
                raw = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                raw = raw[1:-1]
        out[key] = raw
        pos = m.end()
    if message[pos:].strip():
        out["msg"] = (out.get("msg", "") + " " + message[pos:].strip()).strip()
    return out


class Formatter(logging.Formatter):
    def __init__(self, fmt: str = "kv", priority: bool = False) -> None:
        super().__init__()
        self.fmt, self.priority = fmt, priority

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        fields: dict[str, Any] = dict(getattr(record, "fields", None) or {})
        ref = exc = tb = None
        if record.exc_info and record.exc_info[0] is not None:
            ref = secrets.token_hex(4)
            etype, evalue, etb = record.exc_info
            exc = "".join(traceback.format_exception_only(etype, evalue)).strip()
            tb = "".join(traceback.format_exception(etype, evalue, etb)).rstrip()
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + \
            f".{int(record.msecs):03d}Z"
        if self.fmt == "json":
            obj: dict[str, Any] = {"ts": when, "level": record.levelname.lower(),
                                   "pid": record.process, "logger": record.name}
            obj |= parse_message(message) | fields
            if ref:
                obj |= {"error_ref": ref, "exc": exc, "traceback": tb}
            lines = [json.dumps(obj, ensure_ascii=False, default=str)]
        else:
            line = f"{when} {record.levelname} [{record.process}] {record.name} {message}"
            if fields:
                line += " " + _kv(fields)
            lines = [line]
            if ref:
                lines[0] += f" error_ref={ref} exc={_value(exc)}"
                lines.append(f"{when} {record.levelname} [{record.process}] {record.name} "
                             f"event=traceback error_ref={ref} traceback={json.dumps(tb)}")
        prefix = f"<{PRIORITY.get(record.levelno, 6)}>" if self.priority else ""
        return "\n".join(prefix + _one_line(line) for line in lines)


# What must not reach the log raw: line ends (a record is one line), NUL, ESC, TAB and the
# other C0 controls and DEL (terminal escapes, truncated reads: a client's command is logged by
# aiosmtpd as it came, "unrecognised: MA\x00IL"; a TAB separates fields for logfmt readers), and
# the line separators other tools split at.
_UNSAFE = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
_NAMED = {"\r": "\\r", "\n": "\\n"}


def _escape(m: re.Match[str]) -> str:
    # \uXXXX, not \xXX: inside the strings of a JSON line it reads as the same character
    ch = m.group()
    return _NAMED.get(ch) or f"\\u{ord(ch):04x}"


def _one_line(text: str) -> str:
    return _UNSAFE.sub(_escape, text)


def journal_stream(stream: TextIO) -> bool:
    """True when `stream` is the journal's stream (JOURNAL_STREAM=DEV:INODE, sd-daemon(3))."""
    want = os.environ.get("JOURNAL_STREAM", "")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def setup(level: str = "INFO", fmt: str = "kv", stream: TextIO | None = None) -> None:
    """One handler on the root logger writing one line per record to `stream` (stderr)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(Formatter(fmt, priority=journal_stream(stream)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))


# The upstream queue id: the MTA before us (Postfix) put its Received: line on top.
_RECEIVED = re.compile(rb"\AReceived:((?:[^\r\n]*(?:\r?\n[ \t])?)*)", re.I)
_ID = re.compile(rb"\bid\s+([A-Za-z0-9][A-Za-z0-9._-]{0,63})")


def upstream_id(raw: bytes) -> str | None:
    """The `id` of the top `Received:` header (Postfix: `with ESMTP id 4Xyz...`), or None."""
    m = _RECEIVED.match(raw[:8192])
    if m is None:
        return None
    found = _ID.search(m.group(1))
    return found.group(1).decode("ascii") if found else None

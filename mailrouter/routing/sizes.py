"""Numbers in rule conditions: sizes (`10MB`) and counts, read and checked at load.

`size`, `attachment_size` and `attachment_count` are never negative, so a needle below
zero (`gt: -5`, holding for every message) is refused, and so are the operators under one
field that no value can satisfy together (`{gt: 10MB, lt: 1MB}`, `lt: 0`, `{equals: 5,
gt: 10}`): each such rule was taken at load and never matched. Units are 1024-based, and
the IEC spellings (`KiB`, `MiB`, `GiB`) mean the same; a count takes no unit.

Known limit: only the operators under one field are compared with each other; two
conditions on one field in different branches (`all: [{size: ...}, {size: ...}]`) are not.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["parse_size", "UNITS_HINT", "check_needle", "empty_range"]

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}
UNITS_HINT = "units: k or KB, M or MB, G or GB (1024-based; KiB, MiB, GiB mean the same)"
COUNTS = ("attachment_count",)


def parse_size(value: Any) -> int:
    """100, '100k', '10MB', '10 MiB' -> bytes (binary units); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(-?\d+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m[2].lower() not in _UNITS:
        raise ValueError(value)
    return int(m[1]) * _UNITS[m[2].lower()]


def check_needle(field: str, op: str, needle: Any) -> tuple[int | None, str, str]:
    """(number, "", "") for a good needle of `op` on `field`, else (None, message, hint)."""
    try:
        n = parse_size(needle)
    except ValueError:
        if field in COUNTS:
            return None, f"'{op}' needs a whole number, not {needle!r}", "write e.g. gt: 2"
        return (None, f"'{op}' needs a number or a size like 10MB, not {needle!r}",
                UNITS_HINT if isinstance(needle, str) else "")
    if field in COUNTS and not isinstance(needle, int):
        return (None, f"'{field}' is a number of attachments, not a size: {needle!r}",
                f"write a whole number, e.g. {op}: 2 (a size is attachment_size)")
    if n < 0:
        always = op in ("gt", "ge")
        return (None, f"'{op}: {needle}' is below zero: {field} is never negative, so it "
                f"holds for {'every' if always else 'no'} message",
                "remove the condition" if always else
                f"write e.g. {op}: 1MB" if field not in COUNTS else f"write e.g. {op}: 2")
    return n, "", ""


def empty_range(ops: dict[str, int]) -> bool:
    """True when no value of 0 or more satisfies every operator of `ops` at once
    (`gt`, `ge`, `lt`, `le`, `equals` to a number)."""
    lo, hi = 0, None
    for op, n in ops.items():
        low = {"gt": n + 1, "ge": n, "equals": n}.get(op)
        high = {"lt": n - 1, "le": n, "equals": n}.get(op)
        if low is not None:
            lo = max(lo, low)
        if high is not None:
            hi = high if hi is None else min(hi, high)
    return hi is not None and lo > hi

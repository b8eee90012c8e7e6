"""Charts drawn on the server as SVG: no script, no outside library, one string of markup.

`bar_chart` draws one bar per (label, value) with the value (whole, or to one decimal,
with its unit) above it and every label below, scaled to the largest value. Labels are
escaped; the SVG uses presentation attributes and CSS classes only (the pages'
Content-Security-Policy allows no inline style).
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

__all__ = ["bar_chart"]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def bar_chart(points: Sequence[tuple[str, float]], title: str, height: int = 220,
              unit: str = "") -> Markup:
    """An SVG bar chart of `points` (label, value), `title` as its accessible name."""
    bar, gap, top, bottom, left = 28, 8, 24, 56, 8
    width = left * 2 + max(1, len(points)) * (bar + gap)
    peak = max((v for _, v in points), default=0) or 1
    plot = height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
             f'<title>{escape(title)}</title>'
             f'<line class="axis" x1="{left}" y1="{top + plot}" x2="{width - left}" '
             f'y2="{top + plot}" stroke="#666" stroke-width="1"/>']
    for i, (label, value) in enumerate(points):
        x = left + i * (bar + gap) + gap // 2
        h = round(plot * value / peak)
        y = top + plot - h
        parts.append(f'<rect class="bar" x="{x}" y="{y}" width="{bar}" height="{h}" fill="#3b6ea5">'
                     f'<title>{escape(label)}: {_num(value)}{escape(unit)}</title></rect>'
                     f'<text class="value" x="{x + bar / 2}" y="{y - 4}" text-anchor="middle" '
                     f'font-size="11">{_num(value)}{escape(unit)}</text>'
                     f'<text class="label" x="{x + bar / 2}" y="{top + plot + 12}" font-size="10" '
                     f'text-anchor="end" transform="rotate(-60 {x + bar / 2} {top + plot + 12})">'
                     f'{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))

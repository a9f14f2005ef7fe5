"""Tiny server-side SVG charts: grouped or stacked bars and horizontal bars. No chart library.

Colours come from CSS classes (`series-0`, `series-1`, ...), so the stylesheet decides them.
Every label is escaped; the output is safe to drop into a template.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

Series = Sequence[tuple[str, Sequence[float]]]

_PAD_LEFT = 44
_PAD_BOTTOM = 22
_PAD_TOP = 18


def _fmt(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}"


def _legend(series: Series, x: float) -> list[str]:
    out = []
    for i, (name, _) in enumerate(series):
        out.append(
            f'<rect class="series-{i}" x="{x + i * 110}" y="2" width="10" height="10"/>'
            f'<text class="legend" x="{x + i * 110 + 14}" y="11">{escape(name)}</text>'
        )
    return out


def bar_chart(
    labels: Sequence[str],
    series: Series,
    *,
    title: str,
    stacked: bool = False,
    width: int = 560,
    height: int = 200,
    label_every: int = 1,
) -> Markup:
    """Vertical bars, one group (or stack) per label."""
    n = max(len(labels), 1)
    totals = [
        sum(values[i] for _, values in series) if stacked else max(v[i] for _, v in series)
        for i in range(len(labels))
    ]
    top = max([*totals, 1.0])
    plot_w = width - _PAD_LEFT - 6
    plot_h = height - _PAD_TOP - _PAD_BOTTOM
    slot = plot_w / n
    bar_w = max(slot * 0.8 / (1 if stacked else max(len(series), 1)), 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        *_legend(series, _PAD_LEFT),
        f'<line class="axis" x1="{_PAD_LEFT}" y1="{_PAD_TOP + plot_h}" '
        f'x2="{width - 6}" y2="{_PAD_TOP + plot_h}"/>',
        f'<text class="tick" x="{_PAD_LEFT - 4}" y="{_PAD_TOP + 8}" '
        f'text-anchor="end">{_fmt(top)}</text>',
        f'<text class="tick" x="{_PAD_LEFT - 4}" y="{_PAD_TOP + plot_h}" '
        'text-anchor="end">0</text>',
    ]
    for i, label in enumerate(labels):
        x0 = _PAD_LEFT + i * slot + slot * 0.1
        base: float = _PAD_TOP + plot_h
        for s, (name, values) in enumerate(series):
            h = plot_h * values[i] / top
            x = x0 if stacked else x0 + s * bar_w
            y = base - h
            parts.append(
                f'<rect class="series-{s}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}"><title>{escape(label)} {escape(name)}: '
                f"{_fmt(values[i])}</title></rect>"
            )
            if stacked:
                base = y
        if i % label_every == 0:
            parts.append(
                f'<text class="tick" x="{x0 + slot * 0.4:.1f}" y="{height - 6}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # every label was escaped above


def hbar_chart(
    labels: Sequence[str], values: Sequence[float], *, title: str, width: int = 560
) -> Markup:
    """Horizontal bars with their values, one row per label (a ranking)."""
    row = 22
    label_w = 150
    height = _PAD_TOP + row * max(len(labels), 1)
    top = max([*values, 1.0])
    plot_w = width - label_w - 50
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = _PAD_TOP + i * row
        w = plot_w * value / top
        parts.append(
            f'<text class="tick" x="{label_w - 6}" y="{y + 14}" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<rect class="series-1" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}"/>'
            f'<text class="tick" x="{label_w + w + 4:.1f}" y="{y + 14}">{_fmt(value)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # every label was escaped above

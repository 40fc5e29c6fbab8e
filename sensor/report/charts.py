"""Small charts as hand-written SVG, inlined in the report.

Why not matplotlib's SVG backend: the report needs three kinds of chart (horizontal bars, a timeline of spans,
columns of bytes over time); matplotlib would add ~40 MB of dependencies (with its font cache and pillow) to a sensor
package for that, its SVG output embeds glyph paths and runs to tens of KiB per chart, and its text is harder to
audit for escaping. These
few functions write a few KiB, with every label passed through markupsafe.escape, and the browser's own fonts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

from sensor.enrich.series import BUCKET_SECONDS
from sensor.units import byte_size

from .ranking import utc

WIDTH = 640
BAR_HEIGHT = 18
LABEL_WIDTH = 220
PALETTE = ("#1f4e79", "#c0392b", "#7f8c8d", "#d35400", "#27ae60", "#8e44ad")
MAX_LABEL = 30   # fits LABEL_WIDTH at the chart's 12px


def _label(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "\u2026"


def bar_chart(items: Sequence[tuple[str, float]], title: str, unit: str = "bytes") -> Markup:
    """Horizontal bars, largest first; `unit` "bytes" shows values as KB/MB, anything else as counts."""
    if not items:
        return Markup("")
    items = sorted(items, key=lambda kv: -kv[1])[:12]
    top = max(v for _, v in items) or 1
    height = 28 + len(items) * (BAR_HEIGHT + 6)
    span = WIDTH - LABEL_WIDTH - 110
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}"><title>{escape(title)}</title>',
             f'<text x="0" y="14" class="chart-title">{escape(title)}</text>']
    for i, (name, value) in enumerate(items):
        y = 24 + i * (BAR_HEIGHT + 6)
        width = max(1.0, span * value / top) if value else 0.0
        shown = byte_size(value) if unit == "bytes" else f"{value:,.0f} {unit}"
        parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 13}" text-anchor="end">{escape(_label(name))}</text>'
                     f'<rect x="{LABEL_WIDTH}" y="{y}" width="{width:.1f}" height="{BAR_HEIGHT}" '
                     f'fill="{PALETTE[i % len(PALETTE)]}"/>'
                     f'<text x="{LABEL_WIDTH + width + 6:.1f}" y="{y + 13}">{escape(shown)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def timeline(spans: Sequence[tuple[str, float, float, int | None]], window: tuple[float, float] | None,
             title: str) -> Markup:
    """One row per (label, first, last, bytes) span on a shared time axis: when each episode of outbound traffic
    ran. A span shorter than a pixel is still drawn a few pixels wide, so an instant is visible."""
    if not spans or window is None:
        return Markup("")
    spans = sorted(spans, key=lambda s: s[1])[:10]
    start, end = window
    length = max(end - start, 1.0)
    height = 40 + len(spans) * (BAR_HEIGHT + 4)
    span_px = WIDTH - LABEL_WIDTH - 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart timeline" role="img" width="{WIDTH}" '
             f'height="{height}" viewBox="0 0 {WIDTH} {height}"><title>{escape(title)}</title>',
             f'<text x="0" y="14" class="chart-title">{escape(title)}</text>']
    for i, (name, first, last, nbytes) in enumerate(spans):
        y = 22 + i * (BAR_HEIGHT + 4)
        x = LABEL_WIDTH + span_px * max(0.0, min(1.0, (first - start) / length))
        width = max(3.0, span_px * max(0.0, last - first) / length)
        tip = f"{name}: {utc(first)} to {utc(last)}" + (f", {byte_size(nbytes)}" if nbytes else "")
        parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 13}" text-anchor="end">{escape(_label(name))}</text>'
                     f'<rect x="{min(x, WIDTH - 13):.1f}" y="{y}" width="{width:.1f}" height="{BAR_HEIGHT}" '
                     f'fill="{PALETTE[1]}"><title>{escape(tip)}</title></rect>')
    parts.append(_time_axis(start, end, height))
    return Markup("".join(parts))


def _time_axis(start: float, end: float, height: float) -> str:
    """The window's first and last time under a time chart, and the end of the SVG."""
    return (f'<text x="{LABEL_WIDTH}" y="{height - 6}">{escape(utc(start))}</text>'
            f'<text x="{WIDTH - 4}" y="{height - 6}" text-anchor="end">{escape(utc(end))}</text></svg>')


ROW_HEIGHT = 44
MAX_COLUMNS = 96


def activity(rows: Sequence[tuple[str, Sequence[tuple[float, int]]]], window: tuple[float, float] | None,
             title: str, bucket: float = BUCKET_SECONDS) -> Markup:
    """One strip of columns per labelled series of (time, bytes) points, binned across the report's window on a
    shared scale, so strips compare by height: how much went out, and when. A point is a sensor bucket's bytes
    stamped at its start: no column is narrower than a bucket, whose bytes it would otherwise claim were sent in
    its first few seconds."""
    rows = [(name, points) for name, points in rows if points]
    if not rows or window is None:
        return Markup("")
    start, end = window
    length = max(end - start, 1.0)
    span_px = WIDTH - LABEL_WIDTH - 10
    columns = max(1, min(MAX_COLUMNS, int(span_px // 4), math.ceil(length / bucket)))
    binned = [(name, _bin(points, start, length, columns)) for name, points in rows]
    top = max(max(bins) for _, bins in binned) or 1
    height = 40 + len(binned) * (ROW_HEIGHT + 6)
    column_px = span_px / columns
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart activity" role="img" width="{WIDTH}" '
             f'height="{height}" viewBox="0 0 {WIDTH} {height}"><title>{escape(title)}</title>',
             f'<text x="0" y="14" class="chart-title">{escape(title)}</text>']
    for i, (name, bins) in enumerate(binned):
        base = 22 + i * (ROW_HEIGHT + 6) + ROW_HEIGHT
        parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{base - 4}" text-anchor="end">{escape(_label(name))}</text>'
                     f'<line x1="{LABEL_WIDTH}" y1="{base}" x2="{WIDTH - 10}" y2="{base}" stroke="#bbb"/>')
        for c, value in enumerate(bins):
            if not value:
                continue
            h = max(1.0, ROW_HEIGHT * value / top)
            first = start + length * c / columns
            tip = f"{name}: {byte_size(value)} from {utc(first)} to {utc(first + length / columns)}"
            parts.append(f'<rect x="{LABEL_WIDTH + c * column_px:.1f}" y="{base - h:.1f}" '
                         f'width="{max(1.0, column_px - 1):.1f}" height="{h:.1f}" fill="{PALETTE[i % len(PALETTE)]}">'
                         f'<title>{escape(tip)}</title></rect>')
    parts.append(_time_axis(start, end, height))
    return Markup("".join(parts))


def _bin(points: Sequence[tuple[float, int]], start: float, length: float, columns: int) -> list[int]:
    bins = [0] * columns
    for ts, value in points:
        bins[max(0, min(columns - 1, int((ts - start) / length * columns)))] += value
    return bins

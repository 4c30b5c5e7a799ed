"""A minimal SVG line chart (no plotting dependency): series of (x, y) points on shared axes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 820, 400, 60, 250, 40, 45  # legend on the right


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values (NaNs skipped; NaN where all are NaN)."""
    out = []
    for i in range(len(values)):
        chunk = [v for v in values[max(0, i + 1 - window): i + 1] if v == v]
        out.append(sum(chunk) / len(chunk) if chunk else float("nan"))
    return out


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high == low:
        return [low]
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str, xlabel: str,
               ylabel: str, y_range: tuple[float, float] | None = None) -> str:
    """The chart as an SVG document. NaN points break a line; an empty series is listed only."""
    points = [(x, y) for pts in series.values() for x, y in pts if y == y]
    if not points:
        raise ValueError(f"chart {title!r} has no finite points")
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = y_range if y_range is not None else (min(p[1] for p in points), max(p[1] for p in points))
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>']
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{LEFT - 4}" x2="{LEFT + plot_w}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                     'stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 7}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.3g}</text>')
    for t in _ticks(x0, x1):
        parts.append(f'<text x="{sx(t):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{t:.0f}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(xlabel)}</text>')
    parts.append(f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {TOP + plot_h / 2})">{escape(ylabel)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        runs: list[list[str]] = [[]]
        for x, y in pts:
            if y == y:
                runs[-1].append(f"{sx(x):.1f},{sy(min(max(y, y0), y1)):.1f}")
            elif runs[-1]:
                runs.append([])
        for run in runs:
            if run:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{" ".join(run)}"/>')
        ly = TOP + 14 + 18 * i
        parts.append(f'<line x1="{LEFT + plot_w + 10}" x2="{LEFT + plot_w + 28}" y1="{ly}" y2="{ly}" '
                     f'stroke="{color}" stroke-width="3"/>')
        parts.append(f'<text x="{LEFT + plot_w + 33}" y="{ly + 4}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"

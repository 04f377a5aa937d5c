"""Server-rendered SVG charts for the review pages: no JavaScript library, nothing fetched.

Each function takes plain numbers and returns one ``<svg>`` element as a string. Values are drawn
on a fixed canvas with their own axis; every number written into the markup is formatted here, and
every label is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 18, 40
COLOURS = {"student": "#1f6feb", "baseline": "#8b949e", "teacher": "#2da44e", "quality": "#bf8700"}


@dataclass(frozen=True)
class RoundPoint:
    """One round's value with its 95% interval (``lo`` / ``hi`` None when there is none)."""

    label: str
    value: float | None
    lo: float | None = None
    hi: float | None = None


def _scale(value: float, lo: float, hi: float, pixels_lo: float, pixels_hi: float) -> float:
    span = hi - lo or 1.0
    return pixels_lo + (value - lo) / span * (pixels_hi - pixels_lo)


def _y_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    step = (hi - lo) / (count - 1) if hi > lo else 1.0
    return [lo + i * step for i in range(count)]


def _frame(title: str, y_lo: float, y_hi: float, y_label: str) -> list[str]:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" class="chart" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in _y_ticks(y_lo, y_hi):
        y = _scale(tick, y_lo, y_hi, HEIGHT - BOTTOM, TOP)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{tick:.2f}</text>')
    parts.append(
        f'<text x="14" y="{(TOP + HEIGHT - BOTTOM) / 2:.1f}" transform="rotate(-90 14 '
        f'{(TOP + HEIGHT - BOTTOM) / 2:.1f})" text-anchor="middle" class="axis">{escape(y_label)}</text>'
    )
    return parts


def _bounds(
    values: Sequence[float | None], floor: float | None = None, ceiling: float | None = None
) -> tuple[float, float]:
    seen = [v for v in values if v is not None]
    lo, hi = (min(seen), max(seen)) if seen else (0.0, 1.0)
    lo, hi = min(lo, floor if floor is not None else lo), max(hi, ceiling if ceiling is not None else hi)
    pad = (hi - lo) * 0.08 or 0.05
    return lo - pad, hi + pad


def rounds_chart(series: dict[str, list[RoundPoint]], thresholds: dict[str, float | None], title: str) -> str:
    """Each series' value per round with its interval as a whisker, and each threshold as a dashed line.

    ``series`` maps a name ("fidelity", "quality / teacher") to one point per round, in round order;
    ``thresholds`` maps the same names to the locked threshold (None: not in the gate).
    """
    rounds = max((len(points) for points in series.values()), default=0)
    values = [v for points in series.values() for p in points for v in (p.value, p.lo, p.hi)]
    values += [t for t in thresholds.values() if t is not None]
    y_lo, y_hi = _bounds(values)
    parts = _frame(title, y_lo, y_hi, "value")
    x_of = lambda i: _scale(i + 0.5, 0, max(rounds, 1), LEFT, WIDTH - RIGHT)  # noqa: E731 - the one x mapping of this chart
    labels = next((points for points in series.values() if points), [])
    for i, point in enumerate(labels):
        parts.append(
            f'<text x="{x_of(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'class="tick">{escape(point.label)}</text>'
        )
    palette = ["#1f6feb", "#bf8700", "#8250df", "#cf222e"]
    for k, (name, points) in enumerate(series.items()):
        colour = palette[k % len(palette)]
        threshold = thresholds.get(name)
        if threshold is not None:
            y = _scale(threshold, y_lo, y_hi, HEIGHT - BOTTOM, TOP)
            parts.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
                'class="threshold"/>'
            )
            parts.append(
                f'<text x="{WIDTH - RIGHT - 4}" y="{y - 4 - 13 * k:.1f}" text-anchor="end" class="tick" '
                f'fill="{colour}">'
                f"{escape(name)} threshold {threshold:.2f}</text>"
            )
        shift = (k - (len(series) - 1) / 2) * 8  # side by side, so whiskers of two series never hide each other
        line = []
        for i, p in enumerate(points):
            if p.value is None:
                continue
            x = x_of(i) + shift
            y = _scale(p.value, y_lo, y_hi, HEIGHT - BOTTOM, TOP)
            line.append(f"{x:.1f},{y:.1f}")
            if p.lo is not None and p.hi is not None:
                y1, y2 = _scale(p.lo, y_lo, y_hi, HEIGHT - BOTTOM, TOP), _scale(p.hi, y_lo, y_hi, HEIGHT - BOTTOM, TOP)
                parts.append(
                    f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" stroke="{colour}" class="whisker"/>'
                )
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}" class="point" data-series="{escape(name)}">'
                f"<title>{escape(name)} {escape(p.label)}: {p.value:.3f}"
                + (f" [{p.lo:.3f}, {p.hi:.3f}]" if p.lo is not None and p.hi is not None else "")
                + "</title></circle>"
            )
        if len(line) > 1:
            parts.append(f'<polyline points="{" ".join(line)}" stroke="{colour}" class="series"/>')
        parts.append(
            f'<text x="{LEFT + 8 + 150 * k}" y="{HEIGHT - 8}" class="legend" fill="{colour}">● {escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, y_label: str, x_label: str = "step"
) -> str:
    """Lines on one axis of their own (one chart per quantity, so a rate never shares an axis with a loss)."""
    xs = [x for x_values, _ in series.values() for x in x_values]
    ys = [y for _, y_values in series.values() for y in y_values]
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y_lo, y_hi = _bounds(ys)
    parts = _frame(title, y_lo, y_hi, y_label)
    for x in _y_ticks(x_lo, x_hi, 5):
        px = _scale(x, x_lo, x_hi, LEFT, WIDTH - RIGHT)
        text = f"{x:,.0f}" if x_hi - x_lo >= 8 else f"{x:.3g}"  # a short run's steps would round to repeated labels
        parts.append(f'<text x="{px:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" class="tick">{text}</text>')
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - BOTTOM + 30}" text-anchor="middle" '
        f'class="axis">{escape(x_label)}</text>'
    )
    for k, (name, (x_values, y_values)) in enumerate(sorted(series.items())):
        colour = next((c for role, c in COLOURS.items() if role in name), "#8250df")
        points = " ".join(
            f"{_scale(x, x_lo, x_hi, LEFT, WIDTH - RIGHT):.1f},{_scale(y, y_lo, y_hi, HEIGHT - BOTTOM, TOP):.1f}"
            for x, y in zip(x_values, y_values, strict=True)
        )
        parts.append(
            f'<polyline points="{points}" stroke="{colour}" class="series"><title>{escape(name)}</title></polyline>'
        )
        parts.append(
            f'<text x="{LEFT + 8 + 180 * k}" y="{TOP + 12}" class="legend" fill="{colour}">— {escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def reliability_chart(bins_by_model: dict[str, Sequence[dict]], title: str = "Reliability diagram") -> str:
    """Accuracy against confidence per bin, one line per model, with the diagonal of perfect calibration."""
    parts = _frame(title, 0.0, 1.0, "accuracy")
    x_of = lambda v: _scale(v, 0.0, 1.0, LEFT, WIDTH - RIGHT)  # noqa: E731
    y_of = lambda v: _scale(v, 0.0, 1.0, HEIGHT - BOTTOM, TOP)  # noqa: E731
    parts.append(
        f'<line x1="{x_of(0):.1f}" y1="{y_of(0):.1f}" x2="{x_of(1):.1f}" y2="{y_of(1):.1f}" class="diagonal"/>'
    )
    for tick in _y_ticks(0.0, 1.0):
        parts.append(
            f'<text x="{x_of(tick):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" class="tick">{tick:.2f}</text>'
        )
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - BOTTOM + 30}" text-anchor="middle" '
        'class="axis">confidence</text>'
    )
    for k, (model, bins) in enumerate(bins_by_model.items()):
        colour = COLOURS.get(model, "#8250df")
        filled = [
            b for b in bins if b.get("count") and b.get("confidence") is not None and b.get("accuracy") is not None
        ]
        points = " ".join(f"{x_of(b['confidence']):.1f},{y_of(b['accuracy']):.1f}" for b in filled)
        if len(filled) > 1:
            parts.append(f'<polyline points="{points}" stroke="{colour}" class="series"/>')
        for b in filled:
            parts.append(
                f'<circle cx="{x_of(b["confidence"]):.1f}" cy="{y_of(b["accuracy"]):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(model)}: confidence {b['confidence']:.2f}, accuracy {b['accuracy']:.2f}, "
                f"n={b['count']}</title></circle>"
            )
        parts.append(
            f'<text x="{LEFT + 8 + 120 * k}" y="{TOP + 12}" class="legend" fill="{colour}">● {escape(model)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)

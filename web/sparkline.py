"""Tiny server-side SVG sparklines: recent closes with the forecast fan appended (no JavaScript)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 200
HEIGHT = 44
PAD = 3.0
FAN_SHARE = 0.2  # of the width, for the forecast sessions after the last close


@dataclass(frozen=True)
class FanStep:
    """One forecast session: the median close, its 80% band and (if stored) its 50% band."""

    median: float
    lo80: float | None
    hi80: float | None
    lo50: float | None = None
    hi50: float | None = None


def _points(pairs: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in pairs)


def _band(
    anchor: tuple[float, float], upper: list[tuple[float, float]], lower: list[tuple[float, float]]
) -> str:
    """A closed band from the anchor along the upper bounds and back along the lower ones."""
    return _points([anchor, *upper, *reversed(lower)])


def sparkline_svg(
    closes: Sequence[float],
    fan: Sequence[FanStep] = (),
    *,
    anchor: int | None = None,
    label: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """An inline <svg>: a polyline with one point per close and, when `anchor` (the index of the
    forecast's as-of close in `closes`) is given, the fan drawn from that close one step per
    forecast session: the 80% band, the darker 50% band where every step has one, the median.
    """
    if not closes:
        return Markup("")
    use_fan = bool(fan) and anchor is not None and 0 <= anchor < len(closes)
    slots = max(len(closes) - 1, (anchor or 0) + len(fan) if use_fan else 0)
    values = list(closes)
    if use_fan:
        for step in fan:
            values.extend(v for v in (step.median, step.lo80, step.hi80) if v is not None)
    low, high = min(values), max(values)
    span = (high - low) or 1.0

    # Sessions after the last close (the fan) get wider steps so four of them stay visible.
    last = len(closes) - 1
    inner = width - 2 * PAD
    past = inner * (1 - FAN_SHARE) if slots > last else inner
    step = past / last if last else 0.0
    fan_step = (inner - past) / (slots - last) if slots > last else 0.0

    def xy(i: float, value: float) -> tuple[float, float]:
        if not slots:
            x = PAD + inner / 2
        elif i <= last:
            x = PAD + step * i
        else:
            x = PAD + past + fan_step * (i - last)
        y = PAD + (height - 2 * PAD) * (1 - (value - low) / span)
        return x, y

    parts = [
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}">'
    ]
    if use_fan:
        assert anchor is not None
        start = xy(anchor, closes[anchor])
        steps = [(anchor + h, s) for h, s in enumerate(fan, start=1)]
        if all(s.lo80 is not None and s.hi80 is not None for _, s in steps):
            upper = [xy(i, s.hi80) for i, s in steps]  # type: ignore[arg-type]
            lower = [xy(i, s.lo80) for i, s in steps]  # type: ignore[arg-type]
            parts.append(f'<polygon class="band80" points="{_band(start, upper, lower)}"/>')
        if all(s.lo50 is not None and s.hi50 is not None for _, s in steps):
            upper = [xy(i, s.hi50) for i, s in steps]  # type: ignore[arg-type]
            lower = [xy(i, s.lo50) for i, s in steps]  # type: ignore[arg-type]
            parts.append(f'<polygon class="band50" points="{_band(start, upper, lower)}"/>')
        median = [start, *(xy(i, s.median) for i, s in steps)]
        parts.append(f'<polyline class="median" points="{_points(median)}"/>')
    line = [xy(i, c) for i, c in enumerate(closes)]
    parts.append(f'<polyline class="closes" points="{_points(line)}"/>')
    last_x, last_y = line[-1]
    parts.append(f'<circle class="last" cx="{last_x:.1f}" cy="{last_y:.1f}" r="2"/>')
    parts.append("</svg>")
    return Markup("".join(parts))

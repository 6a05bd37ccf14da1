"""The ticker page's main chart: the forecast's fan behind the actual candles, its close line and
candles.

A plotly JSON figure (web.charts.Figure) on the common layout of web.charts.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

import pandas as pd

from forecasting.calendar import off_calendar
from forecasting.quantiles import INTERVAL_LEVELS
from web.charts import FORECAST, Figure, figure, iso
from web.forecasts import ForecastView

UP, DOWN = "#1a9e77", "#d9534f"
# Fan shading, widest (lightest) first so the narrower bands are drawn on top.
FAN_FILL = {
    90: "rgba(111, 66, 193, 0.14)",
    80: "rgba(111, 66, 193, 0.24)",
    50: "rgba(111, 66, 193, 0.36)",
}
RANGE_BUTTONS = [
    {"count": 3, "label": "3M", "step": "month", "stepmode": "backward"},
    {"count": 6, "label": "6M", "step": "month", "stepmode": "backward"},
    {"count": 1, "label": "1Y", "step": "year", "stepmode": "backward"},
    {"label": "all", "step": "all"},
]


def _x(day: date, later: timedelta) -> str:
    """`later` after midnight of `day` as a plotly date string (comparable as text)."""
    hours, rest = divmod(int(later.total_seconds()), 3600)
    return f"{day.isoformat()} {hours:02d}:{rest // 60:02d}"


def non_sessions(first: date, last: date, exchange: str) -> list[str]:
    """Weekdays in [first, last] that are not sessions of `exchange` (holidays), for rangebreaks."""
    weekdays = pd.bdate_range(first, last)
    if len(weekdays) == 0:
        return []
    return [ts.date().isoformat() for ts in weekdays[off_calendar(weekdays, exchange)]]


def _actual_traces(candles: pd.DataFrame) -> list[dict[str, Any]]:
    """One candlestick trace of the actuals plus legend-only entries for its up/down colours."""
    trace = {
        "type": "candlestick",
        "x": [ts.date().isoformat() for ts in candles.index],
        "open": candles["open"].tolist(),
        "high": candles["high"].tolist(),
        "low": candles["low"].tolist(),
        "close": candles["close"].tolist(),
        "name": "actual",
        "legendgroup": "actual",
        "showlegend": False,
        "increasing": {"line": {"color": UP}, "fillcolor": UP},
        "decreasing": {"line": {"color": DOWN}, "fillcolor": DOWN},
    }
    keys = [
        {
            "type": "scatter",
            "x": [None],
            "y": [None],
            "mode": "markers",
            "marker": {"color": color, "symbol": "square", "size": 11},
            "name": name,
            "legendgroup": "actual",
        }
        for color, name in ((UP, "actual up (close ≥ open)"), (DOWN, "actual down (close < open)"))
    ]
    return [trace, *keys]


def _fan(
    traces: list[dict[str, Any]], view: ForecastView, x: list[str], anchor: float | None
) -> list[float]:
    """Append one shaded band per stored interval level to `traces`; returns the y's."""
    ys: list[float] = []
    lead = [anchor] if anchor is not None else []
    for level in sorted(INTERVAL_LEVELS, reverse=True):
        if not view.has_level(level):
            continue
        bounds = [c.bounds(level) for c in view.candles]
        lo = lead + [float(b[0]) for b in bounds]  # type: ignore[arg-type]
        hi = lead + [float(b[1]) for b in bounds]  # type: ignore[arg-type]
        ys += lo + hi
        common = {
            "type": "scatter",
            "x": x,
            "mode": "lines",
            "legendgroup": f"band{level}",
            "hoverinfo": "skip",
            "line": {"width": 0},
        }
        traces.append({**common, "y": hi, "showlegend": False})
        traces.append(
            {
                **common,
                "y": lo,
                "fill": "tonexty",
                "fillcolor": FAN_FILL[level],
                "name": f"{level}% close interval",
            }
        )
    return ys


def _centre(view: ForecastView, x: list[str], anchor: float | None) -> dict[str, Any]:
    """The one centre line: the served close (the median of the served distribution)."""
    lead = [anchor] if anchor is not None else []
    return {
        "type": "scatter",
        "x": x,
        "y": lead + [float(c.close) for c in view.candles],
        "mode": "lines+markers",
        "line": {"color": FORECAST, "width": 2, "dash": "dot"},
        "marker": {"size": 6},
        "name": "forecast close (median)",
    }


def candle_chart(
    candles: pd.DataFrame,
    view: ForecastView | None,
    *,
    exchange: str,
    visible_from: date | None = None,
    axis_from: date | None = None,
) -> Figure:
    """Actual candles (up/down), the forecast's fan, median and candles beside them.

    The x axis starts at `visible_from` (about three months back) with buttons for 3M/6M/1Y/all;
    weekends and the exchange's holidays (from `axis_from`, or the first candle, on: candles
    fetched later by the page fit the same axis) are removed from the axis. When a forecast day
    already has an actual candle (as-of pages) boxmode "group" puts the two side by side in the
    day's slot (actual left, forecast right, both narrower), never on top of each other.
    """
    days = [ts.date() for ts in candles.index]
    # plotly draws trace types in the order they first appear: the fan (scatter) goes first so
    # that it lies behind the actual candles, which keep their colours on as-of pages.
    fan: list[dict[str, Any]] = []
    traces = _actual_traces(candles)
    all_days = list(days)
    ys: list[float] = []
    end_x: str | None = None
    beside = False
    if view is not None:
        fc = view.candles
        all_days += [c.date for c in fc]
        beside = bool({c.date for c in fc} & set(days))
        x = iso([c.date for c in fc])
        anchor = None
        if view.as_of in days:
            anchor = float(candles["close"].iloc[days.index(view.as_of)])
        fan_x = ([view.as_of.isoformat()] if anchor is not None else []) + x
        ys += _fan(fan, view, fan_x, anchor)
        traces.append(_centre(view, fan_x, anchor))
        traces.append(
            {
                "type": "candlestick",
                "x": x,
                "open": [c.open for c in fc],
                "high": [c.high for c in fc],
                "low": [c.low for c in fc],
                "close": [c.close for c in fc],
                "text": [f"forecast h{c.horizon} for {c.date.isoformat()}" for c in fc],
                "name": f"forecast candles ({view.source})",
                "increasing": {
                    "line": {"color": FORECAST, "width": 2.5},
                    "fillcolor": "rgba(111, 66, 193, 0.35)",
                },
                "decreasing": {"line": {"color": FORECAST, "width": 2.5}, "fillcolor": FORECAST},
                # whisker caps make the forecast high and low readable at the default zoom
                "whiskerwidth": 0.6,
            }
        )
        ys += [c.low for c in fc] + [c.high for c in fc]
        end_x = _x(fc[-1].date, timedelta(hours=16))
    xaxis: dict[str, Any] = {
        "rangeslider": {"visible": False},
        "type": "date",
        "rangeselector": {"buttons": RANGE_BUTTONS, "x": 0, "y": 1.0, "yanchor": "bottom"},
    }
    if all_days:
        first = min(all_days) if axis_from is None else min(min(all_days), axis_from)
        holidays = non_sessions(first, max(all_days), exchange)
        xaxis["rangebreaks"] = [{"bounds": ["sat", "mon"]}, {"values": holidays}]
    if visible_from is not None and days:
        shown = candles.loc[candles.index >= pd.Timestamp(visible_from)]
        ys += shown["low"].tolist() + shown["high"].tolist()
        before = [d for d in days if d < visible_from]
        start = f"{before[-1].isoformat()} 12:00" if before else visible_from.isoformat()
        xaxis["range"] = [start, end_x or f"{days[-1].isoformat()} 14:00"]
    yaxis: dict[str, Any] = {"title": {"text": "price"}, "fixedrange": False}
    finite = [v for v in ys if v is not None and math.isfinite(v)]
    if "range" in xaxis and finite:
        pad = (max(finite) - min(finite)) * 0.04 or 1.0
        yaxis["range"] = [min(finite) - pad, max(finite) + pad]
    # Same-day actual and forecast candles share the day's slot side by side (left, right).
    return figure(
        fan + traces,
        xaxis=xaxis,
        yaxis=yaxis,
        boxmode="group" if beside else "overlay",  # same-day actual and forecast side by side
        boxgap=0.2,
        legend={"orientation": "h", "yanchor": "top", "y": -0.14, "x": 0},
        margin={"l": 48, "r": 12, "t": 36, "b": 48},
    )

"""Plotly figures for the pages, embedded as <div>s that draw with the local plotly.js.

Figures are plain plotly JSON dicts ({"data": [traces], "layout": {...}}) handed to
plotly.io.to_html without validation: building them as plotly.graph_objects validated and
deep-copied the template on every update and cost ~40 ms of a ~60 ms ticker page. The template is
plotly_white's, read once and trimmed to the trace types used here (scatter, bar), so each figure
carries ~3 KB of template instead of ~7 KB. The figures' shape is checked by tests/web (the JSON
embedded in the page) and drawn by a real browser in the page tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import pandas as pd
from markupsafe import Markup

from forecasting.calendar import off_calendar
from forecasting.quantiles import INTERVAL_LEVELS
from web.forecasts import ForecastView

PLOTLY_CONFIG = {"responsive": True, "displaylogo": False, "displayModeBar": False}
UP, DOWN = "#1a9e77", "#d9534f"
FC_UP, FC_DOWN, BAND = "#6f42c1", "#e8890c", "rgba(111, 66, 193, 0.15)"
FORECAST = "#6f42c1"
# Fan shading, widest (lightest) first so the narrower bands are drawn on top.
FAN_FILL = {
    90: "rgba(111, 66, 193, 0.14)",
    80: "rgba(111, 66, 193, 0.24)",
    50: "rgba(111, 66, 193, 0.36)",
}
HORIZON_COLORS = {1: "#6f42c1", 2: "#2c7fb8", 3: "#1a9e77", 4: "#e8890c"}
RANGE_BUTTONS = [
    {"count": 3, "label": "3M", "step": "month", "stepmode": "backward"},
    {"count": 6, "label": "6M", "step": "month", "stepmode": "backward"},
    {"count": 1, "label": "1Y", "step": "year", "stepmode": "backward"},
    {"label": "all", "step": "all"},
]
NEAR_UNIFORM = 0.98  # normalised attention entropy above which attention is called near-uniform
TEMPLATE_TRACES = ("scatter", "bar")  # the template's per-trace defaults kept (the types used)
Figure = dict[str, Any]  # plotly JSON: {"data": [trace dicts], "layout": {...}}


@lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    """plotly_white as JSON, with only the trace defaults of TEMPLATE_TRACES (read once)."""
    import plotly.io as pio

    template = pio.templates["plotly_white"].to_plotly_json()
    data = {name: template["data"][name] for name in TEMPLATE_TRACES if name in template["data"]}
    return {"layout": template["layout"], "data": data}


def to_div(fig: Figure, height: int) -> Markup:
    """The figure as an HTML fragment that expects window.Plotly (no <script src>, no CDN)."""
    import plotly.io as pio

    html = pio.to_html(
        fig,
        include_plotlyjs=False,
        full_html=False,
        config=PLOTLY_CONFIG,
        default_height=height,
        validate=False,
    )
    return Markup(html)  # plotly's markup around JSON of our own numbers and dates


def _figure(traces: list[dict[str, Any]], **layout: Any) -> Figure:
    """A figure of `traces` on the common layout (white template, top legend, unified hover);
    `layout` keys replace the common ones."""
    base: dict[str, Any] = {
        "template": _template(),
        "margin": {"l": 48, "r": 12, "t": 28, "b": 36},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        "hovermode": "x unified",
    }
    return {"data": traces, "layout": {**base, **layout}}


def _iso(days: Sequence[date]) -> list[str]:
    return [d.isoformat() for d in days]


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
    """Append one shaded band per stored interval level plus the median close line to `traces`;
    returns the y's."""
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
    median = [
        c.quantiles[3] if c.quantiles and c.quantiles[3] is not None else c.close
        for c in view.candles
    ]
    traces.append(
        {
            "type": "scatter",
            "x": x,
            "y": lead + [float(v) for v in median],
            "mode": "lines+markers",
            "line": {"color": FORECAST, "width": 2, "dash": "dot"},
            "marker": {"size": 5},
            "name": "forecast median close",
        }
    )
    return ys


def candle_chart(
    candles: pd.DataFrame,
    view: ForecastView | None,
    *,
    exchange: str,
    visible_from: date | None = None,
) -> Figure:
    """Actual candles (up/down), the forecast's fan, median and candles beside them.

    The x axis starts at `visible_from` (about three months back) with buttons for 3M/6M/1Y/all;
    weekends and the exchange's holidays are removed from the axis. When a forecast day already
    has an actual candle (as-of pages) boxmode "group" puts the two side by side in the day's slot
    (actual left, forecast right, both narrower), never on top of each other.
    """
    days = [ts.date() for ts in candles.index]
    traces = _actual_traces(candles)
    all_days = list(days)
    ys: list[float] = []
    end_x: str | None = None
    beside = False
    if view is not None:
        fc = view.candles
        all_days += [c.date for c in fc]
        beside = bool({c.date for c in fc} & set(days))
        x = _iso([c.date for c in fc])
        anchor = None
        if view.as_of in days:
            anchor = float(candles["close"].iloc[days.index(view.as_of)])
        fan_x = ([view.as_of.isoformat()] if anchor is not None else []) + x
        ys += _fan(traces, view, fan_x, anchor)
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
                    "line": {"color": FORECAST},
                    "fillcolor": "rgba(111, 66, 193, 0.25)",
                },
                "decreasing": {"line": {"color": FORECAST}, "fillcolor": FORECAST},
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
        holidays = non_sessions(min(all_days), max(all_days), exchange)
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
    return _figure(
        traces,
        xaxis=xaxis,
        yaxis=yaxis,
        boxmode="group" if beside else "overlay",  # same-day actual and forecast side by side
        boxgap=0.2,
        legend={"orientation": "h", "yanchor": "top", "y": -0.14, "x": 0},
        margin={"l": 48, "r": 12, "t": 36, "b": 48},
    )


def history_chart(rows: Sequence[Any]) -> Figure:
    """Forecast closes per horizon against the actual close, by target date (all horizons on)."""
    actual = sorted(
        {r["target_date"]: r["actual_close"] for r in rows if r["actual_close"]}.items()
    )
    traces: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "x": _iso([d for d, _ in actual]),
            "y": [v for _, v in actual],
            "mode": "lines",
            "name": "actual close",
            "line": {"color": "#333", "width": 2},
        }
    ]
    for horizon, color in HORIZON_COLORS.items():
        points = sorted((r["target_date"], r["close"]) for r in rows if r["horizon"] == horizon)
        traces.append(
            {
                "type": "scatter",
                "x": _iso([d for d, _ in points]),
                "y": [v for _, v in points],
                "mode": "markers",
                "marker": {"color": color, "size": 6},
                "name": f"h{horizon} forecast",
            }
        )
    return _figure(traces, xaxis={"type": "date"}, yaxis={"title": {"text": "close"}})


def rolling_mae_chart(daily: pd.DataFrame, sessions: int) -> Figure:
    """Rolling `sessions`-session MAE of the model and of the naive forecast, by as-of date.

    `daily` has one row per as-of date (index) with columns model_mae and naive_mae.
    """
    rolled = daily.rolling(sessions, min_periods=min(5, sessions)).mean().dropna()
    x = _iso([ts.date() if hasattr(ts, "date") else ts for ts in rolled.index])
    traces = [
        {
            "type": "scatter",
            "x": x,
            "y": rolled["model_mae"].tolist(),
            "mode": "lines",
            "name": "model MAE",
            "line": {"color": FORECAST, "width": 2},
        },
        {
            "type": "scatter",
            "x": x,
            "y": rolled["naive_mae"].tolist(),
            "mode": "lines",
            "name": "naive MAE",
            "line": {"color": "#555", "width": 2, "dash": "dash"},
        },
    ]
    return _figure(
        traces, xaxis={"type": "date"}, yaxis={"title": {"text": "MAE"}, "rangemode": "tozero"}
    )


def attention_entropy(weights: Sequence[float]) -> float | None:
    """Entropy of the weights divided by log(n): 1.0 means uniform (as forecasting.train's)."""
    w = [float(v) for v in weights if v is not None and float(v) > 0]
    total = sum(w)
    if len(weights) < 2 or total <= 0:
        return None
    p = [v / total for v in w]
    return -sum(v * math.log(v) for v in p) / math.log(len(weights))


def attention_chart(view: ForecastView) -> Figure:
    """Attention weight per past session of the input window against the uniform 1/n line."""
    labels = _iso(view.attention_dates) or [str(i + 1) for i in range(len(view.attention))]
    weights = list(view.attention)
    uniform = 1.0 / len(weights)
    traces = [
        {"type": "bar", "x": labels, "y": weights, "marker": {"color": FC_UP}, "name": "attention"},
        {
            "type": "scatter",
            "x": [labels[0], labels[-1]],
            "y": [uniform, uniform],
            "mode": "lines",
            "line": {"color": "#333", "width": 1.5, "dash": "dash"},
            "name": f"uniform (1/{len(weights)})",
        },
    ]
    top = max([*weights, uniform]) * 1.15
    return _figure(
        traces,
        xaxis={"type": "category", "nticks": 8},
        yaxis={"title": {"text": "weight"}, "range": [0, top]},
        showlegend=True,
        bargap=0.1,
    )

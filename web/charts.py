"""Plotly figures for the pages, built in Python and embedded as <div>s (local plotly.js)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from markupsafe import Markup

from web.forecasts import ForecastView

PLOTLY_CONFIG = {"responsive": True, "displaylogo": False, "displayModeBar": False}
UP, DOWN = "#1a9e77", "#d9534f"
FC_UP, FC_DOWN, BAND = "#6f42c1", "#e8890c", "rgba(111, 66, 193, 0.15)"
HORIZON_COLORS = {1: "#6f42c1", 2: "#9b7bd6", 3: "#c0a6ea", 4: "#e8890c"}


def to_div(fig: go.Figure, height: int) -> Markup:
    """The figure as an HTML fragment that expects window.Plotly (no <script src>, no CDN)."""
    html = fig.to_html(
        include_plotlyjs=False, full_html=False, config=PLOTLY_CONFIG, default_height=height
    )
    return Markup(html)  # plotly's markup around JSON of our own numbers and dates


def _layout(fig: go.Figure, **extra: Any) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        margin={"l": 48, "r": 12, "t": 28, "b": 36},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        hovermode="x unified",
        **extra,
    )
    return fig


def _iso(days: Sequence[date]) -> list[str]:
    return [d.isoformat() for d in days]


def _gaps(present: Sequence[date]) -> list[str]:
    """Weekdays between the first and last date without a session (holidays) to hide."""
    if not present:
        return []
    weekdays = pd.bdate_range(min(present), max(present))
    have = set(present)
    return [d.date().isoformat() for d in weekdays if d.date() not in have]


def candle_chart(candles: pd.DataFrame, view: ForecastView | None) -> go.Figure:
    """Actual candles, the forecast's four candles in their own colours and the close band."""
    days = [ts.date() for ts in candles.index]
    fig = go.Figure(
        go.Candlestick(
            x=_iso(days),
            open=candles["open"].tolist(),
            high=candles["high"].tolist(),
            low=candles["low"].tolist(),
            close=candles["close"].tolist(),
            name="actual",
            increasing={"line": {"color": UP}, "fillcolor": UP},
            decreasing={"line": {"color": DOWN}, "fillcolor": DOWN},
        )
    )
    all_days = list(days)
    if view is not None:
        fc = view.candles
        all_days += [c.date for c in fc]
        band_x = [c.date for c in fc]
        lo = [c.close_lo if c.close_lo is not None else c.close for c in fc]
        hi = [c.close_hi if c.close_hi is not None else c.close for c in fc]
        if view.as_of in days:
            anchor = float(candles["close"].iloc[days.index(view.as_of)])
            band_x, lo, hi = [view.as_of, *band_x], [anchor, *lo], [anchor, *hi]
        fig.add_trace(
            go.Scatter(
                x=_iso(band_x),
                y=hi,
                mode="lines",
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=_iso(band_x),
                y=lo,
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=BAND,
                name="80% close interval",
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Candlestick(
                x=_iso([c.date for c in fc]),
                open=[c.open for c in fc],
                high=[c.high for c in fc],
                low=[c.low for c in fc],
                close=[c.close for c in fc],
                name=f"forecast ({view.source})",
                increasing={"line": {"color": FC_UP}, "fillcolor": "rgba(111, 66, 193, 0.45)"},
                decreasing={"line": {"color": FC_DOWN}, "fillcolor": "rgba(232, 137, 12, 0.45)"},
            )
        )
    rangebreaks = [{"bounds": ["sat", "mon"]}, {"values": _gaps(sorted(set(all_days)))}]
    return _layout(
        fig,
        xaxis={"rangeslider": {"visible": False}, "rangebreaks": rangebreaks, "type": "date"},
        yaxis={"title": {"text": "price"}, "fixedrange": False},
    )


def history_chart(rows: Sequence[Any]) -> go.Figure:
    """Forecast closes per horizon against the actual close, by target date."""
    fig = go.Figure()
    actual = sorted(
        {r["target_date"]: r["actual_close"] for r in rows if r["actual_close"]}.items()
    )
    fig.add_trace(
        go.Scatter(
            x=_iso([d for d, _ in actual]),
            y=[v for _, v in actual],
            mode="lines",
            name="actual close",
            line={"color": "#333", "width": 2},
        )
    )
    for horizon, color in HORIZON_COLORS.items():
        points = sorted((r["target_date"], r["close"]) for r in rows if r["horizon"] == horizon)
        fig.add_trace(
            go.Scatter(
                x=_iso([d for d, _ in points]),
                y=[v for _, v in points],
                mode="markers",
                marker={"color": color, "size": 6},
                name=f"h{horizon} forecast",
                visible=True if horizon in (1, 4) else "legendonly",
            )
        )
    return _layout(fig, xaxis={"type": "date"}, yaxis={"title": {"text": "close"}})


def attention_chart(view: ForecastView) -> go.Figure:
    """Attention weight per past session of the forecast's input window."""
    labels = _iso(view.attention_dates) or [str(i + 1) for i in range(len(view.attention))]
    fig = go.Figure(
        go.Bar(x=labels, y=list(view.attention), marker={"color": FC_UP}, name="attention")
    )
    return _layout(
        fig,
        xaxis={"type": "category", "nticks": 8},
        yaxis={"title": {"text": "weight"}},
        showlegend=False,
        bargap=0.1,
    )

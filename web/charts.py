"""Plotly figures for the pages, embedded as <div>s that draw with the local plotly.js.

Figures are plain plotly JSON dicts ({"data": [traces], "layout": {...}}) handed to
plotly.io.to_html without validation: building them as plotly.graph_objects validated and
deep-copied the template on every update and cost ~40 ms of a ~60 ms ticker page. The template is
plotly_white's, read once and trimmed to the trace types used here (scatter, bar), so each figure
carries ~3 KB of template instead of ~7 KB. The figures' shape is checked by tests/web (the JSON
embedded in the page) and drawn by a real browser in the page tests. The candle chart with the
forecast fan is in web.candle_chart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from functools import lru_cache
from typing import Any

import pandas as pd
from markupsafe import Markup

from web.forecasts import ForecastView

PLOTLY_CONFIG = {"responsive": True, "displaylogo": False, "displayModeBar": False}
FORECAST = "#6f42c1"
HORIZON_COLORS = {1: "#6f42c1", 2: "#2c7fb8", 3: "#1a9e77", 4: "#e8890c"}
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


def figure(traces: list[dict[str, Any]], **layout: Any) -> Figure:
    """A figure of `traces` on the common layout (white template, top legend, unified hover);
    `layout` keys replace the common ones."""
    base: dict[str, Any] = {
        "template": _template(),
        "margin": {"l": 48, "r": 12, "t": 28, "b": 36},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        "hovermode": "x unified",
    }
    return {"data": traces, "layout": {**base, **layout}}


def iso(days: Sequence[date]) -> list[str]:
    return [d.isoformat() for d in days]


def history_chart(rows: Sequence[Any]) -> Figure:
    """Forecast closes per horizon against the actual close, by target date (all horizons on)."""
    actual = sorted(
        {r["target_date"]: r["actual_close"] for r in rows if r["actual_close"]}.items()
    )
    traces: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "x": iso([d for d, _ in actual]),
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
                "x": iso([d for d, _ in points]),
                "y": [v for _, v in points],
                "mode": "markers",
                "marker": {"color": color, "size": 6},
                "name": f"h{horizon} forecast",
            }
        )
    return figure(traces, xaxis={"type": "date"}, yaxis={"title": {"text": "close"}})


def rolling_score_chart(rolled: pd.DataFrame, sessions: int) -> Figure:
    """The rolling `sessions`-date mean 80% interval score of the served model and of GARCH(1,1)
    (forecasting.skill.rolling_interval_score: one column per model, indexed by as-of date)."""
    x = iso([ts.date() if hasattr(ts, "date") else ts for ts in rolled.index])
    styles = {
        "candlecast": ("candlecast", {"color": FORECAST, "width": 2}),
        "garch": ("GARCH(1,1)", {"color": "#555", "width": 2, "dash": "dash"}),
    }
    traces = [
        {
            "type": "scatter",
            "x": x,
            "y": [float(v) for v in rolled[model]],
            "mode": "lines",
            "name": styles.get(model, (model, {}))[0],
            "line": styles.get(model, (model, {}))[1],
        }
        for model in rolled.columns
    ]
    return figure(
        traces,
        xaxis={"type": "date"},
        yaxis={"title": {"text": f"interval score ({sessions}-date mean)"}, "rangemode": "tozero"},
    )


def attention_entropy(weights: Sequence[float]) -> float | None:
    """Entropy of the weights divided by log(n): 1.0 means uniform (as forecasting.train's)."""
    w = [float(v) for v in weights if v is not None and float(v) > 0]
    total = sum(w)
    if len(weights) < 2 or total <= 0:
        return None
    p = [v / total for v in w]
    return -sum(v * math.log(v) for v in p) / math.log(len(weights))


RECENCY_RATIO = 1.25  # newest/oldest tenth weight ratio beyond which attention leans one way


def attention_sentence(weights: Sequence[float], dates: Sequence[date] = ()) -> str | None:
    """One sentence on what the attention weights (oldest session first) say, derived from them:
    the mean weight of the newest tenth of the window against the oldest tenth, and the entropy."""
    w = [float(v) for v in weights]
    entropy = attention_entropy(w)
    if entropy is None:
        return None
    n, tenth = len(w), max(1, len(w) // 10)
    oldest, newest = sum(w[:tenth]) / tenth, sum(w[-tenth:]) / tenth
    ratio = newest / oldest if oldest > 0 else math.inf
    if ratio > RECENCY_RATIO:
        return (
            f"Attention leans toward recent sessions: the newest tenth of the {n}-session window "
            f"gets {ratio:.1f}x the weight of the oldest tenth."
        )
    if ratio < 1 / RECENCY_RATIO:
        return (
            f"Attention leans toward older sessions: the oldest tenth of the {n}-session window "
            f"gets {1 / ratio:.1f}x the weight of the newest tenth."
        )
    if entropy > NEAR_UNIFORM:
        return (
            f"Attention is near-uniform: the model weighs the last {n} sessions about equally "
            f"(newest tenth {ratio:.2f}x the oldest), so this chart says little about which days "
            "mattered."
        )
    top = max(range(n), key=lambda i: w[i])
    when = dates[top].isoformat() if len(dates) == n else f"session {top + 1} of {n}"
    return (
        f"Attention has no recency trend (newest tenth {ratio:.2f}x the oldest); its largest "
        f"weight, {w[top] * n:.1f}x uniform, is on {when}."
    )


def attention_chart(view: ForecastView) -> Figure:
    """Attention weight per past session of the input window against the uniform 1/n line."""
    labels = iso(view.attention_dates) or [str(i + 1) for i in range(len(view.attention))]
    weights = list(view.attention)
    uniform = 1.0 / len(weights)
    traces = [
        {
            "type": "bar",
            "x": labels,
            "y": weights,
            "marker": {"color": FORECAST},
            "name": "attention",
        },
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
    return figure(
        traces,
        xaxis={"type": "category", "nticks": 8},
        yaxis={"title": {"text": "weight"}, "range": [0, top]},
        showlegend=True,
        bargap=0.1,
    )

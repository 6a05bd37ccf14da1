"""One self-contained, offline HTML report of scored backtest rows.

plotly.js is embedded once, inline, in the first figure; nothing is loaded from a CDN, so the file
can be mailed or opened on a machine with no internet. All text from the data is HTML-escaped,
both in the page and in figure labels (plotly.js renders label text as a small subset of HTML).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from forecasting.quantiles import INTERVAL_LEVELS, QUANTILE_LEVELS, QUANTILE_NAMES
from forecasting.scoring import (
    LEVELS,
    rolling_scores,
    skill_table,
    summary_table,
)

SKILL_PLOT_METRICS = ("winkler_80", "pinball", "hl_ae")
SECTION_TITLES = {
    "skill": "Skill against baselines",
    "reliability": "Reliability of the quantiles and intervals",
    "rolling": "Rolling Winkler-80 interval score",
    "summary": "Summary table",
}
_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse;font-size:0.85em}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "th{background:#f3f3f3}.note{color:#555}"
)


def _e(text: object) -> str:
    return html.escape(str(text))


class _Figures:
    """Turns figures into HTML divs; only the first one carries plotly.js (inline)."""

    def __init__(self) -> None:
        self.first = True

    def __call__(self, fig: go.Figure) -> str:
        div = fig.to_html(full_html=False, include_plotlyjs=self.first, include_mathjax=False)
        self.first = False
        return div


def _skill_figure(skill: pd.DataFrame, model: str, baseline: str) -> go.Figure:
    fig = go.Figure()
    for metric in SKILL_PLOT_METRICS:
        s = skill[skill["metric"] == metric]
        if s.empty:
            continue
        pct = (s["ratio"] - 1.0) * 100.0
        fig.add_bar(
            x=[_e(f"h={h}") for h in s["horizon"]],
            y=pct,
            name=_e(metric),
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (s["ratio_hi"] - s["ratio"]) * 100.0,
                "arrayminus": (s["ratio"] - s["ratio_lo"]) * 100.0,
            },
        )
    fig.add_hline(y=0.0, line_color="black", line_width=1)
    fig.update_layout(
        title=_e(f"{model} vs {baseline}: score change in % (negative = better)"),
        barmode="group",
        yaxis_title="(ratio - 1) in %, 95% block-bootstrap interval",
        height=380,
    )
    return fig


def _reliability_figure(scored: pd.DataFrame, models: Sequence[str]) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Central intervals: coverage", "Quantiles: share of actuals below"),
    )
    nominal_iv = [level / 100.0 for level in LEVELS]
    for model in models:
        s = scored[scored["model"] == model]
        cover = [s[f"covered_{level}"].mean() for level in LEVELS]
        below = [s[f"below_{name}"].mean() for name in QUANTILE_NAMES]
        if pd.isna(cover).all() and pd.isna(below).all():
            continue
        name = _e(model)
        fig.add_scatter(x=nominal_iv, y=cover, name=name, legendgroup=name, row=1, col=1)
        fig.add_scatter(
            x=list(QUANTILE_LEVELS), y=below, name=name, legendgroup=name, showlegend=False,
            row=1, col=2,
        )  # fmt: skip
    for col in (1, 2):
        fig.add_scatter(
            x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "grey"},
            name="ideal", showlegend=col == 1, row=1, col=col,
        )  # fmt: skip
        fig.update_xaxes(title_text="nominal", range=[0, 1], row=1, col=col)
        fig.update_yaxes(title_text="observed", range=[0, 1], row=1, col=col)
    fig.update_layout(height=420)
    return fig


def _rolling_figure(scored: pd.DataFrame, models: Sequence[str], window: int) -> go.Figure:
    mp = max(1, window // 3)  # short backtests still get a line
    rolling = rolling_scores(scored, "winkler_80", window, models=models, min_periods=mp)
    fig = go.Figure()
    for model, g in rolling.groupby("model", sort=False):
        fig.add_scatter(x=g["as_of_date"], y=g["rolling_mean"], mode="lines", name=_e(model))
    fig.update_layout(
        title=_e(f"Winkler-80 / as-of close, {window}-date rolling mean (same rows for all)"),
        yaxis_title="Winkler-80 (lower is better)",
        height=400,
    )
    return fig


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for v in row:
            text = f"{v:.4f}" if isinstance(v, float) else str(v)
            cells.append(f"<td>{_e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_html_report(
    scored: pd.DataFrame,
    path: str | Path,
    *,
    models: Sequence[str],
    baselines: Sequence[str],
    title: str,
    block: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    window: int = 63,
) -> Path:
    """Write the report for add_scores() rows to ``path`` and return it.

    Sections: header (tickers, dates, n), skill bars per model vs baseline with bootstrap
    intervals, reliability diagram, rolling Winkler-80, and the summary table per model/horizon.
    """
    path = Path(path)
    shown = list(dict.fromkeys([*models, *baselines]))
    scored = scored[scored["model"].isin(shown)]
    figure = _Figures()
    dates = pd.to_datetime(pd.Series(scored["as_of_date"].unique()))
    tickers = sorted(str(t) for t in scored["ticker"].unique())
    span = f"{dates.min():%Y-%m-%d} .. {dates.max():%Y-%m-%d}" if len(dates) else "no dates"
    parts = [
        f"<h1>{_e(title)}</h1>",
        f"<p>Tickers ({len(tickers)}): {_e(', '.join(tickers))}</p>",
        f"<p>As-of dates: {_e(span)} ({len(dates)} dates); {len(scored)} rows; "
        f"models: {_e(', '.join(shown))}.</p>",
        "<p class='note'>Scores are divided by the as-of close; lower is better. Ratios compare "
        "two models on the same (ticker, as-of date, horizon) rows.</p>",
        f"<h2>{_e(SECTION_TITLES['skill'])}</h2>",
    ]
    skill = skill_table(
        scored, models, baselines, SKILL_PLOT_METRICS, block=block, n_boot=n_boot, seed=seed
    )
    n_figs = 0
    for model in models:
        for baseline in baselines:
            pair = skill[(skill["model"] == model) & (skill["baseline"] == baseline)]
            if not pair.empty:
                parts.append(figure(_skill_figure(pair, model, baseline)))
                n_figs += 1
    if not n_figs:
        parts.append("<p>No model/baseline pair shares scored rows.</p>")
    if not skill.empty:
        cols = ["model", "baseline", "metric", "horizon", "n", "ratio", "ratio_lo", "ratio_hi",
                "verdict", "model_better_tickers", "n_tickers"]  # fmt: skip
        parts.append(
            f"<details><summary>Skill numbers</summary>{_html_table(skill[cols])}</details>"
        )
    levels = ", ".join(
        f"{lv}% = q{round(lo * 100):02d}..q{round(hi * 100):02d}"
        for lv, (lo, hi) in INTERVAL_LEVELS.items()
    )
    parts += [
        f"<h2>{_e(SECTION_TITLES['reliability'])}</h2>",
        f"<p class='note'>Pooled over tickers and horizons. Intervals: {_e(levels)}.</p>",
        figure(_reliability_figure(scored, shown)),
        f"<h2>{_e(SECTION_TITLES['rolling'])}</h2>",
        figure(_rolling_figure(scored, shown, window)),
        f"<h2>{_e(SECTION_TITLES['summary'])}</h2>",
        _html_table(summary_table(scored, ("model", "horizon"))),
    ]
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path

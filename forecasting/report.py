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
HEADLINE_METRICS = ("winkler_80", "pinball", "hl_ae", "close_ae")
METRIC_NAMES = {
    "winkler_80": "Winkler-80 interval score",
    "pinball": "pinball loss (7 quantiles)",
    "hl_ae": "high/low absolute error",
    "close_ae": "close absolute error",
}
SECTION_TITLES = {
    "headline": "Headline: the model against each baseline",
    "skill": "Skill against baselines",
    "reliability": "Reliability of the quantiles and intervals",
    "rolling": "Rolling Winkler-80 interval score",
    "summary": "Summary table",
}
# One colour per model, the same in every chart and its legend.
PALETTE = ("#6f42c1", "#1a9e77", "#d9534f", "#e8890c", "#1f77b4", "#8c564b", "#17becf", "#7f7f7f")
_CSS = (
    "body{font-family:sans-serif;margin:2em auto;padding:0 1em;max-width:1200px}"
    "table{border-collapse:collapse;font-size:0.85em}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "th{background:#f3f3f3}.note{color:#555}"
    "td.better{background:#e3f5ee}td.worse{background:#fbe6e5}td.tie{color:#555}"
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


def _skill_figure(skill: pd.DataFrame, model: str, metric: str, colors: dict) -> go.Figure:
    """One metric: the model's score change against each baseline per horizon, with intervals."""
    fig = go.Figure()
    for baseline, s in skill.groupby("baseline", sort=False):
        pct = (s["ratio"] - 1.0) * 100.0
        fig.add_bar(
            x=[_e(f"h={h}") for h in s["horizon"]],
            y=pct,
            name=_e(baseline),
            marker_color=colors[baseline],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (s["ratio_hi"] - s["ratio"]) * 100.0,
                "arrayminus": (s["ratio"] - s["ratio_lo"]) * 100.0,
            },
        )
    fig.add_hline(y=0.0, line_color="black", line_width=1)
    fig.update_layout(
        title=_e(f"{METRIC_NAMES[metric]}: {model} against each baseline (negative = better)"),
        barmode="group",
        yaxis_title=_e(f"{metric}: (ratio - 1) in %, 95% interval"),
        height=380,
    )
    return fig


def _identical(skill: pd.DataFrame) -> pd.Series:
    """True for the rows of (model, baseline, metric) triples whose scores are the same on every
    row (identical forecasts for that metric: a ratio of exactly 1 with no interval)."""
    one = ((skill["ratio_lo"] - 1.0).abs() < 1e-12) & ((skill["ratio_hi"] - 1.0).abs() < 1e-12)
    return one.groupby([skill["model"], skill["baseline"], skill["metric"]]).transform("all")


def _headline(skill: pd.DataFrame) -> str:
    """One table: per model, baseline and metric a row; per horizon the ratio and its interval."""
    if skill.empty:
        return "<p>No model/baseline pair shares scored rows.</p>"
    values = skill["horizon"].unique()
    horizons = sorted(h for h in values if h != "all") + [h for h in values if h == "all"]
    head = "".join(f"<th>{'all h' if h == 'all' else f'h={h}'}</th>" for h in horizons)
    rows = []
    for (model, baseline, metric), g in skill.groupby(["model", "baseline", "metric"], sort=False):
        by_h = {r.horizon: r for r in g.itertuples(index=False)}
        cells = []
        for h in horizons:
            r = by_h.get(h)
            if r is None or pd.isna(r.ratio):
                cells.append("<td>—</td>")
                continue
            cls = {"better": "better", "worse": "worse"}.get(r.verdict, "tie")
            cells.append(
                f"<td class='{cls}'>{r.ratio:.3f} [{r.ratio_lo:.3f}, {r.ratio_hi:.3f}]</td>"
            )
        rows.append(
            f"<tr><td>{_e(model)}</td><td>{_e(baseline)}</td>"
            f"<td>{_e(METRIC_NAMES.get(metric, metric))}</td>{''.join(cells)}</tr>"
        )
    return (
        "<table id='headline'><thead><tr><th>model</th><th>baseline</th><th>metric</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<p class='note'>Each cell: model score / baseline score on the same rows, with its 95% "
        "block-bootstrap interval; green = better beyond the interval, red = worse, grey = inside "
        "the noise. Pairs whose forecasts are identical are left out.</p>"
    )


def _reliability_figure(scored: pd.DataFrame, models: Sequence[str], colors: dict) -> go.Figure:
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
        name, line = _e(model), {"color": colors[model]}  # one colour in both panels
        fig.add_scatter(
            x=nominal_iv, y=cover, name=name, legendgroup=name, line=line, marker=line,
            row=1, col=1,
        )  # fmt: skip
        fig.add_scatter(
            x=list(QUANTILE_LEVELS), y=below, name=name, legendgroup=name, showlegend=False,
            line=line, marker=line, row=1, col=2,
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


def _rolling_figure(
    scored: pd.DataFrame, models: Sequence[str], window: int, colors: dict
) -> go.Figure:
    mp = max(1, window // 3)  # short backtests still get a line
    rolling = rolling_scores(scored, "winkler_80", window, models=models, min_periods=mp)
    fig = go.Figure()
    for model, g in rolling.groupby("model", sort=False):
        fig.add_scatter(
            x=g["as_of_date"], y=g["rolling_mean"], mode="lines", name=_e(model),
            line={"color": colors[model]},
        )  # fmt: skip
    fig.update_layout(
        title=_e(f"Winkler-80 interval score / as-of close, {window}-date rolling mean"),
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
            text = ("—" if v != v else f"{v:.4f}") if isinstance(v, float) else str(v)
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

    Sections: header (tickers, dates, n), the headline table (the served model, models[0],
    against each baseline per metric and horizon, with bootstrap intervals), its skill bars per
    metric, the reliability diagram and rolling Winkler-80 of every model, and the summary
    table per model/horizon. Pairs with identical forecasts are left out.
    """
    path = Path(path)
    shown = list(dict.fromkeys([*models, *baselines]))
    scored = scored[scored["model"].isin(shown)]
    figure = _Figures()
    dates = pd.to_datetime(pd.Series(scored["as_of_date"].unique()))
    tickers = sorted(str(t) for t in scored["ticker"].unique())
    span = f"{dates.min():%Y-%m-%d} .. {dates.max():%Y-%m-%d}" if len(dates) else "no dates"
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(shown)}
    served = list(models[:1])  # the headline and the skill charts: the served model only
    skill = skill_table(
        scored, served, baselines, HEADLINE_METRICS, block=block, n_boot=n_boot, seed=seed
    )
    skill = skill[skill["ratio"].notna() & ~_identical(skill)]
    parts = [
        f"<h1>{_e(title)}</h1>",
        f"<p>Tickers ({len(tickers)}): {_e(', '.join(tickers))}</p>",
        f"<p>As-of dates: {_e(span)} ({len(dates)} dates); {len(scored)} rows; "
        f"models: {_e(', '.join(shown))}.</p>",
        "<p class='note'>Scores are divided by the as-of close; lower is better. Ratios compare "
        "two models on the same (ticker, as-of date, horizon) rows.</p>",
        f"<h2>{_e(SECTION_TITLES['headline'])}</h2>",
        _headline(skill),
        f"<h2>{_e(SECTION_TITLES['skill'])}</h2>",
    ]
    n_figs = 0
    for model in served:
        for metric in SKILL_PLOT_METRICS:
            pair = skill[(skill["model"] == model) & (skill["metric"] == metric)]
            if not pair.empty:
                parts.append(figure(_skill_figure(pair, model, metric, colors)))
                n_figs += 1
    if not n_figs:
        parts.append("<p>No model/baseline pair shares scored rows.</p>")
    levels = ", ".join(
        f"{lv}% = q{round(lo * 100):02d}..q{round(hi * 100):02d}"
        for lv, (lo, hi) in INTERVAL_LEVELS.items()
    )
    parts += [
        f"<h2>{_e(SECTION_TITLES['reliability'])}</h2>",
        f"<p class='note'>Pooled over tickers and horizons. Intervals: {_e(levels)}.</p>",
        figure(_reliability_figure(scored, shown, colors)),
        f"<h2>{_e(SECTION_TITLES['rolling'])}</h2>",
        figure(_rolling_figure(scored, shown, window, colors)),
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

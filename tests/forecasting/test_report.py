"""The HTML report: one offline file with every section, and escaped text."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pandas as pd
import pytest

from forecasting.quantiles import QUANTILE_LEVELS, QUANTILE_NAMES
from forecasting.report import SECTION_TITLES, write_html_report
from forecasting.scoring import add_scores

Z = {0.05: -1.645, 0.10: -1.2816, 0.25: -0.6745, 0.50: 0.0, 0.75: 0.6745, 0.90: 1.2816, 0.95: 1.645}


def _rows(n_dates: int = 40, seed: int = 0) -> pd.DataFrame:
    """Backtest-shaped rows: two tickers (one named "<X>"), two interval models and naive."""
    rng = np.random.default_rng(seed)
    dates = [dt.date(2021, 1, 4) + dt.timedelta(days=i) for i in range(n_dates)]
    frames = []
    for ticker, level in (("AAA", 50.0), ("<X>", 300.0)):
        for h in range(1, 5):
            naive = level * np.exp(rng.normal(0, 0.01, n_dates))
            y = naive * np.exp(rng.normal(0, 0.02 * np.sqrt(h), n_dates))
            for model, sd in (("candlecast", 0.018), ("ewma", 0.02), ("naive", None)):
                f = pd.DataFrame({"model": model, "ticker": ticker, "as_of_date": dates,
                                  "horizon": h, "naive_close": naive, "close": naive,
                                  "high": naive * 1.01, "low": naive * 0.99, "actual_close": y,
                                  "actual_high": y * 1.012, "actual_low": y * 0.988})  # fmt: skip
                for q, name in zip(QUANTILE_LEVELS, QUANTILE_NAMES, strict=True):
                    scale = np.exp(Z[q] * sd * np.sqrt(h)) if sd else np.nan
                    f[f"close_{name}"] = naive * scale
                f["close_lo"], f["close_hi"] = f["close_q10"], f["close_q90"]
                frames.append(f)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def report_text(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("report") / "sub" / "report.html"
    rows = _rows()
    mine = rows["model"] == "candlecast"
    rows.loc[mine, "close"] *= np.exp(np.random.default_rng(1).normal(0, 0.01, mine.sum()))
    same = rows[mine].assign(model="har_range")  # identical forecasts
    out = write_html_report(
        add_scores(pd.concat([rows, same], ignore_index=True)),
        path,
        models=["candlecast"],
        baselines=["har_range", "ewma", "naive"],
        title="Backtest <A & B>",
        n_boot=50,
        window=10,
    )
    assert out == path and path.is_file()
    return path.read_text(encoding="utf-8")


def test_report_has_every_section(report_text):
    for title in SECTION_TITLES.values():
        assert f"<h2>{title}</h2>" in report_text
    assert "<table>" in report_text and "coverage_80" in report_text
    assert "2021-01-04 .. 2021-02-12" in report_text  # the header's date range
    # skill: one chart per metric (winkler_80, pinball; every model's high/low is the same here,
    # so there is no hl_ae chart), then reliability and rolling
    assert report_text.count('class="plotly-graph-div"') == 4


def test_report_opens_with_the_headline_table(report_text):
    assert report_text.index("<h2>Headline") < report_text.index("<h2>Skill against")
    table = re.search(r"<table id='headline'>(.*?)</table>", report_text, re.S).group(1)
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>(.*?)</tr>", table)
    pairs = {(m, b) for m, b, _, _ in rows}
    # identical forecasts (candlecast = har_range here) and naive's missing intervals are left out
    assert pairs == {("candlecast", "ewma"), ("candlecast", "naive")}
    metrics = {(b, metric) for _, b, metric, _ in rows}
    assert ("naive", "close absolute error") in metrics
    assert ("naive", "high/low absolute error") not in metrics  # same high/low as candlecast
    assert ("naive", "Winkler-80 interval score") not in metrics  # naive has no interval
    assert ("ewma", "Winkler-80 interval score") in metrics
    cells = re.findall(r"<td class='(\w+)'>([\d.]+) \[([\d.]+), ([\d.]+)\]</td>", table)
    assert len(cells) == 5 * len(rows)  # one per horizon and all pooled, each with its interval
    assert all(float(lo) <= float(r) <= float(hi) for _, r, lo, hi in cells)


def test_every_chart_names_its_metric_and_each_model_keeps_one_colour(report_text):
    figures = [
        json.loads(m)
        for m in re.findall(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*\{", report_text, re.S)
    ]
    assert len(figures) == 4
    titles = re.findall(r'"title":\{"text":"([^"]+)"', report_text)
    for metric in ("Winkler-80 interval score", "pinball loss", "rolling mean"):
        assert any(metric in t for t in titles), metric
    colours: dict[str, set[str]] = {}
    for traces in figures:
        for t in traces:
            colour = (t.get("line") or {}).get("color") or (t.get("marker") or {}).get("color")
            if t.get("name") not in (None, "ideal"):
                assert colour, t["name"]  # never plotly's default colour by trace index
                colours.setdefault(t["name"], set()).add(colour)
    # every model has one colour in every chart (the legend shows the first trace's colour)
    assert colours and all(len(c) == 1 for c in colours.values()), colours
    assert "margin:2em auto" in report_text  # centred at any width


def test_report_works_offline(report_text):
    assert not re.search(r"<script[^>]*\bsrc\s*=", report_text, flags=re.I)
    assert not re.search(r"<link[^>]*https?://", report_text, flags=re.I)
    # plotly.js itself is inline, exactly once (its bundle only names a topojson URL for maps).
    assert len(report_text) > 1_000_000
    assert report_text.count("plotly.js v") == 1


def test_report_escapes_text(report_text):
    assert "<X>" not in report_text and "&lt;X&gt;" in report_text
    assert "<A & B>" not in report_text and "Backtest &lt;A &amp; B&gt;" in report_text

"""The HTML report: one offline file with every section, and escaped text."""

from __future__ import annotations

import datetime as dt
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
    out = write_html_report(
        add_scores(_rows()),
        path,
        models=["candlecast"],
        baselines=["ewma", "naive"],
        title="Backtest <A & B>",
        n_boot=50,
        window=10,
    )
    assert out == path and path.is_file()
    return path.read_text(encoding="utf-8")


def test_report_has_every_section(report_text):
    for title in SECTION_TITLES.values():
        assert f"<h2>{title}</h2>" in report_text
    assert "candlecast vs ewma" in report_text and "candlecast vs naive" in report_text
    assert "<table>" in report_text and "coverage_80" in report_text
    assert "2021-01-04 .. 2021-02-12" in report_text  # the header's date range
    assert report_text.count('class="plotly-graph-div"') == 4  # 2 skill, reliability, rolling


def test_report_works_offline(report_text):
    assert not re.search(r"<script[^>]*\bsrc\s*=", report_text, flags=re.I)
    assert not re.search(r"<link[^>]*https?://", report_text, flags=re.I)
    # plotly.js itself is inline, exactly once (its bundle only names a topojson URL for maps).
    assert len(report_text) > 1_000_000
    assert report_text.count("plotly.js v") == 1


def test_report_escapes_text(report_text):
    assert "<X>" not in report_text and "&lt;X&gt;" in report_text
    assert "<A & B>" not in report_text and "Backtest &lt;A &amp; B&gt;" in report_text

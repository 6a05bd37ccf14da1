"""Coverage against nominal with its uncertainty (forecasting.skill.coverage): the interval keeps
the correlation of one day's horizons and of neighbouring days, and stays honest on few dates."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from forecasting.model_names import PRODUCT
from forecasting.skill import coverage, rate_intervals, wilson_interval

BOUNDS = {"close_q05": 85, "close_q10": 90, "close_q25": 95, "close_q50": 100}
BOUNDS |= {"close_q75": 105, "close_q90": 110, "close_q95": 115}


def rows(hits: np.ndarray) -> pd.DataFrame:
    """Served forecasts on len(hits) dates x 4 horizons: hits[d, h] says whether the actual
    close fell inside every interval (100) or outside all of them (150)."""
    start = date(2022, 1, 3)
    out = [
        {
            "model": PRODUCT,
            "ticker": "AAA",
            "as_of_date": start + timedelta(days=d),
            "horizon": h + 1,
            "naive_close": 100.0,
            "close": 100.0,
            **BOUNDS,
            "actual_close": 100.0 if hits[d, h] else 150.0,
        }  # fmt: skip
        for d in range(hits.shape[0])
        for h in range(hits.shape[1])
    ]
    return pd.DataFrame(out)


def cell(result: list[dict], level: int, h: str) -> dict:
    return next(c for c in result if c["level"] == level)["by_horizon"][h]


def test_clustered_misses_widen_the_interval_and_are_not_called_off() -> None:
    # 120 dates in runs of 20: a quiet run hits on every horizon, a turbulent run misses on
    # every horizon; 70% hit rate, but only 6 independent stretches of evidence
    runs = np.repeat([1, 1, 0, 1, 1, 0], 20).astype(bool)
    runs[40:44] = True  # 70% = 84 of 120 dates
    hits = np.repeat(runs[:, None], 4, axis=1)
    result = coverage(rows(hits))
    c = cell(result, 80, "all")
    assert c["rate"] == pytest.approx(0.70) and c["n"] == 480
    w_lo, w_hi = wilson_interval(0.70 * 480, 480)
    assert c["hi"] - c["lo"] > 3 * (w_hi - w_lo)  # the binomial view is far too sure
    assert c["lo"] < 0.8 < c["hi"] and not c["off"]


def test_independent_misses_far_from_nominal_are_off() -> None:
    hits = np.random.default_rng(1).random((120, 4)) < 0.70
    c = cell(coverage(rows(hits)), 80, "all")
    assert c["lo"] <= c["rate"] <= c["hi"] < 0.8 and c["off"]
    w_lo, w_hi = wilson_interval(hits.sum(), hits.size)
    assert c["lo"] <= w_lo and c["hi"] >= w_hi


def test_few_dates_all_inside_keep_a_wide_interval() -> None:
    # a bootstrap of 3 dates that all hit says [1, 1]; the Wilson interval says what 3 tells
    rate, lo, hi = rate_intervals(np.ones((3, 1)), np.ones((3, 1)))
    assert (rate[0], hi[0]) == (1.0, 1.0) and lo[0] == pytest.approx(0.4385, abs=1e-3)
    c = cell(coverage(rows(np.ones((3, 1), dtype=bool))), 90, "1")
    assert c["rate"] == 1.0 and not c["off"]

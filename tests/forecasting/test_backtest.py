"""Walk-forward rows of every model side by side, the naive baseline and the summary."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
import pytest

from forecasting.backtest import (
    CSV_COLUMNS,
    PRICE_KEYS,
    QUANTILE_COLUMNS,
    walk_forward,
)
from forecasting.global_net import required_sessions
from forecasting.params import ModelParams
from tests.forecasting.synthetic import synthetic_candles

TINY = ModelParams(window=10, horizon=4, epochs=1, batch_size=32, units=4, patience=1)
MODELS = ("candlecast", "lstm", "har_range", "naive", "ewma")
START = 230  # first as-of row; the first refit trains on rows 0..START
N_ROWS = 260
KEYS = ["ticker", "as_of_date", "horizon"]
PREDICTED = [*PRICE_KEYS, *QUANTILE_COLUMNS]


def _run(candles: pd.DataFrame, **kwargs) -> pd.DataFrame:
    kwargs.setdefault("models", MODELS)
    start, end = candles.index[START].date(), candles.index[-1].date()
    return walk_forward(
        {"SYN": candles}, start=start, end=end, params=TINY, retrain_every=20, **kwargs
    )


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    assert required_sessions(TINY) <= START + 1  # training at the first as-of row is possible
    return synthetic_candles(N_ROWS, seed=7)


@pytest.fixture(scope="module")
def rows(candles) -> pd.DataFrame:
    return _run(candles)


def _model(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    return rows[rows["model"] == name].reset_index(drop=True)


@pytest.mark.slow
def test_rows_have_csv_columns_and_only_complete_as_of_dates(rows, candles):
    assert list(rows.columns) == ["model", *CSV_COLUMNS]
    assert tuple(rows["model"].unique()) == MODELS
    expected = [d.date() for d in candles.index[START:-4]]  # the last 4 sessions lack 4 targets
    for name in MODELS:
        part = _model(rows, name)
        assert sorted(set(part["as_of_date"])) == expected, name
        horizons = part.groupby("as_of_date")["horizon"].apply(list)
        assert (horizons == [[1, 2, 3, 4]] * len(expected)).all(), name


@pytest.mark.slow
def test_every_model_forecasts_the_same_keys(rows):
    keys = {name: _model(rows, name)[KEYS] for name in MODELS}
    for name, frame in keys.items():
        assert not frame.duplicated().any(), name
        pd.testing.assert_frame_equal(
            frame.sort_values(KEYS, ignore_index=True),
            keys["candlecast"].sort_values(KEYS, ignore_index=True),
            obj=name,
        )
    # and the same targets, actuals and naive close for each key
    shared = ["target_date", "actual_open", "actual_high", "actual_low", "actual_close"]
    first = _model(rows, MODELS[0]).set_index(KEYS).sort_index()[[*shared, "naive_close"]]
    for name in MODELS[1:]:
        other = _model(rows, name).set_index(KEYS).sort_index()[first.columns]
        pd.testing.assert_frame_equal(other, first, obj=name)


@pytest.mark.slow
def test_naive_and_actuals_come_from_the_right_rows(rows, candles):
    position = {d.date(): i for i, d in enumerate(candles.index)}
    for r in rows.sample(40, random_state=0).itertuples(index=False):
        t = position[r.as_of_date]
        assert r.naive_close == candles["close"].iloc[t]
        assert r.target_date == candles.index[t + r.horizon].date()
        for k in ("open", "high", "low", "close"):
            assert getattr(r, f"actual_{k}") == candles[k].iloc[t + r.horizon]
    assert np.isfinite(rows[list(PRICE_KEYS[:4])].to_numpy()).all()
    assert (rows["high"] >= rows[["open", "close"]].max(axis=1)).all()
    assert (rows["low"] <= rows[["open", "close"]].min(axis=1)).all()
    for name in ("candlecast", "lstm"):  # served forecasts: the close is inside its interval
        part = _model(rows, name)
        assert (part["close_lo"] <= part["close"]).all() and (
            part["close"] <= part["close_hi"]
        ).all()
    for name in ("candlecast", "lstm", "har_range", "ewma"):
        q = _model(rows, name)[QUANTILE_COLUMNS].to_numpy()
        assert (q > 0).all() and (np.diff(q, axis=1) >= 0).all(), name
    naive = _model(rows, "naive")
    assert (naive["close"] == naive["naive_close"]).all()
    assert naive[QUANTILE_COLUMNS].isna().all().all()


@pytest.mark.slow
def test_forecasts_do_not_change_when_the_future_changes(rows, candles):
    t = START + 10  # inside the first refit block (as-of rows START .. START + 19)
    changed = candles.copy()
    rng = np.random.default_rng(1)
    changed.iloc[t + 1 :, :4] = changed.iloc[t + 1 :, :4].to_numpy() * np.exp(
        rng.normal(0.0, 1.0, (len(candles) - t - 1, 1))
    )
    changed.iloc[t + 1 :, 4] *= 50.0
    again = _run(changed)
    cutoff = candles.index[t].date()
    pd.testing.assert_frame_equal(
        again.loc[again["as_of_date"] <= cutoff, ["model", *KEYS, *PREDICTED]],
        rows.loc[rows["as_of_date"] <= cutoff, ["model", *KEYS, *PREDICTED]],
    )
    later = rows["as_of_date"] > cutoff
    assert not np.allclose(again.loc[later, "close_hi"], rows.loc[later, "close_hi"])


@pytest.mark.slow
def test_seed_baseline_rows(candles, monkeypatch):
    from forecasting import seed_baseline

    monkeypatch.setattr(seed_baseline, "SEED_EPOCHS", 1)
    start = candles.index[250].date()
    out = walk_forward(
        {"SYN": candles}, start=start, end=candles.index[-1].date(), params=TINY, models=("seed",)
    )
    assert list(out.columns) == ["model", *CSV_COLUMNS] and len(out) == 6 * 4
    assert (out["model"] == "seed").all()
    assert out["close_lo"].isna().all() and out[QUANTILE_COLUMNS].isna().all().all()
    assert np.isfinite(out["close"]).all()
    assert (out["open"] == out["close"]).all()


def test_unknown_model_is_rejected(candles):
    with pytest.raises(ValueError, match="unknown model.*magic"):
        walk_forward(
            {"SYN": candles},
            start=candles.index[-10].date(),
            end=candles.index[-1].date(),
            params=TINY,
            models=("naive", "magic"),
        )

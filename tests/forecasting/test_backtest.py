"""Walk-forward rows, the naive baseline and the summary, on hand-made data."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from forecasting.backtest import CSV_COLUMNS, format_summary, summarize, walk_forward  # noqa: E402
from forecasting.params import ModelParams  # noqa: E402
from tests.forecasting.test_features import synthetic_candles  # noqa: E402

TINY = ModelParams(window=10, horizon=4, epochs=1, batch_size=32, units=4, patience=1)


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return synthetic_candles(260, seed=7)


@pytest.fixture(scope="module")
def rows(candles) -> pd.DataFrame:
    start, end = candles.index[230].date(), candles.index[-1].date()
    return walk_forward(candles, ticker="SYN", start=start, end=end, params=TINY, retrain_every=20)


def test_rows_have_csv_columns_and_only_complete_as_of_dates(rows, candles):
    assert list(rows.columns) == CSV_COLUMNS
    as_of = sorted(set(rows["as_of_date"]))
    expected = [d.date() for d in candles.index[230:-4]]  # the last 4 sessions lack 4 targets
    assert as_of == expected
    assert (rows.groupby("as_of_date")["horizon"].apply(list) == [[1, 2, 3, 4]] * 26).all()


def test_naive_and_actuals_come_from_the_right_rows(rows, candles):
    position = {d.date(): i for i, d in enumerate(candles.index)}
    for r in rows.sample(20, random_state=0).itertuples(index=False):
        t = position[r.as_of_date]
        assert r.naive_close == candles["close"].iloc[t]
        assert r.target_date == candles.index[t + r.horizon].date()
        for k in ("open", "high", "low", "close"):
            assert getattr(r, f"actual_{k}") == candles[k].iloc[t + r.horizon]
    assert (rows["high"] >= rows[["open", "close"]].max(axis=1)).all()
    assert (rows["close_lo"] <= rows["close"]).all() and (rows["close"] <= rows["close_hi"]).all()


def test_forecasts_do_not_change_when_the_future_changes(rows, candles):
    changed = candles.copy()
    changed.iloc[-3:, :4] *= 5.0  # only actuals of the last as-of dates may change
    start, end = candles.index[230].date(), candles.index[-1].date()
    again = walk_forward(changed, ticker="SYN", start=start, end=end, params=TINY, retrain_every=20)
    pd.testing.assert_frame_equal(
        again[["close", "close_lo", "close_hi"]], rows[["close", "close_lo", "close_hi"]]
    )


def test_seed_baseline_rows(candles, monkeypatch):
    from forecasting import seed_baseline

    monkeypatch.setattr(seed_baseline, "SEED_EPOCHS", 1)
    start = candles.index[250].date()
    out = walk_forward(
        candles,
        ticker="SYN",
        start=start,
        end=candles.index[-1].date(),
        params=TINY,
        model_kind="seed",
    )
    assert list(out.columns) == CSV_COLUMNS and len(out) == 6 * 4
    assert out["close_lo"].isna().all() and np.isfinite(out["close"]).all()
    assert (out["open"] == out["close"]).all()


def test_summarize_hand_made_rows():
    base = {
        "as_of_date": None,
        "target_date": None,
        "open": 0.0,
        "high": 0.0,
        "low": 0.0,
        "actual_open": 0.0,
        "actual_high": 0.0,
        "actual_low": 0.0,
    }
    data = [
        # ticker, h, close, naive, actual, lo, hi
        ("A", 1, 11.0, 10.0, 12.0, 9.0, 13.0),
        ("A", 1, 10.0, 10.0, 9.0, 9.5, 10.5),
        ("B", 1, 20.0, 21.0, 22.0, 19.0, 23.0),
    ]
    frame = pd.DataFrame(
        [
            {
                **base,
                "ticker": t,
                "horizon": h,
                "close": c,
                "naive_close": n,
                "actual_close": a,
                "close_lo": lo,
                "close_hi": hi,
            }
            for t, h, c, n, a, lo, hi in data
        ]
    )[CSV_COLUMNS]
    table = summarize(frame).set_index("ticker")
    a, b, total = table.loc["A"], table.loc["B"], table.loc["ALL"]
    assert (a.mae_model, a.mae_naive, a.n) == (1.0, 1.5, 2)
    assert a.ratio == pytest.approx(2 / 3)
    assert a.directional_accuracy == 1.0  # the row equal to naive is not counted
    assert a.coverage_80 == 0.5
    assert (b.ratio, b.directional_accuracy, b.coverage_80) == (2.0, 0.0, 1.0)
    assert total.ratio == pytest.approx((2 / 3 + 2.0) / 2)
    assert total.coverage_80 == pytest.approx(0.75)
    assert total.mae_model == pytest.approx(1.5)
    text = format_summary(summarize(frame))
    assert "ALL" in text and "ratio" in text


def test_unknown_model_kind_is_rejected(candles):
    with pytest.raises(ValueError, match="model_kind"):
        walk_forward(
            candles,
            ticker="SYN",
            start=candles.index[-10].date(),
            end=candles.index[-1].date(),
            params=TINY,
            model_kind="magic",
        )

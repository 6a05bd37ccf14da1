"""Scale-free proper scores, paired ratios and the moving-block bootstrap, on hand-made rows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from forecasting.quantiles import QUANTILE_NAMES
from forecasting.scoring import (
    _boot_sums,
    add_scores,
    block_bootstrap_indices,
    block_starts,
    format_skill_table,
    format_summary_table,
    paired_ratio,
    rolling_scores,
    skill_table,
    summary_table,
)

D0 = dt.date(2020, 1, 1)


def _row(model, naive, y, close, quantiles, high=np.nan, low=np.nan, ahigh=np.nan, alow=np.nan):
    row = {
        "model": model, "ticker": "T", "as_of_date": D0, "horizon": 1, "close": close,
        "high": high, "low": low, "actual_close": y, "actual_high": ahigh, "actual_low": alow,
        "naive_close": naive, "close_lo": quantiles[1], "close_hi": quantiles[5],
    }  # fmt: skip
    row.update({f"close_{n}": q for n, q in zip(QUANTILE_NAMES, quantiles, strict=True)})
    return row


@pytest.fixture()
def scored() -> pd.DataFrame:
    rows = [
        # interval 80% = [90, 110], y = 115 above it; y exactly on q95.
        _row("m", 100.0, 115.0, 100.0, [85, 90, 95, 100, 105, 110, 115], 102, 98, 116, 99),
        # price level 200: y = 185 below the 80% and 50% intervals, inside the 90% one.
        _row("m", 200.0, 185.0, 190.0, [180, 190, 195, 200, 205, 210, 220]),
        # a model without quantiles: interval scores are missing, not zero.
        _row("naive", 100.0, 115.0, 100.0, [np.nan] * 7),
    ]
    return add_scores(pd.DataFrame(rows))


def assert_scores(scored: pd.DataFrame, row: int, **expected: float) -> None:
    """Each column of `expected` in `scored`'s row `row` is that value (pytest.approx)."""
    for column, value in expected.items():
        assert scored.loc[row, column] == pytest.approx(value), (row, column)


def test_winkler_by_hand(scored):
    # row 0: 80%: width 20 + (2/0.2)*(115-110) = 70; 50%: 10 + (2/0.5)*10 = 50; 90%: inside, 30.
    assert_scores(scored, 0, winkler_80=0.70, winkler_50=0.50, winkler_90=0.30)
    # row 1: 80%: 20 + 10*(190-185) = 70 over 200; 50%: 10 + 4*10 = 50 over 200; 90%: 40 over 200.
    assert_scores(scored, 1, winkler_80=0.35, winkler_50=0.25, winkler_90=0.20)
    assert np.isnan(scored.loc[2, ["winkler_50", "winkler_80", "winkler_90"]].astype(float)).all()


def test_coverage_and_below_by_hand(scored):
    assert scored.loc[0, ["covered_50", "covered_80", "covered_90"]].tolist() == [0.0, 0.0, 1.0]
    assert scored.loc[1, ["covered_50", "covered_80", "covered_90"]].tolist() == [0.0, 0.0, 1.0]
    below = [f"below_{n}" for n in QUANTILE_NAMES]
    assert scored.loc[0, below].tolist() == [0, 0, 0, 0, 0, 0, 1]  # 115 <= q95 = 115
    assert scored.loc[1, below].tolist() == [0, 1, 1, 1, 1, 1, 1]  # 185 <= q10 = 190
    assert scored.loc[2, ["covered_80", *below]].isna().all()


def test_pinball_by_hand(scored):
    # row 0: y - q = 30,25,20,15,10,5,0 -> q*(y-q): 1.5+2.5+5+7.5+7.5+4.5+0 = 28.5
    assert scored.loc[0, "pinball"] == pytest.approx(28.5 / 7 / 100)
    # row 1: y - q = 5,-5,-10,-15,-20,-25,-35 -> .25+4.5+7.5+7.5+5+2.5+1.75 = 29
    assert scored.loc[1, "pinball"] == pytest.approx(29.0 / 7 / 200)
    assert np.isnan(scored.loc[2, "pinball"])


def test_point_and_range_errors_by_hand(scored):
    assert_scores(scored, 0, close_ae=0.15, high_ae=0.14, low_ae=0.01, hl_ae=0.075)
    assert_scores(scored, 1, close_ae=0.025, naive_ae=0.075)


def test_old_rows_with_only_the_80_interval_still_get_winkler_80():
    row = _row("m", 100.0, 115.0, 100.0, [np.nan] * 7)
    row.update(close_lo=90.0, close_hi=110.0)
    out = add_scores(pd.DataFrame([row]).drop(columns=["close_q10", "close_q90"]))
    assert out.loc[0, "winkler_80"] == pytest.approx(0.70)
    assert np.isnan(out.loc[0, "winkler_50"])


def test_summary_table_close_ratio_uses_the_same_rows(scored):
    extra = scored.iloc[[1]].assign(close=np.nan, close_ae=np.nan, naive_ae=1.0)
    table = summary_table(pd.concat([scored, extra], ignore_index=True))
    m = table.set_index("model").loc["m"]
    assert m["n"] == 3
    assert m["close_ratio"] == pytest.approx((0.15 + 0.025) / (0.15 + 0.075))
    assert m["winkler_80"] == pytest.approx((0.70 + 0.35 + 0.35) / 3)
    assert m["coverage_80"] == 0.0 and m["coverage_90"] == 1.0
    text = format_summary_table(table)
    assert "close_ratio" in text and "0.7778" in text


def _paired(n_tickers=5, n_dates=200, factor=1.0, noise=0.0, shared=False, run=1, seed=0):
    """Baseline errors and model = baseline * factor(h) * exp(noise * z) for all keys."""
    rng = np.random.default_rng(seed)
    dates = [D0 + dt.timedelta(days=i) for i in range(n_dates)]
    idx = pd.MultiIndex.from_product(
        [[f"T{i}" for i in range(n_tickers)], dates, [1, 2]], names=["ticker", "as_of_date", "h"]
    )
    base = pd.DataFrame(index=idx).reset_index().rename(columns={"h": "horizon"})
    base["metric"] = rng.uniform(0.5, 1.5, len(base))
    n_z = n_dates // run + 1
    z = rng.normal(size=(1 if shared else n_tickers, n_z))  # one draw per ticker per run of dates
    ti = 0 if shared else base["ticker"].str[1:].astype(int)
    di = base["as_of_date"].map({d: i // run for i, d in enumerate(dates)})
    f = factor(base["horizon"]) if callable(factor) else factor
    model = base.assign(metric=base["metric"] * f * np.exp(noise * z[ti, di]))
    return pd.concat([base.assign(model="base"), model.assign(model="m")], ignore_index=True)


def _width(res, h="all"):
    r = res.set_index("horizon").loc[h]
    return r["ratio_hi"] - r["ratio_lo"]


def test_identical_models_give_ratio_one_with_a_degenerate_interval():
    res = paired_ratio(_paired(), "m", "base", "metric", n_boot=200)
    assert list(res["horizon"]) == [1, 2, "all"]
    assert np.allclose(res[["ratio", "ratio_lo", "ratio_hi"]].to_numpy(dtype=float), 1.0)
    assert (res["verdict"] == "tie (inside noise)").all()
    assert (res["model_better_tickers"] == 0).all() and (res["n_tickers"] == 5).all()


def test_half_error_gives_ratio_one_half_per_horizon():
    res = paired_ratio(_paired(factor=0.5), "m", "base", "metric", n_boot=200).set_index("horizon")
    assert np.allclose(res[["ratio", "ratio_lo", "ratio_hi"]].to_numpy(dtype=float), 0.5)
    assert (res["verdict"] == "better").all() and (res["model_better_tickers"] == 5).all()
    res = paired_ratio(_paired(factor=lambda h: h.astype(float)), "m", "base", "metric", n_boot=50)
    assert res.set_index("horizon")["ratio"].loc[[1, 2]].tolist() == pytest.approx([1.0, 2.0])
    assert (res["verdict"].iloc[1:] == "worse").all()


def test_only_rows_both_models_have_are_compared():
    frame = _paired(factor=0.5)
    extra = frame[(frame["model"] == "base") & (frame["ticker"] == "T0")].assign(ticker="EXTRA")
    frame = pd.concat([frame, extra.assign(metric=1000.0)], ignore_index=True)
    res = paired_ratio(frame, "m", "base", "metric", n_boot=20).set_index("horizon")
    assert res.loc["all", "ratio"] == pytest.approx(0.5)
    assert res.loc["all", "n"] == 5 * 200 * 2 and res.loc["all", "n_tickers"] == 5


def test_interval_contains_the_ratio_and_widens_with_noise():
    quiet = paired_ratio(_paired(noise=0.05), "m", "base", "metric", n_boot=300)
    noisy = paired_ratio(_paired(noise=0.5), "m", "base", "metric", n_boot=300)
    for res in (quiet, noisy):
        assert (res["ratio_lo"] <= res["ratio"]).all() and (res["ratio"] <= res["ratio_hi"]).all()
    assert _width(noisy) > 3 * _width(quiet)


def test_bootstrap_resamples_whole_dates_and_blocks_of_dates():
    # The same noise for every ticker on a date must not average out across tickers.
    common = paired_ratio(_paired(20, noise=0.3, shared=True), "m", "base", "metric", n_boot=300)
    indep = paired_ratio(_paired(20, noise=0.3), "m", "base", "metric", n_boot=300)
    assert _width(common) > 2 * _width(indep)
    # Noise persisting over runs of 20 dates: blocks of 20 see it, blocks of 1 understate it.
    frame = _paired(n_dates=600, noise=0.3, run=20)
    long = paired_ratio(frame, "m", "base", "metric", block=20, n_boot=400)
    short = paired_ratio(frame, "m", "base", "metric", block=1, n_boot=400)
    assert _width(long) > 1.8 * _width(short)


def test_blocks_are_consecutive_dates():
    idx = block_bootstrap_indices(23, 5, 50, seed=1)
    assert idx.shape == (50, 23)
    assert idx.min() >= 0 and idx.max() <= 22
    for draw in idx:
        for k in range(0, 23, 5):
            assert (np.diff(draw[k : k + 5]) == 1).all()
    assert len({tuple(d[::5]) for d in idx}) > 40  # starts really are random
    assert block_bootstrap_indices(3, 10, 4).tolist() == [[0, 1, 2]] * 4  # block capped at n


def test_cumulative_sums_match_explicit_resamples():
    per_date = np.random.default_rng(3).normal(size=(23, 3))
    starts, block = block_starts(23, 5, 50, np.random.default_rng(1))
    idx = block_bootstrap_indices(23, 5, 50, seed=1)
    assert np.allclose(_boot_sums(per_date, starts, block), per_date[idx].sum(axis=1))


def test_skill_table_and_its_text():
    frame = pd.concat(
        [_paired(factor=0.5), _paired(factor=1.0).query("model == 'm'").assign(model="same")],
        ignore_index=True,
    )
    skill = skill_table(frame, ["m", "same"], ["base", "m"], metrics=("metric",), n_boot=50)
    pairs = set(zip(skill["model"], skill["baseline"], strict=True))
    assert pairs == {("m", "base"), ("same", "base"), ("same", "m")}
    assert len(skill) == 3 * 3
    text = format_skill_table(skill)
    assert "0.5000" in text and "2.0000" in text
    assert "better" in text and "worse" in text and "tie (inside noise)" in text


def test_rolling_scores_by_hand_on_common_rows():
    dates = [D0 + dt.timedelta(days=i) for i in range(4)]
    a = pd.DataFrame({"model": "a", "ticker": "T", "as_of_date": dates, "horizon": 1,
                      "winkler_80": [1.0, 2.0, 3.0, 4.0]})  # fmt: skip
    b = a.assign(model="b", winkler_80=[10.0, np.nan, 30.0, 40.0])  # b lacks date 1
    c = a.assign(model="c", winkler_80=np.nan)  # no intervals at all: ignored
    out = rolling_scores(pd.concat([a, b, c]), window=2).set_index(["model", "as_of_date"])
    assert out.loc["a", "daily_mean"].tolist() == [1.0, 3.0, 4.0]
    assert out.loc["a", "rolling_mean"].tolist()[1:] == [2.0, 3.5]
    assert out.loc["b", "rolling_mean"].tolist()[1:] == [20.0, 35.0]
    assert np.isnan(out.loc["a", "rolling_mean"].iloc[0])


def test_a_pair_without_shared_rows_is_an_empty_table():
    rows = _paired()
    for model in ("base", "m"):  # either side missing
        others = rows[rows["model"] != model]
        assert paired_ratio(others, "m", "base", "metric", n_boot=20).empty
    shifted = rows.copy()
    shifted.loc[shifted["model"] == "base", "horizon"] += 10  # no (ticker, as-of, horizon) shared
    assert paired_ratio(shifted, "m", "base", "metric", n_boot=20).empty

"""The global network: an untrained one serves HAR-range exactly, its inputs are causal, a tiny
fit over two real tickers runs and warm-starts, and the gate opens only for a real gain."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest

from forecasting import global_inputs as G
from forecasting import global_net as N
from forecasting.params import ModelParams
from forecasting.providers import BundledProvider
from forecasting.range_model import HarRange

TINY = ModelParams(window=10, epochs=1, warm_epochs=1, units=4, patience=1, max_windows=600)


@pytest.fixture(scope="module")
def histories() -> dict[str, pd.DataFrame]:
    provider = BundledProvider()
    return {
        t: provider.fetch(t, date(2018, 1, 1), date(2021, 6, 30)) for t in ("AAPL", "MSFT", "TSLA")
    }


def _targets(inputs: G.TickerInputs, rows: np.ndarray) -> np.ndarray:
    return inputs.index.to_numpy()[rows[:, None] + np.arange(1, 5)[None, :]]


@pytest.mark.slow
def test_an_untrained_network_serves_har_range_to_the_last_digit(histories) -> None:
    from forecasting import global_layers as L

    har = HarRange().fit_pooled(histories)
    n_static = len(G.static_columns(4))
    network = L.build_network(TINY.window, len(G.SEQ_COLUMNS), n_static, 4, TINY.units)
    fit = N.GlobalFit(
        network=network,
        params=TINY,
        normalization={
            "seq_mean": [0.0] * len(G.SEQ_COLUMNS),
            "seq_std": [1.0] * len(G.SEQ_COLUMNS),
            "static_mean": [0.0] * n_static,
            "static_std": [1.0] * n_static,
        },  # fmt: skip
        har=har,
        gate={"blend": [1.0, 0.75, 0.5, 0.25], "blend_hl": [1.0] * 4},
        tickers=sorted(har),
        train_start=date(2018, 1, 2),
        train_end=date(2021, 6, 30),
    )
    inputs = G.build_inputs(histories)
    rows = np.arange(200, len(inputs["MSFT"].index) - 4)
    parts = N.predict_rows(fit, inputs["MSFT"], "MSFT", rows, _targets(inputs["MSFT"], rows))
    expected = HarRange().predict_rows(har["MSFT"], histories["MSFT"], rows)
    for name in ("candlecast", "network", "har_range"):
        assert np.array_equal(parts[name]["quantiles"], expected.quantiles), name
        assert np.array_equal(parts[name]["high"], np.maximum(expected.high, parts[name]["close"]))
        assert np.array_equal(parts[name]["close"], expected.quantiles[..., 3])


def test_inputs_of_a_session_do_not_change_when_later_sessions_arrive(histories) -> None:
    full = G.build_inputs(histories)
    cut = G.build_inputs({t: c.loc[:"2020-03-31"] for t, c in histories.items()})
    n = len(cut["AAPL"].index)
    for ticker in histories:
        assert np.allclose(cut[ticker].seq, full[ticker].seq[:n], equal_nan=True)
        assert np.allclose(cut[ticker].base, full[ticker].base[:n], equal_nan=True)


@pytest.mark.slow
def test_a_tiny_fit_serves_valid_candles_and_warm_starts_from_its_weights(histories) -> None:
    first = N.fit_global(histories, TINY)
    assert first.kind == "full" and first.tickers == ["AAPL", "MSFT", "TSLA"]
    assert all(w in (0.0, N.NETWORK_WEIGHT) for w in first.gate["blend"] + first.gate["blend_hl"])
    assert first.train_end == date(2021, 6, 30)
    second = N.fit_global(histories, TINY, previous=first)
    assert second.kind == "warm"
    assert second.normalization == first.normalization
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(first.network.get_weights(), second.network.get_weights(), strict=True)
    ]
    assert any(changed)  # trained further, from the first fit's weights
    inputs = G.build_inputs(histories)
    rows = np.arange(300, 320)
    p = N.predict_rows(second, inputs["TSLA"], "TSLA", rows, _targets(inputs["TSLA"], rows))
    served = p["candlecast"]
    assert np.isfinite(served["quantiles"]).all() and (np.diff(served["quantiles"]) >= 0).all()
    assert (served["high"] >= np.maximum(served["open"], served["close"])).all()
    assert (served["low"] <= np.minimum(served["open"], served["close"])).all()
    assert served["attention"].shape == (20, TINY.window)


@pytest.mark.slow
def test_a_ticker_outside_the_universe_is_a_clear_error(histories) -> None:
    fit = N.fit_global({t: histories[t] for t in ("AAPL", "MSFT")}, replace(TINY, epochs=1))
    inputs = G.build_inputs(histories)
    rows = np.arange(300, 302)
    with pytest.raises(ValueError, match="TSLA is not in the global model's universe"):
        N.predict_rows(fit, inputs["TSLA"], "TSLA", rows, _targets(inputs["TSLA"], rows))


def _gate_rows(n_dates: int, per_date: int, true_scale: float, delta_value: float, seed: int):
    """Returns drawn with scale ``true_scale`` times HAR's; a network that says ``delta_value``."""
    rng = np.random.default_rng(seed)
    n = n_dates * per_date
    z = np.quantile(rng.standard_normal(100_000), N.LEVELS)
    y = np.zeros((n, 4, 13))
    y[..., 0] = true_scale * rng.standard_normal((n, 4))
    y[..., 1], y[..., 2] = np.abs(y[..., 0]), -np.abs(y[..., 0])
    y[..., 3:10] = z
    y[..., 10], y[..., 11], y[..., 12] = 0.7, -0.7, 0.01
    delta = np.full((n, 4, 2), delta_value)
    dates = np.repeat(np.arange(n_dates), per_date)
    return delta, y, dates


def test_the_gate_lets_the_network_in_at_half_weight_unless_it_clearly_hurts() -> None:
    # the truth is 30% wider than HAR-range; the network says so (delta = 2 log 1.3)
    gate, ratios = N.fit_gate(*_gate_rows(200, 20, 1.3, 2 * np.log(1.3), seed=1))
    assert gate == {"blend": [0.5] * 4, "blend_hl": [0.5] * 4}
    assert all(r < 0.98 for r in ratios["cal_pinball_net_vs_har"])
    # HAR-range is right and the network's correction is noise around zero: no evidence that
    # the half blend hurts, so it serves (an equal-weight combination)
    delta, y, dates = _gate_rows(200, 20, 1.0, 0.0, seed=2)
    delta[..., 0] = np.random.default_rng(3).normal(0.0, 0.05, delta.shape[:2])
    assert N.fit_gate(delta, y, dates)[0]["blend"] == [0.5] * 4
    # HAR-range is right and the network says 30% wider: the half blend clearly hurts
    gate, ratios = N.fit_gate(*_gate_rows(200, 20, 1.0, 2 * np.log(1.3), seed=4))
    assert gate == {"blend": [0.0] * 4, "blend_hl": [0.0] * 4}
    assert all(r > 1.02 for r in ratios["cal_pinball_net_vs_har"])


def test_the_gate_keeps_the_network_out_when_the_block_is_too_short_to_judge() -> None:
    # 19 dates: fewer than two batches of GATE_BATCH dates, so no standard error
    gate, _ = N.fit_gate(*_gate_rows(19, 20, 1.3, 2 * np.log(1.3), seed=1))
    assert gate == {"blend": [0.0] * 4, "blend_hl": [0.0] * 4}


@pytest.mark.slow
def test_the_backtest_path_and_the_served_path_give_the_same_candles(histories) -> None:
    """walk_forward forecasts with ``predict_rows`` over inputs built once from all the data;
    the nightly task, `candlecast forecast` and the web forecast one ticker through
    ``forecast_global`` from its stored model version. Same fit, same as-of: same numbers."""
    from forecasting.global_serve import forecast_global, ticker_models

    fit = N.fit_global(histories, TINY)
    day = pd.Timestamp(fit.train_end)
    served = forecast_global(
        ticker_models(fit, histories)["MSFT"], histories["MSFT"], as_of=None, exchange="XNYS"
    )
    everything = G.build_inputs(histories)
    row = np.array([everything["MSFT"].index.get_loc(day)])
    targets = np.array([[np.datetime64(c.date) for c in served.candles]], dtype="datetime64[ns]")
    walked = N.predict_rows(fit, everything["MSFT"], "MSFT", row, targets)["candlecast"]
    assert [c.close_hi for c in served.candles] == pytest.approx(walked["quantiles"][0, :, 5])
    assert [c.high for c in served.candles] == pytest.approx(walked["high"][0])
    assert served.model_mix["quantiles"][0]["lstm"] == fit.gate["blend"][0]

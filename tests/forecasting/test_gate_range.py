"""Issue 18 item 4: the per-ticker network's gate compares it with the HAR-range it would replace
(the pooled fit, on every ticker's candles up to the calibration block's first as-of session),
not with a single-ticker fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.range_model import HarRange
from forecasting.train import PooledRange, calibration_start, pooled_range, train_model
from tests.forecasting.test_model import BUNDLED, TINY

pytestmark = pytest.mark.slow


def _bundled(ticker: str, sessions: int) -> pd.DataFrame:
    raw = pd.read_csv(f"{BUNDLED}/{ticker}.csv.gz", parse_dates=["Date"])
    raw.columns = [c.lower() for c in raw.columns]
    frame = raw.set_index(pd.DatetimeIndex(raw["date"], name="session_date")).drop(columns="date")
    return frame.astype("float64").iloc[-sessions:]


@pytest.fixture(scope="module")
def histories() -> dict[str, pd.DataFrame]:
    return {"AAPL": _bundled("AAPL", 300), "MSFT": _bundled("MSFT", 280)}


def test_the_gates_pooled_fit_sees_every_ticker_up_to_the_calibration_start_only(histories):
    fits = pooled_range(histories, TINY, history_years=5)
    served = HarRange(horizon=TINY.horizon).fit_pooled(histories)
    for ticker, candles in histories.items():
        start = calibration_start(candles, TINY, history_years=5)
        assert fits[ticker].before_end == start
        assert fits[ticker].served == served[ticker]
        cut = {t: c.loc[c.index.date <= start] for t, c in histories.items()}
        assert fits[ticker].before == HarRange(horizon=TINY.horizon).fit_pooled(cut)[ticker]
    # the two tickers' blocks start on different sessions, so each has its own gate fit
    assert fits["AAPL"].before_end != fits["MSFT"].before_end
    # what happens after the block starts does not change the gate's fit
    later = {t: c.copy() for t, c in histories.items()}
    later["MSFT"].iloc[-5:, :] *= 3.0
    assert pooled_range(later, TINY, history_years=5)["AAPL"].before == fits["AAPL"].before


def test_training_gates_against_the_pooled_fit_it_is_given(histories, monkeypatch):
    candles = histories["AAPL"]
    fits = pooled_range(histories, TINY, history_years=5)
    seen: list[dict] = []
    real = HarRange.predict_rows

    def spy(self, fitted, frame, rows):
        seen.append(fitted)
        return real(self, fitted, frame, rows)

    monkeypatch.setattr(HarRange, "predict_rows", spy)
    trained = train_model(candles, TINY, ticker="AAPL", range_fit=fits["AAPL"])
    assert seen[0] is fits["AAPL"].before  # the calibration block's HAR-range
    assert trained.metrics["gate_har_range"] == "pooled"
    assert trained.calibration["har_range"] == fits["AAPL"].served

    # a pooled fit cut at another session would see the block (or miss data): the ticker's own
    # fit up to its calibration start is used instead, and the metrics say so
    seen.clear()
    shifted = PooledRange(fits["AAPL"].served, fits["AAPL"].before, fits["MSFT"].before_end)
    trained = train_model(candles, TINY, ticker="AAPL", range_fit=shifted)
    start = calibration_start(candles, TINY, history_years=5)
    own = HarRange(horizon=TINY.horizon).fit(candles.loc[candles.index.date <= start])
    assert np.array_equal(seen[0]["beta"], own["beta"])
    assert trained.metrics["gate_har_range"] == "own"

"""Numbers where they enter and leave (issue 17 items 7-8): float32 noise, significant digits."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.providers import BundledProvider, CsvProvider, YFinanceProvider
from tests.forecasting.test_validation import dev_universe, needs_dev_universe

BUNDLED = Path(__file__).resolve().parents[2] / "forecasting" / "bundled"
FIXTURES = Path(__file__).parent / "fixtures"
PRICES = ["Open", "High", "Low", "Close"]


def noisy(values: np.ndarray) -> np.ndarray:
    """Values that went through float32 and still show it: float32-exact, and not the shortest
    decimal that float32 value stands for (192.52999877929688 instead of 192.53)."""
    single = values.astype(np.float32)
    shortest = np.array([float(str(v)) for v in single])
    return (single.astype("float64") == values) & (shortest != values)


def test_round_sig_keeps_six_significant_digits_at_any_scale() -> None:
    from forecasting.numbers import SIGNIFICANT_DIGITS, round_sig

    assert SIGNIFICANT_DIGITS == 6
    assert round_sig(192.52999877929688) == 192.53
    assert round_sig(0.000190004321) == 0.000190004
    assert round_sig(0.00019) == 0.00019
    assert round_sig(123456789.0) == 123457000.0
    assert round_sig(-1.23456789) == -1.23457
    assert round_sig(1.23456789, 3) == 1.23
    assert round_sig(0.0) == 0.0 and round_sig(None) is None
    assert math.isnan(round_sig(math.nan)) and round_sig(math.inf) == math.inf


def test_strip_float32_noise_cleans_only_values_that_went_through_float32() -> None:
    from forecasting.numbers import strip_float32_noise

    values = np.array(
        [192.52999877929688, 19.779285430908203, 12.3456789, 36.27633202, 192.53, 10.5, 0.0]
        + [np.nan, np.inf, -3.0999999046325684, 1e300]
    )
    with np.errstate(all="raise"):  # 1e300 overflows float32: no warning, left alone
        out = strip_float32_noise(values)
    expected = [192.53, 19.779285, 12.3456789, 36.27633202, 192.53, 10.5, 0.0]
    assert out[:7].tolist() == expected
    assert np.isnan(out[7]) and out[8] == np.inf and out[9] == -3.1 and out[10] == 1e300


def test_every_bundled_price_loses_its_float32_noise_and_nothing_else() -> None:
    provider = BundledProvider()
    for ticker in provider.available():
        raw = pd.read_csv(BUNDLED / f"{ticker}.csv.gz")
        frame = provider.fetch(ticker)
        assert noisy(raw["Close"].to_numpy()).sum() > 1000, ticker  # the data is noisy
        for column in PRICES:
            before = raw[column].to_numpy("float64")
            after = frame[column.lower()].to_numpy()
            assert not noisy(after).any(), (ticker, column)
            # the float32 value is kept exactly: only digits float32 never held are gone
            assert (after.astype(np.float32) == before.astype(np.float32)).all()
        assert (frame["volume"] == raw["Volume"].to_numpy()).all()
    close = provider.fetch("AAPL", start=date(2023, 12, 29)).loc["2023-12-29", "close"]
    assert close == 192.53


@needs_dev_universe
def test_dev_universe_values_that_never_went_through_float32_are_untouched() -> None:
    for path, raw, frame in dev_universe():
        for column in PRICES:
            before = raw[column].to_numpy("float64")
            after = frame[column.lower()].to_numpy()
            float64_only = before.astype(np.float32).astype("float64") != before
            assert (after[float64_only] == before[float64_only]).all(), path.name
            assert (after.astype(np.float32) == before.astype(np.float32)).all(), path.name
            assert not noisy(after).any(), path.name


def test_csv_provider_cleans_prices_and_rounds_volume(tmp_path: Path) -> None:
    (tmp_path / "X.csv").write_text(
        "Date,Open,High,Low,Close,Volume\n"
        "2023-12-28,12.3456789,193.0,12.0,192.52999877929688,42628800.0\n"
        "2023-12-29,0.0001900000061141327,0.0002,0.00018,0.00019,1234.6\n"
    )
    frame = CsvProvider(tmp_path).fetch("X")
    assert frame["open"].tolist() == [12.3456789, 0.00019]
    assert frame["close"].tolist() == [192.53, 0.00019]
    assert frame["volume"].tolist() == [42628800.0, 1235.0]


def test_yfinance_provider_cleans_prices() -> None:
    recorded = pd.read_csv(
        FIXTURES / "yf_aapl_auto_adjust.csv", header=[0, 1], index_col=0, parse_dates=True
    )
    provider = YFinanceProvider(downloader=lambda *a, **k: recorded, sleep=lambda s: None)
    frame = provider.fetch("AAPL", start=date(2023, 12, 15), end=date(2023, 12, 29))
    assert frame.loc["2023-12-29", "close"] == 192.53
    assert frame.loc["2023-12-15", "open"] == 197.53
    assert not any(noisy(frame[c].to_numpy()).any() for c in ("open", "high", "low", "close"))

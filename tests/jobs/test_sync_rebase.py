"""Sync when the provider rescales its history (split or dividend with yfinance auto_adjust).

The real yfinance provider runs with `yfinance.download` faked at the network edge: a FakeYahoo
serves bundled AAPL candles in yf.download's recorded frame shape (see
tests/forecasting/fixtures), up to a movable "today", and can re-adjust its whole history the
way Yahoo does after a split or a dividend.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yfinance as yf

from db import repository
from forecasting.providers import OnExchanges, YFinanceProvider
from jobs.cli import EXIT_OK, main
from jobs.sync import SyncResult, price_basis_change, sync_tickers

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "forecasting" / "fixtures"
PRICES = ["Open", "High", "Low", "Close"]
FIRST_SYNC = date(2023, 11, 30)  # Yahoo's "today" at the first sync (a Thursday)
SECOND_SYNC = date(2023, 12, 29)
EX_DATE = date(2023, 12, 1)  # the first session after the first sync


def recorded() -> pd.DataFrame:
    """yf.download("AAPL", 2023-12-15..2023-12-29, auto_adjust=True, multi_level_index=True)."""
    name = "yf_aapl_auto_adjust.csv"
    return pd.read_csv(FIXTURES / name, header=[0, 1], index_col=0, parse_dates=True)


def bundled_history() -> pd.DataFrame:
    """Bundled AAPL candles 2022-06-01..2023-12-29 in yf.download's frame shape."""
    raw = pd.read_csv(ROOT / "forecasting" / "bundled" / "AAPL.csv.gz", index_col=0)
    raw.index = pd.DatetimeIndex(pd.to_datetime(raw.index), name="Date")
    raw = raw.loc["2022-06-01":"2023-12-29", ["Close", "High", "Low", "Open", "Volume"]]
    raw.columns = pd.MultiIndex.from_product([raw.columns, ["AAPL"]], names=["Price", "Ticker"])
    return raw


class FakeYahoo:
    """Stands in for yf.download: `history` from `start` to `today` (yfinance's end exclusive)."""

    def __init__(self) -> None:
        self.history = bundled_history()
        self.today = FIRST_SYNC
        self.starts: list[date] = []
        self.fail_from_call: int | None = None

    def __call__(self, symbol: str, **kwargs: object) -> pd.DataFrame:
        assert symbol == "AAPL" and kwargs["auto_adjust"] is True
        assert kwargs["multi_level_index"] is True
        self.starts.append(date.fromisoformat(str(kwargs["start"])))
        if self.fail_from_call is not None and len(self.starts) >= self.fail_from_call:
            raise KeyError("chart")  # not transient: no retry
        end = kwargs["end"]
        last = self.today if end is None else date.fromisoformat(str(end)) - timedelta(days=1)
        return self.history.loc[str(self.starts[-1]) : str(min(last, self.today))].copy()

    def rescale(self, factor: float, before: date | None = None, volume: float = 1.0) -> None:
        """Multiply prices (and volume by `volume`) of the sessions before `before` (None: all)."""
        rows = self.history.index < pd.Timestamp(before) if before else slice(None)
        for column in PRICES:
            self.history.loc[rows, (column, "AAPL")] *= factor
        self.history.loc[rows, ("Volume", "AAPL")] *= volume

    def closes(self) -> pd.Series:
        return self.history[("Close", "AAPL")]


@pytest.fixture
def yahoo(monkeypatch: pytest.MonkeyPatch) -> FakeYahoo:
    fake = FakeYahoo()
    monkeypatch.setattr(yf, "download", fake)
    return fake


@pytest.fixture
def setup(make_config, session_factory, yahoo):
    """(config, provider): the real yfinance provider (its 'today' is Yahoo's), one ticker."""
    config = make_config(
        data={"provider": "yfinance", "history_years": 1, "sync_overlap_sessions": 5},
        tickers={"symbols": ["AAPL"]},
    )
    provider = YFinanceProvider(sleep=lambda s: None, today=lambda: yahoo.today, history_years=1)
    return config, OnExchanges(provider, config.tickers.exchange_for)


def sync(setup, session_factory) -> SyncResult:
    config, provider = setup
    (result,) = sync_tickers(config, session_factory, provider, ["AAPL"])
    assert result.ok, result.error
    return result


def stored_closes(session_factory) -> pd.Series:
    with session_factory() as s:
        return repository.load_candles(s, ticker="AAPL")["close"]


def yahoo_closes(yahoo: FakeYahoo, first: date) -> pd.Series:
    closes = yahoo.closes().loc[str(first) : str(yahoo.today)]
    closes.index = pd.DatetimeIndex(closes.index, name="session_date").as_unit("ns")
    return closes.rename("close")


def test_the_fake_serves_yfinance_recorded_frame_shape(yahoo):
    yahoo.today = SECOND_SYNC
    frame = yf.download(
        "AAPL",
        start="2023-12-15",
        end="2023-12-30",
        auto_adjust=True,
        progress=False,
        threads=False,
        multi_level_index=True,
    )
    expected = recorded()
    assert frame.columns.equals(expected.columns)
    assert frame.index.name == expected.index.name and frame.index.equals(expected.index)
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False, check_freq=False)


def test_an_unchanged_resync_is_incremental_not_rebased(setup, session_factory, yahoo, caplog):
    first = sync(setup, session_factory)
    assert not first.rebased and first.last == FIRST_SYNC
    overlap_start = stored_closes(session_factory).index[-6].date()  # 5 overlap sessions
    yahoo.today = SECOND_SYNC
    with caplog.at_level(logging.WARNING, logger="candlecast.sync"):
        second = sync(setup, session_factory)
    assert yahoo.starts == [date(2022, 11, 30), overlap_start]  # no full re-fetch
    assert not second.rebased and second.price_factor is None
    assert second.added == 20 and second.updated == 0 and second.unchanged == 6
    assert caplog.records == []


def test_a_split_between_syncs_replaces_the_whole_stored_history(
    setup, session_factory, yahoo, caplog
):
    sync(setup, session_factory)
    before = stored_closes(session_factory)
    assert before.index[0] == pd.Timestamp("2022-12-01")  # one year before FIRST_SYNC
    yahoo.rescale(0.25, volume=4.0)  # a 4:1 split on EX_DATE: Yahoo re-adjusts all history
    yahoo.today = SECOND_SYNC
    with caplog.at_level(logging.WARNING, logger="candlecast.sync"):
        result = sync(setup, session_factory)

    after = stored_closes(session_factory)
    assert after.pct_change().min() > -0.1  # no fake -75% return anywhere
    assert result.rebased and result.price_factor == pytest.approx(0.25)
    assert yahoo.starts[1] < FIRST_SYNC and yahoo.starts[2] == date(2022, 12, 29)  # full
    # One year before the new last session: rows older than that (old basis) are gone.
    assert after.index[0] == pd.Timestamp("2022-12-30") and result.first == date(2022, 12, 30)
    assert result.removed == len(before.loc[:"2022-12-29"]) > 0
    pd.testing.assert_series_equal(after, yahoo_closes(yahoo, date(2022, 12, 30)))
    with session_factory() as s:
        volumes = repository.load_candles(s, ticker="AAPL", start=date(2023, 11, 1))["volume"]
    assert volumes.iloc[0] == yahoo.history.loc["2023-11-01", ("Volume", "AAPL")]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(
        "AAPL: provider prices changed on overlapping sessions (x0.25, e.g. a split or dividend "
        "adjustment): replaced the whole stored history ("
    )
    assert f"({len(after)} rows, {result.removed} old row(s) removed)" in line


@pytest.mark.parametrize(
    "ex_date",
    [EX_DATE, date(2023, 11, 28)],  # after the stored sessions; inside the overlap (late adjust)
    ids=["ex-date-new-session", "ex-date-in-overlap"],
)
def test_a_dividend_adjustment_between_syncs_rebases(setup, session_factory, yahoo, ex_date):
    sync(setup, session_factory)
    yahoo.rescale(0.99, before=ex_date)
    yahoo.today = SECOND_SYNC
    result = sync(setup, session_factory)

    after = stored_closes(session_factory)
    pd.testing.assert_series_equal(after, yahoo_closes(yahoo, date(2022, 12, 30)))
    assert result.rebased and result.price_factor == pytest.approx(0.99)
    assert len(yahoo.starts) == 3


def test_a_corrected_price_in_the_overlap_is_an_update_not_a_rebase(setup, session_factory, yahoo):
    sync(setup, session_factory)
    yahoo.history.loc["2023-11-29", ("Close", "AAPL")] += 0.5  # one price, not a new basis
    yahoo.today = SECOND_SYNC
    result = sync(setup, session_factory)
    assert not result.rebased and len(yahoo.starts) == 2
    assert result.updated == 1 and result.added == 20


def test_a_failed_full_refetch_keeps_every_stored_row(setup, session_factory, yahoo):
    sync(setup, session_factory)
    before = stored_closes(session_factory)
    yahoo.rescale(0.25)
    yahoo.today = SECOND_SYNC
    yahoo.fail_from_call = 3  # the incremental fetch works, the full re-fetch fails
    config, provider = setup
    (result,) = sync_tickers(config, session_factory, provider, ["AAPL"])
    assert not result.ok and "yfinance failed for AAPL" in (result.error or "")
    assert not result.rebased
    pd.testing.assert_series_equal(stored_closes(session_factory), before)


def test_cli_sync_says_it_replaced_the_history(
    setup, migrated_url, session_factory, yahoo, tmp_path, monkeypatch, capsys
):
    config_path = tmp_path / "candlecast.toml"
    config_path.write_text(
        '[data]\nprovider = "yfinance"\nhistory_years = 1\n[tickers]\nsymbols = ["AAPL"]\n'
    )
    monkeypatch.setenv("CANDLECAST_DATABASE_URL", migrated_url)
    monkeypatch.setattr("jobs.sync.provider_for", lambda config: setup[1])
    assert main(["--config", str(config_path), "sync"]) == EXIT_OK
    assert "replaced the whole stored history" not in capsys.readouterr().out
    yahoo.rescale(0.25, volume=4.0)
    yahoo.today = SECOND_SYNC
    assert main(["--config", str(config_path), "sync"]) == EXIT_OK
    out = capsys.readouterr().out
    assert (
        "AAPL: provider prices changed on stored sessions (x0.25, e.g. a split or dividend): "
        "replaced the whole stored history"
    ) in out


def test_price_basis_change_needs_one_factor_on_all_four_prices():
    index = pd.DatetimeIndex(pd.to_datetime(["2023-12-27", "2023-12-28"]), name="session_date")
    old = pd.DataFrame(
        {"open": [10.0, 11.0], "high": [12.0, 12.5], "low": [9.0, 10.0], "close": [11.0, 12.0]},
        index=index,
    )
    assert price_basis_change(old, old * (1 + 1e-8)) is None  # float noise
    assert price_basis_change(old, old / 4) == pytest.approx(0.25)
    corrected = old.copy()
    corrected.loc["2023-12-28", ["open", "high", "low", "close"]] += 1.0
    assert price_basis_change(old, corrected) is None  # a correction, not a new basis
    assert price_basis_change(old, old.iloc[0:0]) is None

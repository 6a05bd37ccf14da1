"""Providers: bundled data, CSV folders and yfinance (recorded frames; never the network)."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yfinance as yf
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError

from forecasting.providers import (
    BundledProvider,
    CsvProvider,
    YFinanceProvider,
    fetch_candles,
    make_provider,
)
from forecasting.validation import COLUMNS, MarketDataError

FIXTURES = Path(__file__).parent / "fixtures"
HEADER = "Date,Open,High,Low,Close,Volume\n"
ROWS = [
    "2023-01-03,10,11,9,10.5,100\n",
    "2023-01-04,10.5,12,10,11,200\n",
    "2023-01-05,11,11.5,10.5,11.2,300\n",
]


def assert_contract(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(COLUMNS)
    assert (frame.dtypes == "float64").all()
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.name == "session_date"
    assert frame.index.tz is None and (frame.index == frame.index.normalize()).all()


def recorded(auto_adjust: bool) -> pd.DataFrame:
    """A yf.download(..., multi_level_index=True) frame for AAPL, 2023-12-15..2023-12-29."""
    name = "yf_aapl_auto_adjust.csv" if auto_adjust else "yf_aapl_raw.csv"
    return pd.read_csv(FIXTURES / name, header=[0, 1], index_col=0, parse_dates=True)


class FakeDownloader:
    """Stands in for yf.download: raises the queued errors, then returns `frame`."""

    def __init__(self, frame: pd.DataFrame | None = None, errors: list[Exception] = ()) -> None:
        self.frame = recorded(True) if frame is None else frame
        self.errors = list(errors)
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args: object, **kwargs: object) -> pd.DataFrame:
        self.calls.append((args, kwargs))
        if self.errors:
            raise self.errors.pop(0)
        return self.frame


def yfinance_provider(downloader: FakeDownloader, **kwargs: object) -> YFinanceProvider:
    sleeps: list[float] = []
    provider = YFinanceProvider(downloader=downloader, sleep=sleeps.append, **kwargs)
    provider.sleeps = sleeps  # type: ignore[attr-defined]
    return provider


# --- bundled ---------------------------------------------------------------------------------


def test_bundled_aapl_is_the_full_real_history() -> None:
    provider = BundledProvider()
    frame = provider.fetch("AAPL")
    assert_contract(frame)
    assert len(frame) == 2768
    assert frame.index[0] == pd.Timestamp("2013-01-02")
    assert frame.index[-1] == pd.Timestamp("2023-12-29")
    assert frame.loc["2023-12-29", "close"] == pytest.approx(192.53, abs=0.01)
    assert provider.available() == ("AAPL", "AMZN", "GOOGL", "MSFT", "TSLA")
    assert provider.name == "bundled"


def test_bundled_unknown_ticker_lists_what_is_available() -> None:
    with pytest.raises(MarketDataError) as info:
        BundledProvider().fetch("xyz")
    assert str(info.value) == (
        "XYZ is not in the bundled dataset (available: AAPL, AMZN, GOOGL, MSFT, TSLA)"
    )


@pytest.mark.parametrize("ticker", ["../AAPL", "AAPL MSFT", "", "aapl.csv/..", "A" * 40])
def test_tickers_that_could_be_paths_or_lists_are_rejected(ticker: str) -> None:
    with pytest.raises(MarketDataError, match="not a valid ticker symbol"):
        BundledProvider().fetch(ticker)


def test_bundled_start_end_are_inclusive_and_ticker_case_insensitive() -> None:
    frame = BundledProvider().fetch("msft", start=date(2023, 12, 1), end=date(2023, 12, 29))
    assert frame.index[0] == pd.Timestamp("2023-12-01")
    assert frame.index[-1] == pd.Timestamp("2023-12-29")
    assert len(frame) == 20
    with pytest.raises(MarketDataError, match="start 2023-12-29 is after end 2023-12-01"):
        BundledProvider().fetch("MSFT", start=date(2023, 12, 29), end=date(2023, 12, 1))


def test_fetch_candles_validates_bundled_data() -> None:
    frame, report = fetch_candles(make_provider("bundled"), "tsla", start=date(2023, 1, 1))
    assert_contract(frame)
    assert report.ticker == "TSLA" and report.dropped_rows == 0 and report.total_rows == 250
    with pytest.raises(MarketDataError, match="^AAPL: no candles from the bundled provider"):
        fetch_candles(BundledProvider(), "AAPL", start=date(2024, 1, 1))


# --- csv -------------------------------------------------------------------------------------


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_csv_reads_case_insensitive_headers_and_ignores_adj_close(tmp_path: Path) -> None:
    header = "date,OPEN,High,low,Close,Adj Close,volume\n"
    rows = [r.rstrip("\n").rsplit(",", 1) for r in ROWS]
    write(tmp_path, "aapl.csv", header + "".join(f"{a},99.9,{v}\n" for a, v in rows))
    write(tmp_path, "notes.txt", "not data")
    provider = make_provider("csv", csv_dir=tmp_path)
    assert provider.available() == ("AAPL",)
    frame = provider.fetch("AAPL")
    assert_contract(frame)
    assert frame["close"].tolist() == [10.5, 11.0, 11.2]
    assert frame["volume"].tolist() == [100.0, 200.0, 300.0]


def test_csv_start_end_filtering(tmp_path: Path) -> None:
    write(tmp_path, "AAPL.csv", HEADER + "".join(ROWS))
    provider = CsvProvider(tmp_path)
    frame = provider.fetch("AAPL", start=date(2023, 1, 4), end=date(2023, 1, 4))
    assert list(frame.index) == [pd.Timestamp("2023-01-04")]
    assert len(provider.fetch("AAPL", end=date(2023, 1, 4))) == 2
    assert len(provider.fetch("AAPL", start=date(2023, 1, 5))) == 1


def test_csv_missing_column_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "AAPL.csv", "Date,Open,High,Low,Close\n2023-01-03,1,2,0.5,1.5\n")
    with pytest.raises(MarketDataError) as info:
        CsvProvider(tmp_path).fetch("AAPL")
    assert str(info.value).startswith(f"{path}: missing column(s) volume (found: Date, Open")
    write(tmp_path, "MSFT.csv", "Day,Open,High,Low,Close,Volume\n2023-01-03,1,2,0.5,1.5,3\n")
    with pytest.raises(MarketDataError, match=r"MSFT.csv: missing column\(s\) date"):
        CsvProvider(tmp_path).fetch("MSFT")


def test_csv_unparsable_dates_name_the_file_and_value(tmp_path: Path) -> None:
    write(tmp_path, "AAPL.csv", HEADER + ROWS[0] + "not-a-date,1,2,0.5,1.5,3\n")
    with pytest.raises(
        MarketDataError, match=r"AAPL.csv: unparsable date 'not-a-date' in data row 2"
    ):
        CsvProvider(tmp_path).fetch("AAPL")
    write(tmp_path, "EMPTY.csv", "")
    with pytest.raises(MarketDataError, match="EMPTY.csv: cannot read CSV"):
        CsvProvider(tmp_path).fetch("EMPTY")


def test_csv_dates_with_utc_offsets_keep_their_local_date(tmp_path: Path) -> None:
    rows = "2023-03-10 00:00:00-05:00,1,2,0.5,1.5,3\n2023-03-13 00:00:00-04:00,1,2,0.5,1.5,3\n"
    write(tmp_path, "AAPL.csv", HEADER + rows)
    frame = CsvProvider(tmp_path).fetch("AAPL")
    assert list(frame.index) == [pd.Timestamp("2023-03-10"), pd.Timestamp("2023-03-13")]


def test_csv_unknown_ticker_and_missing_folder(tmp_path: Path) -> None:
    write(tmp_path, "AAPL.csv", HEADER + "".join(ROWS))
    write(tmp_path, "msft.CSV", HEADER + "".join(ROWS))
    with pytest.raises(MarketDataError) as info:
        CsvProvider(tmp_path).fetch("TSLA")
    assert str(info.value) == f"TSLA has no CSV file in {tmp_path} (available: AAPL, MSFT)"
    with pytest.raises(MarketDataError, match="does not exist"):
        CsvProvider(tmp_path / "nope").fetch("AAPL")


def test_csv_bad_rows_are_left_for_validation(tmp_path: Path) -> None:
    write(tmp_path, "AAPL.csv", HEADER + "".join(ROWS) + "2023-01-06,12,11,10,11,-4\n")
    frame, report = fetch_candles(CsvProvider(tmp_path), "AAPL")
    assert report.problems == {"high < max(open, close)": 1, "volume < 0": 1}
    assert len(frame) == 3


# --- yfinance --------------------------------------------------------------------------------


@pytest.mark.parametrize("auto_adjust", [True, False])
def test_yfinance_flattens_multiindex_and_passes_auto_adjust(auto_adjust: bool) -> None:
    download = FakeDownloader(recorded(auto_adjust))
    provider = yfinance_provider(download, auto_adjust=auto_adjust)
    frame = provider.fetch("aapl", start=date(2023, 12, 15), end=date(2023, 12, 29))
    assert_contract(frame)
    assert len(frame) == 10 and frame.index[-1] == pd.Timestamp("2023-12-29")
    assert frame.loc["2023-12-29", "close"] == pytest.approx(192.53, abs=0.01)  # never Adj Close
    assert download.calls == [
        (
            ("AAPL",),
            {
                "start": "2023-12-15",
                "end": "2023-12-30",  # yfinance's end is exclusive
                "auto_adjust": auto_adjust,
                "progress": False,
                "threads": False,
                "multi_level_index": True,
            },
        )
    ]
    assert provider.available() is None and provider.name == "yfinance"


def test_yfinance_default_start_is_history_years_ago_and_end_open() -> None:
    download = FakeDownloader()
    provider = YFinanceProvider(
        downloader=download, history_years=2, today=lambda: date(2024, 2, 29)
    )
    provider.fetch("AAPL")
    assert download.calls[0][1]["start"] == "2022-02-28"
    assert download.calls[0][1]["end"] is None


def test_yfinance_filters_to_the_inclusive_range() -> None:
    provider = yfinance_provider(FakeDownloader())
    frame = provider.fetch("AAPL", start=date(2023, 12, 20), end=date(2023, 12, 22))
    assert list(frame.index.strftime("%Y-%m-%d")) == ["2023-12-20", "2023-12-21", "2023-12-22"]


def test_yfinance_retries_rate_limits_and_network_errors_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    download = FakeDownloader(errors=[YFRateLimitError(), ConnectionError("reset by peer")])
    provider = yfinance_provider(download, retries=3, backoff_s=0.5)
    with caplog.at_level(logging.WARNING, logger="candlecast.data"):
        frame, report = fetch_candles(provider, "AAPL", start=date(2023, 12, 15))
    assert len(download.calls) == 3 and report.total_rows == len(frame) == 10
    assert provider.sleeps == [0.5, 1.0]
    assert "retrying in 0.5 s" in caplog.records[0].getMessage()


def test_yfinance_gives_up_after_the_last_attempt() -> None:
    download = FakeDownloader(errors=[TimeoutError("timed out")] * 2 + [YFRateLimitError()])
    provider = yfinance_provider(download, retries=3, backoff_s=1.0)
    with pytest.raises(MarketDataError) as info:
        provider.fetch("MSFT", start=date(2023, 12, 15))
    assert str(info.value) == (
        "yfinance download for MSFT failed after 3 attempt(s): YFRateLimitError: "
        "Too Many Requests. Rate limited. Try after a while."
    )
    assert len(download.calls) == 3 and provider.sleeps == [1.0, 2.0]


def test_yfinance_does_not_retry_other_errors() -> None:
    download = FakeDownloader(errors=[KeyError("chart")])
    provider = yfinance_provider(download)
    with pytest.raises(MarketDataError, match="^yfinance failed for AAPL: KeyError"):
        provider.fetch("AAPL")
    assert len(download.calls) == 1 and provider.sleeps == []


def test_yfinance_empty_frame_is_an_error() -> None:
    empty = recorded(True).iloc[0:0]
    provider = yfinance_provider(FakeDownloader(empty))
    with pytest.raises(MarketDataError, match="^no data returned by yfinance for XYZ \\(2023"):
        provider.fetch("XYZ", start=date(2023, 12, 15), end=date(2023, 12, 29))
    provider = yfinance_provider(FakeDownloader(pd.DataFrame()))
    with pytest.raises(MarketDataError, match="no data returned by yfinance for XYZ"):
        provider.fetch("XYZ")


# --- the real yf.download code, with Ticker.history faked (no network) ------------------------


@pytest.fixture
def offline_history(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Replace Ticker.history (yf.download's only data source) with queued results."""
    queue: list[object] = []

    def history(self: yf.Ticker, **kwargs: object) -> pd.DataFrame:
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    monkeypatch.setattr(yf.Ticker, "history", history)
    return queue


def history_frame() -> pd.DataFrame:
    frame = recorded(True).droplevel("Ticker", axis=1)[["Open", "High", "Low", "Close", "Volume"]]
    frame.columns.name = None
    frame.index = frame.index.tz_localize("America/New_York")
    return frame


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # yfinance 1.7 vs pandas 3.1
def test_default_downloader_shape_matches_yfinance(offline_history: list[object]) -> None:
    offline_history.append(history_frame())
    provider = YFinanceProvider(sleep=lambda s: None)
    frame = provider.fetch("AAPL", start=date(2023, 12, 15), end=date(2023, 12, 29))
    assert_contract(frame)
    assert frame.equals(yfinance_provider(FakeDownloader()).fetch("AAPL", date(2023, 12, 15)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_default_downloader_retries_a_rate_limit_yfinance_swallowed(
    offline_history: list[object],
) -> None:
    offline_history.extend([YFRateLimitError(), history_frame()])
    sleeps: list[float] = []
    provider = YFinanceProvider(sleep=sleeps.append)
    frame = provider.fetch("AAPL", start=date(2023, 12, 15), end=date(2023, 12, 29))
    assert len(frame) == 10 and sleeps == [1.0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_default_downloader_reports_yfinance_reason(offline_history: list[object]) -> None:
    offline_history.append(YFPricesMissingError("XYZ", ""))
    provider = YFinanceProvider(sleep=lambda s: None)
    with pytest.raises(MarketDataError, match="no data returned by yfinance for XYZ.*delisted"):
        provider.fetch("XYZ", start=date.today() - timedelta(days=10))


# What yfinance 1.7 logs (and returns: an empty frame) for one ticker when the host is unreachable.
OFFLINE_ERRORS = [
    "Failed to get ticker 'AAPL' reason: Failed to perform, curl: (6) Could not resolve host: "
    "query2.finance.yahoo.com (Domain name not found). See "
    "https://curl.se/libcurl/c/libcurl-errors.html first for more details.",
    "\n1 Failed download:",
    "['AAPL']: DNSError('Failed to perform, curl: (6) Could not resolve host: "
    "query2.finance.yahoo.com. See https://curl.se/libcurl/c/libcurl-errors.html first for more "
    "details.')",
]


def offline_download(calls: list[str]):
    """Stands in for yf.download with no network: logs the recorded errors, returns no rows."""

    def download(ticker: str, **kwargs: object) -> pd.DataFrame:
        calls.append(ticker)
        for message in OFFLINE_ERRORS:
            logging.getLogger("yfinance").error(message)
        columns = pd.MultiIndex.from_product(
            [["Adj Close", "Close", "High", "Low", "Open", "Volume"], [ticker]],
            names=["Price", "Ticker"],
        )
        return pd.DataFrame(columns=columns, index=pd.DatetimeIndex([], name="Date"))

    return download


def test_yfinance_network_failures_are_retried_then_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """yf.download swallows a network failure (empty frame, error logged): still retried with
    backoff, then one line naming the cause; yfinance's multi-line errors are not logged."""
    calls: list[str] = []
    monkeypatch.setattr(yf, "download", offline_download(calls))
    sleeps: list[float] = []
    provider = YFinanceProvider(retries=2, backoff_s=0.5, sleep=sleeps.append)
    with caplog.at_level(logging.WARNING), pytest.raises(MarketDataError) as caught:
        provider.fetch("AAPL", start=date(2023, 12, 15), end=date(2023, 12, 29))
    assert calls == ["AAPL", "AAPL"] and sleeps == [0.5]
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        (
            "candlecast.data",
            "yfinance AAPL: network error: Failed to perform, curl: (6) Could not resolve host: "
            "query2.finance.yahoo.com (Domain name not found) (attempt 1 of 2); retrying in 0.5 s",
        )
    ]
    message = str(caught.value)
    assert "\n" not in message and "https://" not in message
    assert message == (
        "yfinance download for AAPL failed after 2 attempt(s): network error: Failed to "
        "perform, curl: (6) Could not resolve host: query2.finance.yahoo.com (Domain name not "
        "found)"
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_default_downloader_retries_a_network_error_yfinance_swallowed(
    offline_history: list[object],
) -> None:
    from curl_cffi.requests.exceptions import DNSError

    unreachable = DNSError("Failed to perform, curl: (6) Could not resolve host: example")
    offline_history.extend([unreachable, unreachable, history_frame()])
    sleeps: list[float] = []
    provider = YFinanceProvider(retries=3, sleep=sleeps.append)
    frame = provider.fetch("AAPL", start=date(2023, 12, 15), end=date(2023, 12, 29))
    assert len(frame) == 10 and sleeps == [1.0, 2.0] and offline_history == []


def test_make_provider_kinds() -> None:
    assert isinstance(make_provider("yfinance", retries=5), YFinanceProvider)
    assert make_provider(" Bundled ").name == "bundled"
    with pytest.raises(ValueError, match="csv_dir"):
        make_provider("csv")
    with pytest.raises(ValueError, match="unknown provider 'ftp'"):
        make_provider("ftp")
    with pytest.raises(ValueError, match="retries >= 1"):
        make_provider("yfinance", retries=0)


def test_fetch_candles_rejects_a_bad_on_invalid_before_downloading() -> None:
    download = FakeDownloader()
    with pytest.raises(ValueError, match="on_invalid"):
        fetch_candles(yfinance_provider(download), "AAPL", on_invalid="keep")
    assert download.calls == []

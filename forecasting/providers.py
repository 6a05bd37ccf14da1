"""Market-data providers: bundled package data, a folder of CSV files, or yfinance.

fetch() returns candles in the contract's shape (see validation.py) but unvalidated;
fetch_candles() adds validation and is what the rest of the app calls. Tickers are only ever
looked up in a listing of known files, never turned into a path.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from forecasting.validation import (
    ON_INVALID,
    MarketDataError,
    ValidationReport,
    normalise_frame,
    validate_candles,
)

logger = logging.getLogger("candlecast.data")

PROVIDER_KINDS = ("bundled", "csv", "yfinance")
_TICKER_RE = re.compile(r"^[A-Z0-9^][A-Z0-9.\-=^]{0,19}$")
_BUNDLED_SUFFIX = ".csv.gz"


class Provider(Protocol):
    """Where candles come from; `name` is stored as candles.source."""

    name: str

    def fetch(
        self, ticker: str, start: date | None = None, end: date | None = None
    ) -> pd.DataFrame:
        """Normalised but unvalidated candles, start/end inclusive; raises MarketDataError."""
        ...

    def available(self) -> tuple[str, ...] | None:
        """Tickers this provider knows, or None if it cannot list them (yfinance)."""
        ...


def _clean_ticker(ticker: str) -> str:
    """Upper-case symbol; anything that is not a plausible symbol is rejected up front."""
    symbol = str(ticker).strip().upper()
    if not _TICKER_RE.match(symbol):
        raise MarketDataError(f"{symbol[:30]!r} is not a valid ticker symbol")
    return symbol


def _check_range(ticker: str, start: date | None, end: date | None) -> None:
    if start is not None and end is not None and start > end:
        raise MarketDataError(f"{ticker}: start {start} is after end {end}")


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _between(frame: pd.DataFrame, start: date | None, end: date | None) -> pd.DataFrame:
    """Rows with start <= session_date <= end (either bound optional)."""
    lo = pd.Timestamp(start) if start is not None else pd.Timestamp.min
    hi = pd.Timestamp(end) if end is not None else pd.Timestamp.max
    return frame.loc[(frame.index >= lo) & (frame.index <= hi)]


def _read_ohlcv_csv(source: Any, label: str, compression: str | None = None) -> pd.DataFrame:
    """Read a Date,Open,High,Low,Close,Volume file (header case-insensitive, extras ignored)."""
    try:
        raw = pd.read_csv(source, compression=compression)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise MarketDataError(f"{label}: cannot read CSV ({_one_line(exc)})") from exc
    date_col = next((c for c in raw.columns if str(c).strip().lower() == "date"), None)
    if date_col is None:
        found = ", ".join(str(c) for c in raw.columns) or "none"
        raise MarketDataError(f"{label}: missing column(s) date (found: {found})")
    values = raw[date_col]
    try:
        dates = pd.to_datetime(values, errors="coerce")
    except ValueError:  # mixed UTC offsets (daylight saving): the local date part is what counts
        dates = pd.to_datetime(values.astype(str).str.slice(0, 10), errors="coerce")
    bad = dates.isna().to_numpy()
    if bad.any():
        row = int(bad.argmax())
        shown = str(values.iloc[row])[:40]
        raise MarketDataError(f"{label}: unparsable date {shown!r} in data row {row + 1}")
    return normalise_frame(raw, dates, label)


def _lookup(symbol: str, files: dict[str, list[Any]], unknown: str) -> Any:
    """Find `symbol` in a listing of ticker -> files (never a path built from the ticker)."""
    found = files.get(symbol, [])
    if not found:
        raise MarketDataError(f"{unknown} (available: {', '.join(sorted(files)) or 'none'})")
    if len(found) > 1:
        raise MarketDataError(f"{symbol}: ambiguous files {', '.join(f.name for f in found)}")
    return found[0]


class BundledProvider:
    """Real daily OHLCV for the five seed tickers, shipped as package data (works offline)."""

    name = "bundled"

    def _files(self) -> dict[str, list[Any]]:
        files: dict[str, list[Any]] = {}
        for entry in resources.files("forecasting").joinpath("bundled").iterdir():
            if entry.name.endswith(_BUNDLED_SUFFIX) and entry.is_file():
                files.setdefault(entry.name[: -len(_BUNDLED_SUFFIX)].upper(), []).append(entry)
        return files

    def available(self) -> tuple[str, ...]:
        return tuple(sorted(self._files()))

    def fetch(
        self, ticker: str, start: date | None = None, end: date | None = None
    ) -> pd.DataFrame:
        symbol = _clean_ticker(ticker)
        _check_range(symbol, start, end)
        entry = _lookup(symbol, self._files(), f"{symbol} is not in the bundled dataset")
        with entry.open("rb") as handle:
            frame = _read_ohlcv_csv(handle, f"bundled {entry.name}", compression="gzip")
        return _between(frame, start, end)


class CsvProvider:
    """A folder of TICKER.csv files (Date,Open,High,Low,Close,Volume; Adj Close ignored)."""

    name = "csv"

    def __init__(self, csv_dir: Path) -> None:
        self.csv_dir = Path(csv_dir)

    def _files(self) -> dict[str, list[Any]]:
        if not self.csv_dir.is_dir():
            raise MarketDataError(f"CSV folder {self.csv_dir} does not exist")
        files: dict[str, list[Any]] = {}
        for path in sorted(self.csv_dir.iterdir()):
            if path.suffix.lower() == ".csv" and path.is_file():
                files.setdefault(path.stem.upper(), []).append(path)
        return files

    def available(self) -> tuple[str, ...]:
        return tuple(sorted(self._files()))

    def fetch(
        self, ticker: str, start: date | None = None, end: date | None = None
    ) -> pd.DataFrame:
        symbol = _clean_ticker(ticker)
        _check_range(symbol, start, end)
        path = _lookup(symbol, self._files(), f"{symbol} has no CSV file in {self.csv_dir}")
        return _between(_read_ohlcv_csv(path, str(path)), start, end)


class _ErrorCapture(logging.Handler):
    """Collects yfinance's ERROR log lines: yf.download logs failures instead of raising them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


def _yf_download(*args: Any, **kwargs: Any) -> pd.DataFrame:
    """yf.download, but a rate limit it swallowed (empty frame + logged error) is re-raised."""
    import yfinance as yf
    from yfinance.exceptions import YFRateLimitError

    capture = _ErrorCapture()
    yf_logger = logging.getLogger("yfinance")
    yf_logger.addHandler(capture)
    try:
        frame = yf.download(*args, **kwargs)
    finally:
        yf_logger.removeHandler(capture)
    if (frame is None or frame.empty) and capture.messages:
        text = "; ".join(m for m in capture.messages if m and not m.endswith("Failed download:"))
        if "RateLimit" in text or "Too Many Requests" in text:
            raise YFRateLimitError()
        frame = pd.DataFrame() if frame is None else frame  # yfinance's reason goes in the error
        frame.attrs["yfinance_errors"] = text[:300]
    return frame


def _is_transient(exc: BaseException) -> bool:
    """Rate limits and network failures are worth retrying; anything else is not."""
    from yfinance.exceptions import YFRateLimitError

    if isinstance(exc, YFRateLimitError | OSError):
        return True
    return type(exc).__module__.split(".")[0] in {"requests", "curl_cffi", "urllib3"}


def _flatten(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """Reduce yfinance 1.x (Price, Ticker) MultiIndex columns to the Price level for `symbol`."""
    if not isinstance(frame.columns, pd.MultiIndex):
        return frame
    names = list(frame.columns.names)
    level = names.index("Ticker") if "Ticker" in names else frame.columns.nlevels - 1
    tickers = set(frame.columns.get_level_values(level))
    if symbol in tickers:
        return frame.xs(symbol, axis=1, level=level)
    if len(tickers) == 1:
        return frame.droplevel(level, axis=1)
    raise MarketDataError(f"yfinance returned columns for {sorted(tickers)}, not {symbol}")


class YFinanceProvider:
    """Live daily candles from Yahoo Finance, with retries and exponential backoff."""

    name = "yfinance"

    def __init__(
        self,
        auto_adjust: bool = True,
        retries: int = 3,
        backoff_s: float = 1.0,
        history_years: int = 5,
        downloader: Callable[..., pd.DataFrame] | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        today: Callable[[], date] = date.today,
    ) -> None:
        if retries < 1 or backoff_s < 0 or history_years < 1:
            raise ValueError("need retries >= 1, backoff_s >= 0 and history_years >= 1")
        self.auto_adjust = auto_adjust
        self.retries = retries
        self.backoff_s = backoff_s
        self.history_years = history_years
        self._download = downloader or _yf_download
        self._sleep = sleep
        self._today = today

    def available(self) -> None:
        return None

    def _call(self, symbol: str, start: date, end: date | None) -> pd.DataFrame:
        """One download with retries; yfinance's `end` is exclusive, so ask for end + 1 day."""
        kwargs = {
            "start": start.isoformat(),
            "end": (end + timedelta(days=1)).isoformat() if end is not None else None,
            "auto_adjust": self.auto_adjust,
            "progress": False,
            "threads": False,
            "multi_level_index": True,
        }
        for attempt in range(1, self.retries + 1):
            try:
                return self._download(symbol, **kwargs)
            except MarketDataError:
                raise
            except Exception as exc:
                if not _is_transient(exc):
                    raise MarketDataError(
                        f"yfinance failed for {symbol}: {_one_line(exc)}"
                    ) from exc
                if attempt == self.retries:
                    raise MarketDataError(
                        f"yfinance download for {symbol} failed after {attempt} attempt(s): "
                        f"{_one_line(exc)}"
                    ) from exc
                delay = self.backoff_s * 2 ** (attempt - 1)
                note = f"{_one_line(exc)} (attempt {attempt} of {self.retries})"
                logger.warning("yfinance %s: %s; retrying in %.1f s", symbol, note, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def fetch(
        self, ticker: str, start: date | None = None, end: date | None = None
    ) -> pd.DataFrame:
        symbol = _clean_ticker(ticker)
        if start is None:
            start = (pd.Timestamp(self._today()) - pd.DateOffset(years=self.history_years)).date()
        _check_range(symbol, start, end)
        raw = self._call(symbol, start, end)
        if raw is None or raw.empty or raw.dropna(how="all").empty:
            reason = (raw.attrs.get("yfinance_errors") if raw is not None else None) or (
                "unknown or delisted symbol, no sessions in range, or Yahoo refused the request"
            )
            raise MarketDataError(
                f"no data returned by yfinance for {symbol} ({start} .. {end or 'today'}): {reason}"
            )
        frame = _flatten(raw, symbol)
        return _between(normalise_frame(frame, frame.index, f"yfinance {symbol}"), start, end)


def make_provider(
    kind: str,
    *,
    csv_dir: Path | None = None,
    auto_adjust: bool = True,
    retries: int = 3,
    history_years: int = 5,
) -> Provider:
    """Build the provider named in config ("bundled", "csv" or "yfinance")."""
    kind = kind.strip().lower()
    if kind == "bundled":
        return BundledProvider()
    if kind == "csv":
        if csv_dir is None:
            raise ValueError("the csv provider needs csv_dir (a folder of TICKER.csv files)")
        return CsvProvider(csv_dir)
    if kind == "yfinance":
        return YFinanceProvider(
            auto_adjust=auto_adjust, retries=retries, history_years=history_years
        )
    raise ValueError(f"unknown provider {kind!r}; expected one of {', '.join(PROVIDER_KINDS)}")


def fetch_candles(
    provider: Provider,
    ticker: str,
    start: date | None = None,
    end: date | None = None,
    on_invalid: str = "drop",
) -> tuple[pd.DataFrame, ValidationReport]:
    """Fetch and validate one ticker's candles: the one entry point the rest of the app uses."""
    if on_invalid not in ON_INVALID:  # before any download, not after it
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")
    symbol = _clean_ticker(ticker)
    frame = provider.fetch(symbol, start, end)
    if frame.empty:
        raise MarketDataError(
            f"{symbol}: no candles from the {provider.name} provider "
            f"between {start or 'the start'} and {end or 'the end'}"
        )
    return validate_candles(frame, symbol, on_invalid)

"""Market-data providers: bundled package data, a folder of CSV files, or yfinance.

fetch() returns candles in the contract's shape (see validation.py) but unvalidated;
fetch_candles() adds validation and is what the rest of the app calls. Tickers are only ever
looked up in a listing of known files, never turned into a path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from forecasting.validation import (
    ON_INVALID,
    MarketDataError,
    ValidationReport,
    _between,
    _check_range,
    _clean_ticker,
    _one_line,
    normalise_frame,
    validate_candles,
)
from forecasting.yfinance_provider import YFinanceProvider

logger = logging.getLogger("candlecast.data")

PROVIDER_KINDS = ("bundled", "csv", "yfinance")
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


class _FileProvider:
    """Shared lookup for providers backed by one file per ticker (never a path from input)."""

    def _files(self) -> dict[str, list[Any]]:
        raise NotImplementedError

    def _missing(self, symbol: str) -> str:
        raise NotImplementedError

    def _read(self, entry: Any) -> pd.DataFrame:
        raise NotImplementedError

    def available(self) -> tuple[str, ...]:
        return tuple(sorted(self._files()))

    def fetch(
        self, ticker: str, start: date | None = None, end: date | None = None
    ) -> pd.DataFrame:
        symbol = _clean_ticker(ticker)
        _check_range(symbol, start, end)
        entry = _lookup(symbol, self._files(), self._missing(symbol))
        return _between(self._read(entry), start, end)


class BundledProvider(_FileProvider):
    """Real daily OHLCV for the five seed tickers, shipped as package data (works offline)."""

    name = "bundled"

    def _files(self) -> dict[str, list[Any]]:
        files: dict[str, list[Any]] = {}
        for entry in resources.files("forecasting").joinpath("bundled").iterdir():
            if entry.name.endswith(_BUNDLED_SUFFIX) and entry.is_file():
                files.setdefault(entry.name[: -len(_BUNDLED_SUFFIX)].upper(), []).append(entry)
        return files

    def _missing(self, symbol: str) -> str:
        return f"{symbol} is not in the bundled dataset"

    def _read(self, entry: Any) -> pd.DataFrame:
        with entry.open("rb") as handle:
            return _read_ohlcv_csv(handle, f"bundled {entry.name}", compression="gzip")


class CsvProvider(_FileProvider):
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

    def _missing(self, symbol: str) -> str:
        return f"{symbol} has no CSV file in {self.csv_dir}"

    def _read(self, entry: Any) -> pd.DataFrame:
        return _read_ohlcv_csv(entry, str(entry))


class OnExchanges:
    """A provider plus each ticker's exchange: fetch_candles() then drops off-calendar rows.

    Wraps any provider (same name, same fetch/available), so the exchange travels with the
    provider into every code path that fetches, including worker processes.
    """

    def __init__(self, provider: Provider, exchange_for: Callable[[str], str]) -> None:
        self.provider = provider
        self.name = provider.name
        self.exchange_for = exchange_for

    def fetch(
        self, ticker: str, start: date | None = None, end: date | None = None
    ) -> pd.DataFrame:
        return self.provider.fetch(ticker, start, end)

    def available(self) -> tuple[str, ...] | None:
        return self.provider.available()


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
    exchange: str | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Fetch and validate one ticker's candles: the one entry point the rest of the app uses.

    Rows that are not sessions of the ticker's exchange (`exchange`, else the provider's
    `exchange_for(ticker)` when it has one, see OnExchanges) are dropped and reported.
    """
    if on_invalid not in ON_INVALID:  # before any download, not after it
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")
    symbol = _clean_ticker(ticker)
    frame = provider.fetch(symbol, start, end)
    if frame.empty:
        raise MarketDataError(
            f"{symbol}: no candles from the {provider.name} provider "
            f"between {start or 'the start'} and {end or 'the end'}"
        )
    if exchange is None and isinstance(provider, OnExchanges):
        exchange = provider.exchange_for(symbol)
    return validate_candles(frame, symbol, on_invalid, exchange)

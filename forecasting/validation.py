"""The candle frame contract, and validation: every bad row is dropped and reported, or fails.

Contract (shared by providers, features and the database layer): a tz-naive DatetimeIndex named
``session_date`` at midnight, sorted and unique, and exactly the float64 columns in ``COLUMNS``.
normalise_frame() gives raw provider data that shape, with prices cleaned of float32 noise and
volume in whole shares (forecasting.numbers); validate_candles() enforces the rest.

Implausible values (finite and positive, but not a real price) are rejected by two rules:
- ``price > 1e9``: any of open/high/low/close above MAX_PRICE (1e9; the dearest US share trades
  below 1e6).
- ``volume > 1e18``: volume above MAX_VOLUME (stored as a 64-bit integer; real daily volumes stay
  below 1e12).
- ``implausible jump``: any of open/high/low/close more than MAX_JUMP (20) times above or below
  the median close of its neighbours, the JUMP_NEIGHBOURS (5) rows before and 5 after it that
  pass every other rule (fewer at the ends; the last row is judged by the 5 before it). A
  one-session spike or dip (a 1e300 row, a x50 glitch) is caught; a lasting level change is not
  (in the middle of the window half the neighbours are on each side). Real daily data stays far
  inside: the bundled series and 35 other real series 2005-2023 never stray 2.3 times from it.
  A frame with a single row passing the other rules has no neighbours and is not judged.

Given the ticker's exchange, a row dated on a day that is not a session of that exchange's
calendar (a weekend, a holiday) is rejected too ("not a XNYS session"): such a row would
otherwise become a date no other ticker has a candle for.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from forecasting.calendar import off_calendar
from forecasting.numbers import strip_float32_noise

COLUMNS = ("open", "high", "low", "close", "volume")
INDEX_NAME = "session_date"
ON_INVALID = ("drop", "fail")
MAX_BAD_DATES = 5
MAX_PRICE = 1e9
MAX_VOLUME = 1e18
MAX_JUMP = 20.0
JUMP_NEIGHBOURS = 5

# Reasons a row is rejected, in the order they are checked and reported.
MISSING_DATE = "missing date"
DUPLICATE = "duplicate date"
NOT_FINITE = "NaN/inf"
NON_POSITIVE = "price <= 0"
HIGH_TOO_LOW = "high < max(open, close)"
LOW_TOO_HIGH = "low > min(open, close)"
NEGATIVE_VOLUME = "volume < 0"
TOO_LARGE = "price > 1e9"
TOO_MUCH_VOLUME = "volume > 1e18"
JUMP = "implausible jump (x20 vs neighbours)"


def not_a_session(exchange: str) -> str:
    """The reason for a row dated on a day that is not a session of `exchange`."""
    return f"not a {exchange} session"


logger = logging.getLogger("candlecast.data")


class MarketDataError(Exception):
    """A per-ticker data failure; str(exc) is a one-line user-facing message naming the ticker."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ValidationReport:
    """What validate_candles found for one ticker: row counts, reasons and the first bad dates."""

    ticker: str
    total_rows: int
    dropped_rows: int
    first_bad_dates: tuple[datetime.date, ...]
    problems: dict[str, int]

    def details(self) -> str:
        """The "(reason: n, ...); first: date, ..." part of the summary ("" if nothing is bad)."""
        if not self.problems:
            return ""
        ranked = sorted(self.problems.items(), key=lambda item: -item[1])
        text = " (" + ", ".join(f"{reason}: {count}" for reason, count in ranked) + ")"
        if self.first_bad_dates:
            text += "; first: " + ", ".join(d.isoformat() for d in self.first_bad_dates)
        return text

    def summary(self) -> str:
        """One line for logs and the UI, e.g. "AAPL: dropped 3 of 1258 rows (NaN/inf: 3); ..."."""
        if not self.dropped_rows:
            return f"{self.ticker}: all {self.total_rows} rows valid"
        return (
            f"{self.ticker}: dropped {self.dropped_rows} of {self.total_rows} rows{self.details()}"
        )


def to_session_index(index: pd.Index) -> pd.DatetimeIndex:
    """Convert dates/timestamps to the contract's index: tz-naive, midnight, ns, "session_date".

    A tz-aware index keeps its local calendar date (a daily bar stamped 00:00-05:00 is that day).
    """
    idx = pd.DatetimeIndex(pd.to_datetime(index))
    if idx.tz is not None:
        idx = idx.tz_localize(None)
    return idx.normalize().as_unit("ns").rename(INDEX_NAME)


def normalise_frame(raw: pd.DataFrame, dates: Iterable[Any], source: str) -> pd.DataFrame:
    """Map case-insensitive OHLCV headers to COLUMNS as float64 on a session index (unvalidated).

    Extra columns (e.g. "Adj Close") are ignored; unparsable numbers become NaN for validation.
    Prices lose their float32 noise (192.52999877929688 -> 192.53, see forecasting.numbers) and
    volume is rounded to whole shares: stored as they are, they are what SQL users read.
    """
    by_lower = {str(col).strip().lower(): col for col in raw.columns}
    missing = [c for c in COLUMNS if c not in by_lower]
    if missing:
        found = ", ".join(str(c) for c in raw.columns) or "none"
        raise MarketDataError(f"{source}: missing column(s) {', '.join(missing)} (found: {found})")
    data = {
        c: pd.to_numeric(raw[by_lower[c]], errors="coerce").to_numpy("float64") for c in COLUMNS
    }
    for column in COLUMNS[:4]:
        data[column] = strip_float32_noise(data[column])
    data["volume"] = np.rint(data["volume"])
    return pd.DataFrame(data, index=to_session_index(pd.Index(dates)), columns=list(COLUMNS))


# --- helpers shared by the providers (forecasting.providers, forecasting.yfinance_provider) ---

_TICKER_RE = re.compile(r"^[A-Z0-9^][A-Z0-9.\-=^]{0,19}$")


def _clean_ticker(ticker: str) -> str:
    """Upper-case symbol; anything that is not a plausible symbol is rejected up front."""
    symbol = str(ticker).strip().upper()
    if not _TICKER_RE.match(symbol):
        raise MarketDataError(f"{symbol[:30]!r} is not a valid ticker symbol")
    return symbol


def _check_range(ticker: str, start: datetime.date | None, end: datetime.date | None) -> None:
    if start is not None and end is not None and start > end:
        raise MarketDataError(f"{ticker}: start {start} is after end {end}")


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _between(
    frame: pd.DataFrame, start: datetime.date | None, end: datetime.date | None
) -> pd.DataFrame:
    """Rows with start <= session_date <= end (either bound optional)."""
    lo = pd.Timestamp(start) if start is not None else pd.Timestamp.min
    hi = pd.Timestamp(end) if end is not None else pd.Timestamp.max
    return frame.loc[(frame.index >= lo) & (frame.index <= hi)]


def _coerce(frame: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """normalise_frame() the input, sorted by date; an index that is not dates is an error."""
    if pd.api.types.is_numeric_dtype(frame.index.dtype):
        raise MarketDataError(f"{ticker}: candle index holds numbers, not dates")
    try:
        out = normalise_frame(frame, frame.index, ticker)
    except (TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise MarketDataError(f"{ticker}: candle index is not made of dates ({detail})") from exc
    # A stable sort keeps the original order among duplicate dates, so "first" means first seen.
    return out.sort_index(kind="mergesort")


def _jump_mask(prices: np.ndarray, judged: np.ndarray) -> np.ndarray:
    """Rows among `judged` with a price > MAX_JUMP times away from their neighbours' median close.

    `prices` is the (n, 4) open/high/low/close array of the sorted frame; the neighbours of a
    judged row are the JUMP_NEIGHBOURS judged rows on each side of it (not the row itself).
    """
    out = np.zeros(len(prices), dtype=bool)
    rows = np.flatnonzero(judged)
    if len(rows) < 2:
        return out
    logs = np.log(prices[rows])
    k = JUMP_NEIGHBOURS
    padded = np.concatenate([np.full(k, np.nan), logs[:, 3], np.full(k, np.nan)])
    windows = sliding_window_view(padded, 2 * k + 1).copy()
    windows[:, k] = np.nan  # a row is never its own reference
    reference = np.nanmedian(windows, axis=1)
    out[rows] = (np.abs(logs - reference[:, None]) > np.log(MAX_JUMP)).any(axis=1)
    return out


def _problem_masks(frame: pd.DataFrame, exchange: str | None) -> dict[str, np.ndarray]:
    """Boolean row masks, one per rule; price rules only judge rows whose values are all finite.

    The session rule applies only when `exchange` is given. The jump rule judges (and takes its
    reference from) only rows that pass every other rule.
    """
    values = frame.to_numpy()
    finite = np.isfinite(values).all(axis=1)
    o, h, lo, c, v = (frame[col].to_numpy() for col in COLUMNS)
    with np.errstate(invalid="ignore"):
        masks = {
            MISSING_DATE: np.asarray(frame.index.isna()),
            DUPLICATE: np.asarray(frame.index.duplicated(keep="first")) & ~frame.index.isna(),
            NOT_FINITE: ~finite,
            NON_POSITIVE: finite & ((values[:, :4] <= 0).any(axis=1)),
            HIGH_TOO_LOW: finite & (h < np.maximum(o, c)),
            LOW_TOO_HIGH: finite & (lo > np.minimum(o, c)),
            NEGATIVE_VOLUME: finite & (v < 0),
            TOO_LARGE: finite & ((values[:, :4] > MAX_PRICE).any(axis=1)),
            TOO_MUCH_VOLUME: finite & (v > MAX_VOLUME),
        }
    if exchange is not None:
        masks[not_a_session(exchange)] = off_calendar(pd.DatetimeIndex(frame.index), exchange)
    judged = ~np.logical_or.reduce(list(masks.values()))
    masks[JUMP] = _jump_mask(values[:, :4], judged)
    return masks


def validate_candles(
    frame: pd.DataFrame, ticker: str, on_invalid: str = "drop", exchange: str | None = None
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check every rule on every row; drop and report bad rows ("drop") or raise ("fail").

    With `exchange` (an exchange_calendars code such as "XNYS"), rows that are not sessions of
    that calendar are bad rows too.

    Raises MarketDataError when on_invalid="fail" and any row is bad, when no valid row remains,
    or when the frame lacks the OHLCV columns. Unsorted input is sorted (not an error).
    """
    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")
    if frame is None or len(frame) == 0:
        raise MarketDataError(f"{ticker}: no candles to validate (empty data)")
    data = _coerce(frame, ticker)
    masks = _problem_masks(data, exchange)
    bad = np.logical_or.reduce(list(masks.values()))
    problems = {reason: int(mask.sum()) for reason, mask in masks.items() if mask.any()}
    bad_dates = sorted({ts.date() for ts in data.index[bad] if not pd.isna(ts)})
    report = ValidationReport(
        ticker=ticker,
        total_rows=len(data),
        dropped_rows=int(bad.sum()),
        first_bad_dates=tuple(bad_dates[:MAX_BAD_DATES]),
        problems=problems,
    )
    if report.dropped_rows and on_invalid == "fail":
        message = (
            f"{ticker}: {report.dropped_rows} of {report.total_rows} rows are invalid"
            f"{report.details()} (on_invalid='fail')"
        )
        raise MarketDataError(message, report)
    if report.dropped_rows == report.total_rows:
        message = f"{ticker}: no valid rows left after dropping all {report.total_rows}"
        raise MarketDataError(message + report.details(), report)
    if report.dropped_rows:
        logger.warning("%s", report.summary())
    return data.loc[~bad].copy(), report

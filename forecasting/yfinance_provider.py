"""The yfinance provider: live daily candles from Yahoo Finance, with retries and backoff.

yfinance is imported lazily (inside the functions that need it), so importing this module
stays cheap and works offline. Re-exported by forecasting.providers.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pandas as pd

from forecasting.validation import (
    MarketDataError,
    _between,
    _check_range,
    _clean_ticker,
    _one_line,
    normalise_frame,
)

logger = logging.getLogger("candlecast.data")

# What yfinance's logged per-ticker errors look like when the network failed (curl_cffi's and
# requests' exception names, curl's error codes, the usual socket errors).
NETWORK_FAILURE = re.compile(
    r"curl: \(\d+\)|\b(?:DNSError|ConnectionError|ConnectTimeout|ReadTimeout|Timeout|SSLError|"
    r"ProxyError|CurlError|IncompleteRead|ChunkedEncodingError|TimeoutError|ConnectionResetError|"
    r"ConnectionRefusedError)\b|timed out|Could not resolve host|Connection (?:refused|reset)|"
    r"Network is unreachable"
)
# yfinance's wording around the cause: "Failed to get ticker 'X' reason: ", "['X']: ", curl's link.
_WRAPPING = re.compile(
    r"^(?:Failed to get ticker '[^']*' reason: |\[[^\]]*\]: )|\.? See https?://\S+ first for "
    r"more details\.?"
)


class NetworkError(ConnectionError):
    """A download that failed on the network and that yfinance swallowed: retried like a raised
    network error (an OSError)."""


class _ErrorCapture(logging.Filter):
    """Takes yfinance's ERROR log lines: yf.download logs failures instead of raising them.
    They are not logged as they are (multi-line, repeated per attempt): the provider's own
    warning and error say it in one line."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        self.messages.append(" ".join(record.getMessage().split()))
        return False


def _yf_download(*args: Any, **kwargs: Any) -> pd.DataFrame:
    """yf.download, but a rate limit or network failure it swallowed (an empty frame and a
    logged error: yfinance 1.x records per-ticker failures instead of raising) is raised."""
    import yfinance as yf
    from yfinance.exceptions import YFRateLimitError

    capture = _ErrorCapture()
    yf_logger = logging.getLogger("yfinance")
    yf_logger.addFilter(capture)
    try:
        frame = yf.download(*args, **kwargs)
    finally:
        yf_logger.removeFilter(capture)
    text = "; ".join(m for m in capture.messages if m and not m.endswith("Failed download:"))
    if (frame is None or frame.empty) and capture.messages:
        if "RateLimit" in text or "Too Many Requests" in text:
            raise YFRateLimitError()
        network = [m for m in capture.messages if NETWORK_FAILURE.search(m)]
        if network:
            cause = _WRAPPING.sub("", network[0]).strip()
            raise NetworkError(f"network error: {cause[:200]}")
        frame = pd.DataFrame() if frame is None else frame  # yfinance's reason goes in the error
        frame.attrs["yfinance_errors"] = text[:300]
    elif text:  # rows despite an error: say it, in one line
        logger.warning("yfinance: %s", text[:300])
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
                reason = str(exc) if isinstance(exc, NetworkError) else _one_line(exc)
                if attempt == self.retries:
                    raise MarketDataError(
                        f"yfinance download for {symbol} failed after {attempt} attempt(s): "
                        f"{reason}"
                    ) from exc
                delay = self.backoff_s * 2 ** (attempt - 1)
                note = f"{reason} (attempt {attempt} of {self.retries})"
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

"""Bring the `candles` table up to date from the configured market-data provider.

Incremental: a ticker with stored candles is fetched from a few sessions before its last stored
session (to pick up corrections) onwards; a new ticker gets `history_years` of history.
Each ticker is its own transaction, so one ticker's failure never loses another's rows.
Rows are validated against the ticker's exchange calendar, and the synced range (from the fetch's
start on) is replaced: stored rows the provider no longer returns there are deleted.
When the provider has rescaled the overlapping sessions (a split or dividend re-adjusts Yahoo's
whole history), the ticker's whole stored history is re-fetched and replaced, so the stored
series never mixes price bases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from db import repository
from forecasting.providers import OnExchanges, Provider, fetch_candles, make_provider
from forecasting.validation import MarketDataError
from jobs.config import Config

log = logging.getLogger("candlecast.sync")

PRICE_COLUMNS = ["open", "high", "low", "close"]
CHANGE_RTOL = 1e-6  # a price differs from the stored one beyond float noise
FACTOR_RTOL = 1e-5  # a row's four price ratios agree: one common factor (a basis change)


@dataclass(frozen=True)
class SyncResult:
    """What one ticker's sync did; `error` is set (and counts are zero) when it failed."""

    ticker: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    dropped: int = 0
    removed: int = 0
    first: date | None = None
    last: date | None = None
    error: str | None = None
    rebased: bool = False  # the whole stored history was replaced (the provider's basis changed)
    price_factor: float | None = None  # new/old price on rescaled sessions (0.25: a 4:1 split)

    @property
    def ok(self) -> bool:
        return self.error is None


def provider_for(config: Config) -> Provider:
    """The market-data provider `[data]` configures, knowing each ticker's exchange (`[tickers]`).

    fetch_candles() then drops rows that are not sessions of the ticker's exchange calendar.
    """
    provider = make_provider(
        config.data.provider,
        csv_dir=config.data.csv_dir,
        auto_adjust=config.data.yfinance_auto_adjust,
        retries=config.data.yfinance_retries,
        history_years=config.data.history_years,
    )
    return OnExchanges(provider, config.tickers.exchange_for)


def sync_ticker(
    factory: sessionmaker[Session],
    provider: Provider,
    ticker: str,
    *,
    history_years: int,
    overlap_sessions: int,
    on_invalid: str,
) -> SyncResult:
    """Fetch, validate and upsert one ticker's candles in one transaction.

    Stored rows from the fetch's start on that the provider no longer returns (or that fail
    validation now, e.g. an off-calendar date stored before that rule) are deleted in the same
    transaction. If the fetched overlap shows the provider rescaled its history (see
    price_basis_change), the full history is fetched instead and replaces every stored row.
    """
    try:
        with factory() as session:
            recent = repository.latest_session_dates(
                session, ticker=ticker, count=overlap_sessions + 1
            )
            start = recent[-1] if recent else None  # overlap_sessions before the last stored
            stored = (
                repository.load_candles(session, ticker=ticker, start=start) if recent else None
            )
        frame, report = fetch_candles(provider, ticker, start=start, on_invalid=on_invalid)
        factor = price_basis_change(stored, frame) if stored is not None else None
        if factor is not None:  # stored prices are on an old basis: replace the whole history
            start = None
            frame, report = fetch_candles(provider, ticker, on_invalid=on_invalid)
        if start is None:
            frame = _last_years(frame, history_years)
        with factory.begin() as session:
            counts = repository.upsert_candles(
                session, ticker=ticker, frame=frame, source=provider.name
            )
            removed = []
            if stored is not None:  # an existing ticker: its synced range (or all) is replaced
                removed = repository.delete_candles_not_in(
                    session,
                    ticker=ticker,
                    keep=[ts.date() for ts in frame.index],
                    start=date.min if start is None else start,
                )
            ranges = {r.ticker: r for r in repository.candle_ranges(session, tickers=[ticker])}
    except MarketDataError as exc:
        return SyncResult(ticker=ticker, error=str(exc))
    if factor is not None:
        log.warning(
            "%s: provider prices changed on overlapping sessions (x%.6g, e.g. a split or dividend "
            "adjustment): replaced the whole stored history (%d rows, %d old row(s) removed)",
            ticker,
            factor,
            len(frame),
            len(removed),
        )
    elif removed:
        shown = ", ".join(d.isoformat() for d in removed[:5])
        log.warning(
            "%s: removed %d stored row(s) the provider no longer has: %s",
            ticker,
            len(removed),
            shown,
        )
    stored_range = ranges.get(ticker)
    return SyncResult(
        ticker=ticker,
        added=counts.added,
        updated=counts.updated,
        unchanged=counts.unchanged,
        dropped=report.dropped_rows,
        removed=len(removed),
        first=stored_range.first if stored_range else None,
        last=stored_range.last if stored_range else None,
        rebased=factor is not None,
        price_factor=factor,
    )


def sync_tickers(
    config: Config,
    factory: sessionmaker[Session],
    provider: Provider,
    tickers: Iterable[str],
    on_done: Callable[[SyncResult], None] | None = None,
) -> list[SyncResult]:
    """Sync every ticker in turn; failures are returned, not raised."""
    results = []
    for ticker in tickers:
        result = sync_ticker(
            factory,
            provider,
            ticker,
            history_years=config.data.history_years,
            overlap_sessions=config.data.sync_overlap_sessions,
            on_invalid=config.data.on_invalid,
        )
        results.append(result)
        if on_done is not None:
            on_done(result)
    return results


def _last_years(frame: pd.DataFrame, years: int) -> pd.DataFrame:
    """Keep the `years` of sessions before (and including) the frame's last session."""
    if frame.empty:
        return frame
    cutoff = frame.index[-1] - pd.DateOffset(years=years)
    return frame[frame.index > cutoff]


def price_basis_change(stored: pd.DataFrame, fetched: pd.DataFrame) -> float | None:
    """The factor new/stored price when the provider rescaled stored sessions, else None.

    A session counts as rescaled when all four of its prices differ from the stored ones beyond
    float noise by one common factor: what a split or dividend adjustment does to a provider's
    whole history. Other differences (one corrected price) are ordinary updates. The factor is
    the median close ratio over the rescaled sessions (0.25 after a 4:1 split).
    """
    common = stored.index.intersection(fetched.index)
    if common.empty:
        return None
    old = stored.loc[common, PRICE_COLUMNS].to_numpy(dtype="float64")
    new = fetched.loc[common, PRICE_COLUMNS].to_numpy(dtype="float64")
    changed = ~np.isclose(new, old, rtol=CHANGE_RTOL, atol=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = new / old
        spread = ratio.max(axis=1) / ratio.min(axis=1) - 1.0
    positive = (old > 0).all(axis=1) & (new > 0).all(axis=1)
    rescaled = changed.all(axis=1) & positive & (spread <= FACTOR_RTOL)
    if not rescaled.any():
        return None
    return float(np.median(ratio[rescaled, PRICE_COLUMNS.index("close")]))

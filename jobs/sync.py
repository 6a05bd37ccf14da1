"""Bring the `candles` table up to date from the configured market-data provider.

Incremental: a ticker with stored candles is fetched from a few sessions before its last stored
session (to pick up corrections) onwards; a new ticker gets `history_years` of history.
Each ticker is its own transaction, so one ticker's failure never loses another's rows.
Rows are validated against the ticker's exchange calendar, and the synced range (from the fetch's
start on) is replaced: stored rows the provider no longer returns there are deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from db import repository
from forecasting.providers import OnExchanges, Provider, fetch_candles, make_provider
from forecasting.validation import MarketDataError
from jobs.config import Config

log = logging.getLogger("candlecast.sync")


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
    transaction.
    """
    try:
        with factory() as session:
            recent = repository.latest_session_dates(
                session, ticker=ticker, count=overlap_sessions + 1
            )
        start = recent[-1] if recent else None  # overlap_sessions before the last stored one
        frame, report = fetch_candles(provider, ticker, start=start, on_invalid=on_invalid)
        if start is None:
            frame = _last_years(frame, history_years)
        with factory.begin() as session:
            counts = repository.upsert_candles(
                session, ticker=ticker, frame=frame, source=provider.name
            )
            removed = []
            if start is not None:
                removed = repository.delete_candles_not_in(
                    session, ticker=ticker, keep=[ts.date() for ts in frame.index], start=start
                )
            ranges = {r.ticker: r for r in repository.candle_ranges(session, tickers=[ticker])}
    except MarketDataError as exc:
        return SyncResult(ticker=ticker, error=str(exc))
    if removed:
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

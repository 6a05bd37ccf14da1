"""Per-ticker units of work of the nightly run, usable in this process or in a worker process.

Each task takes only small, picklable inputs (the Config, a ticker, an as-of date, a run id), opens
its own database session, and returns a small result. A ticker's model version, its forecasts and
its outcome row are committed in one transaction, so a task that dies half way leaves nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache, partial
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from db import model_store, repository, runs
from db.session import make_engine, make_session_factory
from jobs.config import Config
from jobs.db_retry import in_transaction, retrying
from jobs.sync import SyncResult, provider_for, sync_ticker
from jobs.text import one_line

log = logging.getLogger("candlecast.tasks")


@dataclass
class TickerOutcome:
    """What happened to one ticker in one run."""

    ticker: str
    status: str  # succeeded | failed
    duration_s: float = 0.0
    error: str | None = None
    model_version_id: int | None = None
    forecast_s: float = 0.0
    store_s: float = 0.0
    closes: list[float] = field(default_factory=list)


@dataclass
class ModelSlot:
    """A ticker's current model during a backfill (reused until it is too old)."""

    trained: Any
    version_id: int
    trained_at_position: int


@lru_cache(maxsize=4)
def session_factory_for(url: str) -> sessionmaker[Session]:
    """One engine per database URL per process (worker processes reuse it across tasks)."""
    return make_session_factory(make_engine(url))


def sync_task(config: Config, ticker: str) -> SyncResult:
    """Sync one ticker's candles (incremental)."""
    return sync_ticker(
        session_factory_for(config.database.url),
        provider_for(config),
        ticker,
        history_years=config.data.history_years,
        overlap_sessions=config.data.sync_overlap_sessions,
        on_invalid=config.data.on_invalid,
    )


def forecast_task(
    config: Config,
    run_id: int,
    ticker: str,
    as_of: date,
    record: dict | str | None = None,
) -> TickerOutcome:
    """Forecast one ticker with the night's global model and store it for one run (the unit a
    worker executes)."""
    return process_ticker(
        session_factory_for(config.database.url), config, run_id, ticker, as_of, record=record
    )


def process_ticker(
    factory: sessionmaker[Session],
    config: Config,
    run_id: int,
    ticker: str,
    as_of: date,
    record: dict | str | None = None,
    models: dict[str, ModelSlot] | None = None,
    position: int = 0,
) -> TickerOutcome:
    """Forecast the ticker with the night's model (or a backfill's current one from `models`)
    and store the model version, the forecasts and the outcome atomically.

    ``record`` is the ticker's model version from the night's global fit
    (``jobs.global_fit.global_records``); a text is the reason the ticker has none. The
    arguments after the factory are ``forecast_task``'s, in its order, so the inline executor
    runs ``partial(process_ticker, factory)`` on the same argument tuples as the worker pools."""
    from forecasting.forecast_path import UseModel, forecast_set
    from jobs.global_fit import trained_from_global_record, universe_loader

    started = time.perf_counter()
    outcome = TickerOutcome(ticker, "failed")
    try:
        in_transaction(
            factory,
            f"{ticker}: starting",
            lambda session: runs.start_ticker(session, run_id=run_id, ticker=ticker),
        )
        candles = retrying(f"{ticker}: loading candles", partial(_load, factory, ticker, as_of))
        _require_as_of_candle(ticker, candles, as_of)
        slot = models.get(ticker) if models is not None else None
        if slot is not None:
            trained, record = slot.trained, None
        elif isinstance(record, dict):
            trained = trained_from_global_record(record)
        else:
            raise ValueError(record or f"{ticker}: not in the night's global model")
        t0 = time.perf_counter()
        result = forecast_set(
            ticker,
            as_of,
            UseModel(trained),
            candles=candles,
            exchange=config.tickers.exchange_for(ticker),
            universe=universe_loader(factory),
        )
        result.check_finite()
        baselines = _baseline_sets(config, candles, result)
        outcome.forecast_s = time.perf_counter() - t0
        t0 = time.perf_counter()

        def store(session: Session) -> int:
            """The model version, the forecasts and the outcome: one transaction, retried whole."""
            if record is not None:
                version_id = model_store.add_model_version(session, record=record).id
            else:
                version_id = slot.version_id
            runs.replace_forecasts(
                session,
                run_id=run_id,
                ticker=ticker,
                as_of_date=as_of,
                rows=[runs.ForecastRow.of(c, target_date=c.date) for c in result.candles],
                model_version_id=version_id,
                attention={
                    "dates": [d.isoformat() for d in result.attention_dates],
                    "weights": result.attention,
                },
                model_mix=result.model_mix,
            )
            for model, rows in baselines.items():
                runs.replace_baseline_forecasts(
                    session, run_id=run_id, ticker=ticker, as_of_date=as_of, model=model, rows=rows
                )
            outcome.duration_s = time.perf_counter() - started
            runs.finish_ticker(
                session,
                run_id=run_id,
                ticker=ticker,
                status="succeeded",
                duration_s=outcome.duration_s,
                model_version_id=version_id,
            )
            return version_id

        version_id = in_transaction(factory, f"{ticker}: storing the forecasts", store)
        if record is not None and models is not None:
            models[ticker] = ModelSlot(trained, version_id, position)
        outcome.store_s = time.perf_counter() - t0
        outcome.status = "succeeded"
        outcome.model_version_id = version_id
        outcome.closes = [c.close for c in result.candles]
    except Exception as exc:
        # The coordinator reports the one-line error (pipeline._report); the traceback is for
        # --verbose only.
        context = {"run_id": run_id, "ticker": ticker}
        log.debug("ticker %s failed", ticker, exc_info=True, extra=context)
        outcome.error = describe(exc)
        outcome.duration_s = time.perf_counter() - started
        record_failure(factory, run_id, outcome)
    return outcome


def _baseline_sets(config: Config, candles: pd.DataFrame, result) -> dict[str, list]:
    """The served forecast's parts and every baseline, as rows for baseline_forecasts.

    They cost milliseconds (GARCH: one small fit) and let analysts score the product against
    them in SQL (view baseline_accuracy). A baseline that fails or is not finite is skipped and
    logged: it never fails the ticker.
    """
    from forecasting.forecast_path import baseline_sets
    from forecasting.train import history_slice

    sets = dict(result.components)
    try:
        history = history_slice(candles, result.as_of, config.data.history_years)
        sets.update(baseline_sets(result, history))
    except Exception as exc:
        log.warning(
            "%s: baselines skipped: %s",
            result.ticker,
            describe(exc),
            extra={"ticker": result.ticker},
        )
    out = {}
    for name, candle_list in sets.items():
        values = [v for c in candle_list for v in (c.open, c.high, c.low, c.close)]
        if all(np.isfinite(values)):
            out[name] = [runs.ForecastRow.of(c, target_date=c.date) for c in candle_list]
        else:
            log.warning(
                "%s: baseline %s is not finite; not stored",
                result.ticker,
                name,
                extra={"ticker": result.ticker},
            )
    return out


def record_failure(factory: sessionmaker[Session], run_id: int, outcome: TickerOutcome) -> None:
    """Store a failed ticker's outcome row (retried like any unit of work: jobs.db_retry)."""
    in_transaction(
        factory,
        f"{outcome.ticker}: recording its failure",
        lambda session: runs.finish_ticker(
            session,
            run_id=run_id,
            ticker=outcome.ticker,
            status="failed",
            duration_s=outcome.duration_s,
            error=outcome.error,
        ),
    )


def _load(factory: sessionmaker[Session], ticker: str, as_of: date) -> pd.DataFrame:
    with factory() as session:
        return repository.load_candles(session, ticker=ticker, end=as_of)


def describe(exc: BaseException) -> str:
    """A one-line, bounded description of an error for the outcome row."""
    text = one_line(str(exc)) or exc.__class__.__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _require_as_of_candle(ticker: str, candles: pd.DataFrame, as_of: date) -> None:
    if candles.empty:
        raise LookupError(f"no candles stored for {ticker}")
    last = candles.index[-1].date()
    if last != as_of:
        raise LookupError(
            f"no candle for {ticker} on the as-of date {as_of} (last stored session: {last})"
        )

"""The nightly job as plain functions: sync, retrain, forecast and store every ticker.

`run_nightly` does one as-of date (the CLI's run-once and the scheduler call it); `run_backfill`
does a range of past as-of dates, retraining every N sessions. Both hold the run lock for their
whole duration, record a `forecast_runs` row per as-of date and never let one ticker's failure stop
the others. A ticker's model version, its four forecasts and its outcome row are committed in one
transaction, so a killed process leaves no partial forecast set behind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db import model_store, repository, runs
from db.run_lock import RunLockHandle
from db.session import make_engine, make_session_factory
from forecasting.providers import Provider, make_provider
from jobs.config import Config
from jobs.sync import sync_tickers

log = logging.getLogger("candlecast.pipeline")


@dataclass
class TickerOutcome:
    """What happened to one ticker in one run."""

    ticker: str
    status: str  # succeeded | failed
    duration_s: float = 0.0
    error: str | None = None
    model_version_id: int | None = None
    train_s: float = 0.0
    forecast_s: float = 0.0
    store_s: float = 0.0
    closes: list[float] = field(default_factory=list)


@dataclass
class RunResult:
    """The outcome of one run (one as-of date)."""

    run_id: int
    as_of: date | None
    status: str
    outcomes: list[TickerOutcome]
    message: str | None = None


@dataclass
class _ModelSlot:
    """A ticker's current model during a run or backfill (reused until it is too old)."""

    trained: object
    version_id: int
    trained_at_position: int


class Pipeline:
    """Shared state of one process's runs: database handles, provider and the stop flag."""

    def __init__(
        self,
        config: Config,
        *,
        engine: Engine | None = None,
        provider: Provider | None = None,
        stop_event: threading.Event | None = None,
        on_ticker: Callable[[TickerOutcome], None] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine or make_engine(config.database.url)
        self.factory: sessionmaker[Session] = make_session_factory(self.engine)
        self.provider = provider or make_provider(
            config.data.provider,
            csv_dir=config.data.csv_dir,
            auto_adjust=config.data.yfinance_auto_adjust,
            retries=config.data.yfinance_retries,
            history_years=config.data.history_years,
        )
        self.stop_event = stop_event or threading.Event()
        self.on_ticker = on_ticker

    def lock(self) -> RunLockHandle:
        """The database's run lock (raises RunLockedError on acquire when held)."""
        return RunLockHandle(self.engine)

    def run_nightly(
        self,
        *,
        as_of: date | None = None,
        tickers: Iterable[str] | None = None,
        trigger: str = "manual",
    ) -> RunResult:
        """Sync, retrain and forecast every ticker for one as-of date, under the run lock."""
        symbols = tuple(tickers or self.config.tickers.symbols)
        with self.lock():
            self._abandon_stale_runs()
            run_id = self._start_run(trigger, as_of)
            sync_errors = self._sync(symbols)
            as_of = as_of or self._default_as_of(symbols)
            with self.factory.begin() as session:
                runs.set_run_as_of(session, run_id=run_id, as_of_date=as_of)
            outcomes = []
            for ticker in symbols:
                if self.stop_event.is_set():
                    break
                if ticker in sync_errors:
                    outcome = TickerOutcome(ticker, "failed", error=sync_errors[ticker])
                    self._record_failure(run_id, outcome)
                else:
                    outcome = self._process(run_id, ticker, as_of, models={}, position=0)
                outcomes.append(outcome)
                self._report(outcome)
            return self._finish(run_id, as_of, symbols, outcomes)

    def run_backfill(
        self,
        *,
        start: date,
        end: date,
        tickers: Iterable[str] | None = None,
        retrain_every: int | None = None,
        on_run: Callable[[RunResult], None] | None = None,
    ) -> list[RunResult]:
        """Forecast every stored session in [start, end] as if the job had run that night.

        Each ticker is retrained every `retrain_every` sessions on the history_years before the
        retrain date; forecasts in between reuse that model. One run row per as-of date.
        """
        symbols = tuple(tickers or self.config.tickers.symbols)
        every = retrain_every or self.config.model.retrain_every
        results: list[RunResult] = []
        with self.lock():
            self._abandon_stale_runs()
            sync_errors = self._sync(symbols)
            dates = self._stored_sessions(symbols, start, end)
            models: dict[str, _ModelSlot] = {}
            for position, as_of in enumerate(dates):
                if self.stop_event.is_set():
                    break
                run_id = self._start_run("backfill", as_of)
                outcomes = []
                for ticker in symbols:
                    if self.stop_event.is_set():
                        break
                    if ticker in sync_errors:
                        outcome = TickerOutcome(ticker, "failed", error=sync_errors[ticker])
                        self._record_failure(run_id, outcome)
                    else:
                        slot = models.get(ticker)
                        if slot and position - slot.trained_at_position >= every:
                            models.pop(ticker)
                        outcome = self._process(run_id, ticker, as_of, models, position)
                    outcomes.append(outcome)
                    self._report(outcome)
                result = self._finish(run_id, as_of, symbols, outcomes)
                results.append(result)
                if on_run is not None:
                    on_run(result)
        return results

    # steps -------------------------------------------------------------------------------------
    def _abandon_stale_runs(self) -> None:
        with self.factory.begin() as session:
            abandoned = runs.abandon_running_runs(session)
        if abandoned:
            log.warning("marked abandoned: run(s) %s left running by a stopped process", abandoned)

    def _start_run(self, trigger: str, as_of: date | None) -> int:
        with self.factory.begin() as session:
            return runs.start_run(session, trigger=trigger, as_of_date=as_of).id

    def _sync(self, symbols: tuple[str, ...]) -> dict[str, str]:
        results = sync_tickers(self.config, self.factory, self.provider, symbols)
        return {r.ticker: f"sync failed: {r.error}" for r in results if not r.ok}

    def _default_as_of(self, symbols: tuple[str, ...]) -> date:
        """The latest stored session on or before today over the run's tickers."""
        today = date.today()
        with self.factory() as session:
            lasts = [
                r.last
                for r in repository.candle_ranges(session)
                if r.ticker in symbols and r.last <= today
            ]
        if not lasts:
            raise RuntimeError("no candles stored for any ticker of this run: nothing to forecast")
        return max(lasts)

    def _stored_sessions(self, symbols: tuple[str, ...], start: date, end: date) -> list[date]:
        with self.factory() as session:
            dates: set[date] = set()
            for ticker in symbols:
                frame = repository.load_candles(session, ticker=ticker, start=start, end=end)
                dates.update(ts.date() for ts in frame.index)
        return sorted(dates)

    def _process(
        self, run_id: int, ticker: str, as_of: date, models: dict[str, _ModelSlot], position: int
    ) -> TickerOutcome:
        """Train (or reuse) the ticker's model, forecast, and store it all in one transaction."""
        from forecasting.artifact import trained_to_record
        from forecasting.predict import forecast

        started = time.perf_counter()
        with self.factory.begin() as session:
            runs.start_ticker(session, run_id=run_id, ticker=ticker)
        outcome = TickerOutcome(ticker, "failed")
        try:
            with self.factory() as session:
                candles = repository.load_candles(session, ticker=ticker, end=as_of)
            _require_as_of_candle(ticker, candles, as_of)
            slot = models.get(ticker)
            record = None
            if slot is None:
                t0 = time.perf_counter()
                trained = self._train(ticker, candles, as_of)
                outcome.train_s = time.perf_counter() - t0
                record = trained_to_record(trained)
            else:
                trained = slot.trained
            t0 = time.perf_counter()
            result = forecast(
                trained, candles, as_of=as_of, exchange=self.config.tickers.exchange_for(ticker)
            )
            outcome.forecast_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            with self.factory.begin() as session:
                if record is not None:
                    version_id = model_store.add_model_version(session, record=record).id
                    models[ticker] = _ModelSlot(trained, version_id, position)
                else:
                    version_id = slot.version_id
                runs.replace_forecasts(
                    session,
                    run_id=run_id,
                    ticker=ticker,
                    as_of_date=as_of,
                    rows=[_row(c) for c in result.candles],
                    model_version_id=version_id,
                    attention={
                        "dates": [d.isoformat() for d in result.attention_dates],
                        "weights": result.attention,
                    },
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
            outcome.store_s = time.perf_counter() - t0
            outcome.status = "succeeded"
            outcome.model_version_id = version_id
            outcome.closes = [c.close for c in result.candles]
        except Exception as exc:  # noqa: BLE001 - one ticker's failure must not stop the others
            log.exception("ticker %s failed", ticker)
            outcome.error = _describe(exc)
            outcome.duration_s = time.perf_counter() - started
            self._record_failure(run_id, outcome)
        return outcome

    def _train(self, ticker: str, candles: pd.DataFrame, as_of: date):  # noqa: ANN202
        from forecasting.train import train_model

        return train_model(
            candles,
            self.config.model,
            ticker=ticker,
            as_of=as_of,
            history_years=self.config.data.history_years,
        )

    def _record_failure(self, run_id: int, outcome: TickerOutcome) -> None:
        with self.factory.begin() as session:
            runs.finish_ticker(
                session,
                run_id=run_id,
                ticker=outcome.ticker,
                status="failed",
                duration_s=outcome.duration_s,
                error=outcome.error,
            )

    def _report(self, outcome: TickerOutcome) -> None:
        if outcome.status == "failed":
            log.error("%s failed: %s", outcome.ticker, outcome.error)
        if self.on_ticker is not None:
            self.on_ticker(outcome)

    def _finish(
        self, run_id: int, as_of: date, symbols: tuple[str, ...], outcomes: list[TickerOutcome]
    ) -> RunResult:
        failed = [o.ticker for o in outcomes if o.status != "succeeded"]
        done = len(outcomes)
        if done < len(symbols):
            status = "interrupted"
            message = f"interrupted after {done} of {len(symbols)} tickers"
        elif not failed:
            status, message = "succeeded", None
        elif len(failed) == len(symbols):
            status, message = "failed", f"all {len(symbols)} tickers failed"
        else:
            status, message = "partial", f"failed: {', '.join(failed)}"
        with self.factory.begin() as session:
            runs.finish_run(session, run_id=run_id, status=status, message=message)
        return RunResult(run_id, as_of, status, outcomes, message)


def _require_as_of_candle(ticker: str, candles: pd.DataFrame, as_of: date) -> None:
    if candles.empty:
        raise LookupError(f"no candles stored for {ticker}")
    last = candles.index[-1].date()
    if last != as_of:
        raise LookupError(
            f"no candle for {ticker} on the as-of date {as_of} (last stored session: {last})"
        )


def _row(candle) -> runs.ForecastRow:  # noqa: ANN001 - forecasting.predict.ForecastCandle
    return runs.ForecastRow(
        horizon=candle.horizon,
        target_date=candle.date,
        open=candle.open,
        high=candle.high,
        low=candle.low,
        close=candle.close,
        close_lo=candle.close_lo,
        close_hi=candle.close_hi,
    )


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text if len(text) <= 500 else text[:497] + "..."

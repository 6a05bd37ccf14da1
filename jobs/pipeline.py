"""The nightly job as plain functions: sync, fit the global model, forecast and store every ticker.

`run_nightly` does one as-of date (the CLI's run-once and the scheduler call it); `run_backfill`
does a range of past as-of dates, refitting the global model every N sessions. Both hold the run
lock for their whole duration, record a `forecast_runs` row per as-of date and never let one
ticker's failure stop the others. A ticker's model version, its four forecasts and its outcome row
are committed in one transaction, so a killed process leaves no partial forecast set behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from functools import partial

import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db import repository, runs
from db.run_lock import RunLockHandle
from db.session import make_engine, make_session_factory
from forecasting.calendar import latest_session_on_or_before, off_calendar
from jobs.alerts import alert_run
from jobs.config import Config
from jobs.db_retry import OutageTolerantLock, in_transaction
from jobs.executor import InlineExecutor, TickerExecutor, make_executor
from jobs.logs import logs_are_json
from jobs.run_result import RunResult
from jobs.sync import SyncResult, provider_for, sync_tickers
from jobs.tasks import (
    ModelSlot,
    TickerOutcome,
    describe,
    forecast_task,
    process_ticker,
    record_failure,
    sync_task,
)

log = logging.getLogger("candlecast.pipeline")

# Stored rows looked at (newest first) for a ticker's latest session; only stray off-calendar rows
# (stored before validation knew the calendar, and not yet re-synced) can sit above it.
AS_OF_LOOKBACK = 30
NO_CANDLES = "no candles stored on or before today for any ticker of this run: nothing to forecast"


class Pipeline:
    """Shared state of one process's runs: database handles, provider and the stop flag."""

    def __init__(
        self,
        config: Config,
        *,
        engine: Engine | None = None,
        stop_event: threading.Event | None = None,
        on_ticker: Callable[[TickerOutcome], None] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine or make_engine(config.database.url)
        self.factory: sessionmaker[Session] = make_session_factory(self.engine)
        self.provider = provider_for(config)
        self.stop_event = stop_event or threading.Event()
        self.on_ticker = on_ticker

    def lock(self) -> RunLockHandle:
        """The database's run lock (raises RunLockedError on acquire when held).

        Releasing it survives a database outage during the run (see OutageTolerantLock).
        """
        return OutageTolerantLock(self.engine)

    def run_nightly(
        self,
        *,
        as_of: date | None = None,
        tickers: Iterable[str] | None = None,
        trigger: str = "manual",
        note: str | None = None,
    ) -> RunResult:
        """Sync, retrain and forecast every ticker for one as-of date, under the run lock.

        Tickers run on the configured executor (inline, a local process pool or Dask); this
        process coordinates: it holds the lock, records per-ticker outcomes and the run status.
        `note` is added to the run's message (e.g. "resumes run 12").
        """
        symbols = tuple(tickers or self.config.tickers.symbols)
        run_id = result = None
        try:
            with self.lock(), make_executor(self.config) as executor:
                self._abandon_stale_runs()
                run_id = self._start_run(trigger, as_of)
                with self._finished_on_error(run_id):
                    result = self._nightly(run_id, executor, symbols, as_of, note)
                if result.status in ("succeeded", "partial"):
                    self._prune_artifacts(symbols)
        except Exception as exc:
            if run_id is not None and result is None:  # _finished_on_error finished it failed
                message = f"run failed: {describe(exc)}"
                alert_run(
                    self.config,
                    RunResult(run_id, as_of, "failed", [], message),
                    self.stop_event,
                )
            raise
        # lock released; bounded (20 s), abandoned on a stop signal, never raises
        alert_run(self.config, result, self.stop_event)
        return result

    def _prune_artifacts(self, symbols: tuple[str, ...]) -> None:
        """Apply [model] keep_versions to the run's tickers in its own transaction; a failure is
        a warning, never the run's."""
        from db.model_store import prune_artifacts

        keep = self.config.model.keep_versions
        try:
            with self.factory.begin() as session:
                pruned = prune_artifacts(session, keep=keep, tickers=symbols)
        except Exception as exc:
            log.warning("pruning old model artifacts failed (the run is unaffected): %s", exc)
            return
        if pruned.versions:
            log.info("pruned %d model artifacts (%d bytes)", pruned.versions, pruned.bytes)

    def _nightly(
        self,
        run_id: int,
        executor: TickerExecutor,
        symbols: tuple[str, ...],
        as_of: date | None,
        note: str | None = None,
    ) -> RunResult:
        inline = isinstance(executor, InlineExecutor)
        sync_errors = self._sync(symbols, None if inline else executor)
        outcomes = []
        for ticker, error in sync_errors.items():
            outcome = TickerOutcome(ticker, "failed", error=error)
            record_failure(self.factory, run_id, outcome)
            outcomes.append(outcome)
            self._report(outcome, run_id)
        # Without an explicit date each ticker forecasts as of its own latest completed session
        # (its exchange's calendar); the run's as_of is the latest of those.
        ticker_as_of = {} if as_of else self._ticker_as_ofs(symbols)
        as_of = as_of or self._default_as_of(symbols, ticker_as_of)
        if as_of is None:  # nothing stored to forecast from (e.g. a first run whose syncs failed)
            for ticker in symbols:
                if ticker not in sync_errors:
                    outcome = TickerOutcome(ticker, "failed", error=NO_CANDLES)
                    record_failure(self.factory, run_id, outcome)
                    outcomes.append(outcome)
                    self._report(outcome, run_id)
            outcomes.sort(key=lambda o: symbols.index(o.ticker))
            return self._finish(
                run_id, None, symbols, outcomes, note="no as-of date: " + NO_CANDLES
            )
        in_transaction(
            self.factory,
            f"run {run_id}: setting its as-of date",
            lambda session: runs.set_run_as_of(session, run_id=run_id, as_of_date=as_of),
        )
        todo = [t for t in symbols if t not in sync_errors]
        records = self._night_models(self._universe(todo, sync_errors), as_of)
        task = partial(process_ticker, self.factory) if inline else forecast_task
        args = [
            (
                self.config,
                run_id,
                ticker,
                ticker_as_of.get(ticker, as_of),
                records.get(ticker),
            )
            for ticker in todo
        ]
        for index, outcome, error in executor.map(task, args, self.stop_event):
            if error is not None:  # the task itself died (e.g. its worker, repeatedly)
                outcome = TickerOutcome(
                    todo[index], "failed", error=f"task failed: {describe(error)}"
                )
                record_failure(self.factory, run_id, outcome)
            outcomes.append(outcome)
            self._report(outcome, run_id)
        outcomes.sort(key=lambda o: symbols.index(o.ticker))
        return self._finish(run_id, as_of, symbols, outcomes, note=note)

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

        The nightly run's rules for each date: every ticker forecasts as of its own latest
        session on or before it (its exchange calendar: _ticker_as_ofs), from one global model
        fitted over the tickers that synced. The model is refitted (warm-started) every
        `retrain_every` sessions on the history_years before the refit date; forecasts in
        between reuse it, with the universe's later candles as its inputs. One run row per date
        (its `as_of_date`).
        """
        symbols = tuple(tickers or self.config.tickers.symbols)
        every = retrain_every or self.config.model.retrain_every
        results: list[RunResult] = []
        with self.lock():
            self._abandon_stale_runs()
            sync_errors = self._sync(symbols, None)
            synced = tuple(t for t in symbols if t not in sync_errors)
            dates = self._stored_sessions(symbols, start, end)
            models: dict[str, ModelSlot] = {}
            records: dict[str, dict | str] = {}
            fits_at = -1
            for position, as_of in enumerate(dates):
                if self.stop_event.is_set():
                    break
                run_id = self._start_run("backfill", as_of)
                with self._finished_on_error(run_id):
                    ticker_as_of = self._ticker_as_ofs(synced, on_or_before=as_of)
                    self._warn_early_ends(ticker_as_of, as_of)
                    outcomes = []
                    for ticker in symbols:
                        if self.stop_event.is_set():
                            break
                        if ticker in sync_errors:
                            outcome = TickerOutcome(ticker, "failed", error=sync_errors[ticker])
                            record_failure(self.factory, run_id, outcome)
                        else:
                            slot = models.get(ticker)
                            if slot and position - slot.trained_at_position >= every:
                                models.pop(ticker)
                            record = None
                            if ticker not in models:  # refitting now: the global model
                                if fits_at != position:
                                    universe = self._universe(synced, sync_errors)
                                    records = self._night_models(universe, as_of)
                                    fits_at = position
                                record = records.get(ticker)
                            outcome = process_ticker(
                                self.factory,
                                self.config,
                                run_id,
                                ticker,
                                ticker_as_of.get(ticker, as_of),
                                record=record,
                                models=models,
                                position=position,
                            )
                        outcomes.append(outcome)
                        self._report(outcome, run_id)
                    result = self._finish(run_id, as_of, symbols, outcomes)
                results.append(result)
                if on_run is not None:
                    on_run(result)
        return results

    # steps -------------------------------------------------------------------------------------
    def _universe(self, tickers: Iterable[str], sync_errors: dict[str, str]) -> tuple[str, ...]:
        """The tickers the night's global model is fitted over: every configured ticker (and
        any other run ticker) except those whose sync failed in this run, so a run of some
        tickers (``--tickers``, a resumed night) serves the same universe's model as a full
        night and the next night does not refit in full for "tickers changed"."""
        configured = [t for t in self.config.tickers.symbols if t not in sync_errors]
        return tuple(dict.fromkeys([*configured, *tickers]))

    def _night_models(self, tickers: tuple[str, ...], as_of: date) -> dict[str, dict | str]:
        """The night's global fit, before the per-ticker fan-out: ticker -> its model version's
        record (or the reason it has none)."""
        from jobs.global_fit import global_records

        log.info("global model: fitting over %d tickers up to %s", len(tickers), as_of)
        return global_records(self.factory, self.config, tickers, as_of)

    def _abandon_stale_runs(self) -> None:
        abandoned = in_transaction(self.factory, "abandoning stale runs", runs.abandon_running_runs)
        if abandoned:
            log.warning("marked abandoned: run(s) %s left running by a stopped process", abandoned)

    def _start_run(self, trigger: str, as_of: date | None) -> int:
        return in_transaction(
            self.factory,
            "starting the run",
            lambda session: runs.start_run(session, trigger=trigger, as_of_date=as_of).id,
        )

    def _sync(self, symbols: tuple[str, ...], executor: TickerExecutor | None) -> dict[str, str]:
        """Sync every ticker (here, or on the executor); returns {ticker: error} of failures."""
        if executor is None:
            results = sync_tickers(self.config, self.factory, self.provider, symbols)
        else:
            args = [(self.config, ticker) for ticker in symbols]
            results = []
            for index, result, error in executor.map(sync_task, args, threading.Event()):
                results.append(result or SyncResult(symbols[index], error=describe(error)))
        return {r.ticker: f"sync failed: {r.error}" for r in results if not r.ok}

    def _default_as_of(
        self, symbols: tuple[str, ...], ticker_as_of: dict[str, date] | None = None
    ) -> date | None:
        """The run's as-of: the latest of its tickers' own as-of dates (None: no candles at all)."""
        if ticker_as_of is None:
            ticker_as_of = self._ticker_as_ofs(symbols)
        run_as_of = max(ticker_as_of.values(), default=None)
        if run_as_of is not None:
            self._warn_early_ends(ticker_as_of, run_as_of)
        return run_as_of

    def _warn_early_ends(self, ticker_as_of: dict[str, date], run_as_of: date) -> None:
        """Say which tickers forecast as of a session before their exchange's latest one on or
        before the run's as-of (their data stops early, or misses a session)."""
        for ticker, day in ticker_as_of.items():
            exchange = self.config.tickers.exchange_for(ticker)
            latest = latest_session_on_or_before(run_as_of, exchange)
            if day < latest:  # its data stops early: forecast anyway, but say so
                log.warning(
                    "%s: forecast as of %s, its last stored session; %s has sessions up to %s",
                    ticker,
                    day,
                    exchange,
                    latest,
                    extra={"ticker": ticker},
                )

    def _ticker_as_ofs(
        self, symbols: tuple[str, ...], *, on_or_before: date | None = None
    ) -> dict[str, date]:
        """Each ticker's as-of for a run on `on_or_before` (default today): its latest stored
        candle on or before that day that is a session of its own exchange calendar (a stray
        weekend/holiday row is never one). The nightly run and each backfilled date use it.

        Tickers on different exchanges thus each get their own date (an XLON ticker stops at
        2023-12-27 over Boxing Day while an XNYS one has 2023-12-29). Tickers without such a
        candle are left out (they then fail with "no candle on the as-of date").
        """
        day = on_or_before or date.today()
        out: dict[str, date] = {}
        with self.factory() as session:
            for ticker in symbols:
                dates = repository.latest_session_dates(
                    session, ticker=ticker, count=AS_OF_LOOKBACK, end=day
                )
                if not dates:
                    continue
                exchange = self.config.tickers.exchange_for(ticker)
                stray = off_calendar(pd.DatetimeIndex(pd.to_datetime(dates)), exchange)
                sessions = [d for d, bad in zip(dates, stray, strict=True) if not bad]
                if sessions:
                    out[ticker] = sessions[0]
        return out

    def _stored_sessions(self, symbols: tuple[str, ...], start: date, end: date) -> list[date]:
        """The dates in [start, end] with a stored candle of some ticker that is a session of
        that ticker's exchange calendar (a stray weekend/holiday row is not a backfill date)."""
        with self.factory() as session:
            dates: set[date] = set()
            for ticker in symbols:
                index = repository.load_candles(session, ticker=ticker, start=start, end=end).index
                stray = off_calendar(index, self.config.tickers.exchange_for(ticker))
                dates.update(ts.date() for ts, bad in zip(index, stray, strict=True) if not bad)
        return sorted(dates)

    @contextmanager
    def _finished_on_error(self, run_id: int) -> Iterator[None]:
        """Never leave the run `running` when its work raises: finish it, then re-raise.

        KeyboardInterrupt ends it `interrupted`, any other error `failed` with the error as its
        message. (A killed process still leaves it running: the next run marks it abandoned.)
        """
        try:
            yield
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            status = "interrupted" if interrupted else "failed"
            message = "interrupted" if interrupted else f"run failed: {describe(exc)}"
            try:
                in_transaction(
                    self.factory,
                    f"run {run_id}: finishing it",
                    lambda session: runs.finish_run(
                        session, run_id=run_id, status=status, message=message
                    ),
                )
            except Exception as finish_exc:  # e.g. the database is gone: the next run abandons it
                log.error(
                    "could not finish run %s as %s: %s",
                    run_id,
                    status,
                    finish_exc,
                    extra={"run_id": run_id},
                )
            else:
                log.error("run %s %s: %s", run_id, status, message, extra={"run_id": run_id})
            raise

    def _report(self, outcome: TickerOutcome, run_id: int) -> None:
        """Log a failed ticker, advance the run's heartbeat, tell the on_ticker callback."""
        in_transaction(
            self.factory,
            f"run {run_id}: heartbeat",
            lambda session: runs.touch_run(session, run_id=run_id),
        )
        if outcome.status == "failed":
            # With an on_ticker callback (the CLI prints each outcome) a text log line would be a
            # second copy of the same error on stderr: keep it for --verbose only. JSON logs are
            # read by machines: they keep the ERROR record.
            printed = self.on_ticker is not None and not logs_are_json()
            level = logging.DEBUG if printed else logging.ERROR
            context = {"run_id": run_id, "ticker": outcome.ticker}
            log.log(level, "%s failed: %s", outcome.ticker, outcome.error, extra=context)
        if self.on_ticker is not None:
            self.on_ticker(outcome)

    def _finish(
        self,
        run_id: int,
        as_of: date | None,
        symbols: tuple[str, ...],
        outcomes: list[TickerOutcome],
        *,
        note: str | None = None,
    ) -> RunResult:
        failed = [o.ticker for o in outcomes if o.status != "succeeded"]
        done = len(outcomes)
        total = f"{len(symbols)} ticker{'s' if len(symbols) != 1 else ''}"
        if done < len(symbols):
            status = "interrupted"
            message = f"interrupted after {done} of {total}"
        elif not failed:
            status, message = "succeeded", f"{total}: all succeeded"
        elif len(failed) == len(symbols):
            status, message = "failed", f"all {total} failed"
        else:
            status = "partial"
            message = f"{total}: {len(failed)} failed ({', '.join(failed)})"
        if note:
            message = f"{message} ({note})" if message else note
        in_transaction(
            self.factory,
            f"run {run_id}: finishing it",
            lambda session: runs.finish_run(session, run_id=run_id, status=status, message=message),
        )
        return RunResult(run_id, as_of, status, outcomes, message)

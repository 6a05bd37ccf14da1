"""The nightly pipeline in-process on real databases with real (tiny) Keras training."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select, text

from db.models import BaselineForecast, Forecast, ForecastRun, ForecastRunTicker, ModelVersion
from db.run_lock import RunLockedError
from forecasting.calendar import next_sessions
from forecasting.quantiles import QUANTILE_NAMES
from jobs.pipeline import Pipeline


def counts(factory) -> dict[str, int]:
    with factory() as s:
        return {
            "forecasts": s.scalar(select(func.count()).select_from(Forecast)),
            "models": s.scalar(select(func.count()).select_from(ModelVersion)),
            "runs": s.scalar(select(func.count()).select_from(ForecastRun)),
        }


def forecasts_per_set(factory) -> set[int]:
    with factory() as s:
        rows = s.execute(
            select(func.count())
            .select_from(Forecast)
            .group_by(Forecast.ticker, Forecast.as_of_date)
        ).scalars()
        return set(rows)


@pytest.mark.slow
def test_run_once_stores_four_candles_per_ticker_and_is_idempotent(
    pipeline_config, session_factory
):
    pipeline = Pipeline(pipeline_config())
    result = pipeline.run_nightly()
    assert result.status == "succeeded"
    assert result.as_of == date(2023, 12, 29)
    assert [o.status for o in result.outcomes] == ["succeeded", "succeeded"]
    with session_factory() as s:
        rows = s.scalars(
            select(Forecast).where(Forecast.ticker == "AAPL").order_by(Forecast.horizon)
        ).all()
        run = s.get(ForecastRun, result.run_id)
        run_tickers = s.scalars(select(ForecastRunTicker)).all()
    assert [r.target_date for r in rows] == next_sessions(date(2023, 12, 29), 4)
    assert all(r.low <= min(r.open, r.close) and r.high >= max(r.open, r.close) for r in rows)
    assert all(r.close_lo <= r.close <= r.close_hi for r in rows)
    quantiles = [[getattr(r, f"close_{q}") for q in QUANTILE_NAMES] for r in rows]
    assert all(q == sorted(q) and q[1] == r.close_lo for q, r in zip(quantiles, rows, strict=True))
    assert set(rows[0].model_mix) == {"close", "quantiles", "range"}
    assert rows[0].model_mix["close"] == ["median"] * 4
    with session_factory() as s:  # one centre: every stored close is its own q50, in SQL
        off_centre = s.execute(
            text("SELECT count(*) FROM forecasts WHERE close <> close_q50 OR close_q50 IS NULL")
        ).scalar_one()
    assert off_centre == 0
    assert len(rows[0].attention["weights"]) == 20  # [model] window
    with session_factory() as s:
        baseline_sets = s.execute(
            select(BaselineForecast.ticker, BaselineForecast.model, func.count()).group_by(
                BaselineForecast.ticker, BaselineForecast.model
            )
        ).all()
        garch = s.scalars(
            select(BaselineForecast)
            .where(BaselineForecast.ticker == "AAPL", BaselineForecast.model == "garch")
            .order_by(BaselineForecast.horizon)
        ).all()
    expected_models = {
        "lstm",
        "har_range",
        "naive",
        "rw20",
        "ewma",
        "garch",
        "empirical",
        "range20",
    }
    assert {(t, m, n) for t, m, n in baseline_sets} == {
        (t, m, 4) for t in ("AAPL", "MSFT") for m in expected_models
    }
    assert [g.target_date for g in garch] == [r.target_date for r in rows]
    assert all(g.close_q05 < g.close_q50 < g.close_q95 for g in garch)  # GARCH widens with h
    assert garch[3].close_q95 - garch[3].close_q05 > garch[0].close_q95 - garch[0].close_q05
    assert run.status == "succeeded" and run.finished_at is not None and run.trigger == "manual"
    assert {(t.ticker, t.status) for t in run_tickers} == {
        ("AAPL", "succeeded"),
        ("MSFT", "succeeded"),
    }
    assert all(t.model_version_id is not None and t.duration_s > 0 for t in run_tickers)
    assert counts(session_factory) == {"forecasts": 8, "models": 2, "runs": 1}

    again = pipeline.run_nightly(as_of=date(2023, 12, 29))
    assert again.status == "succeeded"
    assert counts(session_factory) == {"forecasts": 8, "models": 4, "runs": 2}
    with session_factory() as s:
        assert set(s.scalars(select(Forecast.run_id))) == {again.run_id}


@pytest.mark.slow
def test_a_failing_ticker_makes_the_run_partial_and_keeps_the_others(
    pipeline_config, universe, session_factory
):
    (universe / "MSFT.csv").unlink()
    config = pipeline_config(tickers={"symbols": ["AAPL", "MSFT"]})
    result = Pipeline(config).run_nightly()
    assert result.status == "partial"
    by_ticker = {o.ticker: o for o in result.outcomes}
    assert by_ticker["AAPL"].status == "succeeded"
    assert by_ticker["MSFT"].status == "failed"
    assert "MSFT" in by_ticker["MSFT"].error
    with session_factory() as s:
        stored = {t.ticker: t for t in s.scalars(select(ForecastRunTicker))}
        assert stored["MSFT"].status == "failed" and "MSFT" in stored["MSFT"].error
        assert s.get(ForecastRun, result.run_id).status == "partial"
    assert forecasts_per_set(session_factory) == {4}


@pytest.mark.slow
def test_corrupt_rows_fail_the_ticker_when_configured(pipeline_config, universe, session_factory):
    path = universe / "MSFT.csv"
    text = path.read_text().splitlines()
    fields = text[-3].split(",")
    fields[2] = str(float(fields[4]) / 2)  # high below close
    text[-3] = ",".join(fields)
    path.write_text("\n".join(text) + "\n")
    result = Pipeline(pipeline_config(data={"on_invalid": "fail"})).run_nightly()
    assert result.status == "partial"
    msft = next(o for o in result.outcomes if o.ticker == "MSFT")
    assert "high < max(open, close)" in msft.error


@pytest.mark.slow
def test_too_little_history_is_a_stored_ticker_error(pipeline_config, universe, session_factory):
    lines = (universe / "AAPL.csv").read_text().splitlines()
    (universe / "AAPL.csv").write_text("\n".join([lines[0], *lines[-50:]]) + "\n")
    result = Pipeline(pipeline_config()).run_nightly()
    aapl = next(o for o in result.outcomes if o.ticker == "AAPL")
    assert aapl.status == "failed" and "sessions" in aapl.error
    assert result.status == "partial"


@pytest.mark.slow
def test_a_second_run_is_refused_while_the_lock_is_held(pipeline_config):
    config = pipeline_config()
    holder = Pipeline(config)
    with holder.lock():
        with pytest.raises(RunLockedError, match="another candlecast run is in progress"):
            Pipeline(config).run_nightly()
    assert Pipeline(config).run_nightly().status == "succeeded"


@pytest.mark.slow
def test_a_run_left_running_is_marked_abandoned(pipeline_config, session_factory):
    from db import runs

    with session_factory.begin() as s:
        stale = runs.start_run(s, trigger="schedule")
        runs.start_ticker(s, run_id=stale.id, ticker="AAPL")
    result = Pipeline(pipeline_config()).run_nightly()
    assert result.status == "succeeded"
    with session_factory() as s:
        old = s.get(ForecastRun, stale.id)
        old_ticker = s.get(ForecastRunTicker, (stale.id, "AAPL"))
    assert old.status == "abandoned" and old.finished_at is not None
    assert old_ticker.status == "failed" and "abandoned" in old_ticker.error


@pytest.mark.slow
def test_stop_flag_interrupts_after_the_ticker_in_progress(pipeline_config, session_factory):
    pipeline = Pipeline(pipeline_config())
    pipeline.on_ticker = lambda outcome: pipeline.stop_event.set()
    result = pipeline.run_nightly()
    assert result.status == "interrupted"
    assert [o.ticker for o in result.outcomes] == ["AAPL"]
    assert forecasts_per_set(session_factory) == {4}


@pytest.mark.slow
def test_backfill_retrains_every_n_sessions(pipeline_config, session_factory):
    pipeline = Pipeline(pipeline_config())
    results = pipeline.run_backfill(
        start=date(2023, 12, 20), end=date(2023, 12, 27), tickers=["AAPL"], retrain_every=3
    )
    # stored sessions 20, 21, 22, 26, 27 -> retrain at the 1st and 4th
    assert [r.as_of for r in results] == [date(2023, 12, d) for d in (20, 21, 22, 26, 27)]
    assert all(r.status == "succeeded" for r in results)
    assert counts(session_factory) == {"forecasts": 20, "models": 2, "runs": 5}
    with session_factory() as s:
        triggers = set(s.scalars(select(ForecastRun.trigger)))
        versions = s.execute(
            select(Forecast.as_of_date, Forecast.model_version_id).where(Forecast.horizon == 1)
        ).all()
    assert triggers == {"backfill"}
    ids = [v for _, v in sorted(versions)]
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4]
    pipeline.run_backfill(start=date(2023, 12, 20), end=date(2023, 12, 27), tickers=["AAPL"])
    assert counts(session_factory)["forecasts"] == 20


def test_a_first_run_where_every_sync_fails_is_failed_with_each_error_stored(
    pipeline_config, session_factory, tmp_path
):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "AAPL.csv").write_text("garbage,,x\n1,2,3\n")  # no MSFT.csv at all
    pipeline = Pipeline(pipeline_config(data={"csv_dir": str(broken)}))
    result = pipeline.run_nightly()
    assert result.status == "failed" and result.as_of is None
    assert [(o.ticker, o.status) for o in result.outcomes] == [
        ("AAPL", "failed"),
        ("MSFT", "failed"),
    ]
    errors = {o.ticker: o.error for o in result.outcomes}
    assert errors["AAPL"].startswith("sync failed: ") and "missing column" in errors["AAPL"]
    assert errors["MSFT"].startswith("sync failed: MSFT has no CSV file")
    with session_factory() as s:
        run = s.get(ForecastRun, result.run_id)
        stored = {t.ticker: (t.status, t.error) for t in s.scalars(select(ForecastRunTicker))}
    assert run.status == "failed" and run.finished_at is not None and run.as_of_date is None
    assert "all 2 tickers failed" in run.message
    assert stored == {t: ("failed", e) for t, e in errors.items()}

    again = pipeline.run_nightly()  # the next run finds nothing to call abandoned
    assert again.status == "failed"
    with session_factory() as s:
        statuses = set(s.scalars(select(ForecastRun.status)))
    assert statuses == {"failed"}


def test_an_unexpected_error_mid_run_finishes_the_run_failed(
    pipeline_config, session_factory, monkeypatch
):
    def explode(*args, **kwargs):
        raise RuntimeError("pooled fit exploded")

    monkeypatch.setattr("jobs.pipeline.Pipeline._night_models", explode)
    with pytest.raises(RuntimeError, match="pooled fit exploded"):
        Pipeline(pipeline_config()).run_nightly()
    with session_factory() as s:
        run = s.scalars(select(ForecastRun)).one()
    assert run.status == "failed" and run.finished_at is not None
    assert run.message == "run failed: pooled fit exploded"
    assert run.as_of_date == date(2023, 12, 29)


@pytest.mark.slow
def test_the_heartbeat_advances_per_ticker_and_the_message_sums_up_the_run(
    pipeline_config, session_factory
):
    seen: list[tuple] = []

    def after_ticker(outcome) -> None:
        with session_factory() as s:
            run = s.scalars(select(ForecastRun).where(ForecastRun.status == "running")).one()
            seen.append((outcome.ticker, run.started_at, run.heartbeat_at))

    result = Pipeline(pipeline_config(), on_ticker=after_ticker).run_nightly()
    assert result.status == "succeeded"
    # after each ticker the heartbeat is later than the start (it stayed at the start time)
    assert [t for t, _, _ in seen] == ["AAPL", "MSFT"]
    assert all(beat > started for _, started, beat in seen)
    assert seen[1][2] > seen[0][2]
    with session_factory() as s:
        run = s.get(ForecastRun, result.run_id)
    assert run.message == "2 tickers: all succeeded" and run.heartbeat_at == run.finished_at

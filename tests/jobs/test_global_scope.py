"""One global network per night over every ticker, on real databases.

The night fits once and stores one version per ticker sharing one artifact; the next night
warm-starts from it; the stored forecast, `candlecast forecast`'s and the web's live fallback
agree for the same model and date."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import delete, select

from db import model_store, repository
from db.models import BaselineForecast, Forecast, GlobalModel, ModelVersion
from forecasting.artifact import usable_from_record
from forecasting.calendar import next_sessions_many
from forecasting.forecast_path import UseModel, forecast_set
from forecasting.global_serve import as_fit
from forecasting.quantiles import QUANTILE_NAMES
from forecasting.served import ServedModel
from jobs.cli_model import FreshOrFitNow
from jobs.global_fit import universe_loader
from jobs.pipeline import Pipeline

GLOBAL = {"window": 20, "epochs": 2, "warm_epochs": 1, "units": 4}


def versions(factory) -> list[ModelVersion]:
    with factory() as s:
        return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def stored_closes(factory, ticker: str, as_of: date) -> list[tuple[float, float, float]]:
    with factory() as s:
        rows = s.scalars(
            select(Forecast)
            .where(Forecast.ticker == ticker, Forecast.as_of_date == as_of)
            .order_by(Forecast.horizon)
        ).all()
    return [v for r in rows for v in (r.close, r.close_q10, r.close_q90)]


@pytest.mark.slow
def test_one_fit_serves_every_ticker_and_the_next_night_warm_starts(
    pipeline_config, session_factory
):
    config = pipeline_config(model=GLOBAL)
    first = Pipeline(config).run_nightly(as_of=date(2023, 12, 27))
    assert [o.status for o in first.outcomes] == ["succeeded", "succeeded"]
    night = versions(session_factory)
    assert [v.ticker for v in night] == ["AAPL", "MSFT"]
    assert len({v.artifact_sha256 for v in night}) == 1  # one network, stored per ticker
    assert {v.metrics["fit_kind"] for v in night} == {"full"}
    assert night[0].metrics["fit_reason"] == "first fit"
    calibration = night[0].calibration
    assert calibration["kind"] == "global" and calibration["universe"] == ["AAPL", "MSFT"]
    assert calibration["last_full"] == "2023-12-27"

    second = Pipeline(config).run_nightly(as_of=date(2023, 12, 28))
    assert second.status == "succeeded"
    later = versions(session_factory)[2:]
    assert {v.metrics["fit_kind"] for v in later} == {"warm"}
    assert later[0].metrics["fit_reason"] == "warm start"
    assert later[0].calibration["last_full"] == "2023-12-27"  # carried over
    with session_factory() as s:  # one global_models row per fit, the warm one with its parent
        fits = [
            (g.id, g.kind, g.reason, g.parent_id, g.tickers, g.train_end)
            for g in s.scalars(select(GlobalModel).order_by(GlobalModel.id))
        ]
    (first_id, *_), (second_id, *_) = fits
    assert fits == [
        (first_id, "full", "first fit", None, ["AAPL", "MSFT"], date(2023, 12, 27)),
        (second_id, "warm", "warm start", first_id, ["AAPL", "MSFT"], date(2023, 12, 28)),
    ]
    assert [v.global_model_id for v in night + later] == [first_id] * 2 + [second_id] * 2
    with session_factory() as s:
        old = usable_from_record(model_store.model_version_record(s.get(ModelVersion, night[0].id)))
        new = usable_from_record(model_store.model_version_record(s.get(ModelVersion, later[0].id)))
    assert old.normalization == new.normalization  # a warm start keeps the input statistics
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(old.model.get_weights(), new.model.get_weights(), strict=True)
    )
    # every stored close is the median of its quantiles; the network's and HAR-range's parts
    # are stored beside it
    with session_factory() as s:
        rows = s.scalars(select(Forecast).where(Forecast.as_of_date == date(2023, 12, 28))).all()
        parts = set(s.scalars(select(BaselineForecast.model).distinct()))
    assert len(rows) == 8 and all(r.close == r.close_q50 for r in rows)
    assert {"lstm", "har_range", "garch"} <= parts
    assert all(set(r.model_mix["quantiles"][0]) == {"lstm", "har_range"} for r in rows)


@pytest.mark.slow
def test_a_change_of_tickers_or_hyperparameters_refits_in_full(pipeline_config, session_factory):
    Pipeline(pipeline_config(model=GLOBAL)).run_nightly(as_of=date(2023, 12, 27))
    changed = pipeline_config(model={**GLOBAL, "units": 5})
    Pipeline(changed).run_nightly(as_of=date(2023, 12, 28))
    assert versions(session_factory)[-1].metrics["fit_reason"] == "hyperparameters changed"
    fewer = pipeline_config(model={**GLOBAL, "units": 5}, tickers={"symbols": ["AAPL"]})
    Pipeline(fewer).run_nightly(as_of=date(2023, 12, 29))
    last = versions(session_factory)[-1]
    assert last.metrics["fit_reason"] == "tickers changed"
    assert last.calibration["universe"] == ["AAPL"]


@pytest.mark.slow
def test_stored_cli_live_and_backtest_forecasts_of_one_model_and_date_agree(
    pipeline_config, session_factory, monkeypatch
):
    """The nightly path stores a forecast; `forecast`'s policy (the fresh stored model reused),
    the web's live fallback and the backtest's Forecaster (``ServedModel.predict_ticker`` on
    calendar targets, what ``walk_forward`` serves with) infer it again from the same model
    version: the same four candles. A model one session older serves the next date through
    the universe's stored candles."""
    import forecasting.global_net as N
    from web import create_app

    real_gate = N.fit_gate

    def network_served(delta, y, dates):  # the network's correction served in full, so an input
        _, ratios = real_gate(delta, y, dates)  # that differs between the paths shows
        return {"blend": [1.0] * 4, "blend_hl": [1.0] * 4}, ratios

    monkeypatch.setattr(N, "fit_gate", network_served)
    # a large step, so two epochs move the corrections well away from zero
    config = pipeline_config(model=GLOBAL | {"learning_rate": 0.05})
    day = date(2023, 12, 28)
    Pipeline(config).run_nightly(as_of=day)
    stored = stored_closes(session_factory, "MSFT", day)
    with session_factory() as s:
        version = model_store.latest_model_version(s, ticker="MSFT", trained_up_to=day)
        trained = usable_from_record(model_store.model_version_record(version))
        candles = repository.load_candles(s, ticker="MSFT")
    policy = FreshOrFitNow(session_factory, config)
    again = forecast_set(
        "MSFT", day, policy, candles=candles, universe=universe_loader(session_factory)
    )
    assert policy.source.startswith(f"model version {version.id} (trained on data up to")
    flat = [v for c in again.candles for v in (c.close, c.close_lo, c.close_hi)]
    assert flat == pytest.approx(stored, rel=1e-5)  # stored to 6 significant digits

    # the backtest's path: the served Forecaster, inputs built once over the universe's candles
    with session_factory() as s:
        universe = {
            t: repository.load_candles(s, ticker=t, end=day) for t in config.tickers.symbols
        }
    row = np.array([universe["MSFT"].index.get_loc(pd.Timestamp(day))])
    targets = next_sessions_many(universe["MSFT"].index[row], 4)
    assert [t.date() for t in pd.DatetimeIndex(targets[0])] == [c.date for c in again.candles]
    served = ServedModel(config.model, universe)
    walked = served.predict_ticker(as_fit(trained), "MSFT", universe["MSFT"], row, targets)
    q10, q90 = QUANTILE_NAMES.index("q10"), QUANTILE_NAMES.index("q90")
    backtest = [
        v
        for h in range(len(again.candles))
        for v in (walked.close[0, h], *walked.quantiles[0, h, [q10, q90]])
    ]
    assert backtest == pytest.approx(stored, rel=1e-5)

    with session_factory.begin() as s:  # no stored forecast: the web infers it live
        s.execute(delete(BaselineForecast))
        s.execute(delete(Forecast))
    client = create_app(config).test_client()
    answer = client.get(f"/api/forecasts/MSFT?as_of={day.isoformat()}")
    assert answer.status_code == 200
    body = json.loads(answer.data)
    assert body["source"] == "live" and body["model_version"] == version.id
    live = [v for c in body["candles"] for v in (c["close"], c["close_lo"], c["close_hi"])]
    assert live == pytest.approx(stored, rel=1e-5)  # the API rounds to 6 significant digits

    # as of the next session the model is one session old: it needs the universe's candles
    later = day + timedelta(days=1)
    answer = client.get(f"/api/forecasts/MSFT?as_of={later.isoformat()}")
    assert answer.status_code == 200 and json.loads(answer.data)["model_version"] == version.id
    with pytest.raises(ValueError, match="needs the universe's candles"):
        forecast_set("MSFT", later, UseModel(trained), candles=candles)
    expected = forecast_set(
        "MSFT", later, UseModel(trained), candles=candles, universe=universe_loader(session_factory)
    )
    got = [c["close_hi"] for c in json.loads(answer.data)["candles"]]
    assert got == pytest.approx([c.close_hi for c in expected.candles], rel=1e-5)


@pytest.mark.slow
def test_a_backfill_fits_once_and_reuses_the_model_with_the_universes_candles(
    pipeline_config, session_factory
):
    config = pipeline_config(model=GLOBAL)
    results = Pipeline(config).run_backfill(
        start=date(2023, 12, 27), end=date(2023, 12, 29), retrain_every=10
    )
    assert [r.status for r in results] == ["succeeded"] * 3
    night = versions(session_factory)
    assert [v.train_end for v in night] == [date(2023, 12, 27)] * 2  # one fit serves all dates
    with session_factory() as s:
        used = set(s.scalars(select(Forecast.model_version_id)))
        dates = sorted(set(s.scalars(select(Forecast.as_of_date))))
    assert used == {v.id for v in night}
    assert dates == [date(2023, 12, 27), date(2023, 12, 28), date(2023, 12, 29)]

"""Model artifact retention (issue 10 item 7): [model] keep_versions, prune_artifacts, the
`candlecast db prune` command and the nightly run's pruning, on real SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select, update

from db import model_store
from db.model_store import (
    latest_model_version,
    model_candidates,
    prune_artifacts,
)
from db.models import Forecast, ForecastRun, ModelVersion
from db.run_lock import RunLockHandle
from db.session import make_engine, make_session_factory
from forecasting.params import ModelParams
from jobs.cli import main
from jobs.cli_support import EXIT_LOCKED, EXIT_OK
from jobs.config import DEFAULT_CONFIG_PATH, ConfigError, config_from_dict, load_config
from jobs.pipeline import Pipeline

DAY0 = date(2023, 1, 2)


def add_version(session, ticker: str, train_end: date, size: int) -> int:
    """A model version row with `size` fake artifact bytes (no training); returns its id."""
    version = ModelVersion(
        ticker=ticker,
        train_start=date(2020, 1, 2),
        train_end=train_end,
        hyperparameters={"units": 4},
        normalization={},
        metrics={"mae": 1.0},
        val_loss=0.5,
        artifact=bytes([7]) * size,
        artifact_sha256="ab" * 32,
        keras_version="3",
        tensorflow_version="2",
    )
    session.add(version)
    session.flush()
    return version.id


def add_forecast_set(session, ticker: str, as_of: date, version_id: int | None) -> None:
    run = ForecastRun(trigger="manual", status="succeeded", as_of_date=as_of)
    session.add(run)
    session.flush()
    for horizon in range(1, 5):
        session.add(
            Forecast(
                run_id=run.id,
                model_version_id=version_id,
                ticker=ticker,
                as_of_date=as_of,
                horizon=horizon,
                target_date=as_of + timedelta(days=horizon),
                open=1.0,
                high=2.0,
                low=0.5,
                close=1.5,
            )
        )
    session.flush()


def artifact_sizes(factory) -> dict[int, int | None]:
    """id -> artifact length (None when pruned), computed in the database."""
    with factory() as s:
        rows = s.execute(select(ModelVersion.id, func.length(ModelVersion.artifact))).all()
    return dict(rows)


@pytest.fixture
def store(session_factory):
    """AAPL: six versions (two share a train_end, as a rerun leaves), its latest forecast set
    served by an old one (v2), an older set by v1; MSFT: two versions; NVDA: one already pruned.
    Returns (factory, ids) with ids["AAPL"] oldest first."""
    ids: dict[str, list[int]] = {"AAPL": [], "MSFT": [], "NVDA": []}
    with session_factory.begin() as s:
        for i, day in enumerate([0, 1, 2, 3, 4, 4]):  # v5 and v6 share a train_end: id decides
            ids["AAPL"].append(add_version(s, "AAPL", DAY0 + timedelta(days=day), 100 + i))
        for i in range(2):
            ids["MSFT"].append(add_version(s, "MSFT", DAY0 + timedelta(days=i), 1000))
        ids["NVDA"] = [add_version(s, "NVDA", DAY0 + timedelta(days=i), 50) for i in range(5)]
        add_forecast_set(s, "AAPL", date(2023, 3, 1), ids["AAPL"][0])
        add_forecast_set(s, "AAPL", date(2023, 3, 2), ids["AAPL"][1])  # the latest set
        add_forecast_set(s, "MSFT", date(2023, 3, 2), None)
    with session_factory.begin() as s:  # NVDA's oldest was pruned before: not counted again
        prune_artifacts(s, keep=4, tickers=["NVDA"])
    return session_factory, ids


def test_prune_keeps_the_newest_n_and_the_serving_versions_and_counts_bytes(store):
    factory, ids = store
    v1, v2, v3, v4, v5, v6 = ids["AAPL"]
    with factory.begin() as s:
        result = prune_artifacts(s, keep=3)
    assert result.versions == 3
    assert result.bytes == 100 + 102 + 50  # v1, v3 of AAPL; NVDA's second oldest
    assert result.tickers["AAPL"].versions == 2 and result.tickers["AAPL"].bytes == 202
    assert set(result.tickers) == {"AAPL", "NVDA"}  # MSFT has only two versions
    sizes = artifact_sizes(factory)
    assert [sizes[v] for v in ids["AAPL"]] == [None, 101, None, 103, 104, 105]
    assert [sizes[v] for v in ids["MSFT"]] == [1000, 1000]
    assert [sizes[v] for v in ids["NVDA"]] == [None, None, 50, 50, 50]
    with factory() as s:  # every row and its metadata stay
        rows = s.scalars(select(ModelVersion).order_by(ModelVersion.id)).all()
        assert len(rows) == 13
        assert all(r.artifact_sha256 == "ab" * 32 and r.metrics == {"mae": 1.0} for r in rows)
    with factory.begin() as s:  # idempotent
        assert prune_artifacts(s, keep=3).versions == 0


def test_prune_dry_run_and_ticker_filter(store):
    factory, ids = store
    before = artifact_sizes(factory)
    with factory.begin() as s:
        dry = prune_artifacts(s, keep=1, dry_run=True)
    assert artifact_sizes(factory) == before
    assert dry.tickers["AAPL"].versions == 4  # v1, v3, v4, v5 (v6 newest, v2 serving)
    with factory.begin() as s:
        only_msft = prune_artifacts(s, keep=1, tickers=["MSFT"])
    assert (only_msft.versions, only_msft.bytes) == (1, 1000)
    sizes = artifact_sizes(factory)
    assert [sizes[v] for v in ids["MSFT"]] == [None, 1000]
    assert all(sizes[v] == before[v] for v in ids["AAPL"] + ids["NVDA"])
    with factory.begin() as s:
        assert prune_artifacts(s, keep=1, tickers=[]).versions == 0
        with pytest.raises(ValueError, match="keep must be at least 1"):
            prune_artifacts(s, keep=0)


def test_a_pruned_version_is_never_chosen_for_loading(session_factory):
    with session_factory.begin() as s:
        old = add_version(s, "AAPL", DAY0, 10)
        new = add_version(s, "AAPL", DAY0 + timedelta(days=1), 10)
        s.execute(update(ModelVersion).where(ModelVersion.id == new).values(artifact=None))
    with session_factory() as s:
        # the web live path and `candlecast forecast` walk model_candidates
        found = model_candidates(s, ticker="AAPL", trained_up_to=DAY0 + timedelta(days=5))
        assert [c.id for c in found] == [old]
        latest = latest_model_version(s, ticker="AAPL")
        assert latest is not None and latest.id == old and latest.artifact == bytes([7]) * 10
        # without the artifact the newest row (metadata only) is still visible
        assert latest_model_version(s, ticker="AAPL", with_artifact=False).id == new


# Configuration ------------------------------------------------------------------------------


def test_keep_versions_config_default_validation_and_not_a_hyperparameter():
    assert config_from_dict({}).model.keep_versions == 5
    assert load_config(DEFAULT_CONFIG_PATH).model.keep_versions == 5
    assert config_from_dict({"model": {"keep_versions": 1}}).model.keep_versions == 1
    for bad in (0, -3):
        with pytest.raises(ConfigError, match=f"model.keep_versions must be positive, got {bad}"):
            config_from_dict({"model": {"keep_versions": bad}})
    with pytest.raises(ConfigError, match="model.keep_versions must be an integer"):
        config_from_dict({"model": {"keep_versions": "3"}})
    stored = config_from_dict({"model": {"keep_versions": 2}}).model.to_dict()
    assert set(stored) == set(ModelParams().to_dict())  # not stored with every model version


# CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def cli_config(tmp_path, store, migrated_url, monkeypatch):
    config = tmp_path / "candlecast.toml"
    config.write_text('[tickers]\nsymbols = ["AAPL", "MSFT"]\n[model]\nkeep_versions = 3\n')
    monkeypatch.setenv("CANDLECAST_DATABASE_URL", migrated_url)
    return config


def test_db_prune_command_dry_run_then_prune(cli_config, store, capsys):
    factory, ids = store
    before = artifact_sizes(factory)
    assert main(["--config", str(cli_config), "db", "prune", "--dry-run"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "would drop the artifacts of 3 model versions (0.0 MB)" in out
    assert "keeping the newest 3 per ticker" in out
    assert artifact_sizes(factory) == before

    assert main(["--config", str(cli_config), "db", "prune"]) == EXIT_OK  # keep_versions = 3
    out = capsys.readouterr().out
    assert "dropped the artifacts of 3 model versions" in out
    assert "AAPL" in out and "NVDA" in out
    assert [artifact_sizes(factory)[v] for v in ids["AAPL"]] == [None, 101, None, 103, 104, 105]

    assert main(["--config", str(cli_config), "db", "prune", "--keep", "1"]) == EXIT_OK
    assert "dropped the artifacts of 5 model versions" in capsys.readouterr().out
    assert [artifact_sizes(factory)[v] for v in ids["MSFT"]] == [None, 1000]


def test_db_prune_exits_5_and_prunes_nothing_while_a_run_holds_the_lock(
    cli_config, store, migrated_url, capsys
):
    factory, _ = store
    before = artifact_sizes(factory)
    engine = make_engine(migrated_url)
    try:
        with RunLockHandle(engine):
            assert main(["--config", str(cli_config), "db", "prune"]) == EXIT_LOCKED
            assert "nothing pruned" in capsys.readouterr().err
            assert artifact_sizes(factory) == before
        # once free, the command prunes and releases the lock again
        assert main(["--config", str(cli_config), "db", "prune"]) == EXIT_OK
        assert artifact_sizes(factory) != before
        with RunLockHandle(engine):
            pass
    finally:
        engine.dispose()


def test_db_prune_rejects_keep_0(cli_config, capsys):
    assert main(["--config", str(cli_config), "db", "prune", "--keep", "0"]) == 2


# The nightly run ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_nightly_run_prunes_its_tickers(pipeline_config, session_factory):
    with session_factory.begin() as s:
        old = [add_version(s, "AAPL", DAY0 + timedelta(days=i), 64) for i in range(3)]
        add_forecast_set(s, "AAPL", date(2023, 6, 1), old[0])  # superseded by the run's set
        msft = [add_version(s, "MSFT", DAY0 + timedelta(days=i), 64) for i in range(3)]
    pipeline = Pipeline(pipeline_config(tickers={"symbols": ["AAPL"]}, model={"keep_versions": 2}))
    result = pipeline.run_nightly()
    assert result.status == "succeeded"
    with session_factory() as s:
        rows = s.execute(
            select(ModelVersion.id, func.length(ModelVersion.artifact))
            .where(ModelVersion.ticker == "AAPL")
            .order_by(ModelVersion.train_end, ModelVersion.id)
        ).all()
        serving = s.scalar(
            select(Forecast.model_version_id).where(Forecast.as_of_date == result.as_of).limit(1)
        )
    assert [r.id for r in rows[:3]] == old and len(rows) == 4  # every row stays
    assert [r[1] is None for r in rows] == [True, True, False, False]
    assert rows[3].id == serving and rows[3][1] > 1000  # the run's real model keeps its bytes
    assert all(artifact_sizes(session_factory)[v] == 64 for v in msft)  # not a ticker of the run


def test_a_prune_failure_is_only_a_warning(pipeline_config, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(model_store, "prune_artifacts", broken)
    pipeline = Pipeline(pipeline_config())
    with caplog.at_level(logging.WARNING, logger="candlecast.pipeline"):
        pipeline._prune_artifacts(("AAPL",))  # does not raise
    assert "pruning old model artifacts failed (the run is unaffected): disk on fire" in caplog.text
    pipeline.engine.dispose()


def test_prune_on_an_empty_database(migrated_url):
    engine = make_engine(migrated_url)
    try:
        with make_session_factory(engine)() as s:
            assert prune_artifacts(s, keep=1).versions == 0  # empty database
    finally:
        engine.dispose()

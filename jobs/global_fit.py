"""The night's global network: one fit over the universe before the per-ticker fan-out.

The fit sees every given ticker's history_years up to the as-of date. It warm-starts from the
newest stored global model (trained on earlier data, same hyperparameters and tickers) and runs
[model] warm_epochs; a full refit runs when none is usable, when the tickers or hyperparameters
changed, or every [model] full_refit_every sessions. Which one happened, and why, is recorded
in each version's metrics (``fit_kind``, ``fit_reason``). The result is one storable record per
ticker, all sharing one serialised network; tickers with too little history get an error text.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import date, timedelta
from functools import partial
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from db import model_store, repository
from jobs.config import Config
from jobs.db_retry import in_transaction, retrying

log = logging.getLogger("candlecast.global_fit")
_NETWORKS: OrderedDict[str, Any] = OrderedDict()  # artifact sha256 -> loaded network (per process)


def _load(factory: sessionmaker[Session], ticker: str, as_of: date) -> pd.DataFrame:
    with factory() as session:
        return repository.load_candles(session, ticker=ticker, end=as_of)


def _previous(
    factory: sessionmaker[Session], config: Config, tickers: list[str], as_of: date
) -> tuple[Any, str, date | None, int | None]:
    """(the GlobalFit to warm-start from or None, why, the date of its last full refit, its
    global_models id)."""
    from forecasting.artifact import UnusableModelError, usable_from_record
    from forecasting.global_serve import as_fit, is_global

    with factory() as session:
        version = model_store.latest_model_version(
            session, ticker=tickers[0], trained_up_to=as_of - timedelta(days=1)
        )
        record = model_store.model_version_record(version) if version is not None else None
    if record is None:
        return None, "first fit", None, None
    calibration = record.get("calibration") or {}
    if calibration.get("kind") != "global":
        return None, "no stored global model", None, None
    if sorted(calibration.get("universe", [])) != sorted(tickers):
        return None, "tickers changed", None, None
    if record["hyperparameters"] != config.model.to_dict():
        return None, "hyperparameters changed", None, None
    last_full = date.fromisoformat(calibration.get("last_full", "1900-01-01"))
    with factory() as session:
        age = model_store.sessions_between(session, ticker=tickers[0], start=last_full, end=as_of)
    if age >= config.model.full_refit_every:
        return None, f"full refit due ({age} sessions since the last)", None, None
    try:
        trained = usable_from_record(record)
    except UnusableModelError as exc:
        log.warning("stored global model %s is unusable (%s); refitting in full", record["id"], exc)
        return None, "stored model unusable", None, None
    fit = as_fit(trained) if is_global(trained) else None
    return fit, "warm start", last_full, record.get("global_model_id")


def global_records(
    factory: sessionmaker[Session], config: Config, tickers: tuple[str, ...], as_of: date
) -> dict[str, dict | str]:
    """Fit the night's global model over ``tickers``: ticker -> record (or an error text)."""
    from forecasting.global_inputs import GAP_SCALE
    from forecasting.global_net import fit_global, required_sessions
    from forecasting.global_store import storable_fit
    from forecasting.range_model import WARMUP
    from forecasting.train import history_slice

    if not tickers:
        return {}
    needed = required_sessions(config.model)
    histories, out = {}, {}
    for ticker in tickers:
        candles = retrying(f"{ticker}: loading candles", partial(_load, factory, ticker, as_of))
        history = history_slice(candles, None, config.data.history_years)
        if len(history) >= needed:
            histories[ticker] = history
        else:
            out[ticker] = (
                f"{ticker}: training needs at least {needed} sessions (HAR-range warm-up "
                f"{WARMUP} + window {config.model.window} + the gap feature's "
                f"{2 * int(GAP_SCALE)}); {len(history)} available"
            )
    if not histories:
        return out
    try:
        previous, reason, last_full, parent_id = _previous(
            factory, config, sorted(histories), as_of
        )
        fit = fit_global(histories, config.model, previous=previous)
    except ValueError as exc:
        log.warning("the global model could not be fitted: %s", exc)
        return out | {t: f"the global model could not be fitted: {exc}" for t in histories}
    full_date = (last_full or fit.train_end) if fit.kind == "warm" else fit.train_end
    stored = storable_fit(fit, histories, reason=reason, last_full=full_date)
    _remember(stored.artifact_sha256, fit.network)  # this process's tasks need not load it again
    global_id = in_transaction(
        factory,
        "storing the night's global model",
        partial(
            model_store.add_global_model,
            **stored.row,
            parent_id=parent_id if fit.kind == "warm" else None,
        ),
    )
    for ticker in histories:
        if ticker not in stored.records:
            out[ticker] = f"{ticker}: HAR-range could not be fitted on its history"
            continue
        out[ticker] = stored.records[ticker] | {"global_model_id": global_id}
    log.info(
        "global model: %s fit over %d tickers (%s) in %.1f s",
        fit.kind,
        len(stored.records),
        reason,
        fit.metrics.get("train_seconds", 0.0),
    )
    return out


def _remember(sha: str, network: Any) -> None:
    _NETWORKS[sha] = network
    while len(_NETWORKS) > 2:
        _NETWORKS.popitem(last=False)


def trained_from_global_record(record: dict) -> Any:
    """The TrainedModel of a night's record, loading the shared network once per process."""
    from forecasting.artifact import model_from_bytes, trained_from_record

    sha = record["artifact_sha256"]
    if sha not in _NETWORKS:
        _remember(sha, model_from_bytes(bytes(record["artifact"]), sha))
    return trained_from_record(record, model=_NETWORKS[sha])


def universe_loader(factory: sessionmaker[Session]):
    """A loader of the universe's recent candles for forecasts after a model's data."""

    def load(tickers: list[str], end: date, rows: int) -> dict[str, pd.DataFrame]:
        with factory() as session:
            return repository.load_recent_candles(session, tickers=tickers, end=end, sessions=rows)

    return load

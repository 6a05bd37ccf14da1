"""Model versions: store a trained model's record, find the latest one usable for a date.

The staleness rule lives here, shared by `candlecast forecast` and the web's live fallback: a
model is usable for an as-of date when it was trained on data up to that date and at most
[model] retrain_every candle sessions older than it. Retention lives here too: `prune_artifacts`
drops the `.keras` bytes of old versions (their rows stay); a pruned version is never a candidate.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, undefer

from db.models import Candle, Forecast, GlobalModel, ModelVersion

RECORD_FIELDS = (
    "ticker",
    "train_start",
    "train_end",
    "hyperparameters",
    "normalization",
    "calibration",
    "metrics",
    "val_loss",
    "artifact",
    "artifact_sha256",
    "keras_version",
    "tensorflow_version",
)


def add_model_version(session: Session, *, record: dict[str, Any]) -> ModelVersion:
    """Insert a model version from a record dict (see RECORD_FIELDS, plus the optional
    ``global_model_id``) and return it with its id."""
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        raise ValueError(f"model record lacks {', '.join(missing)}")
    version = ModelVersion(
        **{name: record[name] for name in RECORD_FIELDS},
        global_model_id=record.get("global_model_id"),
    )
    session.add(version)
    session.flush()
    return version


def latest_model_version(
    session: Session, *, ticker: str, trained_up_to: date | None = None, with_artifact: bool = True
) -> ModelVersion | None:
    """The newest model of `ticker` whose training data ends on or before `trained_up_to`.

    With `with_artifact` (the default) only versions that still have their `.keras` bytes
    (not pruned) count, and the bytes are loaded."""
    query = select(ModelVersion).where(ModelVersion.ticker == ticker)
    if trained_up_to is not None:
        query = query.where(ModelVersion.train_end <= trained_up_to)
    if with_artifact:
        query = query.where(ModelVersion.artifact.is_not(None))
        query = query.options(undefer(ModelVersion.artifact))
    query = query.order_by(ModelVersion.train_end.desc(), ModelVersion.id.desc()).limit(1)
    return session.scalars(query).first()


def model_version_by_id(session: Session, *, version_id: int) -> ModelVersion | None:
    """Model version `version_id` with its `.keras` bytes loaded (None when there is none)."""
    query = (
        select(ModelVersion)
        .where(ModelVersion.id == version_id)
        .options(undefer(ModelVersion.artifact))
    )
    return session.scalars(query).first()


def model_version_record(version: ModelVersion) -> dict[str, Any]:
    """The record dict of a stored version (inverse of add_model_version), plus its id."""
    record = {name: getattr(version, name) for name in RECORD_FIELDS}
    record["id"] = version.id
    record["global_model_id"] = version.global_model_id
    return record


GLOBAL_FIELDS = (
    "train_start", "train_end", "kind", "reason", "parent_id", "tickers", "hyperparameters",
    "gate", "metrics", "artifact_sha256",
)  # fmt: skip


def add_global_model(session: Session, **fields: Any) -> int:
    """Insert one global fit (GLOBAL_FIELDS) and return its id. Does not commit."""
    row = GlobalModel(**{name: fields[name] for name in GLOBAL_FIELDS})
    session.add(row)
    session.flush()
    return row.id


class Candidate(NamedTuple):
    """A model version (no artifact) that may serve an as-of date."""

    id: int
    train_end: date


def model_candidates(
    session: Session,
    *,
    ticker: str,
    trained_up_to: date,
    exclude: Collection[int] = (),
    limit: int = 20,
) -> list[Candidate]:
    """Models of `ticker` trained on data up to `trained_up_to`, newest first, minus `exclude`.

    Pruned versions (artifact dropped by `prune_artifacts`) are never candidates: they cannot be
    loaded, so callers fall to the newest version that still has its artifact."""
    query = select(ModelVersion.id, ModelVersion.train_end).where(
        ModelVersion.ticker == ticker,
        ModelVersion.train_end <= trained_up_to,
        ModelVersion.artifact.is_not(None),
    )
    if exclude:
        query = query.where(ModelVersion.id.not_in(sorted(exclude)))
    query = query.order_by(ModelVersion.train_end.desc(), ModelVersion.id.desc()).limit(limit)
    return [Candidate(row.id, row.train_end) for row in session.execute(query)]


def newest_pruned(session: Session, *, ticker: str, trained_up_to: date) -> Candidate | None:
    """The newest model of `ticker` trained on data up to `trained_up_to` whose artifact was
    pruned (None when there is none): why no candidate serves that date, when none does."""
    query = (
        select(ModelVersion.id, ModelVersion.train_end)
        .where(
            ModelVersion.ticker == ticker,
            ModelVersion.train_end <= trained_up_to,
            ModelVersion.artifact.is_(None),
        )
        .order_by(ModelVersion.train_end.desc(), ModelVersion.id.desc())
        .limit(1)
    )
    row = session.execute(query).first()
    return Candidate(row.id, row.train_end) if row is not None else None


def sessions_between(session: Session, *, ticker: str, start: date, end: date) -> int:
    """Stored candle sessions of `ticker` after `start` and up to `end` (a model's age)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Candle)
            .where(Candle.ticker == ticker, Candle.session_date > start, Candle.session_date <= end)
        )
        or 0
    )


def model_is_fresh(*, train_end: date, as_of: date, age_sessions: int, retrain_every: int) -> bool:
    """The one staleness rule: trained on data up to `as_of`, at most `retrain_every` sessions
    before it."""
    return train_end <= as_of and age_sessions <= retrain_every


@dataclass(frozen=True)
class TickerPrune:
    """What pruning dropped (or would drop) for one ticker."""

    versions: int
    bytes: int


@dataclass(frozen=True)
class PruneResult:
    """Artifacts dropped by `prune_artifacts`: totals and per ticker (tickers with drops only)."""

    versions: int = 0
    bytes: int = 0
    tickers: dict[str, TickerPrune] = field(default_factory=dict)


PRUNE_CHUNK = 500  # ids per UPDATE: far below SQLite's and PostgreSQL's parameter limits


def prune_artifacts(
    session: Session, *, keep: int, tickers: Iterable[str] | None = None, dry_run: bool = False
) -> PruneResult:
    """Drop the `.keras` bytes (artifact := NULL) of old model versions; their rows stay.

    Per ticker (all, or `tickers`) the newest `keep` versions (by train_end, id) keep their
    artifact, and so does every version that produced the ticker's latest forecast set (its
    max as_of_date in forecasts). Sizes come from the database (length()), never loading a blob.
    `dry_run` only counts. Does not commit.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    names = sorted(set(tickers)) if tickers is not None else None
    if names is not None and not names:
        return PruneResult()
    rank = (
        func.row_number()
        .over(
            partition_by=ModelVersion.ticker,
            order_by=(ModelVersion.train_end.desc(), ModelVersion.id.desc()),
        )
        .label("rank")
    )
    ranked = select(ModelVersion.id, rank)
    latest = select(Forecast.ticker, func.max(Forecast.as_of_date).label("as_of_date")).group_by(
        Forecast.ticker
    )
    if names is not None:
        ranked = ranked.where(ModelVersion.ticker.in_(names))
        latest = latest.where(Forecast.ticker.in_(names))
    ranked_q = ranked.subquery()
    latest_q = latest.subquery()
    serving = (
        select(Forecast.model_version_id)
        .join(
            latest_q,
            (Forecast.ticker == latest_q.c.ticker) & (Forecast.as_of_date == latest_q.c.as_of_date),
        )
        .where(Forecast.model_version_id.is_not(None))
    )
    doomed = session.execute(
        select(ModelVersion.id, ModelVersion.ticker, func.length(ModelVersion.artifact))
        .join(ranked_q, ranked_q.c.id == ModelVersion.id)
        .where(
            ranked_q.c.rank > keep,
            ModelVersion.artifact.is_not(None),
            ModelVersion.id.not_in(serving),
        )
        .order_by(ModelVersion.id)
    ).all()
    per_ticker: dict[str, list[int]] = {}
    for _id, ticker, size in doomed:
        counts = per_ticker.setdefault(ticker, [0, 0])
        counts[0] += 1
        counts[1] += int(size or 0)
    if not dry_run:
        ids = [row[0] for row in doomed]
        for start in range(0, len(ids), PRUNE_CHUNK):
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.id.in_(ids[start : start + PRUNE_CHUNK]))
                .values(artifact=None)
            )
    return PruneResult(
        versions=len(doomed),
        bytes=sum(c[1] for c in per_ticker.values()),
        tickers={t: TickerPrune(c[0], c[1]) for t, c in sorted(per_ticker.items())},
    )

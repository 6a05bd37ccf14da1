"""Model versions: store a trained model's record, find the latest one usable for a date.

The staleness rule lives here, shared by `candlecast forecast` and the web's live fallback: a
model is usable for an as-of date when it was trained on data up to that date and at most
[model] retrain_every candle sessions older than it.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session, undefer

from db.models import Candle, ModelVersion

RECORD_FIELDS = (
    "ticker",
    "train_start",
    "train_end",
    "hyperparameters",
    "normalization",
    "metrics",
    "val_loss",
    "artifact",
    "artifact_sha256",
    "keras_version",
    "tensorflow_version",
)


def add_model_version(session: Session, *, record: dict[str, Any]) -> ModelVersion:
    """Insert a model version from a record dict (see RECORD_FIELDS) and return it with its id."""
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        raise ValueError(f"model record lacks {', '.join(missing)}")
    version = ModelVersion(**{name: record[name] for name in RECORD_FIELDS})
    session.add(version)
    session.flush()
    return version


def latest_model_version(
    session: Session, *, ticker: str, trained_up_to: date | None = None, with_artifact: bool = True
) -> ModelVersion | None:
    """The newest model of `ticker` whose training data ends on or before `trained_up_to`."""
    query = select(ModelVersion).where(ModelVersion.ticker == ticker)
    if trained_up_to is not None:
        query = query.where(ModelVersion.train_end <= trained_up_to)
    if with_artifact:
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
    return record


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
    """Models of `ticker` trained on data up to `trained_up_to`, newest first, minus `exclude`."""
    query = select(ModelVersion.id, ModelVersion.train_end).where(
        ModelVersion.ticker == ticker, ModelVersion.train_end <= trained_up_to
    )
    if exclude:
        query = query.where(ModelVersion.id.not_in(sorted(exclude)))
    query = query.order_by(ModelVersion.train_end.desc(), ModelVersion.id.desc()).limit(limit)
    return [Candidate(row.id, row.train_end) for row in session.execute(query)]


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

"""Model versions: store a trained model's record, find the latest one usable for a date."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from db.models import ModelVersion

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


def model_version_record(version: ModelVersion) -> dict[str, Any]:
    """The record dict of a stored version (inverse of add_model_version), plus its id."""
    record = {name: getattr(version, name) for name in RECORD_FIELDS}
    record["id"] = version.id
    return record

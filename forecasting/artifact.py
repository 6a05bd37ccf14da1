"""Model versions as plain data: `.keras` bytes + JSON-able dicts. Nothing is pickled.

Loading goes through ``keras.models.load_model(path, safe_mode=True)``, which refuses
serialized Python code (e.g. Lambda layers); custom layers load because they are registered
in ``forecasting.model``. A stored sha256 is verified before the bytes are even parsed.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
import zipfile
from datetime import date, datetime
from typing import Any

from forecasting.params import ModelParams
from forecasting.train import TrainedModel


class UnusableModelError(ValueError):
    """A stored model version fails its checks: sha256 mismatch, not a valid `.keras` archive
    (truncated or corrupt zip), unloadable, or calibrated by an older candlecast."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_to_bytes(model: Any) -> bytes:
    """The model's `.keras` archive as bytes (weights + architecture, no optimizer needed)."""
    with tempfile.TemporaryDirectory(prefix="candlecast-") as folder:
        path = os.path.join(folder, "model.keras")
        with warnings.catch_warnings():
            # Keras' own np.array(tf_tensor) under NumPy 2 warns; harmless, not ours to fix.
            warnings.filterwarnings(
                "ignore", message="__array__ implementation", category=DeprecationWarning
            )
            model.save(path)
        with open(path, "rb") as handle:
            return handle.read()


def model_from_bytes(data: bytes, expected_sha256: str | None = None) -> Any:
    """Load a `.keras` archive from bytes with safe_mode=True.

    UnusableModelError (a ValueError) on a sha mismatch, a truncated/corrupt zip or any failure
    to load, with a message saying which check failed.
    """
    if expected_sha256 is not None and sha256_hex(data) != expected_sha256.lower():
        raise UnusableModelError(
            f"model artifact sha256 mismatch: expected {expected_sha256}, got {sha256_hex(data)}"
        )
    _check_zip(data)
    import keras

    import forecasting.global_layers  # noqa: F401  registers the custom layers

    with tempfile.TemporaryDirectory(prefix="candlecast-") as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            return keras.models.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:  # Keras raises many types (ValueError, OSError, KeyError, ...)
            raise UnusableModelError(
                f"model artifact could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc


def _check_zip(data: bytes) -> None:
    """A `.keras` file is a zip: refuse truncated or corrupt ones before Keras sees them."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise UnusableModelError(
            f"model artifact is not a valid .keras archive (truncated or corrupt zip: {exc})"
        ) from None
    if bad is not None:
        raise UnusableModelError(f"model artifact is a corrupt .keras archive (bad member {bad})")


def _versions() -> tuple[str, str]:
    import keras
    import tensorflow as tf

    return keras.__version__, tf.__version__


def trained_to_record(trained: TrainedModel, artifact: bytes | None = None) -> dict[str, Any]:
    """A storable record (the columns of a model version: "normalization" and "calibration" each
    their own).

    ``artifact``: the model's `.keras` bytes when already serialised (a global network shared by
    every ticker's version is serialised once)."""
    if artifact is None:
        artifact = model_to_bytes(trained.model)
    keras_version, tf_version = _versions()
    return {
        "ticker": trained.ticker,
        "artifact": artifact,
        "artifact_sha256": sha256_hex(artifact),
        "hyperparameters": trained.params.to_dict(),
        "normalization": dict(trained.normalization),
        "calibration": trained.calibration,
        "metrics": dict(trained.metrics),
        "val_loss": float(trained.val_loss),
        "train_start": trained.train_start,
        "train_end": trained.train_end,
        "keras_version": keras_version,
        "tensorflow_version": tf_version,
    }


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def trained_from_record(record: dict[str, Any], model: Any = None) -> TrainedModel:
    """Inverse of ``trained_to_record``: the network is ``model`` when the caller has it loaded
    (a night's shared network), else loaded from the record (verifying its sha256 if given).

    ValueError when the record's calibration is None (none stored), KeyError without the key."""
    if model is None:
        model = model_from_bytes(bytes(record["artifact"]), record.get("artifact_sha256"))
    calibration = record["calibration"]
    if calibration is None:
        raise ValueError("no calibration stored; retrain it")
    return TrainedModel(
        ticker=record["ticker"],
        model=model,
        params=ModelParams.from_dict(record["hyperparameters"]),
        normalization=dict(record["normalization"]),
        calibration=calibration,
        train_start=_as_date(record["train_start"]),
        train_end=_as_date(record["train_end"]),
        metrics=dict(record.get("metrics") or {}),
        val_loss=float(record.get("val_loss", float("nan"))),
    )


def usable_from_record(record: dict[str, Any]) -> TrainedModel:
    """``trained_from_record`` plus every check a served model must pass.

    UnusableModelError when the record is malformed, the calibration is an older candlecast's
    (a per-ticker network, or an older global format: checked before the artifact is loaded),
    or the artifact fails its checks.
    """
    from forecasting.global_serve import GLOBAL_KIND, GLOBAL_VERSION

    calibration = record.get("calibration")
    if isinstance(calibration, dict) and (
        calibration.get("kind") != GLOBAL_KIND or calibration.get("version") != GLOBAL_VERSION
    ):
        raise UnusableModelError(
            "model version was fitted by an older candlecast (a per-ticker network or an "
            "older global format); retrain it"
        )
    try:
        return trained_from_record(record)
    except UnusableModelError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise UnusableModelError(f"model record is malformed: {type(exc).__name__}: {exc}") from exc

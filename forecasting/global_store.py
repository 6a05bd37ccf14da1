"""A night's GlobalFit as the database stores it: one global_models row and one model-version
record per ticker, all sharing the network's `.keras` bytes (serialised once).

The nightly fit (``jobs.global_fit``), the web tests' seed and the web benchmark store fits
through this one function; db/ writes ``row`` (``db.model_store.add_global_model``'s fields but
``parent_id``) and each record (``add_model_version``, with the row's ``global_model_id``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd

from forecasting.artifact import model_to_bytes, sha256_hex, trained_to_record
from forecasting.global_net import GlobalFit
from forecasting.global_serve import ticker_models


@dataclass(frozen=True)
class StorableFit:
    row: dict[str, Any]  # the global_models row's fields (no parent_id, no id)
    records: dict[str, dict[str, Any]]  # ticker -> model version record (no global_model_id)
    artifact_sha256: str


def storable_fit(
    fit: GlobalFit, histories: Mapping[str, pd.DataFrame], *, reason: str, last_full: date
) -> StorableFit:
    """The row and the records of ``fit``: ``reason`` says why it was fitted (also recorded in
    the fit's and each version's metrics as ``fit_reason``), ``last_full`` is the date of its
    last full refit (the fit's own end for a full fit)."""
    fit.metrics.update(fit_reason=reason)
    artifact = model_to_bytes(fit.network)
    sha = sha256_hex(artifact)
    records = {}
    for ticker, trained in ticker_models(fit, histories).items():
        trained.calibration["last_full"] = last_full.isoformat()
        records[ticker] = trained_to_record(trained, artifact=artifact)
    row = {
        "train_start": fit.train_start,
        "train_end": fit.train_end,
        "kind": fit.kind,
        "reason": reason,
        "tickers": list(fit.tickers),
        "hyperparameters": fit.params.to_dict(),
        "gate": fit.gate,
        "metrics": fit.metrics,
        "artifact_sha256": sha,
    }
    return StorableFit(row=row, records=records, artifact_sha256=sha)

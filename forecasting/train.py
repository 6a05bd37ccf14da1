"""Training one ticker's model: time-ordered split, early stopping, validation-only calibration.

Calibration (all fitted on the validation split, never on training or future data):
- ``alpha_close`` / ``alpha_open`` per horizon in [0, 1]: shrinkage of the predicted close/open
  log-returns toward zero, chosen on a grid of validation price MAE: the smallest alpha within
  one paired standard error of the best, kept only if it beats alpha = 0 by
  SHRINKAGE_Z * sqrt(h + 1) standard errors (h+1-step targets of consecutive windows overlap).
  alpha = 0 is exactly the naive forecast (last close), so the model only moves away from naive
  when that helped on held-out data by clearly more than noise.
- ``scale_lo`` / ``scale_hi`` per horizon: split-conformal scales of the 0.1 / 0.9 quantile
  spreads so that each tail holds ~10% of validation closes (80% interval).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from forecasting import features as F
from forecasting.params import ModelParams

MIN_TRAIN_WINDOWS = 60
MIN_VAL_WINDOWS = 20
ALPHA_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
TAIL = 0.1  # each tail of the 80% interval
# Validation windows overlap (their targets share sessions), so paired standard errors are
# optimistic; a shrinkage away from naive must win by this many of them to be used.
SHRINKAGE_Z = 3.0


class InsufficientHistoryError(ValueError):
    """Too few sessions to build the feature windows (and, for training, a validation split)."""


@dataclass
class TrainedModel:
    ticker: str
    model: Any  # keras.Model with outputs [candles, attention]
    params: ModelParams
    normalization: dict
    calibration: dict
    train_start: date
    train_end: date
    metrics: dict = field(default_factory=dict)
    val_loss: float = float("nan")


def required_sessions(params: ModelParams) -> int:
    """Rows needed for training: warm-up + window + horizon + minimal train and val windows."""
    return F.first_valid_end(params.window) + params.horizon + MIN_TRAIN_WINDOWS + MIN_VAL_WINDOWS


def history_slice(candles: pd.DataFrame, as_of: date | None, history_years: int) -> pd.DataFrame:
    """Rows <= as_of (default: last row) and after as_of - history_years."""
    if as_of is not None:
        candles = candles.loc[candles.index <= pd.Timestamp(as_of)]
    if len(candles) == 0:
        return candles
    end = candles.index[-1]
    return candles.loc[candles.index > end - pd.DateOffset(years=history_years)]


def _split(n_windows: int, params: ModelParams) -> tuple[int, int]:
    """(n_train, n_val); a gap of ``horizon`` windows keeps train targets out of validation."""
    n_val = max(MIN_VAL_WINDOWS, math.ceil(n_windows * params.validation_fraction))
    n_train = n_windows - n_val - params.horizon
    return n_train, n_val


def _fit_shrinkage(pred: np.ndarray, target: np.ndarray, sigma: np.ndarray) -> list[float]:
    """Per-horizon alpha in ALPHA_GRID, conservative by design (naive unless clearly beaten).

    Errors are relative to the last close: |exp(s*a*p) - exp(s*t)|. The grid minimum is
    optimistic (picked on the same noisy sample), so (1) the smallest alpha within one paired
    standard error of the minimum is taken, and (2) it is kept only if it beats alpha = 0 (the
    naive forecast) by more than SHRINKAGE_Z paired standard errors; otherwise alpha = 0.
    """
    alphas = []
    for h in range(pred.shape[1]):
        p, t = pred[:, h] * sigma, target[:, h] * sigma
        errors = np.stack([np.abs(np.exp(a * p) - np.exp(t)) for a in ALPHA_GRID])
        best = int(np.argmin(errors.mean(axis=1)))
        chosen = best
        for k in range(best):
            if _within(errors[k] - errors[best], 1.0):
                chosen = k
                break
        # Targets h+1 sessions ahead overlap across consecutive windows, which shrinks the
        # effective sample by about h+1: widen the required margin by sqrt(h+1).
        if chosen and _within(errors[0] - errors[chosen], SHRINKAGE_Z * math.sqrt(h + 1)):
            chosen = 0
        alphas.append(float(ALPHA_GRID[chosen]))
    return alphas


def _within(diff: np.ndarray, z: float) -> bool:
    """True if the mean of paired differences is at most z standard errors above zero."""
    return bool(diff.mean() <= z * diff.std(ddof=1) / math.sqrt(len(diff)))


def _conformal_scale(score: np.ndarray) -> float:
    """(1 - TAIL) quantile of a conformity score, never negative.

    The plain empirical quantile (no (n+1)/n finite-sample inflation) targets 80% coverage
    itself rather than "at least 80%", which over-covered by 1-2 points in backtests.
    """
    return float(max(np.quantile(score, 1 - TAIL), 0.0))


def calibrate(pred: np.ndarray, target: np.ndarray, sigma: np.ndarray) -> dict:
    """Shrinkage and conformal scales from validation predictions (see module docstring)."""
    alpha_close = _fit_shrinkage(pred[..., 0], target[..., 0], sigma)
    alpha_open = _fit_shrinkage(pred[..., 1], target[..., 1], sigma)
    scale_lo, scale_hi, coverage = [], [], []
    for h in range(pred.shape[1]):
        centre = alpha_close[h] * pred[:, h, 0]
        t = target[:, h, 0]
        lo_spread = np.maximum(pred[:, h, 4], 1e-6)
        hi_spread = np.maximum(pred[:, h, 5], 1e-6)
        s_lo = _conformal_scale((centre - t) / lo_spread)
        s_hi = _conformal_scale((t - centre) / hi_spread)
        inside = (t >= centre - s_lo * lo_spread) & (t <= centre + s_hi * hi_spread)
        scale_lo.append(s_lo)
        scale_hi.append(s_hi)
        coverage.append(float(np.mean(inside)))
    return {
        "alpha_close": alpha_close,
        "alpha_open": alpha_open,
        "scale_lo": scale_lo,
        "scale_hi": scale_hi,
        "val_coverage_80": coverage,
    }


def _val_ratio(pred, target, sigma, alphas) -> list[float]:
    """Validation close MAE / naive MAE per horizon after shrinkage (relative to last close)."""
    out = []
    for h, a in enumerate(alphas):
        actual = np.exp(sigma * target[:, h, 0])
        model = np.exp(sigma * a * pred[:, h, 0])
        out.append(float(np.mean(np.abs(model - actual)) / max(np.mean(np.abs(1 - actual)), 1e-12)))
    return out


def train_model(
    candles: pd.DataFrame,
    params: ModelParams,
    *,
    ticker: str,
    as_of: date | None = None,
    history_years: int = 5,
    verbose: int = 0,
) -> TrainedModel:
    """Fit a model on rows <= as_of within ``history_years``; calibrate on the validation split."""
    import keras

    from forecasting import model as M

    started = time.perf_counter()
    data = history_slice(candles, as_of, history_years)
    needed = required_sessions(params)
    if len(data) < needed:
        raise InsufficientHistoryError(
            f"{ticker}: training needs at least {needed} sessions (window {params.window} + "
            f"horizon {params.horizon} + feature warm-up {F.WARMUP} + {MIN_TRAIN_WINDOWS} train "
            f"and {MIN_VAL_WINDOWS} validation windows); {len(data)} available"
        )
    feats = F.compute_features(data)
    sigma = feats["sigma"].to_numpy()
    targets = F.compute_targets(data, feats["sigma"], params.horizon)
    first = F.first_valid_end(params.window)
    ends = np.arange(first, len(data) - params.horizon)
    n_train, n_val = _split(len(ends), params)
    train_ends, val_ends = ends[:n_train], ends[-n_val:]
    norm_rows = np.arange(train_ends[0] - params.window + 1, train_ends[-1] + 1)
    normalization = F.fit_normalization(feats, norm_rows)
    matrix = F.normalized_matrix(feats, normalization)
    x_train = F.make_windows(matrix, train_ends, params.window)
    x_val = F.make_windows(matrix, val_ends, params.window)
    y_train = targets[train_ends].astype("float32")
    y_val = targets[val_ends].astype("float32")

    keras.utils.set_random_seed(params.seed)
    net = M.build_model(params.window, x_train.shape[-1], params.horizon, params.units)
    fit_view = M.training_view(net)
    fit_view.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate, clipnorm=1.0), loss=M.candle_loss
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=params.patience, restore_best_weights=True
    )
    history = fit_view.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=params.epochs,
        batch_size=params.batch_size,
        shuffle=True,  # only within the training split; validation is a separate later block
        callbacks=[stop],
        verbose=verbose,
    )
    val_loss_hist = [float(v) for v in history.history["val_loss"]]
    best = int(np.argmin(val_loss_hist))
    pred_val, _ = M.infer(net, x_val)
    calibration = calibrate(pred_val, y_val.astype("float64"), sigma[val_ends])
    metrics = {
        "epochs_run": len(val_loss_hist),
        "best_epoch": best + 1,
        "train_loss": float(history.history["loss"][best]),
        "val_loss": val_loss_hist[best],
        "val_mae_ratio_vs_naive": _val_ratio(
            pred_val, y_val, sigma[val_ends], calibration["alpha_close"]
        ),
        "val_coverage_80": calibration["val_coverage_80"],
        "alpha_close": calibration["alpha_close"],
        "n_train": int(n_train),
        "n_val": int(n_val),
        "train_seconds": round(time.perf_counter() - started, 3),
    }
    return TrainedModel(
        ticker=ticker,
        model=net,
        params=params,
        normalization=normalization,
        calibration=calibration,
        train_start=data.index[0].date(),
        train_end=data.index[-1].date(),
        metrics=metrics,
        val_loss=val_loss_hist[best],
    )

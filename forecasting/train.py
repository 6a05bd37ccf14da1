"""Training one ticker's model: time-ordered blocks, early stopping, held-out calibration.

The windows are split in time order into train | gap | early-stopping validation | gap |
calibration (gaps of ``horizon`` windows keep targets from straddling a boundary). The network
is fitted on the train block with early stopping on the validation block; everything the served
forecast calibrates (close gate, conformal quantile scales, blend with HAR-range, high/low
source: see ``forecasting.calibration``) is fitted on the calibration block only. The stored
``val_*`` metrics are cross-fitted: calibrate on one half of the calibration block, measure on
the other, and average both ways, so no metric is measured on data used to fit it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from forecasting import calibration as C
from forecasting import features as F
from forecasting.params import ModelParams
from forecasting.range_model import HarRange

MIN_TRAIN_WINDOWS = 60
MIN_VAL_WINDOWS = 20
MIN_CAL_WINDOWS = 20
# Fits of at most this many optimizer steps (epochs x batches) run eagerly: tracing the training
# graph costs ~5-8 s here, about what 8 eager steps of a small LSTM cost (measured on 2 cores: 4
# steps 4.0 s eager vs 8.5 s traced, 8 steps 8.2 vs 8.3, 16 steps 12.0 vs 9.2). Longer fits
# compile the graph.
EAGER_MAX_STEPS = 8


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


@dataclass(frozen=True)
class PooledRange:
    """HAR-range pooled over the universe, for one ticker: ``served`` is the fit the forecast
    serves; ``before`` is the same pooled fit on every ticker's history up to ``before_end``, the
    as-of session of this ticker's first calibration window, so the gate compares the network
    with the HAR-range it would replace, as it stood before the block (issue 18 item 4).
    ``before`` is None when the ticker had too little history then: the gate then compares with
    HAR-range fitted on the ticker alone up to that session."""

    served: dict
    before: dict | None = None
    before_end: date | None = None


def required_sessions(params: ModelParams) -> int:
    """Rows needed for training: warm-up + window + horizon + minimal train, val, cal windows."""
    return (
        F.first_valid_end(params.window)
        + 3 * params.horizon
        + MIN_TRAIN_WINDOWS
        + MIN_VAL_WINDOWS
        + MIN_CAL_WINDOWS
    )


def history_slice(candles: pd.DataFrame, as_of: date | None, history_years: int) -> pd.DataFrame:
    """Rows <= as_of (default: last row) and after as_of - history_years."""
    if as_of is not None:
        candles = candles.loc[candles.index <= pd.Timestamp(as_of)]
    if len(candles) == 0:
        return candles
    end = candles.index[-1]
    return candles.loc[candles.index > end - pd.DateOffset(years=history_years)]


def _split(n_windows: int, params: ModelParams) -> tuple[int, int, int]:
    """(n_train, n_val, n_cal); two gaps of ``horizon`` windows separate the three blocks."""
    n_val = max(MIN_VAL_WINDOWS, math.ceil(n_windows * params.validation_fraction))
    n_cal = max(MIN_CAL_WINDOWS, math.ceil(n_windows * params.calibration_fraction))
    n_train = n_windows - n_val - n_cal - 2 * params.horizon
    return n_train, n_val, n_cal


def _window_ends(data: pd.DataFrame, params: ModelParams) -> np.ndarray:
    return np.arange(F.first_valid_end(params.window), len(data) - params.horizon)


def calibration_start(
    candles: pd.DataFrame, params: ModelParams, *, as_of: date | None = None, history_years: int = 5
) -> date | None:
    """The as-of session of the first calibration window ``train_model`` would use on these
    candles (None when they are too short to train on)."""
    data = history_slice(candles, as_of, history_years)
    if len(data) < required_sessions(params):
        return None
    ends = _window_ends(data, params)
    return data.index[ends[-_split(len(ends), params)[2]]].date()


def pooled_range(
    histories: Mapping[str, pd.DataFrame],
    params: ModelParams,
    history_years: int,
    *,
    gate: bool = True,
) -> dict[str, PooledRange]:
    """Per ticker the served pooled HAR-range fit and the gate's (``PooledRange``): one pooled
    fit per distinct calibration start, on every ticker's candles up to that session. With
    ``gate=False`` (no per-ticker network will be trained) only the served fit."""
    har = HarRange(horizon=params.horizon)
    served = har.fit_pooled(histories)
    if not gate:
        return {t: PooledRange(fit) for t, fit in served.items()}
    starts = {
        t: calibration_start(histories[t], params, history_years=history_years) for t in served
    }
    before: dict[date, dict[str, dict]] = {}
    for day in sorted({d for d in starts.values() if d is not None}):
        cut = {t: c.loc[c.index.date <= day] for t, c in histories.items()}
        try:
            before[day] = har.fit_pooled({t: c for t, c in cut.items() if len(c)})
        except ValueError:
            before[day] = {}
    out = {}
    for ticker, fit in served.items():
        start = starts[ticker]
        gate_fit = before.get(start, {}).get(ticker) if start is not None else None
        out[ticker] = PooledRange(fit, gate_fit, start)
    return out


def _gate_range(range_fit: PooledRange | None, start: date) -> dict | None:
    """The pooled fit the gate compares with, if it was cut at this calibration start."""
    if range_fit is not None and range_fit.before_end == start:
        return range_fit.before
    return None


def attention_entropy(weights: np.ndarray) -> float:
    """Mean entropy of attention rows divided by log(window): 1.0 is uniform attention."""
    w = np.clip(weights, 1e-12, None)
    return float(np.mean(-(w * np.log(w)).sum(axis=1)) / math.log(weights.shape[1]))


def _hl_errors(high, low, target, close0, sigma) -> np.ndarray:
    """(n, h) mean of the relative absolute errors of high and low."""
    actual_high = np.exp(sigma[:, None] * target[..., 2])
    actual_low = np.exp(sigma[:, None] * target[..., 3])
    c0 = close0[:, None]
    return (np.abs(high / c0 - actual_high) + np.abs(low / c0 - actual_low)) / 2


class _CalibrationBlock:
    """Held-out network outputs, targets and HAR-range forecasts on the calibration windows."""

    def __init__(self, pred, target, sigma, close0, har) -> None:
        self.pred, self.target, self.sigma, self.close0, self.har = pred, target, sigma, close0, har

    def subset(self, rows: np.ndarray) -> _CalibrationBlock:
        har = type(self.har)(
            **{k: (v[rows] if v is not None else None) for k, v in vars(self.har).items()}
        )
        return _CalibrationBlock(
            self.pred[rows], self.target[rows], self.sigma[rows], self.close0[rows], har
        )

    def calibrate(self) -> dict:
        c0 = self.close0[:, None]
        har_log_q = np.log(self.har.quantiles / c0[..., None])
        har_hl = _hl_errors(self.har.high, self.har.low, self.target, self.close0, self.sigma)
        return C.calibrate(self.pred, self.target, self.sigma, har_log_q, har_hl)

    def scores(self, calibration: dict) -> dict:
        """Coverage per level, Winkler-80 vs HAR-range alone and close MAE vs naive, per h."""
        from forecasting.quantiles import INTERVAL_LEVELS, interval_indices

        served = C.serve(self.pred, self.close0, self.sigma, calibration, self.har)
        actual = self.close0[:, None] * np.exp(self.sigma[:, None] * self.target[..., 0])
        out = {}
        for level in INTERVAL_LEVELS:
            lo, hi = interval_indices(level)
            q = served["quantiles"]
            inside = (actual >= q[..., lo]) & (actual <= q[..., hi])
            out[f"coverage_{level}"] = inside.mean(axis=0)
        lo, hi = interval_indices(80)
        out["winkler80_vs_har"] = _winkler(served["quantiles"], actual, lo, hi).mean(
            axis=0
        ) / _winkler(self.har.quantiles, actual, lo, hi).mean(axis=0)
        naive = np.abs(self.close0[:, None] - actual).mean(axis=0)
        out["mae_ratio_vs_naive"] = np.abs(served["close"] - actual).mean(axis=0) / np.maximum(
            naive, 1e-12
        )
        return out


def _winkler(q, actual, lo, hi, alpha: float = 0.2) -> np.ndarray:
    lower, upper = q[..., lo], q[..., hi]
    return (
        (upper - lower)
        + (2 / alpha) * np.maximum(lower - actual, 0)
        + (2 / alpha) * np.maximum(actual - upper, 0)
    )


def cross_fitted_metrics(block: _CalibrationBlock) -> dict:
    """Calibrate on one half of the block, score on the other, both ways; mean per horizon."""
    n = len(block.pred)
    halves = (np.arange(n // 2), np.arange(n // 2, n))
    results = []
    for fit_rows, test_rows in (halves, halves[::-1]):
        calibration = block.subset(fit_rows).calibrate()
        results.append(block.subset(test_rows).scores(calibration))
    return {
        f"val_{k}": [round(float(x), 4) for x in np.mean([r[k] for r in results], axis=0)]
        for k in results[0]
    }


def train_model(
    candles: pd.DataFrame,
    params: ModelParams,
    *,
    ticker: str,
    as_of: date | None = None,
    history_years: int = 5,
    verbose: int = 0,
    range_fit: PooledRange | None = None,
) -> TrainedModel:
    """Fit a model on rows <= as_of within ``history_years``; calibrate on the calibration block.

    ``range_fit`` is HAR-range pooled over every configured ticker (``pooled_range``): the
    served fit, and the one the gate compares with. Without it HAR-range is fitted on this
    ticker alone, for both.
    """
    import keras

    from forecasting import model as M

    started = time.perf_counter()
    data = history_slice(candles, as_of, history_years)
    needed = required_sessions(params)
    if len(data) < needed:
        raise InsufficientHistoryError(
            f"{ticker}: training needs at least {needed} sessions (window {params.window} + "
            f"horizon {params.horizon} + feature warm-up {F.WARMUP} + {MIN_TRAIN_WINDOWS} train, "
            f"{MIN_VAL_WINDOWS} validation and {MIN_CAL_WINDOWS} calibration windows); "
            f"{len(data)} available"
        )
    feats = F.compute_features(data)
    sigma = feats["sigma"].to_numpy()
    targets = F.compute_targets(data, feats["sigma"], params.horizon)
    ends = _window_ends(data, params)
    n_train, n_val, n_cal = _split(len(ends), params)
    train_ends = ends[:n_train]
    val_ends = ends[n_train + params.horizon : n_train + params.horizon + n_val]
    cal_ends = ends[-n_cal:]
    norm_rows = np.arange(train_ends[0] - params.window + 1, train_ends[-1] + 1)
    normalization = F.fit_normalization(feats, norm_rows)
    matrix = F.normalized_matrix(feats, normalization)
    x_train = F.make_windows(matrix, train_ends, params.window)
    x_val = F.make_windows(matrix, val_ends, params.window)
    y_train = targets[train_ends].astype("float32")
    y_val = targets[val_ends].astype("float32")

    keras.utils.set_random_seed(params.seed)
    net = M.build_model(
        params.window, x_train.shape[-1], params.horizon, params.units, params.attention
    )
    fit_view = M.training_view(net)
    steps = params.epochs * math.ceil(len(x_train) / params.batch_size)
    fit_view.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate, clipnorm=1.0),
        loss=M.candle_loss,
        run_eagerly=steps <= EAGER_MAX_STEPS,
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
        shuffle=True,  # only within the training block; validation is a separate later block
        callbacks=[stop],
        verbose=verbose,
    )
    val_loss_hist = [float(v) for v in history.history["val_loss"]]
    best = int(np.argmin(val_loss_hist))
    pred_cal, attention_cal = M.infer(net, F.make_windows(matrix, cal_ends, params.window))
    # HAR-range as it stood at the calibration block's first as-of session: the pooled fit on
    # every ticker's candles up to then (the one served, refitted before the block), else this
    # ticker's own fit on its candles up to then
    har = HarRange(horizon=params.horizon)
    har_before = _gate_range(range_fit, data.index[cal_ends[0]].date())
    pooled = har_before is not None
    if har_before is None:
        har_before = har.fit(data.iloc[: cal_ends[0] + 1])
    block = _CalibrationBlock(
        pred_cal,
        targets[cal_ends].astype("float64"),
        sigma[cal_ends],
        data["close"].to_numpy(dtype="float64")[cal_ends],
        har.predict_rows(har_before, data, cal_ends),
    )
    calibration = block.calibrate()
    calibration["har_range"] = range_fit.served if range_fit is not None else har.fit(data)
    metrics = {
        "epochs_run": len(val_loss_hist),
        "best_epoch": best + 1,
        "train_loss": float(history.history["loss"][best]),
        "val_loss": val_loss_hist[best],
        **cross_fitted_metrics(block),
        "alpha_close": calibration["alpha_close"],
        "blend": calibration["blend"],
        "range_from": calibration["range_from"],
        "attention_entropy": round(attention_entropy(attention_cal), 4),
        "gate_har_range": "pooled" if pooled else "own",
        "n_train": int(n_train),
        "n_val": int(n_val),
        "n_cal": int(n_cal),
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

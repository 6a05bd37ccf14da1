"""Calibration of the served forecast on the calibration block (never the early-stopping block).

Everything here is fitted on held-out predictions of the network (windows after the block used
for early stopping) and of the HAR-range model (fitted on data before that block):
- ``alpha_close`` / ``alpha_open`` per horizon in [0, 1]: shrinkage of the predicted close/open
  move toward zero (the naive forecast). The smallest alpha within one paired standard error of
  the best is kept only if it beats alpha = 0 by SHRINKAGE_Z * sqrt(h + 1) standard errors.
- ``q_scale`` (horizon x 7): split-conformal scales of the network's quantile offsets so that each
  quantile holds its nominal share of calibration closes.
- ``blend`` per horizon in BLEND_GRID: weight of the network's quantiles against HAR-range's in
  log-return space (quantile averaging). Non-zero only where it lowered the mean pinball loss
  by BLEND_Z paired standard errors; otherwise the served quantiles are HAR-range's.
- ``range_from`` per horizon: "lstm" or "har_range" for the high/low, the network only where its
  MAE beat HAR-range's by BLEND_Z paired standard errors.
"""

from __future__ import annotations

import math

import numpy as np

from forecasting.quantiles import QUANTILE_LEVELS

CALIBRATION_VERSION = 2
ALPHA_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
SHRINKAGE_Z = 3.0
BLEND_Z = 2.0
LEVELS = np.asarray(QUANTILE_LEVELS)
MEDIAN = 3  # index of 0.50 in QUANTILE_LEVELS


def _within(diff: np.ndarray, z: float) -> bool:
    """True if the mean of paired differences is at most z standard errors above zero."""
    if len(diff) < 2:
        return True
    return bool(diff.mean() <= z * diff.std(ddof=1) / math.sqrt(len(diff)))


def fit_shrinkage(pred: np.ndarray, target: np.ndarray, sigma: np.ndarray) -> list[float]:
    """Per-horizon alpha in ALPHA_GRID, conservative by design (naive unless clearly beaten).

    Errors are relative to the last close: |exp(s*a*p) - exp(s*t)|. The grid minimum is
    optimistic, so the smallest alpha within one paired standard error of it is taken, and it
    is kept only if it beats alpha = 0 by SHRINKAGE_Z * sqrt(h + 1) paired standard errors
    (targets h+1 sessions ahead overlap across consecutive windows).
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
        if chosen and _within(errors[0] - errors[chosen], SHRINKAGE_Z * math.sqrt(h + 1)):
            chosen = 0
        alphas.append(float(ALPHA_GRID[chosen]))
    return alphas


def quantile_offsets(pred: np.ndarray) -> np.ndarray:
    """(n, h, 7) offsets of the network's close quantiles from its median, in sigma units."""
    below = -np.cumsum(pred[..., 4:7], axis=-1)[..., ::-1]  # q05, q10, q25
    above = np.cumsum(pred[..., 7:10], axis=-1)  # q75, q90, q95
    zero = np.zeros(pred.shape[:-1] + (1,))
    return np.concatenate([below, zero, above], axis=-1)


def conformal_scales(centre: np.ndarray, offsets: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(h, 7) scales k so that P(target <= centre + k * offset) matches each quantile level."""
    scales = np.ones((offsets.shape[1], len(LEVELS)))
    for h in range(offsets.shape[1]):
        for j, q in enumerate(LEVELS):
            if j == MEDIAN:
                continue
            d = offsets[:, h, j]
            d = np.where(np.abs(d) < 1e-6, np.sign(q - 0.5) * 1e-6, d)
            score = (target[:, h] - centre[:, h]) / d  # > k means outside on d's side
            level = q if q > 0.5 else 1 - q
            scales[h, j] = max(float(np.quantile(score, level)), 0.0)
    return scales


def lstm_log_quantiles(pred: np.ndarray, sigma: np.ndarray, calibration: dict) -> np.ndarray:
    """(n, h, 7) network close quantiles as log-returns from the last close."""
    centre = np.asarray(calibration["alpha_close"])[None, :] * pred[..., 0]
    scaled = centre[..., None] + np.asarray(calibration["q_scale"])[None] * quantile_offsets(pred)
    return np.sort(sigma[:, None, None] * scaled, axis=-1)


def mean_pinball(log_q: np.ndarray, log_actual: np.ndarray) -> np.ndarray:
    """(n, h) mean pinball loss over the seven levels (log-return units)."""
    err = log_actual[..., None] - log_q
    return np.maximum(LEVELS * err, (LEVELS - 1) * err).mean(axis=-1)


def blend_quantiles(lstm_q: np.ndarray, har_q: np.ndarray, weights) -> np.ndarray:
    w = np.asarray(weights)[None, :, None]
    return w * lstm_q + (1 - w) * har_q


def _gated_choice(losses: list[np.ndarray], z: float) -> int:
    """Index of the lowest mean loss, or 0 unless it beats option 0 by z paired std errors."""
    best = int(np.argmin([loss.mean() for loss in losses]))
    if best and _within(losses[0] - losses[best], z):
        return 0
    return best


def fit_blend(lstm_q: np.ndarray, har_q: np.ndarray, log_actual: np.ndarray) -> list[float]:
    """Per-horizon network weight in BLEND_GRID (0 = HAR-range only unless clearly beaten)."""
    out = []
    for h in range(lstm_q.shape[1]):
        losses = [
            mean_pinball(
                w * lstm_q[:, h : h + 1] + (1 - w) * har_q[:, h : h + 1], log_actual[:, h : h + 1]
            )[:, 0]
            for w in BLEND_GRID
        ]
        out.append(float(BLEND_GRID[_gated_choice(losses, BLEND_Z * math.sqrt(h + 1))]))
    return out


def fit_range_source(lstm_err: np.ndarray, har_err: np.ndarray) -> list[str]:
    """Per-horizon source of the high/low: the network only if its MAE clearly beat HAR's."""
    out = []
    for h in range(lstm_err.shape[1]):
        pick = _gated_choice([har_err[:, h], lstm_err[:, h]], BLEND_Z * math.sqrt(h + 1))
        out.append("lstm" if pick else "har_range")
    return out


def network_hl_errors(pred, target, sigma, alpha_close, alpha_open) -> np.ndarray:
    """(n, h) mean relative |error| of the network's high and low as ``serve`` builds them:
    around the gated (shrunk) close and open, in units of the last close."""
    s = sigma[:, None]
    close = np.exp(s * np.asarray(alpha_close)[None, :] * pred[..., 0])
    opn = np.exp(s * np.asarray(alpha_open)[None, :] * pred[..., 1])
    high = np.maximum(opn, close) * np.exp(s * pred[..., 2])
    low = np.minimum(opn, close) * np.exp(-s * pred[..., 3])
    actual_high, actual_low = np.exp(s * target[..., 2]), np.exp(s * target[..., 3])
    return (np.abs(high - actual_high) + np.abs(low - actual_low)) / 2


def calibrate(pred, target, sigma, har_log_q, har_hl_err) -> dict:
    """All calibration numbers from one block of held-out predictions (see module doc).

    pred (n, h, 10) network outputs; target (n, h, 4) in sigma units; har_log_q (n, h, 7);
    har_hl_err (n, h) HAR-range's mean relative high/low absolute errors.
    """
    alpha_close = fit_shrinkage(pred[..., 0], target[..., 0], sigma)
    alpha_open = fit_shrinkage(pred[..., 1], target[..., 1], sigma)
    lstm_hl_err = network_hl_errors(pred, target, sigma, alpha_close, alpha_open)
    centre = np.asarray(alpha_close)[None, :] * pred[..., 0]
    q_scale = conformal_scales(centre, quantile_offsets(pred), target[..., 0])
    calibration = {
        "version": CALIBRATION_VERSION,
        "alpha_close": alpha_close,
        "alpha_open": alpha_open,
        "q_scale": q_scale.tolist(),
    }
    log_actual = sigma[:, None] * target[..., 0]
    calibration["blend"] = fit_blend(
        lstm_log_quantiles(pred, sigma, calibration), har_log_q, log_actual
    )
    calibration["range_from"] = fit_range_source(lstm_hl_err, har_hl_err)
    return calibration


def serve(pred, close0, sigma, calibration: dict, har) -> dict[str, np.ndarray]:
    """Served prices for n as-of rows from network outputs and HAR-range's CandlePaths.

    quantiles: the blend of the network's and HAR-range's in log-return space; close: their
    median (one centre: the served close is the served distribution's q50; on the dev universe it
    beat the last close in close MAE by 0.1-0.5% at every horizon, see the README); open: the last
    close moved by the gated network move; high/low from ``range_from`` per horizon, always with
    low <= min(open, close) <= max(open, close) <= high.
    """
    if calibration.get("version") != CALIBRATION_VERSION:
        raise ValueError(
            "this model version was calibrated by an older candlecast (no close quantiles); "
            "retrain it (candlecast run-once or candlecast forecast)"
        )
    c0 = np.asarray(close0, dtype="float64")[:, None]
    s = np.asarray(sigma, dtype="float64")[:, None]
    opn = c0 * np.exp(s * np.asarray(calibration["alpha_open"])[None, :] * pred[..., 1])
    lstm_q = lstm_log_quantiles(pred, np.asarray(sigma, dtype="float64"), calibration)
    har_q = np.log(har.quantiles / c0[..., None])
    quantiles = c0[..., None] * np.exp(blend_quantiles(lstm_q, har_q, calibration["blend"]))
    close = quantiles[..., MEDIAN]
    use_lstm = np.asarray([src == "lstm" for src in calibration["range_from"]])[None, :]
    top, bottom = np.maximum(opn, close), np.minimum(opn, close)
    high = np.where(use_lstm, top * np.exp(s * pred[..., 2]), np.maximum(har.high, top))
    low = np.where(use_lstm, bottom * np.exp(-s * pred[..., 3]), np.minimum(har.low, bottom))
    return {"open": opn, "high": high, "low": low, "close": close, "quantiles": quantiles}

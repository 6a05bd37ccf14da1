"""One global network per fit: a correction to pooled HAR-range learnt over every ticker.

Fitting (``fit_global``) on the histories of the whole universe up to the as-of date:
- the as-of sessions are split in time, on one calendar for all tickers, into
  train | gap | early-stopping validation | gap | calibration;
- HAR-range is fitted pooled on the histories cut at the calibration block's start (the model
  the network is gated against, fitted on data the block never saw); its scales standardise the
  targets and its forecast is an input;
- the network (``forecasting.global_layers``) is trained on the train block (at most
  ``max_windows`` windows, sampled) with early stopping on the validation block, starting from
  the previous fit's weights when ``previous`` is given (a warm start) or from scratch;
- the gate, per horizon, lets the network in at NETWORK_WEIGHT (an equal-weight combination
  with HAR-range) unless on the calibration block, pooled over tickers, that blend raised the
  pinball loss (for the high/low, the absolute error) by more than GATE_Z date-clustered
  standard errors, or the block is too short to tell; then the weight is 0 (HAR-range alone);
- the served HAR-range is then fitted pooled on the full histories.

Serving (``predict_rows``): the close quantiles are HAR-range's with the scale multiplied by
``(1 - w) + w * exp(correction / 2)``; w = 0 (or a zero correction) is HAR-range to the last digit.
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

from forecasting import global_inputs as G
from forecasting import range_model as R
from forecasting.forecast_set import HORIZON
from forecasting.params import ModelParams
from forecasting.quantiles import QUANTILE_LEVELS
from forecasting.scoring import pinball_loss, winkler_score
from forecasting.train import attention_entropy

# The network's weight when the gate lets it in. Fixed, not estimated: on the dev universe
# 2015-2023 the weight picked per block from 0 / .25 / .5 / .75 / 1 (the best on the calibration
# block, kept where it beat HAR-range by one standard error) served 0.9969 [0.9947, 0.9990] times
# this one's Winkler-80 loss at h = 4 (README): estimated weights chase the block's noise.
NETWORK_WEIGHT = 0.5
# the gate closes where the blend was worse than HAR-range by this many standard errors
GATE_Z = 1.0
GATE_BATCH = 10  # dates per batch mean in the gate's standard error
LEVELS = np.asarray(QUANTILE_LEVELS)
MEDIAN = 3
GAP = HORIZON  # dates between blocks: no target straddles two blocks
MIN_DATES = 60 + GAP + 2 * 20  # train, gap, validation, calibration at their minimum sizes


@dataclass
class GlobalFit:
    """A fitted global model: the network, its input statistics, HAR-range and the gate."""

    network: Any  # keras.Model
    params: ModelParams
    normalization: dict
    har: dict[str, dict]  # served HAR-range fit per ticker
    gate: dict  # {"blend": [w per horizon], "blend_hl": [w per horizon]}
    tickers: list[str]
    train_start: date
    train_end: date
    kind: str = "full"  # "full" or "warm"
    metrics: dict = field(default_factory=dict)
    # per ticker, the served forecast on the calibration block: coverage and Winkler-80 against
    # HAR-range alone (the gate's weights were chosen on this block, pooled over all tickers)
    ticker_metrics: dict[str, dict] = field(default_factory=dict)
    # the universe's state (global_inputs.MARKET_COLUMNS) over the last window up to train_end
    market: pd.DataFrame | None = None


def required_sessions(params: ModelParams) -> int:
    """Sessions a ticker needs to be forecast by the global model (and to join its fit)."""
    return G.required_rows(params.window)


def _targets_std(history: pd.DataFrame, fit: dict, design: np.ndarray, horizon: int):
    """(n, horizon, Y_COLUMNS) y_true rows and the log return per (row, horizon)."""
    from forecasting.global_layers import Y_COLUMNS

    _, ret, up, down = R._targets(history, horizon)
    s_close, s_range = G.har_scales(fit, design)
    n = len(history)
    y = np.full((n, horizon, Y_COLUMNS), np.nan)
    y[..., 0] = ret / s_close
    y[..., 1] = up / s_range
    y[..., 2] = down / s_range
    y[..., 3 : 3 + len(LEVELS)] = np.asarray(fit["z"])[None]
    y[..., 3 + len(LEVELS)] = np.maximum(np.asarray(fit["up"]), 0.0)[None]
    y[..., 4 + len(LEVELS)] = np.minimum(np.asarray(fit["down"]), 0.0)[None]
    y[..., 5 + len(LEVELS)] = s_close
    return y


def _next_dates(index: pd.DatetimeIndex, rows: np.ndarray, horizon: int) -> np.ndarray:
    """(len(rows), horizon) the data's own next sessions (training: targets exist)."""
    values = index.to_numpy()
    return values[rows[:, None] + np.arange(1, horizon + 1)[None, :]]


@dataclass
class _Block:
    seq: np.ndarray
    static: np.ndarray
    y: np.ndarray
    dates: np.ndarray  # as-of date of each row


def _concat(parts: list[_Block]) -> _Block:
    return _Block(*(np.concatenate([getattr(p, k) for p in parts]) for k in _Block.__annotations__))


def _split_dates(dates: np.ndarray, params: ModelParams) -> tuple[np.datetime64, ...]:
    """(val_start, val_end, cal_start) over the sorted as-of dates that have targets."""
    n = len(dates)
    n_cal = max(20, math.ceil(n * params.calibration_fraction))
    n_val = max(20, math.ceil(n * params.validation_fraction))
    cal_start = n - n_cal
    val_end = cal_start - GAP
    val_start = val_end - n_val
    if val_start < 60:
        raise ValueError(
            f"training needs at least {MIN_DATES} as-of sessions with a full window and known "
            f"targets across the universe; {n} available"
        )
    return dates[val_start], dates[val_end - 1], dates[cal_start]


def _standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num((x - mean) / std), -8.0, 8.0).astype("float32")


def _rows_of(inputs: G.TickerInputs, window: int, horizon: int) -> np.ndarray:
    first = inputs.valid_from + window - 1
    return np.arange(first, len(inputs.index) - horizon)


def _blocks(inputs, histories, har_fit, params) -> dict[str, _Block]:
    """Every (ticker, as-of row) with a full window and known targets."""
    out = {}
    for ticker, inp in inputs.items():
        rows = _rows_of(inp, params.window, params.horizon)
        if ticker not in har_fit or len(rows) == 0:
            continue
        fit = har_fit[ticker]
        y = _targets_std(histories[ticker], fit, inp.design, params.horizon)[rows]
        targets = _next_dates(inp.index, rows, params.horizon)
        static = G.static_matrix(
            inp, fit, rows, G.calendar_gaps(inp.index.to_numpy()[rows], targets)
        )
        ok = np.isfinite(y).all(axis=(1, 2))
        seq = G.windows(inp.seq, rows, params.window)
        ok &= np.isfinite(seq).all(axis=(1, 2)) & np.isfinite(static).all(axis=1)
        out[ticker] = _Block(seq[ok], static[ok], y[ok], inp.index.to_numpy()[rows][ok])
    return out


def _take(block: _Block, mask: np.ndarray) -> _Block:
    return _Block(block.seq[mask], block.static[mask], block.y[mask], block.dates[mask])


def _gate_losses(delta: np.ndarray, y: np.ndarray, col: int, w: float) -> np.ndarray:
    """(n, horizon) losses in log-return units of blend weight ``w`` (col 0: quantiles, 1: HL)."""
    s = y[..., -1]
    scale = (1.0 - w) + w * np.exp(0.5 * delta[..., col])
    if col == 0:
        z = y[..., 3 : 3 + len(LEVELS)]
        err = (y[..., :1] - scale[..., None] * z) * s[..., None]  # actual minus quantile
        return pinball_loss(0.0, err, LEVELS).mean(axis=-1)
    u, d = y[..., 3 + len(LEVELS)], y[..., 4 + len(LEVELS)]
    return (np.abs(y[..., 1] - scale * u) + np.abs(y[..., 2] - scale * d)) * s


def _date_se(diff: np.ndarray, dates: np.ndarray) -> float:
    """Standard error of the mean of ``diff`` with rows of one date (and of GATE_BATCH
    consecutive dates) moving together."""
    codes, _ = pd.factorize(dates, sort=True)
    per_date = np.bincount(codes, weights=diff) / np.bincount(codes)
    n_batches = len(per_date) // GATE_BATCH
    if n_batches < 2:
        return float("inf")
    batches = per_date[: n_batches * GATE_BATCH].reshape(n_batches, GATE_BATCH).mean(axis=1)
    return float(batches.std(ddof=1) / math.sqrt(n_batches))


def fit_gate(delta: np.ndarray, y: np.ndarray, dates: np.ndarray) -> tuple[dict, dict]:
    """Per-horizon network weights (quantiles, high/low): NETWORK_WEIGHT unless the blend at that
    weight was worse than HAR-range on the calibration block by more than GATE_Z date-clustered
    standard errors, or the block has under two batches of GATE_BATCH dates (then 0); and the
    network alone's loss ratios to HAR-range on that block."""
    gate: dict[str, list[float]] = {"blend": [], "blend_hl": []}
    ratios: dict[str, list[float]] = {"cal_pinball_net_vs_har": [], "cal_hl_net_vs_har": []}
    for col, key, ratio_key in (
        (0, "blend", "cal_pinball_net_vs_har"),
        (1, "blend_hl", "cal_hl_net_vs_har"),
    ):
        har, blend, alone = (_gate_losses(delta, y, col, w) for w in (0.0, NETWORK_WEIGHT, 1.0))
        for h in range(delta.shape[1]):
            gain = har[:, h] - blend[:, h]  # > 0 where the blend did better
            se = _date_se(gain, dates)  # inf: too few dates to judge, so the network stays out
            hurt = not math.isfinite(se) or gain.mean() < -GATE_Z * se
            gate[key].append(0.0 if hurt else NETWORK_WEIGHT)
            ratios[ratio_key].append(round(float(alone[:, h].mean() / har[:, h].mean()), 5))
    return gate, ratios


def ticker_scores(delta: np.ndarray, y: np.ndarray, gate: dict) -> dict[str, list]:
    """Coverage of the served 80% interval, its Winkler score against HAR-range's and the served
    close's absolute error against the last close's, per horizon, on one ticker's calibration
    rows (in log-return units; NaN where the baseline's score is 0)."""
    lo, hi = int(np.searchsorted(LEVELS, 0.10)), int(np.searchsorted(LEVELS, 0.90))
    ret, z = y[..., 0], y[..., 3 : 3 + len(LEVELS)]

    def winkler(scale):
        lower, upper = scale * z[..., lo], scale * z[..., hi]
        return winkler_score(lower, upper, ret, alpha=0.2), (ret >= lower) & (ret <= upper)

    w = np.asarray(gate["blend"])[None, :]
    scale = (1 - w) + w * np.exp(0.5 * delta[..., 0])
    served, covered = winkler(scale)
    har, _ = winkler(np.ones_like(ret))
    s = y[..., -1]
    median_error = np.abs(ret - scale * z[..., MEDIAN]) * s  # the served close is the median
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (served * s).mean(axis=0) / (har * s).mean(axis=0)
        mae = median_error.mean(axis=0) / (np.abs(ret) * s).mean(axis=0)
    return {
        "val_coverage_80": [round(float(x), 4) for x in covered.mean(axis=0)],
        "val_winkler80_vs_har": [round(float(x), 5) for x in ratio],
        "val_mae_ratio_vs_naive": [round(float(x), 4) for x in mae],
    }


def fit_global(
    histories: Mapping[str, pd.DataFrame],
    params: ModelParams,
    *,
    previous: GlobalFit | None = None,
    verbose: int = 0,
) -> GlobalFit:
    """Fit the global model on ``histories`` (each ticker's candles up to the as-of date)."""
    import keras

    from forecasting import global_layers as L

    started = time.perf_counter()
    h = params.horizon
    histories = {t: c for t, c in histories.items() if len(c) > R.WARMUP + params.window + h}
    if not histories:
        raise ValueError("the global network needs at least one ticker with enough history")
    inputs, market = G.inputs_and_market(histories)
    dates = np.unique(
        np.concatenate(
            [inp.index.to_numpy()[_rows_of(inp, params.window, h)] for inp in inputs.values()]
        )
    )
    val_start, val_end, cal_start = _split_dates(dates, params)
    cut = {t: c.loc[c.index < cal_start] for t, c in histories.items()}
    har_cal = R.HarRange(horizon=h).fit_pooled({t: c for t, c in cut.items() if len(c)})
    blocks = _blocks(inputs, histories, har_cal, params)
    train = _concat([_take(b, b.dates < val_start) for b in blocks.values()])
    val = _concat(
        [_take(b, (b.dates >= val_start) & (b.dates <= val_end)) for b in blocks.values()]
    )
    cal_blocks = {t: _take(b, b.dates >= cal_start) for t, b in blocks.items()}
    cal = _concat(list(cal_blocks.values()))
    cal_counts = {t: len(b.dates) for t, b in cal_blocks.items()}
    rng = np.random.default_rng(params.seed)
    if len(train.dates) > params.max_windows:
        keep = np.sort(rng.choice(len(train.dates), params.max_windows, replace=False))
        train = _take(train, keep)
    if previous is not None:
        normalization = previous.normalization
    else:
        normalization = {
            "seq_mean": np.nanmean(train.seq, axis=(0, 1)).tolist(),
            "seq_std": np.maximum(np.nanstd(train.seq, axis=(0, 1)), 1e-6).tolist(),
            "static_mean": np.nanmean(train.static, axis=0).tolist(),
            "static_std": np.maximum(np.nanstd(train.static, axis=0), 1e-6).tolist(),
        }
    weight_scale = float(np.mean(train.y[..., -1]))

    def xy(block: _Block):
        y = block.y.copy()
        y[..., -1] = y[..., -1] / weight_scale
        return [_std_seq(block.seq, normalization), _std_static(block.static, normalization)], y

    keras.utils.set_random_seed(params.seed)
    if previous is not None:
        network = keras.models.clone_model(previous.network)
        network.set_weights(previous.network.get_weights())
        epochs = params.warm_epochs
    else:
        network = L.build_network(
            params.window, len(G.SEQ_COLUMNS), len(G.static_columns(h)), h, params.units,
            params.attention,
        )  # fmt: skip
        epochs = params.epochs
    view = L.training_view(network)
    view.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate, clipnorm=1.0),
        loss=L.correction_loss,
    )
    x_train, y_train = xy(train)
    x_val, y_val = xy(val)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=params.patience, restore_best_weights=True
    )
    history = view.fit(
        x_train, y_train, validation_data=(x_val, y_val), epochs=epochs,
        batch_size=params.batch_size, shuffle=True, callbacks=[stop], verbose=verbose,
    )  # fmt: skip
    x_cal, _ = xy(cal)
    delta, attention = L.infer(network, *x_cal)
    gate, ratios = fit_gate(delta, cal.y, cal.dates)
    per_ticker = {}
    start = 0
    for ticker, count in cal_counts.items():
        rows = slice(start, start + count)
        per_ticker[ticker] = ticker_scores(delta[rows], cal.y[rows], gate)
        start += count
    served_har = R.HarRange(horizon=h).fit_pooled(histories)
    val_losses = [float(v) for v in history.history["val_loss"]]

    return GlobalFit(
        network=network,
        params=params,
        normalization=normalization,
        har=served_har,
        gate=gate,
        tickers=sorted(served_har),
        train_start=min(c.index[0] for c in histories.values()).date(),
        train_end=max(c.index[-1] for c in histories.values()).date(),
        kind="warm" if previous is not None else "full",
        ticker_metrics=per_ticker,
        market=market.tail(params.window),
        metrics={
            "epochs_run": len(val_losses),
            "val_loss": min(val_losses),
            "n_train": len(train.dates),
            "n_val": len(val.dates),
            "n_cal": len(cal.dates),
            "attention_entropy": round(attention_entropy(attention), 4) if len(attention) else None,
            **ratios,
            "train_seconds": round(time.perf_counter() - started, 3),
        },
    )


def _std_seq(seq: np.ndarray, norm: dict) -> np.ndarray:
    return _standardize(seq, np.asarray(norm["seq_mean"]), np.asarray(norm["seq_std"]))


def _std_static(static: np.ndarray, norm: dict) -> np.ndarray:
    return _standardize(static, np.asarray(norm["static_mean"]), np.asarray(norm["static_std"]))


def served_prices(
    close0: np.ndarray, fit: dict, design: np.ndarray, delta: np.ndarray, w: np.ndarray,
    w_hl: np.ndarray,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Prices of HAR-range with its scales times ``(1 - w) + w * exp(delta / 2)`` per horizon:
    open = last close, close = the median, a valid candle always."""
    s_close, s_range = G.har_scales(fit, design)
    scale = (1.0 - w)[None, :] + w[None, :] * np.exp(0.5 * delta[..., 0])
    scale_hl = (1.0 - w_hl)[None, :] + w_hl[None, :] * np.exp(0.5 * delta[..., 1])
    c0 = close0[:, None]
    z = np.asarray(fit["z"])
    quantiles = c0[..., None] * np.exp((s_close * scale)[..., None] * z[None, :, :])
    close = quantiles[..., MEDIAN]
    opn = np.repeat(c0, close.shape[1], axis=1)
    up = np.maximum(np.asarray(fit["up"]), 0.0)[None, :]
    down = np.minimum(np.asarray(fit["down"]), 0.0)[None, :]
    high = np.maximum(c0 * np.exp(s_range * scale_hl * up), np.maximum(opn, close))
    low = np.minimum(c0 * np.exp(s_range * scale_hl * down), np.minimum(opn, close))
    return {"open": opn, "high": high, "low": low, "close": close, "quantiles": quantiles}


def corrections(
    fit: GlobalFit, inputs: G.TickerInputs, ticker: str, rows: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(delta (n, horizon, 2), attention (n, window)) for as-of ``rows`` of one ticker."""
    from forecasting import global_layers as L

    h = fit.params.horizon
    gaps = G.calendar_gaps(inputs.index.to_numpy()[rows], targets)
    static = G.static_matrix(inputs, fit.har[ticker], rows, gaps[:, :h])
    seq = G.windows(inputs.seq, rows, fit.params.window)
    return L.infer(
        fit.network, _std_seq(seq, fit.normalization), _std_static(static, fit.normalization)
    )


def predict_rows(
    fit: GlobalFit, inputs: G.TickerInputs, ticker: str, rows: np.ndarray, targets: np.ndarray
) -> dict[str, dict[str, np.ndarray]]:
    """Served ("candlecast"), network-alone ("network") and HAR-range ("har_range") prices for
    as-of ``rows`` of ``ticker`` whose target sessions are ``targets`` (n, horizon)."""
    if ticker not in fit.har:
        raise ValueError(f"{ticker} is not in the global model's universe")
    rows = np.asarray(rows, dtype=int)
    delta, attention = corrections(fit, inputs, ticker, rows, targets)
    design, close0 = inputs.design[rows], inputs.close[rows]
    har_fit = fit.har[ticker]
    h = fit.params.horizon
    one, zero = np.ones(h), np.zeros(h)
    served = served_prices(
        close0, har_fit, design, delta, np.asarray(fit.gate["blend"]),
        np.asarray(fit.gate["blend_hl"]),
    )  # fmt: skip
    return {
        "candlecast": served | {"attention": attention},
        "network": served_prices(close0, har_fit, design, delta, one, one),
        "har_range": served_prices(close0, har_fit, design, delta, zero, zero),
    }

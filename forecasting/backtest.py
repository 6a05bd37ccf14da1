"""Walk-forward backtest against the naive forecast (tomorrow = today's close).

For every as-of session t in [start, end] with ``horizon`` later sessions in the data, the
forecast of t+1..t+h uses only rows <= t: the model in force was trained on the
``history_years`` before the latest retrain date <= t, and features are causal. One model
serves the ``retrain_every`` as-of dates after its training and infers them in one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import numpy as np
import pandas as pd

from forecasting.params import ModelParams

CSV_COLUMNS = [
    "ticker",
    "as_of_date",
    "horizon",
    "target_date",
    "open",
    "high",
    "low",
    "close",
    "close_lo",
    "close_hi",
    "actual_open",
    "actual_high",
    "actual_low",
    "actual_close",
    "naive_close",
]
PRICE_KEYS = ["open", "high", "low", "close", "close_lo", "close_hi"]


def _lstm_block(candles, rows, params, ticker, history_years) -> dict:
    """Train at rows[0] and forecast every as-of row in ``rows`` with that one model."""
    from forecasting import model as M
    from forecasting.predict import decode, prepare_inputs
    from forecasting.train import train_model

    trained = train_model(
        candles.iloc[: rows[0] + 1], params, ticker=ticker, history_years=history_years
    )
    # Features are causal, so computing them on rows <= the block's last as-of row is honest.
    x, close0, sigma = prepare_inputs(trained, candles.iloc[: rows[-1] + 1], rows)
    pred, _ = M.infer(trained.model, x)
    return decode(pred, close0, sigma, trained.calibration)


def _seed_block(candles, rows, params, ticker, history_years) -> dict:
    from forecasting import seed_baseline as S
    from forecasting.train import history_slice

    history = history_slice(candles.iloc[: rows[0] + 1], None, history_years)
    seed = S.train_seed(history["close"], seed=params.seed, epochs=S.SEED_EPOCHS)
    closes = candles["close"].to_numpy(dtype="float64")
    windows = np.stack([closes[r - S.WINDOW + 1 : r + 1] for r in rows])
    close = S.predict_recursive(seed, windows, params.horizon)
    nan = np.full_like(close, np.nan)
    return {
        "open": close,
        "high": close,
        "low": close,
        "close": close,
        "close_lo": nan,
        "close_hi": nan,
    }


def walk_forward(
    candles: pd.DataFrame,
    *,
    ticker: str,
    start: date,
    end: date,
    params: ModelParams,
    history_years: int = 5,
    retrain_every: int = 21,
    exchange: str = "XNYS",
    model_kind: str = "lstm",
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Rows in CSV_COLUMNS for every as-of session in [start, end] that has h later sessions.

    Target dates are the data's own next sessions (the data follows the ``exchange`` calendar).
    """
    if model_kind not in ("lstm", "seed"):
        raise ValueError(f"unknown model_kind {model_kind!r}")
    del exchange  # target dates come from the data itself
    h = params.horizon
    idx = candles.index
    mask = (idx >= pd.Timestamp(start)) & (idx <= pd.Timestamp(end))
    as_of_rows = np.flatnonzero(mask)
    as_of_rows = as_of_rows[as_of_rows + h < len(candles)]
    block_fn = _lstm_block if model_kind == "lstm" else _seed_block
    frames = []
    for b in range(0, len(as_of_rows), retrain_every):
        rows = as_of_rows[b : b + retrain_every]
        prices = block_fn(candles, rows, params, ticker, history_years)
        frames.append(_rows_frame(candles, rows, prices, ticker, h))
        if progress is not None:
            progress(f"{ticker} {model_kind}: trained at {idx[rows[0]].date()}, {len(rows)} as-of")
    if not frames:
        return pd.DataFrame(columns=CSV_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CSV_COLUMNS]


def _rows_frame(candles, rows, prices, ticker, horizon) -> pd.DataFrame:
    n = len(rows)
    hs = np.tile(np.arange(1, horizon + 1), n)
    as_of = np.repeat(rows, horizon)
    target = as_of + hs
    out = {
        "ticker": ticker,
        "as_of_date": [d.date() for d in candles.index[as_of]],
        "horizon": hs,
        "target_date": [d.date() for d in candles.index[target]],
    }
    for k in PRICE_KEYS:
        out[k] = np.asarray(prices[k], dtype="float64").reshape(-1)
    for k in ("open", "high", "low", "close"):
        out[f"actual_{k}"] = candles[k].to_numpy(dtype="float64")[target]
    out["naive_close"] = candles["close"].to_numpy(dtype="float64")[as_of]
    return pd.DataFrame(out)


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per ticker/horizon accuracy beside the naive baseline, plus an ALL (mean of tickers) row.

    directional_accuracy counts only forecasts that differ from naive (NaN if none do).
    """
    records = []
    for (ticker, h), g in rows.groupby(["ticker", "horizon"], sort=True):
        err_model = (g["close"] - g["actual_close"]).abs().mean()
        err_naive = (g["naive_close"] - g["actual_close"]).abs().mean()
        pred_move = np.sign(g["close"] - g["naive_close"])
        true_move = np.sign(g["actual_close"] - g["naive_close"])
        moved = pred_move != 0
        direction = float((pred_move[moved] == true_move[moved]).mean()) if moved.any() else np.nan
        has_interval = g["close_lo"].notna() & g["close_hi"].notna()
        inside = (g["actual_close"] >= g["close_lo"]) & (g["actual_close"] <= g["close_hi"])
        coverage = float(inside[has_interval].mean()) if has_interval.any() else np.nan
        records.append(
            {
                "ticker": ticker,
                "horizon": int(h),
                "n": len(g),
                "mae_model": float(err_model),
                "mae_naive": float(err_naive),
                "ratio": float(err_model / err_naive) if err_naive > 0 else np.nan,
                "directional_accuracy": direction,
                "coverage_80": coverage,
            }
        )
    table = pd.DataFrame(records)
    if table.empty:
        return table
    numeric = ["n", "mae_model", "mae_naive", "ratio", "directional_accuracy", "coverage_80"]
    overall = table.groupby("horizon")[numeric].mean().reset_index()
    overall.insert(0, "ticker", "ALL")
    return pd.concat([table, overall], ignore_index=True)


def format_summary(summary: pd.DataFrame) -> str:
    """A fixed-width text table of ``summarize`` output."""
    lines = [
        f"{'ticker':<8}{'h':>3}{'n':>6}{'mae_model':>12}{'mae_naive':>12}{'ratio':>8}"
        f"{'dir_acc':>9}{'cov80':>8}"
    ]
    for r in summary.itertuples(index=False):
        lines.append(
            f"{r.ticker:<8}{r.horizon:>3}{r.n:>6.0f}{r.mae_model:>12.4f}{r.mae_naive:>12.4f}"
            f"{r.ratio:>8.4f}{r.directional_accuracy:>9.3f}{r.coverage_80:>8.3f}"
        )
    return "\n".join(lines)

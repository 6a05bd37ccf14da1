"""Walk-forward backtest of the product and the baselines, side by side on the same dates.

For every as-of session t in [start, end] with ``horizon`` later sessions in the data, each
model's forecast of t+1..t+h uses only rows <= t: models are refitted every ``retrain_every``
sessions (on a calendar shared by all tickers, so pooled fits see every ticker up to the same
date) on the ``history_years`` before the refit date, and serve the as-of dates until the next
refit. Models: ``candlecast`` (the served forecast), ``lstm`` (the network alone: its own
quantiles and high/low), ``har_range`` (pooled HAR-range alone), the baselines of
``forecasting.baselines`` and ``seed`` (the seed recipe; slow).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.baselines import BASELINES
from forecasting.forecast_set import ACTUAL_COLUMNS, KEY_COLUMNS, PRICE_KEYS
from forecasting.model_names import DEFAULT_MODELS, MODEL_NAMES, PRODUCT
from forecasting.numbers import round_sig, strip_float32_noise
from forecasting.params import ModelParams
from forecasting.quantiles import QUANTILE_NAMES

QUANTILE_COLUMNS = [f"close_{name}" for name in QUANTILE_NAMES]
CSV_COLUMNS = [*KEY_COLUMNS, *PRICE_KEYS, *QUANTILE_COLUMNS, *ACTUAL_COLUMNS, "naive_close"]
ACTUAL_KEYS = [*ACTUAL_COLUMNS, "naive_close"]


def _paths_prices(paths) -> dict:
    out = paths.prices()
    out["quantiles"] = paths.quantiles
    return out


def _lstm_prices(candles, rows, params, ticker, history_years, range_fit) -> dict[str, dict]:
    """Train the product at rows[0]; served ("candlecast") and network-only ("lstm") prices."""
    from forecasting import model as M
    from forecasting.predict import decode, har_paths, network_only, prepare_inputs
    from forecasting.train import train_model

    trained = train_model(
        candles.iloc[: rows[0] + 1],
        params,
        ticker=ticker,
        history_years=history_years,
        range_fit=range_fit,
    )
    # Features are causal, so computing them on rows <= the block's last as-of row is honest.
    visible = candles.iloc[: rows[-1] + 1]
    x, close0, sigma = prepare_inputs(trained, visible, rows)
    pred, _ = M.infer(trained.model, x)
    har = har_paths(trained, visible, rows)
    served = decode(pred, close0, sigma, trained.calibration, har)
    alone = decode(pred, close0, sigma, network_only(trained.calibration), har)
    return {PRODUCT: served, "lstm": alone}


class _GlobalRefits:
    """The global model along a walk-forward: one fit per refit date, warm-started from the
    previous one, fully refitted every ``full_every`` sessions; inputs built once (causal)."""

    def __init__(self, candles_by_ticker, params: ModelParams, every: int, full_every) -> None:
        from forecasting import global_inputs as G

        self.candles = candles_by_ticker
        self.params = params
        self.every = every
        self.full_every = full_every or params.full_refit_every
        self.inputs = G.build_inputs(candles_by_ticker)
        self.current = None
        self.since_full = 0

    def fit(self, histories):
        from forecasting.global_net import fit_global

        warm = self.current is not None and self.since_full < self.full_every
        self.current = fit_global(histories, self.params, previous=self.current if warm else None)
        self.since_full = self.since_full + self.every if warm else self.every
        return self.current

    def prices(self, ticker: str, rows: np.ndarray) -> dict[str, dict]:
        from forecasting.forecaster import I_HI, I_LO
        from forecasting.global_net import predict_rows

        if self.current is None or ticker not in self.current.har:
            return {}
        h = self.params.horizon
        index = self.candles[ticker].index.to_numpy()
        targets = index[rows[:, None] + np.arange(1, h + 1)[None, :]]
        parts = predict_rows(self.current, self.inputs[ticker], ticker, rows, targets)
        out = {}
        for name, key in ((PRODUCT, "candlecast"), ("lstm", "network")):
            q = parts[key]["quantiles"]
            out[name] = {**parts[key], "close_lo": q[..., I_LO], "close_hi": q[..., I_HI]}
        return out


def _seed_prices(candles, rows, params, ticker, history_years) -> dict:
    from forecasting import seed_baseline as S
    from forecasting.train import history_slice

    history = history_slice(candles.iloc[: rows[0] + 1], None, history_years)
    seed = S.train_seed(history["close"], seed=params.seed, epochs=S.SEED_EPOCHS)
    closes = candles["close"].to_numpy(dtype="float64")
    windows = np.stack([closes[r - S.WINDOW + 1 : r + 1] for r in rows])
    close = S.predict_recursive(seed, windows, params.horizon)
    nan = np.full(close.shape + (len(QUANTILE_COLUMNS),), np.nan)
    return {k: close for k in ("open", "high", "low", "close")} | {
        "close_lo": nan[..., 0],
        "close_hi": nan[..., 0],
        "quantiles": nan,
    }


def walk_forward(
    candles_by_ticker: Mapping[str, pd.DataFrame],
    *,
    start: date,
    end: date,
    params: ModelParams,
    history_years: int = 5,
    retrain_every: int = 21,
    models: Sequence[str] = DEFAULT_MODELS,
    progress: Callable[[int, int, str], None] | None = None,
    scope: str = "per_ticker",
    full_refit_every: int | None = None,
    on_fit: Callable[[date, object], None] | None = None,
) -> pd.DataFrame:
    """Rows (``model`` + CSV_COLUMNS) for every model, ticker and as-of session in [start, end]
    that has ``horizon`` later sessions. Target dates are the data's own next sessions.

    ``scope="global"``: the product ("candlecast") and the network alone ("lstm") come from one
    global fit per refit date over every ticker (``forecasting.global_net``), warm-started from
    the previous one, fully refitted every ``full_refit_every`` sessions (default: the params');
    ``on_fit(date, fit)`` sees each fit. ``progress(done, total, message)`` is called after each
    (refit block, ticker) step, with the number of steps done and in all."""
    from forecasting.range_model import HarRange
    from forecasting.train import history_slice, pooled_range

    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)}")
    h = params.horizon
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    grid = sorted({d for c in candles_by_ticker.values() for d in c.index if lo <= d <= hi})
    needs_range = any(m in models for m in (PRODUCT, "lstm", "har_range"))
    networks = PRODUCT in models or "lstm" in models
    global_scope = scope == "global" and networks
    per_ticker_networks = networks and not global_scope  # they need the gate's HAR-range fits
    refitter = (
        _GlobalRefits(candles_by_ticker, params, retrain_every, full_refit_every)
        if global_scope
        else None
    )
    frames = []
    refits = range(0, len(grid), retrain_every)
    total, done = len(refits) * len(candles_by_ticker), 0
    for b in refits:
        d0, d1 = grid[b], grid[min(b + retrain_every, len(grid)) - 1]
        histories, blocks = {}, {}
        for ticker, candles in candles_by_ticker.items():
            idx = candles.index
            rows = np.flatnonzero((idx >= d0) & (idx <= d1))
            rows = rows[rows + h < len(candles)]
            if len(rows):
                blocks[ticker] = rows
                # every ticker's history ends at the block's first date (no look-ahead across
                # tickers whose calendars differ)
                seen = candles.loc[idx <= d0]
                if len(seen):
                    histories[ticker] = history_slice(seen, None, history_years)
        if not blocks:
            continue
        range_fits = (
            pooled_range(histories, params, history_years, gate=per_ticker_networks)
            if needs_range
            else {}
        )
        if refitter is not None:
            fit = refitter.fit(histories)
            if on_fit is not None:
                on_fit(d0.date(), fit)
        for ticker, rows in blocks.items():
            candles = candles_by_ticker[ticker]
            visible = candles.iloc[: rows[-1] + 1]
            prices: dict[str, dict] = {}
            if refitter is not None:
                both = refitter.prices(ticker, rows)
                prices.update({k: v for k, v in both.items() if k in models})
            elif per_ticker_networks:
                both = _lstm_prices(
                    candles, rows, params, ticker, history_years, range_fits[ticker]
                )
                prices.update({k: v for k, v in both.items() if k in models})
            if "har_range" in models:
                har = HarRange(horizon=h)
                prices["har_range"] = _paths_prices(
                    har.predict_rows(
                        range_fits[ticker].served
                        if ticker in range_fits
                        else har.fit(candles.iloc[: rows[0] + 1]),
                        visible,
                        rows,
                    )
                )
            for name in models:
                if name in BASELINES:
                    forecaster = BASELINES[name]()
                    fitted = forecaster.fit(
                        history_slice(candles.iloc[: rows[0] + 1], None, history_years)
                    )
                    prices[name] = _paths_prices(forecaster.predict_rows(fitted, visible, rows))
            if "seed" in models:
                prices["seed"] = _seed_prices(candles, rows, params, ticker, history_years)
            for name in models:
                if name in prices:  # not when the global model left the ticker out
                    frames.append(_rows_frame(candles, rows, prices[name], ticker, h, name))
            done += 1
            if progress is not None:
                progress(
                    done,
                    total,
                    f"{ticker}: refitted at {candles.index[rows[0]].date()}, {len(rows)} as-of",
                )
    if not frames:
        return pd.DataFrame(columns=["model", *CSV_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def _rows_frame(candles, rows, prices, ticker, horizon, model) -> pd.DataFrame:
    n = len(rows)
    hs = np.tile(np.arange(1, horizon + 1), n)
    as_of = np.repeat(rows, horizon)
    target = as_of + hs
    out = {
        "model": model,
        "ticker": ticker,
        "as_of_date": [d.date() for d in candles.index[as_of]],
        "horizon": hs,
        "target_date": [d.date() for d in candles.index[target]],
    }
    for k in PRICE_KEYS:
        out[k] = np.asarray(prices[k], dtype="float64").reshape(-1)
    quantiles = np.asarray(prices["quantiles"], dtype="float64").reshape(n * horizon, -1)
    for j, column in enumerate(QUANTILE_COLUMNS):
        out[column] = quantiles[:, j]
    for k in ("open", "high", "low", "close"):
        out[f"actual_{k}"] = candles[k].to_numpy(dtype="float64")[target]
    out["naive_close"] = candles["close"].to_numpy(dtype="float64")[as_of]
    return pd.DataFrame(out)


def write_rows_csv(rows: pd.DataFrame, path: str | Path) -> None:
    """Write walk_forward rows to a CSV with the precision of stored numbers: forecast prices to
    numbers.SIGNIFICANT_DIGITS significant digits, actual prices without float32 noise."""
    out = rows.copy()
    for column in (*PRICE_KEYS, *QUANTILE_COLUMNS):
        out[column] = out[column].map(round_sig)
    for column in ACTUAL_KEYS:
        out[column] = strip_float32_noise(out[column].to_numpy(dtype="float64"))
    out.to_csv(path, index=False)

"""Walk-forward backtest of the product and the baselines, side by side on the same dates.

For every as-of session t in [start, end] whose ``horizon`` target sessions (the exchange
calendar's) are in the data, each model's forecast of them uses only rows <= t: models are
refitted every ``retrain_every`` sessions (on a calendar shared by all tickers, so pooled fits
see every ticker up to the same date) on the ``history_years`` before the refit date, and serve
the as-of dates until the next refit. Models: ``candlecast`` (the served forecast), ``lstm`` (the
network's correction served in full), ``har_range`` (pooled HAR-range alone), the baselines of
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
from forecasting.forecaster import CandlePaths, Forecaster
from forecasting.model_names import DEFAULT_MODELS, MODEL_NAMES, PRODUCT
from forecasting.numbers import round_sig, strip_float32_noise
from forecasting.params import ModelParams
from forecasting.quantiles import QUANTILE_NAMES

QUANTILE_COLUMNS = [f"close_{name}" for name in QUANTILE_NAMES]
CSV_COLUMNS = [*KEY_COLUMNS, *PRICE_KEYS, *QUANTILE_COLUMNS, *ACTUAL_COLUMNS, "naive_close"]
ACTUAL_KEYS = [*ACTUAL_COLUMNS, "naive_close"]


def forecasters_for(
    models: Sequence[str], params: ModelParams, universe: Mapping[str, pd.DataFrame]
) -> dict[str, Forecaster]:
    """The Forecaster behind each model name; "lstm" is a component of the served model."""
    from forecasting.range_model import HarRange

    out: dict[str, Forecaster] = {}
    if PRODUCT in models or "lstm" in models:
        from forecasting.served import ServedModel

        out[PRODUCT] = ServedModel(params, universe)
    if "har_range" in models:
        out["har_range"] = HarRange(horizon=params.horizon)
    for name in models:
        if name in BASELINES:
            out[name] = BASELINES[name]()
    if "seed" in models:
        from forecasting.seed_baseline import SeedRecipe

        out["seed"] = SeedRecipe(seed=params.seed)
    return out


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
    full_refit_every: int | None = None,
    on_fit: Callable[[date, object], None] | None = None,
    exchange_for: Callable[[str], str] = lambda _ticker: "XNYS",
) -> pd.DataFrame:
    """Rows (``model`` + CSV_COLUMNS) for every model, ticker and as-of session in [start, end]
    whose ``horizon`` target sessions (the exchange calendar's) are all in the data.

    One loop for every model (the darts historical-forecasts shape): at each refit date every
    Forecaster is fitted on every ticker's history up to that date (``fit_universe``) and
    forecasts each ticker's as-of rows until the next refit (``predict_ticker``). The served
    model ("candlecast", with the network alone as "lstm") is one global fit per refit date,
    warm-started from the previous one and fully refitted every ``full_refit_every`` sessions
    (default: the params'); ``on_fit(date, fit)`` sees each of its fits. ``progress(done, total,
    message)`` is called after each (refit block, ticker) step."""
    from forecasting.calendar import next_sessions_many
    from forecasting.train import history_slice

    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)}")
    h = params.horizon
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    grid = sorted({d for c in candles_by_ticker.values() for d in c.index if lo <= d <= hi})
    forecasters = forecasters_for(models, params, candles_by_ticker)
    full_every = full_refit_every or params.full_refit_every
    previous: dict[str, object] = {}
    since_full = 0
    frames = []
    refits = range(0, len(grid), retrain_every)
    total, done = len(refits) * len(candles_by_ticker), 0
    for b in refits:
        d0, d1 = grid[b], grid[min(b + retrain_every, len(grid)) - 1]
        histories, blocks = {}, {}
        for ticker, candles in candles_by_ticker.items():
            idx = candles.index
            rows = np.flatnonzero((idx >= d0) & (idx <= d1))
            targets = next_sessions_many(idx[rows], h, exchange_for(ticker))
            scorable = np.isin(targets, idx.to_numpy()).all(axis=1)
            if scorable.any():
                blocks[ticker] = (rows[scorable], targets[scorable])
                # every ticker's history ends at the block's first date (no look-ahead across
                # tickers whose calendars differ)
                seen = candles.loc[idx <= d0]
                if len(seen):
                    histories[ticker] = history_slice(seen, None, history_years)
        if not blocks:
            continue
        warm = bool(previous) and since_full < full_every
        since_full = since_full + retrain_every if warm else retrain_every
        fits = {}
        for name, forecaster in forecasters.items():
            last = previous.get(name) if warm and forecaster.warm_starts else None
            fits[name] = forecaster.fit_universe(histories, previous=last)
            if forecaster.warm_starts:
                previous[name] = fits[name]
        if on_fit is not None and PRODUCT in fits:
            on_fit(d0.date(), fits[PRODUCT])
        for ticker, (rows, targets) in blocks.items():
            candles = candles_by_ticker[ticker]
            visible = candles.iloc[: rows[-1] + 1]
            for name, forecaster in forecasters.items():
                paths = forecaster.predict_ticker(fits[name], ticker, visible, rows, targets)
                if paths is None:  # the fit left the ticker out (too little history)
                    continue
                # a component (the network alone: "lstm") is a model of its own in the rows,
                # unless a Forecaster of that name gives it (HarRange: "har_range")
                parts = [(k, v) for k, v in paths.components.items() if k not in forecasters]
                for model, part in ((name, paths), *parts):
                    if model in models:
                        frames.append(_rows_frame(candles, rows, targets, part, ticker, model))
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


def _rows_frame(candles, rows, targets, paths: CandlePaths, ticker, model) -> pd.DataFrame:
    n, horizon = targets.shape
    hs = np.tile(np.arange(1, horizon + 1), n)
    as_of = np.repeat(rows, horizon)
    target = candles.index.get_indexer(targets.reshape(-1))
    out = {
        "model": model,
        "ticker": ticker,
        "as_of_date": [d.date() for d in candles.index[as_of]],
        "horizon": hs,
        "target_date": [d.date() for d in candles.index[target]],
    }
    prices = paths.prices()
    for k in PRICE_KEYS:
        out[k] = np.asarray(prices[k], dtype="float64").reshape(-1)
    quantiles = np.asarray(paths.quantiles, dtype="float64").reshape(n * horizon, -1)
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

"""The global model as each ticker's stored model version, and its forecast of one ticker.

A night's ``GlobalFit`` becomes one ``TrainedModel`` per ticker that shares the network: the
calibration holds the ticker's HAR-range fit, the gate, the universe and the universe's state
(``market``) over the last ``window`` sessions up to the fit date, so the night's forecast of
one ticker needs only that ticker's candles. Forecasts as of a later session (the web's live
fallback, backfills that reuse a model) need the universe's candles: ``universe`` supplies them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date

import numpy as np
import pandas as pd

from forecasting import global_inputs as G
from forecasting.global_net import GlobalFit, predict_rows
from forecasting.train import InsufficientHistoryError, TrainedModel

GLOBAL_KIND = "global"
GLOBAL_VERSION = 3
UniverseLoader = Callable[[list[str], date, int], Mapping[str, pd.DataFrame]]


def is_global(trained: TrainedModel) -> bool:
    return trained.calibration.get("kind") == GLOBAL_KIND


def _market_json(market: pd.DataFrame, rows: int) -> dict:
    tail = market.tail(rows)
    return {
        "dates": [d.date().isoformat() for d in tail.index],
        "columns": list(G.MARKET_COLUMNS),
        "values": [[None if np.isnan(v) else float(v) for v in row] for row in tail.to_numpy()],
    }


def _market_frame(stored: dict) -> pd.DataFrame:
    values = np.array(
        [[np.nan if v is None else v for v in row] for row in stored["values"]], dtype="float64"
    ).reshape(-1, len(stored["columns"]))
    index = pd.DatetimeIndex(pd.to_datetime(stored["dates"]), name="session_date")
    return pd.DataFrame(values, index=index, columns=stored["columns"])


def ticker_models(fit: GlobalFit, histories: Mapping[str, pd.DataFrame]) -> dict[str, TrainedModel]:
    """One TrainedModel per ticker of ``fit`` (all sharing its network)."""
    state = fit.market if fit.market is not None else G.market_state(histories)
    market = _market_json(state, fit.params.window)
    out = {}
    for ticker in fit.tickers:
        calibration = {
            "version": GLOBAL_VERSION,
            "kind": GLOBAL_KIND,
            "fit_kind": fit.kind,
            "har_range": fit.har[ticker],
            "gate": fit.gate,
            "universe": list(fit.tickers),
            "market": market,
        }
        out[ticker] = TrainedModel(
            ticker=ticker,
            model=fit.network,
            params=fit.params,
            normalization=fit.normalization,
            calibration=calibration,
            train_start=fit.train_start,
            train_end=fit.train_end,
            metrics={**fit.metrics, **fit.ticker_metrics.get(ticker, {}), "fit_kind": fit.kind},
            val_loss=float(fit.metrics.get("val_loss", float("nan"))),
        )
    return out


def as_fit(trained: TrainedModel) -> GlobalFit:
    """The GlobalFit view of one ticker's model version (for ``global_net.predict_rows``)."""
    c = trained.calibration
    return GlobalFit(
        network=trained.model,
        params=trained.params,
        normalization=trained.normalization,
        har={trained.ticker: c["har_range"]},
        gate=c["gate"],
        tickers=list(c["universe"]),
        train_start=trained.train_start,
        train_end=trained.train_end,
        kind=c.get("fit_kind", "full"),
    )


def _market_for(
    trained: TrainedModel, data: pd.DataFrame, universe: UniverseLoader | None
) -> pd.DataFrame:
    """The universe's state over the sessions of ``data``'s last window."""
    needed = data.index[-trained.params.window :]
    stored = _market_frame(trained.calibration["market"])
    if needed.isin(stored.index).all():
        return stored
    if universe is None:
        raise ValueError(
            f"{trained.ticker}: a forecast as of {data.index[-1].date()} needs the universe's "
            f"candles after the model's data ({trained.train_end})"
        )
    histories = universe(list(trained.calibration["universe"]), data.index[-1].date(), len(data))
    histories = {**histories, trained.ticker: data}
    return G.market_state(histories)


def forecast_global(
    trained: TrainedModel,
    candles: pd.DataFrame,
    *,
    as_of: date | None,
    exchange: str,
    universe: UniverseLoader | None = None,
):
    """The served forecast (``forecasting.forecast_set.Forecast``) of one ticker after ``as_of``."""
    from forecasting.calendar import next_sessions
    from forecasting.forecast_set import Forecast
    from forecasting.served import served_paths

    data = candles if as_of is None else candles.loc[candles.index <= pd.Timestamp(as_of)]
    needed = G.required_rows(trained.params.window)
    if len(data) < needed:
        raise InsufficientHistoryError(
            f"{trained.ticker}: forecasting needs at least {needed} sessions (window "
            f"{trained.params.window} + HAR-range warm-up + gap feature); {len(data)} available"
        )
    data = data.iloc[-needed:]
    inputs = G.ticker_inputs(data, _market_for(trained, data, universe))
    day = data.index[-1].date()
    h = trained.params.horizon
    dates = next_sessions(day, h, exchange=exchange)
    targets = np.array([dates], dtype="datetime64[ns]")
    paths = served_paths(
        predict_rows(as_fit(trained), inputs, trained.ticker, np.array([len(data) - 1]), targets)
    )
    assert paths.attention is not None  # the network always returns its attention
    return Forecast(
        ticker=trained.ticker,
        as_of=day,
        candles=paths.candles(dates),
        attention=[float(w) for w in paths.attention[0]],
        attention_dates=[ts.date() for ts in data.index[-trained.params.window :]],
        model_mix=model_mix(trained.calibration["gate"]),
        components={name: part.candles(dates) for name, part in paths.components.items()},
    )


def model_mix(gate: dict) -> dict:
    """How much of each horizon's quantiles and high/low came from the network."""
    blend = [float(w) for w in gate["blend"]]
    return {
        "close": ["median"] * len(blend),
        "quantiles": [{"lstm": w, "har_range": round(1 - w, 4)} for w in blend],
        "range": [{"lstm": float(w), "har_range": round(1 - w, 4)} for w in gate["blend_hl"]],
    }

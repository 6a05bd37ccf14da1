"""Inputs of the global network: scale-free, causal, per ticker and across the universe.

For each ticker and session t (all built from candles up to t, and from the other tickers'
candles of the same session t only):
- a sequence of per-session features over the last ``window`` sessions: the range variance and
  its intraday / overnight parts relative to the ticker's 66-session level, the return in
  volatility units, the universe's mean of the first and of the return (the cross-sectional
  state), the ticker's variance relative to that mean, and the share of tickers with a large
  move that session;
- static features at the as-of session: HAR-range's own log-variance forecast per horizon
  relative to the 66-session level (filled in per fit), the 5- and 22-session levels, the
  downside return, the universe's mean 5- and 22-session levels, the calendar days between the
  target sessions (weekends, holidays) and the sessions since the last large overnight gap.
HAR-range supplies the scale (``har_scales``); the network only learns a correction to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting import range_model as R

SEQ_COLUMNS = (
    "d_v", "d_intraday", "d_overnight", "ret", "market_d_v", "market_ret", "rel_d_v", "big_share",
)  # fmt: skip
BASE_STATIC = (
    "d_intraday5", "d_overnight5", "d_intraday22", "d_overnight22", "down5",
    "market_d5", "market_d22", "since_gap",
)  # fmt: skip
BIG_MOVE = 2.0  # |return| in 66-session volatility units that counts as a large move
BIG_GAP = 4.0  # |overnight return| in volatility units that counts as an earnings-sized gap
GAP_SCALE = 63.0  # sessions since the last large gap are divided by this (a quarter), then capped


def static_columns(horizon: int) -> tuple[str, ...]:
    """Names of the static inputs: HAR-range's forecast per horizon, the base ones, the gaps."""
    return (
        *(f"har_h{h}" for h in range(1, horizon + 1)),
        *BASE_STATIC,
        *(f"gap_h{h}" for h in range(1, horizon + 1)),
    )


@dataclass
class TickerInputs:
    """One ticker's per-session arrays (row t uses data up to session t only)."""

    index: pd.DatetimeIndex
    design: np.ndarray  # (n, len(R.FEATURES)) HAR-range's inputs
    seq: np.ndarray  # (n, len(SEQ_COLUMNS))
    base: np.ndarray  # (n, len(BASE_STATIC))
    close: np.ndarray  # (n,)

    @property
    def valid_from(self) -> int:
        """The first row whose features are all defined."""
        return R.WARMUP


def _own(candles: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """HAR-range's design matrix and the ticker-only per-session columns."""
    x = R.design_matrix(candles)
    col = {name: i for i, name in enumerate(R.FEATURES)}
    lv66 = x[:, col["log_v66"]]
    overnight2, _ = R.variance_parts(candles)
    ret = np.nan_to_num(np.log(candles["close"].to_numpy(dtype="float64")))
    ret = np.diff(ret, prepend=ret[0])
    vol = np.exp(0.5 * lv66)
    big_gap = np.sqrt(overnight2) > BIG_GAP * vol
    position = np.arange(len(x))
    last = np.maximum.accumulate(np.where(big_gap, position, -10_000))
    since = np.minimum((position - last) / GAP_SCALE, 2.0)
    frame = pd.DataFrame(
        {
            "d_v": x[:, col["log_v1"]] - lv66,
            "d_intraday": x[:, col["log_intraday1"]] - lv66,
            "d_overnight": x[:, col["log_overnight1"]] - lv66,
            "ret": ret / vol,
            "d_intraday5": x[:, col["log_intraday5"]] - lv66,
            "d_overnight5": x[:, col["log_overnight5"]] - lv66,
            "d_intraday22": x[:, col["log_intraday22"]] - lv66,
            "d_overnight22": x[:, col["log_overnight22"]] - lv66,
            "down5": x[:, col["down5"]],
            "since_gap": since,
            "d5": _log_mean(R.range_variance(candles), 5) - lv66,
            "d22": _log_mean(R.range_variance(candles), 22) - lv66,
        },
        index=candles.index,
    )
    frame.iloc[: R.WARMUP] = np.nan
    return x, frame


def _log_mean(v: np.ndarray, n: int) -> np.ndarray:
    return np.log(pd.Series(v).rolling(n, min_periods=n).mean().to_numpy())


MARKET_COLUMNS = ("market_d_v", "market_ret", "big_share", "market_d5", "market_d22")


def market_state(histories: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per session (index) the universe's state: MARKET_COLUMNS over every ticker that has
    that session, each from that session's candles (and the ticker's own past) only."""
    return _market({t: _own(c)[1] for t, c in histories.items() if len(c) > 0})


def _market(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``market_state`` from each ticker's own columns (``_own``)."""
    if not frames:
        return pd.DataFrame(columns=list(MARKET_COLUMNS), dtype="float64")
    stacked = pd.concat(
        {t: f[["d_v", "ret", "d5", "d22"]] for t, f in frames.items()}, names=["ticker"]
    )
    by_date = stacked.groupby(level=1)
    big = (stacked["ret"].abs() > BIG_MOVE).astype("float64").where(stacked["ret"].notna())
    return pd.DataFrame(
        {
            "market_d_v": by_date["d_v"].mean(),
            "market_ret": by_date["ret"].mean(),
            "big_share": big.groupby(level=1).mean(),
            "market_d5": by_date["d5"].mean(),
            "market_d22": by_date["d22"].mean(),
        }
    )


def ticker_inputs(candles: pd.DataFrame, market: pd.DataFrame) -> TickerInputs:
    """One ticker's inputs with the universe's ``market`` state (from ``market_state``)."""
    return _assemble(candles, *_own(candles), market)


def _assemble(candles, x: np.ndarray, frame: pd.DataFrame, market: pd.DataFrame) -> TickerInputs:
    m = market.reindex(frame.index)
    frame = frame.assign(**{k: m[k].to_numpy() for k in MARKET_COLUMNS})
    frame["rel_d_v"] = frame["d_v"] - frame["market_d_v"]
    frame.iloc[: R.WARMUP] = np.nan
    return TickerInputs(
        index=frame.index,
        design=x,
        seq=frame[list(SEQ_COLUMNS)].to_numpy(dtype="float64"),
        base=frame[list(BASE_STATIC)].to_numpy(dtype="float64"),
        close=candles["close"].to_numpy(dtype="float64"),
    )


def build_inputs(histories: Mapping[str, pd.DataFrame]) -> dict[str, TickerInputs]:
    """Per-ticker inputs, the cross-sectional columns taken over every ticker in ``histories``."""
    return inputs_and_market(histories)[0]


def inputs_and_market(
    histories: Mapping[str, pd.DataFrame],
) -> tuple[dict[str, TickerInputs], pd.DataFrame]:
    """``build_inputs`` and the universe's state itself, each ticker's own columns computed
    once for both."""
    own = {t: _own(c) for t, c in histories.items() if len(c) > 0}
    market = _market({t: frame for t, (_, frame) in own.items()})
    inputs = {t: _assemble(histories[t], x, frame, market) for t, (x, frame) in own.items()}
    return inputs, market


def calendar_gaps(as_of: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(n, horizon) calendar days between consecutive target sessions (from the as-of session)
    minus one: 0 for back-to-back weekdays, 2 over a weekend, 3 over a long weekend."""
    days = np.concatenate([as_of[:, None], targets], axis=1).astype("datetime64[D]")
    return np.diff(days, axis=1).astype("float64") - 1.0


def har_log_variance(fit: dict, design: np.ndarray) -> np.ndarray:
    """(n, horizon) HAR-range's forecast of the log mean variance over the next h sessions."""
    return design @ np.asarray(fit["beta"])


def har_scales(fit: dict, design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(s_close, s_range), each (n, horizon), exactly as ``HarRange.predict_rows`` scales."""
    return R._scales(design, np.asarray(fit["beta"]))


def static_matrix(
    inputs: TickerInputs, fit: dict, rows: np.ndarray, gaps: np.ndarray
) -> np.ndarray:
    """(len(rows), n_static) static inputs of as-of ``rows`` with HAR-range's ``fit``."""
    design = inputs.design[rows]
    lv66 = design[:, list(R.FEATURES).index("log_v66")]
    har = har_log_variance(fit, design) - lv66[:, None]
    return np.concatenate([har, inputs.base[rows], gaps], axis=1)


def windows(seq: np.ndarray, rows: np.ndarray, window: int) -> np.ndarray:
    """(len(rows), window, n_seq) sequences ending at each of ``rows``."""
    idx = np.asarray(rows, dtype=int)[:, None] + np.arange(-window + 1, 1)[None, :]
    return seq[idx]


def required_rows(window: int) -> int:
    """Candle rows a global forecast reads: HAR-range's warm-up, one window and the gap
    feature's cap (so a forecast from this tail equals one from the full history)."""
    return R.WARMUP + window + int(2 * GAP_SCALE) + 1

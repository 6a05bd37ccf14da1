"""The forecast type: four candles after an as-of date with close quantiles, attention and the
model mix. ``forecasting.forecast_path.forecast_set`` returns it;
db/ turns it into rows and web/ into views."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

HORIZON = 4  # the product forecasts four candles: the one definition
PRICE_KEYS = ("open", "high", "low", "close", "close_lo", "close_hi")
# the columns that name one forecast candle, and what happened on its target date (tables, CSV)
KEY_COLUMNS = ("ticker", "as_of_date", "horizon", "target_date")
ACTUAL_COLUMNS = ("actual_open", "actual_high", "actual_low", "actual_close")


@dataclass
class ForecastCandle:
    date: date
    horizon: int
    open: float
    high: float
    low: float
    close: float
    close_lo: float
    close_hi: float
    # Close quantiles (prices) at forecasting.quantiles.QUANTILE_LEVELS; close_lo/close_hi are
    # the 0.10/0.90 ones (the 80% interval).
    quantiles: tuple[float, ...] = ()


@dataclass
class Forecast:
    ticker: str
    as_of: date
    candles: list[ForecastCandle]
    attention: list[float]
    attention_dates: list[date]
    # Which model(s) produced the served numbers, per horizon, e.g. {"close": ["median", ...],
    # "quantiles": [{"lstm": 0.25, "har_range": 0.75}, ...], "range": [{"lstm": 0.0,
    # "har_range": 1.0}, ...]}: the close is the median of the served quantiles; stored with
    # every forecast.
    model_mix: dict = field(default_factory=dict)
    # The served forecast's parts on their own ("lstm": the network alone, "har_range"), stored
    # in baseline_forecasts so that each can be scored against what happened.
    components: dict[str, list[ForecastCandle]] = field(default_factory=dict)

    def check_finite(self) -> None:
        """ValueError unless every price is finite and positive: such a forecast is never stored."""
        for c in self.candles:
            values = [c.open, c.high, c.low, c.close, c.close_lo, c.close_hi, *c.quantiles]
            if not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(
                    f"{self.ticker}: the forecast for {c.date} has a non-finite or non-positive "
                    "price; not stored"
                )


def candles_from(prices: dict, dates: list[date], row: int = 0) -> list[ForecastCandle]:
    """ForecastCandles of one as-of row of price arrays (open..close_hi and ``quantiles``)."""
    quantiles = prices["quantiles"]
    return [
        ForecastCandle(
            date=d,
            horizon=h + 1,
            **{k: float(prices[k][row, h]) for k in PRICE_KEYS},
            quantiles=tuple(float(x) for x in quantiles[row, h]),
        )
        for h, d in enumerate(dates)
    ]

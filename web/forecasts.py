"""Forecast lookup shared by the API and the pages: input checks, stored rows, live fallback."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from db import web_queries as q
from db.models import HORIZONS, QUANTILE_COLUMNS
from forecasting.numbers import round_sig
from forecasting.quantiles import DEFAULT_LEVEL, INTERVAL_LEVELS, QUANTILE_NAMES, interval_indices
from jobs.config import Config, validate_ticker
from web.cache import never_cache
from web.errors import ApiError
from web.live import (
    LiveForecast,
    ModelCache,
    ModelPruned,
    ModelUnavailable,
    NoForecast,
    live_forecast,
)
from web.params import whole_number

DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
LEVELS = tuple(sorted(INTERVAL_LEVELS))
# A price (or price error) for a JSON body: six significant digits at any scale, so 0.00019 stays
# 0.00019 (decimal places would make it 0.0002); None stays None.
price = round_sig


def parse_level(raw: object) -> int:
    """An interval level (50, 80 or 90; None or '' means 80) or ApiError 400 naming them."""
    if raw is None or raw == "":
        return DEFAULT_LEVEL
    level = whole_number(raw)  # ASCII digits only: '²' or '٨٠' is not a level
    if level in INTERVAL_LEVELS:
        return level
    allowed = ", ".join(str(level) for level in LEVELS)
    raise ApiError(400, "invalid_parameter", f"level must be one of {allowed}")


@dataclass(frozen=True)
class CandleView:
    """One forecast candle with its stored 80% close interval and close quantiles (if any).

    `quantiles` are the close prices at forecasting.quantiles.QUANTILE_LEVELS, or empty when the
    model that made the forecast produced none.
    """

    date: date
    horizon: int
    open: float
    high: float
    low: float
    close: float
    close_lo: float | None
    close_hi: float | None
    quantiles: tuple[float | None, ...] = ()

    def bounds(self, level: int) -> tuple[float | None, float | None]:
        """The central `level` % close interval: close_lo/close_hi for 80, else quantiles."""
        if level == DEFAULT_LEVEL:
            return self.close_lo, self.close_hi
        if not self.quantiles:
            return None, None
        lo, hi = interval_indices(level)
        return self.quantiles[lo], self.quantiles[hi]

    def to_json(self, level: int = DEFAULT_LEVEL) -> dict[str, Any]:
        """The candle (prices to six significant digits); at another level than 80 with that level's
        bounds and the quantiles."""
        out: dict[str, Any] = {
            "date": self.date.isoformat(),
            "open": price(self.open),
            "high": price(self.high),
            "low": price(self.low),
            "close": price(self.close),
            "close_lo": price(self.close_lo),
            "close_hi": price(self.close_hi),
        }
        if level != DEFAULT_LEVEL:
            lo, hi = self.bounds(level)
            out["close_lo"], out["close_hi"] = price(lo), price(hi)
            out["quantiles"] = (
                {name: price(v) for name, v in zip(QUANTILE_NAMES, self.quantiles, strict=True)}
                if self.quantiles
                else None
            )
        return out


@dataclass(frozen=True)
class ForecastView:
    """A four-candle forecast as of one session, stored by the job or inferred live."""

    ticker: str
    as_of: date
    source: str  # "stored" | "live"
    model_version: int | None
    candles: tuple[CandleView, ...]
    attention_dates: tuple[date, ...] = field(default=())
    attention: tuple[float, ...] = field(default=())
    model_mix: dict[str, Any] | None = None
    # The model's last training session and its age in sessions at as_of (live forecasts only).
    model_trained_through: date | None = None
    model_age_sessions: int | None = None
    # Set by find_forecast when the answer is stale (see `staleness`); None when fresh.
    staleness: dict[str, Any] | None = None

    def has_level(self, level: int) -> bool:
        """True when every candle has both bounds of the `level` % interval."""
        return all(None not in c.bounds(level) for c in self.candles)

    def to_json(self, level: int = DEFAULT_LEVEL) -> dict[str, Any]:
        """The /predict response body (`predictions` keeps the seed's {date: close} shape).

        At level 80 (the default) the body is the original one. At 50 or 90 it also says
        `level`, each candle's close_lo/close_hi are that level's bounds and it has `quantiles`,
        and the body ends with `model_mix` (None when unknown).
        """
        out: dict[str, Any] = {
            "ticker": self.ticker,
            "as_of": self.as_of.isoformat(),
            "source": self.source,
            "model_version": self.model_version,
        }
        if level != DEFAULT_LEVEL:
            out["level"] = level
        out["candles"] = [c.to_json(level) for c in self.candles]
        out["predictions"] = {c.date.isoformat(): price(c.close) for c in self.candles}
        if level != DEFAULT_LEVEL:
            out["model_mix"] = self.model_mix
        if self.staleness is not None:
            out.update(self.staleness)
        return out


def check_ticker(config: Config, raw: object) -> str:
    """A well-formed, configured ticker (upper-cased) or ApiError 400 / 404."""
    symbol = raw.strip().upper() if isinstance(raw, str) else raw
    try:
        ticker = validate_ticker(symbol)
    except ValueError:
        raise ApiError(
            400, "invalid_ticker", "invalid ticker: expected e.g. AAPL, BRK-B or SHEL.L"
        ) from None
    if ticker not in config.tickers.symbols:
        raise ApiError(404, "unknown_ticker", f"unknown ticker {ticker}: it is not configured")
    return ticker


def parse_date(raw: object, name: str) -> date:
    """A YYYY-MM-DD date or ApiError 400 naming the field."""
    if isinstance(raw, str) and DATE_PATTERN.fullmatch(raw):
        try:
            return date.fromisoformat(raw)
        except ValueError:
            pass
    raise ApiError(400, "invalid_date", f"{name} must be a date formatted YYYY-MM-DD")


def _attention(raw: Any) -> tuple[tuple[date, ...], tuple[float, ...]]:
    """Stored attention JSON {"dates": [...], "weights": [...]} (or a bare weight list)."""
    if isinstance(raw, dict):
        try:
            dates = tuple(date.fromisoformat(str(d)[:10]) for d in raw.get("dates") or ())
            weights = tuple(float(w) for w in raw.get("weights") or ())
        except (TypeError, ValueError):
            return (), ()
        return (dates, weights) if len(dates) == len(weights) else ((), weights)
    if isinstance(raw, list):
        return (), tuple(float(w) for w in raw if isinstance(w, int | float))
    return (), ()


def clean_quantiles(raw: Iterable[Any] | None) -> tuple[float | None, ...]:
    """One value per QUANTILE_LEVELS (NaN/inf -> None), or () when there are none or too few."""
    values = tuple(
        float(v) if v is not None and math.isfinite(float(v)) else None for v in raw or ()
    )
    if len(values) != len(QUANTILE_NAMES) or all(v is None for v in values):
        return ()
    return values


def view_from_rows(rows: Sequence[Any]) -> ForecastView | None:
    """A stored forecast from its rows, or None unless all four horizons are present."""
    if sorted(r.horizon for r in rows) != list(HORIZONS):
        return None
    first = rows[0]
    dates, weights = _attention(getattr(first, "attention", None))
    candles = tuple(
        CandleView(
            r.target_date,
            r.horizon,
            r.open,
            r.high,
            r.low,
            r.close,
            r.close_lo,
            r.close_hi,
            clean_quantiles(getattr(r, name, None) for name in QUANTILE_COLUMNS),
        )
        for r in sorted(rows, key=lambda r: r.horizon)
    )
    return ForecastView(
        first.ticker,
        first.as_of_date,
        "stored",
        first.model_version_id,
        candles,
        dates,
        weights,
        getattr(first, "model_mix", None),
    )


def find_forecast(
    session: Session,
    *,
    config: Config,
    cache: ModelCache,
    ticker: str,
    day: date,
    with_attention: bool = True,
) -> ForecastView:
    """The forecast as of the latest candle session <= `day`: stored if present, else live (and
    then this request's answer is never cached: web.cache.never_cache)."""
    rows = q.forecast_on_or_before(session, ticker=ticker, day=day, with_attention=with_attention)
    view = view_from_rows(rows)
    if view is not None:
        return _with_staleness(session, view, config=config, day=day)
    as_of = q.session_on_or_before(session, ticker=ticker, day=day)
    if as_of is None:
        raise ApiError(404, "no_data", f"no candles of {ticker} on or before {day.isoformat()}")
    try:
        live = live_forecast(
            session,
            ticker=ticker,
            as_of=as_of,
            exchange=config.tickers.exchange_for(ticker),
            cache=cache,
        )
    except ModelPruned as exc:
        raise ApiError(404, "model_pruned", str(exc)) from None
    except NoForecast as exc:
        raise ApiError(404, "no_forecast", str(exc)) from None
    except ModelUnavailable as exc:
        raise ApiError(503, "model_unavailable", str(exc)) from None
    never_cache()  # a live answer depends on the models in memory: pages and API alike
    return _with_staleness(session, live_view(ticker, live), config=config, day=day)


def live_view(ticker: str, live: LiveForecast) -> ForecastView:
    """The view of a forecast inferred now (web.live)."""
    result = live.result
    return ForecastView(
        ticker=ticker,
        as_of=result.as_of,
        source="live",
        model_version=live.model_version,
        candles=tuple(
            CandleView(
                c.date,
                c.horizon,
                c.open,
                c.high,
                c.low,
                c.close,
                c.close_lo,
                c.close_hi,
                clean_quantiles(getattr(c, "quantiles", ())),
            )
            for c in result.candles
        ),
        attention_dates=tuple(result.attention_dates),
        attention=tuple(result.attention),
        model_mix=getattr(result, "model_mix", None) or None,
        model_trained_through=live.model_trained_through,
        model_age_sessions=live.model_age_sessions,
    )


def _missing_session(as_of: date, day: date, exchange: str) -> bool:
    """True when the exchange has a session after `as_of` and on or before `day`."""
    if day <= as_of:
        return False
    from forecasting.calendar import next_sessions

    try:
        (following,) = next_sessions(as_of, 1, exchange)
    except ValueError:  # past the end of the calendar: the date is far beyond the data
        return True
    return following <= day


def staleness(
    session: Session, view: ForecastView, *, config: Config, day: date
) -> dict[str, Any] | None:
    """`stale` and the dates, or None when fresh.

    Stale when the asked date is past the latest stored session (a session of the exchange is
    missing between them), or when the model that inferred it is older than the shared rule
    allows (db.model_store.model_is_fresh: at most [model] retrain_every sessions).
    """
    from db.model_store import model_is_fresh

    reasons = []
    if _missing_session(view.as_of, day, config.tickers.exchange_for(view.ticker)):
        reasons.append(
            f"the asked date {day.isoformat()} is past the latest stored session "
            f"{view.as_of.isoformat()}"
        )
    trained = view.model_trained_through
    if trained is not None and view.model_age_sessions is not None:
        retrain_every = config.model.retrain_every
        if not model_is_fresh(
            train_end=trained,
            as_of=view.as_of,
            age_sessions=view.model_age_sessions,
            retrain_every=retrain_every,
        ):
            reasons.append(
                f"the model was trained on data up to {trained.isoformat()}, "
                f"{view.model_age_sessions} sessions before the as-of date "
                f"(at most {retrain_every} allowed)"
            )
    if not reasons:
        return None
    if trained is None and view.model_version is not None:
        info = q.model_versions_info(session, ids=[view.model_version]).get(view.model_version)
        trained = info["train_end"] if info is not None else None
    return {
        "stale": True,
        "requested_date": day.isoformat(),
        "data_through": view.as_of.isoformat(),
        "model_trained_through": trained.isoformat() if trained is not None else None,
        "model_age_sessions": view.model_age_sessions,
        "stale_reason": "; ".join(reasons),
    }


def _with_staleness(
    session: Session, view: ForecastView, *, config: Config, day: date
) -> ForecastView:
    found = staleness(session, view, config=config, day=day)
    return view if found is None else dataclasses.replace(view, staleness=found)


def latest_stored(session: Session, tickers: Iterable[str]) -> dict[str, ForecastView]:
    """ticker -> its newest stored forecast (tickers without one are absent)."""
    grouped: dict[str, list[Any]] = {}
    for row in q.latest_forecasts(session, tickers=list(tickers)):
        grouped.setdefault(row.ticker, []).append(row)
    views = {t: view_from_rows(rows) for t, rows in grouped.items()}
    return {t: v for t, v in views.items() if v is not None}

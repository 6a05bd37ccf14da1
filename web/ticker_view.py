"""What the ticker page shows: the forecast, the candle chart with its fan, the accuracy panel
(model vs naive and the stored baselines, coverage, rolling error), the paged scored forecasts and
the attention chart. web.pages renders `ticker_context(...)` with templates/ticker.html.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
from flask import url_for

from db import web_queries as q
from db.repository import load_candles
from web import candle_chart, charts, db_session, state
from web.errors import ApiError
from web.forecasts import ForecastView, find_forecast, latest_stored, parse_date

CHART_DAYS = 183  # about six months of scored forecasts in the forecast-vs-actual chart


def page_forecast(ticker: str, raw: str) -> tuple[ForecastView | None, str | None, int]:
    """(forecast, message, status) for the date picker value `raw` ('' = latest)."""
    session = db_session()
    config, cache = state().config, state().models
    try:
        if raw:
            day = parse_date(raw, "as_of")
        else:
            stored = latest_stored(session, [ticker]).get(ticker)
            if stored is not None:
                return stored, None, 200
            day = datetime.now(UTC).date()
        view = find_forecast(session, config=config, cache=cache, ticker=ticker, day=day)
    except ApiError as exc:
        return None, exc.message, exc.status
    return view, None, 200


def _picked(raw: str) -> date | None:
    """The date picker's value as a date, or None when it is empty or not a date."""
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


TICKER_CANDLE_DAYS = 370  # about a year of candles behind the chart's "all" button
VISIBLE_SESSIONS = 63  # the chart opens on about three months plus the forecast
PAST_PER_PAGE = 20
MAX_PAGE = 1_000_000  # of scored forecasts: ?page= beyond is a 400
ACCURACY_WINDOWS = ("60", "250", "all")  # sessions of as-of dates scored; "all" = no limit
DEFAULT_WINDOW = "250"
ROLLING_SESSIONS = 20
LEVEL_NAMES = (50, 80, 90)


def versus_naive(row: Any) -> dict[str, Any]:
    """MAE ratio to naive and its verdict: 'better'/'worse' only beyond two paired standard errors.

    The SE is that of the mean paired difference (model - naive absolute error), treating the
    forecasts as independent (overlapping horizons make it optimistic, so the rule is lenient).
    """
    n, model, naive = row["n"], row["model_mae"], row["naive_mae"]
    ratio = model / naive if naive else None
    mean_diff, mean_sq = row["mean_diff"] or 0.0, row["mean_diff2"] or 0.0
    se = math.sqrt(max(mean_sq - mean_diff**2, 0.0) * n / (n - 1) / n) if n > 1 else None
    noise = 2 * se / naive if se is not None and naive else None
    if ratio is None or se is None or abs(mean_diff) <= 2 * se:
        verdict = "within noise"
    else:
        verdict = "better" if mean_diff < 0 else "worse"
    return {"ratio": ratio, "noise": noise, "verdict": verdict}


def coverage(row: Any) -> list[dict[str, Any]]:
    """Each level's hit rate against its nominal rate; `off` when beyond two binomial SEs."""
    out = []
    for level in LEVEL_NAMES:
        rate = row[f"coverage_{level}"]
        nominal = level / 100
        band = 2 * math.sqrt(nominal * (1 - nominal) / row["n"]) if row["n"] else 0.0
        off = rate is not None and abs(rate - nominal) > band
        out.append({"level": level, "rate": rate, "off": off})
    return out


def accuracy_panel(session: Any, symbol: str, start: date | None, end: date) -> dict[str, Any]:
    """Model vs naive and vs each stored baseline per horizon, coverage, rolling MAE chart."""
    model_rows = [
        {**row, **versus_naive(row), "levels": coverage(row)}
        for row in q.paired_accuracy(session, ticker=symbol, start=start, end=end)
    ]
    baselines: dict[str, dict[int, dict[str, Any]]] = {}
    for row in q.baseline_paired_accuracy(session, ticker=symbol, start=start, end=end):
        baselines.setdefault(row["model"], {})[row["horizon"]] = {**row, **versus_naive(row)}
    daily = q.daily_mae(session, ticker=symbol, start=start, end=end)
    rolling = None
    if len(daily) >= 5:
        frame = pd.DataFrame([dict(r) for r in daily]).set_index("as_of_date").astype(float)
        rolling = charts.to_div(charts.rolling_mae_chart(frame, ROLLING_SESSIONS), 240)
    return {"summary": model_rows, "baselines": baselines, "rolling_div": rolling}


def ticker_context(symbol: str, raw: str, window: str, page_no: int) -> tuple[dict[str, Any], int]:
    """(template context, HTTP status) of `symbol`'s page as of the date picker value `raw`
    ('' = latest), scoring over `window` (one of ACCURACY_WINDOWS) and showing page `page_no` of
    the scored forecasts."""
    config = state().config
    view, message, status = page_forecast(symbol, raw)
    session = db_session()
    last_session = q.session_on_or_before(session, ticker=symbol, day=date.max)
    first_stored, last_stored, before, after = q.stored_as_of_around(
        session, ticker=symbol, day=view.as_of if view else _picked(raw) or date.max
    )
    # A date without a forecast shows nothing from another date: only links to the nearest ones.
    ref = view.as_of if view else (None if raw else last_session)
    nearest = [d for d in (before, after) if d is not None] if view is None and raw else []
    chart = attention = history_div = more_url = None
    panel: dict[str, Any] = {"summary": [], "baselines": {}, "rolling_div": None}
    past: Sequence[Any] = []
    total = 0
    if ref is not None:
        end = view.candles[-1].date if view else ref
        # The figure carries the shown sessions (and the one before them); the page fetches the
        # rest of the year from /api/candles when a range button or a zoom-out asks for it.
        axis_from = ref - timedelta(days=TICKER_CANDLE_DAYS)
        visible = q.nth_session_before(session, ticker=symbol, day=ref, n=VISIBLE_SESSIONS)
        first = q.nth_session_before(session, ticker=symbol, day=ref, n=VISIBLE_SESSIONS + 1)
        candles = load_candles(session, ticker=symbol, start=first or axis_from, end=end)
        if first is not None and first > axis_from:
            more_url = url_for(
                "api.candles",
                ticker=symbol,
                start=axis_from.isoformat(),
                end=(first - timedelta(days=1)).isoformat(),
            )
        fig = candle_chart.candle_chart(
            candles,
            view,
            exchange=config.tickers.exchange_for(symbol),
            visible_from=visible,
            axis_from=axis_from,
        )
        chart = charts.to_div(fig, 480)
        start = None
        if window != "all":
            start = q.nth_session_before(session, ticker=symbol, day=ref, n=int(window))
        panel = accuracy_panel(session, symbol, start, ref)
        rows = q.forecast_history(
            session,
            ticker=symbol,
            start=ref - timedelta(days=CHART_DAYS),
            end=ref,
            limit=4 * CHART_DAYS,
        )
        if any(r["actual_close"] is not None for r in rows):
            history_div = charts.to_div(charts.history_chart(rows), 320)
        past, total = q.scored_forecasts_page(
            session,
            ticker=symbol,
            start=start,
            end=ref,
            limit=PAST_PER_PAGE,
            offset=(page_no - 1) * PAST_PER_PAGE,
        )
    entropy = None
    if view is not None and view.attention:
        attention = charts.to_div(charts.attention_chart(view), 240)
        entropy = charts.attention_entropy(view.attention)
    model_id = view.model_version if view else None
    models = q.model_versions_info(session, ids=[model_id] if model_id else [])
    context = {
        "ticker": symbol,
        "view": view,
        "message": message,
        "as_of_value": raw or (view.as_of.isoformat() if view else ""),
        "as_of_arg": raw or None,
        "nearest_as_of": nearest,
        "picker_min": first_stored,
        "picker_max": last_stored,
        "ref": ref,
        "model": models.get(model_id) if model_id else None,
        "chart": chart,
        "more_candles_url": more_url,
        "history_div": history_div,
        "attention": attention,
        "attention_entropy": entropy,
        "attention_sentence": (
            charts.attention_sentence(view.attention, view.attention_dates) if view else None
        ),
        "window": window,
        "windows": ACCURACY_WINDOWS,
        "rolling_sessions": ROLLING_SESSIONS,
        "past": past,
        "past_page": page_no,
        "past_pages": max(1, math.ceil(total / PAST_PER_PAGE)),
        "past_total": total,
        **panel,
    }
    return context, status


__all__ = ["ACCURACY_WINDOWS", "DEFAULT_WINDOW", "MAX_PAGE", "ticker_context"]

"""What the ticker page shows: the forecast, the candle chart with its fan, the accuracy panel
(model vs naive and the stored baselines, coverage, rolling error), the paged scored forecasts and
the attention chart. web.pages renders `ticker_context(...)` with templates/ticker.html.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import url_for

from db import web_queries as q
from db.repository import load_candles
from forecasting import skill
from forecasting.model_names import PRODUCT
from web import candle_chart, charts, skill_view
from web.context import db_session, state
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


def accuracy_panel(session: Any, symbol: str, start: date | None, end: date) -> dict[str, Any]:
    """Skill against GARCH/EWMA (interval score, pinball), the 20-session range (high/low) and
    naive (close), each with its 95% interval; coverage against nominal; the rolling interval
    score of the model and of GARCH."""
    frame = skill_view.scored_frame(session, [symbol], start, end)
    rolling = skill.rolling_interval_score(frame, (PRODUCT, "garch"), ROLLING_SESSIONS)
    rolling_div = None
    if len(rolling) >= 5:
        rolling_div = charts.to_div(charts.rolling_score_chart(rolling, ROLLING_SESSIONS), 240)
    return {
        "skill": skill.skill(frame),
        "coverage": skill.coverage(frame),
        "scored": skill_view.scored_count(frame),
        "rolling_div": rolling_div,
    }


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
    panel: dict[str, Any] = {"skill": [], "coverage": [], "scored": 0, "rolling_div": None}
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

"""HTML pages: the overview, one ticker's charts and accuracy, the job runs; plus plotly.js."""

from __future__ import annotations

import gzip
import threading
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from importlib.metadata import version
from typing import Any

from flask import Blueprint, Response, render_template, request

from db import web_queries as q
from db.repository import load_candles
from web import charts, db_session, state
from web.errors import ApiError
from web.forecasts import ForecastView, check_ticker, find_forecast, latest_stored, parse_date

bp = Blueprint("pages", __name__)

CHART_DAYS = 183  # about six months of actual candles
HISTORY_TABLE_ROWS = 40
RUNS_SHOWN = 50
ONE_YEAR = 365 * 24 * 3600
_plotly_lock = threading.Lock()
_plotly_js: dict[str, bytes] = {}


@lru_cache(maxsize=1)
def plotly_version() -> str:
    """The installed plotly version (cache-busts the plotly.js URL on upgrades)."""
    return version("plotly")


@bp.app_template_filter("num")
def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


@bp.app_template_filter("when")
def _when(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    return {"plotly_version": plotly_version(), "tickers": state().config.tickers.symbols}


def _plotly_bytes(encoding: str) -> bytes:
    """plotly.js from the installed package (read once per process), raw or gzip-compressed."""
    with _plotly_lock:
        if not _plotly_js:
            from plotly.offline import get_plotlyjs

            raw = get_plotlyjs().encode("utf-8")
            _plotly_js.update(identity=raw, gzip=gzip.compress(raw, compresslevel=6))
        return _plotly_js[encoding]


@bp.get("/static/plotly.min.js")
def plotly_js() -> Response:
    """Serve plotly.js ourselves: works offline, cached by browsers for a year."""
    encoding = "gzip" if "gzip" in request.headers.get("Accept-Encoding", "") else "identity"
    response = Response(_plotly_bytes(encoding), mimetype="application/javascript")
    if encoding == "gzip":
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["Cache-Control"] = f"public, max-age={ONE_YEAR}, immutable"
    response.set_etag(f"plotly-{plotly_version()}-{encoding}")
    return response.make_conditional(request)


@bp.get("/")
def index() -> str:
    """Every configured ticker with its latest stored forecast, model and last run outcome."""
    session = db_session()
    symbols = state().config.tickers.symbols
    latest = latest_stored(session, symbols)
    ids = [v.model_version for v in latest.values() if v.model_version is not None]
    return render_template(
        "index.html",
        symbols=symbols,
        latest=latest,
        models=q.model_versions_info(session, ids=ids),
        outcomes=q.latest_ticker_outcomes(session, tickers=symbols),
        run=q.latest_run(session),
    )


def _page_forecast(ticker: str, raw: str) -> tuple[ForecastView | None, str | None, int]:
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


@bp.get("/tickers/<ticker>")
def ticker_page(ticker: str) -> tuple[str, int]:
    """Candlestick chart with the forecast overlaid, accuracy vs naive, attention, date picker."""
    symbol = check_ticker(state().config, ticker)
    raw = request.args.get("as_of", "").strip()
    view, message, status = _page_forecast(symbol, raw)
    session = db_session()
    ref = view.as_of if view else q.session_on_or_before(session, ticker=symbol, day=date.max)
    chart = attention = history_div = None
    rows: list[Any] = []
    if ref is not None:
        end = view.candles[-1].date if view else ref
        candles = load_candles(
            session, ticker=symbol, start=ref - timedelta(days=CHART_DAYS), end=end
        )
        chart = charts.to_div(charts.candle_chart(candles, view), 440)
        rows = list(
            q.forecast_history(
                session,
                ticker=symbol,
                start=ref - timedelta(days=CHART_DAYS),
                end=ref,
                limit=4 * CHART_DAYS,
            )
        )
        if any(r["actual_close"] is not None for r in rows):
            history_div = charts.to_div(charts.history_chart(rows), 320)
    if view is not None and view.attention:
        attention = charts.to_div(charts.attention_chart(view), 220)
    model_id = view.model_version if view else None
    models = q.model_versions_info(session, ids=[model_id] if model_id else [])
    page = render_template(
        "ticker.html",
        ticker=symbol,
        view=view,
        message=message,
        as_of_value=raw or (view.as_of.isoformat() if view else ""),
        model=models.get(model_id) if model_id else None,
        chart=chart,
        history_div=history_div,
        attention=attention,
        past=[r for r in rows if r["actual_close"] is not None][:HISTORY_TABLE_ROWS],
        summary=q.accuracy_by_horizon(session, ticker=symbol, start=None, end=None),
    )
    return page, status


@bp.get("/runs")
def runs() -> str:
    """Job runs, newest first, with per-ticker status, duration and errors."""
    return render_template("runs.html", runs=q.recent_runs(db_session(), limit=RUNS_SHOWN))

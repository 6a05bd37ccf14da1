"""HTML pages: the overview, one ticker's charts and accuracy, the job runs; plus plotly.js."""

from __future__ import annotations

import csv
import gzip
import io
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from importlib.metadata import version
from typing import Any

from flask import Blueprint, Response, render_template, request
from markupsafe import Markup

from db import web_queries as q
from db.models import QUANTILE_COLUMNS, RUN_STATUSES
from jobs.health import data_age
from web import ticker_view as tv
from web.cache import cached_page
from web.context import db_session, state
from web.errors import ApiError
from web.forecasts import ForecastView, check_ticker, latest_stored
from web.params import parse_int
from web.skill_view import index_skill
from web.sparkline import FanStep, sparkline_svg

bp = Blueprint("pages", __name__)

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


def _query_key(*names: str) -> tuple[str | None, ...]:
    """The query arguments `names` a page reads (their first values, as the page reads them) as
    its cache key (web.cache.cached_page; the database part of the key is the change marker).
    Other arguments are not part of it: `?utm_source=...` is the same page."""
    return tuple(request.args.get(name) for name in names)


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


SPARK_SESSIONS = 65  # about three months of closes in each index sparkline
FILTER_ABOVE = 8  # the index shows its filter box above this many tickers (or with ?filter=1)


@dataclass(frozen=True)
class _IndexRow:
    """One ticker's line on the index: price context, next-session forecast, model, last run."""

    symbol: str
    closes: list[tuple[date, float]]
    change: float | None
    change_pct: float | None
    spark: Markup
    view: ForecastView | None
    model: Any
    outcome: Any

    @property
    def last_close(self) -> float | None:
        return self.closes[-1][1] if self.closes else None

    @property
    def direction(self) -> str:
        """'up', 'down' or 'flat' by the day change (rounded to cents)."""
        cents = self.change or 0.0
        return "up" if cents > 0 else "down" if cents < 0 else "flat"


def _fan(view: ForecastView) -> list[FanStep]:
    steps = []
    for c in view.candles:
        lo50, hi50 = c.bounds(50)
        steps.append(FanStep(c.close, c.close_lo, c.close_hi, lo50, hi50))
    return steps


def _index_row(
    symbol: str,
    closes: list[tuple[date, float]],
    view: ForecastView | None,
    model: Any,
    outcome: Any,
) -> _IndexRow:
    change = change_pct = None
    if len(closes) >= 2:
        prev, last = closes[-2][1], closes[-1][1]
        change = round(last - prev, 2) + 0.0  # + 0.0: never "-0.00"
        change_pct = round(100 * (last - prev) / prev, 2) + 0.0 if prev else None
    dates = [d for d, _ in closes]
    anchor = dates.index(view.as_of) if view is not None and view.as_of in dates else None
    spark = sparkline_svg(
        [c for _, c in closes],
        _fan(view) if view is not None and anchor is not None else (),
        anchor=anchor,
        label=f"{symbol}: last {len(closes)} closes and the forecast fan",
    )
    return _IndexRow(symbol, closes, change, change_pct, spark, view, model, outcome)


@bp.get("/")
@cached_page(lambda: (_query_key("filter"), datetime.now(UTC).date()))  # data age: by the day
def index() -> str:
    """One row per configured ticker: last close and day change, a sparkline of ~3 months of
    closes with the forecast fan, the next-session forecast, its skill against GARCH(1,1) over
    the last 250 sessions, model age and last run status.
    A constant number of queries, whatever the number of tickers.
    """
    session = db_session()
    symbols = state().config.tickers.symbols
    latest = latest_stored(session, symbols)
    closes = q.recent_closes(session, tickers=symbols, sessions=SPARK_SESSIONS)
    models = q.latest_forecast_models(session, tickers=symbols)
    outcomes = q.latest_ticker_outcomes(session, tickers=symbols)
    rows = [
        _index_row(s, closes.get(s, []), latest.get(s), models.get(s), outcomes.get(s))
        for s in symbols
    ]
    return render_template(
        "index.html",
        rows=rows,
        show_filter=len(symbols) > FILTER_ABOVE or request.args.get("filter") == "1",
        run=q.latest_run(session),
        skill=index_skill(session, symbols),
        data=data_age(session, state().config, datetime.now(UTC)),
    )


@bp.get("/tickers/<ticker>")
@cached_page(lambda ticker: (ticker.upper(), _query_key("as_of", "window", "page")))
def ticker_page(ticker: str) -> tuple[str, int]:
    """Candles with the forecast fan beside them, accuracy vs naive and baselines as of the
    page's date over a window of sessions, a paged list of scored forecasts, attention
    (web.ticker_view builds it all).
    """
    symbol = check_ticker(state().config, ticker)
    window = request.args.get("window", tv.DEFAULT_WINDOW)
    window = window if window in tv.ACCURACY_WINDOWS else tv.DEFAULT_WINDOW
    context, status = tv.ticker_context(
        symbol,
        request.args.get("as_of", "").strip(),
        window,
        parse_int(request.args.get("page"), "page", default=1, hi=tv.MAX_PAGE),
    )
    return render_template("ticker.html", **context), status


CSV_COLUMNS = (
    "as_of_date", "horizon", "target_date", "open", "high", "low", "close", "close_lo", "close_hi",
    *QUANTILE_COLUMNS,
    "actual_open", "actual_high", "actual_low", "actual_close", "abs_error", "naive_close",
    "naive_abs_error", "in_interval_50", "in_interval", "in_interval_90",
    "winkler_50", "winkler_80", "winkler_90", "high_abs_error", "low_abs_error",
    "model_version_id", "run_id",
)  # fmt: skip
CSV_MAX_ROWS = 400_000  # about 270 years of four forecasts a session: every stored one


@bp.get("/tickers/<ticker>/forecasts.csv")
def forecasts_csv(ticker: str) -> Response:
    """Every stored forecast of `ticker` with what happened (forecast_accuracy), newest first."""
    symbol = check_ticker(state().config, ticker)
    rows = q.forecast_history(db_session(), ticker=symbol, start=None, end=None, limit=CSV_MAX_ROWS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    response = Response(out.getvalue(), mimetype="text/csv")
    # the file name is the validated, configured ticker, never the raw path segment
    response.headers["Content-Disposition"] = f'attachment; filename="{symbol}-forecasts.csv"'
    return response


SKILL_CSV_COLUMNS = ("table", "metric", "against", "level", "horizon", "value", "lo", "hi", "n")


@bp.get("/tickers/<ticker>/accuracy.csv")
def accuracy_csv(ticker: str) -> Response:
    """The ticker page's skill and coverage tables as CSV (same window and as-of arguments)."""
    symbol = check_ticker(state().config, ticker)
    window = request.args.get("window", tv.DEFAULT_WINDOW)
    window = window if window in tv.ACCURACY_WINDOWS else tv.DEFAULT_WINDOW
    context, _ = tv.ticker_context(symbol, request.args.get("as_of", "").strip(), window, 1)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SKILL_CSV_COLUMNS)
    for entry in context["skill"]:
        for h, c in entry["by_horizon"].items():
            writer.writerow(
                ["skill", entry["metric"], entry["baseline"], "", h, c["ratio"], c["lo"], c["hi"]]
                + [c["n"]]
            )
    for level in context["coverage"]:
        for h, c in level["by_horizon"].items():
            writer.writerow(
                ["coverage", "", "", level["level"], h, c["rate"], c["lo"], c["hi"], c["n"]]
            )
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{symbol}-accuracy.csv"'
    return response


RUNS_PER_PAGE = 20
MAX_RUNS_PAGE = 1_000_000  # later pages are empty without asking the database
MAX_RUN_ID = 2**31 - 1  # forecast_runs.id is a 32-bit integer


def _runs_args() -> tuple[str | None, int]:
    """(status or None for all, page >= 1) from the query string; ApiError 400 when invalid."""
    status = request.args.get("status", "").strip().lower() or None
    if status is not None and status not in RUN_STATUSES:
        allowed = ", ".join(RUN_STATUSES)
        raise ApiError(400, "invalid_parameter", f"status must be one of {allowed} (or omitted)")
    return status, parse_int(request.args.get("page"), "page", default=1)


@bp.get("/runs")
@cached_page(lambda: _query_key("status", "page"))
def runs() -> str:
    """Job runs, newest first, RUNS_PER_PAGE a page, one table row each, filterable by status."""
    status, page = _runs_args()
    found: list[Any] = []
    total: int | None = None
    if page <= MAX_RUNS_PAGE:
        found, total = q.runs_page(
            db_session(),
            status=status,
            limit=RUNS_PER_PAGE,
            offset=(page - 1) * RUNS_PER_PAGE,
        )
    pages = max(1, -(-(total or 0) // RUNS_PER_PAGE))
    return render_template(
        "runs.html",
        runs=found,
        status=status,
        statuses=RUN_STATUSES,
        page=page,
        pages=pages,
        total=total,
        newer=min(page - 1, pages) if page > 1 else None,
        older=page + 1 if total is not None and page < pages else None,
    )


@bp.get("/runs/<int:run_id>")
@cached_page(lambda run_id: run_id)
def run_detail(run_id: int) -> str:
    """One run: its times, host and message, and every ticker's outcome with its full error."""
    session = db_session()
    run = q.run_with_tickers(session, run_id=run_id) if run_id <= MAX_RUN_ID else None
    if run is None:
        raise ApiError(404, "not_found", f"There is no job run #{run_id}.")
    stored: dict[str, dict[str, Any]] = {}
    for row in q.run_forecasts(session, run_id=run_id):  # newest as-of first per ticker
        entry = stored.setdefault(
            row["ticker"], {"as_of": row["as_of_date"], "closes": [], "mix": row["model_mix"]}
        )
        if row["as_of_date"] == entry["as_of"]:  # (a stored backtest holds many as-of dates)
            entry["closes"].append(row["close"])
    versions = [t.model_version_id for t in run.tickers if t.model_version_id]
    return render_template(
        "run_detail.html",
        run=run,
        stored=stored,
        models=q.model_version_metrics(session, ids=versions),
        mix_text=_mix_text,
    )


def _mix_text(mix: Any) -> str:
    """The model mix of a forecast in a few words: the network's share of the quantiles per
    horizon and where the high/low came from, e.g. 'quantiles: network 0/0/25/0%, range: HAR'."""
    if not isinstance(mix, dict):
        return "—"
    quantiles, ranges = mix.get("quantiles"), mix.get("range")  # per horizon (older: one value)
    quantiles = [quantiles] if isinstance(quantiles, dict) else quantiles or []
    ranges = [ranges] if isinstance(ranges, str) else list(ranges or [])
    range_shares = [r.get("lstm", 0.0) for r in ranges if isinstance(r, dict)]  # global model
    ranges = {str(r) for r in ranges if not isinstance(r, dict)}
    shares = [q.get("lstm", 0.0) for q in quantiles if isinstance(q, dict)]
    parts = []
    if shares:
        parts.append("network " + "/".join(f"{round(100 * float(v))}" for v in shares) + "%")
    if range_shares:
        parts.append(
            "high/low network " + "/".join(f"{round(100 * float(v))}" for v in range_shares) + "%"
        )
    if ranges:
        parts.append(
            "high/low " + ", ".join(sorted(r.replace("har_range", "HAR-range") for r in ranges))
        )
    return "; ".join(parts) or "—"

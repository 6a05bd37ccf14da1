"""JSON API: POST /predict, forecasts and their history per ticker, runs, and /healthz."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Hashable
from datetime import UTC, date, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import DBAPIError

from db import web_queries as q
from db.models import HORIZONS, ForecastRun
from db.repository import load_candles
from db.session import DatabaseFileMissing
from forecasting.forecast_set import ACTUAL_COLUMNS, KEY_COLUMNS
from forecasting.forecast_set import PRICE_KEYS as PRICE_KEYS_OF_A_CANDLE
from forecasting.quantiles import DEFAULT_LEVEL
from web.cache import cacheable, cached_page, response_cache
from web.context import db_session, state
from web.errors import ApiError
from web.fast_predict import RAW_KEY_MAX_BYTES, raw_key
from web.forecasts import check_ticker, find_forecast, parse_date, parse_level, price
from web.params import parse_int
from web.skill_view import skill_json

bp = Blueprint("api", __name__)
log = logging.getLogger(__name__)

DEFAULT_HISTORY_ROWS = 100
MAX_HISTORY_ROWS = 500
DEFAULT_RUNS = 50
MAX_RUNS = 500
# The forecast_accuracy columns a history row had before migration 0003 (the level-80 body).
HISTORY_KEYS = (
    "forecast_id",
    "run_id",
    "model_version_id",
    *KEY_COLUMNS,
    *PRICE_KEYS_OF_A_CANDLE,
    *ACTUAL_COLUMNS,
    "abs_error",
    "naive_close",
    "naive_abs_error",
    "in_interval",
)
LEVEL_BOUNDS = {50: ("close_q25", "close_q75"), 90: ("close_q05", "close_q95")}
# History columns that are prices or price errors: six significant digits in the body.
PRICE_KEYS = HISTORY_KEYS[HISTORY_KEYS.index("open") : HISTORY_KEYS.index("in_interval")]


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json_body() -> dict[str, Any]:
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # absurdly nested JSON
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "request body must be a JSON object")
    return body


def _optional_date(name: str) -> date | None:
    raw = request.args.get(name)
    return None if raw in (None, "") else parse_date(raw, name)


def _query_level() -> int:
    """`?level=` (50, 80 or 90; default 80). No query string: nothing to parse (the common
    POST /predict)."""
    return parse_level(request.args.get("level") if request.query_string else None)


@bp.post("/predict")
def predict() -> Response:
    """The seed's endpoint: {"stock_symbol", "input_date"[, "level"]} -> forecast as of input_date.

    `level` may also be given as `?level=`; when both are given they must agree.
    A stored answer is also kept under the request's exact body bytes (and query string), so a
    body seen before is answered without parsing or validating it again (a pure function of the
    bytes and the database; only 200 answers are kept): here once the marker is due for a check,
    else by web.fast_predict before Flask.
    """
    raw = request.get_data()  # kept on the request: _json_body parses these bytes
    key = raw_key(raw, request.query_string) if len(raw) <= RAW_KEY_MAX_BYTES else None
    if request.query_string and set(request.args) - {"level"}:
        key = None  # unknown query arguments: not kept under these bytes (nor under the args)
    cache = response_cache()
    # Only a body already answered (hence valid) is looked up before validation: bad input stays
    # a 400/404 without touching the database, even while the database is down.
    if key is not None and key in cache:
        entry = cache.get(key, cache.marker(state().engine, db_session))
        if entry is not None:
            return entry.response(conditional=False)
    body = _json_body()
    for name in ("stock_symbol", "input_date"):
        if name not in body:
            raise ApiError(400, "missing_field", f"missing field {name!r}")
    ticker = check_ticker(state().config, body["stock_symbol"])
    day = parse_date(body["input_date"], "input_date")
    level, query = parse_level(body.get("level")), _query_level()
    if body.get("level") is None:
        level = query
    elif request.args.get("level") and query != level:
        raise ApiError(400, "invalid_parameter", "level in the body and ?level= disagree")
    return _forecast_json(ticker, day, level, conditional=False, also_key=key)


@bp.get("/api/forecasts/<ticker>")
def forecast(ticker: str) -> Response:
    """The body of /predict plus `skill` (web.skill_view.skill_json: the forecast's skill against
    the baselines over the 250 sessions up to its as-of date); `as_of` defaults to today (i.e.
    the latest session).

    Has an ETag when stored: If-None-Match with it answers 304 until the database changes.
    """
    symbol = check_ticker(state().config, ticker)
    day = _optional_date("as_of") or datetime.now(UTC).date()
    return _forecast_json(symbol, day, _query_level(), conditional=True, with_skill=True)


def _forecast_json(
    ticker: str,
    day: date,
    level: int = DEFAULT_LEVEL,
    *,
    conditional: bool = False,
    also_key: Hashable | None = None,
    with_skill: bool = False,
) -> Response:
    """The forecast as of the latest session on or before `day` (stored, else live).

    Stored answers are rendered once per (ticker, day, level) and database change marker
    (web.cache), and kept under `also_key` too when given; `conditional` answers If-None-Match
    with 304 (GET only: never for POST).
    404 `no_quantiles` when a level other than 80 is asked of a forecast without quantiles.
    """
    cache = response_cache()
    key = ("forecast", ticker, day, level, with_skill)
    marker = cache.marker(state().engine, db_session)
    entry = cache.get(key, marker)
    if entry is not None:
        if also_key is not None:
            cache.put_entry(also_key, marker, entry)  # the same body and ETag
        return entry.response(conditional=conditional)
    view = find_forecast(
        db_session(),
        config=state().config,
        cache=state().models,
        ticker=ticker,
        day=day,
        with_attention=False,
    )
    if not view.has_level(level):
        raise ApiError(
            404,
            "no_quantiles",
            f"the forecast of {ticker} as of {view.as_of.isoformat()} has no {level}% interval "
            f"(its model made no close quantiles); level 80 is always available",
        )
    body = view.to_json(level)
    if with_skill:
        body["skill"] = skill_json(db_session(), ticker, view.as_of)
    if not cacheable():  # a live answer (web.cache.never_cache, set by find_forecast)
        return jsonify(body)
    rendered = jsonify(body)  # the same bytes as an uncached answer
    entry = cache.put(key, marker, rendered.get_data(), rendered.mimetype)
    if also_key is not None:
        cache.put_entry(also_key, marker, entry)  # the same body and ETag
    return entry.response(conditional=conditional)


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _history_row(row: Any, level: int) -> dict[str, Any]:
    """A forecast_accuracy row; at 50/90 with that level's bounds, coverage and Winkler score."""
    out = {key: row[key] for key in HISTORY_KEYS}
    for key in ("as_of_date", "target_date"):
        out[key] = _iso(out[key])
    for key in PRICE_KEYS:
        out[key] = price(out[key])
    out["in_interval"] = _flag(out["in_interval"])
    if level != DEFAULT_LEVEL:
        lo, hi = LEVEL_BOUNDS[level]
        out["close_lo"], out["close_hi"] = price(row[lo]), price(row[hi])
        out["in_interval"] = _flag(row[f"in_interval_{level}"])
        out["winkler"] = price(row[f"winkler_{level}"])
        out["model_mix"] = row["model_mix"]
    return out


def _summary_row(row: Any, level: int) -> dict[str, Any]:
    model, naive = row["model_mae"], row["naive_mae"]
    out = {
        "horizon": row["horizon"],
        "n": row["n"],
        "model_mae": price(model),
        "naive_mae": price(naive),
        "mae_ratio": model / naive if model is not None and naive else None,
    }
    if level == DEFAULT_LEVEL:
        out["coverage_80"] = row["coverage"]
    else:
        out[f"coverage_{level}"] = row[f"coverage_{level}"]
        out[f"winkler_{level}"] = price(row[f"winkler_{level}"])
    return out


def encode_cursor(row: Any) -> str:
    """The opaque cursor after a history row: URL-safe base64 of its [as_of_date, horizon]."""
    raw = json.dumps([_iso(row["as_of_date"]), row["horizon"]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[date, int]:
    """(as_of_date, horizon) from a cursor made by encode_cursor, or ApiError 400."""
    try:
        padded = raw + "=" * (-len(raw) % 4)
        day, horizon = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon not in HORIZONS:
            raise ValueError("bad horizon")
        return parse_date(day, "cursor"), horizon
    except (ValueError, TypeError, UnicodeError, binascii.Error, ApiError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned") from None


def _history_limit() -> int:
    return parse_int(
        request.args.get("limit"), "limit", default=DEFAULT_HISTORY_ROWS, hi=MAX_HISTORY_ROWS
    )


@bp.get("/api/forecasts/<ticker>/history")
def history(ticker: str) -> Response:
    """Past forecasts with actuals and errors, plus model vs naive MAE per horizon.

    Paged newest as-of first: `limit` rows (default 100, at most 500) after `cursor` (the
    previous page's `next_cursor`; null on the last page). `truncated` is true when more rows
    follow. The summary covers every row between `start` and `end`, on every page.
    `level` 50 or 90 scores that interval instead of the 80% one (and adds Winkler scores).
    """
    symbol = check_ticker(state().config, ticker)
    start, end = _optional_date("start"), _optional_date("end")
    level = _query_level()
    limit = _history_limit()
    raw_cursor = request.args.get("cursor")
    after = decode_cursor(raw_cursor) if raw_cursor else None
    if start and end and start > end:
        raise ApiError(400, "invalid_date", "start must not be after end")
    session = db_session()
    rows = q.forecast_history_page(
        session, ticker=symbol, start=start, end=end, after=after, limit=limit + 1
    )
    summary = q.accuracy_by_horizon(session, ticker=symbol, start=start, end=end)
    body: dict[str, Any] = {"ticker": symbol, "start": _iso(start), "end": _iso(end)}
    if level != DEFAULT_LEVEL:
        body["level"] = level
    more = len(rows) > limit
    body["truncated"] = more
    body["forecasts"] = [_history_row(r, level) for r in rows[:limit]]
    body["summary"] = [_summary_row(r, level) for r in summary]
    body["next_cursor"] = encode_cursor(rows[limit - 1]) if more else None
    return jsonify(body)


def run_json(run: ForecastRun, *, with_tickers: bool = True) -> dict[str, Any]:
    """A run as JSON (times ISO 8601 UTC); its per-ticker outcomes when `with_tickers`."""
    duration = None
    if run.finished_at is not None and run.started_at is not None:
        duration = (run.finished_at - run.started_at).total_seconds()
    out: dict[str, Any] = {
        "id": run.id,
        "status": run.status,
        "trigger": run.trigger,
        "as_of_date": _iso(run.as_of_date),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_s": duration,
        "host": run.host,
        "message": run.message,
    }
    if with_tickers:
        out["tickers"] = [
            {
                "ticker": t.ticker,
                "status": t.status,
                "duration_s": t.duration_s,
                "error": t.error,
                "model_version_id": t.model_version_id,
            }
            for t in run.tickers
        ]
    return out


MAX_CANDLE_DAYS = 3700  # about ten years of candles in one /api/candles answer


@bp.get("/api/candles/<ticker>")
@cached_page(lambda ticker: (ticker.upper(), request.args.get("start"), request.args.get("end")))
def candles(ticker: str) -> Response:
    """Stored daily candles of `ticker` from `start` to `end` (both required, inclusive, at most
    MAX_CANDLE_DAYS apart), oldest first, prices to six significant digits. The ticker page's chart
    fetches the sessions before its first three months from here when a range button asks."""
    symbol = check_ticker(state().config, ticker)
    start, end = _optional_date("start"), _optional_date("end")
    if start is None or end is None:
        raise ApiError(400, "missing_field", "start and end (YYYY-MM-DD) are both required")
    if start > end:
        raise ApiError(400, "invalid_date", "start must not be after end")
    if (end - start).days > MAX_CANDLE_DAYS:
        raise ApiError(400, "invalid_parameter", f"at most {MAX_CANDLE_DAYS} days per request")
    frame = load_candles(db_session(), ticker=symbol, start=start, end=end)
    rows = [
        {
            "date": ts.date().isoformat(),
            **{k: price(float(getattr(row, k))) for k in ("open", "high", "low", "close")},
        }
        for ts, row in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]
    return jsonify(ticker=symbol, start=start.isoformat(), end=end.isoformat(), candles=rows)


@bp.get("/api/runs")
def runs() -> Response:
    """The newest runs (`limit`, default 50, at most 500) with per-ticker outcomes."""
    limit = parse_int(request.args.get("limit"), "limit", default=DEFAULT_RUNS, hi=MAX_RUNS)
    found = q.recent_runs(db_session(), limit=limit)
    return jsonify(runs=[run_json(r) for r in found])


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 when the database answers (with the latest run's status), 503 when it does not."""
    session = db_session()
    try:
        q.ping(session)
        run = q.latest_run(session)
    except DBAPIError:
        session.rollback()
        body = {
            "status": "unavailable",
            "database": "unreachable",
            "error": {"code": "database_unavailable", "message": "the database is unavailable"},
        }
        return jsonify(body), 503
    except DatabaseFileMissing as exc:
        log.warning("healthz: %s", exc)
        body = {
            "status": "unavailable",
            "database": "unreachable",
            "error": {"code": "database_unavailable", "message": str(exc)},
        }
        return jsonify(body), 503
    latest = run_json(run, with_tickers=False) if run is not None else None
    return jsonify(status="ok", database="ok", latest_run=latest), 200

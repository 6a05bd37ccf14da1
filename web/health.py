"""GET /readyz: is the service doing its job (not just alive, which is /healthz in web.api)?

200 `{"status": "ok", ...}`, or 503 `{"status": "degraded", "reasons": [...]}` when the latest
finished run failed or was partial, when the run last due has not succeeded within
`[schedule] stale_after_hours`, or when the stored candles are more than
`[schedule] data_stale_after_sessions` sessions old (jobs.health: the same verdict as `candlecast
status`). An unreachable database is degraded too.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from db.models import ForecastRun
from db.session import DatabaseFileError, DatabaseFileMissing
from jobs.health import check
from web.context import db_session, state

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


def _run(run: ForecastRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.id,
        "status": run.status,
        "trigger": run.trigger,
        "as_of_date": run.as_of_date.isoformat() if run.as_of_date else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "message": run.message,
    }


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The readiness verdict as JSON: 200 when ok, 503 when degraded."""
    config = state().config
    session = db_session()
    try:
        verdict = check(session, config)
    except (SQLAlchemyError, DatabaseFileError, DatabaseFileMissing) as exc:
        session.rollback()
        log.warning("readyz: database unavailable: %s", exc.__class__.__name__)
        body = {"status": "degraded", "reasons": ["the database is unavailable"]}
        return jsonify(body), 503
    body: dict[str, Any] = {"status": verdict.status}
    if not verdict.ok:
        body["reasons"] = verdict.reasons
    body.update(
        latest_run=_run(verdict.latest_run),
        last_success=_run(verdict.last_success),
        due_at=verdict.due_at.isoformat() if verdict.due_at else None,
        stale_after_hours=config.schedule.stale_after_hours,
        data=_data(verdict),
    )
    return jsonify(body), 200 if verdict.ok else 503


def _data(verdict: Any) -> dict[str, Any] | None:
    """The age of the stored candles (the stalest ticker's newest candle)."""
    data = verdict.data
    if data is None:
        return None
    return {
        "as_of": data.as_of.isoformat(),
        "sessions_behind": data.sessions_behind,
        "tickers": list(data.tickers),
        "stale_after_sessions": data.stale_after,
        "stale": data.stale,
    }

"""Skill of the served forecast as the pages and the API show it (forecasting.skill on the stored
rows): the ticker page's panel, the index's one-number column, the API's `skill` object."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import pandas as pd

from db import web_queries as q
from forecasting import skill
from forecasting.model_names import PRODUCT

SKILL_SESSIONS = 250  # the index column and the API's `skill` look at this many sessions back


def scored_frame(
    session: Any,
    tickers: Sequence[str],
    start: date | None,
    end: date | None,
    baselines: Sequence[str] = skill.BASELINES,
) -> pd.DataFrame:
    """The served forecasts and `baselines`' of `tickers` made in [start, end] with a known
    outcome, in the backtest row shape (forecasting.skill)."""
    rows = q.scored_rows(
        session, tickers=tickers, start=start, end=end, product=PRODUCT, baselines=baselines
    )
    return pd.DataFrame([dict(r) for r in rows])


def scored_count(frame: pd.DataFrame) -> int:
    """How many served forecast candles `frame` scores."""
    return int((frame["model"] == PRODUCT).sum()) if not frame.empty else 0


def skill_json(session: Any, ticker: str, as_of: date) -> dict[str, Any]:
    """The API's `skill` object: the panel's ratios and coverage over the SKILL_SESSIONS
    sessions up to `as_of`."""
    start = q.nth_session_before(session, ticker=ticker, day=as_of, n=SKILL_SESSIONS)
    frame = scored_frame(session, [ticker], start, as_of)
    return {
        "sessions": SKILL_SESSIONS,
        "start": start.isoformat() if start else None,
        "end": as_of.isoformat(),
        "forecasts": scored_count(frame),
        "versus": skill.skill(frame),
        "coverage": skill.coverage(frame),
    }


def index_skill(session: Any, tickers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per ticker, the 80% interval score against GARCH(1,1) over the last SKILL_SESSIONS stored
    as-of dates, all horizons pooled: {ratio, lo, hi, verdict, n} (tickers without any left out)."""
    start = q.nth_forecast_date_back(session, n=SKILL_SESSIONS)
    if start is None:
        return {}
    frame = scored_frame(session, tickers, start, None, baselines=("garch",))
    if frame.empty:
        return {}
    out = {}
    for ticker, rows in frame.groupby("ticker"):
        cell = skill.headline(rows, "garch")
        if cell is not None and cell["ratio"] is not None:
            out[str(ticker)] = cell
    return out


__all__ = ["SKILL_SESSIONS", "index_skill", "scored_count", "scored_frame", "skill_json"]

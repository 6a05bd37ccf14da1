"""Issue 10 acceptance: a run over a CSV folder with broken files next to good ones.

A weekend row, an absurd 1e300 row, an empty file and a garbage file sit beside good files. The
good tickers (and the two with one bad row, which validation drops) must succeed, the broken files
fail with a one-line error each, nothing non-finite is stored and every forecast set has 4 rows.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import date

import pandas as pd
import pytest
from sqlalchemy import select

from db.models import Candle, Forecast, ForecastRunTicker
from jobs.pipeline import Pipeline
from tests.jobs.conftest import write_universe

FRIDAY = date(2023, 12, 29)
GOOD = ("AAPL", "MSFT")
WEEKEND, HUGE = "AMZN", "GOOGL"
BROKEN = ("EMPTY", "JUNK")


def faulty_folder(folder) -> None:
    write_universe(folder, (*GOOD, WEEKEND, HUGE))
    weekend = pd.read_csv(folder / f"{WEEKEND}.csv")
    row = weekend.iloc[[-1]].copy()
    row["Date"] = "2023-12-30"  # a Saturday
    pd.concat([weekend, row]).to_csv(folder / f"{WEEKEND}.csv", index=False)
    huge = pd.read_csv(folder / f"{HUGE}.csv")
    huge.loc[huge.index[-1], ["Open", "High", "Low", "Close"]] = 1e300
    huge.to_csv(folder / f"{HUGE}.csv", index=False)
    (folder / "EMPTY.csv").write_bytes(b"")
    (folder / "JUNK.csv").write_bytes(bytes(range(256)) * 8)


@pytest.mark.slow
def test_broken_files_fail_alone_and_nothing_non_finite_is_stored(
    pipeline_config, universe, session_factory
):
    faulty_folder(universe)
    symbols = [*GOOD, WEEKEND, HUGE, *BROKEN]
    result = Pipeline(pipeline_config(tickers={"symbols": symbols})).run_nightly()

    status = {o.ticker: o.status for o in result.outcomes}
    assert status == {
        "AAPL": "succeeded",
        "MSFT": "succeeded",
        WEEKEND: "succeeded",
        HUGE: "succeeded",
        "EMPTY": "failed",
        "JUNK": "failed",
    }
    assert result.status == "partial"
    assert result.as_of == FRIDAY
    with session_factory() as s:
        errors = dict(
            s.execute(
                select(ForecastRunTicker.ticker, ForecastRunTicker.error).where(
                    ForecastRunTicker.run_id == result.run_id,
                    ForecastRunTicker.status == "failed",
                )
            ).all()
        )
        rows = s.scalars(select(Forecast)).all()
        candles = s.scalars(select(Candle)).all()
    assert set(errors) == set(BROKEN)
    assert all(error and "\n" not in error for error in errors.values()), errors
    # Every forecast set is complete, finite and positive; the bad rows never reached the table.
    assert Counter((f.ticker, f.as_of_date) for f in rows) == {
        (t, FRIDAY if t != HUGE else date(2023, 12, 28)): 4 for t in (*GOOD, WEEKEND, HUGE)
    }
    for f in rows:
        values = [f.open, f.high, f.low, f.close, f.close_lo, f.close_hi]
        assert all(math.isfinite(v) and v > 0 for v in values), (f.ticker, values)
    assert max(c.high for c in candles) < 1e6
    assert date(2023, 12, 30) not in {c.session_date for c in candles}

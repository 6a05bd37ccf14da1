"""Wall time of one nightly run (`run-once`) for the configured tickers on the bundled data.

Measures, in one fresh process: TensorFlow start-up, the sync into a new SQLite database, the
night's one global fit and the per-ticker forecast / store split, with the project's default
[model] settings.

    .venv/bin/python benchmarks/nightly.py [--config config.toml]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before any heavy import: the total includes start-up

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="config file (default: config.toml)")
    args = parser.parse_args()

    from db import migrate
    from jobs.config import load_config
    from jobs.pipeline import Pipeline

    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'nightly.db'}"
        config = replace(config, database=replace(config.database, url=url))
        migrate.upgrade(url)
        t_run = time.perf_counter()
        result = Pipeline(config).run_nightly()
        finished = time.perf_counter()
        fit = _global_fit(url)

    print(f"cores: {os.cpu_count()}  tickers: {len(result.outcomes)}  as of: {result.as_of}")
    header = ("ticker", "status", "forecast s", "store s", "total s")
    print("{:8} {:10} {:>11} {:>8} {:>8}".format(*header))
    for o in result.outcomes:
        print(
            f"{o.ticker:8} {o.status:10} {o.forecast_s:11.3f} {o.store_s:8.3f} {o.duration_s:8.2f}"
        )
    if fit is not None:
        kind, reason, seconds = fit
        print(f"global fit (one, before the tickers): {kind} ({reason}), {seconds:.1f} s")
    print(f"run status: {result.status}")
    print(f"start-up + migrate (s): {t_run - STARTED:.1f}")
    print(f"run incl. sync and TensorFlow import (s): {finished - t_run:.1f}")
    print(f"wall time from process start (s): {finished - STARTED:.1f}   target: <= 30")


def _global_fit(url: str) -> tuple[str, str, float] | None:
    """(kind, reason, seconds) of the run's global fit, from its global_models row."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from db.models import GlobalModel

    engine = create_engine(url)
    try:
        with Session(engine) as session:
            row = session.scalars(select(GlobalModel).order_by(GlobalModel.id.desc())).first()
            if row is None:
                return None
            return row.kind, row.reason, float(row.metrics.get("train_seconds", 0.0))
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()

"""A real night at scale: run-once over N tickers with the default [model] settings (the global
network), a first night (full fit) and the next one (warm start), and the projection to 500.

The universe: the dev-universe series (--csv-dir, 35 real ones) and, beyond them, synthetic
tickers built from them (re-labelled, and offset in time: ticker i takes the prices of a window
starting 17*i sessions earlier, dated on the same final sessions), served by the csv provider.
Prints per night the sync, the global fit and the per-ticker fan-out, and the peak memory of the
process (and of its worker processes).

    .venv/bin/python benchmarks/scale.py --csv-dir ../shared/data/dev-universe [--sizes 100,200]
        [--workers 2] [--database-url URL]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SESSIONS = 1300  # five years and a bit
END = "2023-12-29"


def write_universe(source: Path, folder: Path, count: int) -> list[str]:
    """``count`` tickers: the real series of ``source`` first, then time-offset copies."""
    bases = sorted(p for p in source.glob("*.csv*"))
    frames = {p.name.split(".")[0].upper(): pd.read_csv(p) for p in bases}
    names = list(frames)
    symbols = []
    for i in range(count):
        base = frames[names[i % len(names)]]
        base = base.loc[base["Date"] <= END].reset_index(drop=True)
        offset = 17 * (i // len(names))
        values = base.iloc[len(base) - SESSIONS - offset : len(base) - offset].reset_index(
            drop=True
        )
        values["Date"] = base["Date"].iloc[-SESSIONS:].to_numpy()
        symbol = names[i] if i < len(names) else f"S{i + 1:03d}"
        values.to_csv(folder / f"{symbol}.csv", index=False)
        symbols.append(symbol)
    return symbols


class _Timings(logging.Handler):
    """Picks the global fit's seconds out of the pipeline's log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fits: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "candlecast.global_fit":
            self.fits.append(record.getMessage())


def peak_gb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024 / 1024  # ru_maxrss is in KiB on Linux


def night(config, as_of: date) -> tuple[float, object]:
    from jobs.pipeline import Pipeline

    started = time.perf_counter()
    result = Pipeline(config).run_nightly(as_of=as_of)
    seconds = time.perf_counter() - started
    failed = [o.ticker for o in result.outcomes if o.status != "succeeded"]
    if failed:
        raise SystemExit(f"tickers failed: {failed[:5]} ...")
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv-dir", required=True, help="real series to build the universe from")
    parser.add_argument("--sizes", default="100,200")
    parser.add_argument("--workers", type=int, default=2, help="local executor workers")
    parser.add_argument("--database-url", help="PostgreSQL URL to use (its schema is reset!)")
    args = parser.parse_args()

    from db import migrate
    from jobs.config import config_from_dict

    timings = _Timings()
    logging.getLogger("candlecast").addHandler(timings)
    logging.getLogger("candlecast").setLevel(logging.INFO)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            (tmp / "csv").mkdir()
            symbols = write_universe(Path(args.csv_dir), tmp / "csv", n)
            url = args.database_url or f"sqlite:///{tmp / 'scale.db'}"
            if args.database_url:
                migrate.downgrade(url, "base")
            migrate.upgrade(url)
            config = config_from_dict(
                {
                    "database": {"url": url},
                    "data": {"provider": "csv", "csv_dir": "csv"},
                    "tickers": {"symbols": symbols},
                    "executor": {"kind": "local", "workers": args.workers},
                },
                base_dir=tmp,
            )
            for label, day in (("full", date(2023, 12, 28)), ("warm", date(2023, 12, 29))):
                seconds, result = night(config, day)
                rows.append((n, label, seconds, timings.fits[-1] if timings.fits else ""))
                print(
                    f"{n:4d} tickers, {label} night: {seconds:6.1f} s  ({rows[-1][3]})  "
                    f"peak memory so far {peak_gb():.2f} GB",
                    flush=True,
                )
    warm = {n: s for n, label, s, _ in rows if label == "warm"}
    sizes = sorted(warm)
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        per_ticker = (warm[b] - warm[a]) / (b - a)
        fixed = warm[a] - per_ticker * a
        print(
            f"warm nights: {per_ticker:.2f} s per ticker + {fixed:.0f} s fixed; projected 500 "
            f"tickers: {(fixed + 500 * per_ticker) / 60:.1f} min (target <= 20)"
        )
    print(f"peak memory: {peak_gb():.2f} GB (target <= 6)")


if __name__ == "__main__":
    main()

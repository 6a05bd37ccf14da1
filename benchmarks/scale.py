"""Throughput of the nightly fan-out: tickers per minute with 1 and 2 local workers and with a
2-worker Dask LocalCluster, on a synthetic universe, plus the projected time for 500 tickers.

The universe: N tickers built from the bundled series, re-labelled (S001, S002, ...) and offset in
time (ticker i takes the prices of a window starting 17*i sessions earlier, dated on the same final
sessions), served by the csv provider. Small epochs keep it quick; pass --epochs to change.

    .venv/bin/python benchmarks/scale.py [--tickers 12] [--epochs 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BUNDLED = Path(__file__).resolve().parents[1] / "forecasting" / "bundled"
BASES = ("AAPL", "AMZN", "GOOGL", "MSFT", "TSLA")
SESSIONS = 1300  # five years and a bit


def write_universe(folder: Path, count: int) -> list[str]:
    """count synthetic tickers, each a re-labelled, time-offset bundled series."""
    symbols = []
    for i in range(count):
        base = pd.read_csv(BUNDLED / f"{BASES[i % len(BASES)]}.csv.gz")
        offset = 17 * (i // len(BASES))
        values = base.iloc[len(base) - SESSIONS - offset : len(base) - offset].reset_index(
            drop=True
        )
        values["Date"] = base["Date"].iloc[-SESSIONS:].to_numpy()
        symbol = f"S{i + 1:03d}"
        values.to_csv(folder / f"{symbol}.csv", index=False)
        symbols.append(symbol)
    return symbols


def measure(label: str, raw: dict, tmp: Path, database_url: str | None) -> float:
    """Seconds for one run_nightly of the universe with the given executor settings."""
    from db import migrate
    from jobs.config import config_from_dict
    from jobs.pipeline import Pipeline

    url = database_url or f"sqlite:///{tmp / (label.replace(' ', '_') + '.db')}"
    if database_url:
        migrate.downgrade(url, "base")
    migrate.upgrade(url)
    config = config_from_dict({**raw, "database": {"url": url}}, base_dir=tmp)
    started = time.perf_counter()
    result = Pipeline(config).run_nightly()
    seconds = time.perf_counter() - started
    failed = [o.ticker for o in result.outcomes if o.status != "succeeded"]
    if failed:
        raise SystemExit(f"{label}: tickers failed: {failed}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--patience", type=int, help="early-stopping patience (default: epochs)")
    parser.add_argument("--database-url", help="PostgreSQL URL to use (its schema is reset!)")
    parser.add_argument(
        "--full-train-s",
        type=float,
        default=7.2,
        help="median full training time per ticker (benchmarks/train_speed.py)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "csv").mkdir()
        symbols = write_universe(tmp / "csv", args.tickers)
        raw = {
            "data": {"provider": "csv", "csv_dir": "csv"},
            "tickers": {"symbols": symbols},
            "model": {
                "epochs": args.epochs,
                "units": args.units,
                "patience": args.patience or args.epochs,
            },
        }
        setups = {
            "local, 1 worker": {"kind": "local", "workers": 1},
            "local, 2 workers": {"kind": "local", "workers": 2},
            "dask LocalCluster, 2 workers": {"kind": "dask", "workers": 2},
        }
        seconds = {
            label: measure(label, {**raw, "executor": ex}, tmp, args.database_url)
            for label, ex in setups.items()
        }

    n = args.tickers
    print(f"cores: {os.cpu_count()}  tickers: {n}  epochs: {args.epochs}  units: {args.units}")
    print(f"{'setup':32} {'seconds':>8} {'tickers/min':>12} {'s/ticker':>9}")
    for label, s in seconds.items():
        print(f"{label:32} {s:8.1f} {60 * n / s:12.1f} {s / n:9.2f}")
    pool, dask = seconds["local, 2 workers"], seconds["dask LocalCluster, 2 workers"]
    overhead = (dask - pool) / n
    print(
        f"Dask overhead per ticker vs the local pool: {overhead:+.2f} s "
        f"({100 * (dask - pool) / pool:+.1f}%; target < 10%)"
    )
    best = min(pool, dask) / n  # seconds per ticker on one 2-core machine at these settings
    small_train = seconds["local, 1 worker"] / n
    full = best - small_train / 2 + args.full_train_s / 2  # swap the small training for the full
    for machines in (1, 10):
        print(
            f"projected 500 tickers on {machines:2} x 2-core machine(s): "
            f"{500 * best / machines / 60:6.1f} min at these settings, "
            f"{500 * full / machines / 60:6.1f} min with full training "
            f"({args.full_train_s:.1f} s/ticker)"
        )


if __name__ == "__main__":
    main()

"""Training and inference speed on this machine; prints a table.

    .venv/bin/python benchmarks/train_speed.py [--as-of 2023-12-29] [--repeats 7]

Trains each bundled ticker on the 5 years before --as-of, round-trips every model through
its stored form (bytes + dicts) and times forecasting all tickers for one as-of date.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import DEFAULT_TICKERS, load_candles

from forecasting.params import ModelParams


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", default="2023-12-29")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tickers", default=",".join(DEFAULT_TICKERS))
    args = parser.parse_args(argv)
    from forecasting.artifact import trained_from_record, trained_to_record
    from forecasting.predict import forecast, forecast_many
    from forecasting.train import train_model

    params = ModelParams()
    as_of = date.fromisoformat(args.as_of)
    tickers = [t.strip().upper() for t in args.tickers.split(",") if t.strip()]
    print(f"os.cpu_count() = {os.cpu_count()}   params = {params.to_dict()}")
    print(f"{'ticker':<8}{'sessions':>9}{'epochs':>8}{'train_s':>9}{'val_ratio_h1':>14}")
    candles, records, seconds = {}, {}, []
    for ticker in tickers:
        candles[ticker] = load_candles(ticker)
        began = time.perf_counter()
        trained = train_model(candles[ticker], params, ticker=ticker, as_of=as_of)
        elapsed = time.perf_counter() - began
        seconds.append(elapsed)
        records[ticker] = trained_to_record(trained)
        m = trained.metrics
        print(
            f"{ticker:<8}{m['n_train'] + m['n_val']:>9}{m['epochs_run']:>8}{elapsed:>9.2f}"
            f"{m['val_mae_ratio_vs_naive'][0]:>14.4f}"
        )
    print(f"median training seconds: {statistics.median(seconds):.2f}  (max {max(seconds):.2f})")

    began = time.perf_counter()
    loaded = {t: trained_from_record(r) for t, r in records.items()}
    print(f"loading {len(loaded)} models from bytes: {time.perf_counter() - began:.2f}s")
    items = [(loaded[t], candles[t]) for t in tickers]
    first = time.perf_counter()
    forecast_many(items, as_of=as_of)  # first call traces the graphs
    first = time.perf_counter() - first
    many, single = [], []
    for _ in range(args.repeats):
        began = time.perf_counter()
        forecast_many(items, as_of=as_of)
        many.append(time.perf_counter() - began)
        began = time.perf_counter()
        for trained, frame in items:
            forecast(trained, frame, as_of=as_of)
        single.append(time.perf_counter() - began)
    print(f"forecast all {len(items)} tickers, first call after loading: {first:.3f}s")
    print(
        f"forecast all {len(items)} tickers (median of {args.repeats}): "
        f"forecast_many {statistics.median(many):.3f}s, "
        f"forecast() per ticker {statistics.median(single):.3f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

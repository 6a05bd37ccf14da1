"""Walk-forward accuracy against the naive forecast; prints the summarize() table.

    .venv/bin/python benchmarks/accuracy.py [--start 2023-01-01 --end 2023-12-31]
        [--tickers AAPL,MSFT] [--csv-dir DIR] [--with-seed-baseline | --seed-only]
        [--retrain-every 21] [--out rows.csv]

Data: the bundled CSVs by default, or TICKER.csv / TICKER.csv.gz files in --csv-dir
(header Date,Open,High,Low,Close,Volume). Retrains every --retrain-every sessions on the
--history-years before each retrain date; every forecast uses only data up to its as-of date.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from forecasting.backtest import format_summary, summarize, walk_forward  # noqa: E402
from forecasting.params import ModelParams  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "forecasting" / "bundled"
DEFAULT_TICKERS = ["AAPL", "AMZN", "GOOGL", "MSFT", "TSLA"]


def load_candles(ticker: str, csv_dir: Path | None = None) -> pd.DataFrame:
    """Candles frame (session_date index; open, high, low, close, volume) from a CSV file."""
    folder = csv_dir or BUNDLED
    for suffix in (".csv.gz", ".csv"):
        path = folder / f"{ticker}{suffix}"
        if path.exists():
            break
    else:
        raise FileNotFoundError(f"no CSV for {ticker} in {folder}")
    raw = pd.read_csv(path)
    raw.columns = [c.strip().lower() for c in raw.columns]
    frame = raw.set_index(pd.DatetimeIndex(pd.to_datetime(raw["date"]), name="session_date"))
    frame = frame[["open", "high", "low", "close", "volume"]].astype("float64")
    frame = frame[~frame.index.duplicated(keep="last")].sort_index()
    return frame.dropna()


def _tickers(args) -> list[str]:
    if args.tickers:
        return [t.strip().upper() for t in args.tickers.split(",") if t.strip()]
    if args.csv_dir:
        return sorted(p.name.split(".")[0].upper() for p in Path(args.csv_dir).glob("*.csv*"))
    return DEFAULT_TICKERS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2023-01-01")
    parser.add_argument("--end", default="2023-12-31")
    parser.add_argument("--tickers", default="")
    parser.add_argument("--csv-dir", default="")
    parser.add_argument("--retrain-every", type=int, default=ModelParams().retrain_every)
    parser.add_argument("--history-years", type=int, default=5)
    parser.add_argument("--with-seed-baseline", action="store_true")
    parser.add_argument("--seed-only", action="store_true", help="only the seed baseline")
    parser.add_argument("--out", default="", help="write all forecast rows to this CSV")
    args = parser.parse_args(argv)
    params = ModelParams()
    csv_dir = Path(args.csv_dir) if args.csv_dir else None
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    kinds = ["lstm"] + (["seed"] if args.with_seed_baseline else [])
    if args.seed_only:
        kinds = ["seed"]
    print(f"params: {params.to_dict()}  window {start}..{end}  retrain every {args.retrain_every}")
    results: dict[str, list[pd.DataFrame]] = {k: [] for k in kinds}
    for ticker in _tickers(args):
        candles = load_candles(ticker, csv_dir)
        for kind in kinds:
            began = time.perf_counter()
            rows = walk_forward(
                candles,
                ticker=ticker,
                start=start,
                end=end,
                params=params,
                history_years=args.history_years,
                retrain_every=args.retrain_every,
                model_kind=kind,
            )
            results[kind].append(rows)
            print(
                f"{ticker} {kind}: {len(rows)} rows in {time.perf_counter() - began:.0f}s",
                flush=True,
            )
    for kind in kinds:
        rows = pd.concat(results[kind], ignore_index=True)
        print(f"\n== {kind} model: close MAE vs naive (ratio < 1 beats naive) ==")
        print(format_summary(summarize(rows)))
        if args.out:
            out = Path(args.out)
            path = out if kind == "lstm" else out.with_name(f"{out.stem}_{kind}{out.suffix}")
            rows.to_csv(path, index=False)
            print(f"rows written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

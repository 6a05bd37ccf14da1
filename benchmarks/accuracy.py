"""Walk-forward accuracy of the product beside the baselines, pooled over tickers, with skill.

    .venv/bin/python benchmarks/accuracy.py [--start 2023-01-01 --end 2023-12-31]
        [--tickers AAPL,MSFT] [--csv-dir DIR] [--models candlecast,lstm,har_range,naive,...]
        [--retrain-every 63] [--out rows.csv] [--report report.html]

Data: the bundled CSVs by default, or TICKER.csv / TICKER.csv.gz files in --csv-dir
(header Date,Open,High,Low,Close,Volume). Retrains every --retrain-every sessions on the
--history-years before each retrain date; every forecast uses only data up to its as-of date.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from forecasting import scoring as S
from forecasting.backtest import (
    DEFAULT_MODELS,
    MODEL_NAMES,
    PRODUCT,
    walk_forward,
    write_rows_csv,
)
from forecasting.params import ModelParams
from forecasting.report import write_html_report

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
    parser.add_argument("--retrain-every", type=int, default=63)
    parser.add_argument("--history-years", type=int, default=5)
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated, from {', '.join(MODEL_NAMES)}",
    )
    parser.add_argument("--epochs", type=int, default=0, help="override [model] epochs")
    parser.add_argument(
        "--no-attention", action="store_true", help="ablation: uniform attention weights"
    )
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap draws")
    parser.add_argument("--out", default="", help="write all forecast rows to this CSV")
    parser.add_argument("--report", default="", help="write the HTML report here")
    args = parser.parse_args(argv)
    params = ModelParams(attention=not args.no_attention)
    if args.epochs:
        params = replace(params, epochs=args.epochs)
    csv_dir = Path(args.csv_dir) if args.csv_dir else None
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    tickers = _tickers(args)
    print(
        f"params: {params.to_dict()}\n{len(tickers)} tickers, as-of {start}..{end}, "
        f"refit every {args.retrain_every} sessions, models {', '.join(models)}",
        flush=True,
    )
    began = time.perf_counter()
    candles = {t: load_candles(t, csv_dir) for t in tickers}
    rows = walk_forward(
        candles,
        start=start,
        end=end,
        params=params,
        history_years=args.history_years,
        retrain_every=args.retrain_every,
        models=models,
        progress=lambda done, total, msg: print(
            f"  {time.perf_counter() - began:6.0f}s {done}/{total} {msg}", flush=True
        ),
    )
    print(f"{len(rows)} rows in {time.perf_counter() - began:.0f}s")
    scored = S.add_scores(rows)
    print("\n== pooled over tickers, per horizon (scores relative to the as-of close) ==")
    print(S.format_summary_table(S.summary_table(scored)))
    products = [m for m in models if m in (PRODUCT, "lstm", "har_range")]
    baselines = [m for m in models if m not in products]
    skill = S.skill_table(scored, products, baselines, n_boot=args.boot)
    print("\n== skill: ratio of mean scores (model / baseline), moving-block bootstrap 95% ==")
    print(S.format_skill_table(skill))
    per_ticker = S.summary_table(scored, by=("model", "ticker", "horizon"))
    served = per_ticker[per_ticker["model"] == (products[0] if products else models[0])]
    print("\n== per ticker: lowest 80% coverage and highest close ratio of the first model ==")
    print(served.groupby("horizon")[["coverage_80", "close_ratio"]].agg(["min", "max"]))
    if args.out:
        write_rows_csv(rows, args.out)
        print(f"rows written to {args.out}")
    if args.report:
        write_html_report(
            scored, Path(args.report), models=products, baselines=baselines, title="accuracy"
        )
        print(f"report written to {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Walk the global network forward over a universe, beside HAR-range and the baselines.

    .venv/bin/python benchmarks/global_walk_forward.py --csv-dir ../shared/data/dev-universe \
        [--start 2015-01-01 --end 2023-12-31 --retrain-every 63] [--window 20 --units 32]

Every refit date: one global fit on every ticker's last --history-years up to that date (a warm
start from the previous fit, a full refit every --full-refit-every sessions), then the served
forecast, the network alone and HAR-range alone for every as-of date of the block, and GARCH(1,1)
and EWMA fitted per ticker at the same date. Prints Winkler-80 / pinball / high-low ratios with
95% block-bootstrap intervals, coverage, the gate's choices and the timings.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from benchmarks.accuracy import load_candles
from forecasting import global_net
from forecasting import scoring as S
from forecasting.backtest import walk_forward
from forecasting.params import ModelParams

MODELS = ("candlecast", "lstm", "har_range", "garch", "ewma", "range20")


def walk(candles_by, params, start, end, every, years, full_every, log=print):
    """walk_forward's rows for MODELS (the global scope) and one row per fit (gate, metrics)."""
    fits = []
    clock = [time.perf_counter()]

    def on_fit(day, fit):
        now = time.perf_counter()
        fits.append({"date": day, "kind": fit.kind, "seconds": now - clock[0], **fit.gate,
                     **fit.metrics})  # fmt: skip
        clock[0] = now
        log(
            f"{day} {fit.kind:4s} block {fits[-1]['seconds']:5.1f}s "
            f"epochs {fit.metrics['epochs_run']} blend {fit.gate['blend']} "
            f"hl {fit.gate['blend_hl']} cal {fit.metrics['cal_pinball_net_vs_har']}"
        )

    rows = walk_forward(
        candles_by, start=start, end=end, params=params, history_years=years,
        retrain_every=every, models=MODELS, full_refit_every=full_every,
        on_fit=on_fit,
    )  # fmt: skip
    return rows, pd.DataFrame(fits)


def report(rows: pd.DataFrame, fits: pd.DataFrame, n_boot: int) -> str:
    scored = S.add_scores(rows)
    # naive's close error as a model of its own, so its ratio gets the same bootstrap interval
    naive = scored[scored["model"] == "candlecast"].assign(
        model="naive", close_ae=lambda d: d["naive_ae"]
    )
    scored = pd.concat([scored, naive], ignore_index=True)
    out = []
    pairs = [
        (m, b, metric)
        for m in ("candlecast", "lstm", "har_range")
        for b, metric in (
            ("har_range", "winkler_80"), ("garch", "winkler_80"), ("ewma", "winkler_80"),
            ("har_range", "pinball"), ("garch", "pinball"), ("naive", "close_ae"),
            ("range20", "hl_ae"),
        )
        if m != b
    ]  # fmt: skip
    out.append(f"{'model':>10} {'vs':>9} {'metric':>10}  " + "  ".join(
        f"{'h' + str(h):>22}" for h in (1, 2, 3, 4, "all")))  # fmt: skip
    for m, b, metric in pairs:
        t = S.paired_ratio(scored, m, b, metric, n_boot=n_boot)
        cells = [f"{r.ratio:.4f} [{r.ratio_lo:.4f},{r.ratio_hi:.4f}]" for r in t.itertuples()]
        out.append(f"{m:>10} {b:>9} {metric:>10}  " + "  ".join(f"{c:>22}" for c in cells))
    served = scored[scored["model"] == "candlecast"]
    cov = served.groupby("horizon")["covered_80"].mean().round(4).to_dict()
    per_ticker = served.groupby("ticker")["covered_80"].mean()
    out.append(f"coverage 80 by horizon {cov}; pooled {served['covered_80'].mean():.4f}; "
               f"lowest ticker {per_ticker.idxmin()} {per_ticker.min():.4f}")  # fmt: skip
    mae = served["close_ae"].sum() / served["naive_ae"].sum()
    out.append(f"close MAE vs naive {mae:.4f}")
    blend = np.array(fits["blend"].tolist())
    out.append(
        f"gate: blocks with network weight > 0 per horizon {(blend > 0).mean(axis=0).round(3)}"
        f" (any horizon {(blend > 0).any(axis=1).mean():.3f}, {len(blend)} blocks); "
        f"mean weight {blend.mean(axis=0).round(3)}"
    )
    hl = np.array(fits["blend_hl"].tolist())
    out.append(f"gate high/low: share > 0 {(hl > 0).mean(axis=0).round(3)}")
    ent = fits["attention_entropy"].dropna()
    out.append(f"attention entropy mean {ent.mean():.3f} (1.0 = uniform)")
    out.append(
        f"block seconds (fit + forecasts of the block): full mean "
        f"{fits.loc[fits.kind == 'full', 'seconds'].mean():.1f}, warm mean "
        f"{fits.loc[fits.kind == 'warm', 'seconds'].mean():.1f}"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv-dir", required=True)
    p.add_argument("--tickers", default="")
    p.add_argument("--start", default="2015-01-01")
    p.add_argument("--end", default="2023-12-31")
    p.add_argument("--retrain-every", type=int, default=63)
    p.add_argument("--history-years", type=int, default=5)
    p.add_argument("--full-refit-every", type=int, default=0, help="default: [model] value")
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--units", type=int, default=16)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--warm-epochs", type=int, default=0)
    p.add_argument("--max-windows", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-attention", action="store_true")
    p.add_argument("--learning-rate", type=float, default=0.0)
    p.add_argument("--calibration-fraction", type=float, default=0.0)
    p.add_argument("--gate-z", type=float, default=0.0, help="default: global_net.GATE_Z")
    p.add_argument("--seed", type=int, default=None, help="default: [model] seed")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    folder = Path(args.csv_dir)
    tickers = [t.strip().upper() for t in args.tickers.split(",") if t.strip()] or sorted(
        q.name.split(".")[0].upper() for q in folder.glob("*.csv*")
    )
    candles_by = {t: load_candles(t, folder) for t in tickers}
    params = replace(
        ModelParams(), window=args.window, units=args.units, epochs=args.epochs,
        batch_size=args.batch_size, attention=not args.no_attention,
    )  # fmt: skip
    if args.warm_epochs:
        params = replace(params, warm_epochs=args.warm_epochs)
    if args.learning_rate:
        params = replace(params, learning_rate=args.learning_rate)
    if args.calibration_fraction:
        params = replace(params, calibration_fraction=args.calibration_fraction)
    if args.gate_z:
        global_net.GATE_Z = args.gate_z
    if args.max_windows:
        params = replace(params, max_windows=args.max_windows)
    if args.seed is not None:
        params = replace(params, seed=args.seed)
    full_every = args.full_refit_every or params.full_refit_every
    started = time.perf_counter()
    rows, fits = walk(
        candles_by, params, args.start, args.end, args.retrain_every, args.history_years,
        full_every, log=lambda m: print(m, file=sys.stderr, flush=True),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if args.out:
        rows.to_csv(args.out, index=False)
        fits.to_csv(Path(args.out).with_suffix(".fits.csv"), index=False)
    print(f"{len(tickers)} tickers, {args.start}..{args.end}, refit every {args.retrain_every}, "
          f"full refit every {full_every}: {seconds / 60:.1f} min")  # fmt: skip
    print(report(rows, fits, args.n_boot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Proper, scale-free scores of backtest rows and paired skill ratios with a block bootstrap.

Every price error is divided by the as-of close (``naive_close``) so that scores pool over tickers
with different price levels. Lower is better for every score. Skill is a ratio of mean scores of
two models on the same (ticker, as_of_date, horizon) rows, with a moving-block bootstrap over
as-of dates that keeps both the serial and the cross-sectional correlation of the errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from forecasting.quantiles import INTERVAL_LEVELS, QUANTILE_LEVELS, QUANTILE_NAMES, quantile_index

LEVELS: tuple[int, ...] = tuple(sorted(INTERVAL_LEVELS))
KEYS = ["ticker", "as_of_date", "horizon"]
SKILL_METRICS = ("winkler_80", "pinball", "hl_ae", "close_ae")
PAIRED_COLUMNS = [
    "model", "baseline", "metric", "horizon", "n", "n_dates", "model_mean", "baseline_mean",
    "ratio", "ratio_lo", "ratio_hi", "verdict", "model_better_tickers", "n_tickers",
]  # fmt: skip
# Rows written before the quantile columns existed carry only the 80% interval.
_FALLBACK = {0.10: "close_lo", 0.90: "close_hi"}


def _col(rows: pd.DataFrame, name: str) -> np.ndarray:
    """Column as float array; all NaN when the column is absent."""
    if name not in rows:
        return np.full(len(rows), np.nan)
    return pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=float)


def _quantile(rows: pd.DataFrame, q: float) -> np.ndarray:
    values = _col(rows, f"close_{QUANTILE_NAMES[quantile_index(q)]}")
    if q in _FALLBACK:
        values = np.where(np.isnan(values), _col(rows, _FALLBACK[q]), values)
    return values


def winkler_score(
    lower: np.ndarray, upper: np.ndarray, actual: np.ndarray, alpha: float
) -> np.ndarray:
    """Winkler interval score of [lower, upper] at miss rate ``alpha`` (NaN if a bound is NaN)."""
    lower, upper, actual = (np.asarray(a, dtype=float) for a in (lower, upper, actual))
    below = np.where(actual < lower, lower - actual, 0.0)
    above = np.where(actual > upper, actual - upper, 0.0)
    return (upper - lower) + (2.0 / alpha) * (below + above)


def pinball_loss(pred: np.ndarray | float, actual: np.ndarray, q: np.ndarray | float) -> np.ndarray:
    """Pinball (quantile) loss of ``pred`` as the ``q`` quantile of ``actual`` (broadcast)."""
    diff = np.asarray(actual, dtype=float) - np.asarray(pred, dtype=float)
    return np.maximum(q * diff, (q - 1.0) * diff)


def add_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """A copy of backtest ``rows`` with per-row scale-free scores (see module docstring).

    Adds close_ae, naive_ae, winkler_{50,80,90}, covered_{50,80,90}, pinball, below_qXX,
    high_ae, low_ae, hl_ae. Interval scores are NaN for rows without the quantiles.
    """
    out = rows.copy()
    y, scale = _col(rows, "actual_close"), _col(rows, "naive_close")
    out["close_ae"] = np.abs(_col(rows, "close") - y) / scale
    out["naive_ae"] = np.abs(scale - y) / scale
    for level in LEVELS:
        q_lo, q_hi = INTERVAL_LEVELS[level]
        lo, hi = _quantile(rows, q_lo), _quantile(rows, q_hi)
        alpha = 1.0 - level / 100.0
        out[f"winkler_{level}"] = winkler_score(lo, hi, y, alpha) / scale
        missing = np.isnan(lo) | np.isnan(hi) | np.isnan(y)
        out[f"covered_{level}"] = np.where(missing, np.nan, (y >= lo) & (y <= hi))
    quantiles = {q: _quantile(rows, q) for q in QUANTILE_LEVELS}
    losses = np.vstack([pinball_loss(quantiles[q], y, q) for q in QUANTILE_LEVELS])
    out["pinball"] = losses.mean(axis=0) / scale
    for q, name in zip(QUANTILE_LEVELS, QUANTILE_NAMES, strict=True):
        pred = quantiles[q]
        out[f"below_{name}"] = np.where(np.isnan(pred) | np.isnan(y), np.nan, y <= pred)
    out["high_ae"] = np.abs(_col(rows, "high") - _col(rows, "actual_high")) / scale
    out["low_ae"] = np.abs(_col(rows, "low") - _col(rows, "actual_low")) / scale
    out["hl_ae"] = (out["high_ae"] + out["low_ae"]) / 2.0
    return out


def summary_table(scored: pd.DataFrame, by: Sequence[str] = ("model", "horizon")) -> pd.DataFrame:
    """Mean scores per group; close_ratio = sum close_ae / sum naive_ae over the same rows."""
    by = list(by)
    both = scored["close_ae"].notna() & scored["naive_ae"].notna()
    work = scored.assign(_c=scored["close_ae"].where(both), _n=scored["naive_ae"].where(both))
    g = work.groupby(by, sort=True, observed=True)
    out = pd.DataFrame({"n": g.size()})
    out["close_ratio"] = g["_c"].sum() / g["_n"].sum().replace(0.0, np.nan)
    for level in LEVELS:
        out[f"winkler_{level}"] = g[f"winkler_{level}"].mean()
    out["pinball"] = g["pinball"].mean()
    for level in LEVELS:
        out[f"coverage_{level}"] = g[f"covered_{level}"].mean()
    for name in ("high", "low", "hl"):
        out[f"{name}_mae"] = g[f"{name}_ae"].mean()
    return out.reset_index()


def block_starts(
    n_dates: int, block: int, n_boot: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Random block starts, shape (n_boot, ceil(n_dates/block)), and the (capped) block length."""
    block = max(1, min(block, n_dates))
    n_blocks = math.ceil(n_dates / block)
    return rng.integers(0, n_dates - block + 1, size=(n_boot, n_blocks)), block


def block_bootstrap_indices(n_dates: int, block: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """Date positions of each moving-block resample, shape (n_boot, n_dates).

    Blocks of ``block`` consecutive positions are laid end to end; the last one is cut so every
    resample has exactly n_dates dates. paired_ratio uses the same draws through cumulative sums.
    """
    starts, block = block_starts(n_dates, block, n_boot, np.random.default_rng(seed))
    idx = starts[:, :, None] + np.arange(block)[None, None, :]
    return idx.reshape(n_boot, -1)[:, :n_dates]


def _boot_sums(per_date: np.ndarray, starts: np.ndarray, block: int) -> np.ndarray:
    """Sums of ``per_date`` (n_dates, k) over each resample of block starts -> (n_boot, k)."""
    n_dates = per_date.shape[0]
    lengths = np.full(starts.shape[1], block)
    lengths[-1] = n_dates - (starts.shape[1] - 1) * block
    cum = np.vstack([np.zeros((1, per_date.shape[1])), np.cumsum(per_date, axis=0)])
    return (cum[starts + lengths] - cum[starts]).sum(axis=1)


def block_bootstrap_sums(
    per_date: np.ndarray, *, block: int = 10, n_boot: int = 1000, seed: int = 0
) -> np.ndarray:
    """Column sums of ``per_date`` (n_dates, k), ordered by date, over each moving-block
    resample of its dates -> (n_boot, k): the draws paired_ratio uses, for other statistics."""
    per_date = np.asarray(per_date, dtype=float).reshape(len(per_date), -1)
    starts, eff_block = block_starts(len(per_date), block, n_boot, np.random.default_rng(seed))
    return _boot_sums(per_date, starts, eff_block)


def _verdict(lo: float, hi: float) -> str:
    if np.isnan(lo) or np.isnan(hi):
        return "n/a"
    if hi < 1.0:
        return "better"
    if lo > 1.0:
        return "worse"
    return "tie (inside noise)"


def paired_ratio(
    scored: pd.DataFrame,
    model: str,
    baseline: str,
    metric: str,
    *,
    block: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """mean(metric of model) / mean(metric of baseline) on shared rows, per horizon and "all".

    The 95% interval comes from a moving-block bootstrap over as-of dates (all tickers of a drawn
    date move together); per-date sums are aggregated first so 1,000 draws stay cheap.
    """
    m = scored.loc[scored["model"] == model, [*KEYS, metric]]
    b = scored.loc[scored["model"] == baseline, [*KEYS, metric]]
    if m.empty or b.empty:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    m_keys, b_keys = pd.MultiIndex.from_frame(m[KEYS]), pd.MultiIndex.from_frame(b[KEYS])
    if not (m_keys.is_unique and b_keys.is_unique):
        raise ValueError(f"{model} or {baseline} has two rows for one (ticker, as-of, horizon)")
    at = b_keys.get_indexer(m_keys)  # the baseline's row of each model row (-1: none)
    mv = np.where(at >= 0, m[metric].to_numpy(dtype=float), np.nan)
    bv = b[metric].to_numpy(dtype=float)[np.where(at >= 0, at, 0)]
    both = ~np.isnan(mv) & ~np.isnan(bv) & (at >= 0)
    if not both.any():
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    mv, bv, rows = mv[both], bv[both], m.loc[both]
    d_code, dates = pd.factorize(rows["as_of_date"].to_numpy(), sort=True)
    h_code, horizons = pd.factorize(rows["horizon"].to_numpy(), sort=True)
    t_code, tickers = pd.factorize(rows["ticker"].to_numpy(), sort=True)
    n_d, n_h, n_t = len(dates), len(horizons), len(tickers)

    def sums(codes: tuple[np.ndarray, ...], shape: tuple[int, ...], values: np.ndarray):
        out = np.zeros(shape)
        np.add.at(out, codes, values)
        return out

    pm = sums((d_code, h_code), (n_d, n_h), mv)
    pb = sums((d_code, h_code), (n_d, n_h), bv)
    pm, pb = (np.column_stack([a, a.sum(axis=1)]) for a in (pm, pb))  # last: all horizons
    starts, eff_block = block_starts(n_d, block, n_boot, np.random.default_rng(seed))
    with np.errstate(divide="ignore", invalid="ignore"):
        point = pm.sum(axis=0) / pb.sum(axis=0)
        boot = _boot_sums(pm, starts, eff_block) / _boot_sums(pb, starts, eff_block)
    boot[~np.isfinite(boot)] = np.nan
    lo, hi = np.full(boot.shape[1], np.nan), np.full(boot.shape[1], np.nan)
    ok = ~np.isnan(boot).all(axis=0)  # a column is all NaN only if the baseline sums to 0
    if ok.any():
        lo[ok], hi[ok] = np.nanpercentile(boot[:, ok], [2.5, 97.5], axis=0)

    count = sums((t_code, h_code), (n_t, n_h), np.ones(len(mv)))
    tm = sums((t_code, h_code), (n_t, n_h), mv)
    tb = sums((t_code, h_code), (n_t, n_h), bv)
    seen = np.zeros((n_d, n_h), dtype=bool)
    seen[d_code, h_code] = True
    out = []
    for i, h in enumerate([*horizons, "all"]):
        if h == "all":
            sel, n_dates = slice(None), n_d
            has, better = count.sum(axis=1) > 0, tm.sum(axis=1) < tb.sum(axis=1)
        else:
            sel, n_dates = h_code == i, int(seen[:, i].sum())
            has, better = count[:, i] > 0, tm[:, i] < tb[:, i]
        out.append(
            {
                "model": model, "baseline": baseline, "metric": metric,
                "horizon": h if h == "all" else int(h), "n": int(np.size(mv[sel])),
                "n_dates": n_dates, "model_mean": float(mv[sel].mean()),
                "baseline_mean": float(bv[sel].mean()), "ratio": point[i], "ratio_lo": lo[i],
                "ratio_hi": hi[i], "verdict": _verdict(lo[i], hi[i]),
                "model_better_tickers": int((better & has).sum()), "n_tickers": int(has.sum()),
            }
        )  # fmt: skip
    return pd.DataFrame(out, columns=PAIRED_COLUMNS)


def skill_table(
    scored: pd.DataFrame,
    models: Sequence[str],
    baselines: Sequence[str],
    metrics: Sequence[str] = SKILL_METRICS,
    *,
    block: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """paired_ratio for every (model, baseline, metric); pairs with no shared rows are left out."""
    frames = [
        paired_ratio(scored, m, b, metric, block=block, n_boot=n_boot, seed=seed)
        for m in models
        for b in baselines
        if m != b
        for metric in metrics
    ]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def format_skill_table(skill: pd.DataFrame) -> str:
    """Fixed-width text of a skill_table: ratio < 1 means the model's score is lower (better)."""
    head = (
        f"{'model':<12} {'baseline':<10} {'metric':<11} {'h':>3} {'n':>7} "
        f"{'ratio':>7}  {'95% interval':<17} {'tickers':>7}  verdict"
    )
    lines = [head, "-" * len(head)]
    for r in skill.itertuples(index=False):
        tick = f"{r.model_better_tickers}/{r.n_tickers}"
        lines.append(
            f"{r.model:<12} {r.baseline:<10} {r.metric:<11} {r.horizon!s:>3} {r.n:>7} "
            f"{r.ratio:>7.4f}  [{r.ratio_lo:.4f}, {r.ratio_hi:.4f}] {tick:>8}  {r.verdict}"
        )
    lines.append("ratio = model/baseline mean score (< 1 better); tickers = tickers where model is")
    lines.append("better; the interval is a 95% moving-block bootstrap over as-of dates.")
    return "\n".join(lines)


VERSUS_METRICS = (
    ("winkler_80", "interval score"),
    ("pinball", "pinball"),
    ("hl_ae", "high/low"),
    ("close_ae", "close"),
)


def _ratio_cell(row: Any) -> str:
    """'0.962 [0.95,0.97]', 'same' for identical forecasts, '—' when there is no ratio."""
    if row is None or np.isnan(row.ratio):
        return "—"
    if abs(row.ratio_lo - 1.0) < 1e-12 and abs(row.ratio_hi - 1.0) < 1e-12:
        return "same"
    mark = {"better": "+", "worse": "-"}.get(row.verdict, " ")
    return f"{row.ratio:.3f}{mark}[{row.ratio_lo:.2f},{row.ratio_hi:.2f}]"


def format_versus(skill: pd.DataFrame, served: str) -> str:
    """The served model against each other model, one line per (model, horizon), at most 100
    columns: the ratio of each score with its 95% interval. Models whose forecasts equal the
    served ones on every score are named once instead ("same forecasts as ...")."""
    rows = skill[skill["model"] == served]
    head = f"{'against':<10} {'h':>3}  " + "".join(f"{name:<20}" for _, name in VERSUS_METRICS)
    lines = [head.rstrip(), "-" * len(head.rstrip())]
    same: list[str] = []
    for baseline, by_base in rows.groupby("baseline", sort=False):
        cells = {(r.metric, str(r.horizon)): r for r in by_base.itertuples(index=False)}
        texts = {key: _ratio_cell(r) for key, r in cells.items()}
        if texts and all(t in ("same", "—") for t in texts.values()):
            same.append(str(baseline))
            continue
        horizons = sorted({h for _, h in cells if h != "all"}, key=int) + ["all"]
        for h in horizons:
            parts = [texts.get((metric, h), "—") for metric, _ in VERSUS_METRICS]
            lines.append((f"{baseline:<10} {h:>3}  " + "".join(f"{p:<20}" for p in parts)).rstrip())
    lines.append(f"ratio = {served}'s mean score / the other model's on the same rows")
    lines.append(
        f"(< 1: {served} is better); + or - when the whole 95% moving-block bootstrap interval"
    )
    lines.append("is below or above 1; — when the other model has no such forecast.")
    if same:
        lines.append(f"same forecasts as {served} on every score: {', '.join(same)}")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float | np.floating):
        return "nan" if np.isnan(value) else f"{value:.4f}"
    return str(value)


def format_summary_table(summary: pd.DataFrame) -> str:
    """Fixed-width text of a summary_table (floats to 4 decimals)."""
    cells = [[_cell(v) for v in row] for row in summary.itertuples(index=False)]
    names = [str(c) for c in summary.columns]
    widths = [max([len(n), *(len(row[i]) for row in cells)]) for i, n in enumerate(names)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True))

    lines = [line(names), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    lines.extend(line(row) for row in cells)
    return "\n".join(lines)


def rolling_scores(
    scored: pd.DataFrame,
    metric: str = "winkler_80",
    window: int = 63,
    *,
    models: Sequence[str] | None = None,
    min_periods: int | None = None,
    common: bool = True,
) -> pd.DataFrame:
    """Per model and as-of date: mean ``metric`` over tickers and horizons, then a rolling mean.

    With ``common`` only (ticker, as_of_date, horizon) rows that every model with this metric has
    are used, so the lines compare the models on the same days. Columns: model, as_of_date, n,
    daily_mean, rolling_mean.
    """
    s = scored.loc[scored[metric].notna(), ["model", *KEYS, metric]]
    if models is not None:
        s = s[s["model"].isin(list(models))]
    n_models = s["model"].nunique()
    if common and n_models > 1:
        s = s[s.groupby(KEYS)["model"].transform("nunique") == n_models]
    daily = s.groupby(["model", "as_of_date"])[metric].agg(n="size", daily_mean="mean")
    daily = daily.reset_index()
    mp = window if min_periods is None else min_periods
    daily["rolling_mean"] = daily.groupby("model")["daily_mean"].transform(
        lambda x: x.rolling(window, min_periods=mp).mean()
    )
    return daily

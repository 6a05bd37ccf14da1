"""What the served forecast is worth, as pages and the API show it: skill against the baselines
it has to beat, each with its paired uncertainty, and interval coverage against nominal.

The rows are stored forecasts with what happened (the backtest row shape: `model`, `ticker`,
`as_of_date`, `horizon`, prices, quantiles, actuals, `naive_close`), the served model's under
PRODUCT and each baseline's under its own name. Scores and ratios are forecasting.scoring's, the
same as `candlecast backtest` reports: a ratio is mean(model score) / mean(baseline score) on the
same (ticker, as-of, horizon) rows, with a 95% moving-block bootstrap interval over as-of dates.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from forecasting.model_names import PRODUCT
from forecasting.scoring import LEVELS, add_scores, block_bootstrap_sums, paired_ratio

# (metric, baseline) pairs shown, in order: what the product is good at first, the close last.
PANEL = (
    ("winkler_80", "garch"),
    ("winkler_80", "ewma"),
    ("pinball", "garch"),
    ("pinball", "ewma"),
    ("hl_ae", "range20"),
    ("close_ae", "naive"),
)
BASELINES = tuple(dict.fromkeys(b for _, b in PANEL))
BASELINE_NAMES = {
    "garch": "GARCH(1,1)",
    "ewma": "EWMA",
    "range20": "20-session range",
    "naive": "naive (last close)",
}
METRIC_NAMES = {
    "winkler_80": "80% interval score",
    "pinball": "quantile (pinball) loss",
    "hl_ae": "high/low error",
    "close_ae": "close error",
}
BOOTSTRAP_DRAWS = 400
BLOCK = 10  # as-of dates per bootstrap block


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def skill(
    rows: pd.DataFrame, *, pairs: tuple[tuple[str, str], ...] = PANEL, n_boot: int = BOOTSTRAP_DRAWS
) -> list[dict[str, Any]]:
    """One entry per (metric, baseline) pair with shared scored rows: its names and, per horizon
    ("1".."4" and "all"), the ratio, its 95% interval, the verdict and the number of rows."""
    if rows.empty:
        return []
    scored = add_scores(rows)
    out = []
    for metric, baseline in pairs:
        ratios = paired_ratio(scored, PRODUCT, baseline, metric, block=BLOCK, n_boot=n_boot)
        ratios = ratios[ratios["ratio"].notna()]
        if ratios.empty:
            continue
        out.append(
            {
                "metric": metric,
                "metric_name": METRIC_NAMES[metric],
                "baseline": baseline,
                "baseline_name": BASELINE_NAMES[baseline],
                "by_horizon": {
                    str(r.horizon): {
                        "ratio": _finite(r.ratio),
                        "lo": _finite(r.ratio_lo),
                        "hi": _finite(r.ratio_hi),
                        "verdict": {"better": "better", "worse": "worse"}.get(r.verdict, "tie"),
                        "n": int(r.n),
                    }
                    for r in ratios.itertuples(index=False)
                },
            }
        )
    return out


def wilson_interval(hits: Any, n: Any, z: float = 1.96) -> tuple[Any, Any]:
    """The 95% Wilson score interval of hit rates `hits`/`n` (floats or arrays; sound for small
    n and at 0 or 1)."""
    p, zz = np.divide(hits, n), z * z / np.asarray(n, dtype=float)
    centre = (p + zz / 2) / (1 + zz)
    half = z * np.sqrt(p * (1 - p) / n + zz / (4 * np.asarray(n, dtype=float))) / (1 + zz)
    return np.maximum(0.0, centre - half), np.minimum(1.0, centre + half)


def rate_intervals(
    hits: np.ndarray, counts: np.ndarray, *, n_boot: int = BOOTSTRAP_DRAWS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of `hits` and `counts` (n_dates, k; dates in order), the hit rate and its 95%
    interval: the wider of a moving-block bootstrap over the dates (scoring.block_bootstrap_sums,
    the skill ratios' draws: it keeps the correlation of one day's horizons and of neighbouring
    days) and the Wilson interval (honest when there are too few dates for blocks)."""
    k = hits.shape[1]
    boot = block_bootstrap_sums(np.hstack([hits, counts]), block=BLOCK, n_boot=n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = boot[:, :k] / boot[:, k:]
    b_lo, b_hi = np.nanpercentile(rates, [2.5, 97.5], axis=0)
    total, n = hits.sum(axis=0), counts.sum(axis=0)
    w_lo, w_hi = wilson_interval(total, n)
    return total / n, np.minimum(b_lo, w_lo), np.maximum(b_hi, w_hi)


def coverage(rows: pd.DataFrame, *, n_boot: int = BOOTSTRAP_DRAWS) -> list[dict[str, Any]]:
    """The served intervals' hit rates per level and horizon against nominal, each with its 95%
    interval (rate_intervals); `off` when the interval excludes the nominal rate."""
    mine = rows[rows["model"] == PRODUCT] if not rows.empty else rows
    if mine.empty:
        return []
    scored = add_scores(mine)
    hit_cols = [f"covered_{level}" for level in LEVELS]
    known = scored[hit_cols].notna().astype(float).set_axis(hit_cols, axis=1)
    per_date = (
        pd.concat({"hits": scored[hit_cols].fillna(0.0).astype(float), "n": known}, axis=1)
        .set_index([scored["as_of_date"], scored["horizon"].astype(str)])
        .groupby(level=[0, 1])
        .sum()
        .unstack(fill_value=0.0)
        .sort_index()
    )  # one row per as-of date; columns (hits|n, level, horizon)
    horizons = sorted(per_date.columns.get_level_values(2).unique(), key=int)
    columns = [(col, h) for col in hit_cols for h in horizons]
    hits = np.column_stack([per_date[("hits", c, h)] for c, h in columns])
    counts = np.column_stack([per_date[("n", c, h)] for c, h in columns])
    for c in hit_cols:  # all horizons pooled
        columns.append((c, "all"))
        hits = np.column_stack([hits, per_date["hits"][c].sum(axis=1)])
        counts = np.column_stack([counts, per_date["n"][c].sum(axis=1)])
    n = counts.sum(axis=0)
    seen = n > 0
    rate, lo, hi = (np.full(len(columns), np.nan) for _ in range(3))
    if seen.any():
        rate[seen], lo[seen], hi[seen] = rate_intervals(
            hits[:, seen], counts[:, seen], n_boot=n_boot
        )
    cells = {key: i for i, key in enumerate(columns)}
    out = []
    for level, col in zip(LEVELS, hit_cols, strict=True):
        nominal = level / 100
        by_horizon: dict[str, dict[str, Any]] = {}
        for h in [*horizons, "all"]:
            i = cells[(col, h)]
            if seen[i]:
                r, a, b = float(rate[i]), float(lo[i]), float(hi[i])
                off = not a <= nominal <= b
                by_horizon[h] = {"rate": r, "lo": a, "hi": b, "n": int(n[i]), "off": off}
        if by_horizon:
            out.append({"level": level, "nominal": nominal, "by_horizon": by_horizon})
    return out


def headline(rows: pd.DataFrame, baseline: str = "garch") -> dict[str, Any] | None:
    """The one-number summary for a list of tickers: the 80% interval score against
    `baseline`, all horizons pooled (None without shared rows)."""
    entries = skill(rows, pairs=(("winkler_80", baseline),), n_boot=BOOTSTRAP_DRAWS)
    return entries[0]["by_horizon"].get("all") if entries else None


def rolling_interval_score(rows: pd.DataFrame, models: tuple[str, ...], sessions: int):
    """Per model, the rolling `sessions`-as-of-date mean of the 80% interval score (Winkler-80
    over the as-of close), on the as-of dates every one of `models` has: a DataFrame indexed by
    date with one column per model."""
    if rows.empty:
        return pd.DataFrame()
    scored = add_scores(rows[rows["model"].isin(models)])
    daily = scored.pivot_table(
        index="as_of_date", columns="model", values="winkler_80", aggfunc="mean"
    )
    daily = daily.reindex(columns=[m for m in models if m in daily.columns]).dropna()
    if daily.empty:
        return daily
    return daily.rolling(sessions, min_periods=min(5, sessions)).mean().dropna()


__all__ = [
    "BASELINES",
    "BASELINE_NAMES",
    "METRIC_NAMES",
    "PANEL",
    "coverage",
    "headline",
    "rate_intervals",
    "rolling_interval_score",
    "skill",
    "wilson_interval",
]

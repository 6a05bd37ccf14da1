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


def wilson_interval(hits: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a hit rate `hits`/`n` (sound for small n and at 0 or 1)."""
    p, zz = hits / n, z * z / n
    centre = (p + zz / 2) / (1 + zz)
    half = z * math.sqrt(p * (1 - p) / n + zz / (4 * n)) / (1 + zz)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_interval(
    hits: pd.Series, dates: pd.Series, *, n_boot: int = BOOTSTRAP_DRAWS
) -> tuple[float, float, float, int]:
    """(rate, lo, hi, n) of 0/1 `hits` made on `dates`: the 95% interval is the wider of a
    moving-block bootstrap over the dates (scoring.block_bootstrap_sums: the skill ratios' draws;
    it keeps the correlation of one day's horizons and of neighbouring days) and the Wilson
    interval (which stays honest when there are too few dates for blocks)."""
    per_date = hits.astype(float).groupby(dates.to_numpy()).agg(["sum", "count"]).sort_index()
    total, n = float(per_date["sum"].sum()), int(per_date["count"].sum())
    boot = block_bootstrap_sums(per_date.to_numpy(), block=BLOCK, n_boot=n_boot)
    b_lo, b_hi = np.percentile(boot[:, 0] / boot[:, 1], [2.5, 97.5])
    w_lo, w_hi = wilson_interval(total, n)
    return total / n, min(float(b_lo), w_lo), max(float(b_hi), w_hi), n


def coverage(rows: pd.DataFrame, *, n_boot: int = BOOTSTRAP_DRAWS) -> list[dict[str, Any]]:
    """The served intervals' hit rates per level and horizon against nominal, each with its 95%
    interval (rate_interval); `off` when the interval excludes the nominal rate."""
    mine = rows[rows["model"] == PRODUCT] if not rows.empty else rows
    if mine.empty:
        return []
    scored = add_scores(mine)
    out = []
    for level in LEVELS:
        nominal = level / 100
        by_horizon: dict[str, dict[str, Any]] = {}
        groups = [(str(h), g) for h, g in scored.groupby("horizon")] + [("all", scored)]
        for name, group in groups:
            known = group[group[f"covered_{level}"].notna()]
            if known.empty:
                continue
            rate, lo, hi, n = rate_interval(
                known[f"covered_{level}"], known["as_of_date"], n_boot=n_boot
            )
            off = not lo <= nominal <= hi
            by_horizon[name] = {"rate": rate, "lo": lo, "hi": hi, "n": n, "off": off}
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
    "rate_interval",
    "rolling_interval_score",
    "skill",
    "wilson_interval",
]

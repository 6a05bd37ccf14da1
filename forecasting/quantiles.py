"""The close quantile levels every forecaster produces, and the central intervals built from them.

One list for the whole product: the model, the baselines, the backtest scores, the database columns
(`close_q05` .. `close_q95`) and the `level` parameter of the web API all use these.
"""

from __future__ import annotations

QUANTILE_LEVELS: tuple[float, ...] = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95)
# Suffixes of the per-quantile names: close_q05 .. close_q95 (DB columns, CSV columns, JSON keys).
QUANTILE_NAMES: tuple[str, ...] = tuple(f"q{round(q * 100):02d}" for q in QUANTILE_LEVELS)
# Central interval level (percent) -> (lower quantile, upper quantile).
INTERVAL_LEVELS: dict[int, tuple[float, float]] = {
    50: (0.25, 0.75),
    80: (0.10, 0.90),
    90: (0.05, 0.95),
}
DEFAULT_LEVEL = 80


def quantile_index(q: float) -> int:
    """Position of quantile level ``q`` in QUANTILE_LEVELS (ValueError if it is not one)."""
    for i, level in enumerate(QUANTILE_LEVELS):
        if abs(level - q) < 1e-9:
            return i
    raise ValueError(f"{q} is not one of the quantile levels {QUANTILE_LEVELS}")


def interval_indices(level: int) -> tuple[int, int]:
    """(lower, upper) positions in QUANTILE_LEVELS of the central ``level`` % interval."""
    if level not in INTERVAL_LEVELS:
        raise ValueError(f"level must be one of {sorted(INTERVAL_LEVELS)}, got {level}")
    lo, hi = INTERVAL_LEVELS[level]
    return quantile_index(lo), quantile_index(hi)

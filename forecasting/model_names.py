"""Names of the models the backtest and the database know, without importing any of them.

Kept apart so that the command line can offer them (``--models``) without loading pandas.
"""

from __future__ import annotations

PRODUCT = "candlecast"  # the served forecast
BASELINE_NAMES = ("naive", "rw20", "ewma", "garch", "empirical", "range20")
MODEL_NAMES = (PRODUCT, "lstm", "har_range", *BASELINE_NAMES, "seed")
DEFAULT_MODELS = (PRODUCT, "lstm", "har_range", "naive", "ewma", "garch", "range20")

"""How precise a price is where it enters and where it is stored or shown: defined once here.

Entering (providers, via validation.normalise_frame): Yahoo's prices pass through float32, so a
close of 192.53 arrives as 192.52999877929688. strip_float32_noise() replaces such a value by
the shortest decimal that reads back as the same float32 (192.53): nothing float32 held is lost.
Only values exactly representable as float32 are touched; a true float64 price from a CSV
(12.3456789, or the dev universe's 8-decimal prices) almost never is, and keeps every digit.
The rare float64 value that is float32-exact by chance (a multiple of a power of two, such as
120.2421875) moves by less than half a float32 step, and only when it has more digits than
float32 carries (6 to 9 significant digits).

Stored forecasts and prices in JSON bodies: round_sig() to SIGNIFICANT_DIGITS significant digits,
so a price of 0.00019 keeps its digits (rounding to decimal places would make it 0.0002).
"""

from __future__ import annotations

import math

import numpy as np

SIGNIFICANT_DIGITS = 6  # forecasts as stored, and every price (or price error) in JSON


def round_sig(value: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """`value` rounded to `digits` significant digits (None, 0, NaN and infinity unchanged)."""
    if value is None or value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def strip_float32_noise(values: np.ndarray) -> np.ndarray:
    """float64 `values` with every float32-exact value replaced by the shortest decimal of that
    float32 (192.52999877929688 -> 192.53); others (and NaN, infinity) are returned as they are."""
    values = np.asarray(values, dtype="float64")
    with np.errstate(over="ignore"):  # beyond float32's range: inf, never equal, left alone
        single = values.astype(np.float32)
    exact = single.astype("float64") == values
    shortest = single[exact].astype(str).astype("float64")  # numpy prints float32 shortest
    out = values.copy()
    out[exact] = shortest
    return out

"""Whole-number parameters (query arguments, JSON fields, Content-Length): ASCII digits only.

str.isdigit() also accepts '²' (int() then raises: a 500) and '٨٠' (int() reads 80), so every
route reads its integers through here and answers anything else with a 400.
"""

from __future__ import annotations

import re

from web.errors import ApiError

ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)
SATURATE = 10**18  # longer numbers read as this: beyond every range, and int() stays cheap


def whole_number(raw: object) -> int | None:
    """`raw` as a non-negative int: an int (not a bool), or ASCII digits with blanks around them
    (numbers above SATURATE read as SATURATE); None for anything else."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if raw >= 0 else None
    if not isinstance(raw, str) or not ASCII_DIGITS.fullmatch(digits := raw.strip()):
        return None
    digits = digits.lstrip("0") or "0"
    return min(int(digits), SATURATE) if len(digits) <= len(str(SATURATE)) else SATURATE


def parse_int(raw: object, name: str, *, default: int, lo: int = 1, hi: int | None = None) -> int:
    """`raw` as a whole number in lo..hi (no upper bound when `hi` is None); None or '' is
    `default`. Anything else is ApiError 400 `invalid_parameter` naming `name` and the range."""
    if raw is None or raw == "":
        return default
    value = whole_number(raw)
    if value is None or value < lo or (hi is not None and value > hi):
        span = f"from {lo} up" if hi is None else f"{lo}..{hi}"
        raise ApiError(400, "invalid_parameter", f"{name} must be a whole number {span}")
    return value


__all__ = ["parse_int", "whole_number"]

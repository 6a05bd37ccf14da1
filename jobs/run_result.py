"""The outcome of one run: what jobs.pipeline returns and jobs.alerts reports (a module of its
own, so that the pipeline and the alerts do not import each other)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.tasks import TickerOutcome


@dataclass
class RunResult:
    """The outcome of one run (one as-of date)."""

    run_id: int
    as_of: date | None
    status: str
    outcomes: list[TickerOutcome]
    message: str | None = None


__all__ = ["RunResult"]

"""Model hyperparameters shared by training, backtests and the `[model]` config section."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from forecasting.forecast_set import HORIZON


@dataclass(frozen=True)
class ModelParams:
    """Hyperparameters of one model version; stored as JSON beside every trained model."""

    window: int = 20
    horizon: int = HORIZON
    epochs: int = 40
    batch_size: int = 256
    units: int = 16
    seed: int = 42
    patience: int = 5
    validation_fraction: float = 0.15
    calibration_fraction: float = 0.15
    learning_rate: float = 5e-4
    retrain_every: int = 21
    attention: bool = True
    # the global network (forecasting.global_net)
    warm_epochs: int = 4  # epochs of a warm start from the previous night's weights
    full_refit_every: int = 63  # sessions between full refits (warm starts in between)
    max_windows: int = 30000  # training windows sampled per fit (all tickers together)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelParams:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

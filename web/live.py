"""Live fallback: infer with the latest stored model when no forecast is stored for a date.

TensorFlow is imported only here and only on first use. Loaded models are kept per process in a
small LRU cache keyed by model version id, so repeated live requests skip the load and tracing.
Nothing is ever written: the result goes straight back to the caller. A model version that
fails its checks (sha256, truncated or invalid `.keras`, unloadable, old calibration) is
remembered as unusable in this process (logged once) and skipped: the next older version
serves, or the request gets a 503 `model_unavailable`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from db import web_queries as q
from db.model_store import (
    model_candidates,
    model_version_record,
    newest_pruned,
    sessions_between,
)
from db.repository import load_candles, load_recent_candles

if TYPE_CHECKING:
    from forecasting.forecast_set import Forecast
    from forecasting.train import TrainedModel

DEFAULT_CACHE_SIZE = 8
log = logging.getLogger(__name__)


class NoForecast(LookupError):
    """No live forecast is possible (no usable model, or too little history)."""


class ModelPruned(NoForecast):
    """The models trained on data up to the date exist, but their artifacts were pruned."""


class ModelUnavailable(RuntimeError):
    """Models exist for the date but every one of them fails its checks (a 503, not a 404)."""


class ModelCache:
    """Thread-safe LRU of loaded models; loads are serialised so a model is loaded once."""

    def __init__(self, maxsize: int = DEFAULT_CACHE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._unusable: dict[int, str] = {}

    def mark_unusable(self, key: int, reason: str, *, ticker: str = "") -> None:
        """Remember that model version `key` failed its checks; logs it once per process."""
        with self._lock:
            if key in self._unusable:
                return
            self._unusable[key] = reason
            self._items.pop(key, None)
        log.error(
            "model version %d%s is unusable and is skipped (retrain it): %s",
            key,
            f" of {ticker}" if ticker else "",
            reason,
        )

    def unusable(self) -> dict[int, str]:
        """Model version id -> why it failed its checks (this process only)."""
        with self._lock:
            return dict(self._unusable)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list[int]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def get(self, key: int) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: int, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def get_or_load(self, key: int, loader: Callable[[], Any]) -> Any:
        """The cached value of `key`, calling `loader()` (once, under a lock) on a miss."""
        value = self.get(key)
        if value is not None:
            return value
        with self._load_lock:
            value = self.get(key)
            if value is None:
                value = loader()
                self.put(key, value)
            return value


class _TracedModel:
    """The Keras model called through one traced tf.function: eager LSTM steps cost ~100 ms."""

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self._model = model
        specs = [tf.TensorSpec([None, *i.shape[1:]], tf.float32) for i in model.inputs]
        # the global network's inputs: [sequence, static]
        self._call = tf.function(
            lambda x: model(x, training=False), input_signature=[specs], reduce_retracing=True
        )

    def __call__(self, x: Any, training: bool = False) -> Any:
        return self._call(x)

    def __getattr__(self, name: str) -> Any:
        if name == "_model":  # not initialised (e.g. copy.copy): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self._model, name)


def _single_threaded_tensorflow() -> None:
    """One request infers one window: extra TensorFlow threads only fight the other workers."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised in this process (tests, notebooks)
        pass


def load_trained(session: Session, version_id: int) -> Any:
    """Load model version `version_id` (sha256 verified, safe_mode) ready for fast inference."""
    import keras

    from forecasting.artifact import usable_from_record

    version = q.model_version_with_artifact(session, version_id=version_id)
    if version is None:
        raise NoForecast(f"model version {version_id} disappeared")
    trained = usable_from_record(model_version_record(version))  # UnusableModelError
    if keras.backend.backend() == "tensorflow":
        _single_threaded_tensorflow()
        trained.model = _TracedModel(trained.model)
    return trained


def history_rows(window: int) -> int:
    """Candle rows a forecast reads: HAR-range's warm-up, the gap feature and one full window."""
    from forecasting.global_inputs import required_rows

    return required_rows(window)


@dataclass(frozen=True)
class LiveForecast:
    """A forecast inferred now, with the model version that made it (web.forecasts turns it
    into the view every answer is built from)."""

    result: Forecast
    model_version: int
    model_trained_through: date
    model_age_sessions: int | None


@dataclass(frozen=True)
class StoredModel:
    """A loaded model version and which one it is."""

    version_id: int
    train_end: date
    trained: TrainedModel


class NewestUsable:
    """The live fallback's model policy (``forecasting.forecast_path``): the newest stored model
    trained on data up to the as-of date that passes its checks. It remembers its answers, so
    the caller can size the candle query from the model's window before forecasting.

    NoForecast when there is none; ModelPruned (a NoForecast naming the fix) when the only ones
    had their artifacts pruned; ModelUnavailable when every one fails its checks."""

    def __init__(self, session: Session, cache: ModelCache) -> None:
        self.session, self.cache = session, cache
        self.found: dict[tuple[str, date], StoredModel] = {}

    def stored(self, ticker: str, as_of: date) -> StoredModel:
        """The model version that serves ``ticker`` as of ``as_of`` (looked up once)."""
        if (ticker, as_of) not in self.found:
            self.found[ticker, as_of] = self._newest(ticker, as_of)
        return self.found[ticker, as_of]

    def model_for(self, ticker: str, as_of: date) -> TrainedModel:
        return self.stored(ticker, as_of).trained

    def _newest(self, ticker: str, as_of: date) -> StoredModel:
        from forecasting.artifact import UnusableModelError

        session, cache = self.session, self.cache
        while True:
            skipped = cache.unusable()
            candidates = model_candidates(
                session, ticker=ticker, trained_up_to=as_of, exclude=skipped
            )
            if not candidates:
                raise _no_model(session, ticker, as_of)
            for candidate in candidates:
                version_id = candidate.id
                try:
                    trained = cache.get_or_load(
                        version_id, lambda v=version_id: load_trained(session, v)
                    )
                except UnusableModelError as exc:
                    cache.mark_unusable(version_id, str(exc), ticker=ticker)
                    continue
                return StoredModel(version_id, candidate.train_end, trained)


def _no_model(session: Session, ticker: str, as_of: date) -> NoForecast | ModelUnavailable:
    """Why no stored model can serve `ticker` as of `as_of`."""
    if any_model(session, ticker=ticker, as_of=as_of):
        return ModelUnavailable(
            f"no usable model of {ticker} for {as_of.isoformat()}: every stored model "
            "trained on data up to that date fails its checks (corrupt or outdated "
            "artifact); retrain with candlecast run-once or candlecast forecast"
        )
    pruned = newest_pruned(session, ticker=ticker, trained_up_to=as_of)
    if pruned is not None:
        day = as_of.isoformat()
        return ModelPruned(
            f"no forecast stored for {ticker} as of {day}: the model trained on data up to "
            f"that date (version {pruned.id}, trained on data up to "
            f"{pruned.train_end.isoformat()}) had its artifact pruned ([model] "
            f"keep_versions); store a forecast for that date with candlecast run-once "
            f"--as-of {day} --tickers {ticker}, or retrain with candlecast forecast "
            f"--ticker {ticker} --as-of {day}"
        )
    return NoForecast(
        f"no forecast stored for {ticker} as of {as_of.isoformat()} and no model "
        "trained on data up to that date"
    )


def live_forecast(
    session: Session, *, ticker: str, as_of: date, exchange: str, cache: ModelCache
) -> LiveForecast:
    """Infer the forecast as of `as_of` from the newest usable model trained on data up to it
    (``NewestUsable``'s errors when there is none). Nothing is written."""
    from forecasting.forecast_path import forecast_set

    policy = NewestUsable(session, cache)
    stored = policy.stored(ticker, as_of)
    rows = history_rows(stored.trained.params.window)
    start = q.nth_session_before(session, ticker=ticker, day=as_of, n=rows)
    candles = load_candles(session, ticker=ticker, start=start, end=as_of)

    def universe(tickers: list[str], end: date, n: int) -> dict:
        """The other tickers' recent candles (a global model's cross-sectional inputs)."""
        return load_recent_candles(session, tickers=tickers, end=end, sessions=n)

    try:
        result = forecast_set(
            ticker, as_of, policy, candles=candles, exchange=exchange, universe=universe
        )
    except ValueError as exc:  # InsufficientHistoryError, or dates outside the exchange calendar
        raise NoForecast(str(exc)) from None
    return LiveForecast(
        result=result,
        model_version=stored.version_id,
        model_trained_through=stored.train_end,
        model_age_sessions=sessions_between(
            session, ticker=ticker, start=stored.train_end, end=as_of
        ),
    )


def any_model(session: Session, *, ticker: str, as_of: date) -> bool:
    """True when some model of `ticker` was trained on data up to `as_of` (usable or not)."""
    return bool(model_candidates(session, ticker=ticker, trained_up_to=as_of, limit=1))

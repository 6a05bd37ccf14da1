"""Where per-ticker tasks run: in this process, in a local process pool, or on a Dask cluster.

`[executor] kind = "local"` with `workers = 1` runs tasks inline; more workers use a
ProcessPoolExecutor with the spawn start method (TensorFlow is not fork-safe). `kind = "dask"`
submits one task per ticker to the `dask.distributed` scheduler at `address`, or to a LocalCluster
of `workers` processes started here when no address is given. Dask re-runs the task of a worker
that died on another worker; tasks are idempotent, so that is safe.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from jobs.config import Config

log = logging.getLogger("candlecast.executor")

Outcome = tuple[int, Any | None, BaseException | None]  # (index, result, error)
HOUSEKEEPING = {
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.profile.enabled": False,
}


class TickerExecutor:
    """Runs fn(*args) for each args tuple; yields (index, result, error) as tasks complete."""

    def map(
        self, fn: Callable[..., Any], args_list: Sequence[tuple], stop: threading.Event
    ) -> Iterator[Outcome]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers/cluster connections."""

    def __enter__(self) -> TickerExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlineExecutor(TickerExecutor):
    """Tasks one after another in this process; stops between tasks when `stop` is set."""

    def map(self, fn, args_list, stop):
        for index, args in enumerate(args_list):
            if stop.is_set():
                return
            try:
                yield index, fn(*args), None
            except Exception as exc:
                yield index, None, exc


class ProcessPoolTickerExecutor(TickerExecutor):
    """A pool of `workers` spawned processes on this machine."""

    def __init__(self, workers: int) -> None:
        self.pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )

    def map(self, fn, args_list, stop):
        futures: dict[Future, int] = {
            self.pool.submit(fn, *args): i for i, args in enumerate(args_list)
        }
        yield from _drain(futures, stop, cancel=lambda f: f.cancel())

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskTickerExecutor(TickerExecutor):
    """One task per ticker on a dask.distributed cluster (or a LocalCluster started here)."""

    def __init__(self, address: str, workers: int) -> None:
        from distributed import Client, LocalCluster

        self.cluster = None
        if address:
            self.client = Client(address, timeout="30s")
        else:
            import dask

            # Fewer housekeeping wake-ups in the workers: they compete with training for the GIL.
            with dask.config.set(HOUSEKEEPING):
                self.cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    host="127.0.0.1",
                )
            self.client = Client(self.cluster)

    def map(self, fn, args_list, stop):
        futures = {self.client.submit(fn, *args, pure=False): i for i, args in enumerate(args_list)}
        pending = set(futures)
        from distributed import as_completed

        completed = as_completed(futures)
        for future in completed:
            pending.discard(future)
            index = futures[future]
            try:
                yield index, future.result(), None
            except Exception as exc:
                yield index, None, exc
            if stop.is_set() and pending:
                self.client.cancel(list(pending))
                return

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(config: Config) -> TickerExecutor:
    """The executor `[executor]` asks for."""
    settings = config.executor
    if settings.kind == "dask":
        return DaskTickerExecutor(settings.address, settings.workers)
    if settings.workers > 1:
        return ProcessPoolTickerExecutor(settings.workers)
    return InlineExecutor()


def _drain(
    futures: dict[Future, int], stop: threading.Event, cancel: Callable[[Future], Any]
) -> Iterator[Outcome]:
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        for future in done:
            if future.cancelled():
                continue
            error = future.exception()
            yield futures[future], None if error else future.result(), error
        if stop.is_set():
            for future in pending:
                cancel(future)  # not-yet-started tasks; running ones finish

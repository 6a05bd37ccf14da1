"""The signals that stop a run gracefully: SIGTERM, SIGINT and SIGHUP.

SIGHUP (a closed terminal, or `kill -HUP` from habit) is treated like SIGTERM: the ticker in
progress finishes and the run ends `interrupted`; nothing is reloaded (the daemon re-reads its
config file before every run anyway). Without this, SIGHUP's default action killed the process
mid-run and left the run `running`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def on_stop_signals(handler: Callable[[int, FrameType | None], None]) -> None:
    """Install `handler` for every stop signal (main thread only)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def block_stop_signals() -> None:
    """Keep the stop signals away from the calling thread (and the threads it starts), so they
    reach the main thread, whose handler runs at once."""
    signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))


__all__ = ["STOP_SIGNALS", "block_stop_signals", "on_stop_signals"]

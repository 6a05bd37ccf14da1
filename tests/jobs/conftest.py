"""Fixtures for pipeline tests: a small CSV universe and config files for real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BUNDLED = Path(__file__).resolve().parents[2] / "forecasting" / "bundled"
ROOT = Path(__file__).resolve().parents[2]
SESSIONS = 300  # enough for the tiny test models (a global forecast reads 214 sessions) and fast


def write_universe(folder: Path, tickers: tuple[str, ...], sessions: int = SESSIONS) -> None:
    """The last `sessions` bundled candles (ending 2023-12-29) of each ticker as TICKER.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    for ticker in tickers:
        pd.read_csv(BUNDLED / f"{ticker}.csv.gz").tail(sessions).to_csv(
            folder / f"{ticker}.csv", index=False
        )


def toml_value(value: object) -> str:
    return json.dumps(value)  # JSON scalars and string lists are valid TOML values


def write_config(path: Path, url: str, sections: dict[str, dict[str, object]]) -> Path:
    lines = ["[database]", f"url = {toml_value(url)}"]
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


TINY_MODEL = {"epochs": 1, "units": 4, "patience": 1, "batch_size": 64}


@pytest.fixture
def universe(tmp_path: Path) -> Path:
    folder = tmp_path / "csv"
    write_universe(folder, ("AAPL", "MSFT"))
    return folder


@pytest.fixture
def pipeline_config(make_config, universe, migrated_url):
    """Config: csv provider over the small universe, tiny model, this test's migrated database."""

    def factory(**sections: dict[str, object]):
        base = {
            "data": {"provider": "csv", "csv_dir": str(universe)},
            "tickers": {"symbols": ["AAPL", "MSFT"]},
            "model": dict(TINY_MODEL),
        }
        for name, values in sections.items():
            base[name] = {**base.get(name, {}), **values}
        return make_config(**base)

    return factory


@pytest.fixture
def candlecast():
    """Start `candlecast --config CONFIG ARGS` as real processes; any left running are killed."""
    started: list[subprocess.Popen] = []

    def start(config: Path, *args: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "CANDLECAST_DATABASE_URL"}
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "--config", str(config), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture
def keep_signal_handlers():
    """run-once and the daemon install SIGTERM/SIGINT handlers in this process: put pytest's
    back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)

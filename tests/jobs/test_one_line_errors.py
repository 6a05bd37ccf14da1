"""Errors a user can act on are one line on stderr, never a traceback (issue 10 item 15).

Each case runs the real `candlecast` in a subprocess. A stored model that cannot be loaded is
covered by tests/jobs/test_cli_model.py::test_forecast_retrains_when_the_stored_model_is_unusable
(`forecast` warns in one line and retrains); per-ticker failures of `run-once` by
tests/jobs/test_cli.py::test_run_once_where_every_sync_fails_exits_4_and_prints_each_error_once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli_support import EXIT_FAILURE, EXIT_USAGE
from jobs.config import DATABASE_URL_ENV
from tests.conftest import one_backend

ROOT = Path(__file__).resolve().parents[2]


def candlecast(config: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess:
    """Run `candlecast --config CONFIG ARGS` (with CANDLECAST_DATABASE_URL=url when given)."""
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if url is not None:
        env[DATABASE_URL_ENV] = url
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--config", str(config), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess, exit_code: int) -> str:
    """The single stderr line of a failed command (asserting there is exactly one)."""
    assert result.returncode == exit_code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("candlecast: error: ")
    return lines[0]


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "{url}"\n[tickers]\nsymbols = ["AAPL"]\n')
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x7fELF\x02\x01\x01\x00\x00\x00\xd0\x85\xff\xfe", "is not a UTF-8 TOML file"),
        (b"\x00\x01\x02 binary but valid UTF-8", "not valid TOML"),
    ],
    ids=["not-utf8", "nul-bytes"],
)
def test_a_binary_config_file(tmp_path: Path, content: bytes, message: str) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(content)
    line = one_line_error(candlecast(config, "db", "current"), EXIT_USAGE)
    assert str(config) in line and message in line


@pytest.mark.parametrize("from_env", [False, True], ids=["config", "env"])
def test_an_unsupported_database_url(tmp_path: Path, from_env: bool) -> None:
    url = "mysql://user@db.example/candles"
    config = write_config(tmp_path, "sqlite:///x.db" if from_env else url)
    result = candlecast(config, "db", "upgrade", url=url if from_env else None)
    line = one_line_error(result, EXIT_USAGE)
    key = "$CANDLECAST_DATABASE_URL" if from_env else "database.url"
    assert f"{key}: unsupported database 'mysql'" in line
    assert "sqlite:///" in line and "postgresql://" in line
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@[::1", "postgresql://postgres:s3cret@[::1", "postgresql://h:port/db"],
)
def test_a_malformed_database_url(tmp_path: Path, url: str) -> None:
    config = write_config(tmp_path, "sqlite:///unused.db")
    line = one_line_error(candlecast(config, "db", "current", url=url), EXIT_USAGE)
    assert "$CANDLECAST_DATABASE_URL: malformed URL" in line
    assert "s3cret" not in line


@pytest.mark.slow
def test_db_upgrade_on_a_path_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "a-dir").mkdir()
    config = write_config(tmp_path, "sqlite:///unused.db")
    for path in (tmp_path / "a-file" / "x.db", tmp_path / "a-file" / "sub" / "x.db"):
        line = one_line_error(
            candlecast(config, "db", "upgrade", url=f"sqlite:///{path}"), EXIT_FAILURE
        )
        assert f"cannot create the directory of the SQLite database {path}: " in line
        assert "a-file" in line.rsplit(": ", 1)[1]
    path = tmp_path / "a-dir"
    line = one_line_error(
        candlecast(config, "db", "upgrade", url=f"sqlite:///{path}"), EXIT_FAILURE
    )
    assert f"the SQLite database path {path} is a directory" in line
    # --verbose adds the traceback (logged at DEBUG) to the one-line error
    verbose = candlecast(config, "--verbose", "db", "upgrade", url=f"sqlite:///{path}")
    assert verbose.returncode == EXIT_FAILURE and "Traceback" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1].startswith("candlecast: error: ")


def test_a_multi_line_driver_error_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/candlecast"
    config = write_config(tmp_path, "sqlite:///unused.db")
    line = one_line_error(candlecast(config, "db", "current", url=url), EXIT_FAILURE)
    assert f"database error (postgresql://postgres@127.0.0.1:{port}/candlecast):" in line
    assert "refused" in line.lower()


@pytest.mark.slow
@one_backend
def test_a_failing_ticker_is_one_line_without_a_traceback(
    tmp_path: Path, migrated_url: str
) -> None:
    """A ticker that fails in training (too little history) prints its error once, no traceback;
    --verbose adds the traceback."""
    from tests.jobs.conftest import write_config as write_sections
    from tests.jobs.conftest import write_universe

    universe = tmp_path / "csv"
    write_universe(universe, ("AAPL",), sessions=50)
    config = write_sections(
        tmp_path / "short.toml",
        migrated_url,
        {"data": {"provider": "csv", "csv_dir": str(universe)}, "tickers": {"symbols": ["AAPL"]}},
    )
    quiet = candlecast(config, "run-once")
    assert quiet.returncode == 4, quiet.stderr[-3000:]
    assert "Traceback" not in quiet.stderr, quiet.stderr[-3000:]
    output = (quiet.stdout + quiet.stderr).splitlines()
    assert len([line for line in output if "training needs at least" in line]) == 1, output
    verbose = candlecast(config, "--verbose", "run-once")
    assert verbose.returncode == 4
    assert "Traceback" in verbose.stderr


def test_stored_errors_are_one_bounded_line() -> None:
    from jobs.tasks import describe

    error = OSError("connection refused\n\tIs the server running on that host?\n")
    assert describe(error) == "connection refused Is the server running on that host?"
    assert describe(ValueError("x" * 900)) == "x" * 497 + "..."
    assert describe(RuntimeError("")) == "RuntimeError"

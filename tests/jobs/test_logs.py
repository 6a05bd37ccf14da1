"""Log lines (issue 11, "Logs"): stderr, ISO-8601 UTC timestamp, level, logger; text or JSON.

The real `candlecast` runs in subprocesses: the daemon's routine lines are INFO, a failed ticker of
run-once is an ERROR record with its run_id and ticker in JSON, the web server's gunicorn logs
(and its access log when `[web] access_log = true`) use the same line format.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from jobs.config import DATABASE_URL_ENV, ConfigError, config_from_dict
from jobs.logs import JsonFormatter, TextFormatter, configure
from tests.jobs.conftest import BUNDLED, write_config, write_universe

ROOT = Path(__file__).resolve().parents[2]
ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
TEXT_LINE = re.compile(rf"^({ISO_UTC}) (DEBUG|INFO|WARNING|ERROR|CRITICAL) ([\w.]+): (.+)$")
TIMEOUT_S = 60


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    out["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return out


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", "--config", str(config), *args]


def candlecast(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(config, *args), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120
    )


def spawn(config: Path, *args: str) -> subprocess.Popen[str]:
    """`candlecast ... args` in a child process whose stderr is piped (text), stdout dropped."""
    return subprocess.Popen(
        command(config, *args),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def text_records(stderr: str) -> list[tuple[str, str, str, str]]:
    """(ts, level, logger, message) of every non-blank stderr line, asserting each is a log line."""
    records = []
    for line in stderr.splitlines():
        if not line.strip():
            continue  # rich's transient progress bar leaves an empty line when not on a terminal
        match = TEXT_LINE.match(line)
        assert match, f"not a timestamped log line: {line!r}\n{stderr[-3000:]}"
        records.append(match.groups())
    return records


def json_records(lines: list[str]) -> list[dict]:
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"ts", "level", "logger", "message"} <= set(record), record
        assert re.fullmatch(ISO_UTC, record["ts"]), record
    return records


class Daemon:
    """A `candlecast ... scheduler` process whose stderr lines are collected as they arrive."""

    def __init__(self, config: Path) -> None:
        self.proc = spawn(config, "scheduler")
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "\n".join(self.lines)
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "\n".join(self.lines)
            time.sleep(0.1)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(timeout=TIMEOUT_S) == 0, "\n".join(self.lines)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._reader.join(timeout=10)
        return "\n".join(self.lines) + "\n"


@pytest.fixture
def daemon_config(tmp_path: Path, migrated_url: str):
    def make(**logging_keys: str) -> Path:
        sections: dict[str, dict[str, object]] = {
            "tickers": {"symbols": ["AAPL"]},
            "schedule": {"cron": "0 3 * * *", "timezone": "UTC"},
        }
        if logging_keys:
            sections["logging"] = dict(logging_keys)
        return write_config(tmp_path / "daemon.toml", migrated_url, sections)

    return make


@pytest.mark.slow  # a real daemon: ~1.5-2 s
def test_daemon_routine_lines_are_timestamped_info(daemon_config) -> None:
    daemon = Daemon(daemon_config())
    try:
        daemon.wait_for("next run due at")
    finally:
        stderr = daemon.stop()
    records = text_records(stderr)
    scheduler = [(level, message) for _ts, level, name, message in records if "scheduler" in name]
    assert ("INFO", "scheduler starting (cron '0 3 * * *', UTC)") in scheduler, stderr
    assert any(level == "INFO" and m.startswith("next run due at ") for level, m in scheduler)
    assert ("INFO", "scheduler stopped") in scheduler, stderr
    assert all(level == "INFO" for level, _ in scheduler), stderr
    for ts, *_ in records:  # UTC now, not the local time of the machine
        assert abs(pd.Timestamp(ts).timestamp() - time.time()) < 300, ts


@pytest.mark.slow  # a real daemon: ~1.5-2 s
def test_level_warning_hides_the_daemon_routine_lines(daemon_config, migrated_url) -> None:
    from db.session import make_engine
    from jobs.jobstore import JsonSQLAlchemyJobStore

    daemon = Daemon(daemon_config(level="warning"))
    store = JsonSQLAlchemyJobStore(engine=make_engine(migrated_url))
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while store.get_next_run_time() is None:  # started: the job is stored
            assert daemon.proc.poll() is None and time.monotonic() < deadline, daemon.lines
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stderr = daemon.stop()
    assert "scheduler starting" not in stderr and "next run due" not in stderr, stderr
    text_records(stderr)


def short_csv(folder: Path) -> None:
    """AAPL's last 80 bundled sessions with one invalid row (high below open and close)."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(BUNDLED / "AAPL.csv.gz").tail(80)
    frame.iloc[10, frame.columns.get_loc("High")] = 1.0
    frame.to_csv(folder / "AAPL.csv", index=False)


@pytest.mark.slow  # a real daemon: ~1.5-2 s
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_sync_warnings_are_log_lines(tmp_path: Path, migrated_url: str, log_format: str) -> None:
    short_csv(tmp_path / "csv")
    config = write_config(
        tmp_path / "sync.toml",
        migrated_url,
        {
            "data": {"provider": "csv", "csv_dir": str(tmp_path / "csv")},
            "tickers": {"symbols": ["AAPL"]},
            "logging": {"format": log_format},
        },
    )
    result = candlecast(config, "sync")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if log_format == "text":
        records = [
            (level, name, message) for _ts, level, name, message in text_records(result.stderr)
        ]
    else:
        records = [(r["level"], r["logger"], r["message"]) for r in json_records(lines)]
    assert ("WARNING", "candlecast.data") in {(level, name) for level, name, _ in records}
    assert any("AAPL: dropped 1 of 80 rows" in message for *_, message in records), records


@pytest.mark.slow
def test_json_run_once_failed_ticker_is_an_error_record(tmp_path: Path, migrated_url: str) -> None:
    """Too little history fails the ticker before any training; the CLI also prints it."""
    write_universe(tmp_path / "csv", ("AAPL",), sessions=50)
    config = write_config(
        tmp_path / "short.toml",
        migrated_url,
        {
            "data": {"provider": "csv", "csv_dir": str(tmp_path / "csv")},
            "tickers": {"symbols": ["AAPL"]},
            "logging": {"format": "json"},
        },
    )
    result = candlecast(config, "run-once")
    assert result.returncode == 4, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("{")]
    records = json_records(lines)
    errors = [r for r in records if r["level"] == "ERROR" and r.get("ticker") == "AAPL"]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0]["logger"] == "candlecast.pipeline"
    assert (
        isinstance(errors[0]["run_id"], int) and "training needs at least" in errors[0]["message"]
    )
    # the other stderr lines are the CLI's own: the progress line and the final error
    others = [line for line in result.stderr.splitlines() if line.strip() and line not in lines]
    assert others[-1].startswith("candlecast: error: run "), others


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"level": "LOUD"}, "logging.level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ({"format": "xml"}, "logging.format must be 'text' or 'json', got 'xml'"),
        ({"colour": True}, "unknown key logging.colour"),
    ],
)
def test_invalid_logging_keys_are_config_errors(keys: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"logging": keys})


def test_logging_defaults_and_case() -> None:
    config = config_from_dict({"logging": {"level": "debug"}})
    assert (config.logging.level, config.logging.format) == ("debug", "text")
    assert config_from_dict({}).web.access_log is False


def test_a_logging_config_error_is_one_line(tmp_path: Path, migrated_url: str) -> None:
    config = write_config(tmp_path / "bad.toml", migrated_url, {"logging": {"level": "LOUD"}})
    result = candlecast(config, "tickers")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "candlecast: error: logging.level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
        "got 'LOUD'"
    ]


def make_record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "candlecast.pipeline", logging.ERROR, __file__, 1, "%s failed", ("AAPL",), None
    )
    record.created, record.msecs = 1796164800.25, 250.0  # 2026-12-01T22:40:00.250Z
    record.__dict__.update(extra)
    return record


def test_formatters() -> None:
    assert TextFormatter().format(make_record()) == (
        "2026-12-01T22:40:00.250Z ERROR candlecast.pipeline: AAPL failed"
    )
    assert json.loads(JsonFormatter().format(make_record(run_id=7, ticker="AAPL"))) == {
        "ts": "2026-12-01T22:40:00.250Z",
        "level": "ERROR",
        "logger": "candlecast.pipeline",
        "message": "AAPL failed",
        "run_id": 7,
        "ticker": "AAPL",
    }


def test_configure_leaves_logging_set_up_by_the_host_alone() -> None:
    root = logging.getLogger()
    assert root.handlers  # pytest's
    assert configure() is False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # a real gunicorn server per case: 2-3 s each
@pytest.mark.parametrize("access_log", [True, False])
def test_web_server_logs(tmp_path: Path, migrated_url: str, access_log: bool) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "web.toml",
        migrated_url,
        {
            "tickers": {"symbols": ["AAPL"]},
            "web": {"host": "127.0.0.1", "port": port, "workers": 1, "access_log": access_log},
        },
    )
    proc = spawn(config, "web")
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            assert proc.poll() is None, "the server exited early"
            assert time.monotonic() < deadline, "the server did not answer"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?probe=1", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # any answer is logged
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    lines = stderr.splitlines()
    assert lines[0] == f"serving on http://127.0.0.1:{port}/", stderr  # the CLI's own line
    records = text_records("\n".join(lines[1:]))
    names = {(level, name) for _ts, level, name, _m in records}
    assert ("INFO", "gunicorn.error") in names, stderr  # "Booting worker ...", timestamped
    access = [m for _ts, _level, name, m in records if name == "gunicorn.access"]
    if access_log:
        assert len(access) == 1, stderr
        assert re.fullmatch(
            r'127\.0\.0\.1 "GET /healthz\?probe=1 HTTP/1\.1" \d{3} \d+ \d+ms ".*"', access[0]
        )
    else:
        assert access == [] and "GET /healthz" not in stderr, stderr

"""Alert delivery is bounded in wall-clock time and stops on a signal (issue 17 items 10, 11).

A real receiver on 127.0.0.1 that trickles its answer one byte at a time never completes it;
`candlecast run-once` runs in its own process against a universe too short to train on, so its run
fails at once and alerts.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import ForecastRun
from jobs import alerts
from jobs.cli_support import RUN_EXIT_CODES
from tests.jobs.conftest import write_config, write_universe

ROOT = Path(__file__).resolve().parents[2]


class Trickler:
    """Accepts POSTs and answers one byte every `every_s` seconds, never finishing the answer."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self.requests = 0
        self.first_request = threading.Event()
        self.closing = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hooks/s3cr3t"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            self.requests += 1
            self.first_request.set()
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"." * 10_000:
                if self.closing.wait(self.every_s):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.closing.set()
        self.sock.close()


@pytest.fixture
def trickler(monkeypatch) -> Iterator[Trickler]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = Trickler()
    yield server
    server.close()


def _run_once(tmp_path: Path, url: str, webhook: str) -> subprocess.Popen[str]:
    universe = tmp_path / "short"
    write_universe(universe, ("AAPL",), sessions=50)  # too short: the run fails at once
    config = write_config(
        tmp_path / "candlecast.toml",
        url,
        {
            "data": {"provider": "csv", "csv_dir": str(universe)},
            "tickers": {"symbols": ["AAPL"]},
            "alerts": {"webhook_url": webhook},
        },
    )
    env = {k: v for k, v in os.environ.items() if k != "CANDLECAST_DATABASE_URL"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "--config", str(config), "run-once"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # delivery, not storage
def test_run_once_exits_within_30_s_of_its_run_despite_a_trickling_webhook(
    tmp_path: Path, migrated_url: str, session_factory, trickler: Trickler
) -> None:
    process = _run_once(tmp_path, migrated_url, trickler.url)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    exited = time.time()
    assert process.returncode == RUN_EXIT_CODES["failed"], stderr
    with session_factory() as s:
        run = s.scalars(select(ForecastRun)).one()
    assert run.status == "failed" and run.finished_at is not None
    after_run = exited - run.finished_at.replace(tzinfo=UTC).timestamp()
    assert after_run < 30, after_run  # was ~175 s: urllib's timeout is per read
    assert trickler.requests == alerts.ATTEMPTS  # each attempt was cut at its deadline
    assert "not delivered" in stderr and "s3cr3t" not in stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # delivery, not storage
@pytest.mark.slow
def test_sigterm_during_delivery_ends_run_once_promptly(
    tmp_path: Path, migrated_url: str, session_factory, trickler: Trickler
) -> None:
    process = _run_once(tmp_path, migrated_url, trickler.url)
    try:
        assert trickler.first_request.wait(90), process.communicate(timeout=5)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        process.kill()
    assert took < 3, took  # abandoned at once, not after the attempt's 5 s deadline
    assert process.returncode == RUN_EXIT_CODES["failed"], stderr  # the run's own outcome
    assert trickler.requests == 1 and "stopped by a signal" in stderr
    with session_factory() as s:
        assert s.scalars(select(ForecastRun.status)).one() == "failed"


def test_a_stop_already_set_allows_one_short_attempt(trickler: Trickler) -> None:
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    assert not alerts.deliver(trickler.url, {"text": "x"}, stop=stop)
    assert time.monotonic() - started < alerts.STOPPING_TIMEOUT_S + 1
    assert trickler.requests == 1


class AuthReceiver:
    """Records the Authorization header of each POST and answers 200."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        seen = self.authorization = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_webhook_url_with_credentials_is_sent_with_basic_auth(monkeypatch, caplog) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    receiver = AuthReceiver()
    try:
        url = f"http://ops%40team:p%3Ass-W0rd@127.0.0.1:{receiver.port}/hook?x=1"
        with caplog.at_level(logging.DEBUG, logger="candlecast.alerts"):
            assert alerts.deliver(url, {"text": "hi"}, what="run 3")
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    expected = "Basic " + base64.b64encode(b"ops@team:p:ss-W0rd").decode()
    assert receiver.authorization == [("/hook?x=1", expected)]
    assert "W0rd" not in caplog.text and "ops" not in caplog.text
    assert f"sent to http://127.0.0.1:{receiver.port}" in caplog.text

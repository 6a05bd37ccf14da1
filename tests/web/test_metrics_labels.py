"""Labels fed by the client cannot grow /metrics (issue 17 item 9): real HTTP, random methods,
through werkzeug and through gunicorn (what `candlecast web` runs)."""

from __future__ import annotations

import http.client
import random
import signal
import string
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.web.conftest import Site, http_get, serving
from tests.web.test_serve import ROOT, child_env, free_port, wait_for, write_config

REQUESTS = 3_000
METRICS_MAX_BYTES = 250_000
LABELLED_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "other"}


def _random_methods(base: str, seed: int) -> set[int]:
    """REQUESTS requests with random method names (some lowercase) and paths; their statuses."""
    rng = random.Random(seed)
    parts = urlsplit(base)

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    conn = connect()
    statuses = set()
    try:
        for _ in range(REQUESTS):
            letters = rng.choice([string.ascii_uppercase, string.ascii_letters])
            method = "".join(rng.choices(letters, k=rng.randint(3, 12)))
            path = rng.choice(["/", "/predict", "/api/runs", f"/x{rng.randint(0, 10**9)}"])
            conn.request(method, path)
            response = conn.getresponse()
            response.read()
            statuses.add(response.status)
            if response.will_close:
                conn.close()
                conn = connect()
    finally:
        conn.close()
    return statuses


def _check_metrics(body: bytes) -> None:
    assert len(body) < METRICS_MAX_BYTES, len(body)
    text = body.decode()
    assert 'method="other"' in text
    methods = {
        line.split('method="')[1].split('"')[0] for line in text.splitlines() if 'method="' in line
    }
    assert methods <= LABELLED_METHODS


@pytest.mark.slow
def test_random_methods_leave_metrics_small(sqlite_site: Site) -> None:
    with serving(sqlite_site.app) as base:
        statuses = _random_methods(base, seed=7)
        status, _, body = http_get(base, "/metrics")
    assert status == 200 and statuses <= {400, 404, 405, 501}
    _check_metrics(body)


@pytest.mark.slow
def test_random_methods_leave_gunicorn_metrics_small(sqlite_site: Site, tmp_path: Path) -> None:
    # one worker, so /metrics is answered by the worker that counted every request
    port = free_port()
    config_path = write_config(tmp_path, sqlite_site.url, port)
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "web.log"  # a file, not a pipe: gunicorn logs a line per refused method
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "web.serve", "--config", str(config_path), "--workers", "1"],
            cwd=ROOT,
            env={**child_env(), "HOME": str(home)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/healthz", proc)
        statuses = _random_methods(base, seed=8)
        status, _, body = http_get(base, "/metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text(errors="replace")[-2000:]
    assert status == 200 and statuses <= {400, 404, 405, 501}, statuses
    _check_metrics(body)

"""`web.serve.serve` runs gunicorn over real HTTP; `flask --app web` and web.wsgi find the app."""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from flask import Flask

from jobs.config import CONFIG_ENV, DATABASE_URL_ENV, load_config
from tests.jobs.conftest import write_config as write_toml
from tests.web.conftest import Site
from tests.web.seed import TICKERS
from web import create_app
from web.serve import CandlecastWorker, gunicorn_options

ROOT = Path(__file__).resolve().parents[2]
# serve(load_config(argv[1])), with workers=argv[2] when given (else [web] workers decides).
SERVE = (
    "import sys; from jobs.config import load_config; from web.serve import serve; "
    "serve(load_config(sys.argv[1]), workers=int(sys.argv[2]) if sys.argv[2:] else None)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path: Path, url: str, port: int, **web: object) -> Path:
    """tmp_path/web.toml: the database at `url` with the seed's tickers, served on
    127.0.0.1:`port` with the [web] settings `web` (one worker unless they say otherwise)."""
    sections = {
        "tickers": {"symbols": list(TICKERS)},
        "web": {"host": "127.0.0.1", "port": port, "workers": 1, **web},
    }
    return write_toml(tmp_path / "web.toml", url, sections)


def start_server(
    config_path: Path, workers: int | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """SERVE on `config_path` in a child process (stdout and stderr piped together)."""
    args = [str(config_path)] if workers is None else [str(config_path), str(workers)]
    return subprocess.Popen(
        [sys.executable, "-c", SERVE, *args],
        cwd=ROOT,
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def child_env(config_path: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if config_path is not None:
        env[CONFIG_ENV] = str(config_path)
    return env


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited early"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def test_gunicorn_options_follow_config(sqlite_site: Site) -> None:
    options = gunicorn_options(sqlite_site.config)
    assert options["bind"] == "127.0.0.1:8000" and options["workers"] == 2
    assert gunicorn_options(sqlite_site.config, workers=5)["workers"] == 5
    assert options["preload_app"] is False  # each worker builds its own engine after the fork
    assert options["worker_class"] is CandlecastWorker and options["threads"] == 16
    assert (options["timeout"], options["keepalive"]) == (120, 5)
    with pytest.raises(ValueError):
        gunicorn_options(sqlite_site.config, workers=0)


@pytest.mark.slow
def test_serve_answers_over_http(sqlite_site: Site, tmp_path: Path) -> None:
    port = free_port()
    config_path = write_config(tmp_path, sqlite_site.url, port)
    home, runtime = tmp_path / "home", tmp_path / "runtime"
    home.mkdir()
    runtime.mkdir()
    env = {**child_env(), "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    proc = start_server(config_path, workers=2, env=env)
    try:
        health = json.loads(wait_for(f"http://127.0.0.1:{port}/healthz", proc))
        assert health["status"] == "ok" and health["latest_run"]["status"] == "partial"
        # no gunicorn control socket: its default path is shared by every instance of a user
        assert not [p for p in (*home.rglob("*"), *runtime.rglob("*")) if "gunicorn" in p.name]
        day = sqlite_site.seed.stored_as_of[-1].isoformat()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict",
            data=json.dumps({"stock_symbol": "AAPL", "input_date": day}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
        assert body["source"] == "stored" and body["as_of"] == day
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output.decode(errors="replace")[-2000:]
    assert b"Booting worker" in output


def test_flask_cli_finds_the_factory(sqlite_site: Site, tmp_path: Path) -> None:
    config_path = write_config(tmp_path, sqlite_site.url, free_port())
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "web", "routes"],
        cwd=ROOT,
        env=child_env(config_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for rule in ("/predict", "/api/forecasts/<ticker>/history", "/healthz", "/tickers/<ticker>"):
        assert rule in result.stdout


def test_wsgi_module_builds_the_app(
    sqlite_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = write_config(tmp_path, sqlite_site.url, free_port())
    monkeypatch.setenv(CONFIG_ENV, str(config_path))
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    sys.modules.pop("web.wsgi", None)
    wsgi = importlib.import_module("web.wsgi")
    try:
        assert isinstance(wsgi.app, Flask)
        response = wsgi.app.test_client().get("/healthz")
        assert response.status_code == 200
        assert load_config(config_path).database.url == sqlite_site.url
        default = create_app()  # no config: the one $CANDLECAST_CONFIG names
        assert default.extensions["candlecast"].config.database.url == sqlite_site.url
        default.extensions["candlecast"].engine.dispose()
    finally:
        wsgi.app.extensions["candlecast"].engine.dispose()
        sys.modules.pop("web.wsgi", None)

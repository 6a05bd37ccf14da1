"""Run alerts against a real local webhook receiver: one POST per bad run, retries, no leaks."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import ForecastRun
from jobs import alerts
from jobs.cli import main
from jobs.cli_support import RUN_EXIT_CODES
from jobs.config import AlertsConfig, ConfigError
from jobs.pipeline import Pipeline
from jobs.tasks import TickerOutcome, process_ticker
from tests.jobs.conftest import write_config, write_universe

TOKEN_PATH = "/services/T000/B000/s3cr3tT0k3n"
RUNS_URL = "https://candlecast.example/runs"


class Receiver:
    """A webhook on 127.0.0.1: records each POST, answers with `codes` in turn (then 200)."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.codes: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(
                    {
                        "path": self.path,
                        "type": self.headers["Content-Type"],
                        "json": json.loads(body),
                    }
                )
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{TOKEN_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def bodies(self) -> list[dict]:
        return [p["json"] for p in self.posts]


@pytest.fixture
def receiver(monkeypatch) -> Iterator[Receiver]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(alerts, "BACKOFF_S", (0.05, 0.05))
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def short_universe(tmp_path: Path) -> Path:
    """Too little history for the model: every ticker fails fast, before any training."""
    folder = tmp_path / "short"
    write_universe(folder, ("AAPL", "MSFT"), sessions=50)
    return folder


def unreachable_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on once this socket closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{TOKEN_PATH}?token=qu3ryS3cret"


def fake_success(*tickers: str):
    """process_ticker where `tickers` succeed at once (no training) and the others run for real."""

    def task(factory, config, run_id, ticker, *args, **kwargs):
        if ticker in tickers:
            return TickerOutcome(ticker, "succeeded")
        return process_ticker(factory, config, run_id, ticker, *args, **kwargs)

    return task


def test_a_run_where_every_ticker_fails_posts_one_alert(pipeline_config, short_universe, receiver):
    config = pipeline_config(
        data={"csv_dir": str(short_universe)},
        alerts={"webhook_url": receiver.url, "runs_url": RUNS_URL},
    )
    result = Pipeline(config).run_nightly()
    assert result.status == "failed"
    assert len(receiver.posts) == 1
    post = receiver.posts[0]
    assert post["path"] == TOKEN_PATH and post["type"] == "application/json"
    body = post["json"]
    assert body["run_id"] == result.run_id
    assert body["as_of"] == "2023-12-29" and body["status"] == "failed"
    assert body["tickers"] == 2 and body["runs_url"] == RUNS_URL
    assert [f["ticker"] for f in body["failed"]] == ["AAPL", "MSFT"]
    errors = {o.ticker: o.error for o in result.outcomes}
    assert all(
        f["error"] == errors[f["ticker"]] and "sessions" in f["error"] for f in body["failed"]
    )
    prefix = (
        f"candlecast run {result.run_id} as of 2023-12-29: failed, 2 of 2 tickers failed: AAPL ("
    )
    assert body["text"].startswith(prefix)
    assert "MSFT (" in body["text"] and body["text"].endswith(RUNS_URL)


@pytest.mark.parametrize(("on", "posts"), [(None, 1), (["failed"], 0)])
def test_a_partial_run_alerts_unless_on_leaves_partial_out(
    pipeline_config, short_universe, receiver, monkeypatch, on, posts
):
    monkeypatch.setattr("jobs.pipeline.process_ticker", fake_success("AAPL"))
    section = {"webhook_url": receiver.url} | ({"on": on} if on is not None else {})
    config = pipeline_config(data={"csv_dir": str(short_universe)}, alerts=section)
    result = Pipeline(config).run_nightly()
    assert result.status == "partial"
    assert len(receiver.posts) == posts
    if posts:
        body = receiver.bodies[0]
        assert body["status"] == "partial" and body["runs_url"] is None
        assert [f["ticker"] for f in body["failed"]] == ["MSFT"]
        assert ": partial, 1 of 2 tickers failed: MSFT (" in body["text"]


def test_a_succeeded_run_posts_nothing(pipeline_config, short_universe, receiver, monkeypatch):
    monkeypatch.setattr("jobs.pipeline.process_ticker", fake_success("AAPL", "MSFT"))
    config = pipeline_config(
        data={"csv_dir": str(short_universe)}, alerts={"webhook_url": receiver.url}
    )
    assert Pipeline(config).run_nightly().status == "succeeded"
    assert receiver.posts == []


def test_which_statuses_alert():
    on = AlertsConfig(webhook_url="https://hooks.example/x")
    assert [
        s for s in ("succeeded", "partial", "failed", "interrupted") if alerts.should_alert(on, s)
    ] == [
        "partial",
        "failed",
    ]
    assert not alerts.should_alert(AlertsConfig(), "failed")  # no webhook_url: alerts are off
    assert not alerts.should_alert(AlertsConfig(webhook_url="https://h/x", on=("stale",)), "failed")


def test_a_run_that_raises_alerts_failed_with_its_error(pipeline_config, receiver, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("pooled fit exploded")

    monkeypatch.setattr("jobs.pipeline.Pipeline._night_models", explode)
    pipeline = Pipeline(pipeline_config(alerts={"webhook_url": receiver.url}))
    with pytest.raises(RuntimeError, match="pooled fit exploded"):
        pipeline.run_nightly()
    [body] = receiver.bodies
    assert body["status"] == "failed" and body["failed"] == []
    assert body["text"].endswith(": failed: run failed: pooled fit exploded")


def test_a_receiver_answering_500_twice_gets_it_on_the_third_attempt(
    pipeline_config, short_universe, receiver, caplog
):
    receiver.codes = [500, 500]
    config = pipeline_config(
        data={"csv_dir": str(short_universe)}, alerts={"webhook_url": receiver.url}
    )
    with caplog.at_level(logging.INFO, logger="candlecast.alerts"):
        result = Pipeline(config).run_nightly()
    assert result.status == "failed"
    assert len(receiver.posts) == 3
    assert (
        receiver.bodies[0] == receiver.bodies[2] and receiver.bodies[2]["run_id"] == result.run_id
    )
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.endswith("alerts")
    ]
    assert f"sent to http://127.0.0.1:{receiver.server.server_port}" in caplog.text


def test_a_client_error_is_not_retried(receiver, caplog):
    receiver.codes = [404]
    assert not alerts.deliver(receiver.url, {"text": "hi"}, what="run 7")
    assert len(receiver.posts) == 1
    assert "not delivered" in caplog.text and "HTTP 404" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_an_unreachable_webhook_leaves_the_run_and_exit_code_alone(
    tmp_path, migrated_url, short_universe, session_factory, monkeypatch, caplog, capsys
):
    monkeypatch.setattr(alerts, "BACKOFF_S", (0.05, 0.05))
    monkeypatch.delenv("CANDLECAST_DATABASE_URL", raising=False)
    url = unreachable_url()
    path = write_config(
        tmp_path / "candlecast.toml",
        migrated_url,
        {
            "data": {"provider": "csv", "csv_dir": str(short_universe)},
            "tickers": {"symbols": ["AAPL", "MSFT"]},
            "alerts": {"webhook_url": url},
        },
    )
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger="candlecast.alerts"):
        code = main(["--config", str(path), "run-once"])
    assert time.monotonic() - started < 60
    assert code == RUN_EXIT_CODES["failed"]
    with session_factory() as s:
        assert s.scalars(select(ForecastRun.status)).one() == "failed"
    logged = caplog.text + capsys.readouterr().err
    warnings = [r for r in caplog.records if r.name == "candlecast.alerts" and r.levelno == 30]
    assert len(warnings) == 1 and "not delivered" in warnings[0].getMessage()
    assert f"to {alerts.safe_origin(url)} after 3 attempt(s)" in warnings[0].getMessage()
    assert "s3cr3t" not in logged and "qu3ry" not in logged and "/services/" not in logged


def test_alerts_config_defaults_and_validation(make_config):
    config = make_config()
    assert config.alerts == AlertsConfig(webhook_url="", on=("failed", "partial", "stale"))
    config = make_config(alerts={"webhook_url": "https://h.example" + TOKEN_PATH, "on": ["stale"]})
    assert config.alerts.on == ("stale",)
    with pytest.raises(ConfigError, match=r"alerts\.webhook_url must be an http") as err:
        make_config(alerts={"webhook_url": "ftp://h.example" + TOKEN_PATH})
    assert "s3cr3t" not in str(err.value)
    with pytest.raises(ConfigError, match=r"alerts\.runs_url must be an http"):
        make_config(alerts={"runs_url": "candlecast.example/runs"})
    with pytest.raises(ConfigError, match=r"alerts\.on: unknown event 'succeeded'"):
        make_config(alerts={"on": ["failed", "succeeded"]})
    with pytest.raises(ConfigError, match=r"alerts\.on must be a list of strings"):
        make_config(alerts={"on": "failed"})


def test_payload_text_is_bounded_and_names_a_run_without_as_of():
    outcomes = [TickerOutcome(f"T{i}", "failed", error="x" * 500) for i in range(12)]
    result = type("R", (), {"run_id": 3, "as_of": None, "status": "failed", "message": "m"})()
    result.outcomes = outcomes
    body = alerts.run_payload(result)
    assert body["text"].startswith("candlecast run 3 (no as-of date): failed, 12 of 12 tickers")
    assert body["text"].endswith(" and 2 more") and len(body["text"]) < 2500
    assert len(body["failed"]) == 12 and body["as_of"] is None


@pytest.mark.parametrize(("on", "posts"), [(["failed", "partial", "stale"], 1), (["failed"], 0)])
def test_the_daemon_alerts_once_per_due_time_when_no_run_succeeded(
    tmp_path, migrated_url, receiver, monkeypatch, on, posts
):
    """No run ever succeeded on a weekday cron: the periodic check posts one "stale" alert, and
    checking again for the same due time posts nothing more."""
    from jobs import scheduler

    monkeypatch.setattr(scheduler, "STALE_ALERTED", set())
    monkeypatch.delenv("CANDLECAST_DATABASE_URL", raising=False)
    path = write_config(
        tmp_path / "stale.toml",
        migrated_url,
        {"alerts": {"webhook_url": receiver.url, "on": on, "runs_url": RUNS_URL}},
    )
    scheduler.stale_check_job(str(path))
    scheduler.stale_check_job(str(path))
    assert len(receiver.posts) == posts
    if posts:
        body = receiver.bodies[0]
        assert body["status"] == "stale" and body["last_success_run_id"] is None
        assert body["due_at"] and body["runs_url"] == RUNS_URL
        assert body["text"].startswith("candlecast is stale: no run succeeded since the run due")
        assert any("no run succeeded" in reason for reason in body["reasons"])

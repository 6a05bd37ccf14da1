"""The runs page: a compact table, 20 runs a page, a status filter, and one run's detail page.

Its own database (SQLite, and PostgreSQL when CANDLECAST_TEST_POSTGRES_URL is set) holds 27 runs
of mixed statuses, so paging has something to page; no model is trained.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event
from werkzeug.serving import make_server

from db.migrate import upgrade
from db.models import ForecastRun, ForecastRunTicker, ModelVersion
from db.session import make_engine, make_session_factory
from tests.conftest import DB_BACKENDS, empty_database
from tests.web.conftest import state_of, web_config

RUNS = 27
TICKERS = ("AAPL", "GOOGL", "MSFT")
LONG_ERROR = "ValueError: " + " ".join(f"word{i}" for i in range(60)) + " <end> & done"
SHOTS = Path("/tmp/shots")


def run_status(i: int) -> str:
    """Statuses of the seeded runs, oldest (0) first: failed, partial, succeeded, one running."""
    if i == RUNS - 1:
        return "running"
    return {1: "failed", 3: "partial"}.get(i % 4, "succeeded")


@dataclass(frozen=True)
class RunsSite:
    backend: str
    app: Flask
    ids: tuple[int, ...]  # oldest first
    statuses: dict[int, str]
    model_id: int


def _seed(url: str) -> tuple[tuple[int, ...], int]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            model = ModelVersion(
                ticker="AAPL",
                train_start=date(2021, 1, 4),
                train_end=date(2023, 6, 30),
                hyperparameters={},
                normalization={},
                metrics={},
                artifact_sha256="0" * 64,
                keras_version="3",
                tensorflow_version="2",
            )
            session.add(model)
            session.flush()
            start = datetime(2024, 1, 2, 23, 30, tzinfo=UTC)
            ids = []
            for i in range(RUNS):
                status = run_status(i)
                started = start + timedelta(days=i)
                finished = started + timedelta(seconds=30 + i)
                run = ForecastRun(
                    trigger="manual" if i % 5 == 0 else "schedule",
                    status=status,
                    as_of_date=started.date(),
                    started_at=started,
                    finished_at=None if status == "running" else finished,
                    message={
                        "failed": f"all tickers failed in run {i}: " + "x" * 300,
                        "partial": "1 of 3 tickers failed",
                    }.get(status),
                )
                session.add(run)
                session.flush()
                ids.append(run.id)
                for n, ticker in enumerate(TICKERS):
                    bad = status == "failed" or (status == "partial" and n == 0)
                    error = LONG_ERROR if ticker == "GOOGL" else f"RuntimeError: <{ticker}> & {i}"
                    session.add(
                        ForecastRunTicker(
                            run_id=run.id,
                            ticker=ticker,
                            status="failed" if bad else "succeeded",
                            duration_s=1.5 + n,
                            error=error if bad else None,
                            model_version_id=None if bad else model.id,
                        )
                    )
            return tuple(ids), model.id
    finally:
        engine.dispose()


def _site(backend: str, tmp: Path) -> Iterator[RunsSite]:
    with empty_database(backend, tmp / "runs.db", "w") as url:
        upgrade(url)
        ids, model_id = _seed(url)
        from web import create_app

        app = create_app(web_config(url, tmp))
        app.config["TESTING"] = True
        statuses = {run_id: run_status(i) for i, run_id in enumerate(ids)}
        try:
            yield RunsSite(backend, app, ids, statuses, model_id)
        finally:
            state_of(app).engine.dispose()


@pytest.fixture(scope="module", params=DB_BACKENDS)
def runs_site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    yield from _site(request.param, tmp_path_factory.mktemp(f"runs-{request.param}"))


@pytest.fixture
def client(runs_site: RunsSite) -> FlaskClient:
    return runs_site.app.test_client()


def get(client: FlaskClient, path: str, status: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == status, response.data[:300]
    assert response.content_type == "text/html; charset=utf-8"
    return response.get_data(as_text=True)


def row_ids(page: str) -> list[int]:
    return [int(m) for m in re.findall(r'<tr id="run-(\d+)"', page)]


def newest_first(site: RunsSite, status: str | None = None) -> list[int]:
    return [i for i in reversed(site.ids) if status is None or site.statuses[i] == status]


def test_first_page_is_a_table_of_the_20_newest_runs(client: FlaskClient, runs_site: RunsSite):
    page = get(client, "/runs")
    assert row_ids(page) == newest_first(runs_site)[:20]
    newest = runs_site.ids[-1]
    assert f'href="/runs/{newest}"' in page  # rows link to the detail page
    assert 'class="status status-running"' in page and 'class="status status-failed"' in page
    assert 'id="older" href="/runs?page=2"' in page and 'id="newer"' not in page
    assert f"{RUNS} runs · page 1 of 2" in page
    assert re.search(r'">all tickers failed in run \d+: x{100,140}\.\.\.</a>', page)  # truncated
    assert "<AAPL>" not in page and "RuntimeError: &lt;AAPL&gt; &amp;" in page  # escaped tooltip


def test_second_page_has_the_rest(client: FlaskClient, runs_site: RunsSite) -> None:
    page = get(client, "/runs?page=2")
    assert row_ids(page) == newest_first(runs_site)[20:]
    assert 'id="newer" href="/runs"' in page and 'id="older"' not in page


def test_status_filter_shows_only_that_status(client: FlaskClient, runs_site: RunsSite) -> None:
    for status in ("failed", "partial", "succeeded"):
        page = get(client, f"/runs?status={status}")
        expected = newest_first(runs_site, status)
        assert row_ids(page) == expected[:20], status
        assert set(re.findall(r'<tr id="run-\d+" data-status="(\w+)"', page)) == {status}
        assert f'<option value="{status}" selected>' in page
    page = get(client, "/runs?status=succeeded&page=2")  # paging keeps the filter
    assert row_ids(page) == newest_first(runs_site, "succeeded")[20:] == []
    assert get(client, "/runs?status=abandoned").count('id="runs-empty"') == 1


def test_a_page_past_the_end_is_an_empty_state(client: FlaskClient, runs_site: RunsSite) -> None:
    page = get(client, "/runs?page=9")
    assert row_ids(page) == [] and 'id="runs-empty"' in page
    assert f"there are {RUNS}, on 2 pages" in page and 'id="newer" href="/runs?page=2"' in page
    page = get(client, "/runs?status=failed&page=3")
    assert 'id="runs-empty"' in page and 'href="/runs?status=failed&amp;page=' not in page
    assert row_ids(get(client, "/runs?page=" + "9" * 40)) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=bogus", "status must be one of running, succeeded, partial, failed"),
        ("status=%3Cscript%3E", "status must be one of"),
        ("page=0", "page must be a whole number"),
        ("page=-1", "page must be a whole number"),
        ("page=abc", "page must be a whole number"),
    ],
)
def test_an_invalid_filter_or_page_is_a_400_page(client: FlaskClient, query: str, message: str):
    page = get(client, f"/runs?{query}", status=400)
    assert message in page and "<h1>400</h1>" in page and "<script>" not in page


def test_run_detail_lists_every_ticker_with_its_full_error(
    client: FlaskClient, runs_site: RunsSite
) -> None:
    failed = newest_first(runs_site, "failed")[0]
    page = get(client, f"/runs/{failed}")
    assert f"Run #{failed}" in page and 'class="status status-failed"' in page
    assert re.findall(r'<tr id="ticker-(\w+)" data-status="(\w+)"', page) == [
        (t, "failed") for t in TICKERS
    ]
    i = runs_site.ids.index(failed)
    assert f"RuntimeError: &lt;AAPL&gt; &amp; {i}" in page and "<AAPL>" not in page
    assert "word59 &lt;end&gt; &amp; done" in page  # in full, not truncated
    assert "x" * 300 in page  # the run's whole message too
    partial = newest_first(runs_site, "partial")[0]
    page = get(client, f"/runs/{partial}")
    assert f"v{runs_site.model_id}" in page and 'href="/tickers/MSFT"' in page


@pytest.mark.parametrize("path", ["/runs/999999", "/runs/99999999999999999999", "/runs/x"])
def test_an_unknown_run_is_a_404_page(client: FlaskClient, path: str) -> None:
    page = get(client, path, status=404)
    assert "<h1>404</h1>" in page
    if path == "/runs/999999":
        assert "There is no job run #999999." in page


def test_pages_take_a_constant_number_of_queries(client: FlaskClient, runs_site: RunsSite) -> None:
    """/runs: the page and its count; a run page: the run, its tickers, its stored forecasts and
    its model versions, whatever the number of tickers."""
    engine = state_of(runs_site.app).engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if not statement.lstrip().upper().startswith(("PRAGMA", "SET", "SHOW")):
            statements.append(statement)

    get(client, "/runs")  # warm the connection pool
    event.listen(engine, "before_cursor_execute", count)
    try:
        for path, most in (
            ("/runs", 2),
            ("/runs?status=failed", 2),
            (f"/runs/{runs_site.ids[3]}", 4),
        ):
            statements.clear()
            get(client, path)
            assert len(statements) <= most, (path, statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)


# A real browser on the SQLite site.


@pytest.fixture(scope="module")
def runs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RunsSite]]:
    for site in _site("sqlite", tmp_path_factory.mktemp("runs-browser")):
        server = make_server("127.0.0.1", 0, site.app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="runs-test-server", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}", site
        finally:
            server.shutdown()
            thread.join(timeout=10)
            server.server_close()


@pytest.mark.slow  # a browser: ~1.7 s
def test_runs_page_in_a_browser(browser, runs_server: tuple[str, RunsSite]) -> None:
    base, site = runs_server
    SHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(base + "/runs")
        assert page.locator("table.runs tbody tr").count() == 20
        overflow = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        assert page.evaluate(overflow)
        page.screenshot(path=str(SHOTS / "runs-1280.png"), full_page=True)
        with page.expect_navigation():
            page.click("#older")  # the second page holds the 7 oldest runs
        assert page.inner_text(".pager .pages") == "page 2 of 2"
        ids = page.locator("table.runs tbody tr").evaluate_all("rows => rows.map(r => r.id)")
        assert ids == [f"run-{i}" for i in newest_first(site)[20:]]
        with page.expect_navigation():
            page.click("#newer")
        assert page.locator("table.runs tbody tr").count() == 20

        with page.expect_navigation():
            page.select_option("#status", "failed")  # submits itself on change
        assert "status=failed" in page.url
        statuses = page.locator("table.runs tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.status)"
        )
        assert statuses == ["failed"] * len(newest_first(site, "failed"))
        assert page.evaluate(overflow)

        failed = newest_first(site, "failed")[0]
        with page.expect_navigation():
            page.click(f'#run-{failed} a[href="/runs/{failed}"]')
        assert page.locator("table.run-tickers tbody tr").count() == len(TICKERS)
        assert page.evaluate(overflow)
        page.screenshot(path=str(SHOTS / "run-detail-1280.png"), full_page=True)

        page.set_viewport_size({"width": 1920, "height": 1080})
        page.screenshot(path=str(SHOTS / "run-detail-1920.png"), full_page=True)
        page.goto(base + "/runs")
        page.screenshot(path=str(SHOTS / "runs-1920.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate(overflow)  # the table scrolls inside its box on a phone
        page.screenshot(path=str(SHOTS / "runs-390.png"), full_page=True)
    finally:
        context.close()
    assert errors == []

"""Throughput and latency of the web app against a trivial Flask app under the same gunicorn.

    .venv/bin/python benchmarks/web_latency.py [--connections 16] [--duration 20] [--rounds 4]
                                              [--workers 2] [--client auto|wrk-spread|wrk|threads]
                                              [--live] [--app-root PATH] [--cold-repeats 20]
                                              [--ceiling-reads-body]

Builds a temporary SQLite database (bundled candles of five tickers, stored forecasts for their
last --stored sessions, two finished runs), then, one after the other, serves with web.serve's
gunicorn settings (gunicorn_options: CandlecastWorker, gthread, [web] threads, --workers):

  ceiling         - a trivial Flask app answering every request with the stored /predict JSON
                    bytes (the best any view could do under these settings); with
                    --ceiling-reads-body it reads each request's body first, as /predict must
  POST /predict   - stored forecasts (rotating over every stored (ticker, date))
  GET /api/forecasts/AAPL, /tickers/AAPL, /, /runs
  live (--live)   - POST /predict of AAPL dates without a stored forecast (fits a small global
                    model of the five tickers to MODEL_AS_OF, stored as the night stores it)

and measures each with wrk when it is installed (POST bodies via a Lua script), else with its own
threaded keep-alive client. By default (`--client wrk-spread`) the connections come from
<connections> single-connection `wrk -t1 -c1` processes started 20 ms apart: a single
`wrk -c16` opens all 16 at once, the first gunicorn worker to wake often accepts all of them, and
the same server then measured 2,000 or 8,000 req/s from one round to the next (`--client wrk`
keeps that single process). Both servers
run side by side (the idle one costs nothing) and each target's rounds are interleaved with rounds
of the ceiling, so both see the same load. It prints req/s, p50 and p99 latency and the ratios to
that paired ceiling (req/s ratio, p50 ratio). The machine's load average is printed too: numbers
taken while other work runs on the same cores are noisy.

Then it renders each page of COLD_PAGES in-process (`--cold-repeats` times, the page cache
emptied before each request) and prints the median and worst time: the cost of the first request
after the database changed.

`--app-root` serves the app from another checkout (e.g. a `git worktree` of an older commit) to
compare before/after with the same client and database; the ceiling always runs from there too.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TICKERS = ("AAPL", "AMZN", "GOOGL", "MSFT", "TSLA")
MODEL_AS_OF = date(2023, 6, 30)
HISTORY_YEARS = 5  # the global fit's history per ticker ([data] history_years' default)
# Runs the app (argv: config path, workers) or the ceiling app (argv: ..., body file, "read" to
# read each request's body first) with web.serve's gunicorn options and worker class.
SERVE = """
import sys
from jobs.config import load_config
from web.serve import serve
serve(load_config(sys.argv[1]), workers=int(sys.argv[2]))
"""
SERVE_CEILING = """
import sys
from flask import Flask, Response, request
from jobs import logs
from jobs.config import load_config
from web.serve import CandlecastServer, gunicorn_options

config = load_config(sys.argv[1])
body = open(sys.argv[3], "rb").read()
read_body = sys.argv[4:] == ["read"]

class CeilingServer(CandlecastServer):
    def load(self):
        app = Flask("ceiling")

        @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
        @app.route("/<path:path>", methods=["GET", "POST"])
        def answer(path):
            if read_body:
                request.get_data()
            return Response(body, mimetype="application/json")

        return app

logs.configure(config.logging, keep=True)
CeilingServer(config, gunicorn_options(config, int(sys.argv[2]))).run()
"""


@dataclass(frozen=True)
class Target:
    name: str
    method: str
    path: str
    bodies: tuple[bytes, ...] = ()
    expect: bytes = b""  # a byte string every answer must contain (threaded client only)


@dataclass(frozen=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def store_global_fit(session: Any, frames: dict[str, Any]) -> dict[str, int]:
    """Fit a small global model of every ticker's last HISTORY_YEARS up to MODEL_AS_OF and store
    it as the night does (jobs.global_fit.global_records): one global_models row and one model
    version per ticker, all sharing the `.keras` bytes. Returns ticker -> model version id."""
    import pandas as pd

    from db.model_store import add_global_model, add_model_version
    from forecasting.global_net import fit_global
    from forecasting.global_store import storable_fit
    from forecasting.params import ModelParams

    params = ModelParams(units=8, epochs=2, patience=1)
    end = pd.Timestamp(MODEL_AS_OF)
    start = end - pd.DateOffset(years=HISTORY_YEARS)
    histories = {t: f.loc[(f.index > start) & (f.index <= end)] for t, f in frames.items()}
    fit = fit_global(histories, params)
    stored = storable_fit(fit, histories, reason="first fit", last_full=fit.train_end)
    global_id = add_global_model(session, **stored.row, parent_id=None)
    ids = {
        ticker: add_model_version(session, record=record | {"global_model_id": global_id}).id
        for ticker, record in stored.records.items()
    }
    print(
        f"global model: {fit.kind} fit of {len(ids)} tickers to {fit.train_end} in "
        f"{fit.metrics.get('train_seconds', 0.0):.1f} s, gate {fit.gate}",
        flush=True,
    )
    return ids


def build_database(url: str, stored: int, *, live: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """Fill `url`; return (ticker, date) pairs with stored forecasts and (if `live`) live dates."""
    from db.migrate import upgrade
    from db.models import Forecast, ForecastRun, ForecastRunTicker
    from db.repository import upsert_candles
    from db.session import make_engine, make_session_factory
    from forecasting.calendar import next_sessions
    from forecasting.providers import make_provider

    upgrade(url)
    provider = make_provider("bundled")
    frames = {t: provider.fetch(t) for t in TICKERS}
    engine = make_engine(url)
    stored_pairs: list[tuple[str, str]] = []
    with make_session_factory(engine).begin() as session:
        model_ids = store_global_fit(session, frames) if live else {}
        now = datetime.now(UTC)
        for i, status in enumerate(("partial", "succeeded")):
            started = now - timedelta(days=1 - i, minutes=5)
            run = ForecastRun(
                trigger="schedule", status=status, started_at=started, finished_at=started
            )
            session.add(run)
            session.flush()
            for ticker in TICKERS:
                session.add(
                    ForecastRunTicker(run_id=run.id, ticker=ticker, status="succeeded",
                                      duration_s=3.0)
                )  # fmt: skip
        for ticker, frame in frames.items():
            upsert_candles(session, ticker=ticker, frame=frame, source="bundled")
            closes = frame["close"]
            for ts in frame.index[-stored:]:
                as_of, last = ts.date(), float(closes.loc[ts])
                stored_pairs.append((ticker, as_of.isoformat()))
                for h, target in enumerate(next_sessions(as_of, 4), start=1):
                    close = last * (1 + 0.001 * h)
                    session.add(
                        Forecast(
                            run_id=run.id, model_version_id=model_ids.get(ticker), ticker=ticker,
                            as_of_date=as_of, horizon=h, target_date=target, open=last,
                            high=close * 1.01, low=last * 0.99, close=close,
                            close_lo=close * 0.98, close_hi=close * 1.02,
                            attention={"dates": [as_of.isoformat()], "weights": [1.0]},
                        )
                    )  # fmt: skip
    engine.dispose()
    index = frames["AAPL"].index
    live_days = [
        ts.date().isoformat() for ts in index[(index > "2023-07-01") & (index < "2023-10-01")]
    ]
    return stored_pairs, live_days if live else []


COLD_PAGES = ("/", "/tickers/AAPL", "/tickers/AAPL?as_of=2023-11-20", "/runs", "/runs/1")


def cold_renders(config_path: Path, repeats: int) -> list[tuple[str, float, float]]:
    """(path, median ms, max ms) of rendering each page in-process with the page cache emptied
    before every request: the cost of the first request after a database change."""
    from jobs.config import load_config
    from web import create_app
    from web.cache import response_cache

    app = create_app(load_config(config_path))
    client = app.test_client()
    out = []
    for path in COLD_PAGES:
        client.get(path)  # imports, plotly templates, connection
        times = []
        for _ in range(repeats):
            with app.app_context():
                response_cache().clear()
            started = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"GET {path} answered {response.status_code}")
        out.append((path, statistics.median(times), max(times)))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("server exited during start-up")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not become ready")


def fetch(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- clients ---------------------------------------------------------------------------------

LUA = """
local bodies = {%s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("%s", "%s", {["Content-Type"] = "application/json"}, bodies[i])
end
"""
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def _wrk_command(port: int, target: Target, connections: int, duration: float,
                 folder: Path) -> list[str]:  # fmt: skip
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    if target.bodies:
        script = folder / "post.lua"
        items = ", ".join(json.dumps(b.decode()) for b in target.bodies)
        script.write_text(LUA % (items, target.method, target.path), encoding="utf-8")
        command += ["-s", str(script)]
    command.append(f"http://127.0.0.1:{port}{target.path}")
    return command


def run_wrk(port: int, target: Target, connections: int, duration: float, folder: Path) -> Result:
    """One `wrk -t1 -c<connections>`: it opens every connection at once."""
    command = _wrk_command(port, target, connections, duration, folder)
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return _parse_wrk(done.stdout, done.stderr)


SPREAD_GAP_S = 0.02


def run_wrk_spread(
    port: int, target: Target, connections: int, duration: float, folder: Path
) -> Result:
    """`connections` single-connection wrk processes started SPREAD_GAP_S apart, so gunicorn's
    workers each take a share of the connections (with one wrk opening all of them at once, the
    first gthread worker to wake often accepts every one, and rounds differ by up to 4x).
    req/s is the sum; p50 and p99 are the medians of the processes' own."""
    command = _wrk_command(port, target, 1, duration, folder)
    procs = []
    for _ in range(connections):
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
        time.sleep(SPREAD_GAP_S)
    parts = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"wrk failed: {command}\n{out}\n{err}")
        parts.append(_parse_wrk(out, err))
    return Result(
        rps=sum(r.rps for r in parts),
        p50_ms=statistics.median(r.p50_ms for r in parts),
        p99_ms=statistics.median(r.p99_ms for r in parts),
        requests=sum(r.requests for r in parts),
        errors=sum(r.errors for r in parts),
    )


def _parse_wrk(out: str, err: str) -> Result:
    if "Requests/sec" not in out or "Latency Distribution" not in out:
        raise SystemExit(f"unexpected wrk output:\n{out}\n{err}")
    latency = dict(re.findall(r"^[ \t]*(\d+)%[ \t]+(\S+)[ \t]*$", out, re.MULTILINE))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    count = int(bad.group(1)) if bad else 0
    count += sum(int(x) for x in errors.groups()) if errors else 0
    return Result(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(latency["50"]),
        p99_ms=_ms(latency["99"]),
        requests=requests,
        errors=count,
    )


def run_threads(port: int, target: Target, connections: int, duration: float) -> Result:
    """`connections` keep-alive clients (threads, http.client) for `duration` seconds."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + duration
    headers = {"Content-Type": "application/json"} if target.bodies else {}

    def client(worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        bad = 0
        i = worker
        while time.perf_counter() < stop:
            body = target.bodies[i % len(target.bodies)] if target.bodies else None
            i += connections
            started = time.perf_counter()
            conn.request(target.method, target.path, body, headers)
            response = conn.getresponse()
            data = response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200 or target.expect not in data:
                bad += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(w,)) for w in range(connections)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ordered = sorted(latencies)
    return Result(
        rps=len(ordered) / wall,
        p50_ms=statistics.median(ordered) * 1000,
        p99_ms=ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        requests=len(ordered),
        errors=errors[0],
    )


def combine(results: list[Result]) -> Result:
    """Rounds of one target: mean req/s, median p50 and p99, summed counts."""
    return Result(
        rps=statistics.fmean(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
    )


# --- servers ---------------------------------------------------------------------------------


class Server:
    """A gunicorn server in a subprocess (the app, or the ceiling app with `body_file`)."""

    def __init__(self, config: Path, port: int, workers: int, app_root: Path,
                 body_file: Path | None = None, read_body: bool = False) -> None:  # fmt: skip
        code = SERVE if body_file is None else SERVE_CEILING
        argv = [sys.executable, "-c", code, str(config), str(workers)]
        if body_file is not None:
            argv += [str(body_file), "read" if read_body else "ignore"]
        env = {k: v for k, v in os.environ.items() if k != "CANDLECAST_DATABASE_URL"}
        env["PYTHONPATH"] = str(app_root)
        self.port = port
        self.proc = subprocess.Popen(
            argv, cwd=app_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def __enter__(self) -> Server:
        wait_ready(self.port, self.proc)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per target")
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds per target, interleaved with the ceiling"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stored", type=int, default=60, help="stored sessions per ticker")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk-spread", "wrk", "threads"),
        default="auto",
        help="auto: wrk-spread when wrk is installed, else threads",
    )
    parser.add_argument("--live", action="store_true", help="also POST /predict served live")
    parser.add_argument("--app-root", type=Path, default=ROOT, help="checkout to serve from")
    parser.add_argument(
        "--ceiling-reads-body",
        action="store_true",
        help="the ceiling app reads each request's body (as any view using a POST body must)",
    )
    parser.add_argument(
        "--cold-repeats", type=int, default=20, help="cold renders per page (0: skip them)"
    )
    args = parser.parse_args(argv)
    client = args.client
    if client == "auto":
        client = "wrk-spread" if shutil.which("wrk") else "threads"
    app_root = args.app_root.resolve()

    with tempfile.TemporaryDirectory(prefix="candlecast-bench-") as name:
        folder = Path(name)
        url = f"sqlite:///{folder / 'bench.db'}"
        print("building the database (bundled candles, stored forecasts) ...", flush=True)
        stored, live = build_database(url, args.stored, live=args.live)
        port = free_port()
        config = folder / "bench.toml"
        config.write_text(
            f'[database]\nurl = "{url}"\n[tickers]\nsymbols = {json.dumps(list(TICKERS))}\n'
            f'[web]\nhost = "127.0.0.1"\nport = {port}\n[logging]\nlevel = "WARNING"\n',
            encoding="utf-8",
        )
        bodies = tuple(json.dumps({"stock_symbol": t, "input_date": d}).encode() for t, d in stored)
        stored_json = b'"source":"stored"'
        targets = [
            Target("POST /predict (stored)", "POST", "/predict", bodies, stored_json),
            Target("GET /api/forecasts/AAPL", "GET", "/api/forecasts/AAPL", (), stored_json),
            Target("GET /tickers/AAPL", "GET", "/tickers/AAPL"),
            Target("GET /", "GET", "/"),
            Target("GET /runs", "GET", "/runs"),
        ]
        if args.live:
            live_bodies = tuple(
                json.dumps({"stock_symbol": "AAPL", "input_date": d}).encode() for d in live
            )
            targets.append(
                Target("POST /predict (live)", "POST", "/predict", live_bodies, b'"live"')
            )

        def measure(on: int, target: Target, seconds: float) -> Result:
            if client == "wrk-spread":
                return run_wrk_spread(on, target, args.connections, seconds, folder)
            if client == "wrk":
                return run_wrk(on, target, args.connections, seconds, folder)
            return run_threads(on, target, args.connections, seconds)

        ceiling_port = free_port()
        ceiling_config = folder / "ceiling.toml"
        ceiling_config.write_text(
            config.read_text(encoding="utf-8").replace(f"port = {port}", f"port = {ceiling_port}"),
            encoding="utf-8",
        )
        ceiling_name = (
            "ceiling (reads the body)" if args.ceiling_reads_body else "ceiling (trivial app)"
        )
        ceiling_target = Target(ceiling_name, "POST", "/predict", bodies)
        body_file = folder / "body.json"
        seconds = args.duration / args.rounds
        # target, its result, the paired ceiling's, and per round (its req/s / ceiling req/s)
        results: list[tuple[str, Result, Result, list[float]]] = []
        with Server(config, port, args.workers, app_root):
            status, sample = fetch(port, "POST", "/predict", bodies[0])
            if status != 200:
                raise SystemExit(f"POST /predict answered {status}: {sample[:300]!r}")
            body_file.write_bytes(sample)
            with Server(ceiling_config, ceiling_port, args.workers, app_root, body_file,
                        args.ceiling_reads_body):  # fmt: skip
                run_threads(ceiling_port, ceiling_target, args.connections, 1.0)
                for target in targets:
                    warm = Target(target.name, target.method, target.path, target.bodies)
                    if target.name.endswith("(live)"):
                        run_threads(port, warm, args.connections, 20.0)  # model loads, tracing
                    run_threads(port, warm, args.connections, 1.0)  # connections, caches
                    print(f"measuring {target.name} and the ceiling ...", flush=True)
                    mine, ceiling_rounds = [], []
                    for _ in range(args.rounds):  # interleaved: both see the same load drift
                        ceiling_rounds.append(measure(ceiling_port, ceiling_target, seconds))
                        mine.append(measure(port, target, seconds))
                    ratios = [m.rps / c.rps for m, c in zip(mine, ceiling_rounds, strict=True)]
                    results.append((target.name, combine(mine), combine(ceiling_rounds), ratios))
        ceiling = combine([c for _, _, c, _ in results])
        cold = cold_renders(config, args.cold_repeats) if args.cold_repeats > 0 else []

    load1, load5, _ = os.getloadavg()
    described = {
        "wrk-spread": f"{args.connections} x wrk -t1 -c1 started {SPREAD_GAP_S * 1000:g} ms apart",
        "wrk": f"wrk -t1 -c{args.connections}",
        "threads": "threaded http.client",
    }[client]
    print(
        f"\nweb.serve gunicorn ({args.workers} workers, gthread), {described}, "
        f"{args.connections} connections, {args.duration:g} s per target in {args.rounds} rounds, "
        "loopback, SQLite; "
        f"os.cpu_count() = {os.cpu_count()}, load average {load1:.1f} / {load5:.1f} (1 / 5 min)"
        f"{'; app from ' + str(app_root) if app_root != ROOT else ''}"
    )
    head = f"{'target':<30}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'xceil rps':>10}{'xceil p50':>10}"
    print(head + f"{'xceil rps by round':>22}{'requests':>10}{'errors':>8}")
    for name, r, c, ratios in [(ceiling_target.name, ceiling, ceiling, []), *results]:
        spread = (
            f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]"
            if ratios
            else ""
        )
        print(
            f"{name:<30}{r.rps:>9.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
            f"{r.rps / c.rps:>10.2f}{r.p50_ms / c.p50_ms:>10.2f}{spread:>22}"
            f"{r.requests:>10}{r.errors:>8}"
        )
    print(
        "xceil: against the ceiling measured in the rounds interleaved with that target "
        "(the ceiling row: all its rounds); by round: median [min, max] of each round's "
        "req/s over its paired ceiling round's"
    )
    if cold:
        print(f"\ncold render (in-process, page cache emptied first, {args.cold_repeats} times)")
        print(f"{'page':<36}{'median ms':>10}{'max ms':>9}")
        for path, median, worst in cold:
            print(f"{path:<36}{median:>10.1f}{worst:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

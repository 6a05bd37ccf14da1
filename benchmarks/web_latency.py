"""Latency of POST /predict against the real server (web.serve: gunicorn), printed as a table.

    .venv/bin/python benchmarks/web_latency.py [--clients 16] [--requests 4000] [--workers N]

Builds a temporary SQLite database (bundled candles of the five tickers, stored forecasts for
their last --stored sessions, one small AAPL model trained to 2023-06-30), starts the server on a
free loopback port in a subprocess, then measures with concurrent clients (threads, http.client):
  stored - forecasts read from the database (target p50 <= 10 ms)
  live   - AAPL dates without a stored forecast, inferred with a warm model cache (p50 <= 150 ms)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TICKERS = ("AAPL", "AMZN", "GOOGL", "MSFT", "TSLA")
MODEL_AS_OF = date(2023, 6, 30)
SERVE = (
    "import sys; from jobs.config import load_config; from web.serve import serve; "
    "serve(load_config(sys.argv[1]), workers=int(sys.argv[2]))"
)


def build_database(url: str, stored: int) -> tuple[list[tuple[str, str]], list[str]]:
    """Fill `url`; return (ticker, date) bodies with stored forecasts and live AAPL dates."""
    from db.migrate import upgrade
    from db.model_store import add_model_version
    from db.models import Forecast, ForecastRun
    from db.repository import upsert_candles
    from db.session import make_engine, make_session_factory
    from forecasting.artifact import trained_to_record
    from forecasting.calendar import next_sessions
    from forecasting.params import ModelParams
    from forecasting.providers import make_provider
    from forecasting.train import train_model

    upgrade(url)
    provider = make_provider("bundled")
    frames = {t: provider.fetch(t) for t in TICKERS}
    trained = train_model(
        frames["AAPL"], ModelParams(units=8, epochs=2, patience=1), ticker="AAPL", as_of=MODEL_AS_OF
    )
    engine = make_engine(url)
    stored_bodies: list[tuple[str, str]] = []
    with make_session_factory(engine).begin() as session:
        model = add_model_version(session, record=trained_to_record(trained))
        run = ForecastRun(trigger="manual", status="succeeded", finished_at=datetime.now(UTC))
        session.add(run)
        session.flush()
        for ticker, frame in frames.items():
            upsert_candles(session, ticker=ticker, frame=frame, source="bundled")
            closes = frame["close"]
            for ts in frame.index[-stored:]:
                as_of, last = ts.date(), float(closes.loc[ts])
                stored_bodies.append((ticker, as_of.isoformat()))
                for h, target in enumerate(next_sessions(as_of, 4), start=1):
                    close = last * (1 + 0.001 * h)
                    session.add(
                        Forecast(
                            run_id=run.id, model_version_id=model.id, ticker=ticker,
                            as_of_date=as_of, horizon=h, target_date=target, open=last,
                            high=close * 1.01, low=last * 0.99, close=close,
                            close_lo=close * 0.98, close_hi=close * 1.02,
                            attention={"dates": [as_of.isoformat()], "weights": [1.0]},
                        )
                    )  # fmt: skip
    engine.dispose()
    index = frames["AAPL"].index
    live = [ts.date().isoformat() for ts in index[(index > "2023-07-01") & (index < "2023-10-01")]]
    return stored_bodies, live


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HEADERS = {"Content-Type": "application/json"}


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[float, int, bytes]:
    """One POST /predict; (seconds until the whole response is read, status, body)."""
    started = time.perf_counter()
    conn.request("POST", "/predict", body, HEADERS)
    response = conn.getresponse()
    data = response.read()
    return time.perf_counter() - started, response.status, data


def load(
    port: int, requests: list[tuple[str, str]], clients: int, total: int, source: str
) -> dict[str, float]:
    """`total` requests over `clients` threads; latency percentiles in ms.

    Bodies are encoded up front and responses only checked for their source after timing, so
    the clients (which share the machine with the server) spend as little CPU as possible.
    """
    bodies = [json.dumps({"stock_symbol": t, "input_date": d}).encode() for t, d in requests]
    expected = f'"source":"{source}"'.encode()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        for i in range(worker, total, clients):
            elapsed, status, data = post(conn, bodies[i % len(bodies)])
            mine.append(elapsed)
            if status != 200 or expected not in data:
                failures.append(f"{status} {data[:200]!r}")
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ordered = sorted(latencies)
    pct = lambda p: ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000  # noqa: E731
    return {
        "requests": len(ordered),
        "p50": statistics.median(ordered) * 1000,
        "p90": pct(90),
        "p99": pct(99),
        "max": ordered[-1] * 1000,
        "rps": len(ordered) / wall,
        "errors": len(failures),
    }


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("server exited during start-up")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not become ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4000, help="stored requests per run")
    parser.add_argument("--live-requests", type=int, default=800)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--stored", type=int, default=60, help="stored sessions per ticker")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="candlecast-bench-") as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        print("building the database (bundled candles, stored forecasts, one model) ...")
        stored, live = build_database(url, args.stored)
        port = free_port()
        config = Path(folder) / "bench.toml"
        config.write_text(
            f'[database]\nurl = "{url}"\n[web]\nhost = "127.0.0.1"\nport = {port}\n',
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if k != "CANDLECAST_DATABASE_URL"}
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(config), str(args.workers)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(port, proc)
            live_bodies = [("AAPL", d) for d in live]
            results = []
            load(
                port, stored, args.clients, 400, "stored"
            )  # warm-up: connections, caches, code paths
            results.append(("stored", 1, load(port, stored, 1, min(1000, args.requests), "stored")))
            results.append(
                ("stored", args.clients, load(port, stored, args.clients, args.requests, "stored"))
            )
            # Warm every worker's model cache (TensorFlow import, model load, tracing).
            for _ in range(3):
                load(port, live_bodies, args.clients, 4 * args.clients, "live")
            results.append(("live (warm cache)", 1, load(port, live_bodies, 1, 200, "live")))
            results.append(
                ("live (warm cache)", args.clients, load(port, live_bodies, args.clients,
                                                         args.live_requests, "live"))
            )  # fmt: skip
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    load1, load5, _ = os.getloadavg()
    print(
        f"\nPOST /predict via web.serve (gunicorn, {args.workers} sync workers), loopback, SQLite; "
        f"os.cpu_count() = {os.cpu_count()}, load average {load1:.1f} / {load5:.1f} (1 / 5 min)"
    )
    header = f"{'path':<20}{'clients':>8}{'requests':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
    print(header + f"{'max ms':>9}{'req/s':>8}{'errors':>7}")
    for name, clients, r in results:
        print(
            f"{name:<20}{clients:>8}{r['requests']:>9}{r['p50']:>9.2f}{r['p90']:>9.2f}"
            f"{r['p99']:>9.2f}{r['max']:>9.1f}{r['rps']:>8.0f}{r['errors']:>7}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

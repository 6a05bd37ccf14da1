"""The real server (web.serve.serve over HTTP on 127.0.0.1) under slow clients, and its headers."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.web.conftest import Site
from tests.web.test_serve import free_port, start_server, wait_for, write_config
from web import SECURITY_HEADERS

SLOW_CLIENTS = 8
PROBES = 5
PROBE_LIMIT_S = 1.0
PARTIAL_HEADER = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@contextmanager
def running_server(site: Site, tmp_path: Path, **web: object) -> Iterator[int]:
    """`serve(load_config(path))` in a child process with the [web] settings `web` (one worker
    unless they say otherwise); yields its port."""
    port = free_port()
    proc = start_server(write_config(tmp_path, site.url, port, **web))
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", proc)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def slow_client(stack: ExitStack, port: int) -> socket.socket:
    """A connection that sent part of a request header and then stalls (until closed)."""
    sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
    sock.sendall(PARTIAL_HEADER)
    return sock


def get(port: int, path: str, *, timeout: float, method: str = "GET") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request(method, path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_health_answers_while_eight_clients_stall(sqlite_site: Site, tmp_path: Path) -> None:
    # One worker with the default threads and timeouts: all slow clients land on it.
    with running_server(sqlite_site, tmp_path) as port, ExitStack() as stack:
        slow = [slow_client(stack, port) for _ in range(SLOW_CLIENTS)]
        for _ in range(PROBES):
            start = time.monotonic()
            try:
                response = get(port, "/healthz", timeout=PROBE_LIMIT_S)
            except TimeoutError:
                raise AssertionError(
                    f"/healthz did not answer within {PROBE_LIMIT_S} s "
                    f"while {SLOW_CLIENTS} clients stall"
                ) from None
            assert response.status == 200
            assert time.monotonic() - start < PROBE_LIMIT_S
        for sock in slow:  # still stalled, still connected: the probes did not outlive them
            sock.setblocking(False)
            try:
                assert sock.recv(1) != b"", "a slow client was disconnected early"
            except BlockingIOError:
                pass


@pytest.mark.slow
def test_stalled_client_is_disconnected_after_read_timeout(
    sqlite_site: Site, tmp_path: Path
) -> None:
    web = {"threads": 2, "read_timeout_s": 1}
    with running_server(sqlite_site, tmp_path, **web) as port, ExitStack() as stack:
        slow = [slow_client(stack, port) for _ in range(2)]  # every thread of the worker
        start = time.monotonic()
        for sock in slow:
            sock.settimeout(10)
            assert sock.recv(1024) == b""  # closed by the server, nothing sent
        assert time.monotonic() - start < 5
        assert get(port, "/healthz", timeout=5).status == 200  # the threads are free again


def test_no_gunicorn_banner_and_api_errors_are_json(sqlite_site: Site, tmp_path: Path) -> None:
    with running_server(sqlite_site, tmp_path) as port:
        ok = get(port, "/healthz", timeout=5)
        assert ok.status == 200
        servers = ok.headers.get_all("Server") or []
        assert servers and all("gunicorn" not in value.lower() for value in servers)

        error = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        error.request("GET", "/predict")  # Flask-level 405 on an API path
        response = error.getresponse()
        body = json.loads(response.read())
        error.close()
        assert response.status == 405
        assert response.headers["Content-Type"].startswith("application/json")
        assert body["error"]["code"] == "method_not_allowed"
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        assert "gunicorn" not in (response.headers.get("Server") or "").lower()

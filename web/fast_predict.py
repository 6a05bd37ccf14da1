"""A fast path in front of Flask for POST /predict bodies answered before.

Dashboards and scripts ask for the same few forecasts over and over. web.api keeps every stored
/predict answer under the request's exact body bytes and query string (bodies up to
RAW_KEY_MAX_BYTES; only 200 answers, so only bodies that passed validation). This WSGI middleware
answers such a repeated request before Flask: when the response cache holds an answer for those
bytes and its last change-marker check may still answer ([web] change_check_ms, web.cache), it
sends that answer with the headers Flask would send (Content-Type, Content-Length, ETag,
Cache-Control and the security headers) and counts it in the request metrics like any other
/predict. It costs a dict lookup instead of Flask's request handling: in
benchmarks/web_latency.py stored /predict went from ~0.70 of a trivial Flask app's requests/s
(p50 1.7x) to 1.3-1.6x (p50 0.5-0.8x).

Anything else goes to Flask unchanged: another method or path, a chunked or longer body, a body
not answered before, a marker due for a check (Flask checks it, and may answer 503). The body read
here is handed on to Flask as it was. tests/web/test_fast_predict.py compares both paths byte for
byte.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from web.cache import CACHE_KEY, Entry, ResponseCache
from web.metrics import RECORD_KEY
from web.params import whole_number

RAW_KEY_MAX_BYTES = 256  # /predict bodies up to this size are also cached by their bytes
PATH = "/predict"

StartResponse = Callable[..., Any]


def raw_key(body: bytes, query_string: bytes) -> tuple[str, bytes, bytes]:
    """The cache key of a /predict answer by its request's bytes (web.api stores under it)."""
    return ("predict", body, query_string)


class PredictFastPath:
    """WSGI middleware: repeated POST /predict bodies answered from web.cache without Flask."""

    def __init__(self, app: Flask, security_headers: Iterable[tuple[str, str]]) -> None:
        self.app = app
        self.wsgi_app = app.wsgi_app
        self.security_headers = list(security_headers)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != PATH:
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        length = whole_number(environ.get("CONTENT_LENGTH"))  # ASCII digits only ('²': None)
        cache: ResponseCache | None = self.app.extensions.get(CACHE_KEY)
        if cache is None or length is None or not 0 < length <= RAW_KEY_MAX_BYTES:
            return self.wsgi_app(environ, start_response)
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # Flask reads the same bytes on a miss
        marker = cache.reusable_marker()
        if marker is None or len(body) != length:  # a check is due, or a short body
            return self.wsgi_app(environ, start_response)
        query = environ.get("QUERY_STRING", "").encode("latin-1")
        entry = cache.get(raw_key(body, query), marker)
        if entry is None:
            return self.wsgi_app(environ, start_response)
        start_response("200 OK", self._headers(entry))
        record = self.app.extensions.get(RECORD_KEY)
        if record is not None:
            record(PATH, "POST", 200, time.perf_counter() - started)
        return [entry.body]

    def _headers(self, entry: Entry) -> list[tuple[str, str]]:
        """The entry's own headers (web.cache.Entry.body_headers, the ones Flask's answer from it
        has) plus the app's security headers (the same list web.create_app adds to Flask's)."""
        return [*entry.body_headers(), *self.security_headers]


__all__ = ["RAW_KEY_MAX_BYTES", "PredictFastPath", "raw_key"]

"""Per-process cache of rendered responses, invalidated by the database's change marker.

The web app only reads; the nightly job, `candlecast sync` and other commands write. Every answer
the app renders from stored rows is therefore a pure function of (what was asked, the database's
contents). The contents are summarised by a *change marker* (db.web_queries.change_marker: a
random version that triggers of the database replace in every transaction writing a table whose
rows a page or answer shows - candles, forecasts, runs, model versions, baselines - whoever
writes; one primary-key lookup). A rendered body is cached under (key, marker); when the marker
differs from the one the cache was filled under, the whole cache is dropped. The version is
random, so a rebuilt schema (ids restarting) never brings back one an old answer was made under.

How often the marker is checked: once per `check_every_s` per process (`[web] change_check_ms`,
default 50 ms); requests in between reuse the last check without a system call or a lock, so an
answer may lag a commit by that long (0: check on every request). A check that could not be
trusted (a file modified within `recent_s`, a missing file) is not reused: the next request
checks again.

On SQLite a check is first a stat of the database file and its `-wal` file (every commit
writes to one of them): while neither changed, and neither was modified within the last
`recent_s` seconds (file times are coarse, so a file written moments ago is always re-queried),
the query is skipped. A missing file always goes to the query (which answers 503 as usual).
Under load the stat mattered: with 16 threads per worker each stat releases the GIL, and checking
on every request cost about 8% of stored /predict throughput (benchmarks/web_latency.py).
A SQLite file swapped for another one also clears the cache (db.session.on_file_change).

Each cached entry has an ETag (a hash of the marker and the key): a GET with a matching
If-None-Match is answered 304 without a body. Answers showing a live forecast (inferred from a
model in memory, not stored) are never cached and have no ETag, pages and API alike
(`never_cache()`). A key holds only what the route reads (unknown query arguments are not part
of it).

Each app (hence each gunicorn worker) has its own ResponseCache, made on first use
(`response_cache()`), bounded to `max_bytes` (`[web] cache_mb`): each entry is charged its body,
key and a fixed overhead, and the least recently used entries are dropped first.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from flask import Response, current_app, g, make_response, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from werkzeug.utils import get_content_type

from db import web_queries as q
from db.session import on_file_change, sqlite_file_path

CACHE_KEY = "candlecast.response_cache"
NO_CACHE_FLAG = "candlecast_never_cache"
DEFAULT_MAX_BYTES = 32 << 20  # [web] cache_mb's default
# Bytes an entry holds besides its body and key text (the Entry, its ETag, the key's objects, the
# dict slot); measured with tracemalloc in tests/web/test_cache.py, rounded up.
ENTRY_OVERHEAD = 640
RECENT_S = 2.0  # files modified this recently are re-queried on every request
Marker = tuple[int, ...]
F = TypeVar("F", bound=Callable[..., Any])

_create_lock = threading.Lock()


@dataclass(frozen=True)
class Entry:
    """A rendered 200 body with its content type and ETag (unquoted)."""

    etag: str
    body: bytes
    mimetype: str

    def response(self, *, conditional: bool = True) -> Response:
        """The body (200) or, when `conditional` and If-None-Match matches the ETag, a 304."""
        if (
            conditional
            and "HTTP_IF_NONE_MATCH" in request.environ
            and request.if_none_match.contains_weak(self.etag)
        ):
            response = Response(status=304)
        else:
            response = Response(self.body, mimetype=self.mimetype)
        response.headers.extend(self.validator_headers())
        return response

    def validator_headers(self) -> list[tuple[str, str]]:
        """ETag and Cache-Control of every answer from this entry (Flask's, web.fast_predict's):
        clients revalidate (cheaply) every time."""
        return [("ETag", f'"{self.etag}"'), ("Cache-Control", "no-cache")]

    def body_headers(self) -> list[tuple[str, str]]:
        """What a 200 from this entry carries besides the app-wide headers: Content-Type as
        Flask's Response(body, mimetype=...) sets it, Content-Length and validator_headers()."""
        return [
            ("Content-Type", get_content_type(self.mimetype, "utf-8")),
            ("Content-Length", str(len(self.body))),
            *self.validator_headers(),
        ]


def make_etag(marker: Marker, key: Hashable) -> str:
    """A short stable hash of the marker and the key."""
    return hashlib.blake2b(repr((marker, key)).encode(), digest_size=12).hexdigest()


class ResponseCache:
    """Rendered bodies keyed by a hashable key, valid for one change marker. Thread-safe."""

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        check_every_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        files: tuple[Path, ...] = (),
        recent_s: float = RECENT_S,
    ) -> None:
        self.max_bytes = max_bytes
        self.size_bytes = 0  # what the kept entries are charged (see entry_bytes)
        self.check_every_s = check_every_s
        self.files = files  # SQLite: the database file and its -wal file
        self.recent_s = recent_s
        self._files_seen: tuple[tuple[int, int, int, int] | None, ...] | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[Entry, int]] = OrderedDict()
        self._marker: Marker | None = None
        self._marker_read_at: float | None = None
        self._reusable = False  # the last check may serve requests until check_every_s passes

    def marker(self, engine: Engine, session: Callable[[], Session]) -> Marker:
        """The database's change marker: checked at most once per request and at most once per
        `check_every_s` per process (see the module docstring); a new marker empties the cache.

        The query runs on a pooled connection of `engine`; `session()` (e.g. web.db_session)
        is only used to report a failure the way every other query does.
        """
        cached = g.get("candlecast_marker")
        if cached is not None:
            return cached
        now = self._clock()
        last = self.reusable_marker(now)
        if last is not None:
            g.candlecast_marker = last
            return last
        last = self._marker
        seen = self._stat_files() if self.files else None
        # SQLite: no commit since the marker was read, and the file is there
        unchanged = bool(self.files) and seen is not None and seen == self._files_seen
        if unchanged and last is not None:
            marker = last
        else:
            marker = q.change_marker_fast(engine, session)
        with self._lock:
            if marker != self._marker:
                self._entries.clear()
                self.size_bytes = 0
                self._marker = marker
            self._marker_read_at = now
            self._files_seen = seen  # taken before the query: a later commit differs from it
            self._reusable = not self.files or seen is not None
        g.candlecast_marker = marker
        return marker

    def reusable_marker(self, now: float | None = None) -> Marker | None:
        """The last marker read, while that check may still answer (within `check_every_s`, and
        trusted: see the module docstring); else None. No system call, no lock."""
        last, read_at = self._marker, self._marker_read_at
        now = self._clock() if now is None else now
        if self._reusable and last is not None and read_at is not None:
            if now - read_at < self.check_every_s:
                return last
        return None

    def _stat_files(self) -> tuple[tuple[int, int, int, int] | None, ...] | None:
        """(dev, inode, size, mtime) of each file (None if absent), or None when the database
        file is missing or a file was modified within `recent_s` (then always query)."""
        recent = time.time_ns() - int(self.recent_s * 1e9)
        out: list[tuple[int, int, int, int] | None] = []
        for path in self.files:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                out.append(None)
                continue
            if st.st_mtime_ns >= recent:
                return None
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return None if out[0] is None else tuple(out)

    def get(self, key: Hashable, marker: Marker) -> Entry | None:
        with self._lock:
            if marker != self._marker:
                return None
            kept = self._entries.get(key)
            if kept is None:
                return None
            self._entries.move_to_end(key)
            return kept[0]

    def put(self, key: Hashable, marker: Marker, body: bytes, mimetype: str) -> Entry:
        """Store `body` under `key` if `marker` is still current; the entry either way."""
        return self.put_entry(key, marker, Entry(make_etag(marker, key), body, mimetype))

    def put_entry(self, key: Hashable, marker: Marker, entry: Entry) -> Entry:
        """Store `entry` (e.g. one already kept under another key) under `key` if `marker` is
        still current, dropping the least recently used entries beyond `max_bytes` (an entry
        larger than that is not kept); `entry` either way. Each key is charged the whole body,
        also when another key shares it (an upper bound)."""
        size = entry_bytes(key, entry)
        with self._lock:
            if marker != self._marker:
                return entry
            old = self._entries.pop(key, None)
            if old is not None:
                self.size_bytes -= old[1]
            if size > self.max_bytes:
                return entry
            self._entries[key] = (entry, size)
            self.size_bytes += size
            while self.size_bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.size_bytes -= dropped
        return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.size_bytes = 0
            self._marker = None
            self._marker_read_at = None
            self._files_seen = None
            self._reusable = False

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        """Whether `key` has an entry under the last marker read (without reading it again)."""
        return key in self._entries


def entry_bytes(key: Hashable, entry: Entry) -> int:
    """What an entry is charged against the budget: body, key text and ENTRY_OVERHEAD."""
    return len(entry.body) + len(repr(key)) + ENTRY_OVERHEAD


def never_cache() -> None:
    """Mark the answer being rendered as one no cache may keep or tag (it shows a live forecast,
    which depends on the models in memory as well as the database): cached_page and the
    forecast API then send it without an ETag."""
    g.setdefault(NO_CACHE_FLAG, True)


def cacheable() -> bool:
    """False once never_cache() was called for this request."""
    return NO_CACHE_FLAG not in g


def response_cache() -> ResponseCache:
    """The current app's ResponseCache (made on first use; cleared when its SQLite file is
    replaced by another one)."""
    cache = current_app.extensions.get(CACHE_KEY)
    if cache is None:
        from web.context import state

        with _create_lock:
            cache = current_app.extensions.get(CACHE_KEY)
            if cache is None:
                engine = state().engine
                path = sqlite_file_path(state().config.database.url)  # (the engine's is a URI)
                files = (path, path.with_name(path.name + "-wal")) if path is not None else ()
                web = state().config.web
                cache = ResponseCache(
                    files=files,
                    check_every_s=web.change_check_ms / 1000,
                    max_bytes=web.cache_mb << 20,
                )
                on_file_change(engine, cache.clear)
                current_app.extensions[CACHE_KEY] = cache
    return cache


def cached_page(key_fn: Callable[..., Hashable | None]) -> Callable[[F], F]:
    """Decorate a page view so its rendered 200 body is cached per change marker, with an ETag.

    `key_fn` gets the view's arguments and returns a hashable key of everything *besides the
    database* the page depends on (the query arguments it reads and only those, the date if the
    page shows "today", ...), or None to render without the cache (e.g. for arguments you do not
    want to cache). The key is prefixed by the endpoint name. Only the body and its mimetype are
    cached (headers set by the view are not; after_request hooks still run on every response).
    A GET/HEAD whose If-None-Match matches the ETag gets a 304. A page whose rendering called
    never_cache() (it shows a live forecast) is sent as rendered, without an ETag.
    Example (web/pages.py):

        from web.cache import cached_page

        @bp.get("/tickers/<ticker>")
        @cached_page(lambda ticker: (ticker.upper(), request.args.get("level")))
        def ticker_page(ticker: str) -> str:
            ...

    Pages that show ages relative to the wall clock ("updated 3 h ago") should put a coarse
    time bucket in the key, or not use the cache.
    """

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = key_fn(*args, **kwargs)
            if key is None:
                return view(*args, **kwargs)
            from web.context import db_session, state

            cache = response_cache()
            full_key = ("page", request.endpoint, key)
            marker = cache.marker(state().engine, db_session)
            entry = cache.get(full_key, marker)
            if entry is None:
                response = make_response(view(*args, **kwargs))
                if response.status_code != 200 or response.is_streamed or not cacheable():
                    return response
                entry = cache.put(full_key, marker, response.get_data(), response.mimetype)
            return entry.response(conditional=request.method in ("GET", "HEAD"))

        return wrapper  # type: ignore[return-value]

    return decorate


__all__ = [
    "Entry",
    "ResponseCache",
    "cacheable",
    "cached_page",
    "make_etag",
    "never_cache",
    "response_cache",
]

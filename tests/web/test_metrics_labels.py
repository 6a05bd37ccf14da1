"""Labels fed by the client cannot grow /metrics (issue 17 item 9): real HTTP, random methods."""

from __future__ import annotations

import http.client
import random
import string
from urllib.parse import urlsplit

from tests.web.conftest import Site, http_get, serving

REQUESTS = 3_000


def test_random_methods_leave_metrics_small(sqlite_site: Site) -> None:
    rng = random.Random(7)
    with serving(sqlite_site.app) as base:
        parts = urlsplit(base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        statuses = set()
        try:
            for _ in range(REQUESTS):
                method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
                path = rng.choice(["/", "/predict", "/api/runs", f"/x{rng.randint(0, 10**9)}"])
                conn.request(method, path)
                response = conn.getresponse()
                response.read()
                statuses.add(response.status)
                if response.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        finally:
            conn.close()
        status, _, body = http_get(base, "/metrics")
    assert status == 200 and statuses <= {400, 404, 405, 501}
    text = body.decode()
    assert len(body) < 250_000, len(body)
    assert 'method="other"' in text
    methods = {
        line.split('method="')[1].split('"')[0] for line in text.splitlines() if 'method="' in line
    }
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "other"}

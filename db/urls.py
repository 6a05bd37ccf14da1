"""Database URLs as they may be shown: in messages, logs and command output.

A password can sit in two places of a SQLAlchemy URL: `user:password@host` and the query string
(`?password=...`, `?sslpassword=...`, which libpq and psycopg accept). Both are replaced by `***`
wherever a URL is shown; a string that is not a URL at all is masked the same way by pattern.
A password holding an unencoded `@` (`user:p@ss@host`) is masked whole: SQLAlchemy would take
its tail for the host (and jobs.config rejects such a URL before any connection).
"""

from __future__ import annotations

import re

MASK = "***"
# Query keys whose values are secrets: any key naming a password, secret or token.
_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:password|secret|token)[^=&#]*=)[^&#]*", re.IGNORECASE)
# Not a parsable URL: everything from the password up to the last `@` (over-masks rather than
# shows the tail of a password that holds `@`, `/`, `?` or `#`).
_USERINFO_PASSWORD = re.compile(r"(://[^:/?#]*:).*@", re.DOTALL)


def safe_url(url: str) -> str:
    """`url` with every password hidden, for messages, logs and command output."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        if parsed.host is not None and "@" in parsed.host:  # the tail of `p@ss` read as the host
            parsed = parsed.set(host=parsed.host.rsplit("@", 1)[1])
        shown = parsed.render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        shown = _USERINFO_PASSWORD.sub(rf"\g<1>{MASK}@", str(url))
    return _SECRET_QUERY.sub(rf"\g<1>{MASK}", shown)


__all__ = ["MASK", "safe_url"]

"""Database URLs as they may be shown: in messages, logs and command output.

A password can sit in two places of a SQLAlchemy URL: `user:password@host` and the query string
(`?password=...`, `?sslpassword=...`, which libpq and psycopg accept). Both are replaced by `***`
wherever a URL is shown; a string that is not a URL at all is masked the same way by pattern.
"""

from __future__ import annotations

import re

MASK = "***"
# Query keys whose values are secrets: any key naming a password, secret or token.
_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:password|secret|token)[^=&#]*=)[^&#]*", re.IGNORECASE)
_USERINFO_PASSWORD = re.compile(r"(://[^:/@?#]*:)[^@/?#]*@")


def safe_url(url: str) -> str:
    """`url` with every password hidden, for messages, logs and command output."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        shown = _USERINFO_PASSWORD.sub(rf"\g<1>{MASK}@", str(url))
    return _SECRET_QUERY.sub(rf"\g<1>{MASK}", shown)


__all__ = ["safe_url"]

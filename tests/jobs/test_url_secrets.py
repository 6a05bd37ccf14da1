"""A password in a database URL is never shown: `user:pw@` or `?password=` (issue 17 item 13)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from db.urls import safe_url
from tests.conftest import POSTGRES_URL

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql+psycopg://u:{SECRET}@h/db", "postgresql+psycopg://u:***@h/db"),
        (f"postgresql+psycopg://u@h/db?password={SECRET}", "postgresql+psycopg://u@h/db?password=***"),
        (
            f"postgresql+psycopg://u@h/db?sslmode=require&SSLPassword={SECRET}&x=1",
            "postgresql+psycopg://u@h/db?SSLPassword=***&sslmode=require&x=1",
        ),
        (f"no scheme at all://a:{SECRET}@h?api_token={SECRET}", "no scheme at all://a:***@h?api_token=***"),
        ("sqlite:////var/lib/candlecast/candlecast.db", "sqlite:////var/lib/candlecast/candlecast.db"),
        # an unencoded '@' in the password: SQLAlchemy takes its tail for the host
        (f"postgresql+psycopg://u:p@{SECRET}@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        (f"postgresql+psycopg://a@b:c@{SECRET}@h/db", "postgresql+psycopg://a%40b:***@h/db"),
        (f"postgresql://u:p@{SECRET}:x@h/db", "postgresql://u:***@h/db"),  # not parsable
        (f"postgresql://a@b:{SECRET}@h:bad/db", "postgresql://a@b:***@h:bad/db"),  # not parsable
    ],
)  # fmt: skip
def test_safe_url_masks_every_password(url: str, shown: str) -> None:
    assert safe_url(url) == shown and SECRET not in safe_url(url)


def _cli(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text('[tickers]\nsymbols = ["AAPL"]\n')
    env = {**os.environ, "CANDLECAST_DATABASE_URL": url, "PYTHONPATH": os.getcwd()}
    code = "import sys; from jobs.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_a_connection_error_never_shows_a_query_password(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:1/none?password={SECRET}&connect_timeout=2"
    for args in (["db", "upgrade"], ["db", "current"], ["sync"]):
        done = _cli(tmp_path, url, *args)
        assert done.returncode != 0, args
        assert SECRET not in done.stdout + done.stderr, (args, done.stderr)
        assert "password=***" in done.stderr or "database error" in done.stderr, done.stderr


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a libpq parameter
@pytest.mark.skipif(POSTGRES_URL is None, reason="needs CANDLECAST_TEST_POSTGRES_URL")
@pytest.mark.slow
def test_db_upgrade_never_prints_a_query_password(tmp_path: Path, db_url: str) -> None:
    # trust authentication ignores the password, so the commands succeed and print the URL
    url = make_url(db_url).update_query_dict({"password": SECRET}).render_as_string(False)
    for args in (["db", "upgrade"], ["db", "current"]):
        done = _cli(tmp_path, url, *args)
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout + done.stderr
    assert "password=***" in _cli(tmp_path, url, "db", "upgrade").stdout


def test_a_password_with_an_unencoded_at_is_refused_without_showing_it(tmp_path: Path) -> None:
    # SQLAlchemy reads `user:p@<secret>@host` as password `p`, host `<secret>@host`: the driver's
    # "failed to resolve host" error showed the secret. The config refuses it before connecting.
    url = f"postgresql+psycopg://nobody:p@{SECRET}@127.0.0.1:1/none?connect_timeout=2"
    for args in (["db", "upgrade"], ["db", "current"]):
        done = _cli(tmp_path, url, *args)
        assert done.returncode != 0, args
        assert SECRET not in done.stdout + done.stderr, (args, done.stderr)
        assert "unencoded '@'" in done.stderr and "nobody:***@127.0.0.1" in done.stderr

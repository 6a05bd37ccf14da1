"""`pip install .` works outside the checkout (issue 11): the wheel ships the default config and the
migrations, and `init`, `db upgrade`, `run-once` and `web` work from any directory.

The wheel is built from a copy of the working tree (no network, no build isolation) and installed
without dependencies into a temporary venv that sees this venv's site-packages through a .pth file
(TensorFlow and the rest are not reinstalled). Commands run from a temporary directory with
PYTHONPATH and CANDLECAST_* unset, so the checkout is not importable.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real daemons, training or installs: seconds each

REPO = Path(__file__).resolve().parents[1]
# What the copy the wheel is built from leaves out: build output, caches, tests, benchmarks.
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "var",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    "tests",
    "benchmarks",
)
TINY_MODEL = {"epochs": "1", "units": "4", "batch_size": "64", "patience": "1"}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    source: Path  # the copy of the working tree the wheel was built from
    venv: Path
    bin: Path
    site_packages: Path
    env: dict[str, str]


def _run(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


def _clean_env(venv_bin: Path) -> dict[str, str]:
    """This environment without PYTHONPATH, venv or candlecast settings; the temp venv on PATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
        and not key.startswith("CANDLECAST_")
        and not key.startswith("PIP_")
    }
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv_bin.parent)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Build the wheel from a copy of the working tree and install it into a fresh venv."""
    root = tmp_path_factory.mktemp("install")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=COPY_IGNORE)
    dist = root / "dist"
    pip_env = {**_clean_env(Path(sys.executable).parent), "PIP_NO_INDEX": "1"}
    _ok(
        _run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
            + ["--no-index", "-q", "-w", str(dist), str(source)],
            cwd=root,
            env=pip_env,
        )
    )
    (wheel,) = dist.glob("candlecast-*.whl")

    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False, symlinks=True)
    venv_bin = env_dir / "bin"
    python = venv_bin / "python"
    site_packages = Path(
        _ok(
            _run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=root,
                env=_clean_env(venv_bin),
            )
        ).stdout.strip()
    )
    # This venv's site-packages (TensorFlow, ...) after the temp venv's own: only the directory is
    # added, its .pth files (the editable install's finder) are not processed.
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site_packages / "_candlecast_test_deps.pth").write_text("\n".join(ours) + "\n")
    _ok(
        _run(
            [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
            + ["--no-deps", "--no-index", str(wheel)],
            cwd=root,
            env=pip_env,
        )
    )
    assert (venv_bin / "candlecast").is_file()
    yield Installed(wheel, source, env_dir, venv_bin, site_packages, _clean_env(venv_bin))


def test_wheel_ships_default_config_and_migrations(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        packaged_config = wheel.read("candlecast_files/config.toml").decode()
    files = {name for name in names if name.startswith("candlecast_files/")}
    migrations = {
        f"candlecast_files/alembic/versions/{path.name}"
        for path in (installed.source / "alembic" / "versions").glob("*.py")
    }
    assert migrations, "no migration scripts in the source tree"
    assert files == {
        "candlecast_files/config.toml",
        "candlecast_files/alembic.ini",
        "candlecast_files/alembic/env.py",
        "candlecast_files/alembic/script.py.mako",
        *migrations,
    }
    assert packaged_config == (installed.source / "config.toml").read_text()
    assert not any(name.split("/")[0] in {"tests", "benchmarks", "alembic"} for name in names)
    # Top-level names other than the packages and their metadata: none (nothing in site-packages/).
    tops = {name.split("/")[0] for name in names}
    assert tops == {"jobs", "forecasting", "db", "web", "candlecast_files"} | {
        name for name in tops if name.endswith(".dist-info")
    }


def test_installed_package_runs_from_site_packages_not_the_checkout(
    installed: Installed, tmp_path: Path
) -> None:
    probe = (
        "import sys, jobs, db, web, forecasting, candlecast_files\n"
        "from jobs.config import default_config_path, in_checkout, load_config\n"
        "from db.migrate import migrations_home\n"
        "for module in (jobs, db, web, forecasting):\n"
        "    print(module.__file__)\n"
        "print(migrations_home())\n"
        "print(default_config_path())\n"
        "print(in_checkout())\n"
        "print(load_config().database.url)\n"
        "from pathlib import Path\n"
        "print(any(Path(entry).resolve() == Path(sys.argv[1]) for entry in sys.path if entry))\n"
    )
    out = _ok(
        _run(
            [str(installed.bin / "python"), "-c", probe, str(REPO)],
            cwd=tmp_path,
            env=installed.env,
        )
    ).stdout.splitlines()
    *modules, home, default, checkout, url, repo_on_path = out
    site = installed.site_packages.resolve()
    for module in modules:
        assert Path(module).resolve().is_relative_to(site), module
    assert Path(home) == site / "candlecast_files"
    # No ./config.toml here: the packaged default, its SQLite file under the current directory.
    assert Path(default) == site / "candlecast_files" / "config.toml"
    assert checkout == "False"
    assert url == f"sqlite:///{tmp_path.resolve() / 'var' / 'candlecast.db'}"
    assert repo_on_path == "False"


def _set_keys(config: Path, section: str, values: dict[str, str]) -> None:
    """Replace the values of existing keys of `section` in the TOML file `config`."""
    text = config.read_text()
    head, sep, body = text.partition(f"\n[{section}]\n")
    assert sep, f"no [{section}] section in the generated config.toml"
    table, sep2, tail = body.partition("\n[")
    for key, value in values.items():
        table, count = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", table)
        assert count == 1, f"[{section}] {key} not found once in the generated config.toml"
    config.write_text(head + sep + table + sep2 + tail)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_init_upgrade_run_once_and_web_from_any_directory(
    installed: Installed, tmp_path: Path
) -> None:
    candlecast = str(installed.bin / "candlecast")
    env = installed.env

    result = _ok(_run([candlecast, "init"], cwd=tmp_path, env=env))
    config = tmp_path / "config.toml"
    assert config.read_text() == (installed.source / "config.toml").read_text()
    assert "config.toml" in result.stderr

    again = _run([candlecast, "init"], cwd=tmp_path, env=env)
    assert again.returncode in (1, 2)
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert "already exists" in again.stderr
    assert config.read_text() == (installed.source / "config.toml").read_text()  # untouched

    _set_keys(config, "model", TINY_MODEL)
    _set_keys(config, "data", {"history_years": "1"})  # fewer windows: a faster fit
    _ok(_run([candlecast, "db", "upgrade"], cwd=tmp_path, env=env))
    database = tmp_path / "var" / "candlecast.db"
    assert database.is_file()

    _ok(_run([candlecast, "run-once", "--tickers", "AAPL"], cwd=tmp_path, env=env, timeout=240))

    port = _free_port()
    server = subprocess.Popen(
        [candlecast, "web", "--workers", "1", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            status = _get(f"http://127.0.0.1:{port}/healthz")
            if status == 200:
                break
            time.sleep(0.3)
        assert status == 200, f"/healthz answered {status}; server exit code {server.poll()}"
    finally:
        server.terminate()
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()

    # Nothing was written into the installation: no database, no var/ in site-packages.
    assert not list(installed.venv.rglob("*.db"))
    assert not (installed.site_packages / "var").exists()

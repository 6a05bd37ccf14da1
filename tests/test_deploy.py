"""The systemd units and environment file under deploy/ (issue 11, deployment files).

`systemd-analyze verify` checks each unit as systemd would load it (with ExecStart pointed at this
checkout's `candlecast`, since /opt/candlecast is not installed here); the hardening, stop and
restart settings are read back from the files; the environment example loads as a real config.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.config import DATABASE_URL_ENV, DEFAULT_CONFIG_PATH, load_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNITS = {"candlecast-scheduler.service": "scheduler", "candlecast-web.service": "web"}
ENV_EXAMPLE = DEPLOY / "candlecast.env.example"
INSTALLED_CANDLECAST = "/opt/candlecast/venv/bin/candlecast"
# The console script of the environment running the tests (the venv's bin/, not resolved).
LOCAL_CANDLECAST = Path(sys.executable).parent / "candlecast"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
}
COMMON = {
    "User": "candlecast",
    "Group": "candlecast",
    "EnvironmentFile": "/etc/candlecast/candlecast.env",
    "WorkingDirectory": "/var/lib/candlecast",
    "StateDirectory": "candlecast",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
    "KillMode": "mixed",
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No config override (nor CANDLECAST_DATABASE_URL) from the caller's environment leaks in."""
    for var in list(os.environ):
        if var.startswith("CANDLECAST_") and ("__" in var or var == DATABASE_URL_ENV):
            monkeypatch.delenv(var)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (systemd syntax: repeated keys add,
    `#`/`;` comments, a trailing backslash continues the line)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical = re.sub(r"\\\n", " ", text)
    for number, line in enumerate(logical.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"line {number}: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit((DEPLOY / name).read_text())


def seconds(span: str) -> float:
    """A systemd time span such as 15min, 30s, 1h 30min, or bare seconds."""
    scale = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts and "".join(n + u for n, u in parts) == span.replace(" ", ""), span
    return sum(float(n) * scale[u] for n, u in parts)


def systemd_analyze() -> str:
    if not Path(SYSTEMD_ANALYZE).exists():
        reason = "systemd-analyze not installed (Debian package `systemd`): units not verified"
        print(reason)
        pytest.skip(reason)
    return SYSTEMD_ANALYZE


def analyze(*args: str) -> subprocess.CompletedProcess:
    """Run `systemd-analyze ARGS` (offline: no running systemd needed, no side effects)."""
    return subprocess.run(
        [systemd_analyze(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_LOG_COLOR": "0", "LANG": "C"},
    )


def verify(unit_path: Path) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` of one unit file, as systemd would load it."""
    return analyze("verify", "--man=no", str(unit_path))


def local_copy(name: str, tmp_path: Path, *, extra: str = "") -> Path:
    """The unit in tmp_path, same name, ExecStart pointed at this environment's candlecast."""
    text = (DEPLOY / name).read_text()
    assert f"ExecStart={INSTALLED_CANDLECAST} " in text
    text = text.replace(INSTALLED_CANDLECAST, str(LOCAL_CANDLECAST))
    if extra:
        text = text.replace("[Service]\n", f"[Service]\n{extra}\n")
    path = tmp_path / name
    path.write_text(text)
    return path


def about(stderr: str, name: str) -> list[str]:
    """The lines of systemd-analyze's output about our unit (not unrelated system units)."""
    return [line for line in stderr.splitlines() if name in line]


@pytest.mark.parametrize("name", list(UNITS))
def test_systemd_analyze_verify_passes_without_warnings(name, tmp_path):
    assert LOCAL_CANDLECAST.exists(), f"no console script at {LOCAL_CANDLECAST}"
    result = verify(local_copy(name, tmp_path))
    assert result.returncode == 0, result.stderr
    assert about(result.stderr + result.stdout, name) == []


def test_verify_reports_a_mistake_in_our_unit(tmp_path):
    """The check above is not vacuous: a misspelt key and a missing binary are reported."""
    name = "candlecast-web.service"
    result = verify(local_copy(name, tmp_path, extra="ProtectSytem=strict"))
    assert any("ProtectSytem" in line for line in about(result.stderr, name)), result.stderr
    path = tmp_path / name
    path.write_text((DEPLOY / name).read_text().replace(INSTALLED_CANDLECAST, "/nowhere/cc"))
    result = verify(path)
    assert result.returncode != 0
    assert any("/nowhere/cc" in line for line in about(result.stderr, name)), result.stderr


@pytest.mark.parametrize("name", list(UNITS))
def test_systemd_exposure_score_is_low(name, tmp_path):
    """`systemd-analyze security` rates the hardening (0 = locked down, 10 = none): <= 4."""
    result = analyze("security", "--offline=yes", "--no-pager", str(local_copy(name, tmp_path)))
    match = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= 4.0, result.stdout


@pytest.mark.parametrize("name", list(UNITS))
def test_units_run_as_the_service_user_with_hardening(name):
    service = unit(name)["Service"]
    for key, value in {**COMMON, **HARDENING}.items():
        assert service.get(key, [None])[-1] == value, f"{name}: {key}={service.get(key)}"
    assert seconds(service["RestartSec"][-1]) > 0
    assert "DynamicUser" not in service, name  # a fixed user owns the state directory


@pytest.mark.parametrize("name", list(UNITS))
def test_units_start_after_the_network_and_postgresql(name):
    section = unit(name)["Unit"]
    for key in ("After", "Wants"):
        targets = " ".join(section.get(key, [])).split()
        assert "network-online.target" in targets and "postgresql.service" in targets, key
    assert unit(name)["Install"]["WantedBy"] == ["multi-user.target"]


def test_scheduler_stop_timeout_lets_the_ticker_in_progress_finish():
    """The daemon finishes the ticker it is training on SIGTERM: minutes, not systemd's 90 s."""
    service = unit("candlecast-scheduler.service")["Service"]
    assert seconds(service["TimeoutStopSec"][-1]) >= 10 * 60
    web = unit("candlecast-web.service")["Service"]
    assert seconds(web["TimeoutStopSec"][-1]) > 10  # gunicorn's graceful_timeout is 10 s


@pytest.mark.parametrize(("name", "command"), list(UNITS.items()))
def test_exec_start_is_a_real_candlecast_command(name, command):
    (exec_start,) = unit(name)["Service"]["ExecStart"]
    program, *args = exec_start.split()
    assert program == INSTALLED_CANDLECAST
    assert args[:1] == [command]
    result = subprocess.run(
        [str(LOCAL_CANDLECAST), *args, "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"Usage: candlecast {command}" in result.stdout


def env_lines(*, examples: bool) -> dict[str, str]:
    """KEY=value lines of the example environment file (with the commented-out examples)."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if examples and re.match(r"#CANDLECAST_\w+=", line):
            line = line[1:]
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"not KEY=value: {line!r}"
        values[key] = value
    return values


def test_env_example_sets_the_config_and_a_postgresql_database():
    values = env_lines(examples=False)
    assert values["CANDLECAST_CONFIG"] == "/etc/candlecast/config.toml"
    assert values[DATABASE_URL_ENV].startswith("postgresql+psycopg://")


@pytest.mark.parametrize("examples", [False, True])
def test_env_example_loads_as_a_valid_config(monkeypatch, examples):
    """Its settings (and each commented example, uncommented) pass load_config's validation."""
    values = env_lines(examples=examples)
    values.pop("CANDLECAST_CONFIG")
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    config = load_config(DEFAULT_CONFIG_PATH)
    assert config.database.url == values[DATABASE_URL_ENV]
    if examples:
        assert config.data.provider == "yfinance"
        assert config.tickers.symbols == ("AAPL", "MSFT", "GOOGL")
        assert config.web.host == "0.0.0.0"

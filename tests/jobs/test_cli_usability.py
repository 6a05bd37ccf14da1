"""The command line as a new user meets it (issue 20 item 12): init creates its directory, --help
shows whole sentences, a past forecast shows what happened, the tables fit 80 columns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.cli import cli, first_sentence, main
from jobs.cli_support import EXIT_OK
from tests.jobs.test_cli_model import config_file


def test_init_creates_a_missing_directory(tmp_path: Path, capsys) -> None:
    target = tmp_path / "new" / "deeper"
    assert main(["init", str(target)]) == EXIT_OK
    assert (target / "config.toml").is_file()
    assert main(["init", str(target)]) != EXIT_OK  # never overwritten
    assert "already exists" in capsys.readouterr().err


def test_help_shows_each_commands_first_sentence_whole(capsys) -> None:
    assert main(["--help"]) == EXIT_OK
    out = " ".join(capsys.readouterr().out.split("Commands:", 1)[1].split())
    assert "..." not in out  # click's short help cut every description with "..."
    for name, command in cli.commands.items():
        sentence = first_sentence(command.help)
        assert sentence.endswith(".") and f"{name} {sentence}" in out, name
    assert first_sentence("One. Two.\n\nThree.") == "One."


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # output, not storage
def test_past_forecast_shows_the_actuals_and_tables_fit_80_columns(
    tmp_path: Path, universe: Path, migrated_url: str, candlecast, monkeypatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # a terminal 80 columns wide
    config = config_file(tmp_path, universe, migrated_url)
    run = candlecast(config, "run-once")
    run.stdout, run.stderr = run.communicate(timeout=300)
    assert run.returncode == 0, run.stderr
    past = candlecast(config, "forecast", "--ticker", "AAPL", "--as-of", "2023-12-20")
    past.stdout, past.stderr = past.communicate(timeout=300)
    assert past.returncode == 0, past.stderr
    for out in (run.stdout, past.stdout):
        assert max(len(line) for line in out.splitlines()) <= 80, out
    rows = [line for line in past.stdout.splitlines() if re.match(r"\s*2023-12-2\d ", line)]
    # the four sessions after 2023-12-20, each with the actual close and whether it was inside
    assert [r.split()[0] for r in rows] == ["2023-12-21", "2023-12-22", "2023-12-26", "2023-12-27"]
    assert "actual" in past.stdout and "in 80%" in past.stdout
    assert all(r.split()[-1] in ("yes", "no") for r in rows)
    assert " 194.68 " in rows[0]  # AAPL's close of 2023-12-21 (bundled data)
    closes = [
        line for line in run.stdout.splitlines() if line.lstrip().startswith(("AAPL", "MSFT"))
    ]
    assert len(closes) == 2 and all(len(line.split()) >= 8 for line in closes)  # 4 closes unwrapped


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # output, not storage
def test_backtest_shows_progress_on_stderr_while_it_works(
    tmp_path: Path, universe: Path, migrated_url: str, candlecast
) -> None:
    config = config_file(tmp_path, universe, migrated_url)
    args = ["backtest", "--tickers", "AAPL,MSFT", "--start", "2023-11-20", "--end", "2023-12-29"]
    args += ["--output", str(tmp_path / "bt.csv"), "--retrain-every", "10"]
    process = candlecast(config, *args)
    try:
        first = process.stderr.readline()
        # the first line comes before any candle is fetched or model trained: the work goes on
        assert first.startswith("backtest: 2 ticker(s), 2023-11-20..2023-12-29"), first
        assert process.poll() is None
        out, rest = process.communicate(timeout=300)
    finally:
        process.kill()  # (the fixture also kills what is left running)
    assert process.returncode == 0, rest
    steps = re.findall(r"^backtest (\d+)/(\d+) \(\d+%, \d+ s, ETA \d+ s\): ", rest, re.M)
    assert steps and steps[-1][0] == steps[-1][1]  # per (block, ticker) step, ending at the total
    assert out.index("against") < out.index("garch")  # the summary, after the work

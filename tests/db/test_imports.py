"""The db package stays light: no web, jobs, forecasting or TensorFlow, no import side effects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, sys
before = set(os.listdir("."))
import db, db.models, db.session, db.repository, db.migrate
forbidden = ("web", "jobs", "forecasting", "tensorflow", "keras")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print(json.dumps({"loaded": loaded, "new_files": sorted(set(os.listdir(".")) - before)}))
"""


def test_db_imports_nothing_it_must_not(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"loaded": [], "new_files": []}


def test_the_schemas_horizons_are_the_products_horizon() -> None:
    from db.models import HORIZONS
    from forecasting.forecast_set import HORIZON

    assert HORIZONS == tuple(range(1, HORIZON + 1))

"""A date whose only models had their artifacts pruned says so (issue 17 item 18), over real HTTP
on SQLite and PostgreSQL: 404 `model_pruned` naming the version and how to get a forecast, not
"no model trained on data up to that date" (which stays the answer before any model).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from db.model_store import add_model_version, prune_artifacts
from tests.web.conftest import Site, serving, writing
from tests.web.test_integer_params import call

OLD_TRAIN_END = date(2023, 3, 31)  # the seed's AAPL model is trained up to 2023-06-30
ASKED = "2023-05-01"  # no stored forecast; only the old (pruned) model was trained before it
AS_OF = "2023-05-01"  # a session


@dataclass(frozen=True)
class Pruned:
    site: Site
    base: str
    version_id: int


@pytest.fixture(scope="module")
def pruned(own_site: Site, model_record: dict[str, Any]) -> Iterator[Pruned]:
    """The seeded site plus an older AAPL model version whose artifact `db prune` dropped."""
    with writing(own_site.url) as session:
        old = {**model_record, "train_end": OLD_TRAIN_END}
        version_id = add_model_version(session, record=old).id
        result = prune_artifacts(session, keep=1, tickers=["AAPL"])
    assert result.versions == 1  # the old one: the seed's serves the latest forecasts
    with serving(own_site.app) as base:
        yield Pruned(own_site, base, version_id)


def _message(version_id: int) -> str:
    return (
        f"no forecast stored for AAPL as of {AS_OF}: the model trained on data up to that date "
        f"(version {version_id}, trained on data up to {OLD_TRAIN_END.isoformat()}) had its "
        "artifact pruned ([model] keep_versions); store a forecast for that date with "
        f"candlecast run-once --as-of {AS_OF} --tickers AAPL, or retrain with candlecast "
        f"forecast --ticker AAPL --as-of {AS_OF}"
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/predict", {"stock_symbol": "AAPL", "input_date": ASKED}),
        ("GET", f"/api/forecasts/AAPL?as_of={ASKED}", None),
    ],
)
def test_a_pruned_artifact_is_named_in_the_api_404(
    pruned: Pruned, method: str, path: str, body: dict | None
) -> None:
    data = json.dumps(body).encode() if body is not None else None
    status, kind, raw = call(pruned.base, method, path, data)
    assert (status, kind) == (404, "application/json"), raw[:300]
    error = json.loads(raw)["error"]
    assert error == {"code": "model_pruned", "message": _message(pruned.version_id)}


def test_a_pruned_artifact_is_named_on_the_ticker_page(pruned: Pruned) -> None:
    status, kind, raw = call(pruned.base, "GET", f"/tickers/AAPL?as_of={ASKED}")
    assert (status, kind.split(";")[0]) == (404, "text/html")
    assert "had its artifact pruned ([model] keep_versions)" in raw.decode()


def test_before_any_model_the_answer_is_still_no_model(pruned: Pruned) -> None:
    status, _, raw = call(pruned.base, "GET", "/api/forecasts/AAPL?as_of=2022-06-01")
    assert status == 404
    error = json.loads(raw)["error"]
    assert error["code"] == "no_forecast"
    assert error["message"] == (
        "no forecast stored for AAPL as of 2022-06-01 and no model trained on data up to that date"
    )

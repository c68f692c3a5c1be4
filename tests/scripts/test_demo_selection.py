"""The demo serves the model chosen on the validation period, never on the test period."""

from __future__ import annotations

import pytest

from scripts.demo import choose_served


def _metrics(val: float | None, test: float) -> dict[str, object]:
    return {"val": {"ranking": {"ndcg@20": val}}, "test": {"ranking": {"ndcg@20": test}}}


def test_the_served_model_is_the_best_on_validation_not_on_test() -> None:
    metrics = {
        "als": _metrics(val=0.20, test=0.10),
        "svd": _metrics(val=0.15, test=0.30),  # best on test: must not be chosen for it
        "popularity": _metrics(val=None, test=0.40),  # no validation number: never chosen
    }
    assert choose_served(metrics) == "als"


def test_nothing_registered_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="registered no model"):
        choose_served({})

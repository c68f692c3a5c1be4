"""Fixtures of the router tests: stub recommenders and experiment files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.router.stub import StubRecommender

FALLBACK = ["the+shawshank+redemption+1994", "the+godfather+1972", "pulp+fiction+1994"]


def experiment(urls: dict[str, str], **overrides: Any) -> dict[str, Any]:
    """A valid experiment document with one arm per ``urls`` entry, equal weights."""
    names = list(urls)
    weights = [round(100 / len(names), 2) for _ in names]
    weights[-1] = round(100 - sum(weights[:-1]), 2)
    doc: dict[str, Any] = {
        "experiment": "exp-1",
        "salt": "exp-1",
        "status": "running",
        "exposure": 1.0,
        "control": names[0],
        "arms": [
            {"name": n, "url": urls[n], "weight": w, "model": n, "channel": "stable"}
            for n, w in zip(names, weights, strict=True)
        ],
        "fallback": FALLBACK,
    }
    doc.update(overrides)
    return doc


def write_experiment(path: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as YAML to ``path`` (atomically, as a ConfigMap update swaps files)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.replace(path)
    return path


@pytest.fixture
def stubs() -> Iterator[dict[str, StubRecommender]]:
    """Two stub recommenders: control and treatment."""
    made = {"control": StubRecommender("control"), "treatment": StubRecommender("treatment")}
    yield made
    for stub in made.values():
        stub.close()


@pytest.fixture
def config_file(tmp_path: Path, stubs: dict[str, StubRecommender]) -> Path:
    """An experiment file splitting all users 50/50 between the two stubs."""
    return write_experiment(
        tmp_path / "experiment.yaml", experiment({n: s.url for n, s in stubs.items()})
    )

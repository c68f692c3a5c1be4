"""The DVC pipeline reproduces from a fresh copy: dvc repro, metrics, plots, idempotent re-run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.artifacts import Registry
from tests.trainer.dvcrepo import DVC, pipeline_copy, run


@pytest.fixture
def pipeline(tmp_path: Path, snapshot_dir: Path) -> tuple[Path, dict[str, str]]:
    """The pipeline in a fresh git + DVC repo with one small synthetic snapshot."""
    repo = tmp_path / "repo"
    return repo, pipeline_copy(repo, snapshot_dir)


def test_dvc_repro_from_a_fresh_copy(pipeline: tuple[Path, dict[str, str]]) -> None:
    repo, env = pipeline
    run([str(DVC), "repro"], repo, env)
    registry = Registry(repo / "models")
    assert registry.names() == ["als", "knn", "popularity", "svd"]
    versions = {n: registry.channel(n, "canary") for n in registry.names()}
    metrics = json.loads(run([str(DVC), "metrics", "show", "--json"], repo, env).stdout)
    shown = json.dumps(metrics)
    for family in ("svd", "knn", "popularity", "als"):
        assert f"metrics/{family}.json" in shown
    assert "ndcg@20" in shown and "rmse" in shown
    run([str(DVC), "plots", "show", "-o", str(repo / "plots-html")], repo, env)
    assert (repo / "plots-html" / "index.html").is_file()
    # nothing changed: nothing reruns; forcing a rerun reproduces the same model versions
    status = run([str(DVC), "status"], repo, env).stdout
    assert "up to date" in status
    run([str(DVC), "repro", "-s", "-f", "refit@svd", "refit@als", "register"], repo, env)
    assert {n: registry.channel(n, "canary") for n in registry.names()} == versions
    assert all(len(registry.versions(n)) == 1 for n in registry.names())
    served = registry.load("als", "canary").manifest
    assert served.params["fit_on"] == "all"
    assert served.metrics["test"]["ranking"]["ndcg@20"] is not None


def test_prepare_fails_clearly_without_a_snapshot(
    pipeline: tuple[Path, dict[str, str]],
) -> None:
    repo, env = pipeline
    shutil.rmtree(repo / "data" / "snapshots")
    (repo / "data" / "snapshots").mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "services.trainer.stages.prepare"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 3
    assert "no snapshots under" in out.stderr

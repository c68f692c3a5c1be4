"""``marquee train`` and ``marquee registry``: exit codes, idempotent retraining, channels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.artifacts import Registry, load_artifact
from services.trainer import cli, registry_cli
from services.trainer.models import FAMILIES

FAST_PARAMS = """
seed: 5
split: {val_fraction: 0.1, test_fraction: 0.1}
models:
  svd: {n_factors: 8, n_epochs: 5}
  knn: {k: 10}
  als: {factors: 8, iterations: 3, threads: 1}
evaluate: {k: 20, max_users: 200, timing_users: 20}
register: {refit: true}
"""


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(FAST_PARAMS)
    return p


def test_train_register_is_idempotent(
    snapshot_dir: Path, params_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "models"
    argv = ["--snapshot", str(snapshot_dir), "--params", str(params_file), "--registry", str(reg)]
    reports = tmp_path / "reports"
    assert cli.main([*argv, "--register", "canary", "--reports", str(reports)]) == 0
    registry = Registry(reg)
    assert registry.names() == sorted(FAMILIES)  # no families in params: every family
    first = {n: registry.channel(n, "canary") for n in registry.names()}
    state = {n: registry.channel_state(n, "canary") for n in registry.names()}
    m = load_artifact(registry.resolve("svd", "canary")).manifest
    assert (
        m.snapshot["content_hash"]
        == json.loads((snapshot_dir / "manifest.json").read_text())["content_hash"]
    )
    assert m.metrics["test"]["rating"]["rmse"] is not None
    assert m.params["seed"] == 5 and m.params["n_factors"] == 8
    assert m.params["fit_on"] == "all" and m.snapshot["fit_on"] == "all"
    assert m.extra["evaluated_version"] != m.version  # the refit, with its twin's metrics
    assert (reports / "report.md").is_file() and (reports / "plots" / "ranking.png").is_file()
    # the same snapshot and params again: nothing is trained or registered
    capsys.readouterr()
    assert cli.main([*argv, "--register", "canary"]) == 0
    assert "up to date" in capsys.readouterr().err
    assert {n: registry.channel_state(n, "canary") for n in registry.names()} == state
    # forced retraining reproduces the same versions (deterministic), adding nothing
    assert cli.main([*argv, "--register", "canary", "--force"]) == 0
    assert {n: registry.channel(n, "canary") for n in registry.names()} == first
    assert all(len(registry.versions(n)) == 1 for n in registry.names())


def test_latest_snapshot_and_exit_codes(
    snapshot_dir: Path, params_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-snapshots"
    monkeypatch.setenv("MARQUEE_TRAINER_SNAPSHOT_ROOT", str(empty))
    assert cli.main(["--snapshot", "latest", "--params", str(params_file)]) == cli.EXIT_INPUT
    assert (
        cli.main(["--snapshot", str(tmp_path / "missing"), "--params", str(params_file)])
        == cli.EXIT_INPUT
    )
    assert cli.main(["--families", "svd,nope", "--params", str(params_file)]) == cli.EXIT_USAGE
    assert cli.main(["--bogus"]) == cli.EXIT_USAGE
    monkeypatch.setenv("MARQUEE_TRAINER_SNAPSHOT_ROOT", str(snapshot_dir.parent))
    reg = tmp_path / "r"
    code = cli.main(
        [
            "--snapshot",
            "latest",
            "--params",
            str(params_file),
            "--families",
            "popularity",
            "--registry",
            str(reg),
            "--register",
            "canary",
        ]
    )
    assert code == 0
    assert Registry(reg).names() == ["popularity"]


def test_synth_command(tmp_path: Path) -> None:
    assert cli.main(["synth", str(tmp_path / "s"), "--users", "50", "--items", "20"]) == 0
    assert (tmp_path / "s" / "manifest.json").is_file()


def test_registry_cli(
    snapshot_dir: Path, params_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "models"
    base = [
        "--snapshot",
        str(snapshot_dir),
        "--params",
        str(params_file),
        "--registry",
        str(reg),
        "--families",
        "popularity",
    ]
    assert cli.main([*base, "--register", "canary"]) == 0
    assert cli.main([*base, "--seed", "6", "--register", "canary"]) == 0  # a second version
    registry = Registry(reg)
    v2 = registry.channel("popularity", "canary")
    (v1,) = {m.version for m in registry.versions("popularity")} - {v2}
    root = ["--root", str(reg)]
    capsys.readouterr()
    assert registry_cli.main([*root, "list"]) == 0
    assert "popularity" in capsys.readouterr().out
    assert registry_cli.main([*root, "show", "popularity", "stable"]) == 5  # nothing promoted yet
    assert registry_cli.main([*root, "promote", "popularity", v1]) == 0
    assert registry_cli.main([*root, "promote", "popularity"]) == 0  # canary → stable
    assert registry.channel("popularity", "stable") == registry.channel("popularity", "canary")
    capsys.readouterr()
    assert registry_cli.main([*root, "show", "popularity"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["files"] and shown["snapshot"]["content_hash"] and shown["git_sha"]
    assert registry_cli.main([*root, "rollback", "popularity"]) == 0
    assert registry.channel("popularity", "stable") == v1
    assert registry_cli.main([*root, "rollback", "popularity"]) == 5  # no earlier version left
    capsys.readouterr()
    assert registry_cli.main([*root, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["popularity"]
    assert {v["version"] for v in listed} == {v1, v2}

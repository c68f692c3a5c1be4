"""The ``marquee`` command as a whole: one-line errors with documented exit codes, agreeing flags.

Each case feeds a command bad input through the top-level dispatcher, as a user would.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
from pathlib import Path

import pytest

from services.cli import COMMANDS, _available
from services.cli import main as marquee
from services.common.cliutil import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_USAGE
from services.recommender.synthetic import write_synthetic_model

SMALL = {"n_users": 30, "n_items": 40, "n_factors": 4, "seen_per_user": 3}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated run: ground truth in <run>/truth and its stream in <run>/s.log."""
    run = tmp_path_factory.mktemp("run")
    argv = ["sim", "backfill", "--days", "0.01", "--users", "200", "--movies", "50"]
    assert marquee([*argv, "--out", str(run / "s.log"), "--run-dir", str(run)]) == 0
    return run


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A registry with one model, ``synthetic``, whose stable channel has one version."""
    root = tmp_path / "models"
    root.mkdir()
    write_synthetic_model(root, family="svd", seed=1, **SMALL)
    return root


def fails(argv: list[str], code: int, words: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``marquee argv``; assert the exit code and ONE stderr line naming the command."""
    capsys.readouterr()
    assert marquee(argv) == code, capsys.readouterr().err
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"marquee {argv[0]}") and ": error: " in lines[0], err
    assert all(w in lines[0] for w in words), err
    return lines[0]


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert marquee(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"marquee {version('marquee')}"
    assert marquee(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes" in out and "3  not found" in out
    assert marquee(["teleport"]) == EXIT_USAGE
    assert "unknown command 'teleport'" in capsys.readouterr().err


def _parsers(
    parser: argparse.ArgumentParser, path: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{path} {name} has no help line"
                out += _parsers(sub, f"{path} {name}")
    return out


@pytest.mark.parametrize("command", sorted(_available()))  # planned services are not listed
def test_every_subcommand_and_option_has_help(command: str) -> None:
    module = importlib.import_module(COMMANDS[command][0])
    build = getattr(module, "build_parser", None) or module._parser
    top = build()
    assert (top.description or "").strip(), f"marquee {command} has no description"
    for path, parser in _parsers(top, f"marquee {command}"):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert (action.help or "").strip(), f"{path} {action.option_strings or action.dest}"


def test_events_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["events", "count", "--file", str(tmp_path / "nope.log")], EXIT_NOT_FOUND,
          ["no stream file", "nope.log"], capsys)  # fmt: skip
    fails(["events", "count"], EXIT_USAGE, ["--file", "--kafka", "--help"], capsys)
    fails(["events", "count", "--file", "x", "--limit", "many"], EXIT_USAGE, ["--limit"], capsys)


def test_sim_errors(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["sim", "truth", "--run-dir", str(world), "--user", "99999999"], EXIT_NOT_FOUND,
          ["no user 99999999", "its users are 1 .. "], capsys)  # fmt: skip
    fails(["sim", "truth", "--run-dir", str(tmp_path), "--user", "1"], EXIT_NOT_FOUND,
          ["no ground truth", "--run-dir"], capsys)  # fmt: skip
    fails(["sim", "evaluate", str(tmp_path / "nope.log")], EXIT_NOT_FOUND, ["nope.log"], capsys)
    run = ["sim", "backfill", "--days", "0.01", "--users", "100", "--movies", "50", "--out", "-"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("malformed_rate: [0.1\nlate_rate: 0.1\n")
    fails([*run, "--scenario", str(broken)], EXIT_USAGE,
          ["broken.yaml", "invalid YAML at line 2"], capsys)  # fmt: skip
    lots = tmp_path / "lots.yaml"
    lots.write_text("malformed_rate: lots\n")
    fails([*run, "--scenario", str(lots)], EXIT_USAGE, ["malformed_rate", "'lots'"], capsys)
    fails([*run, "--scenario", str(tmp_path / "none.yaml")], EXIT_NOT_FOUND,
          ["no scenario file"], capsys)  # fmt: skip
    fails([*run, "--reco-share", "many"], EXIT_USAGE, ["--reco-share"], capsys)
    # an option of the top-level parser is accepted after the subcommand too
    capsys.readouterr()
    assert marquee(["sim", "evaluate", str(world / "s.log"), "--json", "--log-level", "INFO"]) == 0
    assert json.loads(capsys.readouterr().out)["lines"] > 0


def test_ingest_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MARQUEE_INGEST_STORE_PATH", raising=False)
    fails(["ingest", "stats", "--store", str(tmp_path / "nope")], EXIT_NOT_FOUND,
          ["no event store at", "nope"], capsys)  # fmt: skip
    fails(["ingest", "stats"], EXIT_USAGE, ["--store", "MARQUEE_INGEST_STORE_PATH"], capsys)
    fails(["ingest", "derived", "nonsense", "--out", "x"], EXIT_USAGE, ["nonsense"], capsys)


def test_registry_errors(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nope = str(tmp_path / "nope")
    fails(["registry", "--root", nope, "list"], EXIT_NOT_FOUND, ["no model registry", nope], capsys)
    fails(["registry", "list", "--registry", nope], EXIT_NOT_FOUND, ["--registry"], capsys)
    reg = ["--registry", str(registry)]
    fails(["registry", "show", "foo", *reg], EXIT_NOT_FOUND,
          ["no such model 'foo'", "it has synthetic"], capsys)  # fmt: skip
    fails(["registry", "show", "synthetic", "v-nope", *reg], EXIT_NOT_FOUND,
          ["no version 'v-nope'"], capsys)  # fmt: skip
    fails(["registry", "show", "synthetic", "canary", *reg], EXIT_REFUSED,
          ["no 'canary' version", "promote"], capsys)  # fmt: skip
    fails(["registry", "rollback", "synthetic", *reg], EXIT_REFUSED, ["roll back"], capsys)
    fails(["registry", "promote", "synthetic", "--channel", "beta", *reg], EXIT_USAGE,
          ["--channel", "beta"], capsys)  # fmt: skip


def test_registry_flags_agree(registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (version,) = [p.name for p in (registry / "synthetic").iterdir() if p.name != "channels"]
    # --registry before or after the subcommand; --root and --to still work (deprecated)
    assert marquee(["registry", "promote", "synthetic", version, "--channel", "canary",
                    "--registry", str(registry)]) == 0  # fmt: skip
    assert (
        marquee(["registry", "--root", str(registry), "rollback", "synthetic", "--to", "canary"])
        == 5
    )  # fmt: skip  (canary had nothing before)
    capsys.readouterr()
    assert marquee(["registry", "--registry", str(registry), "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["synthetic"]
    assert listed[0]["channels"] == ["stable", "canary"] and listed[0]["rmse"] is None
    assert marquee(["registry", "list", "--registry", str(registry)]) == 0
    human = capsys.readouterr().out
    assert version in human and "stable,canary" in human
    assert "None" not in human  # a missing metric shows as '-'


def test_serve_errors(
    registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # serve exports its flags to the environment (gunicorn reads them): restore them after
    for var in ("REGISTRY_ROOT", "MODEL_NAME", "MODEL_REF", "WORKERS", "WAIT_FOR_MODEL"):
        monkeypatch.setenv(f"MARQUEE_RECOMMENDER_{var}", "unset")
    monkeypatch.delenv("MARQUEE_RECOMMENDER_MODEL_REF")
    monkeypatch.delenv("MARQUEE_RECOMMENDER_WORKERS")
    monkeypatch.setenv("MARQUEE_RECOMMENDER_WAIT_FOR_MODEL", "false")
    nope = str(tmp_path / "nope")
    fails(["serve", "--registry", nope, "--model", "synthetic"], EXIT_NOT_FOUND,
          [nope, "--wait"], capsys)  # fmt: skip
    fails(["serve", "--registry", str(registry), "--model", "x"], EXIT_NOT_FOUND,
          ["'x'", "it has synthetic"], capsys)  # fmt: skip
    fails(["serve", "--registry", str(registry), "--model", "synthetic", "--workers", "0"],
          EXIT_USAGE, ["workers (--workers)"], capsys)  # fmt: skip


FAST_PARAMS = """
seed: 5
split: {val_fraction: 0.1, test_fraction: 0.1}
models:
  svd: {n_factors: 8, n_epochs: 5}
evaluate: {k: 20, max_users: 100, timing_users: 10}
register: {refit: true}
"""


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic training snapshot."""
    out = tmp_path_factory.mktemp("snap") / "s"
    argv = ["train", "synth", str(out), "--users", "300", "--items", "60", "--seed", "3"]
    assert marquee(argv) == 0
    return out


def test_train_never_uses_silent_defaults(
    snapshot: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Outside the repository, `marquee train` still reads the project's params.yaml, or stops."""
    from services.common.artifacts import Registry, read_manifest
    from services.trainer import cli as train_cli

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no params.yaml here
    monkeypatch.delenv("MARQUEE_TRAINER_PARAMS_FILE", raising=False)
    reg = tmp_path / "models"
    argv = ["train", "--snapshot", str(snapshot), "--families", "popularity",
            "--registry", str(reg), "--register", "canary"]  # fmt: skip
    fails([*argv, "--params", "nope.yaml"], EXIT_NOT_FOUND, ["nope.yaml", "--params"], capsys)
    monkeypatch.setenv("MARQUEE_TRAINER_PARAMS_FILE", str(tmp_path / "gone.yaml"))
    fails(argv, EXIT_NOT_FOUND, ["gone.yaml", "MARQUEE_TRAINER_PARAMS_FILE"], capsys)
    monkeypatch.delenv("MARQUEE_TRAINER_PARAMS_FILE")
    monkeypatch.setattr(train_cli, "PROJECT_PARAMS", tmp_path / "no-project" / "params.yaml")
    fails(argv, EXIT_USAGE, [str(elsewhere / "params.yaml"), "no-project", "--params"], capsys)
    assert not reg.exists(), "nothing may be trained on built-in defaults"
    monkeypatch.undo()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MARQUEE_TRAINER_PARAMS_FILE", raising=False)
    assert marquee([*argv, "--reports", str(tmp_path / "reports")]) == 0
    project = Path(train_cli.__file__).resolve().parents[2] / "params.yaml"
    assert f"parameters from {project}" in capsys.readouterr().err
    m = read_manifest(Registry(reg).resolve("popularity", "canary"))
    assert m.params["seed"] == 42 and m.params["fit_on"] == "all"  # the project's params.yaml


def test_train_says_what_it_did(
    snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "p.yaml"
    params.write_text(FAST_PARAMS)
    argv = ["train", "--snapshot", str(snapshot), "--params", str(params),
            "--families", "popularity,svd", "--registry", str(tmp_path / "m")]  # fmt: skip
    capsys.readouterr()
    assert marquee([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    models = doc["models"]
    assert set(models) == {"popularity", "svd"}
    assert all(models[f][p]["ndcg@20"] is not None for f in models for p in ("val", "test"))
    best = max(sorted(models), key=lambda f: models[f]["val"]["ndcg@20"])
    assert doc["best_on_validation"] == best and doc["selected_by"] == "val ndcg@20"
    assert Path(doc["report"]).is_file(), "the report must outlive the scratch folder"
    shutil.rmtree(Path(doc["report"]).parent)
    reports = tmp_path / "reports"
    assert marquee([*argv, "--register", "canary", "--reports", str(reports)]) == 0
    out = capsys.readouterr().out
    assert f"best on validation (ndcg@20): {best}" in out
    assert "val ndcg@20" in out and "test rmse" in out and "registered: svd" in out
    assert "-> canary" in out and f"report: {reports / 'report.md'}" in out
    assert (reports / "report.md").is_file() and "None" not in out


def test_route_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[1] / "services/router/experiment.example.yaml"
    fails(["route", "serve", "--bogus"], EXIT_USAGE, ["unrecognized", "--bogus"], capsys)
    fails(["route", "assign"], EXIT_USAGE, ["required"], capsys)
    # Werkzeug's development server never listens on a public address
    fails(
        ["route", "serve", "--config", str(example), "--dev", "--bind", "0.0.0.0:18099"],
        EXIT_USAGE,
        ["--dev", "loopback", "0.0.0.0"],
        capsys,
    )
    fails(
        ["route", "serve", "--config", str(example), "--bind", "nowhere"],
        EXIT_USAGE,
        ["host:port"],
        capsys,
    )

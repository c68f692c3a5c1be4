"""The DVC pipeline reproduces from a fresh copy, and every stage depends on the code it runs."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.common.artifacts import Registry
from tests.trainer.dvcrepo import DVC, pipeline_copy, run

# a full `dvc repro` runs ~20 stage processes (train and refit per family, tune): on a shared
# 2-core machine that can take longer than the suite's default per-test limit
pytestmark = pytest.mark.timeout(2400)


@pytest.fixture
def pipeline(tmp_path: Path, snapshot_dir: Path) -> tuple[Path, dict[str, str]]:
    """The pipeline in a fresh git + DVC repo with one small synthetic snapshot."""
    repo = tmp_path / "repo"
    return repo, pipeline_copy(repo, snapshot_dir)


def test_dvc_repro_from_a_fresh_copy(pipeline: tuple[Path, dict[str, str]]) -> None:
    repo, env = pipeline
    run([str(DVC), "repro"], repo, env)
    registry = Registry(repo / "models")
    families = yaml.safe_load((repo / "params.yaml").read_text())["families"]
    assert {"svd", "knn", "popularity", "als", "ease", "segment"} <= set(families)
    assert registry.names() == sorted(families)
    versions = {n: registry.channel(n, "canary") for n in registry.names()}
    metrics = json.loads(run([str(DVC), "metrics", "show", "--json"], repo, env).stdout)
    shown = json.dumps(metrics)
    for family in families:
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


# Loaded by every Python process of the pipeline copy (on PYTHONPATH): at exit, a stage's
# process writes which files it imported, i.e. the code the stage executed.
TRACER = """
import atexit, json, os, sys

def _dump():
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or not spec.name.startswith("services."):
        return
    files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
    out = os.path.join(os.environ["MARQUEE_TEST_TRACE_DIR"], f"{os.getpid()}.json")
    with open(out, "w") as fh:
        json.dump({"cmd": " ".join(["python", "-m", spec.name, *sys.argv[1:]]), "files": files}, fh)

atexit.register(_dump)
"""
# Code a stage lists although a given run may not execute it: prepare reads MovieLens only when
# ``data.snapshot`` says ``movielens:<dir>``.
CONDITIONAL = {
    "prepare": {
        "services/trainer/movielens.py",
        "services/common/movies.py",
        "services/common/events.py",
    }
}


def _is_code(path: Path) -> bool:
    """A module with statements (not a package marker holding only a docstring)."""
    body = ast.parse(path.read_text()).body
    return bool(body) and not (
        len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    )


def _covers(deps: list[str], rel: str) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def _changed(repo: Path, env: dict[str, str]) -> set[str]:
    """Stages ``dvc status`` says must rerun."""
    out = run([str(DVC), "status", "--json"], repo, env).stdout
    return set(json.loads(out or "{}"))


def test_every_stage_depends_on_exactly_the_code_it_runs(
    pipeline: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    from dvc.repo import Repo

    repo, env = pipeline
    hook, traces = tmp_path / "hook", tmp_path / "traces"
    hook.mkdir()
    traces.mkdir()
    (hook / "sitecustomize.py").write_text(TRACER)
    env = {
        **env,
        "PYTHONPATH": f"{repo}{os.pathsep}{hook}",
        "MARQUEE_TEST_TRACE_DIR": str(traces),
    }
    run([str(DVC), "repro"], repo, env)
    ran: dict[str, set[str]] = {}
    for f in traces.iterdir():
        doc = json.loads(f.read_text())
        files = {Path(x).resolve() for x in doc["files"]}
        ran[doc["cmd"]] = {
            p.relative_to(repo).as_posix()
            for p in files
            if p.is_relative_to(repo / "services") and _is_code(p)
        }
    with Repo(str(repo)) as dvc_repo:
        stages = {
            st.name: (st.cmd, [d.def_path for d in st.deps if d.def_path.startswith("services")])
            for st in dvc_repo.index.stages
        }
    executed = {name: ran[cmd] for name, (cmd, _) in stages.items()}
    for name, (_, deps) in stages.items():
        # every module the stage ran is a dependency ...
        missing = sorted(f for f in executed[name] if not _covers(deps, f))
        assert not missing, f"{name} runs {missing} but dvc.yaml does not list them"
        # ... and every listed module is one it runs (a folder: all of its modules)
        listed = {
            p.relative_to(repo).as_posix()
            for d in deps
            for p in ([repo / d] if (repo / d).is_file() else (repo / d).rglob("*.py"))
            if _is_code(p)
        }
        extra = sorted(listed - executed[name] - CONDITIONAL.get(name, set()))
        assert not extra, f"{name} lists {extra} in dvc.yaml but does not run them"

    # DVC itself agrees: editing a module marks exactly the stages that run it
    assert _changed(repo, env) == set()
    for rel in (
        "services/trainer/report.py",
        "services/trainer/models/als.py",
        "services/common/scoring.py",
        "services/trainer/pipeline.py",
        "services/trainer/surprise_protocol.py",
    ):
        path = repo / rel
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        expected = {name for name, files in executed.items() if rel in files}
        assert _changed(repo, env) == expected, rel
        path.write_text(original)
    assert "evaluate" in {n for n, f in executed.items() if "services/trainer/report.py" in f}
    assert not any("services/trainer/surprise_protocol.py" in f for f in executed.values())
    assert _changed(repo, env) == set()

"""A fresh git + DVC repository holding the trainer's pipeline, for ``dvc repro`` in tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.infra import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
DVC = Path(sys.executable).parent / "dvc"


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command in the copy; fail the test with its output when it fails."""
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"{args}: {out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def pipeline_copy(repo: Path, snapshot_dir: Path) -> dict[str, str]:
    """dvc.yaml, params.yaml (small models) and the code in ``repo``, with one snapshot.

    Returns the environment to run ``dvc`` in it.
    """
    if not DVC.is_file():
        skip_or_fail(f"dvc is not installed at {DVC}; run 'make setup'")
    (repo / "services").mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copy(ROOT / "services" / "__init__.py", repo / "services" / "__init__.py")
    ignore = shutil.ignore_patterns("__pycache__")
    for pkg in ("common", "trainer"):
        shutil.copytree(ROOT / "services" / pkg, repo / "services" / pkg, ignore=ignore)
    shutil.copytree(snapshot_dir, repo / "data" / "snapshots" / snapshot_dir.name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["svd"].update(n_factors=8, n_epochs=5)
    params["models"]["als"].update(factors=8, iterations=3, threads=1)
    params["models"]["rerank"].update(als_factors=4, n_estimators=10, label_windows=1)
    params["evaluate"].update(max_users=200, timing_users=20)
    params["tune"].update(families=["popularity", "rerank"], trials=2)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(repo),
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("MARQUEE_TRAINER_REGISTRY_ROOT", None)
    run(["git", "init", "-q"], repo, env)
    run([str(DVC), "init", "-q"], repo, env)
    return env

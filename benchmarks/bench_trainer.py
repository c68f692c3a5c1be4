"""Trainer at the streaming service's scale: 1M users × 27K movies, ≥5M watch sessions.

A synthetic latent-factor snapshot (``services.trainer.synthetic``, vectorized NumPy) goes
through the same stages DVC runs, each in its own process as under ``dvc repro``: prepare,
train × 4 families, evaluate, refit × 4 (when ``register.refit``), register.  Reported: wall
time and peak RSS of every stage and of the whole pipeline (sum of wall times, max of peaks),
against the targets of 10 minutes and 6 GiB; plus the KNN memory study (k vs graph size vs
accuracy) on the same split.  ``quick=True`` uses 50K users.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 600
TARGET_RSS = 6 * 2**30
# Runs a stage module as __main__ and appends its peak RSS (kB) to a file: one process per
# stage, like dvc repro, so each stage's peak is its own.
LAUNCHER = """
import resource, runpy, sys
out = sys.argv.pop(1)
module = sys.argv.pop(1)
sys.argv[0] = module
try:
    runpy.run_module(module, run_name="__main__")
finally:
    with open(out, "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
"""


def _stage(module: str, args: list[str], root: Path) -> dict[str, Any]:
    rss_file = root / ".rss"
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        # stages share one bytecode cache, as an installed environment does: without it every
        # stage process compiles numpy, scipy, pyarrow, ... from source again (~5 s each)
        "PYTHONPYCACHEPREFIX": str(root / ".pycache"),
        "PYTHONPATH": str(ROOT),
        "MARQUEE_TRAINER_LOG_FORMAT": "json",
        "MARQUEE_TRAINER_REGISTRY_ROOT": str(root / "models"),
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(rss_file), module, *args, "--root", str(root)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args} failed: {proc.stderr[-3000:]}")
    return {
        "wall_seconds": round(wall, 2),
        "peak_rss_mib": round(int(rss_file.read_text()) / 2**20, 1),
    }


def knn_study(root: Path, ks: list[int]) -> list[dict[str, Any]]:
    """KNN at several k on the benchmark's split: edges, graph bytes vs dense, accuracy."""
    from services.trainer import data as td
    from services.trainer.cli import knn_memory_study
    from services.trainer.pipeline import load_params

    prepared = td.load(root / "data/trainer/prepared")
    return knn_memory_study(prepared, load_params(root / "params.yaml"), ks, ("cosine",))


def run(quick: bool) -> dict[str, Any]:
    """Generate the snapshot, run every stage, report wall time and peak RSS."""
    from services.trainer import synthetic

    n_users = 50_000 if quick else 1_000_000
    world = {"n_users": n_users, "n_items": 27_000, "mean_watches": 7.0, "seed": 0}
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        manifest = synthetic.write(root / "data/snapshots/synthetic", **world)
        gen_seconds = time.perf_counter() - started
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"] = {"snapshot": "latest", "snapshot_root": "data/snapshots"}
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        stages: dict[str, dict[str, Any]] = {}
        stages["prepare"] = _stage("services.trainer.stages.prepare", [], root)
        for family in params["families"]:
            stages[f"train@{family}"] = _stage("services.trainer.stages.train", [family], root)
        stages["evaluate"] = _stage("services.trainer.stages.evaluate", [], root)
        if params.get("register", {}).get("refit"):
            for family in params["families"]:
                stages[f"refit@{family}"] = _stage(
                    "services.trainer.stages.train", [family, "--fit-on", "all"], root
                )
        stages["register"] = _stage("services.trainer.stages.register", [], root)
        wall = sum(s["wall_seconds"] for s in stages.values())
        peak = max(s["peak_rss_mib"] for s in stages.values())
        comparison = json.loads((root / "reports/trainer/comparison.json").read_text())
        study = knn_study(root, [10, 40, 200])
        return {
            "snapshot": {
                "users": n_users,
                "movies": world["n_items"],
                "rows": manifest["row_counts"],
                "generate_seconds": round(gen_seconds, 1),
            },
            "stages": stages,
            "pipeline_wall_seconds": round(wall, 1),
            "pipeline_peak_rss_mib": peak,
            "within_targets": wall <= TARGET_SECONDS and peak * 2**20 <= TARGET_RSS,
            "targets": {"wall_seconds": TARGET_SECONDS, "peak_rss_mib": TARGET_RSS // 2**20},
            "comparison": comparison,
            "knn_memory": study,
        }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))

"""The pipeline's four steps as functions: the DVC stages and ``marquee train`` both call these.

prepare  → <prepared>/              (indexed, temporally split data; disjointness checked)
train    → <artifacts>/<family>/    (one artifact per family; train cost in <reports>/train/)
evaluate → <reports>/metrics/<family>.json, evaluation.json, report.md, plots/
register → <registry>/<name>/<version>/ (+ channel pointer), <reports>/register.json

The model families (``services.trainer.models``: Surprise, implicit) are imported only where a
model is built, so ``prepare`` and ``register`` do not execute them: a stage's DVC ``deps`` list
the modules it executes (tests/trainer/test_dvc.py checks that against a trace).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from services.common.artifacts import Registry, load_artifact, read_manifest, write_artifact
from services.common.settings import ModelSigningSettings
from services.common.snapshot import resolve_snapshot
from services.trainer import data as td
from services.trainer.util import git_sha, peak_rss_bytes, write_json

log = logging.getLogger("marquee.trainer")
HEADLINE = (
    "val_ndcg@20",  # what to choose a model by; the test numbers only report
    "rmse",
    "mae",
    "precision@20",
    "recall@20",
    "ndcg@20",
    "hit_rate@20",
    "coverage",
    "mean_popularity_percentile",
    "train_seconds",
    "infer_ms_mean",
    "artifact_bytes",
    "loaded_bytes",
)


def load_params(path: Path | str) -> dict[str, Any]:
    """The pipeline parameters (``params.yaml``)."""
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping")
    return doc


def paths(params: dict[str, Any], root: Path) -> dict[str, Path]:
    """Where each step reads and writes, relative to ``root``."""
    p = params.get("paths", {})
    return {
        "prepared": root / p.get("prepared", "data/trainer/prepared"),
        "artifacts": root / p.get("artifacts", "data/trainer/artifacts"),
        "serving": root / p.get("serving", "data/trainer/serving"),
        "reports": root / p.get("reports", "reports/trainer"),
    }


def resolve_source(spec: str, snapshot_root: Path | str) -> str:
    """``latest`` → the newest snapshot under ``snapshot_root``; anything else unchanged."""
    if spec == "latest":
        return str(resolve_snapshot(snapshot_root, "latest"))
    return spec


def model_params(params: dict[str, Any], family: str, fit_on: str = "train") -> dict[str, Any]:
    """The exact parameters recorded in (and addressing) a family's artifact.

    ``fit_on`` is ``train`` for the model that is evaluated, ``all`` for its refit on every
    period (what serves when ``register.refit`` is on).
    """
    from services.trainer.models import FAMILIES

    cls = FAMILIES[family]
    model = cls(params.get("models", {}).get(family) or {}, seed=int(params.get("seed", 0)))
    split = params.get("split", {})
    return {
        "seed": model.seed,
        **model.params,
        "fit_on": fit_on,
        "split": {
            "val_fraction": split.get("val_fraction", 0.1),
            "test_fraction": split.get("test_fraction", 0.1),
        },
    }


def run_prepare(params: dict[str, Any], root: Path, source: str | None = None) -> td.Prepared:
    """Read the input, split it in time, assert disjointness and save the prepared data."""
    started = time.perf_counter()
    data_params = params.get("data", {})
    spec = resolve_source(
        source or str(data_params.get("snapshot", "latest")),
        root / str(data_params.get("snapshot_root", "data/snapshots")),
    )
    if not spec.startswith("movielens:") and not Path(spec).is_absolute():
        spec = str(root / spec)
    tables, provenance = td.load_source(spec)
    split = params.get("split", {})
    prepared = td.prepare(
        tables,
        provenance,
        float(split.get("val_fraction", 0.1)),
        float(split.get("test_fraction", 0.1)),
    )
    out = paths(params, root)["prepared"]
    if out.exists():
        shutil.rmtree(out)
    td.save(prepared, out)
    log.info(
        "prepared",
        extra={
            "source": provenance.get("source"),
            "snapshot": provenance.get("content_hash"),
            "counts": prepared.info["counts"],
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    return prepared


def snapshot_record(prepared: td.Prepared) -> dict[str, Any]:
    """Provenance of the data behind an artifact: snapshot hash, time range, split cut-offs."""
    return {
        **prepared.info["snapshot"],
        "cutoffs_ns": prepared.info["cutoffs_ns"],
        "counts": prepared.info["counts"],
        "fit_on": prepared.info.get("fit_on", "train"),
    }


def run_train(
    params: dict[str, Any],
    root: Path,
    family: str,
    prepared: td.Prepared | None = None,
    sha: str = "",
    fit_on: str = "train",
) -> Path:
    """Train one family on the training period (or on all periods) and write its artifact."""
    from services.trainer.models import FAMILIES

    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {sorted(FAMILIES)}")
    if fit_on not in ("train", "all"):
        raise ValueError(f"fit_on must be 'train' or 'all', not {fit_on!r}")
    where = paths(params, root)
    # fitting reads its own period only (every model trains on ``train``; a refit on ``all``)
    data = prepared or td.load(where["prepared"], ("train",) if fit_on == "train" else ("all",))
    if fit_on == "all":
        data = data.all_periods()
    started = time.perf_counter()
    cls = FAMILIES[family]
    model = cls(params.get("models", {}).get(family) or {}, seed=int(params.get("seed", 0)))
    fitted = model.fit(data)
    seconds = time.perf_counter() - started
    until = data.info["snapshot"].get("until_ns") or 0
    out = where["artifacts" if fit_on == "train" else "serving"] / family
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = write_artifact(
        out,
        name=str(params.get("register", {}).get("name_prefix", "")) + family,
        family=family,
        arrays=fitted.arrays,
        params=model_params(params, family, fit_on),
        snapshot=snapshot_record(data),
        git_sha=sha or git_sha(),
        # the snapshot's end, not the wall clock, so a re-run writes identical bytes
        created=_dt.datetime.fromtimestamp(until / 1e9, _dt.UTC).isoformat(timespec="seconds"),
        texts=fitted.texts,
    )
    cost = {
        "family": family,
        "version": manifest.version,
        "train_seconds": round(seconds, 3),
        "peak_rss_bytes": peak_rss_bytes(),
        "artifact_bytes": sum((out / f).stat().st_size for f in manifest.files),
        **fitted.info,
    }
    suffix = "" if fit_on == "train" else "-refit"
    write_json(where["reports"] / "train" / f"{family}{suffix}.json", cost)
    log.info("trained", extra=cost)
    return out


def families_present(params: dict[str, Any], root: Path) -> list[str]:
    """Families with an artifact in the artifacts folder, in params order (else by name)."""
    base = paths(params, root)["artifacts"]
    found = sorted(d.name for d in base.iterdir() if d.is_dir()) if base.is_dir() else []
    wanted = list(params.get("families") or found)
    return [f for f in wanted if (base / f / "manifest.json").is_file()]


def headline(family_eval: dict[str, Any], train_cost: dict[str, Any]) -> dict[str, Any]:
    """The numbers ``dvc metrics show`` compares: validation NDCG@20, then the test period."""
    test = family_eval.get("test", {})
    flat = {
        "val_ndcg@20": family_eval.get("val", {}).get("ranking", {}).get("ndcg@20"),
        **test.get("rating", {}),
        **test.get("ranking", {}),
        "train_seconds": train_cost.get("train_seconds"),
        "infer_ms_mean": family_eval.get("infer_ms_mean"),
        "artifact_bytes": family_eval.get("artifact_bytes"),
        "loaded_bytes": family_eval.get("loaded_bytes"),
    }
    return {k: flat.get(k) for k in HEADLINE}


def run_evaluate(
    params: dict[str, Any],
    root: Path,
    prepared: td.Prepared | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate every artifact; write metrics/<family>.json, evaluation.json, report.md, plots."""
    from services.trainer.evaluate import evaluate_artifact
    from services.trainer.report import write_report

    where = paths(params, root)
    data = prepared or td.load(where["prepared"], td.PERIODS)
    ev = params.get("evaluate", {})
    seed = int(params.get("seed", 0))
    results: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    for family in families_present(params, root):
        started = time.perf_counter()
        res = evaluate_artifact(
            where["artifacts"] / family,
            data,
            k=int(ev.get("k", 20)),
            max_users=int(ev.get("max_users", 5000)),
            timing_users=int(ev.get("timing_users", 300)),
            seed=seed,
        )
        train_file = where["reports"] / "train" / f"{family}.json"
        cost = json.loads(train_file.read_text()) if train_file.is_file() else {}
        res["train"] = cost
        results[family] = res
        metrics[family] = headline(res, cost)
        log.info(
            "evaluated",
            extra={"family": family, "seconds": round(time.perf_counter() - started, 2)},
        )
    doc = {"split": data.info, "models": results, **(extra or {})}
    # one metrics file per model, so `dvc metrics show` prints one row per model
    mdir = where["reports"] / "metrics"
    if mdir.exists():
        shutil.rmtree(mdir)
    for family, flat in metrics.items():
        write_json(mdir / f"{family}.json", flat)
    write_json(where["reports"] / "evaluation.json", doc)
    write_report(doc, where["reports"])
    return doc


def run_register(
    params: dict[str, Any],
    root: Path,
    registry_root: Path | str | None = None,
    channel: str | None = None,
    sha: str = "",
) -> dict[str, Any]:
    """Copy each model, with its offline metrics, into the registry.

    With ``register.refit`` the registered model is the refit on every period (``serving/``),
    carrying the metrics of its evaluated twin (same family and params, trained on the
    training period only) and that twin's version in ``extra.evaluated_version``.
    """
    where = paths(params, root)
    reg_params = params.get("register", {})
    registry = Registry(
        Path(registry_root) if registry_root else root / str(reg_params.get("registry", "models")),
        signing_key=ModelSigningSettings().key(),  # signs what it registers when a key is set
    )
    channel = channel if channel is not None else reg_params.get("channel") or None
    evaluation_file = where["reports"] / "evaluation.json"
    evaluation = (
        json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else {"models": {}}
    )
    wanted = reg_params.get("families") or families_present(params, root)
    out: dict[str, Any] = {}
    refit = bool(reg_params.get("refit", False))
    for family in wanted:
        evaluated = read_manifest(where["artifacts"] / family)
        src = where["serving" if refit else "artifacts"] / family
        artifact = load_artifact(src)  # verifies hashes before anything is copied
        m = artifact.manifest
        ev = evaluation["models"].get(family, {})
        metrics = {
            "test": ev.get("test", {}),
            "val": ev.get("val", {}),
            "cost": {
                k: ev.get(k)
                for k in ("artifact_bytes", "loaded_bytes", "infer_ms_mean", "infer_ms_p95")
            }
            | {"train_seconds": ev.get("train", {}).get("train_seconds")},
        }
        with tempfile.TemporaryDirectory(prefix="marquee-register-") as tmp:
            staged = Path(tmp) / family
            rewritten = write_artifact(
                staged,
                name=m.name,
                family=m.family,
                arrays=artifact.arrays,
                params=m.params,
                snapshot=m.snapshot,
                metrics=metrics,
                git_sha=sha or m.git_sha,
                extra={**m.extra, "evaluated_version": evaluated.version},
                texts=artifact.texts,
            )
            if rewritten.version != m.version:  # same arrays and params must keep the address
                raise RuntimeError(f"{family}: version changed on re-write")
            manifest, added = registry.register(staged, channel)
        out[family] = {
            "name": manifest.name,
            "version": manifest.version,
            "added": added,
            "channel": channel,
        }
        log.info(
            "registered" if added else "already registered",
            extra={"model": family, **{k: v for k, v in out[family].items() if k != "name"}},
        )
    write_json(where["reports"] / "register.json", out)
    return out


def already_registered(
    params: dict[str, Any], registry: Registry, family: str, snapshot_hash: str
) -> str | None:
    """Version of ``family`` trained on this snapshot with these params, if the registry has one."""
    reg = params.get("register", {})
    name = str(reg.get("name_prefix", "")) + family
    expected = model_params(params, family, "all" if reg.get("refit") else "train")
    for manifest in registry.versions(name):
        if manifest.snapshot.get("content_hash") == snapshot_hash and manifest.params == json.loads(
            json.dumps(expected)
        ):
            return manifest.version
    return None


__all__ = [
    "already_registered",
    "load_params",
    "model_params",
    "run_evaluate",
    "run_prepare",
    "run_register",
    "run_train",
]

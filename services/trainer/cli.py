"""``marquee train``: prepare → train → evaluate → (register) in one process; the CronJob's entry.

    marquee train                                   # params.yaml's input (default: latest snapshot)
    marquee train --snapshot latest --register canary   # periodic retraining (idempotent)
    marquee train --movielens /path/to/ml-100k --tune   # ML-100K, Surprise's protocol, tuning
    marquee train synth data/snapshots/synthetic    # write a synthetic snapshot (no Kafka needed)

Parameters come from --params, else MARQUEE_TRAINER_PARAMS_FILE, else ./params.yaml, else the
project's params.yaml (the one ``dvc repro`` reads); the file used is named on stderr, and when
none is found training stops (exit 2) rather than train a different model on built-in defaults.

Exit codes: 0 done (or already up to date), 2 bad usage, 3 input (snapshot, data, parameters
file) missing, 4 bad data (leakage, nothing to train on), 5 registry or artifact error, 1 anything
else (as for every ``marquee`` command; see ``marquee --help``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from services.common.cliutil import (
    CliError,
    Parser,
    add_json_option,
    add_registry_option,
    not_found,
    run_cli,
)

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INPUT, EXIT_DATA, EXIT_REGISTRY = 0, 1, 2, 3, 4, 5
log = logging.getLogger("marquee.trainer")


def _parser() -> argparse.ArgumentParser:
    """The ``marquee train`` argument parser."""
    ap = Parser(
        prog="marquee train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument(
        "--snapshot", help="snapshot folder, or 'latest' under MARQUEE_TRAINER_SNAPSHOT_ROOT"
    )
    src.add_argument("--movielens", metavar="DIR", help="MovieLens 100K folder (read in place)")
    ap.add_argument(
        "--params",
        help="parameters file (default: MARQUEE_TRAINER_PARAMS_FILE, ./params.yaml, then the "
        "project's params.yaml)",
    )
    ap.add_argument("--families", help="comma-separated subset of svd,knn,popularity,als")
    ap.add_argument(
        "--register", metavar="CHANNEL", help="register the models and point CHANNEL at them"
    )
    add_registry_option(ap, "MARQUEE_TRAINER_REGISTRY_ROOT")
    add_json_option(ap)
    ap.add_argument(
        "--work-dir", help="keep prepared data and artifacts here (default: a temp folder)"
    )
    ap.add_argument(
        "--reports",
        help="write the evaluation report here (default: <work-dir>/reports, or without "
        "--work-dir <registry>/.last-train-report, replaced by each run)",
    )
    ap.add_argument("--seed", type=int, help="override params' seed")
    ap.add_argument(
        "--force", action="store_true", help="retrain even when the registry is up to date"
    )
    ap.add_argument(
        "--tune", action="store_true", help="with --movielens: tune SVD by cross-validation"
    )
    ap.add_argument(
        "--no-surprise-protocol",
        action="store_true",
        help="with --movielens: skip Surprise's 5-fold CV of default SVD",
    )
    ap.add_argument(
        "--knn-k", default="10,40,200", help="with --movielens: k values for the KNN memory study"
    )
    return ap


def _synth_parser() -> argparse.ArgumentParser:
    """The ``marquee train synth`` argument parser."""
    ap = Parser(prog="marquee train synth", description="write a synthetic snapshot")
    ap.add_argument("out", help="snapshot folder to write (e.g. data/snapshots/synthetic)")
    ap.add_argument("--users", type=int, default=20_000, help="users (default 20,000)")
    ap.add_argument("--items", type=int, default=2_000, help="movies (default 2,000)")
    ap.add_argument(
        "--mean-watches", type=float, default=8.0, help="mean watches per user (default 8)"
    )
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return ap


def _snapshot_hash(spec: str) -> str | None:
    """The content hash of a snapshot folder without reading its tables (None for MovieLens)."""
    if spec.startswith("movielens:"):
        return None
    m = Path(spec) / "manifest.json"
    return str(json.loads(m.read_text())["content_hash"]) if m.is_file() else None


def knn_memory_study(
    prepared: Any, params: dict[str, Any], ks: list[int], similarities: tuple[str, ...] = ("",)
) -> list[dict[str, Any]]:
    """How k trades accuracy for memory: KNN at several k (and similarities) on the same split.

    Scored on the validation period, since a k is chosen from it; the test period only reports.
    """
    import time

    from services.common.artifacts import Artifact, Manifest
    from services.common.scoring import Scorer
    from services.trainer.evaluate import ranking_metrics, rating_metrics
    from services.trainer.models import KNNModel

    out = []
    base = dict(params.get("models", {}).get("knn") or {})
    runs = [
        (sim or str(base.get("similarity", "pearson_baseline")), k)
        for sim in similarities
        for k in ks
    ]
    for sim, k in runs:
        started = time.perf_counter()
        cfg = {**base, "k": k, "similarity": sim}
        fitted = KNNModel(cfg, seed=int(params.get("seed", 0))).fit(prepared)
        seconds = time.perf_counter() - started
        a = fitted.arrays
        graph = sum(a[x].nbytes for x in ("knn_indptr", "knn_indices", "knn_sims"))
        manifest = Manifest("knn", "knn", "k", "", "", {}, {}, {}, {})
        scorer = Scorer(Artifact(manifest, a, Path()))
        rating = rating_metrics(scorer, a, prepared, "val")
        ranking = ranking_metrics(scorer, prepared, "val", 20, 5000, int(params.get("seed", 0)))
        out.append(
            {
                "period": "val",
                "similarity": sim,
                "k": k,
                "edges": len(a["knn_sims"]),
                "graph_bytes": int(graph),
                "dense_bytes": int(prepared.n_items) ** 2 * 4,
                "train_seconds": round(seconds, 2),
                "rmse": rating["rmse"],
                "mae": rating["mae"],
                "ndcg@20": ranking["ndcg@20"],
                "recall@20": ranking["recall@20"],
            }
        )
    return out


PROJECT_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
"""The project's own parameters file (present in a source checkout or an editable install)."""


def params_path(flag: str | None, settings: Any) -> Path:
    """The parameters file to use; CliError when the one asked for (or any default) is missing.

    A missing file must never mean built-in defaults: that trains a different model silently.
    """
    if flag:
        if not Path(flag).is_file():
            raise not_found(f"no parameters file {Path(flag).resolve()}", "check --params")
        return Path(flag).resolve()
    if "params_file" in settings.model_fields_set:
        if not Path(settings.params_file).is_file():
            raise not_found(
                f"no parameters file {Path(settings.params_file).resolve()}",
                "check MARQUEE_TRAINER_PARAMS_FILE",
            )
        return Path(settings.params_file).resolve()
    here = Path(settings.params_file).resolve()
    for candidate in (here, PROJECT_PARAMS):
        if candidate.is_file():
            return candidate
    raise CliError(
        f"no parameters file: neither {here} nor {PROJECT_PARAMS} exists",
        "pass --params FILE or set MARQUEE_TRAINER_PARAMS_FILE",
    )


SUMMARY_METRICS = (("ranking", "ndcg@20"), ("ranking", "recall@20"), ("rating", "rmse"))


def best_on_validation(models: dict[str, Any]) -> str | None:
    """The family with the best validation NDCG@20 (ties: the first name in sorted order)."""
    scored = {
        f: m.get("val", {}).get("ranking", {}).get("ndcg@20") for f, m in sorted(models.items())
    }
    scored = {f: v for f, v in scored.items() if v is not None}
    return max(scored, key=lambda f: scored[f]) if scored else None


def summary(
    doc: dict[str, Any], reports: Path, params_file: Path, registered: dict[str, Any]
) -> dict[str, Any]:
    """What the run did: each family's validation and test metrics, the best, where things are."""
    models = doc.get("models", {})
    return {
        "params": str(params_file),
        "report": str(reports / "report.md"),
        "best_on_validation": best_on_validation(models),
        "selected_by": "val ndcg@20",
        "models": {
            f: {
                period: {
                    name: m.get(period, {}).get(group, {}).get(name)
                    for group, name in SUMMARY_METRICS
                }
                for period in ("val", "test")
            }
            for f, m in sorted(models.items())
        },
        "registered": {
            f: {"version": r.get("version"), "channel": r.get("channel"), "added": r.get("added")}
            for f, r in sorted(registered.items())
        },
    }


def summary_text(result: dict[str, Any]) -> str:
    """``summary`` as a table for people (missing metrics show as '-')."""

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    cols = [(p, n) for p in ("val", "test") for _, n in SUMMARY_METRICS]
    head = f"{'model':<12}" + "".join(f"{p + ' ' + n:>15}" for p, n in cols)
    lines = [head]
    for f, m in result["models"].items():
        mark = "*" if f == result["best_on_validation"] else " "
        cells = "".join(f"{fmt(m[p][n]):>15}" for p, n in cols)
        lines.append(f"{f + ' ' + mark:<12}{cells}")
    best = result["best_on_validation"] or "-"
    lines.append(f"* best on validation (ndcg@20): {best}; the test columns only report")
    for f, r in result["registered"].items():
        state = "registered" if r["added"] else "already registered"
        lines.append(
            f"{state}: {f} {r['version']}" + (f" -> {r['channel']}" if r["channel"] else "")
        )
    lines.append(f"parameters: {result['params']}")
    lines.append(f"report: {result['report']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """The whole pipeline for one input; see the module doc for exit codes."""
    from services.common.artifacts import ArtifactError, Registry
    from services.common.snapshot import SnapshotError
    from services.trainer import pipeline
    from services.trainer.data import LeakageError
    from services.trainer.models import FAMILIES
    from services.trainer.settings import TrainerSettings
    from services.trainer.util import git_sha, progress

    settings = TrainerSettings()
    params_file = params_path(args.params, settings)
    print(f"marquee train: parameters from {params_file}", file=sys.stderr)
    params: dict[str, Any] = copy.deepcopy(pipeline.load_params(params_file))
    if args.seed is not None:
        params["seed"] = args.seed
    if args.families:
        wanted = [f.strip() for f in args.families.split(",") if f.strip()]
        unknown = sorted(set(wanted) - set(FAMILIES))
        if unknown:
            raise CliError(f"unknown families {unknown}", f"choose from {sorted(FAMILIES)}")
        params["families"] = wanted
    families = list(params.get("families") or FAMILIES)
    try:
        if args.movielens:
            spec = f"movielens:{args.movielens}"
        else:
            ref = args.snapshot or str(params.get("data", {}).get("snapshot", "latest"))
            spec = (
                pipeline.resolve_source(ref, settings.snapshot_root)
                if not ref.startswith("movielens:")
                else ref
            )
            if not spec.startswith("movielens:") and not (Path(spec) / "manifest.json").is_file():
                raise SnapshotError(
                    f"no snapshot at {spec}: run ingest (or `marquee train synth <dir>`) first"
                )
    except SnapshotError as exc:
        raise CliError(str(exc), "", EXIT_INPUT) from None
    if args.movielens and not (Path(args.movielens) / "u.data").is_file():
        raise not_found(
            f"no MovieLens 100K at {args.movielens} (no u.data)", "pass the ml-100k folder"
        )
    registry = Registry(getattr(args, "registry", None) or settings.registry_root)
    sha = git_sha(settings.git_sha)

    snap_hash = _snapshot_hash(spec)
    if args.register and snap_hash and not args.force:
        done = {f: pipeline.already_registered(params, registry, f, snap_hash) for f in families}
        if all(done.values()):
            log.info(
                "up to date: nothing to train", extra={"snapshot": snap_hash, "versions": done}
            )
            return EXIT_OK

    tmp = None
    work = Path(args.work_dir or settings.work_dir or "")
    reports_dir = Path(args.reports) if args.reports else work / "reports"
    if not (args.work_dir or settings.work_dir):
        tmp = tempfile.mkdtemp(prefix="marquee-train-")
        work = Path(tmp)
        # The scratch folder goes; the small report stays, so the summary can point at it: in
        # the registry (a volume in a cluster), replaced by the next run, so nothing piles up.
        reports_dir = Path(args.reports) if args.reports else registry.root / ".last-train-report"
        if not args.reports:
            shutil.rmtree(reports_dir, ignore_errors=True)
    params["paths"] = {
        "prepared": str((work / "prepared").resolve()),
        "artifacts": str((work / "artifacts").resolve()),
        "serving": str((work / "serving").resolve()),
        "reports": str(reports_dir.resolve()),
    }
    root = Path.cwd()
    try:
        prepared = pipeline.run_prepare(params, root, source=spec)
        if len(prepared.train.inter_user) + len(prepared.train.rate_user) == 0:
            raise CliError("the training period is empty", "train on a longer snapshot", EXIT_DATA)
        for family in progress(families, "train", total=len(families)):
            pipeline.run_train(params, root, family, prepared, sha)
        extra: dict[str, Any] = {}
        if args.movielens:
            from services.trainer.surprise_protocol import surprise_protocol, tune

            seed = int(params.get("seed", 0))
            if not args.no_surprise_protocol:
                extra["surprise_protocol"] = surprise_protocol(args.movielens, seed)
            if args.tune:
                extra["tuning"] = tune(args.movielens, seed)
            if args.knn_k and "knn" in families:
                ks = [int(k) for k in args.knn_k.split(",") if k]
                extra["knn_memory"] = knn_memory_study(
                    prepared, params, ks, ("cosine", "pearson_baseline")
                )
        doc = pipeline.run_evaluate(params, root, prepared, extra)
        registered: dict[str, Any] = {}
        if args.register:
            if params.get("register", {}).get("refit"):
                # serve the same configuration refit on every period, newest data included
                for family in progress(families, "refit", total=len(families)):
                    pipeline.run_train(params, root, family, prepared, sha, fit_on="all")
            params.setdefault("register", {})["families"] = families
            registered = pipeline.run_register(params, root, registry.root, args.register, sha)
        reports = Path(params["paths"]["reports"])
        result = summary(doc, reports, params_file, registered)
        print(
            json.dumps(result, indent=2) if getattr(args, "json", False) else summary_text(result)
        )
        return EXIT_OK
    except (SnapshotError, FileNotFoundError) as exc:
        raise CliError(str(exc), "", EXIT_INPUT) from None
    except LeakageError as exc:
        raise CliError(f"leakage: {exc}", "", EXIT_DATA) from None
    except ArtifactError as exc:
        raise CliError(f"registry: {exc}", "", EXIT_REGISTRY) from None
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Entry point of ``marquee train``."""
    return run_cli("marquee train", lambda: _main(argv))


build_parser = _parser


def _main(argv: list[str]) -> int:
    from services.trainer.settings import TrainerSettings
    from services.trainer.util import setup_logging

    settings = TrainerSettings()
    setup_logging(settings.log_level, settings.log_format)
    if argv and argv[0] == "synth":
        sargs = _synth_parser().parse_args(argv[1:])
        from services.trainer import synthetic

        m = synthetic.write(
            sargs.out,
            n_users=sargs.users,
            n_items=sargs.items,
            mean_watches=sargs.mean_watches,
            seed=sargs.seed,
        )
        print(
            json.dumps(
                {"snapshot": sargs.out, "rows": m["row_counts"], "content_hash": m["content_hash"]}
            )
        )
        return EXIT_OK
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except CliError:
        raise
    except Exception:
        log.exception("training failed")
        return EXIT_FAIL

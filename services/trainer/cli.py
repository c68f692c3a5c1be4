"""``marquee train``: prepare → train → evaluate → (register) in one process; the CronJob's entry.

    marquee train                                   # params.yaml's input (default: latest snapshot)
    marquee train --snapshot latest --register canary   # periodic retraining (idempotent)
    marquee train --movielens /path/to/ml-100k --tune   # ML-100K, Surprise's protocol, tuning
    marquee train synth data/snapshots/synthetic    # write a synthetic snapshot (no Kafka needed)

Exit codes: 0 done (or already up to date), 2 bad usage, 3 input snapshot missing or invalid,
4 bad data (leakage, nothing to train on), 5 registry or artifact error, 1 anything else.
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

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INPUT, EXIT_DATA, EXIT_REGISTRY = 0, 1, 2, 3, 4, 5
log = logging.getLogger("marquee.trainer")


def _parser() -> argparse.ArgumentParser:
    """The ``marquee train`` argument parser."""
    ap = argparse.ArgumentParser(
        prog="marquee train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument(
        "--snapshot", help="snapshot folder, or 'latest' under MARQUEE_TRAINER_SNAPSHOT_ROOT"
    )
    src.add_argument("--movielens", metavar="DIR", help="MovieLens 100K folder (read in place)")
    ap.add_argument("--params", help="parameters file (default: MARQUEE_TRAINER_PARAMS_FILE)")
    ap.add_argument("--families", help="comma-separated subset of svd,knn,popularity,als")
    ap.add_argument(
        "--register", metavar="CHANNEL", help="register the models and point CHANNEL at them"
    )
    ap.add_argument("--registry", help="registry root (default: MARQUEE_TRAINER_REGISTRY_ROOT)")
    ap.add_argument(
        "--work-dir", help="keep prepared data and artifacts here (default: a temp folder)"
    )
    ap.add_argument(
        "--reports", help="write the evaluation report here (default: <work-dir>/reports)"
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
    ap = argparse.ArgumentParser(
        prog="marquee train synth", description="write a synthetic snapshot"
    )
    ap.add_argument("out", help="snapshot folder to write (e.g. data/snapshots/synthetic)")
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=2_000)
    ap.add_argument("--mean-watches", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
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
    """How k trades accuracy for memory: KNN at several k (and similarities) on the same split."""
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
        rating = rating_metrics(scorer, a, prepared, "test")
        ranking = ranking_metrics(scorer, prepared, "test", 20, 5000, int(params.get("seed", 0)))
        out.append(
            {
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
    params_file = Path(args.params or settings.params_file)
    if args.params and not params_file.is_file():
        print(f"marquee train: no parameters file {params_file}", file=sys.stderr)
        return EXIT_USAGE
    params: dict[str, Any] = pipeline.load_params(params_file) if params_file.is_file() else {}
    params = copy.deepcopy(params)
    if args.seed is not None:
        params["seed"] = args.seed
    if args.families:
        wanted = [f.strip() for f in args.families.split(",") if f.strip()]
        unknown = sorted(set(wanted) - set(FAMILIES))
        if unknown:
            print(
                f"marquee train: unknown families {unknown}; choose from {sorted(FAMILIES)}",
                file=sys.stderr,
            )
            return EXIT_USAGE
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
        print(f"marquee train: {exc}", file=sys.stderr)
        return EXIT_INPUT
    registry = Registry(args.registry or settings.registry_root)
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
    if not (args.work_dir or settings.work_dir):
        tmp = tempfile.mkdtemp(prefix="marquee-train-")
        work = Path(tmp)
    params["paths"] = {
        "prepared": str((work / "prepared").resolve()),
        "artifacts": str((work / "artifacts").resolve()),
        "serving": str((work / "serving").resolve()),
        "reports": str(Path(args.reports or work / "reports").resolve()),
    }
    root = Path.cwd()
    try:
        prepared = pipeline.run_prepare(params, root, source=spec)
        if len(prepared.train.inter_user) + len(prepared.train.rate_user) == 0:
            print("marquee train: the training period is empty", file=sys.stderr)
            return EXIT_DATA
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
        if args.register:
            if params.get("register", {}).get("refit"):
                # serve the same configuration refit on every period, newest data included
                for family in progress(families, "refit", total=len(families)):
                    pipeline.run_train(params, root, family, prepared, sha, fit_on="all")
            params.setdefault("register", {})["families"] = families
            pipeline.run_register(params, root, registry.root, args.register, sha)
        reports = Path(params["paths"]["reports"])
        print(
            (reports / "report.md").read_text()
            if sys.stdout.isatty()
            else json.dumps({"reports": str(reports), "models": sorted(doc["models"])})
        )
        if tmp and args.reports is None:
            log.info(
                "reports are in a temp folder that is now removed; pass --reports to keep them"
            )
        return EXIT_OK
    except (SnapshotError, FileNotFoundError) as exc:
        print(f"marquee train: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except LeakageError as exc:
        print(f"marquee train: leakage: {exc}", file=sys.stderr)
        return EXIT_DATA
    except ArtifactError as exc:
        print(f"marquee train: registry: {exc}", file=sys.stderr)
        return EXIT_REGISTRY
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Entry point of ``marquee train``."""
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
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return run(args)
    except Exception:
        log.exception("training failed")
        return EXIT_FAIL

"""DVC stage ``tune``: seeded Optuna search per family on validation, then the test period once.

Each family in ``tune.families`` is searched on the validation period only (models fitted on
the training period; ``services.trainer.study``), the winners are refitted on train +
validation and the test period is scored once.  Writes ``<reports>/tune/study.json`` (every
trial of every search, reproducible for the seed) and ``<reports>/tune/temporal.json`` (the
test numbers, bootstrap intervals and the lifts against the baselines).
"""

from __future__ import annotations

import sys

from services.trainer.stages import stage_args


def main(argv: list[str] | None = None) -> int:
    """Run the stage."""
    from services.trainer import data as td
    from services.trainer.pipeline import paths
    from services.trainer.study import temporal_study
    from services.trainer.util import write_json

    _, params, root = stage_args(__doc__ or "", argv)
    where = paths(params, root)
    cfg = params.get("tune", {})
    families = list(cfg.get("families") or [])
    trials = {f: int(cfg.get("trials", 10)) for f in families}
    result = temporal_study(
        td.load(where["prepared"]),
        families,
        int(params.get("evaluate", {}).get("k", 20)),
        int(params.get("seed", 0)),
        trials=trials,
    )
    out = where["reports"] / "tune"
    study = {k: result[k] for k in ("k", "seed", "cold_tuning", "tuning")}
    write_json(out / "study.json", study)
    write_json(
        out / "temporal.json",
        {k: v for k, v in result.items() if k not in study}
        | {"chosen": {f: t["best"] for f, t in result["tuning"].items()}},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

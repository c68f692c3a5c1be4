"""DVC stage ``prepare``: snapshot (or ``movielens:<dir>``) → temporally split prepared data."""

from __future__ import annotations

import sys

from services.trainer.stages import stage_args


def main(argv: list[str] | None = None) -> int:
    """Run the stage; exit 3 when the input snapshot is missing or invalid."""
    from services.common.snapshot import SnapshotError
    from services.trainer.pipeline import run_prepare

    _, params, root = stage_args(__doc__ or "", argv)
    try:
        run_prepare(params, root)
    except (SnapshotError, FileNotFoundError) as exc:
        print(
            f"prepare: {exc}\n  make one with ingest (`make demo`), or without Kafka with "
            "`marquee train synth data/snapshots/synthetic`, or point data.snapshot in "
            "params.yaml at `movielens:<ml-100k folder>`",
            file=sys.stderr,
        )
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DVC stage ``evaluate``: every artifact on the held-out periods → metrics, report, plots."""

from __future__ import annotations

import sys

from services.trainer.stages import stage_args


def main(argv: list[str] | None = None) -> int:
    """Run the stage."""
    from services.trainer.pipeline import run_evaluate

    _, params, root = stage_args(__doc__ or "", argv)
    run_evaluate(params, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())

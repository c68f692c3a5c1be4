"""DVC stages ``train@<family>`` and ``refit@<family>`` (``--fit-on all``): train one family.

``train`` fits on the training period (the model that is evaluated); ``refit`` fits the same
configuration on every period, which is what serves when ``register.refit`` is on.
"""

from __future__ import annotations

import sys

from services.trainer.stages import stage_args


def main(argv: list[str] | None = None) -> int:
    """Run the stage for the family named on the command line."""
    from services.trainer.pipeline import run_train
    from services.trainer.settings import TrainerSettings

    args, params, root = stage_args(__doc__ or "", argv, "family", "--fit-on")
    run_train(params, root, args.family, sha=TrainerSettings().git_sha, fit_on=args.fit_on)
    return 0


if __name__ == "__main__":
    sys.exit(main())

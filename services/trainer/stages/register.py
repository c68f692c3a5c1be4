"""DVC stage ``register``: copy the evaluated artifacts, with metrics, into the model registry."""

from __future__ import annotations

import sys

from services.trainer.stages import stage_args


def main(argv: list[str] | None = None) -> int:
    """Run the stage (registry: params ``register.registry``, or MARQUEE_TRAINER_REGISTRY_ROOT)."""
    import os

    from services.trainer.pipeline import run_register
    from services.trainer.settings import TrainerSettings

    _, params, root = stage_args(__doc__ or "", argv)
    settings = TrainerSettings()
    registry = settings.registry_root if "MARQUEE_TRAINER_REGISTRY_ROOT" in os.environ else None
    run_register(params, root, registry_root=registry, sha=settings.git_sha)
    return 0


if __name__ == "__main__":
    sys.exit(main())

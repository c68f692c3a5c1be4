"""DVC stage entry points: ``python -m services.trainer.stages.<stage>`` run in the repo root."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.trainer.settings import TrainerSettings
from services.trainer.util import setup_logging


def stage_args(
    description: str, argv: list[str] | None, *extra: str
) -> tuple[argparse.Namespace, dict[str, Any], Path]:
    """Parse ``--params``/``--root`` (plus positional ``extra``), set up logging, load params."""
    from services.trainer.pipeline import load_params

    settings = TrainerSettings()
    ap = argparse.ArgumentParser(description=description)
    for name in extra:
        if name.startswith("--"):
            ap.add_argument(name, default="train", choices=["train", "all"])
        else:
            ap.add_argument(name)
    ap.add_argument("--params", default=settings.params_file, help="parameters file")
    ap.add_argument(
        "--root", default=".", help="pipeline root (paths in params are relative to it)"
    )
    args = ap.parse_args(argv)
    setup_logging(settings.log_level, settings.log_format)
    return args, load_params(Path(args.root) / args.params), Path(args.root)

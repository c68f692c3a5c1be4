"""Trainer settings, read from ``MARQUEE_TRAINER_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from services.common.settings import ServiceSettings, service_config


class TrainerSettings(ServiceSettings):
    """Where the trainer finds snapshots and parameters and where it puts models."""

    model_config = service_config("MARQUEE_TRAINER_")

    snapshot_root: str = "data/snapshots"
    """Folder holding ingest snapshots; ``--snapshot latest`` picks the newest one in it."""
    registry_root: str = "models"
    """Root of the filesystem model registry (git-ignored)."""
    params_file: str = "params.yaml"
    """The pipeline's parameters (the same file ``dvc repro`` reads)."""
    work_dir: str = ""
    """Scratch folder for prepared data and artifacts of a CLI run; empty means a temp folder."""
    log_format: Literal["auto", "json", "text"] = "auto"
    """``auto`` writes JSON lines unless stderr is a terminal, where it writes plain text."""
    git_sha: str = ""
    """Code version recorded in manifests; empty means ask git (containers set it at build)."""
    threads: int = 0
    """Threads for ALS and BLAS; 0 means every core the process may use."""

"""What :meth:`FairTrainer.fit <.trainer.FairTrainer.fit>` records each epoch: the history,
the progress line and the run logger (``history.jsonl``, TensorBoard, wandb)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..training.loggers import RunLogger
    from .model import FairModel

HISTORY_KEYS = ("train_loss", "val_loss", "train_fairness_gap", "val_fairness_gap", "learning_rate")
"""The scalar entries of the history, one per epoch (plus ``val_attribute_gaps``, ``multipliers``)."""


def empty_history() -> dict[str, list]:
    return {key: [] for key in (*HISTORY_KEYS, "val_attribute_gaps", "multipliers")}


def progress_line(epoch: int, record: dict[str, Any]) -> str:
    """``Epoch 3 | train_loss 0.5 | ...``: the finite scalars of ``record``."""
    parts = [f"Epoch {epoch}"]
    for key in HISTORY_KEYS:
        value = record[key]
        if not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{key} {value:.4g}")
    return " | ".join(parts)


def run_logger(
    log_dir: Path, model: FairModel, dual_lr: float, wandb_mode: str, tensorboard: bool
) -> RunLogger:
    """The logger of a fit into ``log_dir`` (created), its config naming the model's fairness setup."""
    from ..training.loggers import RunLogger

    config = {
        "name": "fair_trainer",
        "fairness_metric": model.fairness_metric,
        "fairness_tolerance": model.fairness_tolerance,
        "enforcement": model.enforcement,
        "dual_lr": dual_lr,
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    return RunLogger(log_dir, config, wandb_mode=wandb_mode, tensorboard=tensorboard)

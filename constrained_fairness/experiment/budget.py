"""Batch sizes that transfer across data sizes: at least ``min_steps_per_epoch`` steps.

The default's dual step sizes and epoch counts were calibrated on Adult, at about 100 steps
per epoch (26,049 training rows, batches of 256). On a table of 640 rows the same batch gives
3 steps per epoch, so CEAG's multipliers get 180 dual steps in place of 6,120 and end far from
where the constraint needs them. With ``min_steps_per_epoch = m > 0`` a stage's batch is

    b = min(batch_size, max(1, floor(N_train / m)))     (then rounded up to a multiple of the DDP ranks)

so every data set gets at least ``m`` steps per epoch (one per row below ``m`` rows), about the
step budget of Adult, while Adult
itself keeps its batch of 256. The calibration on data sets of several sizes is in the README
(``benchmarks/field_test.py``).
"""

from __future__ import annotations

import dataclasses

from ..config import ExperimentConfig


def scaled_batch(batch_size: int, min_steps_per_epoch: int, train_rows: int, world: int = 1) -> int:
    """``min(batch_size, floor(train_rows / min_steps_per_epoch))`` (``batch_size`` when the
    minimum is 0), at least 1 and a multiple of ``world``."""
    if min_steps_per_epoch <= 0:
        return batch_size
    size = max(1, min(batch_size, train_rows // min_steps_per_epoch))
    return -(-size // world) * world


def with_scaled_batches(cfg: ExperimentConfig, train_rows: int, world: int = 1) -> ExperimentConfig:
    """``cfg`` with the dense and sparse stages' batch sizes scaled to ``train_rows``."""
    d, f = cfg.dense, cfg.finetune
    return dataclasses.replace(
        cfg,
        dense=dataclasses.replace(
            d, batch_size=scaled_batch(d.batch_size, d.min_steps_per_epoch, train_rows, world)
        ),
        finetune=dataclasses.replace(
            f, batch_size=scaled_batch(f.batch_size, f.min_steps_per_epoch, train_rows, world)
        ),
    )

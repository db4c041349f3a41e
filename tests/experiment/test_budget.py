"""Batches scaled to the data: at least min_steps_per_epoch steps, Adult's batch unchanged."""

from __future__ import annotations

import math

import pytest

from constrained_fairness.config import load_config
from constrained_fairness.errors import ConfigError
from constrained_fairness.experiment.budget import scaled_batch, with_scaled_batches


@pytest.mark.parametrize("rows", [1, 7, 366, 640, 1000, 4600, 26049, 10**6])
def test_scaled_batch_gives_at_least_the_minimum_steps_and_never_exceeds_the_batch(rows):
    batch = scaled_batch(256, 100, rows)
    assert 1 <= batch <= 256
    steps = math.ceil(rows / batch)
    assert steps >= min(100, rows) or batch == 256  # 100 steps, unless the batch is already the cap
    assert batch == min(256, max(1, rows // 100))  # the formula, by hand
    assert scaled_batch(256, 0, rows) == 256  # 0: the batch as given
    assert scaled_batch(256, 100, rows, world=4) % 4 == 0  # DDP: a multiple of the ranks


def test_the_default_keeps_adults_batch_and_scales_a_small_table():
    cfg = load_config(None)
    assert (cfg.dense.min_steps_per_epoch, cfg.finetune.min_steps_per_epoch) == (100, 100)
    adult = with_scaled_batches(cfg, 26049)
    assert (adult.dense.batch_size, adult.finetune.batch_size) == (256, 256)
    small = with_scaled_batches(cfg, 640)
    assert (small.dense.batch_size, small.finetune.batch_size) == (6, 6)  # 107 steps per epoch
    with pytest.raises(ConfigError, match=r"finetune\.min_steps_per_epoch must be >= 0"):
        load_config(None, ["finetune.min_steps_per_epoch=-1"])

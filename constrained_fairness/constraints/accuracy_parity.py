"""Accuracy parity (no dense reference) and bounded group loss."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..groups import Grouping
from .base import BatchOutputs
from .statistic import GroupLossConstraint, GroupStatisticConstraint, SampleStatistic


class AccuracyParity(GroupStatisticConstraint):
    r"""``|acc[g] − acc| ≤ ε`` per group (or max − min ≤ ε), any number of classes.

    strict: ``1[argmax z = y]``; proxy: ``softmax(z / T)_y``, the probability of the true
    class at temperature ``T``, a smooth surrogate of correctness.
    """

    def __init__(self, grouping: Grouping, tolerance: float, *, temperature: float = 1.0, **kwargs) -> None:
        if not temperature > 0:
            raise ConfigError(f"accuracy_parity: temperature must be > 0, got {temperature}")
        super().__init__(grouping, tolerance, **kwargs)
        self.temperature = float(temperature)

    def sample_statistic(self, batch: BatchOutputs) -> SampleStatistic:
        probs = torch.softmax(batch.logits / self.temperature, dim=1)
        return SampleStatistic(
            proxy=probs.gather(1, batch.targets.unsqueeze(1)).squeeze(1), strict=batch.correct
        )


class BoundedGroupLoss(GroupLossConstraint):
    r"""``L_g ≤ b`` for every group: one row per group, ``L_g − b ≤ 0``, any number of classes.

    The loss is differentiable, so the proxy and the strict statistic are both the mean
    cross-entropy; the tolerance argument is the bound ``b``.
    """

    def __init__(self, grouping: Grouping, bound: float, **kwargs) -> None:
        super().__init__(grouping, bound, row_labels=("",), **kwargs)

    def violations(self, values: torch.Tensor, overall: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return (values - self.tolerance).unsqueeze(0)

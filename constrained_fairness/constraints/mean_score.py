r"""Constraints on the mean *score* of each group, the metrics of the ``fairness_training`` API.

The score ``ŷ_n`` is the model's single output (a logit, a probability or a regression
value). With ``m_v`` the mean score of the rows whose protected attribute ``a`` has value
``v`` and ``m̄`` the mean over all rows:

``mean_pred`` (:class:`MeanPredictionGap`), one family per attribute:

* binary attribute (2 values):   ``|m_0 − m_1| ≤ ε``;
* ``k > 2`` values:              ``|m_v − m̄| ≤ ε`` for every value ``v`` (group vs overall).

These are exactly the constraints of :func:`constrained_fairness.projection.fair_projection`.
Rows: for group ``g`` the pair ``m_g − r_g − ε ≤ 0`` ("above") and ``r_g − m_g − ε ≤ 0``
("below"), where the reference ``r_g`` is the other value's mean for a binary attribute
and ``m̄`` otherwise; the gap of attribute ``a`` is ``max_{g ∈ a} |m_g − r_g|``.

``mean_residual`` (:class:`MeanResidual`): ``|E[ŷ − y | group]| ≤ ε`` per group; the
gap is ``max_g |E[ŷ − y | g]|``. It needs labels for training and evaluation only.

Groups are marginal (one partition per attribute); the proxy and the strict statistic
are both the score itself, so the dual step sees the same batch estimate as the primal.
"""

from __future__ import annotations

import torch

from ..groups import Grouping
from .base import BatchOutputs
from .statistic import GroupStatisticConstraint, SampleStatistic


class MeanPredictionGap(GroupStatisticConstraint):
    """``mean_pred``: the mean score gap between the values of each protected attribute."""

    def __init__(self, grouping: Grouping, tolerance: float, device: torch.device | str = "cpu") -> None:
        super().__init__(grouping, tolerance, buffer_size=0, device=device)
        self.binary = (torch.bincount(self.partition)[self.partition] == 2).to(device)

    def sample_statistic(self, batch: BatchOutputs) -> SampleStatistic:
        score = batch.logits[:, 0]
        return SampleStatistic(proxy=score, strict=score.detach())

    def violations(self, values: torch.Tensor, overall: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        part = self.partition[ids]
        sums = torch.zeros(self.num_partitions, dtype=values.dtype, device=values.device)
        sums = sums.index_add(0, part, values)
        present = torch.bincount(part, minlength=self.num_partitions)[part]
        # binary attribute with both values present: compare with the other value's mean
        other = torch.where(present == 2, sums[part] - values, values)
        reference = torch.where(self.binary[ids], other, overall)
        return torch.stack([values - reference - self.tolerance, reference - values - self.tolerance])


class MeanResidual(GroupStatisticConstraint):
    """``mean_residual``: ``|E[ŷ − y | g]| ≤ ε`` for every group ``g``."""

    def __init__(self, grouping: Grouping, tolerance: float, device: torch.device | str = "cpu") -> None:
        super().__init__(grouping, tolerance, buffer_size=0, device=device)

    def sample_statistic(self, batch: BatchOutputs) -> SampleStatistic:
        residual = batch.logits[:, 0] - batch.targets.to(batch.logits.dtype)
        return SampleStatistic(proxy=residual, strict=residual.detach())

    def violations(self, values: torch.Tensor, overall: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([values - self.tolerance, -values - self.tolerance])


def attribute_gaps(constraint: GroupStatisticConstraint, outputs: BatchOutputs) -> torch.Tensor:
    """``(A,)`` float64 gap of each attribute on a whole split: ``max`` over the attribute's
    groups and rows of ``violation + ε`` (NaN where no group of the attribute is present).

    For :class:`MeanPredictionGap` this is ``|m_0 − m_1|`` (binary) or ``max_v |m_v − m̄|``.
    """
    per_group = (constraint.evaluate(outputs) + constraint.tolerance).amax(dim=0)  # (G,), NaN if absent
    attribute = (constraint.partition // constraint.num_labels).cpu()  # label refinement folded back
    present = ~torch.isnan(per_group)
    gaps = torch.full((constraint.num_partitions // constraint.num_labels,), -torch.inf, dtype=torch.float64)
    gaps = gaps.scatter_reduce(0, attribute[present], per_group[present], reduce="amax")
    return torch.where(torch.isinf(gaps), torch.nan, gaps)

"""CEAG: constrained excess accuracy gap (Hashemizadeh et al., ICLR 2024)."""

from __future__ import annotations

from typing import Literal

import cooper
import torch

from ..errors import ConfigError
from ..groups import Grouping
from . import ceag_fused
from .base import BatchOutputs
from .reference import DenseReference
from .statistic import GroupStatisticConstraint, SampleStatistic


class ExcessAccuracyGap(GroupStatisticConstraint):
    r"""One constraint per group: ``ψ[g](θ) ≤ ε``.

    Strict violation (dual update), from a replay buffer of per-sample correctness:

        ψ[g] − ε = (acc_d[g] − acc_buf[g]) − (acc_d − acc_buf) − ε

    for the groups whose buffer is full, where ``acc_buf`` is the overall estimate,
    ``Σ p[g] acc_buf[g] / Σ p[g]`` over the full groups with the training frequencies
    ``p`` (``overall_estimate="weighted"``), or their plain mean (``"unweighted"``, the
    reference code's choice, biased when groups are imbalanced).

    Proxy violation (primal gradient), for the groups present in the batch:

        ψ̃[g] = (L_g(θ) − L_d[g]) − (L(θ) − L_d)

    with ``L_g`` the mean cross-entropy of the batch samples of group ``g`` and ``L`` the
    batch mean; gradients flow through both terms. Only the upper bound is constrained:
    a group that gains accuracy is never penalised.
    """

    def __init__(
        self,
        reference: DenseReference,
        tolerance: float,
        buffer_size: int = 40,
        overall_estimate: Literal["weighted", "unweighted"] = "weighted",
        grouping: Grouping | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ConfigError(f"ceag buffer_size must be >= 1, got {buffer_size}; the paper uses 40")
        grouping = grouping or Grouping.single(reference.num_groups)
        if grouping.num_groups != reference.num_groups:
            raise ConfigError(
                f"the dense reference has {reference.num_groups} groups, the grouping {grouping.num_groups}"
            )
        weights = reference.overall_weights(overall_estimate)
        super().__init__(
            grouping,
            tolerance,
            buffer_size=buffer_size,
            frequency=weights,
            row_labels=("",),
            device=reference.device,
        )
        self.reference = reference

    def sample_statistic(self, batch: BatchOutputs) -> SampleStatistic:
        return SampleStatistic(proxy=batch.losses, strict=batch.correct)

    def compute(self, batch: BatchOutputs) -> cooper.ConstraintState | None:
        """:meth:`GroupStatisticConstraint.compute`; with fixed shapes on the CPU, the same
        rows from two compiled kernels where they apply (:mod:`.ceag_fused`)."""
        if self.fixed_shapes and ceag_fused.applies(self, batch):
            return ceag_fused.compute(self, batch)
        return super().compute(batch)

    def proxy_violations(
        self, values: torch.Tensor, overall: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        ref = self.reference
        loss = ref.loss if ids is self._all_groups else ref.loss.index_select(0, ids)
        return ((values - loss) - (overall - ref.overall_loss)).unsqueeze(0)

    def strict_violations(
        self, values: torch.Tensor, overall: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        ref = self.reference
        accuracy = ref.accuracy if ids is self._all_groups else ref.accuracy.index_select(0, ids)
        gap = (accuracy - values) - (ref.overall_accuracy - overall)
        return (gap - self.tolerance).unsqueeze(0)

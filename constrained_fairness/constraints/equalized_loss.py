"""EL: equalized loss (Tran et al., 2022), with an optional replay buffer (EL+RB)."""

from __future__ import annotations

import torch

from ..groups import Grouping
from .base import BatchOutputs
from .statistic import GroupStatisticConstraint, SampleStatistic


class EqualizedLoss(GroupStatisticConstraint):
    r"""Two constraints per group, ``|L_g(θ) − L(θ)| ≤ tol``:

        row g:       L_g − L − tol ≤ 0
        row G + g:   L − L_g − tol ≤ 0

    Without a buffer (``buffer_size=0``) the batch estimate is both the proxy and the
    strict violation. With a buffer of size ``k`` (EL+RB), the dual update uses the
    buffered per-sample losses of the full-buffer groups against the frequency-weighted
    overall estimate; the proxy stays the batch estimate.
    """

    def __init__(
        self,
        grouping: Grouping,
        tolerance: float,
        buffer_size: int = 0,
        frequency: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(grouping, tolerance, buffer_size=buffer_size, frequency=frequency, device=device)

    def sample_statistic(self, batch: BatchOutputs) -> SampleStatistic:
        return SampleStatistic(proxy=batch.losses, strict=batch.losses.detach())

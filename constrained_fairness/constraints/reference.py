"""Statistics of the dense model on the training split, the reference of CEAG and EL."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config.choices import OVERALL_ESTIMATES
from ..errors import ConfigError
from ..metrics import GroupStats


@dataclass
class DenseReference:
    """Dense-model training statistics.

    Attributes:
        accuracy: ``acc_d[g]``, ``(G,)``.
        loss: ``L_d[g]``, ``(G,)``.
        overall_accuracy: ``acc_d``.
        overall_loss: ``L_d``.
        frequency: ``p[g] = n[g] / N``, the training frequency of each group.
    """

    accuracy: torch.Tensor
    loss: torch.Tensor
    overall_accuracy: float
    overall_loss: float
    frequency: torch.Tensor

    @classmethod
    def from_stats(cls, stats: GroupStats) -> DenseReference:
        counts = stats.counts.float()
        return cls(
            accuracy=torch.nan_to_num(stats.accuracy.float()),
            loss=torch.nan_to_num(stats.loss.float()),
            overall_accuracy=float(stats.overall_accuracy),
            overall_loss=float(stats.overall_loss),
            frequency=counts / counts.sum(),
        )

    @property
    def device(self) -> torch.device:
        return self.accuracy.device

    def to(self, device: torch.device | str) -> DenseReference:
        """The same statistics on ``device``."""
        return DenseReference(
            self.accuracy.to(device),
            self.loss.to(device),
            self.overall_accuracy,
            self.overall_loss,
            self.frequency.to(device),
        )

    @property
    def num_groups(self) -> int:
        return int(self.accuracy.numel())

    def overall_weights(self, estimate: str) -> torch.Tensor:
        """Weights of the overall buffer estimate ``Σ w[g] s[g] / Σ w[g]`` over full groups:
        the training frequencies ``p`` (``"weighted"``) or ones (``"unweighted"``, the paper
        code's plain mean, biased when groups are imbalanced)."""
        if estimate not in OVERALL_ESTIMATES:
            raise ConfigError(f"overall_estimate must be 'weighted' or 'unweighted', got {estimate!r}")
        return self.frequency if estimate == "weighted" else torch.ones_like(self.frequency)

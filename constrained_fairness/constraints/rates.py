r"""Rate-parity constraints: demographic parity, equal opportunity, equalized odds.

A *rate* is the fraction of a group's samples predicted positive, optionally among the
samples with a given label. The positive class is ``c`` (1 for a binary target; for a
multi-class target, one-vs-rest with ``positive_class=c`` must be asked for).

* strict: ``1[argmax_j z_j = c]``;
* proxy: ``σ((z_c − max_{j≠c} z_j) / T)``, a sigmoid of the logit margin with
  temperature ``T`` (default 1). For a binary softmax and ``T = 1`` it is exactly the
  predicted probability of the positive class; smaller ``T`` is closer to the step
  function but has vanishing gradients away from the decision boundary.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..groups import Grouping
from .base import BatchOutputs
from .statistic import GroupStatisticConstraint, SampleStatistic


def positive_class_of(num_classes: int, positive_class: int | None, what: str) -> int:
    if num_classes > 2 and positive_class is None:
        raise ConfigError(
            f"{what} is a rate constraint and the target has {num_classes} classes; set positive_class "
            "to the class to treat one-vs-rest"
        )
    c = 1 if positive_class is None else int(positive_class)
    if not 0 <= c < num_classes:
        raise ConfigError(f"{what}: positive_class {c} is not a class of the target (0..{num_classes - 1})")
    return c


class RateConstraint(GroupStatisticConstraint):
    """Base of the rate constraints: positive-prediction indicator and its sigmoid proxy."""

    name = "rate"

    def __init__(
        self,
        grouping: Grouping,
        tolerance: float,
        num_classes: int,
        *,
        positive_class: int | None = None,
        form: str = "group_vs_overall",
        temperature: float = 1.0,
        buffer_size: int = 40,
        device: torch.device | str = "cpu",
        **kwargs,
    ) -> None:
        positive = positive_class_of(num_classes, positive_class, self.name)
        if not temperature > 0:
            raise ConfigError(f"{self.name}: temperature must be > 0, got {temperature}")
        super().__init__(grouping, tolerance, form=form, buffer_size=buffer_size, device=device, **kwargs)
        self.positive_class = positive
        self.temperature = float(temperature)

    def soft_positive(self, logits: torch.Tensor) -> torch.Tensor:
        scaled = logits / self.temperature
        others = scaled.clone()
        others[:, self.positive_class] = float("-inf")
        return torch.sigmoid(scaled[:, self.positive_class] - others.max(dim=1).values)

    def hard_positive(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.detach().argmax(dim=1) == self.positive_class).to(logits.dtype)

    def is_positive(self, targets: torch.Tensor) -> torch.Tensor:
        return targets == self.positive_class


class DemographicParity(RateConstraint):
    """``|P(ŷ = c | g) − P(ŷ = c)| ≤ ε`` per group (or max − min ≤ ε)."""

    name = "demographic_parity"

    def sample_statistic(self, batch: BatchOutputs) -> SampleStatistic:
        return SampleStatistic(
            proxy=self.soft_positive(batch.logits), strict=self.hard_positive(batch.logits)
        )


class EqualOpportunity(RateConstraint):
    """True-positive rate parity: ``|P(ŷ = c | y = c, g) − P(ŷ = c | y = c)| ≤ ε``."""

    name = "equal_opportunity"

    def sample_statistic(self, batch: BatchOutputs) -> SampleStatistic:
        return SampleStatistic(
            proxy=self.soft_positive(batch.logits),
            strict=self.hard_positive(batch.logits),
            mask=self.is_positive(batch.targets),
        )


class EqualizedOdds(RateConstraint):
    """TPR and FPR parity: each group is split by the label (``y ≠ c``: FPR; ``y = c``: TPR)."""

    name = "equalized_odds"

    def __init__(self, grouping: Grouping, tolerance: float, num_classes: int, **kwargs) -> None:
        super().__init__(grouping, tolerance, num_classes, num_labels=2, label_names=["FPR", "TPR"], **kwargs)

    def sample_statistic(self, batch: BatchOutputs) -> SampleStatistic:
        return SampleStatistic(
            proxy=self.soft_positive(batch.logits),
            strict=self.hard_positive(batch.logits),
            label=self.is_positive(batch.targets).long(),
        )

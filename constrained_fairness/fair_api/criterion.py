"""The user's criterion, seen by the training step and the evaluation: the loss of a batch, the
targets shaped for it, and what the fairness constraint sees.

A score model (one output) is trained with, e.g., ``BCEWithLogitsLoss`` on ``(B, 1)`` targets;
a class model with a class-index loss. The constraint sees scores for the score metrics (and
for projection enforcement), else two-class logits ``(0, s)`` (log-odds of probabilities for
``BCELoss``) or the class logits, with per-sample losses where the metric needs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..constraints.base import BatchOutputs
from ..errors import ConfigError
from .model import SCORE_METRICS, FairModel

LOSS_METRICS = ("equalized_loss", "bounded_group_loss")


class CriterionView:
    """``view(outputs, y, attributes)`` → ``(loss, batch)``: the objective of the trainer's
    :class:`~constrained_fairness.problem.FairnessProblem`. ``lagrangian()`` tells whether the
    constraint is enforced (else it is only measured, on scores)."""

    def __init__(self, model: FairModel, criterion: nn.Module, lagrangian: Callable[[], bool]) -> None:
        self.model, self.criterion, self.lagrangian = model, criterion, lagrangian

    def __call__(
        self, outputs: torch.Tensor, y: torch.Tensor, attributes: torch.Tensor
    ) -> tuple[torch.Tensor, BatchOutputs]:
        return self.loss(outputs, y), self.batch_outputs(outputs, y, attributes)

    def targets(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y`` as the criterion wants it: ``outputs``' shape and dtype for a score model, class
        indices otherwise."""
        if self.model.output_dim == 1:
            return y.reshape(outputs.shape).to(outputs.dtype)
        return y.reshape(-1).long()

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(outputs, self.targets(outputs, y))

    def batch_outputs(self, outputs: torch.Tensor, y: torch.Tensor, attributes: torch.Tensor) -> BatchOutputs:
        """What the constraint sees: scores for score metrics, class logits for the others."""
        model = self.model
        if model.fairness_metric in SCORE_METRICS or not self.lagrangian():
            targets = y.reshape(-1).to(outputs.dtype)
            return BatchOutputs(outputs, targets, attributes, torch.zeros_like(targets))
        if model.output_dim == 1:
            score = outputs[:, 0]
            if isinstance(self.criterion, nn.BCELoss):  # probabilities: to log-odds
                score = torch.logit(score.clamp(1e-6, 1 - 1e-6))
            logits = torch.stack([torch.zeros_like(score), score], dim=1)
            targets = y.reshape(-1).round().long()
        else:
            logits, targets = outputs, y.reshape(-1).long()
        if model.fairness_metric in LOSS_METRICS:
            losses = self.per_sample_loss(outputs, y)
        else:
            losses = torch.zeros(len(targets), device=outputs.device)
        return BatchOutputs(logits, targets, attributes, losses)

    def per_sample_loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The criterion per sample (``reduction="none"`` for the call, then restored)."""
        reduction = getattr(self.criterion, "reduction", None)
        if reduction is None:
            raise ConfigError(
                f"fairness_metric={self.model.fairness_metric!r} needs per-sample losses, but the criterion "
                f"{type(self.criterion).__name__} has no 'reduction'; use a torch.nn loss"
            )
        self.criterion.reduction = "none"
        try:
            losses = self.criterion(outputs, self.targets(outputs, y))
        finally:
            self.criterion.reduction = reduction
        return losses.reshape(len(outputs), -1).mean(dim=1)

    def correct(self, outputs: torch.Tensor, y: torch.Tensor) -> float:
        """Correct predictions in the batch; NaN where the criterion gives no decision rule."""
        if self.model.output_dim > 1:
            return float((outputs.argmax(dim=1) == y.reshape(-1).long()).sum())
        if isinstance(self.criterion, nn.BCEWithLogitsLoss):
            return float(((outputs[:, 0] > 0).long() == y.reshape(-1).round().long()).sum())
        if isinstance(self.criterion, nn.BCELoss):
            return float(((outputs[:, 0] > 0.5).long() == y.reshape(-1).round().long()).sum())
        return math.nan

"""The common base of per-group fairness constraints.

A constraint knows only tensors: logits, targets, protected-attribute codes and
per-sample losses of a batch (:class:`BatchOutputs`). It returns a Cooper
``ConstraintState`` with

* ``violation``: a differentiable *proxy* of the violation for the groups present in
  the batch (drives the primal gradient), with their row ids as ``constraint_features``;
* ``strict_violation``: the true, non-differentiable violation for the groups that have
  an estimate (drives the dual update), with their row ids as
  ``strict_constraint_features``.

Each constraint holds one Lagrange multiplier per constraint row in a Cooper
``IndexedMultiplier``, so only the rows observed in a step are read or updated.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from functools import cached_property

import cooper
import torch
from cooper.multipliers import IndexedMultiplier

from ..errors import ConfigError


@dataclass
class BatchOutputs:
    """What a constraint sees of one batch (or of a whole split, for evaluation).

    Attributes:
        logits: ``(B, C)`` model outputs.
        targets: ``(B,)`` class indices.
        attributes: ``(B, A)`` codes of the data's protected attributes.
        losses: ``(B,)`` per-sample cross-entropy, differentiable during training.
    """

    logits: torch.Tensor
    targets: torch.Tensor
    attributes: torch.Tensor
    losses: torch.Tensor

    def to(self, device: torch.device) -> BatchOutputs:
        """The same outputs on ``device``."""
        if self.logits.device == device:
            return self
        return BatchOutputs(
            self.logits.to(device),
            self.targets.to(device),
            self.attributes.to(device),
            self.losses.to(device),
        )

    @cached_property
    def correct(self) -> torch.Tensor:
        """``(B,)`` float 0/1 correctness of the arg-max prediction (no gradient)."""
        return (self.logits.detach().argmax(dim=1) == self.targets).to(self.losses.dtype)


def check_tolerance(tolerance: float, what: str) -> float:
    if not tolerance >= 0:
        raise ConfigError(f"{what} tolerance must be >= 0, got {tolerance}; use e.g. 0.01")
    return float(tolerance)


class GroupConstraint(cooper.Constraint, abc.ABC):
    """Base class: a family of ``num_constraints`` inequality constraints ``c_i(θ) ≤ 0``.

    A subclass may set ``CONSTRAINT_TYPE = cooper.ConstraintType.EQUALITY`` for constraints
    ``c_i(θ) = 0``: their multipliers are not projected onto ``λ ≥ 0``.

    Subclasses implement :meth:`compute`, and :meth:`state_dict` / :meth:`load_state_dict`
    if they keep state besides the multiplier (for example a replay buffer). Most
    constraints are per-group statistics: subclass
    :class:`~constrained_fairness.constraints.statistic.GroupStatisticConstraint` instead.
    """

    CONSTRAINT_TYPE = cooper.ConstraintType.INEQUALITY

    def __init__(self, num_constraints: int, tolerance: float, device: torch.device | str = "cpu") -> None:
        # Cooper 1.0.x: call ``super().__init__()`` before assigning attributes.
        super().__init__(
            constraint_type=type(self).CONSTRAINT_TYPE,
            multiplier=IndexedMultiplier(num_constraints=num_constraints, device=torch.device(device)),
        )
        self.num_constraints = num_constraints
        self.tolerance = tolerance

    @abc.abstractmethod
    def compute(self, batch: BatchOutputs) -> cooper.ConstraintState | None:
        """The constraint state of one batch, or ``None`` if nothing is observed."""

    def multiplier_values(self) -> torch.Tensor:
        """``(num_constraints,)`` current multipliers, detached."""
        return self.multiplier.weight.detach().flatten().clone()

    def state_dict(self) -> dict:
        """A copy of the constraint's own state (buffers, counts): checkpointed, and restored
        by the trainer when a non-finite batch is skipped. Stateless constraints: ``{}``."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def indexed_state(
    proxy: torch.Tensor,
    proxy_ids: torch.Tensor,
    strict: torch.Tensor | None,
    strict_ids: torch.Tensor | None,
) -> cooper.ConstraintState:
    """Assemble a ``ConstraintState``.

    While no strict estimate exists (no full buffer yet) the dual update is skipped,
    rather than letting Cooper fall back to the proxy for it.
    """
    if strict is None or strict_ids is None or strict_ids.numel() == 0:
        return cooper.ConstraintState(
            violation=proxy, constraint_features=proxy_ids, contributes_to_dual_update=False
        )
    return cooper.ConstraintState(
        violation=proxy,
        constraint_features=proxy_ids,
        strict_violation=strict.detach(),
        strict_constraint_features=strict_ids,
    )

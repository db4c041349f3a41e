"""Problems with known solutions, for the tests of the problem, the trainer and the step.

- :class:`ConstantViolation`: a constraint whose strict violation is a fixed vector ``v``
  and whose proxy is ``v + 0·mean(logits)``, so dual SGD from ``λ = 0`` gives exactly
  ``λ_k = max(0, k η v)`` (inequality) after ``k`` steps, whatever the model does.
- :func:`linear_data`: a linear model's full-batch data, where one plain SGD step is
  ``θ − lr ∇L(θ)``, computed by autograd on the same loss.
"""

from __future__ import annotations

import cooper
import torch

from constrained_fairness.constraints.base import BatchOutputs, GroupConstraint, indexed_state


class ConstantViolation(GroupConstraint):
    """``c_i = v_i`` on every batch (the primal sees a zero-gradient proxy of the same value)."""

    def __init__(self, values: torch.Tensor) -> None:
        super().__init__(len(values), 0.0)
        self.values = values.float()

    def compute(self, batch: BatchOutputs) -> cooper.ConstraintState:
        ids = torch.arange(len(self.values))
        proxy = self.values + 0.0 * batch.logits.mean()
        return indexed_state(proxy, ids, self.values, ids)


def linear_data(n: int = 32, features: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``(inputs (n, features), targets (n,) in {0, 1}, attributes (n, 1) in {0, 1})``."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, features, generator=g)
    targets = (inputs[:, 0] + 0.3 * torch.randn(n, generator=g) > 0).long()
    attributes = torch.randint(0, 2, (n, 1), generator=g)
    return inputs, targets, attributes

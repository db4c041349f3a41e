"""EL: equalized loss (Tran et al., 2022), with an optional replay buffer (EL+RB).

Two forms: :class:`EqualizedLoss`, inequality rows with a tolerance (ours), and
:class:`AbsoluteEqualizedLoss`, the paper code's equality constraint on ``|L_g − L|``.
"""

from __future__ import annotations

import cooper
import torch

from ..groups import Grouping
from .statistic import GroupLossConstraint


class EqualizedLoss(GroupLossConstraint):
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


class AbsoluteEqualizedLoss(GroupLossConstraint):
    r"""The paper code's EL: one EQUALITY constraint per group, ``|L_g(θ) − L(θ)| = 0``.

    This is ``EqualizedLossProblem`` with ``abs_equality_constraint=True`` in
    ``merajhashemi/balancing-act`` (``src/cmp/equalized_loss.py``). There is no tolerance,
    and since the violation is never negative, plain SGD ascent makes every observed
    multiplier grow by ``η |L_g − L|`` each step:

        λ[g] ← λ[g] + η · |ℓ_g − ℓ|        (no projection: an equality multiplier)

    Proxy (primal): ``|L_g − L|`` of the batch for the groups present, with gradients
    through both terms (and through the absolute value). Strict (dual): the same batch
    values without a buffer (EL); with a buffer of size ``k`` (EL+RB), ``|ℓ_g − ℓ|`` with
    ``ℓ_g`` the mean buffered loss of each full group and ``ℓ`` the overall estimate over
    the full groups, ``Σ p[g] ℓ_g / Σ p[g]``; the reference's is the plain mean
    (``frequency`` of ones), which is what ``el.overall_estimate: unweighted`` passes.
    """

    CONSTRAINT_TYPE = cooper.ConstraintType.EQUALITY

    def __init__(
        self,
        grouping: Grouping,
        buffer_size: int = 0,
        frequency: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(
            grouping, 0.0, buffer_size=buffer_size, frequency=frequency, row_labels=("",), device=device
        )

    def violations(self, values: torch.Tensor, overall: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return (values - overall).abs().unsqueeze(0)

r"""Fixed-shape statistics: the constraint rows of all groups, every step, with no host read.

With ``fixed_shapes = True`` a :class:`~.statistic.GroupStatisticConstraint` computes
the same rows for all groups, every step, with the absent groups' proxy rows and the
estimate-less groups' strict rows set to 0 (and no gradient). No step then reads a value
back to the host (no ``nonzero``, ``bincount`` or ``item``), at the price of ``G`` rows per
step. It changes nothing for plain SGD duals, ``λ ← max(0, λ + η · 0) = λ``; with nuPI a
zero error is not "no update" (its proportional term moves ``λ``), so it is used with SGD
duals only (:func:`~constrained_fairness.training.optimizers.fixed_shapes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cooper
import torch

from ..runtime.distributed import gather_cat, global_sum, is_distributed, world_size
from .base import BatchOutputs

if TYPE_CHECKING:
    from .statistic import GroupStatisticConstraint


class FixedShapeStatistics:
    """The fixed-shape :meth:`compute_fixed` of :class:`~.statistic.GroupStatisticConstraint`
    (a mixin: it reads the constraint's grouping, partition, buffer and violation rules)."""

    def compute_fixed(self: GroupStatisticConstraint, batch: BatchOutputs) -> cooper.ConstraintState:
        r""":meth:`compute` over all ``G`` groups, without a host read.

        With membership weights ``w_m`` (the mask, or 1) the batch counts and sums are
        ``n[g] = Σ_{m ∈ g} w_m`` and ``S[g] = Σ_{m ∈ g} w_m v_m`` (``index_add``; ``bincount``
        reads ``max`` on CUDA), the means ``S[g] / max(n[g], 1)``, and a group is present iff
        ``n[g] > 0``. Rows of absent groups (proxy) and of groups without a full buffer
        (strict) are ``where``'d to 0, so they carry neither a value nor a gradient: the
        Lagrangian's terms, and the gradients, are those of :meth:`compute` plus zeros.
        Attribute codes are not range-checked per batch (the training split's are, once).
        """
        stat = self.sample_statistic(batch)
        rows, groups = self.grouping.memberships(batch.attributes, check=False)
        if stat.label is not None:
            groups = groups * self.num_labels + stat.label.index_select(0, rows)
        identity = self.grouping.mode == "intersectional"
        proxy_values = stat.proxy if identity else stat.proxy.index_select(0, rows)
        weight = None if stat.mask is None else stat.mask.index_select(0, rows).to(proxy_values.dtype)
        present, means, overall = self._fixed_means(proxy_values, groups, weight)
        proxy = self.proxy_violations(
            torch.where(present, means, self._absent(means)), overall, self._all_groups
        )
        proxy = _zeroed(present, proxy).flatten()
        if is_distributed():
            proxy = proxy * world_size()

        strict_values = stat.strict.detach()
        strict_values = strict_values if identity else strict_values.index_select(0, rows)
        if self.buffer is None:
            present, means, overall = self._fixed_means(strict_values, groups, weight)
            strict = self.strict_violations(
                torch.where(present, means, self._absent(means)), overall, self._all_groups
            )
            return self._state(proxy, _zeroed(present, strict))
        if weight is not None:  # masked-out samples go to the dropped id G
            groups = torch.where(weight > 0, groups, self.num_groups)
        strict_values = gather_cat(strict_values, same_size=True)
        groups = gather_cat(groups, same_size=True)
        counts = torch.zeros(self.num_groups + 1, dtype=torch.long, device=groups.device).index_add_(
            0, groups, torch.ones_like(groups)
        )
        if self.frequency is None:
            self.seen += counts[: self.num_groups].to(self.seen.dtype)
        self.buffer.push_fixed(strict_values, groups, counts)
        full = self.buffer.is_full
        estimates = self.buffer.values.sum(dim=1) / self.buffer.size
        weights = self.frequency if self.frequency is not None else self.seen.float()
        weights = _zeroed(full, weights)
        part_weights = torch.zeros(self.num_partitions, device=weights.device).index_add_(
            0, self.partition, weights
        )
        part_sums = torch.zeros_like(part_weights).index_add_(0, self.partition, weights * estimates)
        overall = (part_sums / part_weights.clamp(min=1e-12)).index_select(0, self.partition)
        strict = self.strict_violations(
            torch.where(full, estimates, self._absent(estimates)), overall, self._all_groups
        )
        return self._state(proxy, _zeroed(full, strict))

    def _state(
        self: GroupStatisticConstraint, proxy: torch.Tensor, strict: torch.Tensor
    ) -> cooper.ConstraintState:
        """All rows, every step: the proxy for the primal, the strict violations for the dual."""
        return cooper.ConstraintState(
            violation=proxy,
            constraint_features=self._all_rows,
            strict_violation=strict.flatten().detach(),
            strict_constraint_features=self._all_rows,
        )

    def _absent(self, values: torch.Tensor) -> torch.Tensor:
        """The value an absent group's statistic takes before its rows are zeroed: ``+∞``, so
        that it never is the partition minimum of the ``max_min`` form."""
        return torch.full((), float("inf"), dtype=values.dtype, device=values.device)

    def _fixed_means(
        self: GroupStatisticConstraint,
        values: torch.Tensor,
        groups: torch.Tensor,
        weight: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(present (G,) bool, means (G,), overall (G,))`` of one (global) batch: the
        :meth:`batch_means` of all groups, absent ones with mean 0."""
        ones = torch.ones_like(values) if weight is None else weight
        counts = global_sum(
            torch.zeros(self.num_groups, dtype=values.dtype, device=values.device).index_add_(0, groups, ones)
        )
        sums = global_sum(
            torch.zeros(self.num_groups, dtype=values.dtype, device=values.device).index_add_(
                0, groups, values if weight is None else values * weight
            )
        )
        part_counts = torch.zeros(self.num_partitions, dtype=values.dtype, device=values.device)
        part_counts = part_counts.index_add_(0, self.partition, counts)
        part_sums = torch.zeros_like(part_counts).index_add_(0, self.partition, sums)
        overall = (part_sums / part_counts.clamp(min=1)).index_select(0, self.partition)
        return counts > 0, sums / counts.clamp(min=1), overall


def _zeroed(keep: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` where ``keep`` (broadcast over leading rows), else 0, with no gradient there."""
    return torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))

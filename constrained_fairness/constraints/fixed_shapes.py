r"""Fixed-shape statistics: the constraint rows of all groups, every step, with no host read.

With ``fixed_shapes = True`` a :class:`~.statistic.GroupStatisticConstraint` computes
the same rows for all groups, every step, with the absent groups' proxy rows and the
estimate-less groups' strict rows set to 0 (and no gradient). No step then reads a value
back to the host (no ``nonzero``, ``bincount`` or ``item``), at the price of ``G`` rows per
step. It changes nothing for plain SGD duals, ``λ ← max(0, λ + η · 0) = λ``; with nuPI a
zero error is not "no update" (its proportional term moves ``λ``), so it is used with SGD
duals only (:func:`~constrained_fairness.training.optimizers.fixed_shapes`).

Each op of a step costs microseconds of dispatch at these sizes, as much as its arithmetic,
so the path is written for few ops (benchmark P1a): the counts are computed once and serve
the proxy, the strict statistic and the buffer; constants (the zero, ``+∞``, the ones of a
batch size) are made once; an intersectional grouping without a mask maps samples to
groups without a membership list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cooper
import torch

from ..runtime.distributed import gather_cat, global_sum, is_distributed, world_size
from .base import BatchOutputs

if TYPE_CHECKING:
    from .statistic import GroupStatisticConstraint, SampleStatistic


class FixedShapeStatistics:
    """The fixed-shape :meth:`compute_fixed` of :class:`~.statistic.GroupStatisticConstraint`
    (a mixin: it reads the constraint's grouping, partition, buffer and violation rules)."""

    def compute_fixed(self: GroupStatisticConstraint, batch: BatchOutputs) -> cooper.ConstraintState:
        r""":meth:`compute` over all ``G`` groups, without a host read.

        Each membership ``m`` has a group id ``g_m``, or the dropped id ``G`` when the
        statistic's mask leaves it out. The (global) batch counts ``n[g] = |{m : g_m = g}|``
        and sums ``S[g] = Σ_{m : g_m = g} v_m`` come from ``index_add`` (``bincount`` reads
        ``max`` on CUDA), the means are ``S[g] / max(n[g], 1)``, and a group is present iff
        ``n[g] > 0``. Rows of absent groups (proxy) and of groups without a full buffer
        (strict) are ``where``'d to 0, so they carry neither a value nor a gradient: the
        Lagrangian's terms, and the gradients, are those of :meth:`compute` plus zeros.
        Attribute codes are not range-checked per batch (the training split's are, once).
        """
        stat = self.sample_statistic(batch)
        groups, proxy_values, strict_values = self._fixed_memberships(batch, stat)
        dropped = stat.mask is not None  # some memberships may carry the dropped id G
        counts = global_sum(self._id_counts(groups))  # (G + 1,): over ranks = those of the gathered ids
        present, means, overall = self._fixed_means(proxy_values, groups, counts, dropped)
        proxy = self.proxy_violations(self._or_absent(present, means), overall, self._all_groups)
        proxy = _zeroed(present, proxy, self._constant_zero(proxy)).flatten()
        if is_distributed():
            proxy = proxy * world_size()

        if self.buffer is None:
            present, means, overall = self._fixed_means(strict_values, groups, counts, dropped)
            strict = self.strict_violations(self._or_absent(present, means), overall, self._all_groups)
            return self._state(proxy, _zeroed(present, strict, self._constant_zero(strict)))
        if self.frequency is None:
            self.seen += counts[: self.num_groups].to(self.seen.dtype)
        strict_values, groups = gather_cat(strict_values, same_size=True), gather_cat(groups, same_size=True)
        self.buffer.push_fixed(strict_values, groups, counts)
        full = self.buffer.is_full
        estimates = self.buffer.values.sum(dim=1) / self.buffer.size
        weights = self.frequency if self.frequency is not None else self.seen.float()
        weights = _zeroed(full, weights, self._constant_zero(weights))
        part_weights = torch.zeros(self.num_partitions, device=weights.device).index_add_(
            0, self.partition, weights
        )
        part_sums = torch.zeros_like(part_weights).index_add_(0, self.partition, weights * estimates)
        overall = (part_sums / part_weights.clamp(min=1e-12)).index_select(0, self.partition)
        strict = self.strict_violations(self._or_absent(full, estimates), overall, self._all_groups)
        return self._state(proxy, _zeroed(full, strict, self._constant_zero(strict)))

    def _fixed_memberships(
        self: GroupStatisticConstraint, batch: BatchOutputs, stat: SampleStatistic
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids, proxy values, strict values)`` per membership: the group id, after the
        label's refinement, or ``G`` for a membership the mask leaves out."""
        intersectional = self.grouping.mode == "intersectional"
        if intersectional and stat.label is None and stat.mask is None:  # one per sample, in order
            return self.grouping.group_ids(batch.attributes), stat.proxy, stat.strict.detach()
        rows, groups = self.grouping.memberships(batch.attributes, check=False)
        if stat.label is not None:
            groups = groups * self.num_labels + stat.label.index_select(0, rows)
        if stat.mask is not None:
            groups = torch.where(stat.mask.index_select(0, rows), groups, self.num_groups)
        proxy, strict = stat.proxy, stat.strict.detach()
        if not intersectional:
            proxy, strict = proxy.index_select(0, rows), strict.index_select(0, rows)
        return groups, proxy, strict

    def _id_counts(self: GroupStatisticConstraint, groups: torch.Tensor) -> torch.Tensor:
        """``(G + 1,)`` long: the memberships per id, the dropped id ``G`` last."""
        ones = self._cached(("ones", groups.numel()), lambda: torch.ones_like(groups), groups.device)
        return torch.zeros(self.num_groups + 1, dtype=torch.long, device=groups.device).index_add_(
            0, groups, ones
        )

    def _fixed_means(
        self: GroupStatisticConstraint,
        values: torch.Tensor,
        groups: torch.Tensor,
        counts: torch.Tensor,
        dropped: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(present (G,) bool, means (G,), overall (G,))`` of one (global) batch from the
        ids' ``counts``: the :meth:`batch_means` of all groups, absent ones with mean 0."""
        size = self.num_groups + 1 if dropped else self.num_groups
        sums = torch.zeros(size, dtype=values.dtype, device=values.device).index_add_(0, groups, values)
        sums = global_sum(sums[: self.num_groups] if dropped else sums)
        counts = counts[: self.num_groups].to(values.dtype)
        part_counts = torch.zeros(self.num_partitions, dtype=values.dtype, device=values.device)
        part_counts = part_counts.index_add_(0, self.partition, counts)
        part_sums = torch.zeros_like(part_counts).index_add_(0, self.partition, sums)
        overall = (part_sums / part_counts.clamp(min=1)).index_select(0, self.partition)
        return counts > 0, sums / counts.clamp(min=1), overall

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

    def _or_absent(self, keep: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``values`` where ``keep``, else ``+∞``: the value an absent group's statistic takes
        before its rows are zeroed, so that it never is the partition minimum of the
        ``max_min`` form."""
        inf = self._cached(
            ("inf", values.dtype), lambda: torch.tensor(float("inf"), dtype=values.dtype), values.device
        )
        return torch.where(keep, values, inf)

    def _constant_zero(self, like: torch.Tensor) -> torch.Tensor:
        return self._cached(("zero", like.dtype), lambda: torch.zeros((), dtype=like.dtype), like.device)

    def _cached(self, key: tuple, make, device: torch.device) -> torch.Tensor:
        """A constant tensor made once per ``key`` and device (one op fewer per use)."""
        cache = self.__dict__.setdefault("_constants", {})
        full_key = (*key, device)
        if full_key not in cache:
            cache[full_key] = make().to(device)
        return cache[full_key]


def _zeroed(keep: torch.Tensor, values: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``values`` where ``keep`` (broadcast over leading rows), else 0, with no gradient there."""
    return torch.where(keep, values, zero)

r"""Constraints on a per-group mean statistic: the extension point of the library.

A subclass says what each sample contributes (:meth:`sample_statistic`): a strict value
``v_n`` (e.g. 0/1 "predicted positive"), a differentiable proxy ``ṽ_n`` (e.g. a sigmoid
of the logit margin), optionally a mask of the samples that count (e.g. ``y = 1`` for a
true-positive rate) and a label that refines the groups (e.g. ``y``, for equalized odds).
The base class does the rest, vectorized over groups with ``bincount``/``index_add``:

    s[g]  = mean_{n ∈ g} v_n                      (group statistic)
    s̄[P] = mean over the samples of partition P  (the "overall" a group is compared to)

and the constraint rows ``violations(s[g], s̄[P(g)]) ≤ 0``. With the default form
``group_vs_overall`` and tolerance ε there are two rows per group,

    s[g] − s̄ − ε ≤ 0   ("above")      and      s̄ − s[g] − ε ≤ 0   ("below"),

and with ``max_min`` one row per group, ``s[g] − min_{h ∈ P(g)} s[h] − ε ≤ 0``, which
together bound ``max_g s[g] − min_g s[g] ≤ ε``.

**Primal (proxy):** the batch means of ``ṽ`` over the groups present in the batch; a
group absent from the batch contributes nothing. **Dual (strict):** the means of ``v`` in
a per-group replay buffer of the last ``k`` members (:class:`ReplayBuffer`), for the
groups whose buffer is full, against the frequency-weighted overall estimate
``s̄[P] = Σ_{g∈P, full} p[g] s[g] / Σ_{g∈P, full} p[g]``. Frequencies ``p[g]`` are given,
or counted from the training samples seen so far. With ``buffer_size=0`` the strict
statistic is the batch estimate.

**Fixed shapes**: see :mod:`.fixed_shapes`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import cooper
import torch

from ..buffer import ReplayBuffer
from ..config.choices import CONSTRAINT_FORMS
from ..errors import ConfigError
from ..groups import Grouping
from ..runtime.distributed import gather_cat, global_sum, is_distributed, world_size
from .base import BatchOutputs, GroupConstraint, check_tolerance, indexed_state
from .fixed_shapes import FixedShapeStatistics

FORMS: dict[str, tuple[str, ...]] = dict(
    zip(CONSTRAINT_FORMS, (("above", "below"), ("max-min",)), strict=True)
)
"""The row labels of each form."""


@dataclass
class SampleStatistic:
    """Per-sample contributions to a group statistic.

    Attributes:
        proxy: ``(B,)`` differentiable surrogate of ``strict``.
        strict: ``(B,)`` the true per-sample value (no gradient needed).
        mask: optional ``(B,)`` bool, the samples that count (e.g. ``y = 1`` for a TPR).
        label: optional ``(B,)`` long in ``[0, num_labels)``; refines each group by it.
    """

    proxy: torch.Tensor
    strict: torch.Tensor
    mask: torch.Tensor | None = None
    label: torch.Tensor | None = None


class GroupStatisticConstraint(FixedShapeStatistics, GroupConstraint, abc.ABC):
    """Base class of per-group statistic constraints; see the module docstring.

    Args:
        grouping: which attributes form the groups, intersectional or marginal.
        tolerance: ε ≥ 0.
        form: ``group_vs_overall`` or ``max_min`` (used by the default :meth:`violations`).
        buffer_size: ``k`` of the replay buffer of the strict statistic; 0 uses the batch.
        num_labels, label_names: the refinement of each group by ``SampleStatistic.label``.
        frequency: ``(G,)`` weights of the overall estimate; default: counts seen so far.
        row_labels: names of the rows per group; default: those of ``form``.
    """

    def __init__(
        self,
        grouping: Grouping,
        tolerance: float,
        *,
        form: str = "group_vs_overall",
        buffer_size: int = 40,
        num_labels: int = 1,
        label_names: Sequence[str] | None = None,
        frequency: torch.Tensor | None = None,
        row_labels: Sequence[str] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if row_labels is None and form not in FORMS:
            raise ConfigError(f"constraint form must be one of {', '.join(FORMS)}, got {form!r}")
        labels = tuple(row_labels) if row_labels is not None else FORMS[form]
        num_groups = grouping.num_groups * num_labels
        super().__init__(len(labels) * num_groups, check_tolerance(tolerance, type(self).__name__), device)
        self.grouping = grouping
        self.form = form
        self.row_labels = labels
        self.num_labels = num_labels
        self.label_names = (
            list(label_names) if label_names is not None else [str(i) for i in range(num_labels)]
        )
        self.num_groups = num_groups
        device = torch.device(device)
        # refined group g' = g * L + label lives in partition P' = P(g) * L + label
        base_partition = grouping.partition.to(device)
        self.partition = (base_partition.repeat_interleave(num_labels) * num_labels) + torch.arange(
            num_labels, device=device
        ).repeat(grouping.num_groups)
        self.num_partitions = grouping.num_partitions * num_labels
        self.buffer = ReplayBuffer(num_groups, buffer_size, device) if buffer_size > 0 else None
        if frequency is not None and tuple(frequency.shape) != (num_groups,):
            raise ConfigError(f"frequency must have shape ({num_groups},), got {tuple(frequency.shape)}")
        self.frequency = frequency.to(device, torch.float32) if frequency is not None else None
        self.seen = torch.zeros(num_groups, dtype=torch.float64, device=device)  # exact counts
        self.fixed_shapes = False  # all groups' rows every step, no host sync (module docstring)
        self._all_groups = torch.arange(num_groups, device=device)
        self._all_rows = torch.arange(len(labels) * num_groups, device=device)

    # -- what a subclass writes ---------------------------------------------------------
    @abc.abstractmethod
    def sample_statistic(self, batch: BatchOutputs) -> SampleStatistic:
        """Each sample's strict value and differentiable proxy (and mask, label)."""

    def violations(self, values: torch.Tensor, overall: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``(rows, K)`` violations of the groups ``ids`` from their statistics ``values``
        and the overall statistic of their partition ``overall`` (both ``(K,)``)."""
        if self.form == "max_min":
            part = self.partition[ids]
            low = torch.full((self.num_partitions,), float("inf"), dtype=values.dtype, device=values.device)
            low = low.scatter_reduce(0, part, values, reduce="amin")
            return (values - low[part] - self.tolerance).unsqueeze(0)
        return torch.stack([values - overall - self.tolerance, overall - values - self.tolerance])

    def proxy_violations(
        self, values: torch.Tensor, overall: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        return self.violations(values, overall, ids)

    def strict_violations(
        self, values: torch.Tensor, overall: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        return self.violations(values, overall, ids)

    # -- the machinery -------------------------------------------------------------------
    def memberships(self, batch: BatchOutputs, stat: SampleStatistic) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, groups)`` after the mask and the label refinement."""
        rows, groups = self.grouping.memberships(batch.attributes)
        if stat.label is not None:
            groups = groups * self.num_labels + stat.label[rows]
        if stat.mask is not None:
            keep = stat.mask[rows]
            rows, groups = rows[keep], groups[keep]
        return rows, groups

    def group_counts(
        self, groups: torch.Tensor, dtype: torch.dtype, across_ranks: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(counts n[g], present groups, partition counts Σ_{g∈P} n[g])`` of one batch's
        memberships, for :meth:`batch_means` (global over ranks with ``across_ranks``)."""
        counts = torch.bincount(groups, minlength=self.num_groups).to(dtype)
        if across_ranks:
            counts = global_sum(counts)
        present = torch.nonzero(counts).flatten()
        part_counts = torch.zeros(self.num_partitions, dtype=dtype, device=counts.device)
        return counts, present, part_counts.index_add_(0, self.partition, counts)

    def batch_means(
        self,
        values: torch.Tensor,
        groups: torch.Tensor,
        across_ranks: bool = False,
        counted: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Present groups, their means and their partition's overall mean, from one batch.

        ``values`` are per membership. The overall mean of a partition counts every
        sample of the partition once: ``Σ_{g∈P} sum[g] / Σ_{g∈P} n[g]``. With
        ``across_ranks`` (training under DDP) sums and counts are those of the global batch.
        ``counted``: :meth:`group_counts` of ``groups``, when several statistics share them.
        """
        counts, present, part_counts = counted or self.group_counts(groups, values.dtype, across_ranks)
        sums = torch.zeros(self.num_groups, dtype=values.dtype, device=values.device).index_add_(
            0, groups, values
        )
        if across_ranks:
            sums = global_sum(sums)
        part_sums = torch.zeros(self.num_partitions, dtype=values.dtype, device=values.device)
        part_sums = part_sums.index_add_(0, self.partition, sums)
        overall = part_sums / part_counts.clamp(min=1)
        means = sums.index_select(0, present) / counts.index_select(0, present)
        return present, means, overall.index_select(0, self.partition.index_select(0, present))

    def _rows(self, violations: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if violations.dim() != 2 or violations.shape[0] != len(self.row_labels):
            raise ConfigError(
                f"{type(self).__name__} returned violations of shape {tuple(violations.shape)}; expected "
                f"({len(self.row_labels)}, groups), one row per entry of row_labels {self.row_labels}"
            )
        offsets = torch.arange(violations.shape[0], device=ids.device).unsqueeze(1) * self.num_groups
        return violations.flatten(), (offsets + ids.unsqueeze(0)).flatten()

    def compute(self, batch: BatchOutputs) -> cooper.ConstraintState | None:
        if self.fixed_shapes:
            return self.compute_fixed(batch)
        stat = self.sample_statistic(batch)
        rows, groups = self.memberships(batch, stat)
        if groups.numel() == 0 and not is_distributed():  # under DDP every rank must join the reductions
            return None
        # one membership per sample, in batch order (intersectional, no mask): no gather needed
        identity = self.grouping.mode == "intersectional" and stat.mask is None
        counted = self.group_counts(groups, stat.proxy.dtype, across_ranks=True)
        present, means, overall = self.batch_means(
            stat.proxy if identity else stat.proxy[rows], groups, across_ranks=True, counted=counted
        )
        proxy, proxy_ids = self._rows(self.proxy_violations(means, overall, present), present)
        if is_distributed():
            proxy = proxy * world_size()  # DDP averages gradients over ranks; each holds a local share

        strict_values = stat.strict.detach()
        strict_values = strict_values if identity else strict_values[rows]
        if self.buffer is None:
            same_dtype = strict_values.dtype == stat.proxy.dtype  # the counts divide in that dtype
            present, means, overall = self.batch_means(
                strict_values, groups, across_ranks=True, counted=counted if same_dtype else None
            )
            strict, strict_ids = self._rows(self.strict_violations(means, overall, present), present)
            return indexed_state(proxy, proxy_ids, strict, strict_ids)
        strict_values, groups = gather_cat(strict_values), gather_cat(groups)  # DDP: every rank's samples
        counts = torch.bincount(groups, minlength=self.num_groups)
        if self.frequency is None:  # the overall estimate's weights: the counts seen so far
            self.seen += counts.to(self.seen.dtype)
        self.buffer.push(strict_values, groups, counts)
        full_ids, estimates = self.buffer.full_means()
        if full_ids.numel() == 0:
            return indexed_state(proxy, proxy_ids, None, None)
        weights = (self.frequency if self.frequency is not None else self.seen.float()).index_select(
            0, full_ids
        )
        partition = self.partition.index_select(0, full_ids)
        part_weights = torch.zeros(self.num_partitions, device=weights.device).index_add_(
            0, partition, weights
        )
        part_sums = torch.zeros_like(part_weights).index_add_(0, partition, weights * estimates)
        overall = (part_sums / part_weights.clamp(min=1e-12)).index_select(0, partition)
        strict, strict_ids = self._rows(self.strict_violations(estimates, overall, full_ids), full_ids)
        return indexed_state(proxy, proxy_ids, strict, strict_ids)

    @torch.no_grad()
    def statistic(self, batch: BatchOutputs) -> torch.Tensor:
        """``(G,)`` the strict group statistic ``s[g]`` on a whole split (NaN for absent
        groups), e.g. a dense model's, to use as a reference."""
        batch = batch.to(self.partition.device)
        stat = self.sample_statistic(batch)
        rows, groups = self.memberships(batch, stat)
        values = stat.strict.detach().double()[rows]
        counts = torch.bincount(groups, minlength=self.num_groups).double()
        sums = torch.zeros(self.num_groups, dtype=torch.float64, device=values.device).index_add(
            0, groups, values
        )
        return sums / counts

    @torch.no_grad()
    def evaluate(self, batch: BatchOutputs) -> torch.Tensor:
        """Strict violations on a whole split (no buffer): ``(rows, G)``, NaN for absent groups."""
        batch = batch.to(self.partition.device)
        stat = self.sample_statistic(batch)
        rows, groups = self.memberships(batch, stat)
        out = torch.full((len(self.row_labels), self.num_groups), float("nan"), dtype=torch.float64)
        if groups.numel() == 0:
            return out
        present, means, overall = self.batch_means(stat.strict.detach().double()[rows], groups)
        out[:, present.cpu()] = self.strict_violations(means, overall, present).double().cpu()
        return out

    def group_names(self) -> list[str]:
        """Names of the (label-refined) groups ``g * L + label``."""
        groups = self.grouping.names
        return [
            groups[g] if self.num_labels == 1 else f"{groups[g]} | {self.label_names[label]}"
            for g in range(self.grouping.num_groups)
            for label in range(self.num_labels)
        ]

    def row_names(self) -> list[str]:
        """Names of the constraint rows, in multiplier order."""
        names = self.group_names()
        if len(self.row_labels) == 1 and not self.row_labels[0]:
            return names
        return [f"{name} ({row})" for row in self.row_labels for name in names]

    def state_dict(self) -> dict:
        state: dict = {"seen": self.seen.clone()}
        if self.buffer is not None:
            state["buffer"] = self.buffer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.seen.copy_(state["seen"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])


class GroupLossConstraint(GroupStatisticConstraint):
    """A constraint on each group's mean per-sample loss ``L_g = mean_{i ∈ g} ℓ_i`` (EL, EL
    with the paper code's equality form, bounded group loss): the proxy is ``ℓ`` with its
    gradient, the strict statistic the same losses detached."""

    def sample_statistic(self, batch: BatchOutputs) -> SampleStatistic:
        return SampleStatistic(proxy=batch.losses, strict=batch.losses.detach())

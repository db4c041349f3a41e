"""Vectorized per-group statistics and the excess accuracy gap (EAG).

For group ids ``g_n`` in ``[0, G)`` and per-sample values ``v_n``:

    n[g]     = sum_n 1[g_n = g]                    (``torch.bincount``)
    mean[g]  = sum_n 1[g_n = g] v_n / n[g]         (``index_add``; NaN where n[g] = 0)

EAG, for dense accuracies ``acc_d[g], acc_d`` and sparse ``acc_s[g], acc_s`` on one split:

    Δ[g] = acc_d[g] − acc_s[g],   Δ = acc_d − acc_s,   ψ[g] = Δ[g] − Δ,

and the headline metric is ``max_g ψ[g]`` over groups present in the split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


def group_counts(groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``n[g]``: number of samples of each group, as a float tensor of shape ``(G,)``."""
    return torch.bincount(groups, minlength=num_groups).to(torch.get_default_dtype())


def group_sums(values: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``s[g] = sum_{n: g_n = g} v_n`` (differentiable in ``values``)."""
    out = torch.zeros(num_groups, dtype=values.dtype, device=values.device)
    return out.index_add(0, groups, values)


def group_means(values: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``mean[g]``; NaN for groups without samples. Differentiable in ``values``."""
    counts = torch.bincount(groups, minlength=num_groups).to(values.dtype)
    return group_sums(values, groups, num_groups) / counts


@dataclass
class GroupStats:
    """Per-group accuracy and loss of a model on one split.

    Attributes:
        counts: ``n[g]``, shape ``(G,)``.
        accuracy: ``acc[g]`` (NaN where ``n[g] = 0``).
        loss: mean cross-entropy per group (NaN where ``n[g] = 0``).
        overall_accuracy: accuracy over all samples of the split.
        overall_loss: mean loss over all samples of the split.
    """

    counts: torch.Tensor
    accuracy: torch.Tensor
    loss: torch.Tensor
    overall_accuracy: float
    overall_loss: float

    @classmethod
    def from_memberships(
        cls,
        correct: torch.Tensor,
        losses: torch.Tensor,
        rows: torch.Tensor,
        groups: torch.Tensor,
        num_groups: int,
    ) -> GroupStats:
        """Like :meth:`from_outputs` when a sample may belong to several groups (memberships
        ``rows[m] ∈ groups[m]``); the overall statistics count each sample once."""
        stats = cls.from_outputs(correct[rows], losses[rows], groups, num_groups)
        stats.overall_accuracy = float(correct.double().mean()) if correct.numel() else float("nan")
        stats.overall_loss = float(losses.double().mean()) if losses.numel() else float("nan")
        return stats

    @classmethod
    def from_outputs(
        cls, correct: torch.Tensor, losses: torch.Tensor, groups: torch.Tensor, num_groups: int
    ) -> GroupStats:
        """Build from per-sample 0/1 correctness and per-sample losses."""
        correct = correct.double()
        losses = losses.double()
        return cls(
            counts=torch.bincount(groups, minlength=num_groups).double(),
            accuracy=group_means(correct, groups, num_groups),
            loss=group_means(losses, groups, num_groups),
            overall_accuracy=float(correct.mean()) if correct.numel() else float("nan"),
            overall_loss=float(losses.mean()) if losses.numel() else float("nan"),
        )


def excess_gap(dense_group: Any, sparse_group: Any, dense_overall: Any, sparse_overall: Any) -> Any:
    """``ψ[g] = (acc_d[g] − acc_s[g]) − (acc_d − acc_s)``, broadcasting (tensors or floats): the
    one formula of the excess accuracy gap, for point estimates and bootstrap draws alike."""
    return (dense_group - sparse_group) - (dense_overall - sparse_overall)


def excess_accuracy_gap(dense: GroupStats, sparse: GroupStats) -> torch.Tensor:
    """``ψ[g]`` of :func:`excess_gap` from two models' statistics; NaN for groups absent from the split."""
    return excess_gap(dense.accuracy, sparse.accuracy, dense.overall_accuracy, sparse.overall_accuracy)


def max_over_present(values: torch.Tensor) -> float:
    """``max`` over the non-NaN entries (NaN if there are none)."""
    finite = values[~torch.isnan(values)]
    return float(finite.max()) if finite.numel() else float("nan")


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` for a finite number (or one-element tensor); ``None`` for NaN, ±inf,
    ``None``, booleans and non-numbers: how a statistic that does not exist reaches JSON."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return out if math.isfinite(out) else None

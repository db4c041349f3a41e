r"""The inference guarantee of ``mean_pred``: pooled gaps, their standard errors, the margin.

For one protected attribute ``a`` with values ``v`` and scores ``s_n`` on ``N`` rows, let
``n_v`` be the rows of value ``v``, ``m_v`` their mean score, ``σ²_v`` their sample variance
and ``w_v = σ²_v / n_v`` the variance of ``m_v``. The constraint rows of
:class:`~constrained_fairness.constraints.mean_score.MeanPredictionGap` and their standard
errors are:

* binary ``a``:  ``d = m_0 − m_1``,  ``SE(d)² = w_0 + w_1``;
* ``k > 2`` values, one row per ``v``:  ``d_v = m_v − m̄`` with ``m̄ = Σ_u p_u m_u``,
  ``p_u = n_u / N``, so ``SE(d_v)² = (1 − p_v)² w_v + Σ_{u ≠ v} p_u² w_u``.

The gap of ``a`` is ``max |d|`` over its rows and its standard error ``SE_a`` the largest
of its rows' (a group with fewer than 2 rows has an infinite one).

**The guarantee.** ``FairModel.calibrate`` fits the per-cell offsets on calibration rows
(the validation inputs; labels are never read) so that their gaps are at most
``t = max(0, ε − max_a z·SE_a^cal)``, with ``z = Φ⁻¹(confidence)`` (1.645 at 95 %). On
deployment rows ``D`` from the same distribution, predicted in batches of any size below
``b_tau`` and in any order (each row's prediction depends on that row alone), the sampling
errors of the calibration and deployment means are independent and about normal, so for
each constraint row

    P(|d_D| > ε + z·SE^D) ≤ P(N(0, SE_cal² + SE_D²) > z·(SE_cal + SE_D)) ≤ 1 − Φ(z),

because ``SE_cal + SE_D ≥ √(SE_cal² + SE_D²)``. ``z·SE^D`` is the *allowance*: the part of
the gap that any fixed per-row predictor shows on a finite sample, computed from ``D``'s
own scores (:func:`gap_statistics`; ``FairTrainer.evaluate`` reports it). The bound needs
``gap_a^cal + z·SE_a^cal ≤ ε`` for every attribute, the offsets' calibration gap plus the
margin: it fails where a calibration split is too small for this ε (``t`` clipped at 0), a
group has under 2 rows, or clipping to the bounds leaves a gap the offsets cannot remove;
``FairModel`` then warns at calibration (``guarantee_problems``).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import torch

DEFAULT_CONFIDENCE = 0.95


def z_score(confidence: float) -> float:
    """``Φ⁻¹(confidence)``: 1.645 for 0.95."""
    return NormalDist().inv_cdf(confidence)


@dataclass(frozen=True)
class GapStatistics:
    """Per attribute (A,), float64: the pooled gap, its standard error, the smallest group."""

    gaps: torch.Tensor
    standard_errors: torch.Tensor
    smallest_group: torch.Tensor

    def allowances(self, confidence: float = DEFAULT_CONFIDENCE) -> torch.Tensor:
        """``z·SE_a``: the sampling allowance of each attribute's gap at ``confidence``."""
        return z_score(confidence) * self.standard_errors


def gap_statistics(scores: torch.Tensor, groups: torch.Tensor, sizes: torch.Tensor) -> GapStatistics:
    """Gaps and standard errors (module docstring) of ``scores`` (N,) with ``groups`` (N, A),
    each row's index among its attribute's ``sizes[a]`` values; in float64, no loop over groups."""
    s = scores.reshape(-1).to(torch.float64)
    sizes = sizes.to(groups.device)
    n_attr = sizes.numel()
    starts = torch.cumsum(sizes, 0) - sizes
    attribute = torch.repeat_interleave(torch.arange(n_attr, device=groups.device), sizes)  # (V,)
    ids = (groups + starts).reshape(-1)  # (N·A,) marginal group of each (row, attribute)
    total = int(sizes.sum())
    values = s.repeat_interleave(n_attr)
    count = torch.bincount(ids, minlength=total).to(torch.float64)
    mean = torch.bincount(ids, weights=values, minlength=total) / count
    centred = values - mean[ids]
    var = torch.bincount(ids, weights=centred * centred, minlength=total) / (count - 1)
    w = torch.where(count > 1, var / count, torch.inf)  # variance of each group mean
    rows = count.new_zeros(n_attr).index_add(0, attribute, count)  # N per attribute
    p = count / rows[attribute]
    overall = torch.zeros(n_attr, dtype=torch.float64, device=s.device).index_add(0, attribute, p * mean)
    binary = (sizes == 2)[attribute]
    # binary: d = m_0 − m_1 (the pair's sums give m_other); otherwise d_v = m_v − m̄
    pair_mean = torch.zeros(n_attr, dtype=torch.float64, device=s.device).index_add(0, attribute, mean)
    pair_w = torch.zeros(n_attr, dtype=torch.float64, device=s.device).index_add(0, attribute, w)
    pw2 = torch.zeros(n_attr, dtype=torch.float64, device=s.device).index_add(0, attribute, p * p * w)
    d = torch.where(binary, 2 * mean - pair_mean[attribute], mean - overall[attribute])
    var_d = torch.where(binary, pair_w[attribute], (1 - p) ** 2 * w + pw2[attribute] - p * p * w)
    # inf − inf where a group has under 2 rows
    var_d = torch.nan_to_num(var_d, nan=torch.inf, posinf=torch.inf)
    gaps = torch.full((n_attr,), -torch.inf, dtype=torch.float64, device=s.device)
    gaps = gaps.scatter_reduce(0, attribute, d.abs(), reduce="amax")
    se = torch.zeros(n_attr, dtype=torch.float64, device=s.device)
    se = se.scatter_reduce(0, attribute, var_d.sqrt(), reduce="amax")
    smallest = torch.full((n_attr,), torch.inf, dtype=torch.float64, device=s.device)
    smallest = smallest.scatter_reduce(0, attribute, count, reduce="amin")
    return GapStatistics(gaps, se, smallest)

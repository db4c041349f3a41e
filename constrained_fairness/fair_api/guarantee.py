r"""The inference guarantee of ``mean_pred``: pooled gaps, their standard errors, the margin.

For one protected attribute ``a`` with values ``v`` and scores ``s_n`` on ``N`` rows, let
``n_v`` be the rows of value ``v``, ``m_v`` their mean score, ``σ²_v`` their sample variance
and ``w_v = σ²_v / n_v`` the variance of ``m_v``. The constraint rows of
:class:`~constrained_fairness.constraints.mean_score.MeanPredictionGap` and their standard
errors are:

* binary ``a``:  ``d = m_0 − m_1``,  ``SE(d)² = w_0 + w_1``;
* ``k > 2`` values, one row per ``v``:  ``d_v = m_v − m̄`` with ``m̄ = Σ_u p_u m_u``,
  ``p_u = n_u / N``, so ``SE(d_v)² = (1 − p_v)² w_v + Σ_{u ≠ v} p_u² w_u``.

The gap of ``a`` is ``max |d|`` over its ``r_a`` rows (``r_a = 1`` for a binary ``a``,
``k`` otherwise) and its standard error ``SE_a`` the largest of its rows' (a group with
fewer than 2 rows has an infinite one).

**The guarantee.** With confidence ``c`` (0.95 by default), attribute ``a`` gets

    z_a = Φ⁻¹(1 − (1 − c) / (2·r_a))    (1.960 for a binary attribute at 95 %, 2.690 for 7 values),

two-sided for ``|d|`` and split over the ``r_a`` rows (a union bound). ``FairModel.calibrate``
fits the per-cell offsets on calibration rows (the validation inputs; labels are never
read) so that their gaps are at most ``t = max(0, ε − max_a z_a·SE_a^cal)``. On deployment
rows ``D`` from the same distribution, predicted in batches of any size below ``b_tau`` and
in any order (each row's prediction depends on that row alone), write a row's statistic as
``d = δ + e``, with ``δ`` its population value for this predictor and ``e`` the sampling
error (the offsets shift a group's sample and population means alike, so ``e`` is that of
the network's scores). The errors ``e_cal`` and ``e_D`` are independent and about normal, so
with ``|d_cal| ≤ ε − z_a·SE^cal``,

    P(|d_D| > ε + z_a·SE^D) ≤ P(|e_D − e_cal| > z_a·(SE^cal + SE^D)) ≤ 2·(1 − Φ(z_a)) = (1 − c) / r_a,

because ``e_D − e_cal ~ N(0, SE_cal² + SE_D²)`` and ``SE_cal + SE_D ≥ √(SE_cal² + SE_D²)``.
Over the attribute's ``r_a`` rows, ``P(gap_a(D) > ε + z_a·SE_a(D)) ≤ 1 − c``. ``z_a·SE_a(D)``
is the *allowance*: the part of the gap that any fixed per-row predictor shows on a finite
sample, computed from ``D``'s own scores (:func:`gap_statistics`; ``FairTrainer.evaluate``
reports it). The bound needs ``gap_a^cal + z_a·SE_a^cal ≤ ε`` for every attribute, the
offsets' calibration gap plus the margin: it fails where a calibration split is too small
for this ε (``t`` clipped at 0), a group has under 2 rows, or clipping to the bounds leaves
a gap the offsets cannot remove; ``FairModel`` then warns at calibration
(``guarantee_problems``).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import torch

DEFAULT_CONFIDENCE = 0.95


def z_score(confidence: float, rows: int = 1) -> float:
    """``Φ⁻¹(1 − (1 − confidence) / (2·rows))``: the two-sided quantile for ``|d|``, split over
    an attribute's ``rows`` constraint rows; 1.960 for 0.95 and one row."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / (2 * rows))


@dataclass(frozen=True)
class GapStatistics:
    """Per attribute (A,), float64: the pooled gap, its standard error, the smallest group,
    and ``rows``, its number of constraint rows ``r_a`` (1 if binary, else its value count)."""

    gaps: torch.Tensor
    standard_errors: torch.Tensor
    smallest_group: torch.Tensor
    rows: tuple[int, ...]

    def allowances(self, confidence: float = DEFAULT_CONFIDENCE) -> torch.Tensor:
        """``z_a·SE_a``: the sampling allowance of each attribute's gap at ``confidence``."""
        z = [z_score(confidence, r) for r in self.rows]
        return torch.tensor(z, dtype=torch.float64, device=self.standard_errors.device) * self.standard_errors


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
    constraint_rows = tuple(1 if k == 2 else k for k in sizes.tolist())
    return GapStatistics(gaps, se, smallest, constraint_rows)

r"""Group-specific decision thresholds, fit on validation data (post-processing).

For a binary classifier with positive-class scores ``s_i`` (softmax probabilities), the
base model predicts ``ŷ_i = 1[s_i ≥ 1/2]``. The target rate ``r`` is the base model's
rate on the validation split: its positive rate (``demographic_parity``) or its true-positive
rate (``equal_opportunity``). Each group ``g`` gets the threshold

    t_g = the ⌈(1 − r)·m_g⌉-th smallest score of its ``m_g`` reference samples
          (all its samples, or those with y = 1 for equal opportunity),

so that about a fraction ``r`` of them are at or above it, and predicts ``1[s_i ≥ t_g]``.
This is deterministic (no randomized mixing, unlike fairlearn's ThresholdOptimizer) and
computed for all groups at once from one sort. **It needs the group of every sample at
inference time**, unlike the in-processing methods. A group without reference samples keeps
the threshold 1/2.
"""

from __future__ import annotations

import math

import torch

from ..config.choices import THRESHOLD_RULES
from ..errors import ConfigError


def fit_thresholds(
    scores: torch.Tensor,
    groups: torch.Tensor,
    num_groups: int,
    rule: str = "demographic_parity",
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(G,)`` thresholds equalizing the rate of ``rule`` across groups (see the module docstring)."""
    if rule not in THRESHOLD_RULES:
        raise ConfigError(f"thresholds.rule must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}")
    scores, groups = scores.double().reshape(-1), groups.reshape(-1).long()
    keep = torch.ones_like(groups, dtype=torch.bool)
    if rule == "equal_opportunity":
        if targets is None:
            raise ConfigError("thresholds with rule equal_opportunity need the validation labels")
        keep = targets.reshape(-1) == 1
    scores, groups = scores[keep], groups[keep]
    rate = float((scores >= 0.5).double().mean()) if scores.numel() else 0.5
    counts = torch.bincount(groups, minlength=num_groups)
    order = torch.argsort(groups * 4.0 + scores.clamp(0, 1), stable=True)  # by group, then by score
    sorted_scores = scores[order]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.ceil((1 - rate) * counts.double()).long().clamp(max=(counts - 1).clamp_min(0))
    thresholds = torch.full((num_groups,), 0.5, dtype=torch.float64)
    present = counts > 0
    thresholds[present] = sorted_scores[(starts + rank)[present]]
    if math.isclose(rate, 0.0):
        thresholds[present] = math.inf  # nobody positive in the base model: keep it so
    return thresholds


def apply_thresholds(scores: torch.Tensor, groups: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``1[s_i ≥ t_{g_i}]`` as long class indices."""
    return (scores.double().reshape(-1) >= thresholds[groups.reshape(-1).long()]).long()

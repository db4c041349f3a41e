r"""Reweighting (Kamiran & Calders, 2012): make the label independent of the group in the
weighted training data.

With empirical frequencies on the training split, a sample of group ``g`` and label ``y``
gets the weight

    w(g, y) = P(g) P(y) / P(g, y)      (0 for a cell without samples),

so that under the weights ``P_w(g, y) = P(g) P(y)`` for every populated cell; the weights
average to 1 over the training samples when every (group, label) cell has samples.
Training then minimizes ``mean_n w(g_n, y_n) CE(f(x_n), y_n)``.
"""

from __future__ import annotations

import torch


def kamiran_calders_weights(
    groups: torch.Tensor, targets: torch.Tensor, num_groups: int, num_classes: int
) -> torch.Tensor:
    """``(G, C)`` table of ``w(g, y)`` from training group ids and labels (``bincount``)."""
    n = groups.numel()
    joint = torch.bincount(groups * num_classes + targets, minlength=num_groups * num_classes)
    joint = joint.reshape(num_groups, num_classes).double()
    p_group = joint.sum(dim=1, keepdim=True) / n
    p_label = joint.sum(dim=0, keepdim=True) / n
    p_joint = joint / n
    return torch.where(joint > 0, p_group * p_label / p_joint.clamp_min(1e-300), 0.0).float()

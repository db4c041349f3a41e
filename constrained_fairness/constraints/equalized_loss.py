"""EL: equalized loss (Tran et al., 2022), with an optional replay buffer (EL+RB)."""

from __future__ import annotations

import cooper
import torch

from ..buffer import ReplayBuffer
from ..metrics import group_sums
from .base import BatchOutputs, GroupConstraint, check_tolerance, indexed_state
from .reference import DenseReference


class EqualizedLoss(GroupConstraint):
    r"""Two constraints per group, ``|L_g(θ) − L(θ)| ≤ tol``, written as

        row g:       L_g − L − tol ≤ 0
        row G + g:   L − L_g − tol ≤ 0

    Without a buffer the batch estimate is both the proxy and the strict violation.
    With a buffer of size ``k`` (EL+RB), the dual update uses the buffered per-sample
    losses of the full-buffer groups, ``L_buf[g]`` against the overall estimate
    ``L_buf`` (frequency-weighted by default); the proxy stays the batch estimate.
    """

    def __init__(
        self, reference: DenseReference, tolerance: float, buffer_size: int = 0, weighted_overall: bool = True
    ) -> None:
        num_groups = reference.num_groups
        super().__init__(2 * num_groups, check_tolerance(tolerance, "el"), reference.device)
        self.num_groups = num_groups
        self.reference = reference
        self.weighted = weighted_overall
        self.buffer = ReplayBuffer(num_groups, buffer_size, reference.device) if buffer_size > 0 else None

    def _rows(self, gap: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([gap - self.tolerance, -gap - self.tolerance]), torch.cat(
            [ids, ids + self.num_groups]
        )

    def compute(self, batch: BatchOutputs) -> cooper.ConstraintState:
        groups, num_groups = batch.groups, self.num_groups
        counts = torch.bincount(groups, minlength=num_groups)
        present = torch.nonzero(counts).flatten()
        group_loss = group_sums(batch.losses, groups, num_groups)[present] / counts[present]
        proxy, proxy_ids = self._rows(group_loss - batch.losses.mean(), present)
        if self.buffer is None:
            return cooper.ConstraintState(violation=proxy, constraint_features=proxy_ids)

        self.buffer.push(batch.losses, groups)
        full = self.buffer.is_full
        full_ids = torch.nonzero(full).flatten()
        if full_ids.numel() == 0:
            return indexed_state(proxy, proxy_ids, None, None)
        loss_buf = self.buffer.means()
        overall = self.reference.overall_estimate(loss_buf, full, self.weighted)
        strict, strict_ids = self._rows(loss_buf[full_ids] - overall, full_ids)
        return indexed_state(proxy, proxy_ids, strict, strict_ids)

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict()} if self.buffer is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])

"""CEAG: constrained excess accuracy gap (Hashemizadeh et al., ICLR 2024)."""

from __future__ import annotations

from typing import Literal

import cooper
import torch

from ..buffer import ReplayBuffer
from ..errors import ConfigError
from ..metrics import group_sums
from .base import BatchOutputs, GroupConstraint, check_tolerance, indexed_state
from .reference import DenseReference


class ExcessAccuracyGap(GroupConstraint):
    r"""One constraint per group: ``ψ[g](θ) ≤ ε``.

    Strict violation (dual update), from a replay buffer of per-sample correctness:

        ψ[g] − ε = (acc_d[g] − acc_buf[g]) − (acc_d − acc_buf) − ε

    for the groups whose buffer is full, where ``acc_buf`` is the overall estimate
    (frequency-weighted by default, see :meth:`DenseReference.overall_estimate`).

    Proxy violation (primal gradient), for the groups present in the batch:

        ψ̃[g] = (L_g(θ) − L_d[g]) − (L(θ) − L_d)

    with ``L_g`` the mean cross-entropy of the batch samples of group ``g`` and ``L`` the
    batch mean; gradients flow through both terms. Only the upper bound is constrained:
    a group that gains accuracy is never penalised.
    """

    def __init__(
        self,
        reference: DenseReference,
        tolerance: float,
        buffer_size: int = 40,
        overall_estimate: Literal["weighted", "unweighted"] = "weighted",
    ) -> None:
        super().__init__(reference.num_groups, check_tolerance(tolerance, "ceag"), reference.device)
        if overall_estimate not in ("weighted", "unweighted"):
            raise ConfigError(
                f"overall_estimate must be 'weighted' or 'unweighted', got {overall_estimate!r}"
            )
        self.reference = reference
        self.weighted = overall_estimate == "weighted"
        self.buffer = ReplayBuffer(reference.num_groups, buffer_size, reference.device)

    def compute(self, batch: BatchOutputs) -> cooper.ConstraintState:
        ref, groups = self.reference, batch.groups
        num_groups = ref.num_groups
        counts = torch.bincount(groups, minlength=num_groups)
        present = torch.nonzero(counts).flatten()
        group_loss = group_sums(batch.losses, groups, num_groups)[present] / counts[present]
        overall_loss = batch.losses.mean()
        proxy = (group_loss - ref.loss[present]) - (overall_loss - ref.overall_loss)

        self.buffer.push(batch.correct, groups)
        full = self.buffer.is_full
        full_ids = torch.nonzero(full).flatten()
        if full_ids.numel() == 0:
            return indexed_state(proxy, present, None, None)
        acc_buf = self.buffer.means()
        overall_acc = ref.overall_estimate(acc_buf, full, self.weighted)
        strict = (
            (ref.accuracy[full_ids] - acc_buf[full_ids])
            - (ref.overall_accuracy - overall_acc)
            - self.tolerance
        )
        return indexed_state(proxy, present, strict, full_ids)

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])

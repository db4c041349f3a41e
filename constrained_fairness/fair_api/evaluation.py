"""Pooled statistics of one pass over a split, for :class:`~.trainer.FairTrainer`.

A split's loss is ``Σ_batches loss·rows / Σ rows`` and its fairness gaps are computed once
over every row (:func:`~constrained_fairness.constraints.mean_score.attribute_gaps` of all
batches' outputs together), never averaged over batches.

Under DDP (``torch.distributed`` initialised with more than one rank) each rank passes over
its own shard of the split: the sums (loss·rows, rows, correct predictions) are all-reduced
and the constraint's view of the outputs is gathered from every rank (in rank order), so
every rank computes the same pooled numbers, those of one process on all shards together.
Without DDP nothing is reduced: the arithmetic is that of a plain loop.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from ..constraints.base import BatchOutputs
from ..constraints.mean_score import attribute_gaps
from ..constraints.statistic import GroupStatisticConstraint
from ..runtime.distributed import all_ranks, gather_cat, is_distributed
from .guarantee import DEFAULT_CONFIDENCE, gap_statistics

FIELDS = ("logits", "targets", "attributes", "losses")


class SplitTotals:
    """Running sums of one pass over a split, on ``device`` (where the DDP reductions run)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.loss = 0.0  # Σ batch mean loss · batch rows
        self.rows = 0
        self.correct = 0.0  # NaN when the criterion has no decision rule
        self.outputs: list[BatchOutputs] = []

    def add(self, loss: float, rows: int, outputs: BatchOutputs, correct: float = 0.0) -> None:
        """One batch: its mean ``loss``, its ``rows`` and what the constraint sees of it."""
        self.loss += loss * rows
        self.rows += rows
        self.correct += correct
        self.outputs.append(outputs)

    def seen_rows(self) -> bool:
        """Whether this rank saw a row; under DDP whether *every* rank did (so that all ranks
        raise together instead of one waiting in a reduction)."""
        return all_ranks(self.rows > 0)

    def pooled(self) -> tuple[float, int, float]:
        """``(Σ loss·rows, rows, correct)`` of the split, summed over the ranks under DDP."""
        if not is_distributed():
            return self.loss, self.rows, self.correct
        sums = torch.tensor([self.loss, self.rows, self.correct], dtype=torch.float64, device=self.device)
        dist.all_reduce(sums)
        loss, rows, correct = sums.tolist()
        return loss, int(rows), correct

    def mean_loss(self) -> float:
        loss, rows, _ = self.pooled()
        return loss / rows

    def gaps(self, constraint: GroupStatisticConstraint) -> tuple[float, list[float]]:
        """``(max gap, gap of each attribute)`` pooled over every row of the split (and every
        rank); the max skips the attributes with no group present (NaN)."""
        gaps = attribute_gaps(constraint, gathered(concat(self.outputs))).tolist()
        finite = [g for g in gaps if not math.isnan(g)]
        return (max(finite) if finite else math.nan), gaps

    def allowances(self, sizes: torch.Tensor, confidence: float = DEFAULT_CONFIDENCE) -> list[float]:
        """``z_a·SE_a`` of each attribute's pooled score gap (:mod:`.guarantee`), from every row
        of the split (and every rank); ``mean_pred`` outputs, ``attributes`` as group indices."""
        outputs = gathered(concat(self.outputs))
        stats = gap_statistics(outputs.logits[:, 0], outputs.attributes, sizes)
        return stats.allowances(confidence).tolist()


def concat(parts: list[BatchOutputs]) -> BatchOutputs:
    """The batches as one."""
    return BatchOutputs(*(torch.cat([getattr(p, f) for p in parts]) for f in FIELDS))


def gathered(outputs: BatchOutputs) -> BatchOutputs:
    """Every rank's ``outputs``, concatenated in rank order (``outputs`` itself without DDP)."""
    if not is_distributed():
        return outputs
    fields = [getattr(outputs, f) for f in FIELDS]
    return BatchOutputs(*(gather_cat(t.reshape(-1)).reshape(-1, *t.shape[1:]) for t in fields))

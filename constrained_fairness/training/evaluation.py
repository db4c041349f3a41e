"""Per-group evaluation of a model on every split, and the EAG against the dense model."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..constraints.base import BatchOutputs
from ..data.cache import CachedImages
from ..groups import Grouping
from ..metrics import GroupStats, excess_accuracy_gap, max_over_present
from ..runtime.precision import autocast

SplitTensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # inputs, targets, attribute codes
# in-memory tensors, or a dataset of such triples (an image cache, CachedImages, is one)
SplitSource = SplitTensors | torch.utils.data.Dataset


def iterate_split(source: SplitSource, batch_size: int, num_workers: int = 0) -> Iterator[SplitTensors]:
    """Batches of a split in order (never dropping a row). An image cache
    (:class:`~constrained_fairness.data.cache.CachedImages`) yields its inputs on its device, transformed
    there by its (deterministic) pipeline, without a ``DataLoader``."""
    if isinstance(source, CachedImages):
        yield from source.batches_in_order(batch_size)
        return
    if isinstance(source, tuple):
        inputs, targets, attributes = source
        for start in range(0, len(targets), batch_size):
            stop = start + batch_size
            yield inputs[start:stop], targets[start:stop], attributes[start:stop]
        return
    loader = torch.utils.data.DataLoader(
        source, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    yield from loader


@dataclass
class SplitEvaluation:
    """A model's outputs and per-group statistics on one split, with the EAG if a dense
    reference exists."""

    stats: GroupStats
    outputs: BatchOutputs
    dense: GroupStats | None = None
    tolerance: float | None = None  # ε of the selection score (see :meth:`summary`)

    @property
    def eag(self) -> torch.Tensor | None:
        return None if self.dense is None else excess_accuracy_gap(self.dense, self.stats)

    @property
    def max_eag(self) -> float | None:
        eag = self.eag
        return None if eag is None else max_over_present(eag)

    def summary(self) -> dict[str, float | None]:
        """Accuracy, loss and max EAG; with a tolerance ε also the selection score of sweeps,

            score = accuracy − max(0, max_g ψ[g] − ε),

        which weighs one point of excess gap beyond ε as one point of accuracy: a run that is
        feasible is ranked by its accuracy, and lowering the max EAG by collapsing accuracy
        does not pay."""
        out: dict[str, float | None] = {
            "accuracy": self.stats.overall_accuracy,
            "loss": self.stats.overall_loss,
            "max_eag": self.max_eag,
        }
        if self.tolerance is not None and out["max_eag"] is not None:
            out["score"] = out["accuracy"] - max(0.0, out["max_eag"] - self.tolerance)
        return out


class Evaluator:
    """Evaluates a model on named splits; vectorized per-group statistics, no loop over groups.

    ``grouping`` defines the groups of the per-group accuracy table and of the EAG.
    """

    def __init__(
        self,
        splits: Mapping[str, SplitSource],
        grouping: Grouping,
        batch_size: int = 8192,
        num_workers: int = 0,
        autocast_dtype: torch.dtype | None = None,
        tolerance: float | None = None,
    ) -> None:
        self.splits = dict(splits)
        self.grouping = grouping
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.autocast_dtype = autocast_dtype
        self.dense: dict[str, GroupStats] | None = None
        self.dense_outputs: dict[str, BatchOutputs] | None = None
        self.tolerance = tolerance  # ε of the summaries' selection score (None: no score)

    @torch.no_grad()
    def outputs(self, model: torch.nn.Module) -> dict[str, BatchOutputs]:
        """Logits and per-sample losses of every split, on the CPU."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out = {}
        for name, source in self.splits.items():
            parts = []
            for inputs, targets, attributes in iterate_split(source, self.batch_size, self.num_workers):
                with autocast(device, self.autocast_dtype):
                    logits = model(inputs.to(device, non_blocking=True))
                parts.append((logits.float().cpu(), targets, attributes))
            logits, targets, attributes = (torch.cat(t) for t in zip(*parts, strict=True))
            losses = F.cross_entropy(logits, targets, reduction="none")
            out[name] = BatchOutputs(logits=logits, targets=targets, attributes=attributes, losses=losses)
        model.train(was_training)
        return out

    def group_stats(self, outputs: BatchOutputs) -> GroupStats:
        rows, groups = self.grouping.memberships(outputs.attributes)
        return GroupStats.from_memberships(
            outputs.correct, outputs.losses, rows, groups, self.grouping.num_groups
        )

    def stats(self, model: torch.nn.Module) -> dict[str, GroupStats]:
        return {name: self.group_stats(o) for name, o in self.outputs(model).items()}

    def set_dense_reference(self, model: torch.nn.Module) -> dict[str, BatchOutputs]:
        """Record the dense model's statistics (later evaluations report the EAG against
        them); returns its outputs on every split."""
        outputs = self.outputs(model)
        self.dense = {name: self.group_stats(o) for name, o in outputs.items()}
        self.dense_outputs = outputs
        return outputs

    def evaluate_outputs(self, outputs: Mapping[str, BatchOutputs]) -> dict[str, SplitEvaluation]:
        """:class:`SplitEvaluation` of given outputs (e.g. post-processed ones) per split."""
        return {
            name: SplitEvaluation(
                self.group_stats(o), o, None if self.dense is None else self.dense[name], self.tolerance
            )
            for name, o in outputs.items()
        }

    def __call__(self, model: torch.nn.Module) -> dict[str, SplitEvaluation]:
        return self.evaluate_outputs(self.outputs(model))

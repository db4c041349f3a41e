"""Per-group evaluation of a model on every split, and the EAG against the dense model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..metrics import GroupStats, excess_accuracy_gap, max_over_present

SplitTensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class SplitEvaluation:
    """A model's per-group statistics on one split, with the EAG if a dense reference exists."""

    stats: GroupStats
    dense: GroupStats | None = None

    @property
    def eag(self) -> torch.Tensor | None:
        return None if self.dense is None else excess_accuracy_gap(self.dense, self.stats)

    @property
    def max_eag(self) -> float:
        eag = self.eag
        return 0.0 if eag is None else max_over_present(eag)

    def summary(self) -> dict[str, float]:
        return {
            "accuracy": self.stats.overall_accuracy,
            "loss": self.stats.overall_loss,
            "max_eag": self.max_eag,
        }

    def to_metrics(self, group_names: Sequence[str]) -> dict:
        """The ``metrics.json`` entry of this split: summary plus a per-group table."""
        eag = self.eag
        groups = {}
        for g, name in enumerate(group_names):
            n = int(self.stats.counts[g])
            groups[name] = {
                "n": n,
                "accuracy": _finite(self.stats.accuracy[g]) if n else None,
                "dense_accuracy": _finite(self.dense.accuracy[g]) if n and self.dense is not None else None,
                "eag": _finite(eag[g]) if n and eag is not None else None,
            }
        return {**self.summary(), "groups": groups}


def _finite(x: torch.Tensor) -> float | None:
    value = float(x)
    return value if value == value else None


class Evaluator:
    """Evaluates a model on named splits; vectorized per-group statistics, no loop over groups."""

    def __init__(self, splits: Mapping[str, SplitTensors], num_groups: int, batch_size: int = 8192) -> None:
        self.splits = dict(splits)
        self.num_groups = num_groups
        self.batch_size = batch_size
        self.dense: dict[str, GroupStats] | None = None

    @torch.no_grad()
    def stats(self, model: torch.nn.Module) -> dict[str, GroupStats]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out = {}
        for name, (inputs, targets, groups) in self.splits.items():
            correct, losses = [], []
            for start in range(0, len(targets), self.batch_size):
                x = inputs[start : start + self.batch_size].to(device)
                y = targets[start : start + self.batch_size].to(device)
                logits = model(x)
                losses.append(F.cross_entropy(logits, y, reduction="none").cpu())
                correct.append((logits.argmax(dim=1) == y).cpu())
            out[name] = GroupStats.from_outputs(
                torch.cat(correct), torch.cat(losses), groups, self.num_groups
            )
        model.train(was_training)
        return out

    def set_dense_reference(self, model: torch.nn.Module) -> dict[str, GroupStats]:
        """Record the dense model's statistics; later evaluations report the EAG against them."""
        self.dense = self.stats(model)
        return self.dense

    def __call__(self, model: torch.nn.Module) -> dict[str, SplitEvaluation]:
        stats = self.stats(model)
        return {
            name: SplitEvaluation(s, None if self.dense is None else self.dense[name])
            for name, s in stats.items()
        }

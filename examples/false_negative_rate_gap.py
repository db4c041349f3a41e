"""A custom constraint in ~20 lines: no group's false-negative rate may grow by more
than ε over the dense model's, after pruning.

    FNR[g] = P(ŷ ≠ 1 | y = 1, g)        constraint:  FNR_sparse[g] − FNR_dense[g] ≤ ε

Run it:  python examples/false_negative_rate_gap.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from constrained_fairness.config import DualConfig
from constrained_fairness.constraints import BatchOutputs, GroupStatisticConstraint, SampleStatistic
from constrained_fairness.constraints.registry import register_constraint
from constrained_fairness.groups import GroupIndex, Grouping
from constrained_fairness.models import MLP
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.sparsity import MagnitudePruner
from constrained_fairness.training.optimizers import build_cooper_optimizer


class FalseNegativeRateGap(GroupStatisticConstraint):
    """``FNR_s[g] − FNR_d[g] − ε ≤ 0`` for every group (one row per group)."""

    def __init__(
        self, grouping: Grouping, tolerance: float, dense_fnr: torch.Tensor | None = None, **kw
    ) -> None:
        super().__init__(grouping, tolerance, row_labels=("",), **kw)
        dense_fnr = dense_fnr if dense_fnr is not None else torch.zeros(self.num_groups)
        self.dense_fnr = dense_fnr.to(self.partition.device)

    def sample_statistic(self, batch: BatchOutputs) -> SampleStatistic:
        return SampleStatistic(
            proxy=1 - torch.softmax(batch.logits, dim=1)[:, 1],  # smooth "predicted negative"
            strict=(batch.logits.detach().argmax(dim=1) != 1).float(),
            mask=batch.targets == 1,  # FNR counts the positives only
        )

    def violations(self, values: torch.Tensor, overall: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return (values - self.dense_fnr[ids] - self.tolerance).unsqueeze(0)


@register_constraint("false_negative_rate_gap")  # now usable from YAML configs too
def _from_config(spec, grouping: Grouping, context) -> FalseNegativeRateGap:
    probe = FalseNegativeRateGap(grouping, spec.tolerance, buffer_size=0)
    dense_fnr = probe.statistic(context.dense_train).float().nan_to_num().to(context.device)
    return FalseNegativeRateGap(
        grouping, spec.tolerance, dense_fnr, buffer_size=spec.buffer_size, device=context.device
    )


# -- a demonstration on synthetic data -------------------------------------------------------
def synthetic(n: int = 3000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three groups; group 2 (10 %) has its positives near the decision boundary."""
    gen = torch.Generator().manual_seed(seed)
    group = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), n, replacement=True, generator=gen)
    x = torch.randn(n, 8, generator=gen)
    score = x[:, 0] + 0.5 * x[:, 1] - 0.8 * (group == 2).float() * x[:, 2]
    y = (score + 0.3 * torch.randn(n, generator=gen) > 0).long()
    features = torch.cat([x, F.one_hot(group, 3).float()], dim=1)
    return features, y, group.unsqueeze(1)


def fnr(model: torch.nn.Module, constraint: FalseNegativeRateGap, data) -> torch.Tensor:
    x, y, a = data
    with torch.no_grad():
        logits = model(x)
    return constraint.statistic(BatchOutputs(logits, y, a, F.cross_entropy(logits, y, reduction="none")))


def train(model, problem, data, steps: int, duals=(), pruner=None, lr: float = 0.01) -> None:
    x, y, a = data
    optimizer = build_cooper_optimizer(problem, torch.optim.Adam(model.parameters(), lr=lr), list(duals))
    for _ in range(steps):
        optimizer.roll({"model": model, "inputs": x, "targets": y, "attributes": a})
        if pruner is not None:
            pruner.apply()


def main(steps: int = 300, sparsity: float = 0.95, tolerance: float = 0.02) -> dict[str, list[float]]:
    torch.manual_seed(0)
    data = synthetic()
    grouping = Grouping.create(GroupIndex.from_lists(["g"], [["0", "1", "2"]]), ["g"])
    dense = MLP(11, [64, 64], 2)
    train(dense, FairnessProblem(), data, steps)
    dense_fnr = fnr(dense, FalseNegativeRateGap(grouping, tolerance), data).float()

    results = {"dense": dense_fnr.tolist()}
    for name, constrained in (("pruned, unconstrained", False), ("pruned, FNR-gap constraint", True)):
        model = MLP(11, [64, 64], 2)
        model.load_state_dict(dense.state_dict())
        pruner = MagnitudePruner(model, dense_layers=["last"])
        pruner.prune_to(sparsity)
        constraint = FalseNegativeRateGap(grouping, tolerance, dense_fnr, buffer_size=0)
        problem = FairnessProblem([constraint] if constrained else [], ["fnr_gap"] if constrained else [])
        train(
            model, problem, data, steps, [DualConfig(lr=0.2, optimizer="nupi")] if constrained else [], pruner
        )
        results[name] = fnr(model, constraint, data).tolist()
    return results


if __name__ == "__main__":
    for name, rates in main().items():
        print(f"{name:<28} FNR per group: " + "  ".join(f"{r:.3f}" for r in rates))

from collections import deque

import cooper
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from constrained_fairness.config import DualConfig
from constrained_fairness.constraints import BatchOutputs, DenseReference, EqualizedLoss, ExcessAccuracyGap
from constrained_fairness.groups import Grouping
from constrained_fairness.metrics import GroupStats
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.training.optimizers import build_cooper_optimizer


def reference_from(correct, losses, groups, G):
    return DenseReference.from_stats(GroupStats.from_outputs(correct, losses, groups, G))


def make_batch(G, n, seed, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 3, generator=gen, requires_grad=requires_grad)
    targets = torch.randint(0, 3, (n,), generator=gen)
    groups = torch.randint(0, G - 1, (n,), generator=gen)  # last group never present
    losses = F.cross_entropy(logits, targets, reduction="none")
    return BatchOutputs(logits, targets, groups.unsqueeze(1), losses), groups


def test_ceag_proxy_and_strict_violation_match_a_per_group_loop():
    G, k, eps = 5, 6, 0.01
    ref_batch, ref_groups = make_batch(G, 300, 0)
    ref = reference_from(ref_batch.correct, ref_batch.losses.detach(), ref_groups, G)
    constraint = ExcessAccuracyGap(ref, eps, buffer_size=k, grouping=Grouping.single(G))
    queues = [deque(maxlen=k) for _ in range(G)]
    for step in range(4):
        batch, groups = make_batch(G, 13, step + 1, requires_grad=True)
        state = constraint.compute(batch)
        for c, g in zip(batch.correct.tolist(), groups.tolist(), strict=True):
            queues[g].append(c)
        # proxy, for present groups, by a loop
        present = sorted(set(groups.tolist()))
        assert state.constraint_features.tolist() == present
        losses = batch.losses.detach()
        for i, g in enumerate(present):
            expected = (float(losses[groups == g].mean()) - float(ref.loss[g])) - (
                float(losses.mean()) - ref.overall_loss
            )
            assert float(state.violation.detach()[i]) == pytest.approx(expected, abs=1e-5)
        # strict, for full groups, by a loop
        full = [g for g in range(G) if len(queues[g]) == k]
        if not full:
            assert not state.contributes_to_dual_update
            continue
        assert state.strict_constraint_features.tolist() == full
        acc = {g: sum(queues[g]) / k for g in full}
        p = {g: float(ref.frequency[g]) for g in full}
        overall = sum(p[g] * acc[g] for g in full) / sum(p.values())
        for i, g in enumerate(full):
            expected = (float(ref.accuracy[g]) - acc[g]) - (ref.overall_accuracy - overall) - eps
            assert float(state.strict_violation[i]) == pytest.approx(expected, abs=1e-5)
        assert state.strict_violation.grad_fn is None
        state.violation.sum().backward(retain_graph=True)
        assert batch.logits.grad is not None


def test_ceag_unweighted_overall_is_the_plain_mean_of_full_groups():
    G = 3
    ref = DenseReference(torch.ones(G), torch.zeros(G), 1.0, 0.0, torch.tensor([0.8, 0.1, 0.1]))
    logits = torch.tensor([[1.0, 0.0]] * 3)  # predicts class 0
    batch = BatchOutputs(logits, torch.tensor([1, 0, 0]), torch.tensor([[0], [1], [2]]), torch.zeros(3))
    for mode, overall in (("unweighted", 2 / 3), ("weighted", 0.2)):
        c = ExcessAccuracyGap(ref, 0.0, buffer_size=1, overall_estimate=mode, grouping=Grouping.single(G))
        state = c.compute(batch)
        # group 0 has accuracy 0: ψ[0] = (1 − 0) − (1 − overall)
        assert float(state.strict_violation[0]) == pytest.approx(overall)


class SignModel(nn.Module):
    """logits = [w x, -w x]: predicts class 0 when x > 0; trainable w."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.w * x, -self.w * x], dim=1)


def test_ceag_step_grows_multiplier_of_violated_group_only():
    G, k, eps, dual_lr = 2, 4, 0.01, 0.1
    ref = DenseReference(torch.ones(G), torch.zeros(G), 1.0, 0.0, torch.tensor([0.5, 0.5]))
    constraint = ExcessAccuracyGap(ref, eps, buffer_size=k, grouping=Grouping.single(G))
    problem = FairnessProblem([constraint], ["ceag"])
    model = SignModel()
    optimizer = build_cooper_optimizer(
        problem, torch.optim.SGD(model.parameters(), lr=0.0), [DualConfig(lr=dual_lr, optimizer="sgd")]
    )
    x = torch.ones(8, 1)
    attributes = torch.tensor([0, 1] * 4).unsqueeze(1)
    targets = torch.tensor([1, 0] * 4)  # group 0 always wrong, group 1 always right
    kwargs = {"model": model, "inputs": x, "targets": targets, "attributes": attributes}
    optimizer.roll(kwargs)
    lam = constraint.multiplier_values()
    # ψ[0] = (1 − 0) − (1 − 0.5) = 0.5;  ψ[1] = (1 − 1) − (1 − 0.5) = −0.5
    assert float(lam[0]) == pytest.approx(dual_lr * (0.5 - eps))
    assert float(lam[1]) == 0.0
    optimizer.roll(kwargs)
    assert float(constraint.multiplier_values()[0]) == pytest.approx(2 * dual_lr * (0.5 - eps))
    assert float(constraint.multiplier_values()[1]) == 0.0


def test_equalized_loss_rows_and_buffer():
    G, tol = 4, 0.05
    grouping = Grouping.single(G)
    batch, groups = make_batch(G, 64, 9)
    state = EqualizedLoss(grouping, tol).compute(batch)
    present = sorted(set(groups.tolist()))
    assert state.constraint_features.tolist() == present + [g + G for g in present]
    L = float(batch.losses.mean())
    for i, g in enumerate(present):
        gap = float(batch.losses[groups == g].mean()) - L
        assert float(state.violation[i]) == pytest.approx(gap - tol, abs=1e-5)
        assert float(state.violation[i + len(present)]) == pytest.approx(-gap - tol, abs=1e-5)
    assert not EqualizedLoss(grouping, tol, buffer_size=1000).compute(batch).contributes_to_dual_update
    state = EqualizedLoss(grouping, tol, buffer_size=2).compute(batch)
    assert state.strict_constraint_features.numel() == 2 * len(present)


def test_no_dual_step_before_any_buffer_is_full():
    G = 3
    ref = DenseReference(torch.ones(G), torch.zeros(G), 1.0, 0.0, torch.full((G,), 1 / 3))
    constraint = ExcessAccuracyGap(ref, 0.0, buffer_size=100, grouping=Grouping.single(G))
    problem = FairnessProblem([constraint], ["ceag"])
    model = SignModel()
    optimizer = build_cooper_optimizer(problem, torch.optim.SGD(model.parameters(), lr=0.1), [DualConfig()])
    rollout = optimizer.roll(
        {
            "model": model,
            "inputs": torch.tensor([[1.0], [2.0], [3.0], [1.0], [2.0], [3.0]]),  # unequal group losses
            "targets": torch.ones(6).long(),
            "attributes": torch.tensor([0, 1, 2, 0, 1, 2]).unsqueeze(1),
        }
    )
    assert isinstance(rollout.cmp_state, cooper.CMPState)
    assert constraint.multiplier_values().tolist() == [0.0, 0.0, 0.0]

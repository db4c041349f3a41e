"""The protocol's Trainer on its own, on problems with known solutions: a plain SGD epoch is
the step computed by hand, and dual ascent on a constant violation gives λ_k = max(0, kηv)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from constrained_fairness.config import DualConfig
from constrained_fairness.problem import FairnessProblem
from constrained_fairness.training.batches import TensorBatches
from constrained_fairness.training.optimizers import build_cooper_optimizer
from constrained_fairness.training.trainer import Trainer

from ..problems import ConstantViolation, linear_data


def make_trainer(model, problem, duals, lr, batch_size, inputs, targets, attributes) -> Trainer:
    primal = torch.optim.SGD(model.parameters(), lr=lr)
    optimizer = build_cooper_optimizer(problem, primal, duals, None)
    batches = TensorBatches(inputs, targets, attributes, batch_size, shuffle=False)
    return Trainer("test", model, problem, optimizer, batches, evaluate=lambda m: {})


def test_one_full_batch_epoch_is_one_sgd_step():
    data = linear_data()
    model = torch.nn.Linear(3, 2)
    expected = copy.deepcopy(model)
    loss = F.cross_entropy(expected(data[0]), data[1])
    grads = torch.autograd.grad(loss, list(expected.parameters()))
    trainer = make_trainer(model, FairnessProblem(), [], 0.5, len(data[1]), *data)
    trainer.run(1)
    for p, q, g in zip(model.parameters(), expected.parameters(), grads, strict=True):
        assert torch.allclose(p, q - 0.5 * g, rtol=1e-6, atol=1e-7)
    assert trainer.history[0]["train_loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    assert trainer.epoch == 1 and trainer.step == 1


def test_dual_ascent_on_a_constant_violation_is_k_eta_v_projected():
    """Four steps of dual SGD (η = 0.1) on v = (0.5, −0.25, 0): λ = (0.2, 0, 0), exactly."""
    data = linear_data()
    values = torch.tensor([0.5, -0.25, 0.0])
    problem = FairnessProblem([ConstantViolation(values)], ["gap"])
    trainer = make_trainer(
        torch.nn.Linear(3, 2), problem, [DualConfig(optimizer="sgd", lr=0.1)], 0.1, 8, *data
    )
    trainer.run(1)  # 32 rows in batches of 8: four steps
    expected = torch.clamp(4 * 0.1 * values, min=0.0)
    assert torch.allclose(torch.tensor(problem.multiplier_values()["gap"]), expected, atol=1e-7)

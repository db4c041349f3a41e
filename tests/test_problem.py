"""FairnessProblem on its own: the loss and the observed constraints of one batch, against
values computed here, and the finiteness guard."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from constrained_fairness.problem import FairnessProblem, NonFiniteBatch

from .problems import ConstantViolation, linear_data


def test_loss_is_the_mean_cross_entropy_and_weights_multiply_it():
    inputs, targets, attributes = linear_data()
    model = torch.nn.Linear(3, 2)
    problem = FairnessProblem()
    state = problem.compute_cmp_state(model, inputs, targets, attributes)
    logits = model(inputs)
    by_hand = sum(-torch.log_softmax(logits[i], 0)[targets[i]] for i in range(len(targets))) / len(targets)
    assert float(state.loss.detach()) == pytest.approx(float(by_hand.detach()), rel=1e-6)
    problem.sample_weights = lambda t, a: 1.0 + a[:, 0].float() + t.float()
    weighted = problem.compute_cmp_state(model, inputs, targets, attributes).loss
    w = 1.0 + attributes[:, 0].float() + targets.float()
    expected = (F.cross_entropy(logits, targets, reduction="none") * w).mean()
    assert float(weighted.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert not problem.is_constrained and state.observed_constraints == {}


def test_observed_constraints_and_their_names():
    values = torch.tensor([0.5, -0.25])
    problem = FairnessProblem([ConstantViolation(values)], ["gap"])
    state = problem.compute_cmp_state(torch.nn.Linear(3, 2), *linear_data())
    (observed,) = state.observed_constraints.values()
    assert torch.equal(observed.strict_violation, values)
    assert problem.is_constrained and list(problem.multiplier_values()) == ["gap"]


def test_non_finite_loss_and_multipliers_are_named():
    inputs, targets, attributes = linear_data()
    model = torch.nn.Linear(3, 2)
    problem = FairnessProblem([ConstantViolation(torch.tensor([0.1]))], ["gap"])
    with pytest.raises(NonFiniteBatch, match="loss") as caught:
        problem.compute_cmp_state(model, inputs * float("nan"), targets, attributes)
    assert not caught.value.fatal
    (constraint,) = problem.constraints()
    with torch.no_grad():
        constraint.multiplier.weight.fill_(float("inf"))
    with pytest.raises(NonFiniteBatch, match="multipliers") as caught:
        problem.compute_cmp_state(model, inputs, targets, attributes)
    assert caught.value.fatal

"""The builder of each method's results: values as the evaluation computed them, per group once,
and a statistic that is not finite written null with its name in ``nonfinite``."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from constrained_fairness.config import EvaluationConfig
from constrained_fairness.experiment.results import MethodResultBuilder
from constrained_fairness.groups import Grouping
from constrained_fairness.training.evaluation import Evaluator


class Fixed(torch.nn.Module):
    """Returns the given logits whatever the input (a model of precomputed outputs)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def _builder_and_outputs(logits: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor):
    attributes = groups[:, None]
    grouping = Grouping.single(2)
    evaluator = Evaluator({"train": (logits, targets, attributes)}, grouping)
    evaluator.set_dense_reference(Fixed(logits))
    builder = MethodResultBuilder(
        grouping, ("train",), evaluator, EvaluationConfig(bootstrap_resamples=5), 0.01, []
    )
    return builder, evaluator


def test_group_values_are_the_evaluations_and_a_non_finite_loss_is_null_with_its_name():
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 2, (40,), generator=gen)
    groups = torch.arange(40) % 2
    logits = torch.randn(40, 2, generator=gen)
    builder, evaluator = _builder_and_outputs(logits, targets, groups)
    finite = builder.entry(evaluator(Fixed(logits)), epoch=3)
    train = finite.split("train")
    for g in (0, 1):  # against a loop over the groups
        member = groups == g
        expected = float((logits[member].argmax(1) == targets[member]).double().mean())
        assert train.group(str(g)).accuracy == expected and train.group(str(g)).n == int(member.sum())
    assert train.loss == pytest.approx(float(F.cross_entropy(logits, targets)), rel=1e-6)
    assert train.nonfinite == []

    wild = logits.clone()
    wild[0] = torch.tensor([math.inf, -math.inf])  # a loss of inf where the target is 1
    targets[0] = 1
    builder, evaluator = _builder_and_outputs(wild, targets, groups)
    broken = builder.entry(evaluator(Fixed(wild)), epoch=3).split("train")
    assert broken.loss is None and "loss" in broken.nonfinite and broken.accuracy is not None
    text = json.dumps(broken.to_json(), allow_nan=False)  # strict JSON: no NaN, no Infinity
    assert json.loads(text)["nonfinite"] == broken.nonfinite

"""The runnable examples keep working."""

from __future__ import annotations

from pathlib import Path

import torch

from .helpers import load_script

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    return load_script(EXAMPLES / f"{name}.py")


def test_false_negative_rate_gap_example_constrains_the_fnr_increase():
    example = load("false_negative_rate_gap")
    tolerance = 0.02
    results = example.main(steps=200, tolerance=tolerance)
    dense = torch.tensor(results["dense"])
    unconstrained = torch.tensor(results["pruned, unconstrained"]) - dense
    constrained = torch.tensor(results["pruned, FNR-gap constraint"]) - dense
    assert float(unconstrained.max()) > 3 * tolerance  # pruning hurts some group's FNR
    assert float(constrained.max()) < float(unconstrained.max()) / 2
    assert float(constrained.max()) <= 2 * tolerance


def test_the_custom_constraint_is_registered_for_configs():
    load("false_negative_rate_gap")
    from constrained_fairness.constraints.registry import CONSTRAINT_TYPES

    assert "false_negative_rate_gap" in CONSTRAINT_TYPES

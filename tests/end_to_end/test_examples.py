"""The runnable examples keep working."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ..helpers import load_script

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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


def test_custom_dataset_and_model_example_runs_the_protocol_on_digits(capsys):
    """The registered digits dataset and CNN run dense → GMP → NFT and CEAG; the printed
    ψ[g] per digit is the per-group EAG recomputed here from the group accuracies."""
    metrics = load("custom_dataset_and_model").main([])
    printed = capsys.readouterr().out
    methods = metrics["methods"]
    assert list(methods) == ["nft", "ceag"] and metrics["groups"] == [str(d) for d in range(10)]
    assert metrics["achieved_sparsity"]["overall"] == pytest.approx(0.95, abs=0.01)
    for name, entry in methods.items():
        split = entry["train"]
        dense = metrics["dense"]["train"]["accuracy"]
        for group in split["groups"].values():
            psi = (group["dense_accuracy"] - group["accuracy"]) - (dense - split["accuracy"])
            assert group["eag"] == pytest.approx(psi, abs=1e-9)
        assert split["max_eag"] == pytest.approx(max(g["eag"] for g in split["groups"].values()), abs=1e-12)
        assert f"{name}: accuracy {split['accuracy']:.3f} train" in printed
    assert methods["ceag"]["train"]["max_eag"] <= methods["nft"]["train"]["max_eag"]

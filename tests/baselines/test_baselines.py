"""Reweighting and group thresholds: against hand computations and loops, and on Adult."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from constrained_fairness.baselines import apply_thresholds, fit_thresholds, kamiran_calders_weights
from constrained_fairness.cli import main
from constrained_fairness.errors import ConfigError

from ..helpers import assert_typed_round_trip

ROOT = Path(__file__).resolve().parents[2]


def test_kamiran_calders_weights_by_hand():
    # group 0: labels 1,1,1,0 ; group 1: labels 0,0,1
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    targets = torch.tensor([1, 1, 1, 0, 0, 0, 1])
    w = kamiran_calders_weights(groups, targets, 2, 2)
    p_g, p_y = [4 / 7, 3 / 7], [3 / 7, 4 / 7]
    p_gy = [[1 / 7, 3 / 7], [2 / 7, 1 / 7]]
    expected = [[p_g[g] * p_y[y] / p_gy[g][y] for y in (0, 1)] for g in (0, 1)]
    torch.testing.assert_close(w, torch.tensor(expected), rtol=1e-6, atol=0)
    per_sample = w[groups, targets]
    assert float(per_sample.mean()) == pytest.approx(1.0)
    # under the weights the label is independent of the group: P_w(y = 1 | g) = P(y = 1) for both
    for g in (0, 1):
        in_g = groups == g
        rate = float((per_sample * (targets == 1) * in_g).sum() / (per_sample * in_g).sum())
        assert rate == pytest.approx(p_y[1])
    empty = kamiran_calders_weights(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), 2, 2)
    assert float(empty[1, 1]) == 0.0  # a cell without samples


def test_thresholds_equalize_positive_rates_like_a_loop():
    gen = torch.Generator().manual_seed(0)
    groups = torch.randint(0, 3, (3000,), generator=gen)
    scores = torch.sigmoid(torch.randn(3000, generator=gen) + groups.float() - 1)
    thresholds = fit_thresholds(scores, groups, 3)
    rate = float((scores >= 0.5).double().mean())
    for g in range(3):  # the loop: the ⌈(1 − r) m⌉-th smallest score of the group
        member = sorted(scores[groups == g].double().tolist())
        k = min(int(torch.ceil(torch.tensor((1 - rate) * len(member), dtype=torch.float64))), len(member) - 1)
        assert float(thresholds[g]) == member[k]
    predicted = apply_thresholds(scores, groups, thresholds)
    rates = [float(predicted[groups == g].double().mean()) for g in range(3)]
    assert (
        max(rates) - min(rates)
        < 0.01
        < float(
            max((scores[groups == g] >= 0.5).double().mean() for g in range(3))
            - min((scores[groups == g] >= 0.5).double().mean() for g in range(3))
        )
    )


def test_equal_opportunity_needs_labels_and_unknown_rules_are_errors():
    with pytest.raises(ConfigError, match="need the validation labels"):
        fit_thresholds(torch.rand(10), torch.zeros(10, dtype=torch.long), 1, "equal_opportunity")
    with pytest.raises(ConfigError, match=r"thresholds\.rule must be one of"):
        fit_thresholds(torch.rand(10), torch.zeros(10, dtype=torch.long), 1, "parity")


def test_adult_baselines_run_from_the_config_and_thresholds_cut_the_dp_difference(tmp_path):
    out = tmp_path / "run"
    settings = [
        "dense.epochs=2",
        "pruning.epochs=2",
        "finetune.epochs=3",
        "evaluation.bootstrap_resamples=50",
    ]
    args = ["run", str(ROOT / "configs/adult/baselines.yaml"), "--output", str(out), "--quiet"]
    args += [x for s in settings for x in ("--set", s)]
    assert main([*args, "--set", "methods=[nft,reweighting,thresholds]"]) == 0
    methods = assert_typed_round_trip(out)["methods"]
    assert list(methods) == ["nft", "reweighting", "thresholds"]
    dp = {m: methods[m]["test"]["aggregates"]["positive_rate"]["difference"] for m in methods}
    assert dp["thresholds"] < dp["nft"], dp
    assert set(methods["thresholds"]["thresholds"]) == set(methods["thresholds"]["test"]["groups"])
    assert main(["compare", str(out), "--output", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| reweighting |" in table and "| thresholds |" in table


def test_thresholds_on_a_multiclass_target_is_refused_before_any_training(tmp_path, capsys):
    from ..helpers import tiny_config

    args = ["data.target=job", "data.positive_value=null", "data.categorical=[color, sex, label]"]
    args += ["methods=[nft, thresholds]"]
    overrides = [part for item in args for part in ("--set", item)]
    run = tmp_path / "run"
    assert main(["run", str(tiny_config(tmp_path)), "--output", str(run), "--quiet", *overrides]) == 2
    assert "method thresholds needs a binary target; the data has 4 classes" in capsys.readouterr().err
    assert not list(run.rglob("*.pt"))  # no stage trained

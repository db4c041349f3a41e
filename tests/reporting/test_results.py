"""The typed results tree: what it writes, in which order, and how it reads old or odd files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from constrained_fairness.reporting.results import (
    GroupMaximum,
    GroupResult,
    Interval,
    MethodResult,
    RunResults,
    SplitResult,
    Verdict,
    read_splits,
)


def _split(acc: float, groups: dict[str, GroupResult]) -> SplitResult:
    return SplitResult(acc, 0.4, 0.02, None, groups, Interval(0.01, 0.05), {}, {})


def test_to_json_writes_the_protocol_key_order():
    group = GroupResult(
        10, 0.8, 0.9, 0.05, {"loss": 0.3}, {"accuracy": Interval(0.7, 0.9), "loss": Interval(0.2, 0.4)}
    )
    method = MethodResult({"train": _split(0.8, {"a": group, "b": GroupResult(0)})}, epoch=3)
    method.skipped_batches, method.multipliers = 0, {"ceag": [0.0, 0.1]}
    run = RunResults(
        ("train",), {"path": None, "format": None}, 0.01, 0.9, {}, ["a", "b"], {}, {"ceag": method}, 1
    )
    out = run.to_json()
    assert list(out) == [
        "splits",
        "dense_checkpoint",
        "tolerance",
        "sparsity",
        "achieved_sparsity",
        "groups",
        "dense",
        "methods",
        "world_size",
    ]
    entry = out["methods"]["ceag"]
    assert list(entry) == ["train", "epoch", "skipped_batches", "multipliers"]
    assert list(entry["train"]) == [
        "accuracy",
        "loss",
        "max_eag",
        "groups",
        "max_eag_ci",
        "aggregates",
        "verdicts",
    ]
    # the base statistics first, then each bootstrapped one with its interval, in evaluation order
    assert list(entry["train"]["groups"]["a"]) == [
        "n",
        "accuracy",
        "dense_accuracy",
        "eag",
        "accuracy_ci",
        "loss",
        "loss_ci",
    ]
    assert entry["train"]["groups"]["b"] == {"n": 0, "accuracy": None, "dense_accuracy": None, "eag": None}
    text = json.dumps(out)
    assert json.dumps(RunResults.from_json(json.loads(text)).to_json()) == text


def test_wall_seconds_never_reaches_metrics_json():
    run = RunResults(wall_seconds=12.5)
    assert "wall_seconds" not in run.to_json()
    assert RunResults.from_json({"wall_seconds": 3, "methods": {}}).wall_seconds == 3.0


def test_an_old_file_reads_as_missing_values():
    old = {  # no splits, no dense, a NaN, a numeric string and a float count, an unknown key
        "tolerance": 0.01,
        "methods": {
            "nft": {
                "train": {"accuracy": math.nan, "max_eag": "0.1", "groups": {"g": {"n": 5.0, "eag": 0.2}}},
                "epoch": 3.0,
                "stage": "nft",
            }
        },
    }
    run = RunResults.from_json(old)
    assert run.splits == ("train", "val", "test") and run.sparsity is None and run.dense is None
    train = run.method("nft").split("train")
    assert train.accuracy is None and train.max_eag == 0.1  # read as finite_or_none reads it
    assert train.group("g").n == 5 and run.method("nft").epoch == 3
    assert train.group("g").eag == 0.2 and train.group("g").accuracy is None
    assert train.group("absent") == GroupResult()
    assert run.method("nft").split("val") == SplitResult()
    assert run.method("absent").split("train").accuracy is None
    assert "splits" not in run.to_json()  # what was absent stays absent
    with pytest.raises(TypeError, match="list of group names"):
        RunResults.from_json({"groups": "abc", "methods": {}})


def test_integers_stay_integers():
    run = RunResults.from_json({"splits": ["train"], "tolerance": 0, "sparsity": 1, "methods": {}})
    assert json.dumps(run.to_json()) == json.dumps(
        {
            "splits": ["train"],
            "tolerance": 0,
            "sparsity": 1,
            "achieved_sparsity": {},
            "groups": [],
            "dense": {},
            "methods": {},
        }
    )


@pytest.mark.parametrize("bad", ["train", [1], [""], 3])
def test_malformed_splits_are_a_type_error(bad):
    with pytest.raises(TypeError, match="list of split names"):
        read_splits(bad)
    with pytest.raises(TypeError, match="list of split names"):
        RunResults.from_json({"splits": bad, "methods": {}})


def test_methods_must_be_a_mapping():
    with pytest.raises(TypeError, match="must map method names"):
        RunResults.from_json({"methods": ["nft"]})
    with pytest.raises(TypeError, match="mapping"):
        RunResults.from_json(["not", "a", "dict"])


def test_selection_on_test_and_verdicts_read_back():
    entry = {
        "test": {
            "accuracy": 0.8,
            "verdicts": {
                "eag": {
                    "tolerance": 0.01,
                    "counts": {"violated": 1},
                    "groups": {"violated": ["g"]},
                    "min_group_size": 30,
                }
            },
        },
        "selected_on": "test",
    }
    run = RunResults.from_json({"splits": ["train", "test"], "methods": {"nft_es_test": entry, "nft": {}}})
    assert run.methods_selected_on_test == ["nft_es_test"]
    verdict = run.method("nft_es_test").split("test").verdicts["eag"]
    assert verdict == Verdict(0.01, {"violated": 1}, {"violated": ["g"]}, 30)


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize(
    "name", ["metrics_03e8543_tiny_constraints.json", "metrics_03e8543_adult_baselines.json"]
)
def test_files_of_the_writer_before_the_typed_tree_read_and_write_back_byte_identical(name):
    """Golden files written by the dict-based writer of 03e8543 (a tiny run with NFT, NFT+ES,
    CEAG and a declared demographic-parity constraint; the Adult baselines with reweighting
    and thresholds), trimmed to two groups and two splits: the tree writes every key they hold,
    in their order, and nothing else."""
    text = (FIXTURES / name).read_text()
    assert json.dumps(RunResults.from_json(json.loads(text)).to_json(), indent=2, allow_nan=False) == text


def test_group_maximum_names_the_group_and_leaves_out_small_ones():
    groups = {
        "three rows": GroupResult(3, 0.5, 0.9, 0.66),
        "big": GroupResult(388, 0.8, 0.82, 0.022),
        "middle": GroupResult(67, 0.7, 0.76, 0.06),
        "empty": GroupResult(0),
    }
    everywhere = GroupMaximum.over(groups)
    assert (everywhere.value, everywhere.group, everywhere.n) == (0.66, "three rows", 3)
    large = GroupMaximum.over(groups, min_group_size=30)
    assert (large.value, large.group, large.n, large.min_group_size) == (0.06, "middle", 67, 30)
    assert GroupMaximum.over(groups, min_group_size=1000) == GroupMaximum(min_group_size=1000)
    gen = torch.Generator().manual_seed(0)  # against a loop, on random tables with ties
    for _ in range(20):
        n = torch.randint(0, 60, (8,), generator=gen).tolist()
        eag = (torch.randint(-3, 4, (8,), generator=gen) / 100).tolist()
        table = {f"g{i}": GroupResult(n[i], eag=eag[i] if n[i] else None) for i in range(8)}
        kept = [(eag[i], -i) for i in range(8) if n[i] >= 30]
        expected = max(kept) if kept else None
        got = GroupMaximum.over(table, 30)
        assert got.value == (None if expected is None else expected[0])
        assert got.group == (None if expected is None else f"g{-expected[1]}")  # the first on a tie

"""Smoke test: every benchmark script runs with its smallest setting (timings are not checked)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..helpers import load_script

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    return load_script(BENCHMARKS / f"{name}.py")


def test_group_scaling_benchmark_runs(capsys):
    module = _load("group_scaling")
    result = module.main(["--quick", "--groups", "50"])
    assert result["ratio"] > 0 and result["ms_2"] > 0 and result["ms_50"] > 0
    assert "ratio 50/2" in capsys.readouterr().out


def test_projection_speed_benchmark_runs(capsys):
    module = _load("projection_speed")
    result = module.main(["--quick"])
    parts = result["breakdown"]
    assert result[64]["ours_ms"] > 0 and parts["total"] > 0 and parts["total, numpy solver"] > 0
    assert "compiled kernels" in parts or importlib.util.find_spec("numba") is None
    out = capsys.readouterr().out
    assert "P3 projection forward+backward" in out and "breakdown of ours at b=64" in out


def test_step_overhead_benchmark_runs(capsys):
    result = _load("step_overhead").main(["--quick"])
    for name in ("mlp", "mobilenet_v2"):
        assert result[name]["nft_ms"] > 0 and result[name]["ceag_ms"] > 0 and result[name]["ratio"] > 0
    out = capsys.readouterr().out
    assert "P1 CEAG ÷ NFT fine-tuning step time" in out
    assert "NFT ms/step" in out and "CEAG ms/step" in out and "mobilenet_v2" in out
    mlp = result["mlp"]
    assert mlp["cooper_ms"] > 0 and mlp["ratio_to_cooper"] > 0 and mlp["before_ratio_to_cooper"] > 0
    assert "P1a, the library's own overhead" in out and "CEAG ÷ Cooper alone" in out
    floors = mlp["floors"]
    assert {"nft", "fused"} <= set(floors) and "floors of mlp" in out
    # the hand-fused floor does the library's CEAG update, not less: same weights after 5 steps
    assert floors["max_abs_diff"]["value"] < 1e-6  # 1e-5 without the dual update


def test_step_overhead_profile_runs(capsys):
    result = _load("step_overhead").main(
        ["--quick", "--models", "mlp", "--no-floors", "--profile", "--profile-steps", "3"]
    )
    assert result["mlp"]["ceag_ms"] > 0 and result["mlp"]["profile"]
    assert "profile of mlp" in capsys.readouterr().out


def test_demo_walltime_benchmark_runs(capsys):
    result = _load("demo_walltime").main(["--quick"])
    assert result["wall_s"] > 0 and result["inner_s"] > 0 and result["target_s"] == 180.0
    out = capsys.readouterr().out
    assert "P4 default experiment wall time" in out and "median wall" in out


def test_replay_buffer_benchmark_runs(capsys):
    result = _load("replay_buffer").main(["--quick", "--profile"])
    assert (
        result["ours_ms"] > 0 and result["deque_ms"] > 0 and result["speedup"] > 0 and result["checked"] > 0
    )
    out = capsys.readouterr().out
    assert "P5 replay buffer push + query" in out and "ReplayBuffer (library)" in out
    assert "profile of ReplayBuffer" in out


def test_field_test_benchmark_runs(capsys):
    (row,) = _load("field_test").main(["--quick"])
    assert row["data"] == "synthetic" and row["steps/epoch"] >= 1 and row["train rows"] > 300
    # the groups of a few rows hold the all-groups maximum; the n >= 30 maximum is another group's
    assert "(n=" in row["nft train max EAG"] and "g300" in row["nft train max EAG (n≥30)"]
    assert any("replay buffer" in w for w in row["warnings"])
    assert "== synthetic" in capsys.readouterr().out


def test_gpu_throughput_benchmark_runs(capsys):
    result = _load("gpu_throughput").main(["--quick", "--steps", "2", "--settings", "cifar100", "utkface"])
    for path in ("none", "memory", "device"):
        row = result[("utkface", path)]
        assert row["nft_ips"] > 0 and row["ceag_ips"] > 0 and row["data_ips"] > 0 and row["table_h"] > 0
        # the step's own host reads: the deferred guard (every 100 steps) and the epoch's loss read
        assert row["ceag_syncs"] <= 1.0 and row["nft_syncs"] <= 1.0
    out = capsys.readouterr().out
    assert "gpu_throughput on CPU" in out and "table GPU-h = 3 seeds x 4 sparsities" in out


def test_adult_guide_preparation_follows_the_guide():
    module = _load("adult_guide")
    X, y = module.adult_guide_arrays()
    assert X.shape[0] == 30162 == len(y)  # the 32,561 rows of adult.data less the 2,399 with a '?'
    # the first row of adult.data: 39, State-gov, ..., White, Male, ..., <=50K
    assert X[0, 0] == 1.0 and X[0, 1] == 1.0 and y[0] == 0.0
    assert set(np.unique(X[:, :2]).tolist()) == {0.0, 1.0}
    assert abs(float(X[:, 0].mean()) - 0.6757) < 1e-3  # share of men among complete rows
    np.testing.assert_allclose(X[:, 2:].mean(axis=0), 0.0, atol=1e-5)  # standardized features
    splits = module.adult_guide_splits(0)
    sizes = [len(splits.y_train), len(splits.y_val), len(splits.y_test)]
    assert sum(sizes) == 30162 and abs(sizes[0] / 30162 - 0.6) < 1e-3 and abs(sizes[1] - sizes[2]) <= 2
    for part in (splits.y_train, splits.y_val, splits.y_test):  # stratified on the label
        assert abs(float(part.mean()) - float(y.mean())) < 1e-3


def test_fair_api_vs_projection_peer_benchmark_runs(capsys):
    results = _load("fair_api_vs_projection_peer").main(["--quick"])
    assert [r["method"] for r in results] == ["ours (default)", "ours (lagrangian)"]
    for r in results:
        assert 0.5 < r["accuracy"] < 1 and r["fit_s"] > 0 and r["peak_rss_mib"] > 0
        assert len(r["gaps_64"]) == 2 and all(a > 0 for a in r["allowances_64"])
    # one batch of the whole test set (>= b_tau) is projected: within ε exactly
    assert max(results[0]["gaps_one_batch"]) <= 0.05 + 1e-5
    out = capsys.readouterr().out
    assert "gap 64 sex / race" in out and "ours (lagrangian)" in out

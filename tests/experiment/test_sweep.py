"""Sweeps: wandb-format files expand into runs; a tiny sweep runs end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from constrained_fairness.cli import main
from constrained_fairness.config import read_yaml
from constrained_fairness.errors import ConfigError
from constrained_fairness.experiment.sweep import build_runs, expand

from ..helpers import tiny_config

SWEEPS = sorted((Path(__file__).resolve().parents[2] / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_file_lists_its_runs(path, capsys):
    sweep = read_yaml(path)
    assert {"method", "metric", "parameters", "command"} <= set(sweep)  # the wandb sweep keys
    assert main(["sweep", str(path), "--dry-run", "--output", "/nonexistent"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    if sweep["method"] == "grid":
        expected = 1
        for spec in sweep["parameters"].values():
            expected *= len(spec["values"])
    else:
        expected = sweep["run_cap"]
    assert lines[-1] == f"{expected} runs (dry run)"
    assert len(lines) == expected + 1


def test_grid_is_the_cartesian_product_and_random_draws_are_seeded():
    grid = expand(
        {"method": "grid", "parameters": {"a": {"values": [1, 2]}, "b": {"values": ["x", "y", "z"]}}}
    )
    assert grid == [{"a": a, "b": b} for a, b in itertools.product([1, 2], ["x", "y", "z"])]
    spec = {
        "method": "random",
        "run_cap": 20,
        "parameters": {
            "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
            "k": {"distribution": "int_uniform", "min": 5, "max": 9},
        },
    }
    draws = expand(spec, seed=3)
    assert draws == expand(spec, seed=3) and draws != expand(spec, seed=4)
    assert all(1e-4 <= d["lr"] <= 1e-2 and 5 <= d["k"] <= 9 for d in draws)
    with pytest.raises(ConfigError, match="run_cap"):
        expand({**spec, "run_cap": None})


def test_a_tiny_sweep_runs_end_to_end(tmp_path):
    config = tiny_config(tmp_path, methods="[ceag]")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        "program: cfair\nmethod: grid\nmetric: {name: ceag/splits/train/max_eag, goal: minimize}\n"
        "parameters:\n  ceag.buffer_size: {values: [4, 8]}\n  pruning.sparsity: {value: 0.5}\n"
        f"command:\n  - ${{env}}\n  - cfair\n  - run\n  - {config}\n  - ${{args_no_hyphens}}\n"
    )
    out = tmp_path / "sweep_runs"
    assert main(["sweep", str(sweep), "--output", str(out), "--workers", "2"]) == 0
    runs = build_runs(sweep, out)
    assert [r.overrides for r in runs] == [
        ["ceag.buffer_size=4", "pruning.sparsity=0.5"],
        ["ceag.buffer_size=8", "pruning.sparsity=0.5"],
    ]
    for run, k in zip(runs, (4, 8), strict=True):
        assert json.loads((out / run.name / "metrics.json").read_text())["sparsity"] == 0.5
        assert f"buffer_size: {k}" in (out / run.name / "config.yaml").read_text()


def test_a_sweep_file_without_command_is_a_clear_error(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("method: grid\nparameters:\n  seed: {values: [0, 1]}\n")
    with pytest.raises(ConfigError, match="has no command"):
        build_runs(sweep, tmp_path / "out")

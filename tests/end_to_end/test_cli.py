"""The CLI: the whole protocol on a tiny CSV, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from constrained_fairness.cli import main

from ..helpers import (
    assert_typed_round_trip,
    cfair,
    tensorboard_scalars,
    tiny_config,
    wandb_history,
    write_synthetic_csv,
)

SPLITS = ("train", "val", "test")


def test_run_writes_the_run_folder(tmp_path):
    config = tiny_config(tmp_path)
    assert main(["run", str(config), "--output", str(tmp_path / "run"), "--quiet"]) == 0
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "metrics.json",
        "history.jsonl",
        "report.md",
        "plots/eag_train.png",
        "plots/multipliers.png",
        "plots/dense_vs_sparse_accuracy.png",
        "checkpoints/ceag.pt",
    ):
        assert (run / name).is_file(), name
    metrics = assert_typed_round_trip(run)
    assert metrics["tolerance"] == 0.01 and metrics["sparsity"] == 0.9 and "wall_seconds" not in metrics
    assert json.loads((run / "timing.json").read_text())["wall_seconds"] > 0
    assert list(metrics["methods"]) == ["nft", "nft_es", "el", "ceag"]
    for method in metrics["methods"].values():
        for split in SPLITS:
            entry = method[split]
            groups = entry["groups"]
            assert set(groups) == set(metrics["groups"])
            present = [g for g in groups.values() if g["n"] > 0]
            assert entry["max_eag"] == pytest.approx(max(g["eag"] for g in present))
            total = sum(g["n"] for g in present)
            acc = sum(g["n"] * g["accuracy"] for g in present) / total
            assert entry["accuracy"] == pytest.approx(acc)
            dense = sum(g["n"] * g["dense_accuracy"] for g in present) / total
            for g in present:  # ψ[g] = (acc_d[g] − acc_s[g]) − (acc_d − acc_s)
                assert g["eag"] == pytest.approx(
                    (g["dense_accuracy"] - g["accuracy"]) - (dense - acc), abs=1e-9
                )
            # where the maxima are: the group holding max_eag, and the max over groups of n >= m
            at = entry["max_eag_at"]
            assert at["value"] == entry["max_eag"] and groups[at["group"]]["eag"] == at["value"]
            assert at["n"] == groups[at["group"]]["n"]
            large = entry["max_eag_min_size"]
            big = {k: g for k, g in groups.items() if g["n"] >= large["min_group_size"]}
            assert large["min_group_size"] == 30
            assert large["value"] == (max(g["eag"] for g in big.values()) if big else None)
    assert len(metrics["methods"]["ceag"]["multipliers"]["ceag"]) == len(metrics["groups"])
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history if r["stage"] == "ceag"] == [1, 2, 3]  # branch at the last GMP epoch
    assert {r["stage"] for r in history} == {"dense", "gmp", "nft", "el", "ceag"}


def test_wandb_and_tensorboard_show_every_stage_on_its_own_step_axis(tmp_path, monkeypatch):
    """Each method restarts at the pruning stage's last step. wandb (offline, its run file
    read back) and TensorBoard must both hold every stage's epoch records, as history.jsonl."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = tiny_config(tmp_path, methods="[nft, ceag]")
    run = tmp_path / "run"
    overrides = ["--set", "logging.wandb=offline", "--set", "logging.tensorboard=true"]
    assert main(["run", str(config), "--output", str(run), "--quiet", *overrides]) == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    import wandb

    wandb.teardown()  # wandb's service process writes the run file; stop it so the file is complete
    rows = wandb_history(run)
    for stage in ("dense", "gmp", "nft", "ceag"):
        expected = [(r["step"], r["train_loss"]) for r in history if r["stage"] == stage]
        assert expected, stage
        axis, loss = f"{stage}/global_step", f"{stage}/train_loss"
        logged = [(row[axis], row[loss]) for row in rows if loss in row]
        assert logged == [(step, pytest.approx(value)) for step, value in expected], stage
        shown = tensorboard_scalars(run / "tensorboard" / stage)[loss]
        assert shown == [(step, pytest.approx(value)) for step, value in expected], stage
    nft, ceag = (min(r["step"] for r in history if r["stage"] == m) for m in ("nft", "ceag"))
    assert nft == ceag  # the step axes overlap: one shared axis would have dropped ceag's records


def test_resume_of_a_finished_run_reproduces_its_metrics(tmp_path):
    config = tiny_config(tmp_path, methods="[nft, ceag]")
    out = tmp_path / "run"
    assert main(["run", str(config), "--output", str(out), "--quiet"]) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert main(["run", str(config), "--output", str(out), "--quiet", "--resume"]) == 0
    second = json.loads((out / "metrics.json").read_text())
    assert first["methods"] == second["methods"]


def test_same_seed_gives_identical_results(tmp_path):
    config = tiny_config(tmp_path, methods="[ceag]")
    assert main(["run", str(config), "--output", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["run", str(config), "--output", str(tmp_path / "b"), "--quiet"]) == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["methods"]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["methods"]
    assert a == b


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["--set", "finetune.lrr=0.1"], "unknown config key 'finetune.lrr'; did you mean 'finetune.lr'"),
        (["--set", "data.path=/no/such/file.csv"], "/no/such/file.csv"),
        (["--set", "model.checkpoint=/no/such/model.pt"], "checkpoint not found: /no/such/model.pt"),
        (["--set", "pruning.sparsity=1.0"], "pruning.sparsity must lie in [0, 1)"),
        (["--set", "ceag.tolerance=-0.01"], "ceag.tolerance must be >= 0"),
        (["--set", "data.protected=[colour]"], "colour"),
    ],
)
def test_user_errors_give_one_line_and_exit_2(tmp_path, overrides, expected):
    config = tiny_config(tmp_path)
    result = cfair("run", str(config), "--output", str(tmp_path / "run"), *overrides, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    import torch

    from constrained_fairness.models import MLP

    bad = tmp_path / "other.pt"
    torch.save(MLP(3, [5], 2).state_dict(), bad)
    config = tiny_config(tmp_path)
    code = main(["run", str(config), "--quiet", "--set", f"model.checkpoint={bad}"])
    assert code == 2


def test_missing_csv_column_for_protected_attribute(tmp_path, capsys):
    csv = write_synthetic_csv(tmp_path / "d.csv", rows=100)
    config = tiny_config(tmp_path, csv=csv)
    assert main(["run", str(config), "--quiet", "--set", "data.target=income"]) == 2
    assert "income" in capsys.readouterr().err


def test_protocol_resume_after_a_crash_matches_a_straight_run(tmp_path):
    """Methods branch from a copy of the shared GMP state: a run resumed after NFT finished
    (EL and CEAG checkpoints lost) must give the straight run's results exactly."""
    config = tiny_config(tmp_path, methods="[nft, el, ceag]")
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert main(["run", str(config), "--output", str(straight), "--quiet"]) == 0
    assert main(["run", str(config), "--output", str(crashed), "--quiet"]) == 0
    for stage in ("el", "ceag"):
        for path in (crashed / "checkpoints").glob(f"{stage}*.pt"):
            path.unlink()
    (crashed / "metrics.json").unlink()
    assert main(["run", str(config), "--output", str(crashed), "--quiet", "--resume"]) == 0
    a = json.loads((straight / "metrics.json").read_text())["methods"]
    b = json.loads((crashed / "metrics.json").read_text())["methods"]
    assert a == b
    history = [json.loads(line) for line in (crashed / "history.jsonl").read_text().splitlines()]
    keys = [(r["stage"], r["epoch"]) for r in history]
    assert len(keys) == len(set(keys))  # each epoch exactly once after the resume


def test_resume_with_another_config_is_refused(tmp_path, capsys):
    config = tiny_config(tmp_path, methods="[nft]")
    out = tmp_path / "run"
    assert main(["run", str(config), "--output", str(out), "--quiet"]) == 0
    code = main(["run", str(config), "--output", str(out), "--quiet", "--resume", "--set", "finetune.lr=0.5"])
    assert code == 2
    assert "finetune.lr" in capsys.readouterr().err


def test_dense_stage_can_start_from_a_checkpoint(tmp_path):
    config = tiny_config(tmp_path, methods="[nft]")
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["run", str(config), "--output", str(first), "--quiet"]) == 0
    dense = first / "checkpoints" / "dense.pt"
    assert (
        main(["run", str(config), "--output", str(second), "--quiet", "--set", f"model.checkpoint={dense}"])
        == 0
    )
    a = json.loads((first / "metrics.json").read_text())
    b = json.loads((second / "metrics.json").read_text())
    assert a["dense"] == b["dense"]
    assert not (second / "checkpoints" / "dense.pt").exists()  # no dense training in the second run


def test_several_constraints_at_once_each_with_its_own_multipliers(tmp_path):
    constraints = (
        "[{type: excess_accuracy_gap, tolerance: 0.02, buffer_size: 8},"
        " {type: demographic_parity, attributes: [sex], mode: marginal, tolerance: 0.05, dual: {lr: 0.2}}]"
    )
    config = tiny_config(tmp_path, methods="[nft, constrained]", constraints=constraints)
    assert main(["run", str(config), "--output", str(tmp_path / "run"), "--quiet"]) == 0
    metrics = assert_typed_round_trip(tmp_path / "run")
    constrained = metrics["methods"]["constrained"]
    assert set(constrained["multipliers"]) == {"excess_accuracy_gap", "demographic_parity"}
    assert len(constrained["multipliers"]["excess_accuracy_gap"]) == len(metrics["groups"])  # color x sex
    assert len(constrained["multipliers"]["demographic_parity"]) == 2 * 2  # sex=F, sex=M; above, below
    for method in ("nft", "constrained"):  # violations before and after
        report = metrics["methods"][method]["constraints"]["demographic_parity"]
        for split in SPLITS:
            assert set(report[split]["violations"]) == {
                "sex=F (above)",
                "sex=M (above)",
                "sex=F (below)",
                "sex=M (below)",
            }
            values = [v for v in report[split]["violations"].values() if v is not None]
            assert report[split]["max_violation"] == pytest.approx(max(values))
    assert (tmp_path / "run" / "plots" / "constraint_demographic_parity_train.png").is_file()


@pytest.mark.parametrize(
    ("constraints", "extra", "expected"),
    [
        ("[{type: demographic_parityy}]", [], "unknown constraint type 'demographic_parityy'"),
        ("[{type: demographic_parity, attributes: [colour]}]", [], "colour"),
        ("[{type: demographic_parity, tolerance: -0.1}]", [], "constraints[0].tolerance must be >= 0"),
        (
            "[{type: demographic_parity}]",
            [
                "--set",
                "data.target=job",
                "--set",
                "data.positive_value=null",
                "--set",
                "data.categorical=[color,sex,label]",
            ],
            "set positive_class",
        ),
    ],
)
def test_constraint_config_errors_are_one_line(tmp_path, constraints, extra, expected):
    config = tiny_config(tmp_path, methods="[constrained]", constraints=constraints)
    result = cfair("run", str(config), "--output", str(tmp_path / "run"), *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_reproduce_aggregates_seeds_and_sparsities_into_a_table(tmp_path):
    from constrained_fairness.reporting.aggregate import mean_std

    config = tiny_config(tmp_path, methods="[nft, ceag]")
    out = tmp_path / "repro"
    args = ["reproduce", str(config), "--seeds", "0", "1", "--sparsities", "0.5", "0.8", "--output", str(out)]
    assert main([*args, "--quiet"]) == 0
    runs = {
        (sp, seed): json.loads((out / f"sparsity{sp}_seed{seed}" / "metrics.json").read_text())
        for sp in ("0.5", "0.8")
        for seed in (0, 1)
    }
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 2 + 4  # header, separator, 2 sparsities x 2 methods
    row = next(line for line in table if line.startswith("| 0.8 | ceag |"))
    values = [runs[("0.8", s)]["methods"]["ceag"]["test"]["max_eag"] for s in (0, 1)]
    mean, std = mean_std(values)
    assert f"{mean:.4f} ± {std:.4f}" in row
    assert std == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    # a second call reuses the finished runs
    mtime = (out / "sparsity0.5_seed0" / "metrics.json").stat().st_mtime
    assert main([*args, "--quiet"]) == 0
    assert (out / "sparsity0.5_seed0" / "metrics.json").stat().st_mtime == mtime


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_and_stays_close_to_fp32(tmp_path, precision):
    import torch

    config = tiny_config(tmp_path, methods="[nft, ceag]")
    assert main(["run", str(config), "--output", str(tmp_path / "fp32"), "--quiet"]) == 0
    assert (
        main(
            [
                "run",
                str(config),
                "--output",
                str(tmp_path / precision),
                "--quiet",
                "--set",
                f"precision={precision}",
            ]
        )
        == 0
    )
    full = json.loads((tmp_path / "fp32" / "metrics.json").read_text())["methods"]
    mixed = json.loads((tmp_path / precision / "metrics.json").read_text())["methods"]
    for method in ("nft", "ceag"):
        assert mixed[method]["test"]["loss"] == pytest.approx(full[method]["test"]["loss"], rel=0.05)
    state = torch.load(tmp_path / precision / "checkpoints" / "ceag.pt", weights_only=True)
    assert (state["scaler"] is not None) == (precision == "fp16")

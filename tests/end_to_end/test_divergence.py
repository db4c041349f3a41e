"""A stage that diverges stops with one line; the finished methods' results are kept, the failed
one is marked, the exit code is 2, and no JSON file holds NaN or infinity."""

from __future__ import annotations

import json
from pathlib import Path

from constrained_fairness.cli import main

from ..helpers import tiny_config


def strict_json(path: Path) -> object:
    """``path`` parsed as strict JSON (or JSON lines): NaN, Infinity and -Infinity are errors."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{path.name} holds {constant}")

    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]
    return json.loads(text, parse_constant=refuse)


def test_a_dual_lr_of_1e6_fails_ceag_alone_and_keeps_the_finished_methods(tmp_path, capsys):
    config = tiny_config(tmp_path, methods="[nft, nft_es, ceag]")
    run = tmp_path / "run"
    args = ["run", str(config), "--output", str(run), "--quiet", "--set", "ceag.dual.lr=1e6"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cfair: error: method ceag failed:") and "'ceag'" in err[0]
    metrics = strict_json(run / "metrics.json")
    assert list(metrics["methods"]) == ["nft", "nft_es", "ceag"]
    ceag = metrics["methods"]["ceag"]
    assert set(ceag) == {"error"} and "stage 'ceag'" in ceag["error"]
    for name in ("nft", "nft_es"):  # finished, with every split and group
        entry = metrics["methods"][name]
        assert all(entry[s]["accuracy"] is not None for s in ("train", "val", "test"))
        assert set(entry["train"]["groups"]) == set(metrics["groups"])
    for name in ("timing.json", "history.jsonl"):
        strict_json(run / name)
    assert "ceag failed" in (run / "report.md").read_text()
    assert "ceag failed" in (run / "report.html").read_text()


def test_a_finite_loss_without_bound_stops_the_stage_before_its_checkpoint(tmp_path, capsys):
    """guards.divergence_factor: an epoch's training loss above factor × log(classes) is a
    divergence; here the factor is so small that the first dense epoch exceeds it."""
    config = tiny_config(tmp_path)
    run = tmp_path / "run"
    args = ["run", str(config), "--output", str(run), "--quiet", "--set", "guards.divergence_factor=0.01"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stage 'dense' at epoch 0" in err[0] and "guards.divergence_factor" in err[0]
    assert (run / "config.yaml").is_file() and not (
        run / "metrics.json"
    ).exists()  # nothing finished: no result that looks valid
    assert not list((run / "checkpoints").glob("dense-e*.pt"))  # the diverged epoch is not kept


def test_a_crash_keeps_the_finished_methods_and_a_resume_finishes_the_run(tmp_path, monkeypatch):
    """metrics.json is written after each method: a crash in CEAG (here a RuntimeError, as an
    out-of-memory would be) leaves NFT's results with CEAG pending; the file does not count as
    a finished run, and a resume ends with the same file as an uninterrupted run."""
    import pytest

    from constrained_fairness.experiment.run_dir import finished
    from constrained_fairness.training.trainer import Trainer

    config = tiny_config(tmp_path, methods="[nft, ceag]")
    straight = tmp_path / "straight"
    assert main(["run", str(config), "--output", str(straight), "--quiet"]) == 0
    assert finished(straight)
    run = tmp_path / "run"
    original = Trainer.run

    def crash_in_ceag(self, until, checkpointer=None):
        if self.name == "ceag":
            raise RuntimeError("simulated crash")
        return original(self, until, checkpointer)

    monkeypatch.setattr(Trainer, "run", crash_in_ceag)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["run", str(config), "--output", str(run), "--quiet"])
    partial = strict_json(run / "metrics.json")
    assert partial["pending"] == ["ceag"] and list(partial["methods"]) == ["nft"]
    assert partial["methods"]["nft"] == strict_json(straight / "metrics.json")["methods"]["nft"]
    assert not finished(run)
    monkeypatch.setattr(Trainer, "run", original)
    assert main(["run", str(config), "--output", str(run), "--quiet", "--resume"]) == 0
    assert (run / "metrics.json").read_text() == (straight / "metrics.json").read_text()
    assert finished(run)

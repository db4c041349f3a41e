"""An infeasible CEAG names its violating groups with their sizes, and one change to try."""

from __future__ import annotations

import json

from constrained_fairness.cli import main
from constrained_fairness.experiment.diagnosis import REFERENCE_STEPS, infeasibility
from constrained_fairness.reporting.results import GroupResult, MethodResult, SplitResult

from ..helpers import tiny_config


def _result(groups: dict[str, tuple[int, float]]) -> MethodResult:
    table = {g: GroupResult(n, eag=eag) for g, (n, eag) in groups.items()}
    return MethodResult({"train": SplitResult(max_eag=max(e for _, e in groups.values()), groups=table)})


def test_the_rule_picks_one_change():
    feasible = _result({"a": (500, 0.004), "b": (80, 0.009)})
    assert infeasibility(feasible, 0.01, 30, 100, 1e-3) is None
    tiny = infeasibility(_result({"a": (500, 0.004), "b": (3, 0.33), "c": (9, 0.02)}), 0.01, 30, 100, 1e-3)
    assert tiny["groups"] == {"b": {"n": 3, "eag": 0.33}, "c": {"n": 9, "eag": 0.02}}
    assert "ceag.tolerance" in tiny["advice"] and "1/3" in tiny["advice"]
    few = infeasibility(_result({"a": (388, 0.022), "b": (67, 0.06)}), 0.01, 30, 54, 1e-3)
    assert "finetune.epochs" in few["advice"] and "54 steps" in few["advice"]
    unreached = infeasibility(_result({"a": (500, 0.004), "b": (35, 0.03)}), 0.01, 30, 54, 1e-3, 40)
    assert "ceag.buffer_size to at most 35" in unreached["advice"]
    many = infeasibility(_result({"a": (388, 0.022)}), 0.01, 30, REFERENCE_STEPS, 1e-3, 40)
    assert "ceag.dual.lr" in many["advice"] and "0.001" in many["advice"]


def test_an_infeasible_run_says_so_in_the_summary_and_metrics(tmp_path, capsys):
    config = tiny_config(tmp_path, methods="[nft, ceag]")
    assert main(["run", str(config), "--output", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    ceag = metrics["methods"]["ceag"]
    violating = {g: e for g, e in ceag["train"]["groups"].items() if e["eag"] is not None and e["eag"] > 0.01}
    assert ceag["train"]["max_eag"] > 0.01 and violating  # the tiny run is far too short to be feasible
    found = ceag["infeasible"]
    assert found["groups"] == {g: {"n": e["n"], "eag": e["eag"]} for g, e in violating.items()}
    assert found["steps"] < REFERENCE_STEPS / 2 and "finetune.epochs" in found["advice"]
    out = capsys.readouterr().out
    assert "ceag is infeasible on train" in out and found["advice"] in out
    assert "ceag is infeasible on train" in (tmp_path / "run" / "report.md").read_text()
